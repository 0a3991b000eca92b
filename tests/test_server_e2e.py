"""End to end on the real embedded model, through the official ``openai`` client over loopback HTTP:
unsteered output is the model's own, steering by name matches the library, uploads work, and 32
concurrent clients with mixed steerings share batches yet each gets exactly what it gets alone."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")
pytest.importorskip("httpx")

import httpx

from served import PROMPTS, openai_client, together_and_alone
from served import chat as served_chat
from steerlab.engine import Steering
from steerlab.server import ServerConfig, ThreadedServer, create_app

pytestmark = pytest.mark.slow

TOKENS = 10
MIXES = [
    None,
    [{"vector": "happy", "strength": 0.08, "layers": "8-20"}],
    [{"vector": "happy", "strength": -0.08, "layers": "8-20"}],
    [
        {"vector": "happy", "strength": 0.6, "layers": [12], "positions": "generated"},
        {"vector": "happy", "op": "ablate", "layers": "2-5"},
    ],
]


@pytest.fixture(scope="module")
def served(lm, happy_vector):
    app = create_app(lm, config=ServerConfig(max_tokens=32, max_batch=32))
    app.state.steerlab.registry.add("happy", happy_vector)
    with ThreadedServer(app) as server:
        yield server, app.state.steerlab


@pytest.fixture(scope="module")
def client(served):
    return openai_client(served[0].url)


def chat(client, lm, prompt, steering=None, **kw):
    return served_chat(client, lm.model_id, prompt, steering, tokens=TOKENS, **kw)


def test_unsteered_requests_are_the_unsteered_model(lm, client):
    assert chat(client, lm, PROMPTS[0]) == lm.generate(PROMPTS[0], max_new_tokens=TOKENS)
    raw = client.completions.create(
        model=lm.model_id, prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert raw.choices[0].text == lm.generate("The capital of France is", chat=False, max_new_tokens=6)


def test_streaming_matches_the_whole_answer(lm, client):
    stream = client.chat.completions.create(
        model=lm.model_id,
        messages=[{"role": "user", "content": PROMPTS[1]}],
        max_tokens=TOKENS,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 3
    assert "".join(pieces) == chat(client, lm, PROMPTS[1])


def test_a_stop_string_spanning_tokens_streams_exactly_the_returned_text(lm, client):
    prompt, stop = "Write the days of the week, separated by commas.", "Tuesday\nWed"
    library = lm.generate(prompt, max_new_tokens=30, stop=[stop])
    kw = dict(
        model="steerlab",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=30,
        temperature=0,
        stop=[stop],
    )
    whole = client.chat.completions.create(**kw).choices[0].message.content
    pieces = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(stream=True, **kw)
        if c.choices
    ]
    assert whole == library and "".join(pieces) == whole


def test_the_same_seed_samples_the_same_text_as_the_library(lm, client):
    out = client.chat.completions.create(
        model=lm.model_id,
        messages=[{"role": "user", "content": PROMPTS[3]}],
        max_tokens=TOKENS,
        temperature=1.0,
        seed=2024,
    )
    assert out.choices[0].message.content == lm.generate(
        PROMPTS[3], max_new_tokens=TOKENS, temperature=1.0, seed=2024
    )


def test_steering_by_name_is_the_library_steering(lm, happy_vector, client):
    served = chat(client, lm, PROMPTS[0], MIXES[1])
    library = lm.generate(
        PROMPTS[0], max_new_tokens=TOKENS, steering=Steering(happy_vector, strength=0.08, layers="8-20")
    )
    assert served == library
    assert served != lm.generate(PROMPTS[0], max_new_tokens=TOKENS)


def test_uploaded_vectors_steer(lm, happy_vector, served, client, tmp_path):
    from steerlab.interop.export import export_gguf

    server = served[0]
    path = happy_vector.save(tmp_path / "joy.safetensors")
    with open(path, "rb") as fh:
        up = httpx.post(
            server.url + "/v1/steering/vectors", files={"file": ("joy.safetensors", fh)}, timeout=60
        )
    assert up.status_code == 201, up.text
    name = up.json()["id"]
    assert chat(client, lm, PROMPTS[0], [{**MIXES[1][0], "vector": name}]) == chat(
        client, lm, PROMPTS[0], MIXES[1]
    )

    gguf = tmp_path / "joy.gguf"
    export_gguf(happy_vector, gguf, strength=0.08, layers="8-20", lm=lm)
    up = httpx.post(
        server.url + "/v1/steering/vectors?name=joy-cvec",
        content=gguf.read_bytes(),
        headers={"content-type": "application/octet-stream"},
        timeout=60,
    )
    assert up.status_code == 201, up.text
    assert up.json()["layers"] == list(range(8, 21))
    steered = chat(client, lm, PROMPTS[0], [{"vector": "joy-cvec", "strength": 1.0, "unit": "raw"}])
    assert steered != chat(client, lm, PROMPTS[0])


def test_32_concurrent_clients_with_mixed_steering_each_get_their_solo_answer(lm, served, client):
    requests = [(p, m) for p in PROMPTS for m in MIXES]
    assert len(requests) == 32
    solo, results, errors = together_and_alone(lambda p, m: chat(client, lm, p, m), requests)
    assert len(set(solo)) > len(PROMPTS)  # the steerings really change the answers
    assert not errors, errors[:3]
    assert served[1].metrics.gauges["batch_size_max"] >= 8  # they really shared batches
    mismatches = [(requests[i], solo[i], results[i]) for i in range(len(requests)) if results[i] != solo[i]]
    assert not mismatches, mismatches[:3]
