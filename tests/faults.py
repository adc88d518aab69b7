"""Fault injection for the tests: a ``Files`` that fails, tears, lies and dies.

Every file operation of the engine goes through its ``Files`` object (see
``tinylsm/_fs.py``), and ``tinylsm.open(..., _files=...)`` takes a substitute.
``FaultyFiles`` performs each operation for real and, on request:

* raises ``OSError`` (ENOSPC, EIO, ...) from a chosen call, picked by the
  operation's name plus its count (``nth``) or a predicate on the call;
* cuts a write short: only a prefix of the data is stored, then it raises
  (an ``OSError`` or a ``Crash``);
* flips bits of the data of a chosen write (silent corruption);
* "crashes" the process at the n-th operation: the call raises ``Crash`` (a
  ``BaseException``, so the engine's ``except Exception`` cannot swallow it)
  and from then on every call raises ``Crash`` too, except ``close`` of a
  descriptor, which changes nothing on disk.  The real directory is then in
  the state a killed process leaves: everything handed to the OS is there;
* simulates a power cut: it keeps, under ``root``, the content of each file
  as of its last ``fsync`` and the entries of each directory as of its last
  ``fsync_dir`` (creations, renames and deletions), and ``power_cut(dest)``
  writes that state to a fresh directory: data not fsynced is dropped, and
  directory changes not fsynced are undone.  This is the strict POSIX
  model, stricter than ext4's usual behaviour, which is the point.

Files that exist under ``root`` when the object is made are taken as
durable.  Operations the engine does outside ``Files`` (``os.makedirs`` of
the store directory, the lock file) are not tracked; the lock file is left
out of the power-cut state, which is harmless since it holds nothing.
"""
from __future__ import annotations

import errno
import itertools
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import tinylsm
from tinylsm._fs import Files

from helpers import snapshot  # noqa: F401 - re-exported: the crash tests import it from here

# Operations that are counted and can be faulted.  ``read_file`` and
# ``write_new_file`` are made of counted operations (``write_new_file`` of
# ``create``, ``pwrite``, ``fsync``), not counted themselves.
OPS = (
    "open_rw", "open_ro", "create", "pwrite", "pread_all", "fsync", "truncate",
    "size", "rename", "unlink", "mkdir", "listdir", "file_size", "fsync_dir",
)
#: The operations that change what is on disk (or make it durable).
MUTATING = ("open_rw", "create", "pwrite", "fsync", "truncate", "rename", "unlink",
            "mkdir", "fsync_dir")


class Crash(BaseException):
    """The simulated death of the process, raised from inside the engine."""


@dataclass(frozen=True)
class Call:
    """One operation as the fault rules see it."""

    index: int  # 1-based count of operations since the last ``reset_count``
    op: str
    path: str  # the file (or directory) concerned; for rename the source
    dest: str = ""  # rename target
    size: int = 0  # bytes of a pwrite


Action = Union[int, str]  # an errno value, "crash", "cut" or "flip"


@dataclass
class Fault:
    """A rule: which calls it matches, and what it does to them."""

    ops: Tuple[str, ...]
    action: Action  # errno (raise OSError), "crash", or for pwrite "cut"/"flip"
    nth: Optional[int] = None  # fire on the nth matching call (1-based)
    when: Optional[Callable[[Call], bool]] = None
    times: Optional[int] = 1  # how many times it fires; None: every time
    keep: int = 0  # "cut": bytes of the write stored before failing
    then: Union[int, str] = "crash"  # "cut": what follows the stored prefix
    offset: int = 0  # "flip": which byte of the write's data
    mask: int = 0xFF  # "flip": XORed into that byte
    seen: int = 0
    fired: int = 0

    def matches(self, call: Call) -> bool:
        if self.ops != ("*",) and call.op not in self.ops:
            return False
        if self.when is not None and not self.when(call):
            return False
        self.seen += 1
        if self.nth is not None and self.seen != self.nth:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True


def _oserror(code: int, path: str) -> OSError:
    return OSError(code, f"{os.strerror(code)} (injected)", path)


