"""Budgets that can decide: the ``standard`` preset gives every packaged task kind at least 32 evaluation
items (on the tiny model, with the real shared data), and a budget asking for more items than a task's
data holds is refused with the split that is short, instead of silently evaluating fewer.
"""

from __future__ import annotations

import pytest

import steerlab
from steerlab.errors import DataError
from steerlab.evaluate import tasks
from steerlab.evaluate.tasks import BUDGETS, Budget
from tiny_models import build


@pytest.fixture(scope="module")
def tiny():
    model, tok = build("llama")
    return steerlab.from_model(model, tok, model_id="tiny-llama")


def test_presets_are_named_once_and_standard_evaluates_32_items():
    assert BUDGETS == ("smoke", "small", "standard", "default")
    sizes = {name: Budget.preset(name) for name in BUDGETS}
    assert sizes["standard"].eval >= 32
    # standard spends on evaluation, not on training or tokens: as modest as small elsewhere
    for knob in ("train", "calib", "max_new_tokens", "scorer_train"):
        assert getattr(sizes["standard"], knob) <= max(getattr(sizes["small"], knob), 8)
    assert sizes["small"].eval < sizes["standard"].eval
    with pytest.raises(DataError, match="standard"):
        Budget.preset("huge")


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("sentiment", "sentiment_labelled_sentences"),
        ("persona", None),
        ("safety", "refusal_direction"),
        ("ab", "caa/sycophancy/generate.jsonl"),
    ],
)
def test_standard_budget_gives_every_task_32_evaluation_items(tiny, shared_data, tmp_path, kind, data):
    budget = Budget.preset("standard")
    task = tasks.build_task(
        tiny,
        kind,
        None if data is None else shared_data / data,
        budget,
        scorer="activation",
        cache=tmp_path / "setup.json",
    )
    assert task.split_size("eval") >= 32
    assert task.split_size("eval") == budget.eval
    assert task.split_size("heldout") == budget.heldout
    assert task.train_size == budget.train
    if kind == "safety":  # both labels, evenly
        assert sum(task.eval_labels) == budget.eval // 2


def test_a_budget_larger_than_the_data_is_refused(tiny, tmp_path):
    too_big = Budget(train=16, eval=40, heldout=8, calib=4, shots=2, max_new_tokens=4, scorer_train=16)
    with pytest.raises(DataError, match=r"persona.*eval 32 < 40"):
        tasks.build_task(tiny, "persona", None, too_big, scorer="activation", cache=tmp_path / "s.json")
