"""Every metric against a number worked out by hand (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from steerlab.errors import DataError
from steerlab.evaluate import metrics


def test_ab_match_probability_is_the_two_letter_softmax():
    # vocab of 4; match letter id 1, other id 2. Row 0: logits 2 vs 0 -> e^2 / (e^2 + e^0).
    logits = torch.tensor([[5.0, 2.0, 0.0, 9.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 3.0, 0.0]])
    got = metrics.ab_match_probability(logits, [1, 1, 1], [2, 2, 2])
    expected = [math.exp(2) / (math.exp(2) + 1), 0.5, math.exp(-1) / (math.exp(-1) + math.exp(3))]
    assert got == pytest.approx(expected, abs=1e-12)
    # other tokens (ids 0 and 3) do not matter: CAA normalises over the two letters only
    logits[0, 3] = 100.0
    assert metrics.ab_match_probability(logits, [1, 1, 1], [2, 2, 2])[0] == pytest.approx(expected[0])


def test_ab_match_probability_refuses_mismatched_ids():
    with pytest.raises(DataError):
        metrics.ab_match_probability(torch.zeros(2, 3), [0], [1])


def test_slopes_are_least_squares_per_row():
    # y = 2x + 1 -> slope 2; y = [3, 1, 2] over x = [0, 1, 2]: xc = [-1, 0, 1], yc = [1, -1, 0] -> -1 / 2
    got = metrics.slopes([0.0, 1.0, 2.0], [[1.0, 3.0, 5.0], [3.0, 1.0, 2.0]])
    assert got == pytest.approx([2.0, -0.5])
    with pytest.raises(DataError):
        metrics.slopes([1.0, 1.0], [[1.0, 2.0]])


def test_wrong_way_fraction_counts_against_the_intended_sign():
    assert metrics.wrong_way_fraction([0.5, -0.1, 0.0, -2.0]) == 0.5
    assert metrics.wrong_way_fraction([0.5, -0.1, 0.0, -2.0], expected_sign=-1) == 0.25
    assert metrics.wrong_way_fraction([-1e-9, 1.0], tol=1e-6) == 0.0


def test_perplexity_is_exp_of_mean_token_nll():
    # two sequences: NLL sums 2 and 4 over 1 and 3 tokens -> exp(6 / 4)
    assert metrics.perplexity([2.0, 4.0], [1, 3]) == pytest.approx(math.exp(1.5))
    with pytest.raises(DataError):
        metrics.perplexity([0.0], [0])


def test_token_nll_matches_log_softmax_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p = [.5, .5] and [.75, .25]
    got = metrics.token_nll(logits, torch.tensor([1, 0]))
    assert got.tolist() == pytest.approx([math.log(2.0), -math.log(0.75)])


def test_kl_divergence_by_hand():
    p = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    q = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert metrics.kl_divergence(p, q) == pytest.approx([0.0, expected])
    # logits need not be normalised: adding a constant changes nothing
    assert metrics.kl_divergence(p + 7.0, q - 3.0) == pytest.approx([0.0, expected])


def test_accuracy_change_is_paired():
    base = [True, False, False, True]
    new = [True, True, False, False]
    change = metrics.accuracy_change(base, new)
    assert change.value == pytest.approx(0.0)
    assert change.low <= 0.0 <= change.high
    assert metrics.accuracy(new) == 0.5


def test_wilson_interval_known_values():
    # 8 of 10 with z = 1.96: centre 0.7081, half width 0.2181 (textbook values)
    lo, hi = metrics.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3)
    assert hi == pytest.approx(0.9433, abs=1e-3)
    lo, hi = metrics.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    with pytest.raises(DataError):
        metrics.wilson_interval(11, 10)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (8, 10), (10, 10), (1, 1), (37, 120)])
def test_wilson_interval_is_scipys_and_equals_the_score_formula(k, n):
    """The library's interval, at the confidence level of z = 1.96, equals the Wilson score formula."""
    from scipy.stats import binomtest, norm

    lo, hi = metrics.wilson_interval(k, n)
    ref = binomtest(k, n).proportion_ci(confidence_level=2 * norm.cdf(1.96) - 1, method="wilson")
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-12)
    z, p = 1.96, k / n  # the formula the hand-written version used
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((max(0.0, centre - half), min(1.0, centre + half)), abs=1e-9)


def test_bootstrap_is_scipys_percentile_bootstrap():
    from scipy.stats import bootstrap as scipy_bootstrap

    values = np.random.default_rng(1).normal(size=25)
    ours = metrics.bootstrap(values, seed=7, n_resamples=500)
    ref = scipy_bootstrap(
        (values,), np.mean, n_resamples=500, method="percentile", rng=np.random.default_rng(7)
    ).confidence_interval
    assert (ours.low, ours.high) == (ref.low, ref.high)
    median = metrics.bootstrap(values, statistic=np.median, seed=7, n_resamples=500)
    assert median.value == float(np.median(values)) and median.low < median.value < median.high


def test_proportion_carries_wilson_bounds():
    est = metrics.proportion([True] * 8 + [False] * 2)
    assert est.value == 0.8 and est.n == 10
    assert (est.low, est.high) == pytest.approx(metrics.wilson_interval(8, 10))


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.arange(10.0)
    a = metrics.bootstrap(values, seed=3)
    b = metrics.bootstrap(values, seed=3)
    assert a == b
    assert a.value == 4.5 and a.low < 4.5 < a.high
    # constant data: a zero-width interval
    c = metrics.bootstrap([2.0, 2.0, 2.0])
    assert (c.low, c.high) == (2.0, 2.0)
    assert metrics.overlaps_chance(metrics.Estimate(0.5, 0.45, 0.55, 10), 0.5)


def test_auc_rank_formula_with_ties():
    # pairs (pos, neg): (0.9,0.1) win, (0.9,0.5) win, (0.5,0.1) win, (0.5,0.5) tie -> 3.5 / 4
    assert metrics.auc([0.9, 0.5, 0.1, 0.5], [1, 1, 0, 0]) == pytest.approx(0.875)
    with pytest.raises(DataError):
        metrics.auc([0.1], [1])


def test_auc_is_the_library_roc_auc_and_the_probe_uses_it():
    from sklearn.metrics import roc_auc_score

    from steerlab.methods.probe import score_logistic

    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=40), 1)  # rounded: plenty of ties
    labels = (rng.random(40) < 0.4).astype(int)
    assert metrics.auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    x = rng.normal(size=(40, 3))
    w, b = np.array([1.0, -2.0, 0.5]), 0.1
    assert score_logistic(w, b, x, labels)["auc"] == pytest.approx(roc_auc_score(labels, x @ w + b))
    assert np.isnan(score_logistic(w, b, x, np.ones(40, dtype=int))["auc"])  # one class: no AUC


def test_spread_of_seeds():
    s = metrics.spread([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["min"] == 1.0 and s["max"] == 3.0
