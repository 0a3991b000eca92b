"""Compiling steerings into per-site terms: the tensors a hook adds, built once at install time.

The hot path must cost about what a bare hook costs, so all arithmetic that does not depend on the
activations (normalising directions, applying strength units, stacking rows) happens here, once.

Compilation is pure: it never runs the model. A ``unit="norm"`` steering needs the typical norm at each
layer it edits; the vector's recorded norms come first, and for the rest the caller passes ``norms``
(site -> layer -> typical norm), measured beforehand by :func:`steerlab.reader.typical_norms`.
:func:`norm_sites_needed` says which sites those are, so nothing is measured that is not used.

:func:`direction_at` and :func:`add_vector` are the public pieces that bake and GGUF export use to
produce exactly the tensor the runtime engine adds, instead of restating the rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from steerlab.engine import ops
from steerlab.engine.condition import Condition, ConditionLike
from steerlab.engine.spec import Steering, parse_positions
from steerlab.errors import SteeringError
from steerlab.models.anatomy import Anatomy
from steerlab.models.handle import ModelHandle

if TYPE_CHECKING:
    from steerlab.vector import SteeringVector

#: Typical activation norms measured on a model: ``site -> layer -> median token norm``.
Norms = Mapping[str, Mapping[int, float]]


@dataclass
class Term:
    """One edit at one site, for every row of the batch (``R`` rows, or 1 to broadcast)."""

    delta: torch.Tensor | None = None  # (R, 1, W)
    u: torch.Tensor | None = None  # (R, 1, W) unit directions, zero rows where not used
    a: torch.Tensor | None = None  # (R, 1, 1)
    b: torch.Tensor | None = None  # (R, 1, 1)
    kind: torch.Tensor | None = None  # (R,) position policy codes; None = every position of every row
    start: torch.Tensor | None = None  # (R,)
    gate: torch.Tensor | None = None  # (R,) index into Plan.conditions, -1 = ungated; None = no gate
    conds: tuple[int, ...] = ()  # the condition indices ``gate`` uses (known without reading it)

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
    cond: int = -1  # index into Plan.conditions; -1: always applies


@dataclass
class Plan:
    """All terms, grouped by ``(layer, site)``, plus whether any needs token positions.

    ``conditions`` are the distinct conditions (or rules) that gate terms (``Term.gate`` indexes them),
    ``leaves`` the distinct single conditions they are made of (each read by one hook), and
    ``row_conditions[r]`` the condition index of each conditional steering of row ``r``, in order (what a
    report of "which conditions fired" lists). All empty when no steering has a condition: then nothing
    about conditions is installed.
    """

    terms: dict[tuple[int, str], list[Term]] = field(default_factory=dict)
    rows: int = 1
    conditions: list[ConditionLike] = field(default_factory=list)
    leaves: list[Condition] = field(default_factory=list)
    row_conditions: list[list[int]] = field(default_factory=list)

    @property
    def needs_positions(self) -> bool:
        return bool(self.conditions) or any(
            t.kind is not None for terms in self.terms.values() for t in terms
        )


# ------------------------------------------------------------------------------ public pure pieces
def direction_at(vector: SteeringVector, layer: int) -> torch.Tensor:
    """The stored (raw) direction a vector contributes at ``layer``.

    A multi-layer vector is used only at its own layers; a single-layer vector at any layer (a direction
    found at one depth is commonly applied over a band of layers).
    """
    if layer in vector.directions:
        return vector.directions[layer]
    if len(vector.directions) == 1:
        return next(iter(vector.directions.values()))
    raise SteeringError(
        f"layer {layer} was asked for, but the vector has directions only for layers {vector.layers} "
        "(a single-layer vector may be applied at any layer; a multi-layer one only at its own)"
    )


def uses_typical_norm(steering: Steering) -> bool:
    """Whether the steering's strength is relative to a typical norm (``add``/``clamp`` in unit norm)."""
    return steering.unit == "norm" and steering.op in ("add", "clamp")


