"""The pure math of baking: one affine activation edit folded into a linear layer's weight and bias.

Every runtime edit is ``y -> M y + t`` with ``M = I + (a - 1) u u^T``; folding it after a layer
(``fold_output``) or before it (``fold_input``) is exact in float64.  No model, no torch modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Affine:
    """``y -> y + ((a - 1) (y . u) + b) u`` after ``y -> y + delta``; ``u`` unit or None."""

    delta: torch.Tensor | None
    u: torch.Tensor | None
    a: float
    b: float

    def apply_vec(self, y: torch.Tensor) -> torch.Tensor:
        out = y if self.delta is None else y + self.delta
        if self.u is not None:
            out = out + ((self.a - 1.0) * (out @ self.u) + self.b) * self.u
        return out

    def offset(self) -> torch.Tensor | None:
        """``t`` in ``y -> M y + t``: the image of the zero vector."""
        if self.delta is None and (self.u is None or self.b == 0.0):
            return None
        zero = torch.zeros_like(self.u if self.u is not None else self.delta)
        return self.apply_vec(zero)


def fold_output(weight: torch.Tensor, bias: torch.Tensor | None, edit: Affine):
    """``(W, c)`` of ``x -> edit(W x + c)``; ``W`` is ``(out, in)``, all float64."""
    if edit.u is not None:
        u = edit.u
        weight = weight + (edit.a - 1.0) * torch.outer(u, u @ weight)
    bias = edit.apply_vec(bias) if bias is not None else edit.offset()
    return weight, bias


def fold_input(weight: torch.Tensor, bias: torch.Tensor | None, edit: Affine):
    """``(W, c)`` of ``x -> W edit(x) + c``; ``W`` is ``(out, in)``, all float64."""
    t = edit.offset()
    if t is not None:
        shift = weight @ t
        bias = shift if bias is None else bias + shift
    if edit.u is not None:
        u = edit.u
        weight = weight + (edit.a - 1.0) * torch.outer(weight @ u, u)
    return weight, bias
