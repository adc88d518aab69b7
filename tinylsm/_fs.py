"""Every file-system call the engine makes, behind one replaceable object.

The engine never calls ``os`` directly for its data files: it calls the
methods of a ``Files`` instance.  The fault-injection tests substitute a
subclass that cuts writes short, raises ENOSPC or EIO, or forgets what was
not fsynced, so that every crash state can be reached on purpose.
"""
from __future__ import annotations

import os
from typing import List


class Files:
    """Plain POSIX file operations, with short writes retried."""

    def open_rw(self, path: str) -> int:
        """Open (creating if needed) a file for reading and writing."""
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)

    def open_ro(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of ``data`` at ``offset``; a short write is continued."""
        n = os.pwrite(fd, data, offset)
        if n == len(data):
            return
        view = memoryview(data)[n:]
        offset += n
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n

    def pread_all(self, fd: int, size: int, offset: int = 0) -> bytes:
        """Read ``size`` bytes from ``offset``, fewer only at end of file."""
        parts = []
        while size > 0:
            chunk = os.pread(fd, min(size, 1 << 26), offset)
            if not chunk:
                break
            parts.append(chunk)
            size -= len(chunk)
            offset += len(chunk)
        return b"".join(parts)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def close(self, fd: int) -> None:
        os.close(fd)

    def create(self, path: str) -> int:
        """Create ``path`` (emptying it if it exists) and open it for writing."""
        return os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644
        )

    # The two whole-file helpers are made of the operations above, so that a
    # substitute (the tests' FaultyFiles) sees and can fault each step.

    def read_file(self, path: str) -> bytes:
        fd = self.open_ro(path)
        try:
            return self.pread_all(fd, self.size(fd))
        finally:
            self.close(fd)

    def write_new_file(self, path: str, data: bytes) -> None:
        """Create (or replace) ``path`` holding ``data``, fsynced before return."""
        fd = self.create(path)
        try:
            self.pwrite(fd, data, 0)
            self.fsync(fd)
        finally:
            self.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def listdir(self, path: str) -> List[str]:
        return os.listdir(path)

    def file_size(self, path: str) -> int:
        return os.stat(path).st_size

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (creations, renames, deletions) durable."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: The instance the engine uses unless a test hands it another.
DEFAULT = Files()
