"""Turning a request's ``steering`` list (registry names + options) into engine :class:`Steering` objects.

One function, so every route that accepts steering maps names and options the same way.
"""

from __future__ import annotations

from steerlab.engine import Steering
from steerlab.errors import SteerlabError
from steerlab.server.errors import from_steerlab, not_found
from steerlab.server.registry import VectorRegistry
from steerlab.server.schemas import SteeringSpec


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
                    entry.vector,
                    strength=spec.strength,
                    op=spec.op,
                    layers=spec.layers,
                    positions=spec.positions,
                    unit=spec.unit,
                    site=spec.site,
                )
            )
        except SteerlabError as exc:
            raise from_steerlab(exc, f"steering[{i}]") from exc
    return out
