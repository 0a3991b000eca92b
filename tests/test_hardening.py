"""Regression tests for the hardening issue: hostile vector files, browser attacks, persistence.

Each test pins one defect found by an outside attack pass on ``steerlab serve``:

* a tiny GGUF whose array claims 2**40 elements made the reader (and the upload route) grow without
  bound -- checked in a child process watched for memory and time, so a regression fails instead of
  exhausting the machine;
* safetensors / .svec headers whose claims the file cannot back are refused with the claim named;
* a keyless loopback server accepted cross-origin uploads and any ``Host`` (DNS rebinding);
* uploads and deletes were lost on restart; one unreadable file (or an empty folder) stopped the start;
* a vector's notes could be megabytes, repeated in every listing.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx

import steerlab
from steerlab.errors import VectorError
from steerlab.server import ServerConfig, ThreadedServer, create_app
from steerlab.vector import SteeringVector
from tiny_models import HIDDEN, LAYERS, build, one_thread

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
# The recipe from the report: one metadata array of UINT8 claiming 2**40 elements, 84 bytes in all.
GGUF_BOMB = (
    b"GGUF"
    + struct.pack("<IQQ", 3, 0, 1)
    + struct.pack("<Q", 4)
    + b"abcd"
    + struct.pack("<IIQ", 9, 0, 2**40)
    + b"x" * 32
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = build("llama")
    return steerlab.from_model(model, tokenizer, model_id="tiny-llama")


def vector(lm, seed: int = 0, **fields) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        directions={i: torch.randn(HIDDEN, generator=g) for i in range(LAYERS)},
        model_id=lm.model_id,
        method="random",
        **fields,
    )


# ------------------------------------------------------------------------------- bounded child runs
def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_bounded(code: str, *, timeout: float = 90.0, growth_mb: int = 800) -> dict:
    """Run ``code`` in a child Python; kill it if its RSS grows ``growth_mb`` past its start or time runs out.

    The child prints ``READY`` once its imports are done (the RSS baseline) and a JSON line as its result.
    """
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    baseline, peak, deadline = None, 0, time.monotonic() + timeout
    os.set_blocking(child.stdout.fileno(), False)
    out = ""

    def drain() -> str:
        try:
            return os.read(child.stdout.fileno(), 1 << 16).decode(errors="replace")
        except BlockingIOError:
            return ""

    try:
        while child.poll() is None:
            out += drain()
            rss = _rss_kb(child.pid)
            if baseline is None and "READY" in out:
                baseline = rss
            if baseline is not None:
                peak = max(peak, rss - baseline)
                if peak > growth_mb * 1024:
                    pytest.fail(
                        f"the child grew by {peak // 1024} MB (limit {growth_mb} MB): unbounded memory"
                    )
            if time.monotonic() > deadline:
                pytest.fail(f"the child did not finish within {timeout} s (a hang or an endless loop)")
            time.sleep(0.05)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    while chunk := drain():
        out += chunk
    err = child.stderr.read().decode(errors="replace")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert child.returncode == 0 and lines, (
        f"child failed (rc {child.returncode}): {out[-2000:]}\n{err[-3000:]}"
    )
    result = json.loads(lines[-1])
    result["peak_growth_mb"] = peak / 1024
    return result


LOAD_BOMB = """
import json, sys, time, tempfile, pathlib
from steerlab.errors import VectorError
from steerlab.vector import SteeringVector
path = pathlib.Path(tempfile.mkdtemp()) / "bomb.gguf"
path.write_bytes(bytes.fromhex(sys.argv[1] if len(sys.argv) > 1 else "%s"))
print("READY", flush=True)
t = time.monotonic()
try:
    SteeringVector.load(path)
    print(json.dumps({"error": None}))
except VectorError as exc:
    print(json.dumps({"error": "VectorError", "message": str(exc), "seconds": time.monotonic() - t}))
"""

UPLOAD_BOMB = """
import json, time
import steerlab
from starlette.testclient import TestClient
from steerlab.server import create_app
from tiny_models import build
model, tokenizer = build("llama")
app = create_app(steerlab.from_model(model, tokenizer, model_id="tiny-llama"))
bomb = bytes.fromhex("%s")
with TestClient(app) as client:
    print("READY", flush=True)
    t = time.monotonic()
    r = client.post("/v1/steering/vectors", files={"file": ("bomb.gguf", bomb)})
    print(json.dumps({"status": r.status_code, "body": r.json(), "seconds": time.monotonic() - t}))
