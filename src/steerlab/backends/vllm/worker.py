"""The vLLM worker extension: ``--worker-extension-cls steerlab.backends.vllm.worker.SteerlabWorkerExtension``.

vLLM mixes this class into every worker (each tensor/pipeline-parallel rank, in-process or not). Its
methods are reached with ``collective_rpc``: ``steerlab_install`` puts the per-request steering hooks on
the worker's model (once, after the engine started), ``steerlab_remove`` takes them off (the model is
then exactly as before), ``steerlab_status`` reports what is installed. Requests then steer themselves
through ``extra_args["steerlab"]`` (``vllm_xargs`` over vLLM's OpenAI server).
"""

from __future__ import annotations

from typing import Any


class SteerlabWorkerExtension:
    """Methods vLLM adds to its worker class; they keep their state in one attribute of the worker."""

    def steerlab_install(self) -> int:
        """Install the hooks on this worker's model; returns how many decoder layers are hooked."""
        from vllm.forward_context import get_forward_context

        from steerlab.backends.vllm.hooks import BatchSteerer

        steerer = getattr(self, "_steerlab", None)
        if steerer is None:
            steerer = BatchSteerer(self._steerlab_runner(), get_forward_context)
            self._steerlab = steerer
        return steerer.install()

    def steerlab_remove(self) -> bool:
        """Take the hooks off (requests still carrying steerings then run unsteered)."""
        steerer = getattr(self, "_steerlab", None)
        if steerer is None:
            return False
        steerer.remove()
        self._steerlab = None
        return True

    def steerlab_status(self) -> dict[str, Any]:
        steerer = getattr(self, "_steerlab", None)
        return {"installed": steerer is not None, "width": getattr(steerer, "width", 0)}

    def _steerlab_runner(self) -> Any:
        runner = getattr(self, "model_runner", None)
        if runner is None or not hasattr(runner, "input_batch"):
            raise RuntimeError("steerlab: this vLLM worker has no model runner with an input batch")
        return runner
