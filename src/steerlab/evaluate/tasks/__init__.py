"""Arena tasks: one user goal, its data split once, and how to measure whether an adaptation reached it.

Four kinds, one type each (:mod:`.kinds`) and one builder module each: ``sentiment`` (labelled
sentences; concept score of open-ended text), ``persona`` (persona pairs, default: the packaged
happy/sad demo; concept score of answers to neutral tasks), ``safety`` (harmful and harmless instruction
files; refusal gap) and ``ab`` (CAA-style A/B items; behaviour probability). The shared data holder is
:class:`~.task.Task`. Data paths are inputs: nothing here reads ``shared/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab.data import ABItem, load_ab
from steerlab.errors import DataError
from steerlab.evaluate import measure
from steerlab.evaluate.tasks.ab import ab_task
from steerlab.evaluate.tasks.base import (
    BUDGETS,
    Budget,
    EffectResult,
    SplitData,
    cached_generate,
    check_budget_sizes,
)
from steerlab.evaluate.tasks.kinds import (
    KINDS,
    ABKind,
    PersonaKind,
    SafetyKind,
    SentimentKind,
    TaskKind,
    kind_of,
)
from steerlab.evaluate.tasks.persona import persona_task
from steerlab.evaluate.tasks.prompts import GENERAL_PROMPTS, REFUSAL_COMPLETION, REVIEW_PROMPTS
from steerlab.evaluate.tasks.safety import safety_task
from steerlab.evaluate.tasks.sentiment import sentiment_task
from steerlab.evaluate.tasks.task import Task

if TYPE_CHECKING:
    from steerlab.lm import LM

__all__ = [
    "BUDGETS",
    "GENERAL_PROMPTS",
    "KINDS",
    "REFUSAL_COMPLETION",
    "REVIEW_PROMPTS",
    "ABKind",
    "Budget",
    "EffectResult",
    "PersonaKind",
    "SafetyKind",
    "SentimentKind",
    "SplitData",
    "Task",
    "TaskKind",
    "ab_task",
    "build_task",
    "cached_generate",
    "check_kind",
    "kind_of",
    "load_capability",
    "measure",
    "persona_task",
    "safety_task",
    "sentiment_task",
]

#: what each kind's ``--data`` must be, for kinds that cannot run without it
_NEEDS_DATA = {
    "sentiment": "the sentiment task needs --data (labelled sentences JSONL or folder)",
    "safety": "the safety task needs --data (folder with harmful_* and harmless_* instruction files)",
    "ab": "the ab task needs --data (CAA A/B JSONL)",
}


def check_kind(kind: str, data: str | Path | None) -> None:
    """Refuse an unknown kind, or a kind without the data it needs, before anything is loaded."""
    kind_of(kind)
    if data is None and kind in _NEEDS_DATA:
        raise DataError(_NEEDS_DATA[kind])


def build_task(
    lm: LM,
    kind: str,
    data: str | Path | None,
    budget: Budget,
    *,
    scorer: str = "embedding",
    concept_data: str | Path | None = None,
    instruction: str | None = None,
    cache: str | Path | None = None,
) -> Task:
    """Build a task of ``kind`` (see :data:`KINDS`). ``cache`` remembers setup generations across resumes."""
    check_kind(kind, data)
    builders: dict[str, Callable[[], Any]] = {
        "sentiment": lambda: sentiment_task(lm, data, budget, scorer=scorer),
        "persona": lambda: persona_task(
            lm, data, budget, scorer=scorer, concept_data=concept_data, cache=cache
        ),
        "safety": lambda: safety_task(lm, data, budget, cache=cache),
        "ab": lambda: ab_task(lm, data, budget, instruction=instruction),
    }
    task = builders[kind]()
    sizes = {"train": task.train_size, **{s: task.split_size(s) for s in ("eval", "heldout", "calib")}}
    check_budget_sizes(task.name, sizes, budget)
    return task


def load_capability(path: str | Path, limit: int) -> list[ABItem]:
    """An unrelated A/B capability set (e.g. MMLU as A/B) where ``matching`` is the correct answer."""
    return load_ab(path)[:limit]
