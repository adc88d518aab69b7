"""ENOSPC and EIO in the middle of writes, flushes, sstable flushes and merges.

A failed operation must raise to its caller (``OSError``, the errno kept);
afterwards the store either keeps working or refuses writes with a clear
``tinylsm.Error``, its in-memory map never holds a change the log did not
take, and reopening loses nothing that was acknowledged.  Background merges
that fail are retried, reported by ``stats().compaction_error`` and by
``close()`` raising ``tinylsm.Error``.
"""
from __future__ import annotations

import errno
import os
import threading
import time
from typing import Dict, List

import pytest

import tinylsm
from tinylsm import _log
from tinylsm import _compactor
from tinylsm._worker import Worker
from faults import Call, FaultyFiles, NoSyncFiles, report
from workload import (
    NO_AUTO_MERGE,
    SIZES,
    contents,
    key,
    make_ops,
    open_db,
    prefix_models,
    run,
)

FAST = NoSyncFiles()
ERRORS = [errno.ENOSPC, errno.EIO]


def _log_write(call: Call) -> bool:
    """A write of changes to the log (not of the zeros written ahead of it,
    whose failure fails nothing: ``test_preallocate.py``)."""
    return (call.op == "pwrite" and call.path.endswith("/log")
            and call.size != _log.PREALLOCATE)


def _expect_refusal(exc: tinylsm.Error) -> None:
    assert "refuses writes" in str(exc) and "open it again" in str(exc), str(exc)


def _still_works_or_refuses(db, model: Dict[bytes, bytes], k: int, v: int) -> bool:
    """Try a write and a flush after a failure.  True if the store took them
    (and ``model`` is updated), False if it refused them clearly."""
    extra = key(249, k)
    try:
        db.insert(extra, b"\x09" * v)
    except tinylsm.Error as exc:
        _expect_refusal(exc)
        assert extra not in db
        with pytest.raises(tinylsm.Error) as again:
            db.write_batch([(extra, None)])
        _expect_refusal(again.value)
        try:
            # may return only if every change it covers is already durable
            # (checked by the reopen); otherwise it must refuse as well
            db.flush()
        except tinylsm.Error as again:
            _expect_refusal(again)
        return False
    model[extra] = b"\x09" * v
    db.flush()
    assert contents(db) == model
    return True


# -- the log: insert, batch and flush --------------------------------------------------


@pytest.mark.parametrize("code", ERRORS, ids=errno.errorcode.get)
@pytest.mark.parametrize("how", ["fail", "cut", "cut_late"])
@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_log_write_fails_at_every_write(tmp_path, k, v, how, code, record_property):
    """The n-th write of the log buffer fails (nothing, or a part, stored):
    the operation that triggered it raises and changes nothing; the store
    goes on; a reopen has every change that did not raise, and none of the
    failed write's frames that reached the file."""
    ops = make_ops(21, 40, k, v, keys=10, flush_every=9)
    cfg = dict(log_bufwriter_size=40, max_log_length=1 << 20, **NO_AUTO_MERGE)
    probe = FaultyFiles()
    with open_db(tmp_path / "probe", k, v, files=probe, **cfg) as db:
        probe.reset_count()
        run(db, ops)
        writes = sum(1 for c in probe.trace if _log_write(c))  # not those of close()
    assert writes > 10
    injected = 0
    for n in range(1, writes + 1):
        path = tmp_path / f"{how}{n}"
        files = FaultyFiles()
        db = open_db(path, k, v, files=files, **cfg)
        if how == "fail":
            files.fail("pwrite", code, nth=n, when=_log_write)
        else:  # a part stored: 7 bytes, or all but the last (whole frames of it)
            files.cut(7 if how == "cut" else -1, code, nth=n, when=_log_write)
        model: Dict[bytes, bytes] = {}
        raised = 0
        for op in ops:
            before = contents(db)
            try:
                run(db, [op])
            except OSError as exc:
                assert exc.errno == code
                raised += 1
                assert contents(db) == before, f"write {n}: a failed {op[0]} changed the map"
                continue
            if op[0] != "F":
                model = prefix_models([op], model)[-1]
        assert raised == 1, f"write {n}: expected exactly one operation to fail"
        assert contents(db) == model
        db.close()
        with open_db(path, k, v, files=FAST) as db:
            assert contents(db) == model, f"write {n} failed: reopened store differs"
        injected += files.injected
    report(record_property, f"log_write_faults_{how}_{errno.errorcode[code]}_k{k}_v{v}",
           injected)


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_failed_log_fsync_refuses_writes(tmp_path, k, v):
    """After a failed fsync the kernel may have dropped the data and report
    the next fsync as fine, so the store must refuse writes, not retry."""
    files = FaultyFiles()
    path = tmp_path / "db"
    db = open_db(path, k, v, files=files, max_log_length=1 << 20)
    acked = {key(i, k): bytes([i]) * v for i in range(5)}
    for kk, vv in acked.items():
        db[kk] = vv
    db.flush()
    db[key(50, k)] = b"\x32" * v  # issued, not acknowledged
    files.fail("fsync", errno.EIO, when=lambda c: c.path.endswith("/log"))
    with pytest.raises(OSError) as exc:
        db.flush()
    assert exc.value.errno == errno.EIO
    assert not _still_works_or_refuses(db, dict(acked), k, v)
    with pytest.raises(tinylsm.LogFailedError, match="refuses writes"):
        db.flush()  # its data may be lost: a retried fsync would lie
    with pytest.raises(tinylsm.LogFailedError, match="refuses writes"):
        db.write_batch([(key(1, k), None)])
    assert contents(db) == {**acked, key(50, k): b"\x32" * v}  # reads still work
    with pytest.raises(tinylsm.LogFailedError, match="broke earlier"):
        db.close()  # does not try the broken log again, and says so
    with open_db(path, k, v, files=FAST) as db:
        got = contents(db)
    assert got in (acked, {**acked, key(50, k): b"\x32" * v})


