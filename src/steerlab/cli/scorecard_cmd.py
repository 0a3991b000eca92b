"""``steerlab scorecard``: saved compare folders as one Markdown page (thin wrapper over evaluate.scorecard)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steerlab.cli.common import console, friendly_errors


def register(app: typer.Typer) -> None:
    app.command("scorecard")(scorecard)


def scorecard(
    folders: Annotated[list[Path], typer.Argument(help="Folders written by `steerlab compare --out`.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Markdown file to write (default: print it).")
    ] = None,
) -> None:
    """One table per model and task: every method against the eight criteria, with intervals and verdicts."""
    from steerlab.evaluate import scorecard as card

    with friendly_errors():
        if out is None:
            console.print(card.build(list(folders)), markup=False, highlight=False, soft_wrap=True)
            return
        path = card.write(list(folders), out)
        console.print(f"wrote {path} ({len(folders)} compare folder{'s' if len(folders) != 1 else ''})")
