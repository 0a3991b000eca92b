"""Plain ASGI middleware: browser safety (Origin/Host), bearer-token auth and request-body size limits,
all answered in OpenAI style.

They sit outside FastAPI's routing so that every endpoint is covered the same way, including unknown
paths and bodies that would otherwise be read before any handler could refuse them.
"""

from __future__ import annotations

import hmac
import ipaddress
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


# ------------------------------------------------------------------------------- browser safety
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "authorization, content-type"


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"name:port"`` / ``"[v6]:port"`` / ``"name"`` -> ``(name, port)``, lowercased; None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else ""
    else:
        name, _, port_text = value.partition(":")
        if ":" in port_text:
            return None  # an unbracketed IPv6 address is not a valid Host header
    if not name or any(c in name for c in "/?#@ "):
        return None
    if not port_text:
        return name, None
    if not port_text.isdigit() or int(port_text) > 65535:
        return None
    return name, int(port_text)


def is_loopback(name: str) -> bool:
    """``localhost`` or a loopback IP address (the names a DNS-rebinding page would pretend to be)."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _netloc(name: str, port: int | None) -> str:
    shown = f"[{name}]" if ":" in name else name
    return shown if port is None else f"{shown}:{port}"


class BrowserGuard:
    """Refuse what a web page in the user's browser could make it do: cross-origin calls, DNS rebinding.

    * ``Origin``: a request that carries one (browsers add it to cross-origin and to state-changing
      requests) must come from the server's own origin -- the ``Host`` it was reached by, or
      ``http://localhost|127.0.0.1|[::1]:PORT`` -- or from ``allow_origins``. Requests without ``Origin``
      (curl, SDKs, server-side clients) are not browser pages and pass. ``Origin: null`` (sandboxed
      frames, ``file://`` pages) is refused.
    * ``Host``: on a connection that arrived at a loopback address, the ``Host`` name must be a loopback
      name, the bound address or in ``allow_hosts`` (any port: SSH tunnels and proxies remap ports, and a
      rebinding attack changes the name, not the port). Connections to a non-loopback address are not
      checked unless ``allow_hosts`` is given, because a LAN server's clients use names the server
      cannot know; such servers should use ``--api-key``.

    Allowed foreign origins also get CORS headers (and preflight answers) so their pages can read replies.
    """

    def __init__(self, app: ASGIApp, allow_origins: tuple[str, ...] = (), allow_hosts: tuple[str, ...] = ()):
        self.app = app
        self.allow_origins = frozenset(o.lower().rstrip("/") for o in allow_origins)
        self.allow_hosts = frozenset(h.lower() for h in allow_hosts)

    def _host_ok(self, host: str | None, server: tuple[str, int] | None) -> bool:
        if "*" in self.allow_hosts or host is None:
            return True
        parsed = split_host(host)
        if parsed is None:
            return False
        name, _port = parsed
        if host.strip().lower() in self.allow_hosts or _netloc(name, None) in self.allow_hosts:
            return True
        bound = (server[0] or "").lower() if server else None
        if bound is not None and not is_loopback(bound) and not self.allow_hosts:
            return True
        return is_loopback(name) or (bound is not None and name == bound.strip("[]"))

    def _own_origins(self, host: str | None, server: tuple[str, int] | None) -> set[str]:
        own = set()
        if host is not None:
            own |= {f"http://{host.strip().lower()}", f"https://{host.strip().lower()}"}
        if server:
            port = server[1]
            for name in (*LOOPBACK_NAMES, (server[0] or "").lower()):
                if name:
                    own.add(f"http://{_netloc(name, port)}")
                    if port == 80:
                        own.add(f"http://{_netloc(name, None)}")
        return own

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        server = scope.get("server")
        host = _header(scope, b"host")
        if not self._host_ok(host, server):
            await send_error(
                send,
                APIError(
                    403,
                    f"Host header {host!r} is not a name this server answers to (a page on another site may "
                    "be trying to reach it through DNS rebinding); start the server with --allow-host NAME "
                    "to allow it",
                    code="host_not_allowed",
                ),
            )
            return
        origin = _header(scope, b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        normal = origin.strip().lower().rstrip("/")
        listed = "*" in self.allow_origins or normal in self.allow_origins
        if not listed and normal not in self._own_origins(host, server):
            await send_error(
                send,
                APIError(
                    403,
                    f"cross-origin request refused: pages from {origin!r} may not call this server; start it "
                    "with --allow-origin ORIGIN to allow a web app you trust",
                    code="origin_not_allowed",
                ),
            )
            return
        if not listed:  # same origin: nothing to add
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await self._preflight(send, origin)
            return

        async def with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_cors)

    @staticmethod
    async def _preflight(send: Callable, origin: str) -> None:
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", CORS_METHODS.encode()),
            (b"access-control-allow-headers", CORS_HEADERS.encode()),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
