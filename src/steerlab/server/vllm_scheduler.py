"""``steerlab serve --engine vllm``: the scheduler interface of :class:`~steerlab.server.scheduler.Scheduler`
(``submit`` / ``call`` / ``stats`` / ``start`` / ``stop``), with vLLM doing the continuous batching.

One thread owns an in-process vLLM engine (:mod:`steerlab.backends.vllm.engine`): it adds admitted jobs
as vLLM requests (each with its own compiled steering and prefix-cache salt), calls ``step()``, and feeds
every new token to the job's :class:`~steerlab.decode.RowDecoder`, so EOS, stop strings, held-back
streaming text, finish reasons and usage are the decode core's. A request the decoder ends (a stop
string) is aborted in vLLM at once. ``call`` runs other model work (projections, norm measurements on the
steerlab copy of the model) on the same thread between steps.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from steerlab.backends.vllm.engine import encode_steerings, engine_for
from steerlab.decode import LENGTH, STOP, RowDecoder, eos_token_ids
from steerlab.errors import SteerlabError
from steerlab.server.config import ServerConfig
from steerlab.server.errors import APIError, from_steerlab
from steerlab.server.jobs import Event, Job
from steerlab.server.metrics import Metrics

log = logging.getLogger("steerlab.server")
SHUTTING_DOWN = "the server is shutting down"


class VLLMScheduler:
    """Same interface as :class:`steerlab.server.scheduler.Scheduler`; vLLM runs the batch."""

    def __init__(self, lm: Any, config: ServerConfig | None = None, metrics: Metrics | None = None) -> None:
        self.lm = lm
        self.config = config or ServerConfig()
        self.metrics = metrics or Metrics()
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future]] = deque()
        self._running: dict[str, Job] = {}
        self._pushed: dict[str, int] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._eos = eos_token_ids(lm)
        self._engine = engine_for(lm, max_num_seqs=self.config.max_batch)

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="steerlab-vllm-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
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
        with self._cv:
            if self._stopping or not self.alive:
                raise APIError(503, SHUTTING_DOWN, code="shutting_down")
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
        future: Future = Future()
        with self._cv:
            if self._stopping or not self.alive:
                future.set_exception(APIError(503, SHUTTING_DOWN, code="shutting_down"))
                return future
            self._calls.append((fn, future))
            self._cv.notify_all()
        return future

    def stats(self) -> dict[str, int]:
        with self._cv:
            return {"queue_depth": len(self._waiting), "running": len(self._running)}

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._stopping or self._waiting or self._calls or self._running):
                    self._cv.wait()
                if self._stopping:
                    break
                calls = list(self._calls)
                self._calls.clear()
                admitted = list(self._waiting)[: max(self.config.max_batch - len(self._running), 0)]
                for _ in admitted:
                    self._waiting.popleft()
                self.metrics.set("queue_depth", len(self._waiting))
            for fn, future in calls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:  # handed to the caller, who maps it to a response
                        future.set_exception(exc)
            try:
                self._drop_cancelled()
                for job in admitted:
                    self._admit(job)
                if self._running:
                    self._step()
            except Exception as exc:
                log.exception("vLLM step failed")
                error = APIError(500, f"generation failed: {type(exc).__name__}: {exc}", code="server_error")
                for rid, job in list(self._running.items()):
                    self._abort(rid)
                    self._fail(job, error)
            self.metrics.set("running", len(self._running))
        self._shutdown()

    def _shutdown(self) -> None:
        with self._cv:
            jobs = list(self._waiting)
            self._waiting.clear()
            calls = list(self._calls)
            self._calls.clear()
        for rid, job in list(self._running.items()):
            self._abort(rid)
            jobs.append(job)
        for job in jobs:
            self._fail(job, APIError(503, SHUTTING_DOWN, code="shutting_down"))
        for _, future in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(APIError(503, SHUTTING_DOWN, code="shutting_down"))

    # -------------------------------------------------------------- a job's life
    def _admit(self, job: Job) -> None:
        if job.cancelled:
            self.metrics.add("requests_cancelled_total")
            return
        try:
            job.ids = self.lm.encode(job.prompt)
            limit = self.config.max_prompt_tokens
            if len(job.ids) > limit:
                raise APIError(
                    400,
                    f"the prompt has {len(job.ids)} tokens; at most {limit} prompt tokens fit",
                    param="messages",
                    code="context_length_exceeded",
                )
            try:
                text = encode_steerings(self.lm, job.steering)
            except SteerlabError as exc:
                raise from_steerlab(exc, "steering") from None
        except APIError as error:
            self._fail(job, error)
            return
        except SteerlabError as exc:
            self._fail(job, from_steerlab(exc, "prompt"))
            return
        job.decoder = RowDecoder(
            self._detokenize,
            max_tokens=job.max_tokens,
            eos=self._eos,
            stop=job.stop,
            prompt_tokens=len(job.ids),
        )
        sampling = job.sampling
        prompt, params = self._engine.request(
            job.ids,
            text,
            max_tokens=job.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=None if sampling.greedy else sampling.seed,
            stop=None,  # the row decoder applies stop strings and aborts the request
        )
        rid = f"steerlab-{next(self._ids)}"
        self._engine.llm.llm_engine.add_request(rid, prompt, params)
        self._running[rid] = job
        self._pushed[rid] = 0
        self._emit(job, Event("start", prompt_tokens=len(job.ids)))

    def _step(self) -> None:
        outputs = self._engine.llm.llm_engine.step()
        for out in outputs:
            job = self._running.get(out.request_id)
            if job is None or job.decoder is None:
                continue
            completion = out.outputs[0]
            tokens = list(completion.token_ids)
            new = tokens[self._pushed[out.request_id] :]
            self._pushed[out.request_id] = len(tokens)
            self.metrics.tokens(len(new))
            for token in new:
                delta = job.decoder.push(int(token))
                if delta:
                    self._emit(job, Event("delta", text=delta))
                if job.decoder.done:
                    break
            if not job.decoder.done and out.finished:
                delta = job.decoder.finish(STOP if completion.finish_reason == "stop" else LENGTH)
                if delta:
                    self._emit(job, Event("delta", text=delta))
            if job.decoder.done:
                if not out.finished:
                    self._abort(out.request_id)
                self._forget(out.request_id)
                self._finish(job)

    def _drop_cancelled(self) -> None:
        for rid, job in list(self._running.items()):
            if job.cancelled:
                self._abort(rid)
                self._forget(rid)
                self.metrics.add("requests_cancelled_total")

    def _abort(self, rid: str) -> None:
        try:
            self._engine.llm.llm_engine.abort_request([rid])
        except Exception:  # already finished inside vLLM
            log.debug("abort of %s failed", rid, exc_info=True)
        self._forget(rid)

    def _forget(self, rid: str) -> None:
        self._running.pop(rid, None)
        self._pushed.pop(rid, None)

    def _detokenize(self, ids: list[int]) -> str:
        return self.lm.tokenizer.decode(ids, skip_special_tokens=True)

    def _emit(self, job: Job, event: Event) -> None:
        try:
            job.emit(event)
        except Exception:  # the client is gone
            job.cancelled = True

    def _fail(self, job: Job, error: APIError) -> None:
        job.finished = True
        self.metrics.add("requests_failed_total")
        self._emit(job, Event("error", error=error))

    def _finish(self, job: Job) -> None:
        job.finished = True
        assert job.decoder is not None
        self.metrics.add("requests_finished_total")
        self._emit(
            job,
            Event(
                "done",
                finish_reason=job.decoder.finish_reason,
                prompt_tokens=len(job.ids),
                completion_tokens=len(job.decoder.tokens),
            ),
        )
