"""``compare``: the arena run end to end, resumable, into one folder with its report.

Stages (each job is saved to ``<out>/runs/<key>.json`` as soon as it finishes, so a rerun skips what is
done): **main** (every method built and measured), **data efficiency** (effect vs training-set size for
several seeds; steering reuses its calibrated setting, prompting varies its shots, LoRA retrains) and
**composability** (the best steering vector with prompting and/or LoRA, vs each alone).
``report.py`` turns the results document into the table, plots and verdicts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steerlab.errors import SteerlabError
from steerlab.evaluate import adaptations, measure
from steerlab.evaluate.arena import store
from steerlab.evaluate.arena.build import Progress
from steerlab.evaluate.arena.config import (
    ArenaConfig,
    available_methods,
    check_methods,
    known_methods,
    steering_methods,
)
from steerlab.evaluate.arena.jobs import (
    ComposeJob,
    EfficiencyJob,
    MethodJob,
    run_compose,
    run_efficiency,
    run_method,
)
from steerlab.evaluate.arena.results import ComposeResult, EfficiencyResult, MethodResult

if TYPE_CHECKING:
    from steerlab.evaluate.tasks import Task
    from steerlab.lm import LM


@dataclass
class ArenaResults:
    """Everything one comparison found; :meth:`to_json` is the ``results.json`` document the report reads."""

    task: dict[str, Any]
    config: dict[str, Any]
    methods: list[str]
    missing_methods: dict[str, str]
    main: dict[str, MethodResult]
    efficiency: dict[str, EfficiencyResult]
    compose: dict[str, ComposeResult]
    #: each part of the combinations alone, on the same slice (None: composability not run)
    compose_single: dict[str, ComposeResult] | None
    executor: str
    wall_seconds: float
    model: str

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "config": self.config,
            "methods": self.methods,
            "missing_methods": self.missing_methods,
            "main": {k: r.to_json() for k, r in self.main.items()},
            "efficiency": {k: r.to_json() for k, r in self.efficiency.items()},
            "compose": self._compose_json(),
            "executor": self.executor,
            "wall_seconds": self.wall_seconds,
            "model": self.model,
        }

    def _compose_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: r.to_json() for k, r in self.compose.items()}
        if self.compose_single is not None:
            out["_single"] = {k: r.to_json() for k, r in self.compose_single.items()}
        return out


def _select_methods(config: ArenaConfig, say: Progress) -> tuple[list[str], dict[str, str]]:
    """Methods to run (baseline always first) and why each wanted-but-missing one is not run."""
    available, missing = available_methods()
    runnable = set(available) | set(steering_methods())
    methods = [m for m in (config.methods or available) if m in runnable]
    if "baseline" not in methods:
        methods.insert(0, "baseline")
    for name, why in missing.items():
        say(f"method {name} skipped: {why}")
    return methods, missing


def compare(
    lm: LM,
    task: Task,
    out: str | Path,
    config: ArenaConfig | None = None,
    *,
    executor: Any = None,
    progress: Progress | None = None,
    report_only: bool = False,
) -> dict[str, Any]:
    """Run the arena for ``task`` into folder ``out`` (resumable), write the report there and return the
    results document (the content of ``results.json``).

    ``report_only`` runs no new job: the report is built from the jobs already saved in ``out/runs``
    (an interrupted comparison can still be read; what is missing is listed as not run).
    """
    from steerlab.evaluate import report
    from steerlab.evaluate.executors import InProcessExecutor

    config = config or ArenaConfig()
    check_methods(config.methods or [])  # before anything costs time
    check_methods(config.efficiency_methods)
    say = progress or (lambda m: None)
    executor = executor or InProcessExecutor(lm)
    out = Path(out)
    runs, artifacts = out / "runs", out / "artifacts"
    config.state_dir = config.state_dir or str(runs)
    t0 = time.perf_counter()
    if not config.neutral:
        from steerlab.data import neutral_prompts

        config.neutral = neutral_prompts()[: config.budget.neutral]
    legacy = store.fingerprint(lm, task, config, legacy=True)
    store.check_fingerprint(runs, store.fingerprint(lm, task, config), write=not report_only, also=(legacy,))
    methods, missing = _select_methods(config, say)
    # methods finished here by an earlier run with another --methods stay in the report (read back, not rerun)
    earlier = [m for m in store.finished_methods(runs, known_methods()) if m not in methods]
    if earlier:
        say(f"keeping methods finished earlier in {out}: {', '.join(earlier)}")
        methods = [m for m in known_methods() if m in methods or m in earlier]

    if config.neutral_reference is None:
        config.neutral_reference = measure.next_token_logits(lm, adaptations.baseline(), config.neutral)
    run = not report_only
    main_jobs = [(m, MethodJob(task, m, config, str(artifacts))) for m in methods]
    main = store.run_stage(executor, run_method, main_jobs, runs, say, "main", MethodResult.from_json, run)
    for name in [m for m, r in main.items() if r.skipped is not None]:
        missing[name] = f"skipped: {main.pop(name).skipped}"
        say(f"method {name} {missing[name]}")
    if "baseline" not in main:
        raise SteerlabError(f"{out}: no finished baseline run to report on")

    eff_jobs = _efficiency_jobs(task, config, main)
    efficiency = store.run_stage(
        executor, run_efficiency, eff_jobs, runs, say, "data-efficiency", EfficiencyResult.from_json, run
    )
    compose: dict[str, ComposeResult] = {}
    single = None
    if config.compose:
        best = _best_steering(main)
        parts_pool = [p for p in ("prompting", best, "lora") if p and p in main]
        comp_jobs = _compose_jobs(task, config, main, best, parts_pool)
        compose = store.run_stage(
            executor, run_compose, comp_jobs, runs, say, "composability", ComposeResult.from_json, run
        )
        single = _single_effects(task, config, main, [*parts_pool, "baseline"])

    not_run = {
        m: "not run yet (report built from an unfinished comparison)" for m in methods if m not in main
    }
    results = ArenaResults(
        task=task.describe(),
        config=config.as_dict(),
        methods=methods,
        missing_methods={**missing, **not_run},
        main=main,
        efficiency=efficiency,
        compose=compose,
        compose_single=single,
        executor=getattr(executor, "name", "custom"),
        wall_seconds=time.perf_counter() - t0,
        model=lm.model_id,
    ).to_json()
    say("writing report")
    report.write(out, results)
    return results


def _efficiency_jobs(
    task: Task, config: ArenaConfig, main: dict[str, MethodResult]
) -> list[tuple[str, EfficiencyJob]]:
    jobs = []
    for m in config.efficiency_methods:
        if m not in main:
            continue
        setting = None
        if main[m].family == "steering":
            setting = {k: main[m].settings[k] for k in ("layers", "strength")}
        for n in config.data_sizes:
            if n > task.train_size:
                continue
            # at the full pool a subset is the whole pool: only LoRA (random init and order) varies by seed
            full = n >= task.train_size
            seeds = config.seeds[:1] if full and main[m].family != "lora" else config.seeds
            for seed in seeds:
                jobs.append(
                    (f"efficiency-{m}-n{n}-s{seed}", EfficiencyJob(task, m, n, seed, config, setting))
                )
    return jobs


def _compose_jobs(
    task: Task, config: ArenaConfig, main: dict[str, MethodResult], best: str | None, pool: list[str]
) -> list[tuple[str, ComposeJob]]:
    combos = [[best, "prompting"], [best, "lora"], [best, "prompting", "lora"]] if best else []
    combos.append(["prompting", "lora"])
    jobs = []
    for combo in combos:
        if all(c in pool for c in combo):
            parts = [(c, main[c].artifact) for c in combo]
            jobs.append(("compose-" + "+".join(combo), ComposeJob(task, parts, config)))
    return jobs


def _best_steering(main: dict[str, MethodResult]) -> str | None:
    steer = [m for m, r in main.items() if r.family == "steering"]
    return max(steer, key=lambda m: main[m].headline) if steer else None


def _single_effects(
    task: Task, config: ArenaConfig, main: dict[str, MethodResult], parts: list[str]
) -> dict[str, ComposeResult]:
    """Each part alone on the same evaluation slice the combinations used, read off the main results
    (the slice is a prefix/balanced subset of the evaluation split, so no extra generation is needed)."""
    keep = task.split_indices("eval", config.compose_limit)
    out = {}
    for p in parts:
        if p not in main:
            continue
        values = [main[p].eval_per_example[i] for i in keep]
        out[f"compose-single-{p}"] = ComposeResult(
            parts=[p] if p != "baseline" else [],
            effect=float(np.mean(values)),
            per_example=values,
            kl=main[p].measured.kl["mean"],
        )
    return out
