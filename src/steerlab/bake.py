"""Baking steering into weights: an ordinary HF model folder that behaves like the steered model.

Every runtime edit steerlab makes is an affine map of one activation, ``y -> M y + t`` with
``M = I + (a - 1) u u^T`` (``a = 1`` for ``add``).  Where that activation is the output (or input) of a
linear layer, the map folds into the layer's weight and bias exactly:

=====================  =========================================================================
runtime steering       weights (block ``L``)
=====================  =========================================================================
``add`` at ``resid``   bias on the MLP output projection (``down_proj``): the MLP output is added
                       to the residual stream, so the bias is added to block ``L``'s output at
                       every position -- runtime ``add`` with ``positions="all"``
any op at ``mlp``      ``W <- M W``, ``b <- M b + t`` on the MLP output projection
any op at ``attn``     the same on the attention output projection (``o_proj``)
any op at ``head``     ``W <- W M``, ``b <- b + W t`` on ``o_proj`` (its input is the head site)
``ablate`` at          directional ablation by weight orthogonalisation (Arditi et al. 2024): the
``resid``, *every*     direction is projected out of the token embeddings and of every attention
layer, one direction   and MLP output projection, so nothing ever writes it into the stream
=====================  =========================================================================

A missing bias parameter is added by switching on the architecture's config flag (``mlp_bias`` /
``attention_bias``; the sibling projections get zero biases) so the folder loads in stock transformers.

Not expressible, refused: position policies other than ``"all"`` (weights act at every position),
``ablate``/``clamp``/``scale`` on the residual stream at some layers only, or with a different direction
per layer (runtime ablation at block outputs is not a weight edit: see below), and per-row steering.

Runtime ``ablate`` at every block output is *not* the same model as the orthogonalised one: at runtime
block 0 still reads the embedding's component and each MLP reads its own block's attention component
before the block output is projected.  The exact runtime equivalent of the orthogonalised model is
ablation at the ``attn`` and ``mlp`` sites of every block plus the token embeddings
(:func:`runtime_equivalent`); the gap to block-output ablation is measured in ``docs/interop.md``.

Every bake is verified before it is kept: the written folder is reloaded and its logits compared to the
runtime equivalent on probe texts.  An architecture whose blocks do not add the MLP output straight to
the stream (e.g. a norm after the MLP) fails that check and nothing is written.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from steerlab.engine.plan import Term, direction_at
from steerlab.engine.spec import Steering, as_steerings, parse_positions
from steerlab.errors import ModelError, SteeringError
from steerlab.models.anatomy import output_projection

if TYPE_CHECKING:
    from steerlab.lm import LM
    from steerlab.vector import SteeringVector

__all__ = ["Affine", "BakeReport", "bake", "fold_input", "fold_output", "runtime_equivalent"]

BIAS_FLAGS = {"mlp": ("mlp_bias",), "attn": ("attention_bias",)}
# One short text: every position is compared, and the bias/orthogonalisation acts on all of them alike.
PROBE_TEXT = "The old lighthouse keeper climbed the stairs. Q: What is the capital of France? A: It is"
# Logits of the baked model may differ from runtime steering only by float rounding: the bias is added
# inside the projection instead of after the residual sum, and orthogonalised weights are computed in
# float64 then rounded.  Measured on SmolLM2-135M (float32): ~1e-5 relative; allowed: 1e-4 of the logit
# scale (plus 1e-4 absolute).
RTOL = 1e-4
ATOL = 1e-4


@dataclass
class BakeReport:
    """What was written and how closely it reproduces runtime steering."""

    out_dir: Path
    edits: list[str]
    config_changes: dict[str, Any]
    max_abs_diff: float | None = None
    logit_scale: float | None = None
    verified: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"baked model written to {self.out_dir}"]
        lines += [f"  {edit}" for edit in self.edits]
        if self.config_changes:
            lines.append(f"  config: {self.config_changes}")
        if self.verified:
            lines.append(
                f"  verified: max |logit diff| vs runtime steering {self.max_abs_diff:.2e} "
                f"(logit scale {self.logit_scale:.1f})"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Pure math: affine edits folded into a linear layer (float64)


@dataclass
class Affine:
    """``y -> y + ((a - 1) (y . u) + b) u`` after ``y -> y + delta``; ``u`` unit or None."""

    delta: torch.Tensor | None
    u: torch.Tensor | None
    a: float
    b: float

    def apply_vec(self, y: torch.Tensor) -> torch.Tensor:
        out = y if self.delta is None else y + self.delta
        if self.u is not None:
            out = out + ((self.a - 1.0) * (out @ self.u) + self.b) * self.u
        return out

    def offset(self) -> torch.Tensor | None:
        """``t`` in ``y -> M y + t``: the image of the zero vector."""
        if self.delta is None and (self.u is None or self.b == 0.0):
            return None
        zero = torch.zeros_like(self.u if self.u is not None else self.delta)
        return self.apply_vec(zero)


def fold_output(weight: torch.Tensor, bias: torch.Tensor | None, edit: Affine):
    """``(W, c)`` of ``x -> edit(W x + c)``; ``W`` is ``(out, in)``, all float64."""
    if edit.u is not None:
        u = edit.u
        weight = weight + (edit.a - 1.0) * torch.outer(u, u @ weight)
    bias = edit.apply_vec(bias) if bias is not None else edit.offset()
    return weight, bias


def fold_input(weight: torch.Tensor, bias: torch.Tensor | None, edit: Affine):
    """``(W, c)`` of ``x -> W edit(x) + c``; ``W`` is ``(out, in)``, all float64."""
    t = edit.offset()
    if t is not None:
        shift = weight @ t
        bias = shift if bias is None else bias + shift
    if edit.u is not None:
        u = edit.u
        weight = weight + (edit.a - 1.0) * torch.outer(weight @ u, u)
    return weight, bias


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


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules()}


# ----------------------------------------------------------------------------------------------------
# Planning: steerings -> ordered edits per linear layer


@dataclass
class _Bake:
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


def _plan_bake(lm: LM, steerings: list[Steering], strict_model: bool) -> _Bake:
    for steering in steerings:
        kind, _ = parse_positions(steering.positions)
        if kind != "all":
            raise SteeringError(
                f"positions={steering.positions!r} cannot be baked: weights act at every position; "
                "use positions='all' or steer at runtime"
            )
    ortho = [s for s in steerings if _is_orthogonalisation(lm, s)]
    plan_out = _Bake()
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


# ----------------------------------------------------------------------------------------------------
# Writing


def _new_weights(lm: LM, bake_plan: _Bake) -> tuple[dict[str, torch.Tensor], dict[str, set[str]], list[str]]:
    """Edited tensors by state-dict key, new bias keys by kind ('mlp'/'attn'), human-readable labels."""
    names = _module_names(lm.model)
    modules = dict(lm.model.named_modules())
    state: dict[str, list[torch.Tensor | None]] = {}
    kinds: dict[str, str] = {}
    labels = []
    for module, kind, side, edit, label in bake_plan.edits:
        name = names[id(module)]
        kinds[name] = kind
        if name not in state:
            bias = module.bias.detach().double() if module.bias is not None else None
            state[name] = [module.weight.detach().double(), bias]
        weight, bias = state[name]
        folder = fold_output if side == "output" else fold_input
        state[name] = list(folder(weight, bias, edit))
        labels.append(label)
    out: dict[str, torch.Tensor] = {}
    new_bias: dict[str, set[str]] = {"mlp": set(), "attn": set()}
    for name, (weight, bias) in state.items():
        module = modules[name]
        out[f"{name}.weight"] = weight.to(module.weight.dtype)
        if bias is not None:
            out[f"{name}.bias"] = bias.to(module.weight.dtype)
            if module.bias is None:
                new_bias[kinds[name]].add(f"{name}.bias")
    if bake_plan.orthogonal is not None:
        embed = lm.model.get_input_embeddings()
        u = bake_plan.orthogonal
        emb = embed.weight.detach().double()
        out[f"{names[id(embed)]}.weight"] = (emb - torch.outer(emb @ u, u)).to(embed.weight.dtype)
        labels.append("token embeddings: ablate")
    return out, new_bias, labels


def _bias_flags(lm: LM, new_bias: dict[str, set[str]]) -> dict[str, Any]:
    """Config switches that make the architecture create the biases we need."""
    changes: dict[str, Any] = {}
    config = lm.model.config
    for kind, keys in new_bias.items():
        if not keys:
            continue
        flags = [f for f in BIAS_FLAGS[kind] if hasattr(config, f)]
        if not flags:
            raise ModelError(
                f"{type(lm.model).__name__} has no bias on {sorted(keys)[0].rsplit('.', 1)[0]} and its config "
                f"offers no switch to add one (looked for {BIAS_FLAGS[kind]}), so an add there cannot be baked "
                "into a folder that stock transformers loads"
            )
        changes[flags[0]] = True
    return changes


def _tied(model: nn.Module) -> bool:
    out = model.get_output_embeddings()
    inp = model.get_input_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


def _build(lm: LM, tensors: dict[str, torch.Tensor], changes: dict[str, Any], untie: bool) -> nn.Module:
    """A fresh model of the changed config holding the original weights with ``tensors`` replaced."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config = copy.deepcopy(lm.model.config)
    for key, value in changes.items():
        setattr(config, key, value)
    if untie:
        config.tie_word_embeddings = False
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        text.tie_word_embeddings = False
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=lm.dtype)
    original = lm.model.state_dict()
    target = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, ref in target.items():
        if key in tensors:
            state[key] = tensors[key]
        elif key in original:
            state[key] = original[key].detach()  # shared, read-only: the new model is saved, never trained
        elif key.endswith(".bias"):
            state[key] = torch.zeros_like(ref)  # siblings of a new bias (gate/up, q/k/v): zero
        else:
            raise ModelError(f"the rebuilt {type(model).__name__} has a parameter {key} the original lacks")
    missing = [k for k in tensors if k not in target]
    if missing:
        raise ModelError(
            f"{type(model).__name__} has no parameter {missing[0]} even with {changes or 'its config'}; "
            "this edit cannot be baked into this architecture"
        )
    model.load_state_dict(state, strict=True, assign=True)
    if not untie and _tied(lm.model):
        model.tie_weights()
    model.generation_config = copy.deepcopy(lm.model.generation_config)
    return model.eval()


