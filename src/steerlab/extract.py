"""``extract``: contrast data in, :class:`SteeringVector` out, through the one reader.

Methods that only need class means (``mean_diff``) stream: activations are summed batch by batch and
never held all at once. The others receive the full ``(n, W)`` activations per layer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from steerlab.data.chat import pair_texts
from steerlab.data.formats import ContrastPair
from steerlab.errors import DataError
from steerlab.methods import RunningMeanDiff
from steerlab.reader import NormMeter, iter_read
from steerlab.vector import SteeringVector

if TYPE_CHECKING:
    from steerlab.lm import LM

# name -> function(pos (n, W), neg (n, W)) -> (direction (W,), diagnostics dict)
PairMethod = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def pair_methods() -> dict[str, PairMethod]:
    """Methods that turn per-layer positive/negative activations into a direction."""
    from steerlab.methods import mean_diff

    methods: dict[str, PairMethod] = {"mean_diff": mean_diff}
    try:
        from steerlab.methods import PAIR_METHODS  # type: ignore[attr-defined]

        methods.update(PAIR_METHODS)
    except ImportError:
        pass
    return methods


def texts_hash(positive: Sequence[str], negative: Sequence[str]) -> str:
    """Stable hash of exactly the strings read, so a vector names the data it came from."""
    blob = json.dumps([list(positive), list(negative)], ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _as_pair(i: int, item: Any) -> ContrastPair:
    if isinstance(item, ContrastPair):
        pair = item
    elif isinstance(item, dict):
        pair = ContrastPair(item.get("positive"), item.get("negative"), item.get("prompt"))
    elif isinstance(item, tuple | list) and len(item) == 2:
        pair = ContrastPair(item[0], item[1])
    else:
        raise DataError(
            f"pair {i}: expected (positive, negative), a dict or a ContrastPair, got {type(item).__name__}"
        )
    if (
        not isinstance(pair.positive, str)
        or not isinstance(pair.negative, str)
        or not pair.positive
        or not pair.negative
    ):
        raise DataError(f"pair {i}: expected non-empty 'positive' and 'negative' strings, got {item!r}"[:200])
    return pair


def contrast_texts(lm: LM, data: Any, *, chat: bool = True) -> tuple[list[str], list[str]]:
    """The exact positive/negative strings to read: pairs go through the one chat formatter."""
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(x, list | tuple) for x in data):
        positive, negative = list(data[0]), list(data[1])
    else:
        pairs = [_as_pair(i, item) for i, item in enumerate(data)]
        positive, negative = pair_texts(pairs, lm.tokenizer if chat else None, chat=chat)
    if len(positive) < 2 or len(negative) < 2:
        raise DataError(
            f"need at least 2 examples per side, got {len(positive)} positive and {len(negative)} negative"
        )
    return positive, negative


def extract(
    lm: LM,
    data: Any,
    method: str = "mean_diff",
    *,
    layers: Any = None,
    site: str = "resid",
    position: Any = "last",
    chat: bool = True,
    batch_size: int = 32,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    notes: str = "",
) -> SteeringVector:
    """Extract a steering vector from contrast data.

    ``data`` holds pairs whose positive side shows the behaviour to steer towards. ``layers`` defaults
    to every block. ``position`` picks the token(s) read ('last', 'mean', an index). With ``chat`` the
    texts are wrapped in the model's chat template as user turns (or, for pairs with a ``prompt``, as
    assistant continuations).
    """
    from steerlab.engine.spec import parse_layers

    methods = pair_methods()
    if method not in methods:
        raise DataError(f"unknown method '{method}'; available: {', '.join(sorted(methods))}")
    chosen = list(range(lm.num_layers)) if layers is None else list(parse_layers(layers))
    for layer in chosen:
        lm.anatomy.check_layer(layer)
    positive, negative = contrast_texts(lm, data, chat=chat)
    meter = NormMeter()
    options = dict(
        site=site, position=position, batch_size=batch_size, norms=meter, progress=progress, dtype=dtype
    )
    directions: dict[int, torch.Tensor] = {}
    diagnostics: dict[int, dict[str, float]] = {}
    if method == "mean_diff":
        running = RunningMeanDiff()
        for side, texts in enumerate((positive, negative)):
            for batch in iter_read(lm, texts, chosen, **options):
                for layer, acts in batch.acts.items():
                    running.update(side, layer, acts.reshape(-1, acts.shape[-1]))
        for layer in chosen:
            directions[layer], diagnostics[layer] = running.result(layer)
    else:
        from steerlab.reader import read

        pos_acts = read(
            lm,
            positive,
            chosen,
            site=site,
            position=position,
            batch_size=batch_size,
            progress=progress,
            dtype=dtype,
        )
        neg_acts = read(
            lm,
            negative,
            chosen,
            site=site,
            position=position,
            batch_size=batch_size,
            progress=progress,
            dtype=dtype,
        )
        meter.samples = {}
        for layer in chosen:
            directions[layer], diagnostics[layer] = methods[method](
                pos_acts.acts[layer], neg_acts.acts[layer]
            )
        norms = {k: (pos_acts.norms[k] + neg_acts.norms[k]) / 2 for k in pos_acts.norms}
    if method == "mean_diff":
        norms = meter.medians()
    _refuse_degenerate(directions)
    return SteeringVector(
        directions=directions,
        model_id=lm.model_id,
        hidden_size=lm.hidden_size,
        site=site,
        method=method,
        data_hash=texts_hash(positive, negative),
        norms={k: v for k, v in norms.items() if v > 0},
        notes=notes,
        provenance={"pairs": len(positive), "position": str(position), "chat": chat},
        diagnostics={str(k): v for k, v in diagnostics.items()},
    )


def _refuse_degenerate(directions: dict[int, torch.Tensor]) -> None:
    zero = [layer for layer, d in directions.items() if not torch.isfinite(d).all() or float(d.norm()) == 0]
    if zero:
        raise DataError(
            f"the positive and negative activations are identical (or not finite) at layers {zero}: "
            "the data has no contrast there"
        )
