"""The README runs as written: every Python block, and every command of its command-line tour.

A newcomer copies the quickstart first; if it fails, nothing else in the README is believed. So the blocks
are taken from README.md itself (not a copy of them), run in a fresh temporary folder on the embedded
model, and the server example runs against a real ``steerlab serve``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
TOUR_MARK = "<!-- cli-tour -->"

pytestmark = pytest.mark.slow


def blocks(lang: str, text: str | None = None) -> list[str]:
    """Fenced code blocks of one language, in README order."""
    source = README.read_text() if text is None else text
    return [body for tag, body in FENCE.findall(source) if tag == lang]


def tour_commands() -> list[str]:
    """The shell block right after the tour marker, one command per line (comments and blanks dropped)."""
    text = README.read_text()
    assert TOUR_MARK in text, "README.md has no command-line tour block"
    block = blocks("bash", text.split(TOUR_MARK, 1)[1])[0]
    return [
        line.split("  #", 1)[0].strip()
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_python(code: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


class Serve:
    """``steerlab serve ...`` in the background until ``/health`` answers; stopped on exit."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.args, self.cwd = args, cwd
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Serve:
        port = _free_port()
        args = [*self.args, "--port", str(port)]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            args, cwd=self.cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("server did not come up within 180 s")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_the_readme_has_the_blocks_this_test_runs():
    python = blocks("python")
    assert any("steerlab.load()" in b for b in python), "no Python quickstart found"
    assert any("OpenAI(" in b for b in python), "no server example found"
    assert len(tour_commands()) >= 8


def test_python_quickstart_runs_as_written(tmp_path):
    quickstart = next(b for b in blocks("python") if "steerlab.load()" in b)
    result = _run_python(quickstart, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, "the quickstart printed nothing"
    saved = [p for p in tmp_path.iterdir() if p.suffix == ".safetensors"]
    assert saved, "the quickstart saves a vector"
    info = subprocess.run(
        ["steerlab", "info", str(saved[0])], cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert info.returncode == 0 and "mean_diff" in info.stdout


def test_server_example_runs_against_steerlab_serve(tmp_path, happy_vector):
    example = next(b for b in blocks("python") if "OpenAI(" in b)
    names = re.findall(r'"vector":\s*"(\w+)"', example)
    assert names, "the server example names a registry vector"
    vectors = tmp_path / "vectors"
    vectors.mkdir()
    for name in names:
        happy_vector.save(vectors / f"{name}.safetensors")
    match = re.search(r"http://127\.0\.0\.1:(\d+)", example)
    assert match, "the server example talks to a local server"
    with Serve(["steerlab", "serve", "--vectors", str(vectors)], tmp_path) as server:
        code = example.replace(match.group(0), server.url)
        result = _run_python(code, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "the server example printed no answer"


def test_every_command_of_the_cli_tour_runs(tmp_path):
    """Each line of the tour, in order, in one temporary folder (later lines use earlier lines' files)."""
    for command in tour_commands():
        argv = shlex.split(command)
        assert argv[0] == "steerlab", f"tour lines are steerlab commands: {command!r}"
        argv = [a.replace("src/steerlab/", str(ROOT / "src" / "steerlab") + "/") for a in argv]
        if argv[1] == "serve":
            with Serve(argv, tmp_path):
                pass
            continue
        result = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
