"""Teacher forcing: the model's log-distributions over given continuations of given prompts.

Scoring a known continuation (a completion's NLL for fluency, a refusal probe's log-probability, a
preference pair's log-likelihood for a learned vector) is one right-padded forward over ``head + tail``
per row, read at the positions that predict each tail token. One definition here, so every scorer slices
the same positions: the logits at position ``len(head) - 1 + j`` predict tail token ``j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from steerlab.decode.padding import right_pad

if TYPE_CHECKING:
    from steerlab.models.handle import ModelHandle


def forced_logits(
    handle: ModelHandle, heads: Sequence[Sequence[int]], tails: Sequence[Sequence[int]]
) -> list[torch.Tensor]:
    """Per row, the ``(len(tail), vocab)`` logits that predict each tail token after its head.

    One forward for the whole list (batch it outside); whatever hooks are installed apply, and autograd is
    kept when enabled, so a learned steering can train through it.
    """
    if len(heads) != len(tails):
        raise ValueError(f"forced_logits: {len(heads)} heads but {len(tails)} tails")
    if any(len(h) == 0 for h in heads):
        raise ValueError("forced_logits: every head needs at least one token (the BOS)")
    batch = right_pad([list(h) + list(t) for h, t in zip(heads, tails, strict=True)], handle.pad_token_id)
    logits = handle.model(
        input_ids=batch.ids.to(handle.device), attention_mask=batch.mask.to(handle.device), use_cache=False
    ).logits
    return [
        logits[i, len(h) - 1 : len(h) - 1 + len(t)] for i, (h, t) in enumerate(zip(heads, tails, strict=True))
    ]


def token_log_probs(logits: torch.Tensor, tail: Sequence[int]) -> torch.Tensor:
    """``log p(tail[j] | ...)`` for each position of one row's :func:`forced_logits` (float32 or wider)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, torch.as_tensor(list(tail), device=logp.device).long().view(-1, 1)).view(-1)
