"""Installing a :class:`Plan` as hooks and taking it out again, leaving the model exactly as it was.

Weights are never touched: every edit lives in a forward hook that returns a new tensor, so removing
the hooks restores the model bit for bit. A context is an object (no global registry): contexts nest,
the inner one's hooks run after the outer one's, and each exits on its own. The handle lists the
contexts installed on it, in order, so :func:`unsteered` can lift them all for a clean measurement and
put them back exactly as they were; hooks therefore never need to check a "paused" flag.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from steerlab.engine import ops
from steerlab.engine.condition import Condition, pooled_prompt_mean
from steerlab.engine.plan import Plan, Term, compile_plan
from steerlab.engine.spec import Steering
from steerlab.errors import SteeringError
from steerlab.models.handle import ModelHandle

#: Compiles per-row steerings into a plan for one model (e.g. ``LM.compile``, which supplies norms).
Compiler = Callable[..., Plan]


class SteeringContext:
    """Hooks for one plan. Use as ``with lm.steer(...):``; ``set_rows`` swaps per-row steerings live.

    ``compile`` turns new rows into a plan for :meth:`set_rows`; without one, rows are compiled with no
    measured norms (fine for raw units and vectors that record their norms, a clear error otherwise).
    """

    def __init__(
        self,
        handle: ModelHandle,
        plan: Plan,
        *,
        per_row: bool = False,
        compile: Compiler | None = None,
        fired: Sequence[Sequence[bool]] | None = None,
    ) -> None:
        self.handle = handle
        self.plan = plan
        self.per_row = per_row
        self._compile = compile
        self._handles: list[Any] = []
        self._positions: torch.Tensor | None = None
        self._prompt_len: torch.Tensor | None = None
        self._masks: dict[Any, torch.Tensor] = {}
        # conditions: leaf decisions of the last prefill (id(leaf) -> (B,) bool), or decisions given
        self._prefill = False
        self._leaf_fired: dict[int, torch.Tensor] = {}
        self._preset: torch.Tensor | None = None
        if fired is not None:
            self._preset = preset_decisions(plan, fired, handle.device)

    # ----------------------------------------------------------- lifecycle
    def __enter__(self) -> SteeringContext:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @property
    def active(self) -> bool:
        return any(ctx is self for ctx in self.handle.steering_contexts)

    def install(self) -> None:
        if self.active:
            raise SteeringError("this steering context is already installed; create a new one to nest")
        self._hook()
        self.handle.steering_contexts.append(self)

    def remove(self) -> None:
        self._unhook()
        live = self.handle.steering_contexts
        live[:] = [ctx for ctx in live if ctx is not self]
        self._positions = self._prompt_len = None
        self._masks.clear()

    def _hook(self) -> None:
        """Register this plan's hooks (all or none)."""
        try:
            if self.plan.needs_positions or self.per_row:
                model = self.handle.model
                self._handles.append(model.register_forward_pre_hook(self._track_positions, with_kwargs=True))
            if self.plan.leaves and self._preset is None:  # first, so they read a layer before its edits
                by_layer: dict[int, list[Condition]] = {}
                for leaf in self.plan.leaves:
                    by_layer.setdefault(leaf.layer, []).append(leaf)
                for layer, leaves in sorted(by_layer.items()):
                    module = self.handle.anatomy.module(layer, "resid")
                    self._handles.append(module.register_forward_hook(self._leaf_hook(leaves)))
            for (layer, site), terms in self.plan.terms.items():
                module = self.handle.anatomy.module(layer, site)
                if site == "head":
                    self._handles.append(module.register_forward_pre_hook(self._pre_hook(terms)))
                else:
                    self._handles.append(module.register_forward_hook(self._post_hook(terms)))
        except Exception:
            self._unhook()
            raise

    def _unhook(self) -> None:
        """Take the hooks off, keeping token-position state (a lifted context resumes mid-generation)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def set_rows(
        self,
        rows: Sequence[Sequence[Steering]],
        *,
        strict_model: bool = True,
        fired: Sequence[Sequence[bool]] | None = None,
    ) -> None:
        """Replace the per-row steerings (e.g. when requests join or leave a shared batch).

        ``fired`` gives, per row, the decision of each of its conditional steerings (in order), made at
        that row's own prefill (see :meth:`fired_rows`); without it, conditions are decided at the next
        prefill. The new plan is compiled first, so a bad row leaves the current steering installed.
        """
        if self._compile is not None:
            plan = self._compile(rows, strict_model=strict_model)
        else:
            plan = compile_plan(self.handle, rows, norms={}, strict_model=strict_model)
        preset = preset_decisions(plan, fired, self.handle.device) if fired is not None else None
        was_active = self.active
        self.remove()
        self.plan = plan
        self.per_row = True
        self._preset = preset
        self._leaf_fired = {}
        if was_active:
            self.install()

    def set_prompt_lengths(self, lengths: torch.Tensor) -> None:
        """Override how many tokens of each row count as prompt (for callers that prefill piecewise)."""
        self._prompt_len = lengths.to(self.handle.device)

    # --------------------------------------------------------------- hooks
    def _track_positions(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        ref = ids if ids is not None else kwargs.get("inputs_embeds")
        batch, length = ref.shape[0], ref.shape[1]
        if self.per_row and batch != self.plan.rows:
            raise SteeringError(
                f"per-row steering was built for {self.plan.rows} rows but the batch has {batch}"
            )
        mask = kwargs.get("attention_mask")
        past = kwargs.get("cache", kwargs.get("past_key_values"))
        past_len = int(past.get_seq_length()) if past is not None and hasattr(past, "get_seq_length") else 0
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            real = mask[:, -length:].bool()
            absolute = (mask.long().cumsum(-1) - 1)[:, -length:]
        else:
            real = torch.ones(batch, length, dtype=torch.bool, device=ref.device)
            absolute = torch.arange(past_len, past_len + length, device=ref.device).expand(batch, length)
        if past_len == 0 or self._prompt_len is None or self._prompt_len.shape[0] != batch:
            self._prompt_len = (
                real.sum(-1) if past_len == 0 else torch.zeros(batch, dtype=torch.long, device=ref.device)
            )
        self._positions = torch.where(real, absolute, torch.full_like(absolute, -1))
        self._masks.clear()
        self._prefill = past_len == 0
        if self._prefill and self.plan.leaves and self._preset is None:
            self._leaf_fired = {}

    # ---------------------------------------------------------- conditions
    def _leaf_hook(self, leaves: list[Condition]):
        """Decide ``leaves`` (all read at one layer) from the prompt mean, in prefill passes only."""

        def hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
            if not self._prefill:
                return
            h = output if isinstance(output, torch.Tensor) else output[0]
            if self._positions is None:
                raise SteeringError("a condition needs the model called through its top-level forward")
            if h.dim() == 2:
                h = h.view(*self._positions.shape, h.shape[-1])
            pooled: dict[int, torch.Tensor] = {}
            for leaf in leaves:
                if leaf.skip not in pooled:
                    pooled[leaf.skip] = pooled_prompt_mean(h, self._positions >= leaf.skip)
                self._leaf_fired[id(leaf)] = leaf.decide(leaf.scores(pooled[leaf.skip]))

        return hook

    def _condition(self, index: int, batch: int) -> torch.Tensor:
        """Condition ``index``'s decision per row ``(batch,)``: given, or from the last prefill's leaves."""
        if self._preset is not None:
            return self._preset[:, index]
        cond = self.plan.conditions[index]
        missing = [leaf for leaf in cond.leaves() if id(leaf) not in self._leaf_fired]
        if missing and self._prefill:
            # read at a later layer of this very pass: only positions="generated" steerings may ask that
            # (check_condition_order), and they edit no prompt token, so nothing fires yet
            return torch.zeros(batch, dtype=torch.bool, device=self.handle.device)
        if missing:
            raise SteeringError(
                f"{missing[0].describe()} has not been decided: conditions are decided in the prompt's "
                "forward pass (one without a KV cache) while the steering is installed, and this context "
                "saw none (pass the decisions made at prefill with fired=)"
            )
        decided = cond.evaluate(self._leaf_fired)
        if decided.shape[0] != batch:
            raise SteeringError(
                f"the conditions were decided for {decided.shape[0]} rows but the batch has {batch}"
            )
        return decided

    def _gate(self, term: Term, h: torch.Tensor) -> torch.Tensor:
        """Rows (``(B, 1, 1)`` bool) where ``term``'s condition fired (or that it does not gate)."""
        key = ("gate", id(term))
        mask = self._masks.get(key)
        if mask is None:
            batch = h.shape[0]
            gate = term.gate.expand(batch) if term.gate.shape[0] == 1 else term.gate
            out = gate < 0
            for index in term.conds:
                out = out | ((gate == index) & self._condition(index, batch))
            mask = out.view(batch, 1, 1)
            self._masks[key] = mask
        return mask

    def fired_rows(self) -> list[list[bool]]:
        """Per batch row, whether each of its conditional steerings fired (in order); [] for none.

        Read after a forward pass (e.g. after ``lm.generate``); the decisions stay until the next prefill.
        """
        plan = self.plan
        if not plan.conditions:
            return [[] for _ in plan.row_conditions]
        some = self._preset if self._preset is not None else next(iter(self._leaf_fired.values()), None)
        if some is None:
            raise SteeringError(
                "no condition has been decided yet: run a forward pass over the prompts first"
            )
        batch = some.shape[0]
        columns = [self._condition(i, batch) for i in range(len(plan.conditions))]
        out = []
        for row in range(batch):
            own = plan.row_conditions[row if len(plan.row_conditions) > 1 else 0]
            out.append([bool(columns[c][row]) for c in own])
        return out

    def _mask(self, term: Term, h: torch.Tensor) -> torch.Tensor:
        key = id(term)
        mask = self._masks.get(key)
        if mask is None:
            if self._positions is None or self._positions.shape[:2] != h.shape[:2]:
                raise SteeringError(
                    "token positions are unknown for this forward pass: position policies need the model "
                    "to be called through its top-level forward (input_ids + attention_mask)"
                )
            kind = term.kind.expand(h.shape[0]) if term.kind.shape[0] == 1 else term.kind
            start = term.start.expand(h.shape[0]) if term.start.shape[0] == 1 else term.start
            mask = ops.position_mask(self._positions, self._prompt_len, kind, start)
            self._masks[key] = mask
        return mask

    def _apply(self, terms: list[Term], h: torch.Tensor) -> torch.Tensor:
        for term in terms:
            if term.rows != 1 and term.rows != h.shape[0]:
                raise SteeringError(
                    f"per-row steering was built for {term.rows} rows but the forward pass has {h.shape[0]}"
                )
            new = h if term.delta is None else ops.add(h, term.delta)
            if term.u is not None:
                new = ops.set_component(new, term.u, term.a, term.b)
            mask = None if term.kind is None else self._mask(term, h)
            if term.gate is not None:
                gate = self._gate(term, h)
                mask = gate if mask is None else mask & gate
            h = new if mask is None else torch.where(mask, new, h)
        return h

    def _apply_site(self, terms: list[Term], h: torch.Tensor) -> torch.Tensor:
        """Some blocks (OPT's MLP) flatten tokens to ``(batch * tokens, width)``: view them back first."""
        if h.dim() != 2:
            return self._apply(terms, h)
        known = self._positions is not None and self._positions.numel() == h.shape[0]
        shape = self._positions.shape if known else (1, h.shape[0])
        return self._apply(terms, h.view(*shape, h.shape[-1])).view_as(h)

    def _post_hook(self, terms: list[Term]):
        if len(terms) == 1 and terms[0].u is None and terms[0].kind is None and terms[0].gate is None:
            return self._add_hook(terms)

        def hook(module: torch.nn.Module, args: tuple, output: Any) -> Any:
            if isinstance(output, torch.Tensor):
                return self._apply_site(terms, output)
            return (self._apply_site(terms, output[0]), *output[1:])

        return hook

    def _add_hook(self, terms: list[Term]):
        """The common case (one additive edit at every position) with nothing else on the hot path."""
        delta, rows = terms[0].delta, terms[0].rows

        def hook(module: torch.nn.Module, args: tuple, output: Any) -> Any:
            h = output if isinstance(output, torch.Tensor) else output[0]
            if h.dim() != 3:  # flattened tokens: the general path views them back
                new = self._apply_site(terms, h)
                return new if h is output else (new, *output[1:])
            if rows != 1 and h.shape[0] != rows:
                self._apply(terms, h)  # raises the row-count error
            # ops.add written out: one Python call less on the hottest path of all
            if h is output:
                return output + delta
            return (output[0] + delta, *output[1:])

        return hook

    def _pre_hook(self, terms: list[Term]):
        def hook(module: torch.nn.Module, args: tuple) -> tuple | None:
            return (self._apply_site(terms, args[0]), *args[1:])

        return hook


