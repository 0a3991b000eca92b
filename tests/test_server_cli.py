"""``steerlab serve``: its options exist and bad settings fail fast with exit code 2 (before loading a model)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from typer.testing import CliRunner

from steerlab.cli import app


def test_serve_help_lists_the_limits_and_binds_loopback_by_default():
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in (
        "--model",
        "--host",
        "--port",
        "--vectors",
        "--api-key",
        "--max-batch",
        "--max-tokens",
        "--queue-timeout",
        "--max-upload-mb",
        "--allow-origin",
        "--allow-host",
        "--ephemeral",
    ):
        assert option in result.output
    assert "127.0.0.1" in result.output


def test_missing_vectors_folder_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--vectors", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "not a folder" in result.output


def test_bad_limit_is_a_clear_error():
    result = CliRunner().invoke(app, ["serve", "--max-batch", "0"])
    assert result.exit_code == 2
    assert "max_batch" in result.output


def test_bad_allow_origin_is_a_clear_error():
    result = CliRunner().invoke(app, ["serve", "--allow-origin", "evil.example"])
    assert result.exit_code == 2
    assert "not an origin" in result.output
