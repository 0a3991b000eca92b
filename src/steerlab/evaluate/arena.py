"""The adaptation arena: prompting, steering and LoRA on the same task, data budget and evaluation split.

Stages (each job is independent and saved to ``<out>/runs/<key>.json`` as soon as it finishes, so a
rerun skips what is done):

1. **main**: for every method, build the adaptation (timed, passes counted), then measure effect on
   the evaluation split and the held-out family, KL on neutral prompts, perplexity of its generations
   under the unadapted model, accuracy on an optional capability set, tokens/s, and reversibility.
   Steering methods are calibrated first (``calibrate.py``) on a separate calibration split.
2. **data efficiency**: effect vs training-set size for several seeds (steering reuses its calibrated
   setting; prompting varies its number of shots, capped; LoRA retrains).
3. **composability**: the best steering vector together with prompting and/or LoRA, vs each alone.

``report.py`` turns the saved results into the table, plots and verdicts.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steerlab.engine.spec import Steering
from steerlab.errors import SteerlabError
from steerlab.evaluate import adaptations, measure, metrics, reversibility
from steerlab.evaluate.adaptations import Adaptation
from steerlab.evaluate.cost import counting, extra_prompt_tokens
from steerlab.evaluate.sweep import Cell, SweepSpec
from steerlab.evaluate.tasks import Budget, Task
from steerlab.interop.atomic import atomic_write

if TYPE_CHECKING:
    from steerlab.lm import LM

Progress = Callable[[str], None]
PROMPT_SHOT_CAP = 8


@dataclass
class ArenaConfig:
    """Knobs of one comparison. ``methods=None`` runs every method available in this install."""

    budget: Budget = field(default_factory=Budget)
    methods: list[str] | None = None
    data_sizes: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    efficiency_methods: list[str] = field(default_factory=lambda: ["prompting", "mean_diff", "lora"])
    efficiency_limit: int = 8
    compose: bool = True
    compose_limit: int = 8
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_epochs: int = 3
    lora_lr: float = 3e-3
    max_kl: float = 0.1
    max_ppl_ratio: float = 1.5
    cells: list[Cell] | None = None
    calib_tokens: int = 24
    calib_neutral: int = 16
    capability: list[Any] = field(default_factory=list)
    throughput_prompts: int = 4
    throughput_tokens: int = 16
    learned_steps: int = 60
    verbose: bool = False
    state_dir: str | None = None
    neutral: list[str] = field(default_factory=list)
    neutral_reference: Any = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["capability"] = len(self.capability)
        d["cells"] = [c.key for c in self.cells] if self.cells else "default grid"
        d["neutral"] = len(self.neutral)
        d.pop("neutral_reference", None)
        d.pop("state_dir", None)
        return d


# ------------------------------------------------------------------------------------------- methods


DEFAULT_STEERING = ("mean_diff", "pca_diff", "probe", "learned")


def steering_methods() -> list[str]:
    """Steering methods this install offers: every pair method plus ``learned`` if its module exists."""
    from steerlab.methods.registry import all_pair_methods as pair_methods

    found = list(pair_methods())
    try:
        from steerlab.methods import learned  # noqa: F401

        found.append("learned")
    except ImportError:
        pass
    return found


def available_methods() -> tuple[list[str], dict[str, str]]:
    """Default methods in run order, and a note for each wanted method that is missing and why.

    Steering methods beyond :data:`DEFAULT_STEERING` (e.g. ``pca_center``) run when named in ``methods``.
    """
    have = steering_methods()
    methods = ["baseline", "prompting"]
    missing: dict[str, str] = {}
    for name in DEFAULT_STEERING:
        if name in have:
            methods.append(name)
        else:
            missing[name] = "not available in this install (steerlab.methods has no such method yet)"
    try:
        import peft  # noqa: F401

        methods.append("lora")
    except ImportError:
        missing["lora"] = "peft is not installed (pip install 'steerlab[eval]')"
    return methods, missing


def _steering_vector(lm: LM, task: Task, method: str, config: ArenaConfig) -> Any:
    import steerlab

    if method == "learned":
        from steerlab.methods.learned import train_vector

        if len(task.preference_pairs) < 2:
            raise SteerlabError(
                f"the learned method needs prompt + positive/negative completion pairs; task '{task.name}' has none"
            )
        return train_vector(lm, task.preference_pairs, steps=config.learned_steps, seed=config.budget.seed)
    options = {"position": task.extract_options.get("position", "last")}
    return steerlab.extract(lm, task.pairs, method=method, **options)


def _cells_for(vector: Any, config: ArenaConfig) -> list[Cell] | None:
    """Calibration grid: the configured one, or for a learned single-layer vector its own layer at
    fractions and multiples of the strength it was trained at."""
    if vector.method == "learned" and vector.defaults.get("strength"):
        from steerlab.evaluate.sweep import grid

        base = float(vector.defaults["strength"])
        # downwards too: a vector trained to move the positive completions can overshoot the KL budget
        return grid([vector.layers], [round(base * f, 4) for f in (0.1, 0.25, 0.5, 1.0, 1.5)])
    return config.cells


def build(
    lm: LM,
    task: Task,
    method: str,
    config: ArenaConfig,
    *,
    setting: dict[str, Any] | None = None,
    progress: Progress | None = None,
    seed: int | None = None,
) -> tuple[Adaptation, dict[str, Any]]:
    """Build one adaptation on ``task``'s training pool; ``setting`` reuses a calibrated steering choice.

    ``seed`` (default: the budget's) seeds LoRA's initialisation and batch order.
    """
    seed = config.budget.seed if seed is None else seed
    info: dict[str, Any] = {}
    with counting(lm.model) as cost:
        if method == "baseline":
            adaptation = adaptations.baseline()
        elif method == "prompting":
            shots = task.shots[: min(len(task.shots), PROMPT_SHOT_CAP)]
            adaptation = adaptations.prompting("prompting", task.instruction, shots)
        elif method == "lora":
            from steerlab.evaluate.lora import train_lora

            examples = [(adaptations.render_chat(lm, p), c) for p, c in task.lora_examples]
            adapter, train_cost = train_lora(
                lm,
                examples,
                rank=config.lora_rank,
                alpha=config.lora_alpha,
                epochs=config.lora_epochs,
                lr=config.lora_lr,
                seed=seed,
            )
            adaptation = Adaptation(
                "lora", "lora", lora=adapter, settings={"rank": adapter.rank, "targets": adapter.targets}
            )
            info["training"] = train_cost
        elif method in steering_methods():
            vector = _steering_vector(lm, task, method, config)
            if setting is None:
                setting, calibration = _calibrate(lm, task, vector, config, progress)
                info["calibration"] = calibration
            s = Steering(
                vector, strength=setting["strength"], layers=setting["layers"], op="add", unit="norm"
            )
            adaptation = adaptations.steering(method, [s], **setting)
            adaptation.settings["vector"] = vector
        else:
            raise SteerlabError(f"unknown method '{method}'")
    info["cost"] = {k: cost[k] for k in ("seconds", "forward_passes", "backward_passes")}
    adaptation.build = info["cost"]
    return adaptation, info


def _calibrate(
    lm: LM, task: Task, vector: Any, config: ArenaConfig, progress: Progress | None
) -> tuple[dict, dict]:
    from steerlab.data import neutral_prompts
    from steerlab.evaluate.calibrate import calibrate

    spec = SweepSpec(
        vector,
        task,
        split="calib",
        max_new_tokens=config.calib_tokens,
        # calibration ranks cells against the KL budget; a third of the prompts estimates that well enough
        neutral=(config.neutral or neutral_prompts())[: config.calib_neutral],
        reference_logits=None
        if config.neutral_reference is None
        else config.neutral_reference[: config.calib_neutral],
    )
    state = Path(config.state_dir) / f"calibration-{vector.method}.json" if config.state_dir else None
    result = calibrate(
        lm,
        spec,
        _cells_for(vector, config),
        max_kl=config.max_kl,
        max_ppl_ratio=config.max_ppl_ratio,
        state=state,
        progress=(lambda m: progress(f"calibrate {vector.method}: {m}")) if progress else None,
    )
    record = result.as_dict()
    if result.choice is not None:
        choice, within = result.choice, True
    else:
        measured = [r for r in result.rows if r.get("key") != "baseline" and "kl" in r]
        choice, within = min(measured, key=lambda r: r["kl"]), False
        record["notes"].append(f"used the lowest-KL cell {choice['key']} although it is outside the budget")
    record["within_budget"] = within
    record["slopes"] = _slopes(result.rows, choice)
    return {
        "layers": list(choice["layers"]),
        "strength": float(choice["strength"]),
        "within_budget": within,
    }, record


def _slopes(rows: Sequence[dict[str, Any]], choice: dict[str, Any]) -> dict[str, Any] | None:
    """Per-example slopes of the effect over strength on the chosen layer option (baseline = strength 0)."""
    base = next((r for r in rows if r.get("key") == "baseline"), None)
    ladder = sorted(
        (
            r
            for r in rows
            if r.get("layer_label") == choice["layer_label"]
            and r.get("per_example")
            and r.get("key") != "baseline"
        ),
        key=lambda r: r["strength"],
    )
    if base is None or not base.get("per_example") or not ladder:
        return None
    strengths = [0.0] + [r["strength"] for r in ladder]
    values = np.array([base["per_example"]] + [r["per_example"] for r in ladder]).T
    s = metrics.slopes(strengths, values)
    return {
        "strengths": strengths,
        "mean_slope": float(s.mean()),
        "wrong_way_fraction": metrics.wrong_way_fraction(s, tol=1e-9),
        "n": int(s.size),
    }


# ----------------------------------------------------------------------------------------- measuring


@dataclass
class MethodJob:
    task: Task
    method: str
    config: ArenaConfig
    artifacts: str | None = None


def _save_artifact(adaptation: Adaptation, folder: str | None) -> str | None:
    if folder is None:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    vector = adaptation.settings.get("vector")
    if vector is not None:
        out = path / f"{adaptation.name}.safetensors"
        vector.defaults = {
            "strength": adaptation.settings["strength"],
            "layers": adaptation.settings["layers"],
            "op": "add",
            "unit": "norm",
        }
        vector.save(out)
        return str(out)
    if adaptation.lora is not None:
        from safetensors.torch import save_file

        out = path / "lora.safetensors"
        save_file(
            {k: v.contiguous() for k, v in adaptation.lora.state.items()},
            str(out),
            metadata={
                "rank": str(adaptation.lora.rank),
                "alpha": str(adaptation.lora.alpha),
                "targets": ",".join(adaptation.lora.targets),
            },
        )
        return str(out)
    return None


def load_artifact(path: str, method: str, task: Task) -> Adaptation:
    """Rebuild a saved adaptation (steering vector with its calibrated defaults, or LoRA weights)."""
    if method == "lora":
        from safetensors import safe_open

        from steerlab.evaluate.lora import LoraAdapter

        with safe_open(path, "pt") as f:
            meta = f.metadata()
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        adapter = LoraAdapter(int(meta["rank"]), float(meta["alpha"]), meta["targets"].split(","), state)
        return Adaptation("lora", "lora", lora=adapter)
    from steerlab.vector import SteeringVector

    vector = SteeringVector.load(path)
    d = vector.defaults
    s = Steering(
        vector, strength=d["strength"], layers=d["layers"], op=d.get("op", "add"), unit=d.get("unit", "norm")
    )
    return adaptations.steering(method, [s], layers=d["layers"], strength=d["strength"])


class _Stopwatch:
    """Seconds spent per measurement, so a slow run shows where the time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t, 2)
        self._t = now


