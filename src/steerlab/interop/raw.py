"""Format sniffing, and steerkit's safetensors probe files.

Nothing here unpickles: ``.pt``/``.pkl`` vectors (EasySteer and others accept them) can run arbitrary code
when loaded, so steerlab does not read them at all.  safetensors is parsed by hand -- an 8-byte
little-endian header length, a JSON header, raw little-endian tensor bytes -- which needs no framework and
lets every malformation become a precise VectorError.

steerkit probe artifacts (``arvkevi/steerkit``, ``steerkit/probe.py``, ``Probe.save``, schema v3)
=========================================================================================
One layer per file.  Tensors ``direction.logistic``, ``direction.diff_of_means``, ``direction.mass_mean``
(unit-norm float32 ``[d_model]``); string metadata ``schema_version``, ``layer``, ``n_total_layers``,
``normalized_depth``, ``model_id``, ``hook_site``, ``hook_name``, ``default_method``, ``auto_alpha``,
``bias_json``, ``metrics_json``, ``created_at``, ``extras_json``.  ``layer`` follows
``steerkit/extract.py``'s ``_hook_name``: ``-1`` = embeddings (``hook_embed``), ``0..n-1`` = TransformerLens
``blocks.{layer}.hook_{hook_site}``, ``n`` = final layernorm.  With the default ``hook_site="resid_post"``
layer ``L`` is the output of block ``L`` = steerlab layer ``L``; see
:func:`steerlab.interop.gguf_cvec.steerkit_layer_to_ours` for the other sites.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from steerlab.errors import VectorError
from steerlab.interop.gguf_cvec import check_vector, steerkit_layer_to_ours
from steerlab.interop.guards import MAX_SAFETENSORS_HEADER, check_safetensors

__all__ = ["FORMAT_STEERKIT_PROBE", "read_steerkit_safetensors", "sniff_format"]

FORMAT_STEERKIT_PROBE = "steerkit probe safetensors"

_SNIFF_BYTES = 4096
_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}
_STEERKIT_REQUIRED = ("layer", "hook_site")


# ----------------------------------------------------------------------------------------------------
# Sniffing


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= min(size - 8, MAX_SAFETENSORS_HEADER) and head[8:9] == b"{"


def _looks_like_svec(head: bytes) -> bool:
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return text.startswith(b"{") and (b'"directions"' in head or b'"model_type"' in head)


def sniff_format(path: str | os.PathLike[str]) -> str:
    """Return ``"gguf"``, ``"safetensors"``, ``"svec"`` or ``"unknown"`` from the file's first bytes.

    Content decides, not the extension, because vectors get renamed and shared.  GGUF starts with the
    magic ``b"GGUF"``; safetensors with a little-endian u64 header length (that fits in the file) followed
    by ``{``; an IBM ``.svec`` is a JSON object mentioning ``"directions"`` or ``"model_type"`` near the top
    (json.dump writes ``model_type`` first).  Raises VectorError only if the file cannot be opened.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise VectorError(f"{path}: cannot open steering vector file ({exc})") from exc
    if head[:4] == b"GGUF":
        return "gguf"
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if _looks_like_svec(head):
        return "svec"
    return "unknown"


# ----------------------------------------------------------------------------------------------------
# safetensors container


def _entry_layout(name: str, entry: Any, path: Path) -> tuple[str, list[int], int, int]:
    """Validate one header entry and return ``(dtype, shape, begin, end)`` (offsets into the data)."""
    if not isinstance(entry, dict):
        raise VectorError(f"{path}: safetensors entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _ST_DTYPES:
        raise VectorError(
            f"{path}: tensor {name!r} has dtype {dtype!r}; directions must be floating point (F32/F16/BF16/F64)"
        )
    ok_shape = isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
    ok_offsets = isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
    if not (ok_shape and ok_offsets) or not 0 <= offsets[0] <= offsets[1]:
        raise VectorError(f"{path}: safetensors entry {name!r} has a malformed shape or data_offsets")
    return dtype, shape, offsets[0], offsets[1]


def _read_tensor(handle: Any, name: str, entry: Any, data_start: int, size: int, path: Path) -> np.ndarray:
    """Read one tensor's bytes into a float array with the declared shape."""
    dtype, shape, begin, end = _entry_layout(name, entry, path)
    itemsize = np.dtype(_ST_DTYPES[dtype]).itemsize
    if end - begin != int(np.prod(shape, dtype=np.int64)) * itemsize:
        raise VectorError(f"{path}: tensor {name!r}: byte range does not match shape {shape} of {dtype}")
    if data_start + end > size:
        raise VectorError(f"{path}: tensor {name!r} extends past the end of the file; the file is truncated")
    handle.seek(data_start + begin)
    raw = np.frombuffer(handle.read(end - begin), dtype=_ST_DTYPES[dtype])
    if dtype == "BF16":
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.reshape(shape)


# ----------------------------------------------------------------------------------------------------
# steerkit probes


def _steerkit_metadata(header: dict[str, Any], path: Path) -> dict[str, str]:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or any(key not in meta for key in _STEERKIT_REQUIRED):
        raise VectorError(
            f"{path}: safetensors file is not a steerkit probe (its __metadata__ lacks {_STEERKIT_REQUIRED}); "
            "no other safetensors vector layout is recognised"
        )
    return {str(k): str(v) for k, v in meta.items()}


def _int_field(meta: dict[str, str], key: str, path: Path) -> int | None:
    if key not in meta:
        return None
    try:
        return int(meta[key])
    except ValueError as exc:
        raise VectorError(f"{path}: steerkit metadata {key!r} = {meta[key]!r} is not an integer") from exc


def _decoded(meta: dict[str, str]) -> dict[str, Any]:
    """Decode steerkit's ``*_json`` and numeric fields for provenance; undecodable text stays as text."""
    out: dict[str, Any] = dict(meta)
    for key, value in meta.items():
        if key.endswith("_json"):
            with contextlib.suppress(ValueError):
                out[key] = json.loads(value)
    return out


def _pick_method(header: dict[str, Any], meta: dict[str, str], method: str | None, path: Path) -> str:
    available = sorted(k.split(".", 1)[1] for k in header if k.startswith("direction."))
    if not available:
        raise VectorError(f"{path}: steerkit probe has no direction.* tensors")
    chosen = method or meta.get("default_method") or "logistic"
    if chosen not in available:
        raise VectorError(
            f"{path}: steerkit probe has no direction for method {chosen!r}; available: {available}"
        )
    return chosen


def _auto_alpha(meta: dict[str, str]) -> float | None:
    try:
        return float(meta["auto_alpha"]) if meta.get("auto_alpha") else None
    except ValueError:
        return None


def read_steerkit_safetensors(
    path: str | os.PathLike[str], method: str | None = None
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Read a steerkit probe (``Probe.save`` safetensors) as ``(directions, provenance)``.

    A probe stores one layer and several candidate directions; ``method`` picks one (default: the probe's
    own ``default_method``).  The vector is returned as stored (steerkit keeps unit vectors and records a
    calibrated strength in ``auto_alpha``, surfaced in provenance).  The probe layer is mapped to a steerlab
    layer via its ``hook_site``; embeddings, the final layernorm and non-residual sites are refused.
    """
    path = Path(path)
    header, data_start = check_safetensors(path)  # every claimed size against the file, before reading
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            meta = _steerkit_metadata(header, path)
            chosen = _pick_method(header, meta, method, path)
            name = f"direction.{chosen}"
            values = _read_tensor(handle, name, header[name], data_start, size, path)
    except OSError as exc:
        raise VectorError(f"{path}: cannot read steerkit probe ({exc})") from exc
    vector = check_vector(values, label=f"{path}: tensor {name!r}", width=None)
    source_layer = _int_field(meta, "layer", path)
    n_total = _int_field(meta, "n_total_layers", path)
    try:
        layer = steerkit_layer_to_ours(source_layer, meta["hook_site"], n_total)
    except VectorError as exc:
        raise VectorError(f"{path}: {exc}") from exc
    provenance = {
        "format": FORMAT_STEERKIT_PROBE,
        "writer": "steerkit (Probe.save)",
        "path": str(path),
        "model_hint": meta.get("model_id"),
        "method": chosen,
        "available_methods": sorted(k.split(".", 1)[1] for k in header if k.startswith("direction.")),
        "hook_site": meta["hook_site"],
        "source_layers": [source_layer],
        "layer_map": {source_layer: layer},
        "auto_alpha": _auto_alpha(meta),
        "metadata": _decoded(meta),
        "notes": ["steerkit stores unit-norm directions; auto_alpha is its calibrated steering strength"],
    }
    return {layer: vector}, provenance
