"""Opening a store directory: the lock, the sizes, and recovery.

``prepare`` takes the lock and settles the key and value sizes; ``recover``
reads the sstables and the log into the map and only then repairs what it
must (cuts a torn log tail after setting aside what may be data, deletes
unfinished ``-tmp`` sstables, completes a new store).  ``plan_log`` is the
one verdict on a log, shared with ``tinylsm verify``.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from . import _kept, _layout, _meta, _rollover, sstable
from ._compactor import Table
from ._format import (LOG_NAME, META_NAME, SST_COMPLETE, SSTABLE_DIR, STOP_END, STOP_SHORT, LogScan,
                      check_sizes)
from ._fs import Files
from ._gate import OPENING_TIMEOUT, Gate
from ._log import LogWriter
from ._backend import codec
from ._logread import LogReader, nonzero_end
from ._meta import StoreLock
from ._types import Buffer
from .errors import CorruptionError

log = logging.getLogger("tinylsm")

#: The size record's state: none yet, written by tinylsm 0.1 (no checksum), ok.
META_NONE, META_LEGACY, META_OK = "none", "legacy", "ok"


class Opening(NamedTuple):
    """What ``prepare`` settled."""

    lock: Optional[StoreLock]  # a writer's; None for a read-only open
    key_size: int
    value_size: int
    created: bool  # a new store: its sstables/ was just made
    meta: str  # META_NONE, META_LEGACY or META_OK


def prepare(files: Files, path: str, key_size: Optional[int], value_size: Optional[int],
            readonly: bool) -> Opening:
    """Check the path, take the lock, settle K and V.

    A new store is made only in a new or empty directory.  Its ``sstables/``
    comes first and its size record last (in ``recover``), so a crash in
    between leaves a directory that holds no data and records no sizes,
    which the next open with sizes completes.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "store path exists and is not a directory", path)
    if not os.path.exists(path):
        if readonly:
            raise FileNotFoundError(errno.ENOENT, "no store to open read-only", path)
        given_sizes(key_size, value_size)
        os.makedirs(path, exist_ok=True)
        _layout.fsync_parents(files, path)
    # a read-only open takes no lock of its own: it opens the files beside
    # a writer under the gate (``recover``)
    lock = None if readonly else StoreLock(path)
    try:
        layout = _layout.inspect(files, path)
        created = not layout.is_store
        if created:
            foreign = _layout.foreign_names(layout)
            if foreign:
                _layout.refuse_foreign(path, foreign)
            if readonly:
                raise FileNotFoundError(errno.ENOENT, "no store to open read-only", path)
        record = _meta.read_record(files, path) if layout.has_meta else None
        recorded = None if record is None else record.sizes
        k, v = settle_sizes(path, recorded, key_size, value_size, layout.holds_data)
        meta = META_NONE if record is None else META_LEGACY if record.legacy else META_OK
        if lock is not None:
            lock.lock_file()
        if created:
            _layout.make_sstables_dir(files, path)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    return Opening(lock, k, v, created, meta)


def given_sizes(key_size: Optional[int], value_size: Optional[int]) -> Tuple[int, int]:
    """The sizes a caller gave, checked; both are needed."""
    if key_size is None or value_size is None:
        raise TypeError("key_size and value_size are required for a store "
                        "that does not record them")
    check_sizes(key_size, value_size)
    return key_size, value_size


def settle_sizes(path: str, recorded: Optional[Tuple[int, int]], key_size: Optional[int],
                 value_size: Optional[int], holds_data: bool = True) -> Tuple[int, int]:
    """The store's sizes: the recorded ones (each size given, one or both,
    must match its recorded one), or the given ones, both of them, for a
    store that records none."""
    if recorded is None:
        if (key_size is None or value_size is None) and not holds_data:
            raise TypeError(
                f"store {path!r} records no key and value sizes, and holds no data "
                "yet (an interrupted creation, or an empty store of the Rust crate): "
                "pass key_size and value_size")
        return given_sizes(key_size, value_size)
    # a size left out is the recorded one (valid); a given one is checked
    # as for a new store, then against the record
    check_sizes(recorded[0] if key_size is None else key_size,
                recorded[1] if value_size is None else value_size)
    given = {name: size for name, size in (("key_size", key_size), ("value_size", value_size))
             if size is not None}
    wrong = [name for name, size in given.items()
             if size != dict(key_size=recorded[0], value_size=recorded[1])[name]]
    if wrong:
        raise ValueError(
            f"store {path!r} was created with key_size={recorded[0]}, "
            f"value_size={recorded[1]}; opened with "
            + ", ".join(f"{name}={size}" for name, size in given.items())
            + f" ({' and '.join(wrong)} {'differs' if len(wrong) == 1 else 'differ'})")
    return recorded


