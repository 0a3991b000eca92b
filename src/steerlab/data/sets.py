"""Whole data sets: a deterministic train/dev split and a content fingerprint (model-free)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Sequence
from typing import Any, TypeVar

from steerlab.errors import DataError

T = TypeVar("T")


def split(items: Sequence[T], dev_fraction: float = 0.2, seed: int = 0) -> tuple[list[T], list[T]]:
    """Deterministic train/dev split; both parts keep the input order so diffs of data files stay readable.

    With ``0 < dev_fraction`` and at least two items, dev gets at least one item and train keeps at least one,
    so a small set never yields an empty side by rounding.
    """
    if not 0.0 <= dev_fraction < 1.0:
        raise DataError(f"expected dev_fraction in [0, 1), found {dev_fraction}")
    n = len(items)
    n_dev = round(n * dev_fraction)
    if dev_fraction > 0 and n >= 2:
        n_dev = min(max(n_dev, 1), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    dev_idx = set(order[:n_dev])
    train = [x for i, x in enumerate(items) if i not in dev_idx]
    dev = [x for i, x in enumerate(items) if i in dev_idx]
    return train, dev


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise DataError(f"data_hash: expected JSON-like data or dataclasses, found {type(obj).__name__}")


def data_hash(obj: Any) -> str:
    """Stable fingerprint of a data set, recorded in vector metadata to say which data built a vector.

    It is the SHA-256 of canonical JSON (sorted keys, no whitespace, UTF-8), so it is the same across runs,
    machines and Python versions, and changes with any change to any item or to the order of items.
    """
    canonical = json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
