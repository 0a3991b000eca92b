"""A learned steering vector (BiPO, Cao et al. 2024): optimise the vector, not the model.

Data are preference pairs: a prompt with a positive and a negative completion. With the model frozen,
a vector ``v`` added to the residual stream at one layer is trained so that, relative to the unsteered
model, ``+v`` makes the positive completion likelier than the negative one and ``-v`` does the reverse:

    loss(v) = -log sigmoid( d * beta * [ (log p_dv(y+|x) - log p_0(y+|x)) - (log p_dv(y-|x) - log p_0(y-|x)) ] )

with ``d`` alternating between +1 and -1 from step to step (BiPO samples it; alternating is the same in
expectation and reproducible). The two signs make the vector bi-directional: subtracting it steers
the other way, as for extracted vectors. A held-out split is scored (both signs) every ``eval_every``
steps; the vector with the best held-out loss is kept, and training stops after ``patience`` scores
without improvement. The loss curves are returned in the diagnostics.

The additive deltas go through the engine (``additive_plan`` + ``SteeringContext``), so training sees
exactly the intervention that steering applies later.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from steerlab.decode.padding import right_pad
from steerlab.errors import DataError

if TYPE_CHECKING:
    from steerlab.lm import LM
    from steerlab.vector import SteeringVector


@dataclass(frozen=True)
class Example:
    """Token ids of one preference pair: shared prompt, positive and negative completion."""

    prompt: list[int]
    positive: list[int]
    negative: list[int]


def preference_examples(lm: LM, data: Any, *, chat: bool = True) -> list[Example]:
    """Tokenise pairs that carry a prompt (ContrastPair, dict, or ``(prompt, positive, negative)``)."""
    out = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            prompt, pos, neg = item.get("prompt"), item.get("positive"), item.get("negative")
        elif isinstance(item, tuple | list) and len(item) == 3:
            prompt, pos, neg = item
        else:
            prompt, pos, neg = (getattr(item, k, None) for k in ("prompt", "positive", "negative"))
        if not all(isinstance(x, str) and x for x in (prompt, pos, neg)):
            raise DataError(
                f"pair {i}: the learned method needs a 'prompt' and non-empty 'positive'/'negative' completions, "
                f"got {item!r}"[:240]
            )
        if pos == neg:
            raise DataError(f"pair {i}: positive and negative completions are identical")
        head = lm.encode(lm.chat(prompt) if chat else prompt)
        tok = lm.tokenizer
        out.append(
            Example(
                head,
                tok(pos, add_special_tokens=False)["input_ids"],
                tok(neg, add_special_tokens=False)["input_ids"],
            )
        )
    if len(out) < 2:
        raise DataError(f"need at least 2 preference pairs, got {len(out)}")
    return out


def completion_logprobs(
    lm: LM, prompts: Sequence[list[int]], completions: Sequence[list[int]]
) -> torch.Tensor:
    """Sum of log p(completion tokens | prompt) per row, in one right-padded forward (keeps autograd)."""
    return _logprobs(lm, prompts, completions)


def _logprobs(
    lm: LM,
    prompts: Sequence[list[int]],
    completions: Sequence[list[int]],
    start: _StartAt | None = None,
) -> torch.Tensor:
    """:func:`completion_logprobs`, optionally from cached block states (``start``) and computing the
    vocabulary projection only from the first completion position on (where the model allows it)."""
    seqs = [p + c for p, c in zip(prompts, completions, strict=True)]
    batch = right_pad(seqs, lm.pad_token_id, lm.device)
    width = batch.ids.shape[1]
    first = min(len(p) for p in prompts) - 1  # the earliest position whose logits score a completion token
    options: dict[str, Any] = {}
    if _takes_logits_to_keep(lm.model):
        options["logits_to_keep"] = width - first
    else:
        first = 0
    if start is None:
        logits = lm.model(input_ids=batch.ids, attention_mask=batch.mask, use_cache=False, **options).logits
    else:
        with start.entering(seqs, width):
            logits = lm.model(
                input_ids=batch.ids, attention_mask=batch.mask, use_cache=False, **options
            ).logits
    totals = []
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        rows = logits[i, len(p) - 1 - first : len(p) + len(c) - 1 - first].float()
        target = torch.tensor(c, device=rows.device)
        totals.append(F.log_softmax(rows, -1).gather(1, target[:, None]).sum())
    return torch.stack(totals)


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class _StartAt:
    """Run the frozen model from block ``layer`` on: the blocks below pass their input through and block
    ``layer`` returns its cached unsteered output, to which the steering hook then adds the vector.

    The model is frozen and the vector enters after block ``layer``, so everything up to that block's
    output is the same at every step: computing it once per sequence and skipping it afterwards changes
    no number, only the time. ``states`` maps a token sequence (as a tuple) to its ``(len, width)`` output.
    """

    def __init__(self, lm: LM, layer: int) -> None:
        self.blocks = [lm.anatomy.module(i, "resid") for i in range(layer + 1)]
        self.states: dict[tuple[int, ...], torch.Tensor] = {}
        self.as_tuple = False

    @contextmanager
    def recording(self, seqs: Sequence[list[int]]) -> Iterator[None]:
        """Cache block ``layer``'s output for ``seqs`` during the (unsteered) forward run inside."""
        seen: list[torch.Tensor] = []

        def grab(module: torch.nn.Module, args: Any, output: Any) -> None:
            self.as_tuple = not isinstance(output, torch.Tensor)
            seen.append((output if isinstance(output, torch.Tensor) else output[0]).detach())

        handle = self.blocks[-1].register_forward_hook(grab)
        try:
            yield
        finally:
            handle.remove()
        if len(seen) != 1 or seen[0].shape[0] != len(seqs):
            raise RuntimeError("expected exactly one forward pass over the recorded sequences")
        for i, s in enumerate(seqs):
            self.states[tuple(s)] = seen[0][i, : len(s)].clone()

    def entering(self, seqs: Sequence[list[int]], width: int) -> _Skipping:
        rows = [self.states[tuple(s)] for s in seqs]
        padded = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
        for i, r in enumerate(rows):
            padded[i, : len(r)] = r  # pad positions are never attended to by real ones (causal, right-padded)
        return _Skipping(self.blocks, padded, self.as_tuple)


