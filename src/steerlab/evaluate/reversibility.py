"""Reversibility: after an adaptation is removed, is the model exactly the model it was?

Three independent witnesses, all of which must agree:

* **logits**: next-token logits on probe texts are bit-identical before and after (``torch.equal``);
* **weights**: a SHA-256 over every parameter and buffer (names, dtypes, shapes, bytes) is unchanged;
* **hooks**: no forward/pre-forward hook is left on any module that was not there before.

A leaked hook changes the hook census (and usually the logits); a LoRA adapter merged and never
unmerged changes the weight hash and the logits; one left injected changes the parameter names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from steerlab.lm import LM

DEFAULT_PROBES = (
    "The capital of France is",
    "Write a short note to a colleague about the meeting tomorrow.",
    "def fibonacci(n):",
)


def weight_hash(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict (sorted names, dtype, shape and raw bytes of every tensor)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def installed_hooks(model: torch.nn.Module) -> dict[str, int]:
    """Count of forward and pre-forward hooks per module name (modules without hooks are omitted).

    transformers 5 installs output-capturing hooks of its own on blocks and attention modules the
    first time ``output_hidden_states``/``output_attentions`` is used and keeps them; they are part of
    the model, not an adaptation, and are not counted (else a run that once asked for hidden states
    would look like a leak).
    """
    census = {}
    for name, module in model.named_modules():
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        count = sum(1 for hook in hooks if not _is_transformers_hook(hook))
        if count:
            census[name or "<root>"] = count
    return census


def _is_transformers_hook(hook: object) -> bool:
    owner = getattr(hook, "__module__", "") or ""
    return owner == "transformers" or owner.startswith("transformers.")


@dataclass
class ReversibilityReport:
    """What changed between before and after; ``passed`` only if nothing did."""

    logits_identical: bool
    max_abs_logit_diff: float
    weights_identical: bool
    hash_before: str
    hash_after: str
    leaked_hooks: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.logits_identical and self.weights_identical and not self.leaked_hooks

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _logits(lm: LM, texts: Sequence[str]) -> torch.Tensor:
    return lm.logits(list(texts))


def check(
    lm: LM,
    apply_and_remove: Callable[[LM], None],
    probes: Sequence[str] = DEFAULT_PROBES,
    note: str = "",
) -> ReversibilityReport:
    """Snapshot the model, run ``apply_and_remove(lm)`` (which must install, use and remove), compare."""
    hooks_before = installed_hooks(lm.model)
    hash_before = weight_hash(lm.model)
    logits_before = _logits(lm, probes)
    apply_and_remove(lm)
    hooks_after = installed_hooks(lm.model)
    hash_after = weight_hash(lm.model)
    logits_after = _logits(lm, probes)
    leaked = {k: v - hooks_before.get(k, 0) for k, v in hooks_after.items() if v > hooks_before.get(k, 0)}
    same_shape = logits_before.shape == logits_after.shape
    diff = float((logits_before - logits_after).abs().max()) if same_shape else float("inf")
    return ReversibilityReport(
        logits_identical=same_shape and torch.equal(logits_before, logits_after),
        max_abs_logit_diff=diff,
        weights_identical=hash_before == hash_after,
        hash_before=hash_before,
        hash_after=hash_after,
        leaked_hooks=leaked,
        note=note,
    )


def check_adaptation(lm: LM, adaptation: Any, probes: Sequence[str] = DEFAULT_PROBES) -> ReversibilityReport:
    """Install an :class:`Adaptation`, run a forward pass under it, remove it, and compare."""

    def run(model: LM) -> None:
        with adaptation.active(model) as active:
            active.logits([adaptation.render(model, probes[0])])

    return check(lm, run, probes, note=f"{adaptation.family}:{adaptation.name}")
