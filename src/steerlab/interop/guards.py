"""Bounds checks on vector-file headers, run before any parser allocates.

Why this exists: GGUF and safetensors headers carry counts and sizes (tensor counts, string lengths,
array lengths, tensor shapes) that parsers trust.  The ``gguf`` reader, for one, loops over an array's
claimed element count, so an 84-byte file claiming 2**40 elements makes it grow without bound.  Every
function here walks a header with a cursor that never reads past the end of the file, checks each claimed
count or size against the bytes that are actually there, and raises :class:`VectorError` naming what was
claimed and how big the file is.  Nothing here builds Python objects per claimed element, and the GGUF
walk memory-maps the file instead of reading it.

The checks are deliberately stricter than the formats themselves where a steering vector has no business
being large: a control vector's metadata holds a few strings and numbers, not tokenizer vocabularies, so
metadata arrays are capped (:data:`MAX_GGUF_ARRAY_ITEMS`).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path
from typing import Any

from steerlab.errors import VectorError

__all__ = [
    "MAX_GGUF_ARRAY_ITEMS",
    "MAX_GGUF_TENSORS",
    "MAX_SAFETENSORS_HEADER",
    "MAX_SVEC_BYTES",
    "check_gguf",
    "check_safetensors",
    "check_svec",
]

# A steering vector has one tensor per layer; the deepest models have a few hundred layers.
MAX_GGUF_TENSORS = 65536
# Total elements over every metadata array (the gguf reader builds several Python objects per element).
MAX_GGUF_ARRAY_ITEMS = 65536
MAX_GGUF_ARRAY_DEPTH = 4
GGML_MAX_DIMS = 4
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the reference implementation's own cap
MAX_SAFETENSORS_DIMS = 8
MAX_SVEC_BYTES = 256 * 1024 * 1024  # an 80-layer, 8192-wide vector in decimal JSON is ~15 MB

_GGUF_VERSIONS = (2, 3)
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# GGUF metadata value type id -> size in bytes of a fixed-size value.
_GGUF_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_UINT32 = 4
_GGUF_DEFAULT_ALIGNMENT = 32
# Smallest possible encodings, used to refuse impossible counts before looping over them.
_MIN_KV_BYTES = 8 + 4 + 1  # empty key, type, one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # empty name, n_dims = 0, type, offset

_SAFETENSORS_ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


def _file_size(path: Path, what: str) -> int:
    try:
        info = path.stat()
    except OSError as exc:
        raise VectorError(f"{path}: cannot open {what} ({exc.strerror or exc})") from exc
    if not path.is_file():
        raise VectorError(f"{path}: is not a regular file")
    return info.st_size


# ----------------------------------------------------------------------------------------------------
# GGUF


class _Cursor:
    """Reads fixed-size fields from a byte buffer, refusing any claim that runs past its end."""

    def __init__(self, data: Any, size: int, path: Path, order: str) -> None:
        self.data, self.size, self.path, self.order, self.pos = data, size, path, order, 0

    def need(self, n: int, what: str) -> None:
        left = self.size - self.pos
        if n < 0 or n > left:
            raise VectorError(
                f"{self.path}: GGUF {what} claims {n} bytes at offset {self.pos}, but only {left} are left "
                f"(file size {self.size} bytes); the file is truncated or corrupt"
            )

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.pos += n

    def u32(self, what: str) -> int:
        return struct.unpack(self.order + "I", self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack(self.order + "Q", self.take(8, what))[0]

    def string(self, what: str) -> bytes:
        length = self.u64(f"{what} length")
        return self.take(length, f"{what} (a string of {length} bytes)")

    def count(self, what: str, claimed: int, unit: int, cap: int) -> None:
        """Refuse ``claimed`` items of at least ``unit`` bytes each that cannot fit, or exceed ``cap``."""
        left = self.size - self.pos
        if claimed > cap:
            raise VectorError(
                f"{self.path}: GGUF header claims {claimed} {what}; a steering vector file may hold at most "
                f"{cap} (file size {self.size} bytes)"
            )
        if claimed * unit > left:
            raise VectorError(
                f"{self.path}: GGUF header claims {claimed} {what} (at least {claimed * unit} bytes) but only "
                f"{left} bytes are left (file size {self.size} bytes); the file is truncated or corrupt"
            )


class _GGUFBudget:
    """Array elements left to spend across the whole file (see :data:`MAX_GGUF_ARRAY_ITEMS`)."""

    def __init__(self, items: int) -> None:
        self.items = items


def _gguf_value(cur: _Cursor, vtype: int, key: str, budget: _GGUFBudget, depth: int) -> int | None:
    """Skip one metadata value; return it when it is a UINT32 (the only value the walk needs)."""
    if vtype in _GGUF_SCALAR_SIZE:
        if vtype == _GGUF_UINT32:
            return cur.u32(f"value of {key!r}")
        cur.skip(_GGUF_SCALAR_SIZE[vtype], f"value of {key!r}")
        return None
    if vtype == _GGUF_STRING:
        cur.string(f"value of {key!r}")
        return None
    if vtype != _GGUF_ARRAY:
        raise VectorError(f"{cur.path}: GGUF metadata {key!r} has unknown value type {vtype}")
    if depth >= MAX_GGUF_ARRAY_DEPTH:
        raise VectorError(
            f"{cur.path}: GGUF metadata {key!r} nests arrays deeper than {MAX_GGUF_ARRAY_DEPTH}"
        )
    itype = cur.u32(f"array item type of {key!r}")
    n = cur.u64(f"array length of {key!r}")
    if n > budget.items:
        raise VectorError(
            f"{cur.path}: GGUF metadata {key!r} claims an array of {n} elements; a steering vector's "
            f"metadata may hold at most {MAX_GGUF_ARRAY_ITEMS} array elements in all "
            f"(file size {cur.size} bytes)"
        )
    budget.items -= n
    if itype in _GGUF_SCALAR_SIZE:
        size = _GGUF_SCALAR_SIZE[itype]
        cur.count(f"elements in array {key!r}", n, size, MAX_GGUF_ARRAY_ITEMS)
        cur.skip(n * size, f"array {key!r} ({n} elements of {size} bytes)")
        return None
    unit = 8 if itype == _GGUF_STRING else 12 if itype == _GGUF_ARRAY else 1
    cur.count(f"elements in array {key!r}", n, unit, MAX_GGUF_ARRAY_ITEMS)
    for _ in range(n):
        _gguf_value(cur, itype, key, budget, depth + 1)
    return None


def _gguf_tensor_bytes(cur: _Cursor, name: str, dims: list[int], ggml_type: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise VectorError(f"{cur.path}: GGUF tensor {name!r} has unknown type id {ggml_type}") from None
    elements = 1
    for d in dims:
        elements *= d  # Python ints: no overflow, however large the claim
    if elements % block:
        raise VectorError(
            f"{cur.path}: GGUF tensor {name!r} has {elements} elements, not a multiple of its block size {block}"
        )
    return elements // block * type_size


def check_gguf(path: str | os.PathLike[str]) -> None:
    """Walk a GGUF file's header and refuse any count or size that the file cannot hold.

    Checks the tensor and metadata counts, every string and array length (arrays also against
    :data:`MAX_GGUF_ARRAY_ITEMS`), array nesting, each tensor's dimension count and shape, and that each
    tensor's bytes lie inside the data section.  Raises VectorError; returns nothing when the header is
    sound, after which the ``gguf`` reader can be trusted not to over-allocate.
    """
    path = Path(path)
    size = _file_size(path, "GGUF file")
    if size < 24:
        raise VectorError(
            f"{path}: GGUF file is {size} bytes, shorter than the 24-byte GGUF header; the file is "
            "truncated or corrupt"
        )
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _walk_gguf(data, size, path)
    except OSError as exc:
        raise VectorError(f"{path}: cannot read GGUF file ({exc.strerror or exc})") from exc


def _walk_gguf(data: Any, size: int, path: Path) -> None:
    if data[:4] != b"GGUF":
        raise VectorError(f"{path}: not a GGUF file (it does not start with the magic bytes b'GGUF')")
    (version,) = struct.unpack("<I", data[4:8])
    order = "<"
    if version & 0xFFFF == 0:  # written on a big-endian machine (the gguf reader swaps it too)
        order, (version,) = ">", struct.unpack(">I", data[4:8])
    if version not in _GGUF_VERSIONS:
        raise VectorError(
            f"{path}: GGUF version {version} is not supported (expected 2 or 3); the file is truncated or "
            "corrupt, or from a newer GGUF"
        )
    cur = _Cursor(data, size, path, order)
    cur.pos = 8
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    cur.count("tensors", n_tensors, _MIN_TENSOR_INFO_BYTES, MAX_GGUF_TENSORS)
    cur.count("metadata entries", n_kv, _MIN_KV_BYTES, size)
    budget = _GGUFBudget(MAX_GGUF_ARRAY_ITEMS)
    alignment = _GGUF_DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = cur.string("metadata key").decode("utf-8", "replace")
        vtype = cur.u32(f"value type of {key!r}")
        value = _gguf_value(cur, vtype, key, budget, 0)
        if key == "general.alignment":
            if value is None or value == 0 or value & (value - 1):
                raise VectorError(f"{path}: GGUF general.alignment must be a UINT32 power of two")
            alignment = value
    cur.count("tensors", n_tensors, _MIN_TENSOR_INFO_BYTES, MAX_GGUF_TENSORS)
    extents = []
    for _ in range(n_tensors):
        name = cur.string("tensor name").decode("utf-8", "replace")
        n_dims = cur.u32(f"dimension count of tensor {name!r}")
        if n_dims > GGML_MAX_DIMS:
            raise VectorError(
                f"{path}: GGUF tensor {name!r} claims {n_dims} dimensions; GGML allows at most {GGML_MAX_DIMS}"
            )
        dims = [cur.u64(f"dimension of tensor {name!r}") for _ in range(n_dims)]
        ggml_type = cur.u32(f"type of tensor {name!r}")
        offset = cur.u64(f"data offset of tensor {name!r}")
        extents.append((name, dims, ggml_type, offset))
    data_start = cur.pos + (-cur.pos % alignment)
    data_size = max(size - data_start, 0)
    for name, dims, ggml_type, offset in extents:
        nbytes = _gguf_tensor_bytes(cur, name, dims, ggml_type)
        if offset + nbytes > data_size:
            raise VectorError(
                f"{path}: GGUF tensor {name!r} (shape {dims}) claims {nbytes} bytes at data offset {offset}, "
                f"but the data section holds {data_size} bytes (file size {size}); the file is truncated "
                "or corrupt"
            )


# ----------------------------------------------------------------------------------------------------
# safetensors


def _safetensors_entry(path: Path, name: str, entry: Any, data_size: int, size: int) -> int:
    """Check one tensor entry and return its byte count."""
    if not isinstance(entry, dict):
        raise VectorError(f"{path}: safetensors entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _SAFETENSORS_ITEMSIZE:
        raise VectorError(f"{path}: safetensors tensor {name!r} has unknown dtype {str(dtype)[:40]!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_SAFETENSORS_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise VectorError(f"{path}: safetensors tensor {name!r} has a malformed shape {str(shape)[:80]}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise VectorError(
            f"{path}: safetensors tensor {name!r} has malformed data_offsets {str(offsets)[:80]}"
        )
    begin, end = offsets
    if end > data_size:
        raise VectorError(
            f"{path}: safetensors tensor {name!r} claims bytes {begin}..{end} of the data section, but it "
            f"holds {data_size} bytes (file size {size}); the file is truncated or corrupt"
        )
    elements = 1
    for d in shape:
        elements *= d
    if elements * _SAFETENSORS_ITEMSIZE[dtype] != end - begin:
        raise VectorError(
            f"{path}: safetensors tensor {name!r}: shape {shape} of {dtype} needs "
            f"{elements * _SAFETENSORS_ITEMSIZE[dtype]} bytes but its data_offsets span {end - begin}"
        )
    return end - begin


def check_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """Check a safetensors header against the file and return ``(header JSON, data section offset)``.

    The 8-byte header length must fit in the file (and under :data:`MAX_SAFETENSORS_HEADER`); the header
    must be a JSON object whose ``__metadata__`` is string -> string; every tensor needs a known dtype, a
    shape whose byte count matches its ``data_offsets``, and bytes inside the data section; and the
    tensors together may not claim more bytes than the data section holds.
    """
    path = Path(path)
    size = _file_size(path, "safetensors file")
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise VectorError(
                    f"{path}: safetensors file is {size} bytes, shorter than its 8-byte header length"
                )
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8 or header_len > MAX_SAFETENSORS_HEADER:
                raise VectorError(
                    f"{path}: safetensors header claims {header_len} bytes but the file has {size - 8} after "
                    f"the length field (file size {size}; headers may be at most {MAX_SAFETENSORS_HEADER} "
                    "bytes); the file is truncated or not safetensors"
                )
            raw = handle.read(header_len)
    except OSError as exc:
        raise VectorError(f"{path}: cannot read safetensors file ({exc.strerror or exc})") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise VectorError(f"{path}: safetensors header is not valid JSON ({str(exc)[:200]})") from exc
    if not isinstance(header, dict):
        raise VectorError(f"{path}: safetensors header must be a JSON object, got {type(header).__name__}")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise VectorError(f"{path}: safetensors __metadata__ must map strings to strings")
    data_start = 8 + header_len
    data_size = size - data_start
    total = 0
    for name, entry in header.items():
        if name != "__metadata__":
            total += _safetensors_entry(path, name, entry, data_size, size)
    if total > data_size:
        raise VectorError(
            f"{path}: safetensors tensors claim {total} bytes in all but the data section holds {data_size} "
            f"(file size {size}); tensors overlap or the file is corrupt"
        )
    return header, data_start


# ----------------------------------------------------------------------------------------------------
# .svec (JSON)


def check_svec(path: str | os.PathLike[str]) -> int:
    """Refuse a .svec file too large to be a steering vector before it is read; return its size.

    JSON declares no counts, so its size is the one claim to check: the whole text is decoded into
    Python objects (several times its size in memory), hence :data:`MAX_SVEC_BYTES`.
    """
    path = Path(path)
    size = _file_size(path, ".svec file")
    if size > MAX_SVEC_BYTES:
        raise VectorError(
            f"{path}: .svec file is {size} bytes; a steering vector in JSON may be at most {MAX_SVEC_BYTES}"
        )
    return size