# ----------------------------------------------------------------------------------------------------
# Verification


@contextlib.contextmanager
def runtime_equivalent(
    lm: LM, steerings: Steering | SteeringVector | list, *, strict_model: bool = True, **defaults: Any
) -> Iterator[None]:
    """Install the runtime steering that a bake of ``steerings`` equals exactly.

    For everything but orthogonalisation this is ``lm.steer(steerings)`` itself.  For ablation at every
    layer it is ablation at the attention and MLP outputs of every block plus the token embeddings.
    """
    items = as_steerings(steerings, **defaults)
    bake_plan = _plan_bake(lm, items, strict_model)
    if bake_plan.orthogonal is None:
        with lm.steer(items, strict_model=strict_model):
            yield
        return
    from steerlab.vector import SteeringVector

    u32 = bake_plan.orthogonal.float()
    single = SteeringVector({0: u32}, model_id=lm.model_id, method="orthogonalisation")
    every = tuple(range(lm.num_layers))
    sites = [Steering(single, op="ablate", site=s, layers=every) for s in ("attn", "mlp")]

    def project(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        u = u32.to(output.dtype)
        return output - (output @ u).unsqueeze(-1) * u

    handle = lm.model.get_input_embeddings().register_forward_hook(project)
    try:
        with lm.steer(sites, strict_model=False):
            yield
    finally:
        handle.remove()


def _full_logits(model: nn.Module, ids: list[int], device: torch.device) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=False)
    return out.logits[0].float().cpu()


