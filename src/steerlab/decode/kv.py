"""The two KV-cache spellings that changed across transformers versions, in one place.

transformers 5 renamed the forward keyword ``past_key_values`` to ``cache`` (and the output field with
it); every loop that feeds a cache back asks these helpers instead of guessing.
"""

from __future__ import annotations

import inspect
from typing import Any


def cache_arg(lm: Any) -> str:
    """The keyword ``lm.model.forward`` takes for the KV cache."""
    params = inspect.signature(lm.model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(result: Any) -> Any:
    """The KV cache a forward pass returned, under either name."""
    cache = getattr(result, "cache", None)
    return cache if cache is not None else result.past_key_values


def last_logits_kwargs(lm: Any) -> dict[str, int]:
    """Forward keywords that compute logits for the last position only (when the model supports it)."""
    params = inspect.signature(lm.model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}
