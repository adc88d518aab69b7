"""Bulk export and import of packed records: ``Lsm.export`` and
``Lsm.write_packed`` (issue 16).

``export`` must yield exactly the records ``range()`` yields, packed, in
chunks; ``write_packed`` must be ``write_batch`` of the equivalent items,
down to the bytes of the log, and as atomic.  The codec's half is in
``test_codec_parity.py`` and the map's in ``test_map_parity.py``; these
run against the codec the process loaded (run the suite once per mode).
"""
from __future__ import annotations

import array
import errno
import os
import shutil
import tempfile
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinylsm
from tinylsm import _packed
from tinylsm._backend import codec
from faults import FaultyFiles, NoSyncFiles, abandon
from workload import (
    SIZES as FAULT_SIZES,
    contents,
    kept_by_cut,
    log_ends,
    log_path,
    make_ops,
    open_db,
    packed_ops,
    prefix_models,
    run,
)

#: (K, V): 1/1 (padded frames), 2/3, 8/8, 8/0 (no value), 4/16 (K + V > 16)
SIZES = [(1, 1), (2, 3), (8, 8), (8, 0), (4, 16)]
SIZE_IDS = [f"k{k}v{v}" for k, v in SIZES]
FAST = NoSyncFiles()


def key(i: int, k: int = 8) -> bytes:
    return (i % (1 << (8 * k))).to_bytes(k, "big")


def packed(pairs) -> bytes:
    return b"".join(k + v for k, v in pairs)


@pytest.fixture
def db(tmp_path):
    store = tinylsm.open(tmp_path / "db", key_size=8, value_size=8)
    yield store
    store.close()


def items(n: int, k: int = 8, v: int = 8, salt: int = 0):
    return [(key(i, k), ((i * 7919 + salt) % 256).to_bytes(1, "big") * v) for i in range(n)]


# -- export ----------------------------------------------------------------------------


@st.composite
def export_cases(draw):
    k, v = draw(st.sampled_from(SIZES))
    keyspace = st.integers(0, 40).map(lambda i: key(i, k))
    data = draw(st.dictionaries(keyspace, st.binary(min_size=v, max_size=v), max_size=30))
    bound = st.none() | keyspace
    if draw(st.booleans()):
        prefix = draw(st.binary(max_size=k))
        where = {"prefix": prefix}
    else:
        where = {"start": draw(bound), "stop": draw(bound)}
    chunk = draw(st.integers(1, len(data) + 2))
    return k, v, data, where, draw(st.booleans()), chunk


