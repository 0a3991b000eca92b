"""A :class:`SteeringVector` to and from a llama.cpp control vector, with the strength baked in.

llama.cpp adds ``direction.N`` to the output of block ``N`` *as stored*: it has no notion of a strength
unit, an op, a position policy or a site.  So exporting means deciding all of those here, once:

* the op must be ``add`` on the residual stream at every position (the only thing the format can say);
* the strength is multiplied into the vectors.  In ``unit="norm"`` the exported tensor is
  ``strength * typical_norm[layer] * unit_direction``.  It is computed by the runtime engine's own
  :func:`steerlab.engine.plan.add_vector`, so llama.cpp adds exactly the tensor steerlab would add;
* omitted fields (strength, unit, layers, op) mean what they mean at runtime: the vector's recorded
  defaults (:mod:`steerlab.engine.spec`);
* layer 0 (the output of block 0) has no slot in the format and is refused, as llama.cpp refuses it.

Importing reads any control vector through :meth:`SteeringVector.load`; for files steerlab wrote, the
``steerlab.*`` metadata (:mod:`steerlab.interop.gguf_record`) restores the model id, method and norms, so
a file made for another model is refused when checked against a model, like a native vector file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from steerlab.engine.plan import add_vector, direction_at, typical_norm_at, uses_typical_norm
from steerlab.engine.spec import Steering, parse_positions
from steerlab.errors import SteeringError, VectorError
from steerlab.interop.gguf_cvec import write_control_vector
from steerlab.interop.gguf_record import export_metadata

if TYPE_CHECKING:
    from steerlab.lm import LM
    from steerlab.vector import SteeringVector

__all__ = [
    "BakedAdd",
    "as_numpy",
    "baked_add",
    "export_gguf",
    "import_vector",
    "model_hint_for",
]


@dataclass(frozen=True)
class BakedAdd:
    """What llama.cpp will add: raw per-layer vectors plus the record of how they were made."""

    deltas: dict[int, torch.Tensor]  # steerlab layer -> float32 vector added to block output
    strength: dict[int, float]  # the strength of each layer's contribution, in its own unit
    unit: str
    typical_norms: dict[int, float]  # the norms used for unit="norm" (empty for raw)


def _check_expressible(steering: Steering, what: str) -> None:
    """Refuse anything a control vector (a plain per-block add) cannot say."""
    if steering.op != "add":
        raise SteeringError(
            f"op '{steering.op}' cannot be expressed in {what}: a llama.cpp control vector can only add a "
            "fixed vector to a block's output. Use op='add', or steer with steerlab's own engine."
        )
    if steering.resolved_site != "resid":
        raise SteeringError(
            f"site '{steering.resolved_site}' cannot be expressed in {what}: llama.cpp adds control vectors "
            "to the residual stream (block outputs) only"
        )
    if parse_positions(steering.positions)[0] != "all":
        raise SteeringError(
            f"positions={steering.positions!r} cannot be expressed in {what}: llama.cpp adds the vector at "
            "every position (prompt and generated tokens alike); use positions='all'"
        )
    if steering.condition is not None:
        raise SteeringError(
            f"a condition cannot be expressed in {what}: llama.cpp adds the vector to every prompt; "
            "conditional steering runs in steerlab's torch engine"
        )


def _measured_norms(steering: Steering, lm: LM | None) -> dict[str, dict[int, float]]:
    """Typical residual norms for layers the vector records none for: measured on ``lm`` if given."""
    if lm is None or not uses_typical_norm(steering):
        return {}
    if all(layer in steering.vector.norms for layer in steering.resolved_layers()):
        return {}
    return {"resid": dict(lm.typical_norms("resid"))}


def baked_add(
    steerings: Steering | list[Steering], *, lm: LM | None = None, what: str = "a llama.cpp control vector"
) -> BakedAdd:
    """Sum one or more ``add`` steerings into raw per-layer vectors, refusing what llama.cpp cannot do.

    Each layer's tensor is the engine's own (:func:`steerlab.engine.plan.add_vector`), so llama.cpp adds
    exactly what steerlab would. Several steerings on the same layer are summed (what the runtime engine
    does for consecutive adds). Layer 0 is refused: llama.cpp has no slot for the output of block 0.
    """
    items = steerings if isinstance(steerings, list) else [steerings]
    if not items:
        raise SteeringError("nothing to export: no steering given")
    deltas: dict[int, torch.Tensor] = {}
    strengths: dict[int, float] = {}
    norms: dict[int, float] = {}
    units = set()
    for steering in items:
        _check_expressible(steering, what)
        strength = steering.resolved_strength()
        layers = steering.resolved_layers()
        if 0 in layers:
            raise VectorError(
                f"layer 0 cannot be expressed in {what}: llama.cpp adds direction.N to the output of block N "
                "and rejects N = 0, so block 0's output has no slot. Choose layers from 1 (e.g. --layers "
                f"1-{max(max(layers), 1)})."
            )
        if lm is not None:
            steering.vector.check_fits(lm.anatomy, lm.model_id)
        units.add(steering.unit)
        measured = _measured_norms(steering, lm)
        for layer in layers:
            direction_at(steering.vector, layer)  # a missing layer is named before any missing norm
            typical = 1.0
            if uses_typical_norm(steering):
                typical = _typical_norm(steering, layer, measured, lm)
                norms[layer] = typical
            delta = add_vector(steering, layer, typical)
            deltas[layer] = deltas[layer] + delta if layer in deltas else delta
            strengths[layer] = strengths.get(layer, 0.0) + strength
    unit = units.pop() if len(units) == 1 else "mixed"
    return BakedAdd(dict(sorted(deltas.items())), dict(sorted(strengths.items())), unit, norms)


def _typical_norm(steering: Steering, layer: int, measured: dict, lm: LM | None) -> float:
    try:
        return typical_norm_at(steering, layer, measured)
    except SteeringError:
        if lm is not None:
            raise
        raise SteeringError(
            f"strength unit 'norm' needs the typical residual norm at layer {layer}, which this vector does "
            "not record; pass the model (it will be measured) or use unit='raw'"
        ) from None


def model_hint_for(vector: SteeringVector, lm: LM | None = None, model_hint: str | None = None) -> str:
    """The ``controlvector.model_hint`` to write: the model family (HF ``model_type``), best known.

    llama.cpp never reads it, repeng writes the HF ``model_type``; we use an explicit hint, else the
    model's type, else a hint carried over from an imported file, else the vector's model id.
    """
    for candidate in (
        model_hint,
        lm.anatomy.model_type if lm is not None else None,
        vector.provenance.get("model_type"),
        vector.provenance.get("model_hint"),
        _known_model_type(vector.model_id),
        vector.model_id,
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    raise VectorError(
        "cannot tell which model family this vector is for (no model id recorded); pass model_hint "
        "(e.g. 'llama') or the model"
    )


def _known_model_type(model_id: str) -> str | None:
    """The HF ``model_type`` of ``model_id`` without loading or downloading anything, if known here."""
    if not model_id:
        return None
    from steerlab.models.loading import EMBEDDED_ID

    if model_id == EMBEDDED_ID:
        return "llama"
    try:
        from transformers import AutoConfig

        return str(AutoConfig.from_pretrained(model_id, local_files_only=True).model_type)
    except Exception:  # not cached / not a model id: the caller falls back to the id itself
        return None


def _metadata(vector: SteeringVector, baked: BakedAdd) -> dict[str, str]:
    record = {
        "op": "add",
        "unit": baked.unit,
        "strength": {str(k): v for k, v in baked.strength.items()},
        "typical_norms": {str(k): v for k, v in baked.typical_norms.items()},
    }
    return export_metadata(
        model_id=vector.model_id,
        method=vector.method,
        data_hash=vector.data_hash,
        hidden_size=vector.hidden_size or vector.width,
        norms=vector.norms,
        baked=record,
    )


def export_gguf(
    vector: SteeringVector,
    path: str | os.PathLike[str],
    *,
    strength: float | None = None,
    layers: Any = None,
    unit: str | None = None,
    op: str | None = None,
    lm: LM | None = None,
    model_hint: str | None = None,
) -> BakedAdd:
    """Write ``vector`` as a llama.cpp control vector at ``path`` with ``strength`` baked in.

    Omitted fields mean what they mean at runtime (:mod:`steerlab.engine.spec`): the vector's recorded
    defaults.  With ``lm`` the vector is checked against that model and missing norms are measured on it.
    The file is written atomically (nothing is left behind on error).  Returns what was written.
    """
    steering = Steering(vector, strength=strength, op=op, layers=layers, unit=unit)
    baked = baked_add(steering, lm=lm)
    hint = model_hint_for(vector, lm, model_hint)
    write_control_vector(path, as_numpy(baked.deltas), hint, extra=_metadata(vector, baked))
    return baked


# ----------------------------------------------------------------------------------------------------
# Import


def import_vector(
    path: str | os.PathLike[str], lm: LM | None = None, *, strict_model: bool = True
) -> SteeringVector:
    """Read any vector file steerlab understands (steerlab's record in its own GGUF exports restored).

    With ``lm`` the result is checked against the model (width, layer range, and -- for steerlab
    exports and native files -- the model id).
    """
    from steerlab.vector import SteeringVector

    return SteeringVector.load(Path(path), lm, strict_model=strict_model)


def as_numpy(deltas: Mapping[int, torch.Tensor]) -> dict[int, np.ndarray]:
    """Per-layer float32 numpy copies (what the GGUF writer and llama.cpp take)."""
    return {
        layer: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32) for layer, t in deltas.items()
    }
