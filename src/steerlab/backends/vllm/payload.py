"""One request's steering as numbers a vLLM worker can apply, and its text encoding for ``extra_args``.

The steerlab side resolves everything (vector defaults, units, typical norms, position policies) with the
engine's own compiler (:func:`steerlab.engine.plan.compile_plan`), so a worker only applies finished
terms ``h' = h + delta + ((a - 1) * (h . u) + b) * u`` on the residual stream, masked by position. The
result travels as one string (base64) because vLLM's OpenAI server only passes
``vllm_xargs`` values that are strings or numbers. It is a small fixed layout (a JSON header and float32 data),
not pickle, read with every size checked. The same string works in-process, across worker
processes and on every tensor/pipeline-parallel rank, and its hash is the request's prefix-cache salt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass

import torch

from steerlab.engine.plan import Plan
from steerlab.errors import SteeringError

#: The key under ``SamplingParams.extra_args`` (``vllm_xargs`` over HTTP) that carries a steering.
EXTRA_ARG = "steerlab"
#: Largest encoded steering accepted by a worker (checked before decoding).
MAX_ENCODED = 64 * 1024 * 1024
FORMAT = "steerlab-vllm/1"
SITE = "resid"


@dataclass(frozen=True)
class WorkerTerm:
    """One edit at one layer for one request (a single row of a steerlab ``Term``)."""

    delta: torch.Tensor | None  # (W,)
    u: torch.Tensor | None  # (W,) unit direction
    a: float = 1.0
    b: float = 0.0
    kind: int = 0  # ops.OP_CODES; 0 = every position
    start: int = 0


@dataclass(frozen=True)
class RequestSteering:
    """Everything one request's steering does: ordered terms per layer, for a model of ``width``."""

    width: int
    layers: dict[int, tuple[WorkerTerm, ...]]


def from_plan(plan: Plan) -> RequestSteering:
    """Take the single row of a compiled plan; refuse sites this backend cannot reach."""
    if plan.rows != 1:
        raise SteeringError(f"one request's plan has one row, got {plan.rows}")
    layers: dict[int, tuple[WorkerTerm, ...]] = {}
    width = 0
    for (layer, site), terms in sorted(plan.terms.items()):
        if site != SITE:
            raise SteeringError(
                f"the vLLM backend steers the residual stream ('{SITE}') only; site '{site}' was asked for"
            )
        out = []
        for term in terms:
            if getattr(term, "gate", None) is not None:
                raise SteeringError(
                    "the vLLM backend cannot apply conditional steering yet (a condition decides per prompt); "
                    "use engine='torch' for it"
                )
            kind = int(term.kind[0]) if term.kind is not None else 0
            start = int(term.start[0]) if term.start is not None else 0
            delta = None if term.delta is None else term.delta.reshape(-1).detach().float().cpu()
            u = None if term.u is None else term.u.reshape(-1).detach().float().cpu()
            a = 1.0 if term.a is None else float(term.a.reshape(-1)[0])
            b = 0.0 if term.b is None else float(term.b.reshape(-1)[0])
            width = (delta if delta is not None else u).shape[0]
            out.append(WorkerTerm(delta, u, a, b, kind, start))
        layers[layer] = tuple(out)
    return RequestSteering(width, layers)


def encode(steering: RequestSteering) -> str:
    """The steering as one ASCII string, the same for equal steerings (so its hash can salt caches).

    Layout: 8 bytes of header length (little-endian), a JSON header (format, width, one record per term:
    layer, index, a, b, position kind, start, has delta, has u), then each term's float32 vectors in order.
    """
    record, blobs = [], []
    for layer, terms in sorted(steering.layers.items()):
        for i, term in enumerate(terms):
            record.append(
                [layer, i, term.a, term.b, term.kind, term.start, term.delta is not None, term.u is not None]
            )
            blobs.extend(
                t.contiguous().float().numpy().astype("<f4").tobytes()
                for t in (term.delta, term.u)
                if t is not None
            )
    header = json.dumps({"format": FORMAT, "width": steering.width, "terms": record}, sort_keys=True).encode()
    raw = len(header).to_bytes(8, "little") + header + b"".join(blobs)
    return base64.b64encode(raw).decode("ascii")


def decode(text: str) -> RequestSteering:
    """Read :func:`encode`'s string back; every size is checked before use, malformed input is a clear error."""
    if not isinstance(text, str) or len(text) > MAX_ENCODED:
        raise SteeringError(f"a steerlab steering must be a string of at most {MAX_ENCODED} characters")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        if len(raw) < 8:
            raise ValueError("too short")
        size = int.from_bytes(raw[:8], "little")
        if size > len(raw) - 8:
            raise ValueError("the header runs past the data")
        header = json.loads(raw[8 : 8 + size])
        if header.get("format") != FORMAT:
            raise ValueError(f"unknown format {header.get('format')!r}; expected {FORMAT}")
        width = int(header["width"])
        record = [_term_record(item) for item in header["terms"]]
        vectors = sum(int(has_delta) + int(has_u) for *_, has_delta, has_u in record)
        if width < 1 or len(raw) - 8 - size != vectors * width * 4:
            raise ValueError(
                f"{len(raw) - 8 - size} data bytes do not hold {vectors} vectors of width {width}"
            )
    except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error) as exc:
        raise SteeringError(f"cannot read the steerlab steering: {exc}") from None
    data = (
        torch.frombuffer(bytearray(raw[8 + size :]), dtype=torch.float32).view(-1, width) if vectors else None
    )
    layers: dict[int, list[WorkerTerm]] = {}
    n = 0
    for layer, _i, a, b, kind, start, has_delta, has_u in record:
        delta = u = None
        if has_delta:
            delta, n = data[n], n + 1
        if has_u:
            u, n = data[n], n + 1
        layers.setdefault(layer, []).append(WorkerTerm(delta, u, a, b, kind, start))
    return RequestSteering(width, {k: tuple(v) for k, v in layers.items()})


def _term_record(item: list) -> tuple[int, int, float, float, int, int, bool, bool]:
    layer, i, a, b, kind, start, has_delta, has_u = item
    out = (int(layer), int(i), float(a), float(b), int(kind), int(start), bool(has_delta), bool(has_u))
    if out[0] < 0 or out[4] not in (0, 1, 2, 3) or not (math.isfinite(out[2]) and math.isfinite(out[3])):
        raise ValueError(f"bad term record {item!r}")
    return out


def steering_key(text: str) -> str:
    """A short content hash of an encoded steering: its worker cache key and prefix-cache salt."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]
