"""Plain ASGI middleware: bearer-token auth and request-body size limits, both answered in OpenAI style.

They sit outside FastAPI's routing so that every endpoint is covered the same way, including unknown
paths and bodies that would otherwise be read before any handler could refuse them.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException

from steerlab.server.errors import APIError

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]


async def send_error(send: Callable, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class BearerAuth:
    """Require ``Authorization: Bearer <key>`` on every HTTP path except the public ones (the page shell)."""

    def __init__(self, app: ASGIApp, api_key: str, public: Callable[[str], bool]) -> None:
        self.app = app
        self.key = api_key.encode()
        self.public = public

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or self.public(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"authorization") or ""
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
            await send_error(
                send,
                APIError(
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer <key>'",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                ),
            )
            return
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body without (or with a lying) Content-Length grows too big."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodyLimit:
    """Refuse bodies over ``limit_for(path)`` bytes with 413, before or while they are read."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await send_error(send, APIError(400, "Content-Length is not a number"))
                return
            if size > limit:
                await send_error(
                    send,
                    APIError(
                        413,
                        f"request body of {size} bytes is over the limit of {limit} bytes",
                        code="body_too_large",
                    ),
                )
                return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)
