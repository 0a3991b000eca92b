"""SteeringVector <-> llama.cpp control vector: baked strength, bit-exact round trips, clear refusals.

The file-format details (peer writers, malformed containers) are pinned in test_interop_formats.py; here
the vector-level contract: what gets baked equals what the runtime engine adds, bit for bit, and the
record steerlab writes comes back on import.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import steerlab
from steerlab.cli import app
from steerlab.engine import Steering
from steerlab.errors import SteeringError, VectorError
from steerlab.interop import read_control_vector, write_control_vector
from steerlab.interop.export import export_gguf, import_vector
from steerlab.interop.gguf_record import restored_fields
from steerlab.vector import SteeringVector
from tiny_models import HIDDEN, LAYERS, build, one_thread

WIDTH = 16


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with one_thread():
        yield


def _vector(
    layers=(1, 2, 3), width: int = WIDTH, model_id: str = "org/model", norms: bool = True
) -> SteeringVector:
    g = torch.Generator().manual_seed(3)
    return SteeringVector(
        {i: torch.randn(width, generator=g) for i in layers},
        model_id=model_id,
        method="mean_diff",
        data_hash="abc123",
        norms={i: 2.0 + i for i in layers} if norms else {},
    )


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# ----------------------------------------------------------------------------------------------------
# Round trips


def test_raw_unit_strength_one_round_trip_is_bit_exact(tmp_path: Path) -> None:
    vec = _vector()
    path = tmp_path / "v.gguf"
    export_gguf(vec, path, strength=1.0, unit="raw", model_hint="llama")

    back = import_vector(path)

    assert back.layers == vec.layers
    for layer in vec.layers:
        assert torch.equal(back[layer], vec[layer])
    assert back.model_id == "org/model"
    assert back.data_hash == "abc123"
    assert back.norms == vec.norms
    assert back.method == "mean_diff (llama.cpp export)"
    assert back.provenance["baked"]["unit"] == "raw"
    # llama.cpp's own view of the file: plain direction.N F32 tensors, N = our layer.
    directions, prov = read_control_vector(path)
    assert sorted(directions) == [1, 2, 3] and prov["llama_cpp_compatible"]


def test_the_record_is_restored_by_load_and_only_for_steerlab_exports(tmp_path: Path) -> None:
    path = tmp_path / "v.gguf"
    export_gguf(_vector(), path, strength=1.0, unit="raw", model_hint="llama")
    loaded = SteeringVector.load(path)
    imported = import_vector(path)
    assert (loaded.model_id, loaded.method, loaded.norms) == (
        imported.model_id,
        imported.method,
        imported.norms,
    )
    assert loaded.model_id == "org/model" and loaded.norms == _vector().norms
    foreign = tmp_path / "foreign.gguf"
    write_control_vector(foreign, {1: np.ones(WIDTH, np.float32)}, "llama")
    assert restored_fields(read_control_vector(foreign)[1], WIDTH, foreign) is None
    assert SteeringVector.load(foreign).model_id == ""


def test_norm_unit_bakes_strength_times_typical_norm(tmp_path: Path) -> None:
    vec = _vector()
    path = tmp_path / "v.gguf"
    baked = export_gguf(vec, path, strength=0.25, layers="2-3", model_hint="llama")

    back = import_vector(path)

    assert back.layers == [2, 3]
    for layer in (2, 3):
        expected = vec.unit(layer) * (0.25 * vec.norms[layer])
        assert torch.equal(back[layer], expected)
        assert torch.equal(baked.deltas[layer], expected)
        assert back[layer].norm().item() == pytest.approx(0.25 * vec.norms[layer], rel=1e-6)
    assert back.provenance["baked"]["strength"] == {"2": 0.25, "3": 0.25}


def test_baked_vector_is_bit_identical_to_the_runtime_engines_delta(tmp_path: Path) -> None:
    """What llama.cpp adds is exactly the tensor steerlab's hook adds (norm unit and raw unit)."""
    model, tok = build("llama")
    lm = steerlab.from_model(model, tok, model_id="tiny-llama")
    vec = _vector(layers=range(1, LAYERS), width=HIDDEN, model_id="tiny-llama")
    for unit, strength in (("norm", 0.3), ("raw", -1.7)):
        steering = Steering(vec, strength=strength, unit=unit)
        plan = lm.compile([[steering]])
        path = tmp_path / f"{unit}.gguf"
        export_gguf(vec, path, strength=strength, unit=unit, lm=lm)
        back = import_vector(path, lm)
        for layer in vec.layers:
            runtime = plan.terms[(layer, "resid")][0].delta.reshape(-1)
            assert torch.equal(back[layer], runtime), (unit, layer)
    assert read_control_vector(path)[1]["model_hint"] == "llama"  # from the model's type