def evaluate_adaptation(lm: LM, task: Task, adaptation: Adaptation, config: ArenaConfig) -> dict[str, Any]:
    """Every per-method measurement except build cost (which ``build`` records)."""
    from steerlab.data import neutral_prompts

    budget = config.budget
    out: dict[str, Any] = {}
    watch = _Stopwatch()
    ev = task.effect(lm, adaptation, "eval", max_new_tokens=budget.max_new_tokens)
    out["eval"] = ev.as_dict()
    watch.lap("eval")
    out["heldout"] = task.effect(lm, adaptation, "heldout", max_new_tokens=budget.max_new_tokens).as_dict()
    watch.lap("heldout")
    neutral = config.neutral or neutral_prompts()
    kl = measure.kl_on_prompts(lm, adaptation, neutral, config.neutral_reference)
    out["kl"] = {"mean": float(kl.mean()), "estimate": metrics.bootstrap(kl).as_dict()}
    watch.lap("kl")
    if ev.generations is not None:
        prompts = task.split("eval")[0]
        sums, counts = measure.completion_nll(lm, prompts, ev.generations)
        out["ppl"] = metrics.perplexity(sums, counts) if counts.sum() else None
        out["per_example_nll"] = [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)]
    else:
        fluency = neutral[: budget.eval]
        texts = measure.generate(lm, adaptation, fluency, max_new_tokens=budget.max_new_tokens)
        sums, counts = measure.completion_nll(lm, fluency, texts)
        out["ppl"] = metrics.perplexity(sums, counts) if counts.sum() else None
        out["neutral_samples"] = texts[:3]
    watch.lap("fluency")
    if config.capability:
        probs = measure.ab_probabilities(lm, adaptation, config.capability)
        out["capability"] = {
            "correct": [bool(p > 0.5) for p in probs],
            "accuracy": float(np.mean(probs > 0.5)),
        }
        watch.lap("capability")
    tput_prompts = neutral[: config.throughput_prompts]
    out["tokens_per_second"], out["tokens_per_second_unadapted"] = measure.paired_throughput(
        lm, adaptation, tput_prompts, max_new_tokens=config.throughput_tokens, unadapted=True
    )
    out["extra_prompt_tokens"] = extra_prompt_tokens(lm, adaptation)
    watch.lap("throughput")
    out["reversibility"] = reversibility.check_adaptation(lm, adaptation).as_dict()
    watch.lap("reversibility")
    out["timings"] = watch.seconds
    return out


