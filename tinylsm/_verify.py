"""``tinylsm verify``: every file of a store checked, by the readers ``open()``
uses, so that the two verdicts cannot drift apart.

An sstable is read by ``sstable.TableReader`` (what it refuses, verify calls
CORRUPT), the log is judged by ``_recovery.plan_log`` (what recovery would
replay, set aside, cut or refuse), and a read-only open of the whole store
ends the report.  Nothing on disk is changed.
"""
from __future__ import annotations

import logging
import os
from typing import List, Tuple

from . import _kept, _meta, _progress, sstable
from ._backend import codec
from ._format import (
    BATCH_TAG,
    HEX_NAME,
    LOG_NAME,
    META_NAME,
    SST_COMPLETE,
    SSTABLE_DIR,
    SSTABLE_NAME,
    SSTABLE_TMP_SUFFIX,
    STOP_END,
    STOP_SHORT,
    batch_count,
)
from ._fs import DEFAULT as FILES
from ._gate import Gate
from ._text import plural
from ._recovery import in_flight, plan_log
from .errors import CorruptionError, Error


class Report:
    """Lines of ``verify``; problems also go into the summary."""

    def __init__(self) -> None:
        self.problems: List[str] = []

    def ok(self, where: str, text: str) -> None:
        print(f"{where}: ok: {text}")

    def note(self, where: str, text: str) -> None:
        print(f"{where}: note: {text}")

    def problem(self, where: str, kind: str, text: str, summary: str) -> None:
        print(f"{where}: {kind}: {text}")
        self.problems.append(summary)


def check_sstable(fd: int, path: str, rel: str, k: int, v: int, report: Report) -> None:
    """Report sstable ``path`` (open as ``fd``) as ``open()`` reads it."""
    reader = sstable.TableReader(FILES, path, k, v, fd=fd)
    try:
        for _ in reader:  # checked chunk by chunk; the records are not needed
            pass
    except CorruptionError as exc:
        report.problem(rel, "CORRUPT", f"{exc.detail} ({FILES.size(fd):,} bytes)",
                       f"corrupt {rel} ({exc.detail})")
        return
    scan, nbytes = reader.scan, reader.nbytes
    assert scan is not None
    if scan.status == SST_COMPLETE:
        report.ok(rel, f"{plural(scan.count, 'record')} "
                       f"({plural(scan.tombstones, 'tombstone')}), {plural(nbytes, 'byte')}")
        return
    of = f"{scan.expected:,}" if scan.expected >= 0 else "? (not even the count)"
    report.problem(
        rel, "CUT SHORT",
        f"{scan.count:,} of {of} records: a flush of the Rust tiny-lsm was interrupted "
        "(its data is still in the log), or the file is damaged",
        f"{rel} cut short ({scan.count} of {scan.expected} records)")


def check_log(fd: int, k: int, v: int, sizes_from_meta: bool, live: bool,
              report: Report) -> None:
    """Report the log (open as ``fd``) as recovery judges it (``plan_log``);
    ``live``: a writer is appending to it."""
    frame = codec.frame_size(k, v)
    plan = plan_log(FILES, fd, k, v)
    scan = plan.scan
    total = plan.size
    applied = (f"{plural(scan.count, 'record')} ({plural(scan.tombstones, 'tombstone')}) "
               f"in {plural(scan.end, 'byte')}")
    if scan.stop == STOP_END and scan.end == total:
        report.ok(LOG_NAME, applied)
        return
    lost = total - scan.end
    batch = ""
    if scan.end < scan.stop_offset:
        header = FILES.pread_all(fd, frame, scan.end)
        if header[4] == BATCH_TAG:
            batch = (f"; the write_batch of {batch_count(header):,} items starting at "
                     f"offset {scan.end:,} is incomplete and is dropped whole")
    if plan.refuse:
        hint = ("" if sizes_from_meta else
                f" (the very first frame is bad: is the store's key size {k} and value "
                f"size {v}?)")
        report.problem(
            LOG_NAME, "CORRUPT",
            f"frame #0 at offset 0: {scan.stop}{batch}; recovery refuses to open the store "
            f"and changes nothing ({plural(total // frame, 'frame')} after it){hint}",
            f"corrupt log frame #0 at offset 0 ({scan.stop})")
        return
    fate = (f"sets the {lost:,} bytes after offset {scan.end:,} aside in a tinylsm.kept-* "
            "file, then cuts the log there" if plan.keep else
            f"cuts the log to {scan.end:,} bytes, dropping {lost:,} bytes that hold no "
            "complete change")
    tail = total - scan.stop_offset
    if plan.zeros:
        report.ok(LOG_NAME, f"{applied}, then {plural(lost, 'zero byte')} a writer wrote "
                            "ahead (preallocated; the next writer writes over them)")
        return
    if live and (plan.unfinished or in_flight(FILES, fd, k, v, scan)):
        report.note(LOG_NAME, f"{applied}, then {lost:,} bytes of a change the live "
                              "writer is appending (read as they were at that instant)")
        return
    if scan.stop in (STOP_END, STOP_SHORT) or plan.data_end <= scan.stop_offset + frame:
        zeros_after = total - max(plan.data_end, scan.stop_offset)
        if scan.stop == STOP_SHORT:
            what = (f"{total - scan.stop_offset} bytes of a cut-off frame at offset "
                    f"{scan.stop_offset:,}")
        elif scan.stop == STOP_END:
            what = "the file ends inside a write_batch"
        elif plan.data_end <= scan.stop_offset:
            what = (f"{tail:,} zero bytes from offset {scan.stop_offset:,} "
                    "(space allocated but never written)")
        else:
            what = (f"a torn frame at offset {scan.stop_offset:,} ({scan.stop}), then "
                    f"{plural(zeros_after, 'zero byte')} (space written ahead)")
        report.problem(
            LOG_NAME, "TORN TAIL",
            f"{what}{batch}; recovery {fate} (changes that were never flushed). "
            f"Before it: {applied}",
            f"torn log tail ({lost:,} bytes after offset {scan.end:,})")
        return
    index = scan.stop_offset // frame
    after = total - scan.stop_offset - frame
    report.problem(
        LOG_NAME, "CORRUPT",
        f"frame #{index:,} at offset {scan.stop_offset:,}: {scan.stop}{batch}; recovery "
        f"stops there and {fate}"
        + (f" ({plural(after // frame, 'more frame')} after the bad one)" if after >= frame
           else "")
        + f". Before it: {applied}",
        f"corrupt log frame #{index} at offset {scan.stop_offset} ({scan.stop})")


