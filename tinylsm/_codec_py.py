"""Pure-Python codec: the twin of ``tinylsm._codec`` (Cython).

Both modules expose the same functions with the same results, byte for byte
and error for error; ``tests/test_codec_parity.py`` holds them to it.  The
format is described in FORMAT.md; in short, with R = 5 + K + V:

* a *record* is ``crc u32 | tag u8 | key K | value V`` (zeros for a
  tombstone), the sstable layout.  Every function here that hands back
  changes hands them back as one ``bytes`` of packed records, so the engine
  makes one call per log scan, per sstable and per merge;
* a log *frame* is a record followed by zero padding up to
  F = 5 + max(8, K + V) bytes, or a batch header (tag 2).

This module favours bulk operations (slices, ``zlib.crc32``, ``bytes.join``)
over per-byte loops: it is as fast as pure Python allows, which is still far
slower than the compiled codec.
"""
from __future__ import annotations

import struct
import zlib
from typing import Iterable, List, Optional, Sequence, Tuple

from ._format import (
    LogScan,
    SST_BAD_KEY_ORDER,
    SST_BAD_TAG,
    SST_COMPLETE,
    SST_CORRUPT,
    SST_CRC,
    SST_SHORT,
    SST_TOMBSTONE_VALUE,
    SST_TRAILING,
    SSTableScan,
    STOP_BAD_PADDING,
    STOP_BAD_TAG,
    STOP_CRC,
    STOP_END,
    STOP_NESTED_BATCH,
    STOP_SHORT,
    STOP_TOMBSTONE_VALUE,
    as_int,
    as_sized,
    bad_type,
    check_sizes,
    packed_view,
)
from ._types import Buffer

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

Change = Tuple[bytes, Optional[bytes]]


def frame_size(key_size: int, value_size: int) -> int:
    """Bytes of one log frame: ``5 + max(8, K + V)``."""
    check_sizes(key_size, value_size)
    return 5 + max(8, key_size + value_size)


def record_size(key_size: int, value_size: int) -> int:
    """Bytes of one packed record: ``5 + K + V``."""
    check_sizes(key_size, value_size)
    return 5 + key_size + value_size


def crc(tag: int, key: bytes, value: Optional[bytes]) -> int:
    """The record checksum of FORMAT.md: ``crc32(tag + key + value) ^ 0xFF``.

    ``value`` of ``None`` adds no bytes: for a tombstone pass
    ``bytes(value_size)``, the zeros its checksum covers.
    """
    return zlib.crc32(bytes((tag,)) + bytes(key) + (value or b"")) ^ 0xFF


def batch_crc(count: int) -> int:
    """Checksum of a batch header: ``crc32(count as u64 LE) ^ 0xFF``."""
    return zlib.crc32(_U64.pack(count)) ^ 0xFF


# -- argument checking ------------------------------------------------------


def _as_bytes(obj: object, size: int, what: str, index: int) -> bytes:
    """Return ``obj`` as ``bytes`` of exactly ``size``, or raise naming it
    (and its item): the one rule of ``_format.as_sized``."""
    return as_sized(obj, size, f"{what}{_where(index)}")


def _where(index: int) -> str:
    return "" if index < 0 else f" of item {index}"


def _split_item(item: object, index: int) -> Tuple[object, object]:
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    raise TypeError(
        f"item {index}: expected a (key, value_or_None) pair, "
        f"got {type(item).__name__}"
        + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
    )


def _records_data(records: Buffer, rsize: int, what: str = "packed records") -> bytes:
    """``records`` as ``bytes``, checked to hold whole units of ``rsize``
    (records, or log frames), or ValueError naming ``what``.

    Any buffer is read as raw bytes (``memoryview.cast("B")``), so the size
    checked is the size in bytes, whatever the buffer's item type.
    """
    data = records if type(records) is bytes else memoryview(records).cast("B").tobytes()
    if len(data) % rsize:
        raise ValueError(
            f"{what}: expected a multiple of {rsize} bytes, "
            f"got {len(data)}"
        )
    return data


# -- log ----------------------------------------------------------------------


def _frame(key: bytes, value: Optional[bytes], value_size: int, pad: bytes) -> bytes:
    body = (b"\x01" + key + value) if value is not None else (
        b"\x00" + key + bytes(value_size)
    )
    return _U32.pack(zlib.crc32(body) ^ 0xFF) + body + pad


