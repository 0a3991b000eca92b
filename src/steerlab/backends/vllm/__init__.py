"""steerlab steerings per request inside stock vLLM (no fork): a worker extension plus forward hooks.

* :mod:`.payload`: one request's compiled steering as numbers, and its string form for ``extra_args``.
* :mod:`.hooks`: the worker-side hooks that apply them to the right tokens of vLLM's flat batch.
* :mod:`.worker`: the ``--worker-extension-cls`` vLLM mixes into each worker (install via collective_rpc).
* :mod:`.engine`: ``lm.generate(..., engine="vllm")`` on an in-process ``vllm.LLM``.

Importing this package does not import vLLM; only making an engine does.
"""

from steerlab.backends.vllm.payload import EXTRA_ARG, RequestSteering, decode, encode, steering_key

WORKER_EXTENSION = "steerlab.backends.vllm.worker.SteerlabWorkerExtension"

__all__ = ["EXTRA_ARG", "WORKER_EXTENSION", "RequestSteering", "decode", "encode", "steering_key"]
