"""The sweep / calibrate / compare commands on a tiny model (the model loader is swapped out)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import steerlab
from steerlab.cli import app
from steerlab.vector import SteeringVector
from tiny_models import HIDDEN, LAYERS, build, one_thread

runner = CliRunner()


@pytest.fixture()
def tiny_cli(monkeypatch, tmp_path):
    with one_thread():
        model, tok = build("llama")
        lm = steerlab.from_model(model, tok, model_id="tiny-llama")
        monkeypatch.setattr("steerlab.cli.eval_cmds.load_model", lambda model, quiet=False: lm)
        torch.manual_seed(0)
        vec = SteeringVector(
            {i: torch.randn(HIDDEN) for i in range(LAYERS)},
            model_id="tiny-llama",
            norms=dict.fromkeys(range(LAYERS), 1.0),
        )
        path = tmp_path / "v.safetensors"
        vec.save(path)
        yield path


def test_sweep_command_writes_table_heatmaps_and_resume_state(tiny_cli, tmp_path):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        str(tiny_cli),
        "--task",
        "none",
        "--layers",
        "1",
        "--strengths",
        "0.5,2",
        "--out",
        str(out),
        "--max-new-tokens",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    state = json.loads((out / "sweep.json").read_text())
    assert {c["key"] for c in state["cells"]} == {"baseline", "1@0.5", "1@2"}
    assert (out / "heatmap_kl.png").exists() and "| 1 | 2 |" in (out / "sweep.md").read_text()


def test_sweep_shows_a_counted_bar_on_a_terminal_and_quiet_hides_it(tiny_cli, tmp_path, monkeypatch):
    from rich.console import Console

    # the command's stderr console, as on a terminal (rich draws bars only there)
    monkeypatch.setattr("steerlab.cli.eval_cmds.err_console", Console(stderr=True, force_terminal=True))
    args = ["sweep", str(tiny_cli), "--task", "none", "--layers", "1", "--strengths", "0.5,2"]
    args += ["--max-new-tokens", "2"]
    terminal = CliRunner(env={"COLUMNS": "200"})
    shown = terminal.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert shown.exit_code == 0, shown.output
    assert "cell 1@2" in shown.output and "3/3" in shown.output and "eta" in shown.output
    quiet = terminal.invoke(app, [*args, "--out", str(tmp_path / "b"), "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert "cell 1@2" not in quiet.output and "eta" not in quiet.output
    assert "wrote" in quiet.output  # the results still print


def test_calibrate_without_a_task_is_a_clear_error(tiny_cli):
    result = runner.invoke(app, ["calibrate", str(tiny_cli), "--task", "none"])
    assert result.exit_code == 2
    assert "needs a task" in result.output


def test_compare_sentiment_without_data_is_a_clear_error(tiny_cli, tmp_path):
    result = runner.invoke(app, ["compare", "--task", "sentiment", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "--data" in result.output


def test_guess_task_from_data(tmp_path):
    from steerlab.cli.eval_cmds import guess_task

    ab = tmp_path / "ab.jsonl"
    ab.write_text(
        "\n".join(
            json.dumps(
                {
                    "question": f"q{i} (A) x (B) y",
                    "answer_matching_behavior": "(A)",
                    "answer_not_matching_behavior": "(B)",
                }
            )
            for i in range(3)
        )
    )
    labelled = tmp_path / "l.jsonl"
    labelled.write_text("\n".join(json.dumps({"text": f"t{i}", "label": i % 2}) for i in range(4)))
    folder = tmp_path / "refusal"
    folder.mkdir()
    for name in ("harmful_train.jsonl", "harmless_train.json"):
        (folder / name).write_text("[]")
    assert guess_task(ab) == "ab"
    assert guess_task(labelled) == "sentiment"
    assert guess_task(folder) == "safety"
    assert guess_task(None) == "persona"


# ------------------------------------------------------------------ options refused before expensive work
def _no_expensive_work(monkeypatch) -> None:
    """Building the task or measuring any baseline fails the test: the refusal must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("expensive work started before the options were checked")

    monkeypatch.setattr("steerlab.cli.eval_cmds._task", forbidden)
    monkeypatch.setattr("steerlab.evaluate.measure.next_token_logits", forbidden)
    monkeypatch.setattr("steerlab.evaluate.sweep.evaluate_cell", forbidden)


