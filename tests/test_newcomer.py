"""The newcomer's path: progress on long commands, one strength story, peers' habits welcome."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import steerlab
from steerlab import Steering, SteeringVector
from steerlab.cli import app
from steerlab.cli.common import layer_warning, suggested_band
from steerlab.errors import SteeringError
from steerlab.progress import StageBar, Ticker, spinner, task_bar

# A terminal for rich (bars are only drawn on terminals); wide so lines are not wrapped.
TERMINAL = {"FORCE_COLOR": "1", "COLUMNS": "200"}


def _pairs_file(tmp_path, pairs) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"positive": p, "negative": n}) + "\n" for p, n in pairs))
    return str(path)


# ----------------------------------------------------------------------------------- progress
def _terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=160), buffer


def test_task_bar_draws_description_count_and_eta_on_a_terminal():
    console, buffer = _terminal()
    with task_bar("reading activations", 10, console=console) as ticker:
        ticker.advance(4)
        ticker.add_total(2)
    text = buffer.getvalue()
    assert "reading activations" in text and "4/12" in text and "eta" in text


def test_quiet_bar_and_spinner_draw_nothing():
    console, buffer = _terminal()
    with task_bar("reading activations", 10, quiet=True, console=console) as ticker:
        ticker.advance(3)  # a no-op, not an error
    with spinner("loading", quiet=True, console=console):
        pass
    assert buffer.getvalue() == ""
    assert Ticker().advance(1) is None


def test_stage_bar_counts_finished_units_per_stage_and_prints_every_message():
    console, buffer = _terminal()
    with StageBar(console=console) as say:
        say("[build] queued mean_diff")
        say("[build] mean_diff: finished (1/2, 3s into stage)")
        say("[build] caa: finished (2/2, 5s into stage)")
        say("cell 10@0.05 (1/3): effect=0.1")
    text = buffer.getvalue()
    assert "queued mean_diff" in text and "caa: finished" in text
    assert "2/2" in text  # the build stage's bar reached its total
    assert "1/3" in text  # cells count in their own bar


def test_stage_bar_grows_over_rounds_instead_of_restarting():
    console, buffer = _terminal()
    with StageBar(console=console) as say:
        for i in (1, 2):
            say(f"cell a{i} ({i}/2): kl=0.1")
        say("cell b1 (1/3): kl=0.1")  # a second sweep round
    assert "3/5" in buffer.getvalue()


def test_extract_shows_one_progress_bar_and_quiet_silences_it(lm, happy_pairs, tmp_path):
    data = _pairs_file(tmp_path, happy_pairs[:4])
    runner = CliRunner(env=TERMINAL)
    args = ["extract", data, "--layers", "10-12", "--out", str(tmp_path / "v.safetensors")]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert "reading activations" in shown.output
    assert "8/8" in shown.output  # one count over both sides: it never restarts at the negative side
    assert "Loading weights" not in shown.output
    quiet = runner.invoke(app, [*args, "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert "reading activations" not in quiet.output and "loading" not in quiet.output
    assert "saved" in quiet.output  # results still print


def test_library_extract_draws_no_bar_unless_asked(lm, happy_pairs, capsys):
    import steerlab

    steerlab.extract(lm, happy_pairs[:2], layers="10")
    captured = capsys.readouterr()
    assert "reading activations" not in captured.out + captured.err


# ------------------------------------------------------------------------------ strength story
def _vector(span=range(30), **defaults) -> SteeringVector:
    return SteeringVector({i: torch.ones(8) for i in span}, model_id="toy/m", defaults=defaults)


def test_missing_strength_error_suggests_a_realistic_norm_value_and_calibrate():
    with pytest.raises(SteeringError) as info:
        Steering(_vector()).resolved_strength()
    message = str(info.value)
    assert "strength=0.05" in message and "calibrate" in message and "0.5" not in message


def test_layer_warning_only_when_nothing_chose_a_band():
    assert "--layers 10-16" in layer_warning(Steering(_vector(), strength=0.5))
    assert layer_warning(Steering(_vector(), strength=0.5, layers="10-16")) is None
    assert layer_warning(Steering(_vector(layers=[12], strength=0.05))) is None  # calibrated
    assert layer_warning(Steering(_vector(range(4)), strength=0.5)) is None  # a few layers: fine
    assert layer_warning(Steering(_vector(), op="ablate")) is None  # ablation is meant for every layer
    assert suggested_band(30) == "10-16" and suggested_band(2) == "0-1"


def test_generate_without_layers_warns_and_calibrated_defaults_are_used(lm, happy_vector, tmp_path):
    plain = happy_vector.save(tmp_path / "plain.safetensors")
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(app, ["generate", "Hi.", "-v", str(plain), "-s", "0.05", "-n", "2"])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "--layers 10-16" in result.output
    calibrated = replace(happy_vector, defaults={"strength": 0.05, "layers": [10, 11, 12]})
    path = calibrated.save(tmp_path / "calibrated.safetensors")
    result = runner.invoke(app, ["generate", "Hi.", "-v", str(path), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


# ------------------------------------------------------------------------------- playground
HARNESS = Path(__file__).parent / "js" / "playground_harness.js"
APP_JS = Path(steerlab.__file__).parent / "server" / "static" / "app.js"


def test_playground_starts_from_the_vectors_calibration():
    """The page's own script, run in node over a fake DOM: calibrated band and strength, slider range."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    responses = {
        "/v1/models": {"data": [{"id": "m", "num_layers": 30}]},
        "/v1/steering/vectors": {
            "data": [
                {"id": "calib", "method": "mean_diff", "layers": [0, 1], "defaults": _CALIBRATED},
                {"id": "plain", "method": "mean_diff", "layers": [0, 1], "defaults": {}},
            ]
        },
    }
    run = subprocess.run(
        [node, str(HARNESS), str(APP_JS), json.dumps(responses)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["band"] == ["12", "14"]  # the calibrated layers, not a fixed 8-20
    assert out["sliders"]["calib"] == {"min": "-0.16", "max": "0.16", "step": "0.008", "value": "0.08"}
    assert out["sliders"]["plain"] == {"min": "-0.1", "max": "0.1", "step": "0.005", "value": "0"}
    # a calibrated vector with the band untouched: layers omitted, so the server uses the recorded ones
    assert out["calibrated"] == [{"vector": "calib", "strength": 0.08, "op": "", "positions": ""}]
    assert out["uncalibrated"][0]["layers"] == "12-14"
    assert out["touched"][0]["layers"] == "5-9"  # once the user sets the band, it is sent


_CALIBRATED = {"strength": 0.08, "layers": [12, 13, 14], "unit": "norm"}


# ------------------------------------------------------------------------------ peers' habits
@pytest.mark.parametrize(
    ("spec", "layers", "site"),
    [
        ("blocks.12.hook_resid_post", (12,), "resid"),
        ("blocks.13.hook_resid_pre", (12,), "resid"),  # the same tensor as block 12's output
        ("blocks.12.hook_attn_out", (12,), "attn"),
        ("blocks.12.hook_mlp_out", (12,), "mlp"),
        ("blocks.12.attn.hook_z", (12,), "head"),
        ("blocks.10.hook_resid_post, blocks.12.hook_resid_post", (10, 12), "resid"),
        (["blocks.3.hook_mlp_out", "blocks.4.hook_mlp_out"], (3, 4), "mlp"),
    ],
)
def test_transformerlens_hook_names_are_layer_and_site_specs(spec, layers, site):
    from steerlab.engine.hook_names import parse_hook_names
    from steerlab.engine.spec import parse_layers

    assert parse_layers(spec) == layers
    assert parse_hook_names(spec).site == site
    steering = Steering(_vector(range(20)), strength=0.05, layers=spec)
    assert (steering.resolved_layers(), steering.resolved_site) == (layers, site)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blocks.12.hook_resid_mid", "no steerlab site"),
        ("blocks.0.hook_resid_pre", "embedding output"),
        ("blocks.1.hook_attn_out,blocks.2.hook_mlp_out", "mix sites"),
        ("blocks.x.hook_resid_post", "no steerlab site"),
    ],
)
def test_unsupported_hook_names_are_refused_clearly(spec, message):
    from steerlab.engine.spec import parse_layers

    with pytest.raises(SteeringError, match=message):
        parse_layers(spec)


