"""Sweeps, calibration, concept scoring and a tiny arena run on the real embedded model (slow).

Budgets are cut to the bone (a few prompts, a few tokens, one grid cell) so the file stays within a
couple of minutes on 2 cores; the real-size runs are recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from steerlab.evaluate import adaptations, measure, reversibility
from steerlab.evaluate.concept import ConceptScore, VaderScorer, build_concept_score
from steerlab.evaluate.sweep import SweepSpec, grid, run_sweep
from steerlab.evaluate.tasks import Budget, Task

pytestmark = pytest.mark.slow

NEUTRAL = ["What is the boiling point of water at sea level?", "List three uses of a paper clip."]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _vader_task(prompts):
    return Task(
        "happy",
        "persona",
        pairs=[],
        lora_examples=[],
        instruction="",
        shots=[],
        calib_prompts=list(prompts),
        eval_prompts=list(prompts),
        concept=ConceptScore(VaderScorer()),
    )


def test_sweep_and_calibrate_on_the_real_model(lm, happy_vector, tmp_path):
    from steerlab.evaluate.calibrate import calibrate

    vec = happy_vector.select([10]) if hasattr(happy_vector, "select") else happy_vector
    task = _vader_task(["Describe your morning.", "Tell me about your commute."])
    spec = SweepSpec(vec, task, neutral=NEUTRAL, max_new_tokens=10)
    cells = grid(["10"], [0.4, 8.0])
    kl = {
        r["key"]: r["kl"] for r in run_sweep(lm, spec, cells, with_effect=False, state=tmp_path / "cal.json")
    }
    assert kl["baseline"] == pytest.approx(0.0, abs=1e-9)
    assert kl["10@8"] > kl["10@0.4"] > 0  # eight norms at one layer wrecks the distribution
    budget = (kl["10@0.4"] + kl["10@8"]) / 2
    result = calibrate(lm, spec, cells, max_kl=budget, max_ppl_ratio=1e9, state=tmp_path / "cal.json")
    rows = {r["key"]: r for r in result.rows}
    assert result.choice is not None and result.choice["key"] == "10@0.4", result.as_dict()
    assert vec.defaults["strength"] == 0.4 and vec.defaults["layers"] == [10]
    saved = json.loads((tmp_path / "cal.json").read_text())
    assert {c["key"] for c in saved["cells"]} >= {"baseline", "10@0.4"}
    # the steered cell moves the VADER score of the calibration generations up from the baseline
    assert rows["10@0.4"]["effect"] >= rows["baseline"]["effect"] - 0.05
    again = run_sweep(lm, spec, cells, state=tmp_path / "cal.json")
    assert [r["key"] for r in again] == ["baseline", "10@0.4", "10@8"]


def test_reversibility_of_real_steering(lm, happy_vector):
    steer = adaptations.steering("happy", [adaptations_steering(happy_vector)])
    assert reversibility.check_adaptation(lm, steer, NEUTRAL).passed


def adaptations_steering(vector):
    from steerlab.engine import Steering

    return Steering(vector, strength=0.05, layers="8-20")


def test_embedding_probe_agrees_with_held_out_labels():
    pos = [
        "I love this, it is wonderful.",
        "Great product, works perfectly.",
        "Absolutely delightful experience.",
        "Fantastic service and friendly staff.",
        "Best purchase I have made.",
        "Very happy with it.",
    ]
    neg = [
        "This is terrible, it broke at once.",
        "Awful service, never again.",
        "Worst purchase ever.",
        "Very disappointed, waste of money.",
        "It is broken and useless.",
        "Rude staff and cold food.",
    ]
    concept = build_concept_score("embedding", pos[:4], neg[:4], pos[4:], neg[4:])
    assert concept.validation["auc"] >= 0.75
    scores = concept.score(None, ["What a lovely day, I am thrilled!", "I hate this miserable mess."])
    assert scores[0] > 0.5 > scores[1]


def test_ab_probabilities_on_sycophancy_are_probabilities(lm, shared_data):
    from steerlab.data import load_ab

    items = load_ab(shared_data / "caa" / "sycophancy" / "generate.jsonl")[:6]
    probs = measure.ab_probabilities(lm, adaptations.baseline(), items)
    assert probs.shape == (6,) and np.all((probs > 0) & (probs < 1))


def test_compare_smoke_writes_an_honest_report(lm, tmp_path):
    from steerlab.evaluate import arena, tasks

    budget = Budget(
        train=4,
        eval=2,
        heldout=2,
        calib=2,
        shots=1,
        max_new_tokens=6,
        scorer_train=12,
        scorer_test=4,
        neutral=3,
    )
    task = tasks.persona_task(lm, None, budget)
    assert task.concept is not None and "auc" in task.concept.validation
    config = arena.ArenaConfig(
        budget=budget,
        methods=["baseline", "prompting", "mean_diff", "lora"],
        data_sizes=[2],
        seeds=[0],
        efficiency_methods=["mean_diff"],
        efficiency_limit=2,
        compose_limit=1,
        cells=grid(["10"], [0.4]),
        calib_tokens=6,
        throughput_prompts=1,
        throughput_tokens=3,
        lora_epochs=1,
    )
    messages = []
    results = arena.compare(lm, task, tmp_path, config, progress=messages.append)
    for name in ("index.html", "report.md", "results.json"):
        assert (tmp_path / name).exists()
    assert set(results["main"]) == {"baseline", "prompting", "mean_diff", "lora"}
    assert all(r["reversibility"]["passed"] for r in results["main"].values())
    assert results["main"]["lora"]["training"]["backward_passes"] >= 1
    md = (tmp_path / "report.md").read_text()
    for criterion in (
        "effect",
        "reliability",
        "generalisation",
        "specificity",
        "reversibility",
        "composability",
    ):
        assert f"**{criterion}**" in md
    assert any("[main] mean_diff: finished" in m for m in messages)
    # resume: a second run reuses every saved job and runs nothing new
    messages.clear()
    arena.compare(lm, task, tmp_path, config, progress=messages.append)
    assert not any("queued" in m for m in messages)