@pytest.mark.parametrize("command", ["sweep", "calibrate"])
def test_a_layer_past_the_last_block_fails_before_any_baseline(tiny_cli, tmp_path, monkeypatch, command):
    _no_expensive_work(monkeypatch)
    extra = ["--out", str(tmp_path / "s")] if command == "sweep" else []
    result = runner.invoke(app, [command, str(tiny_cli), "--task", "persona", "--layers", "40", *extra])
    assert result.exit_code == 2, result.output
    assert "out of range" in result.output and f"layers 0-{LAYERS - 1}" in result.output
    assert not (tmp_path / "s" / "sweep.json").exists()


def test_sweep_refuses_a_bad_strength_or_op_before_any_baseline(tiny_cli, tmp_path, monkeypatch):
    _no_expensive_work(monkeypatch)
    out = ["--out", str(tmp_path / "s"), "--task", "none", "--layers", "1"]
    bad_strength = runner.invoke(app, ["sweep", str(tiny_cli), *out, "--strengths", "0.5,lots"])
    assert bad_strength.exit_code == 2 and "lots" in bad_strength.output
    bad_op = runner.invoke(app, ["sweep", str(tiny_cli), *out, "--op", "multiply"])
    assert bad_op.exit_code == 2 and "multiply" in bad_op.output and "ablate" in bad_op.output


def test_compare_refuses_unknown_methods_listing_the_valid_ones_before_loading(tmp_path, monkeypatch):
    def no_model(model, quiet=False):
        raise AssertionError("the model was loaded before --methods was checked")

    monkeypatch.setattr("steerlab.cli.eval_cmds.load_model", no_model)
    result = runner.invoke(app, ["compare", "--methods", "baseline,caa", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "caa" in result.output
    for valid in ("baseline", "prompting", "mean_diff", "pca_center", "learned", "lora"):
        assert valid in result.output
    assert not (tmp_path / "r").exists()
    bad_sizes = runner.invoke(app, ["compare", "--data-sizes", "4,eight", "--out", str(tmp_path / "r")])
    assert bad_sizes.exit_code == 2 and "--data-sizes" in bad_sizes.output


def test_library_entry_points_check_before_the_baseline(tiny_cli, monkeypatch):
    from steerlab.errors import DataError, SteeringError
    from steerlab.evaluate import arena
    from steerlab.evaluate.sweep import SweepSpec, grid, run_sweep
    from steerlab.evaluate.tasks import Task

    lm = steerlab.cli.eval_cmds.load_model(None)
    monkeypatch.setattr(
        "steerlab.evaluate.measure.next_token_logits", lambda *a, **k: pytest.fail("baseline measured")
    )
    vec = SteeringVector.load(tiny_cli)
    with pytest.raises(SteeringError, match="out of range"):
        run_sweep(lm, SweepSpec(vec, neutral=["hi"]), grid(["1", "7"], [0.5]))
    task = Task("s", "safety", pairs=[], lora_examples=[], instruction="", shots=[])
    with pytest.raises(DataError, match=r"unknown method.*caa.*valid: baseline"):
        arena.compare(lm, task, "unused", arena.ArenaConfig(methods=["baseline", "caa"]))


def test_calibrate_refuses_to_overwrite_its_input_without_force(tiny_cli):
    result = runner.invoke(
        app, ["calibrate", str(tiny_cli), "--task", "sentiment", "-d", "x.jsonl", "--out", str(tiny_cli)]
    )
    assert result.exit_code != 0
    assert "--force" in result.output
