"""Which token ids end a sequence."""

from __future__ import annotations

from typing import Any


def eos_token_ids(lm: Any) -> set[int]:
    """The tokenizer's EOS and the generation config's (they can differ, and either may be a list)."""
    ids: set[int] = set()
    config = getattr(getattr(lm, "model", None), "generation_config", None)
    for source in (getattr(lm.tokenizer, "eos_token_id", None), getattr(config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list | tuple):
            ids.update(int(x) for x in source)
    return ids
