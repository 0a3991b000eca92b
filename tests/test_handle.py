"""The model handle under the facade: lower rooms work on a bare ``ModelHandle``, plan compilation never
runs the model, and typical norms are always measured unsteered (even inside an active steering).
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
import torch

import steerlab
from steerlab.engine import (
    Steering,
    SteeringContext,
    add_vector,
    compile_plan,
    direction_at,
    norm_sites_needed,
    unsteered,
)
from steerlab.engine.ops import component_rule
from steerlab.errors import ModelError, SteeringError
from steerlab.models import ModelHandle, find_anatomy
from steerlab.reader import read, typical_norms
from tiny_models import build, one_thread

LAYER = 1
TEXTS = ["The quick brown fox.", "Hi!", "Steering vectors move activations around."]
SRC = Path(steerlab.__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with one_thread():
        yield


def _handle(arch: str = "llama") -> ModelHandle:
    model, tok = build(arch)
    model.eval()
    return ModelHandle(model, tok, f"tiny-{arch}", "memory", find_anatomy(model))


def _lm(arch: str = "llama") -> steerlab.LM:
    model, tok = build(arch)
    return steerlab.from_model(model, tok, model_id=f"tiny-{arch}")


def _vector(handle, *, site="resid", layers=(LAYER,), norms=None, seed=0) -> steerlab.SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    width = handle.anatomy.site_width(site)
    return steerlab.SteeringVector(
        directions={i: torch.randn(width, generator=gen) for i in layers},
        model_id=handle.model_id,
        hidden_size=handle.hidden_size,
        site=site,
        norms=norms or {},
    )


def _logits(handle: ModelHandle, texts=TEXTS) -> torch.Tensor:
    """Last-token logits of right-padded texts, computed directly on the HF model."""
    encoded = [handle.encode(t) for t in texts]
    lengths = torch.tensor([len(e) for e in encoded])
    ids = torch.full((len(texts), int(lengths.max())), handle.pad_token_id, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e)
    mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    with torch.no_grad():
        out = handle.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return out[torch.arange(len(texts)), lengths - 1]


class _ForwardCounter:
    """Counts top-level forward passes of a model while installed."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        self._hook = model.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self.calls += 1

    def remove(self) -> None:
        self._hook.remove()


# --------------------------------------------------------------------------------------- the handle
def test_handle_facts_and_text():
    handle = _handle()
    assert handle.num_layers == 3 and handle.hidden_size == 32
    assert handle.device.type == "cpu" and handle.dtype == torch.float32
    assert handle.pad_token_id == 0
    assert handle.has_chat_template is False
    ids = handle.encode("ab")
    assert ids == [1, ord("a") + 3, ord("b") + 3]  # BOS added once
    assert handle.encode("<s>ab") == handle.tokenizer("<s>ab", add_special_tokens=False)["input_ids"]
    assert "hello" in handle.chat("hello")
    assert handle.steering_contexts == []
    assert "tiny-llama" in repr(handle) and repr(handle).startswith("ModelHandle(")


def test_handle_gives_a_tokenizer_without_pad_its_eos():
    model, tok = build("llama")
    tok.pad_token_id = None
    tok.pad_token = None
    ModelHandle(model, tok, "tiny", "memory", find_anatomy(model))
    assert tok.pad_token == tok.eos_token


def test_lm_is_a_handle():
    lm = _lm()
    assert isinstance(lm, ModelHandle)
    assert repr(lm).startswith("LM('tiny-llama'")


def test_reader_works_on_a_bare_handle():
    handle = _handle()
    acts = read(handle, TEXTS, [0, 2])
    assert acts.layers == [0, 2] and acts.acts[2].shape == (3, 32)
    norms = typical_norms(handle, "resid")
    assert sorted(norms) == [0, 1, 2] and all(v > 0 for v in norms.values())


