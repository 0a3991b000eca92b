"""Fuzzing the HTTP API from its own OpenAPI schema (schemathesis): no input may cause a 5xx, every error
is an OpenAI-style JSON body, and the server still answers normally afterwards.

Runs on a tiny random model with max_tokens capped at 4, so each generated request costs milliseconds; the
example count per operation is bounded.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")
pytest.importorskip("httpx")

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

import steerlab
from steerlab.server import ServerConfig, ThreadedServer, create_app
from steerlab.vector import SteeringVector
from tiny_models import HIDDEN, LAYERS, build

EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_server():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tokenizer = build("llama")
    lm = steerlab.from_model(model, tokenizer, model_id="tiny-llama")
    app = create_app(
        lm,
        config=ServerConfig(
            max_tokens=4, default_max_tokens=4, max_body_bytes=256 * 1024, max_upload_bytes=64 * 1024
        ),
    )
    vec = SteeringVector(directions={i: torch.ones(HIDDEN) for i in range(LAYERS)}, model_id=lm.model_id)
    app.state.steerlab.registry.add("joy", vec)
    with ThreadedServer(app) as server:
        yield server
    torch.set_num_threads(before)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_input_causes_a_server_error(fuzz_server, mode):
    """Every operation, ``EXAMPLES`` generated requests each: schema-valid ones, then schema-violating ones."""
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    seen: dict[int, int] = {}
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=generation))
        def check(case):
            response = case.call(timeout=30)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            label = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
            assert response.status_code < 500, label
            if response.status_code >= 400:
                assert set(response.json()["error"]) >= {"message", "type", "param", "code"}, label

        try:
            check()
        except Unsatisfiable:
            # an operation with no inputs (GET /health) has no schema-violating requests to generate
            assert generation == GenerationMode.NEGATIVE
    assert sum(seen.values()) >= len(operations), seen
    if generation == GenerationMode.POSITIVE:  # valid requests must mostly get through, not just be refused
        assert sum(n for code, n in seen.items() if code < 300) >= len(operations), seen
    else:
        assert any(400 <= code < 500 for code in seen), seen


def test_server_still_serves_after_fuzzing(fuzz_server):
    health = httpx.get(fuzz_server.url + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    out = httpx.post(
        fuzz_server.url + "/v1/completions",
        json={"prompt": "still here", "max_tokens": 3, "temperature": 0},
        timeout=30,
    )
    assert out.status_code == 200 and out.json()["choices"][0]["finish_reason"] in ("length", "stop")
