"""Baking steering into weights: the written folder must behave like runtime steering, or not be written.

Tiny random models cover the math, several architectures and every refusal in milliseconds; the real
embedded model (slow) checks that ``steerlab.load(folder)`` reproduces runtime steering's logits.

Tolerance: the baked bias is added inside the projection instead of after the residual sum, and
orthogonalised weights are computed in float64 then rounded to float32, so logits differ only by float
rounding: measured max |diff| 4.4e-5 (add) and 4.6e-5 (orthogonalisation) at logit scale ~34 on the real
model; the tests allow 5e-4 absolute, while the steering itself moves logits by > 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

import steerlab
from steerlab.bake import Affine, bake, fold_input, fold_output, runtime_equivalent
from steerlab.engine import Steering
from steerlab.errors import ModelError, SteeringError, VectorError
from steerlab.vector import SteeringVector
from tiny_models import HIDDEN, LAYERS, build, one_thread

TEXT = "The cat sat on the mat, then it slept."
ATOL_REAL = 5e-4
ATOL_TINY = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with one_thread():
        yield


def _tiny(arch: str = "llama"):
    model, tok = build(arch)
    return steerlab.from_model(model, tok, model_id=f"tiny-{arch}")


def _vector(
    width: int = HIDDEN, layers=range(LAYERS), model_id: str = "tiny-llama", seed: int = 1
) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        {i: torch.randn(width, generator=g) for i in layers},
        model_id=model_id,
        norms={i: 1.0 + i for i in layers},
    )


def _ids(lm) -> torch.Tensor:
    return torch.tensor([lm.encode(TEXT)])


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits[0].float()


def _state(lm) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in lm.model.state_dict().items()}


def _same_state(lm, before: dict[str, torch.Tensor]) -> bool:
    after = lm.model.state_dict()
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


# ----------------------------------------------------------------------------------------------------
# The folding math


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "edit",
    [
        Affine(torch.randn(6, dtype=torch.float64), None, 1.0, 0.0),  # add
        Affine(
            None, torch.nn.functional.normalize(torch.randn(6, dtype=torch.float64), dim=0), 0.0, 0.0
        ),  # ablate
        Affine(
            None, torch.nn.functional.normalize(torch.randn(6, dtype=torch.float64), dim=0), 0.0, 1.5
        ),  # clamp
        Affine(
            None, torch.nn.functional.normalize(torch.randn(6, dtype=torch.float64), dim=0), 3.0, 0.0
        ),  # scale
        Affine(
            torch.randn(6, dtype=torch.float64),
            torch.nn.functional.normalize(torch.randn(6, dtype=torch.float64), dim=0),
            0.5,
            -0.2,
        ),
    ],
)
def test_folding_an_edit_into_a_linear_layer_equals_editing_its_output_or_input(
    edit: Affine, bias: bool
) -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 6, dtype=torch.float64)
    w = torch.randn(6, 6, dtype=torch.float64)
    c = torch.randn(6, dtype=torch.float64) if bias else None
    plain = x @ w.T + (c if c is not None else 0)

    w_out, c_out = fold_output(w, c, edit)
    folded_out = x @ w_out.T + (c_out if c_out is not None else 0)
    expected_out = torch.stack([edit.apply_vec(row) for row in plain])
    torch.testing.assert_close(folded_out, expected_out, rtol=0, atol=1e-12)

    w_in, c_in = fold_input(w, c, edit)
    folded_in = x @ w_in.T + (c_in if c_in is not None else 0)
    edited_x = torch.stack([edit.apply_vec(row) for row in x])
    expected_in = edited_x @ w.T + (c if c is not None else 0)
    torch.testing.assert_close(folded_in, expected_in, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# Tiny models: every bakeable op and site equals runtime steering


@pytest.mark.parametrize(
    ("options", "config_change"),
    [
        (dict(op="add", strength=0.7), {"mlp_bias": True}),
        (dict(op="add", strength=0.4, unit="raw", site="mlp", layers=[0, 2]), {"mlp_bias": True}),
        (dict(op="add", strength=0.5, site="attn"), {"attention_bias": True}),
        (dict(op="ablate", site="attn"), {}),
        (dict(op="ablate", strength=0.5, site="mlp"), {}),
        (dict(op="scale", strength=3.0, site="mlp"), {}),
        (dict(op="clamp", strength=0.8, site="attn", layers=[1]), {"attention_bias": True}),
        (dict(op="ablate", site="head", layers=[1, 2]), {}),
        (dict(op="clamp", strength=0.3, site="head", layers=[0]), {"attention_bias": True}),
    ],
)
def test_tiny_bake_equals_runtime_steering(tmp_path: Path, options: dict, config_change: dict) -> None:
    lm = _tiny()
    steering = Steering(_vector(), **options)  # head width = 4 heads x 8 = hidden width here
    before = _state(lm)
    ids = _ids(lm)

    report = bake(lm, steering, tmp_path / "baked")

    baked = AutoModelForCausalLM.from_pretrained(tmp_path / "baked").eval()
    with lm.steer(steering):
        ref = _logits(lm.model, ids)
    plain = _logits(lm.model, ids)
    got = _logits(baked, ids)
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL_TINY)
    assert (ref - plain).abs().max() > 100 * ATOL_TINY  # the steering does more than the tolerance
    assert report.verified and report.max_abs_diff <= ATOL_TINY
    assert report.config_changes == config_change
    for key, value in config_change.items():
        assert getattr(baked.config, key) is value
    assert _same_state(lm, before)
    assert (tmp_path / "baked" / "steerlab-bake.json").is_file()


def test_several_steerings_compose_in_runtime_order(tmp_path: Path) -> None:
    lm = _tiny()
    vec = _vector()
    steerings = [
        Steering(vec, op="add", strength=0.5, layers=[1]),
        Steering(vec, op="ablate", site="mlp", layers=[1]),
        Steering(vec * 2.0, op="add", strength=0.2, unit="raw", layers=[1, 2]),
    ]
    ids = _ids(lm)
    bake(lm, steerings, tmp_path / "b")
    with lm.steer(steerings):
        ref = _logits(lm.model, ids)
    got = _logits(AutoModelForCausalLM.from_pretrained(tmp_path / "b"), ids)
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL_TINY)


def test_orthogonalisation_equals_its_runtime_equivalent_and_unties_the_head(tmp_path: Path) -> None:
    model, tok = build("llama")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    lm = steerlab.from_model(model, tok, model_id="tiny-llama")
    vec = _vector().select([1])
    steering = Steering(vec, op="ablate", layers=f"0-{LAYERS - 1}")
    ids = _ids(lm)
    head_before = lm.model.get_output_embeddings().weight.detach().clone()

    report = bake(lm, steering, tmp_path / "o")

    baked = AutoModelForCausalLM.from_pretrained(tmp_path / "o")
    with runtime_equivalent(lm, steering):
        ref = _logits(lm.model, ids)
    torch.testing.assert_close(_logits(baked, ids), ref, rtol=0, atol=ATOL_TINY)
    assert baked.config.tie_word_embeddings is False
    assert torch.equal(baked.get_output_embeddings().weight, head_before)
    u = vec.unit(1)
    emb = baked.get_input_embeddings().weight
    assert (emb @ u).abs().max() < 1e-5  # no token embedding has a component along u
    for block in baked.model.layers:
        assert (u @ block.self_attn.o_proj.weight).abs().max() < 1e-5
        assert (u @ block.mlp.down_proj.weight).abs().max() < 1e-5
    assert any("runtime ablation at sites attn+mlp" in n for n in report.notes)


@pytest.mark.parametrize("arch", ["gpt_neox", "opt", "qwen2", "gemma2", "phi3"])
def test_other_architectures_bake_exactly_where_expressible(tmp_path: Path, arch: str) -> None:
    lm = _tiny(arch)
    vec = _vector(model_id=f"tiny-{arch}")
    steering = Steering(vec, op="ablate", strength=0.7, site="attn")
    ids = _ids(lm)
    bake(lm, steering, tmp_path / arch)
    with lm.steer(steering):
        ref = _logits(lm.model, ids)
    torch.testing.assert_close(
        _logits(AutoModelForCausalLM.from_pretrained(tmp_path / arch), ids), ref, rtol=0, atol=ATOL_TINY
    )


@pytest.mark.parametrize("arch", ["gpt_neox", "opt"])
def test_resid_add_bakes_into_architectures_with_mlp_biases(tmp_path: Path, arch: str) -> None:
    """GPT-NeoX adds attention and MLP in parallel; OPT's MLP site is fc2 itself: both bake exactly."""
    lm = _tiny(arch)
    steering = Steering(_vector(model_id=f"tiny-{arch}"), op="add", strength=0.6)
    ids = _ids(lm)
    report = bake(lm, steering, tmp_path / arch)
    with lm.steer(steering):
        ref = _logits(lm.model, ids)
    torch.testing.assert_close(
        _logits(AutoModelForCausalLM.from_pretrained(tmp_path / arch), ids), ref, rtol=0, atol=ATOL_TINY
    )
    assert report.config_changes == {}