class _Skipping:
    """Temporarily replace the ``forward`` of the blocks up to the cached one (restored on exit)."""

    def __init__(self, blocks: list[torch.nn.Module], output: torch.Tensor, as_tuple: bool) -> None:
        self.blocks, self.output, self.as_tuple = blocks, output, as_tuple
        self.saved: list[Any] = []

    def __enter__(self) -> None:
        def passthrough(*args: Any, **kwargs: Any) -> Any:
            h = args[0] if args else kwargs["hidden_states"]
            return (h,) if self.as_tuple else h

        def cached(*args: Any, **kwargs: Any) -> Any:
            return (self.output,) if self.as_tuple else self.output

        self.saved = [block.__dict__.get("forward") for block in self.blocks]
        for block in self.blocks[:-1]:
            block.forward = passthrough
        self.blocks[-1].forward = cached

    def __exit__(self, *exc: object) -> None:
        for block, old in zip(self.blocks, self.saved, strict=True):
            if old is None:
                del block.forward
            else:
                block.forward = old


def bipo_loss(
    logp_pos: torch.Tensor,
    logp_neg: torch.Tensor,
    ref_pos: torch.Tensor,
    ref_neg: torch.Tensor,
    sign: float,
    beta: float,
) -> torch.Tensor:
    """Mean BiPO loss for one sign ``d`` of the vector (pure: testable against a hand computation)."""
    margin = (logp_pos - ref_pos) - (logp_neg - ref_neg)
    return -F.logsigmoid(sign * beta * margin).mean()


class _Frozen:
    """Turn off gradients for every model parameter, restoring the exact flags afterwards."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.flags: list[tuple[torch.nn.Parameter, bool]] = []

    def __enter__(self) -> None:
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.flags:
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for p, flag in self.flags:
            p.requires_grad_(flag)


def _sides(batch: Sequence[Example]) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts and completions of a batch: every positive completion, then every negative one."""
    return [e.prompt for e in batch] * 2, [e.positive for e in batch] + [e.negative for e in batch]


