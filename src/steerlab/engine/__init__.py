"""The one intervention engine: specs, compiled plans, hooks."""

from steerlab.engine.condition import Condition, Rule
from steerlab.engine.context import SteeringContext, unsteered
from steerlab.engine.plan import (
    Norms,
    Plan,
    Term,
    add_vector,
    additive_plan,
    compile_plan,
    direction_at,
    norm_sites_needed,
)
from steerlab.engine.spec import OPS, Steering, as_steerings, parse_layers, parse_positions

__all__ = [
    "OPS",
    "Condition",
    "Norms",
    "Plan",
    "Rule",
    "Steering",
    "SteeringContext",
    "Term",
    "add_vector",
    "additive_plan",
    "as_steerings",
    "compile_plan",
    "direction_at",
    "norm_sites_needed",
    "parse_layers",
    "parse_positions",
    "unsteered",
]
