"""Core commands: demo, generate, info, inspect."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from steerlab.cli.common import (
    check_steering_values,
    console,
    friendly_errors,
    load_model,
    make_steering,
    steering_option,
)

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Hub id, model folder or .gguf file; default: embedded SmolLM2-135M."),
]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("generate")(generate)
    app.command("info")(info)
    app.command("inspect")(inspect)


def demo(
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per answer.")] = 40,
    layers: Annotated[
        str, typer.Option(help="Layers to steer (residual stream after block i, from 0).")
    ] = "10-16",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or spinners.")] = False,
) -> None:
    """Extract a happy-vs-sad vector on the embedded model and show prompts unsteered and steered."""
    from steerlab.demo import run_demo

    with friendly_errors():
        run_demo(max_new_tokens=max_new_tokens, layers=layers, console=console, quiet=quiet)


def generate(
    prompt: Annotated[
        list[str], typer.Argument(help="One or more prompts (each a user turn unless --no-chat).")
    ],
    model: ModelOpt = None,
    vector: Annotated[
        list[Path], typer.Option("--vector", "-v", help="Vector file; repeat to compose.")
    ] = [],  # noqa: B006
    strength: Annotated[list[float], steering_option("strength", "--strength", "-s")] = [],  # noqa: B006
    layers: Annotated[list[str], steering_option("layers", "--layers")] = [],  # noqa: B006
    op: Annotated[list[str], steering_option("op", "--op")] = [],  # noqa: B006
    positions: Annotated[list[str], steering_option("positions", "--positions")] = [],  # noqa: B006
    unit: Annotated[list[str], steering_option("unit", "--unit")] = [],  # noqa: B006
    site: Annotated[list[str], steering_option("site", "--site")] = [],  # noqa: B006
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n")] = 64,
    temperature: float = 0.0,
    seed: int | None = None,
    chat: Annotated[bool, typer.Option(help="Wrap prompts in the model's chat template.")] = True,
    compare: Annotated[bool, typer.Option(help="Also print the unsteered output.")] = False,
    engine: Annotated[
        str, typer.Option(help="torch (any op, any site) or llamacpp (add on the residual only, faster).")
    ] = "torch",
    condition: Annotated[
        list[Path],
        typer.Option(
            "--condition",
            help="Condition file (steerlab condition): steer a prompt only when it fires; one for all "
            "vectors or one per --vector.",
        ),
    ] = [],  # noqa: B006
) -> None:
    """Generate text, optionally steered by one or more vectors.

    Steering options given once apply to every vector; given several times they pair up with --vector in
    order. An option not given takes the vector's recorded default (as in Python and over HTTP).
    """
    import dataclasses

    from steerlab import Condition, SteeringVector

    with friendly_errors():
        check_steering_values(layers=layers, positions=positions)
        lm = load_model(model)
        if condition and not vector:
            raise typer.BadParameter("--condition gates a --vector; give one")
        conditions = [Condition.load(path, lm) for path in condition]
        steerings = []
        for i, path in enumerate(vector):
            vec = SteeringVector.load(path, lm)
            steering = make_steering(
                vec,
                strength=_nth(strength, i),
                op=_nth(op, i),
                layers=_nth(layers, i),
                positions=_nth(positions, i),
                unit=_nth(unit, i),
                site=_nth(site, i),
            )
            gate = _nth(conditions, i)
            steerings.append(dataclasses.replace(steering, condition=gate) if gate is not None else steering)
        options = dict(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, chat=chat)
        fired = None
        if conditions:
            if engine != "torch":
                raise typer.BadParameter("--condition needs --engine torch")
            with lm.steer(steerings) as ctx:
                outputs = lm.generate(prompt, **options)
                fired = ctx.fired_rows()
        else:
            outputs = lm.generate(prompt, steering=steerings or None, engine=engine, **options)
        baseline = lm.generate(prompt, **options) if compare and steerings else None
        for i, text in enumerate(outputs):
            console.rule(f"prompt {i + 1}: {prompt[i][:60]}")
            if fired is not None:
                console.print(f"[dim]condition fired:[/] {', '.join(str(f).lower() for f in fired[i])}")
            if baseline is not None:
                console.print(f"[dim]unsteered:[/] {baseline[i]}")
                console.print(f"[bold]steered:[/]   {text}")
            else:
                console.print(text)


def _nth(values: list, i: int):
    """Per-vector option: one value applies to all, several pair up in order."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    if i >= len(values):
        raise typer.BadParameter(
            f"{len(values)} values given for {i + 1}+ vectors; give one or one per vector"
        )
    return values[i]


