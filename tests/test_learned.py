"""The learned (BiPO-style) vector: the loss against a hand computation, training on a tiny model
(held-out loss falls, the model's weights and grad flags are untouched, early stopping keeps the best
vector), and clear refusals of data it cannot use.
"""

from __future__ import annotations

import math

import pytest
import torch

import steerlab
from steerlab.errors import DataError
from steerlab.methods.learned import bipo_loss, completion_logprobs, preference_examples, train_vector
from tiny_models import build

PAIRS = [
    {
        "prompt": f"Question {i}: how was it?",
        "positive": " great, lovely, wonderful",
        "negative": " awful, bad, sad",
    }
    for i in range(10)
]


@pytest.fixture(scope="module")
def tiny():
    model, tok = build("llama")
    return steerlab.from_model(model, tok, model_id="tiny-llama")


def test_bipo_loss_matches_a_hand_computation():
    lp, ln = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rp, rn = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0])
    beta = 0.5
    for sign in (1.0, -1.0):
        margins = [(-3.0 + 3.5) - (-4.0 + 3.0), (-5.0 + 4.0) - (-2.0 + 3.0)]
        expected = sum(-math.log(1 / (1 + math.exp(-sign * beta * m))) for m in margins) / 2
        assert float(bipo_loss(lp, ln, rp, rn, sign, beta)) == pytest.approx(expected, rel=1e-6)


def test_completion_logprobs_match_a_direct_forward(tiny):
    examples = preference_examples(tiny, PAIRS[:2], chat=False)
    with torch.no_grad():
        got = completion_logprobs(tiny, [e.prompt for e in examples], [e.positive for e in examples])
    for i, e in enumerate(examples):
        ids = torch.tensor([e.prompt + e.positive])
        with torch.no_grad():
            logp = torch.log_softmax(tiny.model(input_ids=ids).logits[0], -1)
        expected = sum(float(logp[len(e.prompt) - 1 + j, t]) for j, t in enumerate(e.positive))
        assert float(got[i]) == pytest.approx(expected, abs=1e-3)


def test_training_lowers_heldout_loss_and_leaves_the_model_alone(tiny):
    params = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in tiny.model.named_parameters()}
    vec = train_vector(
        tiny,
        PAIRS,
        layer=1,
        steps=30,
        lr=0.05,
        beta=1.0,
        pairs_per_step=4,
        eval_every=5,
        patience=10,
        chat=False,
    )
    curve = vec.diagnostics["heldout_loss"]
    assert curve[0] == pytest.approx(math.log(2), abs=1e-4)  # zero vector: margin 0
    assert min(curve) < curve[0] - 0.05
    assert len(vec.diagnostics["train_loss"]) == 30
    assert vec.layers == [1] and vec.method == "learned"
    assert vec.diagnostics["1"]["heldout_pref_accuracy"] > 0.5
    for name, p in tiny.model.named_parameters():
        assert torch.equal(p, params[name]) and p.requires_grad == flags[name]
    # the recorded defaults (raw unit, strength 1) apply exactly the learned delta, through the engine
    from steerlab.engine import SteeringContext, additive_plan

    with SteeringContext(tiny, additive_plan({1: vec[1]}, "resid")):
        expected = tiny.logits("Question 3: how was it?")
    with tiny.steer(vec):
        got = tiny.logits("Question 3: how was it?")
    torch.testing.assert_close(got, expected)
    # and +v makes the positive completion likelier than -v does
    e = preference_examples(tiny, PAIRS[:2], chat=False)[0]
    scores = {}
    for sign in (1.0, -1.0):
        with tiny.steer(vec * sign, strength=1.0, unit="raw"), torch.no_grad():
            lp = completion_logprobs(tiny, [e.prompt], [e.positive])
            ln = completion_logprobs(tiny, [e.prompt], [e.negative])
        scores[sign] = float(lp - ln)
    assert scores[1.0] > scores[-1.0]