def _open_files(directory: str, ssdir: str, report: Report) -> List[Tuple[int, str, str]]:
    """``[(fd, path, name in the report)]`` of the sstables in id order, then
    the log (fd -1 if there is none), opened at one instant under the gate
    (``_gate``), as a read-only open does; names that are not tables are
    reported here."""
    opened: List[Tuple[int, str, str]] = []
    try:
        with Gate(ssdir).shared():
            for name in sorted(FILES.listdir(ssdir)):
                rel = f"{SSTABLE_DIR}/{name}"
                if SSTABLE_NAME.match(name):
                    path = os.path.join(ssdir, name)
                    try:
                        opened.append((FILES.open_ro(path), path, rel))
                    except CorruptionError as exc:  # not a regular file
                        report.problem(rel, "CORRUPT", exc.detail, f"corrupt {rel} ({exc})")
                elif HEX_NAME.match(name):
                    report.problem(rel, "BAD NAME", "hex but not 16 lower-case hex digits; "
                                   "recovery refuses to open the store",
                                   f"bad sstable name {rel}")
                elif name.endswith(SSTABLE_TMP_SUFFIX):
                    report.note(rel, "an unfinished sstable write; the next writable open "
                                     "deletes it (nothing is lost)")
            log_path = os.path.join(directory, LOG_NAME)
            fd = FILES.open_ro(log_path) if os.path.lexists(log_path) else -1
            opened.append((fd, log_path, LOG_NAME))
    except BaseException:
        for fd, _, _ in opened:
            if fd >= 0:
                FILES.close(fd)
        raise
    return opened


def verify(directory: str, k: int, v: int, source: str) -> Tuple[bool, str]:
    """Print the report of every file (the sizes came from ``source``);
    return ``(clean, summary)``."""
    import tinylsm  # the store itself, for the final read-only open

    report = Report()
    live = _meta.writer_present(directory)
    print(f"{directory}: key size {k}, value size {v} (from {source})")
    if live:
        print(f"{directory}: live: a writer has the store open; its files are checked "
              "as they were at one instant")
    sizes_from_meta = source == META_NAME
    ssdir = os.path.join(directory, SSTABLE_DIR)
    if not os.path.isdir(ssdir):
        report.problem(SSTABLE_DIR + "/", "MISSING", "recovery refuses a store that "
                       "has lost its sstables", f"no {SSTABLE_DIR}/")
    opened = _open_files(directory, ssdir, report) if os.path.isdir(ssdir) else []
    tables = [rel for _, _, rel in opened if rel != LOG_NAME]
    try:
        for fd, path, rel in _progress.wrap(list(opened), desc="verify", unit="file"):
            if rel != LOG_NAME:
                check_sstable(fd, path, rel, k, v, report)
            elif fd >= 0:
                check_log(fd, k, v, sizes_from_meta, live, report)
            else:
                report.note(LOG_NAME, "missing; a writable open creates it")
            opened.remove((fd, path, rel))
            if fd >= 0:
                FILES.close(fd)
    finally:
        for fd, _, _ in opened:
            if fd >= 0:
                FILES.close(fd)
    for name, size in _kept.listing(FILES, directory):
        report.note(name, f"{size:,} bytes of log set aside by an earlier recovery "
                          "(the log's bytes after the point it could replay to; "
                          "tinylsm never reads them back)")
    # what recovery makes of it all: the real thing, read-only
    quiet = logging.getLogger("tinylsm")
    was_disabled, quiet.disabled = quiet.disabled, True  # reported above already
    try:
        with tinylsm.open(directory, key_size=k, value_size=v, readonly=True) as db:
            keys = len(db)
        recovery = plural(keys, "key")
        report.ok("recovery", f"a read-only open recovers {recovery}"
                  + (" (a later instant)" if live else ""))
    except (Error, ValueError, OSError) as exc:
        recovery = "recovery fails"
        report.problem("recovery", "FAILS", f"{type(exc).__name__}: {exc}",
                       "recovery fails")
    finally:
        quiet.disabled = was_disabled
    if report.problems:
        return False, f"NOT CLEAN: {'; '.join(report.problems)}"
    n = len(tables)
    return True, f"clean: {n:,} sstable{'' if n == 1 else 's'} and the log checked, {recovery}"
