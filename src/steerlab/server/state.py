"""What every route shares: the model, limits, registry, metrics and the scheduler (one per app)."""

from __future__ import annotations

from typing import Any

from steerlab.server.config import ServerConfig
from steerlab.server.errors import not_found
from steerlab.server.metrics import Metrics
from steerlab.server.registry import VectorRegistry
from steerlab.server.scheduler import Scheduler

MODEL_ALIAS = "steerlab"  # accepted for the served model, whatever it is (the README's examples use it)


class ServerState:
    """Everything the handlers share; one per app (no module-level state)."""

    def __init__(self, lm: Any, config: ServerConfig, registry: VectorRegistry, metrics: Metrics) -> None:
        self.lm = lm
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self.scheduler = _scheduler_class(config)(lm, config, metrics)
        self.model_id = lm.model_id or "steerlab-model"
        self.model_names = {self.model_id, self.model_id.rsplit("/", 1)[-1], MODEL_ALIAS}

    def check_model(self, name: str | None) -> None:
        """A request naming another model is a 404 (no name: the served one)."""
        if name is not None and name not in self.model_names:
            raise not_found(
                f"model '{name}' is not served here; this server serves '{self.model_id}' "
                f"(also accepted as '{MODEL_ALIAS}')",
                param="model",
                code="model_not_found",
            )

    def model_card(self) -> dict[str, Any]:
        return {
            "id": self.model_id,
            "object": "model",
            "created": int(self.metrics.started),
            "owned_by": "steerlab",
            "num_layers": self.lm.num_layers,
            "hidden_size": self.lm.hidden_size,
        }


def _scheduler_class(config: ServerConfig) -> type:
    """steerlab's own continuous batching, or vLLM's with the steerlab plugin (``--engine vllm``)."""
    if config.engine == "vllm":
        from steerlab.server.vllm_scheduler import VLLMScheduler

        return VLLMScheduler
    return Scheduler
