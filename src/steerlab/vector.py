"""``SteeringVector``: directions per layer plus everything needed to apply them honestly elsewhere.

A vector file must say which model it fits, which layer numbering it uses, where in the block it was read
(the site), how it was made and from what data, and the typical residual norm at each layer when it was
made (so a strength can be stated as a fraction of that norm and mean the same on another layer). Files
are safetensors with that record as JSON in the header; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from steerlab.errors import VectorError
from steerlab.models.anatomy import SITES
from steerlab.vector_io import (
    CONVENTION,
    CONVERTIBLE,
    FORMAT_VERSION,
    NATIVE_SUFFIX,
    VectorParts,
    jsonable,
    read_vector,
    write_safetensors,
)

if TYPE_CHECKING:
    from steerlab.models.anatomy import Anatomy

__all__ = ["CONVENTION", "CONVERTIBLE", "FORMAT_VERSION", "SITES", "SteeringVector"]


@dataclass(repr=False)
class SteeringVector(VectorParts):
    """Per-layer directions (float32, one width) and the record of where they came from.

    ``norms[i]`` is the typical residual-stream norm at layer ``i`` measured when the vector was made
    (median over tokens, first token of each sequence excluded because of attention-sink outliers).
    ``defaults`` may hold a calibrated ``strength``/``layers``/``op``/``unit`` used when a call omits them.
    """

    # The fields are VectorParts' (defined once, in vector_io, where files are read into them).

    def __post_init__(self) -> None:
        if self.convention not in CONVERTIBLE:
            raise VectorError(
                f"unknown layer convention '{self.convention}'; expected one of {sorted(CONVERTIBLE)}"
            )
        if self.site not in SITES:
            raise VectorError(f"unknown site '{self.site}'; expected one of {', '.join(SITES)}")
        offset = CONVERTIBLE[self.convention]
        if offset:
            self.directions = {int(k) + offset: v for k, v in self.directions.items()}
            self.norms = {int(k) + offset: v for k, v in self.norms.items()}
            self.provenance = {**self.provenance, "converted_from_convention": self.convention}
            self.convention = CONVENTION
        if not self.directions:
            raise VectorError("a steering vector needs at least one layer; got none")
        clean: dict[int, torch.Tensor] = {}
        widths = set()
        for layer, direction in self.directions.items():
            if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
                raise VectorError(f"layer keys must be non-negative ints, got {layer!r}")
            tensor = torch.as_tensor(direction).detach().to("cpu", torch.float32)
            if tensor.dim() != 1:
                raise VectorError(f"layer {layer}: a direction must be 1-D, got shape {tuple(tensor.shape)}")
            if not torch.isfinite(tensor).all():
                raise VectorError(f"layer {layer}: direction holds NaN or inf values")
            widths.add(tensor.shape[0])
            clean[layer] = tensor
        if len(widths) != 1:
            raise VectorError(f"all layers must share one width, found widths {sorted(widths)}")
        width = widths.pop()
        if self.hidden_size is None:
            self.hidden_size = width if self.site != "head" else self.hidden_size
        if self.site != "head" and self.hidden_size != width:
            raise VectorError(f"directions have width {width} but hidden_size says {self.hidden_size}")
        for layer, norm in self.norms.items():
            if not math.isfinite(float(norm)) or float(norm) <= 0:
                raise VectorError(
                    f"layer {layer}: recorded norm must be a positive finite number, got {norm}"
                )
        self.directions = dict(sorted(clean.items()))
        self.norms = {int(k): float(v) for k, v in sorted(self.norms.items())}

    # ----------------------------------------------------------------- views
    def __repr__(self) -> str:
        """One short line (the directions themselves would print hundreds of thousands of numbers)."""
        sizes = [float(d.norm()) for d in self.directions.values()]
        parts = [
            f"method={self.method!r}",
            f"model={self.model_id or '(unknown)'!r}",
            f"site={self.site!r}",
            f"layers={_ranges(self.layers)!r} ({len(self.layers)})",
            f"width={self.width}",
            f"direction_norm={_span(sizes)}",
        ]
        if self.norms:
            parts.append(f"typical_norm={_span(list(self.norms.values()))}")
        if self.defaults:
            text = json.dumps(self.defaults, default=jsonable)
            parts.append(f"defaults={text if len(text) <= 80 else text[:77] + '...'}")
        return f"SteeringVector({', '.join(parts)})"

    @property
    def layers(self) -> list[int]:
        return list(self.directions)

    @property
    def width(self) -> int:
        return next(iter(self.directions.values())).shape[0]

    def __getitem__(self, layer: int) -> torch.Tensor:
        if layer not in self.directions:
            raise VectorError(f"this vector has no direction for layer {layer}; it has layers {self.layers}")
        return self.directions[layer]

    def unit(self, layer: int) -> torch.Tensor:
        direction = self[layer]
        norm = direction.norm()
        if norm == 0:
            raise VectorError(f"layer {layer}: direction is all zeros, it has no orientation to steer along")
        return direction / norm

    # ------------------------------------------------------------ arithmetic
    def _combine(self, other: SteeringVector, sign: float, symbol: str) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        if other.width != self.width or other.site != self.site:
            raise VectorError(
                f"cannot combine vectors of width/site {self.width}/{self.site} and {other.width}/{other.site}"
            )
        if self.model_id and other.model_id and self.model_id != other.model_id:
            raise VectorError(
                f"cannot combine vectors for different models: {self.model_id} vs {other.model_id}"
            )
        layers = sorted(set(self.directions) | set(other.directions))
        zero = torch.zeros(self.width)
        directions = {i: self.directions.get(i, zero) + sign * other.directions.get(i, zero) for i in layers}
        norms = {**other.norms, **self.norms}
        return replace(
            self,
            directions=directions,
            norms=norms,
            method=f"({self.method} {symbol} {other.method})",
            data_hash="",
            model_id=self.model_id or other.model_id,
            defaults={},
            diagnostics={},
            provenance={"combined": [self.provenance, other.provenance]},
        )

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, -1.0, "-")

    def __mul__(self, scalar: float) -> SteeringVector:
        if not isinstance(scalar, int | float) or isinstance(scalar, bool):
            return NotImplemented
        if not math.isfinite(scalar):
            raise VectorError(f"cannot scale a vector by {scalar}")
        return replace(
            self,
            directions={i: d * scalar for i, d in self.directions.items()},
            method=f"{scalar:g}*{self.method}",
            defaults={},
        )

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __truediv__(self, scalar: float) -> SteeringVector:
        return self * (1.0 / scalar)

    def select(self, layers: list[int]) -> SteeringVector:
        """A copy holding only ``layers`` (each must exist)."""
        return replace(self, directions={i: self[i] for i in layers})

    # ------------------------------------------------------------ validation
    def check_fits(self, anatomy: Anatomy, model_id: str | None = None, *, strict_model: bool = True) -> None:
        """Refuse loudly when this vector cannot be applied to a model with ``anatomy``."""
        expected = anatomy.site_width(self.site)
        if self.width != expected:
            raise VectorError(
                f"vector width {self.width} does not fit this model: site '{self.site}' of "
                f"{model_id or anatomy.model_type} has width {expected}"
            )
        bad = [i for i in self.layers if i >= anatomy.num_layers]
        if bad:
            raise VectorError(
                f"vector has layers {bad} but the model has only {anatomy.num_layers} blocks "
                f"(layers 0..{anatomy.num_layers - 1})"
            )
        if strict_model and model_id and self.model_id and self.model_id != model_id:
            raise VectorError(
                f"vector was made for model '{self.model_id}' but this model is '{model_id}'. "
                "Pass strict_model=False to apply it anyway."
            )

    # ------------------------------------------------------------------- I/O
    def metadata(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "hidden_size": self.hidden_size,
            "width": self.width,
            "layer_convention": self.convention,
            "site": self.site,
            "method": self.method,
            "data_hash": self.data_hash,
            "norms": {str(k): v for k, v in self.norms.items()},
            "notes": self.notes,
            "defaults": self.defaults,
            "provenance": self.provenance,
            "diagnostics": self.diagnostics,
        }

    def save(self, path: str | Path) -> Path:
        """Write steerlab's own file: safetensors with the record in its header, atomically.

        Only ``.safetensors`` is written here. A GGUF control vector is not a save format but an export:
        llama.cpp adds the stored tensors as they are, so a strength and unit must be baked in first
        (:func:`steerlab.interop.export.export_gguf`, CLI ``steerlab export``).
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".gguf":
            raise VectorError(
                f"SteeringVector.save writes steerlab safetensors, not GGUF ({path.name}). A llama.cpp control "
                "vector has the strength baked in: use steerlab.interop.export.export_gguf(vector, "
                f"'{path}', strength=..., unit=...) or `steerlab export VECTOR {path.name} --strength S`"
            )
        if suffix != NATIVE_SUFFIX:
            raise VectorError(
                f"SteeringVector.save writes '{NATIVE_SUFFIX}' files; got '{path.name}' "
                f"(name it e.g. '{path.with_suffix(NATIVE_SUFFIX).name}'; GGUF: "
                "steerlab.interop.export.export_gguf; .svec: steerlab.interop.write_svec)"
            )
        return write_safetensors(path, self.directions, self.metadata())

    @classmethod
    def load(cls, path: str | Path, lm: Any = None, *, strict_model: bool = True) -> SteeringVector:
        """Read a steerlab safetensors file, a GGUF control vector or an IBM ``.svec``; check it fits ``lm``."""
        path = Path(path)
        parts = read_vector(path)
        try:
            vector = cls(**parts.as_kwargs())
        except VectorError as exc:
            raise VectorError(f"{path}: {exc}") from exc
        if lm is not None:
            vector.check_fits(lm.anatomy, lm.model_id, strict_model=strict_model)
        return vector

    def describe(self) -> str:
        lines = [
            f"model      {self.model_id or '(unknown)'} (hidden size {self.hidden_size})",
            f"method     {self.method}",
            f"site       {self.site}   convention {self.convention} (layer i = output of block i, from 0)",
            f"layers     {_ranges(self.layers)}   width {self.width}",
            f"data hash  {self.data_hash or '-'}",
        ]
        if self.defaults:
            lines.append(f"defaults   {json.dumps(self.defaults, default=jsonable)}")
        if self.notes:
            lines.append(f"notes      {self.notes}")
        if self.provenance:
            lines.append(f"provenance {json.dumps(self.provenance, default=jsonable)[:300]}")
        return "\n".join(lines)


def _span(values: list[float]) -> str:
    """``lo..hi`` of a few numbers, 3 significant digits (one number when all are equal)."""
    lo, hi = min(values), max(values)
    return f"{lo:.3g}" if f"{lo:.3g}" == f"{hi:.3g}" else f"{lo:.3g}..{hi:.3g}"


def _ranges(layers: list[int]) -> str:
    """Compact ``[1,2,3,7]`` as ``1-3,7``."""
    parts: list[str] = []
    for layer in layers:
        if parts and "-" not in parts[-1].split(",")[-1] and int(parts[-1]) == layer - 1:
            parts[-1] = f"{parts[-1]}-{layer}"
        elif parts and "-" in parts[-1] and int(parts[-1].split("-")[1]) == layer - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{layer}"
        else:
            parts.append(str(layer))
    return ",".join(parts)
