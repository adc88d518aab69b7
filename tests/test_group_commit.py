"""Group commit: threads that flush together share fsyncs, and every flush
is durable when it returns, also when an fsync fails or the store closes
under them."""
from __future__ import annotations

import errno
import os
import threading
import time
from typing import Dict, List, Optional

import pytest

import tinylsm
from tinylsm._fs import Files

from faults import report

K, V = 8, 8
THREADS = 8
ROUNDS = 150
JOIN_SECONDS = 60


def key(i: int) -> bytes:
    return i.to_bytes(K, "big")


class SyncTracker(Files):
    """Real files that record, per descriptor, how many bytes an fsync that
    has returned covers (the file's size when that fsync started); from the
    ``fail_from``-th fsync on, fsyncs fail with EIO."""

    def __init__(self, fail_from: Optional[int] = None) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.durable: Dict[int, int] = {}
        self.fsyncs = 0
        self.fail_from = fail_from

    def fsync(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        with self.lock:
            self.fsyncs += 1
            failing = self.fail_from is not None and self.fsyncs >= self.fail_from
        if failing:
            raise OSError(errno.EIO, "injected fsync failure")
        super().fsync(fd)
        with self.lock:
            self.durable[fd] = max(self.durable.get(fd, 0), size)

    def covered(self, fd: int) -> int:
        with self.lock:
            return self.durable.get(fd, 0)


def run_threads(db: tinylsm.Lsm, files: SyncTracker, rounds: int = ROUNDS) -> dict:
    """THREADS threads each insert their own keys, flushing after each one.

    A flush that returns must have made the log durable at least up to its
    length just after the thread's insert (the flush covers everything taken
    before it started).  Returns what happened: acknowledged keys, errors,
    and the broken promises (which must be none)."""
    fd = db._log.fd
    acked: List[bytes] = []
    errors: List[BaseException] = []
    broken: List[str] = []

    def worker(t: int) -> None:
        for i in range(rounds):
            k = key(t * 100_000 + i)
            try:
                db[k] = k
                need = db._log.length
                db.flush()
            except tinylsm.Error as exc:
                errors.append(exc)
                return
            except OSError as exc:
                errors.append(exc)
                return
            have = files.covered(fd)
            if have < need:
                broken.append(f"thread {t} round {i}: flush returned with {have} of "
                              f"{need} log bytes durable")
            acked.append(k)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(JOIN_SECONDS)
    hung = [th.name for th in threads if th.is_alive()]
    return {"acked": acked, "errors": errors, "broken": broken, "hung": hung}


def test_every_flush_is_durable_when_it_returns_and_fsyncs_are_shared(tmp_path, record_property):
    files = SyncTracker()
    path = tmp_path / "db"
    db = tinylsm.open(path, key_size=K, value_size=V, _files=files)
    out = run_threads(db, files)
    assert out["hung"] == [] and out["errors"] == [] and out["broken"] == []
    flushes = THREADS * ROUNDS
    assert len(out["acked"]) == flushes
    # Shared: fewer fsyncs than flushes (with 8 threads on any machine,
    # some flushes meet an fsync under way).
    assert files.fsyncs < flushes, (files.fsyncs, flushes)
    report(record_property, "group_commit_flushes_checked", flushes)
    report(record_property, "group_commit_fsyncs", files.fsyncs)
    want = {k: k for k in out["acked"]}
    assert dict(db) == want
    db.close()
    with tinylsm.open(path, key_size=K, value_size=V) as again:
        assert dict(again) == want


def test_a_lone_flusher_stops_waiting_for_a_crowd_that_left(tmp_path):
    files = SyncTracker()
    db = tinylsm.open(tmp_path / "db", key_size=K, value_size=V, _files=files)
    out = run_threads(db, files, rounds=50)
    assert out["hung"] == [] and out["errors"] == [] and out["broken"] == []
    # One thread now: after at most one wait for the others (capped at one
    # fsync's time), each flush fsyncs at once, and alone.
    counts = []

    def alone() -> None:
        db[key(1)] = b"x" * V
        db.flush()
        before = files.fsyncs
        for i in range(20):
            db[key(2 + i)] = b"y" * V
            db.flush()
        counts.append(files.fsyncs - before)

    lone = threading.Thread(target=alone, daemon=True)
    lone.start()
    lone.join(JOIN_SECONDS)
    assert not lone.is_alive(), "a lone flusher waited for followers that never came"
    assert counts == [20]
    assert db._log._crowd == 1
    db.close()


def test_a_failed_fsync_reaches_every_flusher_and_loses_nothing_acknowledged(tmp_path, record_property):
    files = SyncTracker(fail_from=40)
    path = tmp_path / "db"
    db = tinylsm.open(path, key_size=K, value_size=V, _files=files)
    out = run_threads(db, files)
    assert out["hung"] == []
    assert out["broken"] == []
    # Every thread ends on the error: no flush returns after the log broke.
    assert len(out["errors"]) == THREADS
    assert len(out["acked"]) < THREADS * ROUNDS
    report(record_property, "group_commit_acked_before_failed_fsync", len(out["acked"]))
    try:
        db[key(999)] = b"z" * V
    except tinylsm.Error as exc:
        assert "refuses writes" in str(exc)
    else:
        raise AssertionError("a store whose fsync failed took a write")
    with pytest.raises(tinylsm.LogFailedError, match="broke earlier"):
        db.close()
    with tinylsm.open(path, key_size=K, value_size=V) as again:
        got = dict(again)
    for k in out["acked"]:
        assert got.get(k) == k


def test_closing_under_flushing_threads_ends_them_all(tmp_path, record_property):
    files = SyncTracker()
    path = tmp_path / "db"
    db = tinylsm.open(path, key_size=K, value_size=V, _files=files)
    results: Dict[str, object] = {}

    def run() -> None:
        results.update(run_threads(db, files, rounds=100_000))

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    time.sleep(0.2)
    db.close()
    runner.join(JOIN_SECONDS + 5)
    assert not runner.is_alive()
    assert results["hung"] == [] and results["broken"] == []
    assert len(results["errors"]) == THREADS
    assert all(isinstance(e, tinylsm.ClosedError) for e in results["errors"]), results["errors"]
    with tinylsm.open(path, key_size=K, value_size=V) as again:
        got = dict(again)
    for k in results["acked"]:
        assert got.get(k) == k
    report(record_property, "group_commit_acked_before_close", len(results["acked"]))
