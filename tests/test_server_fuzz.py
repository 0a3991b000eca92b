"""Fuzzing the server and the vector-file readers, randomised per run (the seed is printed).

Three passes against a real uvicorn server on a tiny random model, each bounded in time:

1. **requests**: chat / completions / projections / registry calls built from the real vector names and
   the steering contract's own vocabulary, then perturbed (extreme numbers, wrong types, junk names,
   broken JSON), so the steering fields are exercised, not just refused at the schema;
2. **files**: structured mutations of real GGUF, safetensors and .svec vectors -- every count, length,
   type and offset field of the GGUF header, the safetensors header length and entries, the .svec JSON --
   plus truncation, extension and byte flips, sent to the upload route and to ``SteeringVector.load``;
3. **schema**: schemathesis cases from the OpenAPI schema (hypothesis, seeded from the same seed).

Every run prints: seed, requests tried, status counts, 5xx (must be 0), hangs (0) and peak RSS growth.
Reproduce a run with ``STEERLAB_FUZZ_SEED=<seed>``; ``STEERLAB_FUZZ_SECONDS`` scales the time budget.
"""

from __future__ import annotations

import json
import os
import random
import resource
import struct
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx

import steerlab
from steerlab.engine.spec import OPS, UNITS
from steerlab.errors import SteerlabError
from steerlab.models.anatomy import SITES
from steerlab.server import ServerConfig, ThreadedServer, create_app
from steerlab.vector import SteeringVector
from tiny_models import HIDDEN, LAYERS, build

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("STEERLAB_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
SCALE = float(os.environ.get("STEERLAB_FUZZ_SECONDS", "40")) / 40
REQUEST_SECONDS, FILE_SECONDS = 30 * SCALE, 25 * SCALE
HANG = 30.0  # seconds without an answer that count as a hang
MAX_RSS_GROWTH_MB = 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Tally:
    """What a pass tried and what came back; failures keep enough of the request to replay it."""

    def __init__(self, name: str) -> None:
        self.name, self.tried, self.codes, self.failures, self.hangs = name, 0, Counter(), [], 0

    def report(self, rss_growth: float) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.codes.items(), key=lambda kv: str(kv[0])))
        server_errors = sum(v for k, v in self.codes.items() if isinstance(k, int) and k >= 500)
        return (
            f"fuzz[{self.name}] seed={SEED} tried={self.tried} 5xx={server_errors} hangs={self.hangs} "
            f"failures={len(self.failures)} peak_rss_growth={rss_growth:.0f} MB codes={{{codes}}}"
        )


# ------------------------------------------------------------------------------------ the server
def _vectors(lm) -> dict[str, SteeringVector]:
    g = torch.Generator().manual_seed(7)

    def make(**fields: Any) -> SteeringVector:
        return SteeringVector(
            directions={i: torch.randn(HIDDEN, generator=g) for i in range(LAYERS)},
            model_id=lm.model_id,
            **fields,
        )

    return {
        "plain": make(),
        "normed": make(norms={i: 3.0 + i for i in range(LAYERS)}, method="mean_diff"),
        "calibrated": make(
            norms={i: 2.0 for i in range(LAYERS)}, defaults={"strength": 0.7, "layers": [1, 2]}
        ),
        "raw-clamp": make(defaults={"op": "clamp", "unit": "raw", "strength": 0.5}),
        "ablator": make(defaults={"op": "ablate"}, notes="removes a direction"),
        "single": SteeringVector(directions={1: torch.randn(HIDDEN, generator=g)}, model_id=lm.model_id),
    }


