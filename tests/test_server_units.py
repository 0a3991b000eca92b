"""Server building blocks on tiny random models: KV-cache surgery, sampling, the continuous-batching
scheduler (every request decodes exactly as it would alone, and one request's fault ends only that
request), the registry. The decode core's own rules are in test_decode.py."""

from __future__ import annotations

import threading

import pytest
import torch

pytest.importorskip("fastapi")

import steerlab
from steerlab.decode import SamplingParams, nucleus_probs, pick_tokens
from steerlab.engine import Steering
from steerlab.errors import SteerlabError, VectorError
from steerlab.server import kvcache
from steerlab.server.config import ServerConfig
from steerlab.server.errors import APIError
from steerlab.server.registry import VectorRegistry, slug
from steerlab.server.scheduler import Job, Scheduler
from steerlab.vector import SteeringVector
from tiny_models import HIDDEN, LAYERS, build


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not stall when the machine is oversubscribed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_lm(arch: str = "llama"):
    model, tokenizer = build(arch)
    return steerlab.from_model(model, tokenizer, model_id=f"tiny-{arch}")


def random_vector(lm, seed: int) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        directions={i: torch.randn(HIDDEN, generator=g) for i in range(LAYERS)},
        model_id=lm.model_id,
        norms={i: 4.0 for i in range(LAYERS)},
        method="random",
    )


class Collector:
    """Runs jobs on a scheduler and records each one's events, token ids and outcome."""

    def __init__(self) -> None:
        self.events: dict[int, list] = {}
        self.done: dict[int, threading.Event] = {}
        self.jobs: dict[int, Job] = {}

    def job(self, i: int, prompt: str, max_tokens: int, steering=None, **kw) -> Job:
        self.events[i], self.done[i] = [], threading.Event()

        def emit(event, i=i):
            self.events[i].append(event)
            if event.kind in ("done", "error"):
                self.done[i].set()

        job = Job(prompt=prompt, max_tokens=max_tokens, emit=emit, steering=steering or [], **kw)
        self.jobs[i] = job
        return job

    def wait(self, timeout: float = 60.0) -> None:
        for i, event in self.done.items():
            assert event.wait(timeout), f"job {i} did not finish"

    def result(self, i: int):
        last = self.events[i][-1]
        return last, self.jobs[i].decoder.tokens if self.jobs[i].decoder else None


# ------------------------------------------------------------------------------ kv cache
def fake_cache(rows: list[int], width: int, fill: float):
    """A real DynamicCache with one layer whose keys are ``fill + row`` at real steps and 0 at padding."""
    from transformers.cache_utils import DynamicCache

    keys = torch.zeros(len(rows), 1, width, 2)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, n in enumerate(rows):
        keys[r, :, width - n :] = fill + r
        mask[r, width - n :] = 1
    return DynamicCache(ddp_cache_data=[(keys, keys.clone())]), mask


def test_merge_left_pads_the_shorter_side_and_keeps_rows_in_order():
    a, amask = fake_cache([3, 1], 3, 1.0)
    b, bmask = fake_cache([5], 5, 10.0)
    merged, mask = kvcache.merge(a, amask, b, bmask)
    assert mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]]
    keys = merged.layers[0].keys[:, 0, :, 0]
    assert keys.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 2], [10, 10, 10, 10, 10]]


def test_select_rows_trims_columns_that_became_padding_everywhere():
    cache, mask = fake_cache([2, 5, 3], 5, 1.0)
    cache, mask = kvcache.select_rows(cache, mask, torch.tensor([0, 2]))
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert cache.layers[0].keys.shape[2] == 3
    assert cache.layers[0].keys[:, 0, :, 0].tolist() == [[0, 1, 1], [3, 3, 3]]


def test_sliding_window_caches_are_not_mergeable():
    from transformers.cache_utils import DynamicCache, DynamicSlidingWindowLayer

    cache, mask = fake_cache([2], 2, 1.0)
    assert kvcache.is_mergeable(cache)
    cache = DynamicCache()
    cache.layers = [DynamicSlidingWindowLayer(sliding_window=4)]
    assert not kvcache.is_mergeable(cache)
    with pytest.raises(SteerlabError, match="cannot be merged"):
        kvcache.merge(cache, mask, cache, mask)


# ------------------------------------------------------------------------------ sampling
def test_greedy_rows_take_argmax_and_seeded_rows_repeat():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 2.9]])
    assert pick_tokens(logits, [SamplingParams(), SamplingParams()]) == [1, 0]
    draws = [pick_tokens(logits, [SamplingParams(), SamplingParams(1.5, 1.0, seed=7)])[1] for _ in range(3)]
    again = [pick_tokens(logits, [SamplingParams(), SamplingParams(1.5, 1.0, seed=7)])[1] for _ in range(3)]
    assert draws == again


