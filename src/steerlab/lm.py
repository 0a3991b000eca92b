"""``LM``: a loaded model with its tokenizer, chat formatting and anatomy, and the verbs users call."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from steerlab.engine import SteeringContext, as_steerings, compile_plan
from steerlab.engine.spec import Steering
from steerlab.errors import SteeringError
from steerlab.models import Anatomy, find_anatomy, load_source
from steerlab.vector import SteeringVector

NORM_PROBE_TEXTS = (
    "The train left the station a few minutes after nine in the morning.",
    "Water boils at a lower temperature at high altitude because the air pressure is lower.",
    "Please write a short list of things to pack for a weekend trip.",
    "In 1850 the town had about two thousand inhabitants and a single school.",
    "Explain how a bicycle gear changes the effort needed to pedal uphill.",
    "She opened the window, looked at the street, and went back to her book.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "What is the difference between weather and climate?",
)


class LM:
    """A decoder model ready to be read and steered.

    ``steer`` returns a context that installs steering hooks and removes them on exit; ``generate`` runs
    (optionally per-row steered) generation. ``typical_norms`` is measured lazily on a few built-in
    neutral texts when a vector carries no norms of its own.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, model_id: str, source: str, anatomy: Anatomy):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.source = source
        self.anatomy = anatomy
        self._norms: dict[str, dict[int, float]] = {}
        self.steering_paused = False  # read by every steering hook: True = pass activations through
        if getattr(tokenizer, "pad_token_id", None) is None:
            tokenizer.pad_token = tokenizer.eos_token

    def __repr__(self) -> str:
        return (
            f"LM({self.model_id!r}, {self.anatomy.model_type}, {self.anatomy.num_layers} blocks, "
            f"width {self.anatomy.hidden_size})"
        )

    # --------------------------------------------------------------- facts
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def num_layers(self) -> int:
        return self.anatomy.num_layers

    @property
    def hidden_size(self) -> int:
        return self.anatomy.hidden_size

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    # ----------------------------------------------------------- text <-> ids
    def encode(self, text: str) -> list[int]:
        """Token ids; special tokens are added only if the text does not already start with BOS."""
        bos = getattr(self.tokenizer, "bos_token", None)
        special = not (bos and text.startswith(bos)) and "<|im_start|>" not in text[:20]
        ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        if not ids:
            raise SteeringError(f"text {text[:40]!r} encodes to no tokens")
        return ids

    def chat(self, user: str, system: str | None = None) -> str:
        """The prompt string for one user turn, in the model's own chat template (plain text if none)."""
        from steerlab.data.chat import format_user

        return format_user(self.tokenizer, user, system=system)

    # -------------------------------------------------------------- steering
    def steer(
        self,
        spec: SteeringVector | Steering | Sequence[SteeringVector | Steering] | None = None,
        *,
        strength: float | None = None,
        op: str = "add",
        layers: Any = None,
        positions: Any = "all",
        unit: str | None = None,
        site: str | None = None,
        strict_model: bool = True,
    ) -> SteeringContext:
        """Steer every row the same way inside a ``with`` block (several vectors compose in order)."""
        defaults = dict(strength=strength, op=op, layers=layers, positions=positions, unit=unit, site=site)
        steerings = as_steerings(spec, **defaults)
        return SteeringContext(self, compile_plan(self, [steerings], strict_model=strict_model))

    def steer_rows(self, rows: Sequence[Any], *, strict_model: bool = True) -> SteeringContext:
        """Per-row steering: ``rows[i]`` (a Steering, a list of them, or None) applies to batch row ``i``."""
        compiled = [as_steerings(row) for row in rows]
        return SteeringContext(self, compile_plan(self, compiled, strict_model=strict_model), per_row=True)

    def typical_norms(self, site: str = "resid") -> dict[int, float]:
        """Median token norm per layer at ``site`` on built-in neutral texts (cached on this object)."""
        if site not in self._norms:
            from steerlab.reader import read

            paused, self.steering_paused = self.steering_paused, True
            try:
                acts = read(self, list(NORM_PROBE_TEXTS), list(range(self.num_layers)), site=site)
            finally:
                self.steering_paused = paused
            self._norms[site] = acts.norms
        return self._norms[site]

    # ------------------------------------------------------------ generation
    def generate(self, prompts: str | Sequence[str], *, engine: str = "torch", **kwargs: Any) -> Any:
        """See :func:`steerlab.generate.generate`. A single string returns a single string.

        ``engine="llamacpp"`` runs the same request on llama.cpp (GGUF-loaded models, ``add`` steering on
        the residual stream only; several times faster on CPU), see ``docs/interop.md``.
        """
        if engine == "llamacpp":
            from steerlab.interop.llamacpp_engine import generate_llamacpp

            return generate_llamacpp(self, prompts, **kwargs)
        if engine != "torch":
            raise SteeringError(f"unknown engine '{engine}'; expected 'torch' or 'llamacpp'")
        from steerlab.generate import generate

        return generate(self, prompts, **kwargs)

    def logits(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Next-token logits after each text, ``(n, vocab)``, computed in one padded batch."""
        from steerlab.generate import next_token_logits

        return next_token_logits(self, [texts] if isinstance(texts, str) else list(texts))


def load(
    source: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    blocks: str | None = None,
) -> LM:
    """Load a model: nothing (the embedded SmolLM2-135M-Instruct), a hub id, a folder or a ``.gguf`` file.

    ``blocks`` names the decoder stack (e.g. ``"model.layers"``) for architectures steerlab cannot map.
    """
    loaded = load_source(source, dtype=dtype, device=device)
    anatomy = find_anatomy(loaded.model, blocks)
    return LM(loaded.model, loaded.tokenizer, loaded.model_id, loaded.source, anatomy)


def from_model(model: torch.nn.Module, tokenizer: Any, model_id: str = "", blocks: str | None = None) -> LM:
    """Wrap an already-loaded HF model (tests build tiny random ones this way)."""
    model.eval()
    return LM(
        model,
        tokenizer,
        model_id or getattr(getattr(model, "config", None), "_name_or_path", ""),
        "memory",
        find_anatomy(model, blocks),
    )
