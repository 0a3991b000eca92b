"""One HTTP request's jobs on the scheduler, and the events they send back to the event loop.

A :class:`Run` submits one job per prompt, turns the model thread's events into an asyncio queue, and
watches the client: when the connection closes (streaming or not) its jobs are cancelled at once, so the
scheduler frees their rows at the next step boundary.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request

from steerlab.decode import SamplingParams, row_seed
from steerlab.engine import Steering
from steerlab.server.errors import APIError
from steerlab.server.jobs import Event, Job
from steerlab.server.schemas import SamplingFields
from steerlab.server.state import ServerState

_DISCONNECTED = -1  # queue tag: the client went away

DEFAULT_TEMPERATURE = 1.0  # OpenAI's default


def sampling_for(req: SamplingFields, choice: int) -> SamplingParams:
    """Choice ``choice``'s sampling settings, by the decode core's one seed rule."""
    temperature = DEFAULT_TEMPERATURE if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    return SamplingParams(temperature=temperature, top_p=top_p, seed=row_seed(req.seed, choice))


class Run:
    """The jobs of one HTTP request and the queue their events arrive on (tagged with the choice index)."""

    def __init__(
        self,
        state: ServerState,
        request: Request,
        prompts: list[str],
        req: SamplingFields,
        max_tokens: int,
        steering: list[Steering],
    ) -> None:
        loop = asyncio.get_running_loop()
        self.state = state
        self.request = request
        self.queue: asyncio.Queue[tuple[int, Event | None]] = asyncio.Queue()
        self.jobs: list[Job] = []
        for i, prompt in enumerate(prompts):

            def emit(event: Event, i: int = i) -> None:
                loop.call_soon_threadsafe(self.queue.put_nowait, (i, event))

            self.jobs.append(
                Job(
                    prompt=prompt,
                    max_tokens=max_tokens,
                    emit=emit,
                    sampling=sampling_for(req, i),
                    stop=req.stops(),
                    steering=steering,
                )
            )
        self.prompt_tokens = [0] * len(prompts)
        self.buffer: list[tuple[int, Event]] = []
        self._watcher: asyncio.Task | None = None

    # ------------------------------------------------------------ lifecycle
    def submit(self) -> None:
        """Queue every job and start watching the connection."""
        try:
            for job in self.jobs:
                self.state.scheduler.submit(job)
        except APIError:
            self.cancel()
            raise
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        """Wait for the client to hang up (the body has been read, so the next message is the disconnect)."""
        try:
            while (await self.request.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # the server could not tell: keep serving; a failed send will end the stream
            return
        self.cancel()
        self.queue.put_nowait((_DISCONNECTED, None))

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()

    def close(self) -> None:
        """The response is over (sent, failed or abandoned): stop its jobs and the watcher."""
        self.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    # --------------------------------------------------------------- events
    async def next(self) -> tuple[int, Event]:
        """The next event; raises if the client went away or the model thread died."""
        while True:
            try:
                i, event = await asyncio.wait_for(self.queue.get(), timeout=1.0)
            except TimeoutError:
                if not self.state.scheduler.alive:
                    raise APIError(503, "the model worker stopped", code="worker_stopped") from None
                continue
            if event is None:
                raise APIError(400, "the client disconnected", code="client_disconnected")
            return i, event

    async def started(self) -> None:
        """Wait until every job is admitted (or raise the first job's error, before any byte is sent)."""
        waiting = set(range(len(self.jobs)))
        while waiting:
            i, event = await self.next()
            if event.kind == "error":
                self.close()
                raise event.error or APIError(500, "generation failed")
            if event.kind == "start":
                self.prompt_tokens[i] = event.prompt_tokens
                waiting.discard(i)
            else:
                self.buffer.append((i, event))

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """Every remaining event until each job is done or failed."""
        open_jobs = set(range(len(self.jobs)))
        while open_jobs:
            i, event = self.buffer.pop(0) if self.buffer else await self.next()
            if event.kind in ("done", "error"):
                open_jobs.discard(i)
            yield i, event

    async def collect(self) -> tuple[list[str], list[str], list[int]]:
        """Texts, finish reasons and completion token counts of every job (a job's error is raised)."""
        n = len(self.jobs)
        texts, reasons, completion = [""] * n, ["length"] * n, [0] * n
        self.fired: list[list[bool] | None] = [None] * n  # per job: its conditional steerings' decisions
        try:
            async for i, event in self.events():
                if event.kind == "delta":
                    texts[i] += event.text
                elif event.kind == "done":
                    reasons[i], completion[i] = event.finish_reason or "stop", event.completion_tokens
                    self.fired[i] = event.fired
                elif event.kind == "error":
                    raise event.error or APIError(500, "generation failed")
        finally:
            self.close()
        return texts, reasons, completion


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def start_run(
    state: ServerState,
    request: Request,
    prompts: list[str],
    req: SamplingFields,
    max_tokens: int,
    steering: list[Steering],
) -> Run:
    """Submit the jobs and wait until all are admitted (errors surface here, before any byte is sent)."""
    run = Run(state, request, prompts, req, max_tokens, steering)
    run.submit()
    try:
        await run.started()
    except BaseException:
        run.close()
        raise
    return run
