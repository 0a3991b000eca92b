"""Writing the HF folder: edited tensors, the config switches they need, the rebuilt model, the move.

Takes a :class:`~steerlab.bake.plan.BakePlan` and produces a fresh model of the (possibly changed) config
holding the original weights with the edited ones replaced; ``move_into_place`` swaps the finished
folder in so a reader sees either the old folder or the complete new one.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from steerlab.bake.affine import fold_input, fold_output
from steerlab.errors import ModelError

if TYPE_CHECKING:
    from steerlab.bake.plan import BakePlan
    from steerlab.lm import LM

BIAS_FLAGS = {"mlp": ("mlp_bias",), "attn": ("attention_bias",)}


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules()}


def new_weights(
    lm: LM, bake_plan: BakePlan
) -> tuple[dict[str, torch.Tensor], dict[str, set[str]], list[str]]:
    """Edited tensors by state-dict key, new bias keys by kind ('mlp'/'attn'), human-readable labels."""
    names = _module_names(lm.model)
    modules = dict(lm.model.named_modules())
    state: dict[str, list[torch.Tensor | None]] = {}
    kinds: dict[str, str] = {}
    labels = []
    for module, kind, side, edit, label in bake_plan.edits:
        name = names[id(module)]
        kinds[name] = kind
        if name not in state:
            bias = module.bias.detach().double() if module.bias is not None else None
            state[name] = [module.weight.detach().double(), bias]
        weight, bias = state[name]
        folder = fold_output if side == "output" else fold_input
        state[name] = list(folder(weight, bias, edit))
        labels.append(label)
    out: dict[str, torch.Tensor] = {}
    new_bias: dict[str, set[str]] = {"mlp": set(), "attn": set()}
    for name, (weight, bias) in state.items():
        module = modules[name]
        out[f"{name}.weight"] = weight.to(module.weight.dtype)
        if bias is not None:
            out[f"{name}.bias"] = bias.to(module.weight.dtype)
            if module.bias is None:
                new_bias[kinds[name]].add(f"{name}.bias")
    if bake_plan.orthogonal is not None:
        embed = lm.model.get_input_embeddings()
        u = bake_plan.orthogonal
        emb = embed.weight.detach().double()
        out[f"{names[id(embed)]}.weight"] = (emb - torch.outer(emb @ u, u)).to(embed.weight.dtype)
        labels.append("token embeddings: ablate")
    return out, new_bias, labels


def bias_flags(lm: LM, new_bias: dict[str, set[str]]) -> dict[str, Any]:
    """Config switches that make the architecture create the biases we need."""
    changes: dict[str, Any] = {}
    config = lm.model.config
    for kind, keys in new_bias.items():
        if not keys:
            continue
        flags = [f for f in BIAS_FLAGS[kind] if hasattr(config, f)]
        if not flags:
            raise ModelError(
                f"{type(lm.model).__name__} has no bias on {sorted(keys)[0].rsplit('.', 1)[0]} and its config "
                f"offers no switch to add one (looked for {BIAS_FLAGS[kind]}), so an add there cannot be baked "
                "into a folder that stock transformers loads"
            )
        changes[flags[0]] = True
    return changes


def tied_embeddings(model: nn.Module) -> bool:
    out = model.get_output_embeddings()
    inp = model.get_input_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


def build_model(lm: LM, tensors: dict[str, torch.Tensor], changes: dict[str, Any], untie: bool) -> nn.Module:
    """A fresh model of the changed config holding the original weights with ``tensors`` replaced."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config = copy.deepcopy(lm.model.config)
    for key, value in changes.items():
        setattr(config, key, value)
    if untie:
        config.tie_word_embeddings = False
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        text.tie_word_embeddings = False
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=lm.dtype)
    original = lm.model.state_dict()
    target = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, ref in target.items():
        if key in tensors:
            state[key] = tensors[key]
        elif key in original:
            state[key] = original[key].detach()  # shared, read-only: the new model is saved, never trained
        elif key.endswith(".bias"):
            state[key] = torch.zeros_like(ref)  # siblings of a new bias (gate/up, q/k/v): zero
        else:
            raise ModelError(f"the rebuilt {type(model).__name__} has a parameter {key} the original lacks")
    missing = [k for k in tensors if k not in target]
    if missing:
        raise ModelError(
            f"{type(model).__name__} has no parameter {missing[0]} even with {changes or 'its config'}; "
            "this edit cannot be baked into this architecture"
        )
    model.load_state_dict(state, strict=True, assign=True)
    if not untie and tied_embeddings(lm.model):
        model.tie_weights()
    model.generation_config = copy.deepcopy(lm.model.generation_config)
    return model.eval()


def prepare_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ModelError(f"{out_dir} already exists and is not empty; pass overwrite=True (CLI --force)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def move_into_place(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with ``staging`` so a reader sees the old folder or the complete new one."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.rmdir(old)
    os.replace(out_dir, old)
    try:
        os.replace(staging, out_dir)
    except OSError:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