def preset_decisions(plan: Plan, fired: Sequence[Sequence[bool]], device: torch.device) -> torch.Tensor:
    """The ``(rows, conditions)`` decision matrix from per-row decisions of each conditional steering."""
    if len(fired) != len(plan.row_conditions):
        raise SteeringError(f"fired has {len(fired)} rows but the steering has {len(plan.row_conditions)}")
    matrix = torch.zeros(len(fired), len(plan.conditions), dtype=torch.bool)
    for row, (decisions, own) in enumerate(zip(fired, plan.row_conditions, strict=True)):
        if len(decisions) != len(own):
            raise SteeringError(
                f"row {row} has {len(own)} conditional steerings but {len(decisions)} decisions were given"
            )
        for index, decision in zip(own, decisions, strict=True):
            matrix[row, index] = bool(decision)
    return matrix.to(device)


@contextlib.contextmanager
def unsteered(handle: ModelHandle) -> Iterator[None]:
    """Run ``handle``'s model unsteered for a moment (e.g. to measure typical norms).

    Every installed context's hooks come off, newest first, and go back on in their original order when
    the block ends (also after an exception); position state is kept, so a context lifted between two
    decode steps resumes where it was.
    """
    live = list(handle.steering_contexts)
    for ctx in reversed(live):
        ctx._unhook()
    try:
        yield
    finally:
        for ctx in live:
            ctx._hook()
