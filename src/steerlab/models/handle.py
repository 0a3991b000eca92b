"""``ModelHandle``: the small object every lower room takes (engine, reader, decode, methods).

It bundles what those rooms need to know about one loaded model -- the HF module, its tokenizer, its
anatomy, where it lives (device, dtype), how text becomes token ids and how a user turn becomes a prompt
-- and nothing that acts on it (no steering, no generation). The user-facing ``steerlab.lm.LM`` facade
is a ``ModelHandle`` with verbs added, so code written against a handle accepts an ``LM`` unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from steerlab.errors import SteeringError
from steerlab.models.anatomy import Anatomy


class ModelHandle:
    """A loaded decoder model with its tokenizer and anatomy.

    A tokenizer without a pad token gets its EOS token as pad: batched reads and generation pad on one
    side and mask the padding, so which id fills it does not matter, only that there is one.

    ``steering_contexts`` lists the steering contexts installed on this model, oldest first. The engine
    keeps it (the handle never acts on it) so a measurement can lift them and put them back in order.
    """

    def __init__(
        self, model: torch.nn.Module, tokenizer: Any, model_id: str, source: str, anatomy: Anatomy
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.source = source
        self.anatomy = anatomy
        self.steering_contexts: list[Any] = []
        if getattr(tokenizer, "pad_token_id", None) is None:
            tokenizer.pad_token = tokenizer.eos_token

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.model_id!r}, {self.anatomy.model_type}, "
            f"{self.anatomy.num_layers} blocks, width {self.anatomy.hidden_size})"
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
