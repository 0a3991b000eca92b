"""The vLLM backend's request encoding: pure, so it runs without vLLM installed."""

from __future__ import annotations

import base64
import json

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
from steerlab.engine.condition import Condition
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


def _conditional_plan() -> tuple[Plan, Condition, Condition]:
    g = torch.Generator().manual_seed(2)
    first = Condition(torch.randn(4, generator=g), layer=1, threshold=0.25, skip=3)
    second = Condition(torch.randn(4, generator=g), layer=2, threshold=-0.5, comparison="less")
    rule = first & ~second
    gated = Term(delta=torch.ones(1, 1, 4), gate=torch.tensor([1]), conds=(1,))
    other = Term(delta=2 * torch.ones(1, 1, 4), gate=torch.tensor([0]), conds=(0,))
    plan = Plan(
        {(2, "resid"): [gated, other], (3, "resid"): [Term(delta=torch.ones(1, 1, 4))]},
        rows=1,
        conditions=[first, rule],
        leaves=[first, second],
        row_conditions=[[1, 0]],
    )
    return plan, first, second


def test_conditions_travel_as_leaves_and_rules_that_decide_alike():
    plan, first, second = _conditional_plan()
    back = decode(encode(from_plan(plan)))
    assert [t.gate for t in back.layers[2]] == [1, 0] and back.layers[3][0].gate == -1
    assert back.reports == (1, 0)
    for mine, theirs in zip((first, second), back.leaves, strict=True):
        assert torch.equal(mine.direction, theirs.direction)
        assert (mine.layer, mine.threshold, mine.comparison, mine.skip) == (
            theirs.layer, theirs.threshold, theirs.comparison, theirs.skip,
        )  # fmt: skip
    assert back.conditions[0] is back.leaves[0]
    # the rebuilt rule decides like the original for every combination of leaf decisions
    for a in (False, True):
        for b in (False, True):
            want = plan.conditions[1].evaluate({id(first): torch.tensor([a]), id(second): torch.tensor([b])})
            got = back.conditions[1].evaluate(
                {id(back.leaves[0]): torch.tensor([a]), id(back.leaves[1]): torch.tensor([b])}
            )
            assert bool(want) == bool(got)


def test_malformed_conditions_are_clear_errors():
    plan, *_ = _conditional_plan()
    text = encode(from_plan(plan))
    raw = base64.b64decode(text)
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])

    def with_header(**changes) -> str:
        new = json.dumps({**header, **changes}).encode()
        return base64.b64encode(len(new).to_bytes(8, "little") + new + raw[8 + size :]).decode()

    assert decode(with_header()).reports == (1, 0)
    for changes in (
        {"conditions": [0, ["xor", [0, 1]]]},
        {"conditions": [0, ["not", [0, 1]]]},
        {"conditions": [0, 7]},
        {"reports": [5]},
        {"leaves": [[1, float("nan"), "greater", 0], header["leaves"][1]]},
        {"leaves": [[1, 0.5, "sideways", 0], header["leaves"][1]]},
        {"terms": [[*t[:8], 9] for t in header["terms"]]},
    ):
        with pytest.raises(SteeringError):
            decode(with_header(**changes))


def test_without_vllm_the_engine_says_how_to_install_it():
    import importlib.util

    from steerlab.backends.vllm.engine import import_vllm
    from steerlab.errors import SteerlabError

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(SteerlabError, match=r"steerlab\[vllm\]"):
        import_vllm()
