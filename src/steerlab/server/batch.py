"""The running batch's tensors and the forward passes over them (prefill, one decode step, one row).

:class:`Batch` holds what carries the live rows from step to step (KV cache, attention mask, positions,
pending tokens, prompt lengths); :class:`BatchModel` runs the model over a group of jobs or over the
batch with per-row steering from the engine. Neither advances a request: the scheduler decides what a
step's logits mean for each job.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from steerlab.decode import cache_arg, last_logits_kwargs, left_pad, returned_cache
from steerlab.server import kvcache
from steerlab.server.jobs import Job


@dataclass
class Prefilled:
    """A prefilled group, not yet part of the running batch."""

    jobs: list[Job]
    cache: Any
    mask: torch.Tensor
    last_pos: torch.Tensor
    logits: torch.Tensor


class Batch:
    """The running batch: its jobs in row order and the tensors that carry them between steps."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.jobs: list[Job] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # (B, T) over every cached step
        self.last_pos: torch.Tensor | None = None  # (B,) position id of the last fed token
        self.pending: torch.Tensor | None = None  # (B,) token to feed next
        self.prompt_lens: torch.Tensor | None = None  # (B,)
        self.ctx: Any = None  # steering context for the current row order (None: no row is steered)
        self.ctx_ready = False  # False after rows join or leave: the context must be rebuilt

    def __len__(self) -> int:
        return len(self.jobs)

    def keep(self, rows: list[int], *, cut: bool) -> None:
        """Keep only ``rows`` (in that order); with ``cut``, drop columns that became padding everywhere."""
        if not rows:
            self.clear()
            return
        if len(rows) == len(self):
            return
        index = torch.tensor(rows, device=self.pending.device)
        self.cache, self.mask = kvcache.select_rows(self.cache, self.mask, index, cut=cut)
        self.jobs = [self.jobs[i] for i in rows]
        self.last_pos, self.pending, self.prompt_lens = (
            self.last_pos.index_select(0, index),
            self.pending.index_select(0, index),
            self.prompt_lens.index_select(0, index),
        )
        self.ctx_ready = False

    def add(self, group: Prefilled, rows: list[int], *, cut: bool) -> None:
        """Append ``rows`` of a prefilled group (their first token sampled) below the running rows."""
        device = group.mask.device
        index = torch.tensor(rows, device=device)
        cache, mask = kvcache.select_rows(group.cache, group.mask, index, cut=cut)
        last = group.last_pos.index_select(0, index)
        pending = torch.tensor([group.jobs[i].next_token for i in rows], device=device)
        plens = torch.tensor([len(group.jobs[i].ids) for i in rows], device=device)
        if not len(self):
            self.cache, self.mask, self.last_pos, self.pending, self.prompt_lens = (
                cache,
                mask,
                last,
                pending,
                plens,
            )
        else:
            self.cache, self.mask = kvcache.merge(self.cache, self.mask, cache, mask)
            self.last_pos = torch.cat([self.last_pos, last])
            self.pending = torch.cat([self.pending, pending])
            self.prompt_lens = torch.cat([self.prompt_lens, plens])
        self.jobs.extend(group.jobs[i] for i in rows)
        self.ctx_ready = False

    def advance(self, cache: Any) -> None:
        """Record a successful decode step: the new cache, one more column, positions one further."""
        self.cache = cache
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self), 1))], dim=1)
        self.last_pos = self.last_pos + 1
        self.pending = torch.tensor([job.next_token for job in self.jobs], device=self.pending.device)


class BatchModel:
    """Forward passes of the served model for the scheduler (prefill, decode step), steered per row."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.cache_kw = cache_arg(lm)
        self.head_kw = last_logits_kwargs(lm)

    def steering(self, jobs: list[Job], *, prefill: bool = False) -> Any:
        """The per-row steering context for ``jobs`` in row order (None: no row is steered).

        Conditions are decided in a job's own prefill (``job.fired``); decode steps reuse those decisions,
        so they survive rows joining and leaving the batch.
        """
        rows = [job.steering or None for job in jobs]
        if not any(rows):
            return None
        if prefill or not any(job.fired for job in jobs):
            return self.lm.steer_rows(rows)
        return self.lm.steer_rows(rows, fired=[job.fired or [] for job in jobs])

    def prefill(self, jobs: list[Job]) -> Prefilled:
        padded = left_pad([job.ids for job in jobs], self.lm.pad_token_id, self.lm.device)
        ctx = self.steering(jobs, prefill=True)
        with ctx if ctx is not None else contextlib.nullcontext():
            result = self.lm.model(
                input_ids=padded.ids,
                attention_mask=padded.mask,
                position_ids=padded.positions,
                use_cache=True,
                **self.head_kw,
            )
        if ctx is not None and ctx.plan.conditions:
            for job, fired in zip(jobs, ctx.fired_rows(), strict=True):
                job.fired = fired
        return Prefilled(
            jobs, returned_cache(result), padded.mask, padded.positions[:, -1], result.logits[:, -1]
        )

    def step(self, b: Batch, rows: list[int] | None = None) -> tuple[Any, torch.Tensor]:
        """Feed each row's pending token (all rows, or only ``rows``); return the cache and logits.

        The batch is not advanced here; with ``rows`` its cache is narrowed to those rows in place
        (undo that with a :class:`kvcache.Snapshot`).
        """
        mask, last_pos, pending, prompt_lens, cache = b.mask, b.last_pos, b.pending, b.prompt_lens, b.cache
        if rows is None:
            if not b.ctx_ready:
                b.ctx, b.ctx_ready = self.steering(b.jobs), True
            ctx = b.ctx
        else:
            index = torch.tensor(rows, device=pending.device)
            cache, mask = kvcache.select_rows(cache, mask, index, cut=False)
            last_pos, pending, prompt_lens = (
                last_pos.index_select(0, index),
                pending.index_select(0, index),
                prompt_lens.index_select(0, index),
            )
            ctx = self.steering([b.jobs[i] for i in rows])
        n = mask.shape[0]
        mask = torch.cat([mask, mask.new_ones((n, 1))], dim=1)
        with ctx if ctx is not None else contextlib.nullcontext():
            if ctx is not None:
                ctx.set_prompt_lengths(prompt_lens)
            result = self.lm.model(
                input_ids=pending.view(n, 1),
                attention_mask=mask,
                position_ids=(last_pos + 1).view(n, 1),
                use_cache=True,
                **self.head_kw,
                **{self.cache_kw: cache},
            )
        return returned_cache(result), result.logits[:, -1]

    def failing_rows(self, b: Batch, snapshot: kvcache.Snapshot) -> dict[int, BaseException]:
        """Recompute every row of a failed step alone; the rows that fail alone, with their errors."""
        failing: dict[int, BaseException] = {}
        for row in range(len(b)):
            try:
                self.step(b, [row])
            except Exception as exc:
                failing[row] = exc
            finally:
                snapshot.restore()
        return failing
