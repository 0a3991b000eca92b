"""One steering contract: the Python API, the HTTP schema, the CLI and export read every field alike.

The headline check: the server and the Python API give the same greedy text for the same request, for
vectors recording ``unit: raw`` and ``unit: norm``, with the strength given and omitted (an omitted
field means the vector's recorded default everywhere). Then the bounds and traps: layer ranges are
bounded before they are expanded, bools are not layers, ``K`` in ``from:K`` is bounded, a vector prints
in one short line, and ``save('x.gguf')`` refuses instead of writing safetensors under a GGUF name.
"""

from __future__ import annotations

import ast
import json
import time
import typing
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import steerlab
from steerlab.engine import spec
from steerlab.engine.spec import (
    FIELD_HELP,
    MAX_LAYER,
    MAX_POSITION,
    OPS,
    SITES,
    UNITS,
    Steering,
    format_positions,
    parse_layers,
    parse_positions,
)
from steerlab.errors import SteeringError, VectorError
from steerlab.vector import SteeringVector

SRC = Path(steerlab.__file__).resolve().parent
DEMO = SRC / "data" / "demo" / "happy_sad.json"
PROMPT = "Tell me about your weekend."
MAX_NEW = 12
LAYERS = [10, 11, 12]


def _toy(defaults: dict | None = None, site: str = "resid") -> SteeringVector:
    g = torch.Generator().manual_seed(5)
    return SteeringVector(
        {i: torch.randn(8, generator=g) for i in (1, 2, 3)},
        model_id="toy/m",
        site=site,
        norms={1: 2.0, 2: 3.0, 3: 4.0},
        defaults=defaults or {},
    )


# ------------------------------------------------------------------------ defined once, derived
def test_schema_literals_and_help_come_from_the_spec():
    from steerlab.server.schemas import SteeringSpec

    props = SteeringSpec.model_json_schema()["properties"]

    def enum(name: str) -> tuple:
        (choice,) = [a for a in props[name]["anyOf"] if "enum" in a]
        return tuple(choice["enum"])

    assert enum("op") == OPS and enum("unit") == UNITS and enum("site") == SITES
    for name in ("vector", "strength", "layers", "op", "positions", "unit", "site"):
        assert props[name]["description"] == FIELD_HELP[name], name
    # Omitted means "the vector's recorded default": None, never a value of the server's own.
    for name in ("strength", "layers", "op", "unit", "site"):
        assert SteeringSpec.model_fields[name].default is None, name
    assert SteeringSpec.model_fields["positions"].default == "all"


def test_sites_are_defined_once():
    import steerlab.models.anatomy as anatomy
    import steerlab.vector as vector

    assert spec.SITES is anatomy.SITES and vector.SITES is anatomy.SITES
    definitions = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id in ("SITES", "OPS", "UNITS", "POSITION_NAMES")
                for t in node.targets
            ):
                definitions.append(f"{path.relative_to(SRC)}:{node.targets[0].id}")
    assert sorted(definitions) == [
        "engine/spec.py:OPS",
        "engine/spec.py:POSITION_NAMES",
        "engine/spec.py:UNITS",
        "models/anatomy.py:SITES",
    ]


def test_cli_steering_options_take_their_choices_from_the_spec():
    from typer.testing import CliRunner

    from steerlab.cli import app

    runner = CliRunner(env={"COLUMNS": "200"})  # one line per message in rich's error box
    result = runner.invoke(app, ["generate", "hi", "--op", "melt"])
    assert result.exit_code == 2 and "add, ablate, clamp, scale" in result.output
    result = runner.invoke(app, ["export", "missing.safetensors", "out.gguf", "--unit", "percent"])
    assert result.exit_code == 2 and "norm, raw" in result.output
    # Bad layer/position syntax is refused before any model is loaded.
    started = time.perf_counter()
    result = runner.invoke(app, ["generate", "hi", "--model", "no/such-model", "--layers", "0-999999999999"])
    assert result.exit_code == 2 and "out of any model's range" in result.output
    result = runner.invoke(app, ["generate", "hi", "--model", "no/such-model", "--positions", "from5"])
    assert result.exit_code == 2 and "from:5" in result.output
    assert time.perf_counter() - started < 5


