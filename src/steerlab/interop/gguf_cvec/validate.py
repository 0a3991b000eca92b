"""Checking direction data before it is written or after it is read: one rule for every format.

A direction is a finite 1-D floating-point array, one value per hidden unit, and all layers of one vector
share a width.  The GGUF, ``.svec`` and raw-safetensors readers and writers call these checks so a bad
vector is refused with the same message whichever file it came from or goes to.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Any

import numpy as np

from steerlab.errors import VectorError


def _as_layer(key: Any, source: str) -> int:
    """Accept an integer layer key (Python or numpy), refusing bools and negatives."""
    if isinstance(key, bool) or not isinstance(key, Integral):
        raise VectorError(f"{source}: layer keys must be integers, got {key!r} ({type(key).__name__})")
    if key < 0:
        raise VectorError(f"{source}: layer {int(key)} is negative; layers count decoder blocks from 0")
    return int(key)


def check_vector(values: Any, *, label: str, width: int | None) -> np.ndarray:
    """Return ``values`` as a 1-D float32 array, or raise a VectorError naming ``label``.

    Why float32 after the check on the *original* dtype: integer or boolean data is never a direction (it
    usually means the wrong tensor was picked), and converting first would hide that.
    """
    try:
        arr = np.asarray(values)
    except Exception as exc:  # numpy raises several types for ragged/odd input
        raise VectorError(f"{label}: cannot be read as a numeric array ({exc})") from exc
    if arr.dtype.kind != "f":
        raise VectorError(f"{label}: must hold floating-point numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise VectorError(f"{label}: must be 1-D (one value per hidden unit), got shape {arr.shape}")
    if arr.size == 0:
        raise VectorError(f"{label}: is empty")
    if width is not None and arr.size != width:
        raise VectorError(f"{label}: has width {arr.size}, but other layers have width {width}")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise VectorError(f"{label}: contains {bad} non-finite value(s) (NaN/inf, or too large for float32)")
    return out


def validate_directions(
    directions: Mapping[Any, Any], *, source: str = "directions"
) -> dict[int, np.ndarray]:
    """Check a ``{layer: vector}`` mapping and return it as ``{int: float32 1-D array}``, sorted by layer.

    Every vector must be a finite 1-D floating-point array and all must share one width (one model's
    hidden size).  Writers call this before touching the disk so a bad vector never produces a file.
    """
    if not isinstance(directions, Mapping):
        raise VectorError(f"{source}: expected a mapping of layer -> vector, got {type(directions).__name__}")
    if not directions:
        raise VectorError(f"{source}: no layers given; a steering vector needs at least one layer")
    layers = {_as_layer(key, source): key for key in directions}
    if len(layers) != len(directions):
        raise VectorError(f"{source}: duplicate layer keys {sorted(directions)}")
    out: dict[int, np.ndarray] = {}
    width: int | None = None
    for layer in sorted(layers):
        vec = check_vector(directions[layers[layer]], label=f"{source}: layer {layer}", width=width)
        width = vec.size
        out[layer] = vec
    return out
