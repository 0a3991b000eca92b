"""The entry point vLLM loads for steerlab (group ``vllm.logits_processors``), safe to import anywhere.

vLLM refuses to start when a registered logits processor fails to import. Importing steerlab pulls in
its whole package; should that fail in a vLLM environment (a broken or partial install), this shim still
loads: it serves requests without a steering as usual and refuses steered ones at admission, naming the
import error, instead of taking vLLM down. The real plugin is :mod:`steerlab.backends.vllm.plugin`.
"""

from __future__ import annotations

from typing import Any

from vllm.v1.sample.logits_processor import LogitsProcessor

try:
    from steerlab.backends.vllm.plugin import SteerlabLogitsProcessor
except Exception as _exc:  # any failure to import steerlab must leave vLLM working
    _reason = f"{type(_exc).__name__}: {_exc}"

    class SteerlabLogitsProcessor(LogitsProcessor):  # type: ignore[no-redef]
        """Stand-in when steerlab cannot be imported: refuses steered requests, changes nothing else."""

        @classmethod
        def validate_params(cls, sampling_params: Any) -> None:
            from vllm.exceptions import VLLMValidationError

            if "steerlab" in (getattr(sampling_params, "extra_args", None) or {}):
                raise VLLMValidationError(f"steerlab is installed but cannot be imported ({_reason})")

        def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
            pass

        def apply(self, logits: Any) -> Any:
            return logits

        def is_argmax_invariant(self) -> bool:
            return True

        def update_state(self, batch_update: Any) -> None:
            pass


__all__ = ["SteerlabLogitsProcessor"]
