"""Padding token sequences into one batch: left for generation, right for reading.

Generation pads on the left so every row's next token sits in the last column; explicit position ids
(counting real tokens only) make each row compute exactly what it would alone. Reading pads on the right
so real tokens start at position 0 and the lengths say where each row ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steerlab.errors import SteerlabError


@dataclass(frozen=True)
class Padded:
    """A padded batch: ``ids``/``mask``/``positions`` are ``(B, T)``, ``lengths`` is ``(B,)`` (all long)."""

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    lengths: torch.Tensor


def _check(seqs: Sequence[Sequence[int]]) -> int:
    if not seqs:
        raise SteerlabError("cannot pad an empty batch")
    if any(len(s) == 0 for s in seqs):
        raise SteerlabError("cannot pad a sequence of no tokens")
    return max(len(s) for s in seqs)


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str | None = None) -> Padded:
    """Right-align the sequences; positions count from each row's first real token (0 on padding)."""
    width = _check(seqs)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    lengths = mask.sum(-1)
    return Padded(ids.to(device), mask.to(device), positions.to(device), lengths.to(device))


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str | None = None) -> Padded:
    """Left-align the sequences; row ``i``'s real tokens are ``[:lengths[i]]``."""
    width = _check(seqs)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    positions = torch.arange(width, dtype=torch.long).expand(len(seqs), width).clone()
    return Padded(ids.to(device), mask.to(device), positions.to(device), lengths.to(device))
