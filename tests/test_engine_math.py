"""The engine's guarantees, checked against direct tensor computations on tiny random models.

Site outputs are captured with our own hooks: one registered *before* steering is installed sees the
site's original output, one registered *after* sees what the engine made of it, so every op can be
compared with the formula it claims. Position policies are checked the same way during ``generate``:
a probe records, for every forward pass (prompt and each KV-cache decode step), exactly which
``(row, column)`` the engine changed.
"""

from __future__ import annotations

import pytest
import torch

import steerlab
from steerlab.engine import Steering, ops
from steerlab.errors import SteeringError
from tiny_models import ARCHS, build, one_thread

LAYER = 1  # the middle block of the three
TEXTS = ["The quick brown fox.", "Hi!", "Steering vectors move activations around."]
GEN_PROMPTS = ["abcdef", "xy", "hello world!"]  # 7, 3 and 13 tokens with BOS: left padding differs
SITES = ("resid", "attn", "mlp", "head")


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with one_thread():
        yield


# ---------------------------------------------------------------------------------------------- helpers
def _lm(arch: str):
    model, tok = build(arch)
    return steerlab.from_model(model, tok, model_id=f"tiny-{arch}")


@pytest.fixture(scope="module")
def lm():
    return _lm("llama")


def _vector(lm, site: str = "resid", layers=(LAYER,), seed: int = 0, norms=None) -> steerlab.SteeringVector:
    width = lm.anatomy.site_width(site)
    gen = torch.Generator().manual_seed(seed)
    return steerlab.SteeringVector(
        directions={i: torch.randn(width, generator=gen) for i in layers},
        model_id=lm.model_id,
        hidden_size=lm.hidden_size,
        site=site,
        norms=norms or {},
    )


def _batch(lm, texts):
    encoded = [lm.encode(t) for t in texts]
    lengths = torch.tensor([len(e) for e in encoded])
    ids = torch.full((len(texts), int(lengths.max())), lm.pad_token_id, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e)
    mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    return ids, mask


