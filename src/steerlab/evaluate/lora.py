"""The LoRA baseline: a small-rank adapter trained on the positive completions, applied reversibly.

The adapter is injected into the model in place (peft's LoRA layers wrap the targeted linears) only for
the duration of a ``with adapter.applied(lm):`` block, and unloaded on exit, so the same loaded model
serves every method in the arena. Left unmerged, LoRA leaves the base weights untouched and unloading is
exact; merging changes them and unmerging does not restore them bit for bit (float rounding), which the
reversibility criterion measures (:func:`merge_round_trip_error`).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from steerlab.decode.padding import right_pad
from steerlab.errors import DataError, SteeringError

if TYPE_CHECKING:
    from steerlab.lm import LM

TARGET_CANDIDATES = ("q_proj", "v_proj", "c_attn", "query_key_value", "qkv_proj", "Wqkv")


def default_targets(model: torch.nn.Module) -> list[str]:
    """Attention query/value projections by their usual names (the classic LoRA placement)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [t for t in TARGET_CANDIDATES if t in names]
    if not found:
        raise SteeringError(f"no LoRA target found: looked for modules named {', '.join(TARGET_CANDIDATES)}")
    return found[:2]


def _config(rank: int, alpha: float, targets: Sequence[str], dropout: float = 0.0) -> Any:
    try:
        from peft import LoraConfig
    except ImportError as exc:
        raise SteeringError("the LoRA baseline needs 'peft' (pip install 'steerlab[eval]')") from exc
    return LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout, bias="none"
    )


@contextlib.contextmanager
def _injected(model: torch.nn.Module, config: Any) -> Iterator[Any]:
    """Inject LoRA layers in place; unload them (without merging) on exit and restore requires_grad."""
    from peft.tuners.lora import LoraModel

    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    tuner = LoraModel(model, config, "default")
    try:
        yield tuner
    finally:
        tuner.unload()
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, p.requires_grad))
        if hasattr(model, "peft_config"):
            del model.peft_config


@dataclass
class LoraAdapter:
    """Trained adapter weights (``lora_A``/``lora_B`` per targeted module) and the config that shapes them."""

    rank: int
    alpha: float
    targets: list[str]
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    @contextlib.contextmanager
    def applied(self, lm: LM, merge: bool = False) -> Iterator[LM]:
        """Run ``lm`` with this adapter; with ``merge`` the deltas are folded into the weights meanwhile."""
        with _injected(lm.model, _config(self.rank, self.alpha, self.targets)) as tuner:
            params = dict(lm.model.named_parameters())
            missing = [k for k in self.state if k not in params]
            if missing:
                raise SteeringError(f"adapter weights do not fit this model: {missing[:3]} not found")
            with torch.no_grad():
                for key, value in self.state.items():
                    params[key].copy_(value)
            if merge:
                tuner.merge_adapter()
            try:
                yield lm
            finally:
                if merge:
                    tuner.unmerge_adapter()


def _batches(lm: LM, examples: Sequence[tuple[str, str]], batch_size: int, rng: random.Random):
    eos = lm.tokenizer.eos_token or ""
    rows = []
    for prompt, completion in examples:
        head = lm.encode(prompt)
        tail = lm.tokenizer(completion + eos, add_special_tokens=False)["input_ids"]
        rows.append((head, tail))
    order = list(range(len(rows)))
    rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[start : start + batch_size]]
        batch = right_pad([h + t for h, t in chunk], lm.pad_token_id)
        labels = torch.full_like(batch.ids, -100)  # loss on the completion tokens only
        for r, (h, t) in enumerate(chunk):
            labels[r, len(h) : len(h) + len(t)] = torch.tensor(t)
        yield batch.ids.to(lm.device), batch.mask.to(lm.device), labels.to(lm.device)


def train_lora(
    lm: LM,
    examples: Sequence[tuple[str, str]],
    *,
    rank: int = 4,
    alpha: float = 8.0,
    targets: Sequence[str] | None = None,
    epochs: int = 2,
    lr: float = 2e-3,
    batch_size: int = 8,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[LoraAdapter, dict[str, Any]]:
    """Train a LoRA adapter on ``(rendered prompt, completion)`` pairs (loss on completion tokens only).

    Returns the adapter and its cost: wall seconds, forward and backward passes (one each per batch),
    trainable parameter count and the loss curve.
    """
    if len(examples) < 1:
        raise DataError("LoRA training needs at least one (prompt, completion) example")
    targets = list(targets) if targets else default_targets(lm.model)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    start = time.perf_counter()
    losses: list[float] = []
    passes = 0
    was_training = lm.model.training
    with _injected(lm.model, _config(rank, alpha, targets)):
        trainable = [p for n, p in lm.model.named_parameters() if "lora_" in n]
        for p in trainable:
            p.requires_grad_(True)
        optimiser = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
        lm.model.train()
        try:
            for _ in range(epochs):
                for ids, mask, labels in _batches(lm, examples, batch_size, rng):
                    out = lm.model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
                    optimiser.zero_grad()
                    out.loss.backward()
                    optimiser.step()
                    passes += 1
                    losses.append(float(out.loss.detach()))
                    if on_step is not None:
                        on_step(passes, losses[-1])
        finally:
            lm.model.train(was_training)
        state = {n: p.detach().clone() for n, p in lm.model.named_parameters() if "lora_" in n}
    seconds = time.perf_counter() - start
    cost = {
        "seconds": seconds,
        "forward_passes": passes,
        "backward_passes": passes,
        "examples": len(examples),
        "epochs": epochs,
        "trainable_parameters": int(sum(v.numel() for v in state.values())),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }
    return LoraAdapter(rank, alpha, targets, state), cost


def merge_round_trip_error(lm: LM, adapter: LoraAdapter) -> float:
    """Largest absolute weight change left after merging the adapter and unmerging it again."""
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    with adapter.applied(lm, merge=True):
        pass
    after = dict(lm.model.named_parameters())
    error = max(float((after[n].detach() - v).abs().max()) for n, v in before.items())
    # The measurement must not leave the drift behind: put the exact original weights back.
    with torch.no_grad():
        for name, value in before.items():
            after[name].copy_(value)
    return error
