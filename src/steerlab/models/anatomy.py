"""Where one can intervene in a decoder model, found from its structure rather than a table of names.

The anatomy lists, for every decoder block, the modules whose outputs are the **sites** steerlab reads
and edits: the block output (residual stream), the attention output, the MLP output, and the input of the
attention output projection (the concatenated heads, the per-head site). Discovery is structural: the
decoder stack is the ``ModuleList`` of identical blocks with as many entries as the config has layers,
and inside a block the attention/MLP modules are recognised by name and type. Anything it cannot find is
an error that says what it looked for; ``blocks="model.layers"`` names the stack explicitly.

What the sites mean differs a little between block layouts, and steerlab does not hide it:

* plain pre-norm blocks (Llama, Qwen, Mistral, Phi-3, GPT-2, OPT, MoE): block output = input + attention
  output + MLP output, so the three sites add up exactly;
* parallel residual (GPT-NeoX): attention and MLP both read the block input; the sum still holds;
* sandwich norms (Gemma 2/3): each sublayer's output is normalised again before it joins the residual
  stream, so "attn"/"mlp" are the sublayer outputs *before* that post-norm (an edit there is rescaled).

The "head" site is the input of the attention output projection (``o_proj``, ``out_proj``, GPT-2's
``Conv1D`` ``c_proj``, GPT-NeoX's ``dense``), ``num_heads * head_dim`` wide, which may differ from the
hidden size (e.g. Qwen3, Gemma). The last layer is the last block's output *before* the final norm; HF
``hidden_states[-1]`` is after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from steerlab.errors import ModelError

SITES = ("resid", "attn", "mlp", "head")
ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "block_sparse_moe", "ffn", "moe")
OUT_PROJ_NAMES = ("o_proj", "out_proj", "c_proj", "dense", "o")
# Blocks without an MLP submodule (OPT) expose the MLP's last projection instead; its output is the MLP
# contribution to the residual stream. Failing the names, the block's last linear child that writes the
# hidden width is taken (and likewise for the attention output projection).
MLP_OUT_NAMES = ("fc2",)


@dataclass(frozen=True)
class Block:
    """One decoder block and the modules whose outputs are its sites."""

    index: int
    module: nn.Module
    attn: nn.Module | None
    mlp: nn.Module | None
    out_proj: nn.Module | None

    def site_module(self, site: str) -> nn.Module:
        module = {"resid": self.module, "attn": self.attn, "mlp": self.mlp, "head": self.out_proj}.get(site)
        if site not in SITES:
            raise ModelError(f"unknown site '{site}'; expected one of {', '.join(SITES)}")
        if module is None:
            raise ModelError(f"block {self.index} has no '{site}' site in this architecture")
        return module


@dataclass(frozen=True)
class Anatomy:
    """The map of a model: its blocks, widths and head layout."""

    model_type: str
    blocks_path: str
    blocks: tuple[Block, ...]
    hidden_size: int
    num_heads: int | None
    head_dim: int | None
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def site_width(self, site: str) -> int:
        """The width a direction must have at ``site`` (the head site may differ from the hidden size)."""
        if site == "head":
            if self.num_heads is None or self.head_dim is None:
                raise ModelError("this model's head layout is unknown, so the 'head' site is unavailable")
            return self.num_heads * self.head_dim
        return self.hidden_size

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise ModelError(f"layer must be an int, got {layer!r}")
        if not 0 <= layer < self.num_layers:
            raise ModelError(
                f"layer {layer} is out of range: this model has {self.num_layers} blocks, layers 0..{self.num_layers - 1}"
            )
        return layer

    def module(self, layer: int, site: str) -> nn.Module:
        return self.blocks[self.check_layer(layer)].site_module(site)


def _get_path(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        if not part or not hasattr(module, part):
            raise ModelError(
                f"blocks='{path}': no submodule '{part}' in {type(module).__name__} "
                f"(children: {', '.join(name for name, _ in module.named_children()) or 'none'})"
            )
        module = getattr(module, part)
    if not isinstance(module, nn.Module):
        raise ModelError(f"blocks='{path}' names a {type(module).__name__}, not a module")
    return module


def _config_value(config: object, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _text_config(model: nn.Module) -> object:
    """The config that describes the decoder (multimodal configs nest it); an empty one if there is none."""
    config = getattr(model, "config", None)
    if config is None:
        return object()
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _find_blocks(model: nn.Module, n_layers: int | None) -> tuple[str, nn.ModuleList]:
    candidates = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            kinds = {type(child) for child in module}
            if len(kinds) == 1 and _child(next(iter(module)), ATTN_NAMES, "Attention") is not None:
                candidates.append((name, module))
    if n_layers is not None:
        exact = [c for c in candidates if len(c[1]) == n_layers]
        candidates = exact or candidates
    if not candidates:
        raise ModelError(
            f"could not find the decoder blocks of {type(model).__name__}: looked for a ModuleList of identical "
            f"blocks ({n_layers or 'any number of'} entries) each holding an attention submodule named one of "
            f"{', '.join(ATTN_NAMES)} or typed '*Attention'. Pass blocks='path.to.layers' to name the stack."
        )
    candidates.sort(key=lambda c: (-len(c[1]), len(c[0])))
    return candidates[0]


def _child(module: nn.Module, names: tuple[str, ...], type_hint: str | None) -> nn.Module | None:
    """A direct child by preferred name, else the first child whose class name contains ``type_hint``."""
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            return child
    if type_hint is not None:
        for _, child in module.named_children():
            if type_hint.lower() in type(child).__name__.lower():
                return child
    return None


def _child_name(parent: nn.Module, child: nn.Module | None) -> str | None:
    if child is None:
        return None
    for name, module in parent.named_modules():
        if module is child:
            return name
    return None


def _out_features(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2 and type(module).__name__ == "Conv1D":
        return weight.shape[1]  # GPT-2's Conv1D stores (in, out)
    return None


def _in_features(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.in_features
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2 and type(module).__name__ == "Conv1D":
        return weight.shape[0]
    return None


def _last_projection(parent: nn.Module, hidden: int) -> nn.Module | None:
    """The last direct linear child that writes ``hidden`` features: what a sublayer hands back."""
    found = None
    for _, child in parent.named_children():
        if _out_features(child) == hidden:
            found = child
    return found


def output_projection(sublayer: nn.Module, hidden: int) -> nn.Module | None:
    """The projection whose output a sublayer hands to the residual stream (e.g. an MLP's ``down_proj``).

    ``sublayer`` itself when it is that projection (blocks that inline the MLP expose its last linear
    layer as the ``mlp`` site), else its last direct linear child writing ``hidden`` features.
    """
    if _out_features(sublayer) == hidden:
        return sublayer
    return _last_projection(sublayer, hidden)


def _out_proj(attn: nn.Module | None, hidden: int) -> nn.Module | None:
    """The attention output projection: by name, else the last linear child writing the hidden width."""
    if attn is None:
        return None
    for name in OUT_PROJ_NAMES:
        child = getattr(attn, name, None)
        if isinstance(child, nn.Module) and _in_features(child) is not None:
            return child
    return _last_projection(attn, hidden)


def _mlp(block: nn.Module, attn: nn.Module | None, hidden: int) -> nn.Module | None:
    """The MLP (or sparse MoE) submodule; for blocks that inline it (OPT), its last projection."""
    found = _child(block, MLP_NAMES, "MLP")
    if found is None:
        found = _child(block, (), "SparseMoe")
    if found is None:
        found = _child(block, MLP_OUT_NAMES, None)
    if found is None and attn is not None:  # with no attention module, a stray linear could be its output
        found = _last_projection(block, hidden)
    return None if found is attn else found


def find_anatomy(model: nn.Module, blocks: str | None = None) -> Anatomy:
    """Map ``model``; ``blocks`` overrides discovery of the decoder stack with a dotted path."""
    config = _text_config(model)
    n_layers = _config_value(config, "num_hidden_layers", "n_layer", "num_layers")
    if blocks is not None:
        stack = _get_path(model, blocks)
        if not isinstance(stack, nn.ModuleList | nn.Sequential):
            raise ModelError(
                f"blocks='{blocks}' is a {type(stack).__name__}, expected the ModuleList of decoder blocks"
            )
        if len(stack) == 0:
            raise ModelError(f"blocks='{blocks}' is an empty {type(stack).__name__}")
        path = blocks
    else:
        path, stack = _find_blocks(model, n_layers)
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    hidden = _config_value(config, "hidden_size", "n_embd", "d_model")
    if embed is not None and getattr(embed, "weight", None) is not None and hidden is None:
        hidden = embed.weight.shape[1]
    if hidden is None:
        raise ModelError("could not determine the hidden size: config has no hidden_size/n_embd/d_model")
    num_heads = _config_value(config, "num_attention_heads", "n_head", "num_heads")
    built = []
    for i, block in enumerate(stack):
        attn = _child(block, ATTN_NAMES, "Attention")
        built.append(Block(i, block, attn, _mlp(block, attn, hidden), _out_proj(attn, hidden)))
    first = built[0]
    head_width = _in_features(first.out_proj) if first.out_proj is not None else None
    head_dim = _config_value(config, "head_dim")
    if num_heads and head_width:
        # The projection's input width is the truth (configs may omit head_dim or describe KV heads).
        if head_dim is None or head_dim * num_heads != head_width:
            head_dim = head_width // num_heads if head_width % num_heads == 0 else None
    elif num_heads and head_dim is None and hidden % num_heads == 0:
        head_dim = hidden // num_heads
    paths = {
        "attn": _child_name(first.module, first.attn) or "-",
        "mlp": _child_name(first.module, first.mlp) or "-",
        "head": _child_name(first.module, first.out_proj) or "-",
    }
    return Anatomy(
        model_type=str(getattr(config, "model_type", type(model).__name__)),
        blocks_path=path,
        blocks=tuple(built),
        hidden_size=int(hidden),
        num_heads=num_heads,
        head_dim=head_dim,
        paths=paths,
    )
