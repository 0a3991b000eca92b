"""What one comparison runs: its knobs (:class:`ArenaConfig`) and which method names exist.

Method names are checked here, before any model is loaded: a typo in ``--methods`` is refused with
the valid names instead of being skipped after a baseline run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from steerlab.errors import DataError
from steerlab.evaluate.sweep import Cell
from steerlab.evaluate.tasks import Budget

PROMPT_SHOT_CAP = 8
#: Steering methods run by default (others, e.g. ``pca_center``, run when named).
DEFAULT_STEERING = ("mean_diff", "pca_diff", "probe", "learned")
#: Steering gated by the task's natural condition (safety: harmful vs harmless prompts); run when named.
CONDITIONAL_METHOD = "conditional"
#: The vector the conditional method gates when no other steering method finished before it; otherwise it
#: gates the best one (on safety: the most refusals on harmful calibration prompts, ``refusal`` included).
CONDITIONAL_BASE = "mean_diff"
#: The steering method made for a task's behaviour, which the conditional method gates when the calibrated
#: methods tie (on safety, often all at zero refusals: their ungated ladders stop at the KL budget, below the
#: strength at which a refusal direction works, while the gate keeps neutral prompts from paying for it).
TASK_STEERING = {"safety": "refusal"}
#: Steering methods that build from the model itself rather than pair activations alone; run when named.
MODEL_STEERING = ("iti", "refusal", "learned")
#: Adaptations that are not steering vectors.
OTHER_METHODS = ("baseline", "prompting", "lora")


#: Field metadata of a knob added after comparison folders existed: at its default it stays out of the
#: run fingerprint, so a folder written before it still resumes (and can gain methods).
ADDED_LATER = {"added_later": True}


@dataclass
class ArenaConfig:
    """Knobs of one comparison. ``methods=None`` runs every method available in this install."""

    budget: Budget = field(default_factory=Budget)
    methods: list[str] | None = None
    data_sizes: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    efficiency_methods: list[str] = field(default_factory=lambda: ["prompting", "mean_diff", "lora"])
    efficiency_limit: int = 8
    compose: bool = True
    compose_limit: int = 8
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_epochs: int = 3
    lora_lr: float = 3e-3
    max_kl: float = 0.1
    max_ppl_ratio: float = 1.5
    cells: list[Cell] | None = None
    calib_tokens: int = 24
    calib_neutral: int = 16
    capability: list[Any] = field(default_factory=list)
    throughput_prompts: int = 4
    throughput_tokens: int = 16
    #: the learned method's optimisation budget: at most this many steps, scored on its held-out pairs every
    #: ``learned_eval_every`` steps, stopping once ``learned_patience`` scores in a row improve the best by
    #: less than ``learned_min_improvement`` (the loss has flattened)
    #: (calibration rescales the vector afterwards, so training needs its direction more than its length)
    learned_steps: int = 20
    learned_eval_every: int = 4
    learned_patience: int = 2
    learned_min_improvement: float = 0.01
    learned_lr: float = 0.1
    learned_pairs_per_step: int = 4
    #: the refusal method's causal selection (Arditi et al.'s, narrowed to fit a comparison): candidates at
    #: every layer in this fraction of the depth x every post-instruction token, screened with the direction
    #: added at ``refusal_add_strength`` x the harmful-harmless gap, the best ``refusal_generate_top`` then
    #: generating on the calibration split; the direction that induces the most refusals is kept
    refusal_depth: tuple[float, float] = field(default=(0.1, 0.6), metadata=ADDED_LATER)
    refusal_add_strength: float = field(default=4.0, metadata=ADDED_LATER)
    refusal_generate_top: int = field(default=3, metadata=ADDED_LATER)
    verbose: bool = False
    state_dir: str | None = None
    neutral: list[str] = field(default_factory=list)
    neutral_reference: Any = None

    def learned_options(self) -> dict[str, Any]:
        """Keyword arguments of ``train_vector`` set by this configuration."""
        return {
            "steps": self.learned_steps,
            "eval_every": self.learned_eval_every,
            "patience": self.learned_patience,
            "min_improvement": self.learned_min_improvement,
            "lr": self.learned_lr,
            "pairs_per_step": self.learned_pairs_per_step,
        }

    def refusal_layers(self, num_layers: int) -> list[int]:
        """The layers the refusal method selects among: every one in :attr:`refusal_depth` of the depth."""
        lo, hi = self.refusal_depth
        first = min(int(num_layers * lo), num_layers - 1)
        return list(range(first, max(int(num_layers * hi), first) + 1))

    def as_dict(self) -> dict[str, Any]:
        """The knobs as recorded in ``results.json`` and the fingerprint (data by count, not content)."""
        d = asdict(self)
        d["capability"] = len(self.capability)
        d["cells"] = [c.key for c in self.cells] if self.cells else "default grid"
        d["neutral"] = len(self.neutral)
        d.pop("neutral_reference", None)
        d.pop("state_dir", None)
        return d


def steering_methods() -> list[str]:
    """Steering methods this install offers: every pair method, the model methods (``iti``, ``refusal``,
    ``learned``) and ``conditional`` last, since it gates the best of the others (no module imported)."""
    from steerlab.methods.registry import pair_method_names

    return [*pair_method_names(), *MODEL_STEERING, CONDITIONAL_METHOD]


def known_methods() -> list[str]:
    """Every method name the arena understands, in run order."""
    return ["baseline", "prompting", *steering_methods(), "lora"]


def check_methods(names: Iterable[str]) -> list[str]:
    """``names`` as a list, or a clear error naming the unknown ones and every valid name."""
    names = list(names)
    valid = known_methods()
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise DataError(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return names


def available_methods() -> tuple[list[str], dict[str, str]]:
    """Default methods in run order, and a note for each wanted method that is missing and why.

    Steering methods beyond :data:`DEFAULT_STEERING` (e.g. ``pca_center``) run when named in ``methods``.
    """
    have = steering_methods()
    methods = ["baseline", "prompting"]
    missing: dict[str, str] = {}
    for name in DEFAULT_STEERING:
        if name in have:
            methods.append(name)
        else:
            missing[name] = "not available in this install (steerlab.methods has no such method yet)"
    try:
        import peft  # noqa: F401

        methods.append("lora")
    except ImportError:
        missing["lora"] = "peft is not installed (pip install 'steerlab[eval]')"
    return methods, missing
