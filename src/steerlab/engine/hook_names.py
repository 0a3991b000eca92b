"""TransformerLens hook names as layer/site specs, for users who think in ``blocks.12.hook_resid_post``.

steerlab's layer ``i`` is the residual stream right after block ``i``, which is TransformerLens'
``blocks.i.hook_resid_post``; its sites map one to one:

=============================  ====================================================
hook name                      steerlab
=============================  ====================================================
``blocks.i.hook_resid_post``   layer ``i``, site ``resid``
``blocks.i.hook_resid_pre``    layer ``i - 1``, site ``resid`` (the same tensor; i >= 1)
``blocks.i.hook_attn_out``     layer ``i``, site ``attn``
``blocks.i.hook_mlp_out``      layer ``i``, site ``mlp``
``blocks.i.attn.hook_z``       layer ``i``, site ``head`` (heads concatenated)
=============================  ====================================================

Other hooks (``hook_resid_mid``, per-head ``hook_result``, q/k/v ...) have no steerlab site and are refused
with the list above, never read as something else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from steerlab.errors import SteeringError

#: hook suffix -> (steerlab site, layer offset)
HOOKS: dict[str, tuple[str, int]] = {
    "hook_resid_post": ("resid", 0),
    "hook_resid_pre": ("resid", -1),
    "hook_attn_out": ("attn", 0),
    "hook_mlp_out": ("mlp", 0),
    "attn.hook_z": ("head", 0),
}
_NAME = re.compile(r"blocks\.(\d{1,6})\.([a-z_.]{1,40})")
_SUPPORTED = ", ".join(f"blocks.i.{suffix}" for suffix in HOOKS)


@dataclass(frozen=True)
class HookSpec:
    """What one or more hook names ask for: layers (sorted, unique) at one site."""

    layers: tuple[int, ...]
    site: str


def is_hook_spec(value: object) -> bool:
    """True for a hook-name string (or a list of them): ``"blocks.12.hook_resid_post"``."""
    if isinstance(value, str):
        return value.strip().startswith("blocks.")
    if isinstance(value, list | tuple) and value:
        return all(isinstance(v, str) and v.strip().startswith("blocks.") for v in value)
    return False


def parse_hook_names(value: str | Iterable[str]) -> HookSpec:
    """Hook names (a comma-separated string or a list) as layers at one site; a clear error otherwise."""
    names = value.split(",") if isinstance(value, str) else list(value)
    layers: set[int] = set()
    sites: set[str] = set()
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        match = _NAME.fullmatch(name)
        if match is None or match.group(2) not in HOOKS:
            raise SteeringError(f"hook name {name[:80]!r} has no steerlab site; supported: {_SUPPORTED}")
        site, offset = HOOKS[match.group(2)]
        layer = int(match.group(1)) + offset
        if layer < 0:
            raise SteeringError(
                f"{name} is the embedding output, before any block: steer blocks.0.hook_resid_post or later"
            )
        layers.add(layer)
        sites.add(site)
    if not layers:
        raise SteeringError("layers is empty")
    if len(sites) > 1:
        raise SteeringError(f"hook names {value!r} mix sites {sorted(sites)}; one steering has one site")
    return HookSpec(tuple(sorted(layers)), sites.pop())


def site_from_hook(value: str) -> str | None:
    """A site written as a hook suffix (``"hook_attn_out"``, ``"attn.hook_z"``), else ``None``."""
    entry = HOOKS.get(value.strip()) if isinstance(value, str) else None
    return entry[0] if entry and entry[1] == 0 else None
