"""steerlab's own record inside a GGUF control vector: the ``steerlab.*`` keys, written and read back.

llama.cpp ignores metadata, so when steerlab exports a control vector it writes, next to the tensors, what
the plain format cannot say: the model id, method, data hash, hidden size, the vector's typical norms and
how the strength was baked in.  Reading a GGUF file restores that record, so a file exported for one
model is refused against another like a native vector file.

Pure metadata: this module knows neither the engine nor :class:`~steerlab.vector.SteeringVector` (the
reader in :mod:`steerlab.vector_io` and the writer in :mod:`steerlab.interop.export` both sit above it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steerlab.errors import VectorError
from steerlab.interop.gguf_cvec import FORMAT_LLAMA_CPP, STEERLAB_CONVENTION_KEY

__all__ = ["STEERLAB_KEYS", "export_metadata", "restored_fields"]

KEY_MODEL_ID = "steerlab.model_id"
KEY_METHOD = "steerlab.method"
KEY_DATA_HASH = "steerlab.data_hash"
KEY_HIDDEN_SIZE = "steerlab.hidden_size"
KEY_BAKED = "steerlab.baked"
KEY_NORMS = "steerlab.norms"
# A ``steerlab.*`` key not listed here means the file came from a newer steerlab whose meaning we cannot
# know: refused on import rather than half-understood.
STEERLAB_KEYS = frozenset(
    {STEERLAB_CONVENTION_KEY, KEY_MODEL_ID, KEY_METHOD, KEY_DATA_HASH, KEY_HIDDEN_SIZE, KEY_BAKED, KEY_NORMS}
)


def export_metadata(
    *,
    model_id: str,
    method: str,
    data_hash: str,
    hidden_size: int,
    norms: Mapping[int, float],
    baked: Mapping[str, Any],
) -> dict[str, str]:
    """The ``steerlab.*`` key/value strings to write next to exported tensors."""
    return {
        KEY_MODEL_ID: model_id,
        KEY_METHOD: method,
        KEY_DATA_HASH: data_hash,
        KEY_HIDDEN_SIZE: str(hidden_size),
        KEY_BAKED: json.dumps(dict(baked), sort_keys=True),
        KEY_NORMS: json.dumps({str(k): v for k, v in norms.items()}),
    }


def _json_field(metadata: Mapping[str, Any], key: str, path: Path) -> Any:
    try:
        return json.loads(metadata[key])
    except (TypeError, ValueError) as exc:
        raise VectorError(f"{path}: metadata {key!r} is not valid JSON ({exc})") from exc


def restored_fields(provenance: Mapping[str, Any], width: int, path: Path) -> dict[str, Any] | None:
    """The vector fields steerlab recorded when it exported the file read with ``provenance``.

    ``None`` for files without that record (other writers, or ``write_control_vector`` with free-form
    extras). Otherwise a dict of ``model_id``, ``hidden_size``, ``method``, ``data_hash``, ``norms``,
    ``notes`` and ``provenance`` to put on the vector.
    """
    metadata = provenance.get("metadata")
    if provenance.get("format") != FORMAT_LLAMA_CPP or not isinstance(metadata, Mapping):
        return None
    if KEY_MODEL_ID not in metadata:
        return None
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
        hidden = int(metadata.get(KEY_HIDDEN_SIZE, width))
    except (TypeError, ValueError, OverflowError) as exc:
        raise VectorError(f"{path}: malformed steerlab metadata ({exc})") from exc
    if hidden != width:
        raise VectorError(f"{path}: metadata says hidden size {hidden} but the tensors have width {width}")
    method = str(metadata.get(KEY_METHOD, "unknown"))
    notes = (
        f"exported for llama.cpp with strength baked in (op add, unit {baked.get('unit', '?')}); the "
        "directions are the raw vectors llama.cpp adds: apply with unit='raw', strength=1 to reproduce it"
    )
    return {
        "model_id": str(metadata[KEY_MODEL_ID]),
        "hidden_size": hidden,
        "method": f"{method} (llama.cpp export)",
        "data_hash": str(metadata.get(KEY_DATA_HASH, "")),
        "norms": norms,
        "notes": notes,
        "provenance": {**provenance, "baked": baked},
    }