@dataclass
class _Dir:
    path: str


class FaultyFiles(Files):
    """A ``Files`` with fault injection and power-cut tracking under ``root``."""

    def __init__(self, root: Optional[str] = None, real_fsync: bool = False) -> None:
        super().__init__()
        self.real_fsync = real_fsync  # the model, not the disk, decides what survives
        self.calls = 0
        self.trace: List[Call] = []
        self.faults: List[Fault] = []
        self.crash_at_call: Optional[int] = None
        self.dead = False
        self.injected = 0  # faults that fired, over the object's life
        self.root = os.path.abspath(root) if root is not None else None
        self._ids = itertools.count(1)
        self._fd_path: Dict[int, str] = {}
        self._fd_node: Dict[int, int] = {}
        self._entries: Dict[str, Dict[str, Union[int, _Dir]]] = {}
        self._durable_entries: Dict[str, Dict[str, Union[int, _Dir]]] = {}
        self._durable_data: Dict[int, bytes] = {}
        if self.root is not None:
            self._baseline(self.root)

    # -- rules ---------------------------------------------------------------------

    def fail(self, ops: Union[str, Tuple[str, ...]], code: int = errno.ENOSPC, *,
             nth: Optional[int] = None, when: Optional[Callable[[Call], bool]] = None,
             times: Optional[int] = 1) -> Fault:
        """Make matching calls raise ``OSError(code)`` without doing anything."""
        return self._add(Fault(_ops(ops), code, nth=nth, when=when, times=times))

    def crash(self, ops: Union[str, Tuple[str, ...]] = "*", *, nth: Optional[int] = None,
              when: Optional[Callable[[Call], bool]] = None) -> Fault:
        """Die (raise ``Crash``, refuse everything after) at a matching call."""
        return self._add(Fault(_ops(ops), "crash", nth=nth, when=when))

    def cut(self, keep: int, then: Union[int, str] = "crash", *, nth: Optional[int] = None,
            when: Optional[Callable[[Call], bool]] = None) -> Fault:
        """Let a matching pwrite store only its first ``keep`` bytes (all but
        ``-keep`` if negative), then raise ``OSError(then)`` or, for
        ``"crash"``, die."""
        return self._add(Fault(("pwrite",), "cut", nth=nth, when=when, keep=keep, then=then))

    def flip(self, offset: int, mask: int = 0xFF, *, nth: Optional[int] = None,
             when: Optional[Callable[[Call], bool]] = None) -> Fault:
        """XOR ``mask`` into byte ``offset`` (from the end if negative) of a
        matching pwrite's data, which is then written as if all was well."""
        return self._add(Fault(("pwrite",), "flip", nth=nth, when=when, offset=offset,
                               mask=mask))

    def crash_at(self, n: Optional[int]) -> None:
        """Die at the ``n``-th counted operation from now (``None``: never)."""
        self.reset_count()
        self.crash_at_call = n

    def reset_count(self) -> None:
        self.calls = 0
        self.trace = []

    def clear(self) -> None:
        """Drop every rule (a dead object stays dead)."""
        self.faults = []
        self.crash_at_call = None

    def _add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    # -- the gate every counted operation passes -----------------------------------

    def _enter(self, op: str, path: str, dest: str = "", size: int = 0) -> Optional[Fault]:
        if self.dead:
            raise Crash(f"{op} {path}: the process is dead")
        self.calls += 1
        call = Call(self.calls, op, path, dest, size)
        self.trace.append(call)
        if self.crash_at_call is not None and self.calls == self.crash_at_call:
            self.injected += 1
            self._die(call)
        for fault in self.faults:
            if fault.matches(call):
                self.injected += 1
                if fault.action == "crash":
                    self._die(call)
                if isinstance(fault.action, int):
                    raise _oserror(fault.action, path)
                return fault  # cut or flip: done by pwrite itself
        return None

    def _die(self, call: Call) -> None:
        self.dead = True
        raise Crash(f"crash at operation {call.index} ({call.op} {call.path})")

    # -- power-cut bookkeeping -----------------------------------------------------

    def _baseline(self, root: str) -> None:
        if not os.path.isdir(root):
            self._entries[root] = {}
            self._durable_entries[root] = {}
            return
        for dirpath, dirnames, filenames in os.walk(root):
            entries: Dict[str, Union[int, _Dir]] = {}
            for name in dirnames:
                entries[name] = _Dir(os.path.join(dirpath, name))
            for name in filenames:
                node = next(self._ids)
                with open(os.path.join(dirpath, name), "rb") as f:
                    self._durable_data[node] = f.read()
                entries[name] = node
            self._entries[dirpath] = entries
            self._durable_entries[dirpath] = dict(entries)

    def _where(self, path: str) -> Tuple[Optional[Dict[str, Union[int, _Dir]]], str]:
        path = os.path.abspath(path)
        return self._entries.get(os.path.dirname(path)), os.path.basename(path)

    def _node_for(self, path: str, created: bool) -> Optional[int]:
        """The node of ``path``; with ``created``, a new one if it has none
        (an O_TRUNC of an existing file keeps its inode, hence its node)."""
        entries, name = self._where(path)
        if entries is None:
            return None
        node = entries.get(name)
        if isinstance(node, int):
            return node
        if not created:
            return None
        node = next(self._ids)
        self._durable_data[node] = b""  # its data: nothing durable yet
        entries[name] = node
        return node

    def _opened(self, fd: int, path: str, node: Optional[int]) -> int:
        self._names[fd] = path
        self._fd_path[fd] = path
        if node is not None:
            self._fd_node[fd] = node
        else:
            self._fd_node.pop(fd, None)
        return fd

    def power_cut(self, dest: str) -> str:
        """Write the state a power cut would leave under ``root`` to ``dest``."""
        assert self.root is not None, "power_cut needs a root to track"

        def build(dirpath: str, target: str) -> None:
            os.makedirs(target, exist_ok=True)
            for name, node in self._durable_entries.get(dirpath, {}).items():
                if isinstance(node, _Dir):
                    build(node.path, os.path.join(target, name))
                else:
                    with open(os.path.join(target, name), "wb") as f:
                        f.write(self._durable_data.get(node, b""))

        build(self.root, dest)
        return dest

    # -- the operations -----------------------------------------------------------

    def open_rw(self, path: str) -> int:
        self._enter("open_rw", path)
        existed = os.path.exists(path)
        fd = super().open_rw(path)
        return self._opened(fd, path, self._node_for(path, created=not existed))

    def open_ro(self, path: str) -> int:
        self._enter("open_ro", path)
        fd = super().open_ro(path)
        return self._opened(fd, path, self._node_for(path, created=False))

    def create(self, path: str) -> int:
        self._enter("create", path)
        # read and write, unlike Files.create: fsync reads the file back
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                     0o644)
        return self._opened(fd, path, self._node_for(path, created=True))

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        data = bytes(data)
        fault = self._enter("pwrite", self._fd_path.get(fd, f"fd {fd}"), size=len(data))
        if fault is not None and fault.action == "flip":
            at = fault.offset if fault.offset >= 0 else len(data) + fault.offset
            if 0 <= at < len(data):
                b = bytearray(data)
                b[at] ^= fault.mask
                data = bytes(b)
        elif fault is not None and fault.action == "cut":
            keep = fault.keep if fault.keep >= 0 else max(0, len(data) + fault.keep)
            super().pwrite(fd, data[:keep], offset)
            if fault.then == "crash":
                self.dead = True
                raise Crash(f"crash in a write, after {keep} of {len(data)} bytes")
            raise _oserror(int(fault.then), self._fd_path.get(fd, ""))
        super().pwrite(fd, data, offset)

    def pread_all(self, fd: int, size: int, offset: int = 0) -> bytes:
        self._enter("pread_all", self._fd_path.get(fd, f"fd {fd}"))
        return super().pread_all(fd, size, offset)

    def copy_range(self, src: int, dst: int, size: int, src_offset: int,
                   dst_offset: int) -> int:
        # as the fallback does it: a read, then a write that can be faulted
        data = self.pread_all(src, size, src_offset)
        self.pwrite(dst, data, dst_offset)
        return len(data)

    def fsync(self, fd: int) -> None:
        self._enter("fsync", self._fd_path.get(fd, f"fd {fd}"))
        if self.real_fsync:
            super().fsync(fd)
        node = self._fd_node.get(fd)
        if node is not None:
            self._durable_data[node] = super().pread_all(fd, os.fstat(fd).st_size)

    def truncate(self, fd: int, length: int) -> None:
        self._enter("truncate", self._fd_path.get(fd, f"fd {fd}"))
        super().truncate(fd, length)

    def size(self, fd: int) -> int:
        self._enter("size", self._fd_path.get(fd, f"fd {fd}"))
        return super().size(fd)

    def close(self, fd: int) -> None:
        # not counted, never faulted, allowed after death: closing changes nothing
        self._fd_path.pop(fd, None)
        self._fd_node.pop(fd, None)
        super().close(fd)

    def rename(self, src: str, dst: str) -> None:
        self._enter("rename", src, dest=dst)
        super().rename(src, dst)
        src_entries, src_name = self._where(src)
        dst_entries, dst_name = self._where(dst)
        node = src_entries.pop(src_name, None) if src_entries is not None else None
        if dst_entries is not None and node is not None:
            dst_entries[dst_name] = node

    def unlink(self, path: str) -> None:
        self._enter("unlink", path)
        super().unlink(path)
        entries, name = self._where(path)
        if entries is not None:
            entries.pop(name, None)

    def mkdir(self, path: str) -> None:
        self._enter("mkdir", path)
        super().mkdir(path)
        entries, name = self._where(path)
        if entries is not None:
            full = os.path.abspath(path)
            entries[name] = _Dir(full)
            self._entries[full] = {}
            self._durable_entries[full] = {}

    def listdir(self, path: str) -> List[str]:
        self._enter("listdir", path)
        return super().listdir(path)

    def file_size(self, path: str) -> int:
        self._enter("file_size", path)
        return super().file_size(path)

    def fsync_dir(self, path: str) -> None:
        self._enter("fsync_dir", path)
        if self.real_fsync:
            super().fsync_dir(path)
        full = os.path.abspath(path)
        if full in self._entries:
            self._durable_entries[full] = dict(self._entries[full])


