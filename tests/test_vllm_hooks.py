"""The vLLM worker hooks on a toy model shaped like vLLM's (flat tokens, layers returning (hidden,
residual), a forward context with ``query_start_loc``): runs without vLLM.

Checks what the real-model tests cannot force: a condition decided over a prompt prefilled in several
chunks equals the one-pass decision (and the torch engine's pooling), gated edits wait for the decision,
and a steering the worker cannot use leaves its request unsteered instead of failing the batch.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from steerlab.backends.vllm.hooks import LiveRequest, steerer_for
from steerlab.backends.vllm.payload import RequestSteering, WorkerTerm, encode
from steerlab.engine.condition import Condition, pooled_prompt_mean

W = 8
PROMPT = 10


class Layer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(W, W)

    def forward(self, positions, hidden, residual):
        residual = hidden if residual is None else hidden + residual
        return torch.tanh(self.lin(residual)), residual


class Toy(torch.nn.Module):
    """Every token is computed on its own (no attention), so chunking changes nothing but timing."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList(Layer() for _ in range(4))
        self.config = SimpleNamespace(hidden_size=W)

    def forward(self, x, positions):
        h, r = x, None
        for layer in self.model.layers:
            h, r = layer(positions, h, r)
        return h + r


class Context:
    """Stands in for vLLM's forward context: where each request's tokens start in the flat batch."""

    def __init__(self) -> None:
        self.attn_metadata = None

    def run(self, model, x, positions, starts):
        self.attn_metadata = {"layer": SimpleNamespace(query_start_loc=torch.tensor(starts))}
        return model(x, positions)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float rounding (a chunk's matmul may round differently from the whole prompt's)."""
    return torch.allclose(a, b, atol=1e-5)


def _stream_at(model, x, layer):
    """The residual stream after block ``layer`` (hidden + residual), unsteered."""
    out = {}
    handle = model.model.layers[layer].register_forward_hook(lambda m, a, o: out.update(h=o[0] + o[1]))
    model(x, torch.arange(x.shape[0]))
    handle.remove()
    return out["h"]


@pytest.fixture
@torch.no_grad()
def setup():
    model, ctx = Toy(), Context()
    steerer = steerer_for(model, lambda: ctx)
    x = torch.randn(PROMPT, W, generator=torch.Generator().manual_seed(1))
    states = _stream_at(model, x, 1)
    direction = torch.randn(W, generator=torch.Generator().manual_seed(2))
    skip = 2
    real = (torch.arange(PROMPT) >= skip).unsqueeze(0)
    score = float(
        Condition(direction, 1, 0.0, skip=skip).scores(pooled_prompt_mean(states.unsqueeze(0), real))
    )
    yield model, ctx, steerer, x, direction, skip, score
    steerer.remove()


def _steering(direction, threshold, skip):
    leaf = Condition(direction, layer=1, threshold=threshold, skip=skip)
    term = WorkerTerm(torch.full((W,), 0.5), None, gate=0)
    return RequestSteering(W, {2: (term,)}, (leaf,), (leaf,), (0,))


@pytest.mark.parametrize("fires", [True, False])
@pytest.mark.parametrize("chunks", [[PROMPT], [4, 3, 3]])
@torch.no_grad()
def test_chunked_prefill_decides_like_one_pass(setup, fires, chunks):
    model, ctx, steerer, x, direction, skip, score = setup
    plain = model(x, torch.arange(PROMPT))
    plain_step = model(x[:1], torch.tensor([PROMPT]))
    live = LiveRequest(_steering(direction, score - 0.01 if fires else score + 0.01, skip), PROMPT)
    steerer.source = lambda: [(0, live)]
    outs, start = [], 0
    for n in chunks:
        outs.append(ctx.run(model, x[start : start + n], torch.arange(start, start + n), [0, n]))
        start += n
    assert live.fired() == [fires]
    assert live.partial == (len(chunks) > 1)
    last = outs[-1]
    # the chunk that completes the prompt is steered exactly when the condition fired ...
    assert _same(last, plain[PROMPT - chunks[-1] :]) != fires
    # ... earlier chunks ran before the decision (the documented limit of chunked prefill)
    for out, lo in zip(outs[:-1], [sum(chunks[:i]) for i in range(len(chunks) - 1)], strict=True):
        assert _same(out, plain[lo : lo + out.shape[0]])
    # a decode step after the prompt follows the decision
    step = ctx.run(model, x[:1], torch.tensor([PROMPT]), [0, 1])
    assert _same(step, plain_step) != fires


def test_a_steering_the_worker_cannot_use_leaves_its_request_unsteered(setup):
    steerer = setup[2]
    wrong = encode(RequestSteering(W + 1, {2: (WorkerTerm(torch.ones(W + 1), None),)}))
    assert steerer.decoder.live(wrong, PROMPT, "r1") is None
    assert steerer.decoder.live("garbage!", PROMPT, "r2") is None
    good = steerer.decoder.live(encode(RequestSteering(W, {2: (WorkerTerm(torch.ones(W), None),)})), 3, "r3")
    assert good is not None and good.fired() == []
