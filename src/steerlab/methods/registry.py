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

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from steerlab.errors import DataError

if TYPE_CHECKING:
    from steerlab.lm import LM
    from steerlab.vector import SteeringVector

PairMethod = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class MethodInfo:
    """One line of ``steerlab extract --help``: what the method is, what data it takes, where it lives.

    ``entry`` is ``"module:function"``; the module is imported only when the method is used, so listing
    methods (or ``import steerlab``) never pulls in probes, generation or optimisation code.
    """

    name: str
    kind: str  # "pair" or "model"
    data: str  # what it reads
    summary: str
    entry: str

    def load(self) -> Callable[..., Any]:
        module, _, function = self.entry.partition(":")
        return getattr(importlib.import_module(module), function)


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo(
            "mean_diff",
            "pair",
            "pairs",
            "difference of class means (CAA / DiffMean); streams",
            "steerlab.methods.mean_diff:mean_diff",
        ),
        MethodInfo(
            "pca_diff",
            "pair",
            "pairs",
            "first principal axis of paired differences (repeng)",
            "steerlab.methods.pca:pca_diff",
        ),
        MethodInfo(
            "pca_center",
            "pair",
            "pairs",
            "first principal axis of pair-centred activations (RepE)",
            "steerlab.methods.pca:pca_center",
        ),
        MethodInfo(
            "probe",
            "pair",
            "pairs",
            "logistic-regression normal; held-out accuracy/AUC per layer",
            "steerlab.methods.probe:probe",
        ),
        MethodInfo(
            "iti",
            "model",
            "pairs",
            "top-K attention heads by probe accuracy, mass-mean shift (ITI)",
            "steerlab.methods.iti:extract_iti",
        ),
        MethodInfo(
            "refusal",
            "model",
            "harmful + harmless instructions",
            "Arditi et al. refusal direction",
            "steerlab.methods.refusal:extract_refusal",
        ),
        MethodInfo(
            "learned",
            "model",
            "pairs with prompt + completions",
            "BiPO-style optimised vector",
            "steerlab.methods.learned:train_vector",
        ),
    )
}


class _PairMethods(Mapping[str, PairMethod]):
    """Name -> pair-method function, importing each method's module on first access."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names

    def __getitem__(self, name: str) -> PairMethod:
        if name not in self._names:
            raise KeyError(name)
        return METHODS[name].load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def pair_method_names() -> list[str]:
    """Every pair method, ``mean_diff`` first (no import of any method module)."""
    return [name for name, info in METHODS.items() if info.kind == "pair"]


#: Pair methods beyond ``mean_diff`` (which ``steerlab.extract`` streams when no cache is asked for).
PAIR_METHODS: Mapping[str, PairMethod] = _PairMethods(
    tuple(n for n in pair_method_names() if n != "mean_diff")
)


def all_pair_methods() -> Mapping[str, PairMethod]:
    """Every pair method by name (loaded on access)."""
    return _PairMethods(tuple(pair_method_names()))


def model_method(name: str) -> Callable[..., SteeringVector]:
    """The entry point of a model method (imported now: they pull in generation/optimisation code)."""
    info = METHODS.get(name)
    if info is None or info.kind != "model":
        models = ", ".join(n for n, i in METHODS.items() if i.kind == "model")
        raise DataError(f"unknown model method '{name}'; available: {models}")
    return info.load()


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
