"""Anatomy on every listed architecture, checked against what the HF forward pass actually computes.

For each tiny random model the test asserts the map (block count, widths, heads, which modules) and then
checks it structurally with hooks: the "resid" module's output is HF's hidden state, the "head" site is
exactly what the attention output projection consumes, and attention + MLP outputs add up to the block
output where the block layout says they must.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import steerlab
from steerlab.errors import ModelError, SteerlabError
from steerlab.models import find_anatomy
from tiny_models import ARCHS, HEADS, HIDDEN, LAYERS, ByteTokenizer, build, one_thread

# arch -> (blocks path, attention name, mlp name, head (out projection) name, head_dim)
EXPECTED = {
    "llama": ("model.layers", "self_attn", "mlp", "self_attn.o_proj", 8),
    "qwen2": ("model.layers", "self_attn", "mlp", "self_attn.o_proj", 8),
    "qwen3": ("model.layers", "self_attn", "mlp", "self_attn.o_proj", 16),
    "gemma2": ("model.layers", "self_attn", "mlp", "self_attn.o_proj", 8),
    "gemma3": ("model.layers", "self_attn", "mlp", "self_attn.o_proj", 8),
    "mistral": ("model.layers", "self_attn", "mlp", "self_attn.o_proj", 8),
    "phi3": ("model.layers", "self_attn", "mlp", "self_attn.o_proj", 8),
    "gpt2": ("transformer.h", "attn", "mlp", "attn.c_proj", 8),
    "gpt_neox": ("gpt_neox.layers", "attention", "mlp", "attention.dense", 8),
    "opt": ("model.decoder.layers", "self_attn", "fc2", "self_attn.out_proj", 8),
    "qwen2_moe": ("model.layers", "self_attn", "mlp", "self_attn.o_proj", 8),
    "mixtral": ("model.layers", "self_attn", "mlp", "self_attn.o_proj", 8),
}
FINAL_NORM = {
    "gpt2": "transformer.ln_f",
    "gpt_neox": "gpt_neox.final_layer_norm",
    "opt": "model.decoder.final_layer_norm",
}
# Gemma 2/3 normalise each sublayer's output again before adding it to the residual stream.
SANDWICH = {"gemma2", "gemma3"}
TEXT = "The cat sat on the mat, then it slept."


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module", params=ARCHS)
def arch_lm(request):
    model, tok = build(request.param)
    return request.param, steerlab.from_model(model, tok, model_id=f"tiny-{request.param}")


def _tensor(x):
    return x if isinstance(x, torch.Tensor) else x[0]


def _capture(lm):
    """Run one forward with hooks on every site; return (captures, HF hidden_states)."""
    an = lm.anatomy
    cap: dict[tuple[str, int], torch.Tensor] = {}
    handles = []

    def post(key):
        return lambda module, args, out: cap.__setitem__(key, _tensor(out).detach().clone())

    def pre(key):
        return lambda module, args: cap.__setitem__(key, args[0].detach().clone())

    for i in range(an.num_layers):
        handles += [
            an.module(i, "resid").register_forward_pre_hook(pre(("in", i))),
            an.module(i, "resid").register_forward_hook(post(("resid", i))),
            an.module(i, "attn").register_forward_hook(post(("attn", i))),
            an.module(i, "mlp").register_forward_hook(post(("mlp", i))),
            an.module(i, "head").register_forward_pre_hook(pre(("head", i))),
        ]
    ids = torch.tensor([lm.encode(TEXT)])
    try:
        with torch.no_grad():
            out = lm.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return cap, out.hidden_states


def test_map_matches_the_architecture(arch_lm):
    arch, lm = arch_lm
    an = lm.anatomy
    path, attn_name, mlp_name, head_name, head_dim = EXPECTED[arch]
    assert an.blocks_path == path
    assert an.num_layers == LAYERS == lm.num_layers
    assert an.hidden_size == HIDDEN
    assert an.num_heads == HEADS
    assert an.head_dim == head_dim
    assert an.site_width("head") == HEADS * head_dim
    assert an.site_width("resid") == an.site_width("attn") == an.site_width("mlp") == HIDDEN
    assert an.paths == {"attn": attn_name, "mlp": mlp_name, "head": head_name}
    stack = lm.model.get_submodule(path)
    for i, block in enumerate(an.blocks):
        assert block.module is stack[i]
        assert block.attn is stack[i].get_submodule(attn_name)
        assert block.mlp is stack[i].get_submodule(mlp_name)
        assert block.out_proj is stack[i].get_submodule(head_name)
        assert type(block.attn).__name__.endswith("Attention")
        if arch in ("qwen2_moe", "mixtral"):
            assert "SparseMoe" in type(block.mlp).__name__
        elif arch == "opt":
            assert isinstance(block.mlp, nn.Linear) and block.mlp.out_features == HIDDEN
        else:
            assert type(block.mlp).__name__.endswith("MLP")
        assert an.module(i, "resid") is block.module
        assert an.module(i, "head") is block.out_proj


def test_resid_is_hf_hidden_state(arch_lm):
    arch, lm = arch_lm
    cap, hidden = _capture(lm)
    last = lm.num_layers - 1
    assert len(hidden) == lm.num_layers + 1
    assert torch.equal(cap[("in", 0)], hidden[0])
    for i in range(last):
        assert torch.equal(cap[("resid", i)], hidden[i + 1]), f"{arch} layer {i}"
    # Every architecture here puts the final norm into hidden_states[-1]; the last layer is the block
    # output before it.
    norm = lm.model.get_submodule(FINAL_NORM.get(arch, "model.norm"))
    assert not torch.equal(cap[("resid", last)], hidden[-1])
    with torch.no_grad():
        assert torch.equal(norm(cap[("resid", last)]), hidden[-1])


def test_head_site_is_out_projection_input(arch_lm):
    arch, lm = arch_lm
    cap, _ = _capture(lm)
    width = lm.anatomy.site_width("head")
    for i in range(lm.num_layers):
        head = cap[("head", i)]
        assert head.shape[-1] == width
        with torch.no_grad():
            projected = lm.anatomy.blocks[i].out_proj(head)
        # the attention output is the projection of the head site, nothing added after it
        assert torch.equal(projected, cap[("attn", i)]), f"{arch} layer {i}"


def test_sublayers_sum_to_block_output(arch_lm):
    arch, lm = arch_lm
    cap, _ = _capture(lm)
    for i in range(lm.num_layers):
        block = lm.anatomy.blocks[i].module
        attn, mlp = cap[("attn", i)], cap[("mlp", i)]
        if arch in SANDWICH:
            # Sublayer outputs are renormalised before the residual add, so the plain sum must NOT hold;
            # it holds once the post-norms are applied.
            plain = cap[("in", i)] + attn + mlp
            assert not torch.allclose(plain, cap[("resid", i)], atol=1e-3)
            with torch.no_grad():
                attn = block.post_attention_layernorm(attn)
                mlp = block.post_feedforward_layernorm(mlp)
        total = cap[("in", i)] + attn + mlp
        # GPT-NeoX's parallel residual adds in a different order: equal up to rounding
        torch.testing.assert_close(total, cap[("resid", i)], rtol=0, atol=1e-6)


def test_explicit_blocks_path_matches_discovery():
    model, tok = build("llama")
    auto = find_anatomy(model)
    explicit = steerlab.from_model(model, tok, model_id="x", blocks="model.layers").anatomy
    assert explicit.blocks_path == "model.layers"
    assert [b.module for b in explicit.blocks] == [b.module for b in auto.blocks]
    assert [b.out_proj for b in explicit.blocks] == [b.out_proj for b in auto.blocks]
    assert (explicit.hidden_size, explicit.num_heads, explicit.head_dim) == (32, 4, 8)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("model.nope", "no submodule 'nope'"),
        ("model.norm", "expected the ModuleList"),
        ("model.layers.0", "expected the ModuleList"),
        ("model..layers", "no submodule ''"),
    ],
)
def test_wrong_explicit_path_is_a_clear_error(path, expected):
    model, tok = build("llama")
    with pytest.raises(ModelError, match=expected.replace("(", r"\(")):
        steerlab.from_model(model, tok, model_id="x", blocks=path)


class _Toy(nn.Module):
    """A model with no decoder stack at all."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.layers = nn.ModuleList([nn.Linear(8, 8) for _ in range(2)])