def _stderr_progress(name: str) -> Progress:
    import sys

    start = time.perf_counter()
    return lambda message: print(
        f"  [{name} +{time.perf_counter() - start:.0f}s] {message}", file=sys.stderr, flush=True
    )


def run_method(lm: LM, job: MethodJob) -> dict[str, Any]:
    """Build and measure one method (module-level: an executor task)."""
    start = time.perf_counter()
    say = _stderr_progress(job.method) if job.config.verbose else None
    try:
        adaptation, info = build(lm, job.task, job.method, job.config, progress=say)
    except SteerlabError as exc:  # a method that cannot apply to this task is reported, not fatal
        return {"method": job.method, "skipped": str(exc), "wall_seconds": time.perf_counter() - start}
    result: dict[str, Any] = {"method": job.method, "family": adaptation.family, **info}
    result["settings"] = {k: v for k, v in adaptation.settings.items() if k != "vector"}
    result.update(evaluate_adaptation(lm, job.task, adaptation, job.config))
    if adaptation.lora is not None:
        from steerlab.evaluate.lora import merge_round_trip_error

        result["merge_round_trip_max_abs_error"] = merge_round_trip_error(lm, adaptation.lora)
    result["artifact"] = _save_artifact(adaptation, job.artifacts)
    result["wall_seconds"] = time.perf_counter() - start
    return result


