"""steerlab steerings per request inside stock vLLM (no fork): an installed plugin plus forward hooks.

* :mod:`.payload`: one request's compiled steering (and conditions) as numbers, and its string form for
  ``extra_args``.
* :mod:`.hooks`: the worker-side hooks that apply them to the right tokens of vLLM's flat batch and decide
  conditions over each request's prompt.
* :mod:`.plugin`: the ``vllm.logits_processors`` entry point: admission checks (HTTP 400) and the hooks,
  in every worker, with no flag and no RPC.
* :mod:`.worker`: the optional ``--worker-extension-cls`` (remove/reinstall the hooks, read which
  conditions fired, via collective_rpc).
* :mod:`.engine`: ``lm.generate(..., engine="vllm")`` on an in-process ``vllm.LLM``.

Importing this package does not import vLLM; only making an engine does.
"""

from steerlab.backends.vllm.payload import EXTRA_ARG, RequestSteering, decode, encode, steering_key

WORKER_EXTENSION = "steerlab.backends.vllm.worker.SteerlabWorkerExtension"

__all__ = ["EXTRA_ARG", "WORKER_EXTENSION", "RequestSteering", "decode", "encode", "steering_key"]
