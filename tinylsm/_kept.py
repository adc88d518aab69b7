"""Log tails that recovery sets aside instead of destroying.

Recovery replays the log up to the first frame it cannot trust and cuts the
log there (point-in-time recovery, as the Rust crate and RocksDB do).  The
bytes after that point may still hold data: a bit flip in one frame stops
the replay, yet every frame after it may be intact.  Only bytes that cannot
be data are dropped: a tail of zeros (a file extended by a crash before its
data reached the disk), or a single torn final frame (at most one frame's
bytes, and not a well-formed frame).  Anything else is first copied, durably,
to ``tinylsm.kept-<n>-at-<offset>`` in the store directory (never in
``sstables/``, so the Rust crate ignores it), then the log is cut.
``tinylsm verify`` lists these files; nothing reads them back.
"""
from __future__ import annotations

import os
from typing import List, Tuple

from . import _logread
from ._backend import codec
from ._format import KEPT_NAME, STOP_SHORT, TMP_SUFFIX, kept_name
from ._fs import Files



def is_kept_name(name: str) -> bool:
    return KEPT_NAME.match(name) is not None


def may_hold_data(tail: bytes, key_size: int, value_size: int) -> bool:
    """False only for a tail that provably holds no change: all zeros, or a
    torn final frame (at most one frame, and not a well-formed one)."""
    if not tail or tail.count(0) == len(tail):
        return False
    frame = codec.frame_size(key_size, value_size)
    if len(tail) > frame:
        return True
    return len(tail) == frame and _well_formed(tail, key_size, value_size)


def tail_may_hold_data(files: Files, fd: int, start: int, end: int, key_size: int,
                       value_size: int) -> bool:
    """``may_hold_data`` of bytes ``[start, end)`` of the log ``fd``, read a
    chunk at a time (a tail longer than a frame is only checked for zeros)."""
    if end - start <= codec.frame_size(key_size, value_size):
        return may_hold_data(files.pread_all(fd, end - start, start), key_size, value_size)
    return not _logread.zeros(files, fd, start, end)


def _well_formed(frame: bytes, key_size: int, value_size: int) -> bool:
    """True if ``frame`` passes every check of a log scan: a change, or a
    batch header (whose batch was cut short)."""
    scan = codec.scan_log(frame, key_size, value_size)
    return scan.end == len(frame) or (frame[4] == 2 and scan.stop == STOP_SHORT)


def listing(files: Files, directory: str) -> List[Tuple[str, int]]:
    """``(name, size)`` of every kept tail in ``directory``, by name."""
    out = []
    for name in sorted(files.listdir(directory)):
        if is_kept_name(name):
            out.append((name, files.file_size(os.path.join(directory, name))))
    return out


def remove_unfinished(files: Files, directory: str) -> List[str]:
    """Delete kept tails whose write never finished (``<name>.tmp``).

    Provably redundant: the log is cut only after the kept file is renamed
    into place and the directory fsynced, so while a ``.tmp`` exists the log
    still held those bytes, and this recovery has just set them aside anew
    (or found nothing there to keep).  Returns the names removed.
    """
    gone = []
    for name in sorted(files.listdir(directory)):
        if name.endswith(TMP_SUFFIX) and is_kept_name(name[: -len(TMP_SUFFIX)]):
            files.unlink(os.path.join(directory, name))
            gone.append(name)
    if gone:
        files.fsync_dir(directory)
    return gone


def set_aside(files: Files, directory: str, fd: int, start: int, end: int) -> str:
    """Copy bytes ``[start, end)`` of the log ``fd`` (its tail) to a new
    kept file, a chunk at a time and durably (written, fsynced, renamed,
    directory fsynced); return its path.

    Only after this returns may the log be cut: a crash in between leaves
    the tail in both places, and the next recovery keeps it again.
    """
    path = _next_path(files, directory, start)
    tmp = path + TMP_SUFFIX
    out = files.create(tmp)
    try:
        step = _logread.chunk()
        for off in range(start, end, step):
            data = files.pread_all(fd, min(step, end - off), off)
            files.pwrite(out, data, off - start)
        files.fsync(out)
    finally:
        files.close(out)
    files.rename(tmp, path)
    files.fsync_dir(directory)
    return path


def set_aside_file(files: Files, directory: str, path: str, offset: int) -> str:
    """Rename ``path`` (log bytes from ``offset``, durable already) to a new
    kept name in ``directory``; return the new path.  The caller fsyncs the
    directory."""
    kept = _next_path(files, directory, offset)
    files.rename(path, kept)
    return kept


def _next_path(files: Files, directory: str, offset: int) -> str:
    seqs = [int(m.group(1)) for m in map(KEPT_NAME.match, files.listdir(directory)) if m]
    return os.path.join(directory, kept_name(max(seqs, default=0) + 1, offset))
