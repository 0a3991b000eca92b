"""The CLI as a user meets it: help, info, inspect, generate, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from steerlab import SteeringVector
from steerlab.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "generate", "info", "inspect"):
        assert command in result.output


def test_info_prints_metadata(tmp_path):
    vec = SteeringVector(
        {3: torch.ones(8), 4: torch.ones(8)}, model_id="toy/m", method="mean_diff", norms={3: 2.0}
    )
    path = vec.save(tmp_path / "v.safetensors")
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "toy/m" in result.output and "mean_diff" in result.output and "3-4" in result.output


def test_info_refuses_bad_file_with_exit_2(tmp_path):
    bad = tmp_path / "v.safetensors"
    bad.write_bytes(b"garbage that is not a vector")
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 2
    assert "not a vector file" in result.output


@pytest.mark.slow
def test_inspect_and_generate_on_real_model(lm, happy_vector, tmp_path):
    result = runner.invoke(app, ["inspect"])
    assert result.exit_code == 0, result.output
    assert "576" in result.output and "model.layers" in result.output and "o_proj" in result.output
    path = happy_vector.save(tmp_path / "happy.safetensors")
    result = runner.invoke(
        app,
        [
            "generate",
            "Tell me about your day.",
            "-v",
            str(path),
            "-s",
            "0.08",
            "--layers",
            "10-16",
            "-n",
            "12",
            "--compare",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "unsteered:" in result.output and "steered:" in result.output
    wrong = SteeringVector({3: torch.ones(64)}, model_id="toy/m").save(tmp_path / "wrong.safetensors")
    result = runner.invoke(app, ["generate", "Hi", "-v", str(wrong), "-s", "0.1"])
    assert result.exit_code == 2 and "does not fit" in result.output


@pytest.mark.slow
def test_generate_options_not_given_take_the_vectors_recorded_defaults(lm, happy_vector, tmp_path):
    """The CLI reads an omitted option as Python and HTTP do: the vector's recorded default."""
    from dataclasses import replace

    from steerlab import Steering

    vec = replace(happy_vector, defaults={"strength": 2.0, "unit": "raw", "layers": [10, 11, 12]})
    path = vec.save(tmp_path / "raw-defaults.safetensors")
    prompt = "Tell me about your weekend."
    expected = lm.generate(prompt, steering=Steering(vec), max_new_tokens=8)
    assert expected != lm.generate(prompt, steering=Steering(vec, unit="norm"), max_new_tokens=8)
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["generate", prompt, "-v", str(path), "-n", "8"])
    assert result.exit_code == 0, result.output
    assert " ".join(expected.split()) in " ".join(result.output.split())