# ----------------------------------------------------------------------------------------------------
# Refusals: a clear error and nothing written


@pytest.mark.parametrize(
    ("arch", "options", "error", "match"),
    [
        (
            "llama",
            dict(op="add", strength=1.0, positions="prompt"),
            SteeringError,
            "positions='prompt' cannot be baked",
        ),
        (
            "llama",
            dict(op="add", strength=1.0, positions=2),
            SteeringError,
            "cannot be baked: weights act at every position",
        ),
        (
            "llama",
            dict(op="ablate", layers=[1]),
            SteeringError,
            r"ablating the residual stream at layers \[1\] cannot be baked",
        ),
        ("llama", dict(op="ablate", layers="0-2"), SteeringError, "different direction at each layer"),
        (
            "llama",
            dict(op="ablate", strength=0.5, layers="0-2"),
            SteeringError,
            "strength 0.5 on the residual stream",
        ),
        (
            "llama",
            dict(op="clamp", strength=1.0),
            SteeringError,
            "op 'clamp' on the residual stream cannot be baked",
        ),
        ("llama", dict(op="scale", strength=2.0), SteeringError, "op 'scale' on the residual stream"),
        ("qwen2", dict(op="add", strength=1.0), ModelError, "offers no switch to add one"),
        ("gpt2", dict(op="add", strength=1.0), ModelError, "MLP output projection"),
        ("gpt2", dict(op="ablate", site="attn"), ModelError, "Conv1D, not an nn.Linear"),
        ("mixtral", dict(op="add", strength=1.0), ModelError, "mixture-of-experts"),
    ],
)
def test_bake_refuses_what_weights_cannot_express(tmp_path: Path, arch, options, error, match) -> None:
    lm = _tiny(arch)
    before = _state(lm)
    with pytest.raises(error, match=match):
        bake(lm, _vector(model_id=f"tiny-{arch}"), tmp_path / "out", **options)
    assert list(tmp_path.iterdir()) == []
    assert _same_state(lm, before)