@given(case=export_cases())
def test_export_is_range_packed(case):
    k, v, data, where, reverse, chunk = case
    path = tempfile.mkdtemp(prefix="tinylsm-bulk-")
    try:
        with tinylsm.open(path + "/db", key_size=k, value_size=v) as store:
            store.write_batch(list(data.items()))
            want = list(store.range(**where, reverse=reverse))
            chunks = list(store.export(**where, reverse=reverse, chunk_records=chunk))
    finally:
        shutil.rmtree(path)
    assert b"".join(chunks) == packed(want)
    sizes = [len(c) // (k + v) for c in chunks]
    assert all(n == chunk for n in sizes[:-1]) and all(0 < n <= chunk for n in sizes)
    assert all(c.readonly and c.format == "B" and c.ndim == 1 for c in chunks)


def test_export_defaults_and_bounds(db):
    db.write_batch(items(200_000))
    chunks = list(db.export())
    assert [len(c) for c in chunks] == [65536 * 16] * 3 + [(200_000 - 3 * 65536) * 16]
    assert b"".join(chunks) == packed(sorted(items(200_000)))
    assert b"".join(db.export(key(10), key(13))) == packed(items(13)[10:])
    assert b"".join(db.export(stop=key(2), reverse=True)) == packed(items(2)[::-1])
    assert b"".join(db.export(prefix=key(258)[:7])) == packed(items(512)[256:512])
    assert list(db.export(key(5), key(5))) == [] and list(db.export(key(9), key(3))) == []
    assert list(db.export(bytearray(key(199_999)))) == [packed(items(200_000)[-1:])]


@pytest.mark.parametrize("call, error, message", [
    (lambda db: db.export(key(1), prefix=b"a"), TypeError,
     "export(): give prefix, or start and stop, not both"),
    (lambda db: db.export(b"abc"), ValueError, "key: expected 8 bytes, got 3"),
    (lambda db: db.export(stop="abcdefgh"), TypeError,
     "key: expected a bytes-like object, got str"),
    (lambda db: db.export(prefix=bytes(9)), ValueError, "prefix: expected at most 8 bytes, got 9"),
    (lambda db: db.export(chunk_records=0), ValueError,
     "chunk_records: expected at least 1, got 0"),
    (lambda db: db.export(chunk_records=2.5), TypeError, "chunk_records: expected int, got float"),
    (lambda db: db.export(chunk_records=None), TypeError,
     "chunk_records: expected int, got NoneType"),
    (lambda db: db.export(None, None, False), TypeError, "positional argument"),
])
def test_export_refuses_bad_arguments_at_the_call(db, call, error, message):
    with pytest.raises(error) as raised:
        call(db)  # not at the first step: export() is no generator function
    assert message in str(raised.value)


def test_export_after_a_change_raises_and_kept_chunks_stay(db):
    db.write_batch(items(100))
    it = db.export(chunk_records=30)
    first = next(it)
    kept = bytes(first)
    db[key(0)] = b"changed!"
    with pytest.raises(RuntimeError, match="^tinylsm store changed during iteration$"):
        next(it)
    assert first == kept and first.readonly
    it = db.export(reverse=True, chunk_records=30)
    next(it)
    db.write_packed(packed(items(3, salt=1)))
    with pytest.raises(RuntimeError, match="changed during iteration"):
        next(it)


def test_export_of_a_closed_store(tmp_path):
    store = tinylsm.open(tmp_path / "db", key_size=8, value_size=8)
    store.write_batch(items(10))
    it = store.export(chunk_records=3)
    next(it)
    store.close()
    with pytest.raises(tinylsm.ClosedError):
        next(it)
    with pytest.raises(tinylsm.ClosedError):
        store.export()


def test_export_beside_a_writer_is_consistent_per_chunk(tmp_path):
    """A thread rewrites every key with one value per batch; each chunk an
    exporter gets holds one value only (a chunk is copied in one step), or
    the next step raises RuntimeError."""
    n = 3000
    store = tinylsm.open(tmp_path / "db", key_size=8, value_size=8)
    store.write_batch(items(n))
    store.write_batch([(key(i, 8), bytes(8)) for i in range(n)])
    stop = threading.Event()

    def writer() -> None:
        i = 1
        while not stop.is_set():
            store.write_batch([(key(j, 8), bytes([i % 256]) * 8) for j in range(n)])
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    chunks = changed = 0
    try:
        for _ in range(200):
            try:
                for chunk in store.export(chunk_records=700):
                    values = {bytes(chunk[i + 8:i + 16]) for i in range(0, len(chunk), 16)}
                    assert len(values) == 1, "a chunk mixes two batches"
                    chunks += 1
            except RuntimeError as exc:
                assert "changed during iteration" in str(exc)
                changed += 1
    finally:
        stop.set()
        thread.join()
        store.close()
    assert chunks > 0


def test_export_of_a_readonly_store_and_refresh(tmp_path):
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=8, value_size=8) as writer:
        writer.write_batch(items(50))
        writer.flush()
        with tinylsm.open(path, readonly=True) as reader:
            it = reader.export(chunk_records=20)
            first = next(it)
            writer.write_packed(packed(items(60, salt=3)))
            writer.flush()
            assert b"".join([first, *it]) == packed(sorted(items(50)))  # a snapshot
            assert reader.refresh()
            assert b"".join(reader.export()) == packed(sorted(items(60, salt=3)))


