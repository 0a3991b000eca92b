"""The app factory: wires the shared state, middleware, error handlers and the routes of each concern.

Routes live by concern: OpenAI completions (:mod:`.routes_openai`), the vector registry
(:mod:`.routes_vectors`), and projections/health/metrics/the playground (:mod:`.routes_misc`). Handlers
never touch the model: they validate, turn requests into scheduler jobs and await the model thread's
events (:mod:`steerlab.server.scheduler`).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from steerlab.server.config import ServerConfig
from steerlab.server.handlers import install_error_handlers
from steerlab.server.metrics import Metrics
from steerlab.server.middleware import BearerAuth, BodyLimit, BrowserGuard
from steerlab.server.registry import VectorRegistry
from steerlab.server.routes_misc import STATIC, misc_routes
from steerlab.server.routes_openai import openai_routes
from steerlab.server.routes_vectors import FORM_OVERHEAD, UPLOAD_PATH, vector_routes
from steerlab.server.state import ServerState


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
        registry.preload(vectors_dir, persist=not config.ephemeral)
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
    add_middleware(app, config)
    install_error_handlers(app)
    app.include_router(openai_routes(state))
    app.include_router(vector_routes(state))
    app.include_router(misc_routes(state))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def add_middleware(app: FastAPI, config: ServerConfig) -> None:
    """Body limits, then auth (when a key is set), then browser safety outermost (the last added runs first)."""

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
    # outermost (added last): a foreign page's request is refused before auth or its body is read
    app.add_middleware(BrowserGuard, allow_origins=config.allow_origins, allow_hosts=config.allow_hosts)
