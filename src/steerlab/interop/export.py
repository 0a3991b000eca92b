"""A :class:`SteeringVector` to and from a llama.cpp control vector, with the strength baked in.

llama.cpp adds ``direction.N`` to the output of block ``N`` *as stored*: it has no notion of a strength
unit, an op, a position policy or a site.  So exporting means deciding all of those here, once:

* the op must be ``add`` on the residual stream at every position (the only thing the format can say);
* the strength is multiplied into the vectors.  In the default ``unit="norm"`` the exported tensor is
  ``strength * typical_norm[layer] * unit_direction`` -- computed with the same float32 arithmetic as the
  runtime engine (:mod:`steerlab.engine.plan`), so llama.cpp adds exactly the tensor steerlab would add;
* layer 0 (the output of block 0) has no slot in the format and is refused, as llama.cpp refuses it.

Importing reads any control vector through :meth:`SteeringVector.load`; for files steerlab wrote, the
``steerlab.*`` metadata restores the model id, method and norms, so a file made for another model is
refused when checked against a model, like a native vector file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from steerlab.errors import SteeringError, VectorError
from steerlab.interop.gguf_cvec import FORMAT_LLAMA_CPP, write_control_vector

if TYPE_CHECKING:
    from steerlab.engine.spec import Steering
    from steerlab.lm import LM
    from steerlab.vector import SteeringVector

__all__ = [
    "STEERLAB_KEYS",
    "BakedAdd",
    "add_delta",
    "baked_add",
    "export_gguf",
    "import_vector",
    "model_hint_for",
    "restore_steerlab_record",
]

# Metadata steerlab writes next to the tensors (llama.cpp ignores metadata).  A ``steerlab.*`` key not
# listed here means the file came from a newer steerlab whose meaning we cannot know: refused on import.
KEY_MODEL_ID = "steerlab.model_id"
KEY_METHOD = "steerlab.method"
KEY_DATA_HASH = "steerlab.data_hash"
KEY_HIDDEN_SIZE = "steerlab.hidden_size"
KEY_BAKED = "steerlab.baked"
KEY_NORMS = "steerlab.norms"
STEERLAB_KEYS = frozenset(
    {
        "steerlab.layer_convention",  # written by gguf_cvec.write_control_vector itself
        KEY_MODEL_ID,
        KEY_METHOD,
        KEY_DATA_HASH,
        KEY_HIDDEN_SIZE,
        KEY_BAKED,
        KEY_NORMS,
    }
)


@dataclass(frozen=True)
class BakedAdd:
    """What llama.cpp will add: raw per-layer vectors plus the record of how they were made."""

    deltas: dict[int, torch.Tensor]  # steerlab layer -> float32 vector added to block output
    strength: dict[int, float]  # the strength of each layer's contribution, in its own unit
    unit: str
    typical_norms: dict[int, float]  # the norms used for unit="norm" (empty for raw)


def add_delta(direction: torch.Tensor, strength: float, typical: float | None) -> torch.Tensor:
    """The tensor the runtime engine adds for ``op="add"``: same float32 operations, same bits.

    ``typical`` is the typical residual norm (``unit="norm"``) or ``None`` for ``unit="raw"``.  Mirrors
    ``steerlab.engine.plan._edits_for`` so a baked vector is bit-identical to the runtime delta.
    """
    if typical is None:
        return direction * strength
    norm = direction.norm()
    unit = direction / norm if norm > 0 else direction
    return unit * (strength * typical)


def _direction_at(vector: SteeringVector, layer: int) -> torch.Tensor:
    """A multi-layer vector is used at its own layers; a single-layer one at any layer (as the engine)."""
    if layer in vector.directions:
        return vector.directions[layer]
    if len(vector.directions) == 1:
        return next(iter(vector.directions.values()))
    raise SteeringError(
        f"layer {layer} was asked for, but the vector has directions only for layers {vector.layers}"
    )


def _typical_norm(vector: SteeringVector, layer: int, lm: LM | None) -> float:
    if layer in vector.norms:
        return vector.norms[layer]
    if lm is not None:
        return lm.typical_norms("resid")[layer]
    raise SteeringError(
        f"strength unit 'norm' needs the typical residual norm at layer {layer}, which this vector does not "
        "record; pass the model (it will be measured) or use unit='raw'"
    )


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
    from steerlab.engine.spec import parse_positions

    if parse_positions(steering.positions)[0] != "all":
        raise SteeringError(
            f"positions={steering.positions!r} cannot be expressed in {what}: llama.cpp adds the vector at "
            "every position (prompt and generated tokens alike); use positions='all'"
        )


def baked_add(
    steerings: Steering | list[Steering], *, lm: LM | None = None, what: str = "a llama.cpp control vector"
) -> BakedAdd:
    """Sum one or more ``add`` steerings into raw per-layer vectors, refusing what llama.cpp cannot do.

    Several steerings on the same layer are summed (what the runtime engine does for consecutive adds).
    Layer 0 is refused: llama.cpp has no slot for the output of block 0.
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
        for layer in layers:
            direction = _direction_at(steering.vector, layer)
            typical = _typical_norm(steering.vector, layer, lm) if steering.unit == "norm" else None
            if typical is not None:
                norms[layer] = typical
            delta = add_delta(direction, strength, typical)
            deltas[layer] = deltas[layer] + delta if layer in deltas else delta
            strengths[layer] = strengths.get(layer, 0.0) + strength
    unit = units.pop() if len(units) == 1 else "mixed"
    return BakedAdd(dict(sorted(deltas.items())), dict(sorted(strengths.items())), unit, norms)


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
    extra = {
        KEY_MODEL_ID: vector.model_id,
        KEY_METHOD: vector.method,
        KEY_DATA_HASH: vector.data_hash,
        KEY_HIDDEN_SIZE: str(vector.hidden_size or vector.width),
        KEY_BAKED: json.dumps(record, sort_keys=True),
        KEY_NORMS: json.dumps({str(k): v for k, v in vector.norms.items()}),
    }
    return extra


