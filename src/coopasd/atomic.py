"""Atomic file writes: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from coopasd.errors import OutputError


def write_atomic(path: Path, data: str | bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part.

    ``mode`` (e.g. ``0o600`` for a private key) is set before the file appears under its name.
    Raises :class:`OutputError` naming the file when it cannot be written (no permission, a file where
    a folder should be, a full disk, ...).
    """
    path = Path(path)
    try:
        return _write(path, data, mode)
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err.strerror or err})") from err


def _write(path: Path, data: str | bytes, mode: int | None) -> Path:
    if path.is_dir():
        raise IsADirectoryError(21, "is a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600 files; results should be readable like any other
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