def test_numpy_reads_a_chunk_without_a_copy(tmp_path):
    np = pytest.importorskip("numpy")
    for k, v in ((8, 8), (4, 0)):
        with tinylsm.open(tmp_path / f"db{k}{v}", key_size=k, value_size=v) as store:
            store.write_batch(items(1000, k, v))
            chunk = next(store.export(chunk_records=600))
            try:  # NumPy 2.4 takes S0, a field of no bytes, for V = 0
                dtype = np.dtype([("key", f"S{k}"), ("value", f"S{v}")])
            except TypeError:  # the README's way for a NumPy that does not
                assert v == 0
                dtype = np.dtype([("key", f"S{k}")])
            rows = np.frombuffer(chunk, dtype=dtype)
            assert len(rows) == 600 and rows.dtype.itemsize == k + v
            assert not rows.flags.writeable and not rows.flags.owndata  # a view
            want = sorted(items(1000, k, v))[:600]
            # S fields drop trailing NUL bytes when read back as bytes
            assert [r["key"] for r in rows] == [kk.rstrip(b"\0") for kk, _ in want]
            numbers = np.frombuffer(chunk, dtype=[("key", f">u{k}"), ("value", f"V{v}")]
                                    if v else [("key", f">u{k}")])
            assert numbers["key"].tolist() == [int.from_bytes(kk, "big") for kk, _ in want]
            # and back: a NumPy array is a bytes-like record buffer
            store.write_packed(rows[::-1].copy())
            assert len(store) == 1000


# -- write_packed ------------------------------------------------------------------------


@st.composite
def packed_cases(draw):
    k, v = draw(st.sampled_from(SIZES))
    keyspace = st.integers(0, 12).map(lambda i: key(i, k))
    pairs = draw(st.lists(st.tuples(keyspace, st.binary(min_size=v, max_size=v)), max_size=10))
    removals = draw(st.none() | st.lists(keyspace, max_size=5))
    before = draw(st.lists(st.tuples(keyspace, st.binary(min_size=v, max_size=v)), max_size=5))
    pieces = draw(st.sampled_from([None, 1, 3]))  # frames per piece, or encoded whole
    return k, v, pairs, removals, before, pieces


class Pieces:
    """Make ``write_packed`` encode every batch in pieces of ``frames``
    frames (``None``: leave the thresholds alone)."""

    def __init__(self, frames, k: int = 8, v: int = 8) -> None:
        self.frames, self.fsize = frames, codec.frame_size(k, v)

    def __enter__(self) -> None:
        self.saved = _packed.STREAM_BYTES, _packed.PIECE_BYTES
        if self.frames is not None:
            _packed.STREAM_BYTES, _packed.PIECE_BYTES = 0, self.frames * self.fsize

    def __exit__(self, *exc) -> None:
        _packed.STREAM_BYTES, _packed.PIECE_BYTES = self.saved


@pytest.fixture
def in_pieces():
    """Batches of 5 frames a piece, however small."""
    with Pieces(5):
        yield


def _log_bytes(path) -> bytes:
    with open(log_path(path), "rb") as f:
        return f.read()


@given(case=packed_cases())
def test_write_packed_logs_what_write_batch_logs(case):
    """Byte for byte the log of write_batch with the equivalent items, the
    same map, and the same map again after recovery."""
    k, v, pairs, removals, before, pieces = case
    equivalent = pairs + [(kk, None) for kk in removals or ()]
    root = tempfile.mkdtemp(prefix="tinylsm-bulk-")
    try:
        maps, logs = [], []
        for name in ("batch", "packed"):
            path = os.path.join(root, name)
            with tinylsm.open(path, key_size=k, value_size=v) as store:
                store.write_batch(before)
                if name == "batch":
                    store.write_batch(equivalent)
                else:
                    with Pieces(pieces, k, v):
                        store.write_packed(packed(pairs),
                                           None if removals is None else b"".join(removals))
                maps.append(dict(store.items()))
            logs.append(_log_bytes(path))
            with tinylsm.open(path) as store:
                assert dict(store.items()) == maps[-1]
        model = dict(before)
        for kk, vv in equivalent:
            if vv is None:
                model.pop(kk, None)
            else:
                model[kk] = vv
        assert maps == [model, model]
        assert logs[0] == logs[1]
    finally:
        shutil.rmtree(root)


