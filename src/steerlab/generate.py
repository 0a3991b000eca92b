"""Steered generation with the torch engine: single prompts, heterogeneous batches and streaming.

Batches are left-padded with explicit position ids, so every row decodes as it would alone. Steering is
either shared (``steering=``) or per row (``row_steering=``: one entry per prompt, ``None`` for an
unsteered row); both go through the same engine, whose position policies see absolute token positions
across KV-cache steps. Sampling, EOS, stop strings, streaming and finish reasons are the decode core's
(:mod:`steerlab.decode`); this module only runs the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from steerlab.decode import (
    Generation,
    TokenCallback,
    cache_arg,
    drive,
    eos_token_ids,
    find_stop,
    left_pad,
    returned_cache,
    right_pad,
)
from steerlab.decode.request import batch_of
from steerlab.engine.spec import row_choice

if TYPE_CHECKING:
    from steerlab.lm import LM

__all__ = [
    "Generation",
    "TokenCallback",
    "cache_arg",
    "eos_token_ids",
    "generate",
    "next_token_logits",
    "returned_cache",
    "stop_index",
]

stop_index = find_stop  # the old name, kept for callers of steerlab.generate


def _steering_context(lm: LM, n: int, steering: Any, row_steering: Any, options: dict):
    if steering is not None and row_steering is None:
        return lm.steer(steering, **options)  # the facade also takes raw tensors and strict_model
    _, per_row = row_choice(n, steering, row_steering)  # refuses both at once, and a wrong row count
    return lm.steer_rows(per_row) if per_row is not None else contextlib.nullcontext()


def generate(
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
    """Generate completions; greedy unless ``temperature > 0``.

    ``steer_options`` (strength, layers, op, positions, unit, site) apply when ``steering`` is a bare
    vector. ``on_token(row, token_id, text_delta)`` streams; the streamed deltas of a row add up to its
    returned text exactly (text that a stop string may still cut is held back). Prompt ``i`` samples with
    seed ``(seed + i) mod 2**64`` (a fresh random seed when ``seed`` is None). Returns strings (or
    :class:`Generation` with ``details=True``), one per prompt, or a single one for a single string prompt.
    """
    batch = batch_of(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    encoded = [lm.encode(lm.chat(p, system) if chat else p) for p in batch.prompts]
    rows = batch.decoders(_detokenizer(lm), encoded, eos_token_ids(lm), stop)
    padded = left_pad(encoded, lm.pad_token_id, lm.device)
    n, cache_kw = len(encoded), cache_arg(lm)
    with torch.no_grad(), _steering_context(lm, n, steering, row_steering, steer_options):
        result = lm.model(
            input_ids=padded.ids, attention_mask=padded.mask, position_ids=padded.positions, use_cache=True
        )
        state = {"cache": returned_cache(result), "mask": padded.mask, "positions": padded.positions[:, -1:]}

        def step(tokens: list[int]) -> torch.Tensor:
            state["mask"] = torch.cat([state["mask"], state["mask"].new_ones((n, 1))], dim=1)
            state["positions"] = state["positions"] + 1
            out = lm.model(
                input_ids=torch.tensor(tokens, device=lm.device).view(n, 1),
                attention_mask=state["mask"],
                position_ids=state["positions"],
                use_cache=True,
                **{cache_kw: state["cache"]},
            )
            state["cache"] = returned_cache(out)
            return out.logits[:, -1]

        outs = drive(rows, batch.sampling, result.logits[:, -1], step, on_token)
    return batch.results(outs, details)


def _detokenizer(lm: LM):
    def detokenize(ids: list[int]) -> str:
        return lm.tokenizer.decode(ids, skip_special_tokens=True)

    return detokenize


def next_token_logits(lm: LM, texts: list[str], batch_size: int = 16) -> torch.Tensor:
    """Logits for the token after each text (right-padded batches; float32)."""
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            padded = right_pad([lm.encode(t) for t in texts[start : start + batch_size]], lm.pad_token_id)
            out = lm.model(
                input_ids=padded.ids.to(lm.device), attention_mask=padded.mask.to(lm.device), use_cache=False
            )
            last = padded.lengths - 1
            rows.append(out.logits[torch.arange(len(last)), last.to(out.logits.device)].float().cpu())
    return torch.cat(rows)
