"""Computational cost: what building an adaptation took and what it costs at inference.

Building is counted in wall seconds and in passes through the model (forward and backward), counted by
hooks on the model's top-level module, so any method is measured the same way whatever it does inside.
Inference cost is generated tokens per second relative to the unadapted model, plus the extra prompt
tokens an adaptation adds to every request (the hidden price of prompting).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from steerlab.lm import LM


@contextlib.contextmanager
def counting(model: torch.nn.Module) -> Iterator[dict[str, Any]]:
    """Count top-level forward and backward passes and wall seconds inside the block.

    The counting hooks are removed on exit (even on error) so they do not count as a leak.
    """
    record: dict[str, Any] = {"forward_passes": 0, "backward_passes": 0, "seconds": 0.0}

    def on_forward(*_: Any) -> None:
        record["forward_passes"] += 1

    def on_backward(*_: Any) -> None:
        record["backward_passes"] += 1

    # HF models return a ModelOutput, which backward hooks cannot see; the output embedding returns a
    # tensor and every backward pass through the model goes through it once.
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    target = head if isinstance(head, torch.nn.Module) else model
    handles = [
        model.register_forward_pre_hook(on_forward),
        target.register_full_backward_pre_hook(on_backward),
    ]
    start = time.perf_counter()
    try:
        yield record
    finally:
        record["seconds"] = time.perf_counter() - start
        for handle in handles:
            handle.remove()


def extra_prompt_tokens(lm: LM, adaptation: Any, user: str = "Hello.") -> int:
    """How many more tokens the adaptation puts in front of a request than the plain chat prompt."""
    from steerlab.evaluate.adaptations import baseline

    return len(lm.encode(adaptation.render(lm, user))) - len(lm.encode(baseline().render(lm, user)))


def relative_speed(adapted_tok_s: float, base_tok_s: float) -> float | None:
    """Adapted throughput as a fraction of the unadapted one (1.0 = no slowdown)."""
    return adapted_tok_s / base_tok_s if base_tok_s > 0 else None
