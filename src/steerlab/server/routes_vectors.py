"""The vector and condition registries over HTTP: list, show, upload (multipart or raw bytes), delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from steerlab.errors import SteerlabError
from steerlab.server.errors import APIError, bad_request, from_steerlab, not_found, vector_not_found
from steerlab.server.registry import Entry
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


def registry_entry(state: ServerState, name: str, param: str = "name") -> Entry:
    """The registered vector ``name``, or the one 404."""
    try:
        return state.registry.get(name)
    except KeyError:
        raise vector_not_found(name, param) from None


async def read_upload(request: Request, limit: int) -> tuple[bytes, str]:
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


def vector_routes(state: ServerState) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/steering/vectors")
    async def list_vectors() -> dict:
        return {"object": "list", "data": [e.describe() for e in state.registry.entries()]}

    @router.get("/v1/steering/vectors/{name}")
    async def get_vector(name: str) -> dict:
        return registry_entry(state, name).describe()

    @router.delete("/v1/steering/vectors/{name}")
    async def delete_vector(name: str) -> dict:
        try:
            state.registry.remove(name)
        except KeyError:
            raise vector_not_found(name) from None
        return {"id": name, "object": "steering.vector", "deleted": True}

    @router.post(UPLOAD_PATH, status_code=201, openapi_extra=UPLOAD_BODY)
    async def upload_vector(request: Request, name: str | None = None) -> dict:
        data, hint = await read_upload(request, state.config.max_upload_bytes)
        try:
            entry = await run_in_threadpool(state.registry.add_bytes, data, name or hint)
        except SteerlabError as exc:
            raise from_steerlab(exc, "file") from exc
        return entry.describe()

    conditions = state.registry.conditions

    def condition_entry(name: str) -> Any:
        try:
            return conditions.get(name)
        except KeyError:
            raise not_found(
                f"no condition named '{name}'; GET {CONDITIONS_PATH} lists them", code="condition_not_found"
            ) from None

    @router.get(CONDITIONS_PATH)
    async def list_conditions() -> dict:
        return {"object": "list", "data": [e.describe() for e in conditions.entries()]}

    @router.get(CONDITIONS_PATH + "/{name}")
    async def get_condition(name: str) -> dict:
        return condition_entry(name).describe()

    @router.delete(CONDITIONS_PATH + "/{name}")
    async def delete_condition(name: str) -> dict:
        condition_entry(name)
        try:
            conditions.remove(name)
        except KeyError:
            raise not_found(f"no condition named '{name}'", code="condition_not_found") from None
        return {"id": name, "object": "steering.condition", "deleted": True}

    @router.post(CONDITIONS_PATH, status_code=201, openapi_extra=UPLOAD_BODY)
    async def upload_condition(request: Request, name: str | None = None) -> dict:
        data, hint = await read_upload(request, state.config.max_upload_bytes)
        try:
            entry = await run_in_threadpool(conditions.add_bytes, data, name or hint)
        except SteerlabError as exc:
            raise from_steerlab(exc, "file") from exc
        return entry.describe()

    return router