@dataclass
class EfficiencyJob:
    task: Task
    method: str
    n: int
    seed: int
    config: ArenaConfig
    setting: dict[str, Any] | None = None


def run_efficiency(lm: LM, job: EfficiencyJob) -> dict[str, Any]:
    """Effect on (a slice of) the evaluation split after building with only ``n`` training examples."""
    sub = job.task.subset(job.n, job.seed)
    if job.method == "prompting":
        sub.shots = job.task.subset(job.n, job.seed).lora_examples[: min(job.n, PROMPT_SHOT_CAP)]
    cfg = job.config
    adaptation, info = build(lm, sub, job.method, cfg, setting=job.setting, seed=job.seed)
    res = sub.effect(
        lm, adaptation, "eval", limit=cfg.efficiency_limit, max_new_tokens=cfg.budget.max_new_tokens
    )
    return {
        "method": job.method,
        "n": job.n,
        "seed": job.seed,
        "effect": res.estimate.value,
        "per_example": [float(x) for x in res.per_example],
        "build_seconds": info["cost"]["seconds"],
        "shots_capped": job.method == "prompting" and job.n > PROMPT_SHOT_CAP,
    }


@dataclass
class ComposeJob:
    task: Task
    parts: list[tuple[str, str | None]]  # (method, artifact path or None for prompting)
    config: ArenaConfig


