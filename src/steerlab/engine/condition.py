"""Conditions: whether a prompt is "about" something, decided from one hidden state, defined once.

A :class:`Condition` (Conditional Activation Steering, Lee et al. 2025) reads the residual stream at
its ``layer`` over a prompt's real tokens, averages it (the *prompt mean*; the first ``skip`` tokens, the
chat template's header that every prompt shares, are left out: they say nothing about the prompt and
their attention-sink states would dominate the mean), and scores it by the cosine with a condition
``direction``; it **fires** when the score is ``> threshold`` (``comparison="greater"``)
or ``< threshold`` (``"less"``). The cosine makes the score independent of a prompt's length and of the
model's activation scale, so one threshold serves short and long prompts alike.

Conditions combine into rules: ``a & b`` (all), ``a | b`` (any), ``~a`` (not), or
:func:`all_of` / :func:`any_of` / :func:`not_`. A :class:`~steerlab.engine.spec.Steering` with
``condition=`` applies to a row only when its condition fires on that row's prompt; the engine evaluates
the leaves in the prompt's prefill pass (:mod:`steerlab.engine.context`) and keeps the decision for the
decode steps.

The condition reads the residual stream as the forward pass computes it: steerings installed at earlier
layers (or by outer contexts) are part of what it sees. :meth:`Condition.matches` reads the model as it
is now, with the same pooling, so it says what generation will decide for an unsteered model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch

from steerlab.condition_io import read_condition, write_condition
from steerlab.errors import SteeringError, VectorError
from steerlab.models.anatomy import Anatomy

if TYPE_CHECKING:
    from steerlab.models.handle import ModelHandle

COMPARISONS = ("greater", "less")
RULES = ("all", "any", "not")


def pooled_prompt_mean(h: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean of ``h`` ``(B, T, W)`` over the tokens where ``real`` ``(B, T)`` is True, in float32 ``(B, W)``."""
    weights = real.to(torch.float32).unsqueeze(-1)
    count = weights.sum(1).clamp(min=1.0)
    return (h.to(torch.float32) * weights).sum(1) / count


