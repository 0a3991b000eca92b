"""engine="llamacpp": steerlab vectors run by llama.cpp itself, checked against steerlab's own engine.

llama-cpp-python is an optional extra that compiles llama.cpp from source (about 45 minutes on this
2-core machine), so the tests that need it skip when it is absent; the refusals that do not need it
always run.

Tolerance: llama.cpp computes with the file's Q4_1 weights and 8-bit-quantised activations, steerlab
with the same weights dequantised to float32.  Unsteered next-token logits differ by up to ~1.0 (argmax
equal); the *steering shift* (steered - unsteered logits) agrees with cosine > 0.99 at the right layer,
clearly more than at the neighbouring layers, which pins llama.cpp's ``direction.N`` = steerlab layer N.
Greedy texts agree for the first tokens and then may drift apart (measured: 26 tokens steered).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import steerlab
from steerlab.engine import Steering
from steerlab.errors import ModelError, SteeringError, VectorError
from steerlab.interop.export import export_gguf, import_vector
from steerlab.interop.llamacpp_engine import LlamaCppEngine, generate_llamacpp, llama_cpp_available
from steerlab.models.loading import embedded_gguf_path
from steerlab.vector import SteeringVector
from tiny_models import build

SKIP_REASON = (
    "llama-cpp-python is not installed (optional extra 'llamacpp'; it compiles llama.cpp from source, too "
    "slow for CI)"
)
needs_llama = pytest.mark.skipif(not llama_cpp_available(), reason=SKIP_REASON)
PROMPT = "Tell me about your day."


def _gguf() -> Path:
    try:
        return embedded_gguf_path()
    except ModelError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def engine():
    if not llama_cpp_available():
        pytest.skip(SKIP_REASON)
    with LlamaCppEngine(_gguf(), n_ctx=512) as eng:
        yield eng


def _vec(width: int = 576, layers=range(30), seed: int = 0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        {i: torch.randn(width, generator=g) for i in layers}, norms={i: 5.0 for i in layers}
    )


def _agree(a: list[int], b: list[int]) -> int:
    """Positions where two greedy continuations hold the same token.

    llama.cpp runs the 4-bit weights and torch their float32 dequantisation, so a near-tie can go either
    way ("delighted" vs "thrilled") and the texts then run on in step; a shared prefix would call that a
    disagreement from there on, which is not what the steering did.
    """
    return sum(x == y for x, y in zip(a, b, strict=False))


# ----------------------------------------------------------------------------------------------------
# Refusals that need no llama.cpp


def test_a_model_not_loaded_from_gguf_is_refused() -> None:
    model, tok = build("llama")
    lm = steerlab.from_model(model, tok, model_id="tiny")
    with pytest.raises(ModelError, match="runs GGUF files, but this model was loaded from 'memory'"):
        LlamaCppEngine(lm)
    with pytest.raises(ModelError, match="GGUF model file not found"):
        generate_llamacpp("/nonexistent/model.gguf", "hi")


def test_missing_llama_cpp_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp -> ImportError
    with pytest.raises(ModelError, match=r"pip install 'steerlab\[llamacpp\]'"):
        LlamaCppEngine(_gguf())


# ----------------------------------------------------------------------------------------------------
# Refusals: what a control vector cannot express


@needs_llama
@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (dict(op="ablate"), SteeringError, "op 'ablate' cannot be expressed in the llama.cpp engine"),
        (dict(op="clamp", strength=1.0), SteeringError, "op 'clamp' cannot be expressed"),
        (
            dict(strength=0.1, positions="generated"),
            SteeringError,
            "positions='generated' cannot be expressed",
        ),
        (dict(strength=0.1, site="attn", layers=[3]), SteeringError, "site 'attn' cannot be expressed"),
        (dict(strength=0.1, layers="0-3"), VectorError, "layer 0 cannot be expressed"),
        (dict(strength=0.1, layers=[30]), SteeringError, "has only 30 blocks|directions only for layers"),
    ],
)
def test_engine_refuses_what_it_cannot_express(engine, options, error, match) -> None:
    with pytest.raises(error, match=match):
        engine.generate(PROMPT, max_new_tokens=2, steering=_vec(), **options)


@needs_llama
def test_engine_refuses_other_widths_rows_and_overlong_requests(engine) -> None:
    with pytest.raises(SteeringError, match="width 16 does not fit"):
        engine.generate(PROMPT, max_new_tokens=2, steering=_vec(width=16), strength=0.1)
    with pytest.raises(SteeringError, match="per-row steering needs the torch engine"):
        engine.generate([PROMPT, PROMPT], row_steering=[None, None])
    with pytest.raises(SteeringError, match=r"exceeds the llama\.cpp context of 512"):
        engine.generate(PROMPT, max_new_tokens=600)


@needs_llama
def test_exported_file_is_what_the_engine_adds(engine, tmp_path: Path) -> None:
    """A GGUF written by export, read back as raw vectors, steers llama.cpp bit-identically."""
    vec = _vec(layers=range(1, 30))
    path = tmp_path / "v.gguf"
    export_gguf(vec, path, strength=0.3, layers="5-9", model_hint="llama")
    from_file = import_vector(path)
    text = "The weather today is"
    direct = engine.logits(text, steering=vec, strength=0.3, layers="5-9")
    via_file = engine.logits(text, steering=from_file, strength=1.0, unit="raw")
    plain = engine.logits(text)
    assert torch.equal(direct, via_file)
    assert (direct - plain).abs().max() > 0.1
    assert torch.equal(engine.logits(text), plain)  # the control vector is removed after each call


@needs_llama
def test_path_only_engine_generates_with_the_gguf_chat_template(engine) -> None:
    first = engine.generate(PROMPT, max_new_tokens=8, details=True)
    again = engine.generate(PROMPT, max_new_tokens=8, details=True)
    assert first.token_ids == again.token_ids and len(first.token_ids) == 8
    assert first.finish_reason == "length" and first.text.strip()
    streamed: list[str] = []
    text = engine.generate(PROMPT, max_new_tokens=8, on_token=lambda row, tok, delta: streamed.append(delta))
    assert "".join(streamed) == text == first.text


# ----------------------------------------------------------------------------------------------------
# Agreement with steerlab's own engine on the real model


@pytest.mark.slow
@needs_llama
def test_llama_cpp_adds_direction_n_where_steerlab_adds_layer_n(lm, happy_vector) -> None:
    texts = [lm.chat(PROMPT), "The weather today is"]
    layer = 12
    with LlamaCppEngine(lm, n_ctx=512) as eng:
        plain_ll = eng.logits(texts)
        steered_ll = eng.logits(texts, steering=happy_vector, strength=0.5, layers=[layer])
    plain_hf = lm.logits(texts)
    assert torch.equal(plain_ll.argmax(-1), plain_hf.argmax(-1))
    shift_ll = steered_ll - plain_ll
    cos, diff = {}, {}
    for at in (layer - 1, layer, layer + 1):
        with lm.steer(happy_vector.select([layer]), strength=0.5, layers=[at]):
            steered_hf = lm.logits(texts)
        cos[at] = torch.nn.functional.cosine_similarity(shift_ll, steered_hf - plain_hf)
        diff[at] = (steered_ll - steered_hf).abs().max().item()
    assert (cos[layer] > 0.99).all(), cos
    assert (cos[layer] > cos[layer - 1]).all() and (cos[layer] > cos[layer + 1]).all(), cos
    assert diff[layer] < min(diff[layer - 1], diff[layer + 1]) / 2, diff


@pytest.mark.slow
@needs_llama
def test_steered_greedy_text_matches_steerlab_and_differs_from_unsteered(lm, happy_vector) -> None:
    steering = Steering(happy_vector, strength=0.05, layers="8-20")
    with LlamaCppEngine(lm, n_ctx=512) as eng:
        plain_ll = eng.generate(PROMPT, max_new_tokens=16, details=True)
        steered_ll = eng.generate(PROMPT, max_new_tokens=16, steering=steering, details=True)
    steered_hf = lm.generate(PROMPT, max_new_tokens=16, steering=steering, details=True)
    assert steered_ll.token_ids != plain_ll.token_ids
    assert _agree(steered_ll.token_ids, steered_hf.token_ids) >= 12, (steered_ll.text, steered_hf.text)
    assert _agree(steered_ll.token_ids, plain_ll.token_ids) < _agree(
        steered_ll.token_ids, steered_hf.token_ids
    )
    assert steered_ll.prompt_tokens == steered_hf.prompt_tokens  # same tokenizer, same chat template
