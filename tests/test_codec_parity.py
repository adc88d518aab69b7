"""Parity of the compiled codec (tinylsm._codec) and its pure-Python twin.

Both codecs get the same inputs, sound and damaged, and must return equal
results (``==``) or raise the same exception type with the same message.
Where a plain model exists (a ``dict`` for sorting and merging, the records
that went in for a clean log) the result is checked against it too.

Every Hypothesis test here is cheap: small inputs, so the file runs in well
under a minute with the default profiles.
"""
from __future__ import annotations

import array
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinylsm import _codec_py as py  # builds test inputs; always importable
from tinylsm import _format

#: (K, V) pairs every damage test runs with; (8, 0) has no value at all.
SIZES = [(1, 1), (2, 3), (4, 4), (8, 8), (16, 4), (32, 32), (64, 256), (8, 0)]
SIZE_IDS = [f"k{k}v{v}" for k, v in SIZES]

#: Batch counts for raw headers: empty, small, and far more than any log holds.
HEADER_COUNTS = [0, 1, 2, 3, 7, 2**32, 2**63, 2**64 - 1]


def outcome(fn, *args):
    """What a call did: its result, or the type and message it raised."""
    try:
        return ("returned", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the exception is the result
        return ("raised", type(exc), str(exc))


class Fresh:
    """An argument made anew for each codec: an iterator is used up by one."""

    def __init__(self, make):
        self.make = make


def same(both_codecs, name, *args):
    """Call ``name`` on both codecs with ``args``; require the same outcome."""
    compiled, python = both_codecs

    def call(codec):
        made = [a.make() if isinstance(a, Fresh) else a for a in args]
        return outcome(getattr(codec, name), *made)

    got = call(compiled)
    want = call(python)
    assert got == want, f"{name}: compiled {got!r:.500} != python {want!r:.500}"
    return want


def batch_header(n: int, fsize: int) -> bytes:
    """A batch header written from FORMAT.md, independently of both codecs."""
    body = struct.pack("<Q", n)
    return struct.pack("<I", zlib.crc32(body) ^ 0xFF) + b"\x02" + body + bytes(fsize - 13)


def frame_size(k: int, v: int) -> int:
    return 5 + max(8, k + v)


WRAPPERS = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}
wrappers = st.sampled_from(sorted(WRAPPERS)).map(WRAPPERS.__getitem__)


@st.composite
def changes(draw, k: int, v: int, max_size: int = 8):
    """``(key, value_or_None)`` pairs over a few keys, so keys repeat."""
    pool = draw(st.lists(st.binary(min_size=k, max_size=k), min_size=1, max_size=5))
    return draw(
        st.lists(
            st.tuples(st.sampled_from(pool), st.none() | st.binary(min_size=v, max_size=v)),
            max_size=max_size,
        )
    )