def test_hook_site_must_agree_with_an_explicit_site_and_site_takes_hook_suffixes():
    with pytest.raises(SteeringError, match="name site 'attn'"):
        Steering(_vector(range(20)), strength=1, layers="blocks.3.hook_attn_out", site="mlp")
    assert Steering(_vector(range(20)), strength=1, site="hook_mlp_out").resolved_site == "mlp"


def test_lm_steer_takes_raw_tensors_and_dicts_with_raw_unit(lm, happy_vector):
    prompt, n = "Tell me about your weekend.", 6
    direction = happy_vector[12]
    with lm.steer(happy_vector, strength=4.0, unit="raw", layers=12):
        expected = lm.generate(prompt, max_new_tokens=n)
    assert expected != lm.generate(prompt, max_new_tokens=n)
    with lm.steer(direction, strength=4.0, layers=12):  # a (width,) tensor: unit defaults to raw
        assert lm.generate(prompt, max_new_tokens=n) == expected
    with lm.steer({12: direction}, strength=4.0):
        assert lm.generate(prompt, max_new_tokens=n) == expected
    with lm.steer({"blocks.12.hook_resid_post": direction}, strength=4.0):
        assert lm.generate(prompt, max_new_tokens=n) == expected
    with lm.steer(direction, strength=0.05, unit="norm", layers=12):  # norm unit on request
        assert lm.generate(prompt, max_new_tokens=n) != expected


def test_lm_steer_refuses_bad_tensors_clearly(lm):
    with pytest.raises(SteeringError, match="needs layers="):
        lm.steer(torch.ones(lm.hidden_size), strength=1.0)
    with pytest.raises(SteeringError, match="1-D tensor"):
        lm.steer(torch.ones(2, lm.hidden_size), strength=1.0, layers=3)
    with pytest.raises(SteeringError, match="layer ints or hook names"):
        lm.steer({"twelve": torch.ones(lm.hidden_size)}, strength=1.0)


def test_demo_can_be_quiet():
    from typer.testing import CliRunner

    from steerlab.cli import app

    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0 and "--quiet" in result.output
