"""Per-request steering inside a vLLM worker: forward hooks on the decoder layers of a flat token batch.

vLLM runs every scheduled request in one flat ``(tokens, hidden)`` batch. Once per forward pass a
pre-hook on the model asks its *source* which requests of the batch carry a steering (their index in
vLLM's batch order, their decoded steering, their prompt length) and reads where each one's tokens start
(``query_start_loc`` of the forward context's attention metadata); requests without a steering are left
alone, and a pass with none costs one call per layer. Two sources exist: steerlab's logits-processor
plugin (:mod:`.plugin`, which vLLM tells about every request joining, leaving or moving in its batch) and
the worker extension (:mod:`.worker`, which reads the model runner's batch). Both give the same rows.

Layer ``i``'s output ``(hidden_states, residual)`` sums to the residual stream after block ``i``; each edit
is computed on that sum and added back to ``hidden_states`` as a correction, so ``add``/``ablate``/
``clamp``/``scale`` mean exactly what they mean in the torch engine. Token positions come from the layer's
own ``positions`` argument (absolute, across KV-cache steps and prefix-cache hits).

Conditions: at a condition's layer, before that layer's edits, each conditional request's prompt tokens
in this pass (from the condition's ``skip`` on) are summed into the request's own running sum, across
prefill chunks; in the pass that computes the prompt's last token the mean is scored and decided by the
:class:`~steerlab.engine.condition.Condition` itself, and gated edits apply from there on (later layers of
that pass, and every decode step), exactly where the torch engine applies them when the prompt is
prefilled in one pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlab.backends.vllm.payload import RequestSteering, decode, steering_key
from steerlab.engine import ops
from steerlab.errors import SteeringError

log = logging.getLogger("steerlab.vllm")

#: Decoded steerings kept per worker (oldest out first when full); also bounds the per-request records.
CACHE_SIZE = 1024
#: The attribute of a vLLM decoder stack that holds its one steerer (so two installers never steer twice).
ATTRIBUTE = "_steerlab_steerer"


@dataclass
class LiveRequest:
    """A steered request in a worker: its steering, prompt length, and its conditions' running state."""

    steering: RequestSteering
    prompt_len: int
    sums: dict[int, torch.Tensor] = field(default_factory=dict)  # leaf number -> float32 (W,)
    counts: dict[int, int] = field(default_factory=dict)
    leaf_fired: dict[int, torch.Tensor] = field(default_factory=dict)  # id(leaf) -> (1,) bool
    partial: bool = False  # its prompt was prefilled in several chunks, or started from cached blocks

    def decided(self, index: int) -> bool | None:
        """Condition ``index``'s decision, or None while a leaf of it is undecided."""
        cond = self.steering.conditions[index]
        if any(id(leaf) not in self.leaf_fired for leaf in cond.leaves()):
            return None
        return bool(cond.evaluate(self.leaf_fired)[0])

    def fired(self) -> list[bool] | None:
        """Whether each conditional steering fired (in the user's order); None before the prompt ends."""
        out = [self.decided(c) for c in self.steering.reports]
        return None if any(x is None for x in out) else [bool(x) for x in out]


#: A source: the steered requests of the batch about to run, as ``(batch index, live request)``.
Source = Callable[[], list[tuple[int, LiveRequest]]]


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
    gates: tuple[int, ...]  # per steered request: condition index, -1 = ungated
    #: every request's edit at this depth is a plain addition at all its tokens (the common case): its
    #: correction is the vector itself, so the hook need not read the stream
    adds_only: bool = False


@dataclass
class _Batch:
    """The steered requests of one forward pass and where their tokens sit in the flat batch."""

    index: torch.Tensor  # flat token indices of steered requests
    row: torch.Tensor  # steered-request number of each of those tokens
    prompt_len: torch.Tensor  # prompt length of each of those tokens' request
    spans: list[tuple[int, int]]  # per steered request: its slice of ``index``
    live: list[LiveRequest]
    layers: dict[int, list[_LayerTerms]] = field(default_factory=dict)
    leaves: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # layer -> (row, leaf number)


