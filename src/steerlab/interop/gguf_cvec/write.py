"""Writing a GGUF control vector that llama.cpp loads (``--control-vector``) and peers read.

Everything is validated before the disk is touched and the file is written atomically
(:func:`steerlab.interop.atomic.atomic_write`), so a refusal or failure leaves no partial file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from steerlab.errors import VectorError
from steerlab.interop.atomic import atomic_write
from steerlab.interop.gguf_cvec.layers import (
    ARCH_CONTROLVECTOR,
    STEERLAB_CONVENTION,
    STEERLAB_CONVENTION_KEY,
    ours_to_llama_cpp,
)
from steerlab.interop.gguf_cvec.validate import validate_directions

_RESERVED_KEYS = frozenset(
    {
        "general.architecture",
        "general.alignment",
        f"{ARCH_CONTROLVECTOR}.model_hint",
        f"{ARCH_CONTROLVECTOR}.layer_count",
        STEERLAB_CONVENTION_KEY,
    }
)


def _check_model_hint(model_hint: Any) -> str:
    if not isinstance(model_hint, str) or not model_hint.strip():
        raise VectorError(
            f"model_hint must be a non-empty string naming the model family (e.g. 'llama'), got {model_hint!r}"
        )
    return model_hint


def _check_extra(extra: Mapping[str, str] | None) -> dict[str, str]:
    """Extra metadata must be string -> string and must not shadow keys the format defines."""
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise VectorError(f"extra metadata must be a mapping of str -> str, got {type(extra).__name__}")
    out: dict[str, str] = {}
    for key, value in extra.items():
        if not isinstance(key, str) or not key or key.startswith("GGUF."):
            raise VectorError(f"extra metadata key {key!r} is not a valid GGUF key")
        if key in _RESERVED_KEYS:
            raise VectorError(
                f"extra metadata key {key!r} is set by the writer itself and cannot be overridden"
            )
        if not isinstance(value, str):
            raise VectorError(f"extra metadata {key!r} must be a string, got {type(value).__name__}")
        out[key] = value
    return out


def _gguf_writer_fn(tensors: dict[int, np.ndarray], model_hint: str, extra: dict[str, str]):
    """Build the callback that writes the GGUF payload into atomic_write's temporary file."""

    def write(tmp: Path) -> None:
        import gguf

        writer = gguf.GGUFWriter(str(tmp), ARCH_CONTROLVECTOR)
        try:
            writer.add_string(f"{ARCH_CONTROLVECTOR}.model_hint", model_hint)
            # INT32 like llama.cpp's own writer (cvector-generator uses gguf_set_val_i32).
            writer.add_int32(f"{ARCH_CONTROLVECTOR}.layer_count", len(tensors))
            writer.add_string(STEERLAB_CONVENTION_KEY, STEERLAB_CONVENTION)
            for key, value in extra.items():
                writer.add_string(key, value)
            for n, vec in tensors.items():
                writer.add_tensor(f"direction.{n}", vec)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()

    return write


def write_control_vector(
    path: str | os.PathLike[str],
    directions: Mapping[int, np.ndarray],
    model_hint: str,
    extra: dict[str, str] | None = None,
) -> None:
    """Write ``directions`` (steerlab layers) as a llama.cpp control vector at ``path``.

    The file has ``general.architecture = "controlvector"``, ``controlvector.model_hint``,
    ``controlvector.layer_count`` (INT32, number of tensors) and one F32 1-D tensor ``direction.N`` per
    layer, so ``llama-cli --control-vector`` loads it and adds each vector to the output of block ``N``,
    which is exactly where steerlab layer ``N`` lives.  ``extra`` adds string metadata (llama.cpp ignores
    it; :func:`read_control_vector` returns it).

    Everything is validated before the disk is touched, and the file is written atomically, so a failure
    leaves no partial file and never clobbers an existing one.  Raises VectorError for layer 0 (no slot in
    llama.cpp), mixed widths, non-finite values, non-1-D or non-float vectors, or bad metadata; OSError if
    the file cannot be written (e.g. missing directory, full disk).
    """
    vectors = validate_directions(directions, source="control vector")
    tensors = {ours_to_llama_cpp(layer): vec for layer, vec in vectors.items()}
    writer = _gguf_writer_fn(tensors, _check_model_hint(model_hint), _check_extra(extra))
    atomic_write(path, writer)
