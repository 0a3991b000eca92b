"""Arena steering methods beyond the pair methods: which scale each is calibrated in (learned, ITI and
refusal around their own recorded strength), ITI runnable by name, and the conditional method calibrated
with its gate on, gating the best finished steering method (``refusal`` included on safety).
"""

from __future__ import annotations

import importlib

import pytest

import steerlab
from steerlab.data import ContrastPair
from steerlab.evaluate import sweep
from steerlab.evaluate.arena import ArenaConfig
from steerlab.evaluate.arena.build import OWN_SCALE_FACTORS, build, calibration_grid, own_scale
from steerlab.evaluate.arena.compare import conditional_base
from steerlab.evaluate.arena.config import CONDITIONAL_BASE, check_methods
from steerlab.evaluate.arena.results import MethodResult
from steerlab.evaluate.sweep import grid
from steerlab.evaluate.tasks.task import Task
from steerlab.methods.iti import ITI_ALPHA
from tiny_models import build as build_model
from tiny_models import tiny_arena_config

HARMFUL = [f"aaaa {w} aaaa" for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")]
HARMLESS = [f"zzzz {w} zzzz" for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")]


@pytest.fixture(scope="module")
def tiny():
    model, tok = build_model("llama")
    return steerlab.from_model(model, tok, model_id="tiny-llama")


def _config(**extra) -> ArenaConfig:
    return ArenaConfig(
        cells=grid(["1"], [0.5]), calib_tokens=2, neutral=["hello there", "abc"], calib_neutral=2, **extra
    )


def _safety_task() -> Task:
    pairs = [ContrastPair(a, z) for a, z in zip(HARMFUL[:6], HARMLESS[:6], strict=True)]
    return Task(
        "safety",
        "safety",
        pairs=pairs,
        lora_examples=[],
        instruction="",
        shots=[],
        calib_prompts=[HARMFUL[6], HARMFUL[7], HARMLESS[6], HARMLESS[7]],
        calib_labels=[1, 1, 0, 0],
    )


def test_vectors_with_their_own_scale_are_calibrated_around_it(tiny):
    pairs = [ContrastPair(a, z) for a, z in zip(HARMFUL, HARMLESS, strict=True)]
    iti = steerlab.extract(tiny, pairs, method="iti", top_k=2, chat=False)
    assert own_scale(iti) == ITI_ALPHA
    cells, unit = calibration_grid(tiny, iti, _config())
    assert unit == "raw" and {c.strength for c in cells} == {
        round(ITI_ALPHA * f, 4) for f in OWN_SCALE_FACTORS
    }
    assert all(list(c.layers) == iti.layers for c in cells)
    plain = steerlab.extract(tiny, pairs, method="mean_diff", chat=False)
    assert own_scale(plain) is None
    assert calibration_grid(tiny, plain, _config()) == (grid(["1"], [0.5]), "norm")
    assert check_methods(["iti", "refusal", "learned", "conditional"]) == [
        "iti",
        "refusal",
        "learned",
        "conditional",
    ]


def test_iti_runs_as_an_arena_method_in_its_own_unit(tiny):
    task = _safety_task()
    adaptation, info = build(tiny, task, "iti", _config())
    assert adaptation.settings["unit"] == "raw"
    assert info.calibration is not None and info.calibration["rows"]
    (steering,) = adaptation.steering
    assert steering.unit == "raw" and steering.strength == adaptation.settings["strength"]


def test_conditional_calibrates_with_its_gate_on(tiny, monkeypatch):
    seen = []
    real = sweep.adaptation_for

    def spy(spec, cell):
        adaptation = real(spec, cell)
        seen.extend(s.condition for s in adaptation.steering)
        return adaptation

    monkeypatch.setattr(sweep, "adaptation_for", spy)
    adaptation, info = build(tiny, _safety_task(), "conditional", _config())
    (steering,) = adaptation.steering
    assert seen and all(c is not None for c in seen)  # every calibration cell ran gated
    assert all(c.describe() == steering.condition.describe() for c in seen)
    assert info.calibration is not None and info.calibration["gated"] is True
    assert adaptation.settings["base"] == CONDITIONAL_BASE
    assert steering.strength == adaptation.settings["strength"]


def _finished(name: str, harmful: list[float], harmless: list[float]) -> MethodResult:
    row = {"key": "1@0.5", "per_example": harmful + harmless, "effect": 0.0, "kl": 0.01}
    return MethodResult(name, 1.0, family="steering", calibration={"choice": row, "rows": [row]})


def test_conditional_gates_the_steering_that_refuses_most_harmful_calibration_prompts():
    task = _safety_task()
    main = {
        "baseline": MethodResult("baseline", 1.0, family="baseline"),
        "mean_diff": _finished("mean_diff", [0.0, 0.0], [1.0, 1.0]),
        "refusal": _finished("refusal", [1.0, 0.0], [0.0, 1.0]),
    }
    assert conditional_base(main, task) == "refusal"
    main["mean_diff"] = _finished("mean_diff", [1.0, 1.0], [1.0, 1.0])
    assert conditional_base(main, task) == "mean_diff"
    # a tie goes to the method made for the task (on safety: refusal), else to the default
    main["refusal"] = _finished("refusal", [1.0, 1.0], [0.0, 0.0])
    assert conditional_base(main, task) == "refusal"
    del main["refusal"]
    main["probe"] = _finished("probe", [1.0, 1.0], [0.0, 0.0])
    assert conditional_base(main, task) == CONDITIONAL_BASE
    assert conditional_base({}, task) == CONDITIONAL_BASE


def test_full_pool_efficiency_points_are_read_off_the_main_stage(tiny, tmp_path):
    from steerlab.evaluate import arena, tasks

    budget = tasks.Budget(
        train=4, eval=2, heldout=2, calib=2, shots=1, max_new_tokens=2, scorer_train=8, scorer_test=4
    )
    task = tasks.persona_task(tiny, None, budget, scorer="activation")
    config = tiny_arena_config(
        budget, ["baseline", "mean_diff"], data_sizes=[2, 4], efficiency_methods=["mean_diff"]
    )
    results = arena.compare(tiny, task, tmp_path, config)
    full = results["efficiency"]["efficiency-mean_diff-n4-s0"]
    assert full["per_example"] == results["main"]["mean_diff"]["eval"]["per_example"]
    assert not (tmp_path / "runs" / "efficiency-mean_diff-n4-s0.json").exists()  # never rebuilt
    assert (tmp_path / "runs" / "efficiency-mean_diff-n2-s0.json").exists()  # a smaller pool still runs


def test_refusal_runs_as_an_arena_method_on_safety_only(tiny):
    adaptation, info = build(tiny, _safety_task(), "refusal", _config())
    (steering,) = adaptation.steering
    assert steering.op == "add" and steering.unit == "raw"
    assert list(steering.resolved_layers()) == adaptation.settings["layers"]
    assert info.calibration is not None
    # chosen causally, on the calibration split, among the configured depth only
    config = _config(refusal_depth=(0.34, 0.67))
    adaptation, _ = build(tiny, _safety_task(), "refusal", config)
    vector = adaptation.steering[0].vector
    assert vector.provenance["selected_by"] == "validation"
    assert (vector.provenance["val_harmful"], vector.provenance["val_harmless"]) == (2, 2)
    assert vector.provenance["add_strength"] == config.refusal_add_strength
    assert config.refusal_layers(tiny.num_layers) == [1, 2] and vector.layers[0] in (1, 2)
    assert {row["layer"] for row in vector.diagnostics["selection"]} == {1, 2}
    sentiment = Task(
        "sentiment", "sentiment", pairs=_safety_task().pairs, lora_examples=[], instruction="", shots=[]
    )
    with pytest.raises(steerlab.SteerlabError, match="safety task"):
        build(tiny, sentiment, "refusal", _config())


def test_learned_leaves_out_pairs_whose_completions_coincide(tiny, monkeypatch):
    """A base model can answer alike under both personas; such a pair has no preference to learn."""
    from steerlab.methods import learned

    arena_build = importlib.import_module("steerlab.evaluate.arena.build")  # the package exports build()

    seen = []
    monkeypatch.setattr(learned, "train_vector", lambda lm, pairs, **kw: seen.append(list(pairs)) or "vec")
    same, differ = ContrastPair("ok", "ok", prompt="q1"), ContrastPair("yes", "no", prompt="q2")
    task = _safety_task()
    task.preference_pairs = [same, differ, ContrastPair("good", "bad", prompt="q3")]
    assert arena_build._steering_vector(tiny, task, "learned", _config()) == "vec"
    assert seen == [[differ, task.preference_pairs[2]]]
    task.preference_pairs = [same, differ]
    with pytest.raises(steerlab.SteerlabError, match="completions differ; task 'safety' has 1 of 2"):
        arena_build._steering_vector(tiny, task, "learned", _config())
