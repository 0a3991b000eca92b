"""The one activation reader: batched forward passes that return activations at sites and positions.

It sorts texts by token length so batches waste little padding, pads on the right (so every real token
sees exactly what it would see alone), keeps only the requested token positions, and stops the forward
pass as soon as the deepest requested layer has been read. It also measures the typical residual norm
per layer: the median token norm, excluding each sequence's first token, whose attention-sink
activations are often tens of times larger than the rest and would dominate a mean.
:func:`typical_norms` measures those norms on a few built-in neutral texts, for steerings whose vector
records none.

The reader reads whatever the model computes: to measure an unsteered model while steering contexts are
installed, wrap the call in :func:`steerlab.engine.context.unsteered` (the ``LM`` facade does).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlab.decode.kv import cache_arg, returned_cache
from steerlab.decode.padding import right_pad
from steerlab.errors import DataError, SteerlabError
from steerlab.models.handle import ModelHandle
from steerlab.progress import Ticker, task_bar

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


def _select(h: torch.Tensor, lengths: torch.Tensor, position: Position, skip: int = 0) -> torch.Tensor:
    """Reduce ``(b, T, W)`` right-padded activations to the requested positions.

    ``skip`` leaves each text's first tokens out of ``"mean"`` (a text with no token left averages to 0).
    """
    rows = torch.arange(h.shape[0])
    if position == "last":
        return h[rows, lengths - 1]
    if position == "mean":
        steps = torch.arange(h.shape[1])[None, :]
        mask = ((steps < lengths[:, None]) & (steps >= skip)).unsqueeze(-1).to(h.dtype)
        return (h * mask).sum(1) / (lengths[:, None] - skip).clamp(min=1).to(h.dtype)
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
    """Collects token norms per layer (capped sample) and reports their median.

    Each layer's sample lives in one buffer allocated up front: thousands of small tensors kept
    alive between large transient activations fragment the heap, and a 10k-pair read then held
    gigabytes it no longer used.
    """

    def __init__(self, cap: int = 200_000) -> None:
        self.cap = cap
        self.buffers: dict[int, torch.Tensor] = {}
        self.count: dict[int, int] = {}

    def update(self, layer: int, h: torch.Tensor, lengths: torch.Tensor, *, skip_first: bool = True) -> None:
        """Norms of the real tokens of right-padded ``(b, T, W)`` activations."""
        if self.count.get(layer, 0) >= self.cap:
            return
        with torch.no_grad():
            norms = h.detach().float().norm(dim=-1)
            keep = torch.arange(h.shape[1])[None, :] < lengths[:, None]
            if skip_first and h.shape[1] > 1:
                keep[:, 0] = False  # the attention-sink token
            self.add(layer, norms[keep])

    def add(self, layer: int, values: torch.Tensor) -> None:
        """Record token norms already computed (e.g. a shared prefix's, once per text that has it)."""
        have = self.count.get(layer, 0)
        values = values.detach().reshape(-1)[: self.cap - have].float().cpu()
        buffer = self.buffers.get(layer)
        if buffer is None:
            buffer = self.buffers[layer] = torch.empty(self.cap)
        buffer[have : have + values.numel()] = values
        self.count[layer] = have + values.numel()

    def medians(self) -> dict[int, float]:
        return {
            layer: float(buffer[: self.count[layer]].median())
            for layer, buffer in self.buffers.items()
            if self.count.get(layer, 0)
        }


#: A prefix shorter than this is not worth a separate pass.
MIN_SHARED_PREFIX = 4


def shared_prefix(encoded: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every text shares, leaving each at least one token of its own."""
    first = encoded[0]
    common = min(len(e) for e in encoded) - 1
    for seq in encoded[1:]:
        k = 0
        while k < common and seq[k] == first[k]:
            k += 1
        common = k
        if common < MIN_SHARED_PREFIX:
            return 0
    return common if common >= MIN_SHARED_PREFIX else 0


def _prefix_usable(position: Position, shortest_suffix: int) -> bool:
    """Whether every requested position lies in the texts' own tokens (counted from the end)."""
    if position == "last":
        return True
    wanted = position if isinstance(position, tuple) else (position,)
    return all(isinstance(p, int) and -shortest_suffix <= p < 0 for p in wanted)


def iter_read(
    lm: ModelHandle,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    site: str = "resid",
    position: Position = "last",
    batch_size: int = 32,
    norms: NormMeter | None = None,
    progress: bool | Ticker = False,
    dtype: torch.dtype | None = None,
    share_prefix: bool = True,
    mean_skip: int = 0,
) -> Iterator[Batch]:
    """Yield activations batch by batch (longest first), for callers that accumulate statistics.

    When every text starts with the same tokens (a chat template's header, a persona sentence) and the
    requested positions lie after them, that prefix runs once and each batch continues from a copy of
    its KV cache: contrast data is mostly template, so this skips a large share of the work. The
    result matches a full read up to float rounding; ``share_prefix=False`` turns it off.
    ``mean_skip`` leaves each text's first tokens out of ``position="mean"`` (conditions use it).
    """
    if not texts:
        raise DataError("no texts to read")
    if not layers:
        raise DataError("no layers requested")
    layers = sorted({lm.anatomy.check_layer(int(layer)) for layer in layers})
    modules = {layer: lm.anatomy.module(layer, site) for layer in layers}
    deepest = layers[-1]
    encoded = [lm.encode(text) for text in texts]
    prefix = shared_prefix(encoded) if share_prefix and len(encoded) > 1 else 0
    if prefix and (mean_skip or not _prefix_usable(position, min(len(e) for e in encoded) - prefix)):
        prefix = 0
    order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
    pad = lm.pad_token_id
    store: dict[int, torch.Tensor] = {}
    prefix_norms: dict[int, torch.Tensor] = {}
    state: dict[str, Any] = {"in_prefix": False}

    def make_hook(layer: int, pre: bool):
        def take(h: torch.Tensor) -> None:
            h = h.detach()
            if h.dim() == 2:  # tokens flattened to (batch * tokens, width), e.g. OPT's MLP
                h = h.view(len(state["lengths"]), -1, h.shape[-1])
            if state["in_prefix"]:  # norms of the shared tokens (without the sink), counted per text later
                prefix_norms[layer] = h[0, 1:].float().norm(dim=-1)
                return
            if norms is not None:
                norms.update(layer, h, state["lengths"], skip_first=not prefix)
                if prefix:
                    norms.add(layer, prefix_norms[layer].repeat(h.shape[0]))
            store[layer] = _select(h, state["lengths"], position, mean_skip).float()
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
    # progress=True: a bar for this read alone. Callers reading several times (both sides of a
    # contrast) pass one Ticker instead, so the count never restarts mid-run.
    own_bar = contextlib.ExitStack()
    bar = (
        progress
        if isinstance(progress, Ticker)
        else own_bar.enter_context(task_bar("reading activations", len(texts), quiet=not progress))
    )
    try:
        prefix_cache = _run_prefix(lm, encoded[0][:prefix], state, dtype) if prefix else None
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            padded = right_pad([encoded[i][prefix:] for i in idx], pad)
            lengths, ids, mask = padded.lengths, padded.ids, padded.mask
            extra: dict[str, Any] = {"use_cache": False}
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(idx))
                mask = torch.cat([mask.new_ones((len(idx), prefix)), mask], dim=1)
                extra = {"use_cache": True, cache_arg(lm): cache}
            state["lengths"] = lengths
            store.clear()
            with torch.no_grad(), _autocast(lm, dtype), contextlib.suppress(_Stop):
                lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), **extra)
            yield Batch(list(idx), {layer: store[layer].cpu() for layer in layers})
            bar.advance(len(idx))
    finally:
        for handle in handles:
            handle.remove()
        own_bar.close()


