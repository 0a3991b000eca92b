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
    base: str | None = None,
) -> tuple[Adaptation, BuildInfo]:
    """Build one adaptation on ``task``'s training pool; ``setting`` reuses a calibrated steering choice.

    ``seed`` (default: the budget's) seeds LoRA's initialisation and batch order. ``base`` is the
    steering method the conditional method gates (default :data:`CONDITIONAL_BASE`).
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
            adaptation, calibration = _conditional(lm, task, config, setting, progress, base)
        elif method in steering_methods():
            vector = _steering_vector(lm, task, method, config)
            if setting is None:
                setting, calibration = calibrate_vector(lm, task, vector, config, progress)
            adaptation = adaptations.steering(method, [calibrated_steering(vector, setting)], **setting)
            adaptation.settings["vector"] = vector
        else:
            raise SteerlabError(f"unknown method '{method}'")
    info = BuildInfo(
        {k: cost[k] for k in ("seconds", "forward_passes", "backward_passes")}, training, calibration
    )
    adaptation.build = info.cost
    return adaptation, info


def _conditional(
    lm: LM,
    task: Task,
    config: ArenaConfig,
    setting: dict[str, Any] | None,
    progress: Progress | None,
    base: str | None = None,
) -> tuple[Adaptation, dict[str, Any] | None]:
    """The task's best steering vector (``base``, default :data:`CONDITIONAL_BASE`), gated by the task's
    condition and calibrated with the gate on.

    The condition is found first, on the task's contrast pairs (safety: harmful vs harmless training
    instructions), at layers no later than the first layer any calibration cell steers; the strength is
    then chosen by a calibration run in which every cell applies the gate, so the KL budget is spent on
    the prompts the gate lets through (ungated, the strength would be held back by harmless prompts the
    gate never steers).
    """
    if task.kind != "safety":
        raise SteerlabError(
            f"the conditional method needs a task with a natural condition (safety); '{task.name}' is {task.kind}"
        )
    from steerlab.methods.condition import find_condition

    base = base or CONDITIONAL_BASE
    if base == CONDITIONAL_METHOD:
        raise SteerlabError("the conditional method cannot gate itself")
    vector = _steering_vector(lm, task, base, config)
    cells, _ = calibration_grid(lm, vector, config)
    first = min(min(c.layers) for c in cells) if setting is None else min(setting["layers"])
    condition = find_condition(
        lm,
        [p.positive for p in task.pairs],
        [p.negative for p in task.pairs],
        layers=range(0, first + 1),
        seed=config.budget.seed,
        name=f"{task.name}-condition",
    )
    calibration = None
    if setting is None:
        setting, calibration = calibrate_vector(
            lm, task, vector, config, progress, condition=condition, label=CONDITIONAL_METHOD
        )
        calibration["gated"] = True
    steering = calibrated_steering(vector, setting, condition)
    adaptation = adaptations.steering(CONDITIONAL_METHOD, [steering], **setting)
    adaptation.settings["vector"] = vector
    adaptation.settings["base"] = base
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
    position = task.extract_options.get("position", "last")
    if method == "learned":
        from steerlab.methods.learned import train_vector

        # a pair whose two completions coincide (a base model answering alike under both personas) has no
        # preference to learn: leave it out rather than lose the method
        pairs = [p for p in task.preference_pairs if p.positive != p.negative]
        if len(pairs) < 2:
            raise SteerlabError(
                f"the learned method needs at least 2 prompt + positive/negative completion pairs whose "
                f"completions differ; task '{task.name}' has {len(pairs)} of {len(task.preference_pairs)}"
            )
        return train_vector(lm, pairs, seed=config.budget.seed, **config.learned_options())
    if method == "iti":
        from steerlab.methods.iti import extract_iti

        return extract_iti(lm, task.pairs, position=position, seed=config.budget.seed)
    if method == "refusal":
        if task.kind != "safety":
            raise SteerlabError(
                f"the refusal method needs harmful vs harmless instructions (a safety task); '{task.name}' is {task.kind}"
            )
        from steerlab.methods.refusal import extract_refusal

        # the paper's causal selection over a narrowed candidate set, validated on the calibration split
        # (the largest d' alone picks late layers where adding the direction does nothing)
        prompts, labels, _ = task.split("calib")
        return extract_refusal(
            lm,
            [p.positive for p in task.pairs],
            [p.negative for p in task.pairs],
            val_harmful=[p for p, y in zip(prompts, labels, strict=True) if y == 1],
            val_harmless=[p for p, y in zip(prompts, labels, strict=True) if y == 0],
            layers=config.refusal_layers(lm.num_layers),
            add_strength=config.refusal_add_strength,
            generate_top=config.refusal_generate_top,
            max_new_tokens=config.calib_tokens,
            seed=config.budget.seed,
        )
    from steerlab.extract import extract

    # the pair methods read the same activations of the same pairs: read them once per comparison
    cache = Path(config.state_dir) / "activations" if config.state_dir else None
    return extract(lm, task.pairs, method=method, position=position, cache=cache)


def calibrated_steering(vector: Any, setting: dict[str, Any], condition: Any = None) -> Steering:
    """The steering a calibrated ``setting`` (strength, layers, unit) describes: one definition for the
    plain and the gated method, so the two apply the same vector the same way."""
    return Steering(
        vector,
        strength=setting["strength"],
        layers=setting["layers"],
        op="add",
        unit=setting.get("unit", "norm"),
        condition=condition,
    )


#: Multiples of a vector's own recorded strength tried by calibration (the ladder stops at the KL budget).
OWN_SCALE_FACTORS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


def own_scale(vector: Any) -> float | None:
    """The raw-unit strength a vector records as its natural scale, or None (then the norm-unit grid).

    ``learned`` records strength 1 (exactly the trained delta), ``iti`` its paper's alpha (heads already
    scaled by their activation spread), ``refusal`` the coefficient of addition it was selected with (its
    recorded defaults are ablation, which does not induce refusals on a model that rarely refuses).
    """
    if vector.method == "refusal":
        return float(vector.provenance.get("add_strength", 1.0))
    d = vector.defaults
    if d.get("unit") == "raw" and d.get("strength") and d.get("op", "add") == "add":
        return float(d["strength"])
    return None


def calibration_grid(lm: LM, vector: Any, config: ArenaConfig) -> tuple[list[Cell], str]:
    """Cells and unit to calibrate ``vector`` with: for a vector with its own scale (:func:`own_scale`),
    its own layers at fractions and multiples of that scale (raw unit); otherwise the configured grid,
    or the default one, in norm units."""
    from steerlab.evaluate.calibrate import default_cells
    from steerlab.evaluate.sweep import grid

    base = own_scale(vector)
    if base is not None:
        return grid([vector.layers], [round(base * f, 4) for f in OWN_SCALE_FACTORS]), "raw"
    return list(config.cells or default_cells(lm.num_layers)), "norm"


def calibrate_vector(
    lm: LM,
    task: Task,
    vector: Any,
    config: ArenaConfig,
    progress: Progress | None,
    *,
    condition: Any = None,
    label: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chosen setting (layers, strength, unit, within_budget) and the calibration record for the report.

    With no cell inside the KL/fluency budget the lowest-KL cell is used, and the record says so.
    ``condition`` gates every calibration cell (the conditional method); ``label`` names the resume state.
    """
    from steerlab.data import neutral_prompts
    from steerlab.evaluate.calibrate import calibrate

    cells, unit = calibration_grid(lm, vector, config)
    label = label or vector.method
    spec = SweepSpec(
        vector,
        task,
        unit=unit,
        condition=condition,
        split="calib",
        max_new_tokens=config.calib_tokens,
        # calibration ranks cells against the KL budget; a third of the prompts estimates that well enough
        neutral=(config.neutral or neutral_prompts())[: config.calib_neutral],
        reference_logits=None
        if config.neutral_reference is None
        else config.neutral_reference[: config.calib_neutral],
    )
    state = Path(config.state_dir) / f"calibration-{label}.json" if config.state_dir else None
    result = calibrate(
        lm,
        spec,
        cells,
        max_kl=config.max_kl,
        max_ppl_ratio=config.max_ppl_ratio,
        state=state,
        progress=(lambda m: progress(f"calibrate {label}: {m}")) if progress else None,
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
        "unit": unit,
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
