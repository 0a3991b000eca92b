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
    ) -> None:
        self.handle = handle
        self.plan = plan
        self.per_row = per_row
        self._compile = compile
        self._handles: list[Any] = []
        self._positions: torch.Tensor | None = None
        self._prompt_len: torch.Tensor | None = None
        self._masks: dict[int, torch.Tensor] = {}

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

    def set_rows(self, rows: Sequence[Sequence[Steering]], *, strict_model: bool = True) -> None:
        """Replace the per-row steerings (e.g. when requests join or leave a shared batch).

        The new plan is compiled first, so a bad row leaves the current steering installed.
        """
        if self._compile is not None:
            plan = self._compile(rows, strict_model=strict_model)
        else:
            plan = compile_plan(self.handle, rows, norms={}, strict_model=strict_model)
        was_active = self.active
        self.remove()
        self.plan = plan
        self.per_row = True
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
            h = new if term.kind is None else torch.where(self._mask(term, h), new, h)
        return h

    def _apply_site(self, terms: list[Term], h: torch.Tensor) -> torch.Tensor:
        """Some blocks (OPT's MLP) flatten tokens to ``(batch * tokens, width)``: view them back first."""
        if h.dim() != 2:
            return self._apply(terms, h)
        known = self._positions is not None and self._positions.numel() == h.shape[0]
        shape = self._positions.shape if known else (1, h.shape[0])
        return self._apply(terms, h.view(*shape, h.shape[-1])).view_as(h)

    def _post_hook(self, terms: list[Term]):
        if len(terms) == 1 and terms[0].u is None and terms[0].kind is None:
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