def _verify(lm: LM, folder: Path, steerings: list[Steering], strict_model: bool) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM

    baked, info = AutoModelForCausalLM.from_pretrained(str(folder), dtype=lm.dtype, output_loading_info=True)
    problems = {
        k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v
    }
    if problems:
        raise ModelError(f"the baked folder does not load cleanly in transformers: {problems}")
    baked = baked.to(lm.device).eval()
    ids = lm.encode(PROBE_TEXT)
    with runtime_equivalent(lm, steerings, strict_model=strict_model):
        ref = _full_logits(lm.model, ids, lm.device)
    got = _full_logits(baked, ids, lm.device)
    worst = float((got - ref).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    if not worst <= ATOL + RTOL * scale:
        raise ModelError(
            f"the baked model does not reproduce runtime steering (max |logit diff| {worst:.3g} at logit scale "
            f"{scale:.3g}): in this architecture the edited projections do not feed the residual stream "
            "directly (e.g. a norm after the MLP or attention), so the bake was refused and nothing written"
        )
    return worst, scale


# ----------------------------------------------------------------------------------------------------
# Entry point


def _prepare_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ModelError(f"{out_dir} already exists and is not empty; pass overwrite=True (CLI --force)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def _record(report: BakeReport, lm: LM, steerings: list[Steering]) -> dict[str, Any]:
    return {
        "format": "steerlab bake 1",
        "base_model": lm.model_id,
        "base_source": str(lm.source),
        "steerings": [
            {
                "vector": s.vector.metadata(),
                "op": s.op,
                "strength": s.resolved_strength(),
                "unit": s.unit,
                "layers": list(s.resolved_layers()),
                "site": s.resolved_site,
                "positions": s.positions,
            }
            for s in steerings
        ],
        "edits": report.edits,
        "config_changes": report.config_changes,
        "verified": report.verified,
        "max_abs_logit_diff": report.max_abs_diff,
        "notes": report.notes,
    }


def bake(
    lm: LM,
    steerings: Steering | SteeringVector | Sequence[Steering | SteeringVector],
    out_dir: str | os.PathLike[str],
    *,
    verify: bool = True,
    overwrite: bool = False,
    strict_model: bool = True,
    **defaults: Any,
) -> BakeReport:
    """Write an HF model folder at ``out_dir`` whose forward pass equals ``lm`` under ``steerings``.

    ``steerings`` is what ``lm.steer`` takes (``defaults`` -- strength, op, layers, unit, site -- apply
    to bare vectors).  ``lm`` is left untouched.  The folder is assembled in a temporary directory,
    reloaded and checked against runtime steering (``verify``), and only then moved to ``out_dir``;
    any refusal or failure leaves ``out_dir`` as it was.  ``steerlab.load(out_dir)`` loads the result.
    """
    items = as_steerings(list(steerings) if isinstance(steerings, list | tuple) else steerings, **defaults)
    if not items:
        raise SteeringError("nothing to bake: no steering given")
    out_dir = Path(out_dir)
    _prepare_target(out_dir, overwrite)
    bake_plan = _plan_bake(lm, items, strict_model)
    tensors, new_bias, labels = _new_weights(lm, bake_plan)
    changes = _bias_flags(lm, new_bias)
    untie = bake_plan.orthogonal is not None and _tied(lm.model)
    notes = []
    if untie:
        changes["tie_word_embeddings"] = False
        notes.append("the output head was tied to the embeddings; it is kept unedited as a separate matrix")
    if bake_plan.orthogonal is not None:
        notes.append(
            "orthogonalisation equals runtime ablation at sites attn+mlp of every block plus the token "
            "embeddings (steerlab.bake.runtime_equivalent), not ablation at block outputs"
        )
    model = _build(lm, tensors, changes, untie)
    report = BakeReport(out_dir=out_dir, edits=labels, config_changes=changes, notes=notes)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.bake-", dir=out_dir.parent))
    try:
        model.save_pretrained(staging)
        del model
        if hasattr(lm.tokenizer, "save_pretrained"):
            lm.tokenizer.save_pretrained(staging)
        else:
            report.notes.append("the tokenizer has no save_pretrained; the folder holds no tokenizer files")
        if verify:
            report.max_abs_diff, report.logit_scale = _verify(lm, staging, items, strict_model)
            report.verified = True
        (staging / "steerlab-bake.json").write_text(
            json.dumps(_record(report, lm, items), indent=2, default=str)
        )
        _move_into_place(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return report


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with ``staging`` so a reader sees the old folder or the complete new one."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.rmdir(old)
    os.replace(out_dir, old)
    try:
        os.replace(staging, out_dir)
    except OSError:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
