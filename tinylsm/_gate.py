"""The gate: how a read-only open beside a writer gets a consistent set of files.

A writer changes a store's files in two kinds of step:

* steps that *add*: appending to the log, renaming a finished sstable into
  place (a rollover's new table, or a merge's output over the lowest id of
  its run);
* steps that *remove*: deleting the sstables a merge folded into its
  output, deleting an empty sstable of the Rust crate at recovery, and
  replacing the log (a rollover's switch, recovery cutting a torn tail).

A reader opens the files it needs (lists ``sstables/``, opens every table
listed, opens the log) holding the gate *shared*; the writer holds it
*exclusively* around each removing step only.  Once open, a descriptor
keeps its file's bytes, because tinylsm never changes in place a byte a
reader could take for a change: an sstable is written whole under a
temporary name; the log only grows (its frames are written after the last
one, over the zeros a writer writes ahead of them, which every reader takes
for the log's end, and only those zeros are ever cut off in place); and a
log to be cut or replaced is replaced by renaming a copy over it.  So the
reader reads its snapshot without the gate, and a reader never holds the
writer up for longer than it takes to open a few files.

Why the files a reader opens give the map after a prefix of the log (every
change flushed before the reader began among it):

* No removing step runs between the listing and the last open, so the log
  opened is the log of the listing's instant, L, with whatever was
  appended since.  Every sstable the reader lists still exists when it is
  opened.
* An sstable that appeared after the listing came from a rollover of L
  (only the rollover's switch, a removing step, retires L), so its changes
  are in L, which the reader replays whole after the tables.  The same
  holds for the part of a merge's output that came from such a table.
  Replaying a change again, later and in log order, gives the same map
  (a replay sets each key it touches to its last value in log order,
  whatever it held before), so the tables as opened, in id order, then L,
  give the map after L's prefix that the reader read.
* That prefix is L's bytes when the reader reads them, which include every
  byte a ``flush()`` had written before the reader began.

The gate is an ``flock`` on the ``sstables/`` directory itself: a directory
an operator does not delete beside a running store, unlike a lock file
(the writer's own lock is an ``flock`` on the store directory, see
``_meta.StoreLock``, so a reader never takes that one).  Both sides poll
with short sleeps rather than block, so that a writer waiting for readers
can still be stopped by ``close()``, and a reader (or a writer's opening)
stuck behind a process that never lets go ends in ``LockedError``.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from typing import Callable, Optional

from ._fs import named
from .errors import LockedError

log = logging.getLogger("tinylsm")

#: Seconds a reader waits for a writer's removing step (normally a few
#: milliseconds) before it gives up with ``LockedError``.
SHARED_TIMEOUT = 30.0
#: Seconds a writer's opening waits for readers to finish opening files.
OPENING_TIMEOUT = 30.0
#: A background step still waiting after this long logs a warning.
WARN_AFTER = 5.0
#: The longest sleep between two tries.
MAX_SLEEP = 0.005

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class Held:
    """The gate held (shared or exclusively); ``release()`` or leave the
    ``with`` block to let go.  The lock belongs to the open directory
    description and is unlocked explicitly, so a child forked meanwhile
    cannot keep it."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> "Held":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Gate:
    """The gate of the store whose sstables live in ``ssdir``."""

    __slots__ = ("ssdir",)

    def __init__(self, ssdir: str) -> None:
        self.ssdir = ssdir

    def shared(self, timeout: float = SHARED_TIMEOUT) -> Held:
        """A reader's hold, while it lists and opens the files.  Raises
        ``LockedError`` after ``timeout`` seconds of a writer holding it."""
        return self._take(fcntl.LOCK_SH, None, timeout, "read-only open")

    def exclusive(self, check: Optional[Callable[[], None]] = None,
                  timeout: Optional[float] = None, what: str = "a removing step") -> Held:
        """The writer's hold, around a removing step.  ``check()`` runs
        between tries (it raises to give up, e.g. ``Stopped``); with a
        ``timeout``, ``LockedError`` after that many seconds."""
        return self._take(fcntl.LOCK_EX, check, timeout, what)

    def _take(self, mode: int, check: Optional[Callable[[], None]],
              timeout: Optional[float], what: str) -> Held:
        try:
            fd = os.open(self.ssdir, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        except OSError as exc:
            raise named(exc, self.ssdir) from None
        try:
            start = time.monotonic()
            sleep = 0.0001
            warned = False
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    return Held(fd)
                except OSError as exc:
                    if exc.errno not in _BUSY:
                        raise named(exc, self.ssdir) from None
                if check is not None:
                    check()
                waited = time.monotonic() - start
                if timeout is not None and waited >= timeout:
                    holder = "readers are opening it" if mode == fcntl.LOCK_EX else \
                        "its writer is replacing or deleting files"
                    raise LockedError(
                        f"store {os.path.dirname(self.ssdir)!r}: gave up a {what} after "
                        f"{waited:.1f}s waiting on {self.ssdir!r}, which another "
                        f"process holds ({holder}; a process stopped in that state "
                        "holds it until it goes on or ends)")
                if not warned and waited >= WARN_AFTER:
                    warned = True
                    log.warning("tinylsm: %s of %s has waited %.0fs for %s held by "
                                "another process", what, os.path.dirname(self.ssdir),
                                waited, self.ssdir)
                time.sleep(sleep)
                sleep = min(sleep * 2, MAX_SLEEP)
        except BaseException:
            os.close(fd)
            raise