def run_compose(lm: LM, job: ComposeJob) -> dict[str, Any]:
    """Effect of several adaptations at once on a slice of the evaluation split."""
    built = []
    for method, path in job.parts:
        if method == "prompting":
            built.append(build(lm, job.task, "prompting", job.config)[0])
        else:
            built.append(load_artifact(path, method, job.task))
    together = adaptations.combine("+".join(m for m, _ in job.parts) or "baseline", built)
    res = job.task.effect(
        lm, together, "eval", limit=job.config.compose_limit, max_new_tokens=job.config.budget.max_new_tokens
    )
    kl = measure.kl_on_prompts(lm, together, job.config.neutral or _neutral(), job.config.neutral_reference)
    return {
        "parts": [m for m, _ in job.parts],
        "effect": res.estimate.value,
        "per_example": [float(x) for x in res.per_example],
        "kl": float(kl.mean()),
    }


def _neutral() -> list[str]:
    from steerlab.data import neutral_prompts

    return neutral_prompts()


# ------------------------------------------------------------------------------------------- the run


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, default=_jsonable)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _fingerprint(lm: LM, task: Task, config: ArenaConfig) -> str:
    """What a saved job depends on: the model, the task's data and splits, and every knob."""
    knobs = {k: v for k, v in config.as_dict().items() if k != "verbose"}
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


def _check_fingerprint(runs: Path, fingerprint: str, *, write: bool) -> None:
    """Resume only into a folder made by the same comparison: reusing a job built with another budget,
    task or model would mix incomparable numbers into one report without saying so."""
    path = runs / "fingerprint.json"
    saved = json.loads(path.read_text()).get("fingerprint") if path.exists() else None
    has_jobs = runs.is_dir() and any(p.name != "fingerprint.json" for p in runs.glob("*.json"))
    if saved == fingerprint:
        return
    if saved is not None or (has_jobs and write):  # report-only may read a folder it cannot verify
        raise SteerlabError(
            f"{runs.parent} holds runs of a different comparison (model, data, budget or settings differ"
            f"{'' if saved else ', or it predates run fingerprints'}); use a new --out folder or delete this one"
        )
    if write:
        runs.mkdir(parents=True, exist_ok=True)
        _write_json(path, {"fingerprint": fingerprint})