def test_omitted_fields_take_the_vectors_recorded_defaults(tmp_path: Path) -> None:
    """As at runtime: a vector recording strength 0.5 in raw units exports 0.5 * direction."""
    vec = _vector()
    vec.defaults = {"strength": 0.5, "unit": "raw", "layers": [2, 3]}
    baked = export_gguf(vec, tmp_path / "v.gguf", model_hint="llama")
    assert baked.unit == "raw" and sorted(baked.deltas) == [2, 3]
    for layer in (2, 3):
        assert torch.equal(baked.deltas[layer], vec[layer] * 0.5)
    explicit = export_gguf(vec, tmp_path / "w.gguf", unit="norm", model_hint="llama")
    assert torch.equal(explicit.deltas[2], vec.unit(2) * (0.5 * vec.norms[2]))


# ----------------------------------------------------------------------------------------------------
# Export refusals: clear error, nothing written


@pytest.mark.parametrize(
    ("vector", "options", "error", "match"),
    [
        (_vector(layers=(0, 1)), dict(strength=1.0), VectorError, "layer 0 cannot be expressed"),
        (_vector(), dict(strength=1.0, op="ablate"), SteeringError, "op 'ablate' cannot be expressed"),
        (_vector(), dict(strength=1.0, op="clamp"), SteeringError, "op 'clamp' cannot be expressed"),
        (_vector(norms=False), dict(strength=1.0), SteeringError, "does not record; pass the model"),
        (_vector(), dict(), SteeringError, "needs a strength"),
        (_vector(), dict(strength=float("nan")), SteeringError, "strength must be finite"),
        (_vector(), dict(strength=1.0, unit="percent"), SteeringError, "unknown strength unit"),
        (_vector(), dict(strength=1.0, layers="7"), SteeringError, "directions only for layers"),
        (_vector(model_id=""), dict(strength=1.0), VectorError, "cannot tell which model family"),
    ],
)
def test_export_refuses_what_a_control_vector_cannot_say(
    tmp_path: Path, vector, options, error, match
) -> None:
    with pytest.raises(error, match=match):
        export_gguf(vector, tmp_path / "v.gguf", **options)
    assert _listing(tmp_path) == []


def test_export_checks_the_vector_against_a_model(tmp_path: Path) -> None:
    model, tok = build("llama")
    lm = steerlab.from_model(model, tok, model_id="tiny-llama")
    with pytest.raises(VectorError, match=f"width {WIDTH} does not fit"):
        export_gguf(_vector(), tmp_path / "v.gguf", strength=1.0, lm=lm)
    with pytest.raises(VectorError, match="made for model 'org/model'"):
        export_gguf(_vector(layers=(1, 2), width=HIDDEN), tmp_path / "v.gguf", strength=1.0, lm=lm)
    assert _listing(tmp_path) == []


def test_failed_export_keeps_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "v.gguf"
    export_gguf(_vector(), path, strength=1.0, model_hint="llama")
    before = path.read_bytes()
    with pytest.raises(VectorError):
        export_gguf(_vector(layers=(0, 1)), path, strength=2.0, model_hint="llama")
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["v.gguf"]


# ----------------------------------------------------------------------------------------------------
# Import: foreign files, malformed files, other models, unknown fields


def _foreign(
    path: Path, tensors: dict[str, np.ndarray], kv: dict[str, str] | None = None, arch="controlvector"
) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (kv or {}).items():
        writer.add_string(key, value)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_import_reads_a_foreign_control_vector_without_inventing_a_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = {f"direction.{n}": rng.standard_normal(WIDTH).astype(np.float32) for n in (3, 4)}
    vec = import_vector(_foreign(tmp_path / "f.gguf", data, {"controlvector.model_hint": "llama"}))
    assert vec.layers == [3, 4]
    assert vec.model_id == ""
    assert np.array_equal(vec[3].numpy(), data["direction.3"])
    assert vec.provenance["format"] == "llama.cpp controlvector"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p.write_bytes(b"GGUF\x03\x00\x00\x00"), "truncated or corrupt"),
        (lambda p: p.write_bytes(b"not a gguf at all"), "not a vector file steerlab can read"),
        (
            lambda p: _foreign(p, {"direction.1": np.ones(WIDTH, np.float32)}, arch="llama"),
            "not a control vector",
        ),
        (
            lambda p: _foreign(
                p, {"direction.1": np.ones(WIDTH, np.float32), "direction.2": np.ones(8, np.float32)}
            ),
            "width",
        ),
        (lambda p: _foreign(p, {"direction.1": np.ones(WIDTH, np.int32)}), "floating point"),
        (
            lambda p: _foreign(
                p, {"direction.1": np.ones(4, np.float32), "direction.01": np.ones(4, np.float32)}
            ),
            "duplicate layer",
        ),
        (lambda p: _foreign(p, {"bias.1": np.ones(WIDTH, np.float32)}), "not named direction.N"),
    ],
)
def test_import_refuses_malformed_files(tmp_path: Path, make, match: str) -> None:
    path = tmp_path / "bad.gguf"
    make(path)
    with pytest.raises(VectorError, match=match):
        import_vector(path)


def test_import_truncated_steerlab_export_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.gguf"
    export_gguf(_vector(), path, strength=1.0, model_hint="llama")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(VectorError, match="truncated or corrupt"):
        import_vector(path)


