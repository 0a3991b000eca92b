"""Write a file so that readers only ever see the old content or the complete new content.

Steering-vector files are small but precious: a half-written GGUF left behind by a crash (or by a
validation error raised halfway through a writer) looks like a valid file name to the next run and then
fails in a confusing way, or -- worse -- silently replaces a good vector.  Every writer in steerlab
therefore goes through :func:`atomic_write`: the payload is written to a temporary file *in the same
directory* (so the final rename never crosses a file system and stays atomic on POSIX and Windows), flushed
to disk, and only then moved over the target with :func:`os.replace`.  Any exception removes the temporary
file and leaves the target exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def _read_umask() -> int:
    """Return the process umask (os only exposes it through a set-and-restore call)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


# Read once at import: os.umask is process-global and racy to probe from worker threads later.
_UMASK = _read_umask()


def _fsync_file(path: Path) -> None:
    """Push the temporary file's bytes to disk before it becomes visible under the real name."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; best effort, because not every platform can open a directory."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _final_mode(target: Path) -> int:
    """Keep an existing file's permissions; give a new file the usual 0666 & ~umask.

    mkstemp creates files readable only by their owner, which would surprise anyone sharing vectors.
    """
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


def atomic_write(path: str | os.PathLike[str], writer_fn: Callable[[Path], None]) -> Path:
    """Create or replace ``path`` atomically with whatever ``writer_fn`` writes.

    ``writer_fn`` receives the path of a fresh, empty temporary file in the target's directory and must
    write the complete payload there (by path, so that libraries such as ``gguf.GGUFWriter`` that insist on
    opening files themselves can be used).  When it returns, the temporary file is fsynced and renamed over
    ``path``.  If it raises -- or anything else fails -- the temporary file is deleted, ``path`` is left
    untouched (absent if it was absent, unchanged if it existed), and the exception propagates.

    The parent directory must already exist; creating directories is the caller's decision.

    Returns the resolved target path.
    """
    target = Path(path)
    directory = target.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer_fn(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)
    return target.resolve()
