"""A :class:`Task`: one goal's data, split once, and its effect measured through its kind.

Every method in a comparison gets the same training pool (contrast pairs for steering, positive
completions for LoRA, examples for few-shot prompting) and is judged on the same evaluation prompts, plus
a held-out prompt family for generalisation. How the effect is measured belongs to the task's kind
(:mod:`.kinds`), one small type each.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from steerlab.data import ABItem, ContrastPair
from steerlab.errors import DataError
from steerlab.evaluate.adaptations import Adaptation
from steerlab.evaluate.concept import ConceptScore
from steerlab.evaluate.tasks.base import SPLITS, EffectResult, SplitData, balanced
from steerlab.evaluate.tasks.kinds import kind_of

if TYPE_CHECKING:
    from steerlab.lm import LM


@dataclass
class Task:
    """A goal, its fixed data split, and its effect measure (through ``kind``; see :mod:`.kinds`)."""

    name: str
    kind: str
    pairs: list[ContrastPair]
    lora_examples: list[tuple[str, str]]
    instruction: str
    shots: list[tuple[str, str]]
    eval_prompts: list[str] = field(default_factory=list)
    heldout_prompts: list[str] = field(default_factory=list)
    eval_labels: list[int] = field(default_factory=list)
    heldout_labels: list[int] = field(default_factory=list)
    eval_items: list[ABItem] = field(default_factory=list)
    heldout_items: list[ABItem] = field(default_factory=list)
    calib_prompts: list[str] = field(default_factory=list)
    calib_labels: list[int] = field(default_factory=list)
    calib_items: list[ABItem] = field(default_factory=list)
    concept: ConceptScore | None = None
    preference_pairs: list[ContrastPair] = field(default_factory=list)
    extract_options: dict[str, Any] = field(default_factory=dict)
    heldout_name: str = "held-out prompts"
    chance: float | None = None
    notes: list[str] = field(default_factory=list)
    setup_cost: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ budgets
    @property
    def train_size(self) -> int:
        return len(self.pairs)

    def subset(self, n: int, seed: int = 0) -> Task:
        """The same task with only ``n`` training pairs/completions/shots (drawn with ``seed``)."""
        rng = random.Random(seed)
        pick = sorted(rng.sample(range(len(self.pairs)), min(n, len(self.pairs))))
        lora_pick = sorted(rng.sample(range(len(self.lora_examples)), min(n, len(self.lora_examples))))
        pref = [self.preference_pairs[i] for i in pick if i < len(self.preference_pairs)]
        return replace(
            self,
            pairs=[self.pairs[i] for i in pick],
            preference_pairs=pref,
            lora_examples=[self.lora_examples[i] for i in lora_pick],
            shots=self.shots[: max(0, min(len(self.shots), n))],
        )

    # ------------------------------------------------------------------ splits
    def _split(self, which: str) -> SplitData:
        if which not in SPLITS:
            raise DataError(f"unknown split '{which}'; expected eval, heldout or calib")
        return SplitData(
            getattr(self, f"{which}_prompts"),
            getattr(self, f"{which}_labels"),
            getattr(self, f"{which}_items"),
        )

    def split(self, which: str, limit: int | None = None) -> tuple[list[str], list[int], list[ABItem]]:
        """Prompts, labels and A/B items of ``eval``, ``heldout`` or ``calib``; ``limit`` keeps both labels balanced."""
        data = self._split(which)
        prompts, labels, items = data.prompts, data.labels, data.items
        if limit is not None:
            keep = self.split_indices(which, limit)
            prompts = [prompts[i] for i in keep] if prompts else []
            labels = [labels[i] for i in keep] if labels else []
            items = [items[i] for i in keep] if items else []
        return list(prompts), list(labels), list(items)

    def split_size(self, which: str) -> int:
        data = self._split(which)
        return len(data.items) if data.items else len(data.prompts)

    def split_indices(self, which: str, limit: int | None = None) -> list[int]:
        """Which items of a split a ``limit`` keeps (a prefix, or balanced over labels when labelled)."""
        size, labels = self.split_size(which), self._split(which).labels
        if limit is None or limit >= size:
            return list(range(size))
        return balanced(labels, limit) if labels else list(range(limit))

    # ------------------------------------------------------------------ effect
    def effect(
        self,
        lm: LM,
        adaptation: Adaptation,
        which: str = "eval",
        *,
        limit: int | None = None,
        max_new_tokens: int = 40,
        batch_size: int = 16,
    ) -> EffectResult:
        """Measure the task's effect under ``adaptation`` on the ``eval``, ``heldout`` or ``calib`` split."""
        data = SplitData(*self.split(which, limit))
        return kind_of(self.kind).effect(
            lm, adaptation, self, data, max_new_tokens=max_new_tokens, batch_size=batch_size
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "train_pairs": len(self.pairs),
            "lora_examples": len(self.lora_examples),
            "shots": len(self.shots),
            "eval": self.split_size("eval"),
            "heldout": self.split_size("heldout"),
            "heldout_name": self.heldout_name,
            "instruction": self.instruction,
            "concept_scorer": self.concept.validation if self.concept else None,
            "chance": self.chance,
            "notes": self.notes,
            "setup_cost": self.setup_cost,
        }