def _run_prefix(lm: ModelHandle, ids: list[int], state: dict[str, Any], dtype: torch.dtype | None) -> Any:
    """One pass over the shared prefix (all layers, so the cache is complete); returns its KV cache."""
    state["in_prefix"], state["lengths"] = True, torch.tensor([len(ids)])
    try:
        with torch.no_grad(), _autocast(lm, dtype):
            out = lm.model(
                input_ids=torch.tensor([ids], device=lm.device),
                attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=lm.device),
                use_cache=True,
            )
    finally:
        state["in_prefix"] = False
    return returned_cache(out)


def read(
    lm: ModelHandle,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    site: str = "resid",
    position: Position = "last",
    batch_size: int = 32,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    share_prefix: bool = True,
    mean_skip: int = 0,
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
        share_prefix=share_prefix,
        mean_skip=mean_skip,
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


#: Neutral texts (narrative, explanation, request, code, question) whose token norms stand in for a
#: model's "typical" activation norm when a vector records none.
NORM_PROBE_TEXTS = (
    "The train left the station a few minutes after nine in the morning.",
    "Water boils at a lower temperature at high altitude because the air pressure is lower.",
    "Please write a short list of things to pack for a weekend trip.",
    "In 1850 the town had about two thousand inhabitants and a single school.",
    "Explain how a bicycle gear changes the effort needed to pedal uphill.",
    "She opened the window, looked at the street, and went back to her book.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "What is the difference between weather and climate?",
)


def typical_norms(lm: ModelHandle, site: str = "resid") -> dict[int, float]:
    """Median token norm per layer at ``site`` on :data:`NORM_PROBE_TEXTS` (every layer, one read).

    Measures what the model computes now, so call it unsteered (see
    :func:`steerlab.engine.context.unsteered`); ``LM.typical_norms`` does, and caches the result.
    """
    return read(lm, list(NORM_PROBE_TEXTS), list(range(lm.num_layers)), site=site).norms


def _autocast(lm: ModelHandle, dtype: torch.dtype | None):
    """Reading precision on the model's own device type (autocast is per device type)."""
    device_type = lm.device.type
    if dtype is None or dtype == torch.float32:
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=dtype)
