"""The run folder: one JSON file per finished job, a fingerprint that ties the folder to one comparison.

A rerun skips every job whose file exists, so an interrupted comparison resumes; the fingerprint refuses
to resume into a folder made under another model, data, budget or setting. Results travel as typed
objects (:mod:`.results`) and are turned into JSON only here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from steerlab.errors import SteerlabError
from steerlab.interop.atomic import atomic_write

if TYPE_CHECKING:
    from steerlab.evaluate.arena.config import ArenaConfig
    from steerlab.evaluate.tasks import Task
    from steerlab.lm import LM

Progress = Callable[[str], None]
FINGERPRINT = "fingerprint.json"


class JobResult(Protocol):
    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=JobResult)


def jsonable(obj: Any) -> Any:
    """``json.dumps`` default: numpy scalars/arrays as numbers, NaN as null, paths as strings."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically: a crash never leaves a half-written job file to be 'reused'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, default=jsonable)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def fingerprint(lm: LM, task: Task, config: ArenaConfig, *, legacy: bool = False) -> str:
    """What a saved job depends on: the model, the task's data and splits, and every knob.

    The method set is left out: each job is keyed by its method(s) and does not depend on which others
    run, so a folder can gain methods later without rerunning the finished ones. ``legacy=True`` gives the
    fingerprint folders written before that (method set included), which are still accepted.
    """
    dropped = {"verbose"} if legacy else {"verbose", "methods"}
    # knobs added after folders existed (marked in their field) count only once set away from the default
    later = {f.name for f in fields(config) if f.metadata.get("added_later")}
    defaults = type(config)().as_dict()
    knobs = {
        k: v
        for k, v in config.as_dict().items()
        if k not in dropped and not (k in later and v == defaults[k])
    }
    what = {
        "model": lm.model_id,
        "task": [task.name, task.kind, task.instruction, task.heldout_name],
        "data": [
            task.pairs,
            task.shots,
            task.eval_prompts,
            task.eval_labels,
            task.heldout_prompts,
            task.calib_prompts,
            task.eval_items,
            task.heldout_items,
            task.calib_items,
        ],
        "config": knobs,
    }
    blob = json.dumps(what, sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_fingerprint(runs: Path, value: str, *, write: bool, also: tuple[str, ...] = ()) -> None:
    """Resume only into a folder made by the same comparison: reusing a job built with another budget,
    task or model would mix incomparable numbers into one report without saying so. ``also`` are older
    spellings of the same fingerprint (accepted, and rewritten as ``value`` when writing)."""
    path = runs / FINGERPRINT
    saved = json.loads(path.read_text()).get("fingerprint") if path.exists() else None
    has_jobs = runs.is_dir() and any(p.name != FINGERPRINT for p in runs.glob("*.json"))
    if saved is not None and saved in also:
        if write:
            write_json(path, {"fingerprint": value})
        return
    if saved == value:
        return
    if saved is not None or (has_jobs and write):  # report-only may read a folder it cannot verify
        raise SteerlabError(
            f"{runs.parent} holds runs of a different comparison (model, data, budget or settings differ; "
            "adding methods is fine"
            f"{'' if saved else ', or it predates run fingerprints'}); use a new --out folder or delete this one"
        )
    if write:
        runs.mkdir(parents=True, exist_ok=True)
        write_json(path, {"fingerprint": value})


def finished_methods(runs: Path, known: list[str]) -> list[str]:
    """Methods whose main-stage job is saved in ``runs`` (``<method>.json``), in ``known``'s order."""
    return [m for m in known if (runs / f"{m}.json").is_file()]


def run_stage(
    executor: Any,
    fn: Callable[[LM, Any], R],
    jobs: list[tuple[str, Any]],
    runs: Path,
    progress: Progress,
    stage: str,
    load: Callable[[dict[str, Any]], R],
    run: bool = True,
    current: Callable[[R], bool] | None = None,
) -> dict[str, R]:
    """Results of every job by key: saved ones read back with ``load``, the others run and saved as each
    finishes. With ``run=False`` nothing new runs (what is missing is reported as not run). ``current``
    says whether a saved result still answers its job (one whose inputs depend on earlier results, like the
    vector the conditional method gates); a saved result it rejects is run again."""
    results: dict[str, R] = {}
    todo = []
    for key, job in jobs:
        path = runs / f"{key}.json"
        saved = load(json.loads(path.read_text())) if path.exists() else None
        if saved is not None and (current is None or current(saved)):
            results[key] = saved
            progress(f"[{stage}] {key}: done earlier, reusing {path.name}")
        else:
            if saved is not None:
                progress(f"[{stage}] {key}: {path.name} was made from other inputs; running it again")
            todo.append((key, job))
    started = time.perf_counter()

    def done(i: int, result: R) -> None:
        key = todo[i][0]
        write_json(runs / f"{key}.json", result.to_json())
        # read back: a fresh result and a resumed one are the same object (NaN -> None and all)
        results[key] = load(json.loads((runs / f"{key}.json").read_text()))
        progress(
            f"[{stage}] {key}: finished ({i + 1}/{len(todo)}, {time.perf_counter() - started:.0f}s into stage)"
        )

    if todo and not run:
        progress(f"[{stage}] not run (report only): {', '.join(k for k, _ in todo)}")
        return results
    if todo:
        for key, _ in todo:
            progress(f"[{stage}] queued {key}")
        executor.map(fn, [job for _, job in todo], on_result=done)
    return results
