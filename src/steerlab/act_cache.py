"""On-disk activation cache: read a data set once, try every method on it without another forward pass.

An entry is keyed by what determines the activations: the model (its id, shape, dtype and a sampled
fingerprint of its weights, so two random test models with the same id do not collide), the exact
strings read (their hash), the site, the token positions and the reading precision. Layers are not part
of the key: an entry holds the layers read so far, a request for more reads only the missing ones and
rewrites the entry with the union. Entries are safetensors files (nothing is unpickled), written
atomically, so a crash mid-write leaves the old entry or none; an unreadable entry counts as a miss.

The cache root is the ``activations`` folder of steerlab's cache (``$STEERLAB_CACHE``, else
``~/.cache/steerlab``), beside the converted models.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import DataError
from steerlab.models.handle import ModelHandle
from steerlab.reader import Activations, Position, read

FORMAT = "1"
_SAMPLE = 64  # values sampled from each parameter tensor for the model fingerprint


def default_root() -> Path:
    """``activations`` under steerlab's cache folder (``$STEERLAB_CACHE`` or ``~/.cache/steerlab``)."""
    from steerlab.models.loading import cache_root

    return cache_root() / "activations"


def model_fingerprint(lm: ModelHandle) -> str:
    """Id, shape, dtype and a strided sample of every parameter: cheap (~ms) and weight-sensitive."""
    digest = hashlib.sha256()
    digest.update(json.dumps([lm.model_id, lm.anatomy.model_type, lm.num_layers, lm.hidden_size]).encode())
    with torch.no_grad():
        for name, param in lm.model.named_parameters():
            flat = param.detach().reshape(-1)
            step = max(flat.numel() // _SAMPLE, 1)
            sample = flat[::step][:_SAMPLE].to("cpu", torch.float32).contiguous()
            digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:24]


def texts_digest(texts: Sequence[str]) -> str:
    """Hash of exactly the strings read (order matters: rows are returned in this order)."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()[:24]


def _position_key(position: Position) -> Any:
    return list(position) if isinstance(position, tuple) else position


@dataclass
class ActCache:
    """A folder of cached activations. ``hits``/``misses`` count layer reads served or computed."""

    root: Path = field(default_factory=default_root)
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # ------------------------------------------------------------------ keys
    def key(
        self,
        lm: ModelHandle,
        texts: Sequence[str],
        *,
        site: str,
        position: Position,
        dtype: torch.dtype | None,
    ) -> str:
        """The entry name for these inputs (layers excluded: an entry grows by layer)."""
        parts = {
            "format": FORMAT,
            "model": model_fingerprint(lm),
            "texts": texts_digest(texts),
            "site": site,
            "position": _position_key(position),
            "dtype": str(dtype or torch.float32),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    # ------------------------------------------------------------ load/store
    def load(self, key: str, layers: Sequence[int] | None = None) -> Activations | None:
        """The entry's activations (only ``layers`` if given and all present), or None on a miss."""
        from safetensors import safe_open

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads(handle.metadata()["steerlab_acts"])
                stored = {int(name.split(".")[1]) for name in handle.keys()}  # noqa: SIM118 - safe_open is not iterable
                wanted = stored if layers is None else set(layers)
                present = wanted & stored
                acts = {layer: handle.get_tensor(f"layer.{layer}") for layer in sorted(present)}
        except Exception:  # a truncated or foreign file is a miss, and will be overwritten
            return None
        norms = {int(k): float(v) for k, v in meta.get("norms", {}).items() if int(k) in acts}
        position = tuple(meta["position"]) if isinstance(meta["position"], list) else meta["position"]
        return Activations(acts, norms, meta["site"], position)

    def store(self, key: str, acts: Activations) -> Path:
        """Write (replace) an entry atomically."""
        from safetensors.torch import save_file

        from steerlab.interop.atomic import atomic_write

        self.root.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "site": acts.site,
            "position": _position_key(acts.position),
            "norms": {str(k): v for k, v in acts.norms.items()},
        }
        tensors = {f"layer.{layer}": t.contiguous() for layer, t in acts.acts.items()}
        header = {"steerlab_acts": json.dumps(meta)}
        path = self.path(key)
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
        return path

    # ----------------------------------------------------------------- read
    def read(
        self,
        lm: ModelHandle,
        texts: Sequence[str],
        layers: Sequence[int],
        *,
        site: str = "resid",
        position: Position = "last",
        batch_size: int = 32,
        progress: bool = False,
        dtype: torch.dtype | None = None,
    ) -> Activations:
        """Like :func:`steerlab.reader.read`, but served from the cache where possible."""
        if not layers:
            raise DataError("no layers requested")
        layers = sorted({int(layer) for layer in layers})
        key = self.key(lm, texts, site=site, position=position, dtype=dtype)
        cached = self.load(key)
        have = cached.acts if cached is not None else {}
        missing = [layer for layer in layers if layer not in have]
        self.hits += len(layers) - len(missing)
        self.misses += len(missing)
        if not missing:
            return Activations(
                {k: have[k] for k in layers},
                {k: cached.norms[k] for k in layers if k in cached.norms},
                site,
                position,
            )
        fresh = read(
            lm,
            texts,
            missing,
            site=site,
            position=position,
            batch_size=batch_size,
            progress=progress,
            dtype=dtype,
        )
        merged = Activations(
            {**have, **fresh.acts}, {**(cached.norms if cached else {}), **fresh.norms}, site, position
        )
        self.store(key, merged)
        return Activations(
            {k: merged.acts[k] for k in layers},
            {k: merged.norms[k] for k in layers if k in merged.norms},
            site,
            position,
        )

    def clear(self) -> int:
        """Delete every entry; returns how many were removed."""
        removed = 0
        if self.root.is_dir():
            for path in self.root.glob("*.safetensors"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def as_cache(cache: ActCache | str | os.PathLike | bool | None) -> ActCache | None:
    """Accept an :class:`ActCache`, a folder, ``True`` (the default folder) or ``None``/``False`` (off)."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return ActCache()
    if isinstance(cache, ActCache):
        return cache
    if isinstance(cache, str | os.PathLike):
        return ActCache(Path(cache))
    raise DataError(f"cache must be an ActCache, a folder path, True or None; got {type(cache).__name__}")


def cached_read(
    lm: ModelHandle, texts: Sequence[str], layers: Sequence[int], *, cache: Any = None, **options: Any
) -> Activations:
    """:func:`steerlab.reader.read` through ``cache`` when one is given (see :func:`as_cache`)."""
    store = as_cache(cache)
    if store is None:
        return read(lm, texts, layers, **options)
    return store.read(lm, texts, layers, **options)