def test_reader_autocast_follows_the_device_type():
    from steerlab.reader import _autocast

    class OnCuda(ModelHandle):
        device = torch.device("cuda", 0)  # type: ignore[assignment]

    handle = _handle()
    cuda = OnCuda(handle.model, handle.tokenizer, "x", "memory", handle.anatomy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available" where it is not
        assert _autocast(cuda, torch.bfloat16).device == "cuda"
    assert _autocast(handle, torch.bfloat16).device == "cpu"


def test_engine_steers_a_bare_handle_and_restores_bit_exactly():
    handle = _handle()
    vec = _vector(handle)
    base = _logits(handle)
    plan = compile_plan(handle, [[Steering(vec, strength=2.0, unit="raw")]], norms={})
    with SteeringContext(handle, plan) as ctx:
        assert handle.steering_contexts == [ctx]
        steered = _logits(handle)
    assert not torch.equal(base, steered)
    assert torch.equal(base, _logits(handle))
    assert handle.steering_contexts == []


# ------------------------------------------------------------------------------- compilation is pure
def test_compile_plan_runs_no_forward_pass():
    handle = _handle()
    vec = _vector(handle, layers=(0, 1, 2))
    rows = [[Steering(vec, strength=0.5), Steering(vec, op="clamp", strength=0.1, layers=(2,))]]
    norms = {"resid": {0: 3.0, 1: 4.0, 2: 5.0}}
    counter = _ForwardCounter(handle.model)
    try:
        plan = compile_plan(handle, rows, norms=norms)
    finally:
        counter.remove()
    assert counter.calls == 0
    delta = plan.terms[(1, "resid")][0].delta.view(-1)
    expected = vec.directions[1] / vec.directions[1].norm() * (0.5 * 4.0)
    assert torch.equal(delta, expected)
    assert float(plan.terms[(2, "resid")][1].b.view(-1)[0]) == pytest.approx(0.1 * 5.0)


def test_compile_plan_without_needed_norms_says_what_is_missing():
    handle = _handle()
    with pytest.raises(SteeringError, match=r"typical 'resid' norm at layer 1"):
        compile_plan(handle, [[Steering(_vector(handle), strength=0.5)]], norms={})


def test_lm_compile_measures_norms_once_and_only_when_needed():
    lm = _lm()
    counter = _ForwardCounter(lm.model)
    try:
        lm.compile([[Steering(_vector(lm), strength=1.0, unit="raw")]])
        lm.compile([[Steering(_vector(lm, norms={LAYER: 2.0}), strength=1.0)]])
        assert counter.calls == 0  # raw unit, recorded norms: nothing to measure
        lm.compile([[Steering(_vector(lm), strength=1.0)]])
        measured = counter.calls
        assert measured > 0
        lm.compile([[Steering(_vector(lm), strength=2.0)]])
        assert counter.calls == measured  # cached on the LM
    finally:
        counter.remove()


def test_norm_sites_needed():
    handle = _handle()
    plain = _vector(handle)
    recorded = _vector(handle, norms={LAYER: 3.0})
    attn = _vector(handle, site="attn")
    assert norm_sites_needed(handle, [[Steering(plain, strength=1.0)]]) == {"resid"}
    assert norm_sites_needed(handle.anatomy, [[Steering(plain, strength=1.0)]]) == {"resid"}
    assert norm_sites_needed(handle, [[Steering(recorded, strength=1.0)]]) == set()
    assert norm_sites_needed(handle, [[Steering(plain, strength=1.0, unit="raw")]]) == set()
    assert norm_sites_needed(handle, [[Steering(plain, op="ablate")], [Steering(plain, op="scale")]]) == set()
    # recorded norms belong to the site the vector was read at; steering another site needs that site's
    assert norm_sites_needed(handle, [[Steering(recorded, strength=1.0, site="mlp")]]) == {"mlp"}
    assert norm_sites_needed(
        handle, [[Steering(attn, strength=1.0)], [], [Steering(plain, op="clamp", strength=1.0)]]
    ) == {
        "attn",
        "resid",
    }
    with pytest.raises(ModelError, match="layer 7 is out of range"):
        norm_sites_needed(handle, [[Steering(plain, strength=1.0, layers=(7,))]])


def test_add_vector_is_exactly_what_the_engine_adds():
    handle = _handle()
    vec = _vector(handle, layers=(0, 2), norms={0: 1.5})
    for unit, layer in (("norm", 0), ("norm", 2), ("raw", 2)):
        steering = Steering(vec, strength=0.7, unit=unit)
        plan = compile_plan(handle, [[steering]], norms={"resid": {2: 6.0}})
        typical = {0: 1.5, 2: 6.0}[layer]
        assert torch.equal(
            plan.terms[(layer, "resid")][0].delta.view(-1), add_vector(steering, layer, typical)
        )
    assert torch.equal(add_vector(Steering(vec, strength=2.0, unit="raw"), 2, 123.0), vec.directions[2] * 2.0)
    with pytest.raises(SteeringError, match="op 'add'"):
        add_vector(Steering(vec, op="ablate"), 0, 1.0)


def test_direction_at():
    handle = _handle()
    single = _vector(handle, layers=(1,))
    multi = _vector(handle, layers=(0, 1))
    assert direction_at(single, 2) is single.directions[1]  # a single-layer vector applies anywhere
    assert direction_at(multi, 0) is multi.directions[0]
    with pytest.raises(SteeringError, match="only for layers"):
        direction_at(multi, 2)


def test_component_rule():
    assert component_rule("ablate", 0.25) == (0.75, 0.0)
    assert component_rule("clamp", 2.0, typical=3.0) == (0.0, 6.0)
    assert component_rule("scale", 3.0) == (3.0, 0.0)
    with pytest.raises(SteeringError, match="projection op"):
        component_rule("add", 1.0)


# ------------------------------------------------------------------ norms measured unsteered, always
def test_norms_measured_inside_a_steering_equal_unsteered_ones_bit_for_bit():
    clean = _lm().typical_norms("resid")
    lm = _lm()
    outer = lm.steer(_vector(lm, layers=(0,)), strength=5.0, unit="raw")
    inner = lm.steer(_vector(lm, seed=1), op="ablate")
    with outer, inner:
        steered = _logits(lm)
        inside = lm.typical_norms("resid")
        # the contexts came back, in their order (add then ablate: order changes the result)
        assert lm.steering_contexts == [outer, inner]
        assert torch.equal(_logits(lm), steered)
    assert inside == clean
    assert torch.equal(_logits(lm), _logits(_lm()))


def test_steer_inside_a_steering_measures_unsteered_norms():
    clean = _lm().typical_norms("attn")
    lm = _lm()
    with lm.steer(_vector(lm, layers=(0,)), strength=5.0, unit="raw"):
        ctx = lm.steer(_vector(lm, site="attn"), strength=0.5)  # first norm-unit use at 'attn': measures
        assert lm._norms["attn"] == clean
        assert not ctx.active


def test_unsteered_keeps_position_state_of_a_lifted_context():
    lm = _lm()
    ctx = lm.steer_rows([Steering(_vector(lm), strength=1.0, unit="raw", positions="generated"), None])
    with ctx:
        lengths = torch.tensor([4, 2])
        ctx.set_prompt_lengths(lengths)
        with unsteered(lm):
            assert lm.steering_contexts == [ctx]
            assert torch.equal(_logits(lm, TEXTS[:2]), _logits(_lm(), TEXTS[:2]))  # really unsteered
        assert torch.equal(ctx._prompt_len, lengths)
        assert ctx.active


def test_unsteered_puts_contexts_back_after_an_exception():
    lm = _lm()
    with lm.steer(_vector(lm), strength=2.0, unit="raw"):
        steered = _logits(lm)
        with pytest.raises(RuntimeError), unsteered(lm):
            raise RuntimeError("boom")
        assert torch.equal(_logits(lm), steered)


def test_set_rows_compiles_before_taking_the_old_plan_out():
    lm = _lm()
    good = Steering(_vector(lm), strength=2.0, unit="raw")
    with lm.steer_rows([good, None, None]) as ctx:
        before = _logits(lm)
        with pytest.raises(ModelError, match="layer 9"):
            ctx.set_rows([[Steering(_vector(lm), strength=1.0, layers=(9,))], [], []])
        assert ctx.active
        assert torch.equal(_logits(lm), before)
        ctx.set_rows([[], [], [Steering(_vector(lm), strength=0.5)]])  # norm unit: needs lm.compile's norms
        assert not torch.equal(_logits(lm)[2], before[2])
        assert torch.equal(_logits(lm)[0], _logits(_lm())[0])


# ---------------------------------------------------------------------------------------- layering
LOWER = ("engine", "models", "reader.py", "act_cache.py")
HIGHER = (
    "steerlab.lm",
    "steerlab.extract",
    "steerlab.evaluate",
    "steerlab.server",
    "steerlab.cli",
    "steerlab.generate",
)


@pytest.mark.parametrize("room", LOWER)
def test_lower_rooms_do_not_import_higher_ones(room):
    files = [SRC / room] if room.endswith(".py") else sorted((SRC / room).rglob("*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(HIGHER), f"{path.name} imports {name}"