def test_write_packed_order_puts_then_removals(db):
    db.write_packed(packed([(key(1), b"a" * 8), (key(2), b"b" * 8), (key(1), b"c" * 8)]),
                    key(2) + key(3))
    assert dict(db.items()) == {key(1): b"c" * 8}


def test_write_packed_takes_any_buffer(db):
    """Any bytes-like object, read as its raw bytes (in C order when it is
    not contiguous), as the one rule for keys and values says."""
    recs = items(6)
    data = packed(recs)
    spread = bytes(b for c in data for b in (c, 0))  # every other byte
    for buf in [data, bytearray(data), memoryview(data), array.array("Q", data),
                memoryview(spread)[::2], memoryview(data).cast("B", (6, 16))]:
        db.write_packed(buf, memoryview(key(5)))
        assert dict(db.items()) == dict(recs[:5]), type(buf)
        db.write_packed(b"", b"".join(k for k, _ in recs))
        assert len(db) == 0


@pytest.mark.parametrize("records, removals, error, message", [
    (bytes(17), None, ValueError, "records: expected a multiple of K+V=16 bytes, got 17"),
    (bytes(15), None, ValueError, "records: expected a multiple of K+V=16 bytes, got 15"),
    (bytes(16), bytes(9), ValueError, "removals: expected a multiple of K=8 bytes, got 9"),
    ("x" * 16, None, TypeError, "records: expected a bytes-like object, got str"),
    ([bytes(16)], None, TypeError, "records: expected a bytes-like object, got list"),
    (None, None, TypeError, "records: expected a bytes-like object, got NoneType"),
    (bytes(16), [key(1)], TypeError, "removals: expected a bytes-like object, got list"),
    (bytes(16), "k" * 8, TypeError, "removals: expected a bytes-like object, got str"),
])
def test_write_packed_refuses_bad_input_having_changed_nothing(db, records, removals, error,
                                                              message):
    db.write_batch(items(3))
    before = (dict(db.items()), db.stats().logged_bytes)
    with pytest.raises(error) as raised:
        db.write_packed(records, removals)
    assert str(raised.value) == message
    assert (dict(db.items()), db.stats().logged_bytes) == before


def test_write_packed_of_nothing_logs_an_empty_batch_as_write_batch_does(tmp_path):
    for name, write in (("batch", lambda s: s.write_batch([])),
                        ("packed", lambda s: s.write_packed(b"")),
                        ("packed-none", lambda s: s.write_packed(b"", b""))):
        with tinylsm.open(tmp_path / name, key_size=8, value_size=8) as store:
            write(store)
            assert len(store) == 0 and store.stats().logged_bytes == 21
    assert _log_bytes(tmp_path / "batch") == _log_bytes(tmp_path / "packed") == \
        _log_bytes(tmp_path / "packed-none")


def test_write_packed_on_a_readonly_store_is_refused(tmp_path):
    with tinylsm.open(tmp_path / "db", key_size=8, value_size=8):
        pass
    with tinylsm.open(tmp_path / "db", readonly=True) as reader:
        with pytest.raises(tinylsm.ReadOnlyError):
            reader.write_packed(packed(items(2)))


def test_write_packed_past_the_log_limit_rolls_over(tmp_path):
    config = tinylsm.Config(max_log_length=10_000)
    with tinylsm.open(tmp_path / "db", key_size=8, value_size=8, config=config) as store:
        store.write_packed(packed(items(5000)))
        store.flush()
        store.compact()
        assert store.stats().sstables == 1 and len(store) == 5000
    with tinylsm.open(tmp_path / "db") as store:
        assert dict(store.items()) == dict(items(5000))


# -- atomicity: a torn log, a failed write, a crash ----------------------------------------


