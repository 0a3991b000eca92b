"""The server's named steering vectors and conditions: preloaded from a folder, uploaded, listed, deleted.

One :class:`Registry` does the naming, storing, persisting and deleting for both; a :class:`Kind` says
what differs (how a file is read, checked and listed).

Names are chosen by the server: a client may suggest one, which is reduced to a safe slug and made
unique, and it is only ever a dictionary key (and, in a persistent registry, the stem of a file the server
names itself). Uploaded bytes are validated by writing them to a private temporary file with a
server-made name and loading it with the kind's loader against the served model; nothing a
client sends is ever used as a path.

Persistence: when the registry was preloaded from a folder with ``persist=True`` (``steerlab serve
--vectors DIR`` without ``--ephemeral``), an upload is written there atomically as ``<name>.safetensors``
before it is registered, and a delete removes the entry's file, so a restart sees the same vectors
and conditions.
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
from typing import Any, Generic, TypeVar

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


def _vector_fits(vector: SteeringVector, lm: Any, max_notes: int | None) -> None:
    vector.check_fits(lm.anatomy, lm.model_id)
    problems = metadata_problems(vector, max_notes=max_notes)
    if problems:
        raise VectorError("the vector's record is too large to serve: " + "; ".join(problems))


def _describe_vector(v: SteeringVector) -> dict[str, Any]:
    return {
        "model_id": clip(v.model_id or "", MAX_LABEL),
        "method": clip(v.method or "", MAX_LABEL),
        "site": clip(v.site or "", MAX_LABEL),
        "layers": v.layers,
        "width": v.width,
        "defaults": v.defaults,
        "notes": clip(v.notes or "", MAX_NOTES),
        "has_norms": bool(v.norms),
    }


def _condition_fits(condition: Condition, lm: Any, max_notes: int | None) -> None:
    try:
        condition.check_fits(lm.anatomy, lm.model_id)
    except SteerlabError as exc:
        raise VectorError(str(exc)) from None
    if len(condition.model_id or "") > MAX_LABEL:
        raise VectorError(f"the condition's model_id is over {MAX_LABEL} characters")


def _describe_condition(c: Condition) -> dict[str, Any]:
    diagnostics = c.diagnostics if isinstance(c.diagnostics, dict) else {}
    return {
        "model_id": clip(c.model_id, MAX_LABEL),
        "layer": c.layer,
        "threshold": c.threshold,
        "comparison": c.comparison,
        "skip": c.skip,
        "width": c.width,
        "held_out_f1": diagnostics.get("held_out_f1"),
        "held_out_accuracy": diagnostics.get("held_out_accuracy"),
    }


@dataclass(frozen=True)
class Kind(Generic[T]):
    """What a registry stores: its noun, how a file of it is read, checked against the served model and
    described in listings. Vectors and conditions differ only here; storing, naming, persisting and
    deleting are the same code (:class:`Registry`)."""

    noun: str
    load: Callable[[Path, Any], T]
    fits: Callable[[T, Any, int | None], None]
    describe: Callable[[T], dict[str, Any]]
    upload_name: str  # the private temporary file's name (a vector upload may be any of its formats)


VECTOR = Kind[SteeringVector](
    "vector", lambda path, lm: SteeringVector.load(path, lm), _vector_fits, _describe_vector, "upload.bin"
)
CONDITION = Kind[Condition](
    "condition",
    lambda path, lm: Condition.load(path, lm),
    _condition_fits,
    _describe_condition,
    "upload.safetensors",
)


@dataclass
class Entry(Generic[T]):
    """One registered item (vector or condition), where it came from, and the file that holds it (if any)."""

    name: str
    item: T
    kind: Kind[T]
    source: str  # "preload", "upload" or "memory"
    created: int = field(default_factory=lambda: int(time.time()))
    path: Path | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "object": f"steering.{self.kind.noun}",
            "created": self.created,
            "source": self.source,
            **self.kind.describe(self.item),
        }


class Registry(Generic[T]):
    """Thread-safe name -> item map for one served model, optionally mirrored to a folder.

    Items are saved as ``<folder>/<name>.safetensors`` (both kinds have a safetensors form), so a name is
    taken while any vector or condition file of that stem is in the folder: the two registries of a
    server share the folder without clobbering each other's files.
    """

    def __init__(self, lm: Any, kind: Kind[T], max_items: int = 256) -> None:
        self.lm = lm
        self.kind = kind
        self.max_items = max_items
        self._lock = threading.Lock()
        self._entries: dict[str, Entry[T]] = {}
        self.folder: Path | None = None  # where uploads/deletes are persisted; None: memory only
        self.skipped: list[tuple[str, str]] = []  # (file name, reason) of files preload could not use

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

    def entries(self) -> list[Entry[T]]:
        with self._lock:
            return [self._entries[k] for k in sorted(self._entries)]

    def get(self, name: str) -> Entry[T]:
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            raise KeyError(name)
        return entry

    def _taken(self, name: str) -> bool:
        """A name is taken by an entry, or (persistent) by any vector or condition file in the folder."""
        if name in self._entries:
            return True
        return self.folder is not None and any(
            (self.folder / f"{name}{suffix}").exists() for suffix in VECTOR_SUFFIXES
        )

    def add(
        self,
        name_hint: str,
        item: T,
        source: str = "memory",
        *,
        persist: bool = False,
        path: Path | None = None,
    ) -> Entry[T]:
        """Register ``item``; the stored name is a slug of ``name_hint`` made unique (``-2``, ``-3``...).

        With ``persist`` and a persistent registry the item is first written (atomically) to
        ``<folder>/<name>.safetensors``; if that fails nothing is registered.
        """
        self.kind.fits(item, self.lm, None)
        base = slug(name_hint, self.kind.noun)
        noun = self.kind.noun
        with self._lock:
            if len(self._entries) >= self.max_items:
                raise VectorError(f"the {noun} registry is full ({self.max_items} {noun}s); delete one first")
            name, n = base, 1
            while self._taken(name):
                n += 1
                suffix = f"-{n}"
                name = base[: MAX_NAME - len(suffix)] + suffix
            if persist and self.folder is not None:
                path = self._store(name, item)
            entry = Entry(name, item, self.kind, source, path=path)
            self._entries[name] = entry
        return entry

    def _store(self, name: str, item: T) -> Path:
        assert self.folder is not None
        target = self.folder / f"{name}{STORED_SUFFIX}"
        try:
            return item.save(target)  # type: ignore[attr-defined]  # both kinds save atomically
        except OSError as exc:
            raise APIError(
                500,
                f"the {self.kind.noun} could not be stored in the vectors folder ({exc.strerror or exc}); "
                "nothing was registered",
                code="storage_error",
            ) from exc

    def remove(self, name: str) -> Entry[T]:
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
                        f"the {self.kind.noun}'s file could not be deleted ({exc.strerror or exc}); "
                        "it stays registered",
                        code="storage_error",
                    ) from exc
            del self._entries[name]
        return entry

    def add_bytes(self, data: bytes, name_hint: str) -> Entry[T]:
        """Validate uploaded file bytes with the kind's own loader and register them.

        Notes longer than :data:`MAX_NOTES` are refused here (a local file's are clipped in listings
        instead). In a persistent registry the item is stored before it is registered.
        """
        item = load_upload(
            data, self.kind.upload_name, lambda path: self.kind.load(path, self.lm), self.kind.noun
        )
        self.kind.fits(item, self.lm, MAX_NOTES)
        return self.add(name_hint, item, "upload", persist=True)

    def preload_file(self, path: Path) -> Entry[T] | None:
        """Register the file ``path`` under its stem, or note in :attr:`skipped` why not (one bad file must
        not stop the server)."""
        try:
            return self.add(path.stem, self.kind.load(path, self.lm), "preload", path=path)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, SteerlabError) else f"{type(exc).__name__}: {exc}"
            self.skipped.append((path.name, reason))
            log.warning("skipping %s %s in %s: %s", self.kind.noun, path.name, path.parent, reason)
            return None


class VectorRegistry(Registry[SteeringVector]):
    """The served model's vectors, with its conditions beside them (:attr:`conditions`), both preloaded
    from and persisted to one folder."""

    def __init__(self, lm: Any, max_vectors: int = 256) -> None:
        super().__init__(lm, VECTOR, max_vectors)
        self.conditions: Registry[Condition] = Registry(lm, CONDITION, max_vectors)
        self.conditions.skipped = self.skipped  # one list of skipped files for the whole folder

    @property
    def max_vectors(self) -> int:
        return self.max_items

    def preload(self, folder: str | Path, *, persist: bool = True) -> list[Entry[SteeringVector]]:
        """Load every vector and condition file in ``folder`` (not recursive), named after its file stem.

        A file that cannot be used (unreadable, malformed, made for another model, over the registry's
        size) is skipped with a warning and listed in :attr:`skipped`; an empty folder is fine. With
        ``persist`` the folder becomes both registries' store for later uploads and deletes.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise VectorError(f"--vectors must be a folder of vector files; {folder} is not a folder")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VECTOR_SUFFIXES)
        entries = []
        for path in files:
            if path.suffix.lower() == STORED_SUFFIX and is_condition_file(path):
                self.conditions.preload_file(path)
            elif (entry := self.preload_file(path)) is not None:
                entries.append(entry)
        if persist:  # set last: while preloading, a file's own name must not count as taken
            self.folder = self.conditions.folder = folder
        return entries