def encode_frame(key: object, value: object, key_size: int, value_size: int) -> bytes:
    """One KV frame for ``key`` and ``value`` (``None`` writes a tombstone).

    Raises ``TypeError`` or ``ValueError`` naming the key or value that is
    not bytes of the right size.
    """
    fsize = frame_size(key_size, value_size)
    k = _as_bytes(key, key_size, "key", -1)
    v = None if value is None else _as_bytes(value, value_size, "value", -1)
    return _frame(k, v, value_size, bytes(fsize - 5 - key_size - value_size))


def encode_log(
    items: Sequence[object], key_size: int, value_size: int, batch: bool = False
) -> bytes:
    """Frames for every ``(key, value_or_None)`` of ``items``, in order.

    With ``batch`` the frames are preceded by a batch header of
    ``len(items)``, so that recovery applies all of them or none.  Every item
    is checked before anything is encoded: one bad item raises and nothing
    is returned.
    """
    fsize = frame_size(key_size, value_size)
    pad = bytes(fsize - 5 - key_size - value_size)
    if not isinstance(items, (list, tuple)):
        items = list(items)
    checked: List[Change] = []
    for i, item in enumerate(items):
        k, v = _split_item(item, i)
        checked.append((
            _as_bytes(k, key_size, "key", i),
            None if v is None else _as_bytes(v, value_size, "value", i),
        ))
    parts = [_frame(k, v, value_size, pad) for k, v in checked]
    if batch:
        parts.insert(0, _header(len(checked), fsize))
    return b"".join(parts)


def _header(n: int, fsize: int) -> bytes:
    """A batch header of ``n`` frames of ``fsize`` bytes."""
    return _U32.pack(batch_crc(n)) + b"\x02" + _U64.pack(n) + bytes(fsize - 13)


def _packed_data(obj: object, unit: int, sizes: str, what: str) -> bytes:
    """The raw bytes of ``obj`` (see ``_format.packed_view``)."""
    view = packed_view(obj, unit, sizes, what)
    return obj if type(obj) is bytes else view.tobytes()


def batch_header(count: int, key_size: int, value_size: int) -> bytes:
    """The header frame of a batch of ``count`` changes (an int from 0 to
    2**64 - 1: TypeError or ValueError otherwise)."""
    check_sizes(key_size, value_size)
    as_int(count, "count", 0, 0xFFFFFFFFFFFFFFFF)
    return _header(count, frame_size(key_size, value_size))


