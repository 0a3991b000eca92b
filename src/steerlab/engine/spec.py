"""The steering contract, defined once: what a user asks for and what every field means when omitted.

One :class:`Steering` = which vector, which op, how strong, where (layers, site) and when (positions,
and optionally a ``condition`` on the prompt: :mod:`steerlab.engine.condition`).
The Python API takes it directly; the HTTP schema (:mod:`steerlab.server.schemas`), the CLI options
(:mod:`steerlab.cli.common`), bake and GGUF export derive their choices, defaults and help texts from the
names below, so the same request means the same thing through every door.

Omitted fields take **the vector's recorded defaults** (``vector.defaults``, written by calibration or by
the method that made it), else a fixed fallback:

=========  ===============================================  =========================================
field      recorded default used when omitted               fallback
=========  ===============================================  =========================================
op         ``defaults["op"]``                               ``"add"``
strength   ``defaults["strength"]`` if recorded for this op  1 for ``ablate``/``scale``; else an error
unit       ``defaults["unit"]``                             ``"norm"``
layers     ``defaults["layers"]``                           every layer the vector has
site       ``defaults["site"]``                             the site the vector was read at
positions  (not recorded)                                   ``"all"``
=========  ===============================================  =========================================

Strength units:

* ``unit="norm"``: ``strength`` is a multiple of the typical residual-stream norm at the layer being
  edited (recorded in the vector at extraction, else measured on the model). ``add`` with strength 0.05
  adds a vector 5% as long as a typical token's residual state, on every layer alike, so the same number
  means the same push across layers and models. Useful values are a few hundredths on a band of middle
  layers; ``steerlab calibrate`` records a tested strength and band as the vector's defaults. At the ``attn``/``mlp``/``head`` sites the reference is
  that site's own typical norm.
* ``unit="raw"``: ``strength * direction`` exactly as stored (the llama.cpp/repeng convention).

Op meanings (``c`` is the component of the activation along the unit direction ``u``):

* ``add``: ``h + strength * v`` (``v`` per the unit above).
* ``ablate``: remove a fraction ``strength`` (default 1: all) of ``c``; units do not apply.
* ``clamp``: set ``c`` to ``strength`` (norm unit: times the typical norm; raw: as is).
* ``scale``: multiply ``c`` by ``strength``.

Positions, one syntax everywhere: ``"all"``, ``"prompt"``, ``"generated"`` or ``"from:K"`` ("from real
token K on", counted from 0 over the sequence without padding); an int ``K`` (or the string ``"K"``) is
shorthand for ``"from:K"``. They are absolute positions, tracked across KV-cache decode steps, so "from K"
does not restart at every step. Old spellings such as ``"from5"`` are refused with the canonical one named.

Numbers from outside are bounded before use: layer indices up to :data:`MAX_LAYER` (no model has more;
the model's anatomy checks the real count later), ``K`` up to :data:`MAX_POSITION`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from steerlab.engine.condition import ConditionLike, check_condition
from steerlab.engine.hook_names import is_hook_spec, parse_hook_names, site_from_hook
from steerlab.errors import SteeringError
from steerlab.models.anatomy import SITES
from steerlab.vector import SteeringVector

OPS = ("add", "ablate", "clamp", "scale")
UNITS = ("norm", "raw")
POSITION_NAMES = ("all", "prompt", "generated")
#: The fields a vector may record defaults for (``vector.defaults``), in the order documented above.
RECORDED_FIELDS = ("op", "strength", "unit", "layers", "site")
#: Largest layer index accepted before the model is known (checked against the real count later).
MAX_LAYER = 100_000
#: Largest ``K`` accepted in ``"from:K"`` (a token index; int32 like the engine's position tensors).
MAX_POSITION = 2**31 - 1

Positions = Union[str, int]  # noqa: UP007 - a readable alias in docs

#: One-line meaning of every field, omitted value included; the HTTP schema and CLI help quote these.
FIELD_HELP: Mapping[str, str] = {
    "vector": "the steering vector (HTTP: its name in the vector registry)",
    "op": f"{' | '.join(OPS)}; omitted: the vector's recorded op, else 'add'",
    "strength": (
        "how strong, in the strength unit (norm: multiple of the typical norm at each layer; raw: times "
        "the stored direction); omitted: the vector's recorded strength (ablate/scale: 1)"
    ),
    "unit": f"{' | '.join(UNITS)}; omitted: the vector's recorded unit, else 'norm'",
    "layers": (
        "layers to steer (residual stream after block i, from 0): 12, '8-20', '8,10,12-14', a list, or "
        "TransformerLens hook names like 'blocks.12.hook_resid_post'; omitted: the vector's recorded "
        "layers, else all of its layers"
    ),
    "site": f"{' | '.join(SITES)}; omitted: the vector's recorded site, else the site it was read at",
    "positions": "all | prompt | generated | from:K (K, an int, is shorthand for from:K); omitted: all",
    "condition": (
        "steer a row only when this condition fires on its prompt (HTTP: a condition's registry name, "
        "or a rule {'all'|'any': [...]} / {'not': ...}); omitted: always steer"
    ),
}


# ------------------------------------------------------------------------------------ parsing
_POSITION_FORMS = "'all', 'prompt', 'generated', 'from:K' or an int K"


def parse_positions(value: Positions) -> tuple[str, int]:
    """Normalise a position policy to ``(kind, k)``: ``"all"``/``"prompt"``/``"generated"`` or ``("from", K)``."""
    if isinstance(value, bool):
        raise SteeringError(f"positions must be {_POSITION_FORMS}, got {value!r}")
    if isinstance(value, int):
        return ("from", _check_k(value))
    if isinstance(value, str):
        text = value.strip().lower()
        if text in POSITION_NAMES:
            return (text, 0)
        head, colon, digits = text.partition(":")
        if colon and head == "from" and _is_int(digits):
            return ("from", _check_k(int(digits)))
        if not colon and _is_int(text):
            return ("from", _check_k(int(text)))
        old = text.removeprefix("from").strip(" =")
        if text.startswith("from") and _is_int(old):
            raise SteeringError(f"positions {value!r}: write 'from:{int(old)}' (or the int {int(old)})")
    raise SteeringError(f"positions must be {_POSITION_FORMS}, got {value!r}")


def format_positions(value: Positions) -> str:
    """The canonical spelling: ``"all"``, ``"prompt"``, ``"generated"`` or ``"from:K"``."""
    kind, k = parse_positions(value)
    return f"from:{k}" if kind == "from" else kind


def _is_int(text: str) -> bool:
    """ASCII digits with an optional minus (kept so ``-3`` gets the right message), at most 40 long."""
    return _digits(text.removeprefix("-")) and len(text) <= 40


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _check_k(k: int) -> int:
    if k < 0:
        raise SteeringError(f"positions 'from:K' needs K >= 0, got {k}")
    if k > MAX_POSITION:
        raise SteeringError(f"positions 'from:K' needs K <= {MAX_POSITION} (a token index), got {k}")
    return k


def parse_layers(value: str | int | Iterable[int]) -> tuple[int, ...]:
    """Accept ``8``, ``[8, 9]``, ``"8-12"``, ``"8,10,12-14"``; return sorted unique ints.

    Every index (and range end) is checked against :data:`MAX_LAYER` *before* a range is expanded, so a
    request like ``"0-999999999999"`` is refused at once instead of allocating a huge list.
    """
    if isinstance(value, bool):
        raise SteeringError(f"layers must be ints or ranges like '8-12', got {value!r}")
    if is_hook_spec(value):  # TransformerLens names: "blocks.12.hook_resid_post" (see hook_names)
        return tuple(_check_layer(layer) for layer in parse_hook_names(value).layers)  # type: ignore[arg-type]
    if isinstance(value, int):
        return (_check_layer(value),)
    out: set[int] = set()
    if isinstance(value, str):
        span = 0
        for part in value.replace(" ", "").split(","):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            if not _digits(lo) or (sep and not _digits(hi)) or len(part) > 40:
                raise SteeringError(f"cannot read layer spec '{value}': use forms like '12', '8-20', '8,10'")
            first = _check_layer(int(lo))
            last = _check_layer(int(hi)) if sep else first
            if last < first:
                raise SteeringError(f"layer range '{part}' runs backwards; write '{last}-{first}'")
            span += last - first + 1
            if span > MAX_LAYER + 1:
                raise SteeringError(f"layer spec '{value[:60]}' names more than {MAX_LAYER + 1} layers")
            out.update(range(first, last + 1))
    else:
        if isinstance(value, Mapping) or not isinstance(value, Iterable):
            raise SteeringError(f"layers must be ints or ranges like '8-12', got {value!r}")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int):
                raise SteeringError(f"layers must be non-negative ints, got {item!r}")
            out.add(_check_layer(item))
    if not out:
        raise SteeringError("layers is empty")
    return tuple(sorted(out))


def _check_layer(layer: int) -> int:
    if layer < 0:
        raise SteeringError(f"layers must be non-negative ints, got {layer}")
    if layer > MAX_LAYER:
        raise SteeringError(f"layer {layer} is out of any model's range (at most {MAX_LAYER} is accepted)")
    return int(layer)


def parse_strength(value: Any, what: str = "strength") -> float:
    """A finite float; bools and non-numbers are refused."""
    if isinstance(value, bool):
        raise SteeringError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise SteeringError(f"{what} must be a number, got {value!r}") from exc
    if not math.isfinite(number):
        raise SteeringError(f"{what} must be finite, got {value}")
    return number


def _choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SteeringError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
    return value


# ---------------------------------------------------------------------------- recorded defaults
@dataclass(frozen=True)
class RecordedDefaults:
    """A vector's ``defaults`` record, validated: each field ``None`` where the vector records none."""

    op: str | None = None
    strength: float | None = None
    unit: str | None = None
    layers: tuple[int, ...] | None = None
    site: str | None = None