def test_import_refuses_a_vector_for_another_model(tmp_path: Path) -> None:
    model, tok = build("llama")
    lm = steerlab.from_model(model, tok, model_id="tiny-llama")
    narrow = tmp_path / "narrow.gguf"
    export_gguf(_vector(), narrow, strength=1.0, model_hint="llama")
    with pytest.raises(VectorError, match=f"width {WIDTH} does not fit"):
        import_vector(narrow, lm)
    other = tmp_path / "other.gguf"
    export_gguf(
        _vector(layers=(1, 2), width=HIDDEN, model_id="org/other"), other, strength=1.0, model_hint="llama"
    )
    with pytest.raises(VectorError, match="made for model 'org/other'"):
        import_vector(other, lm)
    assert import_vector(other, lm, strict_model=False).model_id == "org/other"
    deep = tmp_path / "deep.gguf"
    export_gguf(
        _vector(layers=(1, 7), width=HIDDEN, model_id="tiny-llama"), deep, strength=1.0, model_hint="llama"
    )
    with pytest.raises(VectorError, match="only 3 blocks"):
        import_vector(deep, lm)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"steerlab.model_id": "m", "steerlab.op": "ablate"}, r"unknown steerlab metadata \['steerlab.op'\]"),
        ({"steerlab.model_id": "m", "steerlab.norms": "{not json"}, "'steerlab.norms' is not valid JSON"),
        ({"steerlab.model_id": "m", "steerlab.norms": "[1, 2]"}, "must be JSON objects"),
        ({"steerlab.model_id": "m", "steerlab.norms": '{"x": 1}'}, "malformed steerlab metadata"),
        (
            {"steerlab.model_id": "m", "steerlab.hidden_size": "99"},
            "hidden size 99 but the tensors have width 16",
        ),
        (
            {"steerlab.model_id": "m", "steerlab.norms": '{"1": -1}'},
            "v.gguf: layer 1: recorded norm must be a positive",
        ),
    ],
)
def test_import_refuses_unknown_or_malformed_steerlab_fields(tmp_path: Path, extra: dict, match: str) -> None:
    path = tmp_path / "v.gguf"
    write_control_vector(path, {1: np.ones(WIDTH, np.float32)}, "llama", extra=extra)
    with pytest.raises(VectorError, match=match):
        import_vector(path)


# ----------------------------------------------------------------------------------------------------
# CLI


def test_cli_export_then_import_to_safetensors(tmp_path: Path) -> None:
    runner = CliRunner()
    src = tmp_path / "v.safetensors"
    vec = _vector()
    vec.save(src)
    out = tmp_path / "v.gguf"
    result = runner.invoke(
        app, ["export", str(src), str(out), "--strength", "0.5", "--layers", "1-2", "--model-hint", "llama"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "2 layers" in result.output

    back = tmp_path / "back.safetensors"
    result = runner.invoke(app, ["import", str(out), "--out", str(back)])
    assert result.exit_code == 0, result.output
    assert "org/model" in result.output
    loaded = SteeringVector.load(back)
    for layer in (1, 2):
        assert torch.equal(loaded[layer], vec.unit(layer) * (0.5 * vec.norms[layer]))
    assert json.loads(json.dumps(loaded.provenance["baked"]))["unit"] == "norm"


def test_cli_refusals_exit_2_with_a_message_and_write_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    src = tmp_path / "v.safetensors"
    _vector(layers=(0, 1)).save(src)
    result = runner.invoke(
        app, ["export", str(src), str(tmp_path / "v.gguf"), "--strength", "1", "--model-hint", "llama"]
    )
    assert result.exit_code == 2
    assert "error: layer 0 cannot be expressed" in result.output
    result = runner.invoke(
        app, ["export", str(src), str(tmp_path / "v.gguf"), "--strength", "1", "--op", "ablate"]
    )
    assert result.exit_code == 2 and "op 'ablate' cannot be expressed" in result.output
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00")
    result = runner.invoke(app, ["import", str(bad), "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and "truncated or corrupt" in result.output
    assert _listing(tmp_path) == ["bad.gguf", "v.safetensors"]


# ----------------------------------------------------------------------------------------------------
# The real model


@pytest.mark.slow
def test_real_vector_round_trip_is_bit_exact(lm, happy_vector, tmp_path: Path) -> None:
    tail = happy_vector.select(happy_vector.layers[1:])  # layer 0 has no slot in llama.cpp
    raw = tmp_path / "raw.gguf"
    export_gguf(tail, raw, strength=1.0, unit="raw", lm=lm)
    back = import_vector(raw, lm)
    assert back.layers == tail.layers
    for layer in tail.layers:
        assert torch.equal(back[layer], tail[layer])
        assert np.array_equal(back[layer].numpy(), tail[layer].numpy())
    assert back.model_id == lm.model_id and back.norms == happy_vector.norms

    steering = Steering(happy_vector, strength=0.05, layers="8-20")
    baked = tmp_path / "baked.gguf"
    export_gguf(happy_vector, baked, strength=0.05, layers="8-20", lm=lm)
    plan = lm.compile([[steering]])
    again = import_vector(baked, lm)
    for layer in range(8, 21):
        assert torch.equal(again[layer], plan.terms[(layer, "resid")][0].delta.reshape(-1))
