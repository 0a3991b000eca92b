"""Conditions on a tiny random model: the object and its file, the engine's per-row gating (exact where it
fires, untouched where not), rules, decisions carried to decode steps, the order check, find_condition,
the server and the CLI. The real-model checks with the refusal splits are in test_conditions_real.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

import steerlab
from steerlab import Condition, Steering, SteeringVector
from steerlab.engine import Rule
from steerlab.errors import DataError, SteeringError, VectorError
from steerlab.methods.condition import best_threshold, f1_accuracy, split
from tiny_models import HIDDEN, LAYERS, build

A_PROMPTS = [f"aaaa {w} aaaa" for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")]
Z_PROMPTS = [f"zzzz {w} zzzz" for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")]


@pytest.fixture(scope="module")
def tiny():
    model, tok = build("llama")
    return steerlab.from_model(model, tok, model_id="tiny-llama")


@pytest.fixture(scope="module")
def vector(tiny):
    g = torch.Generator().manual_seed(3)
    return SteeringVector(
        directions={i: torch.randn(HIDDEN, generator=g) for i in range(LAYERS)},
        model_id=tiny.model_id,
        norms={i: 4.0 for i in range(LAYERS)},
        method="random",
    )


def fixed(threshold: float, layer: int = 0, **kw) -> Condition:
    """A condition whose decision does not depend on the prompt: cos > -2 always, cos > 2 never."""
    return Condition(torch.ones(HIDDEN), layer=layer, threshold=threshold, model_id="tiny-llama", **kw)


ALWAYS, NEVER = -2.0, 2.0


@pytest.fixture(scope="module")
def a_vs_z(tiny):
    return steerlab.find_condition(tiny, A_PROMPTS, Z_PROMPTS, layers=[0, 1], holdout=0.5, chat=False)


# ------------------------------------------------------------------------------- the object and its file
def test_condition_refuses_bad_values():
    with pytest.raises(SteeringError, match="finite"):
        fixed(math.nan)
    with pytest.raises(SteeringError, match="finite"):
        fixed(math.inf)
    with pytest.raises(SteeringError, match="zeros"):
        Condition(torch.zeros(HIDDEN), layer=0, threshold=0.0)
    with pytest.raises(SteeringError, match="comparison"):
        fixed(0.0, comparison="above")
    with pytest.raises(SteeringError, match="layer"):
        fixed(0.0, layer=-1)
    with pytest.raises(SteeringError, match="exactly one"):
        Rule("not", (fixed(0.0), fixed(0.0)))
    with pytest.raises(SteeringError, match="Condition"):
        Steering(SteeringVector({0: torch.ones(HIDDEN)}), strength=1.0, condition="harmful")


def test_condition_file_round_trip_and_refusals(tiny, a_vs_z, tmp_path):
    path = a_vs_z.save(tmp_path / "c.safetensors")
    back = Condition.load(path, tiny)
    assert torch.equal(back.direction, a_vs_z.direction)
    assert (back.layer, back.threshold, back.comparison, back.model_id) == (
        a_vs_z.layer,
        a_vs_z.threshold,
        a_vs_z.comparison,
        "tiny-llama",
    )
    assert back.diagnostics["per_layer"] == json.loads(json.dumps(a_vs_z.diagnostics["per_layer"]))
    # another model, another width
    other = steerlab.from_model(*build("llama"), model_id="other-model")
    with pytest.raises(VectorError, match="other-model"):
        Condition.load(path, other)
    assert Condition.load(path, other, strict_model=False).layer == a_vs_z.layer
    wide = Condition(torch.ones(HIDDEN + 2), layer=0, threshold=0.0).save(tmp_path / "w.safetensors")
    with pytest.raises(VectorError, match="width"):
        Condition.load(wide, tiny)
    # a non-finite threshold written into a file is refused when read
    from steerlab.condition_io import write_condition

    record = {**a_vs_z.record(), "threshold": float("nan")}
    bad = write_condition(tmp_path / "nan.safetensors", a_vs_z.direction, record)
    with pytest.raises(VectorError, match="finite"):
        Condition.load(bad)
    # a vector file is not a condition
    vec_path = SteeringVector({0: torch.ones(HIDDEN)}, model_id="tiny-llama").save(tmp_path / "v.safetensors")
    with pytest.raises(VectorError, match="not a steerlab condition"):
        Condition.load(vec_path)


# ------------------------------------------------------------------------------------ the search math
def test_threshold_search_separates_and_reports():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.2, 0.0])
    labels = torch.tensor([True, True, True, False, False, False])
    choice = best_threshold(scores, labels)
    assert choice.comparison == "greater" and 0.2 < choice.threshold < 0.7 and choice.f1 == 1.0
    flipped = best_threshold(-scores, labels)
    assert flipped.comparison == "less" and flipped.f1 == 1.0
    assert f1_accuracy(torch.tensor([True, False]), torch.tensor([True, True])) == (2 / 3, 0.5)
    train, held = split([str(i) for i in range(10)], 0.3, 0)
    assert len(held) == 3 and sorted(train + held, key=int) == [str(i) for i in range(10)]


def test_find_condition_separates_and_records_every_layer(tiny, a_vs_z):
    assert a_vs_z.layer in (0, 1) and a_vs_z.model_id == "tiny-llama"
    assert [r["layer"] for r in a_vs_z.diagnostics["per_layer"]] == [0, 1]
    assert all(
        {"f1", "accuracy", "threshold", "comparison"} <= set(r) for r in a_vs_z.diagnostics["per_layer"]
    )
    fired_a = a_vs_z.matches(tiny, ["aaaa nine aaaa", "aaaa ten aaaa"], chat=False)
    fired_z = a_vs_z.matches(tiny, ["zzzz nine zzzz", "zzzz ten zzzz"], chat=False)
    assert fired_a == [True, True] and fired_z == [False, False]
    with pytest.raises(DataError, match="at least 4"):
        steerlab.find_condition(tiny, A_PROMPTS[:2], Z_PROMPTS)


# -------------------------------------------------------------------------------------- the engine
def _logits(lm, prompts, **steer):
    with lm.steer(**steer) if steer else torch.no_grad():
        return lm.logits(prompts)


def test_gating_is_exact_where_it_fires_and_absent_where_not(tiny, vector):
    prompts = ["hello there", "a b"]
    base = tiny.logits(prompts)
    with tiny.steer(vector, strength=0.5, layers=[1, 2]):
        steered = tiny.logits(prompts)
    with tiny.steer(vector, strength=0.5, layers=[1, 2], condition=fixed(ALWAYS)) as ctx:
        always = tiny.logits(prompts)
        assert ctx.fired_rows() == [[True], [True]]
    with tiny.steer(vector, strength=0.5, layers=[1, 2], condition=fixed(NEVER)) as ctx:
        never = tiny.logits(prompts)
        assert ctx.fired_rows() == [[False], [False]]
    assert not torch.equal(steered, base)
    assert torch.equal(always, steered) and torch.equal(never, base)
    assert torch.equal(tiny.logits(prompts), base)  # removed without a trace


def test_unconditional_plan_has_no_condition_machinery(tiny, vector):
    ctx = tiny.steer(vector, strength=0.5, layers=[1])
    assert ctx.plan.conditions == [] and ctx.plan.leaves == []
    assert all(t.gate is None for terms in ctx.plan.terms.values() for t in terms)
    assert not ctx.plan.needs_positions  # the bare add hook: nothing added to the hot path


def test_per_row_gating_and_rules(tiny, vector):
    prompts = ["hello there", "a b", "third row"]
    always, never = fixed(ALWAYS), fixed(NEVER)
    make = lambda cond: Steering(vector, strength=0.5, layers=(1,), condition=cond)  # noqa: E731
    with tiny.steer_rows([make(always & ~never), make(always & never), make(never | ~never)]) as ctx:
        mixed = tiny.logits(prompts)
        assert ctx.fired_rows() == [[True], [False], [True]]
    with tiny.steer(vector, strength=0.5, layers=[1]):
        steered = tiny.logits(prompts)
    base = tiny.logits(prompts)
    assert torch.equal(mixed[0], steered[0]) and torch.equal(mixed[2], steered[2])
    assert torch.equal(mixed[1], base[1])


def test_data_dependent_rows_behave_as_alone_in_generation(tiny, vector, a_vs_z):
    gated = Steering(vector, strength=0.8, layers=(1, 2), condition=a_vs_z)
    plain = Steering(vector, strength=0.8, layers=(1, 2))
    prompts = ["aaaa nine aaaa", "zzzz nine zzzz", "aaaa ten aaaa", "zzzz ten zzzz"]
    options = dict(max_new_tokens=6, chat=False)
    with tiny.steer(gated) as ctx:
        together = tiny.generate(prompts, **options)
        assert ctx.fired_rows() == [[True], [False], [True], [False]]
    alone = [tiny.generate(p, steering=gated, **options) for p in prompts]
    assert together == alone
    steered = tiny.generate(prompts, steering=plain, **options)
    unsteered = tiny.generate(prompts, **options)
    assert [together[0], together[2]] == [steered[0], steered[2]]
    assert [together[1], together[3]] == [unsteered[1], unsteered[3]]
    assert steered != unsteered  # the steering does change something


def test_decisions_given_for_decode_steps(tiny, vector):
    """steer_rows(fired=...) uses decisions made at an earlier prefill (the server's batches)."""
    cond = fixed(NEVER)  # would never fire if evaluated
    rows = [Steering(vector, strength=0.5, layers=(1,), condition=cond), None]
    with tiny.steer_rows(rows, fired=[[True], []]):
        given = tiny.logits(["hello there", "a b"])
    with tiny.steer_rows([Steering(vector, strength=0.5, layers=(1,)), None]):
        steered = tiny.logits(["hello there", "a b"])
    assert torch.equal(given, steered)
    with pytest.raises(SteeringError, match="decisions"):
        tiny.steer_rows(rows, fired=[[True, False], []])


def test_undecided_condition_in_a_decode_step_is_refused(tiny, vector):
    ids = torch.tensor([tiny.encode("hello there")])
    with torch.no_grad():
        out = tiny.model(input_ids=ids, use_cache=True)
        with (
            tiny.steer(vector, strength=0.5, layers=[1], condition=fixed(ALWAYS)),
            pytest.raises(SteeringError, match="not been decided"),
        ):
            tiny.model(input_ids=ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)


def test_condition_after_the_steered_layer_is_refused(tiny, vector):
    late = fixed(ALWAYS, layer=2)
    with pytest.raises(SteeringError, match="too late"):
        tiny.steer(vector, strength=0.5, layers=[1], condition=late)
    with pytest.raises(SteeringError, match="too late"):
        tiny.steer(vector, strength=0.5, layers=[2], site="attn", condition=late)
    tiny.steer(vector, strength=0.5, layers=[2], condition=late)  # same layer, residual: the hook runs first
    tiny.steer(vector, strength=0.5, layers=[1], positions="generated", condition=late)


def test_condition_for_another_model_is_refused(tiny, vector):
    foreign = Condition(torch.ones(HIDDEN), layer=0, threshold=0.0, model_id="someone-else")
    with pytest.raises(SteeringError, match="someone-else"):
        tiny.steer(vector, strength=0.5, layers=[1], condition=foreign)
    with pytest.raises(SteeringError, match="width"):
        tiny.steer(
            vector,
            strength=0.5,
            layers=[1],
            condition=Condition(torch.ones(HIDDEN + 1), layer=0, threshold=0),
        )
    with pytest.raises(SteeringError, match="out of range"):
        tiny.steer(vector, strength=0.5, layers=[LAYERS - 1], condition=fixed(ALWAYS, layer=LAYERS))


# -------------------------------------------------------------------------------------------- the CLI
def test_cli_reads_labelled_data(tmp_path):
    from steerlab.cli.condition_cmds import read_labelled

    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "x", "label": true}\n{"instruction": "y", "label": 0}\n\n')
    assert read_labelled(path) == (["x"], ["y"])
    path.write_text('{"prompt": "x", "label": "maybe"}\n')
    with pytest.raises(DataError, match="label"):
        read_labelled(path)


