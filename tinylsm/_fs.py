"""Every file-system call the engine makes, behind one replaceable object.

The engine never calls ``os`` directly for its data files: it calls the
methods of a ``Files`` instance.  The fault-injection tests substitute a
subclass that cuts writes short, raises ENOSPC or EIO, or forgets what was
not fsynced, so that every crash state can be reached on purpose.

Two rules hold for every call here, because an adversary (or a careless
operator) controls what sits at a path:

* a path that should be a regular file but is something else (a FIFO, a
  socket, a device, a directory, a dangling symbolic link) is refused with a
  ``CorruptionError`` naming it, without blocking: files are opened with
  ``O_NONBLOCK`` and checked with ``fstat`` before use;
* every ``OSError`` raised names the file it concerns, also for operations
  on a descriptor (``pwrite``, ``fsync``, ...), whose errors the OS reports
  without a name.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Dict, List, NoReturn, Optional, Union

from .errors import CorruptionError

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


_copy_file_range = getattr(os, "copy_file_range", None)
#: copy_file_range's errors that mean "not here" (kernel, file system): copy
#: through this process instead
_NO_COPY_RANGE = frozenset({errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP,
                            errno.ENOTSUP})


def kind_of(mode: int) -> str:
    """A file type in words, for messages."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"),
                       # met only unresolved: links are followed everywhere else
                       (stat.S_ISLNK, "a symbolic link to a missing file")):
        if test(mode):
            return name
    return "not a regular file"


def named(exc: OSError, path: Optional[str]) -> OSError:
    """``exc`` itself if it names a file, else the same error naming ``path``."""
    if exc.filename is not None or path is None:
        return exc
    new = type(exc)(exc.errno, exc.strerror or str(exc), path)
    new.__cause__ = exc.__cause__
    return new


def not_a_file(path: str, mode: int, expected: str = "a regular file") -> CorruptionError:
    return CorruptionError(f"{path!r} is {kind_of(mode)}, where tinylsm expects {expected}")


def mode_of(path: str) -> int:
    """The file type and mode of ``path``, through symbolic links (a
    dangling link's own)."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return os.lstat(path).st_mode


def _refuse_dangling(path: str) -> None:
    """A link to nothing is no file: refuse it rather than open (or, with
    O_CREAT, create) whatever it points at."""
    if os.path.islink(path) and not os.path.exists(path):
        raise not_a_file(path, stat.S_IFLNK)


_datasync = getattr(os, "fdatasync", os.fsync)


class Files:
    """Plain POSIX file operations, with short writes retried.

    Keeps the path of each descriptor it opened, to name it in errors.
    """

    def __init__(self) -> None:
        self._names: Dict[int, str] = {}

    # -- opening -----------------------------------------------------------------

    def _open_regular(self, path: str, flags: int) -> int:
        """Open ``path`` (never blocking, close-on-exec), refusing anything
        but a regular file."""
        try:
            fd = os.open(path, flags | _CLOEXEC | _NONBLOCK, 0o644)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                _refuse_dangling(path)
            raise named(exc, path) from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise not_a_file(path, mode)
            if _NONBLOCK:
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        self._names[fd] = path
        return fd

    def open_rw(self, path: str) -> int:
        """Open (creating if needed) a regular file for reading and writing.

        A dangling symbolic link is refused rather than followed to create
        its target somewhere else.
        """
        _refuse_dangling(path)
        return self._open_regular(path, os.O_RDWR | os.O_CREAT)

    def open_ro(self, path: str) -> int:
        """Open an existing regular file for reading."""
        return self._open_regular(path, os.O_RDONLY)

    def create(self, path: str) -> int:
        """Create ``path`` (emptying it if it exists) and open it for reading
        and writing."""
        return self._open_regular(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)

    def close(self, fd: int) -> None:
        self._names.pop(fd, None)
        os.close(fd)

    def name(self, fd: int) -> str:
        """The path ``fd`` was opened as (for messages)."""
        return self._names.get(fd, f"descriptor {fd}")

    def _failed(self, exc: OSError, fd: int) -> NoReturn:
        raise named(exc, self.name(fd)) from None

    def close_all_in_child(self) -> None:
        """In a forked child: close every descriptor inherited from the parent
        through this object (the parent keeps its own copies, and its locks)."""
        for fd in list(self._names):
            self._names.pop(fd, None)
            try:
                os.close(fd)
            except OSError:
                pass  # already closed by its owner: nothing to give back

    # -- descriptors -------------------------------------------------------------

    def pwrite(self, fd: int, data: Union[bytes, bytearray], offset: int) -> None:
        """Write all of ``data`` at ``offset``; a short write is continued."""
        try:
            n = os.pwrite(fd, data, offset)
            if n == len(data):
                return
            view = memoryview(data)[n:]
            offset += n
            while view:
                n = os.pwrite(fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as exc:
            self._failed(exc, fd)

    def pread_all(self, fd: int, size: int, offset: int = 0) -> bytes:
        """Read ``size`` bytes from ``offset``, fewer only at end of file."""
        try:
            first = os.pread(fd, min(size, 1 << 26), offset)
        except OSError as exc:
            self._failed(exc, fd)
        if len(first) == size or not first:
            return first  # the usual case: no second copy to join
        size -= len(first)
        offset += len(first)
        parts = [first]
        try:
            while size > 0:
                chunk = os.pread(fd, min(size, 1 << 26), offset)
                if not chunk:
                    break
                parts.append(chunk)
                size -= len(chunk)
                offset += len(chunk)
        except OSError as exc:
            self._failed(exc, fd)
        return b"".join(parts)

    def copy_range(self, src: int, dst: int, size: int, src_offset: int,
                   dst_offset: int) -> int:
        """Copy up to ``size`` bytes from ``src`` at ``src_offset`` to ``dst``
        at ``dst_offset`` inside the kernel where it can (no buffer in this
        process, no GIL held); return the bytes copied, fewer only at the end
        of ``src``."""
        if _copy_file_range is not None:
            try:
                done = 0
                while done < size:
                    n = _copy_file_range(src, dst, size - done, src_offset + done,
                                         dst_offset + done)
                    if n == 0:
                        break
                    done += n
                return done
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE or done:
                    self._failed(exc, dst)
        data = self.pread_all(src, size, src_offset)
        self.pwrite(dst, data, dst_offset)
        return len(data)

    def fsync(self, fd: int) -> None:
        """Make the file's data durable, with what reading it back needs
        (its length): ``fdatasync`` where the system has it, which skips
        the times, hence the journal commit when the length is unchanged."""
        try:
            _datasync(fd)
        except OSError as exc:
            self._failed(exc, fd)

    def truncate(self, fd: int, length: int) -> None:
        try:
            os.ftruncate(fd, length)
        except OSError as exc:
            self._failed(exc, fd)

    def size(self, fd: int) -> int:
        try:
            return os.fstat(fd).st_size
        except OSError as exc:
            self._failed(exc, fd)

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

    # -- names -------------------------------------------------------------------

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
        fd = os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC | _NONBLOCK)
        try:
            os.fsync(fd)
        except OSError as exc:
            raise named(exc, path) from None
        finally:
            os.close(fd)


#: The instance the engine uses unless a test hands it another.
DEFAULT = Files()
