"""Small helpers shared by the command modules: one console, one way to report errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

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