def test_bake_refuses_a_vector_for_another_model(tmp_path: Path) -> None:
    lm = _tiny()
    with pytest.raises(VectorError, match="width 8 does not fit"):
        bake(lm, _vector(width=8), tmp_path / "out", strength=1.0)
    with pytest.raises(VectorError, match="made for model 'other/model'"):
        bake(lm, _vector(model_id="other/model"), tmp_path / "out", strength=1.0)
    assert list(tmp_path.iterdir()) == []


def test_orthogonalisation_must_be_baked_alone(tmp_path: Path) -> None:
    lm = _tiny()
    one = _vector().select([0])
    with pytest.raises(SteeringError, match="must be baked on its own"):
        bake(lm, [Steering(one, op="ablate", layers="0-2"), Steering(one, strength=1.0)], tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def test_failed_verification_writes_nothing(tmp_path: Path) -> None:
    """A block whose MLP output is rescaled after the projection breaks the bias trick: caught, refused."""
    lm = _tiny()
    handle = lm.anatomy.module(1, "mlp").register_forward_hook(lambda m, a, out: out * 2.0)
    try:
        with pytest.raises(ModelError, match="does not reproduce runtime steering"):
            bake(lm, _vector(), tmp_path / "out", strength=1.0, layers=[1])
    finally:
        handle.remove()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    lm = _tiny()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ModelError, match="not empty"):
        bake(lm, _vector(), out, strength=1.0)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    bake(lm, _vector(), out, strength=1.0, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or backup left behind


# ----------------------------------------------------------------------------------------------------
# The real model


@pytest.mark.slow
def test_real_model_add_bake_reproduces_runtime_steering(lm, happy_vector, tmp_path: Path) -> None:
    before = _state(lm)
    steering = Steering(happy_vector, strength=0.05, layers="8-20")
    texts = [lm.chat("Tell me about your weekend."), "The weather today is"]

    report = bake(lm, steering, tmp_path / "happy", verify=False)

    baked = steerlab.load(tmp_path / "happy")
    with lm.steer(steering):
        ref = lm.logits(texts)
    plain = lm.logits(texts)
    got = baked.logits(texts)
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL_REAL)
    assert (ref - plain).abs().max() > 1.0
    assert baked.model.config.mlp_bias is True
    assert report.config_changes == {"mlp_bias": True}
    assert _same_state(lm, before)