def _site_io(lm, layer: int, site: str, steer, texts=TEXTS):
    """(original, steered) output of ``site`` at ``layer`` in one forward pass under ``steer``."""
    module = lm.anatomy.module(layer, site)
    seen: dict[str, torch.Tensor] = {}

    def grab(key):
        if site == "head":
            return lambda mod, args: seen.__setitem__(key, args[0].detach().clone())
        return lambda mod, args, out: seen.__setitem__(
            key, (out if isinstance(out, torch.Tensor) else out[0]).detach().clone()
        )

    register = module.register_forward_pre_hook if site == "head" else module.register_forward_hook
    before = register(grab("before"))
    ids, mask = _batch(lm, texts)
    try:
        with torch.no_grad(), steer:
            after = register(grab("after"))
            try:
                lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
            finally:
                after.remove()
    finally:
        before.remove()
    return seen["before"], seen["after"]


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def _comp(h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return (h * u).sum(-1, keepdim=True)


def _no_hooks(lm) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


# ------------------------------------------------------------------------------------ op math per site
@pytest.mark.parametrize("site", SITES)
def test_add_raw_is_exact(lm, site):
    vec = _vector(lm, site)
    h, out = _site_io(lm, LAYER, site, lm.steer(vec, strength=0.7, unit="raw"))
    assert torch.equal(out, h + vec[LAYER] * 0.7)


@pytest.mark.parametrize("site", SITES)
def test_add_norm_unit_uses_typical_norm_of_the_site(lm, site):
    vec = _vector(lm, site)
    typical = lm.typical_norms(site)[LAYER]
    h, out = _site_io(lm, LAYER, site, lm.steer(vec, strength=0.5))
    torch.testing.assert_close(out, h + 0.5 * typical * _unit(vec[LAYER]), rtol=0, atol=1e-7)
    assert (out - h).norm(dim=-1).sub(0.5 * typical).abs().max() < 1e-6


def test_add_norm_unit_prefers_recorded_norms(lm):
    vec = _vector(lm, norms={LAYER: 3.0})
    h, out = _site_io(lm, LAYER, "resid", lm.steer(vec, strength=0.5))
    torch.testing.assert_close(out, h + 1.5 * _unit(vec[LAYER]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("site", SITES)
def test_ablate_removes_component_and_keeps_the_rest(lm, site):
    vec = _vector(lm, site)
    u = _unit(vec[LAYER])
    h, out = _site_io(lm, LAYER, site, lm.steer(vec, op="ablate"))
    assert _comp(h, u).abs().max() > 1e-3  # there was something to remove
    assert _comp(out, u).abs().max() < 1e-6
    torch.testing.assert_close(out - _comp(out, u) * u, h - _comp(h, u) * u, rtol=0, atol=1e-6)


def test_partial_ablation_removes_that_fraction(lm):
    vec = _vector(lm)
    u = _unit(vec[LAYER])
    h, out = _site_io(lm, LAYER, "resid", lm.steer(vec, op="ablate", strength=0.25))
    torch.testing.assert_close(_comp(out, u), 0.75 * _comp(h, u), rtol=0, atol=1e-6)
    torch.testing.assert_close(out - _comp(out, u) * u, h - _comp(h, u) * u, rtol=0, atol=1e-6)


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("unit", ["raw", "norm"])
def test_clamp_sets_component(lm, site, unit):
    vec = _vector(lm, site)
    u = _unit(vec[LAYER])
    value = 0.3 * (lm.typical_norms(site)[LAYER] if unit == "norm" else 1.0)
    h, out = _site_io(lm, LAYER, site, lm.steer(vec, op="clamp", strength=0.3, unit=unit))
    torch.testing.assert_close(_comp(out, u), torch.full_like(_comp(out, u), value), rtol=0, atol=1e-6)
    torch.testing.assert_close(out - _comp(out, u) * u, h - _comp(h, u) * u, rtol=0, atol=1e-6)


@pytest.mark.parametrize("site", SITES)
def test_scale_multiplies_component(lm, site):
    vec = _vector(lm, site)
    u = _unit(vec[LAYER])
    h, out = _site_io(lm, LAYER, site, lm.steer(vec, op="scale", strength=-2.5))
    torch.testing.assert_close(_comp(out, u), -2.5 * _comp(h, u), rtol=0, atol=1e-6)
    torch.testing.assert_close(out - _comp(out, u) * u, h - _comp(h, u) * u, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------- the ops, as pure math
@pytest.mark.parametrize(
    ("op", "strength", "typical", "expected"),
    [
        ("ablate", 1.0, 1.0, lambda c: 0 * c),
        ("ablate", 0.25, 1.0, lambda c: 0.75 * c),
        ("clamp", 0.3, 4.0, lambda c: torch.full_like(c, 1.2)),
        ("scale", -2.5, 1.0, lambda c: -2.5 * c),
    ],
)
def test_set_component_with_component_rule_does_what_each_op_claims(op, strength, typical, expected):
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(2, 5, 16, generator=gen)
    u = _unit(torch.randn(16, generator=gen))
    a, b = ops.component_rule(op, strength, typical)
    out = ops.set_component(h, u, torch.tensor(a), torch.tensor(b))
    torch.testing.assert_close(ops.component(out, u), expected(ops.component(h, u)), rtol=0, atol=1e-5)
    torch.testing.assert_close(out - _comp(out, u) * u, h - _comp(h, u) * u, rtol=0, atol=1e-5)


def test_identity_rows_of_a_term_are_bit_identical():
    # rows a term does not touch carry delta 0, u 0, a 1, b 0: they must come out exactly as they went in
    h = torch.randn(1, 4, 8)
    out = ops.set_component(ops.add(h, torch.zeros(8)), torch.zeros(8), torch.tensor(1.0), torch.tensor(0.0))
    assert torch.equal(out, h)


def test_position_mask_covers_each_policy():
    # two rows: 3 prompt tokens + 2 generated, the second left-padded by one (-1)
    positions = torch.tensor([[0, 1, 2, 3, 4], [-1, 0, 1, 2, 3]])
    prompt_len = torch.tensor([3, 2])
    codes = ops.OP_CODES

    def covered(kind: str, start: int = 0) -> list[list[bool]]:
        kinds = torch.tensor([codes[kind]] * 2)
        mask = ops.position_mask(positions, prompt_len, kinds, torch.tensor([start, start]))
        return mask.squeeze(-1).tolist()

    assert covered("all") == [[True] * 5, [False] + [True] * 4]
    assert covered("prompt") == [[True, True, True, False, False], [False, True, True, False, False]]
    assert covered("generated") == [[False, False, False, True, True], [False, False, False, True, True]]
    assert covered("from", 1) == [[False, True, True, True, True], [False, False, True, True, True]]


# ------------------------------------------------------------------------------------------ composition
def test_two_vectors_both_apply(lm):
    v1, v2 = _vector(lm, seed=1), _vector(lm, seed=2)
    steer = lm.steer([Steering(v1, strength=0.5, unit="raw"), Steering(v2, strength=-1.5, unit="raw")])
    h, out = _site_io(lm, LAYER, "resid", steer)
    torch.testing.assert_close(out, h + 0.5 * v1[LAYER] - 1.5 * v2[LAYER], rtol=0, atol=1e-6)


def test_order_of_add_and_ablate_matters_as_math_predicts(lm):
    vec = _vector(lm)
    v, u = vec[LAYER], _unit(vec[LAYER])
    add, ablate = Steering(vec, strength=2.0, unit="raw"), Steering(vec, op="ablate")
    h, add_then_ablate = _site_io(lm, LAYER, "resid", lm.steer([add, ablate]))
    _, ablate_then_add = _site_io(lm, LAYER, "resid", lm.steer([ablate, add]))
    orth = h - _comp(h, u) * u
    torch.testing.assert_close(add_then_ablate, orth, rtol=0, atol=1e-6)  # the added part is removed too
    torch.testing.assert_close(ablate_then_add, orth + 2.0 * v, rtol=0, atol=1e-6)
    assert (add_then_ablate - ablate_then_add).abs().max() > 1.0


def test_nested_contexts_compose_inner_after_outer(lm):
    vec = _vector(lm)
    u = _unit(vec[LAYER])
    with lm.steer(vec, strength=2.0, unit="raw"):
        h, out = _site_io(lm, LAYER, "resid", lm.steer(vec, op="ablate"))
    # h is seen after the outer add (component ~ 2 |v|); the inner ablation then removes all of it
    assert _comp(h, u).abs().min() > 1.0
    assert _comp(out, u).abs().max() < 1e-5


# ----------------------------------------------------------------------------------- bit-exact restore
def test_exit_restores_logits_bit_exactly(lm):
    vec = _vector(lm, layers=(0, 1, 2))
    base = lm.logits(TEXTS)
    with lm.steer(vec, strength=0.8, positions=2):
        steered = lm.logits(TEXTS)
    assert not torch.allclose(base, steered)
    assert torch.equal(lm.logits(TEXTS), base)
    assert _no_hooks(lm)


def test_exception_inside_restores_bit_exactly(lm):
    vec = _vector(lm)
    base = lm.logits(TEXTS)
    with pytest.raises(RuntimeError, match="boom"), lm.steer(vec, strength=0.8, op="add"):
        assert not torch.equal(lm.logits(TEXTS), base)
        raise RuntimeError("boom")
    assert torch.equal(lm.logits(TEXTS), base)
    assert _no_hooks(lm)


def test_nested_contexts_restore_in_order(lm):
    outer, inner = _vector(lm, seed=1), _vector(lm, seed=2, layers=(0, 2))
    base = lm.logits(TEXTS)
    with lm.steer(outer, strength=0.6, positions="prompt"):
        only_outer = lm.logits(TEXTS)
        with lm.steer(inner, op="scale", strength=3.0, positions=1):
            both = lm.logits(TEXTS)
        assert torch.equal(lm.logits(TEXTS), only_outer)
    assert torch.equal(lm.logits(TEXTS), base)
    assert not torch.equal(only_outer, base) and not torch.equal(both, only_outer)
    assert _no_hooks(lm)


def test_generate_is_unchanged_after_steering(lm):
    before = lm.generate(GEN_PROMPTS, max_new_tokens=5, chat=False)
    steered = lm.generate(GEN_PROMPTS, max_new_tokens=5, chat=False, steering=_vector(lm), strength=2.0)
    assert steered != before
    assert lm.generate(GEN_PROMPTS, max_new_tokens=5, chat=False) == before
    assert _no_hooks(lm)


# --------------------------------------------------------------------------------------- positions
def _changes_during(lm, layer: int, run) -> list[torch.Tensor]:
    """Per forward pass, a (rows, columns) bool map of where the engine changed block ``layer``'s output.

    A forward hook on the block registered before steering sees the original output; a pre-hook on the
    next block sees the steered one. Comparing them inside the same pass isolates the edit itself, even
    when steering changes which tokens get generated.
    """
    pre, post = [], []
    block = lm.anatomy.module(layer, "resid")
    nxt = lm.anatomy.module(layer + 1, "resid")
    handles = [
        block.register_forward_hook(lambda m, a, out: pre.append(out.detach().clone())),
        nxt.register_forward_pre_hook(lambda m, a: post.append(a[0].detach().clone())),
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    assert len(pre) == len(post) > 1
    return [(a != b).any(-1) for a, b in zip(pre, post, strict=True)]


def _expected(lengths: list[int], steps: int, covered) -> list[torch.Tensor]:
    """The same maps, computed from absolute positions: prompt left-padded, then one token per step."""
    width = max(lengths)
    prompt = torch.zeros(len(lengths), width, dtype=torch.bool)
    for row, n in enumerate(lengths):
        for col in range(width - n, width):
            prompt[row, col] = covered(col - (width - n), n)
    maps = [prompt]
    for step in range(1, steps):
        maps.append(torch.tensor([[covered(n + step - 1, n)] for n in lengths]))
    return maps


def _check_maps(got, lengths, covered, label: str, padding_may_change: bool = False) -> None:
    want = _expected(lengths, len(got), covered)
    width = max(lengths)
    real = torch.arange(width)[None] >= torch.tensor([width - n for n in lengths])[:, None]
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        if step == 0 and padding_may_change:
            # "all" installs no mask at all: padding slots may be edited, which no real token can see
            g, w = g[real], w[real]
        assert torch.equal(g, w), f"{label}, forward {step}: changed {g.int().tolist()}"


POLICIES = {
    "all": lambda pos, n: True,
    "prompt": lambda pos, n: pos < n,
    "generated": lambda pos, n: pos >= n,
    5: lambda pos, n: pos >= 5,
    9: lambda pos, n: pos >= 9,
}


@pytest.mark.parametrize("positions", list(POLICIES))
def test_positions_across_kv_cache_steps(lm, positions):
    vec = _vector(lm)
    lengths = [len(lm.encode(p)) for p in GEN_PROMPTS]
    assert len(set(lengths)) == 3

    def run():
        lm.generate(
            GEN_PROMPTS,
            max_new_tokens=8,
            chat=False,
            steering=vec,
            strength=1.0,
            unit="raw",
            positions=positions,
        )

    got = _changes_during(lm, LAYER, run)
    assert len(got) >= 5
    _check_maps(got, lengths, POLICIES[positions], f"positions={positions!r}", positions == "all")


def test_per_row_positions_during_generate(lm):
    vec = _vector(lm)
    lengths = [len(lm.encode(p)) for p in GEN_PROMPTS]
    rows = [
        Steering(vec, strength=1.0, unit="raw", positions="generated"),
        None,
        Steering(vec, strength=1.0, unit="raw", positions=4),
    ]

    def run():
        lm.generate(GEN_PROMPTS, max_new_tokens=6, chat=False, row_steering=rows)

    got = _changes_during(lm, LAYER, run)
    covered = {0: POLICIES["generated"], 1: lambda pos, n: False, 2: lambda pos, n: pos >= 4}
    for row in range(3):
        want = _expected([lengths[row]], len(got), covered[row])
        pad = max(lengths) - lengths[row]
        assert not got[0][row, :pad].any()  # padding is never touched
        assert torch.equal(got[0][row, pad:], want[0][0, -lengths[row] :])
        for step in range(1, len(got)):
            assert bool(got[step][row, 0]) == bool(want[step][0, 0]), f"row {row} step {step}"


def test_prompt_only_leaves_decode_untouched_and_generated_only_leaves_prompt_untouched(lm):
    vec = _vector(lm)
    base = lm.logits(TEXTS)
    with lm.steer(vec, strength=1.0, positions="generated"):
        assert torch.equal(lm.logits(TEXTS), base)  # a forward without past is all prompt
    with lm.steer(vec, strength=1.0, positions="prompt"):
        assert not torch.equal(lm.logits(TEXTS), base)


def test_from_k_in_a_right_padded_forward(lm):
    # lm.logits pads on the right: "from 4" covers columns 4.. of each row's real tokens, never padding
    lengths = torch.tensor([len(lm.encode(t)) for t in TEXTS])
    h, out = _site_io(lm, LAYER, "resid", lm.steer(_vector(lm), strength=1.0, unit="raw", positions=4))
    cols = torch.arange(h.shape[1])[None]
    assert torch.equal((out != h).any(-1), (cols >= 4) & (cols < lengths[:, None]))


# ---------------------------------------------------------------------------------------------- per-row
def test_per_row_matches_rows_alone(lm):
    s1 = Steering(_vector(lm, seed=1), strength=0.8)
    s2 = [Steering(_vector(lm, seed=2), strength=-0.5), Steering(_vector(lm, seed=3), op="ablate")]
    base = lm.logits(TEXTS)
    with lm.steer_rows([None, s1, s2]):
        mixed = lm.logits(TEXTS)
    assert torch.equal(mixed[0], base[0])  # the unsteered row is bit-identical
    with lm.steer(s1):
        alone1 = lm.logits(TEXTS[1])
    with lm.steer(s2):
        alone2 = lm.logits(TEXTS[2])
    torch.testing.assert_close(mixed[1], alone1[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed[2], alone2[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(mixed[1], base[1]) and not torch.allclose(mixed[2], base[2])


def test_per_row_generate_matches_alone(lm):
    rows = [Steering(_vector(lm, seed=4), strength=2.0), None, Steering(_vector(lm, seed=5), strength=-2.0)]
    batched = lm.generate(GEN_PROMPTS, max_new_tokens=6, chat=False, row_steering=rows)
    alone = [
        lm.generate(p, max_new_tokens=6, chat=False, steering=s)
        for p, s in zip(GEN_PROMPTS, rows, strict=True)
    ]
    assert batched == alone
    assert batched[0] != lm.generate(GEN_PROMPTS[0], max_new_tokens=6, chat=False)


@pytest.mark.parametrize("n_rows", [2, 4])
def test_per_row_batch_size_mismatch_raises(lm, n_rows):
    s = Steering(_vector(lm), strength=1.0)
    with pytest.raises(SteeringError, match="rows"), lm.steer_rows([s] + [None] * (n_rows - 1)):
        lm.logits(TEXTS)
    assert _no_hooks(lm)


def test_per_row_single_row_plan_refuses_larger_batch(lm):
    # A per-row context built for one row must not silently broadcast its steering to every row.
    s = Steering(_vector(lm), strength=1.0)
    with pytest.raises(SteeringError, match="rows"), lm.steer_rows([s]):
        lm.logits(TEXTS)


def test_typical_norms_ignore_active_steering():
    # The norm unit falls back to lm.typical_norms(), measured once and cached on the LM. Measuring it
    # while another steering context is installed must not bake that steering into the cached norms.
    steered_first = _lm("llama")
    outer = steered_first.steer(_vector(steered_first, layers=(0,)), strength=5.0, unit="raw")
    with outer, steered_first.steer(_vector(steered_first), strength=0.5):  # first norm-unit use: measures
        pass
    clean = _lm("llama").typical_norms("resid")
    assert steered_first.typical_norms("resid") == clean  # the contexts were lifted: bit for bit


# ------------------------------------------------------------------------------------ every architecture
@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_steers_and_restores(arch):
    lm = _lm(arch)
    base = lm.logits(TEXTS)
    for site in SITES:
        vec = _vector(lm, site)
        with lm.steer(vec, strength=2.0, unit="raw"):
            steered = lm.logits(TEXTS)
        assert not torch.allclose(steered, base, atol=1e-5), f"{arch}: steering at '{site}' did nothing"
        assert torch.equal(lm.logits(TEXTS), base), f"{arch}: '{site}' not restored"
        _, out = _site_io(lm, LAYER, site, lm.steer(vec, op="ablate", unit="raw"))
        assert _comp(out, _unit(vec[LAYER])).abs().max() < 1e-5
    assert _no_hooks(lm)


def _site_changes_during(lm, layer: int, site: str, steer, run) -> list[torch.Tensor]:
    """Like :func:`_changes_during` for any site: the "after" hook is registered inside ``steer``."""
    module = lm.anatomy.module(layer, site)
    pre, post = [], []

    def grab(store):
        if site == "head":
            return lambda m, args: store.append(args[0].detach().clone())
        return lambda m, a, out: store.append(
            (out if isinstance(out, torch.Tensor) else out[0]).detach().clone()
        )

    register = module.register_forward_pre_hook if site == "head" else module.register_forward_hook
    handles = [register(grab(pre))]
    try:
        with steer:
            handles.append(register(grab(post)))
            run()
    finally:
        for h in handles:
            h.remove()
    assert len(pre) == len(post) > 1
    return [(a != b).any(-1) for a, b in zip(pre, post, strict=True)]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_positions_in_generate(arch):
    lm = _lm(arch)
    lengths = [len(lm.encode(p)) for p in GEN_PROMPTS]

    def run():
        lm.generate(GEN_PROMPTS, max_new_tokens=4, chat=False)

    for site in SITES:
        if arch == "opt" and site == "mlp":
            continue  # flattened tokens: see test_opt_mlp_site_per_row_and_positions
        steer = lm.steer(_vector(lm, site), strength=1.0, unit="raw", positions=5)
        _check_maps(_site_changes_during(lm, LAYER, site, steer, run), lengths, POLICIES[5], f"{arch} {site}")


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_per_row(arch):
    lm = _lm(arch)
    s = Steering(_vector(lm), strength=1.0, unit="raw")
    base = lm.logits(TEXTS)
    with lm.steer_rows([s, None, s]):
        mixed = lm.logits(TEXTS)
    if arch in ("qwen2_moe", "mixtral"):
        # Sparse MoE groups tokens per expert across the batch, so other rows' routing can move the last
        # bits of an unsteered row; equality holds up to rounding only.
        torch.testing.assert_close(mixed[1], base[1], rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(mixed[1], base[1])
    with lm.steer(s):
        alone = lm.logits(TEXTS[2])
    torch.testing.assert_close(mixed[2], alone[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ OPT: a site with flattened tokens
# OPT's decoder layer reshapes hidden states to (batch * tokens, width) before its inline MLP, so the
# "mlp" site (fc2's output) is 2-D. The reader and engine must view it back to (batch, tokens, width).


@pytest.fixture(scope="module")
def opt():
    return _lm("opt")


def test_opt_mlp_site_can_be_read(opt):
    norms = opt.typical_norms("mlp")
    assert sorted(norms) == [0, 1, 2] and all(n > 0 for n in norms.values())


def test_opt_mlp_site_per_row_and_positions(opt):
    s = Steering(_vector(opt, "mlp"), strength=1.0, unit="raw", site="mlp")
    base = opt.logits(TEXTS)
    with opt.steer_rows([s, None, s]):
        mixed = opt.logits(TEXTS)
    assert torch.equal(mixed[1], base[1])
    with opt.steer(s):
        alone = opt.logits(TEXTS[2])
    torch.testing.assert_close(mixed[2], alone[0], rtol=1e-5, atol=1e-6)
    from_k = Steering(_vector(opt, "mlp"), strength=1.0, unit="raw", site="mlp", positions=3)
    with opt.steer(from_k):
        opt.logits(TEXTS)