def recorded_norm(steering: Steering, layer: int) -> float | None:
    """The typical norm the vector itself records for ``layer`` at the steered site, if any.

    Norms are recorded at the site the vector was read; steering another site (same width) uses that
    site's own measured norm instead.
    """
    if steering.resolved_site != steering.vector.site:
        return None
    return steering.vector.norms.get(layer)


def typical_norm_at(steering: Steering, layer: int, norms: Norms) -> float:
    """The norm a ``unit="norm"`` strength multiplies at ``layer``: recorded first, else ``norms``."""
    recorded = recorded_norm(steering, layer)
    if recorded is not None:
        return recorded
    site = steering.resolved_site
    measured = norms.get(site, {})
    if layer not in measured:
        raise SteeringError(
            f"strength unit 'norm' needs the typical '{site}' norm at layer {layer}: the vector records "
            "none and none was given (measure them with steerlab.reader.typical_norms, or use unit='raw')"
        )
    return float(measured[layer])


def add_vector(steering: Steering, layer: int, typical_norm: float) -> torch.Tensor:
    """The exact tensor an ``add`` steering adds at ``layer`` (float32 arithmetic, as the engine does).

    ``typical_norm`` is the norm the strength refers to for ``unit="norm"`` (see :func:`typical_norm_at`);
    it is ignored for ``unit="raw"``, which adds ``strength * direction`` as stored.
    """
    if steering.op != "add":
        raise SteeringError(f"add_vector is for op 'add', got '{steering.op}'")
    raw = direction_at(steering.vector, layer)
    strength = steering.resolved_strength()
    if steering.unit != "norm":
        return raw * strength
    norm = raw.norm()
    unit = raw / norm if norm > 0 else raw
    return unit * (strength * typical_norm)


def norm_sites_needed(model: ModelHandle | Anatomy, rows: Sequence[Sequence[Steering]]) -> set[str]:
    """Sites whose measured typical norms ``rows`` need: a norm-unit edit at a layer the vector lacks.

    Layers are checked against the model here, so a bad layer fails before any norm is measured.
    """
    anatomy = model.anatomy if isinstance(model, ModelHandle) else model
    sites: set[str] = set()
    for steerings in rows:
        for steering in steerings:
            if not uses_typical_norm(steering):
                continue
            for layer in steering.resolved_layers():
                anatomy.check_layer(layer)
                if recorded_norm(steering, layer) is None:
                    sites.add(steering.resolved_site)
    return sites


# ----------------------------------------------------------------------------------- compilation
def _edits_for(
    handle: ModelHandle, steering: Steering, norms: Norms, *, strict_model: bool
) -> dict[tuple[int, str], _Edit]:
    vector = steering.vector
    site = steering.resolved_site
    anatomy = handle.anatomy
    if site != vector.site and vector.width != anatomy.site_width(site):
        raise SteeringError(
            f"vector was read at site '{vector.site}' (width {vector.width}); site '{site}' needs width "
            f"{anatomy.site_width(site)}"
        )
    if site == vector.site:
        vector.check_fits(anatomy, handle.model_id, strict_model=strict_model)
    strength = steering.resolved_strength()
    pos = parse_positions(steering.positions)
    edits = {}
    for layer in steering.resolved_layers():
        anatomy.check_layer(layer)
        typical = typical_norm_at(steering, layer, norms) if uses_typical_norm(steering) else 1.0
        if steering.op == "add":
            edits[(layer, site)] = _Edit("add", add_vector(steering, layer, typical), 1.0, 0.0, pos)
            continue
        raw = direction_at(vector, layer)
        norm = raw.norm()
        if norm == 0:
            raise SteeringError(f"layer {layer}: the direction is all zeros, so '{steering.op}' is undefined")
        a, b = ops.component_rule(steering.op, strength, typical)
        edits[(layer, site)] = _Edit("proj", raw / norm, a, b, pos)
    return edits