@pytest.mark.slow
def test_real_model_ablation_at_every_layer_as_orthogonalisation(lm, happy_vector, tmp_path: Path) -> None:
    before = _state(lm)
    steering = Steering(happy_vector.select([12]), op="ablate", layers=f"0-{lm.num_layers - 1}")
    texts = [lm.chat("Tell me about your weekend."), "The weather today is"]

    bake(lm, steering, tmp_path / "abl", verify=False)

    baked = steerlab.load(tmp_path / "abl")
    got = baked.logits(texts)
    with runtime_equivalent(lm, steering):
        ref = lm.logits(texts)
    with lm.steer(steering):
        block_outputs = lm.logits(texts)
    plain = lm.logits(texts)
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL_REAL)
    assert (got - plain).abs().max() > 1.0
    # Documented (docs/interop.md): ablation at block outputs only is a different, nearby model.
    assert (got - block_outputs).abs().max() > 10 * ATOL_REAL
    assert torch.equal(got.argmax(-1), block_outputs.argmax(-1))
    assert _same_state(lm, before)


@pytest.mark.slow
def test_cli_bake_orthogonalises_with_one_layers_direction(lm, happy_vector, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from steerlab.cli import app

    src = tmp_path / "happy.safetensors"
    happy_vector.save(src)
    runner = CliRunner()
    result = runner.invoke(
        app, ["bake", str(src), "--out", str(tmp_path / "b"), "--op", "scale", "--strength", "2"]
    )
    assert result.exit_code == 2 and "op 'scale' on the residual stream cannot be baked" in result.output
    assert not (tmp_path / "b").exists()

    result = runner.invoke(
        app, ["bake", str(src), "--out", str(tmp_path / "b"), "--op", "ablate", "--direction-from", "12"]
    )
    assert result.exit_code == 0, result.output
    assert "verified: max |logit diff|" in result.output and "token embeddings: ablate" in result.output
    baked = steerlab.load(tmp_path / "b")
    u = happy_vector.unit(12)
    assert (baked.model.get_input_embeddings().weight @ u).abs().max() < 1e-4
