"""What to change: steerings turned into an ordered list of edits on named linear layers.

Checks every refusal the weights impose (positions other than ``"all"``, per-row steering, projections on
the residual stream except full ablation at every layer), finds each block's attention and MLP output
projections through the model's anatomy, and orders the edits as the runtime applies them within a block
(head -> attn -> mlp -> resid).  Nothing is written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from steerlab.bake.affine import Affine
from steerlab.engine.plan import Term, direction_at
from steerlab.engine.spec import Steering, parse_positions
from steerlab.errors import ModelError, SteeringError
from steerlab.models.anatomy import output_projection

if TYPE_CHECKING:
    from steerlab.lm import LM
    from steerlab.vector import SteeringVector


def _term_edits(term: Term) -> list[Affine]:
    """A compiled plan term (one row, every position) as affine edits, float64."""
    if term.kind is not None:
        raise SteeringError("a position policy other than 'all' cannot be baked into weights")
    if term.rows != 1:
        raise SteeringError("per-row steering cannot be baked into one set of weights")
    delta = None if term.delta is None else term.delta.reshape(-1).double()
    if term.u is None:
        return [Affine(delta, None, 1.0, 0.0)]
    u = term.u.reshape(-1).double()
    return [Affine(delta, u, float(term.a.reshape(-1)[0]), float(term.b.reshape(-1)[0]))]


# ----------------------------------------------------------------------------------------------------
# Finding the linear layers


def _mlp_out(lm: LM, layer: int) -> nn.Linear:
    """The MLP output projection of block ``layer``, found by the model's anatomy (one rule for all)."""
    mlp = lm.anatomy.module(layer, "mlp")
    proj = output_projection(mlp, lm.hidden_size)
    if isinstance(proj, nn.Linear):
        return proj
    found = f"a {type(proj).__name__}" if proj is not None else "no projection writing the hidden width"
    raise ModelError(
        f"block {layer}: the MLP output projection inside {type(mlp).__name__} is {found}, not an "
        "nn.Linear; mixture-of-experts, fused and Conv1D MLPs cannot be baked"
    )


def _attn_out(lm: LM, layer: int) -> nn.Linear:
    proj = lm.anatomy.blocks[lm.anatomy.check_layer(layer)].out_proj
    if not isinstance(proj, nn.Linear):
        raise ModelError(
            f"block {layer}: the attention output projection is {type(proj).__name__}, not an nn.Linear; "
            "it cannot be baked"
        )
    return proj


# ----------------------------------------------------------------------------------------------------
# Planning: steerings -> ordered edits per linear layer


@dataclass
class BakePlan:
    """Ordered edits ``(module, kind 'mlp'|'attn', side 'output'|'input', edit, label)``, plus the
    direction removed from the embeddings when the bake is an orthogonalisation."""

    edits: list[tuple[nn.Linear, str, str, Affine, str]] = field(default_factory=list)
    orthogonal: torch.Tensor | None = None  # unit direction removed from embeddings (Arditi)


def _single_direction(steering: Steering, layers: Sequence[int]) -> torch.Tensor:
    vector = steering.vector
    units = {layer: _unit(vector, layer) for layer in layers}
    first = next(iter(units.values()))
    if any(not torch.equal(first, u) for u in units.values()):
        raise SteeringError(
            "ablating the residual stream with a different direction at each layer cannot be baked: "
            "weight orthogonalisation removes one direction everywhere. Use one direction "
            "(vector.select([layer]), CLI --direction-from LAYER), or ablate at sites 'attn'/'mlp', "
            "which bake exactly per layer"
        )
    return first


def _unit(vector: SteeringVector, layer: int) -> torch.Tensor:
    """The unit direction the engine uses at ``layer`` (same layer rule: :func:`direction_at`)."""
    direction = direction_at(vector, layer)
    norm = direction.norm()
    if norm == 0:
        raise SteeringError(f"layer {layer}: the direction is all zeros, so it cannot be ablated")
    return direction / norm


def _is_orthogonalisation(lm: LM, steering: Steering) -> bool:
    """A resid-site proj op: bakeable only as full ablation at every layer (checked here)."""
    if steering.resolved_site != "resid" or steering.op == "add":
        return False
    layers = steering.resolved_layers()
    if steering.op != "ablate":
        raise SteeringError(
            f"op '{steering.op}' on the residual stream cannot be baked: a block output is a sum of the "
            "stream and the block's writes, and only the writes live in weights. Use site 'attn' or "
            "'mlp' (exact per layer), or op 'ablate' at every layer"
        )
    if steering.resolved_strength() != 1.0:
        raise SteeringError(
            f"ablate with strength {steering.resolved_strength()} on the residual stream cannot be baked: "
            "only full ablation (strength 1) at every layer is a weight edit (orthogonalisation); partial "
            "ablation bakes exactly at sites 'attn'/'mlp'"
        )
    if list(layers) != list(range(lm.num_layers)):
        raise SteeringError(
            f"ablating the residual stream at layers {list(layers)} cannot be baked: orthogonalising the "
            f"weights removes the direction everywhere, which matches ablation at every layer "
            f"(layers 0-{lm.num_layers - 1}) only. Ablate at sites 'attn'/'mlp' to bake per layer"
        )
    return True


def plan_bake(lm: LM, steerings: list[Steering], strict_model: bool) -> BakePlan:
    for steering in steerings:
        kind, _ = parse_positions(steering.positions)
        if kind != "all":
            raise SteeringError(
                f"positions={steering.positions!r} cannot be baked: weights act at every position; "
                "use positions='all' or steer at runtime"
            )
    ortho = [s for s in steerings if _is_orthogonalisation(lm, s)]
    plan_out = BakePlan()
    if ortho:
        if len(steerings) != 1:
            raise SteeringError(
                "orthogonalisation (ablate at every layer) must be baked on its own; bake the other "
                "steerings into the resulting folder in a second call"
            )
        steering = ortho[0]
        if strict_model:
            steering.vector.check_fits(lm.anatomy, lm.model_id)
        u = _single_direction(steering, steering.resolved_layers()).double()
        plan_out.orthogonal = u
        ablate = Affine(None, u, 0.0, 0.0)
        for layer in range(lm.num_layers):
            plan_out.edits.append(
                (_attn_out(lm, layer), "attn", "output", ablate, f"block {layer} attn out: ablate")
            )
            plan_out.edits.append(
                (_mlp_out(lm, layer), "mlp", "output", ablate, f"block {layer} mlp out: ablate")
            )
        return plan_out
    plan = lm.compile([steerings], strict_model=strict_model)
    # Runtime order within a block: head (o_proj input) -> attn output -> mlp output -> block output.
    order = {"head": 0, "attn": 1, "mlp": 2, "resid": 3}
    for (layer, site), terms in sorted(plan.terms.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        for term in terms:
            for edit in _term_edits(term):
                if site == "resid" and edit.u is not None:  # guarded above; keep the invariant explicit
                    raise SteeringError("a projection on the residual stream at one layer cannot be baked")
                what = "add" if edit.u is None else f"proj(a={edit.a:g}, b={edit.b:g})"
                if site in ("resid", "mlp"):
                    target, kind, side = _mlp_out(lm, layer), "mlp", "output"
                else:
                    target, kind = _attn_out(lm, layer), "attn"
                    side = "output" if site == "attn" else "input"
                plan_out.edits.append((target, kind, side, edit, f"block {layer} {site}: {what}"))
    return plan_out
