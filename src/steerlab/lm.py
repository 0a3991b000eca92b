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
        strict_model: bool = True,
    ) -> SteeringContext:
        """Steer every row the same way inside a ``with`` block (several vectors compose in order)."""
        defaults = dict(strength=strength, op=op, layers=layers, positions=positions, unit=unit, site=site)
        steerings = as_steerings(spec, **defaults)
        plan = self.compile([steerings], strict_model=strict_model)
        return SteeringContext(self, plan, compile=self.compile)

    def steer_rows(self, rows: Sequence[Any], *, strict_model: bool = True) -> SteeringContext:
        """Per-row steering: ``rows[i]`` (a Steering, a list of them, or None) applies to batch row ``i``."""
        compiled = [as_steerings(row) for row in rows]
        plan = self.compile(compiled, strict_model=strict_model)
        return SteeringContext(self, plan, per_row=True, compile=self.compile)

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
        the residual stream only; several times faster on CPU), see ``docs/interop.md``.
        """
        if engine == "llamacpp":
            from steerlab.interop.llamacpp_engine import generate_llamacpp

            return generate_llamacpp(self, prompts, **kwargs)
        if engine != "torch":
            raise SteeringError(f"unknown engine '{engine}'; expected 'torch' or 'llamacpp'")
        from steerlab.generate import generate

        return generate(self, prompts, **kwargs)

    def logits(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Next-token logits after each text, ``(n, vocab)``, computed in one padded batch."""
        from steerlab.generate import next_token_logits

        return next_token_logits(self, [texts] if isinstance(texts, str) else list(texts))


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
