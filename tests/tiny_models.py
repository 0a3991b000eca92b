"""Tiny randomly initialised decoder models of every architecture steerlab claims to map.

Each model is built from its transformers config class with a few layers and a narrow width, so a
forward pass costs milliseconds and the tests can check the anatomy and the engine's math on real HF
module layouts (post-norms, parallel residuals, Conv1D projections, fused gate/up, sparse MoE) without
downloading anything. Nothing can be fetched from a hub here, so :class:`ByteTokenizer` stands in for a
real tokenizer: it maps UTF-8 bytes to ids, which handles any text the library feeds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import transformers
from torch import nn

PAD, BOS, EOS = 0, 1, 2
OFFSET = 3  # byte b has id b + OFFSET
VOCAB = 256 + OFFSET
HIDDEN = 32
HEADS = 4
KV_HEADS = 2
LAYERS = 3
INTER = 64
SEED = 0

ARCHS = (
    "llama",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3",
    "mistral",
    "phi3",
    "gpt2",
    "gpt_neox",
    "opt",
    "qwen2_moe",
    "mixtral",
)


class ByteTokenizer:
    """A byte-level stand-in for a HF tokenizer: just enough surface for ``steerlab.from_model``.

    ``__call__`` returns ``{"input_ids": [...]}`` (BOS prepended when ``add_special_tokens``); ``decode``
    turns ids back into text, dropping special ids when asked to.
    """

    chat_template = None
    pad_token = "<pad>"
    bos_token = "<s>"
    eos_token = "</s>"
    pad_token_id = PAD
    bos_token_id = BOS
    eos_token_id = EOS
    padding_side = "right"

    def __len__(self) -> int:
        return VOCAB

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [b + OFFSET for b in text.encode("utf-8")]
        return [BOS, *ids] if add_special_tokens else ids

    def __call__(self, text: str, add_special_tokens: bool = True, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False, **_: Any) -> str:
        names = {PAD: self.pad_token, BOS: self.bos_token, EOS: self.eos_token}
        out = bytearray()
        for i in [int(x) for x in ids]:
            if i >= OFFSET:
                out.append(i - OFFSET)
            elif not skip_special_tokens:
                out.extend(names[i].encode())
        return out.decode("utf-8", errors="replace")


def _common() -> dict[str, Any]:
    return dict(vocab_size=VOCAB, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)


def _llama_like(cls: type) -> Callable[[], Any]:
    def make() -> Any:
        return cls(
            hidden_size=HIDDEN,
            intermediate_size=INTER,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            max_position_embeddings=256,
            **_common(),
        )

    return make


def _qwen3() -> Any:
    # head_dim deliberately differs from hidden / heads: the head site is then wider than the residual.
    return transformers.Qwen3Config(
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=16,
        max_position_embeddings=256,
        **_common(),
    )


def _gemma2() -> Any:
    return transformers.Gemma2Config(
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=8,
        max_position_embeddings=256,
        sliding_window=16,
        **_common(),
    )


def _gemma3() -> Any:
    return transformers.Gemma3TextConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=8,
        max_position_embeddings=256,
        sliding_window=16,
        **_common(),
    )


def _gpt2() -> Any:
    return transformers.GPT2Config(
        n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=INTER, n_positions=256, **_common()
    )


def _gpt_neox() -> Any:
    return transformers.GPTNeoXConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=256,
        use_parallel_residual=True,
        **_common(),
    )


def _opt() -> Any:
    return transformers.OPTConfig(
        hidden_size=HIDDEN,
        ffn_dim=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        word_embed_proj_dim=HIDDEN,
        max_position_embeddings=256,
        **_common(),
    )


def _qwen2_moe() -> Any:
    return transformers.Qwen2MoeConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        moe_intermediate_size=INTER // 2,
        shared_expert_intermediate_size=INTER // 2,
        num_experts=4,
        num_experts_per_tok=2,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=256,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        **_common(),
    )


def _mixtral() -> Any:
    return transformers.MixtralConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_local_experts=4,
        num_experts_per_tok=2,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=256,
        **_common(),
    )


CONFIGS: dict[str, tuple[Callable[[], Any], str]] = {
    "llama": (_llama_like(transformers.LlamaConfig), "LlamaForCausalLM"),
    "qwen2": (_llama_like(transformers.Qwen2Config), "Qwen2ForCausalLM"),
    "qwen3": (_qwen3, "Qwen3ForCausalLM"),
    "gemma2": (_gemma2, "Gemma2ForCausalLM"),
    "gemma3": (_gemma3, "Gemma3ForCausalLM"),
    "mistral": (_llama_like(transformers.MistralConfig), "MistralForCausalLM"),
    "phi3": (_llama_like(transformers.Phi3Config), "Phi3ForCausalLM"),
    "gpt2": (_gpt2, "GPT2LMHeadModel"),
    "gpt_neox": (_gpt_neox, "GPTNeoXForCausalLM"),
    "opt": (_opt, "OPTForCausalLM"),
    "qwen2_moe": (_qwen2_moe, "Qwen2MoeForCausalLM"),
    "mixtral": (_mixtral, "MixtralForCausalLM"),
}


def config(arch: str) -> Any:
    """The tiny config of ``arch`` (eager attention, so every architecture runs the same code path)."""
    if arch not in CONFIGS:
        raise KeyError(f"no tiny model for '{arch}'; known: {', '.join(ARCHS)}")
    cfg = CONFIGS[arch][0]()
    cfg._attn_implementation = "eager"
    return cfg


def build(arch: str, seed: int = SEED) -> tuple[nn.Module, ByteTokenizer]:
    """A fresh tiny ``arch`` model (float32, eval mode, fixed seed) and the byte tokenizer."""
    cfg = config(arch)
    cls = getattr(transformers, CONFIGS[arch][1])
    torch.manual_seed(seed)
    model = cls(cfg).to(torch.float32).eval()
    # Random init leaves some weights at exactly 0 or 1 (norms, biases); perturb them so that every
    # module's output actually depends on its input and a broken hook cannot hide behind an identity.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = PAD
    return model, ByteTokenizer()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the previous setting.

    Tiny models are all overhead: on a shared 2-core machine, OpenMP's worker threads spend far more time
    waiting for each other than computing (measured here: 30x slower CPU time with 2 threads).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def tiny_arena_config(budget, methods, **overrides):
    """An arena config at the smallest sizes a compare accepts, for compare tests on a tiny model
    (one calibration cell, two-token measurements, two neutral prompts); ``overrides`` change any knob."""
    from steerlab.evaluate import arena
    from steerlab.evaluate.sweep import grid

    knobs = dict(
        budget=budget,
        methods=methods,
        data_sizes=[2],
        seeds=[0],
        efficiency_methods=[],
        compose=False,
        cells=grid(["1"], [0.5]),
        calib_tokens=2,
        throughput_prompts=1,
        throughput_tokens=2,
        neutral=["hello there", "abc"],
    )
    return arena.ArenaConfig(**{**knobs, **overrides})
