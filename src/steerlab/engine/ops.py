"""The intervention math as pure tensor functions (the hooks only route tensors to these).

Every op is written as ``h' = h + delta + ((a - 1) * c + b) * u`` with ``c = h . u`` for a unit ``u``:
``add`` is ``delta``; ``ablate``/``clamp``/``scale`` set the new component to ``a * c + b`` with the
``(a, b)`` of :func:`component_rule`. The plan computes the coefficients once; the hooks apply
:func:`add`, :func:`set_component` and :func:`position_mask`. Rows that a term does not touch carry
``delta = 0``, ``u = 0``, ``a = 1``, ``b = 0`` and come out bit-identical.
"""

from __future__ import annotations

import torch

from steerlab.errors import SteeringError

OP_CODES = {"all": 0, "prompt": 1, "generated": 2, "from": 3}
NO_END = 1 << 62


def add(h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``h + delta``."""
    return h + delta


def component(h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Projection coefficient of ``h`` on unit ``u`` along the last axis, kept as a trailing dim."""
    return (h * u).sum(-1, keepdim=True)


def set_component(h: torch.Tensor, u: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Replace the component ``c`` of ``h`` along unit ``u`` with ``a * c + b``."""
    c = component(h, u)
    return h + ((a - 1) * c + b) * u


def component_rule(op: str, strength: float, typical: float = 1.0) -> tuple[float, float]:
    """The ``(a, b)`` of :func:`set_component` for the projection ops: the new component is ``a * c + b``.

    ``ablate`` removes a fraction ``strength`` of ``c``; ``clamp`` sets ``c`` to ``strength * typical``
    (``typical`` is 1 for the raw unit); ``scale`` multiplies ``c`` by ``strength``.
    """
    if op == "ablate":
        return 1.0 - strength, 0.0
    if op == "clamp":
        return 0.0, strength * typical
    if op == "scale":
        return strength, 0.0
    raise SteeringError(f"'{op}' is not a projection op (ablate, clamp, scale)")


def position_mask(
    positions: torch.Tensor, prompt_len: torch.Tensor, kind: torch.Tensor, start: torch.Tensor
) -> torch.Tensor:
    """Which tokens a policy covers, as a ``(B, T, 1)`` bool mask.

    ``positions`` holds each token's absolute index among the real (non-padding) tokens of its row, -1 for
    padding; ``prompt_len`` the number of prompt tokens per row; ``kind``/``start`` the per-row policy
    codes (see ``OP_CODES``). Padding is never covered.
    """
    plen = prompt_len.view(-1)
    lo = torch.where(kind == OP_CODES["generated"], plen, torch.where(kind == OP_CODES["from"], start, 0))
    hi = torch.where(kind == OP_CODES["prompt"], plen, torch.full_like(plen, NO_END))
    mask = (positions >= lo[:, None]) & (positions < hi[:, None]) & (positions >= 0)
    return mask.unsqueeze(-1)
