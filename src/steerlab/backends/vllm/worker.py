"""The vLLM worker extension: ``--worker-extension-cls steerlab.backends.vllm.worker.SteerlabWorkerExtension``.

vLLM mixes this class into every worker (each tensor/pipeline-parallel rank, in-process or not). Its
methods are reached with ``collective_rpc``: ``steerlab_install`` puts the per-request steering hooks on
the worker's model, ``steerlab_remove`` takes them off (the model is then exactly as before),
``steerlab_status`` reports what is installed and ``steerlab_fired`` which conditions fired per request.
Requests then steer themselves through ``extra_args["steerlab"]`` (``vllm_xargs`` over vLLM's OpenAI
server). With steerlab's plugin installed (:mod:`.plugin`) none of this is needed to steer; the extension
remains the way to take the hooks off and to read per-request condition decisions by request id.
"""

from __future__ import annotations

from typing import Any

from steerlab.backends.vllm.payload import EXTRA_ARG


class RunnerSource:
    """The steered requests of a vLLM model runner's next batch, with their state kept by request id."""

    knows_request_ids = True  # the plugin leaves such a source in place (it also answers steerlab_fired)

    def __init__(self, runner: Any, decoder: Any) -> None:
        self.runner = runner
        self.decoder = decoder
        self.requests: dict[str, tuple[Any, Any]] = {}  # req id -> (its extra_args string, LiveRequest)

    def __call__(self) -> list[tuple[int, Any]]:
        runner = self.runner
        out = []
        for i, req_id in enumerate(runner.input_batch.req_ids):
            state = runner.requests.get(req_id) if req_id is not None else None
            extra = getattr(getattr(state, "sampling_params", None), "extra_args", None) or {}
            text = extra.get(EXTRA_ARG)
            if text is None:
                continue
            known = self.requests.get(req_id)
            if known is None or known[0] is not text:
                if len(self.requests) >= 1024:
                    self.requests = {k: v for k, v in self.requests.items() if k in runner.requests}
                known = (text, self.decoder.live(text, state.num_prompt_tokens, req_id))
                self.requests[req_id] = known
            if known[1] is not None:
                out.append((i, known[1]))
        return out

    def fired(self) -> dict[str, list[bool] | None]:
        return {
            rid: live.fired() for rid, (_, live) in self.requests.items() if live and live.steering.reports
        }


class SteerlabWorkerExtension:
    """Methods vLLM adds to its worker class; they keep their state in one attribute of the worker."""

    def steerlab_install(self) -> int:
        """Install the hooks on this worker's model; returns how many decoder layers are hooked."""
        from vllm.forward_context import get_forward_context

        from steerlab.backends.vllm.hooks import steerer_for

        runner = self._steerlab_runner()
        steerer = steerer_for(runner.model, get_forward_context)
        source = getattr(self, "_steerlab", None)
        if source is None or source.runner is not runner:
            source = RunnerSource(runner, steerer.decoder)
            self._steerlab = source
        steerer.source = source  # it knows request ids (for steerlab_fired); the plugin's rows are the same
        return steerer.install()

    def steerlab_remove(self) -> bool:
        """Take the hooks off (requests still carrying steerings then run unsteered)."""
        steerer = self._steerlab_steerer()
        if steerer is None or not steerer.installed:
            return False
        steerer.remove()
        return True

    def steerlab_status(self) -> dict[str, Any]:
        steerer = self._steerlab_steerer()
        installed = steerer is not None and steerer.installed
        return {"installed": installed, "width": steerer.width if steerer is not None else 0}

    def steerlab_fired(self) -> dict[str, list[bool] | None]:
        """Per steered request id seen by this worker (internal ids): whether each conditional steering
        fired, in order (None while its prompt is still being prefilled)."""
        source = getattr(self, "_steerlab", None)
        return source.fired() if source is not None else {}

    def _steerlab_steerer(self) -> Any:
        from steerlab.backends.vllm.hooks import ATTRIBUTE, find_layers

        return getattr(find_layers(self._steerlab_runner().model), ATTRIBUTE, None)

    def _steerlab_runner(self) -> Any:
        runner = getattr(self, "model_runner", None)
        if runner is None or not hasattr(runner, "input_batch"):
            raise RuntimeError("steerlab: this vLLM worker has no model runner with an input batch")
        return runner
