"""The server's named steering vectors: preloaded from a folder, uploaded, listed, deleted.

Names are chosen by the server: a client may suggest one, which is reduced to a safe slug and made
unique, and it is only ever a dictionary key. Uploaded bytes are validated by writing them to a private
temporary file with a server-made name and loading it with :meth:`SteeringVector.load` against the served
model; nothing a client sends is ever used as a path.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError, VectorError
from steerlab.vector import SteeringVector

VECTOR_SUFFIXES = (".safetensors", ".gguf", ".svec")
_SLUG = re.compile(r"[^a-z0-9_.-]+")
MAX_NAME = 64


def slug(text: str, fallback: str = "vector") -> str:
    """A safe registry name: lowercase letters, digits, ``_ . -``; no leading dot; at most 64 chars."""
    name = _SLUG.sub("-", text.strip().lower()).strip("-.")[:MAX_NAME].strip("-.")
    return name or fallback


@dataclass
class Entry:
    """One registered vector and where it came from."""

    name: str
    vector: SteeringVector
    source: str  # "preload", "upload" or "memory"
    created: int = field(default_factory=lambda: int(time.time()))

    def describe(self) -> dict[str, Any]:
        v = self.vector
        return {
            "id": self.name,
            "object": "steering.vector",
            "created": self.created,
            "source": self.source,
            "model_id": v.model_id,
            "method": v.method,
            "site": v.site,
            "layers": v.layers,
            "width": v.width,
            "defaults": v.defaults,
            "notes": v.notes,
            "has_norms": bool(v.norms),
        }


class VectorRegistry:
    """Thread-safe name -> vector map for one served model."""

    def __init__(self, lm: Any, max_vectors: int = 256) -> None:
        self.lm = lm
        self.max_vectors = max_vectors
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._entries

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def entries(self) -> list[Entry]:
        with self._lock:
            return [self._entries[k] for k in sorted(self._entries)]

    def get(self, name: str) -> Entry:
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            raise KeyError(name)
        return entry

    def add(self, name_hint: str, vector: SteeringVector, source: str = "memory") -> Entry:
        """Register ``vector``; the stored name is a slug of ``name_hint`` made unique (``-2``, ``-3``...)."""
        vector.check_fits(self.lm.anatomy, self.lm.model_id)
        base = slug(name_hint)
        with self._lock:
            if len(self._entries) >= self.max_vectors:
                raise VectorError(f"the registry is full ({self.max_vectors} vectors); delete one first")
            name, n = base, 1
            while name in self._entries:
                n += 1
                suffix = f"-{n}"
                name = base[: MAX_NAME - len(suffix)] + suffix
            entry = Entry(name, vector, source)
            self._entries[name] = entry
        return entry

    def remove(self, name: str) -> Entry:
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is None:
            raise KeyError(name)
        return entry

    def add_bytes(self, data: bytes, name_hint: str) -> Entry:
        """Validate uploaded file bytes (safetensors / GGUF control vector / .svec) and register them."""
        if not data:
            raise VectorError("the uploaded file is empty")
        with tempfile.TemporaryDirectory(prefix="steerlab-upload-") as folder:
            path = Path(folder) / "upload.bin"
            path.write_bytes(data)
            try:
                vector = SteeringVector.load(path, self.lm)
            except SteerlabError:
                raise
            except Exception as exc:  # a malformed file must read as a bad upload, whatever the parser raised
                raise VectorError(
                    f"the uploaded file is not a readable steering vector ({type(exc).__name__})"
                ) from exc
        return self.add(name_hint, vector, "upload")

    def preload(self, folder: str | Path) -> list[Entry]:
        """Load every vector file in ``folder`` (not recursive), named after its file stem."""
        folder = Path(folder)
        if not folder.is_dir():
            raise VectorError(f"--vectors must be a folder of vector files; {folder} is not a folder")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VECTOR_SUFFIXES)
        if not files:
            raise VectorError(f"no vector files ({', '.join(VECTOR_SUFFIXES)}) in {folder}")
        entries = []
        for path in files:
            try:
                vector = SteeringVector.load(path, self.lm)
            except SteerlabError as exc:
                raise VectorError(f"cannot preload {path.name}: {exc}") from exc
            entries.append(self.add(path.stem, vector, "preload"))
        return entries
