"""Calibration: the strongest steering setting that stays within a fluency and specificity budget.

Defaults (documented in docs/criteria/calibration.md):

* mean KL of the first response token on the neutral prompts (``steerlab.data.neutral_prompts()``)
  at most **0.1 nats**: the vector may not change what the model says about unrelated things much;
* perplexity ratio of steered generations under the unsteered model at most **1.5**: the text must
  stay about as fluent as the model's own.

Among the grid cells inside both budgets, the one with the largest effect wins; its layers, strength,
op and unit are written to ``vector.defaults`` so ``lm.steer(vector)`` uses them. KL is cheap (one
forward pass): each layer option's strengths are tried upwards and the ladder stops at the first cell
past the KL budget (KL grows with strength), and only those cells are generated from, so plots show
where the cliff is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab.evaluate.sweep import Cell, Progress, SweepSpec, check_cells, grid, run_sweep

if TYPE_CHECKING:
    from steerlab.lm import LM

MAX_KL = 0.1
MAX_PPL_RATIO = 1.5


def default_layer_options(num_layers: int) -> list[tuple[int, ...]]:
    """A band over the middle of the stack and one single layer a third of the way down."""
    lo, hi = max(0, num_layers // 4), max(0, (2 * num_layers) // 3)
    band = tuple(range(lo, hi + 1))
    single = (max(0, num_layers // 3),)
    return [band] if single == band else [band, single]


def default_strengths(layers: tuple[int, ...]) -> list[float]:
    """Per-layer norm-unit strengths: small for many layers at once, larger for one layer."""
    return [0.02, 0.04, 0.08, 0.12] if len(layers) > 3 else [0.25, 0.5, 1.0, 1.5]


def default_cells(num_layers: int) -> list[Cell]:
    cells: list[Cell] = []
    for option in default_layer_options(num_layers):
        cells += grid([list(option)], default_strengths(option))
    return cells


@dataclass
class CalibrationResult:
    """The chosen cell (or ``None`` when no cell fits the budget) and every measured row."""

    choice: dict[str, Any] | None
    rows: list[dict[str, Any]]
    max_kl: float
    max_ppl_ratio: float
    sign: float = 1.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "choice": self.choice,
            "rows": self.rows,
            "max_kl": self.max_kl,
            "max_ppl_ratio": self.max_ppl_ratio,
            "notes": self.notes,
        }


def feasible(row: dict[str, Any], max_kl: float, max_ppl_ratio: float) -> bool:
    """Within both budgets (a missing perplexity ratio is not held against the cell)."""
    kl, ratio = row.get("kl"), row.get("ppl_ratio")
    return (kl is None or kl <= max_kl) and (ratio is None or ratio <= max_ppl_ratio)


def choose(
    rows: Sequence[dict[str, Any]],
    max_kl: float = MAX_KL,
    max_ppl_ratio: float = MAX_PPL_RATIO,
    sign: float = 1.0,
) -> dict[str, Any] | None:
    """The feasible non-baseline cell with the largest signed effect; ties go to the smaller strength."""
    candidates = [
        r
        for r in rows
        if r.get("key") != "baseline"
        and isinstance(r.get("effect"), float)
        and feasible(r, max_kl, max_ppl_ratio)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda r: (sign * r["effect"], -abs(r["strength"])))


def calibrate(
    lm: LM,
    spec: SweepSpec,
    cells: Sequence[Cell] | None = None,
    *,
    max_kl: float = MAX_KL,
    max_ppl_ratio: float = MAX_PPL_RATIO,
    sign: float = 1.0,
    executor: Any = None,
    state: str | Path | None = None,
    progress: Progress | None = None,
    write_defaults: bool = True,
) -> CalibrationResult:
    """Sweep ``cells`` (default: :func:`default_cells`), pick the best feasible one, store it as defaults."""
    from steerlab.data import neutral_prompts

    if not spec.neutral:
        spec.neutral = neutral_prompts()
    cells = list(cells) if cells else default_cells(lm.num_layers)
    check_cells(lm, spec, cells)  # every rung, before the first (baseline) forward pass
    state_path = Path(state) if state else None
    store: dict[str, dict[str, Any]] = {}
    options = {"executor": executor, "state": state_path, "progress": progress, "store": store}
    # Walk each layer option's strengths upwards, one rung per round (rounds run the options side by side);
    # KL grows with strength, so an option stops at its first rung past the KL budget.
    ladders = [
        sorted((c for c in cells if c.layers == option), key=lambda c: abs(c.strength))
        for option in dict.fromkeys(c.layers for c in cells)
    ]
    chosen: list[Cell] = []
    active = [list(ladder) for ladder in ladders]
    while any(active):
        rung = [ladder.pop(0) for ladder in active if ladder]
        run_sweep(lm, spec, rung, with_effect=False, **options)
        chosen += rung
        for cell in rung:
            kl = store.get(cell.key, {}).get("kl")
            if kl is not None and kl > max_kl:
                for ladder in active:
                    if ladder and ladder[0].layers == cell.layers:
                        ladder.clear()
        active = [ladder for ladder in active if ladder]
    run_sweep(lm, spec, chosen, with_effect=True, **options)
    all_rows = [store["baseline"], *[store[c.key] for c in cells if c.key in store]]
    best = choose(all_rows, max_kl, max_ppl_ratio, sign)
    notes = []
    if best is None:
        notes.append(
            f"no grid cell stays within KL <= {max_kl} and perplexity ratio <= {max_ppl_ratio}; "
            "the vector's defaults were left unchanged"
        )
    elif write_defaults:
        spec.vector.defaults = {
            "strength": best["strength"],
            "layers": list(best["layers"]),
            "op": spec.op,
            "unit": spec.unit,
        }
        spec.vector.provenance = {
            **spec.vector.provenance,
            "calibration": {
                "max_kl": max_kl,
                "max_ppl_ratio": max_ppl_ratio,
                "effect": best.get("effect"),
                "kl": best.get("kl"),
                "ppl_ratio": best.get("ppl_ratio"),
            },
        }
    return CalibrationResult(best, all_rows, max_kl, max_ppl_ratio, sign, notes)
