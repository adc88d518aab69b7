"""Every on-disk fact in Python: file names and their rules, the batch
header, sizes, stop reasons and result types, and the rule for keys.

FORMAT.md describes the format; this module (with ``_format.h``, its C
side) is the one place the code says it.  Both codecs return these exact
objects and strings, so a parity test can compare results with ``==``.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Optional

# -- names in a store directory (FORMAT.md, "Directory") ---------------------------

#: The write-ahead log.
LOG_NAME = "log"
#: The directory of sstables.
SSTABLE_DIR = "sstables"
#: tinylsm's record of the key and value sizes (the Rust crate ignores it).
META_NAME = "tinylsm.meta"
#: tinylsm 0.1's lock file, still locked for it (the lock is the directory's).
LOCK_NAME = "tinylsm.lock"
#: A file written under this name + ".tmp" first, then renamed.
TMP_SUFFIX = ".tmp"
#: An sstable's name: its id as 16 lower-case hex digits.
SSTABLE_NAME = re.compile(r"[0-9a-f]{16}\Z")
#: A name the Rust crate would parse as an sstable id (and fail to open if
#: it is not an SSTABLE_NAME).
HEX_NAME = re.compile(r"\+?[0-9a-fA-F]+\Z")
#: An unfinished sstable write, deleted at recovery (``%x-tmp``).
SSTABLE_TMP_SUFFIX = "-tmp"
#: Log bytes that recovery set aside: ``tinylsm.kept-<seq>-at-<offset>``.
KEPT_NAME = re.compile(r"tinylsm\.kept-(\d+)-at-(\d+)\Z")
#: A rollover's copy of the log from an offset on, renamed over ``log`` once
#: complete: ``tinylsm.log-from-<offset>`` (see ``_rollover``).
LOG_COPY_NAME = re.compile(r"tinylsm\.log-from-(\d+)\Z")


def sstable_name(sst_id: int) -> str:
    """The file name of sstable ``sst_id``: 16 lower-case hex digits."""
    return f"{sst_id:016x}"


def sstable_tmp_name(sst_id: int) -> str:
    """The name an sstable is written under before its rename (as in tiny-lsm)."""
    return f"{sst_id:x}{SSTABLE_TMP_SUFFIX}"


def log_copy_name(offset: int) -> str:
    """The name a rollover copies the log's bytes from ``offset`` on to."""
    return f"tinylsm.log-from-{offset}"


def kept_name(seq: int, offset: int) -> str:
    """The name of the ``seq``-th kept log tail, cut from log ``offset``."""
    return f"tinylsm.kept-{seq:06d}-at-{offset}"


# -- the log's batch header (FORMAT.md, "Log") ---------------------------------

#: The tag of a batch header frame.
BATCH_TAG = 2


def batch_count(frame: bytes) -> int:
    """The number of frames a batch header announces (u64 LE after the tag)."""
    return int.from_bytes(frame[5:13], "little")

#: Largest key or value size accepted, a guard against absurd allocations.
MAX_ITEM_SIZE = 1 << 16

# Why a log scan stopped.  STOP_END is the clean end of the data.
STOP_END = "end of log"
STOP_SHORT = "short frame"
STOP_BAD_TAG = "unknown tag"
STOP_NESTED_BATCH = "batch header inside a batch"
STOP_CRC = "checksum mismatch"
STOP_BAD_PADDING = "non-zero padding"
STOP_TOMBSTONE_VALUE = "non-zero value in a tombstone"

# How an sstable payload ended, and why a corrupt one is corrupt.
SST_COMPLETE = "complete"
SST_SHORT = "short"
SST_CORRUPT = "corrupt"
SST_BAD_TAG = "unknown tag"  # followed by the tag, e.g. "unknown tag 7"
SST_CRC = "checksum mismatch"
SST_TOMBSTONE_VALUE = "non-zero value in a tombstone"
SST_BAD_KEY_ORDER = "key not greater than the previous key"
SST_TRAILING = "bytes after the last counted record"


