"""Pure metric functions: numbers in, numbers out, no model.

Everything the evaluation reports reduces to one of these, so each can be checked against a hand
computation (tests/test_metrics.py). Model-dependent measurement lives in ``measure.py`` and only
gathers logits, token losses and scores to feed these functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from steerlab.errors import DataError
from steerlab.methods.diagnostics import roc_auc as auc  # noqa: F401 - the one ROC AUC, re-exported


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval, stated together so no number travels without its error."""

    value: float
    low: float
    high: float
    n: int
    method: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


# ------------------------------------------------------------------------------------------- A/B effect


def ab_match_probability(
    logits: torch.Tensor, match_ids: Sequence[int], other_ids: Sequence[int]
) -> np.ndarray:
    """CAA's behaviour probability per item: ``p(match) / (p(match) + p(other))``.

    ``logits`` are next-token logits ``(n, vocab)`` read right after the opening parenthesis of the
    answer; ``match_ids[i]``/``other_ids[i]`` are the token ids of item ``i``'s two letters. Normalising
    over the two letters only (a sigmoid of their logit gap) ignores probability the model puts on other
    tokens, as CAA does.
    """
    logits = torch.as_tensor(logits, dtype=torch.float64)
    if logits.dim() != 2 or logits.shape[0] != len(match_ids) or len(match_ids) != len(other_ids):
        raise DataError(
            f"ab_match_probability: expected (n, vocab) logits and n ids per side, got logits "
            f"{tuple(logits.shape)}, {len(match_ids)} match ids, {len(other_ids)} other ids"
        )
    rows = torch.arange(logits.shape[0])
    gap = logits[rows, torch.as_tensor(list(match_ids))] - logits[rows, torch.as_tensor(list(other_ids))]
    return torch.sigmoid(gap).numpy()


# ------------------------------------------------------------------------------------- slopes and signs


def slopes(strengths: Sequence[float], values: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Least-squares slope of each example's score against strength: ``(n, k)`` values → ``(n,)``.

    A per-example slope says whether steering moves *that* example, which a mean over examples hides
    (Tan et al. found many examples move the wrong way even when the average moves right).
    """
    x = np.asarray(strengths, dtype=np.float64)
    y = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if y.shape[1] != x.shape[0] or x.shape[0] < 2:
        raise DataError(f"slopes: need >= 2 strengths and values (n, {x.shape[0]}), got {y.shape}")
    xc = x - x.mean()
    denom = float((xc**2).sum())
    if denom == 0:
        raise DataError("slopes: all strengths are equal, a slope is undefined")
    return ((y - y.mean(axis=1, keepdims=True)) * xc).sum(axis=1) / denom


def wrong_way_fraction(
    deltas: Sequence[float] | np.ndarray, expected_sign: float = 1.0, tol: float = 0.0
) -> float:
    """Fraction of examples whose change (slope or adapted-minus-base) goes against the intended sign.

    ``tol`` ignores changes too small to mean anything (e.g. 1e-6 for float noise).
    """
    d = np.asarray(deltas, dtype=np.float64) * math.copysign(1.0, expected_sign)
    if d.size == 0:
        raise DataError("wrong_way_fraction: no examples")
    return float((d < -tol).mean())


# ----------------------------------------------------------------------------------- fluency, specificity


def perplexity(nll_sums: Sequence[float], token_counts: Sequence[int]) -> float:
    """Corpus perplexity ``exp(sum of token NLLs / number of tokens)`` (nats in, ratio out)."""
    total, count = float(np.sum(nll_sums)), int(np.sum(token_counts))
    if count <= 0:
        raise DataError("perplexity: no tokens to score")
    return math.exp(total / count)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each target under ``logits`` (``(T, V)`` and ``(T,)`` → ``(T,)``)."""
    logp = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), dim=-1)
    return -logp.gather(-1, torch.as_tensor(targets).long().view(-1, 1)).view(-1)


def kl_divergence(ref_logits: torch.Tensor, new_logits: torch.Tensor) -> np.ndarray:
    """``KL(p_ref || p_new)`` in nats per row: how much the adaptation moved each next-token distribution.

    The reference is the unadapted model, so this is the expected extra surprise the adapted model
    suffers at tokens the original model would produce.
    """
    p = torch.log_softmax(torch.as_tensor(ref_logits, dtype=torch.float64), dim=-1)
    q = torch.log_softmax(torch.as_tensor(new_logits, dtype=torch.float64), dim=-1)
    if p.shape != q.shape:
        raise DataError(f"kl_divergence: logits shapes differ: {tuple(p.shape)} vs {tuple(q.shape)}")
    return (p.exp() * (p - q)).sum(-1).clamp(min=0).numpy()


def accuracy(correct: Sequence[bool] | np.ndarray) -> float:
    c = np.asarray(correct, dtype=np.float64)
    if c.size == 0:
        raise DataError("accuracy: no items")
    return float(c.mean())


def accuracy_change(base_correct: Sequence[bool], new_correct: Sequence[bool], seed: int = 0) -> Estimate:
    """Paired change in accuracy (new − base) on the same items, with a paired bootstrap interval."""
    a, b = np.asarray(base_correct, dtype=np.float64), np.asarray(new_correct, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise DataError(
            f"accuracy_change: expected two equal non-empty item lists, got {a.size} and {b.size}"
        )
    return bootstrap(b - a, seed=seed)


# ------------------------------------------------------------------------------------ confidence intervals


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion: sensible at 0/n and n/n, unlike the normal approximation.

    Computed by scipy (``binomtest(...).proportion_ci(method="wilson")``) at the confidence level whose
    two-sided normal quantile is ``z`` (1.96: 95%).
    """
    from scipy.stats import binomtest, norm

    if n <= 0:
        raise DataError("wilson_interval: n must be positive")
    if not 0 <= successes <= n:
        raise DataError(f"wilson_interval: successes must be in [0, {n}], got {successes}")
    interval = binomtest(int(successes), int(n)).proportion_ci(
        confidence_level=float(2 * norm.cdf(z) - 1), method="wilson"
    )
    return max(0.0, float(interval.low)), min(1.0, float(interval.high))


def proportion(flags: Sequence[bool] | np.ndarray) -> Estimate:
    """Share of true flags with its Wilson interval."""
    f = np.asarray(flags, dtype=bool)
    if f.size == 0:
        raise DataError("proportion: no items")
    lo, hi = wilson_interval(int(f.sum()), int(f.size))
    return Estimate(float(f.mean()), lo, hi, int(f.size), "wilson")


def bootstrap(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (seeded: the same data give the same CI).

    Computed by ``scipy.stats.bootstrap`` (percentile method); one value gives a zero-width interval.
    """
    from scipy.stats import bootstrap as scipy_bootstrap

    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise DataError("bootstrap: no values")
    point = float(statistic(v))
    if v.size == 1:
        return Estimate(point, point, point, 1, "bootstrap")
    result = scipy_bootstrap(
        (v,),
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return Estimate(point, float(interval.low), float(interval.high), int(v.size), "bootstrap")


def overlaps_chance(estimate: Estimate, chance: float) -> bool:
    """Whether the interval includes the chance level (e.g. 0.5 for a two-way A/B choice)."""
    return estimate.low <= chance <= estimate.high


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min and max: how much a number moves across seeds or templates."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise DataError("spread: no values")
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }
