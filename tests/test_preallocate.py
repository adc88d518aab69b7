"""Zeros written ahead of the log (``LogWriter._preallocate``): durable
writes then overwrite bytes the file has, whose fsync needs no journal
commit.  The zeros must never be taken for damage, never be kept aside,
never reach a closed store, and a crash must still recover a prefix."""
from __future__ import annotations

import errno
import logging
import os

import tinylsm
from tinylsm import _log
from tinylsm._backend import codec

from faults import FaultyFiles, abandon

K, V = 8, 8
FRAME = codec.frame_size(K, V)


def key(i: int) -> bytes:
    return i.to_bytes(K, "big")


def log_size(path) -> int:
    return os.path.getsize(os.path.join(path, "log"))


def test_zeros_follow_a_flushed_log_and_are_cut_at_close(tmp_path):
    path = tmp_path / "db"
    db = tinylsm.open(path, key_size=K, value_size=V, config=tinylsm.Config(log_bufwriter_size=0))
    db[key(1)] = key(1)
    assert log_size(path) == FRAME  # nothing flushed yet: no zeros
    db.flush()
    db[key(2)] = key(2)
    assert log_size(path) == 2 * FRAME + _log.PREALLOCATE
    with open(os.path.join(path, "log"), "rb") as f:
        assert f.read()[2 * FRAME:] == bytes(_log.PREALLOCATE)
    for i in range(3, 10):
        db[key(i)] = key(i)
        db.flush()
    assert log_size(path) == 2 * FRAME + _log.PREALLOCATE  # written over, not grown
    assert db.stats().log_bytes == 9 * FRAME
    db.close()
    assert log_size(path) == 9 * FRAME  # a closed store's log is its frames


def test_a_crash_leaves_zeros_that_the_next_writer_writes_over(tmp_path, caplog):
    path = tmp_path / "db"
    files = FaultyFiles()
    db = tinylsm.open(path, key_size=K, value_size=V, _files=files,
                      config=tinylsm.Config(log_bufwriter_size=0))
    for i in range(5):
        db[key(i)] = key(i)
        db.flush()
    files.crash_at(1)  # the process dies: no close
    abandon(db)
    assert log_size(path) > 5 * FRAME
    inode = os.stat(os.path.join(path, "log")).st_ino
    with caplog.at_level(logging.WARNING, logger="tinylsm"):
        with tinylsm.open(path, readonly=True) as reader:
            assert dict(reader) == {key(i): key(i) for i in range(5)}
        with tinylsm.open(path) as db:
            assert os.stat(os.path.join(path, "log")).st_ino == inode  # not copied
            assert dict(db) == {key(i): key(i) for i in range(5)}
            db[key(9)] = key(9)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert not [n for n in os.listdir(path) if n.startswith("tinylsm.kept")]
    with tinylsm.open(path) as db:
        assert len(db) == 6


def test_a_torn_frame_in_the_zeros_is_a_torn_tail(tmp_path):
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        db[key(1)] = key(1)
    with open(os.path.join(path, "log"), "ab") as f:
        f.write(b"\x07" * (FRAME // 2) + bytes(4096))
    with tinylsm.open(path) as db:
        assert dict(db) == {key(1): key(1)}
    assert log_size(path) == FRAME
    assert not [n for n in os.listdir(path) if n.startswith("tinylsm.kept")]


def test_no_room_for_zeros_loses_nothing(tmp_path, caplog):
    path = tmp_path / "db"
    files = FaultyFiles()
    db = tinylsm.open(path, key_size=K, value_size=V, _files=files,
                      config=tinylsm.Config(log_bufwriter_size=0))
    db[key(1)] = key(1)
    db.flush()
    files.fail("pwrite", errno.ENOSPC, when=lambda c: c.size == _log.PREALLOCATE, times=None)
    with caplog.at_level(logging.WARNING, logger="tinylsm"):
        db[key(2)] = key(2)
        db.flush()
        db[key(3)] = key(3)
    assert any("no longer writing zeros ahead" in r.getMessage() for r in caplog.records)
    assert log_size(path) == 3 * FRAME
    db.close()
    with tinylsm.open(path) as db:
        assert dict(db) == {key(i): key(i) for i in (1, 2, 3)}
