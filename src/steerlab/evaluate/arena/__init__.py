"""The adaptation arena: prompting, steering and LoRA on the same task, data budget and evaluation split.

One job per module: :mod:`.config` (knobs, method names), :mod:`.build` (building and calibrating one
adaptation), :mod:`.jobs` (the three job kinds), :mod:`.results` (their typed results),
:mod:`.store` (run folder, JSON, fingerprint/resume), :mod:`.artifacts` (saved adaptations) and
:mod:`.compare` (the whole run). The names below are the public surface.
"""

from steerlab.evaluate.arena.artifacts import load_artifact, save_artifact
from steerlab.evaluate.arena.build import build, calibrate_vector
from steerlab.evaluate.arena.compare import ArenaResults, compare
from steerlab.evaluate.arena.config import (
    DEFAULT_STEERING,
    PROMPT_SHOT_CAP,
    ArenaConfig,
    available_methods,
    check_methods,
    known_methods,
    steering_methods,
)
from steerlab.evaluate.arena.jobs import (
    ComposeJob,
    EfficiencyJob,
    MethodJob,
    evaluate_adaptation,
    run_compose,
    run_efficiency,
    run_method,
)
from steerlab.evaluate.arena.results import ComposeResult, EfficiencyResult, Measurements, MethodResult

__all__ = [
    "DEFAULT_STEERING",
    "PROMPT_SHOT_CAP",
    "ArenaConfig",
    "ArenaResults",
    "ComposeJob",
    "ComposeResult",
    "EfficiencyJob",
    "EfficiencyResult",
    "Measurements",
    "MethodJob",
    "MethodResult",
    "available_methods",
    "build",
    "calibrate_vector",
    "check_methods",
    "compare",
    "evaluate_adaptation",
    "known_methods",
    "load_artifact",
    "run_compose",
    "run_efficiency",
    "run_method",
    "save_artifact",
    "steering_methods",
]
