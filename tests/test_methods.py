"""Extraction methods against independent numpy/scikit-learn computations, plus the activation cache.

Pair methods are checked on synthetic activations with a planted direction (so a wrong sign, a missing
centring or a transposed weight shows up as a cosine far from 1), ITI on synthetic per-head data with
two planted heads, and the pipelines (ITI, the cache, ``extract_cached``) on a tiny random llama.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import steerlab
from steerlab.act_cache import ActCache, cached_read
from steerlab.errors import DataError, ModelError
from steerlab.extract import extract_cached
from steerlab.methods import PAIR_METHODS, pca_center, pca_diff
from steerlab.methods.iti import extract_iti, iti_directions
from steerlab.methods.mean_diff import mean_diff
from steerlab.methods.probe import probe
from steerlab.methods.registry import METHODS
from tiny_models import build

sklearn = pytest.importorskip("sklearn")
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

PAIRS = [
    (f"I love this {w}, it is great!", f"I hate this {w}, it is awful.")
    for w in ("film", "book", "meal", "song", "park", "game", "car", "town")
]


def _planted(
    n: int = 40,
    width: int = 24,
    seed: int = 0,
    gap: float = 2.0,
    base_scale: float = 3.0,
    spread: float = 1.5,
):
    """Paired activations: shared per-pair content + a planted concept axis with varying strength."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=width)
    axis /= np.linalg.norm(axis)
    base = rng.normal(size=(n, width)) * base_scale
    strength = gap + rng.normal(size=n) * spread
    noise = lambda: rng.normal(size=(n, width)) * 0.3  # noqa: E731
    pos = base + 0.5 * strength[:, None] * axis + noise()
    neg = base - 0.5 * strength[:, None] * axis + noise()
    return torch.tensor(pos, dtype=torch.float32), torch.tensor(neg, dtype=torch.float32), axis


def _cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def tiny():
    model, tok = build("llama")
    return steerlab.from_model(model, tok, model_id="tiny-llama")


# ------------------------------------------------------------------------------------------ pair math
def test_pair_methods_are_registered_for_extract():
    assert {"pca_diff", "pca_center", "probe"} <= set(PAIR_METHODS)
    assert set(METHODS) >= {"mean_diff", "pca_diff", "pca_center", "probe", "iti", "refusal", "learned"}


def test_mean_diff_matches_numpy():
    pos, neg, axis = _planted()
    direction, diag = mean_diff(pos, neg)
    expected = pos.numpy().astype(np.float64).mean(0) - neg.numpy().astype(np.float64).mean(0)
    np.testing.assert_allclose(direction.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert _cos(direction, axis) > 0.95 and diag["norm"] == pytest.approx(np.linalg.norm(expected), rel=1e-5)


def test_pca_diff_matches_sklearn_and_points_positive():
    pos, neg, axis = _planted()
    direction, diag = pca_diff(pos, neg)
    diffs = (pos - neg).numpy().astype(np.float64)
    reference = PCA(n_components=1).fit(diffs)
    assert abs(_cos(direction, reference.components_[0])) > 0.99999
    assert diag["explained_variance"] == pytest.approx(reference.explained_variance_ratio_[0], rel=1e-6)
    # oriented: positive side projects higher, and the length is the class gap along the axis
    unit = direction.numpy() / np.linalg.norm(direction.numpy())
    gap = (pos.numpy().mean(0) - neg.numpy().mean(0)) @ unit
    assert gap > 0
    assert float(direction.norm()) == pytest.approx(gap, rel=1e-4)
    assert _cos(direction, axis) > 0.95


def test_pca_diff_sign_follows_the_data():
    pos, neg, _ = _planted(seed=3)
    forward, _ = pca_diff(pos, neg)
    backward, _ = pca_diff(neg, pos)
    assert _cos(forward, backward) == pytest.approx(-1.0, abs=1e-6)


def test_pca_center_matches_sklearn():
    pos, neg, axis = _planted(seed=1)
    direction, diag = pca_center(pos, neg)
    p, n = pos.numpy().astype(np.float64), neg.numpy().astype(np.float64)
    center = (p + n) / 2
    reference = PCA(n_components=1).fit(np.concatenate([p - center, n - center]))
    assert abs(_cos(direction, reference.components_[0])) > 0.99999
    assert diag["explained_variance"] == pytest.approx(reference.explained_variance_ratio_[0], rel=1e-6)
    assert _cos(direction, axis) > 0.95


def test_probe_matches_sklearn_pipeline_and_reports_heldout():
    pos, neg, _ = _planted(n=80, seed=2, base_scale=0.5, spread=0.5)
    direction, diag = probe(pos, neg)
    x = torch.cat([pos, neg]).double().numpy()
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(x), y)
    raw_weights = reference.coef_[0] / scaler.scale_
    assert _cos(direction, raw_weights) > 0.999
    assert diag["heldout_accuracy"] >= 0.9 and diag["heldout_auc"] >= 0.95
    assert diag["heldout_n"] == 2 * round(0.25 * len(pos))


