"""tinylsm's own files in a store directory: the lock and the size record.

The Rust crate ignores every name in the directory but ``log`` and
``sstables``, so these stay compatible with it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import zlib
from typing import List, NamedTuple, Optional, Tuple

from ._format import LOCK_NAME, META_NAME, TMP_SUFFIX, check_sizes
from ._fs import Files
from .errors import CorruptionError, LockedError

_FORMAT = "tiny-lsm"
#: A size record is one short line; anything longer is not one of ours.
MAX_META_BYTES = 512

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class StoreLock:
    """The lock that keeps a second writer out of a store directory.

    The lock is an exclusive ``flock`` on the *directory itself*: deleting
    or replacing a file in it cannot let a second writer in, as it could
    when the lock lived on a file that an operator may delete.  A writer
    also takes ``tinylsm.lock`` exclusively, so that tinylsm 0.1, which
    locks only that file, stays out too.  Read-only opens take neither (they open files beside the
    writer under ``_gate.Gate``).  The lock belongs to the open file
    description: it goes away with the last descriptor, so a forked child
    must close its inherited copies at once (``close``), or the parent
    could not reopen after closing.  Descriptors are close-on-exec.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.fds: List[int] = []
        try:
            fd = os.open(directory, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
            self.fds.append(fd)
            self._flock(fd, PROBE_PATIENCE)
            # the path must still name the directory we locked (not one
            # swapped in between the open and the lock)
            st, locked = os.stat(directory), os.fstat(fd)
            if (st.st_dev, st.st_ino) != (locked.st_dev, locked.st_ino):
                raise LockedError(f"store {directory!r} was replaced while it was being opened")
        except BaseException:
            self.close()
            raise

    def lock_file(self) -> None:
        """Also lock ``tinylsm.lock`` (created if need be; call this once the
        directory is known to be a store's)."""
        path = os.path.join(self.directory, LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _CLOEXEC | os.O_NONBLOCK, 0o644)
        self.fds.append(fd)
        self._flock(fd, 0.0)

    def _flock(self, fd: int, patience: float) -> None:
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                raise LockedError(f"store {self.directory!r} is already open for writing "
                                  "in this or another process") from None
            time.sleep(0.001)

    def close(self) -> None:
        """Give the lock up (in a forked child: give up the child's copies,
        which leaves the parent's lock in place)."""
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)


#: Seconds a writer's opening waits out a holder of the directory's lock: a
#: ``writer_present`` probe lets go within microseconds.
PROBE_PATIENCE = 0.5


def writer_present(directory: str) -> bool:
    """Whether a writer (this tinylsm or the one before it) has the store
    open now.

    Probes the directory's lock with a shared lock given back at once; a
    writer opening at that instant waits it out (``PROBE_PATIENCE``).
    Changes nothing on disk, and sees the writer whatever became of
    ``tinylsm.lock``.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _canonical(key_size: int, value_size: int) -> bytes:
    return json.dumps(
        {"format": _FORMAT, "key_size": key_size, "value_size": value_size}
    ).encode()


class Record(NamedTuple):
    """A size record as read."""

    sizes: Tuple[int, int]  # (key_size, value_size)
    legacy: bool  # no checksum (written by tinylsm 0.1): a writer rewrites it


def read_record(files: Files, directory: str) -> Optional[Record]:
    """The size record in the directory, or None when there is none.

    Any damage (too long, not JSON, other fields, sizes out of range, a
    checksum that does not match) is a ``CorruptionError`` naming the file.
    A record without a checksum, as tinylsm 0.1 wrote them, is accepted if
    it is otherwise exactly right.
    """
    path = os.path.join(directory, META_NAME)
    try:
        fd = files.open_ro(path)
    except FileNotFoundError:
        return None
    try:
        size = files.size(fd)
        if size > MAX_META_BYTES:
            raise CorruptionError(f"metadata file {path!r} is unreadable: {size} bytes, "
                                  f"expected at most {MAX_META_BYTES}")
        raw = files.pread_all(fd, size)
    finally:
        files.close(fd)
    return Record(*_parse(raw, path))


def read_sizes(files: Files, directory: str) -> Optional[Tuple[int, int]]:
    """The (key_size, value_size) recorded in the directory, or None."""
    record = read_record(files, directory)
    return None if record is None else record.sizes


def _parse(raw: bytes, path: str) -> Tuple[Tuple[int, int], bool]:
    try:
        try:
            meta = json.loads(raw.decode("utf-8"))
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if not isinstance(meta, dict):
            raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
        fields = set(meta)
        legacy = fields == {"format", "key_size", "value_size"}
        if not legacy and fields != {"format", "key_size", "value_size", "crc32"}:
            raise ValueError(f"unexpected fields {sorted(fields)}")
        if meta["format"] != _FORMAT:
            raise ValueError(f"format is {meta['format']!r}, expected {_FORMAT!r}")
        k, v = meta["key_size"], meta["value_size"]
        check_sizes(k, v)
        if not legacy and meta["crc32"] != zlib.crc32(_canonical(k, v)):
            raise ValueError(f"checksum mismatch (stored {meta['crc32']!r}, "
                             f"computed {zlib.crc32(_canonical(k, v))})")
        return (k, v), legacy
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CorruptionError(f"metadata file {path!r} is damaged: {exc}; nothing "
                              "was changed (it records the store's key and value "
                              "sizes; restore it from a backup)") from None


def write_sizes(files: Files, directory: str, key_size: int, value_size: int) -> None:
    """Record the sizes durably (write a temporary file, rename, fsync dir)."""
    data = json.dumps({"format": _FORMAT, "key_size": key_size, "value_size": value_size,
                       "crc32": zlib.crc32(_canonical(key_size, value_size))}).encode() + b"\n"
    tmp = os.path.join(directory, META_NAME + TMP_SUFFIX)
    files.write_new_file(tmp, data)
    files.rename(tmp, os.path.join(directory, META_NAME))
    files.fsync_dir(directory)
