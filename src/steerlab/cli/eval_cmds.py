"""Evaluation commands: sweep, calibrate, compare (thin wrappers over steerlab.evaluate)."""

from __future__ import annotations

import functools
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from steerlab.cli.common import QuietOpt, console, err_console, friendly_errors, load_model
from steerlab.progress import StageBar

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Hub id, model folder or .gguf file; default: embedded SmolLM2-135M."),
]
TaskOpt = Annotated[
    str,
    typer.Option(
        "--task",
        help="sentiment | persona | safety | ab | auto (guess from --data) | none (KL and fluency only).",
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", "-d", help="Task data: file or folder (persona defaults to the demo pairs)."),
]
BudgetOpt = Annotated[
    str,
    typer.Option(
        help="smoke | small | standard (32 evaluation items per task) | default: data and tokens to spend."
    ),
]
ExecutorOpt = Annotated[str, typer.Option("--executor", help="in-process (default) or ray.")]
RayOpt = Annotated[
    str | None, typer.Option("--ray-address", help="Ray cluster address (default: start a local Ray).")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(help="torch CPU threads (1 is much faster than 2 on a busy shared machine)."),
]


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("calibrate")(calibrate)
    app.command("compare")(compare)


def _say(message: str, start: float = time.perf_counter()) -> None:
    err_console.print(f"[dim]{time.perf_counter() - start:7.1f}s[/] {message}", highlight=False)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def guess_task(data: Path | None) -> str:
    """Infer the task kind from the data: refusal-style folder, A/B items, labelled texts or pairs."""
    from steerlab.data import load_any
    from steerlab.errors import DataError

    if data is None:
        return "persona"
    if data.is_dir():
        names = [p.name for p in data.rglob("*.json*")]
        if any(n.startswith("harmful") for n in names) and any(n.startswith("harmless") for n in names):
            return "safety"
        files = sorted(p for p in data.rglob("*.jsonl") if "original" not in p.parts)
        if not files:
            raise DataError(f"{data}: cannot tell the task from this folder; pass --task")
        data = files[0]
    kind, _ = load_any(data)
    return {"ab": "ab", "labelled": "sentiment", "pairs": "persona"}.get(kind, "safety")


def _executor(kind: str, lm, model: str | None, address: str | None, workers: int, threads: int | None):
    from steerlab.evaluate.executors import make_executor

    factory = functools.partial(load_for_worker, model, threads)
    return make_executor(kind, lm, factory=factory, address=address, workers=workers)


def load_for_worker(model: str | None, threads: int | None):
    """Model factory for executor workers (module-level so Ray can ship it)."""
    import steerlab

    _threads(threads)
    return steerlab.load(model)


def task_kind(task: str, data: Path | None) -> str:
    """The task kind to build (``auto`` guessed from the data), checked before any model is loaded."""
    from steerlab.evaluate.tasks import check_kind

    kind = guess_task(data) if task == "auto" else task
    if kind != "none":
        check_kind(kind, data)
    return kind


def _task(
    lm,
    task: str,
    data: Path | None,
    budget: str,
    scorer: str = "embedding",
    concept_data: Path | None = None,
    cache: Path | None = None,
):
    from steerlab.evaluate.tasks import Budget, build_task

    kind = task_kind(task, data)
    if kind == "none":
        return None
    _say(f"building task '{kind}' (splits, concept scorer)")
    return build_task(
        lm, kind, data, Budget.preset(budget), scorer=scorer, concept_data=concept_data, cache=cache
    )


def _cells(layers: list[str], strengths: str, num_layers: int):
    from steerlab.evaluate.calibrate import default_cells
    from steerlab.evaluate.sweep import grid

    if not layers and not strengths:
        return default_cells(num_layers)
    return grid(layers or [str(num_layers // 3)], _strengths(strengths) or [0.25, 0.5, 1.0])


def _strengths(text: str) -> list[float]:
    """``--strengths`` parsed (and so checked) before the model loads."""
    from steerlab.engine.spec import parse_strength

    return [parse_strength(s.strip()) for s in text.split(",") if s.strip()]


def _check_grid_syntax(layers: list[str], strengths: str) -> None:
    """Layer and strength spellings refused before any model is loaded."""
    from steerlab.engine.spec import parse_layers

    for option in layers:
        parse_layers(option)
    _strengths(strengths)


def _model_vector_cells(
    vector: Path, model: str | None, layers, strengths, op, unit, threads, quiet: bool = False
):
    """Model, vector and grid, every cell checked against both before the task or any baseline is built."""
    from steerlab.evaluate.sweep import SweepSpec, check_cells
    from steerlab.vector import SteeringVector

    _check_grid_syntax(layers, strengths)
    _threads(threads)
    lm = load_model(model, quiet=quiet)
    vec = SteeringVector.load(vector, lm)
    cells = _cells(layers, strengths, lm.num_layers)
    check_cells(lm, SweepSpec(vec, op=op, unit=unit), cells)
    return lm, vec, cells


def sweep(
    vector: Annotated[Path, typer.Argument(help="Steering vector file.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for sweep.json (resume state), table, heatmaps.")
    ],
    task: TaskOpt = "auto",
    data: DataOpt = None,
    layers: Annotated[list[str], typer.Option(help="Layer option, repeatable: 10 or 8-20 or 8,12.")] = [],  # noqa: B006
    strengths: Annotated[str, typer.Option(help="Comma-separated strengths (norm unit).")] = "",
    op: Annotated[str, typer.Option(help="add | ablate | clamp | scale")] = "add",
    unit: Annotated[str, typer.Option(help="norm or raw")] = "norm",
    budget: BudgetOpt = "small",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per prompt per cell.")] = 24,
    model: ModelOpt = None,
    executor: ExecutorOpt = "in-process",
    ray_address: RayOpt = None,
    workers: Annotated[int, typer.Option(help="Ray workers (one model each).")] = 1,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Sweep layers × strengths for a vector: effect, KL on neutral prompts and perplexity ratio per cell."""
    from steerlab.data import neutral_prompts
    from steerlab.evaluate.sweep import SweepSpec, heatmap, run_sweep, table

    with friendly_errors():
        task = task_kind(task, data)
        lm, vec, cells = _model_vector_cells(vector, model, layers, strengths, op, unit, threads, quiet)
        the_task = _task(lm, task, data, budget)
        neutral = neutral_prompts()
        spec = SweepSpec(
            vec,
            the_task,
            op=op,
            unit=unit,
            max_new_tokens=max_new_tokens,
            neutral=neutral,
            split="calib",
            fluency_prompts=neutral[:6] if the_task is None else [],
        )
        ex = _executor(executor, lm, model, ray_address, workers, threads)
        try:
            with StageBar(console=err_console, quiet=quiet) as bar:
                rows = run_sweep(lm, spec, cells, executor=ex, state=out / "sweep.json", progress=bar)
        finally:
            ex.close()
        columns = ("effect", "kl", "ppl_ratio") if the_task else ("kl", "ppl_ratio")
        text = table(rows, columns)
        (out / "sweep.md").write_text(text + "\n")
        for metric in columns:
            heatmap(rows, metric, out / f"heatmap_{metric}.png", title=f"{vec.method}: {metric}")
        console.print(text)
        console.print(f"wrote {out}/sweep.json, sweep.md and heatmap_*.png")


def calibrate(
    vector: Annotated[Path, typer.Argument(help="Steering vector file.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            "--output",
            help="Where to save the calibrated vector (default: NAME.calibrated.safetensors beside it).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Allow --out to overwrite the input vector.")] = False,
    task: TaskOpt = "auto",
    data: DataOpt = None,
    max_kl: Annotated[float, typer.Option(help="Mean KL budget on neutral prompts (nats).")] = 0.1,
    max_ppl_ratio: Annotated[float, typer.Option(help="Perplexity-ratio budget for steered text.")] = 1.5,
    layers: Annotated[
        list[str], typer.Option(help="Layer option, repeatable (default grid if omitted).")
    ] = [],  # noqa: B006
    strengths: Annotated[str, typer.Option(help="Comma-separated strengths (default grid if omitted).")] = "",
    budget: BudgetOpt = "small",
    state: Annotated[
        Path | None, typer.Option(help="Resume file for the sweep behind the calibration.")
    ] = None,
    model: ModelOpt = None,
    executor: ExecutorOpt = "in-process",
    ray_address: RayOpt = None,
    workers: int = 1,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Pick the layers and strength with the largest effect within the KL and fluency budget; save as defaults."""
    from steerlab.errors import SteerlabError
    from steerlab.evaluate.calibrate import calibrate as run_calibration
    from steerlab.evaluate.sweep import SweepSpec, table

    with friendly_errors():
        target = out or vector.with_name(f"{vector.name.removesuffix('.safetensors')}.calibrated.safetensors")
        if target.resolve() == vector.resolve() and not force:
            raise SteerlabError(
                f"--out {target} is the input vector; pass --force to overwrite it, or choose another file"
            )
        task = task_kind(task, data)
        if task == "none":
            raise SteerlabError("calibrate needs a task to measure the effect (use --task and --data)")
        lm, vec, cells = _model_vector_cells(vector, model, layers, strengths, "add", "norm", threads, quiet)
        the_task = _task(lm, task, data, budget)
        if the_task is None:
            raise SteerlabError("calibrate needs a task to measure the effect (use --task and --data)")
        spec = SweepSpec(vec, the_task, split="calib", max_new_tokens=24)
        ex = _executor(executor, lm, model, ray_address, workers, threads)
        try:
            with StageBar(console=err_console, quiet=quiet) as bar:
                result = run_calibration(
                    lm,
                    spec,
                    cells,
                    max_kl=max_kl,
                    max_ppl_ratio=max_ppl_ratio,
                    executor=ex,
                    state=state,
                    progress=bar,
                )
        finally:
            ex.close()
        console.print(table(result.rows))
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}")
        if result.choice is None:
            raise typer.Exit(1)
        vec.save(target)
        c = result.choice
        console.print(
            f"chosen: layers {c['layer_label']} strength {c['strength']:g} (effect {c.get('effect', float('nan')):.3f}, "
            f"KL {c.get('kl', float('nan')):.3f}, ppl ratio {c.get('ppl_ratio', float('nan')):.2f}); saved to {target}"
        )


def compare(
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (also the resume state).")],
    data: DataOpt = None,
    task: TaskOpt = "auto",
    budget: BudgetOpt = "default",
    methods: Annotated[
        str, typer.Option(help="Comma-separated subset (default: every available method).")
    ] = "",
    capability: Annotated[
        Path | None, typer.Option(help="Unrelated A/B capability set (e.g. MMLU as A/B) for accuracy change.")
    ] = None,
    capability_n: Annotated[int, typer.Option(help="Capability items used.")] = 24,
    concept_data: Annotated[
        Path | None, typer.Option(help="Labelled texts to train the concept scorer on (persona task).")
    ] = None,
    scorer: Annotated[
        str, typer.Option(help="embedding | activation | auto (concept scorer).")
    ] = "embedding",
    data_sizes: Annotated[
        str, typer.Option(help="Training sizes for the data-efficiency curve.")
    ] = "4,8,16,32",
    seeds: Annotated[str, typer.Option(help="Seeds for the data-efficiency curve.")] = "0,1",
    model: ModelOpt = None,
    executor: ExecutorOpt = "in-process",
    ray_address: RayOpt = None,
    workers: int = 1,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
    report_only: Annotated[
        bool,
        typer.Option("--report-only", help="Run nothing new; report on the jobs already saved in --out."),
    ] = False,
) -> None:
    """Compare prompting, steering and LoRA on one task; write index.html, report.md and results.json."""
    from steerlab.evaluate import arena
    from steerlab.evaluate.tasks import Budget, load_capability

    with friendly_errors():
        # every option is checked before the model loads: a typo must not cost a baseline run
        task = task_kind(task, data)
        if task == "none":
            from steerlab.errors import SteerlabError

            raise SteerlabError("compare needs a task (use --task and --data)")
        config = arena.ArenaConfig(
            budget=Budget.preset(budget),
            methods=arena.check_methods(m.strip() for m in methods.split(",") if m.strip()) or None,
            data_sizes=_ints(data_sizes, "--data-sizes"),
            seeds=_ints(seeds, "--seeds"),
            capability=load_capability(capability, capability_n) if capability else [],
            verbose=not quiet,
        )
        _threads(threads)
        lm = load_model(model, quiet=quiet)
        the_task = _task(
            lm,
            task,
            data,
            budget,
            scorer=scorer,
            concept_data=concept_data,
            cache=out / "setup_generations.json",
        )
        if the_task is None:
            from steerlab.errors import SteerlabError

            raise SteerlabError("compare needs a task (use --task and --data)")
        ex = _executor(executor, lm, model, ray_address, workers, threads)
        try:
            with StageBar(console=err_console, quiet=quiet) as bar:
                arena.compare(
                    lm,
                    the_task,
                    out,
                    config,
                    executor=ex,
                    progress=bar,
                    report_only=report_only,
                    command=shlex.join(["steerlab", *sys.argv[1:]]),
                )
        finally:
            ex.close()
        console.print(f"report: {out / 'index.html'} (also report.md, results.json)")
        console.print((out / "report.md").read_text().split("## Measured criteria")[0])


def _ints(text: str, option: str) -> list[int]:
    from steerlab.errors import DataError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DataError(f"{option} takes comma-separated whole numbers, got {text!r}") from None
