"""Recovery reads every file in chunks (``_logread.LogReader`` for the log,
``sstable.TableReader`` for sstables) and applies each chunk as it comes.

The verdicts must be exactly those of reading each file whole, at any chunk
size: the same records, the same scan, the same errors with the same
messages.  A consumer that applies each yielded chunk must never apply part
of a batch, and no chunk may exceed the chunk size.  Tiny chunk sizes put
frames, batch headers, batches and zstd blocks across chunk boundaries.
Every test runs against both codecs.
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple
from unittest import mock

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from tinylsm import _logread, sstable
from tinylsm._format import SST_CORRUPT, SST_SHORT
from tinylsm._fs import Files
from tinylsm.errors import CorruptionError

from faults import report

SIZES = [(1, 0), (2, 3), (8, 8), (8, 10)]


class CountingFiles(Files):
    """Plain ``Files`` that remembers the size of every read, and how far
    into the file reading has reached."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: List[int] = []
        self.reached = 0

    def pread_all(self, fd: int, size: int, offset: int = 0) -> bytes:
        self.reads.append(size)
        data = super().pread_all(fd, size, offset)
        self.reached = max(self.reached, offset + len(data))
        return data


@contextmanager
def opened(path: str, files: Files) -> Iterator[int]:
    fd = files.open_ro(path)
    try:
        yield fd
    finally:
        files.close(fd)


@contextmanager
def twin(codec):
    """The readers running on ``codec`` (one of the two builds)."""
    with mock.patch.object(_logread, "codec", codec), \
            mock.patch.object(sstable, "codec", codec):
        yield


def chunk_sizes(unit: int) -> List[Optional[int]]:
    """Sizes around ``unit`` (a frame or a record), tiny ones, and the default."""
    return [1, 2, 7, unit - 1, unit, unit + 1, 2 * unit + 3, 3 * unit, 64, None]


# -- the log -----------------------------------------------------------------------


def make_log(codec, rng: random.Random, k: int, v: int) -> bytes:
    """Frames and batches (some empty, some long), then maybe damage: a
    flipped bit, a cut, zeros or garbage after the end."""
    parts = []
    for _ in range(rng.randrange(12)):
        n = rng.choice([0, 1, 2, 5, 17])
        items = [(rng.randbytes(k), None if rng.random() < 0.3 else rng.randbytes(v))
                 for _ in range(n)]
        parts.append(bytes(codec.encode_log(items, k, v, batch=rng.random() < 0.5)))
    data = bytearray(b"".join(parts))
    r = rng.random()
    if data and r < 0.35:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif data and r < 0.6:
        del data[rng.randrange(len(data)):]
    elif r < 0.7:
        data += bytes(rng.randrange(1, 60))
    elif r < 0.8:
        data += rng.randbytes(rng.randrange(1, 60))
    return bytes(data)


def complete_at(codec, data: bytes, k: int, v: int) -> List[Tuple[int, int]]:
    """``(offset, count)``: the records a scan applies from the first
    ``offset`` bytes, for each frame boundary."""
    f = codec.frame_size(k, v)
    return [(cut, codec.scan_log(data[:cut], k, v).count)
            for cut in range(0, len(data) + 1, f)]


