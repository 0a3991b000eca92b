"""The engine on the real embedded model: direction of effect, exact reversibility, per-row, positions."""

from __future__ import annotations

import pytest
import torch

import steerlab
from conftest import foreign_hooks
from steerlab import Steering, SteeringError, VectorError

pytestmark = pytest.mark.slow

HAPPY = [" happy", " great", " wonderful", " excited", " joyful"]
SAD = [" sad", " terrible", " depressed", " miserable", " awful"]
PROBE = "Today I am feeling really"
LAYERS = "6-18"


def first_tokens(lm, words):
    return [lm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]


def pole_logprob(lm, words) -> float:
    logp = torch.log_softmax(lm.logits(PROBE)[0], -1)
    return float(torch.logsumexp(logp[first_tokens(lm, words)], 0))


def test_load_embedded(lm):
    assert lm.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (lm.num_layers, lm.hidden_size) == (30, 576)
    assert (lm.anatomy.num_heads, lm.anatomy.head_dim) == (9, 64)
    assert lm.has_chat_template


def test_happy_vector_moves_word_probabilities_both_ways(lm, happy_vector):
    base_h, base_s = pole_logprob(lm, HAPPY), pole_logprob(lm, SAD)
    with lm.steer(happy_vector, strength=0.05, layers=LAYERS):
        up_h, up_s = pole_logprob(lm, HAPPY), pole_logprob(lm, SAD)
    with lm.steer(happy_vector, strength=-0.05, layers=LAYERS):
        down_h, down_s = pole_logprob(lm, HAPPY), pole_logprob(lm, SAD)
    assert up_h > base_h + 0.3 and down_h < base_h - 0.3
    assert up_s < base_s - 0.3 and down_s > base_s + 0.3


def test_steered_generation_differs_and_restores(lm, happy_vector):
    prompt = "Tell me about your day."
    before = lm.generate(prompt, max_new_tokens=12)
    steered = lm.generate(prompt, max_new_tokens=12, steering=happy_vector, strength=0.08, layers=LAYERS)
    assert steered != before
    assert lm.generate(prompt, max_new_tokens=12) == before


def test_bit_exact_after_exit_exception_and_nesting(lm, happy_vector):
    texts = ["The weather is", "My favourite food is"]
    reference = lm.logits(texts)
    with lm.steer(happy_vector, strength=0.1, layers=LAYERS):
        assert not torch.equal(lm.logits(texts), reference)
    assert torch.equal(lm.logits(texts), reference)
    with pytest.raises(RuntimeError, match="boom"), lm.steer(happy_vector, strength=0.1, layers=LAYERS):
        raise RuntimeError("boom")
    assert torch.equal(lm.logits(texts), reference)
    with lm.steer(happy_vector, strength=0.05, layers="6-10"):
        outer = lm.logits(texts)
        with lm.steer(happy_vector, op="ablate", layers="12"):
            inner = lm.logits(texts)
        assert torch.equal(lm.logits(texts), outer)
        assert not torch.equal(inner, outer)
    assert torch.equal(lm.logits(texts), reference)
    assert not foreign_hooks(lm.model)


def test_install_is_cheap(lm, happy_vector):
    import time

    ctx = lm.steer(happy_vector, strength=0.05, layers="10-20")
    times = []
    for _ in range(20):
        tick = time.perf_counter()
        ctx.install()
        times.append(time.perf_counter() - tick)
        ctx.remove()
    # Correctness of install/remove cycles, not a timing assertion (timings live in bench/).
    assert torch.equal(lm.logits("x y z"), lm.logits("x y z"))
    assert len(times) == 20


def test_per_row_equivalence(lm, happy_vector):
    prompts = ["Tell me about your day.", "What is the capital of France?", "Describe a cat."]
    plus = Steering(happy_vector, strength=0.06, layers=LAYERS)
    minus = Steering(happy_vector, strength=-0.06, layers=LAYERS)
    texts = [lm.chat(p) for p in prompts]
    reference = lm.logits(texts)
    with lm.steer_rows([plus, None, minus]):
        mixed = lm.logits(texts)
    assert torch.equal(mixed[1], reference[1]), "an unsteered row must be bit-identical to an unsteered batch"
    assert not torch.allclose(mixed[0], reference[0]) and not torch.allclose(mixed[2], reference[2])
    batched = lm.generate(prompts, max_new_tokens=16, row_steering=[plus, None, minus])
    alone = [
        lm.generate(prompts[0], max_new_tokens=16, steering=plus),
        lm.generate(prompts[1], max_new_tokens=16),
        lm.generate(prompts[2], max_new_tokens=16, steering=minus),
    ]
    assert batched == alone


