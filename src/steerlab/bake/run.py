"""The entry point: plan, write to a staging folder, verify, record, and move into place.

:func:`bake` is the only function with side effects on disk; any refusal or failure leaves the target
folder as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab.bake.folder import (
    bias_flags,
    build_model,
    move_into_place,
    new_weights,
    prepare_target,
    tied_embeddings,
)
from steerlab.bake.plan import plan_bake
from steerlab.bake.verify import verify_folder
from steerlab.engine.spec import Steering, as_steerings
from steerlab.errors import SteeringError

if TYPE_CHECKING:
    from steerlab.lm import LM
    from steerlab.vector import SteeringVector


@dataclass
class BakeReport:
    """What was written and how closely it reproduces runtime steering."""

    out_dir: Path
    edits: list[str]
    config_changes: dict[str, Any]
    max_abs_diff: float | None = None
    logit_scale: float | None = None
    verified: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"baked model written to {self.out_dir}"]
        lines += [f"  {edit}" for edit in self.edits]
        if self.config_changes:
            lines.append(f"  config: {self.config_changes}")
        if self.verified:
            lines.append(
                f"  verified: max |logit diff| vs runtime steering {self.max_abs_diff:.2e} "
                f"(logit scale {self.logit_scale:.1f})"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _record(report: BakeReport, lm: LM, steerings: list[Steering]) -> dict[str, Any]:
    return {
        "format": "steerlab bake 1",
        "base_model": lm.model_id,
        "base_source": str(lm.source),
        "steerings": [
            {
                "vector": s.vector.metadata(),
                "op": s.op,
                "strength": s.resolved_strength(),
                "unit": s.unit,
                "layers": list(s.resolved_layers()),
                "site": s.resolved_site,
                "positions": s.positions,
            }
            for s in steerings
        ],
        "edits": report.edits,
        "config_changes": report.config_changes,
        "verified": report.verified,
        "max_abs_logit_diff": report.max_abs_diff,
        "notes": report.notes,
    }


def bake(
    lm: LM,
    steerings: Steering | SteeringVector | Sequence[Steering | SteeringVector],
    out_dir: str | os.PathLike[str],
    *,
    verify: bool = True,
    overwrite: bool = False,
    strict_model: bool = True,
    **defaults: Any,
) -> BakeReport:
    """Write an HF model folder at ``out_dir`` whose forward pass equals ``lm`` under ``steerings``.

    ``steerings`` is what ``lm.steer`` takes (``defaults`` -- strength, op, layers, unit, site -- apply
    to bare vectors).  ``lm`` is left untouched.  The folder is assembled in a temporary directory,
    reloaded and checked against runtime steering (``verify``), and only then moved to ``out_dir``;
    any refusal or failure leaves ``out_dir`` as it was.  ``steerlab.load(out_dir)`` loads the result.
    """
    items = as_steerings(list(steerings) if isinstance(steerings, list | tuple) else steerings, **defaults)
    if not items:
        raise SteeringError("nothing to bake: no steering given")
    if any(s.condition is not None for s in items):
        raise SteeringError(
            "a conditional steering cannot be baked into weights (they apply to every prompt)"
        )
    out_dir = Path(out_dir)
    prepare_target(out_dir, overwrite)
    bake_plan = plan_bake(lm, items, strict_model)
    tensors, new_bias, labels = new_weights(lm, bake_plan)
    changes = bias_flags(lm, new_bias)
    untie = bake_plan.orthogonal is not None and tied_embeddings(lm.model)
    notes = []
    if untie:
        changes["tie_word_embeddings"] = False
        notes.append("the output head was tied to the embeddings; it is kept unedited as a separate matrix")
    if bake_plan.orthogonal is not None:
        notes.append(
            "orthogonalisation equals runtime ablation at sites attn+mlp of every block plus the token "
            "embeddings (steerlab.bake.runtime_equivalent), not ablation at block outputs"
        )
    model = build_model(lm, tensors, changes, untie)
    report = BakeReport(out_dir=out_dir, edits=labels, config_changes=changes, notes=notes)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.bake-", dir=out_dir.parent))
    try:
        model.save_pretrained(staging)
        del model
        if hasattr(lm.tokenizer, "save_pretrained"):
            lm.tokenizer.save_pretrained(staging)
        else:
            report.notes.append("the tokenizer has no save_pretrained; the folder holds no tokenizer files")
        if verify:
            report.max_abs_diff, report.logit_scale = verify_folder(lm, staging, items, strict_model)
            report.verified = True
        (staging / "steerlab-bake.json").write_text(
            json.dumps(_record(report, lm, items), indent=2, default=str)
        )
        move_into_place(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return report
