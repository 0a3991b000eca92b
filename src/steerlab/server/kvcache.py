"""KV-cache surgery for continuous batching: merge two left-padded batches, drop rows, trim padding.

A decoder's KV cache holds, per layer, key and value tensors of shape ``(B, heads, T, d)``. Requests that
join a running batch are prefilled on their own and then stitched in: both caches (and their 2-D attention
masks) are left-padded to a common length and concatenated along the batch axis. Padding slots hold zeros
and are masked out, and every row keeps explicit position ids, so each row computes what it would alone.
When rows leave, the columns that have become padding for every remaining row are cut off again.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from steerlab.errors import ModelError


def _layers(cache: Any) -> list[Any]:
    """The per-layer holders with ``keys``/``values`` tensors; refuse caches we cannot edit at all."""
    layers = getattr(cache, "layers", None)
    if layers is None or not all(hasattr(x, "keys") and hasattr(x, "values") for x in layers):
        raise ModelError(
            f"continuous batching needs a transformers DynamicCache with per-layer tensors, got {type(cache).__name__}"
        )
    return list(layers)


def is_mergeable(cache: Any) -> bool:
    """Whether rows can join (merge) and padding columns can be cut: plain full-attention layers only.

    Sliding-window layers keep only the last window of keys, so their time axis no longer lines up with
    the attention mask; such caches can still lose rows, but requests cannot join mid-flight.
    """
    try:
        layers = _layers(cache)
    except ModelError:
        return False
    return all(not getattr(x, "is_sliding", False) and type(x).__name__ == "DynamicLayer" for x in layers)


def _plain_layers(cache: Any) -> list[Any]:
    if not is_mergeable(cache):
        kinds = sorted({type(x).__name__ for x in getattr(cache, "layers", [])})
        raise ModelError(
            f"this KV cache ({', '.join(kinds) or type(cache).__name__}) cannot be merged or trimmed"
        )
    return list(cache.layers)


def cache_length(cache: Any) -> int:
    """Number of cached time steps (0 for an empty cache)."""
    for layer in _layers(cache):
        keys = layer.keys
        if isinstance(keys, torch.Tensor) and keys.dim() == 4:
            return int(keys.shape[-2])
    return 0


def _left_pad(t: torch.Tensor, extra: int, dim: int) -> torch.Tensor:
    if extra == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - (dim % t.dim())) + [extra, 0]
    return F.pad(t, pad)


def merge(cache: Any, mask: torch.Tensor, other: Any, other_mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """Append the rows of ``other`` below those of ``cache`` (edited in place and returned), with masks.

    The masks are ``(B, T)`` 0/1 tensors covering every cached step; the shorter side is left-padded.
    """
    length, other_length = mask.shape[1], other_mask.shape[1]
    width = max(length, other_length)
    mine, theirs = _plain_layers(cache), _plain_layers(other)
    if len(mine) != len(theirs):
        raise ModelError(f"cannot merge caches with {len(mine)} and {len(theirs)} layers")
    for a, b in zip(mine, theirs, strict=True):
        a.keys = torch.cat(
            [_left_pad(a.keys, width - length, -2), _left_pad(b.keys, width - other_length, -2)]
        )
        a.values = torch.cat(
            [_left_pad(a.values, width - length, -2), _left_pad(b.values, width - other_length, -2)]
        )
    merged = torch.cat([_left_pad(mask, width - length, 1), _left_pad(other_mask, width - other_length, 1)])
    return cache, merged


def select_rows(
    cache: Any, mask: torch.Tensor, keep: torch.Tensor, *, cut: bool = True
) -> tuple[Any, torch.Tensor]:
    """Keep only the batch rows ``keep`` (a 1-D index tensor); with ``cut``, then :func:`trim`."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(keep)
    else:
        for layer in _layers(cache):
            layer.keys = layer.keys.index_select(0, keep)
            layer.values = layer.values.index_select(0, keep)
    mask = mask.index_select(0, keep)
    return trim(cache, mask) if cut else (cache, mask)


def trim(cache: Any, mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """Drop leading columns that are padding in every row (they can never be attended to)."""
    if mask.shape[0] == 0:
        return cache, mask[:, :0]
    real = mask.bool().any(0)
    first = int(real.int().argmax()) if bool(real.any()) else mask.shape[1]
    if first == 0:
        return cache, mask
    for layer in _plain_layers(cache):
        layer.keys = layer.keys[..., first:, :]
        layer.values = layer.values[..., first:, :]
    return cache, mask[:, first:]


class Snapshot:
    """References to everything a dynamic cache holds, taken before a forward pass (cheap: no copies).

    Dynamic caches replace their tensors on every update instead of writing into them, so restoring these
    references undoes a forward pass that failed halfway (some layers updated, the rest not), and undoes
    a row selection made to recompute one row alone.
    """

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.state = dict(vars(cache))
        self.layers = list(getattr(cache, "layers", []))
        self.layer_states = [dict(vars(layer)) for layer in self.layers]

    def restore(self) -> None:
        vars(self.cache).clear()
        vars(self.cache).update(self.state)
        if hasattr(self.cache, "layers"):
            self.cache.layers = list(self.layers)
        for layer, state in zip(self.layers, self.layer_states, strict=True):
            vars(layer).clear()
            vars(layer).update(state)