def test_unmappable_model_names_what_it_looked_for():
    with pytest.raises(ModelError) as info:
        find_anatomy(_Toy())
    message = str(info.value)
    assert "_Toy" in message and "self_attn" in message and "Attention" in message
    assert "blocks=" in message
    assert isinstance(info.value, SteerlabError)


def test_from_model_without_config_is_a_model_error():
    with pytest.raises(ModelError, match="decoder blocks"):
        steerlab.from_model(_Toy(), ByteTokenizer())


class _Mixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 36)
        self.proj = nn.Linear(12, 8)  # 2 heads x 6: the head site is narrower than the hidden size


class _ToyAttention(_Mixer):
    """Same layout, but the class name says what it is."""


class _ToyBlock(nn.Module):
    def __init__(self, mixer: type[nn.Module]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.token_mixer = mixer()
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)


class _ToyDecoder(nn.Module):
    """Unfamiliar names everywhere: only the structure (or an explicit path) can map it."""

    def __init__(self, mixer: type[nn.Module]) -> None:
        super().__init__()
        self.config = type("Cfg", (), {"num_attention_heads": 2, "model_type": "toy"})()
        self.embed = nn.Embedding(10, 8)
        self.trunk = nn.ModuleList([_ToyBlock(mixer) for _ in range(3)])

    def get_input_embeddings(self) -> nn.Module:
        return self.embed


