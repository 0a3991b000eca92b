"""What every engine does with a generation request before and after decoding, defined once.

A single string or a list of prompts, the token budget, each row's sampling settings by the seed rule,
one :class:`~steerlab.decode.RowDecoder` per row, and a single result for a single prompt: the torch,
llama.cpp and vLLM engines all take ``lm.generate``'s arguments, so they shape them here alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from steerlab.decode.decoder import RowDecoder
from steerlab.decode.sampling import SamplingParams, row_sampling
from steerlab.errors import SteeringError, SteerlabError


@dataclass
class Batch:
    """A request's prompts as rows: the prompt texts, whether one string was given, and per-row sampling."""

    prompts: list[str]
    single: bool
    max_new_tokens: int
    sampling: list[SamplingParams]

    def decoders(
        self, detokenize: Callable[[list[int]], str], encoded: Sequence[list[int]], eos: set[int], stop: Any
    ) -> list[RowDecoder]:
        return [
            RowDecoder(detokenize, max_tokens=self.max_new_tokens, eos=eos, stop=stop, prompt_tokens=len(ids))
            for ids in encoded
        ]

    def results(self, outs: list[Any], details: bool) -> Any:
        """Generations (``details``) or texts, one per prompt, or a single one for a single string prompt."""
        values = outs if details else [g.text for g in outs]
        return values[0] if self.single else values


def batch_of(
    prompts: str | Sequence[str], *, max_new_tokens: int, temperature: float, top_p: float, seed: int | None
) -> Batch:
    """Check a request's shared arguments (clear errors before any model work) and lay out its rows."""
    single = isinstance(prompts, str)
    prompt_list = [prompts] if single else list(prompts)
    if not prompt_list:
        raise SteeringError("no prompts given")
    if max_new_tokens < 1:
        raise SteeringError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    try:
        sampling = row_sampling(temperature, top_p, seed, len(prompt_list))
    except SteerlabError as exc:
        raise SteeringError(str(exc)) from None
    return Batch(prompt_list, single, max_new_tokens, sampling)
