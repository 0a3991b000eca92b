"""Soak: 64 concurrent clients with a mix of requests against a real uvicorn server on 127.0.0.1.

Bounded in requests and time (``STEERLAB_SOAK_SECONDS``, default 45). Checks that every request is
answered (no connection errors, no timeouts), none gets a 5xx, and the process RSS stays flat once warm
(growth from the end of the warm-up to the end bounded). Prints what it did.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx

import steerlab
from steerlab.server import ServerConfig, ThreadedServer, create_app
from steerlab.vector import SteeringVector
from tiny_models import HIDDEN, LAYERS, build

pytestmark = pytest.mark.slow

CLIENTS = 64
SECONDS = float(os.environ.get("STEERLAB_SOAK_SECONDS", "45"))
PER_CLIENT = 40
MAX_FLAT_GROWTH_MB = 150


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _vector(lm, seed: int, **fields) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        directions={i: torch.randn(HIDDEN, generator=g) for i in range(LAYERS)},
        model_id=lm.model_id,
        norms={i: 2.0 for i in range(LAYERS)},
        **fields,
    )


def test_64_mixed_clients_lose_nothing_and_memory_stays_flat(request):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tokenizer = build("llama")
    lm = steerlab.from_model(model, tokenizer, model_id="tiny-llama")
    app = create_app(lm, config=ServerConfig(max_tokens=6, max_batch=16, max_queue=512, queue_timeout=120))
    registry = app.state.steerlab.registry
    registry.add("joy", _vector(lm, 1))
    registry.add("calm", _vector(lm, 2, defaults={"strength": 0.5, "layers": [1, 2]}))
    with tempfile.TemporaryDirectory() as folder:
        upload = _vector(lm, 3).save(Path(folder) / "u.safetensors").read_bytes()

    codes: Counter = Counter()
    lost: list[str] = []
    lock = threading.Lock()
    samples: list[tuple[float, float]] = []
    start = time.monotonic()
    deadline = start + SECONDS

    def one(client: httpx.Client, rng: random.Random) -> int:
        kind = rng.choice(["chat", "chat", "stream", "completion", "projection", "list", "upload", "bad"])
        steering = rng.choice(
            [None, [{"vector": "joy", "strength": rng.uniform(-2, 2)}], [{"vector": "calm"}]]
        )
        if kind == "chat":
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "steering": steering}
            return client.post("/v1/chat/completions", json=body).status_code
        if kind == "stream":
            body = {"prompt": "Once", "max_tokens": 5, "stream": True, "steering": steering}
            with client.stream("POST", "/v1/completions", json=body) as response:
                text = b"".join(response.iter_bytes())
                assert response.status_code >= 400 or text.endswith(b"data: [DONE]\n\n"), text[-200:]
                return response.status_code
        if kind == "completion":
            body = {"prompt": ["a", "b"], "max_tokens": 3, "temperature": 1.0, "seed": rng.randrange(2**32)}
            return client.post("/v1/completions", json=body).status_code
        if kind == "projection":
            return client.post(
                "/v1/steering/projections", json={"vector": "joy", "text": "hello"}
            ).status_code
        if kind == "list":
            return client.get("/v1/steering/vectors").status_code
        if kind == "upload":
            r = client.post("/v1/steering/vectors", files={"file": ("mine.safetensors", upload)})
            if r.status_code == 201:
                assert client.delete(f"/v1/steering/vectors/{r.json()['id']}").status_code == 200
            return r.status_code
        return client.post("/v1/completions", json={"prompt": "x", "max_tokens": 10**6}).status_code

    with ThreadedServer(app) as server:

        def worker(i: int) -> None:
            rng = random.Random(i)
            with httpx.Client(base_url=server.url, timeout=120) as client:
                for _ in range(PER_CLIENT):
                    if time.monotonic() > deadline:
                        return
                    try:
                        code = one(client, rng)
                    except Exception as exc:  # a dropped connection, a timeout, a malformed stream
                        with lock:
                            lost.append(f"client {i}: {type(exc).__name__}: {exc}")
                        continue
                    with lock:
                        codes[code] += 1

        def sampler() -> None:
            while any(t.is_alive() for t in threads):
                samples.append((time.monotonic() - start, rss_mb()))
                time.sleep(0.25)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        watcher = threading.Thread(target=sampler)
        watcher.start()
        for t in threads:
            t.join(SECONDS + 180)
        watcher.join(5)
        stats = app.state.steerlab.scheduler.stats()
    torch.set_num_threads(before)

    elapsed = time.monotonic() - start
    total = sum(codes.values())
    warm = [rss for t, rss in samples if t >= elapsed * 0.25] or [rss_mb()]
    growth = max(warm) - warm[0]
    server_errors = sum(n for c, n in codes.items() if c >= 500)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(
            f"\nsoak: {CLIENTS} clients, {total} requests answered in {elapsed:.0f} s, lost={len(lost)}, "
            f"5xx={server_errors}, rss warm {warm[0]:.0f} MB -> peak {max(warm):.0f} MB (+{growth:.0f} MB), "
            f"codes={dict(sorted(codes.items()))}",
            flush=True,
        )
    assert not any(t.is_alive() for t in threads), "a client never finished"
    assert not lost, lost[:5]
    assert server_errors == 0, codes
    assert codes[200] + codes[201] > total // 2, codes
    assert stats.get("running", 0) == 0 and stats.get("queue_depth", 0) == 0, stats
    assert growth < MAX_FLAT_GROWTH_MB, f"RSS grew {growth:.0f} MB after warm-up"
    assert registry.names() == ["calm", "joy"]