def say(request: pytest.FixtureRequest, *lines: str) -> None:
    """Print past pytest's capture, so CI logs show what the fuzzer tried even when the test passes."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines), flush=True)


@pytest.fixture(scope="module")
def fuzz_server(request):
    say(request, f"fuzz seed {SEED} (replay with STEERLAB_FUZZ_SEED={SEED})")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tokenizer = build("llama")
    lm = steerlab.from_model(model, tokenizer, model_id="tiny-llama")
    config = ServerConfig(
        max_tokens=4, default_max_tokens=4, max_body_bytes=256 * 1024, max_upload_bytes=256 * 1024
    )
    app = create_app(lm, config=config)
    vectors = _vectors(lm)
    for name, vector in vectors.items():
        app.state.steerlab.registry.add(name, vector)
    with ThreadedServer(app) as server:
        yield server, lm, vectors, app.state.steerlab.registry
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------ pass 1: requests
INTS = [
    0,
    1,
    2,
    3,
    -1,
    LAYERS - 1,
    LAYERS,
    2**31 - 1,
    2**31,
    2**53,
    2**63,
    2**64 - 1,
    2**64,
    10**20,
    -(2**63),
]
FLOATS = [0.0, 0.5, -0.5, 1.0, 2.0, 1e-300, 1e30, -1e30, 1e308, 5e-324, 3.4e38, 1e39]


class RequestFuzzer:
    """Random but meaningful requests: real names and contract words most of the time, junk sometimes."""

    def __init__(self, rng: random.Random, names: list[str]) -> None:
        self.rng, self.names = rng, names

    def pick(self, *options: Any) -> Any:
        return self.rng.choice(options)

    def junk(self, depth: int = 0) -> Any:
        r = self.rng
        kinds = ["int", "float", "str", "bool", "none"] + (["list", "dict"] if depth < 3 else [])
        kind = r.choice(kinds)
        if kind == "int":
            return r.choice(INTS) if r.random() < 0.7 else r.randint(-(10**6), 10**6)
        if kind == "float":
            return r.choice(FLOATS) * r.choice([1, -1])
        if kind == "str":
            return r.choice(
                ["", "all", "0-2", "1,2", "from:3", "\u00e9\u2603", "x" * r.randint(1, 300), "NaN"]
            )
        if kind == "bool":
            return r.random() < 0.5
        if kind == "list":
            return [self.junk(depth + 1) for _ in range(r.randint(0, 4))]
        if kind == "dict":
            return {
                r.choice(["a", "vector", "strength"]): self.junk(depth + 1) for _ in range(r.randint(0, 3))
            }
        return None

    def maybe(self, good: Any, p_junk: float = 0.15) -> Any:
        return self.junk() if self.rng.random() < p_junk else good

    def layers(self) -> Any:
        r = self.rng
        return r.choice(
            [
                r.randrange(LAYERS),
                [r.randrange(LAYERS) for _ in range(r.randint(1, 3))],
                f"{r.randrange(LAYERS)}-{r.randrange(LAYERS)}",
                ",".join(str(r.randrange(LAYERS)) for _ in range(2)),
                r.choice(
                    ["0-3000000", "0-999999999999", "-1", "2-1", "all", "", "1-", "0-2,5", True, [True]]
                ),
                r.choice(INTS),
            ]
        )

    def positions(self) -> Any:
        r = self.rng
        return r.choice(
            [
                r.choice(["all", "prompt", "generated"]),
                f"from:{r.choice([0, 1, 5, 2**31 - 1, 2**31, 10**20, -1])}",
                r.choice(INTS),
                r.choice(["from5", "from:", "3", " 2 ", "last", "from:1e3"]),
            ]
        )

    def steering_term(self) -> dict[str, Any]:
        r = self.rng
        term: dict[str, Any] = {"vector": self.maybe(r.choice(self.names), 0.1)}
        if r.random() < 0.1:
            term["vector"] = r.choice(["nope", "../etc/passwd", "PLAIN", ""])
        if r.random() < 0.7:
            term["strength"] = self.maybe(r.choice([*FLOATS, r.uniform(-3, 3)]))
        if r.random() < 0.5:
            term["layers"] = self.layers()
        if r.random() < 0.4:
            term["op"] = self.maybe(r.choice(OPS))
        if r.random() < 0.4:
            term["positions"] = self.positions()
        if r.random() < 0.3:
            term["unit"] = self.maybe(r.choice(UNITS))
        if r.random() < 0.2:
            term["site"] = self.maybe(r.choice(SITES))
        if r.random() < 0.05:
            term[r.choice(["extra", "strenght"])] = 1
        return term

    def sampling(self) -> dict[str, Any]:
        r = self.rng
        body: dict[str, Any] = {}
        if r.random() < 0.6:
            body["temperature"] = self.maybe(r.choice([0, 0.0, 0.7, 1.0, 2.0, 1e-9]))
        if r.random() < 0.3:
            body["top_p"] = self.maybe(r.choice([1.0, 0.5, 1e-9, 0.999]))
        if r.random() < 0.3:
            body["seed"] = self.maybe(r.choice([0, 1, 2**63 - 1, 2**64 - 1, -(2**63), r.randrange(2**32)]))
        if r.random() < 0.5:
            body["max_tokens"] = self.maybe(r.choice([1, 2, 4, 5, 0, -1, 10**9]))
        if r.random() < 0.2:
            body["stop"] = self.maybe(r.choice(["\n", ["a", "b"], "", ["x"] * 5]))
        if r.random() < 0.3:
            body["stream"] = r.random() < 0.8
            if r.random() < 0.5:
                body["stream_options"] = {"include_usage": r.random() < 0.5}
        if r.random() < 0.75:
            body["steering"] = [self.steering_term() for _ in range(r.choice([1, 1, 2, 3, 17]))]
        if r.random() < 0.05:
            body["model"] = r.choice(["tiny-llama", "steerlab", "gpt-4", ""])
        return body

    def request(self) -> tuple[str, str, dict[str, Any]]:
        """``(method, path, httpx kwargs)``."""
        r = self.rng
        kind = r.choices(["chat", "completion", "projection", "registry", "raw"], weights=[4, 4, 2, 1, 1])[0]
        if kind == "chat":
            body = {"messages": [{"role": "user", "content": self.maybe("Say something.", 0.05)}]}
            if r.random() < 0.1:
                body["messages"] = self.junk()
            return "POST", "/v1/chat/completions", {"json": {**body, **self.sampling()}}
        if kind == "completion":
            prompt = r.choice(["Once", ["a", "b"], ["x"] * r.randint(1, 40), "", self.junk()])
            body = {"prompt": prompt, **self.sampling()}
            if r.random() < 0.2:
                body["echo"] = True
            return "POST", "/v1/completions", {"json": body}
        if kind == "projection":
            body = {"vector": r.choice(self.names), "text": r.choice(["hello there", "", "x" * 500])}
            if r.random() < 0.5:
                body["layer"] = self.maybe(r.choice(INTS))
            if r.random() < 0.4:
                body["steering"] = [self.steering_term()]
            if r.random() < 0.3:
                body["prompt"] = "why?"
            return "POST", "/v1/steering/projections", {"json": body}
        if kind == "registry":
            name = r.choice([*self.names, "nope", "..", "%2e%2e", "a" * 300])
            return r.choice(
                [("GET", f"/v1/steering/vectors/{name}", {}), ("GET", "/v1/steering/vectors", {})]
            )
        raw = r.choice([b"{", b'{"prompt": ', b"\xff\xfe", json.dumps(self.junk()).encode(), b"[]" * 1000])
        path = r.choice(["/v1/completions", "/v1/chat/completions", "/v1/steering/projections"])
        return "POST", path, {"content": raw, "headers": {"content-type": "application/json"}}


def _send(client: httpx.Client, method: str, path: str, kwargs: dict[str, Any]) -> int:
    """Send one request, reading a streamed body to its end; the status (in-band stream errors allowed)."""
    with client.stream(method, path, **kwargs) as response:
        for _ in response.iter_bytes():
            pass
        return response.status_code


def test_random_requests_never_cause_a_server_error(fuzz_server, request):
    server, _, vectors, _ = fuzz_server
    rng = random.Random(SEED)
    fuzzer = RequestFuzzer(rng, list(vectors))
    tally = Tally("requests")
    start_rss, deadline = peak_rss_mb(), time.monotonic() + REQUEST_SECONDS
    with httpx.Client(base_url=server.url, timeout=HANG) as client:
        while time.monotonic() < deadline and tally.tried < 4000:
            method, path, kwargs = fuzzer.request()
            tally.tried += 1
            try:
                code = _send(client, method, path, kwargs)
            except httpx.TimeoutException:
                tally.hangs += 1
                tally.failures.append(f"HANG {method} {path} {str(kwargs)[:400]}")
                break
            tally.codes[code] += 1
            if code >= 500:
                tally.failures.append(f"{code} {method} {path} {str(kwargs)[:400]}")
        health = client.get("/health")
    say(request, tally.report(peak_rss_mb() - start_rss), *("  " + f for f in tally.failures[:20]))
    assert not tally.failures, f"seed {SEED}: {tally.failures[:5]}"
    assert health.status_code == 200
    assert sum(v for k, v in tally.codes.items() if k < 300) > tally.tried // 10, tally.codes
    assert peak_rss_mb() - start_rss < MAX_RSS_GROWTH_MB


# ------------------------------------------------------------------------------------ pass 2: files
def _gguf_base(path: Path) -> bytes:
    import gguf

    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_int32("controlvector.layer_count", 2)
    writer.add_uint32("test.u32", 7)
    writer.add_float32("test.f32", 0.5)
    writer.add_bool("test.flag", True)
    writer.add_array("test.ints", [1, 2, 3])
    writer.add_array("test.names", ["a", "bc"])
    g = torch.Generator().manual_seed(1)
    for layer in (1, 2):
        writer.add_tensor(f"direction.{layer}", torch.randn(HIDDEN, generator=g).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_fields(data: bytes) -> list[tuple[int, int]]:
    """``(offset, width)`` of every count, length, type, dimension and offset field in a GGUF header."""
    fields = [(4, 4), (8, 8), (16, 8)]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24

    def value(vtype: int) -> None:
        nonlocal pos
        if vtype in _SCALAR:
            pos += _SCALAR[vtype]
        elif vtype == 8:
            fields.append((pos, 8))
            pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        else:
            fields.extend([(pos, 4), (pos + 4, 8)])
            itype, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            for _ in range(n):
                value(itype)

    for _ in range(n_kv):
        fields.append((pos, 8))
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        fields.append((pos, 4))
        vtype = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        value(vtype)
    for _ in range(n_tensors):
        fields.append((pos, 8))
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        fields.append((pos, 4))
        n_dims = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        fields.extend((pos + 8 * i, 8) for i in range(n_dims))
        pos += 8 * n_dims
        fields.extend([(pos, 4), (pos + 4, 8)])
        pos += 12
    return fields


INTERESTING = [0, 1, 2, 3, 8, 9, 12, 30, 31, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1]


def _set_field(rng: random.Random, data: bytearray, offset: int, width: int) -> None:
    fmt = "<I" if width == 4 else "<Q"
    old = struct.unpack_from(fmt, data, offset)[0]
    new = rng.choice([*INTERESTING, old + 1, max(old - 1, 0), old * 2, rng.getrandbits(8 * width)])
    struct.pack_into(fmt, data, offset, new % (1 << (8 * width)))


def _generic(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    choice = rng.randrange(4)
    if choice == 0 and len(out) > 1:
        return bytes(out[: rng.randrange(1, len(out))])
    if choice == 1:
        return bytes(out) + rng.randbytes(rng.choice([1, 7, 64, 4096]))
    for _ in range(rng.randint(1, 8)):
        if out:
            out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def mutate_gguf(rng: random.Random, base: bytes, fields: list[tuple[int, int]]) -> bytes:
    data = bytearray(base)
    if rng.random() < 0.75:
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            _set_field(rng, data, *rng.choice(fields))
        return bytes(data)
    return _generic(rng, base)


def mutate_safetensors(rng: random.Random, base: bytes) -> bytes:
    (n,) = struct.unpack_from("<Q", base, 0)
    header, payload = json.loads(base[8 : 8 + n]), base[8 + n :]
    choice = rng.randrange(6)
    if choice == 0:
        return struct.pack("<Q", rng.choice([*INTERESTING, n + 1, n - 1])) + base[8:]
    if choice <= 3:
        name = rng.choice([k for k in header if k != "__metadata__"])
        entry = header[name]
        field = rng.choice(["dtype", "shape", "data_offsets"])
        entry[field] = rng.choice(
            [
                ["F32", "I64", "BOOL", "F8_E4M3", "Q4", None, 3][rng.randrange(7)],
                [rng.choice(INTERESTING)],
                [HIDDEN, rng.choice(INTERESTING)],
                [rng.choice(INTERESTING), rng.choice(INTERESTING)],
                [-1, 4],
                [[1]],
                [],
                "x",
            ]
        )
        if rng.random() < 0.3:
            header[rng.choice(["direction.9", "direction.-1", "other", "direction.99999999999"])] = dict(
                entry
            )
    elif choice == 4:
        meta = header.setdefault("__metadata__", {})
        record = json.loads(meta.get("steerlab", "{}"))
        key = rng.choice(
            ["notes", "defaults", "norms", "layer_convention", "hidden_size", "site", "model_id"]
        )
        record[key] = rng.choice(
            [
                "n" * rng.choice([10, 5000]),
                {"strength": "abc"},
                {"layers": 5},
                {"0": -1.0},
                {"0": "x"},
                None,
                2**70,
                "hf_hidden_states",
                [1],
                "tiny-llama",
            ]
        )
        meta["steerlab"] = json.dumps(record) if rng.random() < 0.9 else "{not json"
    else:
        return _generic(rng, base)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def mutate_svec(rng: random.Random, base: bytes) -> bytes:
    doc = json.loads(base)
    choice = rng.randrange(5)
    if choice == 0:
        key = rng.choice(list(doc["directions"]))
        doc["directions"][rng.choice(["-1", "99999", "1e3", "x", " 2", "٣"])] = doc["directions"].pop(key)
    elif choice == 1:
        key = rng.choice(list(doc["directions"]))
        doc["directions"][key] = rng.choice(
            [
                [],
                [1e308] * HIDDEN,
                ["a"] * HIDDEN,
                [[1.0]] * HIDDEN,
                [1.0] * (HIDDEN + 1),
                [True] * HIDDEN,
                {},
            ]
        )
    elif choice == 2:
        doc[rng.choice(["model_type", "directions", "explained_variances"])] = rng.choice(
            [None, 3, [], {}, "x"]
        )
    elif choice == 3:
        text = json.dumps(doc)
        return text.replace('"directions"', '"directions": {}, "directions"', 1).encode()
    else:
        return _generic(rng, base)
    return json.dumps(doc).encode()


def _base_files(lm, folder: Path) -> dict[str, bytes]:
    from steerlab.interop.svec import write_svec

    g = torch.Generator().manual_seed(3)
    vector = SteeringVector(
        directions={i: torch.randn(HIDDEN, generator=g) for i in range(LAYERS)},
        model_id=lm.model_id,
        norms={i: 2.0 for i in range(LAYERS)},
        defaults={"strength": 0.5},
        notes="base",
    )
    directions = {i: torch.randn(HIDDEN, generator=g).numpy() for i in range(LAYERS)}
    write_svec(folder / "v.svec", directions, "llama")
    return {
        "gguf": _gguf_base(folder / "v.gguf"),
        "safetensors": vector.save(folder / "v.safetensors").read_bytes(),
        "svec": (folder / "v.svec").read_bytes(),
    }


def _load_with_timeout(path: Path, lm) -> str:
    """``"ok"``, ``"refused"``, ``"hang"`` or ``"crash: <type>"`` for ``SteeringVector.load(path, lm)``."""
    result: list[str] = []

    def run() -> None:
        try:
            SteeringVector.load(path, lm)
            result.append("ok")
        except SteerlabError:
            result.append("refused")
        except Exception as exc:  # anything but a clear refusal is a bug
            result.append(f"crash: {type(exc).__name__}: {str(exc)[:200]}")

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG)
    return result[0] if result else "hang"


def test_mutated_vector_files_are_refused_cleanly(fuzz_server, request):
    server, lm, _, registry = fuzz_server
    rng = random.Random(SEED ^ 0x5EED)
    tally = Tally("files")
    start_rss = peak_rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        bases = _base_files(lm, Path(folder))
        fields = gguf_fields(bases["gguf"])
        mutators = {
            "gguf": lambda: mutate_gguf(rng, bases["gguf"], fields),
            "safetensors": lambda: mutate_safetensors(rng, bases["safetensors"]),
            "svec": lambda: mutate_svec(rng, bases["svec"]),
        }
        for kind, data in bases.items():  # the unmutated files must load
            (Path(folder) / f"base.{kind}").write_bytes(data)
            assert _load_with_timeout(Path(folder) / f"base.{kind}", lm) == "ok", kind
        target = Path(folder) / "case.bin"
        deadline = time.monotonic() + FILE_SECONDS
        with httpx.Client(base_url=server.url, timeout=HANG) as client:
            while time.monotonic() < deadline and tally.tried < 3000:
                kind = rng.choice(list(mutators))
                data = mutators[kind]()
                tally.tried += 1
                target.write_bytes(data)
                outcome = _load_with_timeout(target, lm)
                tally.codes[f"load:{outcome.split(':')[0]}"] += 1
                if outcome not in ("ok", "refused"):
                    tally.failures.append(f"load {kind} -> {outcome}: {data[:120].hex()}")
                    tally.hangs += outcome == "hang"
                    if outcome == "hang":
                        break
                try:
                    response = client.post("/v1/steering/vectors", files={"file": (f"case.{kind}", data)})
                except httpx.TimeoutException:
                    tally.hangs += 1
                    tally.failures.append(f"HANG upload {kind}: {data[:120].hex()}")
                    break
                tally.codes[response.status_code] += 1
                # The one allowed difference: a file the library loads whose record exceeds what the
                # server lists (notes, labels, defaults; docs/security.md) is refused by the upload route.
                server_limit = (
                    outcome == "ok" and response.status_code == 400 and "too large to serve" in response.text
                )
                tally.codes["upload:record-limit"] += server_limit
                if response.status_code >= 500 or (
                    (response.status_code == 201) != (outcome == "ok") and not server_limit
                ):
                    tally.failures.append(
                        f"upload {kind} -> {response.status_code} (load said {outcome}): "
                        f"{response.text[:200]} :: {data[:120].hex()}"
                    )
                if response.status_code == 201:
                    registry.remove(response.json()["id"])
    growth = peak_rss_mb() - start_rss
    say(request, tally.report(growth), *("  " + f for f in tally.failures[:20]))
    assert not tally.failures, f"seed {SEED}: {tally.failures[:5]}"
    assert tally.codes["load:refused"] > tally.tried // 4, tally.codes
    assert growth < MAX_RSS_GROWTH_MB


# ------------------------------------------------------------------------------------ pass 3: schema
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schema_generated_requests_never_cause_a_server_error(fuzz_server, mode, request):
    pytest.importorskip("schemathesis")
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    server = fuzz_server[0]
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    tally = Tally(f"schema-{mode}")
    for operation in operations:

        @hypothesis_seed(SEED)
        @settings(
            max_examples=max(5, int(15 * SCALE)),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=generation))
        def check(case):
            response = case.call(timeout=HANG)
            tally.tried += 1
            tally.codes[response.status_code] += 1
            label = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
            assert response.status_code < 500, label
            if response.status_code >= 400:
                assert set(response.json()["error"]) >= {"message", "type", "param", "code"}, label

        try:
            check()
        except Unsatisfiable:
            assert generation == GenerationMode.NEGATIVE  # GET /health has nothing to violate
    say(request, tally.report(0.0))
    assert tally.tried >= len(operations)
    if generation == GenerationMode.POSITIVE:
        assert sum(n for code, n in tally.codes.items() if code < 300) >= len(operations), tally.codes


def test_server_still_serves_after_fuzzing(fuzz_server):
    server = fuzz_server[0]
    health = httpx.get(server.url + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    out = httpx.post(
        server.url + "/v1/completions",
        json={
            "prompt": "still here",
            "max_tokens": 3,
            "temperature": 0,
            "steering": [{"vector": "calibrated"}],
        },
        timeout=30,
    )
    assert out.status_code == 200 and out.json()["choices"][0]["finish_reason"] in ("length", "stop")
