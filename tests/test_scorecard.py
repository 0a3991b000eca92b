"""The scorecard: compare folders as one page per model and task, verdicts by the report's own rules,
the command behind each folder, clear refusals for folders that are not compare folders; and the
figures' readability rules (plain-number axes, KL from zero, baselines and intervals drawn)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.errors import DataError
from steerlab.evaluate import report, scorecard
from steerlab.evaluate.report.plots import (
    effect_strength_figure,
    efficiency_figure,
    frontier_figure,
    sweep_heatmap,
)
from steerlab.evaluate.scorecard.cards import ROW_METHODS, task_card

FAMILIES = {"baseline": "none", "prompting": "prompting", "lora": "lora"}
SMALL = {
    "train": 16,
    "eval": 8,
    "heldout": 8,
    "calib": 6,
    "shots": 2,
    "max_new_tokens": 24,
    "scorer_train": 100,
    "scorer_test": 60,
    "neutral": 40,
    "seed": 0,
}


def _est(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high, "n": 8, "method": "bootstrap"}


def _method(name: str, value: float, low: float, high: float, per_example: list[float]) -> dict:
    family = FAMILIES.get(name, "steering")
    out = {
        "method": name,
        "family": family,
        "cost": {"seconds": 2.0, "forward_passes": 10, "backward_passes": 4 if family == "lora" else 0},
        "settings": {"layers": [3, 4, 5], "strength": 0.1, "within_budget": True}
        if family == "steering"
        else {},
        "eval": {
            "estimate": _est(value, low, high),
            "per_example": per_example,
            "generations": None,
            "extra": {},
        },
        "heldout": {
            "estimate": _est(value, low, high),
            "per_example": per_example,
            "generations": None,
            "extra": {},
        },
        "kl": {"mean": 0.05, "estimate": _est(0.05, 0.03, 0.08)} if name != "baseline" else {"mean": 0.0},
        "ppl": 5.0,
        "tokens_per_second": 10.0,
        "tokens_per_second_unadapted": 10.0,
        "extra_prompt_tokens": 12 if family == "prompting" else 0,
        "reversibility": {"passed": True},
    }
    if family == "steering":
        out["calibration"] = {
            "rows": [
                {
                    "key": "baseline",
                    "layer_label": "3-5",
                    "layers": [3, 4, 5],
                    "strength": 0.0,
                    "effect": 0.4,
                },
                {
                    "key": "3-5@0.1",
                    "layer_label": "3-5",
                    "layers": [3, 4, 5],
                    "strength": 0.1,
                    "effect": value,
                },
            ],
            "choice": {"layer_label": "3-5", "strength": 0.1},
            "within_budget": True,
        }
    return out


def results_doc(
    model: str, kind: str, effects: dict[str, tuple[float, float, float]], *, chance=None, missing=None
) -> dict:
    """A compare results document whose methods score ``effects`` (value, low, high) on 8 items."""
    main = {}
    for name, (value, low, high) in effects.items():
        per = [value] * 8
        if name != "baseline" and value < effects["baseline"][0]:
            per = [effects["baseline"][0] - 0.1] * 8  # every item moved the wrong way
        main[name] = _method(name, value, low, high, per)
    return {
        "task": {
            "name": kind,
            "kind": kind,
            "eval": 8,
            "heldout": 8,
            "heldout_name": "other",
            "chance": chance,
        },
        "config": {
            "budget": SMALL,
            "methods": list(effects),
            "data_sizes": [4, 8],
            "seeds": [0],
            "max_kl": 0.1,
        },
        "methods": list(effects),
        "missing_methods": missing or {},
        "main": main,
        "efficiency": {
            "e1": {"method": "mean_diff", "n": 4, "seed": 0, "effect": 0.5},
            "e2": {"method": "mean_diff", "n": 8, "seed": 0, "effect": 0.6},
        },
        "compose": {},
        "executor": "in-process",
        "model": model,
    }


def write_folder(path: Path, doc: dict) -> Path:
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(doc))
    return path


OVERLAP = {
    "baseline": (0.40, 0.35, 0.45),
    "prompting": (0.627, 0.542, 0.669),
    "mean_diff": (0.56, 0.511, 0.606),
}
PROMPTING_AHEAD = {
    "baseline": (0.40, 0.35, 0.45),
    "prompting": (0.90, 0.85, 0.95),
    "mean_diff": (0.60, 0.55, 0.65),
    "lora": (0.30, 0.25, 0.35),
}
STEERING_AHEAD = {
    "baseline": (0.40, 0.35, 0.45),
    "prompting": (0.50, 0.45, 0.55),
    "mean_diff": (0.80, 0.75, 0.85),
}


# ------------------------------------------------------------------------------------------- the table


def test_overlapping_intervals_name_no_winner_and_steering_is_undecided():
    card = task_card(results_doc("m", "sentiment", OVERLAP))
    assert "no method wins on effect" in card.verdicts["effect"]
    assert "Prompting wins" not in card.verdicts["effect"]
    assert card.steering.startswith("Steering neither wins nor loses")


def test_separated_intervals_name_the_winner_and_say_plainly_that_steering_loses():
    card = task_card(results_doc("m", "sentiment", PROMPTING_AHEAD))
    assert "Prompting wins on effect here." in card.verdicts["effect"]
    assert card.steering.startswith("Steering loses on effect: prompting 0.900 [0.850, 0.950]")
    assert "mean_diff 0.600 [0.550, 0.650]" in card.steering
    lora = next(r for r in card.rows if r.method == "lora")
    assert lora.cells["reliability"].startswith("100% wrong way [")  # below the unadapted model on every item


def test_steering_that_clears_every_alternative_wins():
    card = task_card(results_doc("m", "persona", STEERING_AHEAD))
    assert "mean_diff wins on effect here." in card.verdicts["effect"]
    assert card.steering.startswith("Steering wins on effect: mean_diff 0.800 [0.750, 0.850]")


def test_a_tie_is_reported_as_a_tie():
    card = task_card(results_doc("m", "sentiment", STEERING_AHEAD))
    assert card.verdicts["reliability"].startswith("tied on fewest examples moved the wrong way")


def test_every_method_has_a_row_and_missing_ones_say_why():
    doc = results_doc("m", "sentiment", OVERLAP, missing={"learned": "not available in this install"})
    card = task_card(doc)
    names = [r.method for r in card.rows]
    assert names[0] == "baseline" and set(ROW_METHODS) <= set(names)
    learned = next(r for r in card.rows if r.method == "learned")
    assert not learned.ran and learned.note == "not available in this install"
    probe = next(r for r in card.rows if r.method == "probe")
    assert "not run in this comparison" in probe.note
    mean_diff = next(r for r in card.rows if r.method == "mean_diff")
    assert mean_diff.cells["effect"] == "0.560 [0.511, 0.606]"
    assert mean_diff.cells["specificity"].startswith("KL 0.050 [0.030, 0.080]")
    assert mean_diff.cells["data efficiency"] == "n=4: 0.500, n=8: 0.600 (mean over seeds)"
    assert mean_diff.cells["usability"].startswith("layers 3-5 and strength 0.1 chosen automatically")
    prompting = next(r for r in card.rows if r.method == "prompting")
    assert prompting.cells["data efficiency"].startswith("— not measured for prompting")
    assert prompting.cells["composability"] == "— not measured"
    md = scorecard.markdown.table(card)
    assert "| learned | — not run: not available in this install | — |" in md


def test_an_ab_task_at_chance_says_the_model_is_not_above_chance():
    at_chance = {
        "baseline": (0.5, 0.45, 0.55),
        "prompting": (0.52, 0.46, 0.58),
        "mean_diff": (0.51, 0.4, 0.6),
    }
    card = task_card(results_doc("m", "ab", at_chance, chance=0.5))
    assert card.chance is not None and card.chance.startswith("Not above chance")
    above = {**at_chance, "prompting": (0.8, 0.7, 0.9)}
    assert (
        task_card(results_doc("m", "ab", above, chance=0.5)).chance
        == "Above chance (0.5): prompting have intervals clear of it."
    )
    assert task_card(results_doc("m", "sentiment", OVERLAP)).chance is None


def test_two_models_get_one_section_each_with_their_tasks_in_order(tmp_path):
    a = write_folder(tmp_path / "a-persona", results_doc("model-a", "persona", STEERING_AHEAD))
    b = write_folder(tmp_path / "b-sent", results_doc("model-b", "sentiment", PROMPTING_AHEAD))
    c = write_folder(tmp_path / "a-sent", results_doc("model-a", "sentiment", OVERLAP))
    out = scorecard.write([a, b, c], tmp_path / "docs" / "scorecard.md")
    text = out.read_text()
    assert text.index("## Model `model-a`") < text.index("## Model `model-b`")
    section_a = text[text.index("## Model `model-a`") : text.index("## Model `model-b`")]
    assert section_a.index("### sentiment") < section_a.index("### persona")  # sentiment, persona, safety, ab
    assert text.count("**Verdict:**") == 3 and text.count("**Steering:**") == 3
    assert "Steering loses on effect" in text[text.index("## Model `model-b`") :]
    assert f"steerlab scorecard {a} {b} {c} -o {out}" in text


# --------------------------------------------------------------------------------------------- commands


def test_the_compare_command_is_rebuilt_with_what_was_not_recorded_listed(tmp_path):
    doc = results_doc("some/model", "safety", OVERLAP)
    doc["config"]["lora_epochs"] = 1  # only the Python API sets this
    cmd = scorecard.compare_command(scorecard.read_run(write_folder(tmp_path / "s", doc)))
    assert not cmd.recorded
    assert cmd.text.startswith(
        "steerlab compare --task safety --data <safety data: path not recorded> --budget small"
    )
    assert "--methods baseline,prompting,mean_diff --data-sizes 4,8 --seeds 0 --model some/model" in cmd.text
    assert any("--data path is not recorded" in n for n in cmd.notes)
    assert any("lora_epochs=1" in n for n in cmd.notes)


def test_a_recorded_command_is_quoted_as_saved(tmp_path):
    doc = {
        **results_doc("m", "persona", OVERLAP),
        "command": ["steerlab", "compare", "--task", "persona", "--out", "r p"],
    }
    cmd = scorecard.compare_command(scorecard.read_run(write_folder(tmp_path / "p", doc)))
    assert cmd.recorded and cmd.text == "steerlab compare --task persona --out 'r p'" and not cmd.notes


# ---------------------------------------------------------------------------------------------- refusals


def test_folders_that_are_not_compare_folders_are_refused_clearly(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        scorecard.read_run(tmp_path / "nowhere")
    (tmp_path / "file.md").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        scorecard.read_run(tmp_path / "file.md")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    with pytest.raises(DataError, match="a `steerlab sweep` folder"):
        scorecard.read_run(tmp_path / "sweep")
    (tmp_path / "half" / "runs").mkdir(parents=True)
    with pytest.raises(DataError, match="--report-only"):
        scorecard.read_run(tmp_path / "half")
    write_folder(tmp_path / "other", {"cells": []})
    with pytest.raises(DataError, match="lacks task, config, main, model"):
        scorecard.read_run(tmp_path / "other")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        scorecard.read_run(tmp_path / "broken")
    ok = write_folder(tmp_path / "ok", results_doc("m", "persona", OVERLAP))
    with pytest.raises(DataError, match="given twice"):
        scorecard.read_runs([ok, tmp_path / "ok" / ".." / "ok"])


def test_the_command_writes_the_page_or_refuses_with_exit_code_2(tmp_path):
    runner = CliRunner()
    ok = write_folder(tmp_path / "ok", results_doc("m", "persona", OVERLAP))
    out = tmp_path / "card.md"
    result = runner.invoke(app, ["scorecard", str(ok), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "### persona" in out.read_text()
    bad = runner.invoke(app, ["scorecard", str(ok), str(tmp_path)])
    assert bad.exit_code == 2 and "is not a steerlab compare folder" in " ".join(bad.output.split())


def test_a_scorecard_from_real_compare_folders(tmp_path):
    """Two real (tiny-model) comparisons: folders written by arena.compare read back into the page."""
    import steerlab
    from steerlab.evaluate import arena, tasks
    from tiny_models import build, one_thread, tiny_arena_config

    budget = tasks.Budget(
        train=4, eval=2, heldout=2, calib=2, shots=1, max_new_tokens=2, scorer_train=8, scorer_test=4
    )
    with one_thread():
        model, tok = build("llama")
        tiny = steerlab.from_model(model, tok, model_id="tiny-llama")
        task = tasks.persona_task(tiny, None, budget, scorer="activation")
        for methods, folder in (
            (["baseline", "prompting", "mean_diff"], "one"),
            (["baseline", "pca_diff"], "two"),
        ):
            config = tiny_arena_config(budget, methods, efficiency_methods=["mean_diff"])
            arena.compare(tiny, task, tmp_path / folder, config)
    text = scorecard.build([tmp_path / "one", tmp_path / "two"])
    assert text.count("## Model `tiny-llama`") == 1 and text.count("### persona") == 2
    first = text[: text.index(f"Folder `{tmp_path / 'two'}`")]
    assert "| mean_diff | " in first and "| prompting | " in first
    assert "| pca_diff | — not run: not run in this comparison" in first
    assert "steerlab compare --task persona --budget <custom> --methods baseline,prompting,mean_diff" in first
    assert "n=2: " in first  # the data-efficiency job's effect, read back from runs/


# ----------------------------------------------------------------------------------------------- figures


def _visible_ticks(axis, low: float, high: float) -> list[float]:
    return [t for t in axis.get_majorticklocs() if low - 1e-12 <= t <= high + 1e-12]


def test_kl_axis_starts_at_zero_with_plain_non_negative_ticks():
    doc = results_doc("m", "sentiment", PROMPTING_AHEAD)
    fig = frontier_figure(doc, report.derive(doc))
    ax = fig.axes[0]
    fig.canvas.draw()
    low, high = ax.get_xlim()
    assert low == 0.0 and high > 0.1
    ticks = _visible_ticks(ax.xaxis, low, high)
    assert ticks and min(ticks) >= 0
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "0.01" in labels and not any("10^" in s or "−" in s or "-" in s for s in labels)


def test_data_efficiency_axis_counts_in_plain_numbers():
    doc = results_doc("m", "sentiment", PROMPTING_AHEAD)
    doc["efficiency"] = {
        f"e{n}{s}": {"method": "mean_diff", "n": n, "seed": s, "effect": 0.5 + 0.01 * n + 0.01 * s}
        for n in (4, 8, 16, 32)
        for s in (0, 1)
    }
    fig = efficiency_figure(doc, report.derive(doc))
    ax = fig.axes[0]
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "8", "16", "32"]
    assert list(ax.xaxis.get_minorticklocs()) == []
    assert any(line.get_linestyle() == "--" for line in ax.get_lines())  # the unadapted model


def test_effect_vs_strength_draws_intervals_and_the_baseline():
    doc = results_doc("m", "sentiment", PROMPTING_AHEAD)
    doc["main"]["mean_diff"]["calibration"]["rows"] = [
        {
            "key": "baseline",
            "layer_label": "3",
            "strength": 0.0,
            "effect": 0.4,
            "effect_low": 0.3,
            "effect_high": 0.5,
        },
        {
            "key": "3@0.1",
            "layer_label": "3",
            "strength": 0.1,
            "effect": 0.5,
            "effect_low": 0.42,
            "effect_high": 0.58,
        },
        {
            "key": "3@0.2",
            "layer_label": "3",
            "strength": 0.2,
            "effect": 0.7,
            "effect_low": 0.6,
            "effect_high": 0.8,
        },
    ]
    ax = effect_strength_figure(doc).axes[0]
    bars = ax.containers[0]
    segments = bars.lines[2][0].get_segments()  # vertical error bars, one per point
    assert [tuple(s[:, 1]) for s in segments[1:]] == [(0.42, 0.58), (0.6, 0.8)]
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 0.4 for line in ax.get_lines())


def test_sweep_heatmap_colours_diverge_around_the_unadapted_value_and_show_intervals():
    rows = [
        {
            "key": "baseline",
            "layer_label": "2",
            "strength": 0.0,
            "effect": 0.4,
            "effect_low": 0.3,
            "effect_high": 0.5,
            "kl": 0.0,
        }
    ]
    for layer, sign in (("2", 1), ("4", -1)):
        for s in (0.1, 0.2):
            e = 0.4 + sign * s
            rows.append(
                {
                    "key": f"{layer}@{s}",
                    "layer_label": layer,
                    "strength": s,
                    "effect": e,
                    "effect_low": e - 0.05,
                    "effect_high": e + 0.05,
                    "kl": s,
                }
            )
    fig = sweep_heatmap(rows, "effect")
    image = fig.axes[0].images[0]
    assert image.norm.vcenter == pytest.approx(0.4) and image.cmap.name == "RdBu_r"
    assert image.norm.vmin == pytest.approx(0.2) and image.norm.vmax == pytest.approx(0.6)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "0.6*\n[0.55, 0.65]" in texts
    assert "unadapted 0.4 [0.3, 0.5]" in fig.axes[1].get_ylabel()
    kl = sweep_heatmap(rows, "kl").axes[0].images[0]
    assert kl.norm.vmin == 0.0 and kl.cmap.name == "Reds"
    with pytest.raises(Exception, match="no sweep cells"):
        sweep_heatmap(rows[:1], "effect")


def test_the_conditional_row_says_what_it_gates_and_on_what():
    from steerlab.evaluate.report.findings import UsabilityEntry
    from steerlab.evaluate.report.verdicts import usability_of

    setting = {"layers": [6], "strength": 16.0, "base": "refusal", "condition": "safety-condition(layer 0)"}
    line = usability_of(UsabilityEntry("conditional", "steering", setting, 6, "6"))
    assert line == (
        "conditional: layers 6 and strength 16.0 chosen automatically (6 calibration cells), gating refusal "
        "by safety-condition(layer 0)"
    )
    assert "gating" not in usability_of(UsabilityEntry("mean_diff", "steering", {"strength": 1.0}, 3, "6"))
