"""The write-ahead log file behind its in-memory buffer."""
from __future__ import annotations

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
        self.write_out()  # replaces self.buf
        if len(data) <= self.bufsize:
            self.buf += data
        else:
            self._write(data)

    def write_out(self) -> None:
        """Hand the buffer to the OS (no fsync)."""
        if self.buf:
            self._write(self.buf)
            self.buf = bytearray()

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
        """Write out the buffer and fsync the log."""
        self.write_out()
        try:
            self.files.fsync(self.fd)
        except BaseException as exc:
            self.broken = exc
            raise

    def reset(self) -> None:
        """Empty the log (its changes are safe in an sstable) durably."""
        if self.buf:
            raise AssertionError("reset with buffered data")
        try:
            self.files.truncate(self.fd, 0)
            self.size = 0
            self.files.fsync(self.fd)
        except BaseException as exc:
            self.broken = exc
            raise

    def close(self) -> None:
        self.files.close(self.fd)