def cosine_scores(pooled: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Cosine of each pooled state ``(B, W)`` with a unit ``direction`` ``(W,)``; 0 for a zero state."""
    norms = pooled.norm(dim=-1).clamp(min=1e-12)
    return (pooled @ direction.to(pooled.dtype)) / norms


@dataclass(frozen=True, eq=False)
class Condition:
    """One condition: fires when ``cos(prompt mean at layer, direction)`` compares true with ``threshold``.

    ``direction`` is stored as a float32 unit vector (any non-zero finite vector is normalised);
    ``model_id`` names the model it was found on (checked like a vector's, ``strict_model``);
    ``diagnostics`` records how it was chosen (per-layer accuracy and F1 from :func:`find_condition`).
    """

    direction: torch.Tensor
    layer: int
    threshold: float
    comparison: str = "greater"
    model_id: str = ""
    name: str = ""
    diagnostics: dict[str, Any] = field(default_factory=dict)
    skip: int = 0

    def __post_init__(self) -> None:
        d = self.direction
        if not isinstance(d, torch.Tensor) or d.dim() != 1 or d.numel() == 0:
            raise SteeringError("a condition's direction must be a non-empty 1-D tensor")
        d = d.detach().to(torch.float32).cpu()
        if not torch.isfinite(d).all():
            raise SteeringError("a condition's direction has non-finite values")
        norm = d.norm()
        if norm == 0:
            raise SteeringError("a condition's direction is all zeros")
        object.__setattr__(self, "direction", d / norm)
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise SteeringError(f"a condition's layer must be a non-negative int, got {self.layer!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float):
            raise SteeringError(f"a condition's threshold must be a number, got {self.threshold!r}")
        if not math.isfinite(float(self.threshold)):
            raise SteeringError(f"a condition's threshold must be finite, got {self.threshold}")
        object.__setattr__(self, "threshold", float(self.threshold))
        if isinstance(self.skip, bool) or not isinstance(self.skip, int) or self.skip < 0:
            raise SteeringError(f"a condition's skip must be a non-negative int, got {self.skip!r}")
        if self.comparison not in COMPARISONS:
            raise SteeringError(
                f"unknown condition comparison {self.comparison!r}; expected one of {', '.join(COMPARISONS)}"
            )

    @property
    def width(self) -> int:
        return int(self.direction.shape[0])

    # ------------------------------------------------------------- deciding
    def decide(self, scores: torch.Tensor) -> torch.Tensor:
        """Fire (True) where ``scores`` compare true with the threshold."""
        return scores > self.threshold if self.comparison == "greater" else scores < self.threshold

    def scores(self, pooled: torch.Tensor) -> torch.Tensor:
        """The condition's score for each pooled prompt state ``(B, W)``."""
        return cosine_scores(pooled, self.direction.to(pooled.device))

    def check_fits(self, anatomy: Anatomy, model_id: str | None = None, *, strict_model: bool = True) -> None:
        """Refuse a condition for another width, a layer the model lacks, or (strict) another model."""
        expected = anatomy.site_width("resid")
        if self.width != expected:
            raise SteeringError(
                f"condition width {self.width} does not fit this model: its residual stream has width {expected}"
            )
        if self.layer >= anatomy.num_layers:
            raise SteeringError(
                f"condition layer {self.layer} is out of range: the model has layers 0..{anatomy.num_layers - 1}"
            )
        if strict_model and model_id and self.model_id and self.model_id != model_id:
            raise SteeringError(
                f"condition was found on model '{self.model_id}' but this model is '{model_id}'. "
                "Pass strict_model=False to use it anyway."
            )

    def leaves(self) -> list[Condition]:
        return [self]

    def evaluate(self, fired: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """This leaf's per-row decision from ``fired`` (``id(leaf) -> (B,) bool``)."""
        return fired[id(self)]

    def describe(self) -> str:
        sign = ">" if self.comparison == "greater" else "<"
        return f"{self.name or 'condition'}(layer {self.layer}, cos {sign} {self.threshold:.4g}, skip {self.skip})"

    def matches(self, lm: ModelHandle, prompts: Sequence[str], *, chat: bool = True) -> list[bool]:
        """Whether the condition fires on each prompt (chat-formatted like ``lm.generate`` does by default)."""
        return matches(self, lm, prompts, chat=chat)

    # ------------------------------------------------------------------ I/O
    def record(self) -> dict[str, Any]:
        """The JSON record saved beside the direction (also what ``steerlab info`` and the server show)."""
        return {
            "name": self.name,
            "model_id": self.model_id,
            "width": self.width,
            "layer": self.layer,
            "threshold": self.threshold,
            "comparison": self.comparison,
            "skip": self.skip,
            "site": "resid",
            "pooling": "mean over the prompt's tokens; score = cosine with the direction",
            "diagnostics": self.diagnostics,
        }

    def save(self, path: str | Path) -> Path:
        """Write a ``.safetensors`` file (the direction, plus a JSON record in the header), atomically."""
        return write_condition(Path(path), self.direction, self.record())

    @classmethod
    def load(cls, path: str | Path, lm: ModelHandle | None = None, *, strict_model: bool = True) -> Condition:
        """Read a condition file; with ``lm``, refuse one made for another model or width at once."""
        direction, record = read_condition(Path(path))
        diagnostics = record.get("diagnostics") or {}
        try:
            cond = cls(
                direction=direction,
                layer=record.get("layer"),  # type: ignore[arg-type] - checked in __post_init__
                threshold=record.get("threshold"),  # type: ignore[arg-type]
                comparison=record.get("comparison", "greater"),
                model_id=str(record.get("model_id") or ""),
                name=str(record.get("name") or ""),
                diagnostics=diagnostics if isinstance(diagnostics, dict) else {},
                skip=record.get("skip", 0),  # type: ignore[arg-type]
            )
        except SteeringError as exc:
            raise VectorError(f"{path}: {exc}") from None
        if lm is not None:
            try:
                cond.check_fits(lm.anatomy, lm.model_id, strict_model=strict_model)
            except SteeringError as exc:
                raise VectorError(f"{path}: {exc}") from None
        return cond

    # ---------------------------------------------------------- combining
    def __and__(self, other: ConditionLike) -> Rule:
        return all_of(self, other)

    def __or__(self, other: ConditionLike) -> Rule:
        return any_of(self, other)

    def __invert__(self) -> Rule:
        return not_(self)


@dataclass(frozen=True, eq=False)
class Rule:
    """A combination of conditions: ``all`` (every part fires), ``any`` (one does), ``not`` (its one part
    does not)."""

    kind: str
    parts: tuple[ConditionLike, ...]

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise SteeringError(f"unknown condition rule {self.kind!r}; expected one of {', '.join(RULES)}")
        parts = tuple(self.parts)
        for part in parts:
            if not isinstance(part, Condition | Rule):
                raise SteeringError(f"a condition rule combines conditions, got {type(part).__name__}")
        if not parts:
            raise SteeringError(f"condition rule '{self.kind}' needs at least one condition")
        if self.kind == "not" and len(parts) != 1:
            raise SteeringError("condition rule 'not' takes exactly one condition")
        object.__setattr__(self, "parts", parts)

    def leaves(self) -> list[Condition]:
        out: list[Condition] = []
        for part in self.parts:
            out.extend(leaf for leaf in part.leaves() if all(leaf is not x for x in out))
        return out

    def evaluate(self, fired: Mapping[int, torch.Tensor]) -> torch.Tensor:
        values = [part.evaluate(fired) for part in self.parts]
        if self.kind == "not":
            return ~values[0]
        out = values[0]
        for value in values[1:]:
            out = (out & value) if self.kind == "all" else (out | value)
        return out

    def check_fits(self, anatomy: Anatomy, model_id: str | None = None, *, strict_model: bool = True) -> None:
        for leaf in self.leaves():
            leaf.check_fits(anatomy, model_id, strict_model=strict_model)

    def describe(self) -> str:
        inner = ", ".join(part.describe() for part in self.parts)
        return f"{self.kind}({inner})"

    def matches(self, lm: ModelHandle, prompts: Sequence[str], *, chat: bool = True) -> list[bool]:
        return matches(self, lm, prompts, chat=chat)

    def __and__(self, other: ConditionLike) -> Rule:
        return all_of(self, other)

    def __or__(self, other: ConditionLike) -> Rule:
        return any_of(self, other)

    def __invert__(self) -> Rule:
        return not_(self)


ConditionLike = Union[Condition, Rule]  # noqa: UP007 - a readable alias in docs


def all_of(*parts: ConditionLike) -> Rule:
    """Fires when every part fires."""
    return Rule("all", tuple(parts))


def any_of(*parts: ConditionLike) -> Rule:
    """Fires when at least one part fires."""
    return Rule("any", tuple(parts))


def not_(part: ConditionLike) -> Rule:
    """Fires when ``part`` does not."""
    return Rule("not", (part,))


def check_condition(value: Any) -> ConditionLike:
    """Accept a condition or a rule; anything else is a clear error."""
    if not isinstance(value, Condition | Rule):
        raise SteeringError(
            f"condition must be a steerlab.Condition (or a rule of them), got {type(value).__name__}"
        )
    return value


def leaf_scores(
    lm: ModelHandle, leaves: Sequence[Condition], prompts: Sequence[str], *, chat: bool = True
) -> dict[int, torch.Tensor]:
    """Each leaf's score on each prompt, reading every leaf layer in one pass of the reader."""
    from steerlab.reader import read

    if not prompts:
        raise SteeringError("no prompts to match")
    texts = [lm.chat(p) if chat else p for p in prompts]
    out = {}
    for skip in sorted({leaf.skip for leaf in leaves}):
        group = [leaf for leaf in leaves if leaf.skip == skip]
        layers = sorted({leaf.layer for leaf in group})
        acts = read(lm, texts, layers, position="mean", share_prefix=False, mean_skip=skip).acts
        out.update({id(leaf): leaf.scores(acts[leaf.layer]) for leaf in group})
    return out


def matches(cond: ConditionLike, lm: ModelHandle, prompts: Sequence[str], *, chat: bool = True) -> list[bool]:
    """Whether ``cond`` fires on each prompt."""
    cond = check_condition(cond)
    cond.check_fits(lm.anatomy, lm.model_id, strict_model=False)
    leaves = cond.leaves()
    scores = leaf_scores(lm, leaves, prompts, chat=chat)
    fired = {key: leaf.decide(scores[key]) for leaf in leaves for key in [id(leaf)]}
    return [bool(x) for x in cond.evaluate(fired)]
