"""The vector and condition registries over HTTP: list, show, upload (multipart or raw bytes), delete."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from steerlab.errors import SteerlabError
from steerlab.server.errors import APIError, bad_request, from_steerlab, not_found, vector_not_found
from steerlab.server.registry import Entry, Registry
from steerlab.server.state import ServerState

UPLOAD_PATH = "/v1/steering/vectors"
CONDITIONS_PATH = "/v1/steering/conditions"
FORM_OVERHEAD = 64 * 1024  # multipart framing allowed on top of the file-size limit

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


def registry_entry(state: ServerState, name: str, param: str = "name") -> Entry[Any]:
    """The registered vector ``name``, or the one 404."""
    try:
        return state.registry.get(name)
    except KeyError:
        raise vector_not_found(name, param) from None


async def read_upload(request: Request, limit: int, noun: str = "vector") -> tuple[bytes, str]:
    """The uploaded file's bytes and a name hint, from multipart form data or a raw body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise bad_request(f"send the {noun} file in a form field named 'file'", param="file")
        data = await upload.read(limit + 1)
        await form.close()
        hint = form.get("name")
        hint = hint if isinstance(hint, str) and hint else Path(upload.filename or noun).stem
    elif kind in ("application/octet-stream", ""):
        data = await request.body()
        hint = noun
    else:
        raise APIError(
            415, f"upload a {noun} as multipart/form-data or application/octet-stream, not '{kind}'"
        )
    if len(data) > limit:
        raise APIError(413, f"{noun} file is larger than the limit of {limit} bytes", code="file_too_large")
    return data, hint


def vector_routes(state: ServerState) -> APIRouter:
    """List, show, delete and upload routes for the vectors and for the conditions: one set of routes,
    mounted once per registry, so the two cannot drift apart."""
    router = APIRouter()
    _registry_routes(router, UPLOAD_PATH, state.registry, lambda name: vector_not_found(name), state)
    _registry_routes(
        router,
        CONDITIONS_PATH,
        state.registry.conditions,
        lambda name: not_found(
            f"no condition named '{name}'; GET {CONDITIONS_PATH} lists them", code="condition_not_found"
        ),
        state,
    )
    return router


def _registry_routes(
    router: APIRouter,
    path: str,
    registry: Registry[Any],
    missing: Callable[[str], APIError],
    state: ServerState,
) -> None:
    noun = registry.kind.noun

    def entry(name: str) -> Entry[Any]:
        try:
            return registry.get(name)
        except KeyError:
            raise missing(name) from None

    async def list_items() -> dict:
        return {"object": "list", "data": [e.describe() for e in registry.entries()]}

    async def get_item(name: str) -> dict:
        return entry(name).describe()

    async def delete_item(name: str) -> dict:
        try:
            registry.remove(name)
        except KeyError:
            raise missing(name) from None
        return {"id": name, "object": f"steering.{noun}", "deleted": True}

    async def upload_item(request: Request, name: str | None = None) -> dict:
        data, hint = await read_upload(request, state.config.max_upload_bytes, noun)
        try:
            added = await run_in_threadpool(registry.add_bytes, data, name or hint)
        except SteerlabError as exc:
            raise from_steerlab(exc, "file") from exc
        return added.describe()

    router.add_api_route(path, list_items, methods=["GET"], name=f"list_{noun}s")
    router.add_api_route(path + "/{name}", get_item, methods=["GET"], name=f"get_{noun}")
    router.add_api_route(path + "/{name}", delete_item, methods=["DELETE"], name=f"delete_{noun}")
    router.add_api_route(
        path, upload_item, methods=["POST"], status_code=201, openapi_extra=UPLOAD_BODY, name=f"upload_{noun}"
    )
