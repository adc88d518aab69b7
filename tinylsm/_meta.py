"""tinylsm's own files in a store directory: the lock and the size record.

The Rust crate ignores every name in the directory but ``log`` and
``sstables``, so these stay compatible with it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
from typing import Optional, Tuple

from ._fs import Files
from .errors import CorruptionError, LockedError

LOCK_NAME = "tinylsm.lock"
META_NAME = "tinylsm.meta"
_FORMAT = "tiny-lsm"


def lock(directory: str, shared: bool) -> int:
    """Take the directory's lock and return its descriptor.

    A writer takes it exclusively and readers shared, so a second writer,
    in this process or another, fails at once with ``LockedError``.  The lock
    belongs to the open file, so it goes away with the process.
    """
    path = os.path.join(directory, LOCK_NAME)
    cloexec = getattr(os, "O_CLOEXEC", 0)
    if shared:
        try:
            fd = os.open(path, os.O_RDONLY | cloexec)
        except FileNotFoundError:
            # No tinylsm writer has ever opened the directory (a writer
            # creates the file before it changes anything), so none holds it
            # now.  A reader must not create it: read-only opening changes
            # nothing on disk.  Returns no lock (-1).
            return -1
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | cloexec, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise LockedError(
                f"store {directory!r} is already open"
                + (" for writing" if shared else "")
                + " in this or another process"
            ) from None
        raise
    return fd


def read_sizes(files: Files, directory: str) -> Optional[Tuple[int, int]]:
    """The (key_size, value_size) recorded in the directory, or None."""
    path = os.path.join(directory, META_NAME)
    try:
        raw = files.read_file(path)
    except FileNotFoundError:
        return None
    try:
        meta = json.loads(raw)
        if meta.get("format") != _FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}")
        k, v = meta["key_size"], meta["value_size"]
        if not (isinstance(k, int) and isinstance(v, int)):
            raise ValueError("sizes are not integers")
        return k, v
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptionError(f"metadata file {path!r} is unreadable: {exc}") from None


def write_sizes(files: Files, directory: str, key_size: int, value_size: int) -> None:
    """Record the sizes durably (write a temporary file, rename, fsync dir)."""
    data = json.dumps(
        {"format": _FORMAT, "key_size": key_size, "value_size": value_size}
    ).encode() + b"\n"
    tmp = os.path.join(directory, META_NAME + ".tmp")
    files.write_new_file(tmp, data)
    files.rename(tmp, os.path.join(directory, META_NAME))
    files.fsync_dir(directory)
