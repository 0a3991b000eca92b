"""Choosing each row's next token with that row's own settings (greedy, temperature, top-p, seed).

Rows of one shared batch belong to different requests, so sampling is per row: greedy rows take the
argmax, sampled rows draw from their own seeded generator, and a row's draw never depends on its
neighbours. A request served alone and inside a batch therefore picks the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """How one request picks tokens. ``temperature <= 0`` is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.temperature > 0 and self.generator is None:
            self.generator = torch.Generator(device="cpu")
            if self.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(int(self.seed))


def nucleus_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Softmax at ``temperature`` with everything outside the top-``top_p`` mass set to zero (1-D)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
    return probs


def pick_tokens(logits: torch.Tensor, params: list[SamplingParams]) -> list[int]:
    """One token per row of ``logits`` ``(B, vocab)``."""
    greedy = logits.argmax(-1).tolist()
    out = []
    for row, p in enumerate(params):
        if p.temperature <= 0:
            out.append(int(greedy[row]))
            continue
        probs = nucleus_probs(logits[row].cpu(), p.temperature, p.top_p)
        out.append(int(torch.multinomial(probs, 1, generator=p.generator)))
    return out
