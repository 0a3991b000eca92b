"""The one intervention engine: specs, compiled plans, hooks."""

from steerlab.engine.context import SteeringContext
from steerlab.engine.plan import Plan, Term, additive_plan, compile_plan
from steerlab.engine.spec import OPS, Steering, as_steerings, parse_layers, parse_positions

__all__ = [
    "OPS",
    "Plan",
    "Steering",
    "SteeringContext",
    "Term",
    "additive_plan",
    "as_steerings",
    "compile_plan",
    "parse_layers",
    "parse_positions",
]
