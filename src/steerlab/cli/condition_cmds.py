"""``steerlab condition DATA``: find a condition (which prompts a steering should apply to) and save it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from steerlab.cli.common import console, friendly_errors, load_model
from steerlab.errors import DataError

TEXT_KEYS = ("prompt", "instruction", "text")


def register(app: typer.Typer) -> None:
    app.command("condition")(condition)


def read_labelled(path: Path) -> tuple[list[str], list[str]]:
    """Positive and negative prompts from a JSONL file of ``{"prompt": ..., "label": true|false}``.

    The text may also be under ``instruction`` or ``text``; the label may be a bool, 1/0 or
    ``"positive"``/``"negative"``.
    """
    positive: list[str] = []
    negative: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: each line must be a JSON object")
        text = next((row[k] for k in TEXT_KEYS if isinstance(row.get(k), str)), None)
        if text is None:
            raise DataError(f"{path}:{number}: no prompt (expected one of {', '.join(TEXT_KEYS)})")
        label = row.get("label")
        if label in (True, 1, "positive"):
            positive.append(text)
        elif label in (False, 0, "negative"):
            negative.append(text)
        else:
            raise DataError(
                f"{path}:{number}: label must be true/false, 1/0 or 'positive'/'negative', got {label!r}"
            )
    return positive, negative


def condition(
    data: Annotated[
        Path, typer.Argument(help='JSONL of {"prompt": ..., "label": true|false}: label true = should fire.')
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the condition (.safetensors).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Hub id, folder or .gguf.")] = None,
    layers: Annotated[
        str | None, typer.Option(help="Candidate layers, e.g. '0-6' (must not come after the steered ones).")
    ] = None,
    holdout: Annotated[
        float, typer.Option(help="Fraction of each set held out to choose the threshold.")
    ] = 0.3,
    seed: int = 0,
    name: Annotated[str, typer.Option(help="A name recorded in the file.")] = "",
    chat: Annotated[bool, typer.Option(help="Read prompts in the chat template, as generate does.")] = True,
) -> None:
    """Find the layer, direction and threshold that separate DATA's positive prompts from its negative ones."""
    from steerlab.engine.spec import parse_layers
    from steerlab.methods.condition import find_condition

    with friendly_errors():
        positive, negative = read_labelled(data)
        chosen = parse_layers(layers) if layers is not None else None
        lm = load_model(model)
        cond = find_condition(
            lm,
            positive,
            negative,
            layers=chosen,
            holdout=holdout,
            seed=seed,
            chat=chat,
            name=name or data.stem,
        )
        cond.save(out)
        diag = cond.diagnostics
        console.print(
            f"{cond.describe()}: held-out F1 {diag['held_out_f1']:.3f}, accuracy {diag['held_out_accuracy']:.3f}"
        )
        console.print(f"wrote {out}")
