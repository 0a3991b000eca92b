"""Steered generation: one decode loop for single prompts, heterogeneous batches and streaming.

Batches are left-padded with explicit position ids, so every row decodes as it would alone. Steering is
either shared (``steering=``) or per row (``row_steering=``: one entry per prompt, ``None`` for an
unsteered row); both go through the same engine, whose position policies see absolute token positions
across KV-cache steps.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from steerlab.errors import SteeringError
from steerlab.sampling import nucleus_probs

if TYPE_CHECKING:
    from steerlab.lm import LM

TokenCallback = Callable[[int, int, str], None]


@dataclass
class Generation:
    """One finished completion."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    prompt_tokens: int


def _left_pad(lm: LM, encoded: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), lm.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, seq in enumerate(encoded):
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    return ids.to(lm.device), mask.to(lm.device)


def _pick(logits: torch.Tensor, temperature: float, top_p: float, generators: list[torch.Generator | None]):
    if temperature <= 0:
        return logits.argmax(-1)
    picks = [
        torch.multinomial(nucleus_probs(logits[i], temperature, top_p), 1, generator=g)
        for i, g in enumerate(generators)
    ]
    return torch.cat(picks)


def eos_token_ids(lm: Any) -> set[int]:
    """Every id that ends a sequence: the tokenizer's EOS and the generation config's (they can differ)."""
    ids: set[int] = set()
    for source in (lm.tokenizer.eos_token_id, getattr(lm.model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list | tuple):
            ids.update(int(x) for x in source)
    return ids


def _steering_context(lm: LM, n: int, steering: Any, row_steering: Any, options: dict):
    if steering is not None and row_steering is not None:
        raise SteeringError("pass either steering= (all rows) or row_steering= (one per prompt), not both")
    if row_steering is not None:
        if len(row_steering) != n:
            raise SteeringError(f"row_steering has {len(row_steering)} entries for {n} prompts")
        return lm.steer_rows(list(row_steering))
    if steering is not None:
        return lm.steer(steering, **options)
    return contextlib.nullcontext()


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
    vector. ``on_token(row, token_id, text_delta)`` streams. Returns strings (or :class:`Generation` with
    ``details=True``), one per prompt, or a single one for a single string prompt.
    """
    single = isinstance(prompts, str)
    prompt_list = [prompts] if single else list(prompts)
    if not prompt_list:
        raise SteeringError("no prompts given")
    if max_new_tokens < 1:
        raise SteeringError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not 0 < top_p <= 1:
        raise SteeringError(f"top_p must be in (0, 1], got {top_p}")
    texts = [lm.chat(p, system) if chat else p for p in prompt_list]
    encoded = [lm.encode(t) for t in texts]
    n = len(encoded)
    generators = [None] * n
    if temperature > 0:
        generators = [torch.Generator(device="cpu").manual_seed((seed or 0) + i) for i in range(n)]
    eos = eos_token_ids(lm)
    ids, mask = _left_pad(lm, encoded)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out_tokens: list[list[int]] = [[] for _ in range(n)]
    texts_so_far = [""] * n
    finish: list[str | None] = [None] * n
    with torch.no_grad(), _steering_context(lm, n, steering, row_steering, steer_options):
        result = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache = returned_cache(result)
        logits = result.logits[:, -1]
        for _ in range(max_new_tokens):
            nxt = _pick(logits, temperature, top_p, generators)
            for row in range(n):
                if finish[row] is not None:
                    continue
                token = int(nxt[row])
                if token in eos:
                    finish[row] = "stop"
                    continue
                out_tokens[row].append(token)
                text = lm.tokenizer.decode(out_tokens[row], skip_special_tokens=True)
                cut = stop_index(text, stop)
                if cut is not None:
                    text = text[:cut]
                    finish[row] = "stop"
                if on_token is not None and len(text) > len(texts_so_far[row]):
                    on_token(row, token, text[len(texts_so_far[row]) :])
                texts_so_far[row] = text
            if all(f is not None for f in finish):
                break
            mask = torch.cat([mask, mask.new_ones((n, 1))], dim=1)
            positions = positions[:, -1:] + 1
            result = lm.model(
                input_ids=nxt.view(n, 1),
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{cache_arg(lm): cache},
            )
            cache = returned_cache(result)
            logits = result.logits[:, -1]
    outs = [
        Generation(texts_so_far[i], out_tokens[i], finish[i] or "length", len(encoded[i])) for i in range(n)
    ]
    values = outs if details else [g.text for g in outs]
    return values[0] if single else values


def cache_arg(lm: LM) -> str:
    """The keyword the model's forward takes for the KV cache (transformers renamed it in 5.x)."""
    params = inspect.signature(lm.model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(result: Any) -> Any:
    cache = getattr(result, "cache", None)
    return cache if cache is not None else result.past_key_values


def stop_index(text: str, stop: Sequence[str] | None) -> int | None:
    """Where the earliest stop string starts in ``text`` (None: no stop string occurs)."""
    if not stop:
        return None
    hits = [text.find(s) for s in stop if s and s in text]
    return min(hits) if hits else None


def next_token_logits(lm: LM, texts: list[str], batch_size: int = 16) -> torch.Tensor:
    """Logits for the token after each text (right-padded batches; float32)."""
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            chunk = [lm.encode(t) for t in texts[start : start + batch_size]]
            lengths = torch.tensor([len(c) for c in chunk])
            ids = torch.full((len(chunk), int(lengths.max())), lm.pad_token_id, dtype=torch.long)
            for i, c in enumerate(chunk):
                ids[i, : len(c)] = torch.tensor(c)
            mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
            out = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False)
            rows.append(out.logits[torch.arange(len(chunk)), lengths - 1].float().cpu())
    return torch.cat(rows)
