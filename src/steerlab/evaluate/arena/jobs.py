"""The arena's three kinds of job, each a module-level ``fn(lm, job) -> typed result`` for an executor.

* :func:`run_method` (main stage): build one method, then measure effect on the evaluation split and
  the held-out family, KL on neutral prompts, perplexity of its generations under the unadapted model,
  accuracy on an optional capability set, tokens/s and reversibility.
* :func:`run_efficiency`: effect after building with only ``n`` training examples.
* :func:`run_compose`: several saved adaptations at once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from steerlab.errors import SteerlabError
from steerlab.evaluate import adaptations, measure, metrics, reversibility
from steerlab.evaluate.adaptations import Adaptation
from steerlab.evaluate.arena.artifacts import load_artifact, save_artifact
from steerlab.evaluate.arena.build import Progress, build
from steerlab.evaluate.arena.config import PROMPT_SHOT_CAP, ArenaConfig
from steerlab.evaluate.arena.results import ComposeResult, EfficiencyResult, Measurements, MethodResult
from steerlab.evaluate.cost import extra_prompt_tokens

if TYPE_CHECKING:
    from steerlab.evaluate.tasks import Task
    from steerlab.lm import LM


@dataclass
class MethodJob:
    task: Task
    method: str
    config: ArenaConfig
    artifacts: str | None = None
    #: the steering method a conditional method gates (chosen by ``compare`` from the finished ones)
    base: str | None = None


@dataclass
class EfficiencyJob:
    task: Task
    method: str
    n: int
    seed: int
    config: ArenaConfig
    setting: dict[str, Any] | None = None


@dataclass
class ComposeJob:
    task: Task
    parts: list[tuple[str, str | None]]  # (method, artifact path or None for prompting)
    config: ArenaConfig


class _Stopwatch:
    """Seconds spent per measurement, so a slow run shows where the time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t, 2)
        self._t = now


def _neutral(config: ArenaConfig) -> list[str]:
    from steerlab.data import neutral_prompts

    return config.neutral or neutral_prompts()


def evaluate_adaptation(lm: LM, task: Task, adaptation: Adaptation, config: ArenaConfig) -> Measurements:
    """Every per-method measurement except build cost (which ``build`` records)."""
    budget = config.budget
    watch = _Stopwatch()
    ev = task.effect(lm, adaptation, "eval", max_new_tokens=budget.max_new_tokens)
    watch.lap("eval")
    heldout = task.effect(lm, adaptation, "heldout", max_new_tokens=budget.max_new_tokens).as_dict()
    watch.lap("heldout")
    neutral = _neutral(config)
    kl = measure.kl_on_prompts(lm, adaptation, neutral, config.neutral_reference)
    kl_record = {"mean": float(kl.mean()), "estimate": metrics.bootstrap(kl).as_dict()}
    watch.lap("kl")
    per_example_nll = neutral_samples = None
    if ev.generations is not None:
        prompts, texts = task.split("eval")[0], ev.generations
    else:
        prompts = neutral[: budget.eval]
        texts = measure.generate(lm, adaptation, prompts, max_new_tokens=budget.max_new_tokens)
        neutral_samples = texts[:3]
    sums, counts = measure.completion_nll(lm, prompts, texts)
    ppl = metrics.perplexity(sums, counts) if counts.sum() else None
    if ev.generations is not None:
        per_example_nll = [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)]
    watch.lap("fluency")
    capability = None
    if config.capability:
        probs = measure.ab_probabilities(lm, adaptation, config.capability)
        capability = {"correct": [bool(p > 0.5) for p in probs], "accuracy": float(np.mean(probs > 0.5))}
        watch.lap("capability")
    tps, tps_unadapted = measure.paired_throughput(
        lm,
        adaptation,
        neutral[: config.throughput_prompts],
        max_new_tokens=config.throughput_tokens,
        unadapted=True,
    )
    extra = extra_prompt_tokens(lm, adaptation)
    watch.lap("throughput")
    reversible = reversibility.check_adaptation(lm, adaptation).as_dict()
    watch.lap("reversibility")
    return Measurements(
        eval=ev.as_dict(),
        heldout=heldout,
        kl=kl_record,
        ppl=ppl,
        tokens_per_second=tps,
        tokens_per_second_unadapted=tps_unadapted,
        extra_prompt_tokens=extra,
        reversibility=reversible,
        timings=watch.seconds,
        per_example_nll=per_example_nll,
        neutral_samples=neutral_samples,
        capability=capability,
    )


