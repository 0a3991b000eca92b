"""Which extraction methods exist, what each needs, and one entry point that runs any of them.

Two kinds of method:

* **pair methods** are pure functions ``fn(pos (n, W), neg (n, W)) -> (direction, diagnostics)``
  applied layer by layer to activations of the two sides (``mean_diff``, ``pca_diff``,
  ``pca_center``, ``probe``). They can run from cached activations without any forward pass.
* **model methods** need the model beyond one read: ``iti`` reads the per-head site and ranks heads
  across layers, ``refusal`` reads instruction sets at several positions and selects by steered
  generations, ``learned`` optimises a vector through the frozen model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from steerlab.errors import DataError
from steerlab.methods.mean_diff import mean_diff
from steerlab.methods.pca import pca_center, pca_diff
from steerlab.methods.probe import probe

if TYPE_CHECKING:
    from steerlab.lm import LM
    from steerlab.vector import SteeringVector

PairMethod = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]

#: Pair methods beyond ``mean_diff`` (which ``steerlab.extract`` streams when no cache is asked for).
PAIR_METHODS: dict[str, PairMethod] = {"pca_diff": pca_diff, "pca_center": pca_center, "probe": probe}


@dataclass(frozen=True)
class MethodInfo:
    """One line of ``steerlab extract --help``: what the method is and what data it takes."""

    name: str
    kind: str  # "pair" or "model"
    data: str  # what it reads
    summary: str


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo("mean_diff", "pair", "pairs", "difference of class means (CAA / DiffMean); streams"),
        MethodInfo("pca_diff", "pair", "pairs", "first principal axis of paired differences (repeng)"),
        MethodInfo("pca_center", "pair", "pairs", "first principal axis of pair-centred activations (RepE)"),
        MethodInfo("probe", "pair", "pairs", "logistic-regression normal; held-out accuracy/AUC per layer"),
        MethodInfo("iti", "model", "pairs", "top-K attention heads by probe accuracy, mass-mean shift (ITI)"),
        MethodInfo("refusal", "model", "harmful + harmless instructions", "Arditi et al. refusal direction"),
        MethodInfo("learned", "model", "pairs with prompt + completions", "BiPO-style optimised vector"),
    )
}


def all_pair_methods() -> dict[str, PairMethod]:
    return {"mean_diff": mean_diff, **PAIR_METHODS}


def model_method(name: str) -> Callable[..., SteeringVector]:
    """The entry point of a model method (imported lazily: they pull in generation/optimisation code)."""
    if name == "iti":
        from steerlab.methods.iti import extract_iti

        return extract_iti
    if name == "refusal":
        from steerlab.methods.refusal import extract_refusal

        return extract_refusal
    if name == "learned":
        from steerlab.methods.learned import train_vector

        return train_vector
    raise DataError(f"unknown model method '{name}'; available: iti, refusal, learned")


def run_model_method(lm: LM, data: Any, method: str, **options: Any) -> SteeringVector:
    """Run ``iti``, ``refusal`` or ``learned`` with ``steerlab.extract``-style arguments.

    Options a method does not take are dropped only when left at their ``extract`` defaults (e.g.
    ``site="resid"``); a non-default value a method cannot honour is an error, not a silent no-op.
    ``refusal`` takes ``data`` as ``(harmful, harmless)`` or ``{"harmful": [...], "harmless": [...]}``
    (lists of instruction strings); ``learned`` takes pairs with a ``prompt``; ``layers`` for it names one
    layer.
    """
    import inspect

    info = check_method(method)
    if info.kind != "model":
        raise DataError(f"method '{method}' is a pair method; use steerlab.extract")
    fn = model_method(method)
    accepted = set(inspect.signature(fn).parameters)
    neutral = {
        "site": "resid",
        "position": "last",
        "chat": True,
        "progress": False,
        "dtype": None,
        "cache": None,
        "layers": None,
        "notes": "",
    }
    if method == "learned" and options.get("layers") is not None:
        from steerlab.engine.spec import parse_layers

        chosen = parse_layers(options.pop("layers"))
        if len(chosen) != 1:
            raise DataError(f"the learned method trains one layer; got layers {list(chosen)}")
        options["layer"] = chosen[0]
    speed_only = {"batch_size", "progress"}  # how fast, not what: dropped where a method has no such knob
    kwargs = {}
    for key, value in options.items():
        if key in accepted:
            kwargs[key] = value
        elif key not in speed_only and (key not in neutral or value != neutral[key]):
            raise DataError(f"method '{method}' does not take {key}={value!r}")
    if method == "refusal":
        harmful, harmless = _instruction_sets(data)
        return fn(lm, harmful, harmless, **kwargs)
    return fn(lm, data, **kwargs)


def _instruction_sets(data: Any) -> tuple[list[str], list[str]]:
    if isinstance(data, dict) and {"harmful", "harmless"} <= set(data):
        return list(data["harmful"]), list(data["harmless"])
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(x, list | tuple) for x in data):
        return list(data[0]), list(data[1])
    raise DataError(
        "the refusal method needs two instruction lists: (harmful, harmless) or "
        "{'harmful': [...], 'harmless': [...]}"
    )


def check_method(name: str) -> MethodInfo:
    if name not in METHODS:
        raise DataError(f"unknown method '{name}'; available: {', '.join(METHODS)}")
    return METHODS[name]


def extract_cached(
    lm: LM, data: Any, method: str = "mean_diff", *, cache: Any = True, **options: Any
) -> SteeringVector:
    """``steerlab.extract`` for a pair method with the activation cache on by default: the second method
    on the same data reads nothing. ``cache`` is an ``ActCache``, a folder, ``True`` (default folder) or
    ``None`` (no cache)."""
    from steerlab.extract import extract

    if check_method(method).kind != "pair":
        raise DataError(f"method '{method}' is not a pair method; call its own entry point")
    return extract(lm, data, method, cache=cache, **options)
