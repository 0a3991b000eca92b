"""What the scheduler works on: a :class:`Job` (one sequence to generate) and the :class:`Event` s it
sends back to the request that submitted it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from steerlab.decode import RowDecoder, SamplingParams
from steerlab.engine import Steering
from steerlab.errors import SteerlabError
from steerlab.server.errors import APIError, from_steerlab


@dataclass
class Event:
    """What a job reports back: ``start`` (admitted), ``delta`` (text), ``done`` or ``error``."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: APIError | None = None
    fired: list[bool] | None = None  # done: whether each conditional steering fired on this prompt


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
    decoder: RowDecoder | None = None
    next_token: int = 0  # the token sampled last, fed at the next step
    fired: list[bool] | None = None  # per conditional steering, decided at this job's own prefill

    def cancel(self) -> None:
        """Ask the scheduler to drop this job at the next step boundary (safe from any thread)."""
        self.cancelled = True


def row_error(exc: BaseException, what: str) -> APIError:
    """The error a request gets when its own row failed on the model thread."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, SteerlabError):
        return from_steerlab(exc)
    return APIError(
        500, f"{what} failed for this request: {type(exc).__name__}: {exc}", code="generation_failed"
    )
