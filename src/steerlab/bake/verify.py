"""Verification: the runtime steering a bake equals, and the check that the written folder reproduces it.

A bake is kept only if the folder, reloaded by stock transformers, gives the logits of
:func:`runtime_equivalent` on a probe text within float rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from steerlab.bake.plan import plan_bake
from steerlab.engine.spec import Steering, as_steerings
from steerlab.errors import ModelError

if TYPE_CHECKING:
    from steerlab.lm import LM
    from steerlab.vector import SteeringVector

# One short text: every position is compared, and the bias/orthogonalisation acts on all of them alike.
PROBE_TEXT = "The old lighthouse keeper climbed the stairs. Q: What is the capital of France? A: It is"
# Logits of the baked model may differ from runtime steering only by float rounding: the bias is added
# inside the projection instead of after the residual sum, and orthogonalised weights are computed in
# float64 then rounded.  Measured on SmolLM2-135M (float32): ~1e-5 relative; allowed: 1e-4 of the logit
# scale (plus 1e-4 absolute).
RTOL = 1e-4
ATOL = 1e-4


@contextlib.contextmanager
def runtime_equivalent(
    lm: LM, steerings: Steering | SteeringVector | list, *, strict_model: bool = True, **defaults: Any
) -> Iterator[None]:
    """Install the runtime steering that a bake of ``steerings`` equals exactly.

    For everything but orthogonalisation this is ``lm.steer(steerings)`` itself.  For ablation at every
    layer it is ablation at the attention and MLP outputs of every block plus the token embeddings.
    """
    items = as_steerings(steerings, **defaults)
    bake_plan = plan_bake(lm, items, strict_model)
    if bake_plan.orthogonal is None:
        with lm.steer(items, strict_model=strict_model):
            yield
        return
    from steerlab.vector import SteeringVector

    u32 = bake_plan.orthogonal.float()
    single = SteeringVector({0: u32}, model_id=lm.model_id, method="orthogonalisation")
    every = tuple(range(lm.num_layers))
    sites = [Steering(single, op="ablate", site=s, layers=every) for s in ("attn", "mlp")]

    def project(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        u = u32.to(output.dtype)
        return output - (output @ u).unsqueeze(-1) * u

    handle = lm.model.get_input_embeddings().register_forward_hook(project)
    try:
        with lm.steer(sites, strict_model=False):
            yield
    finally:
        handle.remove()


def _full_logits(model: nn.Module, ids: list[int], device: torch.device) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=False)
    return out.logits[0].float().cpu()


def verify_folder(lm: LM, folder: Path, steerings: list[Steering], strict_model: bool) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM

    baked, info = AutoModelForCausalLM.from_pretrained(str(folder), dtype=lm.dtype, output_loading_info=True)
    problems = {
        k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v
    }
    if problems:
        raise ModelError(f"the baked folder does not load cleanly in transformers: {problems}")
    baked = baked.to(lm.device).eval()
    ids = lm.encode(PROBE_TEXT)
    with runtime_equivalent(lm, steerings, strict_model=strict_model):
        ref = _full_logits(lm.model, ids, lm.device)
    got = _full_logits(baked, ids, lm.device)
    worst = float((got - ref).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    if not worst <= ATOL + RTOL * scale:
        raise ModelError(
            f"the baked model does not reproduce runtime steering (max |logit diff| {worst:.3g} at logit scale "
            f"{scale:.3g}): in this architecture the edited projections do not feed the residual stream "
            "directly (e.g. a norm after the MLP or attention), so the bake was refused and nothing written"
        )
    return worst, scale
