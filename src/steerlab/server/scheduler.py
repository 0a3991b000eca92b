"""Continuous batching: one thread owns the model and decodes every live request in one shared batch.

Requests join and leave between decode steps. A joining group is prefilled on its own (left-padded, with
explicit position ids and its own per-row steering), then its KV cache is stitched into the running batch
(:mod:`steerlab.server.kvcache`). Each decode step feeds one token per row through the model with
per-row steering from the engine (``lm.steer_rows``); rows that finish are dropped. The steering hooks are
installed only for the duration of each forward pass, so the model is unhooked between steps, where
other model work (projections, norm measurements) runs on the same thread.

The steering math lives in the engine; this module only decides which rows run together and tells the
engine each row's steering and prompt length.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlab.engine import Steering
from steerlab.errors import SteerlabError
from steerlab.generate import cache_arg, eos_token_ids, returned_cache
from steerlab.sampling import SamplingParams, pick_tokens
from steerlab.server import kvcache
from steerlab.server.config import ServerConfig
from steerlab.server.errors import APIError, from_steerlab
from steerlab.server.metrics import Metrics
from steerlab.server.textstream import TextStream

log = logging.getLogger("steerlab.server")


@dataclass
class Event:
    """What a job reports back: ``start`` (admitted), ``delta`` (text), ``done`` or ``error``."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: APIError | None = None


@dataclass
class Job:
    """One sequence to generate. ``emit`` is called from the model thread; it must be thread-safe."""

    prompt: str
    max_tokens: int
    emit: Callable[[Event], None]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    steering: list[Steering] = field(default_factory=list)
    enqueued: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    finished: bool = False
    # filled in by the scheduler
    ids: list[int] = field(default_factory=list)
    stream: TextStream | None = None

    def cancel(self) -> None:
        """Ask the scheduler to drop this job at the next step boundary (safe from any thread)."""
        self.cancelled = True


