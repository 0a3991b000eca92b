"""Per-request steering inside a vLLM worker: forward hooks on the decoder layers of a flat token batch.

vLLM runs every scheduled request in one flat ``(tokens, hidden)`` batch. Once per forward pass a
pre-hook on the model reads which requests are in it (``input_batch.req_ids``, in batch order), where
each one's tokens start (``query_start_loc`` of the forward context's attention metadata) and each one's
``extra_args``; requests without a steering are left alone, and a pass with none costs one dict lookup
per layer. Layer ``i``'s output ``(hidden_states, residual)`` sums to the residual stream after block
``i``; each edit is computed on that sum and added back to ``hidden_states`` as a correction, so
``add``/``ablate``/``clamp``/``scale`` mean exactly what they mean in the torch engine. Token positions
come from the layer's own ``positions`` argument (absolute, across KV-cache steps and prefix-cache hits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlab.backends.vllm.payload import EXTRA_ARG, RequestSteering, decode, steering_key
from steerlab.engine import ops
from steerlab.errors import SteeringError

#: Decoded steerings kept per worker (most recent first out when full).
CACHE_SIZE = 1024


@dataclass
class _LayerTerms:
    """One depth of edits at one layer, stacked over the steered requests of the current batch."""

    delta: torch.Tensor | None  # (J, W)
    u: torch.Tensor | None  # (J, W)
    a: torch.Tensor  # (J, 1)
    b: torch.Tensor  # (J, 1)
    kind: torch.Tensor  # (J,)
    start: torch.Tensor  # (J,)
    positional: bool


@dataclass
class _Batch:
    """The steered requests of one forward pass and where their tokens sit in the flat batch."""

    index: torch.Tensor  # flat token indices of steered requests
    row: torch.Tensor  # steered-request number of each of those tokens
    prompt_len: torch.Tensor  # prompt length of each of those tokens' request
    layers: dict[int, list[_LayerTerms]] = field(default_factory=dict)


def find_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder stack of a vLLM model (``model.layers`` of the inner model, as vLLM's models name it)."""
    for name in ("model.layers", "language_model.model.layers", "transformer.h", "layers"):
        module: Any = model
        for part in name.split("."):
            module = getattr(module, part, None)
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            return module
    raise SteeringError(f"cannot find the decoder layers of {type(model).__name__} (looked for model.layers)")


