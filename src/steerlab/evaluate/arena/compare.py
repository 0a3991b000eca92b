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
    CONDITIONAL_BASE,
    CONDITIONAL_METHOD,
    TASK_STEERING,
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
    #: the command line that ran it, when run from the CLI (the scorecard quotes it)
    command: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc = {
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
        if self.command:
            doc["command"] = self.command
        return doc

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
    command: str | None = None,
) -> dict[str, Any]:
    """Run the arena for ``task`` into folder ``out`` (resumable), write the report there and return the
    results document (the content of ``results.json``; ``command``, the CLI line, is recorded in it).

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
    # the conditional method gates the best of the other steering methods, so it runs once they are done
    first = [m for m in methods if m != CONDITIONAL_METHOD]
    main_jobs = [(m, MethodJob(task, m, config, str(artifacts))) for m in first]
    main = store.run_stage(executor, run_method, main_jobs, runs, say, "main", MethodResult.from_json, run)
    if CONDITIONAL_METHOD in methods:
        base = conditional_base(main, task)
        job = MethodJob(task, CONDITIONAL_METHOD, config, str(artifacts), base=base)
        main |= store.run_stage(
            executor,
            run_method,
            [(CONDITIONAL_METHOD, job)],
            runs,
            say,
            "main",
            MethodResult.from_json,
            run,
            # methods added to a folder later can change the base: a conditional gating another is stale
            current=lambda r: r.skipped is not None or r.settings.get("base") == base,
        )
    for name in [m for m, r in main.items() if r.skipped is not None]:
        missing[name] = f"skipped: {main.pop(name).skipped}"
        say(f"method {name} {missing[name]}")
    if "baseline" not in main:
        raise SteerlabError(f"{out}: no finished baseline run to report on")

    eff_jobs = _efficiency_jobs(task, config, main)
    reused = {key: r for key, job in eff_jobs if (r := _efficiency_from_main(task, config, main, job))}
    efficiency = store.run_stage(
        executor,
        run_efficiency,
        [(key, job) for key, job in eff_jobs if key not in reused],
        runs,
        say,
        "data-efficiency",
        EfficiencyResult.from_json,
        run,
    )
    efficiency = {
        key: reused.get(key) or efficiency[key] for key, _ in eff_jobs if key in reused or key in efficiency
    }
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

    not_run = {  # a method skipped by its build keeps its reason (in ``missing``)
        m: "not run yet (report built from an unfinished comparison)"
        for m in methods
        if m not in main and m not in missing
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
        command=command,
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
            setting = {
                k: main[m].settings[k] for k in ("layers", "strength", "unit") if k in main[m].settings
            }
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


def _efficiency_from_main(
    task: Task, config: ArenaConfig, main: dict[str, MethodResult], job: EfficiencyJob
) -> EfficiencyResult | None:
    """A data-efficiency point that the main stage already measured, read off its results (no rerun).

    At the full training pool with the budget's seed, a steering method (same pairs, same calibrated
    setting) and LoRA (same examples in the same order, same seed) build exactly what the main stage
    built; their effect on the efficiency slice is the main stage's per-example effect on those items.
    Prompting is not reused: its efficiency points vary the shots, the main stage does not.
    """
    result = main.get(job.method)
    if (
        result is None
        or result.family not in ("steering", "lora")
        or job.n < task.train_size
        or job.seed != config.budget.seed
        or not result.eval_per_example
    ):
        return None
    values = [result.eval_per_example[i] for i in task.split_indices("eval", config.efficiency_limit)]
    return EfficiencyResult(
        method=job.method,
        n=job.n,
        seed=job.seed,
        effect=float(np.mean(values)),
        per_example=values,
        build_seconds=float((result.cost or {}).get("seconds", 0.0)),
        shots_capped=False,
    )


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


def conditional_base(main: dict[str, MethodResult], task: Task) -> str:
    """The finished steering method the conditional method gates: on a labelled task (safety) the one whose
    calibrated setting refused most harmful calibration prompts (gating keeps those and spares the
    harmless ones); otherwise the largest calibrated effect. Scored on the calibration split, never on the
    evaluation split; a tie goes to the task's own method (:data:`TASK_STEERING`) when it is among the tied,
    else to :data:`CONDITIONAL_BASE`, as does an empty field."""
    labels = task.split("calib")[1]
    scores: dict[str, float] = {}
    for name, result in main.items():
        if result.family != "steering" or name == CONDITIONAL_METHOD or not result.calibration:
            continue
        row = _chosen_row(result.calibration)
        if row is None:
            continue
        values = row.get("per_example") or []
        harmful = [v for v, label in zip(values, labels, strict=False) if label == 1]
        if labels and harmful:
            scores[name] = float(np.mean(harmful))
        elif isinstance(row.get("effect"), float):
            scores[name] = row["effect"]
    if not scores:
        return CONDITIONAL_BASE
    top = max(scores.values())
    tied = [m for m, v in scores.items() if v >= top - 1e-9]
    if len(tied) == 1:
        return tied[0]
    own = TASK_STEERING.get(task.kind)
    return own if own in tied else CONDITIONAL_BASE if CONDITIONAL_BASE in tied else tied[0]


def _chosen_row(calibration: dict[str, Any]) -> dict[str, Any] | None:
    """The calibration row of the setting that was used (the choice, or the lowest-KL fallback)."""
    rows = [r for r in calibration.get("rows", []) if r.get("key") != "baseline"]
    choice = calibration.get("choice")
    if choice is not None:
        return next((r for r in rows if r.get("key") == choice.get("key")), choice)
    measured = [r for r in rows if isinstance(r.get("kl"), float)]
    return min(measured, key=lambda r: r["kl"]) if measured else None


def _best_steering(main: dict[str, MethodResult]) -> str | None:
    # the conditional method's artifact holds its vector, not its gate: it cannot stand in for itself
    steer = [m for m, r in main.items() if r.family == "steering" and m != CONDITIONAL_METHOD]
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
