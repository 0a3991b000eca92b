"""The scorecard: saved ``steerlab compare`` folders as one page, a section per model, a table per task.

:mod:`.folders` reads and checks the folders, :mod:`.cards` lays out each task's numbers and verdicts
(computed by :mod:`steerlab.evaluate.report`, never here), :mod:`.command` gives the command that
produced each folder, :mod:`.markdown` renders the page.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from steerlab.evaluate.scorecard.cards import ROW_METHODS, MethodRow, TaskCard, task_card
from steerlab.evaluate.scorecard.command import Command, compare_command
from steerlab.evaluate.scorecard.folders import CompareRun, by_model, read_run, read_runs
from steerlab.evaluate.scorecard.markdown import page
from steerlab.interop.atomic import atomic_write

__all__ = [
    "ROW_METHODS",
    "Command",
    "CompareRun",
    "MethodRow",
    "TaskCard",
    "build",
    "compare_command",
    "read_run",
    "read_runs",
    "task_card",
    "write",
]


def build(folders: list[str | Path], out: str | Path | None = None) -> str:
    """The scorecard's Markdown for ``folders`` (``out`` only names the file in its own command line)."""
    runs = read_runs(folders)
    sections = {
        model: [(run, task_card(run.results), compare_command(run)) for run in group]
        for model, group in by_model(runs).items()
    }
    command = shlex.join(["steerlab", "scorecard", *map(str, folders), *(["-o", str(out)] if out else [])])
    return page(sections, command)


def write(folders: list[str | Path], out: str | Path) -> Path:
    """Write the scorecard for ``folders`` to ``out`` (atomically) and return its path."""
    text = build(folders, out)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    return out