def test_top_p_keeps_only_the_nucleus():
    probs = nucleus_probs(torch.tensor([4.0, 3.0, -5.0, -6.0]), 1.0, 0.5)
    assert probs[0] > 0 and probs[2:].sum() == 0 and probs[1] == 0


@pytest.mark.parametrize("temperature", [5e-324, 1e-300, 1e-45, 1e-39])
@pytest.mark.parametrize("top_p", [1.0, 0.5, 1e-300])
def test_a_tiny_temperature_is_the_argmax_not_nan(temperature, top_p):
    """Below float32's range a temperature is 0 in float32 (found by the schema fuzz: 5e-324 gave NaN)."""
    logits = torch.tensor([1.5, 4.0, -3.0, 4.0 - 1e-3, float("-inf")])
    probs = nucleus_probs(logits, temperature, top_p)
    assert torch.isfinite(probs).all() and probs.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    params = SamplingParams(temperature, top_p, seed=3)
    assert pick_tokens(logits[None], [params]) == [1]


# ------------------------------------------------------------------------------- config
@pytest.mark.parametrize("field", ["max_batch", "max_queue", "max_tokens", "max_upload_bytes"])
def test_config_refuses_non_positive_limits(field):
    with pytest.raises(SteerlabError, match=field):
        ServerConfig(**{field: 0})


def test_config_refuses_empty_api_key():
    with pytest.raises(SteerlabError, match="api_key"):
        ServerConfig(api_key="  ")