def test_probe_is_at_chance_on_unrelated_labels():
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(size=(120, 30)), dtype=torch.float32)
    _, diag = probe(x[:60], x[60:])
    assert diag["heldout_accuracy"] < 0.75


@pytest.mark.parametrize("name", ["pca_diff", "pca_center", "probe"])
def test_fewer_than_two_per_side_is_refused(name):
    pos, neg, _ = _planted(n=4)
    with pytest.raises(DataError, match="at least 2"):
        PAIR_METHODS[name](pos[:1], neg[:1])


@pytest.mark.parametrize("name", ["pca_diff", "pca_center", "probe"])
def test_identical_activations_are_refused(name):
    same = torch.ones(6, 8)
    with pytest.raises(DataError, match=r"identical|no contrast|zero"):
        PAIR_METHODS[name](same, same.clone())


def test_mismatched_pairs_are_refused():
    pos, neg, _ = _planted(n=6)
    with pytest.raises(DataError, match="same count"):
        pca_diff(pos, neg[:5])


# ------------------------------------------------------------------------------------------------ ITI
def _heads(n: int, layers: int, heads: int, dim: int, planted: dict[tuple[int, int], float], seed: int = 0):
    rng = np.random.default_rng(seed)
    pos, neg = {}, {}
    for layer in range(layers):
        p = rng.normal(size=(n, heads * dim))
        q = rng.normal(size=(n, heads * dim))
        for (lyr, head), shift in planted.items():
            if lyr == layer:
                p[:, head * dim : (head + 1) * dim] += shift / np.sqrt(dim)
        pos[layer], neg[layer] = torch.tensor(p, dtype=torch.float32), torch.tensor(q, dtype=torch.float32)
    return pos, neg


def test_iti_picks_the_informative_heads_and_zeroes_the_rest():
    pos, neg = _heads(60, layers=3, heads=4, dim=8, planted={(0, 1): 4.0, (2, 3): 3.0})
    directions, diagnostics = iti_directions(pos, neg, num_heads=4, top_k=2)
    assert sorted(directions) == [0, 2]
    assert diagnostics[0]["selected"] == [1] and diagnostics[2]["selected"] == [3]
    assert diagnostics[1]["heads_selected"] == 0
    for layer, head in ((0, 1), (2, 3)):
        d = directions[layer].numpy().reshape(4, 8)
        assert np.all(d[[h for h in range(4) if h != head]] == 0)
        p = pos[layer].numpy()[:, head * 8 : (head + 1) * 8].astype(np.float64)
        q = neg[layer].numpy()[:, head * 8 : (head + 1) * 8].astype(np.float64)
        shift = p.mean(0) - q.mean(0)
        unit = shift / np.linalg.norm(shift)
        sigma = np.std(np.concatenate([p, q]) @ unit, ddof=1)
        np.testing.assert_allclose(d[head], unit * sigma, rtol=1e-4, atol=1e-6)


def test_iti_on_a_model_reads_the_head_site_and_steers(tiny):
    vec = extract_iti(tiny, PAIRS, top_k=3, chat=False)
    assert vec.site == "head" and vec.method == "iti"
    assert vec.width == tiny.anatomy.site_width("head")
    assert sum(d["heads_selected"] for d in vec.diagnostics.values()) == 3
    before = tiny.logits("A plain sentence")
    with tiny.steer(vec, strength=5.0, unit="raw"):
        after = tiny.logits("A plain sentence")
    assert not torch.allclose(before, after)
    assert torch.equal(before, tiny.logits("A plain sentence"))