# -- sweeps over every file operation of an sstable flush and of a merge ---------------


@pytest.fixture
def no_thread(monkeypatch):
    monkeypatch.setattr(Worker, "start", lambda self: None)


def _base(tmp_path, k, v, tables: int, log_ops: int):
    path = tmp_path / "base"
    big = dict(max_log_length=1 << 20, log_bufwriter_size=0, **NO_AUTO_MERGE)
    ops_all: List[tuple] = []
    for t in range(tables):
        ops = make_ops(30 + t, 12, k, v, keys=8 + t)
        with open_db(path, k, v, files=FAST, **big) as db:
            run(db, ops)
        with open_db(path, k, v, files=FAST, **dict(big, max_log_length=1)) as db:
            db.flush()
        ops_all += ops
    ops = make_ops(40, log_ops, k, v, keys=10)
    with open_db(path, k, v, files=FAST, **big) as db:
        run(db, ops)
    ops_all += ops
    return path, prefix_models(ops_all)[-1]


def _fault_sweep(tmp_path, k, v, base, model, cfg, action, name, record_property):
    """Fail each file operation of ``action(db)`` in turn with each errno."""
    import shutil

    probe = FaultyFiles()
    shutil.copytree(base, tmp_path / "probe")
    with open_db(tmp_path / "probe", k, v, files=probe, **cfg) as db:
        probe.reset_count()
        action(db)
        trace = list(probe.trace)
    assert trace
    injected = refused = 0
    for code in ERRORS:
        for call in trace:
            path = tmp_path / f"{name}-{errno.errorcode[code]}-{call.index}"
            shutil.copytree(base, path)
            files = FaultyFiles()
            db = open_db(path, k, v, files=files, **cfg)
            files.reset_count()
            files.fail("*", code, when=lambda c, i=call.index: c.index == i)
            with pytest.raises(OSError) as exc:
                action(db)
            assert exc.value.errno == code, f"{call}: {exc.value!r}"
            assert files.injected == 1
            injected += 1
            files.clear()
            expected = dict(model)
            assert contents(db) == expected, f"{call}: the map changed"
            if _still_works_or_refuses(db, expected, k, v):
                action(db)  # the same operation now succeeds
                assert contents(db) == expected
            else:
                refused += 1
            try:
                db.close()
            except tinylsm.Error:
                pass
            with open_db(path, k, v, files=FAST) as db:
                assert contents(db) == expected, f"{name}: {call} failed: reopened store differs"
                db.compact()
            with open_db(path, k, v, files=FAST) as db:
                assert contents(db) == expected
            shutil.rmtree(path)
    report(record_property, f"faults_{name}", injected)
    report(record_property, f"faults_{name}_refused_after", refused)


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_faults_during_sstable_flush(tmp_path, k, v, no_thread, record_property):
    base, model = _base(tmp_path, k, v, tables=1, log_ops=14)
    cfg = dict(max_log_length=1, merge_window=2, log_bufwriter_size=0)
    _fault_sweep(tmp_path, k, v, base, model, cfg, lambda db: db.flush(),
                 f"sstable_flush_k{k}_v{v}", record_property)


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_faults_during_compaction(tmp_path, k, v, no_thread, record_property):
    base, model = _base(tmp_path, k, v, tables=3, log_ops=0)
    cfg = dict(max_log_length=1 << 20, merge_window=2, log_bufwriter_size=0)
    _fault_sweep(tmp_path, k, v, base, model, cfg, lambda db: db.compact(),
                 f"compaction_k{k}_v{v}", record_property)


