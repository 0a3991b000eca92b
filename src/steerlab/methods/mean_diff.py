"""Mean difference (CAA / DiffMean): the direction from the negative class mean to the positive one.

Also the streaming form: only running sums are kept, so 10k pairs never sit in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from steerlab.methods.diagnostics import separation


def mean_diff(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """``mean(pos) - mean(neg)`` for ``(n, W)`` activations, with separation diagnostics."""
    direction = pos.double().mean(0) - neg.double().mean(0)
    return direction.float(), separation(pos, neg, direction.float())


@dataclass
class RunningMeanDiff:
    """Accumulates class sums per layer; keeps a small sample for diagnostics."""

    sample_cap: int = 256
    sums: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    counts: dict[int, list[int]] = field(default_factory=dict)
    samples: dict[int, list[list[torch.Tensor]]] = field(default_factory=dict)

    def update(self, side: int, layer: int, acts: torch.Tensor) -> None:
        """``side`` 0 = positive, 1 = negative."""
        sums = self.sums.setdefault(
            layer, [torch.zeros(acts.shape[-1], dtype=torch.float64) for _ in range(2)]
        )
        counts = self.counts.setdefault(layer, [0, 0])
        sums[side].add_(acts.sum(0, dtype=torch.float64))  # in place: no per-batch allocation kept
        counts[side] += acts.shape[0]
        sample = self.samples.setdefault(layer, [[], []])
        have = sum(s.shape[0] for s in sample[side])
        if have < self.sample_cap:
            sample[side].append(acts[: self.sample_cap - have].clone())

    def result(self, layer: int) -> tuple[torch.Tensor, dict[str, float]]:
        sums, counts = self.sums[layer], self.counts[layer]
        direction = (sums[0] / counts[0] - sums[1] / counts[1]).float()
        pos, neg = (torch.cat(s) for s in self.samples[layer])
        return direction, separation(pos, neg, direction)