def test_early_stopping_keeps_the_best_vector(tiny):
    vec = train_vector(
        tiny,
        PAIRS,
        layer=1,
        steps=100,
        lr=50.0,
        beta=1.0,
        pairs_per_step=4,
        eval_every=1,
        patience=1,
        chat=False,
    )
    d = vec.diagnostics
    assert d["stopped_early"] and len(d["train_loss"]) < 100
    best = min(d["heldout_loss"])
    assert d["heldout_loss"][d["heldout_steps"].index(d["best_step"])] == best
    assert vec.diagnostics["1"]["heldout_loss"] == best


def test_learned_refuses_data_it_cannot_use(tiny):
    with pytest.raises(DataError, match="prompt"):
        train_vector(tiny, [("good", "bad"), ("nice", "mean")], chat=False)
    with pytest.raises(DataError, match="identical"):
        train_vector(tiny, [{"prompt": "q", "positive": "a", "negative": "a"}] * 3, chat=False)
    with pytest.raises(DataError, match="at least 2"):
        train_vector(tiny, PAIRS[:1], chat=False)


def test_cached_lower_blocks_give_the_same_training_as_full_forwards(tiny):
    """Skipping the frozen blocks below the trained layer (their outputs cached) changes no number."""
    options = dict(
        layer=1, steps=6, lr=0.05, beta=1.0, pairs_per_step=4, eval_every=2, patience=10, chat=False
    )
    fast = train_vector(tiny, PAIRS, cache_states=True, **options)
    full = train_vector(tiny, PAIRS, cache_states=False, **options)
    assert fast.diagnostics["cached_states"] and not full.diagnostics["cached_states"]
    assert fast.diagnostics["train_loss"] == pytest.approx(full.diagnostics["train_loss"], abs=1e-5)
    assert fast.diagnostics["heldout_loss"] == pytest.approx(full.diagnostics["heldout_loss"], abs=1e-5)
    torch.testing.assert_close(fast[1], full[1], atol=1e-5, rtol=1e-4)
    # the model's blocks run normally again afterwards (no forward left replaced)
    assert all("forward" not in tiny.anatomy.module(i, "resid").__dict__ for i in range(tiny.num_layers))


def test_training_stops_once_the_heldout_loss_flattens(tiny):
    options = dict(
        layer=1, steps=200, lr=0.05, beta=1.0, pairs_per_step=4, eval_every=2, patience=2, chat=False
    )
    flat = train_vector(tiny, PAIRS, min_improvement=0.05, **options)
    d = flat.diagnostics
    assert d["stopped_early"] and len(d["train_loss"]) < 200
    losses = d["heldout_loss"]
    # the last `patience` scores improved on the best before them by less than min_improvement
    before = min(losses[:-2])
    assert all(score > before - 0.05 for score in losses[-2:])
    with pytest.raises(DataError, match="min_improvement"):
        train_vector(tiny, PAIRS, min_improvement=-1.0, chat=False)


def test_a_cache_that_changes_the_numbers_falls_back_to_full_forwards(tiny, monkeypatch):
    from steerlab.methods import learned

    real = learned._StartAt.entering

    def corrupted(self, seqs, width):
        skipping = real(self, seqs, width)
        skipping.output = skipping.output + 1.0  # as if the lower blocks did more than map hidden states
        return skipping

    monkeypatch.setattr(learned._StartAt, "entering", corrupted)
    options = dict(
        layer=2, steps=4, lr=0.05, beta=1.0, pairs_per_step=4, eval_every=2, patience=10, chat=False
    )
    guarded = train_vector(tiny, PAIRS, **options)
    monkeypatch.undo()
    full = train_vector(tiny, PAIRS, cache_states=False, **options)
    assert not guarded.diagnostics["cached_states"]
    assert guarded.diagnostics["train_loss"] == pytest.approx(full.diagnostics["train_loss"], abs=1e-6)
