"""The compiled codec against its pure-Python twin on a million records.

Run with ``pytest bench/`` (``--benchmark-columns=mean,min`` keeps the table
narrow); a table of speed-ups follows the results.  Each benchmark is
grouped by operation and record size, so the two codecs stand side by side.
The pure-Python runs are slow (seconds), so they are timed over 3 rounds.

Sstables are measured with and without zstd, compressed and decompressed the
way tinylsm does it (the Rust crate leaves its frames unfinished, so reading
goes through a streaming decompressor).  Logs are never compressed.
"""
from __future__ import annotations

import importlib
import random
from typing import List, NamedTuple, Optional, Tuple

import pytest
import zstandard

N = 1_000_000
SIZES = [(8, 8), (32, 32)]


class Data(NamedTuple):
    k: int
    v: int
    items: List[Tuple[bytes, Optional[bytes]]]  # N changes, unique keys, log order
    log: bytes  # encode_log(items)
    log_records: bytes  # scan_log(log).records: N records in log order
    table_records: bytes  # the same sorted: one sstable's records
    payload: bytes  # encode_sstable(table_records)
    compressed: bytes  # payload compressed with zstd level 3
    runs: List[bytes]  # 4 sorted runs, 250k records each, overlapping keys


def _generator():
    """The fastest codec there is, to build the inputs."""
    try:
        return importlib.import_module("tinylsm._codec")
    except ImportError:
        return importlib.import_module("tinylsm._codec_py")


@pytest.fixture(scope="module", params=SIZES, ids=[f"k{k}v{v}" for k, v in SIZES])
def data(request) -> Data:
    k, v = request.param
    gen = _generator()
    rnd = random.Random(k * 1000 + v)
    key_blob = rnd.randbytes(k * N)
    value_blob = rnd.randbytes(v * N)
    keys = [key_blob[i * k:(i + 1) * k] for i in range(N)]
    values = [value_blob[i * v:(i + 1) * v] for i in range(N)]
    items = [(keys[i], None if i % 10 == 0 else values[i]) for i in range(N)]
    log = gen.encode_log(items, k, v)
    log_records = gen.scan_log(log, k, v).records
    table_records = gen.sort_records(log_records, k, v)
    payload = gen.encode_sstable(table_records, k, v)
    compressed = zstandard.ZstdCompressor(level=3).compress(payload)
    runs = []
    for j in range(4):  # windows of N/4 keys, each overlapping the next
        window = range(j * N // 5, j * N // 5 + N // 4)
        run_items = [(keys[i], None if (i + j) % 10 == 0 else values[(i + j) % N])
                     for i in window]
        runs.append(gen.sort_records(gen.pack_records(run_items, k, v), k, v))
    return Data(k, v, items, log, log_records, table_records, payload, compressed, runs)


def run(benchmark, codec, record_mean, op, data, fn, *args):
    """Time ``fn(*args)``: three rounds for the slow twin, calibrated rounds
    for the compiled codec."""
    benchmark.group = f"{op} k{data.k}v{data.v}"
    if codec.__name__.endswith("_codec_py"):
        result = benchmark.pedantic(fn, args=args, rounds=3, iterations=1)
    else:
        result = benchmark(fn, *args)
    record_mean(benchmark.group, benchmark)
    return result


def test_log_encode(benchmark, codec, record_mean, data):
    log = run(benchmark, codec, record_mean, "log encode", data,
              codec.encode_log, data.items, data.k, data.v)
    assert log == data.log


def test_log_scan(benchmark, codec, record_mean, data):
    scan = run(benchmark, codec, record_mean, "log scan", data,
               codec.scan_log, data.log, data.k, data.v)
    assert scan.count == N and scan.records == data.log_records


def test_sstable_encode(benchmark, codec, record_mean, data):
    payload = run(benchmark, codec, record_mean, "sstable encode", data,
                  codec.encode_sstable, data.table_records, data.k, data.v)
    assert payload == data.payload


def test_sstable_encode_zstd(benchmark, codec, record_mean, data):
    compress = zstandard.ZstdCompressor(level=3).compress

    def encode(records, k, v):
        return compress(codec.encode_sstable(records, k, v))

    blob = run(benchmark, codec, record_mean, "sstable encode+zstd", data,
               encode, data.table_records, data.k, data.v)
    assert blob == data.compressed


def test_sstable_decode(benchmark, codec, record_mean, data):
    scan = run(benchmark, codec, record_mean, "sstable decode", data,
               codec.decode_sstable, data.payload, data.k, data.v)
    assert scan.status == "complete" and scan.count == N


def test_sstable_decode_zstd(benchmark, codec, record_mean, data):
    dctx = zstandard.ZstdDecompressor()

    def decode(blob, k, v):
        payload = dctx.decompressobj(read_across_frames=True).decompress(blob)
        return codec.decode_sstable(payload, k, v)

    scan = run(benchmark, codec, record_mean, "sstable decode+zstd", data,
               decode, data.compressed, data.k, data.v)
    assert scan.status == "complete" and scan.records == data.table_records


def test_sort_records(benchmark, codec, record_mean, data):
    records = run(benchmark, codec, record_mean, "sort_records", data,
                  codec.sort_records, data.log_records, data.k, data.v)
    assert records == data.table_records


@pytest.mark.parametrize("drop", [False, True], ids=["keep", "drop"])
def test_merge_runs(benchmark, codec, record_mean, data, drop):
    merged = run(benchmark, codec, record_mean, f"merge_runs {['keep', 'drop'][drop]}",
                 data, codec.merge_runs, data.runs, data.k, data.v, drop)
    assert len(merged) % (5 + data.k + data.v) == 0
