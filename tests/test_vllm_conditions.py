"""Conditional steering inside vLLM (in-process engine, real embedded model, shared refusal splits).

A harmful-vs-harmless condition found on a few training instructions gates steerings per request in one
mixed vLLM batch; each row must give the torch engine's greedy tokens for the same conditional steering
(fp32), and the decisions the vLLM workers report must be :meth:`Condition.matches`'s.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import steerlab
from steerlab.backends.vllm.engine import encode_steerings, engine_for
from steerlab.decode import eos_token_ids
from steerlab.engine.spec import Steering
from steerlab.errors import SteeringError

pytestmark = pytest.mark.slow
TOKENS = 8


@pytest.fixture(scope="module")
def splits(refusal_data):
    return {
        "harmful_train": refusal_data["harmful_train"][:32],
        "harmless_train": refusal_data["harmless_train"][:32],
        "harmful_val": refusal_data["harmful_val"][12:17],
        "harmless_val": refusal_data["harmless_val"][12:17],
    }


@pytest.fixture(scope="module")
def condition(lm, splits):
    # layers 0-6: decided no later than the steered layers below, so prompt positions may be steered
    return steerlab.find_condition(
        lm, splits["harmful_train"], splits["harmless_train"], layers=range(0, 7), name="harmful"
    )


@pytest.fixture(scope="module")
def engine(lm):
    return engine_for(lm, max_num_seqs=64)


def test_a_mixed_conditional_batch_matches_the_torch_engine_row_by_row(
    lm, engine, splits, condition, happy_vector
):
    prompts = [p for pair in zip(splits["harmful_val"], splits["harmless_val"], strict=True) for p in pair]
    on = Steering(happy_vector, strength=0.6, layers="6-10", unit="norm", condition=condition)
    off_generated = Steering(
        happy_vector, strength=0.8, layers=(3, 4), unit="norm", positions="generated", condition=~condition
    )
    plain_add = Steering(happy_vector, strength=-0.4, layers=(12,), unit="norm")
    modes = [[on], [off_generated], [plain_add, on], [on, off_generated], []]
    rows = [modes[i % len(modes)] for i in range(len(prompts))]

    requests = [
        engine.request(
            lm.encode(lm.chat(p)),
            encode_steerings(lm, row),
            max_tokens=TOKENS,
            temperature=0.0,
            top_p=1.0,
            seed=None,
            stop=None,
        )
        for p, row in zip(prompts, rows, strict=True)
    ]
    outputs = engine.run(requests)
    eos = eos_token_ids(lm)
    # vLLM's raw ids end with the EOS that stopped them; the decode contract's token_ids leave it out
    got = [[t for t in o.outputs[0].token_ids if t not in eos] for o in outputs]
    want = lm.generate(prompts, row_steering=rows, max_new_tokens=TOKENS, details=True)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w.token_ids[:TOKENS], f"row {i} ({prompts[i]!r}): vLLM {g} vs torch {w.token_ids}"

    matches = condition.matches(lm, prompts)
    assert any(matches) and not all(matches)  # the batch really mixes firing and non-firing rows
    fired = engine.fired([o.request_id for o in outputs])
    for i, (o, row) in enumerate(zip(outputs, rows, strict=True)):
        expected = [matches[i] if s.condition is condition else not matches[i] for s in row if s.condition]
        assert fired.get(o.request_id, []) == expected or (not expected and o.request_id not in fired), i
    # the gate did something: a firing row differs from its ungated-off twin
    alone = lm.generate(prompts, engine="vllm", max_new_tokens=TOKENS, details=True)
    for i, row in enumerate(rows):
        if row == [on]:
            assert (got[i] != alone[i].token_ids) == matches[i], i


def test_the_torch_engines_refusals_hold(lm, condition, happy_vector):
    # a condition read at layer 6 cannot gate prompt positions edited at layer 5 (decided too late) ...
    late = steerlab.Condition(condition.direction, layer=6, threshold=condition.threshold)
    early = Steering(happy_vector, strength=0.5, layers=(5,), unit="norm", condition=late)
    with pytest.raises(SteeringError, match="too late"):
        encode_steerings(lm, [early])
    # ... but generated positions it can (decided before any generated token)
    assert encode_steerings(
        lm, [Steering(happy_vector, strength=0.5, layers=(5,), positions="generated", condition=late)]
    )
    wide = steerlab.Condition(condition.direction.repeat(2), layer=condition.layer, threshold=0.0)
    with pytest.raises(SteeringError, match="width"):
        encode_steerings(lm, [Steering(happy_vector, strength=0.5, layers=(8,), condition=wide)])