class Decoder:
    """Decodes (once per distinct string) and checks encoded steerings for a model of ``width``."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._cache: dict[str, RequestSteering] = {}

    def steering_of(self, text: Any) -> RequestSteering:
        key = steering_key(text) if isinstance(text, str) and text.isascii() else None
        found = self._cache.get(key) if key is not None else None
        if found is None:
            found = decode(text)
            check_width(found, self.width)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = found
        return found

    def live(self, text: Any, prompt_len: int, request: str) -> LiveRequest | None:
        """A new steered request's state; a steering the worker cannot use is logged and left unsteered.

        vLLM gives a worker no way to fail one request of a batch, and raising here would fail every
        request of the step; steerlab's plugin refuses such payloads at admission (HTTP 400), so this is
        reached only by requests that bypassed it.
        """
        try:
            return LiveRequest(self.steering_of(text), prompt_len)
        except SteeringError as exc:
            log.error("steerlab: request %s runs UNSTEERED: %s", request, exc)
            return None


def find_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder stack of a vLLM model (``model.layers`` of the inner model, as vLLM's models name it)."""
    for name in ("model.layers", "language_model.model.layers", "transformer.h", "layers"):
        module: Any = model
        for part in name.split("."):
            module = getattr(module, part, None)
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            return module
    raise SteeringError(f"cannot find the decoder layers of {type(model).__name__} (looked for model.layers)")


def steerer_for(model: torch.nn.Module, forward_context: Callable[[], Any]) -> BatchSteerer:
    """The one steerer of ``model``'s decoder stack, made (hooks installed) on first use.

    It is kept on the decoder layers' ``ModuleList``, which the worker extension (given the runner's model)
    and the plugin (given the first module of a forward pass, possibly an inner one) both reach: one stack,
    one steerer, never two sets of hooks.
    """
    layers = find_layers(model)
    steerer = getattr(layers, ATTRIBUTE, None)
    if steerer is None:
        steerer = BatchSteerer(model, forward_context)
        setattr(layers, ATTRIBUTE, steerer)
    steerer.install()
    return steerer


class BatchSteerer:
    """Hooks for one vLLM model; :meth:`install` once per worker, :meth:`remove` to take them off.

    ``source`` says which requests of the next batch are steered (see :data:`Source`); until one is set,
    nothing is steered.
    """

    def __init__(self, model: torch.nn.Module, forward_context: Callable[[], Any]) -> None:
        self.model = model
        self.source: Source | None = None
        self._forward_context = forward_context
        self._handles: list[Any] = []
        self._batch: _Batch | None = None
        # the stacked tables of the last batch composition (decode steps usually repeat it)
        self._tables: tuple[tuple[RequestSteering, ...], dict[int, list[_LayerTerms]]] | None = None
        self.width = int(getattr(getattr(model, "config", None), "hidden_size", 0) or 0)
        self.decoder = Decoder(self.width)

    # ---------------------------------------------------------------- lifecycle
    @property
    def installed(self) -> bool:
        return bool(self._handles)

    def install(self) -> int:
        """Put the hooks on (idempotent); returns how many decoder layers are hooked."""
        if self._handles:
            return len(self._handles) - 1
        layers = find_layers(self.model)
        self._handles.append(self.model.register_forward_pre_hook(self.begin))
        for index, layer in enumerate(layers):
            if not list(layer.parameters()):  # a pipeline-parallel placeholder for another rank's layer
                continue
            self._handles.append(layer.register_forward_hook(self._layer_hook(index), with_kwargs=True))
        return len(self._handles) - 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._batch = None
        self._tables = None

    # ---------------------------------------------------------------- batch map
    def begin(self, module: torch.nn.Module, args: tuple) -> None:
        """Map this forward pass's steered requests to their tokens (the model's pre-hook)."""
        self._batch = None
        steered = self.source() if self.source is not None else []
        if not steered:
            return
        starts = self._query_starts()
        index: list[int] = []
        row: list[int] = []
        plen: list[int] = []
        spans = []
        for j, (i, live) in enumerate(steered):
            lo, hi = starts[i], starts[i + 1]
            spans.append((len(index), len(index) + hi - lo))
            index.extend(range(lo, hi))
            row.extend([j] * (hi - lo))
            plen.extend([live.prompt_len] * (hi - lo))
        if not index:
            return
        device = next(module.parameters()).device
        lives = [live for _, live in steered]
        batch = _Batch(
            torch.tensor(index, device=device),
            torch.tensor(row, device=device),
            torch.tensor(plen, device=device),
            spans,
            lives,
        )
        steerings = [live.steering for live in lives]
        composition = tuple(steerings)  # held, so identity comparisons below cannot meet a reused id
        last = self._tables[0] if self._tables is not None else ()
        if len(last) != len(composition) or any(a is not b for a, b in zip(last, composition, strict=True)):
            layers = sorted({k for s in steerings for k in s.layers})
            self._tables = (composition, {k: _stack_layer(steerings, k, device) for k in layers})
        batch.layers = self._tables[1]
        for j, live in enumerate(lives):
            for n, leaf in enumerate(live.steering.leaves):
                if id(leaf) not in live.leaf_fired:
                    batch.leaves.setdefault(leaf.layer, []).append((j, n))
        self._batch = batch

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
            if batch is None or (layer not in batch.layers and layer not in batch.leaves):
                return None
            hidden, residual = output
            idx = batch.index
            stack = batch.layers.get(layer, ())
            if layer not in batch.leaves and all(t.adds_only for t in stack):
                # additions only: the correction is the sum of the vectors, no read of the stream needed
                deltas = [t.delta.to(hidden.dtype)[batch.row] for t in stack if t.delta is not None]
                if not deltas:
                    return None
                return (hidden.index_add(0, idx, deltas[0] if len(deltas) == 1 else sum(deltas)), residual)
            positions = kwargs.get("positions", args[0] if args else None)
            before = hidden[idx] if residual is None else hidden[idx] + residual[idx]
            pos = positions[idx].view(-1, 1) if positions is not None else None
            if layer in batch.leaves:
                if pos is None:
                    raise SteeringError("this vLLM model's layers receive no positions; conditions need them")
                _read_conditions(batch, batch.leaves[layer], before, pos.view(-1))
            if layer not in batch.layers:
                return None
            stream = before
            for terms in batch.layers[layer]:
                stream = _apply(terms, stream, batch, pos)
            # one out-of-place op: the edit's correction added at the steered tokens (vLLM's tensor stays as is)
            return (hidden.index_add(0, idx, stream - before), residual)

        return hook


