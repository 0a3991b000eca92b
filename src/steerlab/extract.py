"""``extract``: contrast data in, :class:`SteeringVector` out, through the one reader.

Every method is looked up in :mod:`steerlab.methods.registry`. Methods that only need class means
(``mean_diff``) stream: activations are summed batch by batch and never held all at once. Other pair
methods receive the full ``(n, W)`` activations per layer, read once for both sides (and through the
activation cache when one is given); model methods run their own entry points.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch

from steerlab.data.contrast import contrast_texts, texts_hash
from steerlab.errors import DataError
from steerlab.methods.mean_diff import RunningMeanDiff
from steerlab.methods.registry import all_pair_methods, check_method, run_model_method
from steerlab.progress import Ticker, task_bar
from steerlab.reader import NormMeter, iter_read
from steerlab.vector import SteeringVector

if TYPE_CHECKING:
    from steerlab.lm import LM

__all__ = ["contrast_texts", "extract", "extract_cached", "texts_hash"]


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
    progress: bool | Ticker = False,
    dtype: torch.dtype | None = None,
    cache: Any = None,
    notes: str = "",
    **method_options: Any,
) -> SteeringVector:
    """Extract a steering vector from contrast data with any registered method.

    ``data`` holds pairs whose positive side shows the behaviour to steer towards. ``layers`` defaults
    to every block. ``position`` picks the token(s) read ('last', 'mean', an index). With ``chat`` the
    texts are wrapped in the model's chat template as user turns (or, for pairs with a ``prompt``, as
    assistant continuations). ``cache`` (an ``ActCache``, a folder, or ``True``) lets a second pair method
    on the same data skip the forward passes. ``progress=True`` shows one bar (with ETA) over both sides. Model methods (``iti``, ``refusal``, ``learned``) take their
    own data and options (``method_options``); see :mod:`steerlab.methods.registry`.
    """
    from steerlab.engine.spec import parse_layers

    info = check_method(method)
    if info.kind == "model":
        return run_model_method(
            lm,
            data,
            method,
            layers=layers,
            site=site,
            position=position,
            chat=chat,
            batch_size=batch_size,
            progress=progress,
            dtype=dtype,
            cache=cache,
            notes=notes,
            **method_options,
        )
    if method_options:
        raise DataError(f"method '{method}' takes no options {sorted(method_options)}")
    chosen = list(range(lm.num_layers)) if layers is None else list(parse_layers(layers))
    for layer in chosen:
        lm.anatomy.module(layer, site)  # unknown layer or a site this architecture lacks: clear error
    positive, negative = contrast_texts(lm, data, chat=chat)
    # one bar over both sides, so the count runs once from 0 to every text
    with _one_bar(progress, len(positive) + len(negative)) as ticker:
        options = dict(site=site, position=position, batch_size=batch_size, progress=ticker, dtype=dtype)
        if method == "mean_diff" and cache is None:
            directions, diagnostics, norms = _streamed_mean_diff(lm, positive, negative, chosen, options)
        else:
            from steerlab.act_cache import cached_read

            # Both sides in one read: one cache entry, full batches (the reader sorts by length anyway).
            acts = cached_read(lm, positive + negative, chosen, cache=cache, **options)
            fn, n = all_pair_methods()[method], len(positive)
            directions, diagnostics = {}, {}
            for layer in chosen:
                both = acts.acts[layer]
                directions[layer], diagnostics[layer] = fn(_flat(both[:n]), _flat(both[n:]))
            norms = dict(acts.norms)
    _refuse_degenerate(directions)
    return SteeringVector(
        directions=directions,
        model_id=lm.model_id,
        hidden_size=lm.hidden_size,
        site=site,
        method=method,
        data_hash=texts_hash(positive, negative),
        norms={k: v for k, v in norms.items() if k in directions and v > 0},
        notes=notes,
        provenance={"pairs": len(positive), "position": str(position), "chat": chat},
        diagnostics={str(k): v for k, v in diagnostics.items()},
    )


def extract_cached(
    lm: LM, data: Any, method: str = "mean_diff", *, cache: Any = True, **options: Any
) -> SteeringVector:
    """:func:`extract` for a pair method with the activation cache on by default: the second method
    on the same data reads nothing. ``cache`` is an ``ActCache``, a folder, ``True`` (default folder) or
    ``None`` (no cache)."""
    if check_method(method).kind != "pair":
        raise DataError(f"method '{method}' is not a pair method; call its own entry point")
    return extract(lm, data, method, cache=cache, **options)


def _streamed_mean_diff(
    lm: LM, positive: list[str], negative: list[str], layers: list[int], options: dict[str, Any]
) -> tuple[dict[int, torch.Tensor], dict[int, dict[str, float]], dict[int, float]]:
    """Class sums batch by batch: memory stays flat however many pairs there are."""
    meter = NormMeter()
    running = RunningMeanDiff()
    for side, texts in enumerate((positive, negative)):
        for batch in iter_read(lm, texts, layers, norms=meter, **options):
            for layer, acts in batch.acts.items():
                running.update(side, layer, _flat(acts))
    directions, diagnostics = {}, {}
    for layer in layers:
        directions[layer], diagnostics[layer] = running.result(layer)
    return directions, diagnostics, meter.medians()


def _one_bar(progress: bool | Ticker, total: int) -> contextlib.AbstractContextManager[Ticker]:
    """The caller's ticker, or a fresh bar over ``total`` texts (quiet when ``progress`` is False)."""
    if isinstance(progress, Ticker):
        return contextlib.nullcontext(progress)
    return task_bar("reading activations", total, quiet=not progress)


def _flat(acts: torch.Tensor) -> torch.Tensor:
    """Several read positions per text count as several examples."""
    return acts.reshape(-1, acts.shape[-1])


def _refuse_degenerate(directions: dict[int, torch.Tensor]) -> None:
    zero = [layer for layer, d in directions.items() if not torch.isfinite(d).all() or float(d.norm()) == 0]
    if zero:
        raise DataError(
            f"the positive and negative activations are identical (or not finite) at layers {zero}: "
            "the data has no contrast there"
        )
