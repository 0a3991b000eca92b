"""One request's steering as numbers a vLLM worker can apply, and its text encoding for ``extra_args``.

The steerlab side resolves everything (vector defaults, units, typical norms, position policies,
conditions) with the engine's own compiler (:func:`steerlab.engine.plan.compile_plan`), so a worker only
applies finished terms ``h' = h + delta + ((a - 1) * (h . u) + b) * u`` on the residual stream, masked by
position and, for a conditional steering, by whether its condition fired on the request's prompt. The
result travels as one string (base64) because vLLM's OpenAI server only passes ``vllm_xargs`` values
that are strings or numbers. It is a small fixed layout (a JSON header and float32 data), not pickle,
read with every size checked. The same string works in-process, across worker processes and on every
tensor/pipeline-parallel rank, and its hash is the request's prefix-cache salt.

Conditions travel as their leaves (direction, layer, threshold, comparison, skip) plus each rule as a
small tree over leaf numbers; the worker rebuilds real :class:`~steerlab.engine.condition.Condition` and
:class:`~steerlab.engine.condition.Rule` objects, so scoring and deciding are the torch engine's own code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from steerlab.engine.condition import Condition, ConditionLike, Rule
from steerlab.errors import SteeringError

if TYPE_CHECKING:
    from steerlab.engine.plan import Plan

#: The key under ``SamplingParams.extra_args`` (``vllm_xargs`` over HTTP) that carries a steering.
EXTRA_ARG = "steerlab"
#: Largest encoded steering accepted by a worker (checked before decoding).
MAX_ENCODED = 64 * 1024 * 1024
FORMAT = "steerlab-vllm/2"
SITE = "resid"
#: A rule tree in the header: a leaf number, or ``[kind, [parts...]]``.
Tree = int | list


@dataclass(frozen=True)
class WorkerTerm:
    """One edit at one layer for one request (a single row of a steerlab ``Term``)."""

    delta: torch.Tensor | None  # (W,)
    u: torch.Tensor | None  # (W,) unit direction
    a: float = 1.0
    b: float = 0.0
    kind: int = 0  # ops.OP_CODES; 0 = every position
    start: int = 0
    gate: int = -1  # index into RequestSteering.conditions; -1 = always applies


@dataclass(frozen=True)
class RequestSteering:
    """Everything one request's steering does: ordered terms per layer, for a model of ``width``.

    ``leaves`` are the single conditions read at prefill, ``conditions`` the rules (or leaves) that gate
    terms (``WorkerTerm.gate`` indexes them), ``reports`` the condition index of each conditional steering
    in the order the user gave them (what a "which fired" report lists).
    """

    width: int
    layers: dict[int, tuple[WorkerTerm, ...]]
    leaves: tuple[Condition, ...] = ()
    conditions: tuple[ConditionLike, ...] = ()
    reports: tuple[int, ...] = ()
    trees: tuple[Tree, ...] = field(default=(), repr=False)  # ``conditions`` as header trees


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
            kind = int(term.kind[0]) if term.kind is not None else 0
            start = int(term.start[0]) if term.start is not None else 0
            gate = int(term.gate[0]) if term.gate is not None else -1
            delta = None if term.delta is None else term.delta.reshape(-1).detach().float().cpu()
            u = None if term.u is None else term.u.reshape(-1).detach().float().cpu()
            a = 1.0 if term.a is None else float(term.a.reshape(-1)[0])
            b = 0.0 if term.b is None else float(term.b.reshape(-1)[0])
            width = (delta if delta is not None else u).shape[0]
            out.append(WorkerTerm(delta, u, a, b, kind, start, gate))
        layers[layer] = tuple(out)
    leaves = tuple(plan.leaves)
    trees = tuple(_tree(cond, leaves) for cond in plan.conditions)
    reports = tuple(plan.row_conditions[0]) if plan.row_conditions else ()
    return RequestSteering(width, layers, leaves, tuple(plan.conditions), reports, trees)


def _tree(cond: ConditionLike, leaves: tuple[Condition, ...]) -> Tree:
    if isinstance(cond, Condition):
        return next(i for i, leaf in enumerate(leaves) if leaf is cond)
    return [cond.kind, [_tree(part, leaves) for part in cond.parts]]


def encode(steering: RequestSteering) -> str:
    """The steering as one ASCII string, the same for equal steerings (so its hash can salt caches).

    Layout: 8 bytes of header length (little-endian), a JSON header (format, width, one record per term:
    layer, index, a, b, position kind, start, has delta, has u, gate; one record per condition leaf:
    layer, threshold, comparison, skip; the rule trees; the report order), then each term's float32
    vectors in order, then each leaf's direction.
    """
    record, blobs = [], []
    for layer, terms in sorted(steering.layers.items()):
        for i, term in enumerate(terms):
            record.append(
                [
                    layer, i, term.a, term.b, term.kind, term.start,
                    term.delta is not None, term.u is not None, term.gate,
                ]
            )  # fmt: skip
            blobs.extend(_bytes(t) for t in (term.delta, term.u) if t is not None)
    leaves = [[c.layer, c.threshold, c.comparison, c.skip] for c in steering.leaves]
    blobs.extend(_bytes(c.direction) for c in steering.leaves)
    header = {"format": FORMAT, "width": steering.width, "terms": record}
    if steering.leaves:
        header.update(leaves=leaves, conditions=list(steering.trees), reports=list(steering.reports))
    text = json.dumps(header, sort_keys=True).encode()
    raw = len(text).to_bytes(8, "little") + text + b"".join(blobs)
    return base64.b64encode(raw).decode("ascii")


def _bytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().float().cpu().numpy().astype("<f4").tobytes()


def decode(text: Any) -> RequestSteering:
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
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            got = header.get("format") if isinstance(header, dict) else header
            raise ValueError(f"unknown format {got!r}; expected {FORMAT}")
        width = int(header["width"])
        record = [_term_record(item) for item in header["terms"]]
        leaf_records = [_leaf_record(item) for item in header.get("leaves", [])]
        vectors = sum(int(r[6]) + int(r[7]) for r in record) + len(leaf_records)
        if width < 1 or len(raw) - 8 - size != vectors * width * 4:
            raise ValueError(
                f"{len(raw) - 8 - size} data bytes do not hold {vectors} vectors of width {width}"
            )
        trees = header.get("conditions", [])
        reports = [int(r) for r in header.get("reports", [])]
        if not isinstance(trees, list) or any(not 0 <= r < len(trees) for r in reports):
            raise ValueError("bad condition list or report order")
        if any(not -1 <= r[8] < len(trees) for r in record):
            raise ValueError("a term is gated by a condition that is not in the steering")
    except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error) as exc:
        raise SteeringError(f"cannot read the steerlab steering: {exc}") from None
    data = (
        torch.frombuffer(bytearray(raw[8 + size :]), dtype=torch.float32).view(-1, width) if vectors else None
    )
    layers: dict[int, list[WorkerTerm]] = {}
    n = 0
    for layer, _i, a, b, kind, start, has_delta, has_u, gate in record:
        delta = u = None
        if has_delta:
            delta, n = data[n], n + 1
        if has_u:
            u, n = data[n], n + 1
        layers.setdefault(layer, []).append(WorkerTerm(delta, u, a, b, kind, start, gate))
    leaves = []
    for layer, threshold, comparison, skip in leaf_records:
        # Condition checks the rest (finite, non-zero direction) and raises SteeringError itself
        leaves.append(Condition(data[n].clone(), layer, threshold, comparison, skip=skip))
        n += 1
    leaves_t = tuple(leaves)
    try:
        conditions = tuple(_rule(tree, leaves_t, 0) for tree in trees)
    except (ValueError, TypeError, IndexError) as exc:
        raise SteeringError(f"cannot read the steerlab steering's conditions: {exc}") from None
    return RequestSteering(
        width, {k: tuple(v) for k, v in layers.items()}, leaves_t, conditions, tuple(reports), tuple(trees)
    )


def _rule(tree: Any, leaves: tuple[Condition, ...], depth: int) -> ConditionLike:
    if depth > 32:
        raise ValueError("condition rules nest too deeply")
    if isinstance(tree, int) and not isinstance(tree, bool):
        if not 0 <= tree < len(leaves):
            raise ValueError(f"condition leaf {tree} is not in the steering")
        return leaves[tree]
    if not (isinstance(tree, list) and len(tree) == 2 and isinstance(tree[1], list)):
        raise ValueError(f"bad condition rule {tree!r}")
    return Rule(str(tree[0]), tuple(_rule(part, leaves, depth + 1) for part in tree[1]))


def _term_record(item: list) -> tuple[int, int, float, float, int, int, bool, bool, int]:
    layer, i, a, b, kind, start, has_delta, has_u, gate = item
    out = (
        int(layer), int(i), float(a), float(b), int(kind), int(start), bool(has_delta), bool(has_u), int(gate),
    )  # fmt: skip
    if out[0] < 0 or out[4] not in (0, 1, 2, 3) or not (math.isfinite(out[2]) and math.isfinite(out[3])):
        raise ValueError(f"bad term record {item!r}")
    return out


def _leaf_record(item: list) -> tuple[int, float, str, int]:
    layer, threshold, comparison, skip = item
    out = (int(layer), float(threshold), str(comparison), int(skip))
    if out[0] < 0 or out[3] < 0:
        raise ValueError(f"bad condition record {item!r}")
    return out


def steering_key(text: str) -> str:
    """A short content hash of an encoded steering: its worker cache key and prefix-cache salt."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]
