"""Small helpers shared by the command modules: one console, one way to report errors, and the steering
options (choices, help, omitted = the vector's recorded defaults) derived from the engine's contract."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from steerlab.engine.spec import FIELD_HELP, OPS, SITES, UNITS

if TYPE_CHECKING:
    from steerlab.engine.spec import Steering
    from steerlab.vector import SteeringVector

console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn steerlab's refusals into a one-line message and exit code 2 (no traceback for bad input)."""
    from steerlab.errors import SteerlabError

    try:
        yield
    except SteerlabError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    except FileNotFoundError as exc:
        err_console.print(f"[bold red]error:[/] file not found: {exc.filename}")
        raise typer.Exit(2) from exc


def load_model(model: str | None):
    """Load with a status line, since the first load of a GGUF file takes a while."""
    import steerlab

    with console.status(f"loading {model or 'the embedded SmolLM2-135M-Instruct'} ..."):
        return steerlab.load(model)


# ------------------------------------------------------------------------ steering options
_CHOICES = {"op": OPS, "unit": UNITS, "site": SITES}


def steering_option(field: str, *names: str) -> Any:
    """A ``typer.Option`` (for ``Annotated[...]``) for one steering field: help from the spec, choices
    from its tuples.

    Give the parameter a "not given" default (``None``, or ``[]`` for a per-vector list), which
    :func:`make_steering` leaves to the vector's recorded defaults -- the same meaning as an omitted
    field in Python or HTTP.
    """
    choices = _CHOICES.get(field)
    extra: dict[str, Any] = {}
    if choices:
        extra = {"parser": _one_of(field, choices), "metavar": "|".join(choices)}
    return typer.Option(*names, help=FIELD_HELP[field].replace("omitted", "default"), **extra)


def _one_of(field: str, choices: tuple[str, ...]) -> Any:
    def parse(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"unknown {field} {value!r}; expected one of {', '.join(choices)}")
        return value

    return parse


def check_steering_values(*, layers: Iterable[str | None] = (), positions: Iterable[str | None] = ()) -> None:
    """Parse layer and position values before any model is loaded, so a typo fails at once."""
    from steerlab.engine.spec import parse_layers, parse_positions

    for value in layers:
        if value is not None:
            parse_layers(value)
    for value in positions:
        if value is not None:
            parse_positions(value)


def make_steering(
    vector: SteeringVector,
    *,
    strength: float | None = None,
    op: str | None = None,
    layers: str | None = None,
    positions: str | None = None,
    unit: str | None = None,
    site: str | None = None,
) -> Steering:
    """A :class:`~steerlab.engine.Steering` from CLI values; ``None`` means "not given on the command line"."""
    from steerlab.engine.spec import Steering

    return Steering(
        vector,
        strength=strength,
        op=op,
        layers=layers,
        positions=positions if positions is not None else "all",
        unit=unit,
        site=site,
    )