@st.composite
def damaged_logs(draw, k: int, v: int):
    """A log of frames, batches and raw batch headers, then some damage."""
    fsize = frame_size(k, v)
    log = bytearray()
    for kind in draw(st.lists(st.sampled_from(["frames", "batch", "header"]), max_size=6)):
        if kind == "header":
            log += batch_header(draw(st.sampled_from(HEADER_COUNTS)), fsize)
        else:
            log += py.encode_log(draw(changes(k, v, 4)), k, v, batch=kind == "batch")
    damage = st.tuples(
        st.sampled_from(["flip", "tag", "tail", "truncate", "append"]),
        st.integers(0, 2**32),
        st.integers(0, 255),
    )
    for kind, where, value in draw(st.lists(damage, max_size=3)):
        frames = len(log) // fsize
        if kind == "truncate":
            del log[where % (len(log) + 1):]
        elif kind == "append":
            log += bytes([value]) * (1 + where % (2 * fsize))
        elif not frames:
            continue
        elif kind == "flip":
            log[where % len(log)] ^= 1 << (value % 8)
        elif kind == "tag":  # unknown tags, and tag 2 where a frame was
            log[(where % frames) * fsize + 4] = value
        elif fsize > 5 + k:  # tail: value area or padding made non-zero
            start = (where % frames) * fsize + 5 + k
            log[start + (where // frames) % (fsize - 5 - k)] = value or 1
    return bytes(log)


@st.composite
def damaged_payloads(draw, k: int, v: int):
    """An sstable payload of sorted unique records, then some damage."""
    rsize = 5 + k + v
    items = sorted(dict(draw(changes(k, v, 8))).items())
    payload = bytearray(py.encode_sstable(py.pack_records(items, k, v), k, v))
    damage = st.tuples(
        st.sampled_from(
            ["truncate", "flip", "append", "count", "tag", "tail", "swap", "dup"]
        ),
        st.integers(0, 2**32),
        st.integers(0, 255),
    )
    for kind, where, value in draw(st.lists(damage, max_size=3)):
        count = max(0, (len(payload) - 8) // rsize)
        at = 8 + (where % count) * rsize if count else None
        if kind == "truncate":
            del payload[where % (len(payload) + 1):]
        elif kind == "append":
            payload += bytes([value]) * (1 + where % (2 * rsize))
        elif kind == "flip" and payload:
            payload[where % len(payload)] ^= 1 << (value % 8)
        elif kind == "count" and len(payload) >= 8:
            choices = [0, max(0, count - 1), count + 1, count + 2, 2**63, 2**64 - 1, where]
            payload[:8] = struct.pack("<Q", choices[value % len(choices)])
        elif at is None:
            continue
        elif kind == "tag":
            payload[at + 4] = value
        elif kind == "tail" and v:  # a tombstone's value area, or a live value
            payload[at + 5 + k + (where // count) % v] = value or 1
        elif kind == "swap" and at + 2 * rsize <= len(payload):
            payload[at:at + 2 * rsize] = (
                payload[at + rsize:at + 2 * rsize] + payload[at:at + rsize]
            )
        elif kind == "dup":  # a duplicate key, with the count kept right
            payload[at:at] = payload[at:at + rsize]
            payload[:8] = struct.pack("<Q", count + 1)
    return bytes(payload)


def test_same_public_functions(both_codecs):
    compiled, python = both_codecs
    names = [
        "frame_size", "record_size", "crc", "batch_crc", "encode_frame",
        "encode_log", "scan_log", "frame_records", "pack_records", "unpack_records",
        "sstable_header", "encode_sstable", "decode_sstable", "sort_records", "merge_runs",
        "encode_packed", "batch_header",
    ]
    for name in names:
        assert callable(getattr(compiled, name)), name
        assert callable(getattr(python, name)), name


# -- round trips on each codec -------------------------------------------------


@pytest.mark.parametrize("k,v", SIZES, ids=SIZE_IDS)
def test_log_round_trip(codec, k, v):
    items = [(bytes([i]) * k, None if i % 3 == 0 else bytes([255 - i]) * v) for i in range(7)]
    log = codec.encode_log(items, k, v, batch=True)
    assert log[: frame_size(k, v)] == batch_header(len(items), frame_size(k, v))
    scan = codec.scan_log(log, k, v)
    assert scan == _format.LogScan(
        codec.pack_records(items, k, v), 7, len(log), _format.STOP_END, len(log), 3
    )
    assert codec.unpack_records(scan.records, k, v) == items


def test_empty_batch_is_consumed(codec):
    log = codec.encode_log([], 8, 8, batch=True)
    assert log == batch_header(0, 21)
    assert codec.scan_log(log, 8, 8) == _format.LogScan(b"", 0, 21, _format.STOP_END, 21, 0)


def test_torn_batch_is_dropped(codec):
    single = codec.encode_frame(b"a" * 8, b"b" * 8, 8, 8)
    log = single + codec.encode_log([(b"c" * 8, None)] * 3, 8, 8, batch=True)
    scan = codec.scan_log(log[:-1], 8, 8)
    assert (scan.records, scan.count, scan.end) == (single, 1, 21)
    assert (scan.stop, scan.stop_offset) == (_format.STOP_SHORT, 21 * 4)


def test_sstable_round_trip(codec):
    items = [(bytes([i]) * 4, None if i % 2 else b"v" * 4) for i in range(5)]
    records = codec.pack_records(items, 4, 4)
    payload = codec.encode_sstable(records, 4, 4)
    assert payload[:8] == struct.pack("<Q", 5)
    assert codec.decode_sstable(payload, 4, 4) == _format.SSTableScan(
        records, 5, 5, _format.SST_COMPLETE, -1, "", 2
    )


# -- logs ------------------------------------------------------------------------


@pytest.mark.parametrize("k,v", SIZES, ids=SIZE_IDS)
@given(data=st.data())
def test_scan_log_parity_on_damaged_logs(both_codecs, k, v, data):
    log = data.draw(damaged_logs(k, v))
    wrap = data.draw(wrappers)
    result = same(both_codecs, "scan_log", wrap(log), k, v)
    scan = result[1]
    assert len(scan.records) == scan.count * (5 + k + v)
    assert scan.end <= scan.stop_offset <= len(log)


FRAME_FAULTS = ["crc", "pad", "value", "tag"]


@pytest.mark.parametrize("k,v", SIZES, ids=SIZE_IDS)
def test_scan_log_check_order(both_codecs, k, v):
    """Every mix of faults in one frame, so the order of the checks shows:
    which reason wins when several apply is part of the contract."""
    fsize = frame_size(k, v)
    good = py.encode_frame(b"g" * k, b"h" * v, k, v)
    for tag in (0, 1, 2):
        for mask in range(1 << len(FRAME_FAULTS)):
            faults = {f for i, f in enumerate(FRAME_FAULTS) if mask >> i & 1}
            if tag == 2:
                frame = bytearray(batch_header(1, fsize))
                pad_at = 13 if fsize > 13 else None
                value_at = None
            else:
                frame = bytearray(py.encode_frame(b"k" * k, None if tag == 0 else b"v" * v, k, v))
                pad_at = 5 + k + v if fsize > 5 + k + v else None
                value_at = 5 + k if v else None
            if "crc" in faults:
                frame[0] ^= 0x10
            if "pad" in faults and pad_at is not None:
                frame[pad_at] = 1
            if "value" in faults and value_at is not None:
                frame[value_at] ^= 0x40
            if "tag" in faults:
                frame[4] = 9
            for log in (bytes(frame), good + frame + good, bytes(frame) + good):
                same(both_codecs, "scan_log", log, k, v)
                # The same fault inside a batch, and a header inside a batch.
                same(both_codecs, "scan_log", batch_header(2, fsize) + frame + good, k, v)


@pytest.mark.parametrize("k,v", SIZES, ids=SIZE_IDS)
def test_decode_sstable_check_order(both_codecs, k, v):
    """Every mix of faults in one sstable record, as for the log."""
    rsize = 5 + k + v
    first = py.pack_records([(b"\x05" * k, b"a" * v)], k, v)
    for tag in (0, 1):
        for mask in range(1 << 4):
            record = bytearray(
                py.pack_records([(b"\x07" * k, None if tag == 0 else b"v" * v)], k, v)
            )
            if mask & 1:
                record[0] ^= 0x10
            if mask & 2 and v:
                record[5 + k] ^= 0x40
            if mask & 4:
                record[4] = 9
            if mask & 8:  # a key not greater than the first record's
                record[5:5 + k] = b"\x05" * k
            body = first + record
            for count in (2, 1, 3):
                payload = struct.pack("<Q", count) + body
                same(both_codecs, "decode_sstable", payload, k, v)
                same(both_codecs, "decode_sstable", payload + b"\x00", k, v)
                same(both_codecs, "decode_sstable", payload[:-1], k, v)
        assert len(first) == rsize


@pytest.mark.parametrize("k,v", SIZES, ids=SIZE_IDS)
@given(data=st.data())
def test_encode_parity(both_codecs, k, v, data):
    items = data.draw(changes(k, v))
    batch = data.draw(st.booleans())
    log = same(both_codecs, "encode_log", items, k, v, batch)[1]
    records = same(both_codecs, "pack_records", items, k, v)[1]
    assert same(both_codecs, "unpack_records", records, k, v)[1] == items
    frames = [same(both_codecs, "encode_frame", key, value, k, v)[1] for key, value in items]
    fsize = frame_size(k, v)
    assert log == (batch_header(len(items), fsize) if batch else b"") + b"".join(frames)
    for frame, (key, value) in zip(frames, items):
        tag = 0 if value is None else 1
        assert frame[4] == tag and frame[5:5 + k] == key
        assert struct.unpack_from("<I", frame)[0] == (
            zlib.crc32(bytes([tag]) + key + (bytes(v) if value is None else value)) ^ 0xFF
        )


@given(data=st.data())
def test_encode_accepts_bytearray_and_memoryview(both_codecs, data):
    k, v = data.draw(st.sampled_from(SIZES))
    items = data.draw(changes(k, v))
    wrapped = [
        (data.draw(wrappers)(key), None if value is None else data.draw(wrappers)(value))
        for key, value in items
    ]
    container = data.draw(st.sampled_from([list, tuple, iter]))
    fresh = Fresh(lambda: container(wrapped))
    want = same(both_codecs, "encode_log", items, k, v)[1]
    assert same(both_codecs, "encode_log", fresh, k, v)[1] == want
    assert same(both_codecs, "pack_records", fresh, k, v)[1] == (
        same(both_codecs, "pack_records", items, k, v)[1]
    )


@given(data=st.data())
def test_crc_parity(both_codecs, data):
    tag = data.draw(st.integers(-1, 300))
    key = data.draw(st.binary(max_size=40))
    value = data.draw(st.none() | st.binary(max_size=40))
    same(both_codecs, "crc", tag, key, value)
    same(both_codecs, "batch_crc", data.draw(st.integers(-(2**64), 2**65)))


@pytest.mark.parametrize(
    "args",
    [
        ("x", b"k", None), (1, "k", None), (1, b"k", "v"), (1, 5, None),
        (True, b"k", b"v"), (1, b"k", 0), (1, b"k", 7), (1, bytearray(b"k"), None),
        (1, memoryview(b"k"), memoryview(b"v")), (1, b"k", bytearray(b"v")),
        (None, b"k", None), (2.0, b"k", None),
    ],
    ids=repr,
)
def test_crc_odd_arguments(both_codecs, args):
    same(both_codecs, "crc", *args)


@pytest.mark.parametrize("count", ["1", None, 1.0, True, -1, 2**64, 2**64 - 1, 0])
def test_batch_crc_odd_arguments(both_codecs, count):
    same(both_codecs, "batch_crc", count)


# -- bad arguments -------------------------------------------------------------------

K8 = b"k" * 8
V8 = b"v" * 8

#: Items for K = V = 8: wrong types, wrong sizes, wrong shapes, and odd but
#: accepted buffers.
ODD_ITEMS = [
    "x", 5, None, K8, (K8,), (K8, None, None), [K8], [], (),
    (K8[:7], None), (K8 + b"k", None), ("k" * 8, None), (5, None), (None, None),
    (K8, V8[:7]), (K8, V8 + b"v"), (K8, "v" * 8), (K8, 0), (K8, []), (K8, b""),
    (bytearray(K8), V8), (memoryview(K8), bytearray(V8)), [K8, memoryview(V8)],
    (memoryview(K8 * 2)[::2], None), (memoryview(array.array("H", [0] * 4)), V8),
    (memoryview(array.array("H", [0] * 8)), None), (bytearray(7), None),
    {"k": K8, "v": V8}, {K8, V8},
]


@pytest.mark.parametrize("item", ODD_ITEMS, ids=repr)
@pytest.mark.parametrize("position", [0, 2])
def test_encoders_reject_bad_items_alike(both_codecs, item, position):
    items = [(K8, V8), (K8, None)][:position] + [item] + [(K8, V8)]
    for container in (list, tuple):
        same(both_codecs, "encode_log", container(items), 8, 8)
        same(both_codecs, "encode_log", container(items), 8, 8, True)
        same(both_codecs, "pack_records", container(items), 8, 8)
    same(both_codecs, "pack_records", Fresh(lambda: iter(items)), 8, 8)
    same(both_codecs, "encode_log", Fresh(lambda: iter(items)), 8, 8)
    if isinstance(item, (tuple, list)) and len(item) == 2:
        same(both_codecs, "encode_frame", item[0], item[1], 8, 8)


def failing_generator():
    yield (K8, V8)
    yield "x"  # a bad item before the generator fails
    raise RuntimeError("the generator failed")


@pytest.mark.parametrize(
    "items",
    ["ab", b"ab", 5, None, {K8: V8}, failing_generator, lambda: iter([(K8, V8)] * 3)],
    ids=repr,
)
def test_encoders_reject_bad_containers_alike(both_codecs, items):
    arg = Fresh(items) if callable(items) else items
    for name in ("encode_log", "pack_records"):
        same(both_codecs, name, arg, 8, 8)
        same(both_codecs, name, arg, 8, 8, *([True] if name == "encode_log" else []))


BAD_SIZES = [
    (0, 1), (1, -1), ("8", 8), (8, "8"), (8.0, 8), (True, 8), (8, False),
    (65537, 0), (8, 65537), (None, 8), (-1, -1),
]


@pytest.mark.parametrize("sizes", BAD_SIZES + [(65536, 65536), (1, 0)], ids=repr)
def test_sizes_checked_alike(both_codecs, sizes):
    same(both_codecs, "frame_size", *sizes)
    same(both_codecs, "record_size", *sizes)
    same(both_codecs, "encode_frame", K8, V8, *sizes)
    for name in ("encode_log", "pack_records"):
        same(both_codecs, name, [(K8, V8)], *sizes)
        same(both_codecs, name, [], *sizes)
    for name in ("scan_log", "decode_sstable", "unpack_records", "encode_sstable",
                 "sort_records"):
        same(both_codecs, name, b"", *sizes)
    for drop in (False, True):
        same(both_codecs, "merge_runs", [], *sizes, drop)
        same(both_codecs, "merge_runs", [b""], *sizes, drop)


ODD_BUFFERS = [
    "abc", "a" * 21, 5, None, 2.5, [0] * 21, [300] * 21, [0] * 20,
    memoryview(bytes(42))[::2], memoryview(bytes(84)).cast("B", (2, 42)),
    memoryview(array.array("H", [0] * 21)), array.array("B", [0] * 21),
    bytearray(21), memoryview(bytes(21)), bytearray(b"x" * 7),
]


@pytest.mark.parametrize("buf", ODD_BUFFERS, ids=repr)
def test_buffers_accepted_alike(both_codecs, buf):
    for name in ("scan_log", "decode_sstable", "unpack_records", "encode_sstable",
                 "sort_records"):
        same(both_codecs, name, buf, 8, 8)
    same(both_codecs, "merge_runs", [buf], 8, 8, False)
    same(both_codecs, "merge_runs", [b"", buf], 8, 8, True)
    same(both_codecs, "merge_runs", buf, 8, 8, False)


def test_odd_merge_arguments_alike(both_codecs):
    same(both_codecs, "merge_runs", 5, 8, 8, False)
    same(both_codecs, "merge_runs", Fresh(lambda: iter([bytes(21)])), 8, 8, 1)
    same(both_codecs, "merge_runs", [bytes(21)], 8, 8, None)


def test_records_length_checked_alike(both_codecs):
    for name in ("unpack_records", "encode_sstable", "sort_records"):
        for n in (1, 20, 22, 41):
            same(both_codecs, name, bytes(n), 8, 8)
    same(both_codecs, "merge_runs", [bytes(21), bytes(20)], 8, 8, False)


# -- packed records: encode_packed ------------------------------------------------


@pytest.mark.parametrize("k,v", SIZES, ids=SIZE_IDS)
@given(data=st.data())
def test_encode_packed_is_the_batch_of_its_items(both_codecs, k, v, data):
    """The same bytes as encode_log(batch=True) of the equivalent items:
    the records' (key, value) pairs in order, then (key, None) per removal."""
    pairs = data.draw(st.lists(st.tuples(st.binary(min_size=k, max_size=k),
                                         st.binary(min_size=v, max_size=v)), max_size=8))
    gone = data.draw(st.none() | st.lists(st.binary(min_size=k, max_size=k), max_size=5))
    records = data.draw(wrappers)(b"".join(key + value for key, value in pairs))
    removals = None if gone is None else data.draw(wrappers)(b"".join(gone))
    got = same(both_codecs, "encode_packed", records, removals, k, v)[1]
    items = pairs + [(key, None) for key in gone or ()]
    assert got == py.encode_log(items, k, v, batch=True)


PACKED_ARGS = [
    (b"", None), (bytes(16), None), (bytes(17), None), (bytes(15), None),
    (bytes(16), b""), (bytes(16), bytes(8)), (bytes(16), bytes(9)), (bytes(16), bytes(7)),
    ("ab", None), (None, None), (5, None), ([0] * 16, None), (bytes(16), "k" * 8),
    (bytes(16), 0), (bytes(17), "x"), ("x", bytes(9)),
    (memoryview(bytes(32))[::2], None), (memoryview(bytes(32)).cast("B", (2, 16)), None),
    (array.array("H", [1] * 8), array.array("I", [2] * 2)), (array.array("H", [1] * 9), None),
    (memoryview(array.array("Q", [3] * 4)), memoryview(bytes(16))[::2]),
    (bytearray(range(48)), bytearray(range(24))),
]


@pytest.mark.parametrize("args", PACKED_ARGS, ids=repr)
def test_encode_packed_arguments_alike(both_codecs, args):
    outcome_ = same(both_codecs, "encode_packed", *args, 8, 8)
    if outcome_[0] == "returned":  # what the buffers hold, read as raw bytes in C order
        records, removals = (None if a is None else memoryview(a).tobytes() for a in args)
        assert outcome_[1] == py.encode_log(
            [(records[i:i + 8], records[i + 8:i + 16]) for i in range(0, len(records), 16)]
            + [(removals[i:i + 8], None) for i in range(0, len(removals or b""), 8)],
            8, 8, batch=True)


def test_encode_packed_messages(codec):
    with pytest.raises(ValueError, match=r"^records: expected a multiple of K\+V=16 bytes, got 17$"):
        codec.encode_packed(bytes(17), None, 8, 8)
    with pytest.raises(ValueError, match=r"^removals: expected a multiple of K=8 bytes, got 9$"):
        codec.encode_packed(b"", bytes(9), 8, 8)
    with pytest.raises(TypeError, match=r"^records: expected a bytes-like object, got str$"):
        codec.encode_packed("x", None, 8, 8)
    with pytest.raises(TypeError, match=r"^removals: expected a bytes-like object, got list$"):
        codec.encode_packed(b"", [b"k" * 8], 8, 8)
    assert codec.encode_packed(b"", None, 8, 0) == batch_header(0, 13)


@pytest.mark.parametrize("sizes", BAD_SIZES, ids=repr)
def test_encode_packed_sizes_checked_alike(both_codecs, sizes):
    same(both_codecs, "encode_packed", b"", None, *sizes)


@pytest.mark.parametrize("args", PACKED_ARGS, ids=repr)
def test_encode_packed_in_pieces_alike(both_codecs, args):
    """A batch encoded in pieces (its header, then parts without one) is
    the batch encoded whole."""
    whole = same(both_codecs, "encode_packed", *args, 8, 8)
    tail = same(both_codecs, "encode_packed", *args, 8, 8, False)
    assert whole[0] == tail[0]
    if whole[0] == "returned":
        fsize = py.frame_size(8, 8)
        count = (len(whole[1]) - fsize) // fsize
        assert same(both_codecs, "batch_header", count, 8, 8)[1] == whole[1][:fsize]
        assert tail[1] == whole[1][fsize:]


@pytest.mark.parametrize("count", [0, 1, 300, 2**64 - 1, -1, 2**64, 1.0, True, "3", None],
                         ids=repr)
@pytest.mark.parametrize("sizes", [(8, 8), (1, 1), (8, 0)] + BAD_SIZES, ids=repr)
def test_batch_header_alike(both_codecs, count, sizes):
    got = same(both_codecs, "batch_header", count, *sizes)
    if got[0] == "returned":  # FORMAT.md: crc32(n as u64 LE) ^ 0xFF, tag 2, n, zeros
        body = count.to_bytes(8, "little")
        assert got[1] == (struct.pack("<I", zlib.crc32(body) ^ 0xFF) + b"\x02" + body
                          + bytes(py.frame_size(*sizes) - 13))
        if count == 0:
            assert got[1] == py.encode_log([], *sizes, batch=True)
    same(both_codecs, "encode_packed", bytes(17), None, *sizes)


# -- sstables --------------------------------------------------------------------


@pytest.mark.parametrize("k,v", SIZES, ids=SIZE_IDS)
@given(data=st.data())
def test_decode_sstable_parity_on_damaged_payloads(both_codecs, k, v, data):
    payload = data.draw(damaged_payloads(k, v))
    result = same(both_codecs, "decode_sstable", data.draw(wrappers)(payload), k, v)[1]
    assert len(result.records) == result.count * (5 + k + v)
    if len(payload) < 8:
        assert result.expected == -1


@given(data=st.data())
def test_encode_sstable_parity(both_codecs, data):
    k, v = data.draw(st.sampled_from(SIZES))
    items = data.draw(changes(k, v))
    if data.draw(st.booleans()):
        items = sorted(dict(items).items())  # sorted and unique: accepted
    records = same(both_codecs, "pack_records", items, k, v)[1]
    cut = data.draw(st.integers(0, 2)) if data.draw(st.booleans()) else 0
    payload = same(both_codecs, "encode_sstable", data.draw(wrappers)(records[cut:]), k, v)
    if payload[0] == "returned" and not cut:
        assert same(both_codecs, "decode_sstable", payload[1], k, v)[1].status == "complete"
    # the streaming writer sends the header, then the records as they are
    header = same(both_codecs, "sstable_header", data.draw(wrappers)(records[cut:]), k, v)
    assert header[0] == payload[0]
    if payload[0] == "returned":
        assert header[1] + records[cut:] == payload[1]


# -- sorting and merging ---------------------------------------------------------


@given(data=st.data())
def test_sort_records_parity_and_model(both_codecs, data):
    k, v = data.draw(st.sampled_from(SIZES))
    items = data.draw(changes(k, v, 20))
    records = py.pack_records(items, k, v)
    want = py.pack_records(sorted(dict(items).items()), k, v)  # last write wins
    assert same(both_codecs, "sort_records", data.draw(wrappers)(records), k, v)[1] == want


def test_sort_records_many(both_codecs):
    """Enough records for the compiled sort's merge passes, with repeats."""
    compiled, python = both_codecs
    k, v = 3, 2
    keys = [(i * 7919 % 1000).to_bytes(3, "big") for i in range(5000)]
    items = [(key, None if i % 5 == 0 else (i % 65536).to_bytes(2, "big"))
             for i, key in enumerate(keys)]
    records = python.pack_records(items, k, v)
    want = python.pack_records(sorted(dict(items).items()), k, v)
    assert compiled.sort_records(records, k, v) == python.sort_records(records, k, v) == want


def merge_model(runs_items, drop):
    latest = {}
    for items in runs_items:
        latest.update(items)
    return [(key, value) for key, value in sorted(latest.items())
            if not (drop and value is None)]


@given(data=st.data())
def test_merge_runs_parity_and_model(both_codecs, data):
    k, v = data.draw(st.sampled_from(SIZES))
    runs_items = [
        sorted(dict(items).items())
        for items in data.draw(st.lists(changes(k, v, 10), max_size=6))
    ]
    runs = [data.draw(wrappers)(py.pack_records(items, k, v)) for items in runs_items]
    for drop in (False, True):
        got = same(both_codecs, "merge_runs", runs, k, v, drop)[1]
        assert got == py.pack_records(merge_model(runs_items, drop), k, v)


@given(data=st.data())
def test_merge_runs_parity_on_unsorted_runs(both_codecs, data):
    """Runs the engine never makes (unsorted, repeated keys): same result."""
    k, v = data.draw(st.sampled_from(SIZES))
    runs_items = data.draw(st.lists(changes(k, v, 10), max_size=5))
    runs = [py.pack_records(items, k, v) for items in runs_items]
    drop = data.draw(st.booleans())
    got = same(both_codecs, "merge_runs", runs, k, v, drop)[1]
    assert got == py.pack_records(merge_model([dict(i) for i in runs_items], drop), k, v)


def test_merge_runs_many_runs(both_codecs):
    compiled, python = both_codecs
    k, v = 2, 1
    runs_items = [
        sorted({(j * r % 300).to_bytes(2, "big"): (None if (j + r) % 4 == 0 else bytes([r]))
                for j in range(200)}.items())
        for r in range(1, 40)
    ]
    runs = [python.pack_records(items, k, v) for items in runs_items]
    for drop in (False, True):
        want = python.pack_records(merge_model(runs_items, drop), k, v)
        assert compiled.merge_runs(runs, k, v, drop) == python.merge_runs(runs, k, v, drop) == want


def test_rejected_tombstone_is_not_counted(codec):
    # a tombstone that breaks key order is reported, and not counted
    records = codec.pack_records([(b"aa", b"x"), (b"aa", None)], 2, 1)
    scan = codec.decode_sstable(struct.pack("<Q", 2) + records, 2, 1)
    assert scan.status == "corrupt" and scan.error_index == 1
    assert (scan.count, scan.tombstones) == (1, 0)


def test_merge_runs_checks_sizes_without_runs(codec):
    with pytest.raises(TypeError, match="key_size: expected int, got str"):
        codec.merge_runs([], "x", 1, False)


def test_records_are_measured_in_bytes(codec):
    records = codec.pack_records([(b"ab", b"c")], 2, 1)  # 8 bytes
    as_u16 = memoryview(array.array("H", records))  # 4 items, 8 bytes
    assert codec.unpack_records(as_u16, 2, 1) == [(b"ab", b"c")]
    with pytest.raises(ValueError, match="expected a multiple of 8 bytes, got 6"):
        codec.unpack_records(memoryview(array.array("H", records[:6])), 2, 1)


@given(st.data())
def test_frame_records_parity_and_round_trip(both_codecs, data):
    compiled, python = both_codecs
    k, v = data.draw(st.sampled_from([(1, 1), (2, 3), (8, 8), (16, 4), (8, 0), (32, 32)]))
    item = st.tuples(st.binary(min_size=k, max_size=k),
                     st.one_of(st.none(), st.binary(min_size=v, max_size=v)))
    batches = data.draw(st.lists(st.lists(item, max_size=5), max_size=4))
    frames = b"".join(python.encode_log(b, k, v, batch=True) for b in batches)
    want = python.pack_records([i for b in batches for i in b], k, v)
    assert compiled.frame_records(frames, k, v) == python.frame_records(frames, k, v) == want
    assert python.scan_log(frames, k, v).records == want
    cut = data.draw(st.integers(1, max(1, len(frames))))
    if frames and cut % python.frame_size(k, v):
        for impl in both_codecs:
            with pytest.raises(ValueError, match="log frames: expected a multiple of"):
                impl.frame_records(frames[:cut], k, v)