class BatchSteerer:
    """Hooks for one vLLM model runner; :meth:`install` once per worker, :meth:`remove` to take them off."""

    def __init__(self, runner: Any, forward_context: Callable[[], Any]) -> None:
        self.runner = runner
        self._forward_context = forward_context
        self._handles: list[Any] = []
        self._cache: dict[str, RequestSteering] = {}
        self._batch: _Batch | None = None
        # per request id: (its extra_args string, decoded), so a live request is decoded once
        self._by_request: dict[str, tuple[str, RequestSteering]] = {}
        # the stacked tables of the last batch composition (decode steps usually repeat it)
        self._tables: tuple[tuple[RequestSteering, ...], dict[int, list[_LayerTerms]]] | None = None
        self.width = 0

    # ---------------------------------------------------------------- lifecycle
    def install(self) -> int:
        if self._handles:
            return len(self._handles) - 1
        model = self.runner.model
        layers = find_layers(model)
        self._handles.append(model.register_forward_pre_hook(self._begin))
        for index, layer in enumerate(layers):
            if not list(layer.parameters()):  # a pipeline-parallel placeholder for another rank's layer
                continue
            self._handles.append(layer.register_forward_hook(self._layer_hook(index), with_kwargs=True))
        self.width = int(getattr(getattr(model, "config", None), "hidden_size", 0) or 0)
        return len(self._handles) - 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._batch = None
        self._tables = None

    # ---------------------------------------------------------------- batch map
    def steering_of(self, text: str) -> RequestSteering:
        key = steering_key(text)
        found = self._cache.get(key)
        if found is None:
            found = decode(text)
            if self.width and found.width != self.width:
                raise SteeringError(
                    f"the steering was compiled for width {found.width}; this model's is {self.width}"
                )
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = found
        return found

    def _begin(self, module: torch.nn.Module, args: tuple) -> None:
        self._batch = None
        runner = self.runner
        req_ids = list(runner.input_batch.req_ids)
        steered = []
        for i, req_id in enumerate(req_ids):
            state = runner.requests.get(req_id) if req_id is not None else None
            params = getattr(state, "sampling_params", None)
            extra = getattr(params, "extra_args", None) or {}
            text = extra.get(EXTRA_ARG)
            if text:
                steered.append((i, self._request_steering(req_id, text), state.num_prompt_tokens))
        if not steered:
            return
        starts = self._query_starts()
        index, row, plen = [], [], []
        for j, (i, _steering, prompt_len) in enumerate(steered):
            lo, hi = starts[i], starts[i + 1]
            index.extend(range(lo, hi))
            row.extend([j] * (hi - lo))
            plen.extend([prompt_len] * (hi - lo))
        if not index:
            return
        device = next(module.parameters()).device
        batch = _Batch(
            torch.tensor(index, device=device),
            torch.tensor(row, device=device),
            torch.tensor(plen, device=device),
        )
        steerings = [s for _, s, _ in steered]
        composition = tuple(steerings)  # held, so identity comparisons below cannot meet a reused id
        last = self._tables[0] if self._tables is not None else ()
        if len(last) != len(composition) or any(a is not b for a, b in zip(last, composition, strict=True)):
            layers = sorted({k for s in steerings for k in s.layers})
            self._tables = (composition, {k: _stack_layer(steerings, k, device) for k in layers})
        batch.layers = self._tables[1]
        self._batch = batch

    def _request_steering(self, req_id: str, text: str) -> RequestSteering:
        """A live request's decoded steering, decoded once (the string object identifies it)."""
        known = self._by_request.get(req_id)
        if known is not None and known[0] is text:
            return known[1]
        if len(self._by_request) >= CACHE_SIZE:
            live = self.runner.requests
            self._by_request = {k: v for k, v in self._by_request.items() if k in live}
        steering = self.steering_of(text)
        self._by_request[req_id] = (text, steering)
        return steering

    def _query_starts(self) -> list[int]:
        metadata = self._forward_context().attn_metadata
        if isinstance(metadata, list):  # one dict per micro-batch (dual-batch overlap): not supported
            metadata = metadata[0] if len(metadata) == 1 else None
        if isinstance(metadata, dict):
            metadata = next(iter(metadata.values()), None)
        starts = getattr(metadata, "query_start_loc", None)
        if starts is None:
            raise SteeringError("vLLM gave no query_start_loc for this batch; cannot map tokens to requests")
        return [int(x) for x in starts.tolist()]

    # ---------------------------------------------------------------- the edit
    def _layer_hook(self, layer: int):
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            batch = self._batch
            if batch is None or layer not in batch.layers:
                return None
            hidden, residual = output
            positions = kwargs.get("positions", args[0] if args else None)
            idx = batch.index
            before = hidden[idx] if residual is None else hidden[idx] + residual[idx]
            stream = before
            pos = positions[idx].view(-1, 1) if positions is not None else None
            for terms in batch.layers[layer]:
                stream = _apply(terms, stream, batch, pos)
            out = hidden.clone()
            out[idx] = hidden[idx] + (stream - before)
            return (out, residual)

        return hook


def _stack_layer(steerings: list[RequestSteering], layer: int, device: torch.device) -> list[_LayerTerms]:
    depth = max(len(s.layers.get(layer, ())) for s in steerings)
    width = steerings[0].width
    zeros = torch.zeros(width)
    out = []
    for d in range(depth):
        slot = [s.layers[layer][d] if d < len(s.layers.get(layer, ())) else None for s in steerings]
        has_delta = any(t is not None and t.delta is not None for t in slot)
        has_u = any(t is not None and t.u is not None for t in slot)
        delta = (
            torch.stack([t.delta if t is not None and t.delta is not None else zeros for t in slot]).to(
                device
            )
            if has_delta
            else None
        )
        u = (
            torch.stack([t.u if t is not None and t.u is not None else zeros for t in slot]).to(device)
            if has_u
            else None
        )
        a = torch.tensor([[t.a if t is not None else 1.0] for t in slot], device=device)
        b = torch.tensor([[t.b if t is not None else 0.0] for t in slot], device=device)
        # a request with no term at this depth has delta = u = 0, a = 1, b = 0: its tokens come out as
        # they went in, whatever its window
        kind = torch.tensor([t.kind if t is not None else 0 for t in slot], device=device)
        start = torch.tensor([t.start if t is not None else 0 for t in slot], device=device)
        positional = any(t is not None and t.kind != 0 for t in slot)
        out.append(_LayerTerms(delta, u, a, b, kind, start, positional))
    return out


def _apply(terms: _LayerTerms, stream: torch.Tensor, batch: _Batch, pos: torch.Tensor | None) -> torch.Tensor:
    row = batch.row
    new = stream if terms.delta is None else stream + terms.delta.to(stream.dtype)[row]
    if terms.u is not None:
        u = terms.u.to(stream.dtype)[row]
        a, b = terms.a.to(stream.dtype)[row], terms.b.to(stream.dtype)[row]
        new = ops.set_component(new, u, a, b)
    if not terms.positional:
        return new
    if pos is None:
        raise SteeringError("this vLLM model's layers receive no positions; position policies need them")
    kind, start = terms.kind[row], terms.start[row]
    mask = ops.position_mask(pos, batch.prompt_len, kind, start).view(-1, 1)
    return torch.where(mask, new, stream)