def _run_stage(
    executor: Any,
    fn: Callable[[LM, Any], dict],
    jobs: list[tuple[str, Any]],
    runs: Path,
    progress: Progress,
    stage: str,
    run: bool = True,
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for key, job in jobs:
        path = runs / f"{key}.json"
        if path.exists():
            results[key] = json.loads(path.read_text())
            progress(f"[{stage}] {key}: done earlier, reusing {path.name}")
        else:
            todo.append((key, job))
    started = time.perf_counter()

    def done(i: int, result: dict[str, Any]) -> None:
        key = todo[i][0]
        _write_json(runs / f"{key}.json", result)
        results[key] = json.loads((runs / f"{key}.json").read_text())
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
    """Run the arena for ``task`` into folder ``out`` (resumable) and write the report there.

    ``report_only`` runs no new job: the report is built from the jobs already saved in ``out/runs``
    (an interrupted comparison can still be read; what is missing is listed as not run).
    """
    from steerlab.evaluate import report
    from steerlab.evaluate.executors import InProcessExecutor

    config = config or ArenaConfig()
    say = progress or (lambda m: None)
    executor = executor or InProcessExecutor(lm)
    out = Path(out)
    runs, artifacts = out / "runs", out / "artifacts"
    config.state_dir = config.state_dir or str(runs)
    t0 = time.perf_counter()
    if not config.neutral:
        from steerlab.data import neutral_prompts

        config.neutral = neutral_prompts()[: config.budget.neutral]
    _check_fingerprint(runs, _fingerprint(lm, task, config), write=not report_only)
    available, missing = available_methods()
    methods = [m for m in (config.methods or available) if m in available]
    for m in config.methods or []:
        if m not in available and m not in missing:
            missing[m] = "unknown method name"
    if "baseline" not in methods:
        methods.insert(0, "baseline")
    for name, why in missing.items():
        say(f"method {name} skipped: {why}")

    if config.neutral_reference is None:
        config.neutral_reference = measure.next_token_logits(lm, adaptations.baseline(), config.neutral)
    main_jobs = [(m, MethodJob(task, m, config, str(artifacts))) for m in methods]
    run = not report_only
    main = _run_stage(executor, run_method, main_jobs, runs, say, "main", run)
    for name in [m for m, r in main.items() if "skipped" in r]:
        missing[name] = f"skipped: {main.pop(name)['skipped']}"
        say(f"method {name} {missing[name]}")
    if "baseline" not in main:
        raise SteerlabError(f"{out}: no finished baseline run to report on")

    eff_jobs = []
    for m in config.efficiency_methods:
        if m not in main:
            continue
        setting = None
        if main[m]["family"] == "steering":
            setting = {k: main[m]["settings"][k] for k in ("layers", "strength")}
        for n in config.data_sizes:
            if n > task.train_size:
                continue
            # at the full pool a subset is the whole pool: only LoRA (random init and order) varies by seed
            full = n >= task.train_size
            seeds = config.seeds[:1] if full and main[m]["family"] != "lora" else config.seeds
            for seed in seeds:
                eff_jobs.append(
                    (f"efficiency-{m}-n{n}-s{seed}", EfficiencyJob(task, m, n, seed, config, setting))
                )
    efficiency = _run_stage(executor, run_efficiency, eff_jobs, runs, say, "data-efficiency", run)

    compose: dict[str, Any] = {}
    if config.compose:
        best = _best_steering(main, task)
        parts_pool = [p for p in ("prompting", best, "lora") if p and p in main]
        combos = []
        if best:
            combos = [[best, "prompting"], [best, "lora"], [best, "prompting", "lora"]]
        combos.append(["prompting", "lora"])
        comp_jobs = []
        for combo in combos:
            if all(c in parts_pool for c in combo):
                parts = [(c, main[c].get("artifact")) for c in combo]
                comp_jobs.append(("compose-" + "+".join(combo), ComposeJob(task, parts, config)))
        compose = _run_stage(executor, run_compose, comp_jobs, runs, say, "composability", run)
        compose["_single"] = _single_effects(task, config, main, [*parts_pool, "baseline"])

    results = {
        "task": task.describe(),
        "config": config.as_dict(),
        "methods": methods,
        "missing_methods": {
            **missing,
            **{
                m: "not run yet (report built from an unfinished comparison)"
                for m in methods
                if m not in main
            },
        },
        "main": main,
        "efficiency": efficiency,
        "compose": compose,
        "executor": getattr(executor, "name", "custom"),
        "wall_seconds": time.perf_counter() - t0,
        "model": lm.model_id,
    }
    say("writing report")
    report.write(out, results)
    return results


def _best_steering(main: dict[str, Any], task: Task) -> str | None:
    steer = [m for m, r in main.items() if r.get("family") == "steering"]
    if not steer:
        return None
    return max(steer, key=lambda m: _headline(main[m], task.kind))


def _headline(result: dict[str, Any], kind: str) -> float:
    return float(result["eval"]["estimate"]["value"])


def _single_effects(
    task: Task, config: ArenaConfig, main: dict[str, Any], parts: list[str]
) -> dict[str, Any]:
    """Each part alone on the same evaluation slice the combinations used, read off the main results
    (the slice is a prefix/balanced subset of the evaluation split, so no extra generation is needed)."""
    keep = task.split_indices("eval", config.compose_limit)
    out = {}
    for p in parts:
        if p not in main:
            continue
        values = [main[p]["eval"]["per_example"][i] for i in keep]
        out[f"compose-single-{p}"] = {
            "parts": [p] if p != "baseline" else [],
            "effect": float(np.mean(values)),
            "per_example": values,
            "kl": main[p]["kl"]["mean"],
        }
    return out
