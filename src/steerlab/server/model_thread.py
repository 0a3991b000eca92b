"""The thread that owns the model, and the queue in front of it: what every scheduler shares.

A scheduler (the torch engine's continuous batching, or vLLM's) decides how admitted jobs run; how jobs
get in (``submit``, with its 429/503 answers), how other model work is run between steps (``call``) and
how the thread starts and stops are the same for all of them and live here once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from steerlab.decode import RowDecoder, eos_token_ids
from steerlab.server.config import ServerConfig
from steerlab.server.errors import APIError
from steerlab.server.jobs import Event, Job
from steerlab.server.metrics import Metrics

SHUTTING_DOWN = "the server is shutting down"


def shutting_down() -> APIError:
    return APIError(503, SHUTTING_DOWN, code="shutting_down")


class ModelThread:
    """One background thread, a job queue and a call queue. Subclasses write ``_run`` and ``_running``."""

    thread_name = "steerlab-model"

    def __init__(self, lm: Any, config: ServerConfig | None = None, metrics: Metrics | None = None) -> None:
        self.lm = lm
        self.config = config or ServerConfig()
        self.metrics = metrics or Metrics()
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future]] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._eos = eos_token_ids(lm)

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
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
                raise shutting_down()
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
        """Run ``fn()`` on the model thread between steps (no steering hooks installed then)."""
        future: Future = Future()
        with self._cv:
            if self._stopping or not self.alive:
                future.set_exception(shutting_down())
                return future
            self._calls.append((fn, future))
            self._cv.notify_all()
        return future

    def stats(self) -> dict[str, int]:
        with self._cv:
            return {"queue_depth": len(self._waiting), "running": self._running()}

    # ------------------------------------------------------ for subclasses
    def _run(self) -> None:
        raise NotImplementedError

    def _running(self) -> int:
        """How many jobs are being generated now."""
        raise NotImplementedError

    @staticmethod
    def _run_call(fn: Callable[[], Any], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the waiting caller, who maps it to a response
            future.set_exception(exc)

    def _take_calls(self) -> list[tuple[Callable[[], Any], Future]]:
        """Under the lock: the queued calls, emptied."""
        calls = list(self._calls)
        self._calls.clear()
        return calls

    def _refuse_calls(self, calls: list[tuple[Callable[[], Any], Future]]) -> None:
        for _, future in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(shutting_down())

    # ------------------------------------------------------- a job's events
    def _decoder(self, job: Job) -> RowDecoder:
        """The decode core's row decoder for one job: its stop strings, token budget and EOS ids."""
        return RowDecoder(
            self._detokenize,
            max_tokens=job.max_tokens,
            eos=self._eos,
            stop=job.stop,
            prompt_tokens=len(job.ids),
        )

    def _detokenize(self, ids: list[int]) -> str:
        return self.lm.tokenizer.decode(ids, skip_special_tokens=True)

    def _emit(self, job: Job, event: Event) -> None:
        try:
            job.emit(event)
        except Exception:  # the client is gone (its event loop closed): stop working for it
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
                fired=job.fired,
            ),
        )
