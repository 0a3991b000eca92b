"""The small pieces every arena task uses: effect results, one split's data, budgets, setup generations."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steerlab.data import ABItem
from steerlab.errors import DataError
from steerlab.evaluate import measure, metrics
from steerlab.evaluate.adaptations import baseline

if TYPE_CHECKING:
    from steerlab.lm import LM

SPLITS = ("eval", "heldout", "calib")


@dataclass
class EffectResult:
    """Per-example scores on one split, the summary estimate, and (for generation tasks) the texts."""

    per_example: np.ndarray
    estimate: metrics.Estimate
    generations: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "per_example": [float(x) for x in self.per_example],
            "estimate": self.estimate.as_dict(),
            "generations": self.generations,
            "extra": self.extra,
        }


@dataclass(frozen=True)
class SplitData:
    """One split's prompts, labels (safety: 1 = harmful) and A/B items, whichever the kind uses."""

    prompts: list[str]
    labels: list[int]
    items: list[ABItem]


def balanced(labels: Sequence[int], limit: int) -> list[int]:
    """Indices of at most ``limit`` items, half from each label, so a small budget still tests both sides."""
    per = max(1, limit // 2)
    keep = []
    for value in (1, 0):
        keep += [i for i, label in enumerate(labels) if label == value][:per]
    return sorted(keep)


@dataclass
class Budget:
    """How much data and compute a comparison spends, per task.

    Presets (:data:`BUDGETS`): ``smoke`` is for tests; ``small`` is the quick look (8 evaluation items:
    intervals too wide to decide most verdicts); ``standard`` evaluates 32 items per task (so an interval
    can exclude "no effect") with the training pool, calibration and token budget kept as small as
    ``small``'s; ``default`` trains on more.
    """

    train: int = 32
    eval: int = 16
    heldout: int = 8
    calib: int = 6
    shots: int = 4
    max_new_tokens: int = 32
    scorer_train: int = 200
    scorer_test: int = 100
    neutral: int = 40
    seed: int = 0

    @classmethod
    def presets(cls) -> dict[str, Budget]:
        """Every preset by name, cheapest first (the CLI's ``--budget`` choices)."""
        return {
            "smoke": cls(
                train=8,
                eval=4,
                heldout=4,
                calib=4,
                shots=2,
                max_new_tokens=12,
                scorer_train=16,
                scorer_test=12,
            ),
            "small": cls(
                train=16,
                eval=8,
                heldout=8,
                calib=6,
                shots=2,
                max_new_tokens=24,
                scorer_train=100,
                scorer_test=60,
            ),
            "standard": cls(
                train=16,
                eval=32,
                heldout=16,
                calib=8,
                shots=2,
                max_new_tokens=24,
                scorer_train=100,
                scorer_test=60,
            ),
            "default": cls(),
        }

    @classmethod
    def preset(cls, name: str) -> Budget:
        presets = cls.presets()
        if name not in presets:
            raise DataError(f"unknown budget '{name}'; expected one of {', '.join(presets)}")
        return presets[name]


#: Budget preset names, cheapest first.
BUDGETS = tuple(Budget.presets())


def check_budget_sizes(task_name: str, sizes: dict[str, int], budget: Budget) -> None:
    """Refuse a task whose splits hold fewer items than ``budget`` asks for (``sizes``: split -> count).

    A task silently built with fewer evaluation items than asked would report wider intervals than the
    budget promises; a clear error says which split is short and by how much.
    """
    wanted = {"train": budget.train, "eval": budget.eval, "heldout": budget.heldout, "calib": budget.calib}
    short = [
        f"{split} {sizes[split]} < {want}" for split, want in wanted.items() if sizes.get(split, want) < want
    ]
    if short:
        raise DataError(
            f"task '{task_name}' has fewer items than this budget asks for ({'; '.join(short)}): "
            "choose a smaller --budget or give more data"
        )


def shuffled(items: Sequence[Any], seed: int) -> list[Any]:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def cached_generate(
    lm: LM, prompts: Sequence[str], max_new_tokens: int, cache: str | Path | None = None
) -> list[str]:
    """Unadapted greedy completions, remembered in a JSON file so a resumed comparison does not redo them.

    Keys hold the model id and token budget, so a cache never answers for another model or length.
    """
    from steerlab.interop.atomic import atomic_write

    path = Path(cache) if cache else None
    store: dict[str, str] = json.loads(path.read_text()) if path and path.exists() else {}
    keys = [f"{lm.model_id}|{max_new_tokens}|{p}" for p in prompts]
    todo = [p for p, k in zip(prompts, keys, strict=True) if k not in store]
    if todo:
        for p, text in zip(
            todo, measure.generate(lm, baseline(), todo, max_new_tokens=max_new_tokens), strict=True
        ):
            store[f"{lm.model_id}|{max_new_tokens}|{p}"] = text
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            blob = json.dumps(store, ensure_ascii=False, indent=0)
            atomic_write(path, lambda tmp: Path(tmp).write_text(blob))
    return [store[k] for k in keys]


def labelled_file(path: Path) -> Path:
    """A labelled JSONL file given directly or found in a folder (files under ``original/`` skipped)."""
    if path.is_file():
        return path
    found = sorted(p for p in path.rglob("*.jsonl") if "original" not in p.parts)
    if not found:
        raise DataError(f"{path}: expected a labelled JSONL file (text + label) or a folder holding one")
    return found[0]
