"""SteeringVector: validation, arithmetic, files. No model needed except for fit checks (tiny stand-in)."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch

from steerlab import SteeringVector, VectorError
from steerlab.models.anatomy import Anatomy


def make(width: int = 8, layers=(1, 2), **kw) -> SteeringVector:
    gen = torch.Generator().manual_seed(0)
    return SteeringVector(
        {i: torch.randn(width, generator=gen) for i in layers},
        model_id=kw.pop("model_id", "toy/model"),
        norms=kw.pop("norms", {i: 10.0 + i for i in layers}),
        method="mean_diff",
        data_hash="abc123",
        **kw,
    )


def anatomy(width: int = 8, layers: int = 4) -> Anatomy:
    return Anatomy("toy", "layers", tuple(range(layers)), width, 2, width // 2)  # blocks unused by checks


def test_save_load_round_trip_is_exact(tmp_path):
    vec = make(notes="hello", defaults={"strength": 0.2, "layers": [1]})
    path = vec.save(tmp_path / "v.safetensors")
    back = SteeringVector.load(path)
    assert back.layers == vec.layers
    for layer in vec.layers:
        assert torch.equal(back[layer], vec[layer])
    assert back.norms == vec.norms
    assert (back.model_id, back.method, back.data_hash, back.notes) == (
        "toy/model",
        "mean_diff",
        "abc123",
        "hello",
    )
    assert back.defaults == {"strength": 0.2, "layers": [1]}
    assert back.convention == "block_output"


def test_arithmetic():
    a, b = make(layers=(1, 2)), make(layers=(2, 3)) * 0.5
    total = a + b
    assert total.layers == [1, 2, 3]
    assert torch.allclose(total[2], a[2] + b[2])
    assert torch.equal(total[1], a[1]) and torch.equal(total[3], b[3])
    assert torch.allclose((a - a)[1], torch.zeros(8))
    assert torch.equal((-a)[1], -a[1])
    assert torch.equal((2 * a)[2], a[2] * 2)
    with pytest.raises(VectorError, match="different models"):
        _ = a + make(model_id="other/model")


@pytest.mark.parametrize(
    ("directions", "message"),
    [
        ({1: torch.tensor([1.0, float("nan")])}, "NaN or inf"),
        ({1: torch.tensor([1.0, float("inf")])}, "NaN or inf"),
        ({1: torch.ones(2, 2)}, "must be 1-D"),
        ({1: torch.ones(3), 2: torch.ones(4)}, "one width"),
        ({}, "at least one layer"),
        ({-1: torch.ones(3)}, "non-negative"),
    ],
)
def test_constructor_refuses_bad_directions(directions, message):
    with pytest.raises(VectorError, match=message):
        SteeringVector(directions)


def test_check_fits_refuses_wrong_width_layer_and_model():
    vec = make(width=8, layers=(1, 5))
    with pytest.raises(VectorError, match="width 8 does not fit"):
        make(width=8).check_fits(anatomy(width=16))
    with pytest.raises(VectorError, match=r"layers \[5\].*only 4 blocks"):
        vec.check_fits(anatomy(width=8, layers=4))
    with pytest.raises(VectorError, match="made for model 'toy/model'"):
        make().check_fits(anatomy(), "another/model")
    make().check_fits(anatomy(), "another/model", strict_model=False)


def test_unknown_convention_refused_in_file(tmp_path):
    path = make().save(tmp_path / "v.safetensors")
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    meta = json.loads(header["__metadata__"]["steerlab"])
    meta["layer_convention"] = "mystery"
    header["__metadata__"]["steerlab"] = json.dumps(meta)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + size :])
    with pytest.raises(VectorError, match="unknown layer convention 'mystery'"):
        SteeringVector.load(bad)


def test_hf_hidden_states_convention_is_converted():
    vec = SteeringVector({5: torch.ones(4)}, convention="hf_hidden_states", norms={5: 2.0})
    assert vec.layers == [4] and vec.norms == {4: 2.0}
    assert vec.provenance["converted_from_convention"] == "hf_hidden_states"


def test_non_vector_files_refused(tmp_path):
    pickle_like = tmp_path / "v.pt"
    pickle_like.write_bytes(b"\x80\x04\x95 pickled data")
    with pytest.raises(VectorError, match="not a vector file steerlab can read"):
        SteeringVector.load(pickle_like)
    with pytest.raises(VectorError, match="not found"):
        SteeringVector.load(tmp_path / "missing.safetensors")
    path = make().save(tmp_path / "v.safetensors")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(VectorError, match=r"truncated or corrupt|not a readable safetensors"):
        SteeringVector.load(truncated)


def test_foreign_safetensors_without_metadata_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"direction.1": torch.ones(4)}, str(path))
    with pytest.raises(VectorError, match="without steerlab metadata"):
        SteeringVector.load(path)


def test_nan_in_file_refused(tmp_path):
    from safetensors.torch import save_file

    meta = make().metadata()
    path = tmp_path / "nan.safetensors"
    save_file(
        {"direction.1": torch.tensor([1.0, math.nan])}, str(path), metadata={"steerlab": json.dumps(meta)}
    )
    with pytest.raises(VectorError, match="NaN or inf"):
        SteeringVector.load(path)


def test_save_is_atomic(tmp_path):
    path = make().save(tmp_path / "v.safetensors")
    before = path.read_bytes()
    vec = make()
    vec.directions[1] = "not a tensor"  # type: ignore[assignment]
    with pytest.raises(Exception):  # noqa: B017 - any failure mid-write
        vec.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.safetensors"]
