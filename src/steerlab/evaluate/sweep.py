"""Layers × strengths sweeps for one steering vector: effect, KL and fluency per cell; heatmap + table.

A cell is one steering setting (a set of layers and a strength). Each cell is an independent task for an
executor (in-process or Ray). Finished cells are appended to a JSON file as they arrive, so an interrupted
sweep resumes where it stopped: cells already in the file are not run again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from steerlab.engine.spec import Steering, parse_layers
from steerlab.evaluate import measure, metrics
from steerlab.evaluate.adaptations import baseline, steering
from steerlab.interop.atomic import atomic_write

if TYPE_CHECKING:
    from steerlab.evaluate.tasks import Task
    from steerlab.lm import LM
    from steerlab.vector import SteeringVector

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    """One steering setting: the layers edited together and the strength used at each."""

    layers: tuple[int, ...]
    strength: float

    @property
    def layer_label(self) -> str:
        ls = self.layers
        if len(ls) > 2 and list(ls) == list(range(ls[0], ls[-1] + 1)):
            return f"{ls[0]}-{ls[-1]}"
        return ",".join(map(str, ls))

    @property
    def key(self) -> str:
        return f"{self.layer_label}@{self.strength:g}"


def grid(layer_options: Sequence[Any], strengths: Sequence[float]) -> list[Cell]:
    """Every layer option (``12``, ``"8-20"``, ``[8, 9]``) crossed with every strength."""
    return [Cell(parse_layers(opt), float(s)) for opt in layer_options for s in strengths]


@dataclass
class SweepSpec:
    """What each cell measures. ``task`` gives the effect (``None``: KL/fluency only)."""

    vector: SteeringVector
    task: Task | None = None
    op: str = "add"
    unit: str = "norm"
    split: str = "calib"
    limit: int | None = None
    max_new_tokens: int = 24
    neutral: list[str] = field(default_factory=list)
    fluency_prompts: list[str] = field(default_factory=list)
    reference_logits: torch.Tensor | None = None
    #: steer a row only when this condition fires on its prompt (to calibrate a gated steering as it runs)
    condition: Any = None


@dataclass
class CellJob:
    spec: SweepSpec
    cell: Cell
    with_effect: bool = True
    reference_logits: torch.Tensor | None = None


def adaptation_for(spec: SweepSpec, cell: Cell) -> Any:
    s = Steering(
        spec.vector,
        strength=cell.strength,
        op=spec.op,
        layers=cell.layers,
        unit=spec.unit,
        condition=spec.condition,
    )
    return steering(f"{spec.vector.method}@{cell.key}", [s], layers=list(cell.layers), strength=cell.strength)


def check_cells(lm: LM, spec: SweepSpec, cells: Sequence[Cell]) -> None:
    """Refuse a grid this model or vector cannot run, before any forward pass.

    A cell is measured only after the baseline (minutes on a real model), so an out-of-range layer, a
    layer the vector has no direction for, or an unknown op/unit must fail here, naming what is valid.
    """
    from steerlab.errors import SteeringError

    num_layers = lm.num_layers
    wrong = sorted({layer for cell in cells for layer in cell.layers if not 0 <= layer < num_layers})
    if wrong:
        raise SteeringError(
            f"layers {wrong} are out of range: this model has {num_layers} blocks, layers 0-{num_layers - 1}"
        )
    missing = sorted({layer for cell in cells for layer in cell.layers} - set(spec.vector.layers))
    if missing:
        raise SteeringError(
            f"the vector has no direction for layers {missing}; it has layers {spec.vector.layers}"
        )
    for cell in cells:  # op, unit and strength are checked by building the steering (no model call)
        Steering(spec.vector, strength=cell.strength, op=spec.op, layers=cell.layers, unit=spec.unit)


def evaluate_cell(lm: LM, job: CellJob) -> dict[str, Any]:
    """Measure one cell (module-level so executors can ship it). Strength 0 is the unadapted model."""
    spec, cell = job.spec, job.cell
    adaptation = baseline() if cell.strength == 0 and spec.op == "add" else adaptation_for(spec, cell)
    row: dict[str, Any] = {
        "layers": list(cell.layers),
        "layer_label": cell.layer_label,
        "strength": cell.strength,
        "full": job.with_effect,
    }
    if spec.neutral:
        kl = measure.kl_on_prompts(lm, adaptation, spec.neutral, job.reference_logits)
        row["kl"] = float(np.mean(kl))
    if not job.with_effect:
        return row
    texts: list[str] | None = None
    prompts: list[str] = []
    if spec.task is not None:
        result = spec.task.effect(
            lm, adaptation, spec.split, limit=spec.limit, max_new_tokens=spec.max_new_tokens
        )
        row["effect"] = result.estimate.value
        row["effect_low"], row["effect_high"] = result.estimate.low, result.estimate.high
        row["per_example"] = [float(x) for x in result.per_example]
        row["effect_extra"] = result.extra
        texts = result.generations
        if texts is not None:
            prompts = spec.task.split(spec.split, spec.limit)[0]
    if texts is None and spec.fluency_prompts:
        prompts = list(spec.fluency_prompts)
        texts = measure.generate(lm, adaptation, prompts, max_new_tokens=spec.max_new_tokens)
    if texts is not None:
        sums, counts = measure.completion_nll(lm, prompts, texts)
        row["ppl"] = metrics.perplexity(sums, counts) if counts.sum() else float("nan")
        row["samples"] = texts[:3]
    return row


def _load_rows(path: Path | None, meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The cells saved at ``path`` by a sweep of the same vector, op, unit and condition (``meta``); a file
    left by another sweep is not resumed (its cells would be mixed into this one's choice)."""
    if path is None or not path.exists():
        return {}
    doc = json.loads(path.read_text())
    if doc.get("meta") != meta:
        return {}
    return {r["key"]: r for r in doc.get("cells", [])}


