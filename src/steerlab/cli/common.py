"""Small helpers shared by the command modules: one console, one way to report errors, and the steering
options (choices, help, omitted = the vector's recorded defaults) derived from the engine's contract."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from steerlab.engine.spec import FIELD_HELP, OPS, SITES, UNITS
from steerlab.progress import spinner

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


#: ``--quiet``: no progress bars (results and errors still print).
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or spinners.")]


def load_model(model: str | None, *, quiet: bool = False):
    """Load behind a spinner with elapsed time (the first load of a GGUF file converts it, ~10 s).

    Bars go to stderr so piped output stays clean; the libraries' own bars are switched off for the
    process, since they would interleave with ours.
    """
    import steerlab

    silence_library_bars()
    with spinner(f"loading {model or 'the embedded SmolLM2-135M'}", quiet=quiet, console=err_console):
        return steerlab.load(model)


def silence_library_bars() -> None:
    """Turn off transformers' tqdm bars ("Loading weights", "Writing model shards") for this process.

    The command line owns the terminal for the whole run, so a process-wide switch is right here
    (library callers keep transformers' own setting).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def suggested_band(num_layers: int) -> str:
    """A middle band of layers, where steering usually works best (10-16 on a 30-layer model)."""
    lo, hi = num_layers // 3, max(num_layers // 3, (num_layers * 11) // 20)
    return f"{lo}-{hi}"


def layer_warning(steering: Steering) -> str | None:
    """A clear warning when an ``add``/``clamp`` steering falls back to every layer of the vector.

    Neither ``--layers`` nor calibrated layers chose a band, so a norm-unit strength adds up over all of
    them: ``-s 0.5`` on all 30 layers of SmolLM2 makes it print "!!!!". The engine keeps its documented
    fallback (the same request means the same thing in Python, HTTP and here); the CLI says so loudly.
    """
    from steerlab.engine.spec import recorded_defaults

    if steering.layers is not None or recorded_defaults(steering.vector).layers is not None:
        return None
    if steering.op not in ("add", "clamp") or len(steering.vector.layers) <= 8:
        return None
    count = len(steering.vector.layers)
    return (
        f"steering all {count} layers of this vector (no --layers given and the vector records no "
        f"calibrated layers); a strength adds up over layers, so pass a band such as --layers "
        f"{suggested_band(max(steering.vector.layers) + 1)} with -s 0.05, or run `steerlab calibrate` "
        "to record tested layers and strength in the vector"
    )


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

    steering = Steering(
        vector,
        strength=strength,
        op=op,
        layers=layers,
        positions=positions if positions is not None else "all",
        unit=unit,
        site=site,
    )
    warning = layer_warning(steering)
    if warning:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    return steering