# -- the background merge ----------------------------------------------------------------


def _in_compactor(call: Call) -> bool:
    return threading.current_thread().name == "tinylsm-compactor"


def _wait_for(predicate, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {limit} s for {what}")
        time.sleep(0.01)


@pytest.mark.parametrize("code", ERRORS, ids=errno.errorcode.get)
def test_background_merge_failure_is_reported(tmp_path, monkeypatch, code, record_property):
    monkeypatch.setattr(_compactor, "RETRY_DELAYS", (0.01, 0.02))
    k, v = 8, 8
    files = FaultyFiles()
    fault = files.fail(("create", "rename"), code, when=_in_compactor, times=None)
    path = tmp_path / "db"
    db = open_db(path, k, v, files=files, max_log_length=200, merge_window=2,
                 log_bufwriter_size=0)
    model = {}
    for i in range(120):  # several sstable flushes: the policy wants merges
        kk, vv = key(i % 40, k), bytes([i]) * v
        db[kk] = vv
        model[kk] = vv
    db.flush()
    _wait_for(lambda: db.stats().compaction_error is not None, "the merge to fail")
    assert errno.errorcode[code] in db.stats().compaction_error or \
        str(code) in db.stats().compaction_error
    _wait_for(lambda: fault.fired >= 2, "a retry")
    # writes go on while merges fail
    db[key(99, k)] = b"\x63" * v
    model[key(99, k)] = b"\x63" * v
    db.flush()
    assert contents(db) == model
    with pytest.raises(tinylsm.CompactionError, match="background compaction") as exc:
        db.close()
    assert isinstance(exc.value.__cause__, OSError) and exc.value.__cause__.errno == code
    with pytest.raises(tinylsm.ClosedError):
        db.flush()
    with open_db(path, k, v, files=FAST) as db2:
        assert contents(db2) == model
    report(record_property, f"background_merge_faults_{errno.errorcode[code]}", fault.fired)


def test_background_merge_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(_compactor, "RETRY_DELAYS", (0.01, 0.02))
    k, v = 8, 8
    files = FaultyFiles()
    fault = files.fail("rename", errno.ENOSPC, when=_in_compactor, times=3)
    path = tmp_path / "db"
    db = open_db(path, k, v, files=files, max_log_length=200, merge_window=2,
                 log_bufwriter_size=0)
    model = {}
    for i in range(120):
        kk, vv = key(i % 40, k), bytes([i]) * v
        db[kk] = vv
        model[kk] = vv
    db.flush()
    _wait_for(lambda: fault.fired == 3, "three failed merges")
    _wait_for(lambda: db.stats().merges >= 1 and db.stats().compaction_error is None,
              "a merge to succeed after the failures")
    db.close()  # no error left to report
    with open_db(path, k, v, files=FAST) as db2:
        assert contents(db2) == model


# -- silent corruption on the way to the disk ---------------------------------------------


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_sstable_write_silently_corrupted(tmp_path, where, no_thread):
    """A byte of the sstable flipped as it is written (the write "succeeds"):
    the log is emptied since the sstable seemed durable, so the next open
    must refuse the damaged table rather than return a map without it."""
    k, v = 8, 10
    path = tmp_path / "db"
    files = FaultyFiles()
    db = open_db(path, k, v, files=files, max_log_length=1 << 20, log_bufwriter_size=0)
    for i in range(30):
        db[key(i, k)] = bytes([i]) * v
    db.close()
    files = FaultyFiles()
    db = open_db(path, k, v, files=files, max_log_length=1, log_bufwriter_size=0)
    offset = {"start": 0, "middle": 60, "end": -1}[where]
    fault = files.flip(offset, 0x40, when=lambda c: c.path.endswith("-tmp"))
    db.flush()
    assert fault.fired == 1
    db.close()
    assert os.path.getsize(os.path.join(path, "log")) == 0
    with pytest.raises(tinylsm.CorruptionError, match="0000000000000001"):
        open_db(path, k, v)