def _save_rows(path: Path | None, rows: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    if path is None:
        return
    text = json.dumps({"meta": meta, "cells": list(rows.values())}, indent=1, default=_jsonable)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)


def run_sweep(
    lm: LM,
    spec: SweepSpec,
    cells: Sequence[Cell],
    *,
    executor: Any = None,
    state: str | Path | None = None,
    with_effect: bool = True,
    progress: Progress | None = None,
    store: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run every cell not already measured and return all rows (baseline row ``strength 0`` first).

    Rows already in ``state`` (a JSON file) or in ``store`` (a dict kept by the caller) are reused;
    ``with_effect=False`` measures KL only. ``executor`` defaults to in-process on ``lm``. Each row gets
    ``ppl_ratio`` (against the strength-0 row) once the baseline is known.
    """
    from steerlab.evaluate.executors import InProcessExecutor

    check_cells(lm, spec, cells)
    executor = executor or InProcessExecutor(lm)
    path = Path(state) if state else None
    rows = store if store is not None else {}
    meta = {
        "vector": spec.vector.method,
        "data_hash": spec.vector.data_hash,
        "op": spec.op,
        "unit": spec.unit,
    }
    if spec.condition is not None:
        meta["condition"] = spec.condition.describe()
    rows.update({k: v for k, v in _load_rows(path, meta).items() if k not in rows})
    if spec.neutral and spec.reference_logits is None:
        spec.reference_logits = measure.next_token_logits(lm, baseline(), spec.neutral)
    reference = spec.reference_logits
    base_cell = Cell(tuple(cells[0].layers) if cells else (0,), 0.0)
    todo = [] if rows.get("baseline", {}).get("full") else [("baseline", base_cell)]
    todo += [(c.key, c) for c in cells if c.key not in rows or (with_effect and not rows[c.key].get("full"))]
    jobs = [
        CellJob(spec, c, with_effect=with_effect or k == "baseline", reference_logits=reference)
        for k, c in todo
    ]

    def done(i: int, row: dict[str, Any]) -> None:
        key = todo[i][0]
        row["key"] = key
        rows[key] = {**rows.get(key, {}), **row}
        _save_rows(path, rows, meta)
        if progress:
            summary = ", ".join(
                f"{k}={row[k]:.3g}" for k in ("effect", "kl", "ppl") if isinstance(row.get(k), float)
            )
            progress(f"cell {key} ({i + 1}/{len(todo)}): {summary}")

    if jobs:
        executor.map(evaluate_cell, jobs, on_result=done)
    base_ppl = rows.get("baseline", {}).get("ppl")
    for row in rows.values():
        if base_ppl and isinstance(row.get("ppl"), float):
            row["ppl_ratio"] = row["ppl"] / base_ppl
    _save_rows(path, rows, meta)
    ordered = [rows["baseline"]] if "baseline" in rows else []
    return ordered + [rows[c.key] for c in cells if c.key in rows]


# ------------------------------------------------------------------------------------------------ output


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = ("effect", "kl", "ppl_ratio")) -> str:
    """A Markdown table of the sweep (one row per cell)."""
    head = "| layers | strength | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (2 + len(columns))]
    for r in rows:
        cells = [f"{r[c]:.4g}" if isinstance(r.get(c), int | float) else "–" for c in columns]
        lines.append(f"| {r.get('layer_label', '')} | {r.get('strength', 0):g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heatmap(rows: Sequence[dict[str, Any]], metric: str, path: str | Path, title: str = "") -> Path:
    """Layers (rows) × strengths (columns) heatmap of ``metric``, coloured relative to the unadapted
    model, with intervals where measured; missing cells are blank (drawn by the report's plots)."""
    from steerlab.evaluate.report.plots import save_sweep_heatmap

    return save_sweep_heatmap(rows, metric, path, title)