class _Batch:
    """The running batch: its jobs in row order and the tensors that carry them between steps."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # (B, T) over every cached step
        self.last_pos: torch.Tensor | None = None  # (B,) position id of the last fed token
        self.pending: torch.Tensor | None = None  # (B,) token to feed next
        self.prompt_lens: torch.Tensor | None = None  # (B,)
        self.ctx: Any = None  # steering context for the current row order (None: no row is steered)
        self.ctx_ready = False  # False after rows join or leave: the context must be rebuilt

    def __len__(self) -> int:
        return len(self.jobs)


class Scheduler:
    """Owns the model on one background thread. ``submit`` jobs; ``call`` runs other model work there."""

    def __init__(self, lm: Any, config: ServerConfig | None = None, metrics: Metrics | None = None) -> None:
        self.lm = lm
        self.config = config or ServerConfig()
        self.metrics = metrics or Metrics()
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future]] = deque()
        self._batch = _Batch()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._eos = eos_token_ids(lm)
        self._cache_kw = cache_arg(lm)
        params = inspect.signature(lm.model.forward).parameters
        self._head_kw = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # Continuous batching needs caches that can be merged; known after the first prefill. Models with
        # sliding-window caches fall back to static batching: a new group starts when the batch is empty.
        self.continuous: bool | None = None
        context = getattr(lm.model.config, "max_position_embeddings", None)
        self.max_context = int(context) if isinstance(context, int) and context > 0 else None

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="steerlab-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current step; every unfinished job gets a 503."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -------------------------------------------------------------- intake
    def submit(self, job: Job) -> None:
        """Queue a job, or raise APIError 429 (queue full) / 503 (not running)."""
        with self._cv:
            if self._stopping or not self.alive:
                raise APIError(503, "the server is shutting down", code="shutting_down")
            if len(self._waiting) >= self.config.max_queue:
                raise APIError(
                    429,
                    f"too many requests waiting ({self.config.max_queue}); retry shortly",
                    code="queue_full",
                    headers={"Retry-After": "1"},
                )
            job.enqueued = time.monotonic()
            self._waiting.append(job)
            self.metrics.add("requests_total")
            self.metrics.set("queue_depth", len(self._waiting))
            self._cv.notify_all()

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn()`` on the model thread between decode steps (no steering hooks installed then)."""
        future: Future = Future()
        with self._cv:
            if self._stopping or not self.alive:
                future.set_exception(APIError(503, "the server is shutting down", code="shutting_down"))
                return future
            self._calls.append((fn, future))
            self._cv.notify_all()
        return future

    def stats(self) -> dict[str, int]:
        with self._cv:
            return {"queue_depth": len(self._waiting), "running": len(self._batch)}

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        with torch.no_grad():
            while True:
                with self._cv:
                    while not (self._stopping or self._waiting or self._calls or len(self._batch)):
                        self._cv.wait()
                    if self._stopping:
                        break
                    calls = list(self._calls)
                    self._calls.clear()
                    admitted, expired = self._take_waiting()
                for job in expired:
                    self._fail(
                        job, APIError(503, "timed out waiting for a free decoding slot", code="queue_timeout")
                    )
                for fn, future in calls:
                    self._run_call(fn, future)
                self._guarded(self._drop_cancelled, [])
                if admitted:
                    self._guarded(lambda jobs=admitted: self._prefill(jobs), admitted)
                if len(self._batch):
                    self._guarded(self._decode_step, [])
                self.metrics.set("running", len(self._batch))
        self._shutdown()

    def _take_waiting(self) -> tuple[list[Job], list[Job]]:
        """Under the lock: pop expired and cancelled jobs, and as many as fit into the batch."""
        now = time.monotonic()
        admitted: list[Job] = []
        expired: list[Job] = []
        keep: deque[Job] = deque()
        free = self.config.max_batch - len(self._batch)
        if self.continuous is False and len(self._batch):
            free = 0
        for job in self._waiting:
            if job.cancelled:
                self.metrics.add("requests_cancelled_total")
            elif len(admitted) < free:
                admitted.append(job)
            elif now - job.enqueued > self.config.queue_timeout:
                expired.append(job)
            else:
                keep.append(job)
        self._waiting = keep
        self.metrics.set("queue_depth", len(keep))
        return admitted, expired

    def _run_call(self, fn: Callable[[], Any], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the waiting caller, who maps it to a response
            future.set_exception(exc)

    def _guarded(self, step: Callable[[], None], joining: list[Job]) -> None:
        """A failing step fails every job it touched with a 500, and the server keeps serving."""
        try:
            step()
        except Exception as exc:
            log.exception("model step failed")
            jobs = list(self._batch.jobs) + list(joining)
            self._batch = _Batch()
            error = APIError(500, f"generation failed: {type(exc).__name__}: {exc}", code="server_error")
            for job in jobs:
                if not job.finished:
                    self._fail(job, error)

    def _shutdown(self) -> None:
        with self._cv:
            jobs = list(self._waiting) + list(self._batch.jobs)
            self._waiting.clear()
            calls = list(self._calls)
            self._calls.clear()
        self._batch = _Batch()
        for job in jobs:
            self._fail(job, APIError(503, "the server is shutting down", code="shutting_down"))
        for _, future in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(APIError(503, "the server is shutting down", code="shutting_down"))

    # ------------------------------------------------------------- helpers
    def _emit(self, job: Job, event: Event) -> None:
        try:
            job.emit(event)
        except Exception:  # the client is gone (its event loop closed): stop working for it
            job.cancelled = True

    def _fail(self, job: Job, error: APIError) -> None:
        job.finished = True
        self.metrics.add("requests_failed_total")
        self._emit(job, Event("error", error=error))

    def _finish(self, job: Job, reason: str) -> None:
        job.finished = True
        assert job.stream is not None
        tail = job.stream.flush()
        if tail:
            self._emit(job, Event("delta", text=tail))
        self.metrics.add("requests_finished_total")
        self._emit(
            job,
            Event(
                "done",
                finish_reason=reason,
                prompt_tokens=len(job.ids),
                completion_tokens=len(job.stream.tokens),
            ),
        )

    def _accept(self, job: Job, token: int) -> bool:
        """Take one sampled token for ``job``; return True when the job is finished."""
        assert job.stream is not None
        if token in self._eos:
            self._finish(job, "stop")
            return True
        delta = job.stream.push(token)
        if delta:
            self._emit(job, Event("delta", text=delta))
        if job.stream.stopped:
            self._finish(job, "stop")
            return True
        if len(job.stream.tokens) >= job.max_tokens:
            self._finish(job, "length")
            return True
        return False

    def _prepare(self, job: Job) -> APIError | None:
        """Tokenize and check one admitted job on the model thread; return the error that rejects it."""
        try:
            job.ids = self.lm.encode(job.prompt)
        except SteerlabError as exc:
            return from_steerlab(exc, "prompt")
        limit = self.config.max_prompt_tokens
        if self.max_context is not None:
            limit = min(limit, self.max_context - job.max_tokens)
        if len(job.ids) > limit:
            return APIError(
                400,
                f"the prompt has {len(job.ids)} tokens; with max_tokens={job.max_tokens} at most {max(limit, 0)} "
                "prompt tokens fit",
                param="messages",
                code="context_length_exceeded",
            )
        if job.steering:
            try:
                self.lm.steer_rows([job.steering])  # compiles the plan: surfaces bad layers, sites, widths
            except SteerlabError as exc:
                return from_steerlab(exc, "steering")
        job.stream = TextStream(self._decode, job.stop)
        return None

    def _decode(self, ids: list[int]) -> str:
        return self.lm.tokenizer.decode(ids, skip_special_tokens=True)

    def _drop_cancelled(self) -> None:
        gone = [i for i, job in enumerate(self._batch.jobs) if job.cancelled]
        if gone:
            self.metrics.add("requests_cancelled_total", len(gone))
            self._keep_rows([i for i in range(len(self._batch)) if i not in set(gone)])

    def _keep_rows(self, rows: list[int]) -> None:
        b = self._batch
        if not rows:
            self._batch = _Batch()
            return
        if len(rows) == len(b):
            return
        index = torch.tensor(rows, device=self.lm.device)
        b.cache, b.mask = kvcache.select_rows(b.cache, b.mask, index, cut=bool(self.continuous))
        b.jobs = [b.jobs[i] for i in rows]
        b.last_pos, b.pending, b.prompt_lens = (
            b.last_pos.index_select(0, index),
            b.pending.index_select(0, index),
            b.prompt_lens.index_select(0, index),
        )
        b.ctx_ready = False

    def _steering_ctx(self, jobs: list[Job]) -> Any:
        rows = [job.steering or None for job in jobs]
        if not any(rows):
            return None
        return self.lm.steer_rows(rows)

    # --------------------------------------------------------------- model
    def _prefill(self, admitted: list[Job]) -> None:
        jobs = []
        for job in admitted:
            error = self._prepare(job)
            if error is not None:
                self._fail(job, error)
            else:
                jobs.append(job)
                self._emit(job, Event("start", prompt_tokens=len(job.ids)))
        if not jobs:
            return
        device = self.lm.device
        width = max(len(job.ids) for job in jobs)
        ids = torch.full((len(jobs), width), self.lm.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            ids[row, width - len(job.ids) :] = torch.tensor(job.ids)
            mask[row, width - len(job.ids) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ctx = self._steering_ctx(jobs)
        with ctx if ctx is not None else contextlib.nullcontext():
            result = self.lm.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **self._head_kw
            )
        self.metrics.add("prefills_total")
        self.metrics.add("prompt_tokens_total", int(mask.sum()))
        cache = returned_cache(result)
        if self.continuous is None:
            self.continuous = kvcache.is_mergeable(cache)
            if not self.continuous:
                log.warning("this model's KV cache cannot be merged: falling back to static batching")
        tokens = pick_tokens(result.logits[:, -1], [job.sampling for job in jobs])
        self.metrics.tokens(len(tokens))
        live = []
        for row, job in enumerate(jobs):
            if job.cancelled:
                self.metrics.add("requests_cancelled_total")
            elif not self._accept(job, tokens[row]):
                live.append(row)
        if not live:
            return
        index = torch.tensor(live, device=device)
        cache, mask = kvcache.select_rows(cache, mask, index, cut=bool(self.continuous))
        new_last = positions[:, -1].index_select(0, index)
        new_pending = torch.tensor(tokens, device=device).index_select(0, index)
        new_plens = torch.tensor([len(jobs[i].ids) for i in live], device=device)
        b = self._batch
        if not len(b):
            b.cache, b.mask, b.last_pos, b.pending, b.prompt_lens = (
                cache,
                mask,
                new_last,
                new_pending,
                new_plens,
            )
        else:
            b.cache, b.mask = kvcache.merge(b.cache, b.mask, cache, mask)
            b.last_pos = torch.cat([b.last_pos, new_last])
            b.pending = torch.cat([b.pending, new_pending])
            b.prompt_lens = torch.cat([b.prompt_lens, new_plens])
        b.jobs.extend(jobs[i] for i in live)
        b.ctx_ready = False

    def _decode_step(self) -> None:
        b = self._batch
        n = len(b)
        if not b.ctx_ready:
            b.ctx, b.ctx_ready = self._steering_ctx(b.jobs), True
        b.mask = torch.cat([b.mask, b.mask.new_ones((n, 1))], dim=1)
        b.last_pos = b.last_pos + 1
        with b.ctx if b.ctx is not None else contextlib.nullcontext():
            if b.ctx is not None:
                b.ctx.set_prompt_lengths(b.prompt_lens)
            result = self.lm.model(
                input_ids=b.pending.view(n, 1),
                attention_mask=b.mask,
                position_ids=b.last_pos.view(n, 1),
                use_cache=True,
                **self._head_kw,
                **{self._cache_kw: b.cache},
            )
        b.cache = returned_cache(result)
        self.metrics.add("decode_steps_total")
        tokens = pick_tokens(result.logits[:, -1], [job.sampling for job in b.jobs])
        self.metrics.tokens(n)
        keep = []
        for row, job in enumerate(b.jobs):
            if job.cancelled:
                self.metrics.add("requests_cancelled_total")
            elif not self._accept(job, tokens[row]):
                keep.append(row)
        b.pending = torch.tensor(tokens, device=b.pending.device)
        self._keep_rows(keep)
