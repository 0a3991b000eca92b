"""The ``sentiment`` task: positive-sounding open-ended text, learned from labelled sentences.

Effect = concept score of the generations (a validated probe, see ``concept.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from steerlab.data import ContrastPair, load_labelled
from steerlab.errors import DataError
from steerlab.evaluate.adaptations import Opening
from steerlab.evaluate.concept import ConceptScore, build_concept_score
from steerlab.evaluate.tasks.base import Budget, labelled_file, shuffled
from steerlab.evaluate.tasks.openings import CALIB_OPENINGS, GENERAL_OPENINGS, REVIEW_OPENINGS
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
    concept = build_concept_score(scorer, pos[t:s1], neg[t:s1], pos[s1:s2], neg[s1:s2], lm=lm)
    if not lm.has_chat_template:
        return _continuation_task(pos[:t], neg[:t], pairs, concept, budget)
    lora = [(TRAIN_REVIEW_PROMPT, p) for p in pos[:t]]
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


def _continuation_task(
    pos: list[str], neg: list[str], preference: list[ContrastPair], concept: ConceptScore, budget: Budget
) -> Task:
    """The sentiment task for a base model (no chat template): every prompt is an opening to continue.

    Steering pairs are the bare sentences (read without any dialogue around them); LoRA trains on the
    positive sentences as continuations of a short ``Review:`` opening; prompting puts the instruction and
    positive example sentences before the opening. The learned method still needs a prompt for its
    preference pairs and gets the dialogue form.
    """
    for split, have, need in (
        ("eval", REVIEW_OPENINGS, budget.eval),
        ("calib", CALIB_OPENINGS, budget.calib),
        ("heldout", GENERAL_OPENINGS, budget.heldout),
    ):
        if need > len(have):
            raise DataError(
                f"the continuation-style sentiment task has {len(have)} {split} openings; budget asks {need}"
            )
    opening = Opening("Review:")
    return Task(
        name="sentiment",
        kind="sentiment",
        pairs=[ContrastPair(p, n) for p, n in zip(pos, neg, strict=True)],
        lora_examples=[(opening, f" {p}") for p in pos],
        instruction="The following text is clearly positive, enthusiastic and warm.",
        shots=[(opening, p) for p in pos[: budget.shots]],
        eval_prompts=[Opening(o) for o in REVIEW_OPENINGS[: budget.eval]],
        calib_prompts=[Opening(o) for o in CALIB_OPENINGS[: budget.calib]],
        heldout_prompts=[Opening(o) for o in GENERAL_OPENINGS[: budget.heldout]],
        concept=concept,
        preference_pairs=preference,
        extract_options={"position": "mean"},
        heldout_name="openings of other texts (not reviews)",
        notes=[
            "Continuation style (the model has no chat template): evaluation continues review openings, the "
            "held-out family continues openings of other kinds of text; steering pairs are bare positive vs "
            "negative sentences; prompting puts an instruction line and positive example sentences first.",
        ],
    )
