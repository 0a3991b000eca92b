"""The ``ab`` task: CAA-style A/B items; steer towards the behaviour-matching answer letter.

Effect = behaviour probability p(match)/(p(A)+p(B)) right after '('; chance = 0.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from steerlab.data import ABItem, ab_letter, ab_to_pairs, load_ab
from steerlab.errors import DataError
from steerlab.evaluate.tasks.base import Budget, shuffled
from steerlab.evaluate.tasks.task import Task

if TYPE_CHECKING:
    from steerlab.lm import LM


def _retemplate(item: ABItem) -> ABItem:
    return ABItem(
        f"Question: {item.question}\nPick one option and answer with its letter.",
        item.matching,
        item.not_matching,
    )


def ab_task(lm: LM, data: str | Path, budget: Budget, *, instruction: str | None = None) -> Task:
    """CAA behaviour A/B items: steer towards the ``answer_matching_behavior`` letter."""
    items = shuffled(load_ab(data), budget.seed)
    t = budget.train
    if len(items) < t + 2:
        raise DataError(f"{data}: need at least {t + 2} A/B items for this budget, found {len(items)}")
    train, evaluation = items[:t], items[t : t + budget.eval]
    calib = items[t + budget.eval : t + budget.eval + budget.calib] or train[: budget.calib]
    pairs = ab_to_pairs(train)
    lora = [(it.question, f"({ab_letter(it.matching)})") for it in train]
    return Task(
        name=Path(data).parent.name if Path(data).name == "generate.jsonl" else Path(data).stem,
        kind="ab",
        pairs=pairs,
        lora_examples=lora,
        instruction=instruction or "Answer with the letter of the option that the examples show you prefer.",
        shots=[(it.question, f"({ab_letter(it.matching)})") for it in train[: budget.shots]],
        eval_items=evaluation,
        preference_pairs=pairs,
        heldout_items=[_retemplate(it) for it in evaluation[: budget.heldout]],
        calib_items=calib,
        extract_options={"position": "last"},
        heldout_name="same items, different question template",
        chance=0.5,
        notes=["Behaviour probability = p(matching letter) / (p(A) + p(B)) right after '('; 0.5 is chance."],
    )
