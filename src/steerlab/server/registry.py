"""The server's named steering vectors: preloaded from a folder, uploaded, listed, deleted.

Names are chosen by the server: a client may suggest one, which is reduced to a safe slug and made
unique, and it is only ever a dictionary key (and, in a persistent registry, the stem of a file the server
names itself). Uploaded bytes are validated by writing them to a private temporary file with a
server-made name and loading it with :meth:`SteeringVector.load` against the served model; nothing a
client sends is ever used as a path.

Persistence: when the registry was preloaded from a folder with ``persist=True`` (``steerlab serve
--vectors DIR`` without ``--ephemeral``), an upload is written there atomically as ``<name>.safetensors``
before it is registered, and a delete removes the entry's file, so a restart sees the same vectors.
Otherwise uploads and deletes live in memory only.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from steerlab.condition_io import is_condition_file
from steerlab.engine.condition import Condition
from steerlab.errors import SteerlabError, VectorError
from steerlab.server.errors import APIError
from steerlab.vector import SteeringVector

log = logging.getLogger("steerlab.server")

VECTOR_SUFFIXES = (".safetensors", ".gguf", ".svec")
STORED_SUFFIX = ".safetensors"
_SLUG = re.compile(r"[^a-z0-9_.-]+")
MAX_NAME = 64
# Bounds on what a listing repeats for every vector, so that the list route stays small.
MAX_NOTES = 4096  # characters; longer notes are refused on upload and clipped (with a marker) in listings
MAX_LABEL = 256  # characters of model_id, method, site
MAX_DEFAULTS_JSON = 4096  # bytes of the recorded defaults as JSON


def slug(text: str, fallback: str = "vector") -> str:
    """A safe registry name: lowercase letters, digits, ``_ . -``; no leading dot; at most 64 chars."""
    name = _SLUG.sub("-", text.strip().lower()).strip("-.")[:MAX_NAME].strip("-.")
    return name or fallback


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was, so a reader knows it was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f" [... truncated: {len(text)} characters in all]"


def metadata_problems(vector: SteeringVector, *, max_notes: int | None = None) -> list[str]:
    """What in ``vector``'s descriptive record is too large to list (empty when it is fine).

    Labels and recorded defaults are short by nature, so oversized ones mean a malformed file; notes are
    free text and only limited where asked (uploads), since a local file's long notes are clipped instead.
    """
    problems = []
    for name in ("model_id", "method", "site"):
        value = str(getattr(vector, name) or "")
        if len(value) > MAX_LABEL:
            problems.append(f"{name} is {len(value)} characters (at most {MAX_LABEL})")
    try:
        size = len(json.dumps(vector.defaults, default=str))
    except (TypeError, ValueError, RecursionError):
        problems.append("the recorded defaults are not JSON")
    else:
        if size > MAX_DEFAULTS_JSON:
            problems.append(f"the recorded defaults are {size} bytes of JSON (at most {MAX_DEFAULTS_JSON})")
    notes = vector.notes or ""
    if max_notes is not None and len(notes) > max_notes:
        problems.append(f"notes are {len(notes)} characters (at most {max_notes})")
    return problems


T = TypeVar("T")


def load_upload(data: bytes, filename: str, load: Callable[[Path], T], what: str) -> T:
    """Read uploaded bytes with a file loader, from a private temporary file with a server-made name.

    Every loader's own checks apply (header bounds, model and width); anything else a malformed file makes
    a parser raise reads as a bad upload, never as a server error.
    """
    if not data:
        raise VectorError("the uploaded file is empty")
    with tempfile.TemporaryDirectory(prefix="steerlab-upload-") as folder:
        path = Path(folder) / filename
        path.write_bytes(data)
        try:
            return load(path)
        except SteerlabError:
            raise
        except Exception as exc:
            raise VectorError(f"the uploaded file is not a readable {what} ({type(exc).__name__})") from exc


@dataclass
class Entry:
    """One registered vector, where it came from, and the file that holds it (if any)."""

    name: str
    vector: SteeringVector
    source: str  # "preload", "upload" or "memory"
    created: int = field(default_factory=lambda: int(time.time()))
    path: Path | None = None

    def describe(self) -> dict[str, Any]:
        v = self.vector
        return {
            "id": self.name,
            "object": "steering.vector",
            "created": self.created,
            "source": self.source,
            "model_id": clip(v.model_id or "", MAX_LABEL),
            "method": clip(v.method or "", MAX_LABEL),
            "site": clip(v.site or "", MAX_LABEL),
            "layers": v.layers,
            "width": v.width,
            "defaults": v.defaults,
            "notes": clip(v.notes or "", MAX_NOTES),
            "has_norms": bool(v.norms),
        }


class VectorRegistry:
    """Thread-safe name -> vector map for one served model, optionally mirrored to a folder."""

    def __init__(self, lm: Any, max_vectors: int = 256) -> None:
        self.lm = lm
        self.max_vectors = max_vectors
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self.folder: Path | None = None  # where uploads/deletes are persisted; None: memory only
        self.skipped: list[tuple[str, str]] = []  # (file name, reason) of files preload could not use
        self.conditions = ConditionRegistry(lm)  # condition files found by preload land here

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._entries

    @property
    def persistent(self) -> bool:
        return self.folder is not None

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

    def _taken(self, name: str) -> bool:
        """A name is taken by an entry, or (persistent) by any vector file in the folder, readable or not."""
        if name in self._entries:
            return True
        return self.folder is not None and any(
            (self.folder / f"{name}{suffix}").exists() for suffix in VECTOR_SUFFIXES
        )

    def _check(self, vector: SteeringVector, max_notes: int | None = None) -> None:
        vector.check_fits(self.lm.anatomy, self.lm.model_id)
        problems = metadata_problems(vector, max_notes=max_notes)
        if problems:
            raise VectorError("the vector's record is too large to serve: " + "; ".join(problems))

    def add(
        self,
        name_hint: str,
        vector: SteeringVector,
        source: str = "memory",
        *,
        persist: bool = False,
        path: Path | None = None,
    ) -> Entry:
        """Register ``vector``; the stored name is a slug of ``name_hint`` made unique (``-2``, ``-3``...).

        With ``persist`` and a persistent registry the vector is first written (atomically) to
        ``<folder>/<name>.safetensors``; if that fails nothing is registered.
        """
        self._check(vector)
        base = slug(name_hint)
        with self._lock:
            if len(self._entries) >= self.max_vectors:
                raise VectorError(f"the registry is full ({self.max_vectors} vectors); delete one first")
            name, n = base, 1
            while self._taken(name):
                n += 1
                suffix = f"-{n}"
                name = base[: MAX_NAME - len(suffix)] + suffix
            if persist and self.folder is not None:
                path = self._store(name, vector)
            entry = Entry(name, vector, source, path=path)
            self._entries[name] = entry
        return entry

    def _store(self, name: str, vector: SteeringVector) -> Path:
        assert self.folder is not None
        target = self.folder / f"{name}{STORED_SUFFIX}"
        try:
            return vector.save(target)
        except OSError as exc:
            raise APIError(
                500,
                f"the vector could not be stored in the vectors folder ({exc.strerror or exc}); "
                "nothing was registered",
                code="storage_error",
            ) from exc

    def remove(self, name: str) -> Entry:
        """Unregister ``name``; in a persistent registry its file is deleted too, so it stays gone."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise KeyError(name)
            if self.folder is not None and entry.path is not None:
                try:
                    entry.path.unlink(missing_ok=True)
                except OSError as exc:
                    raise APIError(
                        500,
                        f"the vector's file could not be deleted ({exc.strerror or exc}); it stays registered",
                        code="storage_error",
                    ) from exc
            del self._entries[name]
        return entry

    def add_bytes(self, data: bytes, name_hint: str) -> Entry:
        """Validate uploaded file bytes (safetensors / GGUF control vector / .svec) and register them.

        Notes longer than :data:`MAX_NOTES` are refused here (a local file's are clipped in listings
        instead). In a persistent registry the vector is stored before it is registered.
        """
        vector = load_upload(
            data, "upload.bin", lambda path: SteeringVector.load(path, self.lm), "steering vector"
        )
        self._check(vector, max_notes=MAX_NOTES)
        return self.add(name_hint, vector, "upload", persist=True)

    def preload(self, folder: str | Path, *, persist: bool = True) -> list[Entry]:
        """Load every vector file in ``folder`` (not recursive), named after its file stem.

        A file that cannot be used (unreadable, malformed, made for another model, over the registry's
        size) is skipped with a warning and listed in :attr:`skipped`; an empty folder is fine. With
        ``persist`` the folder becomes the registry's store for later uploads and deletes.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise VectorError(f"--vectors must be a folder of vector files; {folder} is not a folder")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VECTOR_SUFFIXES)
        entries = []
        for path in files:
            if path.suffix.lower() == STORED_SUFFIX and is_condition_file(path):
                self.conditions.preload_file(path, self.skipped)
                continue
            try:
                vector = SteeringVector.load(path, self.lm)
                entries.append(self.add(path.stem, vector, "preload", path=path))
            except Exception as exc:  # one bad file must not stop the server; say which and why
                reason = str(exc) if isinstance(exc, SteerlabError) else f"{type(exc).__name__}: {exc}"
                self.skipped.append((path.name, reason))
                log.warning("skipping %s in %s: %s", path.name, folder, reason)
        if persist:  # set last: while preloading, a file's own name must not count as taken
            self.folder = folder
        return entries


@dataclass
class ConditionEntry:
    """One registered condition and where it came from."""

    name: str
    condition: Condition
    source: str  # "preload", "upload" or "memory"
    created: int = field(default_factory=lambda: int(time.time()))

    def describe(self) -> dict[str, Any]:
        c = self.condition
        diagnostics = c.diagnostics if isinstance(c.diagnostics, dict) else {}
        return {
            "id": self.name,
            "object": "steering.condition",
            "created": self.created,
            "source": self.source,
            "model_id": clip(c.model_id, MAX_LABEL),
            "layer": c.layer,
            "threshold": c.threshold,
            "comparison": c.comparison,
            "skip": c.skip,
            "width": c.width,
            "held_out_f1": diagnostics.get("held_out_f1"),
            "held_out_accuracy": diagnostics.get("held_out_accuracy"),
        }


class ConditionRegistry:
    """Thread-safe name -> condition map (in memory; preloaded from the vectors folder's condition files).

    Uploads are validated like vectors: written to a private temporary file with a server-made name and
    loaded with :meth:`Condition.load` against the served model (another model or width is refused).
    """

    def __init__(self, lm: Any, max_conditions: int = 256) -> None:
        self.lm = lm
        self.max_conditions = max_conditions
        self._lock = threading.Lock()
        self._entries: dict[str, ConditionEntry] = {}

    def entries(self) -> list[ConditionEntry]:
        with self._lock:
            return [self._entries[k] for k in sorted(self._entries)]

    def get(self, name: str) -> ConditionEntry:
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            raise KeyError(name)
        return entry

    def add(self, name_hint: str, condition: Condition, source: str = "memory") -> ConditionEntry:
        """Register ``condition`` under a unique slug of ``name_hint``."""
        try:
            condition.check_fits(self.lm.anatomy, self.lm.model_id)
        except SteerlabError as exc:
            raise VectorError(str(exc)) from None
        base = slug(name_hint, "condition")
        with self._lock:
            if len(self._entries) >= self.max_conditions:
                raise VectorError(f"the condition registry is full ({self.max_conditions}); delete one first")
            name, n = base, 1
            while name in self._entries:
                n += 1
                suffix = f"-{n}"
                name = base[: MAX_NAME - len(suffix)] + suffix
            entry = ConditionEntry(name, condition, source)
            self._entries[name] = entry
        return entry

    def remove(self, name: str) -> ConditionEntry:
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is None:
            raise KeyError(name)
        return entry

    def add_bytes(self, data: bytes, name_hint: str) -> ConditionEntry:
        """Validate an uploaded condition file (safetensors with a condition record) and register it."""
        condition = load_upload(
            data, "upload.safetensors", lambda path: Condition.load(path, self.lm), "condition"
        )
        return self.add(name_hint, condition, "upload")

    def preload_file(self, path: Path, skipped: list[tuple[str, str]]) -> None:
        """Register the condition file ``path`` under its stem, or note in ``skipped`` why not."""
        try:
            self.add(path.stem, Condition.load(path, self.lm), "preload")
        except Exception as exc:  # one bad file must not stop the server
            reason = str(exc) if isinstance(exc, SteerlabError) else f"{type(exc).__name__}: {exc}"
            skipped.append((path.name, reason))
            log.warning("skipping condition %s: %s", path.name, reason)
