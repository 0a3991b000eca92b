"""Progress display for work that takes more than a few seconds, drawn with rich.

Three shapes cover every long command:

* :func:`task_bar` -- a counted task with a bar and an ETA (reading activations over N texts);
* :func:`spinner` -- work of unknown length (loading or converting a model) with elapsed time;
* :class:`StageBar` -- an adapter for the evaluation code's one-line ``progress(message)`` callbacks
  (sweep, calibrate, compare): each message is printed, and a message that finishes one unit of work
  carries ``(i/N`` (e.g. ``cell 10@0.05 (3/12): ...``) so the bar counts it.

Everything is quiet when ``quiet=True``; library functions default to ``progress=False``, so library
callers and tests see no bars unless they ask. Bars go to stderr (unless a console is given) and are
transient: they vanish when done, leave the command's real output clean, and are not drawn at all when
stderr is not a terminal (CI logs see the plain lines only).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: ``(i/N`` inside a progress message: one unit of a stage of N units finished.
_COUNT = re.compile(r"\((\d+)/(\d+)")
#: ``[stage]`` at the start of a message (compare's stages: build, measure, ...).
_STAGE = re.compile(r"^\[([^\]]+)\]")


def make_progress(console: Console | None = None) -> Progress:
    """A rich Progress with description, bar, done/total, elapsed and remaining time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=True,
    )


@dataclass
class Ticker:
    """One counted task. Its methods do nothing when no bar is shown, so callers need no ``if``."""

    progress: Progress | None = None
    task: TaskID | None = None

    def advance(self, n: int = 1) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, n)

    def add_total(self, n: int) -> None:
        """Grow the total (work discovered later, e.g. the negative side after the positive one)."""
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, total=(_total(self.progress, self.task) or 0) + n)


@contextlib.contextmanager
def task_bar(
    description: str, total: int, *, quiet: bool = False, console: Console | None = None
) -> Iterator[Ticker]:
    """Show a bar for ``total`` units while the block runs; yields a :class:`Ticker` to advance."""
    if quiet:
        yield Ticker()
        return
    progress = make_progress(console)
    with progress:
        yield Ticker(progress, progress.add_task(description, total=total))


@contextlib.contextmanager
def spinner(description: str, *, quiet: bool = False, console: Console | None = None) -> Iterator[None]:
    """A spinner with elapsed time for work whose length is unknown (loading, converting)."""
    if quiet:
        yield
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        progress.add_task(description, total=None)
        yield


@dataclass
class StageBar:
    """A ``progress(message)`` callback that prints each message and counts finished units per stage.

    Use as a context manager around the work; call it with the evaluation code's messages. A new stage
    (``[stage]`` prefix) starts a new bar line; a stage that runs several rounds (calibration sweeps a
    grid, then refines it) grows its total, so a count never restarts inside one bar.
    """

    console: Console | None = None
    quiet: bool = False
    started: float = field(default_factory=time.perf_counter)
    _progress: Progress | None = field(default=None, init=False, repr=False)
    _tasks: dict[str, TaskID] = field(default_factory=dict, init=False, repr=False)
    _rounds: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)  # [size, done]

    def __enter__(self) -> StageBar:
        if not self.quiet:
            self._progress = make_progress(self.console)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        line = f"[dim]{time.perf_counter() - self.started:7.1f}s[/] {message}"
        if self._progress is None:  # used outside a with block: plain lines
            (self.console or Console(stderr=True)).print(line, highlight=False)
            return
        self._progress.console.print(line, highlight=False)
        count = _COUNT.search(message)
        if count is None:
            return
        stage_match = _STAGE.match(message)
        stage = stage_match.group(1) if stage_match else "steps"
        size = int(count.group(2))
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=0)
            self._rounds[stage] = [0, 0]
        task, round_ = self._tasks[stage], self._rounds[stage]
        if round_[1] >= round_[0]:  # a new round of this stage (calibrate sweeps several times): grow
            self._progress.update(task, total=(_total(self._progress, task) or 0) + size)
            round_[:] = [size, 0]
        round_[1] += 1
        self._progress.advance(task, 1)


def _total(progress: Progress, task: TaskID) -> float | None:
    return next(t.total for t in progress.tasks if t.id == task)
