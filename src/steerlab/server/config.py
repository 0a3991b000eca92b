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
        if not self.queue_timeout > 0:
            raise SteerlabError(f"queue_timeout must be > 0 seconds, got {self.queue_timeout!r}")
        if self.default_max_tokens > self.max_tokens:
            object.__setattr__(self, "default_max_tokens", self.max_tokens)
        if self.api_key is not None and not self.api_key.strip():
            raise SteerlabError("api_key is empty; leave it out to disable authentication")
