"""``steerlab serve --engine vllm`` (in-process app, real HTTP, the official openai client): the same API,
registry and steering, with vLLM doing the batching. Runs in ``.venv-vllm``; skips without vLLM."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")
pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from served import PROMPTS, openai_client, together_and_alone  # noqa: E402
from served import chat as served_chat  # noqa: E402
from steerlab.engine import Condition, Steering  # noqa: E402
from steerlab.server import ServerConfig, ThreadedServer, create_app  # noqa: E402

pytestmark = pytest.mark.slow
TOKENS = 10
MIXES = [
    None,
    [{"vector": "happy", "strength": 0.6, "layers": "6-10"}],
    [{"vector": "happy", "strength": -0.6, "layers": "6-10"}],
    [
        {"vector": "happy", "strength": 0.8, "layers": [8], "positions": "generated"},
        {"vector": "happy", "op": "ablate", "layers": "2-5"},
    ],
]


@pytest.fixture(scope="module")
def served(lm, happy_vector):
    app = create_app(lm, config=ServerConfig(max_tokens=32, max_batch=32, engine="vllm"))
    app.state.steerlab.registry.add("happy", happy_vector)
    # conditions whose decision does not depend on the prompt: cos > -2 always holds, cos > 2 never does
    for name, threshold in (("always", -2.0), ("never", 2.0)):
        cond = Condition(happy_vector.directions[4], layer=4, threshold=threshold, model_id=lm.model_id)
        app.state.steerlab.registry.conditions.add(name, cond)
    with ThreadedServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def client(served):
    return openai_client(served.url)


def chat(client, lm, prompt, steering=None):
    return served_chat(client, lm.model_id, prompt, steering, tokens=TOKENS)


def test_a_steered_chat_completion_streams_the_backend_answer(lm, happy_vector, client):
    stream = client.chat.completions.create(
        model=lm.model_id,
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=TOKENS,
        temperature=0,
        stream=True,
        extra_body={"steering": MIXES[1]},
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 3
    whole = "".join(pieces)
    assert whole == chat(client, lm, PROMPTS[0], MIXES[1])
    assert whole != chat(client, lm, PROMPTS[0])
    library = lm.generate(
        PROMPTS[0],
        engine="vllm",
        max_new_tokens=TOKENS,
        steering=Steering(happy_vector, strength=0.6, layers="6-10"),
    )
    assert whole == library


def test_32_concurrent_mixed_clients_each_get_their_solo_answer(lm, client):
    requests = [(p, m) for p in PROMPTS for m in MIXES]
    solo, got, errors = together_and_alone(lambda p, m: chat(client, lm, p, m), requests)
    assert not errors, errors[:3]
    assert got == solo
    assert len({s for s in solo}) > len(PROMPTS)  # steerings changed answers


def test_a_conditional_or_unsupported_steering_is_a_clear_400(lm, client):
    with pytest.raises(openai.BadRequestError, match="residual stream"):
        chat(client, lm, PROMPTS[0], [{"vector": "happy", "strength": 0.5, "layers": [3], "site": "mlp"}])


def test_a_conditional_steering_is_gated_in_vllm_and_reported(lm, client):
    base = {"vector": "happy", "strength": 0.6, "layers": "6-10"}
    plain = chat(client, lm, PROMPTS[1])
    steered = chat(client, lm, PROMPTS[1], [base])
    for name, fired, text in (
        ("always", True, steered),
        ("never", False, plain),
        ({"not": "never"}, True, steered),
    ):
        out = client.chat.completions.create(
            model=lm.model_id,
            messages=[{"role": "user", "content": PROMPTS[1]}],
            max_tokens=TOKENS,
            temperature=0,
            extra_body={"steering": [{**base, "condition": name}]},
        )
        assert out.choices[0].message.content == text, name
        report = out.model_extra["steering_report"]
        assert [c["fired"] for r in report for c in r["conditions"]] == [fired], name
