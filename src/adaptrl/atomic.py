"""Atomic file writes, for every layer that writes files (checkpoints, run records, eval
results, caches): readers and crashes see the old file or the new one, never a partial one.
Imports nothing from the package."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_TEMP_PREFIX = ".tmp-"


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers (and a crash) see the old or the new file,
    never a partial one: temporary file in the same folder, fsync, ``os.replace``, fsync of
    the folder."""
    path = Path(path)
    temp = path.parent / f"{_TEMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    # os.open with mode 0o666 lets the umask decide the permissions, as for a plain open()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        with open(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_link(source, path) -> bool:
    """Make ``path`` a hard link to the file ``source``, replacing ``path`` atomically (readers
    see the old file or ``source``); False, with nothing changed, where the file system has no
    hard links (the caller then writes a copy)."""
    source, path = Path(source), Path(path)
    temp = path.parent / f"{_TEMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        os.link(source, temp)
    except (OSError, NotImplementedError):
        return False
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return True


def atomic_write_text(path, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); folders cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def output_problem(path, folder: bool = False) -> str | None:
    """Why ``path`` cannot be written as a file (or, with ``folder``, created as a folder), or
    None: it is a folder (a file), or not a folder (a folder), or one of its parents is a
    file. Callers check before they compute, so that a bad ``--out`` costs nothing."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            return f"{path} exists and is not a folder"
        if not folder and path.is_dir():
            return f"{path} is a folder, not a file"
        return None
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file, so {path} cannot be made"
    return None


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete temporary files left in ``folder`` by writes that were killed; the removed paths.
    Call only while no other process writes there (the runner holds the run folder's lock)."""
    folder = Path(folder)
    stale = sorted(folder.glob(_TEMP_PREFIX + "*")) if folder.is_dir() else []
    for path in stale:
        path.unlink()
    return stale
