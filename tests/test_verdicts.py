"""The report's verdicts follow the docs' own rules: no winner where intervals overlap, no "best" on a tie,
and a calibrated strength outside the budget is said to be outside it."""

from __future__ import annotations

from steerlab.evaluate.report.findings import (
    CostFinding,
    EffectFinding,
    Findings,
    GeneralisationFinding,
    ReliabilityFinding,
    ReversibilityFinding,
    SpecificityFinding,
    UsabilityEntry,
    findings,
    leaders,
)
from steerlab.evaluate.report.verdicts import render


def _est(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high}


def _findings(
    *,
    best_effect=_est(0.627, 0.542, 0.669),
    overlapping=("mean_diff",),
    wrong_way=None,
    kl=None,
    within_budget=True,
) -> Findings:
    families = {"baseline": "none", "prompting": "prompting", "mean_diff": "steering"}
    return Findings(
        effect=EffectFinding(
            best="prompting",
            families=families,
            best_effect=best_effect,
            baseline_effect=_est(0.40, 0.35, 0.45),
            established=True,
            overlapping=list(overlapping),
            best_steering="mean_diff",
            best_steering_effect=_est(0.56, 0.511, 0.606),
            prompting_effect=best_effect,
            chance=None,
            near_chance=[],
        ),
        reliability=ReliabilityFinding(wrong_way or {"prompting": 0.0, "mean_diff": 0.0}, {}),
        generalisation=GeneralisationFinding({}, None),
        specificity=SpecificityFinding(kl or {"prompting": 0.69, "mean_diff": 0.12}, {}, {}),
        cost=CostFinding({"prompting": 0.0, "mean_diff": 2.5}, {}, {}),
        data_efficiency={},
        composability=None,
        usability=[
            UsabilityEntry(
                "mean_diff",
                "steering",
                {"layers": [10, 16], "strength": 0.08, "within_budget": within_budget},
                12,
            )
        ],
        reversibility=ReversibilityFinding([], None),
    )


def test_no_winner_is_named_where_the_intervals_overlap():
    text = render(_findings())["effect"]
    assert "wins" not in text.replace("no method wins", "")
    assert "no method wins on effect" in text and "mean_diff" in text


def test_a_separated_best_method_wins():
    text = render(_findings(best_effect=_est(0.80, 0.75, 0.85), overlapping=()))["effect"]
    assert "Prompting wins on effect here." in text


def test_a_tie_names_no_single_best():
    text = render(_findings(wrong_way={"prompting": 0.0, "mean_diff": 0.0}))["reliability"]
    assert text.startswith("tied on fewest examples moved the wrong way")
    assert "prompting, mean_diff" in text
    single = render(_findings(wrong_way={"prompting": 0.1, "mean_diff": 0.0}))["reliability"]
    assert single.startswith("fewest examples moved the wrong way vs unadapted: mean_diff (0%)")


def test_usability_says_when_the_strength_lies_outside_the_budget():
    assert "OUTSIDE the budget" in render(_findings(within_budget=False))["usability"]
    assert "OUTSIDE" not in render(_findings(within_budget=True))["usability"]


def test_leaders_returns_every_method_sharing_the_best_value():
    assert leaders({"a": 0.1, "b": 0.1, "c": 0.3}) == ["a", "b"]
    assert leaders({"a": 0.1, "b": 0.2}, lowest=False) == ["b"]
    assert leaders({}) == []


def test_findings_lists_overlapping_methods_from_real_rows():
    def row(family, value, low, high):
        return {
            "family": family,
            "effect": _est(value, low, high),
            "kl": 0.1,
            "build_seconds": 1.0,
            "reversible": True,
        }

    rows = {
        "baseline": row("none", 0.4, 0.35, 0.45),
        "prompting": row("prompting", 0.627, 0.542, 0.669),
        "mean_diff": row("steering", 0.56, 0.511, 0.606),
        "probe": row("steering", 0.45, 0.40, 0.50),
    }
    results = {"task": {}, "main": {m: {} for m in rows}}
    found = findings(results, rows)
    assert found is not None
    assert found.effect.best == "prompting"
    assert found.effect.overlapping == ["mean_diff"]