# ------------------------------------------------------------------------------ scheduler
PROMPTS = ["hello there", "a much longer prompt about cats and dogs", "x", "steering vectors!", "short", "q?"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm("llama")


def solo_tokens(lm, prompt, max_tokens, steering):
    gen = lm.generate(prompt, chat=False, max_new_tokens=max_tokens, steering=steering or None, details=True)
    return gen.token_ids


def test_rows_joining_mid_flight_decode_exactly_as_alone(tiny):
    vectors = [random_vector(tiny, s) for s in range(3)]
    steerings = [
        None,
        [Steering(vectors[0], strength=0.8, layers=[1])],
        [Steering(vectors[1], strength=0.5, positions="generated")],
        None,
        [Steering(vectors[2], op="ablate"), Steering(vectors[0], strength=-0.6, layers=[0, 2])],
        [Steering(vectors[1], strength=1.0, positions="prompt")],
    ]
    sched = Scheduler(tiny, ServerConfig(max_batch=4))
    sched.start()
    try:
        col = Collector()
        first_delta = threading.Event()
        for i in range(3):
            sched.submit(col.job(i, PROMPTS[i], 30 + 5 * i, steerings[i]))
        original = col.jobs[0].emit

        def watch(event):
            original(event)
            if event.kind == "delta":
                first_delta.set()

        col.jobs[0].emit = watch
        assert first_delta.wait(30)
        for i in range(3, 6):  # join a running batch; one has to wait for a free slot (max_batch=4)
            sched.submit(col.job(i, PROMPTS[i], 12 + i, steerings[i]))
        col.wait()
    finally:
        sched.stop()
    assert sched.metrics.counters["prefills_total"] >= 2
    assert sched.metrics.gauges["batch_size_max"] > 1
    for i in range(6):
        last, tokens = col.result(i)
        assert last.kind == "done", last
        assert tokens == solo_tokens(tiny, PROMPTS[i], 30 + 5 * i if i < 3 else 12 + i, steerings[i]), i


def test_cancelled_row_leaves_and_the_others_are_unaffected(tiny):
    sched = Scheduler(tiny, ServerConfig(max_batch=8))
    sched.start()
    try:
        col = Collector()
        started = threading.Event()
        job = col.job(0, PROMPTS[1], 200)
        original = job.emit

        def cancel_after_start(event):
            original(event)
            if event.kind == "delta" and not started.is_set():
                started.set()
                job.cancel()

        job.emit = cancel_after_start
        sched.submit(job)
        sched.submit(col.job(1, PROMPTS[0], 25))
        assert started.wait(30)
        col.done[0].set()  # a cancelled job gets no final event
        col.wait()
    finally:
        sched.stop()
    assert col.result(1)[1] == solo_tokens(tiny, PROMPTS[0], 25, None)
    assert len(col.jobs[0].decoder.tokens) < 200


def test_sliding_window_model_falls_back_to_static_batching_and_stays_exact():
    lm = tiny_lm("gemma2")
    sched = Scheduler(lm, ServerConfig(max_batch=4))
    sched.start()
    try:
        col = Collector()
        for i in range(4):
            sched.submit(col.job(i, PROMPTS[i], 10 + 3 * i))
        col.wait()
    finally:
        sched.stop()
    assert sched.continuous is False
    for i in range(4):
        assert col.result(i)[1] == solo_tokens(lm, PROMPTS[i], 10 + 3 * i, None)


def test_bad_steering_fails_only_its_own_request(tiny):
    vec = random_vector(tiny, 0)
    sched = Scheduler(tiny, ServerConfig())
    sched.start()
    try:
        col = Collector()
        sched.submit(col.job(0, "hi", 5, [Steering(vec, strength=0.5, layers=[LAYERS + 3])]))
        sched.submit(col.job(1, "hi", 5))
        col.wait()
    finally:
        sched.stop()
    assert col.result(0)[0].kind == "error" and col.result(0)[0].error.status == 400
    assert "out of range" in col.result(0)[0].error.message
    assert col.result(1)[0].kind == "done"


POISON = "poison " * 12  # a prompt longer than any other prompt plus its answer in these tests


class FaultAt:
    """A forward pre-hook that raises whenever a row reaches position ``at``: only the poisoned (long)
    prompt ever gets there, so exactly one row of a shared batch triggers it -- in prefill or decoding."""

    def __init__(self, at: int) -> None:
        self.at, self.hits = at, 0

    def __call__(self, module, args, kwargs):
        positions = kwargs.get("position_ids")
        if positions is not None and bool((positions == self.at).any()):
            self.hits += 1
            raise RuntimeError("injected fault")


def run_with_poison(lm, at: int, steerings) -> tuple[Collector, FaultAt]:
    """Innocent jobs run alongside one poisoned job that faults at position ``at``."""
    fault = FaultAt(at)
    handle = lm.model.register_forward_pre_hook(fault, with_kwargs=True)
    sched = Scheduler(lm, ServerConfig(max_batch=8))
    sched.start()
    try:
        col = Collector()
        gate = threading.Event()
        sched.call(lambda: gate.wait(10))  # hold the model thread so every job joins the same step
        for i, prompt in enumerate(PROMPTS[:4]):
            sched.submit(col.job(i, prompt, 20, steerings[i]))
        sched.submit(col.job(9, POISON, 20))
        gate.set()
        col.wait()
    finally:
        sched.stop()
        handle.remove()
    return col, fault


@pytest.mark.parametrize("where", ["prefill", "decode"])
def test_a_fault_in_one_row_ends_only_that_request(tiny, where):
    vec = random_vector(tiny, 3)
    steerings = [None, [Steering(vec, strength=0.7, layers=[1])], None, [Steering(vec, op="ablate")]]
    prompt_len = len(tiny.encode(POISON))
    assert prompt_len > max(len(tiny.encode(p)) for p in PROMPTS) + 20
    at = prompt_len - 1 if where == "prefill" else prompt_len + 3
    col, fault = run_with_poison(tiny, at, steerings)
    assert fault.hits >= 2  # the shared step failed, then the poisoned row failed alone
    last, tokens = col.result(9)
    assert last.kind == "error" and last.error.status == 500
    assert "injected fault" in last.error.message and "this request" in last.error.message
    if where == "decode":
        assert len(tokens) == 4  # it had been decoding normally until the fault
    for i in range(4):
        last, tokens = col.result(i)
        assert last.kind == "done", last
        assert tokens == solo_tokens(tiny, PROMPTS[i], 20, steerings[i]), i


def test_malformed_vector_defaults_fail_only_the_request_that_uses_them(tiny):
    good = random_vector(tiny, 4)
    bad = [
        SteeringVector(directions=good.directions, model_id=tiny.model_id, norms=good.norms, defaults=d)
        for d in ({"strength": "abc"}, {"layers": 5})
    ]
    sched = Scheduler(tiny, ServerConfig(max_batch=8))
    sched.start()
    try:
        col = Collector()
        gate = threading.Event()
        sched.call(lambda: gate.wait(10))
        sched.submit(col.job(0, PROMPTS[0], 15))
        sched.submit(col.job(1, PROMPTS[1], 15, [Steering(good, strength=0.5)]))
        for i, vec in enumerate(bad, start=2):
            try:
                steering = [Steering(vec)]
            except SteerlabError:
                continue  # refused before it could reach the model thread: fine too
            sched.submit(col.job(i, PROMPTS[2], 15, steering))
        gate.set()
        col.wait()
    finally:
        sched.stop()
    for i in (2, 3):
        if i in col.events:
            last = col.result(i)[0]
            assert last.kind == "error" and last.error.status == 400 and last.error.param == "steering"
    assert col.result(0)[1] == solo_tokens(tiny, PROMPTS[0], 15, None)
    assert col.result(1)[1] == solo_tokens(tiny, PROMPTS[1], 15, [Steering(good, strength=0.5)])


def test_non_finite_outputs_end_only_their_own_request(tiny):
    vec = random_vector(tiny, 5)
    huge = [Steering(vec, strength=1e38, unit="raw", layers=[0, 1])]
    sched = Scheduler(tiny, ServerConfig(max_batch=8))
    sched.start()
    try:
        col = Collector()
        gate = threading.Event()
        sched.call(lambda: gate.wait(10))
        sched.submit(col.job(0, PROMPTS[0], 15))
        sched.submit(col.job(1, PROMPTS[1], 15, huge, sampling=SamplingParams(1.0, seed=1)))
        gate.set()
        col.wait()
    finally:
        sched.stop()
    last = col.result(1)[0]
    assert last.kind == "error" and last.error.code == "non_finite_output", last
    assert col.result(0)[1] == solo_tokens(tiny, PROMPTS[0], 15, None)


def test_full_queue_is_429(tiny):
    sched = Scheduler(tiny, ServerConfig(max_batch=1, max_queue=1))
    sched.start()
    gate = threading.Event()
    try:
        sched.call(lambda: gate.wait(10))  # the model thread is busy until the gate opens
        col = Collector()
        sched.submit(col.job(0, "hi", 3))
        with pytest.raises(APIError) as full:
            sched.submit(Collector().job(1, "hi", 3))
        assert full.value.status == 429 and full.value.headers.get("Retry-After")
        gate.set()
        col.wait()
    finally:
        gate.set()
        sched.stop()
    assert col.result(0)[0].kind == "done"


def test_a_request_waiting_past_the_queue_timeout_gets_503(tiny):
    sched = Scheduler(tiny, ServerConfig(max_batch=1, queue_timeout=0.2))
    sched.start()
    gate, running = threading.Event(), threading.Event()
    try:
        col = Collector()
        long_job = col.job(0, "hi", 200)
        original = long_job.emit
        long_job.emit = lambda e: (original(e), e.kind == "delta" and running.set())
        sched.submit(long_job)
        assert running.wait(30)
        sched.call(lambda: gate.wait(10))
        sched.submit(col.job(1, "hi", 3))  # no free slot: the long job holds the only one
        threading.Event().wait(0.5)
        gate.set()
        col.wait()
    finally:
        gate.set()
        sched.stop()
    assert col.result(1)[0].kind == "error" and col.result(1)[0].error.status == 503
    assert col.result(0)[0].kind == "done"


def test_stopped_scheduler_refuses_with_503(tiny):
    sched = Scheduler(tiny, ServerConfig())
    with pytest.raises(APIError) as err:
        sched.submit(Collector().job(0, "hi", 3))
    assert err.value.status == 503


# ------------------------------------------------------------------------------- registry
def test_slug_never_yields_a_path():
    assert slug("../../etc/passwd") == "etc-passwd"
    assert slug("Happy Vector.v2") == "happy-vector.v2"
    assert slug("///") == "vector"
    assert len(slug("a" * 500)) == 64


def test_registry_names_are_unique_and_uploads_are_validated(tiny, tmp_path):
    reg = VectorRegistry(tiny)
    vec = random_vector(tiny, 1)
    assert reg.add("joy", vec).name == "joy"
    assert reg.add("joy", vec).name == "joy-2"
    path = vec.save(tmp_path / "v.safetensors")
    assert reg.add_bytes(path.read_bytes(), "Uploaded!").name == "uploaded"
    with pytest.raises(VectorError):
        reg.add_bytes(b"\x00" * 100, "junk")
    with pytest.raises(VectorError):
        reg.add_bytes(b"", "empty")
    other = SteeringVector(directions={0: torch.randn(HIDDEN + 1)}, model_id=tiny.model_id)
    with pytest.raises(SteerlabError):
        reg.add("wide", other)
    assert reg.names() == ["joy", "joy-2", "uploaded"]
    reg.remove("joy-2")
    with pytest.raises(KeyError):
        reg.get("joy-2")


def test_preload_reads_a_folder_and_skips_a_bad_file(tiny, tmp_path):
    random_vector(tiny, 2).save(tmp_path / "calm.safetensors")
    reg = VectorRegistry(tiny)
    assert [e.name for e in reg.preload(tmp_path)] == ["calm"]
    (tmp_path / "broken.safetensors").write_bytes(b"nope")
    again = VectorRegistry(tiny)
    assert [e.name for e in again.preload(tmp_path)] == ["calm"]
    assert [name for name, _ in again.skipped] == ["broken.safetensors"]
    with pytest.raises(VectorError, match="not a folder"):
        reg.preload(tmp_path / "missing")
