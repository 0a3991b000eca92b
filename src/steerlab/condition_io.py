"""Condition files: one ``.safetensors`` file holding the condition direction and a JSON record.

The layout mirrors a vector file (:mod:`steerlab.vector_io`): the tensor ``condition.direction`` and, in
the header, a ``steerlab_condition`` entry with the layer, threshold, comparison, model, width and the
diagnostics of the search that chose them. Headers are bounded before anything is read
(:func:`steerlab.interop.guards.check_safetensors`) and files are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import VectorError
from steerlab.vector_io import jsonable

FORMAT = "steerlab-condition"
FORMAT_VERSION = 1
HEADER_KEY = "steerlab_condition"
TENSOR = "condition.direction"


def write_condition(path: Path, direction: torch.Tensor, record: dict[str, Any]) -> Path:
    """Write the direction and ``record`` (stamped with this format) to ``path``, atomically."""
    from safetensors.torch import save_file

    from steerlab.interop.atomic import atomic_write

    if path.suffix != ".safetensors":
        raise VectorError(f"a condition file must end in .safetensors, got '{path.name}'")
    stamped = {**record, "format": FORMAT, "format_version": FORMAT_VERSION}
    header = {HEADER_KEY: json.dumps(stamped, sort_keys=True, default=jsonable)}
    tensors = {TENSOR: direction.contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return path


def is_condition_file(path: Path) -> bool:
    """Whether ``path`` is a safetensors file with a condition record (for ``steerlab info``)."""
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return False
    try:
        read_header(path)
    except (VectorError, OSError):
        return False
    return True


def read_header(path: Path) -> dict[str, Any]:
    """The condition record of ``path``, checked to be a JSON object of this format."""
    from safetensors import SafetensorError, safe_open

    from steerlab.interop.guards import check_safetensors

    check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise VectorError(f"{path} is not a readable safetensors file: {exc}") from exc
    if HEADER_KEY not in header:
        raise VectorError(f"{path} is not a steerlab condition file (no '{HEADER_KEY}' header entry)")
    try:
        record = json.loads(header[HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise VectorError(f"{path}: the condition record is not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise VectorError(f"{path}: the condition record must be a JSON object with format '{FORMAT}'")
    if record.get("format_version") != FORMAT_VERSION:
        raise VectorError(f"{path}: unsupported condition format version {record.get('format_version')!r}")
    return record


def read_condition(path: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """The direction and record of a condition file; a malformed one is a :class:`VectorError`."""
    from safetensors import SafetensorError, safe_open

    record = read_header(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            if TENSOR not in fh.keys():  # noqa: SIM118 - safe_open has no iterator
                raise VectorError(f"{path}: no '{TENSOR}' tensor")
            direction = fh.get_tensor(TENSOR)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, VectorError):
            raise
        raise VectorError(f"{path} is not a readable safetensors file: {exc}") from exc
    width = record.get("width")
    if direction.dim() != 1 or width != direction.shape[0]:
        raise VectorError(
            f"{path}: the record says width {width!r} but the direction has shape {list(direction.shape)}"
        )
    return direction, record
