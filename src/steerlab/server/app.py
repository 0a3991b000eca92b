"""The FastAPI app: OpenAI-compatible completions with per-request steering, the vector registry, the
projection endpoint, health/metrics and the playground page.

Handlers never touch the model: they validate, turn the request into scheduler jobs, and await the
events the model thread sends back (:mod:`steerlab.server.scheduler`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from steerlab.engine import Steering
from steerlab.errors import SteerlabError
from steerlab.sampling import SamplingParams
from steerlab.server.config import ServerConfig
from steerlab.server.errors import APIError, bad_request, from_steerlab, not_found
from steerlab.server.metrics import Metrics
from steerlab.server.middleware import BearerAuth, BodyLimit
from steerlab.server.projections import token_projections
from steerlab.server.prompts import chat_prompt
from steerlab.server.registry import VectorRegistry
from steerlab.server.scheduler import Event, Job, Scheduler
from steerlab.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ProjectionRequest,
    SamplingFields,
)
from steerlab.server.steering_specs import build_steerings

log = logging.getLogger("steerlab.server")
STATIC = Path(__file__).parent / "static"
UPLOAD_PATH = "/v1/steering/vectors"
FORM_OVERHEAD = 64 * 1024
COMPLETION_DEFAULT_TOKENS = 16  # OpenAI's default for /v1/completions


class ServerState:
    """Everything the handlers share; one per app (no module-level state)."""

    def __init__(self, lm: Any, config: ServerConfig, registry: VectorRegistry, metrics: Metrics) -> None:
        self.lm = lm
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self.scheduler = Scheduler(lm, config, metrics)
        self.model_id = lm.model_id or "steerlab-model"
        self.model_names = {self.model_id, self.model_id.rsplit("/", 1)[-1]}


# ------------------------------------------------------------------ request -> jobs
def _check_common(state: ServerState, req: SamplingFields, max_tokens: int | None) -> int:
    if req.model is not None and req.model not in state.model_names:
        raise not_found(
            f"model '{req.model}' is not served here; this server serves '{state.model_id}'",
            param="model",
            code="model_not_found",
        )
    tokens = state.config.default_max_tokens if max_tokens is None else max_tokens
    if tokens > state.config.max_tokens:
        raise bad_request(
            f"max_tokens is {tokens}; this server allows at most {state.config.max_tokens}",
            param="max_tokens",
        )
    return tokens


def _sampling(req: SamplingFields, index: int = 0) -> SamplingParams:
    temperature = 1.0 if req.temperature is None else req.temperature
    seed = None if req.seed is None else req.seed + index
    return SamplingParams(temperature=temperature, top_p=1.0 if req.top_p is None else req.top_p, seed=seed)


class Run:
    """The jobs of one HTTP request and the queue their events arrive on (tagged with the choice index)."""

    def __init__(
        self,
        state: ServerState,
        prompts: list[str],
        req: SamplingFields,
        max_tokens: int,
        steering: list[Steering],
    ) -> None:
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self.jobs: list[Job] = []
        for i, prompt in enumerate(prompts):

            def emit(event: Event, i: int = i) -> None:
                loop.call_soon_threadsafe(self.queue.put_nowait, (i, event))

            self.jobs.append(
                Job(
                    prompt=prompt,
                    max_tokens=max_tokens,
                    emit=emit,
                    sampling=_sampling(req, i),
                    stop=req.stops(),
                    steering=steering,
                )
            )
        self.state = state
        self.prompt_tokens = [0] * len(prompts)
        self.buffer: list[tuple[int, Event]] = []

    def submit(self) -> None:
        try:
            for job in self.jobs:
                self.state.scheduler.submit(job)
        except APIError:
            self.cancel()
            raise

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()

    async def next(self, request: Request, *, poll_disconnect: bool = True) -> tuple[int, Event]:
        """The next event; raises 503 if the model thread died, cancels the jobs if the client went away.

        While a streaming response is being sent, Starlette itself watches for the disconnect (and cancels
        the stream), so polling is only done before the response starts.
        """
        while True:
            try:
                return await asyncio.wait_for(self.queue.get(), timeout=1.0)
            except TimeoutError:
                if poll_disconnect and await request.is_disconnected():
                    self.cancel()
                    raise APIError(400, "the client disconnected", code="client_disconnected") from None
                if not self.state.scheduler.alive:
                    raise APIError(503, "the model worker stopped", code="worker_stopped") from None

    async def started(self, request: Request) -> None:
        """Wait until every job is admitted (or raise the first job's error, before any byte is sent)."""
        waiting = set(range(len(self.jobs)))
        while waiting:
            i, event = await self.next(request)
            if event.kind == "error":
                self.cancel()
                raise event.error or APIError(500, "generation failed")
            if event.kind == "start":
                self.prompt_tokens[i] = event.prompt_tokens
                waiting.discard(i)
            else:
                self.buffer.append((i, event))

    async def events(self, request: Request, *, streaming: bool = False) -> AsyncIterator[tuple[int, Event]]:
        open_jobs = set(range(len(self.jobs)))
        while self.buffer:
            i, event = self.buffer.pop(0)
            if event.kind in ("done", "error"):
                open_jobs.discard(i)
            yield i, event
        while open_jobs:
            i, event = await self.next(request, poll_disconnect=not streaming)
            if event.kind in ("done", "error"):
                open_jobs.discard(i)
            yield i, event


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def _collect(run: Run, request: Request) -> tuple[list[str], list[str], list[int]]:
    n = len(run.jobs)
    texts, reasons, completion = [""] * n, ["length"] * n, [0] * n
    async for i, event in run.events(request):
        if event.kind == "delta":
            texts[i] += event.text
        elif event.kind == "done":
            reasons[i], completion[i] = event.finish_reason or "stop", event.completion_tokens
        elif event.kind == "error":
            run.cancel()
            raise event.error or APIError(500, "generation failed")
    return texts, reasons, completion


async def _stream(run: Run, request: Request, make_chunk, usage_chunk) -> AsyncIterator[bytes]:
    completion = [0] * len(run.jobs)
    try:
        async for i, event in run.events(request, streaming=True):
            if event.kind == "delta":
                yield _sse(make_chunk(i, event.text, None))
            elif event.kind == "done":
                completion[i] = event.completion_tokens
                yield _sse(make_chunk(i, None, event.finish_reason or "stop"))
            elif event.kind == "error":
                yield _sse((event.error or APIError(500, "generation failed")).body())
                return
        if usage_chunk is not None:
            yield _sse(usage_chunk(_usage(sum(run.prompt_tokens), sum(completion))))
        yield b"data: [DONE]\n\n"
    except APIError as exc:  # the headers are sent already: report in-band, as OpenAI does
        yield _sse(exc.body())
    finally:
        run.cancel()


# ------------------------------------------------------------------------- the app
def create_app(
    lm: Any,
    *,
    config: ServerConfig | None = None,
    registry: VectorRegistry | None = None,
    vectors_dir: str | Path | None = None,
) -> FastAPI:
    """Build the app for ``lm``. The model thread starts and stops with the app's lifespan."""
    config = config or ServerConfig()
    registry = registry or VectorRegistry(lm, config.max_vectors)
    if vectors_dir is not None:
        registry.preload(vectors_dir)
    state = ServerState(lm, config, registry, Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(state.scheduler.stop)

    app = FastAPI(
        title="steerlab server",
        version="1",
        description="OpenAI-compatible completions with per-request activation steering.",
        lifespan=lifespan,
    )
    app.state.steerlab = state

    def public(path: str) -> bool:
        return path == "/" or path.startswith("/static/")

    app.add_middleware(
        BodyLimit,
        limit_for=lambda p: (
            config.max_upload_bytes + FORM_OVERHEAD if p == UPLOAD_PATH else config.max_body_bytes
        ),
    )
    if config.api_key:
        app.add_middleware(BearerAuth, api_key=config.api_key, public=public)

    _install_error_handlers(app)
    _add_openai_routes(app, state)
    _add_registry_routes(app, state)
    _add_ops_routes(app, state)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return JSONResponse(APIError(400, "the request body is not valid JSON").body(), status_code=400)
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "body"
        message = f"invalid request: {where}: {first.get('msg', 'malformed')}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return JSONResponse(APIError(400, message, param=where).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        error = APIError(exc.status_code, message)
        return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(SteerlabError)
    async def library_error(request: Request, exc: SteerlabError) -> JSONResponse:
        error = from_steerlab(exc)
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        error = APIError(500, f"internal error: {type(exc).__name__}", code="server_error")
        return JSONResponse(error.body(), status_code=500)


def _add_openai_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict:
        if model_id not in state.model_names:
            raise not_found(f"model '{model_id}' is not served here", param="model", code="model_not_found")
        return _model_card(state)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        if body.logprobs or body.top_logprobs:
            raise bad_request("logprobs are not supported by this server", param="logprobs")
        max_tokens = _check_common(state, body, body.max_completion_tokens or body.max_tokens)
        steering = build_steerings(state.registry, body.steering)
        prompt = chat_prompt(state.lm, body.messages)
        run = Run(state, [prompt], body, max_tokens, steering)
        run.submit()
        await run.started(request)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        base = {"id": cid, "created": created, "model": state.model_id, "system_fingerprint": None}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def chunk(i: int, text: str | None, finish: str | None) -> dict:
                delta = {} if text is None else {"content": text}
                return {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}],
                }

            def usage_chunk(usage: dict) -> dict:
                return {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}

            async def body_iter() -> AsyncIterator[bytes]:
                yield _sse(
                    {
                        **base,
                        "object": "chat.completion.chunk",
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": ""},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ],
                    }
                )
                async for part in _stream(run, request, chunk, usage_chunk if include_usage else None):
                    yield part

            return StreamingResponse(
                body_iter(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        texts, reasons, completion = await _collect(run, request)
        return {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": texts[0]},
                    "logprobs": None,
                    "finish_reason": reasons[0],
                }
            ],
            "usage": _usage(run.prompt_tokens[0], completion[0]),
        }

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request):
        if body.logprobs is not None:
            raise bad_request("logprobs are not supported by this server", param="logprobs")
        if body.suffix:
            raise bad_request("suffix (insertion) is not supported by this server", param="suffix")
        default = min(COMPLETION_DEFAULT_TOKENS, state.config.max_tokens)
        max_tokens = _check_common(state, body, default if body.max_tokens is None else body.max_tokens)
        steering = build_steerings(state.registry, body.steering)
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if len(prompts) > state.config.max_batch:
            raise bad_request(f"at most {state.config.max_batch} prompts per request", param="prompt")
        run = Run(state, prompts, body, max_tokens, steering)
        run.submit()
        await run.started(request)
        cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        base = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": state.model_id,
            "system_fingerprint": None,
        }
        echo = bool(body.echo)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def chunk(i: int, text: str | None, finish: str | None) -> dict:
                return {
                    **base,
                    "choices": [{"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}],
                }

            def usage_chunk(usage: dict) -> dict:
                return {**base, "choices": [], "usage": usage}

            async def body_iter() -> AsyncIterator[bytes]:
                if echo:
                    for i, p in enumerate(prompts):
                        yield _sse(chunk(i, p, None))
                async for part in _stream(run, request, chunk, usage_chunk if include_usage else None):
                    yield part

            return StreamingResponse(
                body_iter(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        texts, reasons, completion = await _collect(run, request)
        return {
            **base,
            "choices": [
                {
                    "index": i,
                    "text": (prompts[i] if echo else "") + texts[i],
                    "logprobs": None,
                    "finish_reason": reasons[i],
                }
                for i in range(len(prompts))
            ],
            "usage": _usage(sum(run.prompt_tokens), sum(completion)),
        }


def _model_card(state: ServerState) -> dict:
    lm = state.lm
    return {
        "id": state.model_id,
        "object": "model",
        "created": int(state.metrics.started),
        "owned_by": "steerlab",
        "num_layers": lm.num_layers,
        "hidden_size": lm.hidden_size,
    }


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "safetensors (steerlab), GGUF control vector or .svec",
                        },
                        "name": {"type": "string", "maxLength": 64, "description": "suggested name"},
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _add_registry_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v1/steering/vectors")
    async def list_vectors() -> dict:
        return {"object": "list", "data": [e.describe() for e in state.registry.entries()]}

    @app.get("/v1/steering/vectors/{name}")
    async def get_vector(name: str) -> dict:
        try:
            return state.registry.get(name).describe()
        except KeyError:
            raise not_found(
                f"no steering vector named '{name}'", param="name", code="vector_not_found"
            ) from None

    @app.delete("/v1/steering/vectors/{name}")
    async def delete_vector(name: str) -> dict:
        try:
            state.registry.remove(name)
        except KeyError:
            raise not_found(
                f"no steering vector named '{name}'", param="name", code="vector_not_found"
            ) from None
        return {"id": name, "object": "steering.vector", "deleted": True}

    @app.post(UPLOAD_PATH, status_code=201, openapi_extra=UPLOAD_BODY)
    async def upload_vector(request: Request, name: str | None = None) -> dict:
        data, hint = await _read_upload(request, state.config.max_upload_bytes)
        hint = name or hint
        try:
            entry = await run_in_threadpool(state.registry.add_bytes, data, hint)
        except SteerlabError as exc:
            raise from_steerlab(exc, "file") from exc
        return entry.describe()

    @app.post("/v1/steering/projections")
    async def projections(body: ProjectionRequest) -> dict:
        try:
            entry = state.registry.get(body.vector)
        except KeyError:
            raise not_found(
                f"no steering vector named '{body.vector}'", param="vector", code="vector_not_found"
            ) from None
        steering = build_steerings(state.registry, body.steering)
        future = state.scheduler.call(
            lambda: token_projections(
                state.lm,
                entry.vector,
                body.text,
                prompt=body.prompt,
                chat=body.chat,
                layer=body.layer,
                steering=steering,
                max_tokens=state.config.max_prompt_tokens,
            )
        )
        try:
            result = await asyncio.wrap_future(future)
        except SteerlabError as exc:
            raise from_steerlab(exc) from exc
        return {"vector": entry.name, **result}


async def _read_upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The uploaded file's bytes and a name hint, from multipart form data or a raw body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise bad_request("send the vector file in a form field named 'file'", param="file")
        data = await upload.read(limit + 1)
        await form.close()
        hint = form.get("name")
        hint = hint if isinstance(hint, str) and hint else Path(upload.filename or "vector").stem
    elif kind in ("application/octet-stream", ""):
        data = await request.body()
        hint = "vector"
    else:
        raise APIError(
            415, f"upload a vector as multipart/form-data or application/octet-stream, not '{kind}'"
        )
    if len(data) > limit:
        raise APIError(413, f"vector file is larger than the limit of {limit} bytes", code="file_too_large")
    return data, hint


def _add_ops_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health", response_model=None)
    async def health():
        stats = state.scheduler.stats()
        alive = state.scheduler.alive
        body = {
            "status": "ok" if alive else "unavailable",
            "model": state.model_id,
            **stats,
            "tokens_per_second": round(state.metrics.tokens_per_second(), 3),
            "vectors": len(state.registry),
            "max_batch": state.config.max_batch,
            "max_tokens": state.config.max_tokens,
        }
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        return state.metrics.prometheus()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")