# ------------------------------------------------------------------------------ omitted fields
def test_omitted_fields_take_the_vectors_recorded_defaults():
    vec = _toy({"op": "clamp", "strength": 0.25, "unit": "raw", "layers": [2, 3], "site": "mlp"})
    s = Steering(vec)
    assert (s.op, s.unit, s.site, s.resolved_strength(), s.resolved_layers()) == (
        "clamp",
        "raw",
        "mlp",
        0.25,
        (2, 3),
    )
    given = Steering(vec, op="add", strength=1.0, unit="norm", layers=1, site="resid")
    assert (given.op, given.unit, given.site, given.resolved_strength(), given.resolved_layers()) == (
        "add",
        "norm",
        "resid",
        1.0,
        (1,),
    )
    # A recorded strength belongs to the recorded op: another op does not inherit it.
    assert Steering(vec, op="scale").resolved_strength() == 1.0
    with pytest.raises(SteeringError, match="needs a strength"):
        Steering(vec, op="add").resolved_strength()
    bare = Steering(_toy(site="attn"))
    assert (bare.op, bare.unit, bare.site, bare.resolved_layers()) == ("add", "norm", "attn", (1, 2, 3))


@pytest.mark.parametrize(
    ("defaults", "match"),
    [
        ({"strength": "abc"}, "recorded default 'strength'"),
        ({"strength": True}, "recorded default 'strength'"),
        ({"layers": "0-999999999999"}, "recorded default 'layers'"),
        ({"layers": {"a": 1}}, "recorded default 'layers'"),
        ({"op": "melt"}, "recorded default 'op'"),
        ({"unit": 3}, "recorded default 'unit'"),
        ({"site": "nowhere"}, "recorded default 'site'"),
    ],
)
def test_malformed_recorded_defaults_are_refused_when_the_steering_is_made(defaults, match):
    with pytest.raises(SteeringError, match=match):
        Steering(_toy(defaults), strength=1.0)
    # A scalar layer default is read with the same parser as a given one (not a crash on tuple(5)).
    assert Steering(_toy({"layers": 2}), strength=1.0).resolved_layers() == (2,)


# ----------------------------------------------------------------------------------- positions
@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("all", "all"),
        ("prompt", "prompt"),
        ("generated", "generated"),
        ("from:7", "from:7"),
        (7, "from:7"),
        ("7", "from:7"),
        (" FROM:0 ", "from:0"),
    ],
)
def test_one_position_syntax(value, canonical):
    assert format_positions(value) == canonical
    assert Steering(_toy(), strength=1.0, positions=value).positions == canonical


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("from5", "write 'from:5'"),
        ("from 5", "write 'from:5'"),
        (-1, "K >= 0"),
        ("from:-3", "K >= 0"),
        (10**20, f"K <= {MAX_POSITION}"),
        ("from:" + "9" * 30, f"K <= {MAX_POSITION}"),
        (True, "got True"),
        ("later", "'all', 'prompt', 'generated', 'from:K'"),
    ],
)
def test_bad_positions_are_refused_clearly(value, match):
    with pytest.raises(SteeringError, match=match):
        parse_positions(value)


# -------------------------------------------------------------------------------------- layers
@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("0-3000000", "out of any model's range"),
        ("0-999999999999", "out of any model's range"),
        (MAX_LAYER + 1, "out of any model's range"),
        ([0, 10**15], "out of any model's range"),
        (",".join([f"0-{MAX_LAYER}"] * 20), "names more than"),
        ("12-8", "runs backwards"),
        (True, "got True"),
        ([1, True], "got True"),
    ],
)
def test_layer_specs_are_bounded_before_they_are_expanded(value, match):
    started = time.perf_counter()
    with pytest.raises(SteeringError, match=match):
        parse_layers(value)
    assert time.perf_counter() - started < 0.5


# -------------------------------------------------------------------------------- vector traps
def test_a_vector_prints_in_one_short_line():
    vec = SteeringVector(
        {i: torch.randn(576) for i in range(30)},
        model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        method="mean_diff",
        norms={i: 100.0 + i for i in range(30)},
        defaults={"strength": 0.5, "unit": "raw"},
    )
    text = repr(vec)
    assert len(text) < 300 and "\n" not in text and str(vec) == text
    for part in ("mean_diff", "SmolLM2-135M", "site='resid'", "'0-29' (30)", "width=576", "100..129", "raw"):
        assert part in text, part