def _scores(
    lm: LM,
    batch: Sequence[Example],
    delta: torch.Tensor | None,
    layer: int,
    start: _StartAt | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion log-probs of both sides with ``delta`` added at ``layer`` (None: unsteered)."""
    from steerlab.engine import SteeringContext, additive_plan

    prompts, completions = _sides(batch)
    if delta is None:
        both = _logprobs(lm, prompts, completions, start)
    else:
        with SteeringContext(lm, additive_plan({layer: delta.to(lm.device, lm.dtype)}, "resid")):
            both = _logprobs(lm, prompts, completions, start)
    return both[: len(batch)], both[len(batch) :]


def _evaluate(
    lm: LM,
    examples: list[Example],
    ref: tuple[torch.Tensor, torch.Tensor],
    v: torch.Tensor,
    layer: int,
    beta: float,
    batch_size: int,
    start: _StartAt | None = None,
) -> tuple[float, float]:
    """Held-out loss (mean over both signs) and the fraction of pairs whose margin +v makes positive."""
    losses, wins = [], []
    with torch.no_grad():
        for first in range(0, len(examples), batch_size):
            chunk = examples[first : first + batch_size]
            rp, rn = ref[0][first : first + batch_size], ref[1][first : first + batch_size]
            for sign in (1.0, -1.0):
                lp, ln = _scores(lm, chunk, sign * v, layer, start)
                losses.append(bipo_loss(lp, ln, rp, rn, sign, beta) * len(chunk))
                if sign > 0:
                    wins.append(((lp - rp) - (ln - rn) > 0).float().sum())
    return float(torch.stack(losses).sum() / (2 * len(examples))), float(
        torch.stack(wins).sum() / len(examples)
    )


def train_vector(
    lm: LM,
    data: Any,
    *,
    layer: int | None = None,
    steps: int = 200,
    lr: float = 0.02,
    beta: float = 0.1,
    pairs_per_step: int = 8,
    heldout: float = 0.2,
    eval_every: int = 10,
    patience: int = 3,
    min_improvement: float = 0.0,
    cache_states: bool = True,
    chat: bool = True,
    seed: int = 0,
    notes: str = "",
) -> SteeringVector:
    """Optimise a steering vector at ``layer`` (default: 40% of the depth) on preference pairs.

    ``min_improvement``: a held-out score must beat the best by more than this to count as progress, so
    training stops once the held-out loss has flattened, not only once it rises. ``cache_states``
    computes the frozen model up to ``layer`` once per sequence instead of at every step (same numbers,
    a fraction of the time; ``False`` runs every forward in full, for checking).
    """
    from steerlab.data import split
    from steerlab.vector import SteeringVector

    layer = int(lm.num_layers * 0.4) if layer is None else lm.anatomy.check_layer(layer)
    if steps < 1 or pairs_per_step < 1 or eval_every < 1 or patience < 1:
        raise DataError("steps, pairs_per_step, eval_every and patience must all be at least 1")
    if not min_improvement >= 0:
        raise DataError(f"min_improvement must be a non-negative number, got {min_improvement}")
    batch_size = pairs_per_step
    examples = preference_examples(lm, data, chat=chat)
    train, held = split(examples, heldout, seed)
    start = _StartAt(lm, layer) if cache_states else None
    with torch.no_grad():
        ref_train = _batched_ref(lm, train, batch_size, layer, start)
        ref_held = _batched_ref(lm, held, batch_size, layer, start)
    generator = torch.Generator().manual_seed(seed)
    v = torch.zeros(lm.hidden_size, requires_grad=True)
    optimiser = torch.optim.Adam([v], lr=lr)
    train_curve: list[float] = []
    held_curve: list[tuple[int, float]] = []
    since_best = 0
    stopped_early = False
    with _Frozen(lm.model):
        if start is not None and not _reproduces(lm, held, ref_held, layer, batch_size, start):
            # skipping the lower blocks changed the numbers (an architecture whose blocks do more than
            # map hidden states to hidden states): run every forward in full instead
            start = None
        first, acc0 = _evaluate(lm, held, ref_held, v.detach(), layer, beta, batch_size, start)
        held_curve.append((0, first))
        best = (first, v.detach().clone(), 0, acc0)
        for step in range(1, steps + 1):
            pick = torch.randperm(len(train), generator=generator)[:batch_size].tolist()
            batch = [train[i] for i in pick]
            sign = 1.0 if step % 2 else -1.0
            with torch.enable_grad():
                lp, ln = _scores(lm, batch, sign * v, layer, start)
                loss = bipo_loss(lp, ln, ref_train[0][pick], ref_train[1][pick], sign, beta)
                optimiser.zero_grad()
                loss.backward()
            optimiser.step()
            train_curve.append(float(loss.detach()))
            if step % eval_every == 0 or step == steps:
                score, accuracy = _evaluate(lm, held, ref_held, v.detach(), layer, beta, batch_size, start)
                held_curve.append((step, score))
                if score < best[0] - min_improvement:
                    best, since_best = (score, v.detach().clone(), step, accuracy), 0
                else:
                    if score < best[0]:
                        best = (score, v.detach().clone(), step, accuracy)
                    since_best += 1
                    if since_best >= patience:
                        stopped_early = step < steps
                        break
    loss_best, vector, best_step, accuracy = best
    norm = float(vector.norm())
    if norm == 0:
        raise DataError("training never improved on the zero vector: the pairs give the objective no signal")
    typical = lm.typical_norms("resid")[layer]
    diagnostics = {
        "train_loss": train_curve,
        "heldout_loss": [score for _, score in held_curve],
        "heldout_steps": [s for s, _ in held_curve],
        "best_step": best_step,
        "stopped_early": stopped_early,
        "cached_states": start is not None,
        str(layer): {
            "norm": norm,
            "heldout_loss": loss_best,
            "heldout_pref_accuracy": accuracy,
            "heldout_loss_at_zero": held_curve[0][1],
            "relative_norm": norm / typical,
        },
    }
    return SteeringVector(
        directions={layer: vector},
        model_id=lm.model_id,
        hidden_size=lm.hidden_size,
        site="resid",
        method="learned",
        data_hash=_hash(examples),
        norms={layer: typical},
        notes=notes,
        # The learned delta is meaningful as is: raw unit, strength 1 adds exactly v (2 adds 2v, -1 subtracts).
        defaults={"strength": 1.0, "unit": "raw", "op": "add", "layers": [layer]},
        provenance={
            "pairs": len(examples),
            "train": len(train),
            "heldout": len(held),
            "beta": beta,
            "lr": lr,
            "pairs_per_step": pairs_per_step,
            "steps_run": len(train_curve),
            "chat": chat,
        },
        diagnostics=diagnostics,
    )


def _reproduces(
    lm: LM,
    examples: list[Example],
    ref: tuple[torch.Tensor, torch.Tensor],
    layer: int,
    batch_size: int,
    start: _StartAt,
) -> bool:
    """Whether the cached-start forward gives the full forward's log-probs (one unsteered batch)."""
    chunk = examples[:batch_size]
    with torch.no_grad():
        lp, ln = _scores(lm, chunk, None, layer, start)
    error = max(
        float((lp - ref[0][: len(chunk)]).abs().max()), float((ln - ref[1][: len(chunk)]).abs().max())
    )
    return error < 1e-3


def _batched_ref(
    lm: LM, examples: list[Example], batch_size: int, layer: int, start: _StartAt | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unsteered completion log-probs (they never change); the same forwards fill ``start``'s cache."""
    pos, neg = [], []
    for first in range(0, len(examples), batch_size):
        chunk = examples[first : first + batch_size]
        if start is None:
            p, n = _scores(lm, chunk, None, layer)
        else:
            prompts, completions = _sides(chunk)
            with start.recording([a + b for a, b in zip(prompts, completions, strict=True)]):
                p, n = _scores(lm, chunk, None, layer)
        pos.append(p)
        neg.append(n)
    return torch.cat(pos), torch.cat(neg)


def _hash(examples: list[Example]) -> str:
    import hashlib
    import json

    blob = json.dumps([[e.prompt, e.positive, e.negative] for e in examples]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