def test_iti_refuses_a_model_without_a_head_layout(tiny):
    headless = steerlab.LM(
        tiny.model,
        tiny.tokenizer,
        "tiny",
        "memory",
        dataclasses.replace(tiny.anatomy, num_heads=None, head_dim=None),
    )
    with pytest.raises(ModelError, match="head"):
        extract_iti(headless, PAIRS, chat=False)


def test_iti_refuses_bad_top_k():
    pos, neg = _heads(10, layers=1, heads=2, dim=4, planted={})
    with pytest.raises(DataError, match="top_k"):
        iti_directions(pos, neg, num_heads=2, top_k=0)


# ---------------------------------------------------------------------------------------------- cache
class _Counter:
    """Counts forward passes of a model."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self._hit)

    def _hit(self, *_):
        self.calls += 1


def test_cache_serves_a_second_read_without_any_forward(tiny, tmp_path):
    cache = ActCache(tmp_path)
    texts = [p for pair in PAIRS for p in pair]
    first = cache.read(tiny, texts, [0, 2], batch_size=4)
    fresh = steerlab.read(tiny, texts, [0, 2], batch_size=4)
    counter = _Counter(tiny.model)
    try:
        again = cache.read(tiny, texts, [0, 2], batch_size=4)
        assert counter.calls == 0
        assert cache.hits == 2 and cache.misses == 2
        for layer in (0, 2):
            assert torch.equal(again.acts[layer], first.acts[layer])
            torch.testing.assert_close(again.acts[layer], fresh.acts[layer])
        assert again.norms == pytest.approx(first.norms)
        # a request for a layer not yet cached reads only that layer, then everything is served
        cache.read(tiny, texts, [0, 1, 2], batch_size=4)
        assert counter.calls == 4  # 16 texts in batches of 4: exactly one pass over the data
        assert cache.read(tiny, texts, [1]).acts[1].shape == (16, tiny.hidden_size)
        assert counter.calls == 4
    finally:
        counter.handle.remove()


def test_cache_key_changes_with_texts_site_position_and_weights(tiny, tmp_path):
    cache = ActCache(tmp_path)
    texts = ["one text", "another text"]
    key = cache.key(tiny, texts, site="resid", position="last", dtype=None)
    assert key == cache.key(tiny, list(texts), site="resid", position="last", dtype=None)
    assert key != cache.key(tiny, texts[::-1], site="resid", position="last", dtype=None)
    assert key != cache.key(tiny, texts, site="attn", position="last", dtype=None)
    assert key != cache.key(tiny, texts, site="resid", position="mean", dtype=None)
    assert key != cache.key(tiny, texts, site="resid", position="last", dtype=torch.bfloat16)
    other_model, tok = build("llama", seed=1)
    other = steerlab.from_model(other_model, tok, model_id="tiny-llama")  # same id, other weights
    assert key != cache.key(other, texts, site="resid", position="last", dtype=None)


def test_a_corrupt_cache_entry_is_a_miss_and_is_rewritten(tiny, tmp_path):
    cache = ActCache(tmp_path)
    texts = ["alpha beta", "gamma delta"]
    cache.read(tiny, texts, [1])
    key = cache.key(tiny, texts, site="resid", position="last", dtype=None)
    cache.path(key).write_bytes(b"not a safetensors file")
    result = cache.read(tiny, texts, [1])
    assert result.acts[1].shape == (2, tiny.hidden_size)
    assert cache.load(key) is not None


def test_extract_cached_equals_extract_and_reuses_the_read(tiny, tmp_path):
    cache = ActCache(tmp_path)
    reference = steerlab.extract(tiny, PAIRS, method="pca_diff", chat=False)
    first = extract_cached(tiny, PAIRS, "pca_diff", cache=cache, chat=False)
    counter = _Counter(tiny.model)
    try:
        second = extract_cached(tiny, PAIRS, "probe", cache=cache, chat=False)
        third = extract_cached(tiny, PAIRS, "mean_diff", cache=cache, chat=False)
    finally:
        counter.handle.remove()
    assert counter.calls == 0
    for layer in reference.layers:
        assert _cos(first[layer], reference[layer]) > 0.9999
    assert second.method == "probe" and "heldout_accuracy" in second.diagnostics["0"]
    md = steerlab.extract(tiny, PAIRS, method="mean_diff", chat=False)
    for layer in md.layers:
        torch.testing.assert_close(third[layer], md[layer], rtol=1e-4, atol=1e-5)


def test_cached_read_without_cache_is_the_plain_reader(tiny):
    texts = ["x y z", "z y x"]
    plain = steerlab.read(tiny, texts, [1])
    assert torch.equal(cached_read(tiny, texts, [1], cache=None).acts[1], plain.acts[1])


def test_extract_refuses_too_few_pairs_and_identical_sides(tiny):
    with pytest.raises(DataError, match="at least 2"):
        extract_cached(tiny, PAIRS[:1], "pca_diff", cache=None, chat=False)
    with pytest.raises(DataError, match="identical"):
        extract_cached(
            tiny,
            [("same text", "same text"), ("also same", "also same")],
            "mean_diff",
            cache=None,
            chat=False,
        )


def test_a_site_the_architecture_lacks_is_a_clear_error(tiny):
    blocks = tuple(dataclasses.replace(b, mlp=None) for b in tiny.anatomy.blocks)
    no_mlp = steerlab.LM(
        tiny.model, tiny.tokenizer, "tiny", "memory", dataclasses.replace(tiny.anatomy, blocks=blocks)
    )
    with pytest.raises(ModelError, match="no 'mlp' site"):
        extract_cached(no_mlp, PAIRS, "pca_diff", site="mlp", cache=None, chat=False)


# ------------------------------------------------------------------------------------- table, plot, CLI
def test_diagnostics_table_and_plot(tiny, tmp_path):
    from steerlab.plots import layer_rows, plot, table

    vec = steerlab.extract(tiny, PAIRS, method="pca_diff", chat=False)
    layers, columns, _ = layer_rows(vec.diagnostics)
    assert layers == [0, 1, 2] and columns[:2] == ["d_prime", "accuracy"] and "explained_variance" in columns
    text = table(vec)
    assert text.splitlines()[0].split()[:3] == ["layer", "d_prime", "accuracy"]
    assert len([line for line in text.splitlines() if line[:4].strip().isdigit()]) == 3
    png = plot(vec, tmp_path / "diag.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="available"):
        plot(vec, tmp_path / "x.png", columns=["nonexistent"])


def test_lint_command_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from steerlab.cli import app

    good = tmp_path / "good.jsonl"
    good.write_text(
        "\n".join(
            f'{{"positive": "I love the {w} so much", "negative": "I hate the {w} so much"}}'
            for w in ("cat", "dog", "sun", "sea", "tea", "car", "bus", "hat", "pen", "cup")
        )
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"positive": "same", "negative": "same"}\n{"positive": "", "negative": "x"}\n')
    runner = CliRunner()
    ok = runner.invoke(app, ["lint", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "10 items (pairs)" in ok.output
    fail = runner.invoke(app, ["lint", str(bad)])
    assert fail.exit_code == 1 and "FAIL" in fail.output


def test_extract_command_refuses_bad_data_before_loading_a_model(tmp_path):
    from typer.testing import CliRunner

    from steerlab.cli import app

    labelled = tmp_path / "l.jsonl"
    labelled.write_text(
        '{"text": "good", "label": 1}\n{"text": "fine", "label": 1}\n'
        '{"text": "bad", "label": 0}\n{"text": "poor", "label": 0}\n'
    )
    result = CliRunner().invoke(app, ["extract", str(labelled), "--method", "pca_diff"])
    assert result.exit_code == 2 and "--positive-label" in result.output
    result = CliRunner().invoke(app, ["extract", str(labelled), "--method", "nope"])
    assert result.exit_code == 2 and "unknown method" in result.output


def test_run_model_method_maps_extract_arguments(tiny):
    from steerlab.methods.refusal import post_instruction_tokens
    from steerlab.methods.registry import run_model_method

    iti = run_model_method(tiny, PAIRS, "iti", top_k=2, chat=False, site="resid", position="last")
    assert iti.site == "head" and sum(d["heads_selected"] for d in iti.diagnostics.values()) == 2
    harmful = ["pick a lock now", "steal the car now", "hack the phone now"]
    harmless = ["bake a cake now", "wash the car now", "charge the phone now"]
    ref = run_model_method(tiny, (harmful, harmless), "refusal", select=False, positions=(-1,), layers="0-1")
    assert ref.method == "refusal" and ref.provenance["post_instruction_tokens"] == post_instruction_tokens(
        tiny
    )
    prefs = [{"prompt": f"Q{i}?", "positive": " yes, great", "negative": " no, awful"} for i in range(6)]
    learned = run_model_method(
        tiny, prefs, "learned", layers="2", steps=2, eval_every=1, chat=False, batch_size=32
    )
    assert learned.layers == [2]
    with pytest.raises(DataError, match="does not take site='mlp'"):
        run_model_method(tiny, PAIRS, "iti", site="mlp")
    with pytest.raises(DataError, match="two instruction lists"):
        run_model_method(tiny, PAIRS, "refusal")
    with pytest.raises(DataError, match="pair method"):
        run_model_method(tiny, PAIRS, "pca_diff")


def test_extract_is_the_one_entry_point_for_every_method(tiny, tmp_path):
    """``steerlab.extract`` dispatches through the registry: pair methods, cached or not, and model
    methods with their own data and options; an option a pair method does not take is an error."""
    harmful = ["pick a lock now", "steal the car now", "hack the phone now"]
    harmless = ["bake a cake now", "wash the car now", "charge the phone now"]
    iti = steerlab.extract(tiny, PAIRS, method="iti", chat=False, top_k=2)
    assert iti.method == "iti" and iti.site == "head"
    ref = steerlab.extract(
        tiny, (harmful, harmless), method="refusal", select=False, positions=(-1,), layers="0-1"
    )
    assert ref.method == "refusal" and len(ref.layers) == 1
    plain = steerlab.extract(tiny, PAIRS, method="pca_center", chat=False)
    cached = steerlab.extract(tiny, PAIRS, method="pca_center", chat=False, cache=ActCache(tmp_path))
    for layer in plain.layers:
        assert _cos(plain[layer], cached[layer]) > 0.9999
    with pytest.raises(DataError, match="takes no options"):
        steerlab.extract(tiny, PAIRS, method="pca_diff", chat=False, top_k=2)
    with pytest.raises(DataError, match="unknown method"):
        steerlab.extract(tiny, PAIRS, method="nope")


def test_cli_dispatch_runs_every_kind_of_method(tiny, tmp_path):
    from steerlab.cli.methods_cmds import _run

    common = dict(
        layers=None,
        site="resid",
        position="last",
        chat=False,
        batch_size=8,
        dtype=None,
        cache=False,
        harmless=None,
        top_k=2,
        steps=2,
    )
    assert _run(tiny, PAIRS, "pca_center", **common).method == "pca_center"
    assert _run(tiny, PAIRS, "iti", **common).site == "head"
    harmless = tmp_path / "harmless.jsonl"
    harmless.write_text("\n".join(f'{{"instruction": "bake cake number {i}"}}' for i in range(4)))
    harmful = [f"pick lock number {i}" for i in range(4)]
    with pytest.raises(DataError, match="--harmless"):
        _run(tiny, harmful, "refusal", **common)
    vec = _run(tiny, harmful, "refusal", **{**common, "harmless": harmless, "layers": "0-1"})
    assert vec.method == "refusal" and vec.provenance["selected_by"] == "validation"


def test_iti_records_its_paper_scale_as_the_default_strength(tiny):
    from steerlab.methods.iti import ITI_ALPHA

    vec = extract_iti(tiny, PAIRS, top_k=3, chat=False)
    assert vec.defaults == {"op": "add", "unit": "raw", "strength": ITI_ALPHA, "layers": vec.layers}
    assert ITI_ALPHA == 15.0
    # the defaults apply alpha * sigma * theta: the same as asking for the paper's alpha in raw units
    with tiny.steer(vec, strength=ITI_ALPHA, unit="raw"):
        explicit = tiny.logits("A plain sentence")
    with tiny.steer(vec):
        default = tiny.logits("A plain sentence")
    torch.testing.assert_close(default, explicit)
    assert not torch.allclose(default, tiny.logits("A plain sentence"))