def test_save_writes_safetensors_only_and_names_the_gguf_export(tmp_path):
    vec = _toy()
    with pytest.raises(VectorError, match=r"export_gguf\(vector") as info:
        vec.save(tmp_path / "x.gguf")
    assert "steerlab export" in str(info.value)
    with pytest.raises(VectorError, match=r"writes '\.safetensors' files"):
        vec.save(tmp_path / "x.pt")
    with pytest.raises(VectorError, match=r"writes '\.safetensors' files"):
        vec.save(tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
    back = SteeringVector.load(vec.save(tmp_path / "x.safetensors"))
    assert torch.equal(back[2], vec[2])


# --------------------------------------------------------------------------------- over HTTP
fastapi = pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def contract_vectors(lm):
    """A real happy-vs-sad vector, and copies recording defaults in raw and norm units."""
    data = json.loads(DEMO.read_text())
    template = data["template"]
    pairs = [
        (
            f"{template.format(persona=data['positive'])} {s}",
            f"{template.format(persona=data['negative'])} {s}",
        )
        for s in data["suffixes"][:6]
    ]
    vec = steerlab.extract(lm, pairs, method="mean_diff", layers=LAYERS)
    return {
        "raw": replace(vec, defaults={"strength": 2.0, "unit": "raw", "layers": LAYERS}),
        "norm": replace(vec, defaults={"strength": 0.2, "unit": "norm", "layers": LAYERS}),
    }


@pytest.fixture(scope="module")
def http(lm, contract_vectors):
    from fastapi.testclient import TestClient

    from steerlab.server import ServerConfig, create_app

    app = create_app(lm, config=ServerConfig(max_tokens=32, allow_hosts=("*",)))
    for name, vec in contract_vectors.items():
        app.state.steerlab.registry.add(name, vec)
    with TestClient(app) as client:
        yield client


def _served(http, spec_: dict) -> str:
    response = http.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": MAX_NEW,
            "temperature": 0,
            "steering": [spec_],
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def _library(lm, steering: Steering) -> str:
    return lm.generate(PROMPT, row_steering=[steering], max_new_tokens=MAX_NEW)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["raw", "norm"])
@pytest.mark.parametrize("strength", [None, 1.5])
def test_server_and_python_give_the_same_greedy_text(lm, contract_vectors, http, name, strength):
    vec = contract_vectors[name]
    request = {"vector": name} if strength is None else {"vector": name, "strength": strength}
    expected = _library(lm, Steering(vec, strength=strength))
    assert _served(http, request) == expected
    # The request is sensitive to the unit: reading the omitted unit as the other one changes the text,
    # so an HTTP default that differs from the vector's recorded unit cannot pass this test.
    other = "norm" if name == "raw" else "raw"
    assert _library(lm, Steering(vec, strength=strength, unit=other)) != expected


@pytest.mark.slow
def test_http_refuses_bools_huge_layers_and_positions_before_the_model(http):
    def status(steering: dict) -> tuple[int, str]:
        response = http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 1, "steering": [steering]},
        )
        return response.status_code, response.text

    for bad in (
        {"vector": "raw", "layers": True},
        {"vector": "raw", "layers": [10, True]},
        {"vector": "raw", "positions": True},
        {"vector": "raw", "strength": True},
        {"vector": "raw", "positions": 10**20},
        {"vector": "raw", "layers": "0-999999999999"},
        {"vector": "raw", "layers": "0-3000000"},
        {"vector": "raw", "positions": "from5"},
    ):
        started = time.perf_counter()
        code, text = status(bad)
        assert code == 400, (bad, text)
        assert time.perf_counter() - started < 2, bad
    assert "from:5" in status({"vector": "raw", "positions": "from5"})[1]
    response = http.post("/v1/steering/projections", json={"vector": "raw", "text": "hi", "layer": True})
    assert response.status_code == 400, response.text
    response = http.post("/v1/steering/projections", json={"vector": "raw", "text": "hi", "layer": 11})
    assert response.status_code == 200, response.text


def test_the_spec_module_documents_every_recorded_field():
    doc = spec.__doc__ or ""
    for name in spec.RECORDED_FIELDS:
        assert f"\n{name} " in doc, name
    assert typing.get_args(spec.Positions) == (str, int)
