"""Turning a request's ``steering`` list (registry names + options) into engine :class:`Steering` objects.

One function, so every route that accepts steering maps names and options the same way.
"""

from __future__ import annotations

from typing import Any

from steerlab.engine import Steering
from steerlab.engine.condition import Condition, ConditionLike, Rule
from steerlab.errors import SteerlabError
from steerlab.server.errors import bad_request, from_steerlab, not_found
from steerlab.server.registry import Registry, VectorRegistry
from steerlab.server.schemas import SteeringSpec

#: Bounds on a condition rule in a request: nesting depth and conditions named in all.
MAX_RULE_DEPTH = 8
MAX_RULE_NAMES = 32


def build_steerings(registry: VectorRegistry, specs: list[SteeringSpec] | None) -> list[Steering]:
    """Registry names -> engine steerings; unknown name is a 404, a bad option a 400."""
    out = []
    for i, spec in enumerate(specs or []):
        try:
            entry = registry.get(spec.vector)
        except KeyError:
            raise not_found(
                f"no steering vector named '{spec.vector}'; GET /v1/steering/vectors lists them",
                param=f"steering[{i}].vector",
                code="vector_not_found",
            ) from None
        try:
            out.append(
                Steering(
                    entry.item,
                    strength=spec.strength,
                    op=spec.op,
                    layers=spec.layers,
                    positions=spec.positions,
                    unit=spec.unit,
                    site=spec.site,
                    condition=build_condition(
                        registry.conditions, spec.condition, f"steering[{i}].condition"
                    ),
                )
            )
        except SteerlabError as exc:
            raise from_steerlab(exc, f"steering[{i}]") from exc
    return out


def build_condition(registry: Registry[Condition], spec: Any, param: str) -> ConditionLike | None:
    """A registry name, or a rule ``{"all"|"any": [...]}`` / ``{"not": ...}`` of them, as engine objects."""
    if spec is None:
        return None
    budget = [MAX_RULE_NAMES]
    return _condition(registry, spec, param, 0, budget)


def _condition(
    registry: Registry[Condition], spec: Any, param: str, depth: int, budget: list[int]
) -> ConditionLike:
    if isinstance(spec, str):
        budget[0] -= 1
        if budget[0] < 0:
            raise bad_request(f"a condition rule may name at most {MAX_RULE_NAMES} conditions", param=param)
        try:
            return registry.get(spec).item
        except KeyError:
            raise not_found(
                f"no condition named '{spec[:200]}'; GET /v1/steering/conditions lists them",
                param=param,
                code="condition_not_found",
            ) from None
    if depth >= MAX_RULE_DEPTH:
        raise bad_request(f"a condition rule may nest at most {MAX_RULE_DEPTH} deep", param=param)
    if not isinstance(spec, dict) or len(spec) != 1:
        raise bad_request(
            "a condition is a registry name or one rule: {'all': [...]}, {'any': [...]} or {'not': ...}",
            param=param,
        )
    ((kind, value),) = spec.items()
    if kind == "not":
        return Rule("not", (_condition(registry, value, f"{param}.not", depth + 1, budget),))
    if kind not in ("all", "any") or not isinstance(value, list) or not value:
        raise bad_request(
            f"unknown condition rule {str(kind)[:40]!r}: use 'all' or 'any' with a non-empty list, or 'not'",
            param=param,
        )
    parts = [
        _condition(registry, item, f"{param}.{kind}[{j}]", depth + 1, budget) for j, item in enumerate(value)
    ]
    return Rule(kind, tuple(parts))


def steering_report(steerings: list[Steering], fired_rows: list[list[bool] | None]) -> list[dict] | None:
    """Per choice, whether each conditional steering's condition fired (None: no steering has one)."""
    conditional = [i for i, s in enumerate(steerings) if s.condition is not None]
    if not conditional:
        return None
    return [
        {
            "index": row,
            "conditions": [
                {"steering": i, "condition": steerings[i].condition.describe(), "fired": bool(f)}  # type: ignore[union-attr]
                for i, f in zip(conditional, fired or [], strict=False)
            ],
        }
        for row, fired in enumerate(fired_rows)
    ]


def report_field(steerings: list[Steering], fired_rows: list[list[bool] | None]) -> dict[str, Any]:
    """``{"steering_report": ...}`` when a steering is conditional, else ``{}`` (the OpenAI shape as is)."""
    report = steering_report(steerings, fired_rows)
    return {} if report is None else {"steering_report": report}
