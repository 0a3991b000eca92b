"""Typed results of the arena's three kinds of job, and their JSON form.

Jobs return these objects; they become JSON only at the edge (the run store writes one file per job,
``results.json`` holds them all). ``to_json`` writes exactly the keys the report reads, leaving out the
measurements a method did not make (no ``training`` for a steering vector, no ``capability`` without a
capability set); ``from_json`` reads a saved job back for a resumed run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

#: Measurements some methods or configurations do not make: absent from the JSON when not made.
_OPTIONAL = (
    "training",
    "calibration",
    "per_example_nll",
    "neutral_samples",
    "capability",
    "merge_round_trip_max_abs_error",
)


@dataclass
class Measurements:
    """Every per-method measurement except build cost (``evaluate_adaptation`` fills it)."""

    eval: dict[str, Any]
    heldout: dict[str, Any]
    kl: dict[str, Any]
    ppl: float | None
    tokens_per_second: float
    tokens_per_second_unadapted: float
    extra_prompt_tokens: int
    reversibility: dict[str, Any]
    timings: dict[str, float]
    per_example_nll: list[float | None] | None = None
    neutral_samples: list[str] | None = None
    capability: dict[str, Any] | None = None


@dataclass
class MethodResult:
    """One method of the main stage: how it was built, what it costs, what it does. ``skipped`` says why
    a method that cannot apply to the task was not run (then nothing else is set)."""

    method: str
    wall_seconds: float
    family: str | None = None
    training: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    measured: Measurements | None = None
    merge_round_trip_max_abs_error: float | None = None
    artifact: str | None = None
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"method": self.method, "skipped": self.skipped, "wall_seconds": self.wall_seconds}
        out: dict[str, Any] = {
            "method": self.method,
            "family": self.family,
            "training": self.training,
            "calibration": self.calibration,
            "cost": self.cost,
            "settings": self.settings,
        }
        if self.measured is not None:
            out.update({f.name: getattr(self.measured, f.name) for f in fields(Measurements)})
        out["merge_round_trip_max_abs_error"] = self.merge_round_trip_max_abs_error
        out["artifact"] = self.artifact
        out["wall_seconds"] = self.wall_seconds
        return {k: v for k, v in out.items() if not (k in _OPTIONAL and v is None)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MethodResult:
        if "skipped" in d:
            return cls(d["method"], d.get("wall_seconds", 0.0), skipped=d["skipped"])
        names = {f.name for f in fields(Measurements)}
        measured = Measurements(**{k: d.get(k) for k in names}) if "eval" in d else None
        return cls(
            method=d["method"],
            wall_seconds=d.get("wall_seconds", 0.0),
            family=d.get("family"),
            training=d.get("training"),
            calibration=d.get("calibration"),
            cost=d.get("cost"),
            settings=d.get("settings", {}),
            measured=measured,
            merge_round_trip_max_abs_error=d.get("merge_round_trip_max_abs_error"),
            artifact=d.get("artifact"),
        )

    @property
    def eval_per_example(self) -> list[float]:
        return list(self.measured.eval["per_example"]) if self.measured else []

    @property
    def headline(self) -> float:
        """The effect on the evaluation split: what ranks steering methods against each other."""
        return float(self.measured.eval["estimate"]["value"]) if self.measured else float("nan")


@dataclass
class EfficiencyResult:
    """Effect after building with only ``n`` training examples (one seed)."""

    method: str
    n: int
    seed: int
    effect: float
    per_example: list[float]
    build_seconds: float
    shots_capped: bool

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EfficiencyResult:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass
class ComposeResult:
    """Effect and KL of several adaptations at once (or, for ``compose-single-*``, of one alone)."""

    parts: list[str]
    effect: float
    per_example: list[float]
    kl: float

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ComposeResult:
        return cls(**{f.name: d[f.name] for f in fields(cls)})
