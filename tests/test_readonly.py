"""Read-only opening: it changes nothing on disk, shares the directory with
other readers, refuses writes, and takes the sizes from the metadata file.

Every test compares the whole directory (names, bytes and modification
times of every file and directory) before and after.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict

import pytest

import tinylsm
from tinylsm import _format

import golden
from helpers import child_env, snapshot



def compactor_threads() -> int:
    return sum(t.name == "tinylsm-compactor" for t in threading.enumerate())


def make_store(path: Path, n: int = 200, **config) -> Dict[bytes, bytes]:
    """A tinylsm store with K=8, V=8 holding ``n`` keys; returns the map."""
    cfg = tinylsm.Config(**config) if config else None
    data = {}
    with tinylsm.open(path, key_size=8, value_size=8, config=cfg) as db:
        for i in range(n):
            k, v = i.to_bytes(8, "big"), (i * 7).to_bytes(8, "little")
            db[k] = v
            data[k] = v
            if i % 50 == 49:
                db.flush()
    return data


# -- nothing changes on disk ---------------------------------------------------


@pytest.mark.parametrize("name", golden.scenario_names())
def test_golden_opens_without_change(tmp_path, name):
    """Every golden directory, damaged ones included, reads as the Rust crate
    recovers it, and no byte, name or mtime changes: no log truncation, no
    lock or metadata file."""
    sc = golden.load(name)
    db_dir = golden.copy_db(sc, tmp_path)
    before = snapshot(db_dir, mtimes=True)
    with tinylsm.open(db_dir, key_size=sc.key_size, value_size=sc.value_size,
                      readonly=True) as db:
        assert dict(db.items()) == sc.data
        assert db.readonly
    assert snapshot(db_dir, mtimes=True) == before
    assert not (db_dir / _format.LOCK_NAME).exists()
    assert not (db_dir / _format.META_NAME).exists()


def test_torn_log_is_not_truncated(tmp_path):
    sc = golden.load("torn_log_k8_v8")
    db_dir = golden.copy_db(sc, tmp_path)
    with tinylsm.open(db_dir, key_size=8, value_size=8, readonly=True) as db:
        assert len(db) == len(sc.data)
    assert (db_dir / "log").stat().st_size == sc.log_bytes  # 22060, not 22050
    # a writable open does cut it: the test above can tell the difference
    with tinylsm.open(db_dir, key_size=8, value_size=8):
        pass
    assert (db_dir / "log").stat().st_size == sc.log_bytes_after_recover


def test_tmp_sstable_is_not_deleted(tmp_path):
    db_dir = tmp_path / "db"
    data = make_store(db_dir, max_log_length=400)
    tmp = db_dir / _format.SSTABLE_DIR / "ff-tmp"
    tmp.write_bytes(b"half-written")
    before = snapshot(db_dir, mtimes=True)
    with tinylsm.open(db_dir, readonly=True) as db:
        assert dict(db.items()) == data
    assert snapshot(db_dir, mtimes=True) == before
    assert tmp.exists()
    with tinylsm.open(db_dir):  # a writer removes it
        pass
    assert not tmp.exists()


def test_no_compaction_thread_and_no_merge(tmp_path):
    """A store whose sstables a writer would merge at once stays as it is."""
    db_dir = tmp_path / "db"
    # many small sstables of overwritten keys: the space amplification is
    # far above max_space_amp, so a writer's first look merges them
    cfg = dict(max_log_length=200, merge_window=100)
    data = {}
    with tinylsm.open(db_dir, key_size=8, value_size=8,
                      config=tinylsm.Config(max_space_amp=255, **cfg)) as db:
        for rnd in range(6):
            for i in range(40):
                k, v = i.to_bytes(8, "big"), (rnd * 1000 + i).to_bytes(8, "big")
                db[k] = v
                data[k] = v
            db.flush()
    n_sst = len(os.listdir(db_dir / _format.SSTABLE_DIR))
    assert n_sst > 3
    before = snapshot(db_dir, mtimes=True)
    threads = compactor_threads()
    with tinylsm.open(db_dir, readonly=True, config=tinylsm.Config(**cfg)) as db:
        assert compactor_threads() == threads
        assert dict(db.items()) == data
        assert db.stats().sstables == n_sst
    assert snapshot(db_dir, mtimes=True) == before
    # the same directory opened for writing merges: the check above can fail
    with tinylsm.open(db_dir, config=tinylsm.Config(**cfg)) as db:
        db.compact()
    assert len(os.listdir(db_dir / _format.SSTABLE_DIR)) < n_sst


def test_rust_directory_gets_no_metadata_or_lock(tmp_path):
    db_dir = golden.copy_db("sstables_k8_v8", tmp_path)
    before = snapshot(db_dir, mtimes=True)
    with tinylsm.open(db_dir, key_size=8, value_size=8, readonly=True):
        pass
    assert snapshot(db_dir, mtimes=True) == before
    assert sorted(p.name for p in db_dir.iterdir()) == ["log", "sstables"]


def test_missing_log_file(tmp_path):
    """A directory without a log opens empty, and nothing is created."""
    db_dir = tmp_path / "db"
    (db_dir / "sstables").mkdir(parents=True)
    before = snapshot(db_dir, mtimes=True)
    db = tinylsm.open(db_dir, key_size=4, value_size=4, readonly=True)
    assert len(db) == 0
    db.close()
    assert snapshot(db_dir, mtimes=True) == before


def test_missing_directory_is_not_created(tmp_path):
    with pytest.raises(FileNotFoundError):
        tinylsm.open(tmp_path / "nope", key_size=8, value_size=8, readonly=True)
    assert not (tmp_path / "nope").exists()


def test_reads_and_close_change_nothing(tmp_path):
    db_dir = tmp_path / "db"
    data = make_store(db_dir, max_log_length=1000)
    before = snapshot(db_dir, mtimes=True)
    db = tinylsm.open(db_dir, readonly=True)
    keys = sorted(data)
    assert list(db) == keys
    assert list(db.range(keys[10], keys[20], reverse=True)) == [
        (k, data[k]) for k in reversed(keys[10:20])]
    assert db[keys[0]] == data[keys[0]]
    assert db.get(b"\xff" * 8) is None
    assert db.stats().keys == len(data)
    db.close()
    db.close()
    assert snapshot(db_dir, mtimes=True) == before


# -- sharing -------------------------------------------------------------------


def test_several_readers_share_a_directory(tmp_path):
    db_dir = tmp_path / "db"
    data = make_store(db_dir)
    before = snapshot(db_dir, mtimes=True)
    a = tinylsm.open(db_dir, readonly=True)
    b = tinylsm.open(db_dir, readonly=True)
    # and one in another process, while both are open
    code = (
        "import sys, tinylsm\n"
        "with tinylsm.open(sys.argv[1], readonly=True) as db:\n"
        "    print(len(db))\n"
    )
    env = child_env()
    out = subprocess.run([sys.executable, "-c", code, str(db_dir)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(data))
    assert dict(a.items()) == dict(b.items()) == data
    assert not a.live and not b.live
    a.close()
    assert snapshot(db_dir, mtimes=True) == before  # readers changed nothing
    # a writer opens beside a reader, which catches up with refresh()
    with tinylsm.open(db_dir) as writer:
        assert b.live
        writer[b"\x00" * 8] = b"\x02" * 8
        writer.flush()
        assert b.refresh() is True
        assert b[b"\x00" * 8] == b"\x02" * 8
    assert not b.live
    b.close()


def test_reader_beside_a_writer(tmp_path):
    """A reader opens while a writer holds the store, in this process: it
    holds everything flushed before it began, and says the store is live."""
    db_dir = tmp_path / "db"
    make_store(db_dir)
    with tinylsm.open(db_dir) as writer:
        writer[b"\x00" * 8] = b"\x01" * 8
        writer.flush()
        with tinylsm.open(db_dir, readonly=True) as db:
            assert db.live and writer.live
            assert db[b"\x00" * 8] == b"\x01" * 8
            writer[b"\x00" * 8] = b"\x03" * 8
            writer.flush()
            assert db[b"\x00" * 8] == b"\x01" * 8  # a snapshot, until refreshed
            assert db.refresh() is True and db[b"\x00" * 8] == b"\x03" * 8
            assert db.refresh() is False
            with pytest.raises(tinylsm.ReadOnlyError):
                db[b"\x00" * 8] = b"\x04" * 8
    with tinylsm.open(db_dir, readonly=True) as db:
        assert db[b"\x00" * 8] == b"\x03" * 8 and not db.live


# -- writes are refused --------------------------------------------------------


WRITES = {
    "insert": lambda db, k: db.insert(k, b"v" * 8),
    "setitem": lambda db, k: db.__setitem__(k, b"v" * 8),
    "remove-present": lambda db, k: db.remove(k),
    "remove-absent": lambda db, k: db.remove(b"\xee" * 8),
    "delitem": lambda db, k: db.__delitem__(k),
    "write_batch": lambda db, k: db.write_batch([(k, None), (b"\xee" * 8, b"v" * 8)]),
    "flush": lambda db, k: db.flush(),
    "compact": lambda db, k: db.compact(),
    "update": lambda db, k: db.update({k: b"v" * 8}),
    "pop": lambda db, k: db.pop(k),
    "clear": lambda db, k: db.clear(),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_writes_raise_error(tmp_path, write):
    db_dir = tmp_path / "db"
    data = make_store(db_dir, max_log_length=1000)
    before = snapshot(db_dir, mtimes=True)
    key = sorted(data)[3]
    with tinylsm.open(db_dir, readonly=True) as db:
        with pytest.raises(tinylsm.ReadOnlyError, match="read-only"):
            WRITES[write](db, key)
        assert dict(db.items()) == data
    assert snapshot(db_dir, mtimes=True) == before


# -- sizes -----------------------------------------------------------------------


def test_sizes_come_from_metadata(tmp_path):
    db_dir = tmp_path / "db"
    with tinylsm.open(db_dir, key_size=3, value_size=5) as db:
        db[b"abc"] = b"12345"
    before = snapshot(db_dir, mtimes=True)
    with tinylsm.open(db_dir, readonly=True) as db:
        assert (db.key_size, db.value_size) == (3, 5)
        assert db[b"abc"] == b"12345"
    with tinylsm.open(db_dir, key_size=3, value_size=5, readonly=True) as db:
        assert len(db) == 1
    with pytest.raises(ValueError, match="key_size=3, value_size=5"):
        tinylsm.open(db_dir, key_size=5, value_size=3, readonly=True)
    assert snapshot(db_dir, mtimes=True) == before


def test_rust_directory_needs_sizes(tmp_path):
    db_dir = golden.copy_db("basic_k8_v8", tmp_path)
    before = snapshot(db_dir, mtimes=True)
    with pytest.raises(TypeError, match="key_size and value_size are required"):
        tinylsm.open(db_dir, readonly=True)
    # wrong sizes are caught by the first frame, and nothing changes
    with pytest.raises(ValueError, match="sizes the store was written with"):
        tinylsm.open(db_dir, key_size=4, value_size=4, readonly=True)
    assert snapshot(db_dir, mtimes=True) == before
