"""The ``steerlab compare`` command line that produced a folder, rebuilt from its ``results.json``.

A folder that recorded its command (a ``command`` entry) is quoted as saved. Otherwise the command is
rebuilt from the recorded task and knobs (``config``); what results.json does not record (the data
path, the capability file) is shown as a placeholder and listed, and a knob that only the Python API
can set is named, so a reader never takes a rebuilt line for more than it is.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from steerlab.evaluate.scorecard.folders import CompareRun

#: Options ``steerlab compare`` sets from the command line (the other knobs keep their defaults there).
CLI_KNOBS = ("budget", "methods", "data_sizes", "seeds", "capability", "verbose", "neutral")
#: The command's own defaults for the options rebuilt here.
DEFAULT_SIZES, DEFAULT_SEEDS, DEFAULT_BUDGET = [4, 8, 16, 32], [0, 1], "default"


@dataclass(frozen=True)
class Command:
    """A command line and what it leaves out (``recorded``: quoted from the folder, not rebuilt)."""

    text: str
    recorded: bool
    notes: list[str] = field(default_factory=list)


def compare_command(run: CompareRun) -> Command:
    """The command that produced ``run``: as recorded, else rebuilt from the saved task and config."""
    saved = run.results.get("command")
    if saved:
        return Command(saved if isinstance(saved, str) else shlex.join(map(str, saved)), True)
    config = run.results["config"]
    notes = ["rebuilt from results.json (the folder does not record its command line)"]
    args = ["steerlab", "compare", "--task", run.task_kind]
    if run.task_kind == "persona":
        notes.append(
            "--data is not recorded: persona uses the packaged happy/sad pairs unless --data was given"
        )
    else:
        args += ["--data", f"<{run.task_name} data: path not recorded>"]
        notes.append(f"the --data path is not recorded (task '{run.task_name}')")
    budget = preset_name(config.get("budget") or {})
    if budget is None:
        args += ["--budget", "<custom>"]
        notes.append(f"custom budget (Python API only): {config.get('budget')}")
    elif budget != DEFAULT_BUDGET:
        args += ["--budget", budget]
    if config.get("methods"):
        args += ["--methods", ",".join(config["methods"])]
    if config.get("data_sizes") is not None and list(config["data_sizes"]) != DEFAULT_SIZES:
        args += ["--data-sizes", ",".join(map(str, config["data_sizes"]))]
    if config.get("seeds") is not None and list(config["seeds"]) != DEFAULT_SEEDS:
        args += ["--seeds", ",".join(map(str, config["seeds"]))]
    if config.get("capability"):
        args += [
            "--capability",
            "<capability file: path not recorded>",
            "--capability-n",
            str(config["capability"]),
        ]
        notes.append("the --capability file is not recorded")
    if run.model != _embedded_id():
        args += ["--model", run.model]
    if str(run.results.get("executor", "in-process")).startswith("ray"):
        args += ["--executor", "ray"]
    args += ["--out", str(run.folder)]
    api_only = _api_only_knobs(config)
    if api_only:
        notes.append(
            "knobs the command line does not set, differing from today's defaults (set through the Python "
            "API, or the default has changed since): " + ", ".join(api_only)
        )
    return Command(" ".join(a if a.startswith("<") else shlex.quote(a) for a in args), False, notes)


def preset_name(budget: dict[str, Any]) -> str | None:
    """The ``--budget`` preset a recorded budget equals, or None for a custom one."""
    from steerlab.evaluate.tasks import BUDGETS, Budget

    for name in BUDGETS:
        if asdict(Budget.preset(name)) == budget:
            return name
    return None


def _api_only_knobs(config: dict[str, Any]) -> list[str]:
    from steerlab.evaluate.arena.config import ArenaConfig

    defaults = ArenaConfig().as_dict()
    return [
        f"{k}={config[k]!r}"
        for k in sorted(config)
        if k not in CLI_KNOBS and k in defaults and config[k] != defaults[k]
    ]


def _embedded_id() -> str:
    from steerlab.models.loading import EMBEDDED_ID

    return EMBEDDED_ID