# -- the log ------------------------------------------------------------------------


class LogPlan(NamedTuple):
    """What recovery makes of a log."""

    scan: LogScan  # the changes it replays, up to scan.end (records not kept)
    size: int  # the log's length: the bytes after scan.end are cut off
    keep: bool  # those bytes may hold data: set them aside before the cut
    refuse: bool  # the first frame is not one: refuse the store, change nothing
    zeros: bool = False  # those bytes are zeros a writer wrote ahead: no cut needed
    data_end: int = 0  # where the zeros at the file's end begin (size: none)
    #: Those bytes look like the write a live writer is making: a frame or a
    #: batch cut short, maybe followed by zeros (a reader beside a writer
    #: sees that, and it is no damage).
    unfinished: bool = False

    @property
    def tail(self) -> int:
        """Bytes after ``scan.end``, cut off."""
        return self.size - self.scan.end


#: The plan for no log at all (a read-only open of a store without one).
NO_LOG = LogPlan(LogScan(b"", 0, 0, STOP_END, 0, 0), 0, False, False)


def plan_log(files: Files, fd: int, key_size: int, value_size: int,
             apply: Optional[Callable[[bytes, int, int], None]] = None) -> LogPlan:
    """The one verdict on a log, for ``open()`` and ``tinylsm verify`` alike.

    Point-in-time recovery: the changes up to the first frame that cannot be
    trusted are replayed.  What follows is kept aside unless it provably
    holds no change (``_kept.may_hold_data``).  A log whose very first frame
    is damaged (not merely cut short) is no torn tail: the store is refused.

    The log is read in chunks (``_logread.LogReader``), and each chunk of
    changes goes to ``apply(records, k, v)`` as it comes: every change
    before ``scan.end`` is replayed whatever follows it, and a refused log
    has replayed nothing.
    """
    size = files.size(fd)
    reader = LogReader(files, fd, key_size, value_size, 0, size)
    for records in reader:
        if apply is not None:
            apply(records, key_size, value_size)
    scan = reader.scan
    assert scan is not None
    # zeros at the end are a writer's preallocated space (or a file grown by
    # a crash before its data reached the disk): never data, never kept
    # (frames end in zeros often, and the zeros a writer writes ahead begin
    # at a frame's start: whole frames from scan.end)
    frame = codec.frame_size(key_size, value_size)
    data_end = nonzero_end(files, fd, scan.end, size)
    data_end = min(size, scan.end + -(-(data_end - scan.end) // frame) * frame)
    keep = _kept.tail_may_hold_data(files, fd, scan.end, data_end, key_size, value_size)
    refuse = keep and scan.end == 0 and scan.stop_offset == 0 and scan.stop != STOP_SHORT
    unfinished = (scan.stop in (STOP_SHORT, STOP_END) and data_end == size
                  or data_end <= scan.stop_offset + frame)
    return LogPlan(scan, size, keep, refuse, data_end == scan.end < size, data_end,
                   unfinished and scan.end < size)


def in_flight(files: Files, fd: int, key_size: int, value_size: int, scan: LogScan) -> bool:
    """Whether the log, read again from ``scan.end``, now holds valid
    changes past where ``scan`` stopped: the bytes it stopped at were a
    write under way beside a live writer (read half-copied), not damage."""
    reader = LogReader(files, fd, key_size, value_size, scan.end)
    try:
        for _ in reader:
            pass
    except CorruptionError:  # a batch read differently twice: bytes changing
        return True
    again = reader.scan
    return again is not None and again.end > scan.stop_offset


def refuse_log(log_path: str, plan: LogPlan, size: int, k: int, v: int, meta: str) -> None:
    """Raise for a log whose first frame is not one: the sizes given for a
    store that records none are likely wrong (ValueError); otherwise the log
    is damaged or the record is wrong (CorruptionError)."""
    stop = plan.scan.stop
    if meta == META_NONE:
        raise ValueError(
            f"log {log_path!r} does not start with a valid frame for "
            f"key_size={k}, value_size={v} ({stop} at offset 0): "
            "are these the sizes the store was written with?")
    raise CorruptionError(
        f"log {log_path}: {stop} at offset 0 of {size}: the log does not start with "
        f"a valid frame for key_size={k}, value_size={v}, so it is damaged, or the "
        f"sizes in {META_NAME} are wrong; nothing was changed (`tinylsm verify` "
        "shows which frames are intact)")


# -- recovery ------------------------------------------------------------------------


class Recovered(NamedTuple):
    """What ``recover`` leaves for the store."""

    log: LogWriter
    tables: Dict[int, Table]
    read_bytes: int
    kept: List[Tuple[str, int]]  # (name, size) of the kept log tails


class Opened(NamedTuple):
    """The files of a store, opened at one instant (see ``_gate``)."""

    tables: List[Tuple[int, str, int]]  # (id, path, fd) in id order
    tmps: List[str]  # names of unfinished sstable writes
    log_fd: int  # -1: no log
    log_existed: bool


def open_files(files: Files, path: str, readonly: bool) -> Opened:
    """List ``sstables/`` and open every table and the log.  A read-only
    open does it holding the gate shared, so that the set is one a writer
    left at one instant; a writer needs no gate (it is the only one that
    removes files)."""
    ssdir = os.path.join(path, SSTABLE_DIR)
    log_path = os.path.join(path, LOG_NAME)
    held = Gate(ssdir).shared() if readonly else None
    opened: List[Tuple[int, str, int]] = []
    log_fd = -1
    try:
        ids, tmps = sstable.list_dir(files, ssdir)
        for sst_id in sorted(ids):
            table = os.path.join(ssdir, ids[sst_id])
            opened.append((sst_id, table, files.open_ro(table)))
        log_existed = os.path.lexists(log_path)
        if log_existed or not readonly:
            log_fd = files.open_ro(log_path) if readonly else files.open_rw(log_path)
    except BaseException:
        for _, _, fd in opened:
            files.close(fd)
        raise
    finally:
        if held is not None:
            held.release()
    return Opened(opened, tmps, log_fd, log_existed)


def recover(files: Files, path: str, apply: Callable[[Buffer, int, int], None],
            opening: Opening, readonly: bool, bufsize: int,
            reserve: Callable[[int], None]) -> Recovered:
    """Read the sstables in id order and the log into ``apply(records, k,
    v)``, checking everything; only then repair (never when ``readonly``).
    ``reserve(n)`` first makes room in the map for ``n`` keys.

    Every file is read in chunks and its records applied as they are
    checked, so memory beyond the map stays a few chunks.  A file found
    damaged part-way raises, and the caller discards the map: the map is
    all that was changed, and nothing on disk changes before every file
    has been read and judged.  A read-only open reads the files a writer
    may be changing beside it: see ``_gate`` for why what it reads is the
    map after a prefix of the writer's log.
    """
    k, v = opening.key_size, opening.value_size
    log_path = os.path.join(path, LOG_NAME)
    read_bytes = 0
    opened = open_files(files, path, readonly)
    log_fd = opened.log_fd
    try:
        if opened.tables:
            # the largest table's keys are distinct: a map at least that big
            # is built, so make room at once rather than grow on the way
            reserve(max(sstable.records_hint(files, fd, k, v) for _, _, fd in opened.tables))
        # 1. read and check everything, changing nothing
        tables = {}
        empty = None  # an empty newest sstable: tiny-lsm's flush torn at once
        newest = opened.tables[-1][0] if opened.tables else -1
        while opened.tables:
            sst_id, table, fd = opened.tables.pop(0)
            try:
                reader = sstable.TableReader(files, table, k, v, fd=fd)
                for records in reader:
                    apply(records, k, v)
            finally:
                files.close(fd)
            table_scan, nbytes = reader.scan, reader.nbytes
            assert table_scan is not None
            if nbytes == 0:
                if sst_id != newest:
                    raise CorruptionError(f"sstable {table} is empty, and is not the newest: "
                                          "it is not an interrupted flush of tiny-lsm")
                empty = table
                continue
            if table_scan.status != SST_COMPLETE:
                log.warning(
                    "tinylsm: sstable %s is cut short (%d of %s records): an "
                    "interrupted flush of tiny-lsm, whose data is still in the log",
                    table, table_scan.count,
                    table_scan.expected if table_scan.expected >= 0 else "?")
            read_bytes += nbytes
            tables[sst_id] = Table(table_scan.count, nbytes)
        plan = plan_log(files, log_fd, k, v, apply) if log_fd >= 0 else NO_LOG
        read_bytes += plan.size
        if plan.refuse:
            refuse_log(log_path, plan, plan.size, k, v, opening.meta)
        scan, tail = plan.scan, plan.tail
        if empty is not None and scan.end == 0:
            raise CorruptionError(f"sstable {empty} is empty, and the log holds no "
                                  "changes: it is not an interrupted flush of tiny-lsm")
        if tail and not readonly and plan.zeros:
            log.debug("tinylsm: log %s: %d bytes of zeros after offset %d (written ahead "
                      "by a writer), to be written over", log_path, tail, scan.end)
        elif tail and not readonly:
            log.warning("tinylsm: log %s: %s at offset %d; the %d bytes from offset %d "
                        "are %s", log_path, scan.stop, scan.stop_offset, tail, scan.end,
                        "set aside, then cut off" if plan.keep else
                        "a torn final frame (or zeros), and are cut off")
        elif tail and plan.keep and not (
                _meta.writer_present(path)
                and (plan.unfinished or in_flight(files, log_fd, k, v, scan))):
            # a live writer's last frame or batch half-written is no news
            log.warning("tinylsm: log %s: %s at offset %d; the %d bytes from offset %d "
                        "are ignored (read-only)", log_path, scan.stop, scan.stop_offset,
                        tail, scan.end)

        # 2. repair: only now is anything on disk changed
        allocated = scan.end
        if not readonly:
            log_fd, allocated = _repair(files, path, opening, opened, plan, empty)
        kept_tails = _kept.listing(files, path)
    except BaseException:
        for _, _, fd in opened.tables:
            files.close(fd)
        if log_fd >= 0:
            files.close(log_fd)
        raise
    return Recovered(LogWriter(files, log_path, log_fd, scan.end, bufsize, allocated),
                     tables, read_bytes, kept_tails)


def _repair(files: Files, path: str, opening: Opening, opened: Opened, plan: LogPlan,
            empty: Optional[str]) -> Tuple[int, int]:
    """A writer's repairs after reading everything; returns the log's
    descriptor (a new one if the log was cut, the old one then closed; if
    this raises, the old one is still the caller's) and the file's length
    (zeros after the log are kept, to be written over: ``LogWriter``).  The steps that remove
    what a reader opening beside it may be listing run under the gate."""
    ssdir = os.path.join(path, SSTABLE_DIR)
    log_path = os.path.join(path, LOG_NAME)
    log_fd = opened.log_fd
    for name, fate in _rollover.settle_copies(files, path, log_fd, plan.size):
        log.warning("tinylsm: %s, left by an interrupted log rollover, was %s",
                    name, fate)
    for name in opened.tmps:
        log.warning("tinylsm: removing unfinished sstable write %s", name)
        files.unlink(os.path.join(ssdir, name))
    if empty is not None:  # it holds nothing; its changes are in the log
        log.warning("tinylsm: removing empty sstable %s (a torn flush of "
                    "tiny-lsm, whose changes are in the log)", empty)
        with Gate(ssdir).exclusive(timeout=OPENING_TIMEOUT, what="recovery"):
            files.unlink(empty)
    if opened.tmps or empty is not None:
        files.fsync_dir(ssdir)
    if not opened.log_existed:
        # the new log's entry must be durable before a flush()
        # acknowledges anything in it (fsync of the file alone does
        # not make its name survive a power cut)
        files.fsync_dir(path)
    for name in _kept.remove_unfinished(files, path):
        log.warning("tinylsm: removed %s, an unfinished copy of a log tail "
                    "(the log still held those bytes)", name)
    if opening.meta != META_OK:
        # last: the record completes a new store (see prepare)
        _meta.write_sizes(files, path, opening.key_size, opening.value_size)
    scan = plan.scan
    if plan.zeros:
        # a writer's preallocated zeros: written over from here on
        return log_fd, plan.size
    if plan.tail:  # last: from the new descriptor on, nothing here can fail
        if plan.keep:
            kept = _kept.set_aside(files, path, log_fd, scan.end, plan.data_end)
            log.warning("tinylsm: log %s: %d bytes after offset %d kept in %s",
                        log_path, plan.tail, scan.end, kept)
        log_fd = _rollover.replace_log(files, path, log_fd, scan.end, Gate(ssdir))
    return log_fd, scan.end
