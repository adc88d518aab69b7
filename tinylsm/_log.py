"""The write-ahead log file behind its in-memory buffer."""
from __future__ import annotations

import threading
from typing import Optional

from ._fs import Files
from .errors import Error


class LogWriter:
    """Appends frames to the log through a buffer of ``bufsize`` bytes.

    ``size`` is the length of the file, every byte of it valid frames.  Data
    is written with ``pwrite`` at ``size``, so a failed write can be cut off
    again (``truncate``) and leaves nothing half-written for later appends to
    follow.  After an error the log cannot vouch for (a failed fsync, or a
    failed cut after a failed write) the writer is *broken* and refuses
    further writes: after a failed fsync Linux may have dropped the dirty
    pages and report a later fsync as successful, so retrying would lie.
    """

    def __init__(self, files: Files, path: str, fd: int, size: int, bufsize: int) -> None:
        self.files = files
        self.path = path
        self.fd = fd
        self.size = size
        self.bufsize = bufsize
        self.buf = bytearray()
        self.broken: Optional[BaseException] = None
        #: Bytes handed to the OS since opening.
        self.written = 0
        #: Bumped each time ``reset`` empties the log.
        self.epoch = 0
        #: Bytes of the current epoch known to be fsynced.
        self.synced = 0
        # _mutex guards epoch, synced, _syncing and _waiters; the fsync
        # itself runs outside it.  Waiters are counted so that the common
        # case, one flusher, never pays for a notify.
        self._mutex = threading.Lock()
        self._sync_cv = threading.Condition(self._mutex)
        self._syncing = False  # a leader's fsync is under way
        self._waiters = 0

    @property
    def length(self) -> int:
        """Bytes of the log, written or still buffered."""
        return self.size + len(self.buf)

    def check(self) -> None:
        if self.broken is not None:
            raise Error(
                f"log {self.path} refuses writes after an earlier failure "
                f"({self.broken!r}); close the store and open it again"
            )

    def append(self, data: bytes) -> None:
        """Take ``data`` (whole frames) into the log, or raise having taken none.

        Only the buffer's existing content may reach the file here; if
        writing it fails the new data is not taken and the caller must not
        apply the change.
        """
        if self.broken is not None:
            self.check()
        if len(self.buf) + len(data) <= self.bufsize:
            self.buf += data
            return
        self.write_out()
        if len(data) <= self.bufsize:
            self.buf += data
        else:
            self._write(data)

    def write_out(self) -> None:
        """Hand the buffer to the OS (no fsync)."""
        if self.buf:
            self._write(self.buf)
            # emptied in place: the store's compiled fast path appends to
            # this very object
            del self.buf[:]

    def _write(self, data) -> None:
        self.check()
        try:
            self.files.pwrite(self.fd, data, self.size)
        except BaseException as exc:
            try:
                self.files.truncate(self.fd, self.size)
            except BaseException as cut_exc:
                self.broken = cut_exc
            raise exc
        self.size += len(data)
        self.written += len(data)

    def sync(self) -> None:
        """Write out the buffer and fsync the log (store lock held)."""
        self.write_out()
        self.sync_to(self.epoch, self.size)

    def sync_to(self, epoch: int, target: int) -> None:
        """Make the log durable up to ``target`` bytes of ``epoch``.

        Called *without* the store lock, so writers go on while the disk
        works, and concurrent callers share fsyncs (group commit): one
        caller leads an fsync that covers every byte written before it
        started; the others wait for it and return as soon as a finished
        fsync covers their bytes, or lead the next one.  A caller whose
        epoch has passed returns too: ``reset`` only empties a log whose
        changes are durable in an sstable.
        """
        if self.epoch == epoch and self.synced >= target:
            return  # covered already (ints read atomically; synced only grows)
        with self._mutex:
            while True:
                if self.epoch != epoch or self.synced >= target:
                    return
                self.check()
                if self.fd < 0:
                    return  # closed: close() synced everything first
                if not self._syncing:
                    break
                self._wait()
            self._syncing = True
            covered = self.size  # every byte below was written before the fsync
            fsync_epoch = self.epoch
        try:
            self.files.fsync(self.fd)
        except BaseException as exc:
            with self._mutex:
                self.broken = exc
                self._done_syncing()
            raise
        with self._mutex:
            if self.epoch == fsync_epoch:
                self.synced = max(self.synced, covered)
            self._done_syncing()

    def _wait(self) -> None:
        """Wait (holding ``_mutex``) for the fsync under way to end."""
        self._waiters += 1
        try:
            self._sync_cv.wait()
        finally:
            self._waiters -= 1

    def _done_syncing(self) -> None:
        self._syncing = False
        if self._waiters:
            self._sync_cv.notify_all()

    def _idle(self) -> None:
        """Wait (holding ``_mutex``) until no fsync is under way."""
        while self._syncing:
            self._wait()

    def reset(self) -> None:
        """Empty the log (its changes are safe in an sstable) durably."""
        if self.buf:
            raise AssertionError("reset with buffered data")
        with self._mutex:
            self._idle()
            try:
                self.files.truncate(self.fd, 0)
                self.size = 0
                self.epoch += 1
                self.synced = 0
                self.files.fsync(self.fd)
            except BaseException as exc:
                self.broken = exc
                raise

    def close(self) -> None:
        with self._mutex:
            self._idle()  # not while another thread fsyncs it
            fd, self.fd = self.fd, -1
            if fd >= 0:  # -1: a read-only store opened without a log file
                self.files.close(fd)