def check_log_range(codec, path: str, data: bytes, k: int, v: int, start: int, end: int,
                    size: Optional[int]) -> None:
    files = CountingFiles()
    want = codec.scan_log(data[start:end], k, v)
    want = want._replace(records=b"", end=want.end + start,
                         stop_offset=want.stop_offset + start)
    f = codec.frame_size(k, v)
    rsize = codec.record_size(k, v)
    step = max(f, _logread.chunk(size) // f * f)
    complete = complete_at(codec, data[start:end], k, v)
    with opened(path, files) as fd:
        reader = _logread.LogReader(files, fd, k, v, start, end, chunk_size=size)
        got, total = [], 0
        for chunk in reader:
            assert len(chunk) <= step // f * rsize, "a chunk larger than the chunk size"
            got.append(bytes(chunk))
            total += len(chunk) // rsize
            # no record before its whole change (its batch) was read
            needed = min(cut for cut, count in complete if count >= total)
            assert files.reached >= start + needed, (
                f"chunk {size}: record {total} handed out before its batch was read whole")
    assert b"".join(got) == codec.scan_log(data[start:end], k, v).records, size
    assert reader.scan == want, size
    assert max(files.reads, default=0) <= step


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_log_reader_agrees_with_one_scan(codec, tmp_path, k, v, record_property):
    rng = random.Random(k * 100 + v)
    path = str(tmp_path / "log")
    f = codec.frame_size(k, v)
    tried = 0
    with twin(codec):
        for _ in range(60):
            data = make_log(codec, rng, k, v)
            with open(path, "wb") as out:
                out.write(data)
            for size in chunk_sizes(f):
                check_log_range(codec, path, data, k, v, 0, len(data), size)
                tried += 1
    report(record_property, f"chunked_log_reads_k{k}_v{v}", tried)


@pytest.mark.parametrize("k,v", [(2, 3), (8, 10)], ids=lambda x: str(x))
@given(st.integers(0, 2**32), st.data())
def test_log_reader_agrees_on_any_range(codec, tmp_path_factory, k, v, seed, draw):
    """From any change boundary to any offset (the rollover reads log[0:M])."""
    path = str(tmp_path_factory.mktemp("log") / "log")
    data = make_log(codec, random.Random(seed), k, v)
    with open(path, "wb") as out:
        out.write(data)
    f = codec.frame_size(k, v)
    starts = sorted({codec.scan_log(data[:cut], k, v).end
                     for cut in range(0, len(data) + 1, f)})
    start = draw.draw(st.sampled_from(starts))
    end = draw.draw(st.integers(start, len(data) + 2 * f))  # past the end: the file ends
    size = draw.draw(st.sampled_from(chunk_sizes(f)))
    with twin(codec):
        check_log_range(codec, path, data, k, v, start, end, size)


def test_batch_larger_than_a_chunk_is_read_again_not_held(codec, tmp_path):
    """A batch of 200 frames read 3 frames at a time: nothing is yielded
    until its last frame is checked, then it comes in chunks of 3."""
    k, v = 8, 8
    f = codec.frame_size(k, v)
    items = [(i.to_bytes(k, "big"), bytes(v)) for i in range(200)]
    data = bytes(codec.encode_log(items, k, v, batch=True))
    path = str(tmp_path / "log")
    for torn in (False, True):
        with open(path, "wb") as out:
            out.write(data[:-1] if torn else data)
        files = CountingFiles()
        with twin(codec), opened(path, files) as fd:
            reader = _logread.LogReader(files, fd, k, v, chunk_size=3 * f)
            chunks = [bytes(c) for c in reader]
        if torn:
            assert chunks == [] and reader.scan.end == 0
            assert sum(files.reads) == len(data) - 1  # read once
        else:
            assert b"".join(chunks) == codec.scan_log(data, k, v).records
            assert max(len(c) for c in chunks) <= 3 * f
            # the batch's frames before its last chunk (at 198 f) are read twice
            assert sum(files.reads) == len(data) + 198 * f - f


class ChangingFiles(Files):
    """Reads a byte of the file differently the second time it is read."""

    def __init__(self, offset: int) -> None:
        super().__init__()
        self.offset = offset
        self.seen = 0

    def pread_all(self, fd: int, size: int, offset: int = 0) -> bytes:
        data = super().pread_all(fd, size, offset)
        if offset <= self.offset < offset + len(data):
            self.seen += 1
            if self.seen == 2:
                data = bytearray(data)
                data[self.offset - offset] ^= 1
                data = bytes(data)
        return data


def test_batch_read_differently_the_second_time_is_corruption(codec, tmp_path):
    k, v = 8, 8
    f = codec.frame_size(k, v)
    items = [(i.to_bytes(k, "big"), bytes(v)) for i in range(10)]
    path = str(tmp_path / "log")
    with open(path, "wb") as out:
        out.write(bytes(codec.encode_log(items, k, v, batch=True)))
    files = ChangingFiles(offset=3 * f + 6)  # a key byte of the batch's third frame
    with twin(codec), opened(path, files) as fd:
        with pytest.raises(CorruptionError, match="read differently the second time"):
            list(_logread.LogReader(files, fd, k, v, chunk_size=4 * f))


def test_log_reader_refuses_a_start_inside_a_frame(tmp_path):
    path = str(tmp_path / "log")
    with open(path, "wb"):
        pass
    files = Files()
    with opened(path, files) as fd:
        with pytest.raises(ValueError, match="not a frame boundary"):
            _logread.LogReader(files, fd, 8, 8, start=5)
        with pytest.raises(ValueError, match="chunk size"):
            _logread.LogReader(files, fd, 8, 8, chunk_size=0)


def test_zeros(tmp_path):
    path = str(tmp_path / "f")
    with open(path, "wb") as out:
        out.write(bytes(50) + b"\x01" + bytes(49))
    files = Files()
    with opened(path, files) as fd:
        for size in (1, 3, 50, 51, None):
            assert _logread.zeros(files, fd, 0, 50, size)
            assert not _logread.zeros(files, fd, 0, 51, size)
            assert not _logread.zeros(files, fd, 50, 100, size)
            assert _logread.zeros(files, fd, 51, 200, size)  # past the end: none
            assert _logread.zeros(files, fd, 7, 7, size)


# -- sstables ------------------------------------------------------------------------


def whole_verdict(codec, path: str, k: int, v: int):
    """What reading the table whole says: the readers' oracle (the former
    one-shot ``sstable.read``, which this module pins)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        payload = sstable.decompress(data, path)
    except CorruptionError as exc:
        return ("refused", str(exc), exc.detail)
    scan = codec.decode_sstable(payload, k, v)
    rsize = codec.record_size(k, v)
    body = len(payload) - 8
    hint = "" if body < 0 or (body % rsize == 0 and body // rsize == scan.expected) else (
        f" (its {body} bytes of records are not {scan.expected} records of {rsize} "
        f"bytes: is key_size={k}, value_size={v} right for this store?)")
    if scan.status == SST_CORRUPT:
        detail = f"record {scan.error_index} of {scan.expected}: {scan.reason}" + hint
        return ("refused", f"sstable {path}: {detail}", detail)
    try:
        streamed = zstandard.get_frame_parameters(data).content_size == \
            zstandard.CONTENTSIZE_UNKNOWN
    except zstandard.ZstdError:
        streamed = False
    if scan.status == SST_SHORT and data and not streamed:
        detail = (f"cut short ({scan.count} of "
                  f"{scan.expected if scan.expected >= 0 else '?'} records), and it is "
                  "not a torn streaming write of tiny-lsm: the file is damaged" + hint)
        return ("refused", f"sstable {path}: {detail}", detail)
    return ("read", scan, len(data))


def chunked_verdict(path: str, k: int, v: int, size: Optional[int]):
    files = CountingFiles()
    reader = sstable.TableReader(files, path, k, v, chunk_size=size)
    step = _logread.chunk(size)
    got = []
    try:
        for chunk in reader:
            got.append(bytes(chunk))
    except CorruptionError as exc:
        return ("refused", str(exc), exc.detail)
    assert max(files.reads, default=0) <= step
    return ("read", reader.scan._replace(records=b"".join(got)), reader.nbytes)


def compress(rng: random.Random, payload: bytes) -> bytes:
    """``payload`` as tinylsm writes it (one finished frame, its size in the
    header), as the Rust crate does (flushed blocks, never finished), or as
    two finished frames."""
    how = rng.random()
    if how < 0.4:
        return zstandard.ZstdCompressor(level=rng.choice([1, 3])).compress(payload)
    if how < 0.8:
        c = zstandard.ZstdCompressor(level=3).compressobj()
        out, at = [], 0
        for cut in sorted(rng.choices(range(len(payload) + 1), k=2)) + [len(payload)]:
            out.append(c.compress(payload[at:cut]) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
            at = cut
        return b"".join(out)
    cut = rng.randrange(len(payload) + 1)
    z = zstandard.ZstdCompressor(level=3)
    return z.compress(payload[:cut]) + z.compress(payload[cut:])


def make_tables(codec, rng: random.Random, k: int, v: int) -> Iterator[bytes]:
    """A table, then damaged copies: to its bytes (flips, cuts, additions),
    or to its payload before compression (flips, cuts, additions, records
    out of order, another count)."""
    n = rng.choice([0, 1, 3, 40])
    keys = sorted({rng.randbytes(k) for _ in range(n)})
    items = [(key, None if rng.random() < 0.3 else
              (bytes(v) if rng.random() < 0.5 else rng.randbytes(v))) for key in keys]
    payload = bytes(codec.encode_sstable(codec.pack_records(items, k, v), k, v))
    data = compress(rng, payload)
    yield data
    for _ in range(12):
        damaged = bytearray(data)
        r = rng.random()
        if r < 0.3:
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        elif r < 0.45:
            del damaged[rng.randrange(len(damaged) + 1):]
        elif r < 0.5:
            damaged += rng.choice([bytes(3), rng.randbytes(5), data])
        else:
            p = bytearray(payload)
            op = rng.random()
            rsize = codec.record_size(k, v)
            if op < 0.3:
                p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
            elif op < 0.45:
                del p[rng.randrange(len(p) + 1):]
            elif op < 0.6:
                p += rng.randbytes(rng.randrange(1, 30))
            elif op < 0.8 and len(items) > 1:
                # intact records out of order: two swapped, or one repeated
                i = 8 + rng.randrange(len(items) - 1) * rsize
                a, b = p[i:i + rsize], p[i + rsize:i + 2 * rsize]
                p[i:i + 2 * rsize] = (b + a) if rng.random() < 0.5 else (a + a)
            else:
                p[:8] = (int.from_bytes(p[:8], "little") + rng.choice([-1, 1, 5])
                         ).to_bytes(8, "little", signed=True)
            damaged = bytearray(compress(rng, bytes(p)))
        yield bytes(damaged)


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_table_reader_agrees_with_reading_whole(codec, tmp_path, k, v, record_property):
    rng = random.Random(k * 10 + v)
    path = str(tmp_path / "000000000000002a")
    rsize = codec.record_size(k, v)
    verdicts = set()
    tried = 0
    with twin(codec):
        for _ in range(25):
            for data in make_tables(codec, rng, k, v):
                with open(path, "wb") as out:
                    out.write(data)
                want = whole_verdict(codec, path, k, v)
                verdicts.add(want[0] if want[0] == "refused" else want[1].status)
                for size in chunk_sizes(rsize):
                    assert chunked_verdict(path, k, v, size) == want, (size, data)
                    tried += 1
    assert verdicts == {"refused", "complete", "short"}  # every verdict was reached
    report(record_property, f"chunked_table_reads_k{k}_v{v}", tried)


def test_table_reader_keeps_output_near_a_chunk(codec, tmp_path):
    """A table that compresses 100 times still comes out in pieces of less
    than a chunk (zstd's input is fed in slices adapted to the ratio)."""
    k, v = 8, 1000
    items = [(i.to_bytes(k, "big"), bytes(v)) for i in range(3000)]
    path = str(tmp_path / "0000000000000001")
    payload = codec.encode_sstable(codec.pack_records(items, k, v), k, v)
    data = zstandard.ZstdCompressor(level=3).compress(payload)
    assert len(payload) > 100 * len(data)
    with open(path, "wb") as out:
        out.write(data)
    with twin(codec):
        reader = sstable.TableReader(Files(), path, k, v, chunk_size=1 << 19)
        sizes = [len(c) for c in reader]
    assert reader.scan.count == 3000
    assert len(sizes) > 10 and max(sizes) <= 1 << 19


def test_golden_sstables_in_tiny_chunks(codec, tmp_path):
    """The Rust crate's own tables (unfinished zstd frames), read in chunks."""
    import golden

    scenario = golden.load("sstables_k8_v8")
    with twin(codec):
        for name in sorted(os.listdir(scenario.db / "sstables")):
            path = str(scenario.db / "sstables" / name)
            if name.startswith("."):
                continue
            want = whole_verdict(codec, path, 8, 8)
            assert want[0] == "read"
            for size in chunk_sizes(codec.record_size(8, 8)):
                assert chunked_verdict(path, 8, 8, size) == want
