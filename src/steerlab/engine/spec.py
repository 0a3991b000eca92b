"""What a user asks for: one :class:`Steering` = which vector, which op, how strong, where and when.

Strength units:

* ``unit="norm"`` (the default): ``strength`` is a multiple of the typical residual-stream norm at the
  layer being edited (recorded in the vector at extraction, else measured on the model). ``add`` with
  strength 0.5 adds a vector half as long as a typical token's residual state, on every layer alike, so
  the same number means the same push across layers and models.
  At the ``attn``/``mlp``/``head`` sites the reference is that site's own typical norm.
* ``unit="raw"``: ``strength * direction`` exactly as stored (the llama.cpp/repeng convention).

Op meanings (``c`` is the component of the activation along the unit direction ``u``):

* ``add``: ``h + strength * v`` (``v`` per the unit above).
* ``ablate``: remove a fraction ``strength`` (default 1: all) of ``c``; units do not apply.
* ``clamp``: set ``c`` to ``strength`` (norm unit: times the typical norm; raw: as is).
* ``scale``: multiply ``c`` by ``strength``.

Positions: ``"all"``, ``"prompt"``, ``"generated"``, or an int ``k`` ("from real token k on", counted
from 0 over the sequence without padding). They are absolute positions, tracked across KV-cache decode
steps, so "from k" does not restart at every step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Union

from steerlab.errors import SteeringError
from steerlab.vector import SITES, SteeringVector

OPS = ("add", "ablate", "clamp", "scale")
UNITS = ("norm", "raw")
POSITION_NAMES = ("all", "prompt", "generated")
Positions = Union[str, int]  # noqa: UP007 - a readable alias in docs


@dataclass(frozen=True)
class Steering:
    """One intervention. ``layers=None`` means every layer the vector has."""

    vector: SteeringVector
    strength: float | None = None
    op: str = "add"
    layers: tuple[int, ...] | None = None
    positions: Positions = "all"
    unit: str | None = None  # None: the vector's calibrated default unit, else "norm"
    site: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.vector, SteeringVector):
            raise SteeringError(f"expected a SteeringVector, got {type(self.vector).__name__}")
        if self.unit is None:
            object.__setattr__(self, "unit", self.vector.defaults.get("unit", "norm"))
        if self.op not in OPS:
            raise SteeringError(f"unknown op '{self.op}'; expected one of {', '.join(OPS)}")
        if self.unit not in UNITS:
            raise SteeringError(f"unknown strength unit '{self.unit}'; expected 'norm' or 'raw'")
        if self.site is not None and self.site not in SITES:
            raise SteeringError(f"unknown site '{self.site}'; expected one of {', '.join(SITES)}")
        parse_positions(self.positions)
        if self.layers is not None:
            object.__setattr__(self, "layers", parse_layers(self.layers))
        if self.strength is not None:
            try:
                value = float(self.strength)
            except (TypeError, ValueError) as exc:
                raise SteeringError(f"strength must be a number, got {self.strength!r}") from exc
            if value != value or value in (float("inf"), float("-inf")):
                raise SteeringError(f"strength must be finite, got {self.strength}")
            object.__setattr__(self, "strength", value)

    @property
    def resolved_site(self) -> str:
        return self.site or self.vector.site

    def resolved_strength(self) -> float:
        if self.strength is not None:
            return self.strength
        default = self.vector.defaults.get("strength")
        if default is not None and self.vector.defaults.get("op", "add") == self.op:
            return float(default)
        if self.op in ("ablate", "scale"):
            return 1.0  # ablate fully; scale by 1 is the identity
        raise SteeringError(
            f"op '{self.op}' needs a strength and this vector records no calibrated default "
            "(e.g. strength=0.5 with unit='norm' adds half a typical residual norm)"
        )

    def resolved_layers(self) -> tuple[int, ...]:
        if self.layers is not None:
            return self.layers
        default = self.vector.defaults.get("layers")
        return tuple(default) if default else tuple(self.vector.layers)


def parse_positions(value: Positions) -> tuple[str, int]:
    """Normalise a position policy to ``(kind, k)``; ``"from:5"``/``"5"``/``5`` mean from token 5."""
    if isinstance(value, bool):
        raise SteeringError(f"positions must be 'all', 'prompt', 'generated' or an int, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise SteeringError(f"positions 'from k' needs k >= 0, got {value}")
        return ("from", value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in POSITION_NAMES:
            return (text, 0)
        digits = text.removeprefix("from:").removeprefix("from")
        if digits.isdigit():
            return ("from", int(digits))
    raise SteeringError(f"positions must be 'all', 'prompt', 'generated' or 'from:K', got {value!r}")


def parse_layers(value: str | int | Iterable[int]) -> tuple[int, ...]:
    """Accept ``8``, ``[8, 9]``, ``"8-12"``, ``"8,10,12-14"``; return sorted unique ints."""
    if isinstance(value, bool):
        raise SteeringError(f"layers must be ints or ranges like '8-12', got {value!r}")
    if isinstance(value, int):
        items: Sequence = [value]
    elif isinstance(value, str):
        items = []
        for part in value.replace(" ", "").split(","):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            if not lo.isdigit() or (sep and not hi.isdigit()):
                raise SteeringError(f"cannot read layer spec '{value}': use forms like '12', '8-20', '8,10'")
            items.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    else:
        items = list(value)
    out = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise SteeringError(f"layers must be non-negative ints, got {item!r}")
        out.add(int(item))
    if not out:
        raise SteeringError("layers is empty")
    return tuple(sorted(out))


def as_steerings(
    spec: Steering | SteeringVector | Sequence[Steering | SteeringVector] | None, **defaults
) -> list[Steering]:
    """Accept one steering, one vector (with keyword defaults), or a list of either."""
    if spec is None:
        return []
    items = spec if isinstance(spec, list | tuple) else [spec]
    out = []
    for item in items:
        if isinstance(item, Steering):
            out.append(item)
        elif isinstance(item, SteeringVector):
            out.append(Steering(item, **defaults))
        else:
            raise SteeringError(f"expected Steering or SteeringVector, got {type(item).__name__}")
    return out