def info(
    path: Annotated[
        Path, typer.Argument(help="A vector file: steerlab safetensors, GGUF control vector, .svec.")
    ],
) -> None:
    """Print what a vector file holds: model, method, site, layers, norms, provenance (or a condition's)."""
    from steerlab import SteeringVector
    from steerlab.condition_io import is_condition_file

    with friendly_errors():
        if is_condition_file(path):
            _condition_info(path)
            return
        vec = SteeringVector.load(path)
        console.print(vec.describe())
        table = Table("layer", "direction norm", "typical resid norm", "separation (d')", "accuracy")
        for layer in vec.layers:
            diag = vec.diagnostics.get(str(layer), {})
            norm = vec.norms.get(layer)
            table.add_row(
                str(layer),
                f"{float(vec[layer].norm()):.3f}",
                f"{norm:.1f}" if norm else "-",
                f"{diag['d_prime']:.2f}" if "d_prime" in diag else "-",
                f"{diag['accuracy']:.2f}" if "accuracy" in diag else "-",
            )
        console.print(table)


def _condition_info(path: Path) -> None:
    """A condition file: its rule, where it was found, and the per-layer search table."""
    from steerlab import Condition

    cond = Condition.load(path)
    console.print(f"[bold]condition[/] {cond.describe()}  model {cond.model_id or '-'}  width {cond.width}")
    diag = cond.diagnostics
    if "held_out_f1" in diag:
        console.print(f"held-out F1 {diag['held_out_f1']:.3f}, accuracy {diag['held_out_accuracy']:.3f}")
    rows = diag.get("per_layer") if isinstance(diag.get("per_layer"), list) else []
    if rows:
        table = Table("layer", "threshold", "comparison", "held-out F1", "held-out accuracy")
        for row in rows:
            table.add_row(
                str(row.get("layer")),
                f"{row.get('threshold', float('nan')):.4f}",
                str(row.get("comparison")),
                f"{row.get('f1', float('nan')):.3f}",
                f"{row.get('accuracy', float('nan')):.3f}",
            )
        console.print(table)


def inspect(
    model: Annotated[
        str | None, typer.Argument(help="Hub id, folder or .gguf; default: embedded SmolLM2-135M.")
    ] = None,
    norms: Annotated[bool, typer.Option(help="Measure the typical residual norm per layer.")] = True,
) -> None:
    """Map where one can intervene: blocks, sites, heads, hidden size, typical residual norm per layer."""
    with friendly_errors():
        lm = load_model(model)
        a = lm.anatomy
        console.print(f"[bold]{lm.model_id}[/]  ({a.model_type}, {type(lm.model).__name__})")
        console.print(f"decoder blocks  {a.blocks_path}[0..{a.num_layers - 1}]  ({a.num_layers} blocks)")
        console.print(f"hidden size     {a.hidden_size}")
        console.print(
            f"heads           {a.num_heads} x {a.head_dim} (per-head site width {a.num_heads * (a.head_dim or 0)})"
        )
        console.print(
            "layer i          = residual stream right after block i (HF hidden_states[i+1], llama.cpp direction.i)"
        )
        sites = Table("site", "where", "module in each block")
        sites.add_row("resid", "block output (residual stream)", f"{a.blocks_path}[i]")
        sites.add_row("attn", "attention output, before it joins the residual", a.paths.get("attn", "-"))
        sites.add_row("mlp", "MLP output, before it joins the residual", a.paths.get("mlp", "-"))
        sites.add_row(
            "head", "input of the attention output projection (heads concatenated)", a.paths.get("head", "-")
        )
        console.print(sites)
        if norms:
            typical = lm.typical_norms("resid")
            table = Table("layer", "typical residual norm (median token, first token excluded)")
            for layer in range(a.num_layers):
                table.add_row(str(layer), f"{typical[layer]:.1f}")
            console.print(table)
