"""``LM``: the user-facing facade: a :class:`ModelHandle` plus the verbs users call.

Everything below the facade (engine, reader, decode, methods) takes a plain ``ModelHandle``; an ``LM`` is
one, so it can be passed anywhere a handle is expected. The facade adds what needs several rooms at once:
steering (compile a plan with measured norms, install it), generation and logits. Typical norms are
measured here by the reader, unsteered, and cached on this object, then handed to plan compilation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from steerlab.engine import Plan, SteeringContext, as_steerings, compile_plan, norm_sites_needed
from steerlab.engine.context import unsteered
from steerlab.engine.spec import Steering
from steerlab.errors import SteeringError
from steerlab.models import Anatomy, ModelHandle, find_anatomy, load_source
from steerlab.reader import typical_norms
from steerlab.vector import SteeringVector


class LM(ModelHandle):
    """A decoder model ready to be read and steered.

    ``steer`` returns a context that installs steering hooks and removes them on exit; ``generate`` runs
    (optionally per-row steered) generation. ``typical_norms`` is measured on a few built-in neutral
    texts when a vector carries no norms of its own, once per site.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, model_id: str, source: str, anatomy: Anatomy):
        super().__init__(model, tokenizer, model_id, source, anatomy)
        self._norms: dict[str, dict[int, float]] = {}

    # -------------------------------------------------------------- steering
    def steer(
        self,
        spec: SteeringVector | Steering | Sequence[SteeringVector | Steering] | None = None,
        *,
        strength: float | None = None,
        op: str | None = None,
        layers: Any = None,
        positions: Any = "all",
        unit: str | None = None,
        site: str | None = None,
        condition: Any = None,
        strict_model: bool = True,
    ) -> SteeringContext:
        """Steer every row the same way inside a ``with`` block (several vectors compose in order).

        With ``condition`` (a :class:`steerlab.Condition` or rule), a bare vector steers a row only when
        the condition fires on that row's prompt (``ctx.fired_rows()`` says which did).

        ``spec`` may also be a raw tensor, as other steering libraries take it: a ``(width,)`` tensor is
        one direction applied at ``layers`` (required), a dict ``{layer: tensor}`` one direction per layer
        (keys may be TransformerLens hook names). Such tensors carry no recorded norm, so ``unit``
        defaults to ``"raw"`` for them: ``strength * tensor`` is added as is (repeng's coefficients carry
        over unchanged); pass ``unit="norm"`` to scale by the model's typical norm instead.
        """
        if isinstance(spec, torch.Tensor | dict):
            spec = vector_from_tensors(spec, layers=layers, site=site, model_id=self.model_id)
            unit = unit or "raw"
        defaults = dict(
            strength=strength,
            op=op,
            layers=layers,
            positions=positions,
            unit=unit,
            site=site,
            condition=condition,
        )
        steerings = as_steerings(spec, **defaults)
        plan = self.compile([steerings], strict_model=strict_model)
        return SteeringContext(self, plan, compile=self.compile)

    def steer_rows(
        self, rows: Sequence[Any], *, strict_model: bool = True, fired: Sequence[Sequence[bool]] | None = None
    ) -> SteeringContext:
        """Per-row steering: ``rows[i]`` (a Steering, a list of them, or None) applies to batch row ``i``.

        ``fired[i]`` optionally gives row ``i``'s condition decisions made at its own prefill (one per
        conditional steering, as ``ctx.fired_rows()`` returned them), for decode steps in another batch.
        """
        compiled = [as_steerings(row) for row in rows]
        plan = self.compile(compiled, strict_model=strict_model)
        return SteeringContext(self, plan, per_row=True, compile=self.compile, fired=fired)

    def compile(self, rows: Sequence[Sequence[Steering]], *, strict_model: bool = True) -> Plan:
        """Compile one list of steerings per row into a plan, measuring the typical norms it needs first."""
        sites = norm_sites_needed(self, rows)
        norms = {site: self.typical_norms(site) for site in sorted(sites)}
        return compile_plan(self, rows, norms=norms, strict_model=strict_model)

    def typical_norms(self, site: str = "resid") -> dict[int, float]:
        """Median token norm per layer at ``site`` on built-in neutral texts (cached on this object).

        Always measured on the unsteered model: contexts installed on it are lifted for the measurement
        and put back in their order.
        """
        if site not in self._norms:
            with unsteered(self):
                self._norms[site] = typical_norms(self, site)
        return self._norms[site]

    # ------------------------------------------------------------ generation
    def generate(self, prompts: str | Sequence[str], *, engine: str = "torch", **kwargs: Any) -> Any:
        """See :func:`steerlab.generate.generate`. A single string returns a single string.

        ``engine="llamacpp"`` runs the same request on llama.cpp (GGUF-loaded models, ``add`` steering on
        the residual stream only; several times faster on CPU), see ``docs/interop.md``. ``engine="vllm"``
        runs it on stock vLLM with per-request steering (``steerlab[vllm]``), see ``docs/vllm.md``.
        """
        if engine == "llamacpp":
            from steerlab.interop.llamacpp_engine import generate_llamacpp

            return generate_llamacpp(self, prompts, **kwargs)
        if engine == "vllm":
            from steerlab.backends.vllm.engine import generate_vllm

            return generate_vllm(self, prompts, **kwargs)
        if engine != "torch":
            raise SteeringError(f"unknown engine '{engine}'; expected 'torch', 'llamacpp' or 'vllm'")
        from steerlab.generate import generate

        return generate(self, prompts, **kwargs)

    def logits(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Next-token logits after each text, ``(n, vocab)``, computed in one padded batch."""
        from steerlab.generate import next_token_logits

        return next_token_logits(self, [texts] if isinstance(texts, str) else list(texts))


def vector_from_tensors(
    spec: torch.Tensor | dict[Any, torch.Tensor], *, layers: Any, site: str | None, model_id: str
) -> SteeringVector:
    """A :class:`SteeringVector` from a bare ``(width,)`` tensor at ``layers`` or a ``{layer: tensor}``
    dict (int keys or TransformerLens hook names), made by hand: no norms, no recorded defaults."""
    from steerlab.engine.hook_names import is_hook_spec, parse_hook_names, site_from_hook
    from steerlab.engine.spec import parse_layers

    site = (site_from_hook(site) or site) if site else None
    if isinstance(spec, torch.Tensor):
        if layers is None:
            raise SteeringError(
                "a raw tensor needs layers=... (e.g. lm.steer(tensor, layers='10-16', strength=4.0)); "
                "or pass a dict {layer: tensor}"
            )
        directions = {layer: spec for layer in parse_layers(layers)}
        hooked = parse_hook_names(layers).site if is_hook_spec(layers) else None
    else:
        directions, sites = {}, set()
        for key, tensor in spec.items():
            if is_hook_spec(key):
                named = parse_hook_names(key)
                directions.update({layer: tensor for layer in named.layers})
                sites.add(named.site)
            elif isinstance(key, int) and not isinstance(key, bool):
                directions[key] = tensor
            else:
                raise SteeringError(f"dict keys must be layer ints or hook names, got {key!r}")
        if len(sites) > 1:
            raise SteeringError(f"the dict's hook names mix sites {sorted(sites)}; one steering has one site")
        hooked = sites.pop() if sites else None
    for layer, tensor in directions.items():
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise SteeringError(f"layer {layer}: expected a 1-D tensor of shape (width,), got {shape}")
    return SteeringVector(
        directions=dict(directions),
        model_id=model_id,
        site=site or hooked or "resid",
        method="tensor",
        notes="built from raw tensors passed to lm.steer",
    )


def load(
    source: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    blocks: str | None = None,
) -> LM:
    """Load a model: nothing (the embedded SmolLM2-135M-Instruct), a hub id, a folder or a ``.gguf`` file.

    ``blocks`` names the decoder stack (e.g. ``"model.layers"``) for architectures steerlab cannot map.
    """
    loaded = load_source(source, dtype=dtype, device=device)
    anatomy = find_anatomy(loaded.model, blocks)
    return LM(loaded.model, loaded.tokenizer, loaded.model_id, loaded.source, anatomy)


def from_model(model: torch.nn.Module, tokenizer: Any, model_id: str = "", blocks: str | None = None) -> LM:
    """Wrap an already-loaded HF model (tests build tiny random ones this way)."""
    model.eval()
    return LM(
        model,
        tokenizer,
        model_id or getattr(getattr(model, "config", None), "_name_or_path", ""),
        "memory",
        find_anatomy(model, blocks),
    )