@pytest.mark.parametrize("k,v", FAULT_SIZES, ids=lambda x: str(x))
def test_log_cut_at_every_byte_keeps_packed_writes_whole(tmp_path, k, v):
    """A log cut anywhere recovers exactly the operations wholly before the
    cut; a write_packed is one batch, all of it or none."""
    ops = packed_ops(k, make_ops(k * 10 + v, 16, k, v, keys=8), k, v, keys=8)
    assert sum(op[0] == "P" for op in ops) == 4
    path = tmp_path / "db"
    with open_db(path, k, v, log_bufwriter_size=0) as store:
        run(store, ops)
    log = _log_bytes(path)
    ends = log_ends(ops, k, v)
    assert len(log) == ends[-1]
    models = prefix_models(ops)
    for cut in range(len(log) + 1):
        with open(log_path(path), "wb") as f:
            f.write(log[:cut])
        for name in os.listdir(path):
            if name.startswith("tinylsm.kept-"):
                os.unlink(path / name)
        with open_db(path, k, v, files=FAST) as store:
            assert contents(store) == models[kept_by_cut(ends, cut)], cut


@pytest.mark.parametrize("how", ["fail", "cut"])
def test_failed_log_write_of_write_packed_changes_nothing(tmp_path, how):
    """The write of a large write_packed fails (nothing, or a part of it,
    reaches the file): it raises, the map is unchanged, the store goes on,
    and a reopen has none of it."""
    files = FaultyFiles()
    path = tmp_path / "db"
    store = open_db(path, 8, 8, files=files, log_bufwriter_size=4096)
    store.write_batch(items(10))
    store.flush()
    before = contents(store)
    when = lambda c: c.op == "pwrite" and c.path.endswith("/log") and c.size > 4096  # noqa: E731
    if how == "fail":
        files.fail("pwrite", errno.ENOSPC, when=when)
    else:
        files.cut(1000, errno.EIO, when=when)
    with pytest.raises(OSError):
        store.write_packed(packed(items(1000, salt=5)), key(3))
    assert contents(store) == before
    store.write_packed(packed(items(2, salt=9)))
    after = {**before, **dict(items(2, salt=9))}
    assert contents(store) == after
    store.close()
    with open_db(path, 8, 8) as store:
        assert contents(store) == after


@pytest.mark.parametrize("keep", [0, 21, 1000, 21 * 1000, -1])
def test_crash_in_the_middle_of_write_packed(tmp_path, keep):
    """The process dies while the batch is being written (``keep`` bytes of
    the write stored): recovery has all of the flushed data and none of
    the batch; power cut too."""
    path = tmp_path / "db"
    files = FaultyFiles(root=str(path))
    store = open_db(path, 8, 8, files=files, log_bufwriter_size=4096)
    store.write_batch(items(10))
    store.flush()
    flushed = contents(store)
    files.cut(keep, "crash",
              when=lambda c: c.op == "pwrite" and c.path.endswith("/log") and c.size > 4096)
    with pytest.raises(BaseException) as raised:
        store.write_packed(packed(items(2000, salt=7)), key(1))
    assert type(raised.value).__name__ == "Crash"
    abandon(store)
    for where in ("crashed", "power-cut"):
        dest = tmp_path / where
        if where == "crashed":
            shutil.copytree(path, dest)
        else:
            files.power_cut(str(dest))
        with open_db(dest, 8, 8, files=FAST) as store:
            assert contents(store) == flushed, where


# -- a large batch, written a piece at a time ----------------------------------------------


def _log_writes(c) -> bool:
    return c.op == "pwrite" and c.path.endswith("/log")


