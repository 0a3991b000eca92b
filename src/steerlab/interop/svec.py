"""Read and write IBM activation-steering ``.svec`` files (JSON).

Format (``IBM/activation-steering``, ``activation_steering/steering_vector.py``)
===============================================================================
``SteeringVector.save`` writes ``json.dump({"model_type": str, "directions": {layer: list[float]},
"explained_variances": {layer: float}})``; JSON turns the integer layer keys into strings, and
``SteeringVector.load`` turns them back with ``int(k)`` (it requires all three keys).  Directions are
usually unit vectors (PCA components or explicitly normalised), stored as decimal floats.

Layer numbering -- the two halves of the library disagree by one
================================================================
* Extraction: ``read_representations`` defaults to ``hidden_layer_ids = range(num_hidden_layers)`` and
  ``batched_get_hiddens`` reads ``out.hidden_states[layer_id + 1]`` -- key ``L`` is measured on the
  output of block ``L`` (steerlab layer ``L``).
* Application: ``MalleableModel`` wraps every ``layers[i]`` in ``LeashLayer`` (``leash_layer.py``), whose
  ``forward`` adds the behaviour vector to ``hidden_states`` *before* calling the wrapped block -- key
  ``L`` is added to the *input* of block ``L``, i.e. the output of block ``L - 1`` (steerlab ``L - 1``);
  key 0 lands on the embeddings, which no steerlab layer names.

:func:`read_svec` defaults to ``site="extracted"`` (key ``L`` -> steerlab ``L``): a direction describes the
residual stream it was computed from, that mapping is total, and it is what repeng-style tools (and
steerlab) do.  ``site="applied"`` reproduces IBM's runtime instead (key ``L`` -> steerlab ``L - 1``,
refusing key 0).  :func:`write_svec` takes the same switch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from steerlab.errors import VectorError
from steerlab.interop.atomic import atomic_write
from steerlab.interop.gguf_cvec import check_vector, validate_directions
from steerlab.interop.guards import check_svec

__all__ = ["FORMAT_SVEC", "Site", "read_svec", "write_svec"]

FORMAT_SVEC = "ibm activation-steering svec"
Site = Literal["extracted", "applied"]
_SITES = ("extracted", "applied")


class _DuplicateKey(Exception):
    """Raised from the JSON object hook; turned into a VectorError by the caller."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: Python's json silently keeps the last of two equal keys; we refuse instead."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _load_json(path: Path) -> Any:
    check_svec(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VectorError(f"{path}: cannot open .svec file ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise VectorError(f"{path}: not a .svec file (not UTF-8 text: {exc})") from exc
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise VectorError(
            f"{path}: .svec JSON repeats the key {exc.args[0]!r}; the file is ambiguous"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise VectorError(f"{path}: not a valid .svec file (malformed JSON: {exc})") from exc


def _check_site(site: str) -> None:
    if site not in _SITES:
        raise VectorError(f"site must be one of {_SITES}, got {site!r}")


def _parse_key(key: str, path: Path, what: str) -> int:
    """svec layer keys are decimal strings of non-negative integers."""
    text = key.strip()
    if not text.isdigit() or not text.isascii():
        raise VectorError(f"{path}: {what} key {key!r} is not a non-negative integer layer id")
    return int(text)


def _svec_to_ours(key: int, site: str, path: Path) -> int:
    if site == "extracted":
        return key
    if key == 0:
        raise VectorError(
            f"{path}: svec layer 0 is applied by IBM's LeashLayer to the input of block 0 (the embeddings), "
            "which has no steerlab layer; read with site='extracted' to keep it"
        )
    return key - 1


def _ours_to_svec(layer: int, site: str) -> int:
    return layer if site == "extracted" else layer + 1


def _require(data: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    if key not in data:
        raise VectorError(f"{path}: .svec file has no {key!r} field")
    value = data[key]
    if not isinstance(value, kind):
        raise VectorError(
            f"{path}: .svec field {key!r} must be a JSON {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _parse_directions(
    raw: dict[str, Any], site: str, path: Path
) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    if not raw:
        raise VectorError(f"{path}: .svec 'directions' is empty")
    layer_map: dict[int, int] = {}
    directions: dict[int, np.ndarray] = {}
    width: int | None = None
    for key, values in raw.items():
        source = _parse_key(key, path, "directions")
        if source in layer_map:
            raise VectorError(f"{path}: duplicate layer {source} in 'directions' (keys like '5' and '05')")
        if not isinstance(values, list) or any(
            isinstance(v, bool) or not isinstance(v, int | float) for v in values
        ):
            raise VectorError(f"{path}: directions[{key!r}] must be a flat JSON list of numbers")
        label = f"{path}: directions[{key!r}]"
        try:
            numbers = np.asarray(values, dtype=np.float64)
        except (OverflowError, ValueError, TypeError) as exc:  # e.g. a 400-digit integer literal
            raise VectorError(f"{label}: cannot be read as float numbers ({exc})") from exc
        vec = check_vector(numbers, label=label, width=width)
        width = vec.size
        layer_map[source] = _svec_to_ours(source, site, path)
        directions[layer_map[source]] = vec
    return dict(sorted(directions.items())), layer_map


def _parse_variances(raw: Any, layer_map: dict[int, int], path: Path) -> dict[int, float]:
    """Explained variances re-keyed to steerlab layers; entries for layers without a direction are dropped."""
    if not isinstance(raw, dict):
        raise VectorError(
            f"{path}: .svec 'explained_variances' must be a JSON object, got {type(raw).__name__}"
        )
    out: dict[int, float] = {}
    for key, value in raw.items():
        source = _parse_key(key, path, "explained_variances")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise VectorError(f"{path}: explained_variances[{key!r}] must be a number, got {value!r}")
        if source in layer_map:
            out[layer_map[source]] = float(value)
    return dict(sorted(out.items()))


def read_svec(
    path: str | os.PathLike[str], *, site: Site = "extracted"
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Read an IBM activation-steering ``.svec`` file as ``(directions, provenance)``.

    ``directions`` maps steerlab layers to float32 1-D arrays; see the module docstring for ``site``.
    ``provenance`` holds ``format``, ``model_type`` (also as ``model_hint``), ``site``, ``source_layers``,
    ``layer_map`` (svec key -> steerlab layer), ``explained_variances`` (by steerlab layer) and ``notes``.

    Raises VectorError for malformed JSON, duplicate keys, missing/mistyped fields, non-integer or negative
    layer keys, non-numeric/nested/empty vectors, mixed widths and NaN/inf (or float32-overflowing) values.
    """
    _check_site(site)
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise VectorError(f"{path}: .svec file must hold a JSON object, got {type(data).__name__}")
    model_type = _require(data, "model_type", str, path)
    raw_dirs = _require(data, "directions", dict, path)
    directions, layer_map = _parse_directions(raw_dirs, site, path)
    notes = ["IBM's runtime adds svec layer L to the input of block L (steerlab layer L-1)"]
    variances: dict[int, float] = {}
    if "explained_variances" in data:
        variances = _parse_variances(data["explained_variances"], layer_map, path)
    else:
        notes.append("no 'explained_variances' field (IBM's SteeringVector.load requires one)")
    provenance = {
        "format": FORMAT_SVEC,
        "writer": "IBM activation-steering (SteeringVector.save)",
        "path": str(path),
        "model_type": model_type,
        "model_hint": model_type,
        "site": site,
        "source_layers": list(layer_map),
        "layer_map": layer_map,
        "explained_variances": variances,
        "metadata": {k: v for k, v in data.items() if k not in ("directions", "explained_variances")},
        "notes": notes,
    }
    return directions, provenance


def _check_variances(explained_variances: Mapping[int, float] | None, layers: set[int]) -> dict[int, float]:
    if explained_variances is None:
        return {}
    if not isinstance(explained_variances, Mapping):
        raise VectorError("explained_variances must be a mapping of layer -> number")
    out: dict[int, float] = {}
    for layer, value in explained_variances.items():
        if layer not in layers:
            raise VectorError(f"explained_variances has layer {layer!r}, which has no direction")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise VectorError(f"explained_variances[{layer}] must be a finite number, got {value!r}")
        out[int(layer)] = float(value)
    return out


def write_svec(
    path: str | os.PathLike[str],
    directions: Mapping[int, np.ndarray],
    model_type: str,
    explained_variances: Mapping[int, float] | None = None,
    *,
    site: Site = "extracted",
) -> None:
    """Write ``directions`` (steerlab layers) as an IBM ``.svec`` file that ``SteeringVector.load`` reads.

    float32 values are written as their exact decimal representation, so :func:`read_svec` gives back
    bit-identical arrays.  ``explained_variances`` defaults to an empty object (IBM's loader requires the
    key).  Validation happens before writing (VectorError) and the write is atomic (OSError if the file
    cannot be written).
    """
    _check_site(site)
    if not isinstance(model_type, str) or not model_type.strip():
        raise VectorError(f"model_type must be a non-empty string (HF config.model_type), got {model_type!r}")
    vectors = validate_directions(directions, source="svec")
    variances = _check_variances(explained_variances, set(vectors))
    payload = {
        "model_type": model_type,
        "directions": {str(_ours_to_svec(k, site)): v.tolist() for k, v in vectors.items()},
        "explained_variances": {str(_ours_to_svec(k, site)): v for k, v in sorted(variances.items())},
    }
    text = json.dumps(payload, allow_nan=False)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
