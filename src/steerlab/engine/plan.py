"""Compiling steerings into per-site terms: the tensors a hook adds, built once at install time.

The hot path must cost about what a bare hook costs, so all arithmetic that does not depend on the
activations (normalising directions, applying strength units, stacking rows) happens here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from steerlab.engine.ops import OP_CODES
from steerlab.engine.spec import Steering, parse_positions
from steerlab.errors import SteeringError

if TYPE_CHECKING:
    from steerlab.lm import LM


@dataclass
class Term:
    """One edit at one site, for every row of the batch (``R`` rows, or 1 to broadcast)."""

    delta: torch.Tensor | None = None  # (R, 1, W)
    u: torch.Tensor | None = None  # (R, 1, W) unit directions, zero rows where not used
    a: torch.Tensor | None = None  # (R, 1, 1)
    b: torch.Tensor | None = None  # (R, 1, 1)
    kind: torch.Tensor | None = None  # (R,) position policy codes; None = every position of every row
    start: torch.Tensor | None = None  # (R,)

    @property
    def rows(self) -> int:
        ref = self.delta if self.delta is not None else self.u
        return 1 if ref is None else ref.shape[0]


@dataclass
class _Edit:
    """One op on one row at one site, before rows are stacked."""

    op: str
    vec: torch.Tensor
    a: float
    b: float
    pos: tuple[str, int]


@dataclass
class Plan:
    """All terms, grouped by ``(layer, site)``, plus whether any needs token positions."""

    terms: dict[tuple[int, str], list[Term]] = field(default_factory=dict)
    rows: int = 1

    @property
    def needs_positions(self) -> bool:
        return any(t.kind is not None for terms in self.terms.values() for t in terms)


def _direction(steering: Steering, layer: int) -> torch.Tensor:
    vector = steering.vector
    if layer in vector.directions:
        return vector.directions[layer]
    if len(vector.directions) == 1:
        return next(iter(vector.directions.values()))
    raise SteeringError(
        f"layer {layer} was asked for, but the vector has directions only for layers {vector.layers} "
        "(a single-layer vector may be applied at any layer; a multi-layer one only at its own)"
    )


def _edits_for(lm: LM, steering: Steering, *, strict_model: bool) -> dict[tuple[int, str], _Edit]:
    vector = steering.vector
    site = steering.resolved_site
    if site != vector.site and vector.width != lm.anatomy.site_width(site):
        raise SteeringError(
            f"vector was read at site '{vector.site}' (width {vector.width}); site '{site}' needs width "
            f"{lm.anatomy.site_width(site)}"
        )
    if site == vector.site:
        vector.check_fits(lm.anatomy, lm.model_id, strict_model=strict_model)
    strength = steering.resolved_strength()
    pos = parse_positions(steering.positions)
    edits = {}
    for layer in steering.resolved_layers():
        lm.anatomy.check_layer(layer)
        raw = _direction(steering, layer)
        norm = raw.norm()
        if norm == 0 and steering.op != "add":
            raise SteeringError(f"layer {layer}: the direction is all zeros, so '{steering.op}' is undefined")
        unit = raw / norm if norm > 0 else raw
        needs_norm = steering.unit == "norm" and steering.op in ("add", "clamp")
        typical = _typical_norm(lm, steering, layer, site) if needs_norm else 1.0
        if steering.op == "add":
            vec = unit * (strength * typical) if steering.unit == "norm" else raw * strength
            edits[(layer, site)] = _Edit("add", vec, 1.0, 0.0, pos)
        elif steering.op == "ablate":
            edits[(layer, site)] = _Edit("proj", unit, 1.0 - strength, 0.0, pos)
        elif steering.op == "clamp":
            edits[(layer, site)] = _Edit("proj", unit, 0.0, strength * typical, pos)
        else:  # scale
            edits[(layer, site)] = _Edit("proj", unit, strength, 0.0, pos)
    return edits


def _typical_norm(lm: LM, steering: Steering, layer: int, site: str) -> float:
    norms = steering.vector.norms if site == steering.vector.site else {}
    if layer in norms:
        return norms[layer]
    return lm.typical_norms(site)[layer]


def _merge_adds(edits: list[_Edit]) -> list[_Edit]:
    """Fold runs of adds with the same positions into one (cheaper hook, same result)."""
    out: list[_Edit] = []
    for edit in edits:
        prev = out[-1] if out else None
        if prev is not None and prev.op == "add" and edit.op == "add" and prev.pos == edit.pos:
            out[-1] = _Edit("add", prev.vec + edit.vec, 1.0, 0.0, prev.pos)
        else:
            out.append(edit)
    return out


def _stack(slot: list[_Edit | None], width: int, dtype: torch.dtype, device: torch.device) -> Term:
    rows = len(slot)
    zeros = torch.zeros(width)
    term = Term()
    if any(e is not None and e.op == "add" for e in slot):
        deltas = [e.vec if e is not None and e.op == "add" else zeros for e in slot]
        term.delta = torch.stack(deltas).view(rows, 1, width).to(device=device, dtype=dtype)
    if any(e is not None and e.op == "proj" for e in slot):
        proj = [e if e is not None and e.op == "proj" else None for e in slot]
        term.u = torch.stack([e.vec if e else zeros for e in proj]).view(rows, 1, width).to(device, dtype)
        term.a = torch.tensor([e.a if e else 1.0 for e in proj]).view(rows, 1, 1).to(device, dtype)
        term.b = torch.tensor([e.b if e else 0.0 for e in proj]).view(rows, 1, 1).to(device, dtype)
    policies = [e.pos if e is not None else ("all", 0) for e in slot]
    if any(p[0] != "all" for p in policies):
        term.kind = torch.tensor([OP_CODES[p[0]] for p in policies], device=device)
        term.start = torch.tensor([p[1] for p in policies], device=device)
    return term


def compile_plan(lm: LM, rows: Sequence[Sequence[Steering]], *, strict_model: bool = True) -> Plan:
    """Turn one list of steerings per row (a single list broadcasts to every row) into a :class:`Plan`."""
    per_row: list[dict[tuple[int, str], list[_Edit]]] = []
    for steerings in rows:
        sites: dict[tuple[int, str], list[_Edit]] = {}
        for steering in steerings:
            for key, edit in _edits_for(lm, steering, strict_model=strict_model).items():
                sites.setdefault(key, []).append(edit)
        per_row.append({key: _merge_adds(edits) for key, edits in sites.items()})
    plan = Plan(rows=len(rows))
    dtype, device = lm.dtype, lm.device
    for key in sorted({k for row in per_row for k in row}):
        width = lm.anatomy.site_width(key[1])
        depth = max(len(row.get(key, [])) for row in per_row)
        terms = []
        for i in range(depth):
            slot = [row[key][i] if i < len(row.get(key, [])) else None for row in per_row]
            terms.append(_stack(slot, width, dtype, device))
        plan.terms[key] = terms
    return plan


def additive_plan(deltas: dict[int, torch.Tensor], site: str = "resid") -> Plan:
    """A plan from raw per-layer tensors (kept attached to autograd: learned methods optimise them)."""
    plan = Plan()
    for layer, delta in deltas.items():
        plan.terms[(layer, site)] = [Term(delta=delta.view(1, 1, -1))]
    return plan