"""


def test_gguf_array_bomb_is_refused_by_load_quickly_with_bounded_memory():
    result = run_bounded(LOAD_BOMB % GGUF_BOMB.hex())
    assert result["error"] == "VectorError", result
    assert str(2**40) in result["message"] and "84 bytes" in result["message"], result
    assert result["seconds"] < 2.0 and result["peak_growth_mb"] < 100, result


def test_gguf_array_bomb_upload_gets_a_4xx_quickly_with_bounded_memory():
    result = run_bounded(UPLOAD_BOMB % GGUF_BOMB.hex())
    assert 400 <= result["status"] < 500, result
    assert str(2**40) in result["body"]["error"]["message"], result
    assert result["seconds"] < 5.0 and result["peak_growth_mb"] < 200, result


def _gguf_header(*kv: bytes, tensors: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, len(kv)) + b"".join(kv)


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"GGUF" + struct.pack("<IQQ", 3, 2**50, 0) + b"\0" * 16, r"claims 1125899906842624 tensors"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40) + b"\0" * 16, r"claims 1099511627776 metadata"),
        (_gguf_header(struct.pack("<Q", 2**40) + b"k" * 16), r"metadata key .*claims 1099511627776 bytes"),
        (_gguf_header(_key("s") + struct.pack("<IQ", 8, 2**33) + b"x" * 8), r"value of 's'.*8589934592"),
        (_gguf_header(_key("a") + struct.pack("<IIQ", 9, 8, 2**20) + b"\0" * 16), r"array of 1048576"),
        (_gguf_header(_key("a") + struct.pack("<IIQ", 9, 6, 60000) + b"\0" * 16), r"240000 bytes"),
        (_gguf_header(_key("a") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 6 + b"\0" * 8), r"nests"),
        (
            _gguf_header(tensors=1) + _key("direction.1") + struct.pack("<IQQQQQIQ", 5, *[2] * 5, 0, 0),
            r"dimensions",
        ),
        (
            _gguf_header(tensors=1) + _key("direction.1") + struct.pack("<IQIQ", 1, 2**40, 0, 0) + b"\0" * 64,
            r"tensor 'direction.1' .*claims 4398046511104 bytes",
        ),
    ],
    ids=[
        "tensors",
        "kv",
        "key-len",
        "string-len",
        "array-len",
        "array-bytes",
        "nesting",
        "dims",
        "tensor-bytes",
    ],
)
def test_every_gguf_count_is_checked_against_the_file(tmp_path, data, match):
    from steerlab.interop.guards import check_gguf

    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(VectorError, match=match):
        check_gguf(path)
    with pytest.raises(VectorError):
        SteeringVector.load(path)


def test_real_vectors_pass_the_guards(tmp_path, tiny):
    from steerlab.interop.gguf_cvec import write_control_vector
    from steerlab.interop.guards import check_gguf

    directions = {i: torch.randn(HIDDEN).numpy() for i in range(1, LAYERS)}
    write_control_vector(tmp_path / "v.gguf", directions, "llama")
    check_gguf(tmp_path / "v.gguf")
    assert SteeringVector.load(tmp_path / "v.gguf").layers == [1, 2]
    vector(tiny).save(tmp_path / "v.safetensors")
    assert SteeringVector.load(tmp_path / "v.safetensors", tiny).layers == list(range(LAYERS))


def test_safetensors_header_claiming_more_than_the_file_is_refused(tmp_path):
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", 50 * 1024 * 1024) + b'{"__metadata__": {}}')
    with pytest.raises(VectorError, match=r"header claims 52428800 bytes but the file has 20"):
        SteeringVector.load(path)


def test_safetensors_tensors_claiming_more_bytes_than_the_file_are_refused(tmp_path):
    header = json.dumps(
        {"direction.0": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]}}
    ).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    with pytest.raises(VectorError, match=r"claims bytes 0\.\.1099511627776 .* holds 64 bytes"):
        SteeringVector.load(path)


def test_oversized_svec_is_refused_before_it_is_read(tmp_path):
    from steerlab.interop.guards import MAX_SVEC_BYTES

    path = tmp_path / "big.svec"
    with open(path, "wb") as fh:  # sparse: costs no disk
        fh.write(b'{"model_type": "llama", "directions": {')
        fh.truncate(MAX_SVEC_BYTES + 1)
    t = time.monotonic()
    with pytest.raises(VectorError, match=rf"{MAX_SVEC_BYTES + 1} bytes"):
        SteeringVector.load(path)
    assert time.monotonic() - t < 1.0


# ------------------------------------------------------------------------------- browser safety
@pytest.fixture(scope="module")
def served(tiny):
    app = create_app(tiny, config=ServerConfig(max_tokens=4, max_upload_bytes=64 * 1024))
    app.state.steerlab.registry.add("joy", vector(tiny))
    with ThreadedServer(app) as server:
        yield server, app.state.steerlab.registry


def upload_bytes(lm) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return vector(lm, 3).save(Path(folder) / "v.safetensors").read_bytes()


def test_cross_origin_upload_is_refused(served, tiny):
    server, registry = served
    before = registry.names()
    r = httpx.post(
        server.url + "/v1/steering/vectors",
        files={"file": ("evil.safetensors", upload_bytes(tiny))},
        headers={"Origin": "http://evil.example"},
        timeout=30,
    )
    assert r.status_code == 403, r.text
    assert "http://evil.example" in r.json()["error"]["message"]
    assert r.json()["error"]["code"] == "origin_not_allowed"
    assert registry.names() == before
    listing = httpx.get(server.url + "/v1/steering/vectors", headers={"Origin": "null"}, timeout=30)
    assert listing.status_code == 403


def test_same_origin_and_originless_requests_pass(served, tiny):
    server, registry = served
    own = httpx.post(
        server.url + "/v1/steering/vectors",
        files={"file": ("mine.safetensors", upload_bytes(tiny))},
        headers={"Origin": server.url},
        timeout=30,
    )
    assert own.status_code == 201, own.text
    registry.remove(own.json()["id"])
    local = f"http://localhost:{server.port}"
    listing = httpx.get(server.url + "/v1/steering/vectors", headers={"Origin": local}, timeout=30)
    assert listing.status_code == 200 and "access-control-allow-origin" not in listing.headers
    assert httpx.get(server.url + "/v1/steering/vectors", timeout=30).status_code == 200


def test_foreign_host_is_refused_and_loopback_names_pass(served):
    server, _ = served
    evil = httpx.get(server.url + "/v1/models", headers={"Host": f"evil.example:{server.port}"}, timeout=30)
    assert evil.status_code == 403
    assert evil.json()["error"]["code"] == "host_not_allowed" and "evil.example" in evil.text
    for name in ("localhost", "127.0.0.1", "[::1]"):
        ok = httpx.get(server.url + "/v1/models", headers={"Host": f"{name}:{server.port}"}, timeout=30)
        assert ok.status_code == 200, name


def test_allow_lists_are_configurable_and_give_cors_headers(tiny):
    config = ServerConfig(allow_origins=("http://ui.example:3000",), allow_hosts=("steer.lan",))
    with ThreadedServer(create_app(tiny, config=config)) as server:
        url = server.url + "/v1/models"
        ok = httpx.get(url, headers={"Origin": "http://ui.example:3000"}, timeout=30)
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://ui.example:3000"
        pre = httpx.options(
            url,
            headers={"Origin": "http://ui.example:3000", "Access-Control-Request-Method": "POST"},
            timeout=30,
        )
        assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
        assert httpx.get(url, headers={"Origin": "http://other.example"}, timeout=30).status_code == 403
        assert httpx.get(url, headers={"Host": "steer.lan:8000"}, timeout=30).status_code == 200
        assert httpx.get(url, headers={"Host": "other.lan"}, timeout=30).status_code == 403


def test_bad_allow_list_entries_are_refused():
    with pytest.raises(steerlab.errors.SteerlabError, match="not an origin"):
        ServerConfig(allow_origins=("evil.example",))
    with pytest.raises(steerlab.errors.SteerlabError, match="not a host name"):
        ServerConfig(allow_hosts=("http://x/",))


# ------------------------------------------------------------------------------- persistence
def _client(app):
    from starlette.testclient import TestClient

    return TestClient(app)


def test_upload_and_delete_persist_across_a_restart(tiny, tmp_path):
    vector(tiny, 1).save(tmp_path / "calm.safetensors")
    with _client(create_app(tiny, vectors_dir=tmp_path)) as client:
        up = client.post("/v1/steering/vectors", files={"file": ("Joy.safetensors", upload_bytes(tiny))})
        assert up.status_code == 201 and up.json()["id"] == "joy"
        assert client.delete("/v1/steering/vectors/calm").status_code == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joy.safetensors"]
    restarted = create_app(tiny, vectors_dir=tmp_path)
    entries = restarted.state.steerlab.registry.entries()
    assert [e.name for e in entries] == ["joy"]
    assert torch.equal(entries[0].item[0], vector(tiny, 3)[0])


def test_ephemeral_keeps_uploads_and_deletes_in_memory(tiny, tmp_path):
    vector(tiny, 1).save(tmp_path / "calm.safetensors")
    app = create_app(tiny, config=ServerConfig(ephemeral=True), vectors_dir=tmp_path)
    with _client(app) as client:
        assert client.post("/v1/steering/vectors", content=upload_bytes(tiny)).status_code == 201
        assert client.delete("/v1/steering/vectors/calm").status_code == 200
        assert [e["id"] for e in client.get("/v1/steering/vectors").json()["data"]] == ["vector"]
    assert [p.name for p in tmp_path.iterdir()] == ["calm.safetensors"]
    assert create_app(tiny, vectors_dir=tmp_path).state.steerlab.registry.names() == ["calm"]


def test_upload_never_overwrites_a_file_in_the_folder(tiny, tmp_path):
    (tmp_path / "joy.gguf").write_bytes(b"GGUF broken")
    app = create_app(tiny, vectors_dir=tmp_path)
    with _client(app) as client:
        up = client.post("/v1/steering/vectors", files={"file": ("joy.safetensors", upload_bytes(tiny))})
    assert up.json()["id"] == "joy-2"
    assert (tmp_path / "joy.gguf").read_bytes() == b"GGUF broken"


def test_unreadable_file_is_skipped_and_an_empty_folder_is_fine(tiny, tmp_path, caplog):
    assert create_app(tiny, vectors_dir=tmp_path).state.steerlab.registry.names() == []
    vector(tiny, 1).save(tmp_path / "calm.safetensors")
    (tmp_path / "broken.gguf").write_bytes(GGUF_BOMB)
    SteeringVector(directions={0: torch.randn(HIDDEN + 1)}).save(tmp_path / "wide.safetensors")
    with caplog.at_level("WARNING", logger="steerlab.server"):
        registry = create_app(tiny, vectors_dir=tmp_path).state.steerlab.registry
    assert registry.names() == ["calm"]
    assert sorted(name for name, _ in registry.skipped) == ["broken.gguf", "wide.safetensors"]
    assert "broken.gguf" in caplog.text and "wide.safetensors" in caplog.text


# ------------------------------------------------------------------------------- bounded notes
def test_huge_notes_are_refused_on_upload_and_clipped_in_listings(tiny, tmp_path):
    from steerlab.server.registry import MAX_NOTES

    big = vector(tiny, 5, notes="n" * 1_000_000).save(tmp_path / "big.safetensors").read_bytes()
    folder = tmp_path / "vectors"
    folder.mkdir()
    vector(tiny, 6, notes="m" * 100_000).save(folder / "local.safetensors")
    with _client(create_app(tiny, vectors_dir=folder)) as client:
        up = client.post("/v1/steering/vectors", files={"file": ("big.safetensors", big)})
        assert up.status_code == 400 and "notes are 1000000 characters" in up.json()["error"]["message"]
        listing = client.get("/v1/steering/vectors")
        assert len(listing.content) < 3 * MAX_NOTES
        notes = listing.json()["data"][0]["notes"]
        assert notes.startswith("m" * 100) and notes.endswith("[... truncated: 100000 characters in all]")
    long_label = vector(tiny, 7)
    long_label.method = "m" * 10_000
    with pytest.raises(VectorError, match="method is 10000 characters"):
        create_app(tiny).state.steerlab.registry.add("d", long_label)