def encode_packed(records: Buffer, removals: Optional[Buffer], key_size: int,
                  value_size: int, header: bool = True) -> bytes:
    """The frames of one batch of packed records: exactly what
    ``encode_log(items, key_size, value_size, batch=True)`` makes of

        [(key, value) for each record key + value of records]
        + [(key, None) for each key of removals]

    or, with ``header`` false, those frames without the batch's header (a
    part of a batch encoded piece by piece, after ``batch_header``).

    ``records`` is any bytes-like object of n * (K + V) bytes, each record
    its key then its value; ``removals`` (or None: none) one of m * K bytes,
    keys.  Raises ``TypeError`` for an argument that is not bytes-like and
    ``ValueError`` for one that is not a whole number of records (or keys),
    naming it and the sizes; nothing is encoded then.
    """
    fsize = frame_size(key_size, value_size)
    k, v = key_size, value_size
    data = _packed_data(records, k + v, f"K+V={k + v}", "records")
    gone = b"" if removals is None else _packed_data(removals, k, f"K={k}", "removals")
    pad = bytes(fsize - 5 - k - v)
    rsize = k + v
    parts = [_header(len(data) // rsize + len(gone) // k, fsize)] if header else []
    parts += [_frame(data[off:off + k], data[off + k:off + rsize], v, pad)
              for off in range(0, len(data), rsize)]
    parts += [_frame(gone[off:off + k], None, v, pad) for off in range(0, len(gone), k)]
    return b"".join(parts)


def scan_log(buf: bytes, key_size: int, value_size: int) -> LogScan:
    """Scan a log from offset 0 and return what recovery applies.

    The scan stops at the first short frame, unknown tag, batch header inside
    a batch, checksum mismatch, non-zero padding or tombstone with a non-zero
    value area.  ``records`` holds the applied changes in log order (a batch
    only when all its frames are intact) and ``end`` the offset just past the
    last applied frame or batch: the length to truncate the log to.
    """
    fsize = frame_size(key_size, value_size)
    rsize = 5 + key_size + value_size
    zero_pad = bytes(fsize - rsize)
    zero_value = bytes(value_size)
    zero_hdr_pad = bytes(fsize - 13)
    mv = memoryview(buf).cast("B")
    total = len(mv)
    unpack_u32 = _U32.unpack_from
    crc32 = zlib.crc32

    out: List[bytes] = []  # applied records
    pending: List[bytes] = []  # records of the open batch
    remaining = 0  # frames still owed by the open batch
    end = 0
    tombstones = pending_tombstones = 0
    off = 0
    stop = STOP_END
    while True:
        if total - off < fsize:
            stop = STOP_END if off == total else STOP_SHORT
            break
        tag = mv[off + 4]
        if tag == 2:
            if remaining:
                stop = STOP_NESTED_BATCH
                break
            if (crc32(mv[off + 5 : off + 13]) ^ 0xFF) != unpack_u32(mv, off)[0]:
                stop = STOP_CRC
                break
            if mv[off + 13 : off + fsize] != zero_hdr_pad:
                stop = STOP_BAD_PADDING
                break
            remaining = _U64.unpack_from(mv, off + 5)[0]
            off += fsize
            if not remaining:
                end = off
            continue
        if tag > 1:
            stop = STOP_BAD_TAG
            break
        vstart = off + 5 + key_size
        if tag == 1:
            actual = crc32(mv[off + 4 : off + rsize])
        else:
            actual = crc32(zero_value, crc32(mv[off + 4 : vstart]))
        if (actual ^ 0xFF) != unpack_u32(mv, off)[0]:
            stop = STOP_CRC
            break
        if mv[off + rsize : off + fsize] != zero_pad:
            stop = STOP_BAD_PADDING
            break
        if tag == 0 and mv[vstart : off + rsize] != zero_value:
            stop = STOP_TOMBSTONE_VALUE
            break
        record = bytes(mv[off : off + rsize])
        off += fsize
        if remaining:
            pending.append(record)
            pending_tombstones += tag == 0
            remaining -= 1
            if not remaining:
                out.extend(pending)
                tombstones += pending_tombstones
                pending.clear()
                pending_tombstones = 0
                end = off
        else:
            out.append(record)
            tombstones += tag == 0
            end = off
    return LogScan(b"".join(out), len(out), end, stop, off, tombstones)


# -- records and sstables ------------------------------------------------------


def frame_records(frames: Buffer, key_size: int, value_size: int) -> bytes:
    """The packed records of log frames made by ``encode_log``.

    Batch headers are dropped and padding cut off; nothing else is checked
    (a log read from disk goes through ``scan_log``).  Raises ``ValueError``
    unless ``frames`` holds whole frames.
    """
    fsize = frame_size(key_size, value_size)
    rsize = 5 + key_size + value_size
    data = _records_data(frames, fsize, "log frames")
    return b"".join(
        data[off : off + rsize] for off in range(0, len(data), fsize) if data[off + 4] != 2
    )


def batch_records(frames: bytes, key_size: int, value_size: int) -> "bytes | memoryview":
    """The packed records of one batch made by ``encode_log(..., batch=True)``.

    When K + V >= 8 a frame has no padding, so the frames after the header
    already are the records: a view of them is returned, without a copy.
    """
    fsize = frame_size(key_size, value_size)
    if key_size + value_size >= 8:
        return memoryview(frames)[fsize:]
    return frame_records(memoryview(frames)[fsize:], key_size, value_size)


def pack_records(items: Iterable[object], key_size: int, value_size: int) -> bytes:
    """Pack ``(key, value_or_None)`` pairs into records, checksums included.

    The pairs are packed in the order given; ``encode_sstable`` checks order.
    """
    check_sizes(key_size, value_size)
    parts = []
    for i, item in enumerate(items):
        k, v = _split_item(item, i)
        parts.append(_frame(
            _as_bytes(k, key_size, "key", i),
            None if v is None else _as_bytes(v, value_size, "value", i),
            value_size,
            b"",
        ))
    return b"".join(parts)


def unpack_records(records: bytes, key_size: int, value_size: int) -> List[Change]:
    """Split packed records into ``(key, value_or_None)`` pairs, unchecked."""
    rsize = record_size(key_size, value_size)
    data = _records_data(records, rsize)
    kstart = 5
    vstart = 5 + key_size
    return [
        (
            data[off + kstart : off + vstart],
            data[off + vstart : off + rsize] if data[off + 4] else None,
        )
        for off in range(0, len(data), rsize)
    ]


def sstable_header(records: bytes, key_size: int, value_size: int) -> bytes:
    """The start of the sstable payload of ``records``: its ``count u64``
    (the records follow it, as they are).

    Raises ``ValueError`` unless the keys are strictly increasing, since a
    file with unsorted keys would be refused when read back.
    """
    rsize = record_size(key_size, value_size)
    data = _records_data(records, rsize)
    count = len(data) // rsize
    keys = [data[off + 5 : off + 5 + key_size] for off in range(0, len(data), rsize)]
    for i in range(1, count):
        if keys[i] <= keys[i - 1]:
            raise ValueError(
                f"packed records: keys must be strictly increasing, "
                f"record {i} is not greater than record {i - 1}"
            )
    return _U64.pack(count)


def encode_sstable(records: bytes, key_size: int, value_size: int) -> bytes:
    """The uncompressed sstable payload: ``sstable_header`` then the records
    (``ValueError`` as ``sstable_header``)."""
    header = sstable_header(records, key_size, value_size)
    return header + _records_data(records, record_size(key_size, value_size))


def decode_sstable(payload: bytes, key_size: int, value_size: int) -> SSTableScan:
    """Check an uncompressed sstable payload and return its valid records.

    ``status`` says how it ended: ``complete``; ``short`` when the payload
    stops before ``count`` records (a torn write: the records before the tear
    are returned); ``corrupt`` when a record is damaged (``error_index`` and
    ``reason`` say which and why; the records before it are returned) or
    bytes follow the last record.
    """
    rsize = record_size(key_size, value_size)
    mv = memoryview(payload).cast("B")
    total = len(mv)
    if total < 8:
        return SSTableScan(b"", 0, -1, SST_SHORT, 0, "", 0)
    expected = _U64.unpack_from(mv, 0)[0]
    whole = (total - 8) // rsize
    check = min(whole, expected)
    zero_value = bytes(value_size)
    unpack_u32 = _U32.unpack_from
    crc32 = zlib.crc32
    tombstones = 0
    prev_key = None
    reason = ""
    i = 0
    off = 8
    while i < check:
        tag = mv[off + 4]
        vstart = off + 5 + key_size
        if tag > 1:
            reason = f"{SST_BAD_TAG} {tag}"
            break
        if tag == 1:
            actual = crc32(mv[off + 4 : off + rsize])
        else:
            actual = crc32(zero_value, crc32(mv[off + 4 : vstart]))
        if (actual ^ 0xFF) != unpack_u32(mv, off)[0]:
            reason = SST_CRC
            break
        if tag == 0 and mv[vstart : off + rsize] != zero_value:
            reason = SST_TOMBSTONE_VALUE
            break
        key = mv[off + 5 : vstart].tobytes()
        if prev_key is not None and key <= prev_key:
            reason = SST_BAD_KEY_ORDER
            break
        tombstones += tag == 0
        prev_key = key
        i += 1
        off += rsize
    records = mv[8 : 8 + i * rsize].tobytes()
    if reason:
        return SSTableScan(records, i, expected, SST_CORRUPT, i, reason, tombstones)
    if whole > expected or (whole == expected and (total - 8) % rsize):
        return SSTableScan(records, i, expected, SST_CORRUPT, i, SST_TRAILING, tombstones)
    if whole < expected:
        return SSTableScan(records, i, expected, SST_SHORT, i, "", tombstones)
    return SSTableScan(records, i, expected, SST_COMPLETE, -1, "", tombstones)


def sort_records(records: bytes, key_size: int, value_size: int) -> bytes:
    """Sort records by key, keeping only the last record of each key.

    This turns the changes of a log (in log order) into an sstable's records.
    """
    rsize = record_size(key_size, value_size)
    data = _records_data(records, rsize)
    latest = {
        data[off + 5 : off + 5 + key_size]: data[off : off + rsize]
        for off in range(0, len(data), rsize)
    }
    return b"".join(latest[k] for k in sorted(latest))


def merge_runs(
    runs: Sequence[bytes], key_size: int, value_size: int, drop_tombstones: bool
) -> bytes:
    """Merge sorted runs of records, oldest first, into one sorted run.

    For a key found in several runs the newest record wins.  With
    ``drop_tombstones`` (the merge includes the oldest sstable, so nothing
    older is left to hide) tombstones are left out of the result.
    """
    rsize = record_size(key_size, value_size)
    latest = {}
    for run in runs:
        data = _records_data(run, rsize)
        for off in range(0, len(data), rsize):
            latest[data[off + 5 : off + 5 + key_size]] = data[off : off + rsize]
    keys = sorted(latest)
    if drop_tombstones:
        return b"".join(r for r in (latest[k] for k in keys) if r[4])
    return b"".join(latest[k] for k in keys)