class LogScan(NamedTuple):
    """What a log scan found.

    ``records`` packs the applied changes in log order (5 + K + V bytes each),
    ``count`` of them, ``tombstones`` of which remove a key.  ``end`` is the
    offset just past the last applied frame or complete batch, the length the
    log is truncated to.  ``stop`` names why the scan ended and
    ``stop_offset`` where: ``STOP_END`` at the length of the data for a clean
    end.  ``end < stop_offset`` means a batch was cut short and dropped.
    """

    records: bytes
    count: int  # type: ignore[assignment]  # shadows tuple.count(), unused on a scan
    end: int
    stop: str
    stop_offset: int
    tombstones: int


class SSTableScan(NamedTuple):
    """What decoding an sstable payload found.

    ``records`` packs the valid records (all of them when ``status`` is
    ``complete``, the ones before the damage otherwise), ``count`` of them,
    ``tombstones`` of which are tombstones.  ``expected`` is the count stored
    in the header (-1 when the payload is too short to hold it).  For a
    ``corrupt`` payload ``error_index`` is the first bad record and
    ``reason`` says what is wrong with it; for a ``short`` one
    ``error_index`` is the first missing record.
    """

    records: bytes
    count: int  # type: ignore[assignment]  # shadows tuple.count(), unused on a scan
    expected: int
    status: str
    error_index: int
    reason: str
    tombstones: int


def check_sizes(key_size: int, value_size: int) -> None:
    """Raise unless ``key_size >= 1`` and ``value_size >= 0`` are usable."""
    as_int(key_size, "key_size", 1, MAX_ITEM_SIZE)
    as_int(value_size, "value_size", 0, MAX_ITEM_SIZE)


# -- the one rule for keys and values -------------------------------------------

# Every method of every build accepts a key or value the same way: ``bytes``
# as it is, any other object with the buffer protocol as its raw bytes
# (``memoryview(obj).tobytes()``); anything else is a TypeError, and the wrong
# length a ValueError.  The compiled modules apply the rule in C and build
# their messages here, so the words cannot drift.  Its type, for annotations,
# is ``Buffer`` (``_types.py``).


def bad_type(what: str, obj: object) -> TypeError:
    """The error for ``obj`` that is not bytes-like."""
    return TypeError(f"{what}: expected a bytes-like object, got {type(obj).__name__}")


def packed_view(obj: object, unit: int, sizes: str, what: str) -> memoryview:
    """``obj``, any bytes-like object, as a C-contiguous ``memoryview`` of
    its raw bytes (one that is not C-contiguous is read in C order, into a
    copy), checked to hold whole units of ``unit`` bytes: ``TypeError`` or
    ``ValueError`` naming ``what`` and ``sizes`` (how ``unit`` is made)
    otherwise."""
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise bad_type(what, obj) from None
    if view.nbytes % unit:
        raise ValueError(f"{what}: expected a multiple of {sizes} bytes, got {view.nbytes}")
    if not view.c_contiguous:
        return memoryview(view.tobytes())
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def bad_size(what: str, expected: int, got: int) -> ValueError:
    """The error for a bytes-like ``what`` of ``got`` bytes, not ``expected``."""
    return ValueError(f"{what}: expected {expected} bytes, got {got}")


def as_bytes(obj: object, what: str) -> bytes:
    """``obj`` as ``bytes`` of any length, by the rule above."""
    if type(obj) is bytes:
        return obj
    try:
        return memoryview(obj).tobytes()  # type: ignore[arg-type]
    except TypeError:
        raise bad_type(what, obj) from None


def as_sized(obj: object, size: int, what: str) -> bytes:
    """``obj`` as ``bytes`` of exactly ``size``, by the rule above."""
    data = as_bytes(obj, what)
    if len(data) != size:
        raise bad_size(what, size, len(data))
    return data


def as_int(obj: object, what: str, low: int, high: Optional[int] = None) -> int:
    """``obj`` as an ``int`` (not a ``bool``) from ``low`` to ``high`` (no
    upper bound if None), or ``TypeError``/``ValueError`` naming ``what``
    and the value given."""
    if not isinstance(obj, int) or isinstance(obj, bool):
        raise TypeError(f"{what}: expected int, got {type(obj).__name__}")
    if high is None:
        if obj < low:
            raise ValueError(f"{what}: expected at least {low}, got {obj}")
    elif not low <= obj <= high:
        raise ValueError(f"{what}: expected {low} to {high}, got {obj}")
    return obj
