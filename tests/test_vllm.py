"""The vLLM backend on the real embedded model (vllm-cpu): per-request steering inside one vLLM batch.

Runs in the ``.venv-vllm`` environment (``make vllm-setup``); skips where vLLM is not importable. The
vLLM engine is made once for the module (~20-50 s on CPU).
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default takes a large share of RAM

from steerlab.backends.vllm.engine import encode_steerings, engine_for
from steerlab.engine.spec import Steering
from steerlab.errors import SteeringError, SteerlabError
from steerlab.vector import SteeringVector

pytestmark = pytest.mark.slow

PROMPTS = [
    "Describe your morning routine.",
    "Tell me about the weather today.",
    "What did you eat for lunch?",
    "Describe a walk in the park.",
]
TOKENS = 8
LAYERS = (6, 7, 8, 9, 10)


@pytest.fixture(scope="module")
def engine(lm):
    return engine_for(lm, max_num_seqs=64)


@pytest.fixture(scope="module")
def mean_vector(lm):
    """The mean residual state on a few texts: a direction the model really uses (ablating it matters)."""
    with torch.no_grad():
        ids = torch.tensor([lm.encode(" ".join(PROMPTS))])
        states = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    return SteeringVector({i: states[i + 1][0, 1:].mean(0) for i in LAYERS}, model_id=lm.model_id)


@pytest.fixture(scope="module")
def modes(happy_vector, mean_vector):
    happy = dict(layers=LAYERS, unit="norm")
    return {
        "none": None,
        "plus": Steering(happy_vector, strength=0.6, **happy),
        "minus": Steering(happy_vector, strength=-0.6, **happy),
        "two": [Steering(happy_vector, strength=0.4, **happy), Steering(mean_vector, strength=-0.3, **happy)],
        "ablate": Steering(mean_vector, op="ablate", layers=LAYERS),
        "generated": Steering(happy_vector, strength=0.8, positions="generated", **happy),
        "clamp_from": Steering(happy_vector, op="clamp", strength=0.5, positions="from:6", **happy),
    }


def _plain_vllm(engine, lm, prompts):
    """Token ids from vLLM with steerlab's hooks taken off: the reference for unsteered rows."""
    engine.llm.collective_rpc("steerlab_remove")
    try:
        requests = [
            engine.request(
                lm.encode(lm.chat(p)),
                None,
                max_tokens=TOKENS,
                temperature=0.0,
                top_p=1.0,
                seed=None,
                stop=None,
            )
            for p in prompts
        ]
        return [list(out.outputs[0].token_ids) for out in engine.run(requests)]
    finally:
        engine.llm.collective_rpc("steerlab_install")


def test_mixed_batch_matches_plain_vllm_and_the_torch_engine(lm, engine, modes):
    names = list(modes)
    rows = [modes[name] for name in names for _ in PROMPTS]
    prompts = [p for _ in names for p in PROMPTS]
    got = lm.generate(prompts, engine="vllm", row_steering=rows, max_new_tokens=TOKENS, details=True)
    by_mode = {
        name: [g.token_ids for g in got[i * len(PROMPTS) : (i + 1) * len(PROMPTS)]]
        for i, name in enumerate(names)
    }
    # unsteered rows inside the mixed batch are exactly plain vLLM's
    assert by_mode["none"] == _plain_vllm(engine, lm, PROMPTS)
    for name in names:
        torch_out = lm.generate(
            PROMPTS, row_steering=[modes[name]] * len(PROMPTS), max_new_tokens=TOKENS, details=True
        )
        same = sum(a == b.token_ids[:TOKENS] for a, b in zip(by_mode[name], torch_out, strict=True))
        assert same >= 3, (
            f"{name}: only {same}/4 prompts match the torch engine: {by_mode[name]} vs {[t.token_ids for t in torch_out]}"
        )
    # the steerings do different things
    for name in ("plus", "minus", "two", "ablate", "generated", "clamp_from"):
        assert by_mode[name] != by_mode["none"], name
    assert by_mode["plus"] != by_mode["minus"]
    assert by_mode["two"] != by_mode["plus"]
    # 'generated' leaves the prompt alone: the first token (computed at the prompt's last position) is unsteered
    assert [t[0] for t in by_mode["generated"]] == [t[0] for t in by_mode["none"]]
    assert all(
        g.usage["prompt_tokens"] == len(lm.encode(lm.chat(p))) for g, p in zip(got, prompts, strict=True)
    )


def test_prefix_caching_never_shares_kv_across_steerings(lm, engine, happy_vector):
    long_prompt = "Here is a long story about a lighthouse keeper. " * 12 + "How does it end?"
    steer = Steering(happy_vector, strength=0.8, layers=LAYERS, unit="norm")

    def run(steering):
        return lm.generate(
            long_prompt, engine="vllm", steering=steering, max_new_tokens=TOKENS, details=True
        ).token_ids

    engine.llm.reset_prefix_cache()
    solo_plain = run(None)
    engine.llm.reset_prefix_cache()
    solo_steered = run(steer)
    assert solo_plain != solo_steered
    for first, second in ((None, steer), (steer, None)):
        engine.llm.reset_prefix_cache()
        a, b = run(first), run(second)
        assert (a, b) == ((solo_plain, solo_steered) if first is None else (solo_steered, solo_plain))


def test_decode_contract_stop_strings_and_finish_reasons(lm, engine):
    torch_out = lm.generate(PROMPTS[0], max_new_tokens=24, details=True)
    cut = torch_out.text.split()[2]
    stop = [cut]
    via_vllm = lm.generate(PROMPTS[0], engine="vllm", max_new_tokens=24, stop=stop, details=True)
    via_torch = lm.generate(PROMPTS[0], max_new_tokens=24, stop=stop, details=True)
    assert via_vllm.finish_reason == via_torch.finish_reason == "stop"
    assert via_vllm.text == via_torch.text and cut not in via_vllm.text
    short = lm.generate(PROMPTS[0], engine="vllm", max_new_tokens=3, details=True)
    assert short.finish_reason == "length" and short.completion_tokens == 3
    streamed = []
    text = lm.generate(
        PROMPTS[0], engine="vllm", max_new_tokens=10, on_token=lambda r, t, d: streamed.append(d)
    )
    assert "".join(streamed) == text


def test_refuses_what_it_cannot_express(lm, engine, happy_vector):
    with pytest.raises(SteeringError, match="residual stream"):
        encode_steerings(lm, [Steering(happy_vector, strength=0.5, layers=(3,), site="mlp")])
    other = SteeringVector({3: torch.ones(lm.hidden_size + 1)}, model_id=lm.model_id)
    with pytest.raises(SteerlabError, match="width"):
        lm.generate(PROMPTS[0], engine="vllm", steering=Steering(other, strength=1.0, unit="raw"))
    with pytest.raises(SteeringError, match="row_steering"):
        lm.generate(PROMPTS, engine="vllm", row_steering=[None])
