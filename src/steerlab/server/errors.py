"""OpenAI-style error bodies: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

Clients written for the OpenAI API read these fields; the status code says whose fault it was (4xx: the
request; 429/503: the server is busy, retry later). Bad input must never surface as a 500.
"""

from __future__ import annotations

from typing import Any

from steerlab.errors import SteerlabError

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error meant for the client: status code plus an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": TYPES.get(
                    self.status, "invalid_request_error" if self.status < 500 else "server_error"
                ),
                "param": self.param,
                "code": self.code,
            }
        }


def from_steerlab(exc: SteerlabError, param: str | None = None) -> APIError:
    """A library error caused by the request's content is a 400 with the library's own message."""
    return APIError(400, str(exc), code=type(exc).__name__, param=param)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str = "not_found") -> APIError:
    return APIError(404, message, param=param, code=code)


def vector_not_found(name: str, param: str = "name") -> APIError:
    """The one 404 for a registry name that does not exist."""
    return not_found(
        f"no steering vector named '{name}'; GET /v1/steering/vectors lists them",
        param=param,
        code="vector_not_found",
    )
