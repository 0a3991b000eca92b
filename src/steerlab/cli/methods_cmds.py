"""Extraction commands: ``extract`` (any method, a per-layer diagnostics table, optional PNG) and ``lint``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from steerlab.cli.common import QuietOpt, console, err_console, friendly_errors, load_model
from steerlab.progress import spinner

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Hub id, model folder or .gguf file; default: embedded SmolLM2-135M."),
]


def register(app: typer.Typer) -> None:
    app.command("extract")(extract_cmd)
    app.command("lint")(lint_cmd)


def extract_cmd(
    data: Annotated[
        Path, typer.Argument(help="Pairs, A/B, labelled or (for refusal: harmful) instructions file.")
    ],
    method: Annotated[
        str,
        typer.Option("--method", help="mean_diff | pca_diff | pca_center | probe | iti | refusal | learned."),
    ] = "mean_diff",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Vector file to write (.safetensors).")
    ] = None,
    model: ModelOpt = None,
    layers: Annotated[
        str | None, typer.Option(help="Layers to read, e.g. 8-20 or blocks.12.hook_resid_post; default all.")
    ] = None,
    site: Annotated[str, typer.Option(help="resid | attn | mlp | head (pair methods).")] = "resid",
    position: Annotated[str, typer.Option(help="last | mean | a token index (pair methods, iti).")] = "last",
    chat: Annotated[bool, typer.Option(help="Wrap texts in the model's chat template.")] = True,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 64,
    bf16: Annotated[
        bool,
        typer.Option(
            help="Read under bfloat16 autocast: ~2x faster matmuls on CPUs with bf16 units, but small "
            "contrasts drown in rounding (SmolLM2: pca_diff below cosine 0.99 vs float32 at layers 0-12)."
        ),
    ] = False,
    cache: Annotated[
        bool, typer.Option(help="Reuse cached activations for the same model/data/site.")
    ] = False,
    positive_label: Annotated[str | None, typer.Option(help="Labelled data: the positive class.")] = None,
    negative_label: Annotated[str | None, typer.Option(help="Labelled data: the negative class.")] = None,
    harmless: Annotated[Path | None, typer.Option(help="refusal: harmless instructions file.")] = None,
    top_k: Annotated[int, typer.Option(help="iti: heads kept.")] = 12,
    steps: Annotated[int, typer.Option(help="learned: optimisation steps.")] = 200,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Save a per-layer diagnostics plot (PNG).")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Extract a steering vector and print its per-layer diagnostics (progress bars on stderr)."""
    import torch

    from steerlab.plots import LEGEND, table

    with friendly_errors():
        from steerlab.methods.registry import check_method

        info = check_method(method)
        items = _load_data(data, method, positive_label, negative_label)
        lm = load_model(model, quiet=quiet)
        dtype = torch.bfloat16 if bf16 else None
        # pair methods and iti draw a bar over the texts read; the others a spinner
        reads = info.kind == "pair" or info.name == "iti"
        with spinner(f"extracting ({method})", quiet=quiet or reads, console=err_console):
            vector = _run(
                lm,
                items,
                info.name,
                layers=layers,
                site=site,
                position=_position(position),
                chat=chat,
                batch_size=batch_size,
                dtype=dtype,
                cache=cache,
                harmless=harmless,
                top_k=top_k,
                steps=steps,
                progress=not quiet,
            )
        target = out or data.with_suffix(f".{method}.safetensors")
        vector.save(target)
        console.print(vector.describe())
        typer.echo(table(vector))
        shown = [k for k in LEGEND if any(k in v for v in vector.diagnostics.values() if isinstance(v, dict))]
        for key in shown:
            typer.echo(f"  {key}: {LEGEND[key]}")
        console.print(f"saved {target}")
        if plot is not None:
            from steerlab.plots import plot as save_plot

            console.print(f"plot {save_plot(vector, plot)}")


def _position(text: str) -> Any:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return text


def _load_data(path: Path, method: str, positive_label: str | None, negative_label: str | None) -> Any:
    from steerlab.data import ab_to_pairs, labelled_to_pairs, load_any
    from steerlab.errors import DataError

    kind, items = load_any(path)
    if method == "refusal":
        if kind != "instructions":
            raise DataError(f"{path}: the refusal method needs an instructions file (harmful), found {kind}")
        return items
    if kind == "instructions":
        raise DataError(f"{path}: instruction sets are for --method refusal; '{method}' needs contrast pairs")
    if kind == "ab":
        return ab_to_pairs(items)
    if kind == "labelled":
        if positive_label is None or negative_label is None:
            labels = sorted({str(e.label) for e in items})
            raise DataError(
                f"{path}: labelled data needs --positive-label and --negative-label (labels: {labels})"
            )
        return labelled_to_pairs(items, positive_label, negative_label)
    return items


def _run(
    lm: Any,
    items: Any,
    method: str,
    *,
    layers: str | None,
    site: str,
    position: Any,
    chat: bool,
    batch_size: int,
    dtype: Any,
    cache: bool,
    harmless: Path | None,
    top_k: int,
    steps: int,
    progress: bool = False,
) -> Any:
    import steerlab
    from steerlab.errors import DataError
    from steerlab.methods.registry import METHODS, run_model_method

    common = dict(
        layers=layers,
        site=site,
        position=position,
        chat=chat,
        batch_size=batch_size,
        dtype=dtype,
        progress=progress,
    )
    if METHODS[method].kind == "pair":
        return steerlab.extract(lm, items, method=method, cache=True if cache else None, **common)
    if method == "refusal":
        if harmless is None:
            raise DataError("--method refusal needs --harmless FILE (harmless instructions)")
        from steerlab.data import load_instructions

        items = (items, load_instructions(harmless))
        common.pop("chat")  # instructions are always wrapped in the chat template
    extra = {"iti": {"top_k": top_k}, "learned": {"steps": steps}}.get(method, {})
    return run_model_method(lm, items, method, cache=cache or None, **common, **extra)


def lint_cmd(
    data: Annotated[list[Path], typer.Argument(help="Data files (pairs, A/B, labelled or instructions).")],
    strict: Annotated[bool, typer.Option(help="Treat warnings as errors (exit code 1).")] = False,
) -> None:
    """Check contrast data without a model: empty/duplicate items, leakage, length skew, trivial contrasts."""
    from steerlab.data.lint import lint_path, render

    worst = 0
    for path in data:
        report = lint_path(path, strict=strict)
        typer.echo(render(report))  # plain text: no wrapping or markup, so CI logs and greps see it whole
        worst = max(worst, report.exit_code)
    raise typer.Exit(worst)
