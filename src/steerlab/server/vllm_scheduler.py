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
from typing import Any

from steerlab.backends.vllm.engine import encode_steerings, engine_for
from steerlab.decode import LENGTH, STOP
from steerlab.errors import SteerlabError
from steerlab.server.config import ServerConfig
from steerlab.server.errors import APIError, from_steerlab
from steerlab.server.jobs import Event, Job
from steerlab.server.metrics import Metrics
from steerlab.server.model_thread import ModelThread, shutting_down

log = logging.getLogger("steerlab.server")


class VLLMScheduler(ModelThread):
    """Same interface as :class:`steerlab.server.scheduler.Scheduler`; vLLM runs the batch."""

    thread_name = "steerlab-vllm-scheduler"

    def __init__(self, lm: Any, config: ServerConfig | None = None, metrics: Metrics | None = None) -> None:
        super().__init__(lm, config, metrics)
        self._running_jobs: dict[str, Job] = {}
        self._pushed: dict[str, int] = {}
        self._ids = itertools.count()
        self._engine = engine_for(lm, max_num_seqs=self.config.max_batch)

    def _running(self) -> int:
        return len(self._running_jobs)

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._stopping or self._waiting or self._calls or self._running_jobs):
                    self._cv.wait()
                if self._stopping:
                    break
                calls = self._take_calls()
                admitted = list(self._waiting)[: max(self.config.max_batch - len(self._running_jobs), 0)]
                for _ in admitted:
                    self._waiting.popleft()
                self.metrics.set("queue_depth", len(self._waiting))
            for fn, future in calls:
                self._run_call(fn, future)
            try:
                self._drop_cancelled()
                for job in admitted:
                    self._admit(job)
                if self._running_jobs:
                    self._step()
            except Exception as exc:
                log.exception("vLLM step failed")
                error = APIError(500, f"generation failed: {type(exc).__name__}: {exc}", code="server_error")
                for rid, job in list(self._running_jobs.items()):
                    self._abort(rid)
                    self._fail(job, error)
            self.metrics.set("running", len(self._running_jobs))
        self._shutdown()

    def _shutdown(self) -> None:
        with self._cv:
            jobs = list(self._waiting)
            self._waiting.clear()
            calls = self._take_calls()
        for rid, job in list(self._running_jobs.items()):
            self._abort(rid)
            jobs.append(job)
        for job in jobs:
            self._fail(job, shutting_down())
        self._refuse_calls(calls)

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
        job.decoder = self._decoder(job)
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
        self._running_jobs[rid] = job
        self._pushed[rid] = 0
        self._emit(job, Event("start", prompt_tokens=len(job.ids)))

    def _step(self) -> None:
        outputs = self._engine.llm.llm_engine.step()
        for out in outputs:
            job = self._running_jobs.get(out.request_id)
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
                if any(s.condition is not None for s in job.steering):  # decided in vLLM's worker
                    job.fired = self._engine.fired([out.request_id]).get(out.request_id)
                if not out.finished:
                    self._abort(out.request_id)
                self._forget(out.request_id)
                self._finish(job)

    def _drop_cancelled(self) -> None:
        for rid, job in list(self._running_jobs.items()):
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
        self._running_jobs.pop(rid, None)
        self._pushed.pop(rid, None)