def recorded_defaults(vector: SteeringVector) -> RecordedDefaults:
    """Read and check ``vector.defaults``; a malformed record is a clear error, not a crash later.

    Keys other than :data:`RECORDED_FIELDS` are kept in the file but have no meaning here.
    """
    raw = vector.defaults
    if not isinstance(raw, Mapping):
        raise SteeringError(f"the vector's recorded defaults must be a mapping, got {type(raw).__name__}")

    def field(name: str, parse: Any) -> Any:
        value = raw.get(name)
        if value is None:
            return None
        try:
            return parse(value)
        except SteeringError as exc:
            raise SteeringError(f"the vector's recorded default {name!r} is invalid: {exc}") from None

    return RecordedDefaults(
        op=field("op", lambda v: _choice(v, OPS, "op")),
        strength=field("strength", parse_strength),
        unit=field("unit", lambda v: _choice(v, UNITS, "strength unit")),
        layers=field("layers", parse_layers),
        site=field("site", lambda v: _choice(v, SITES, "site")),
    )


# ---------------------------------------------------------------------------------- the request
@dataclass(frozen=True)
class Steering:
    """One intervention. Omitted (``None``) fields take the vector's recorded defaults (module doc).

    ``op``, ``unit``, ``site`` and ``positions`` are resolved when the steering is made (so
    ``steering.op`` is always a name, ``positions`` always canonical); ``strength`` and ``layers`` stay
    as given and are resolved by :meth:`resolved_strength` / :meth:`resolved_layers`.
    """

    vector: SteeringVector
    strength: float | None = None
    op: str | None = None
    layers: tuple[int, ...] | None = None
    positions: Positions = "all"
    unit: str | None = None
    site: str | None = None
    condition: ConditionLike | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.vector, SteeringVector):
            raise SteeringError(f"expected a SteeringVector, got {type(self.vector).__name__}")
        if self.condition is not None:
            check_condition(self.condition)
        recorded = recorded_defaults(self.vector)
        object.__setattr__(self, "_recorded", recorded)
        _take_hook_site(self)
        op = self.op if self.op is not None else recorded.op or "add"
        unit = self.unit if self.unit is not None else recorded.unit or "norm"
        site = self.site if self.site is not None else recorded.site or self.vector.site
        object.__setattr__(self, "op", _choice(op, OPS, "op"))
        object.__setattr__(self, "unit", _choice(unit, UNITS, "strength unit"))
        object.__setattr__(self, "site", _choice(site, SITES, "site"))
        object.__setattr__(self, "positions", format_positions(self.positions))
        if self.layers is not None:
            object.__setattr__(self, "layers", parse_layers(self.layers))
        if self.strength is not None:
            object.__setattr__(self, "strength", parse_strength(self.strength))

    @property
    def resolved_site(self) -> str:
        return self.site  # type: ignore[return-value] - resolved in __post_init__

    def resolved_strength(self) -> float:
        if self.strength is not None:
            return self.strength
        recorded: RecordedDefaults = self._recorded  # type: ignore[attr-defined]
        if recorded.strength is not None and (recorded.op or "add") == self.op:
            return recorded.strength
        if self.op in ("ablate", "scale"):
            return 1.0  # ablate fully; scale by 1 is the identity
        raise SteeringError(
            f"op '{self.op}' needs a strength and this vector records no default for it "
            "(e.g. strength=0.05 with unit='norm' adds 5% of a typical residual norm at each steered "
            "layer, on a band such as layers='10-16'; `steerlab calibrate` records a tested strength)"
        )

    def resolved_layers(self) -> tuple[int, ...]:
        if self.layers is not None:
            return self.layers
        recorded: RecordedDefaults = self._recorded  # type: ignore[attr-defined]
        return recorded.layers or tuple(self.vector.layers)


