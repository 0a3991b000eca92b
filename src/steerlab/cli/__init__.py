"""The ``steerlab`` command: a thin layer over the library. Each module registers one group of commands."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="steerlab",
    help="Steer language models by editing activations: extract vectors, apply them, measure, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines register(app). A module that is missing (optional extra not installed) is skipped.
COMMAND_MODULES = (
    "core",
    "data_cmds",
    "methods_cmds",
    "interop_cmds",
    "eval_cmds",
    "serve_cmd",
    "condition_cmds",
    "scorecard_cmd",
)

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"steerlab.cli.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name and _exc.name.startswith("steerlab.cli"):
            continue
        raise
    _module.register(app)