def _stderr_progress(name: str) -> Progress:
    start = time.perf_counter()
    return lambda message: print(
        f"  [{name} +{time.perf_counter() - start:.0f}s] {message}", file=sys.stderr, flush=True
    )


def run_method(lm: LM, job: MethodJob) -> MethodResult:
    """Build and measure one method (module-level: an executor task)."""
    start = time.perf_counter()
    say = _stderr_progress(job.method) if job.config.verbose else None
    try:
        adaptation, info = build(lm, job.task, job.method, job.config, progress=say, base=job.base)
    except SteerlabError as exc:  # a method that cannot apply to this task is reported, not fatal
        return MethodResult(job.method, time.perf_counter() - start, skipped=str(exc))
    result = MethodResult(
        job.method,
        0.0,
        family=adaptation.family,
        training=info.training,
        calibration=info.calibration,
        cost=info.cost,
        settings={k: v for k, v in adaptation.settings.items() if k != "vector"},
    )
    result.measured = evaluate_adaptation(lm, job.task, adaptation, job.config)
    if adaptation.lora is not None:
        from steerlab.evaluate.lora import merge_round_trip_error

        result.merge_round_trip_max_abs_error = merge_round_trip_error(lm, adaptation.lora)
    result.artifact = save_artifact(adaptation, job.artifacts)
    result.wall_seconds = time.perf_counter() - start
    return result


def run_efficiency(lm: LM, job: EfficiencyJob) -> EfficiencyResult:
    """Effect on (a slice of) the evaluation split after building with only ``n`` training examples."""
    sub = job.task.subset(job.n, job.seed)
    if job.method == "prompting":
        sub.shots = job.task.subset(job.n, job.seed).lora_examples[: min(job.n, PROMPT_SHOT_CAP)]
    cfg = job.config
    adaptation, info = build(lm, sub, job.method, cfg, setting=job.setting, seed=job.seed)
    res = sub.effect(
        lm, adaptation, "eval", limit=cfg.efficiency_limit, max_new_tokens=cfg.budget.max_new_tokens
    )
    return EfficiencyResult(
        method=job.method,
        n=job.n,
        seed=job.seed,
        effect=res.estimate.value,
        per_example=[float(x) for x in res.per_example],
        build_seconds=info.cost["seconds"],
        shots_capped=job.method == "prompting" and job.n > PROMPT_SHOT_CAP,
    )


def run_compose(lm: LM, job: ComposeJob) -> ComposeResult:
    """Effect of several adaptations at once on a slice of the evaluation split."""
    built = []
    for method, path in job.parts:
        if method == "prompting":
            built.append(build(lm, job.task, "prompting", job.config)[0])
        else:
            built.append(load_artifact(path, method))
    together = adaptations.combine("+".join(m for m, _ in job.parts) or "baseline", built)
    res = job.task.effect(
        lm, together, "eval", limit=job.config.compose_limit, max_new_tokens=job.config.budget.max_new_tokens
    )
    kl = measure.kl_on_prompts(lm, together, _neutral(job.config), job.config.neutral_reference)
    return ComposeResult(
        parts=[m for m, _ in job.parts],
        effect=res.estimate.value,
        per_example=[float(x) for x in res.per_example],
        kl=float(kl.mean()),
    )