def test_per_row_batch_mismatch_is_refused(lm, happy_vector):
    with (
        pytest.raises(SteeringError, match="built for 2 rows"),
        lm.steer_rows([Steering(happy_vector, strength=0.1), None]),
    ):
        lm.logits(["a", "b", "c"])


class Probe:
    """Records the raw and the steered block output at one layer on every forward pass."""

    def __init__(self, lm, layer):
        self.raw, self.steered = [], []
        self.module = lm.anatomy.module(layer, "resid")

    def before(self):
        return self.module.register_forward_hook(lambda m, a, out: self.raw.append(out.detach().clone()))

    def after(self):
        return self.module.register_forward_hook(lambda m, a, out: self.steered.append(out.detach().clone()))

    def changed(self):
        """Per forward pass: (B, T) bool of tokens the steering changed."""
        return [(r != s).any(-1) for r, s in zip(self.raw, self.steered, strict=True)]


def run_probe(lm, vector, positions, prompts, layer=12, tokens=5):
    probe = Probe(lm, layer)
    first = probe.before()
    try:
        with lm.steer(vector, strength=0.1, layers=[layer], positions=positions):
            second = probe.after()
            try:
                lm.generate(prompts, max_new_tokens=tokens)
            finally:
                second.remove()
    finally:
        first.remove()
    return probe.changed()


def test_prompt_only_steering_leaves_decode_steps_untouched(lm, happy_vector):
    changed = run_probe(lm, happy_vector, "prompt", ["Hi.", "Tell me a long story about dragons."])
    assert changed[0].sum() > 0
    assert all(not step.any() for step in changed[1:])


def test_generated_only_steering_skips_the_prompt(lm, happy_vector):
    changed = run_probe(lm, happy_vector, "generated", ["Hi.", "Tell me a long story about dragons."])
    assert not changed[0].any()
    assert all(step.all() for step in changed[1:])


def test_from_position_counts_absolute_positions_across_decode_steps(lm, happy_vector):
    prompts = ["Hi.", "Tell me a long story about dragons and knights."]
    lengths = [len(lm.encode(lm.chat(p))) for p in prompts]
    k = min(lengths) + 2  # beyond the short prompt, inside the long one
    changed = run_probe(lm, happy_vector, k, prompts, tokens=4)
    prefill = changed[0]
    width = prefill.shape[1]
    for row, length in enumerate(lengths):
        pad = width - length
        expected = torch.zeros(width, dtype=torch.bool)
        expected[pad + k :] = True
        assert torch.equal(prefill[row], expected), f"row {row}"
    # Decode step j is token position length + j: covered iff >= k, never restarting at 0.
    for j, step in enumerate(changed[1:]):
        for row, length in enumerate(lengths):
            assert bool(step[row, 0]) == (length + j >= k), f"row {row} step {j}"


def test_bad_steering_requests_are_refused(lm, happy_vector):
    with pytest.raises(Exception, match="out of range"):
        lm.steer(happy_vector, strength=0.1, layers=[30])
    with pytest.raises(SteeringError, match="unknown op"):
        lm.steer(happy_vector, strength=0.1, op="explode")
    with pytest.raises(SteeringError, match="needs a strength"):
        lm.steer(happy_vector)
    with pytest.raises(SteeringError, match="positions"):
        lm.steer(happy_vector, strength=0.1, positions="sometimes")
    narrow = steerlab.SteeringVector({3: torch.ones(64)}, model_id=lm.model_id)
    with pytest.raises(VectorError, match="width 64 does not fit"):
        lm.steer(narrow, strength=0.1)
    other = steerlab.SteeringVector({3: torch.ones(576)}, model_id="someone/else")
    with pytest.raises(VectorError, match="made for model 'someone/else'"):
        lm.steer(other, strength=0.1)
