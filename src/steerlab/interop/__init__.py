"""File formats shared with other steering tools -- pure I/O, no models.

Every reader returns ``(directions, provenance)`` with directions keyed by steerlab layers (layer ``i`` =
the residual stream right after decoder block ``i``, blocks counted from 0, = HF ``hidden_states[i + 1]``)
as float32 1-D arrays, and raises :class:`steerlab.errors.VectorError` -- never a raw parser error -- for
anything malformed.  The per-format layer mappings and the source evidence for them are documented in
:mod:`steerlab.interop.gguf_cvec`, :mod:`steerlab.interop.svec` and :mod:`steerlab.interop.raw`.
"""

from steerlab.interop.atomic import atomic_write
from steerlab.interop.gguf_cvec import (
    FORMAT_DIALZ,
    FORMAT_EASYSTEER,
    FORMAT_LLAMA_CPP,
    FORMAT_REPENG,
    FORMAT_STEERKIT,
    llama_cpp_to_ours,
    ours_to_llama_cpp,
    read_control_vector,
    validate_directions,
    write_control_vector,
)
from steerlab.interop.raw import FORMAT_STEERKIT_PROBE, read_steerkit_safetensors, sniff_format
from steerlab.interop.svec import FORMAT_SVEC, read_svec, write_svec

__all__ = [
    "FORMAT_DIALZ",
    "FORMAT_EASYSTEER",
    "FORMAT_LLAMA_CPP",
    "FORMAT_REPENG",
    "FORMAT_STEERKIT",
    "FORMAT_STEERKIT_PROBE",
    "FORMAT_SVEC",
    "atomic_write",
    "llama_cpp_to_ours",
    "ours_to_llama_cpp",
    "read_control_vector",
    "read_steerkit_safetensors",
    "read_svec",
    "sniff_format",
    "validate_directions",
    "write_control_vector",
    "write_svec",
]
