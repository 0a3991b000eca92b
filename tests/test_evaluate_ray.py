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


def local_ray() -> RayExecutor:
    """Two actors on a one-CPU local Ray started here (and shut down by ``close``)."""
    return RayExecutor(
        functools.partial(tiny_lm, 0),
        workers=2,
        cpus_per_worker=0.5,
        init_options={"num_cpus": 1, "include_dashboard": False},
    )


def test_ray_sweep_matches_in_process(tmp_path):
    ray.cloudpickle.register_pickle_by_value(tiny_models)
    ray.cloudpickle.register_pickle_by_value(__import__(__name__))
    lm = tiny_lm()
    torch.manual_seed(3)
    vec = SteeringVector({1: torch.randn(tiny_models.HIDDEN)}, model_id="tiny-llama", norms={1: 1.0})
    spec = SweepSpec(vec, None, neutral=["hello", "abc def"], fluency_prompts=["x"], max_new_tokens=2)
    cells = grid(["1"], [0.5, 2.0])
    local = run_sweep(lm, spec, cells, executor=InProcessExecutor(lm))
    executor = local_ray()
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


def test_ray_runs_the_arena_like_in_process(tmp_path):
    """Arena jobs (build + measure one method) are independent Ray tasks; the results must equal an
    in-process run of the same comparison."""
    from steerlab.evaluate import arena, tasks
    from steerlab.evaluate.sweep import grid

    ray.cloudpickle.register_pickle_by_value(tiny_models)
    ray.cloudpickle.register_pickle_by_value(__import__(__name__))
    lm = tiny_lm()
    budget = tasks.Budget(
        train=4,
        eval=2,
        heldout=2,
        calib=2,
        shots=1,
        max_new_tokens=3,
        scorer_train=8,
        scorer_test=4,
        neutral=2,
    )
    task = tasks.persona_task(lm, None, budget, scorer="activation")
    config = dict(
        budget=budget,
        methods=["baseline", "prompting", "mean_diff"],
        data_sizes=[2],
        seeds=[0],
        efficiency_methods=["mean_diff"],
        compose=False,
        cells=grid(["1"], [0.5]),
        calib_tokens=3,
        throughput_prompts=1,
        throughput_tokens=2,
        neutral=["hello there", "abc"],
    )
    local = arena.compare(lm, task, tmp_path / "local", arena.ArenaConfig(**config))
    executor = local_ray()
    try:
        remote = arena.compare(lm, task, tmp_path / "ray", arena.ArenaConfig(**config), executor=executor)
    finally:
        executor.close()
    assert remote["executor"] == "ray" and local["executor"] != "ray"
    assert set(remote["main"]) == set(local["main"]) == {"baseline", "prompting", "mean_diff"}
    for name, result in local["main"].items():
        there = remote["main"][name]
        assert there["eval"]["per_example"] == pytest.approx(result["eval"]["per_example"], abs=1e-6), name
        assert there["kl"]["mean"] == pytest.approx(result["kl"]["mean"], rel=1e-5, abs=1e-9), name
    assert set(remote["efficiency"]) == set(local["efficiency"])
    assert (tmp_path / "ray" / "report.md").exists()
