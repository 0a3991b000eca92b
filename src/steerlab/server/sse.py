"""Server-sent events for streamed completions: one helper for every streaming route.

A route supplies how a text delta, a finish and the usage look in its own chunk format; this module
turns a :class:`~steerlab.server.runs.Run`'s events into ``data: ...`` lines, reports errors in-band once
the headers are out (as OpenAI does), ends with ``data: [DONE]``, and always releases the run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi.responses import StreamingResponse

from steerlab.server.errors import APIError
from steerlab.server.runs import Run, usage

ChunkFn = Callable[[int, str | None, str | None], dict]  # (choice, text delta, finish reason) -> chunk
UsageFn = Callable[[dict[str, int]], dict]


def sse(payload: Any) -> bytes:
    """One event line."""
    return f"data: {json.dumps(payload)}\n\n".encode()


async def _events(run: Run, chunk: ChunkFn, usage_chunk: UsageFn | None, first: Iterable[dict]):
    completion = [0] * len(run.jobs)
    try:
        for payload in first:
            yield sse(payload)
        async for i, event in run.events():
            if event.kind == "delta":
                yield sse(chunk(i, event.text, None))
            elif event.kind == "done":
                completion[i] = event.completion_tokens
                finish = chunk(i, None, event.finish_reason or "stop")
                if event.fired:  # a conditional steering: say whether its condition fired for this choice
                    finish["steering_report"] = [
                        {"index": i, "conditions": [{"fired": f} for f in event.fired]}
                    ]
                yield sse(finish)
            elif event.kind == "error":
                yield sse((event.error or APIError(500, "generation failed")).body())
                return
        if usage_chunk is not None:
            yield sse(usage_chunk(usage(sum(run.prompt_tokens), sum(completion))))
        yield b"data: [DONE]\n\n"
    except APIError as exc:  # the headers are sent already: report in-band
        yield sse(exc.body())
    finally:
        run.close()


def stream_response(
    run: Run, chunk: ChunkFn, usage_chunk: UsageFn | None = None, first: Iterable[dict] = ()
) -> StreamingResponse:
    """The streaming response for ``run``: ``first`` chunks, then one chunk per delta and finish."""
    body: AsyncIterator[bytes] = _events(run, chunk, usage_chunk, first)
    return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
