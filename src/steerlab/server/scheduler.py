"""Continuous batching: one thread owns the model and decodes every live request in one shared batch.

Requests join and leave between decode steps. A joining group is prefilled on its own (left-padded, with
explicit position ids and its own per-row steering), then its KV cache is stitched into the running batch
(:mod:`steerlab.server.kvcache`). Each decode step feeds one token per row through the model with
per-row steering from the engine (``lm.steer_rows``); rows that finish are dropped. The steering hooks are
installed only for the duration of each forward pass, so the model is unhooked between steps, where
other model work (projections, norm measurements) runs on the same thread.

Sampling, EOS, stop strings and held-back streaming text are the decode core's (:mod:`steerlab.decode`):
each job has a :class:`~steerlab.decode.RowDecoder`.

Isolation: one request's failure never touches another's output. Preparing a job (tokenizing, compiling
its steering) is checked job by job before it joins. If a batched forward pass raises, the cache is
restored to where it was, each row is recomputed alone to find the ones that fail, those end with an
error, and the rest run the step again; every row computes exactly what it computes alone, so the
survivors' outputs are unchanged. Non-finite logits and sampling errors end only their own row.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from steerlab.decode import pick_token
from steerlab.errors import SteerlabError
from steerlab.server import kvcache
from steerlab.server.batch import Batch, BatchModel, Prefilled
from steerlab.server.config import ServerConfig
from steerlab.server.errors import APIError, from_steerlab
from steerlab.server.jobs import Event, Job, row_error
from steerlab.server.metrics import Metrics
from steerlab.server.model_thread import ModelThread, shutting_down

__all__ = ["Event", "Job", "Scheduler"]

log = logging.getLogger("steerlab.server")


class Scheduler(ModelThread):
    """Owns the model on one background thread. ``submit`` jobs; ``call`` runs other model work there."""

    thread_name = "steerlab-scheduler"

    def __init__(self, lm: Any, config: ServerConfig | None = None, metrics: Metrics | None = None) -> None:
        super().__init__(lm, config, metrics)
        self._batch = Batch()
        self._model = BatchModel(lm)
        # Continuous batching needs caches that can be merged; known after the first prefill. Models with
        # sliding-window caches fall back to static batching: a new group starts when the batch is empty.
        self.continuous: bool | None = None
        context = getattr(lm.model.config, "max_position_embeddings", None)
        self.max_context = int(context) if isinstance(context, int) and context > 0 else None

    def _running(self) -> int:
        return len(self._batch)

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        with torch.no_grad():
            while True:
                with self._cv:
                    while not (self._stopping or self._waiting or self._calls or len(self._batch)):
                        self._cv.wait()
                    if self._stopping:
                        break
                    calls = self._take_calls()
                    admitted, expired = self._take_waiting()
                for job in expired:
                    self._fail(
                        job, APIError(503, "timed out waiting for a free decoding slot", code="queue_timeout")
                    )
                for fn, future in calls:
                    self._run_call(fn, future)
                self._guarded(self._drop_cancelled, [])
                if admitted:
                    self._guarded(lambda jobs=admitted: self._admit(jobs), admitted)
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

    def _guarded(self, step: Callable[[], None], joining: list[Job]) -> None:
        """Last resort: a step that failed in a way no single row explains fails the jobs it touched."""
        try:
            step()
        except Exception as exc:
            log.exception("model step failed")
            jobs = list(self._batch.jobs) + list(joining)
            self._batch.clear()
            error = APIError(500, f"generation failed: {type(exc).__name__}: {exc}", code="server_error")
            for job in jobs:
                if not job.finished:
                    self._fail(job, error)

    def _shutdown(self) -> None:
        with self._cv:
            jobs = list(self._waiting) + list(self._batch.jobs)
            self._waiting.clear()
            calls = self._take_calls()
        self._batch.clear()
        for job in jobs:
            self._fail(job, shutting_down())
        self._refuse_calls(calls)

    # ------------------------------------------------------------- helpers
    def _accept(self, job: Job, logits: torch.Tensor, finite: bool) -> bool:
        """Sample ``job``'s next token (kept in ``job.next_token``) from its logits row and feed it to its
        decoder; True when the job is over. A fault in this row (non-finite logits, a sampling error)
        ends this job alone.
        """
        assert job.decoder is not None
        try:
            if not finite:
                cause = (
                    "; its steering is too strong for this model (lower the strength)" if job.steering else ""
                )
                raise APIError(
                    400 if job.steering else 500,
                    f"the model's outputs became non-finite (NaN or infinity) for this request{cause}",
                    param="steering" if job.steering else None,
                    code="non_finite_output",
                )
            token = pick_token(logits, job.sampling)
            delta = job.decoder.push(token)
        except Exception as exc:
            log.warning("request failed while sampling: %s", exc)
            self._fail(job, row_error(exc, "sampling"))
            return True
        job.next_token = token
        if delta:
            self._emit(job, Event("delta", text=delta))
        if job.decoder.done:
            self._finish(job)
            return True
        return False

    def _prepare(self, job: Job) -> APIError | None:
        """Tokenize and check one admitted job on its own; return the error that rejects it."""
        try:
            job.ids = self.lm.encode(job.prompt)
        except SteerlabError as exc:
            return from_steerlab(exc, "prompt")
        except Exception as exc:
            return APIError(
                400, f"the prompt could not be tokenized: {type(exc).__name__}: {exc}", param="prompt"
            )
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
            except Exception as exc:  # e.g. a vector whose recorded defaults are malformed
                return APIError(
                    400,
                    f"this request's steering cannot be applied: {type(exc).__name__}: {exc}",
                    param="steering",
                    code="invalid_steering",
                )
        job.decoder = self._decoder(job)
        return None

    def _drop_cancelled(self) -> None:
        gone = {i for i, job in enumerate(self._batch.jobs) if job.cancelled}
        if gone:
            self.metrics.add("requests_cancelled_total", len(gone))
            self._keep_rows([i for i in range(len(self._batch)) if i not in gone])

    def _keep_rows(self, rows: list[int]) -> None:
        self._batch.keep(rows, cut=bool(self.continuous))

    # ------------------------------------------------------------- prefill
    def _admit(self, admitted: list[Job]) -> None:
        """Prepare, prefill and sample the first token of newly admitted jobs; merge the live ones in."""
        jobs = []
        for job in admitted:
            error = self._prepare(job)
            if error is not None:
                self._fail(job, error)
            else:
                jobs.append(job)
                self._emit(job, Event("start", prompt_tokens=len(job.ids)))
        for group in self._prefill_isolated(jobs):
            self._join(group)

    def _prefill_isolated(self, jobs: list[Job]) -> list[Prefilled]:
        """Prefill ``jobs`` together; if that raises, prefill each alone and fail only those that fail."""
        if not jobs:
            return []
        try:
            group = self._model.prefill(jobs)
        except Exception as exc:
            if len(jobs) == 1:
                log.warning("prefill failed for one request: %s", exc)
                self._fail(jobs[0], row_error(exc, "prefill"))
                return []
            log.warning("batched prefill failed (%s); prefilling its %d requests one by one", exc, len(jobs))
            return [group for job in jobs for group in self._prefill_isolated([job])]
        self.metrics.add("prefills_total")
        self.metrics.add("prompt_tokens_total", int(group.mask.sum()))
        return [group]

    def _join(self, group: Prefilled) -> None:
        """Sample each row's first token; rows still going join the running batch."""
        if self.continuous is None:
            self.continuous = kvcache.is_mergeable(group.cache)
            if not self.continuous:
                log.warning("this model's KV cache cannot be merged: falling back to static batching")
        self.metrics.tokens(len(group.jobs))
        finite = torch.isfinite(group.logits).all(-1).tolist()
        live = []
        for row, job in enumerate(group.jobs):
            if job.cancelled:
                self.metrics.add("requests_cancelled_total")
            elif not self._accept(job, group.logits[row], finite[row]):
                live.append(row)
        if live:
            self._batch.add(group, live, cut=bool(self.continuous))

    # --------------------------------------------------------------- decode
    def _decode_step(self) -> None:
        b = self._batch
        snapshot = kvcache.Snapshot(b.cache)
        try:
            cache, logits = self._model.step(b)
        except Exception as exc:
            snapshot.restore()
            failing = self._model.failing_rows(b, snapshot)
            log.warning(
                "decode step failed (%s: %s); %d of %d rows fail alone",
                type(exc).__name__,
                exc,
                len(failing),
                len(b),
            )
            if not failing:
                raise  # nothing row-specific: _guarded fails the batch
            for row, error in failing.items():
                self._fail(b.jobs[row], row_error(error, "decoding"))
            self._keep_rows([i for i in range(len(b)) if i not in failing])
            if not len(b):
                return
            cache, logits = self._model.step(b)
        self.metrics.add("decode_steps_total")
        self.metrics.tokens(len(b))
        finite = torch.isfinite(logits).all(-1).tolist()
        keep = []
        for row, job in enumerate(b.jobs):
            if job.cancelled:
                self.metrics.add("requests_cancelled_total")
            elif not self._accept(job, logits[row], finite[row]):
                keep.append(row)
        b.advance(cache)
        self._keep_rows(keep)
