"""Build one adaptation on a task's training pool: prompting, LoRA, or a calibrated steering vector.

Steering methods are calibrated (``calibrate.py``) on a separate calibration split; the chosen layers
and strength come back with the calibration record and the per-example slopes of effect over strength.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steerlab.engine.spec import Steering
from steerlab.errors import SteerlabError
from steerlab.evaluate import adaptations, metrics
from steerlab.evaluate.adaptations import Adaptation
from steerlab.evaluate.arena.config import (
    CONDITIONAL_BASE,
    CONDITIONAL_METHOD,
    PROMPT_SHOT_CAP,
    ArenaConfig,
    steering_methods,
)
from steerlab.evaluate.cost import counting
from steerlab.evaluate.sweep import Cell, SweepSpec

if TYPE_CHECKING:
    from steerlab.evaluate.tasks import Task
    from steerlab.lm import LM

Progress = Callable[[str], None]


@dataclass
class BuildInfo:
    """What building cost, plus LoRA's training record or a steering method's calibration record."""

    cost: dict[str, Any]
    training: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None


def build(
    lm: LM,
    task: Task,
    method: str,
    config: ArenaConfig,
    *,
    setting: dict[str, Any] | None = None,
    progress: Progress | None = None,
    seed: int | None = None,
) -> tuple[Adaptation, BuildInfo]:
    """Build one adaptation on ``task``'s training pool; ``setting`` reuses a calibrated steering choice.

    ``seed`` (default: the budget's) seeds LoRA's initialisation and batch order.
    """
    seed = config.budget.seed if seed is None else seed
    training = calibration = None
    with counting(lm.model) as cost:
        if method == "baseline":
            adaptation = adaptations.baseline()
        elif method == "prompting":
            shots = task.shots[: min(len(task.shots), PROMPT_SHOT_CAP)]
            adaptation = adaptations.prompting("prompting", task.instruction, shots)
        elif method == "lora":
            adaptation, training = _lora(lm, task, config, seed)
        elif method == CONDITIONAL_METHOD:
            adaptation, calibration = _conditional(lm, task, config, setting, progress)
        elif method in steering_methods():
            vector = _steering_vector(lm, task, method, config)
            if setting is None:
                setting, calibration = calibrate_vector(lm, task, vector, config, progress)
            s = Steering(
                vector, strength=setting["strength"], layers=setting["layers"], op="add", unit="norm"
            )
            adaptation = adaptations.steering(method, [s], **setting)
            adaptation.settings["vector"] = vector
        else:
            raise SteerlabError(f"unknown method '{method}'")
    info = BuildInfo(
        {k: cost[k] for k in ("seconds", "forward_passes", "backward_passes")}, training, calibration
    )
    adaptation.build = info.cost
    return adaptation, info


def _conditional(
    lm: LM, task: Task, config: ArenaConfig, setting: dict[str, Any] | None, progress: Progress | None
) -> tuple[Adaptation, dict[str, Any] | None]:
    """The :data:`CONDITIONAL_BASE` vector at its own calibrated setting, gated by the task's condition.

    Same vector, layers and strength as the unconditional method, so the comparison isolates what gating
    changes. The condition is found on the task's contrast pairs (safety: harmful vs harmless training
    instructions) at layers no later than the first steered one.
    """
    if task.kind != "safety":
        raise SteerlabError(
            f"the conditional method needs a task with a natural condition (safety); '{task.name}' is {task.kind}"
        )
    from steerlab.methods.condition import find_condition

    vector = _steering_vector(lm, task, CONDITIONAL_BASE, config)
    calibration = None
    if setting is None:
        setting, calibration = calibrate_vector(lm, task, vector, config, progress)
    first = min(setting["layers"])
    condition = find_condition(
        lm,
        [p.positive for p in task.pairs],
        [p.negative for p in task.pairs],
        layers=range(0, first + 1),
        seed=config.budget.seed,
        name=f"{task.name}-condition",
    )
    s = Steering(
        vector,
        strength=setting["strength"],
        layers=setting["layers"],
        op="add",
        unit="norm",
        condition=condition,
    )
    adaptation = adaptations.steering(CONDITIONAL_METHOD, [s], **setting)
    adaptation.settings["vector"] = vector
    adaptation.settings["condition"] = condition.describe()
    adaptation.settings["condition_held_out_f1"] = condition.diagnostics["held_out_f1"]
    return adaptation, calibration


def _lora(lm: LM, task: Task, config: ArenaConfig, seed: int) -> tuple[Adaptation, dict[str, Any]]:
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
    settings = {"rank": adapter.rank, "targets": adapter.targets}
    return Adaptation("lora", "lora", lora=adapter, settings=settings), train_cost


def _steering_vector(lm: LM, task: Task, method: str, config: ArenaConfig) -> Any:
    if method == "learned":
        from steerlab.methods.learned import train_vector

        if len(task.preference_pairs) < 2:
            raise SteerlabError(
                f"the learned method needs prompt + positive/negative completion pairs; task '{task.name}' has none"
            )
        return train_vector(lm, task.preference_pairs, steps=config.learned_steps, seed=config.budget.seed)
    from steerlab.extract import extract

    return extract(lm, task.pairs, method=method, position=task.extract_options.get("position", "last"))


def _cells_for(vector: Any, config: ArenaConfig) -> list[Cell] | None:
    """Calibration grid: the configured one, or for a learned single-layer vector its own layer at
    fractions and multiples of the strength it was trained at."""
    if vector.method == "learned" and vector.defaults.get("strength"):
        from steerlab.evaluate.sweep import grid

        base = float(vector.defaults["strength"])
        # downwards too: a vector trained to move the positive completions can overshoot the KL budget
        return grid([vector.layers], [round(base * f, 4) for f in (0.1, 0.25, 0.5, 1.0, 1.5)])
    return config.cells


def calibrate_vector(
    lm: LM, task: Task, vector: Any, config: ArenaConfig, progress: Progress | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chosen setting (layers, strength, within_budget) and the calibration record for the report.

    With no cell inside the KL/fluency budget the lowest-KL cell is used, and the record says so.
    """
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
    record["slopes"] = strength_slopes(result.rows, choice)
    setting = {
        "layers": list(choice["layers"]),
        "strength": float(choice["strength"]),
        "within_budget": within,
    }
    return setting, record


def strength_slopes(rows: Sequence[dict[str, Any]], choice: dict[str, Any]) -> dict[str, Any] | None:
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
