"""The HTTP API on a tiny random model, over real loopback HTTP: OpenAI compatibility (official client),
steering by name, the registry, projections, auth, limits, and OpenAI-style errors with the right codes."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("openai")
pytest.importorskip("httpx")

import httpx
import openai

import steerlab
from steerlab.engine import Steering
from steerlab.server import ServerConfig, ThreadedServer, create_app
from steerlab.vector import SteeringVector
from tiny_models import HIDDEN, LAYERS, build, one_thread

MAX_TOKENS = 24


def tiny_lm():
    model, tokenizer = build("llama")
    return steerlab.from_model(model, tokenizer, model_id="tiny-llama")


def joy_vector(lm) -> SteeringVector:
    g = torch.Generator().manual_seed(11)
    return SteeringVector(
        directions={i: torch.randn(HIDDEN, generator=g) for i in range(LAYERS)},
        model_id=lm.model_id,
        norms={i: 4.0 for i in range(LAYERS)},
        method="random",
    )


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def served():
    lm = tiny_lm()
    config = ServerConfig(max_tokens=MAX_TOKENS, max_body_bytes=64 * 1024, max_upload_bytes=100 * 1024)
    app = create_app(lm, config=config)
    app.state.steerlab.registry.add("joy", joy_vector(lm))
    with ThreadedServer(app) as server:
        yield lm, server, app.state.steerlab


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[1].url + "/v1", api_key="unused", max_retries=0, timeout=60)


def post(server, path, **kw):
    return httpx.post(server.url + path, timeout=60, **kw)


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


# ------------------------------------------------------------------------ OpenAI client
def test_models_lists_the_served_model(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny-llama"]


def test_chat_greedy_equals_the_library_and_reports_usage(served, client):
    lm = served[0]
    out = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hello"}], max_tokens=12, temperature=0
    )
    ref = lm.generate("hello", max_new_tokens=12, details=True)
    assert out.choices[0].message.content == ref.text
    assert out.choices[0].finish_reason == ref.finish_reason
    assert out.usage.prompt_tokens == ref.prompt_tokens
    assert out.usage.completion_tokens == len(ref.token_ids)


def test_streaming_sends_the_same_text_in_pieces(client):
    kw = dict(
        model="tiny-llama", messages=[{"role": "user", "content": "stream me"}], max_tokens=16, temperature=0
    )
    whole = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].usage.completion_tokens == 16


def test_completions_with_several_prompts_and_echo(served, client):
    lm = served[0]
    out = client.completions.create(
        model="tiny-llama", prompt=["one", "two two"], max_tokens=6, temperature=0, echo=True
    )
    assert [c.index for c in out.choices] == [0, 1]
    for choice, prompt in zip(out.choices, ["one", "two two"], strict=True):
        assert choice.text == prompt + lm.generate(prompt, chat=False, max_new_tokens=6)


def test_steering_by_name_matches_the_library(served, client):
    lm, _, state = served
    vec = state.registry.get("joy").item
    spec = {"vector": "joy", "strength": 0.7, "layers": "0-1", "positions": "generated"}
    out = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=12,
        temperature=0,
        extra_body={"steering": [spec]},
    )
    ref = lm.generate(
        "hello", max_new_tokens=12, steering=Steering(vec, strength=0.7, layers="0-1", positions="generated")
    )
    plain = lm.generate("hello", max_new_tokens=12)
    assert out.choices[0].message.content == ref
    assert ref != plain


def test_stop_strings_cut_the_text(served, client):
    lm = served[0]
    full = lm.generate("stop test", chat=False, max_new_tokens=20)
    stop = full[5:7]
    out = client.completions.create(
        model="tiny-llama", prompt="stop test", max_tokens=20, temperature=0, stop=[stop]
    )
    assert out.choices[0].text == full[: full.find(stop)]
    assert out.choices[0].finish_reason == "stop"


def test_seeded_sampling_repeats(client):
    kw = dict(model="tiny-llama", prompt="dice", max_tokens=10, temperature=1.0, seed=42)
    assert client.completions.create(**kw).choices[0].text == client.completions.create(**kw).choices[0].text


def test_streamed_text_equals_returned_text_when_a_stop_spans_tokens(served, client):
    lm = served[0]
    full = lm.generate("stop test two", chat=False, max_new_tokens=20)
    stop = next(
        full[i : i + 3]
        for i in range(len(full) // 3, len(full) - 3)
        if full[i : i + 3].isascii() and full[i : i + 3].isprintable() and full.find(full[i : i + 3]) == i
    )
    kw = dict(model="tiny-llama", prompt="stop test two", max_tokens=20, temperature=0, stop=[stop])
    whole = client.completions.create(**kw).choices[0]
    pieces = [c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices]
    assert whole.text == full[: full.find(stop)] and whole.finish_reason == "stop"
    assert "".join(pieces) == whole.text


def test_the_same_seed_samples_what_the_library_samples(served, client):
    lm = served[0]
    chat = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "roll"}],
        max_tokens=12,
        temperature=1.0,
        seed=1234,
    )
    assert chat.choices[0].message.content == lm.generate(
        "roll", max_new_tokens=12, temperature=1.0, seed=1234
    )
    raw = client.completions.create(
        model="tiny-llama", prompt=["dice", "coin"], max_tokens=12, temperature=1.0, top_p=0.9, seed=77
    )
    library = lm.generate(
        ["dice", "coin"], chat=False, max_new_tokens=12, temperature=1.0, top_p=0.9, seed=77
    )
    assert [c.text for c in raw.choices] == library


def test_the_largest_seed_wraps_around_for_the_next_choice(client):
    kw = dict(model="tiny-llama", max_tokens=10, temperature=1.0)
    pair = client.completions.create(prompt=["dice", "coin"], seed=2**64 - 1, **kw)
    assert [c.index for c in pair.choices] == [0, 1]
    assert pair.choices[1].text == client.completions.create(prompt="coin", seed=0, **kw).choices[0].text


def test_steerlab_is_an_alias_of_the_served_model(client):
    out = client.completions.create(model="steerlab", prompt="alias", max_tokens=3, temperature=0)
    assert (
        out.model == "tiny-llama"
        and out.choices[0].text
        == client.completions.create(model="tiny-llama", prompt="alias", max_tokens=3, temperature=0)
        .choices[0]
        .text
    )
    assert client.models.retrieve("steerlab").id == "tiny-llama"


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (
            {"messages": [{"role": "user", "content": "x"}], "steering": [{"vector": "nope"}]},
            404,
            "steering[0].vector",
        ),
        ({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": MAX_TOKENS + 1}, 400, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, 400, "logprobs"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": "x"}], "steering": [{"vector": "joy", "op": "melt"}]},
            400,
            None,
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "steering": [{"vector": "joy", "strength": 1, "layers": "99"}],
            },
            400,
            "steering",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "steering": [{"vector": "joy", "positions": "later"}],
            },
            400,
            "steering[0]",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": -1}, 400, "temperature"),
    ],
)
def test_bad_requests_get_openai_errors(served, body, status, param):
    response = post(served[1], "/v1/chat/completions", json={"max_tokens": 2, "temperature": 0, **body})
    assert response.status_code == status, response.text
    error = error_of(response)
    if param is not None:
        assert error["param"] == param


def test_non_finite_strength_is_a_400(served):
    raw = '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "steering": [{"vector": "joy", "strength": NaN}]}'
    response = post(
        served[1], "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


def test_malformed_json_unknown_route_wrong_method_and_big_body(served):
    server = served[1]
    bad = post(server, "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "JSON" in error_of(bad)["message"]
    missing = httpx.get(server.url + "/v1/nothing")
    assert missing.status_code == 404 and error_of(missing)
    wrong = httpx.get(server.url + "/v1/chat/completions")
    assert wrong.status_code == 405 and error_of(wrong)
    big = post(server, "/v1/completions", json={"prompt": "x" * 70_000})
    assert big.status_code == 413 and error_of(big)


def test_the_client_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="tiny-llama",
            messages=[{"role": "user", "content": "x"}],
            max_tokens=2,
            extra_body={"steering": [{"vector": "ghost", "strength": 1}]},
        )
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny-llama", prompt="x", max_tokens=MAX_TOKENS * 10)


# ----------------------------------------------------------------------------- registry
def test_upload_list_use_and_delete(served, tmp_path):
    lm, server, _ = served
    path = joy_vector(lm).save(tmp_path / "Calm Mood.safetensors")
    with open(path, "rb") as fh:
        up = post(server, "/v1/steering/vectors", files={"file": ("../../Calm Mood.safetensors", fh)})
    assert up.status_code == 201, up.text
    name = up.json()["id"]
    assert name == "calm-mood" and "/" not in name
    listed = [v["id"] for v in httpx.get(server.url + "/v1/steering/vectors").json()["data"]]
    assert "calm-mood" in listed and "joy" in listed
    body = {"prompt": "x", "max_tokens": 3, "temperature": 0, "steering": [{"vector": name, "strength": 0.5}]}
    assert post(server, "/v1/completions", json=body).status_code == 200
    assert httpx.delete(server.url + f"/v1/steering/vectors/{name}").json()["deleted"] is True
    assert httpx.get(server.url + f"/v1/steering/vectors/{name}").status_code == 404
    assert httpx.delete(server.url + f"/v1/steering/vectors/{name}").status_code == 404
    assert post(server, "/v1/completions", json=body).status_code == 404


def test_gguf_upload_as_raw_body(served, tmp_path):
    from steerlab.interop.gguf_cvec import write_control_vector

    path = tmp_path / "v.gguf"
    write_control_vector(path, {1: torch.randn(HIDDEN).numpy(), 2: torch.randn(HIDDEN).numpy()}, "llama")
    up = post(
        served[1],
        "/v1/steering/vectors?name=ctrl",
        content=path.read_bytes(),
        headers={"content-type": "application/octet-stream"},
    )
    assert up.status_code == 201, up.text
    assert up.json()["id"] == "ctrl" and up.json()["layers"] == [1, 2]


def test_bad_uploads_are_refused(served):
    server = served[1]
    junk = post(server, "/v1/steering/vectors", files={"file": ("x.safetensors", b"\x00" * 64)})
    assert junk.status_code == 400 and error_of(junk)["param"] == "file"
    pickle = post(server, "/v1/steering/vectors", files={"file": ("x.pt", b"\x80\x04\x95" + b"\x00" * 64)})
    assert pickle.status_code == 400
    huge = post(server, "/v1/steering/vectors", files={"file": ("x.gguf", b"GGUF" + b"\x00" * 300_000)})
    assert huge.status_code == 413
    text = post(server, "/v1/steering/vectors", content=b"hello", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    nofile = post(server, "/v1/steering/vectors", files={"other": ("x", b"1")})
    assert nofile.status_code == 400


# -------------------------------------------------------------------------- projections
def test_projections_cover_the_text_tokens(served):
    lm, server, state = served
    response = post(
        server,
        "/v1/steering/projections",
        json={"vector": "joy", "text": "héllo wörld", "prompt": "say hi", "layer": 1},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "".join(t["text"] for t in body["tokens"]) == "héllo wörld"
    from steerlab.reader import read

    full = lm.chat("say hi") + "héllo wörld"
    ids = lm.encode(full)
    acts = read(lm, [full], [1], position=tuple(range(len(ids))))
    expected = acts.acts[1][0, body["prompt_tokens"] :] @ state.registry.get("joy").item.unit(1)
    got = torch.tensor([t["projection"] for t in body["tokens"]])
    assert torch.allclose(got, expected, atol=1e-3)
    assert (
        post(server, "/v1/steering/projections", json={"vector": "joy", "text": "x", "layer": 77}).status_code
        == 400
    )
    assert post(server, "/v1/steering/projections", json={"vector": "ghost", "text": "x"}).status_code == 404


# ------------------------------------------------------------------------ health, auth
def test_health_and_metrics(served):
    server = served[1]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny-llama" and "queue_depth" in health
    metrics = httpx.get(server.url + "/metrics").text
    assert "steerlab_generated_tokens_total" in metrics and "steerlab_tokens_per_second" in metrics


def test_api_key_guards_every_endpoint_but_the_page_shell():
    lm = tiny_lm()
    app = create_app(lm, config=ServerConfig(api_key="s3cret", max_tokens=4))
    with ThreadedServer(app) as server:
        for method, path in [
            ("GET", "/v1/models"),
            ("GET", "/health"),
            ("GET", "/metrics"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/steering/vectors"),
            ("GET", "/nowhere"),
        ]:
            r = httpx.request(method, server.url + path, json={})
            assert r.status_code == 401, path
            assert error_of(r)["code"] == "invalid_api_key"
        wrong = httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        good = openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret", max_retries=0)
        assert good.models.list().data[0].id == "tiny-llama"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="bad", max_retries=0).models.list()
        assert httpx.get(server.url + "/").status_code == 200


def test_full_queue_answers_429_over_http():
    lm = tiny_lm()
    app = create_app(lm, config=ServerConfig(max_batch=1, max_queue=1, max_tokens=4))
    state = app.state.steerlab
    with ThreadedServer(app) as server:
        gate = threading.Event()
        state.scheduler.call(lambda: gate.wait(20))
        results = {}
        first = threading.Thread(
            target=lambda: results.setdefault(
                "a", post(server, "/v1/completions", json={"prompt": "a", "max_tokens": 2})
            )
        )
        first.start()
        for _ in range(200):
            if state.scheduler.stats()["queue_depth"] == 1:
                break
            threading.Event().wait(0.02)
        second = post(server, "/v1/completions", json={"prompt": "b", "max_tokens": 2})
        gate.set()
        first.join(30)
        assert second.status_code == 429 and error_of(second)["type"] == "rate_limit_error"
        assert results["a"].status_code == 200


def test_streamed_errors_before_the_first_byte_are_plain_json(served):
    r = post(
        served[1],
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "steering": [{"vector": "nope"}],
        },
    )
    assert r.status_code == 404 and json.loads(r.text)["error"]["code"] == "vector_not_found"


def test_a_client_that_hangs_up_mid_stream_frees_its_row():
    lm = tiny_lm()
    lm.model.register_forward_pre_hook(lambda module, args: time.sleep(0.02))  # ~20 ms per decode step
    app = create_app(lm, config=ServerConfig(max_tokens=200))
    state = app.state.steerlab
    with ThreadedServer(app) as server:
        body = {"prompt": "go", "max_tokens": 200, "temperature": 0, "stream": True}
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as response:
            assert response.status_code == 200
            next(response.iter_lines())
        gone = time.monotonic()
        while state.metrics.counters["requests_cancelled_total"] == 0 and time.monotonic() < gone + 10:
            time.sleep(0.01)
        assert time.monotonic() - gone < 1.0
        assert state.metrics.counters["requests_cancelled_total"] == 1
        assert state.metrics.counters["generated_tokens_total"] < 150
        assert state.scheduler.stats()["running"] == 0


def test_a_non_streaming_client_that_hangs_up_frees_its_row_within_a_second():
    lm = tiny_lm()
    lm.model.register_forward_pre_hook(lambda module, args: time.sleep(0.03))  # ~30 ms per decode step
    app = create_app(lm, config=ServerConfig(max_tokens=100))
    state = app.state.steerlab
    with ThreadedServer(app) as server:
        body = {"prompt": "go", "max_tokens": 100, "temperature": 0}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/completions", json=body, timeout=0.5)
        gone = time.monotonic()
        while state.scheduler.stats()["running"] and time.monotonic() < gone + 10:
            time.sleep(0.01)
        freed = time.monotonic() - gone
        assert state.scheduler.stats()["running"] == 0
        assert state.metrics.counters["requests_cancelled_total"] == 1
        assert freed < 1.0, f"the row was freed {freed:.2f} s after the client left"
        assert state.metrics.counters["generated_tokens_total"] < 60


def test_a_bad_request_in_flight_leaves_every_other_request_unchanged():
    lm = tiny_lm()
    lm.model.register_forward_pre_hook(lambda module, args: time.sleep(0.005))
    app = create_app(lm, config=ServerConfig(max_tokens=MAX_TOKENS))
    state = app.state.steerlab
    good = joy_vector(lm)
    state.registry.add("joy", good)
    for name, defaults in (("broken-strength", {"strength": "abc"}), ("broken-layers", {"layers": 5})):
        state.registry.add(
            name,
            SteeringVector(
                directions=good.directions, model_id=lm.model_id, norms=good.norms, defaults=defaults
            ),
        )
    innocent = [
        {"prompt": p, "max_tokens": MAX_TOKENS, "temperature": 0, "steering": s}
        for p in ("one", "two two", "three")
        for s in (None, [{"vector": "joy", "strength": 0.5, "layers": "0-1"}])
    ]
    bad = [
        {"prompt": "one", "max_tokens": MAX_TOKENS, "temperature": 0, "steering": [{"vector": name}]}
        for name in ("broken-strength", "broken-layers")
    ]
    with ThreadedServer(app) as server:
        solo = [post(server, "/v1/completions", json=b).json()["choices"][0]["text"] for b in innocent]
        results: dict[int, httpx.Response] = {}

        def send(i: int, body: dict) -> None:
            results[i] = post(server, "/v1/completions", json=body)

        threads = [threading.Thread(target=send, args=(i, b)) for i, b in enumerate(innocent)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while state.scheduler.stats()["running"] < len(innocent) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert state.scheduler.stats()["running"] == len(innocent)  # all in flight, sharing one batch
        failed = [post(server, "/v1/completions", json=b) for b in bad]
        for t in threads:
            t.join(60)
    for response in failed:
        assert 400 <= response.status_code < 600 and error_of(response)["message"]
        assert (
            "steering" in (error_of(response)["param"] or "") or "strength" in error_of(response)["message"]
        )
    assert [results[i].status_code for i in range(len(innocent))] == [200] * len(innocent)
    assert [results[i].json()["choices"][0]["text"] for i in range(len(innocent))] == solo
