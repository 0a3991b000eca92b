"""Saved ``steerlab compare`` folders as the scorecard reads them: checked, then grouped by model.

Only ``results.json`` is read (the document :func:`steerlab.evaluate.report.write` saves); a folder that
is not a compare folder is refused with a message that says what it looks like instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.errors import DataError

#: Keys every compare ``results.json`` has (see ``ArenaResults.to_json``).
REQUIRED = ("task", "config", "main", "model")
#: Task kinds in the order the scorecard shows them; other kinds follow by name.
KIND_ORDER = ("sentiment", "persona", "safety", "ab")


@dataclass(frozen=True)
class CompareRun:
    """One compare folder and its results document."""

    folder: Path
    results: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.results["model"])

    @property
    def task_name(self) -> str:
        return str(self.results["task"].get("name", "?"))

    @property
    def task_kind(self) -> str:
        return str(self.results["task"].get("kind", "?"))


def read_run(folder: str | Path) -> CompareRun:
    """The results of one compare folder, or a clear error saying why ``folder`` is not one."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: no such folder (expected the --out folder of `steerlab compare`)")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file; the scorecard reads `steerlab compare` folders (--out)")
    path = folder / "results.json"
    if not path.is_file():
        raise DataError(f"{folder} is not a steerlab compare folder: {_what_instead(folder)}")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); rerun `steerlab compare --report-only`") from None
    if not isinstance(results, dict):
        raise DataError(f"{path} holds a {type(results).__name__}, not a compare results document")
    lacking = [k for k in REQUIRED if k not in results]
    if lacking:
        raise DataError(
            f"{path} lacks {', '.join(lacking)}: it was not written by `steerlab compare` "
            f"(a compare results.json has {', '.join(REQUIRED)})"
        )
    if "baseline" not in results["main"]:
        raise DataError(
            f"{path} has no baseline run: every number is relative to it, so nothing can be scored"
        )
    return CompareRun(folder, results)


def _what_instead(folder: Path) -> str:
    if (folder / "sweep.json").is_file():
        return "it holds sweep.json (a `steerlab sweep` folder), not results.json"
    if (folder / "runs").is_dir():
        return (
            "it has runs/ but no results.json (an interrupted comparison); write the report with "
            f"`steerlab compare --report-only --out {folder} ...` first"
        )
    return "no results.json in it (run `steerlab compare --out FOLDER` to make one)"


def read_runs(folders: list[str | Path]) -> list[CompareRun]:
    """Every folder read and checked; a folder given twice is refused (it would be counted twice)."""
    if not folders:
        raise DataError("the scorecard needs at least one `steerlab compare` folder")
    seen: dict[Path, str | Path] = {}
    for f in folders:
        key = Path(f).resolve()
        if key in seen:
            raise DataError(f"{f} is given twice (also as {seen[key]})")
        seen[key] = f
    return [read_run(f) for f in folders]


def by_model(runs: list[CompareRun]) -> dict[str, list[CompareRun]]:
    """Runs grouped by the model recorded in each results.json, tasks in :data:`KIND_ORDER`."""
    groups: dict[str, list[CompareRun]] = {}
    for run in runs:
        groups.setdefault(run.model, []).append(run)

    def order(run: CompareRun) -> tuple[int, str, str]:
        kind = run.task_kind
        rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
        return rank, run.task_name, str(run.folder)

    return {model: sorted(group, key=order) for model, group in groups.items()}
