"""Everything that is not a completion or the registry: projections, health, metrics, the playground."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from steerlab.errors import SteerlabError
from steerlab.server.errors import from_steerlab
from steerlab.server.projections import token_projections
from steerlab.server.routes_vectors import registry_entry
from steerlab.server.schemas import ProjectionRequest
from steerlab.server.state import ServerState
from steerlab.server.steering_specs import build_steerings

STATIC = Path(__file__).parent / "static"


def misc_routes(state: ServerState) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/steering/projections")
    async def projections(body: ProjectionRequest) -> dict:
        entry = registry_entry(state, body.vector, "vector")
        steering = build_steerings(state.registry, body.steering)
        future = state.scheduler.call(
            lambda: token_projections(
                state.lm,
                entry.item,
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

    @router.get("/health", response_model=None)
    async def health():
        alive = state.scheduler.alive
        body = {
            "status": "ok" if alive else "unavailable",
            "model": state.model_id,
            **state.scheduler.stats(),
            "tokens_per_second": round(state.metrics.tokens_per_second(), 3),
            "vectors": len(state.registry),
            "max_batch": state.config.max_batch,
            "max_tokens": state.config.max_tokens,
        }
        return JSONResponse(body, status_code=200 if alive else 503)

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        return state.metrics.prometheus()

    @router.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return router