def _take_hook_site(steering: Steering) -> None:
    """TransformerLens names carry a site: ``layers="blocks.12.hook_attn_out"`` means site ``attn``, and
    ``site="hook_mlp_out"`` means ``mlp``. A site given as well must agree."""
    if isinstance(steering.site, str) and (alias := site_from_hook(steering.site)):
        object.__setattr__(steering, "site", alias)
    if is_hook_spec(steering.layers):
        hooked = parse_hook_names(steering.layers).site  # type: ignore[arg-type]
        if steering.site is not None and steering.site != hooked:
            raise SteeringError(f"layers {steering.layers!r} name site '{hooked}' but site='{steering.site}'")
        object.__setattr__(steering, "site", hooked)


def as_steerings(
    spec: Steering | SteeringVector | Sequence[Steering | SteeringVector] | None, **defaults: Any
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


def row_choice(
    n: int, steering: Any, row_steering: Sequence[Any] | None, **defaults: Any
) -> tuple[list[Steering], list[list[Steering]] | None]:
    """A generation's steering: one list for every row (``steering=``) or one per prompt (``row_steering=``).

    Returns ``(shared, None)`` or ``([], per_row)``; every engine reads ``generate``'s two arguments here.
    """
    if steering is not None and row_steering is not None:
        raise SteeringError("pass either steering= (all rows) or row_steering= (one per prompt), not both")
    if row_steering is not None:
        if len(row_steering) != n:
            raise SteeringError(f"row_steering has {len(row_steering)} entries for {n} prompts")
        return [], [as_steerings(row) for row in row_steering]
    return (as_steerings(steering, **defaults) if steering is not None else []), None
