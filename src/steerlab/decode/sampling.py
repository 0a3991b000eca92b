"""Choosing each row's next token with that row's own settings (greedy, temperature, top-p, seed).

Rows of one shared batch belong to different requests, so sampling is per row: greedy rows take the
argmax, sampled rows draw from their own seeded generator, and a row's draw never depends on its
neighbours. A request served alone and inside a batch therefore picks the same tokens.

One seed rule for every backend: seed ``s`` gives row (or choice) ``i`` the seed ``(s + i) mod 2**64``;
no seed gives each row a fresh random one. The same seed thus gives the same text through
``lm.generate``, the server and the llama.cpp engine (given the same logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from steerlab.errors import SteerlabError

SEED_SPACE = 2**64


def row_seed(seed: int | None, row: int) -> int | None:
    """The seed of row ``row`` for a request seeded with ``seed`` (None stays None: draw a fresh one)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SteerlabError(f"seed must be an integer, got {seed!r}")
    return (seed + row) % SEED_SPACE


@dataclass
class SamplingParams:
    """How one row picks tokens. ``temperature <= 0`` is greedy; ``seed`` is already the row's own."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature):
            raise SteerlabError(f"temperature must be a finite number, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SteerlabError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None:
            self.seed = row_seed(self.seed, 0)
        if self.temperature > 0 and self.generator is None:
            self.generator = torch.Generator(device="cpu")
            if self.seed is None:
                self.seed = self.generator.seed()
            else:
                self.generator.manual_seed(self.seed)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


def row_sampling(temperature: float, top_p: float, seed: int | None, rows: int) -> list[SamplingParams]:
    """The sampling settings of ``rows`` rows (prompts or choices) of one request, by the seed rule."""
    return [SamplingParams(temperature, top_p, row_seed(seed, i)) for i in range(rows)]


#: float32's smallest normal number: the temperature below which float32 scaling would divide by zero.
FLOAT32_TINY = torch.finfo(torch.float32).tiny


def nucleus_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Softmax at ``temperature`` with everything outside the top-``top_p`` mass set to zero (1-D)."""
    # Shift by the maximum first, and keep the temperature inside float32's range: with a tiny temperature
    # (5e-324 is a valid float, and anything below ~1e-38 is 0 in float32) the scaled logits would overflow
    # to inf, or divide 0 by 0, and the softmax would be NaN. Shifted, and divided by at least float32's
    # smallest normal number, they go to -inf or far below, and leave the argmax at 1: the same tokens as
    # any smaller temperature, at float32's cost on this per-step, per-row path.
    shifted = logits.float() - logits.float().max()
    probs = torch.softmax(shifted / max(temperature, FLOAT32_TINY), dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        keep[..., 0] = True  # the nucleus always holds the top token (a tiny top_p is 0 in float32)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
    return probs


def pick_token(logits: torch.Tensor, params: SamplingParams) -> int:
    """One token from one row's logits ``(vocab,)``; raises on logits that cannot be sampled (NaN)."""
    if params.greedy:
        return int(logits.argmax(-1))
    probs = nucleus_probs(logits.cpu(), params.temperature, params.top_p)
    return int(torch.multinomial(probs, 1, generator=params.generator))


def pick_tokens(logits: torch.Tensor, params: list[SamplingParams]) -> list[int]:
    """One token per row of ``logits`` ``(B, vocab)``."""
    greedy = logits.argmax(-1).tolist()
    return [int(greedy[row]) if p.greedy else pick_token(logits[row], p) for row, p in enumerate(params)]
