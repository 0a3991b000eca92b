"""The vLLM backend's request encoding: pure, so it runs without vLLM installed."""

from __future__ import annotations

import base64

import pytest
import torch

from steerlab.backends.vllm.payload import (
    RequestSteering,
    WorkerTerm,
    decode,
    encode,
    from_plan,
    steering_key,
)
from steerlab.engine.plan import Plan, Term
from steerlab.errors import SteeringError


def _steering() -> RequestSteering:
    g = torch.Generator().manual_seed(1)
    return RequestSteering(
        8,
        {
            3: (WorkerTerm(torch.randn(8, generator=g), None),),
            5: (
                WorkerTerm(None, torch.randn(8, generator=g), a=0.0, b=2.5, kind=2, start=0),
                WorkerTerm(torch.randn(8, generator=g), None, kind=3, start=7),
            ),
        },
    )


def test_encode_decode_round_trip_is_exact_and_deterministic():
    steering = _steering()
    text = encode(steering)
    assert text == encode(steering)
    back = decode(text)
    assert back.width == 8 and sorted(back.layers) == [3, 5]
    for layer, terms in steering.layers.items():
        for mine, theirs in zip(terms, back.layers[layer], strict=True):
            assert (mine.a, mine.b, mine.kind, mine.start) == (theirs.a, theirs.b, theirs.kind, theirs.start)
            for x, y in ((mine.delta, theirs.delta), (mine.u, theirs.u)):
                assert (x is None) == (y is None)
                if x is not None:
                    assert torch.equal(x, y)
    assert steering_key(text) != steering_key(encode(RequestSteering(8, {3: steering.layers[3]})))


@pytest.mark.parametrize(
    "bad",
    ["not base64 !!", base64.b64encode(b"\xff" * 20).decode(), base64.b64encode(b"\x05\x00").decode(), 42],
)
def test_malformed_steerings_are_clear_errors(bad):
    with pytest.raises(SteeringError):
        decode(bad)


def test_from_plan_refuses_other_sites_and_several_rows():
    with pytest.raises(SteeringError, match="residual stream"):
        from_plan(Plan({(2, "attn"): [Term(delta=torch.ones(1, 1, 4))]}, rows=1))
    with pytest.raises(SteeringError, match="one row"):
        from_plan(Plan({(2, "resid"): [Term(delta=torch.ones(2, 1, 4))]}, rows=2))
    plan = Plan({(2, "resid"): [Term(delta=torch.ones(1, 1, 4))]}, rows=1)
    assert torch.equal(from_plan(plan).layers[2][0].delta, torch.ones(4))


def test_from_plan_refuses_conditional_steering():
    gated = Term(delta=torch.ones(1, 1, 4), gate=torch.tensor([0]))
    with pytest.raises(SteeringError, match="conditional"):
        from_plan(Plan({(2, "resid"): [gated]}, rows=1))


def test_without_vllm_the_engine_says_how_to_install_it():
    import importlib.util

    from steerlab.backends.vllm.engine import import_vllm
    from steerlab.errors import SteerlabError

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(SteerlabError, match=r"steerlab\[vllm\]"):
        import_vllm()
