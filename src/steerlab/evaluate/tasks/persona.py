"""The ``persona`` task: answer neutral tasks in the positive persona of a pair set.

Effect = concept score of the answers, the scorer trained on the model's own answers under the two
persona instructions (or on labelled texts given as ``concept_data``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from steerlab.data import ContrastPair, demo_pairs, load_labelled, load_pairs
from steerlab.evaluate.concept import build_concept_score
from steerlab.evaluate.tasks.base import Budget, cached_generate, labelled_file, shuffled
from steerlab.evaluate.tasks.prompts import GENERAL_PROMPTS
from steerlab.evaluate.tasks.task import Task

if TYPE_CHECKING:
    from steerlab.lm import LM


def persona_task(
    lm: LM,
    data: str | Path | None,
    budget: Budget,
    *,
    scorer: str = "embedding",
    concept_data: str | Path | None = None,
    cache: str | Path | None = None,
) -> Task:
    """Answer neutral tasks in the positive persona (default data: the packaged happy/sad demo pairs).

    The pairs hold the persona instruction plus a task. LoRA learns from the model's own answers to the
    positive persona instruction (context distillation; that generation is counted in LoRA's build cost).
    The concept scorer is trained on the model's answers under the positive vs negative persona
    instruction (or on ``concept_data`` labelled texts when given) and validated on held-out answers.
    """
    pairs = load_pairs(data) if data else demo_pairs()
    tasks = [_strip_persona(p) for p in pairs]
    order = shuffled(range(len(pairs)), budget.seed)
    n_train = min(budget.train, len(pairs) - 2)
    n_eval = min(budget.eval, len(pairs) - n_train)
    train_idx, eval_idx = order[:n_train], order[n_train : n_train + n_eval]
    n_gen = min(len(pairs), n_train + n_eval + max(0, budget.scorer_train // 2 - n_train))
    start = time.perf_counter()
    pos_texts = cached_generate(lm, [pairs[i].positive for i in order[:n_gen]], budget.max_new_tokens, cache)
    persona_seconds = time.perf_counter() - start
    neg_texts = cached_generate(lm, [pairs[i].negative for i in order[:n_gen]], budget.max_new_tokens, cache)
    by_index = {i: (pos_texts[k], neg_texts[k]) for k, i in enumerate(order[:n_gen])}
    if concept_data:
        examples = load_labelled(labelled_file(Path(concept_data)))
        cpos = shuffled([e.text for e in examples if str(e.label) in ("1", "positive", "happy")], budget.seed)
        cneg = shuffled([e.text for e in examples if str(e.label) in ("0", "negative", "sad")], budget.seed)
        h = budget.scorer_train // 2
        concept = build_concept_score(
            scorer,
            cpos[:h],
            cneg[:h],
            [by_index[i][0] for i in eval_idx],
            [by_index[i][1] for i in eval_idx],
            lm=lm,
        )
        concept.validation["trained_on"] = str(concept_data)
    else:
        rest = [i for i in order[:n_gen] if i not in eval_idx]
        concept = build_concept_score(
            scorer,
            [by_index[i][0] for i in rest],
            [by_index[i][1] for i in rest],
            [by_index[i][0] for i in eval_idx],
            [by_index[i][1] for i in eval_idx],
            lm=lm,
        )
        concept.validation["trained_on"] = (
            "the model's own answers under the positive/negative persona instruction"
        )
    persona = _persona_instruction(pairs[0])
    return Task(
        name="persona",
        kind="persona",
        pairs=[pairs[i] for i in train_idx],
        lora_examples=[(tasks[i], by_index[i][0]) for i in train_idx],
        instruction=persona,
        shots=[(tasks[i], by_index[i][0]) for i in train_idx[: budget.shots]],
        eval_prompts=[tasks[i] for i in eval_idx],
        heldout_prompts=list(GENERAL_PROMPTS[: budget.heldout]),
        calib_prompts=[tasks[i] for i in train_idx[: budget.calib]],
        concept=concept,
        preference_pairs=[ContrastPair(by_index[i][0], by_index[i][1], prompt=tasks[i]) for i in train_idx],
        heldout_name="general questions (not from the pair set)",
        setup_cost={"persona_generation_seconds_per_side": persona_seconds},
        notes=[
            "LoRA and few-shot examples use the model's own answers to the positive persona instruction "
            "(their generation time is charged to those methods' build cost).",
        ],
    )


def _persona_instruction(pair: ContrastPair) -> str:
    a, b = pair.positive, pair.negative
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    end = a.find(".", i)
    return a[: end + 1] if end > 0 else a


def _strip_persona(pair: ContrastPair) -> str:
    text = pair.positive
    head = _persona_instruction(pair)
    return text[len(head) :].strip() or text
