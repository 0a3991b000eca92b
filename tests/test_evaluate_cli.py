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
        monkeypatch.setattr("steerlab.cli.eval_cmds.load_model", lambda model: lm)
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
