"""The one activation reader: batched forward passes that return activations at sites and positions.

It sorts texts by token length so batches waste little padding, pads on the right (so every real token
sees exactly what it would see alone), keeps only the requested token positions, and stops the forward
pass as soon as the deepest requested layer has been read. It also measures the typical residual norm
per layer: the median token norm, excluding each sequence's first token, whose attention-sink
activations are often tens of times larger than the rest and would dominate a mean.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from steerlab.errors import DataError, SteerlabError

if TYPE_CHECKING:
    from steerlab.lm import LM

Position = str | int | tuple[int, ...]


class _Stop(Exception):
    """Raised inside the deepest hook to end a forward pass early."""


@dataclass
class Batch:
    """Activations of one batch: ``acts[layer]`` is ``(b, W)`` (or ``(b, k, W)`` for several positions)."""

    indices: list[int]
    acts: dict[int, torch.Tensor]


@dataclass
class Activations:
    """Activations of all texts, in input order, plus the typical norm per layer."""

    acts: dict[int, torch.Tensor]
    norms: dict[int, float] = field(default_factory=dict)
    site: str = "resid"
    position: Position = "last"

    @property
    def layers(self) -> list[int]:
        return sorted(self.acts)

    def __len__(self) -> int:
        return next(iter(self.acts.values())).shape[0]


def _select(h: torch.Tensor, lengths: torch.Tensor, position: Position) -> torch.Tensor:
    """Reduce ``(b, T, W)`` right-padded activations to the requested positions."""
    rows = torch.arange(h.shape[0])
    if position == "last":
        return h[rows, lengths - 1]
    if position == "mean":
        mask = (torch.arange(h.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1).to(h.dtype)
        return (h * mask).sum(1) / lengths[:, None].to(h.dtype)
    if isinstance(position, int):
        return h[rows, _index(lengths, position)]
    if isinstance(position, tuple):
        return torch.stack([h[rows, _index(lengths, p)] for p in position], dim=1)
    raise SteerlabError(f"unknown position {position!r}: use 'last', 'mean', an int or a tuple of ints")


def _index(lengths: torch.Tensor, position: int) -> torch.Tensor:
    index = lengths + position if position < 0 else torch.full_like(lengths, position)
    if (index < 0).any() or (index >= lengths).any():
        raise DataError(f"token position {position} falls outside a text of {int(lengths.min())} tokens")
    return index


class NormMeter:
    """Collects token norms per layer (capped sample) and reports their median."""

    def __init__(self, cap: int = 200_000) -> None:
        self.cap = cap
        self.samples: dict[int, list[torch.Tensor]] = {}
        self.count: dict[int, int] = {}

    def update(self, layer: int, h: torch.Tensor, lengths: torch.Tensor) -> None:
        if self.count.get(layer, 0) >= self.cap:
            return
        norms = h.detach().float().norm(dim=-1)
        keep = torch.arange(h.shape[1])[None, :] < lengths[:, None]
        if h.shape[1] > 1:
            keep[:, 0] = False  # the attention-sink token
        values = norms[keep]
        self.samples.setdefault(layer, []).append(values)
        self.count[layer] = self.count.get(layer, 0) + values.numel()

    def medians(self) -> dict[int, float]:
        return {layer: float(torch.cat(v).median()) for layer, v in self.samples.items() if v}


def iter_read(
    lm: LM,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    site: str = "resid",
    position: Position = "last",
    batch_size: int = 32,
    norms: NormMeter | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
) -> Iterator[Batch]:
    """Yield activations batch by batch (longest first), for callers that accumulate statistics."""
    if not texts:
        raise DataError("no texts to read")
    if not layers:
        raise DataError("no layers requested")
    layers = sorted({lm.anatomy.check_layer(int(layer)) for layer in layers})
    modules = {layer: lm.anatomy.module(layer, site) for layer in layers}
    deepest = layers[-1]
    encoded = [lm.encode(text) for text in texts]
    order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
    pad = lm.pad_token_id
    store: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}

    def make_hook(layer: int, pre: bool):
        def take(h: torch.Tensor) -> None:
            h = h.detach()
            if h.dim() == 2:  # tokens flattened to (batch * tokens, width), e.g. OPT's MLP
                h = h.view(len(state["lengths"]), -1, h.shape[-1])
            if norms is not None:
                norms.update(layer, h, state["lengths"])
            store[layer] = _select(h, state["lengths"], position).float()
            if layer == deepest:
                raise _Stop

        if pre:
            return lambda module, args: take(args[0])
        return lambda module, args, out: take(out if isinstance(out, torch.Tensor) else out[0])

    handles = [
        module.register_forward_pre_hook(make_hook(layer, True))
        if site == "head"
        else module.register_forward_hook(make_hook(layer, False))
        for layer, module in modules.items()
    ]
    bar = _progress(progress, len(texts))
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            lengths = torch.tensor([len(encoded[i]) for i in idx])
            ids = torch.full((len(idx), int(lengths.max())), pad, dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
            state["lengths"] = lengths
            store.clear()
            with torch.no_grad(), _autocast(dtype), contextlib.suppress(_Stop):
                lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False)
            yield Batch(list(idx), {layer: store[layer].cpu() for layer in layers})
            if bar is not None:
                bar.advance(bar.task_ids[0], len(idx))
    finally:
        for handle in handles:
            handle.remove()
        if bar is not None:
            bar.stop()


def read(
    lm: LM,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    site: str = "resid",
    position: Position = "last",
    batch_size: int = 32,
    progress: bool = False,
    dtype: torch.dtype | None = None,
) -> Activations:
    """Read all activations into memory, in the input order."""
    meter = NormMeter()
    parts: dict[int, list[tuple[list[int], torch.Tensor]]] = {}
    for batch in iter_read(
        lm,
        texts,
        layers,
        site=site,
        position=position,
        batch_size=batch_size,
        norms=meter,
        progress=progress,
        dtype=dtype,
    ):
        for layer, acts in batch.acts.items():
            parts.setdefault(layer, []).append((batch.indices, acts))
    out: dict[int, torch.Tensor] = {}
    for layer, chunks in parts.items():
        first = chunks[0][1]
        full = torch.empty((len(texts), *first.shape[1:]), dtype=first.dtype)
        for indices, acts in chunks:
            full[indices] = acts
        out[layer] = full
    return Activations(out, meter.medians(), site, position)


def _autocast(dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast("cpu", dtype=dtype)


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.add_task("reading activations", total=total)
    bar.start()
    return bar
