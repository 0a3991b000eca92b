"""The Ray executor against a local Ray started by the test (slow: Ray takes a while to boot)."""

from __future__ import annotations

import functools

import pytest
import torch

import tiny_models
from steerlab.evaluate.executors import InProcessExecutor, RayExecutor
from steerlab.evaluate.sweep import SweepSpec, grid, run_sweep
from steerlab.vector import SteeringVector

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'steerlab[ray]')")
pytestmark = pytest.mark.slow


def tiny_lm(seed: int = 0):
    import steerlab

    torch.set_num_threads(1)
    model, tok = tiny_models.build("llama", seed)
    return steerlab.from_model(model, tok, model_id="tiny-llama")


def test_ray_sweep_matches_in_process(tmp_path):
    ray.cloudpickle.register_pickle_by_value(tiny_models)
    ray.cloudpickle.register_pickle_by_value(__import__(__name__))
    lm = tiny_lm()
    torch.manual_seed(3)
    vec = SteeringVector({1: torch.randn(tiny_models.HIDDEN)}, model_id="tiny-llama", norms={1: 1.0})
    spec = SweepSpec(vec, None, neutral=["hello", "abc def"], fluency_prompts=["x"], max_new_tokens=2)
    cells = grid(["1"], [0.5, 2.0])
    local = run_sweep(lm, spec, cells, executor=InProcessExecutor(lm))
    executor = RayExecutor(
        functools.partial(tiny_lm, 0),
        workers=2,
        cpus_per_worker=0.5,
        init_options={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        seen = []
        remote = run_sweep(
            lm, spec, cells, executor=executor, state=tmp_path / "ray.json", progress=seen.append
        )
    finally:
        executor.close()
    assert [r["key"] for r in remote] == [r["key"] for r in local]
    for a, b in zip(local, remote, strict=True):
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-5, abs=1e-9)
    assert len(seen) == 3 and (tmp_path / "ray.json").exists()
    assert not ray.is_initialized()
