"""The ``sentiment`` task: positive-sounding open-ended text, learned from labelled sentences.

Effect = concept score of the generations (a validated probe, see ``concept.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from steerlab.data import ContrastPair, load_labelled
from steerlab.errors import DataError
from steerlab.evaluate.concept import build_concept_score
from steerlab.evaluate.tasks.base import Budget, labelled_file, shuffled
from steerlab.evaluate.tasks.prompts import (
    CALIB_REVIEW_PROMPTS,
    GENERAL_PROMPTS,
    REVIEW_PROMPTS,
    TRAIN_REVIEW_PROMPT,
)
from steerlab.evaluate.tasks.task import Task

if TYPE_CHECKING:
    from steerlab.lm import LM


def sentiment_task(lm: LM, data: str | Path, budget: Budget, *, scorer: str = "embedding") -> Task:
    """Steer towards positive sentiment, learned from labelled sentences (label 1/positive vs 0/negative)."""
    examples = load_labelled(labelled_file(Path(data)))
    pos_label = 1 if any(str(e.label) == "1" for e in examples) else "positive"
    neg_label = 0 if pos_label == 1 else "negative"
    pos = shuffled([e.text for e in examples if str(e.label) == str(pos_label)], budget.seed)
    neg = shuffled([e.text for e in examples if str(e.label) == str(neg_label)], budget.seed)
    need = budget.train + budget.scorer_train // 2 + budget.scorer_test // 2
    if min(len(pos), len(neg)) < need:
        raise DataError(
            f"sentiment task needs {need} sentences per label for this budget, found {len(pos)}/{len(neg)}"
        )
    t = budget.train
    s1, s2 = t + budget.scorer_train // 2, t + budget.scorer_train // 2 + budget.scorer_test // 2
    pairs = [ContrastPair(p, n, prompt=TRAIN_REVIEW_PROMPT) for p, n in zip(pos[:t], neg[:t], strict=True)]
    lora = [(TRAIN_REVIEW_PROMPT, p) for p in pos[:t]]
    concept = build_concept_score(scorer, pos[t:s1], neg[t:s1], pos[s1:s2], neg[s1:s2], lm=lm)
    return Task(
        name="sentiment",
        kind="sentiment",
        pairs=pairs,
        lora_examples=lora,
        instruction="Write with a clearly positive, enthusiastic and warm sentiment.",
        shots=[(TRAIN_REVIEW_PROMPT, p) for p in pos[: budget.shots]],
        eval_prompts=list(REVIEW_PROMPTS[: budget.eval]),
        calib_prompts=list(CALIB_REVIEW_PROMPTS[: budget.calib]),
        heldout_prompts=list(GENERAL_PROMPTS[: budget.heldout]),
        concept=concept,
        preference_pairs=pairs,
        extract_options={"position": "mean"},
        heldout_name="general prompts (not reviews)",
        notes=[
            "Steering pairs are positive vs negative review sentences written as assistant replies to one "
            "generic review prompt; LoRA trains on the positive sentences as replies to it; prompting uses an "
            "instruction plus positive examples. Evaluation asks for specific reviews; the held-out family "
            "is not reviews at all.",
        ],
    )
