"""The exact strings an extraction reads, and the hash that names them.

Shared by ``steerlab.extract`` and the model methods (``iti``, ``refusal``, ...): they all turn the same
kinds of contrast data into the same positive/negative texts, so a vector's ``data_hash`` means the same
thing whichever method made it. Model-free apart from the tokenizer's chat template.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from steerlab.data.chat import pair_texts
from steerlab.data.formats import ContrastPair
from steerlab.errors import DataError

if TYPE_CHECKING:
    from steerlab.models.handle import ModelHandle


def texts_hash(positive: Sequence[str], negative: Sequence[str]) -> str:
    """Stable hash of exactly the strings read, so a vector names the data it came from."""
    blob = json.dumps([list(positive), list(negative)], ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def as_pair(i: int, item: Any) -> ContrastPair:
    """Item number ``i`` (counted from 1 in messages) of contrast data (a ContrastPair, a dict or a 2-tuple)
    as a checked ContrastPair."""
    if isinstance(item, ContrastPair):
        pair = item
    elif isinstance(item, dict):
        pair = ContrastPair(item.get("positive"), item.get("negative"), item.get("prompt"))
    elif isinstance(item, tuple | list) and len(item) == 2:
        pair = ContrastPair(item[0], item[1])
    else:
        raise DataError(
            f"pair {i}: expected (positive, negative), a dict or a ContrastPair, got {type(item).__name__}"
        )
    if (
        not isinstance(pair.positive, str)
        or not isinstance(pair.negative, str)
        or not pair.positive
        or not pair.negative
    ):
        raise DataError(f"pair {i}: expected non-empty 'positive' and 'negative' strings, got {item!r}"[:200])
    return pair


def contrast_texts(lm: ModelHandle, data: Any, *, chat: bool = True) -> tuple[list[str], list[str]]:
    """The exact positive/negative strings to read: pairs go through the one chat formatter.

    Only the handle's tokenizer is used (its chat template); ``data`` is pairs, or an already split
    ``(positives, negatives)`` tuple of lists.
    """
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(x, list | tuple) for x in data):
        positive, negative = list(data[0]), list(data[1])
    else:
        pairs = [as_pair(i, item) for i, item in enumerate(data, start=1)]  # 1-based, like file lines
        positive, negative = pair_texts(pairs, lm.tokenizer if chat else None, chat=chat)
    if len(positive) < 2 or len(negative) < 2:
        raise DataError(
            f"need at least 2 examples per side, got {len(positive)} positive and {len(negative)} negative"
        )
    return positive, negative