def export_gguf(
    vector: SteeringVector,
    path: str | os.PathLike[str],
    *,
    strength: float | None = None,
    layers: Any = None,
    unit: str = "norm",
    op: str = "add",
    lm: LM | None = None,
    model_hint: str | None = None,
) -> BakedAdd:
    """Write ``vector`` as a llama.cpp control vector at ``path`` with ``strength`` baked in.

    ``strength``/``layers`` default to the vector's calibrated defaults (as for runtime steering).  With
    ``lm`` the vector is checked against that model and missing norms are measured on it.  The file is
    written atomically (nothing is left behind on error).  Returns what was written.
    """
    from steerlab.engine.spec import Steering

    steering = Steering(vector, strength=strength, op=op, layers=layers, unit=unit)
    baked = baked_add(steering, lm=lm)
    hint = model_hint_for(vector, lm, model_hint)
    write_control_vector(path, as_numpy(baked.deltas), hint, extra=_metadata(vector, baked))
    return baked


# ----------------------------------------------------------------------------------------------------
# Import


def _json_field(metadata: Mapping[str, Any], key: str, path: Path) -> Any:
    try:
        return json.loads(metadata[key])
    except (TypeError, ValueError) as exc:
        raise VectorError(f"{path}: metadata {key!r} is not valid JSON ({exc})") from exc


def restore_steerlab_record(vector: SteeringVector, path: str | os.PathLike[str] = "") -> SteeringVector:
    """Give back what steerlab recorded when it exported this file (model, method, norms).

    Idempotent, so :func:`steerlab.vector_io.read_vector` may call it too.  Files without that record
    (other writers, or ``write_control_vector`` with free-form extras) are returned as read.  In a file with the record, an unknown ``steerlab.*`` key means a newer export
    format whose meaning this version cannot know: refused rather than half-understood.
    """
    metadata = vector.provenance.get("metadata")
    if vector.provenance.get("format") != FORMAT_LLAMA_CPP or not isinstance(metadata, Mapping):
        return vector
    if KEY_MODEL_ID not in metadata:
        return vector
    path = Path(path) if path else Path(str(vector.provenance.get("path", "")))
    unknown = sorted(k for k in metadata if k.startswith("steerlab.") and k not in STEERLAB_KEYS)
    if unknown:
        raise VectorError(
            f"{path}: unknown steerlab metadata {unknown}; the file was written by a newer steerlab whose "
            "meaning this version cannot know"
        )
    norms_raw = _json_field(metadata, KEY_NORMS, path) if KEY_NORMS in metadata else {}
    baked = _json_field(metadata, KEY_BAKED, path) if KEY_BAKED in metadata else {}
    if not isinstance(norms_raw, dict) or not isinstance(baked, dict):
        raise VectorError(f"{path}: steerlab metadata 'norms'/'baked' must be JSON objects")
    try:
        norms = {int(k): float(v) for k, v in norms_raw.items()}
        hidden = int(metadata.get(KEY_HIDDEN_SIZE, vector.width))
    except (TypeError, ValueError) as exc:
        raise VectorError(f"{path}: malformed steerlab metadata ({exc})") from exc
    if hidden != vector.width:
        raise VectorError(
            f"{path}: metadata says hidden size {hidden} but the tensors have width {vector.width}"
        )
    method = str(metadata.get(KEY_METHOD, "unknown"))
    note = (
        f"exported for llama.cpp with strength baked in (op add, unit {baked.get('unit', '?')}); the directions "
        "are the raw vectors llama.cpp adds: apply with unit='raw', strength=1 to reproduce it"
    )
    try:
        return replace(
            vector,
            model_id=str(metadata[KEY_MODEL_ID]),
            hidden_size=hidden,
            method=f"{method} (llama.cpp export)",
            data_hash=str(metadata.get(KEY_DATA_HASH, "")),
            norms=norms,
            notes=note,
            provenance={**vector.provenance, "baked": baked},
        )
    except VectorError as exc:
        raise VectorError(f"{path}: {exc}") from exc


def import_vector(
    path: str | os.PathLike[str], lm: LM | None = None, *, strict_model: bool = True
) -> SteeringVector:
    """Read any vector file steerlab understands; restore steerlab's own record from GGUFs it exported.

    With ``lm`` the result is checked against the model (width, layer range, and -- for steerlab
    exports and native files -- the model id).
    """
    from steerlab.vector import SteeringVector

    path = Path(path)
    vector = restore_steerlab_record(SteeringVector.load(path), path)
    if lm is not None:
        vector.check_fits(lm.anatomy, lm.model_id, strict_model=strict_model)
    return vector


def as_numpy(deltas: Mapping[int, torch.Tensor]) -> dict[int, np.ndarray]:
    """Per-layer float32 numpy copies (what the GGUF writer and llama.cpp take)."""
    return {
        layer: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32) for layer, t in deltas.items()
    }