# ----------------------------------------------------------------------------------------- the server
def test_server_conditional_steering_matches_the_python_api(tiny, vector, a_vs_z, tmp_path):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from steerlab.server import ServerConfig, ThreadedServer, create_app

    app = create_app(tiny, config=ServerConfig(max_tokens=8))
    state = app.state.steerlab
    state.registry.add("v", vector)
    prompts = ["aaaa nine aaaa", "zzzz nine zzzz"]
    gated = Steering(vector, strength=0.8, layers=(1, 2), condition=a_vs_z)
    negated = Steering(vector, strength=0.8, layers=(1, 2), condition=~a_vs_z)
    expected = tiny.generate(prompts, steering=gated, chat=False, max_new_tokens=6)
    expected_not = tiny.generate(prompts, steering=negated, chat=False, max_new_tokens=6)
    with ThreadedServer(app) as server:

        def complete(condition):
            body = {
                "prompt": prompts,
                "max_tokens": 6,
                "temperature": 0,
                "steering": [{"vector": "v", "strength": 0.8, "layers": [1, 2], "condition": condition}],
            }
            return httpx.post(server.url + "/v1/completions", json=body, timeout=60)

        data = a_vs_z.save(tmp_path / "az.safetensors").read_bytes()
        up = httpx.post(
            server.url + "/v1/steering/conditions?name=az",
            content=data,
            headers={"content-type": "application/octet-stream"},
            timeout=60,
        )
        assert up.status_code == 201, up.text
        assert up.json()["id"] == "az" and up.json()["layer"] == a_vs_z.layer
        listed = httpx.get(server.url + "/v1/steering/conditions", timeout=60).json()["data"]
        assert [e["id"] for e in listed] == ["az"]

        body = complete("az").json()
        assert [c["text"] for c in body["choices"]] == expected
        assert [r["conditions"][0]["fired"] for r in body["steering_report"]] == [True, False]
        body = complete({"not": "az"}).json()
        assert [c["text"] for c in body["choices"]] == expected_not
        assert [r["conditions"][0]["fired"] for r in body["steering_report"]] == [False, True]

        streamed = httpx.post(
            server.url + "/v1/completions",
            json={
                "prompt": prompts,
                "max_tokens": 6,
                "temperature": 0,
                "stream": True,
                "steering": [{"vector": "v", "strength": 0.8, "layers": [1, 2], "condition": "az"}],
            },
            timeout=60,
        )
        chunks = [json.loads(line[5:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
        reports = {
            c["steering_report"][0]["index"]: c["steering_report"][0]
            for c in chunks
            if "steering_report" in c
        }
        assert {i: r["conditions"][0]["fired"] for i, r in reports.items()} == {0: True, 1: False}

        missing = complete("nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "condition_not_found"
        assert complete({"sometimes": ["az"]}).status_code == 400
        bad = httpx.post(
            server.url + "/v1/steering/conditions",
            content=b"not a file",
            headers={"content-type": "application/octet-stream"},
            timeout=60,
        )
        assert bad.status_code == 400
        plain = httpx.post(
            server.url + "/v1/completions",
            json={"prompt": prompts, "max_tokens": 2, "steering": [{"vector": "v", "strength": 0.8}]},
            timeout=60,
        ).json()
        assert "steering_report" not in plain  # unchanged shape without conditions


def test_engines_that_cannot_gate_refuse_a_condition(tiny, vector, tmp_path):
    from steerlab.bake import bake
    from steerlab.interop.export import baked_add

    gated = Steering(vector, strength=0.5, layers=(1,), condition=fixed(ALWAYS))
    with pytest.raises(SteeringError, match="condition"):
        baked_add([gated], lm=tiny)
    with pytest.raises(SteeringError, match="conditional"):
        bake(tiny, gated, tmp_path / "baked")


# ------------------------------------------------------------------------------------------ the arena
def test_arena_conditional_method_gates_the_calibrated_vector(tiny):
    from steerlab.data import ContrastPair
    from steerlab.evaluate.arena.build import build
    from steerlab.evaluate.arena.config import ArenaConfig, check_methods
    from steerlab.evaluate.tasks.task import Task

    assert check_methods(["conditional"]) == ["conditional"]
    pairs = [ContrastPair(a, z) for a, z in zip(A_PROMPTS, Z_PROMPTS, strict=True)]
    task = Task("safety", "safety", pairs=pairs, lora_examples=[], instruction="", shots=[])
    setting = {"layers": [1, 2], "strength": 0.5, "within_budget": True}
    adaptation, _ = build(tiny, task, "conditional", ArenaConfig(), setting=setting)
    (steering,) = adaptation.steering
    assert steering.condition is not None and steering.condition.layer <= 1
    assert steering.resolved_layers() == (1, 2) and steering.strength == 0.5
    assert "condition" in adaptation.settings
    sentiment = Task("sentiment", "sentiment", pairs=pairs, lora_examples=[], instruction="", shots=[])
    with pytest.raises(steerlab.SteerlabError, match="natural condition"):
        build(tiny, sentiment, "conditional", ArenaConfig(), setting=setting)


def test_registry_preloads_condition_files_beside_vectors(tiny, vector, a_vs_z, tmp_path):
    pytest.importorskip("fastapi")
    from steerlab.server.registry import VectorRegistry

    vector.save(tmp_path / "joy.safetensors")
    a_vs_z.save(tmp_path / "az.safetensors")
    Condition(torch.ones(HIDDEN + 1), layer=0, threshold=0.0).save(tmp_path / "wide.safetensors")
    registry = VectorRegistry(tiny)
    registry.preload(tmp_path, persist=False)
    assert registry.names() == ["joy"]
    assert [e.name for e in registry.conditions.entries()] == ["az"]
    assert [name for name, _ in registry.skipped] == ["wide.safetensors"]


def test_condition_uploads_and_deletes_persist_across_a_restart(tiny, vector, a_vs_z, tmp_path):
    """Conditions live in the same folder as vectors and persist the same way (no name clashes)."""
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from steerlab.server import create_app

    vector.save(tmp_path / "az.safetensors")  # a vector already holds the stem the upload suggests
    upload = tmp_path.parent / f"{tmp_path.name}-upload.safetensors"
    a_vs_z.save(upload)
    with TestClient(create_app(tiny, vectors_dir=tmp_path)) as client:
        up = client.post("/v1/steering/conditions", files={"file": ("az.safetensors", upload.read_bytes())})
        assert up.status_code == 201 and up.json()["id"] == "az-2"
        assert (tmp_path / "az-2.safetensors").is_file() and (tmp_path / "az.safetensors").is_file()
    restarted = create_app(tiny, vectors_dir=tmp_path)
    registry = restarted.state.steerlab.registry
    assert registry.names() == ["az"]
    (entry,) = registry.conditions.entries()
    assert entry.name == "az-2" and entry.source == "preload"
    assert torch.equal(entry.item.direction, a_vs_z.direction)
    with TestClient(restarted) as client:
        assert client.delete("/v1/steering/conditions/az-2").status_code == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["az.safetensors"]
    assert create_app(tiny, vectors_dir=tmp_path).state.steerlab.registry.conditions.entries() == []


def test_late_condition_with_generated_positions_matches_unconditional(tiny, vector):
    """A condition read after the steered layer is fine for positions='generated': decided at prefill,
    applied from the first generated token on, exactly like the unconditional steering."""
    options = dict(max_new_tokens=5, chat=False)
    prompts = ["hello there", "a b"]
    plain = Steering(vector, strength=0.8, layers=(1,), positions="generated")
    late = Steering(
        vector, strength=0.8, layers=(1,), positions="generated", condition=fixed(ALWAYS, layer=2)
    )
    off = Steering(vector, strength=0.8, layers=(1,), positions="generated", condition=fixed(NEVER, layer=2))
    assert tiny.generate(prompts, steering=late, **options) == tiny.generate(
        prompts, steering=plain, **options
    )
    assert tiny.generate(prompts, steering=off, **options) == tiny.generate(prompts, **options)
    assert tiny.generate(prompts, steering=plain, **options) != tiny.generate(prompts, **options)
