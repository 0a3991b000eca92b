"""``engine="llamacpp"``: steered generation through llama.cpp's control-vector API.

llama.cpp decodes small models several times faster than transformers on a CPU, and its control
vectors are exactly steerlab's ``add`` on the residual stream: ``direction.N`` is added to the output of
block ``N`` at every position.  So for that one kind of steering this engine hands the raw per-layer
vectors (strength baked in by :func:`steerlab.interop.export.baked_add`, bit-identical to the runtime
delta) to ``llama_set_adapter_cvec`` (older name: ``llama_apply_adapter_cvec``) and
decodes with llama.cpp.  Everything else -- other ops, sites, position policies, per-row steering, layer
0 -- is refused with a message saying why; use the torch engine for those.

It needs the model as a GGUF file (an ``LM`` loaded from one, or a path) and the optional dependency
``llama-cpp-python`` (``pip install 'steerlab[llamacpp]'``; it compiles from source).  llama.cpp runs the
file's own (quantised) weights, while steerlab's torch engine runs them dequantised to float32, so the
two agree closely but not bit for bit (see ``docs/interop.md`` for the measured agreement).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steerlab.decode import Generation, RowDecoder, drive, eos_token_ids
from steerlab.decode.request import batch_of
from steerlab.errors import ModelError, SteeringError
from steerlab.interop.export import as_numpy, baked_add

if TYPE_CHECKING:
    from steerlab.lm import LM

__all__ = ["LlamaCppEngine", "generate_llamacpp", "llama_cpp_available"]

INSTALL_HINT = (
    "engine='llamacpp' needs llama-cpp-python: pip install 'steerlab[llamacpp]' (it compiles llama.cpp; "
    'on CPUs with AMX build with CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF '
    '-DGGML_AMX_TILE=OFF")'
)


def llama_cpp_available() -> bool:
    """Whether ``llama_cpp`` can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ModelError(f"{INSTALL_HINT} ({exc})") from exc
    return llama_cpp


def _set_cvec_fn(llama_cpp: Any) -> Callable[..., int]:
    """The control-vector setter under its current or its pre-rename name."""
    for name in ("llama_set_adapter_cvec", "llama_apply_adapter_cvec", "llama_control_vector_apply"):
        fn = getattr(llama_cpp, name, None)
        if fn is not None:
            return fn
    raise ModelError("this llama-cpp-python exposes no control-vector API (llama_set_adapter_cvec)")


def _gguf_of(source: LM | str | os.PathLike[str]) -> Path:
    if isinstance(source, str | os.PathLike):
        path = Path(source)
    else:
        path = Path(str(source.source))
        if path.suffix != ".gguf":
            raise ModelError(
                f"engine='llamacpp' runs GGUF files, but this model was loaded from {source.source!r}; load "
                "it from a .gguf file (steerlab.load('model.gguf'), or no argument for the embedded model) "
                "or use the torch engine"
            )
    if not path.is_file():
        raise ModelError(f"GGUF model file not found: {path}")
    return path


