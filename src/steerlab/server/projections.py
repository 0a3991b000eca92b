"""Per-token projections of a text's activations on a steering direction (the playground's colouring).

The activations come from the one reader (:func:`steerlab.reader.read`), optionally under a steering, and
each token's value is ``h . u`` for the unit direction ``u`` at the chosen layer. Returning the typical
residual norm alongside lets a client put the values on a comparable scale.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from steerlab.decode import REPLACEMENT
from steerlab.engine import Steering
from steerlab.engine.spec import recorded_defaults
from steerlab.errors import DataError, VectorError
from steerlab.reader import read
from steerlab.vector import SteeringVector


def default_layer(vector: SteeringVector) -> int:
    """The middle of the vector's default (else all) layers: where a concept is usually most readable."""
    layers = list(recorded_defaults(vector).layers or vector.layers)
    return int(layers[len(layers) // 2])


def token_pieces(decode: Any, ids: list[int]) -> list[str]:
    """Text of each token such that the pieces concatenate to ``decode(ids)`` (multi-byte safe)."""
    pieces, before = [], ""
    for i in range(len(ids)):
        now = decode(ids[: i + 1])
        if i < len(ids) - 1:  # a character split over tokens belongs to the token that completes it
            now = now.rstrip(REPLACEMENT)
        if now.startswith(before):
            pieces.append(now[len(before) :])
            before = now
        else:
            pieces.append("")
    return pieces


def token_projections(
    lm: Any,
    vector: SteeringVector,
    text: str,
    *,
    prompt: str | None = None,
    chat: bool = True,
    layer: int | None = None,
    steering: list[Steering] | None = None,
    max_tokens: int = 4096,
) -> dict[str, Any]:
    """Projection of every token of ``text`` (read after ``prompt``) on ``vector`` at ``layer``."""
    layer = default_layer(vector) if layer is None else layer
    lm.anatomy.check_layer(layer)
    if layer not in vector.directions and len(vector.directions) != 1:
        raise VectorError(f"the vector has no direction at layer {layer}; it has layers {vector.layers}")
    unit = vector.unit(layer) if layer in vector.directions else vector.unit(vector.layers[0])
    prefix = (lm.chat(prompt) if chat else prompt) if prompt is not None else ""
    full = prefix + text
    if not full:
        raise DataError("nothing to read: text and prompt are both empty")
    ids = lm.encode(full)
    if len(ids) > max_tokens:
        raise DataError(f"the text has {len(ids)} tokens; at most {max_tokens} can be read")
    start = 0
    if prefix:
        head = lm.encode(prefix)
        while start < min(len(head), len(ids)) and head[start] == ids[start]:
            start += 1
    steer = lm.steer(steering) if steering else contextlib.nullcontext()
    with steer, torch.no_grad():
        acts = read(lm, [full], [layer], site=vector.site, position=tuple(range(len(ids))), batch_size=1)
    values = (acts.acts[layer][0] @ unit.to(acts.acts[layer].dtype)).tolist()
    pieces = token_pieces(lambda x: lm.tokenizer.decode(x, skip_special_tokens=True), ids[start:])
    norm = vector.norms.get(layer) or lm.typical_norms(vector.site).get(layer)
    return {
        "object": "steering.projections",
        "layer": layer,
        "site": vector.site,
        "norm": float(norm) if norm else None,
        "prompt_tokens": start,
        "tokens": [
            {"text": p, "projection": round(float(v), 5)} for p, v in zip(pieces, values[start:], strict=True)
        ],
    }