@pytest.mark.parametrize("how", ["fail", "cut"])
@pytest.mark.parametrize("nth", [1, 2, 7, 202], ids=lambda n: f"write{n}")
def test_failed_piece_of_write_packed_changes_nothing(tmp_path, in_pieces, how, nth):
    """The nth write of a batch written in pieces (1: its header; 202: its
    last piece) fails: it raises, the map, the stats and the log file are
    as before, the store goes on, and a reopen has none of it."""
    files = FaultyFiles()
    path = tmp_path / "db"
    store = open_db(path, 8, 8, files=files, log_bufwriter_size=4096)
    store.write_batch(items(10))
    store.flush()
    before = contents(store), store.stats().logged_bytes, os.path.getsize(log_path(path))
    if how == "fail":
        files.fail("pwrite", errno.ENOSPC, nth=nth, when=_log_writes)
    else:
        files.cut(50, errno.EIO, nth=nth, when=_log_writes)
    with pytest.raises(OSError):
        store.write_packed(packed(items(1000, salt=5)), key(3) + key(4))  # 201 pieces
    assert files.injected == 1
    assert (contents(store), store.stats().logged_bytes,
            os.path.getsize(log_path(path))) == before
    store.write_packed(packed(items(12, salt=9)))
    after = {**before[0], **dict(items(12, salt=9))}
    assert contents(store) == after
    store.close()
    with open_db(path, 8, 8) as store:
        assert contents(store) == after


@pytest.mark.parametrize("nth", [1, 2, 100, 202], ids=lambda n: f"write{n}")
def test_crash_at_a_piece_of_write_packed(tmp_path, in_pieces, nth):
    """The process dies at the nth write of a batch written in pieces, half
    a part of it stored: after the crash, and after a power cut, recovery has the
    flushed data and none of the batch."""
    path = tmp_path / "db"
    files = FaultyFiles(root=str(path))
    store = open_db(path, 8, 8, files=files, log_bufwriter_size=4096)
    store.write_batch(items(10))
    store.flush()
    flushed = contents(store)
    files.cut(10, "crash", nth=nth, when=_log_writes)  # a piece is 42 to 105 bytes
    with pytest.raises(BaseException) as raised:
        store.write_packed(packed(items(1000, salt=7)), key(1) + key(2))
    assert type(raised.value).__name__ == "Crash"
    abandon(store)
    for where in ("crashed", "power-cut"):
        dest = tmp_path / where
        if where == "crashed":
            shutil.copytree(path, dest)
        else:
            files.power_cut(str(dest))
        with open_db(dest, 8, 8, files=FAST) as store:
            assert contents(store) == flushed, where


@pytest.mark.parametrize("kind", [bytearray, lambda b: memoryview(bytearray(b)),
                                  lambda b: array.array("B", b)],
                         ids=["bytearray", "memoryview", "array"])
def test_a_buffer_changed_during_write_packed_changes_neither_log_nor_map(tmp_path, in_pieces,
                                                                       kind):
    """Another thread writes into the records while the batch is being
    written (here: at its third piece): the map and the log both hold the
    records as they were when the call began, and agree after a reopen."""
    files = FaultyFiles()
    recs = items(100, salt=3)
    buf = kind(packed(recs))

    def scribble(call) -> bool:
        if _log_writes(call) and call.size < 200:  # a piece, not the header
            memoryview(buf).cast("B")[:] = bytes(len(packed(recs)))
        return False

    path = tmp_path / "db"
    with open_db(path, 8, 8, files=files) as store:
        files.fail("pwrite", when=scribble)
        store.write_packed(buf)
        assert contents(store) == dict(recs)
    assert bytes(memoryview(buf).cast("B")) == bytes(len(packed(recs)))  # it did change
    with open_db(path, 8, 8) as store:
        assert contents(store) == dict(recs)


def test_write_packed_in_pieces_while_a_rollover_holds_appends(tmp_path, in_pieces):
    """While a rollover's switch holds appends, a batch in pieces goes to
    the buffer whole, and to the log once the hold ends."""
    path = tmp_path / "db"
    store = open_db(path, 8, 8)
    store.write_batch(items(10))
    with store._lock:
        store._log.write_out()
        store._log.hold()
    store.write_packed(packed(items(50, salt=4)), key(2))
    want = {**dict(items(50, salt=4))}
    del want[key(2)]
    assert contents(store) == want
    assert len(store._log.buf) == codec.frame_size(8, 8) * 52
    with store._lock:
        store._log.release()
    assert not store._log.buf
    store.close()
    with open_db(path, 8, 8) as store:
        assert contents(store) == want