class LlamaCppEngine:
    """One llama.cpp model and context; steering is installed per :meth:`generate` call.

    ``lm`` (optional) supplies the tokenizer, chat template and model checks so token ids and text
    handling are identical to the torch engine; without it llama.cpp's own tokenizer and the GGUF's
    chat template are used.  Not thread-safe: one generation at a time.
    """

    def __init__(
        self,
        model: LM | str | os.PathLike[str],
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.lm: LM | None = None if isinstance(model, str | os.PathLike) else model
        self.path = _gguf_of(model)
        llama_cpp = _import_llama_cpp()
        self._lib = llama_cpp
        self._set_cvec = _set_cvec_fn(llama_cpp)
        # Default: half the cores (llama-cpp-python's own default for decoding, here also for the
        # prompt).  More threads than free cores make llama.cpp's spinning workers several times slower:
        # measured on a busy 2-core machine, 21 tokens/s with 1 thread, 4.6 with 2.
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        try:
            self.llama = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_batch=min(n_ctx, 512),
                n_threads=threads,
                n_threads_batch=threads,
                logits_all=False,
                verbose=verbose,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp could not load {self.path}: {exc}") from exc
        self.n_embd = int(self.llama.n_embd())
        self.n_layer = int(llama_cpp.llama_model_n_layer(self.llama._model.model))
        self.n_vocab = int(self.llama.n_vocab())
        self._vocab = llama_cpp.llama_model_get_vocab(self.llama._model.model)
        self._eog: set[int] | None = None
        if self.lm is not None and (self.lm.hidden_size, self.lm.num_layers) != (self.n_embd, self.n_layer):
            raise ModelError(
                f"{self.path} has width {self.n_embd} and {self.n_layer} blocks, but the model it is paired "
                f"with has width {self.lm.hidden_size} and {self.lm.num_layers}"
            )

    def close(self) -> None:
        """Free llama.cpp's memory now rather than at garbage collection."""
        self.llama.close()

    def __enter__(self) -> LlamaCppEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ steering
    def control_vector(self, steering: Any, **steer_options: Any) -> dict[int, np.ndarray]:
        """The raw per-layer vectors llama.cpp will add for ``steering`` (checked against this model)."""
        from steerlab.engine.spec import as_steerings

        items = as_steerings(steering, **steer_options)
        if not items:
            return {}
        for item in items:
            self._check_vector(item.vector)
        return as_numpy(baked_add(items, lm=self.lm, what="the llama.cpp engine").deltas)

    def _check_vector(self, vector: Any) -> None:
        if self.lm is not None:
            vector.check_fits(self.lm.anatomy, self.lm.model_id)
            return
        if vector.width != self.n_embd:
            raise SteeringError(
                f"vector width {vector.width} does not fit {self.path.name}, whose residual stream has width "
                f"{self.n_embd}"
            )
        bad = [layer for layer in vector.layers if layer >= self.n_layer]
        if bad and len(vector.layers) > 1:
            raise SteeringError(
                f"vector has layers {bad} but {self.path.name} has only {self.n_layer} blocks"
            )

    @contextlib.contextmanager
    def steered(self, vectors: dict[int, np.ndarray]):
        """Install ``vectors`` (steerlab layer -> raw float32) as the context's control vector."""
        if not vectors:
            yield
            return
        bad = [layer for layer in vectors if not 1 <= layer < self.n_layer]
        if bad:
            raise SteeringError(
                f"layers {bad} cannot carry a llama.cpp control vector (valid: 1..{self.n_layer - 1})"
            )
        # llama.cpp's buffer holds layer 1 at offset 0 (there is never a slot for layer 0).
        buffer = np.zeros((self.n_layer - 1, self.n_embd), dtype=np.float32)
        for layer, vec in vectors.items():
            buffer[layer - 1] = vec
        flat = np.ascontiguousarray(buffer.reshape(-1))
        pointer = flat.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        ctx = self.llama._ctx.ctx
        code = self._set_cvec(ctx, pointer, flat.size, self.n_embd, min(vectors), max(vectors))
        if code != 0:
            raise SteeringError(f"llama.cpp refused the control vector (error {code})")
        try:
            yield
        finally:
            self._set_cvec(ctx, None, 0, self.n_embd, -1, -1)

    # ------------------------------------------------------------ text
    def _prompt_ids(self, prompt: str, chat: bool, system: str | None) -> list[int]:
        if self.lm is not None:
            return self.lm.encode(self.lm.chat(prompt, system) if chat else prompt)
        text = self._render_chat(prompt, system) if chat else prompt
        ids = self.llama.tokenize(text.encode("utf-8"), add_bos=not chat, special=True)
        if not ids:
            raise SteeringError(f"prompt {prompt[:40]!r} encodes to no tokens")
        return ids

    def _render_chat(self, prompt: str, system: str | None) -> str:
        template = self.llama.metadata.get("tokenizer.chat_template")
        if not template:
            return f"{system + chr(10) if system else ''}User: {prompt}\nAssistant:"
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos = self.llama.detokenize([self.llama.token_eos()], special=True).decode("utf-8", "replace")
        bos = self.llama.detokenize([self.llama.token_bos()], special=True).decode("utf-8", "replace")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos, add_generation_prompt=True)
        return formatter(messages=messages).prompt

    def _decode(self, tokens: list[int]) -> str:
        if self.lm is not None:
            return self.lm.tokenizer.decode(tokens, skip_special_tokens=True)
        return self.llama.detokenize(tokens).decode("utf-8", "replace")

    def _eos(self) -> set[int]:
        """End-of-generation ids: the paired model's, else the GGUF vocabulary's (looked up once)."""
        if self.lm is not None:
            return eos_token_ids(self.lm)
        if self._eog is None:
            self._eog = {t for t in range(self.n_vocab) if self._lib.llama_vocab_is_eog(self._vocab, t)}
        return self._eog

    # ------------------------------------------------------------ decoding
    def _next_logits(self) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(self.llama._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def logits(self, texts: str | Sequence[str], steering: Any = None, **steer_options: Any) -> Any:
        """Next-token logits after each raw text (no chat template), ``(n, vocab)`` float32 torch tensor.

        The llama.cpp counterpart of ``lm.logits``: the same texts under the same steering give
        nearby logits (quantised weights and activations make them differ slightly).
        """
        import torch

        items = [texts] if isinstance(texts, str) else list(texts)
        vectors = self.control_vector(steering, **steer_options) if steering is not None else {}
        rows = []
        with self.steered(vectors):
            for text in items:
                self.llama.reset()
                self.llama.eval(self._prompt_ids(text, False, None))
                rows.append(self._next_logits().copy())
        return torch.from_numpy(np.stack(rows))

    def generate(
        self,
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
        on_token: Callable[[int, int, str], None] | None = None,
        details: bool = False,
        **steer_options: Any,
    ) -> Any:
        """Same contract as :func:`steerlab.generate.generate` (greedy unless ``temperature > 0``).

        Prompts are decoded one after another (llama.cpp's control vector is per context, and batch 1 is
        where it is fastest on a CPU). Sampling, seeds, EOS, stop strings and streaming are the decode
        core's, so the same logits and seed give the same tokens as the torch engine.
        """
        if row_steering is not None:
            raise SteeringError(
                "per-row steering needs the torch engine: llama.cpp applies one control vector per context"
            )
        batch = batch_of(
            prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
        )
        vectors = self.control_vector(steering, **steer_options) if steering is not None else {}
        encoded = [self._prompt_ids(p, chat, system) for p in batch.prompts]
        limit = self.llama.n_ctx()
        for ids in encoded:
            if len(ids) + max_new_tokens > limit:
                raise SteeringError(
                    f"prompt of {len(ids)} tokens + {max_new_tokens} new tokens exceeds the llama.cpp context of "
                    f"{limit}; create the engine with a larger n_ctx"
                )
        decoders = batch.decoders(self._decode, encoded, self._eos(), stop)
        outs: list[Generation] = []
        with self.steered(vectors):
            for row, ids in enumerate(encoded):
                callback = None
                if on_token is not None:

                    def callback(_: int, token: int, delta: str, row: int = row) -> None:
                        on_token(row, token, delta)

                outs.append(self._one(ids, decoders[row], batch.sampling[row], callback))
        return batch.results(outs, details)

    def _one(self, ids: list[int], decoder: RowDecoder, sampling: Any, on_token: Any) -> Generation:
        import torch

        def logits() -> torch.Tensor:
            return torch.from_numpy(np.array(self._next_logits(), dtype=np.float32))[None]

        def step(tokens: list[int]) -> torch.Tensor:
            self.llama.eval(tokens)
            return logits()

        self.llama.reset()
        self.llama.eval(ids)
        return drive([decoder], [sampling], logits(), step, on_token)[0]


def generate_llamacpp(
    model: LM | str | os.PathLike[str],
    prompts: str | Sequence[str],
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    **kwargs: Any,
) -> Any:
    """One-shot :meth:`LlamaCppEngine.generate` (loads the GGUF, generates, frees it).

    ``model`` is an ``LM`` loaded from a ``.gguf`` file or a ``.gguf`` path; ``kwargs`` are those of
    ``lm.generate`` (``steering``, ``max_new_tokens``, ``chat``, ``system``, ``temperature``, ``top_p``,
    ``seed``, ``stop``, ``on_token``, ``details`` and the steer options).  Reuse a
    :class:`LlamaCppEngine` to avoid reloading the model for every call.
    """
    if n_ctx is None:
        n_ctx = max(2048, int(kwargs.get("max_new_tokens", 64)) + 1024)
    with LlamaCppEngine(model, n_ctx=n_ctx, n_threads=n_threads) as engine:
        return engine.generate(prompts, **kwargs)
