"""The step loop shared by backends that decode a fixed group of rows to the end (``lm.generate``,
llama.cpp): sample every row, feed the row decoders, stream their deltas, stop when all have ended.

The backend supplies only the model: the logits after the prompt and a ``step`` that feeds one token
per row and returns the next logits. The server's scheduler, whose rows come and go, drives the same
:class:`~steerlab.decode.decoder.RowDecoder` and sampler itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from steerlab.decode.decoder import RowDecoder
from steerlab.decode.result import Generation
from steerlab.decode.sampling import SamplingParams, pick_tokens

TokenCallback = Callable[[int, int, str], None]  # (row, token id, text delta)


def drive(
    rows: Sequence[RowDecoder],
    sampling: Sequence[SamplingParams],
    logits: torch.Tensor,
    step: Callable[[list[int]], torch.Tensor],
    on_token: TokenCallback | None = None,
) -> list[Generation]:
    """Decode until every row has ended; ``logits`` is ``(B, vocab)`` after the prompts."""
    if len(rows) != len(sampling) or logits.shape[0] != len(rows):
        raise ValueError(f"{len(rows)} rows, {len(sampling)} sampling settings, {logits.shape[0]} logit rows")
    while True:
        tokens = pick_tokens(logits, list(sampling))
        for row, decoder in enumerate(rows):
            if decoder.done:
                continue
            delta = decoder.push(tokens[row])
            if delta and on_token is not None:
                on_token(row, tokens[row], delta)
        if all(decoder.done for decoder in rows):
            return [decoder.result() for decoder in rows]
        logits = step(tokens)
