"""The server's limits in one place (CLI flags map onto these fields one to one)."""

from __future__ import annotations

from dataclasses import dataclass

from steerlab.errors import SteerlabError


@dataclass(frozen=True)
class ServerConfig:
    """Limits and defaults. Every limit turns into a clear HTTP error, never a crash or an endless wait.

    ``max_batch``: sequences decoded together (more wait in the queue); ``max_queue``: waiting requests
    before new ones get 429; ``queue_timeout``: seconds a request may wait for a slot before it gets 503;
    ``max_tokens``: the most tokens one request may ask for (more is a 400); ``default_max_tokens``: used
    when a request names none; ``max_prompt_tokens``: longest prompt; ``max_upload_bytes``: vector files;
    ``max_body_bytes``: JSON request bodies (more is a 413); ``max_vectors``: registry size.

    Browser safety (:class:`steerlab.server.middleware.BrowserGuard`): ``allow_origins`` are origins
    (``scheme://host[:port]``) besides the server's own whose pages may call it; ``allow_hosts`` are
    ``Host`` names (``name`` or ``name:port``) besides the bound address and the loopback names; ``"*"``
    in either turns that check off. ``ephemeral``: uploads and deletes stay in memory even when the app
    was given a vectors folder (otherwise they are written there). ``engine``: ``"torch"`` (steerlab's
    own continuous batching) or ``"vllm"`` (vLLM's, with the steerlab plugin; ``steerlab[vllm]``).
    """

    max_batch: int = 32
    max_queue: int = 256
    queue_timeout: float = 60.0
    max_tokens: int = 512
    default_max_tokens: int = 128
    max_prompt_tokens: int = 4096
    max_upload_bytes: int = 16 * 1024 * 1024
    max_body_bytes: int = 1024 * 1024
    max_vectors: int = 256
    api_key: str | None = None
    allow_origins: tuple[str, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    ephemeral: bool = False
    engine: str = "torch"

    def __post_init__(self) -> None:
        for name in (
            "max_batch",
            "max_queue",
            "max_tokens",
            "default_max_tokens",
            "max_prompt_tokens",
            "max_upload_bytes",
            "max_body_bytes",
            "max_vectors",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SteerlabError(f"server setting {name} must be a positive integer, got {value!r}")
        if self.engine not in ("torch", "vllm"):
            raise SteerlabError(f"engine must be 'torch' or 'vllm', got {self.engine!r}")
        if not self.queue_timeout > 0:
            raise SteerlabError(f"queue_timeout must be > 0 seconds, got {self.queue_timeout!r}")
        if self.default_max_tokens > self.max_tokens:
            object.__setattr__(self, "default_max_tokens", self.max_tokens)
        if self.api_key is not None and not self.api_key.strip():
            raise SteerlabError("api_key is empty; leave it out to disable authentication")
        origins = tuple(_origin(o) for o in self.allow_origins)
        hosts = tuple(_host(h) for h in self.allow_hosts)
        object.__setattr__(self, "allow_origins", origins)
        object.__setattr__(self, "allow_hosts", hosts)


def _origin(text: str) -> str:
    """Normalise an allowed origin: ``*`` or ``scheme://host[:port]``, lowercased, no path."""
    value = str(text).strip().lower().rstrip("/")
    if value == "*":
        return value
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or any(c in rest for c in "/?#@ "):
        raise SteerlabError(
            f"allowed origin {text!r} is not an origin; expected scheme://host[:port] "
            "(e.g. http://localhost:3000) or '*'"
        )
    return value


def _host(text: str) -> str:
    """Normalise an allowed Host name: ``*``, ``name`` (any port) or ``name:port``, lowercased."""
    value = str(text).strip().lower()
    if not value or any(c in value for c in "/?#@ ") or "://" in value:
        raise SteerlabError(
            f"allowed host {text!r} is not a host name; expected name or name:port (e.g. myserver.lan) or '*'"
        )
    return value