def test_explicit_path_maps_blocks_it_cannot_discover():
    model = _ToyDecoder(_Mixer)
    with pytest.raises(ModelError, match="could not find the decoder blocks"):
        find_anatomy(model)
    an = find_anatomy(model, blocks="trunk")
    assert an.num_layers == 3 and an.hidden_size == 8  # hidden size from the embedding
    assert an.module(1, "resid") is model.trunk[1]
    assert an.blocks[1].attn is None  # nothing looks like attention: the attention sites are unavailable
    with pytest.raises(ModelError, match="no 'attn' site"):
        an.module(1, "attn")
    with pytest.raises(ModelError, match="no 'head' site"):
        an.module(1, "head")


def test_unnamed_projections_are_found_by_shape():
    model = _ToyDecoder(_ToyAttention)
    an = find_anatomy(model)
    assert an.blocks_path == "trunk"
    block = an.blocks[2]
    assert block.attn is model.trunk[2].token_mixer
    assert block.out_proj is model.trunk[2].token_mixer.proj  # the linear writing the hidden width
    assert block.mlp is model.trunk[2].down  # inlined MLP: its last projection back to the hidden width
    assert (an.num_heads, an.head_dim, an.site_width("head")) == (2, 6, 12)


def test_layer_and_site_errors():
    model, _ = build("llama")
    an = find_anatomy(model)
    with pytest.raises(ModelError, match="out of range"):
        an.check_layer(LAYERS)
    with pytest.raises(ModelError, match="out of range"):
        an.module(-1, "resid")
    with pytest.raises(ModelError, match="must be an int"):
        an.check_layer(True)
    with pytest.raises(ModelError, match="unknown site"):
        an.module(0, "embed")


@pytest.mark.parametrize("site", ["resid", "mlp", "head"])
def test_shared_prefix_read_matches_a_full_read(arch_lm, site):
    """The reader runs a shared prefix once and continues each batch from its KV cache: every
    architecture must give the activations (and typical norms) of a plain full read."""
    from steerlab.reader import read, shared_prefix

    arch, lm = arch_lm
    texts = [
        f"Act as if you are extremely {mood}. {task}"
        for mood in ("happy", "sad")
        for task in ("Tell me a story.", "Describe the sea", "What is 2+2?", "Name a colour, please.")
    ]
    assert shared_prefix([lm.encode(t) for t in texts]) >= 20  # the read below does use the prefix path
    layers = list(range(lm.num_layers))
    for position in ("last", (-3, -1)):
        fast = read(lm, texts, layers, site=site, position=position, batch_size=3)
        full = read(lm, texts, layers, site=site, position=position, batch_size=3, share_prefix=False)
        for layer in layers:
            torch.testing.assert_close(fast.acts[layer], full.acts[layer], rtol=1e-4, atol=1e-5)
            assert fast.norms[layer] == pytest.approx(full.norms[layer], rel=1e-4), f"{arch} {site} {layer}"
