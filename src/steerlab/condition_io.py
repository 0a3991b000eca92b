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

from steerlab.engine.condition import Condition
from steerlab.errors import SteeringError, VectorError
from steerlab.vector_io import jsonable

FORMAT = "steerlab-condition"
FORMAT_VERSION = 1
HEADER_KEY = "steerlab_condition"
TENSOR = "condition.direction"


def condition_record(cond: Condition) -> dict[str, Any]:
    """The JSON record saved beside the direction (also what ``steerlab info`` and the server list)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": cond.name,
        "model_id": cond.model_id,
        "width": cond.width,
        "layer": cond.layer,
        "threshold": cond.threshold,
        "comparison": cond.comparison,
        "site": "resid",
        "pooling": "prompt mean, cosine with the direction",
        "diagnostics": cond.diagnostics,
    }


def save_condition(cond: Condition, path: Path) -> Path:
    from safetensors.torch import save_file

    from steerlab.interop.atomic import atomic_write

    if path.suffix != ".safetensors":
        raise VectorError(f"a condition file must end in .safetensors, got '{path.name}'")
    header = {HEADER_KEY: json.dumps(condition_record(cond), sort_keys=True, default=jsonable)}
    tensors = {TENSOR: cond.direction.contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return path


def is_condition_file(path: Path) -> bool:
    """Whether ``path`` is a safetensors file with a condition record (for ``steerlab info``)."""
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


def load_condition(path: Path) -> Condition:
    """Read a condition file; a malformed record or tensor is a :class:`VectorError` naming the file."""
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
        raise VectorError(f"{path}: the record says width {width!r} but the direction has shape {list(direction.shape)}")
    diagnostics = record.get("diagnostics") or {}
    try:
        return Condition(
            direction=direction,
            layer=record.get("layer"),
            threshold=record.get("threshold"),
            comparison=record.get("comparison", "greater"),
            model_id=str(record.get("model_id") or ""),
            name=str(record.get("name") or ""),
            diagnostics=diagnostics if isinstance(diagnostics, dict) else {},
        )
    except SteeringError as exc:
        raise VectorError(f"{path}: {exc}") from None