def _merge_adds(edits: list[_Edit]) -> list[_Edit]:
    """Fold runs of adds with the same positions into one (cheaper hook, same result)."""
    out: list[_Edit] = []
    for edit in edits:
        prev = out[-1] if out else None
        same = prev is not None and prev.pos == edit.pos and prev.cond == edit.cond
        if same and prev.op == "add" and edit.op == "add":
            out[-1] = _Edit("add", prev.vec + edit.vec, 1.0, 0.0, prev.pos, prev.cond)
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
        term.kind = torch.tensor([ops.OP_CODES[p[0]] for p in policies], device=device)
        term.start = torch.tensor([p[1] for p in policies], device=device)
    gates = [e.cond if e is not None else -1 for e in slot]
    if any(g >= 0 for g in gates):
        term.gate = torch.tensor(gates, device=device)
        term.conds = tuple(sorted({g for g in gates if g >= 0}))
    return term


def check_condition_order(steering: Steering) -> None:
    """Refuse a condition the engine cannot decide before the steering needs it.

    The condition is decided in the prompt's forward pass at its layer (residual stream after that block);
    a steering that edits prompt positions must come no earlier: a later layer, or the same layer at the
    residual stream (the condition's hook runs first there). ``positions="generated"`` edits only tokens
    fed after the prompt, by which time every decision is made.
    """
    if steering.condition is None or steering.positions == "generated":
        return
    deepest = max(leaf.layer for leaf in steering.condition.leaves())
    site = steering.resolved_site
    for layer in steering.resolved_layers():
        if layer < deepest or (layer == deepest and site != "resid"):
            raise SteeringError(
                f"the condition reads layer {deepest} but the steering edits layer {layer} ('{site}') at "
                f"prompt positions ({steering.positions!r}), earlier in the same forward pass: the decision "
                "would come too late. Use a condition at an earlier layer, steer later layers, or "
                "positions='generated'"
            )


def compile_plan(
    handle: ModelHandle,
    rows: Sequence[Sequence[Steering]],
    *,
    norms: Norms,
    strict_model: bool = True,
) -> Plan:
    """Turn one list of steerings per row (a single list broadcasts to every row) into a :class:`Plan`.

    ``norms`` supplies measured typical norms (site -> layer -> norm) where a norm-unit steering's vector
    records none; :func:`norm_sites_needed` lists the sites that need them. Never runs the model.
    """
    per_row: list[dict[tuple[int, str], list[_Edit]]] = []
    plan = Plan(rows=len(rows))
    for steerings in rows:
        sites: dict[tuple[int, str], list[_Edit]] = {}
        conds: list[int] = []
        for steering in steerings:
            cond = _condition_index(plan, handle, steering, strict_model=strict_model)
            if cond >= 0:
                conds.append(cond)
            for key, edit in _edits_for(handle, steering, norms, strict_model=strict_model).items():
                edit.cond = cond
                sites.setdefault(key, []).append(edit)
        per_row.append({key: _merge_adds(edits) for key, edits in sites.items()})
        plan.row_conditions.append(conds)
    dtype, device = handle.dtype, handle.device
    for key in sorted({k for row in per_row for k in row}):
        width = handle.anatomy.site_width(key[1])
        depth = max(len(row.get(key, [])) for row in per_row)
        terms = []
        for i in range(depth):
            slot = [row[key][i] if i < len(row.get(key, [])) else None for row in per_row]
            terms.append(_stack(slot, width, dtype, device))
        plan.terms[key] = terms
    return plan


def _condition_index(plan: Plan, handle: ModelHandle, steering: Steering, *, strict_model: bool) -> int:
    """Register ``steering``'s condition (and its leaves) in ``plan``; its index, or -1 when it has none."""
    cond = steering.condition
    if cond is None:
        return -1
    cond.check_fits(handle.anatomy, handle.model_id, strict_model=strict_model)
    check_condition_order(steering)
    for leaf in cond.leaves():
        if all(leaf is not known for known in plan.leaves):
            plan.leaves.append(leaf)
    for i, known in enumerate(plan.conditions):
        if known is cond:
            return i
    plan.conditions.append(cond)
    return len(plan.conditions) - 1


def additive_plan(deltas: dict[int, torch.Tensor], site: str = "resid") -> Plan:
    """A plan from raw per-layer tensors (kept attached to autograd: learned methods optimise them)."""
    plan = Plan()
    for layer, delta in deltas.items():
        plan.terms[(layer, site)] = [Term(delta=delta.view(1, 1, -1))]
    return plan
