"""Exhaustive damage to small logs and sstables: every cut, every flipped byte.

A log cut at offset c must recover exactly the operations whose frames lie
wholly before c (a batch all or nothing), and a flipped byte anywhere in a
frame must recover exactly the operations before that frame: CRC-32 catches
every burst of up to 32 bits, tags and padding are checked, so neither can
pass.  The bytes after the cut are set aside whole, unless they are only
the damaged frame; a damaged first frame refuses the open and changes
nothing.  An sstable that tinylsm wrote is never torn by a crash (it is written
to ``-tmp``, fsynced and renamed), so any cut or flip of one must raise
``CorruptionError`` or leave a map that is still exactly right.

The sstable test also runs with recovery reading 7 bytes at a time (the
``chunk_size`` fixture), so that every zstd block and record straddles a
chunk boundary; the log tests take too long for that, and the readers'
own tests (``test_chunked_read.py``) check every prefix of such logs at
every chunk size.  ``TINYLSM_TEST_CHUNK_SIZE=7`` runs them all that way.
"""
from __future__ import annotations

import os

import pytest

import tinylsm
from faults import NoSyncFiles, report, snapshot
from workload import (
    NO_AUTO_MERGE,
    SIZES,
    contents,
    kept_by_cut,
    key,
    log_ends,
    log_path,
    make_ops,
    open_db,
    prefix_models,
    run,
    sstable_paths,
)

N_OPS = 36
FAST = NoSyncFiles()  # see its docstring


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _build_log_db(tmp_path, k, v, seed):
    ops = make_ops(seed, N_OPS, k, v)
    path = tmp_path / "db"
    db = open_db(path, k, v, log_bufwriter_size=0)
    run(db, ops)
    db.close()
    with open(log_path(path), "rb") as f:
        log = f.read()
    ends = log_ends(ops, k, v)
    assert len(log) == ends[-1], "the log is not laid out as FORMAT.md says"
    return path, ops, log, ends, prefix_models(ops)


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_log_cut_at_every_byte(tmp_path, k, v, record_property):
    path, ops, log, ends, models = _build_log_db(tmp_path, k, v, seed=k * 100 + v)
    sentinel_key = key(250, k)
    tried = 0
    for cut in range(len(log) + 1):
        _write(log_path(path), log[:cut])
        kept = kept_by_cut(ends, cut)
        with open_db(path, k, v, files=FAST) as db:
            assert contents(db) == models[kept], f"cut at {cut}: expected the first {kept} ops"
            # the torn tail is gone: new writes follow the last whole operation
            db[sentinel_key] = b"\x07" * v
        assert os.path.getsize(log_path(path)) == ends[kept] + 5 + max(8, k + v), cut
        with open_db(path, k, v, files=FAST) as db:
            assert contents(db) == {**models[kept], sentinel_key: b"\x07" * v}, cut
        tried += 1
    report(record_property, f"log_cut_offsets_k{k}_v{v}", tried)


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_log_flip_every_byte(tmp_path, k, v, record_property):
    path, ops, log, ends, models = _build_log_db(tmp_path, k, v, seed=k * 100 + v + 1)
    frame = 5 + max(8, k + v)
    tried = 0
    for i in range(len(log)):
        for mask in (0xFF, 1 << (i % 8)):
            damaged = bytearray(log)
            damaged[i] ^= mask
            _write(log_path(path), bytes(damaged))
            if i < frame:
                # the log does not start with a frame: refused, nothing changed
                with pytest.raises(tinylsm.CorruptionError, match="at offset 0"):
                    open_db(path, k, v, files=FAST)
                assert open(log_path(path), "rb").read() == damaged
                tried += 1
                continue
            kept = kept_by_cut(ends, i)  # everything before the damaged frame
            with open_db(path, k, v, files=FAST) as db:
                got = contents(db)
            assert got == models[kept], f"byte {i} ^ {mask:#x}: expected the first {kept} ops"
            assert os.path.getsize(log_path(path)) == ends[kept], (i, mask)
            # more than the damaged frame after the cut: set aside, byte for byte
            aside = [n for n in os.listdir(path) if n.startswith("tinylsm.kept-")]
            tail = bytes(damaged[ends[kept]:])
            assert [(path / n).read_bytes() for n in aside] == \
                ([tail] if len(tail) > frame else []), (i, mask)
            for n in aside:
                os.unlink(path / n)
            tried += 1
    report(record_property, f"log_flips_k{k}_v{v}", tried)


# -- sstables ------------------------------------------------------------------------


def _build_sstable_db(tmp_path, k, v, seed):
    """Two sstables and an empty log: the second holds tombstones that hide
    keys of the first, so damage to either is visible in the map."""
    big = dict(max_log_length=1 << 20, log_bufwriter_size=0, **NO_AUTO_MERGE)
    tiny = dict(big, max_log_length=1)
    path = tmp_path / "db"
    ops1 = make_ops(seed, 24, k, v, keys=10)
    ops2 = make_ops(seed + 1, 24, k, v, keys=14)
    for ops in (ops1, ops2):
        with open_db(path, k, v, **big) as db:
            run(db, ops)
        with open_db(path, k, v, **tiny) as db:
            db._rollover.roll_now()  # the log's changes become the next sstable
            assert db.stats().log_bytes == 0
    tables = sstable_paths(path)
    assert len(tables) == 2
    assert os.path.getsize(log_path(path)) == 0
    expected = prefix_models(ops1 + ops2)[-1]
    with open_db(path, k, v, files=FAST) as db:
        assert contents(db) == expected
    return path, tables, expected


def _damage_cases(data: bytes):
    for cut in range(len(data)):
        yield f"cut to {cut}", data[:cut]
    for i in range(len(data)):
        for mask in (0xFF, 1 << (i % 8)):
            damaged = bytearray(data)
            damaged[i] ^= mask
            yield f"byte {i} ^ {mask:#x}", bytes(damaged)


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_sstable_cut_and_flip_every_byte(tmp_path, k, v, record_property, chunk_size):
    path, tables, expected = _build_sstable_db(tmp_path, k, v, seed=7 * k + v)
    tried = refused = still_right = 0
    for table in tables:
        with open(table, "rb") as f:
            original = f.read()
        for what, data in _damage_cases(original):
            _write(table, data)
            before = snapshot(path)
            try:
                db = open_db(path, k, v, files=FAST)
            except tinylsm.CorruptionError as exc:
                assert os.path.basename(table) in str(exc), str(exc)
                assert snapshot(path) == before, f"{what}: a refused open changed files"
                refused += 1
            else:
                got = contents(db)
                db.close()
                assert got == expected, (
                    f"{os.path.basename(table)} {what}: opened with a wrong map "
                    "instead of raising CorruptionError"
                )
                still_right += 1
            tried += 1
        _write(table, original)
    report(record_property, f"sstable_damage_cases_k{k}_v{v}", tried)
    report(record_property, f"sstable_damage_refused_k{k}_v{v}", refused)
    assert refused > tried // 2