def check_width(steering: RequestSteering, width: int) -> None:
    """Refuse a steering compiled for another model width (``width`` 0: unknown, not checked)."""
    if width and steering.width != width:
        raise SteeringError(f"the steering was compiled for width {steering.width}; this model's is {width}")


def _read_conditions(
    batch: _Batch, wanted: list[tuple[int, int]], stream: torch.Tensor, pos: torch.Tensor
) -> None:
    """Add this pass's prompt tokens to each conditional request's sums; decide at the prompt's end."""
    for j, n in wanted:
        live = batch.live[j]
        leaf = live.steering.leaves[n]
        lo, hi = batch.spans[j]
        if hi == lo or id(leaf) in live.leaf_fired:
            continue
        p = pos[lo:hi]
        first, last = int(p[0]), int(p[-1])
        if first >= live.prompt_len:
            continue  # a decode step with the prompt never seen (resumed after preemption): undecidable
        if n not in live.counts:
            live.partial = live.partial or first > 0
            live.sums[n] = torch.zeros(stream.shape[-1], dtype=torch.float32, device=stream.device)
            live.counts[n] = 0
        elif first > 0:
            live.partial = True
        keep = ((p >= leaf.skip) & (p < live.prompt_len)).to(torch.float32).unsqueeze(-1)
        live.sums[n] += (stream[lo:hi].to(torch.float32) * keep).sum(0)
        live.counts[n] += int(keep.sum())
        if last + 1 >= live.prompt_len:
            mean = live.sums[n] / max(live.counts[n], 1)
            live.leaf_fired[id(leaf)] = leaf.decide(leaf.scores(mean.unsqueeze(0)))
            if live.partial:
                log.warning(
                    "steerlab: a condition was decided over a prompt prefilled in several chunks or from "
                    "cached blocks; prompt tokens computed before the decision were not steered"
                )


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
        gates = tuple(t.gate if t is not None else -1 for t in slot)
        adds_only = u is None and not positional and all(g < 0 for g in gates)
        out.append(_LayerTerms(delta, u, a, b, kind, start, positional, gates, adds_only))
    return out


def _apply(terms: _LayerTerms, stream: torch.Tensor, batch: _Batch, pos: torch.Tensor | None) -> torch.Tensor:
    row = batch.row
    new = stream if terms.delta is None else stream + terms.delta.to(stream.dtype)[row]
    if terms.u is not None:
        u = terms.u.to(stream.dtype)[row]
        a, b = terms.a.to(stream.dtype)[row], terms.b.to(stream.dtype)[row]
        new = ops.set_component(new, u, a, b)
    mask = None
    if terms.positional:
        if pos is None:
            raise SteeringError("this vLLM model's layers receive no positions; position policies need them")
        kind, start = terms.kind[row], terms.start[row]
        mask = ops.position_mask(pos, batch.prompt_len, kind, start).view(-1, 1)
    if any(g >= 0 for g in terms.gates):
        # a gated edit applies once its condition has fired on the request's prompt (undecided: not yet)
        rows = [g < 0 or bool(live.decided(g)) for g, live in zip(terms.gates, batch.live, strict=True)]
        gate = torch.tensor(rows, device=stream.device)[row].view(-1, 1)
        mask = gate if mask is None else mask & gate
    return new if mask is None else torch.where(mask, new, stream)