def _ops(ops: Union[str, Tuple[str, ...]]) -> Tuple[str, ...]:
    ops = (ops,) if isinstance(ops, str) else tuple(ops)
    for op in ops:
        if op != "*" and op not in OPS:
            raise ValueError(f"unknown operation {op!r}; one of {OPS}")
    return ops


# -- helpers for the tests ----------------------------------------------------------


def abandon(db) -> None:
    """Drop a store whose ``FaultyFiles`` died, as a killed process would.

    ``close()`` tries to write the buffer out, which the dead ``Files``
    refuses; it still stops the compaction thread and closes the
    descriptors and the lock, so nothing leaks from test to test.
    """
    if db is None:
        return
    try:
        db.close()
    except Crash:
        pass
    except tinylsm.LogFailedError as exc:  # its log broke as the process died
        if not isinstance(exc.__cause__, Crash):
            raise


def copy_state(src: str, dest: str) -> str:
    """Copy a store directory as a killed process left it."""
    shutil.copytree(src, dest)
    return dest


def report(record_property, name: str, value: int) -> None:
    """Publish a count: in the JUnit XML (``record_property``) and on stdout
    (visible with ``pytest -s``)."""
    record_property(name, value)
    print(f"\n[tinylsm-count] {name} = {value}")


class NoSyncFiles(Files):
    """Plain ``Files`` without the fsyncs, for the damage tests: they open a
    store thousands of times and check what recovery reads, not what a power
    cut keeps (``FaultyFiles`` tests that), and a real fsync per open would
    make them wait on the disk."""

    def fsync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass
