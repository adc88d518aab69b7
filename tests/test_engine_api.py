"""The public API of the store: mapping behaviour, lifecycle, threads.

Bad input of every kind (keys, values, batches, sizes, config, a second
opener, use after close) is the list in ``test_bad_input.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import MutableMapping

import pytest

import tinylsm

from helpers import child_env


K, V = 8, 8


def key(i: int) -> bytes:
    return i.to_bytes(K, "big")


def val(i: int) -> bytes:
    return i.to_bytes(V, "little")


@pytest.fixture
def db(tmp_path):
    store = tinylsm.open(tmp_path / "db", key_size=K, value_size=V)
    yield store
    store.close()


def test_public_names_are_pinned():
    """Exactly these names: an addition or a loss is a decision, not an accident."""
    assert sorted(tinylsm.__all__) == sorted([
        "BACKEND", "Buffer", "ClosedError", "CompactionError", "Config", "CorruptionError", "Error",
        "LockedError", "LogFailedError", "Lsm", "ReadOnlyError", "Stats", "__version__",
        "open",
    ])
    for name in ("CorruptionError", "LockedError", "ClosedError", "ReadOnlyError",
                 "LogFailedError", "CompactionError"):
        assert issubclass(getattr(tinylsm, name), tinylsm.Error)
    assert tinylsm.BACKEND in ("cython", "python")


@pytest.mark.parametrize("kind,status", [
    ("CorruptionError", 1), ("LockedError", 3), ("ReadOnlyError", 4),
    ("LogFailedError", 5), ("CompactionError", 6),
])
def test_each_error_kind_has_its_exit_status(monkeypatch, capsys, kind, status):
    from tinylsm import cli

    def fail(args):
        raise getattr(tinylsm, kind)("what went wrong")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["stats"].set_defaults(func=fail)
    assert cli.main(["stats", "somewhere"]) == status
    assert "what went wrong" in capsys.readouterr().err


def test_mapping_protocol(db):
    assert isinstance(db, MutableMapping)
    db[key(2)] = val(2)
    db[key(1)] = val(1)
    assert db.insert(key(3), val(3)) is None
    assert db.insert(key(3), val(33)) == val(3)
    assert db[key(3)] == val(33)
    assert key(1) in db and key(9) not in db
    assert db.get(key(9)) is None and db.get(key(9), b"x") == b"x"
    assert db.get_many([key(1), key(9), bytearray(key(3))]) == [val(1), None, val(33)]
    assert len(db) == 3
    assert list(db) == [key(1), key(2), key(3)]
    assert list(db.keys()) == [key(1), key(2), key(3)]
    assert list(db.values()) == [val(1), val(2), val(33)]
    assert list(db.items()) == [(key(1), val(1)), (key(2), val(2)), (key(3), val(33))]
    del db[key(2)]
    with pytest.raises(KeyError):
        db[key(2)]
    with pytest.raises(KeyError):
        del db[key(2)]
    assert db.remove(key(2)) is None
    assert db.remove(key(1)) == val(1)
    assert dict(db) == {key(3): val(33)}


def test_bytearray_and_memoryview_accepted(db):
    db[bytearray(key(1))] = memoryview(val(1))
    assert db[memoryview(key(1))] == val(1)
    assert type(next(iter(db))) is bytes
    db.write_batch([(bytearray(key(2)), bytearray(val(2)))])
    assert db[key(2)] == val(2)


def test_range(db):
    for i in range(0, 20, 2):
        db[key(i)] = val(i)
    assert [k for k, _ in db.range(key(3), key(9))] == [key(4), key(6), key(8)]
    assert [k for k, _ in db.range(None, key(4))] == [key(0), key(2)]
    assert [k for k, _ in db.range(key(15))] == [key(16), key(18)]
    assert [k for k, _ in db.range(key(3), key(9), reverse=True)] == [key(8), key(6), key(4)]
    assert list(db.range(key(9), key(3))) == []
    with pytest.raises(ValueError, match="expected 8 bytes, got 3"):
        list(db.range(b"abc"))


def test_write_batch_last_wins_and_removes(db):
    db[key(1)] = val(1)
    db.write_batch([(key(1), None), (key(2), val(2)), (key(2), val(22)), (key(3), None)])
    assert dict(db) == {key(2): val(22)}
    db.write_batch([])
    assert dict(db) == {key(2): val(22)}


def test_config_defaults_are_tiny_lsms():
    assert tinylsm.Config() == tinylsm.Config(
        max_space_amp=2, max_log_length=32 << 20, merge_ratio=3, merge_window=10,
        log_bufwriter_size=32 << 10, zstd_sstable_compression_level=3,
    )


def test_context_manager_closes_and_persists(tmp_path):
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        db[key(7)] = val(7)
    with pytest.raises(tinylsm.ClosedError):
        db[key(7)]
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        assert db[key(7)] == val(7)


def test_garbage_collection_writes_buffer_out(tmp_path):
    path = tmp_path / "db"
    db = tinylsm.open(path, key_size=K, value_size=V)
    db[key(1)] = val(1)
    assert os.path.getsize(path / "log") == 0  # still in the buffer
    del db
    import gc
    gc.collect()
    assert os.path.getsize(path / "log") == 21
    with tinylsm.open(path, key_size=K, value_size=V) as again:
        assert again[key(1)] == val(1)


def test_left_open_at_exit_writes_buffer_out(tmp_path):
    path = tmp_path / "db"
    code = (
        "import tinylsm\n"
        f"db = tinylsm.open({str(path)!r}, key_size=8, value_size=8)\n"
        "db[bytes(8)] = b'12345678'\n"
        "KEEP = [db]\n"  # alive until interpreter exit
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=child_env())
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        assert db[bytes(8)] == b"12345678"


def test_forked_child_cannot_use_store(db):
    db[key(1)] = val(1)
    pid = os.fork()
    if pid == 0:  # child: every use must raise ClosedError naming the fork
        code = 1
        try:
            db[key(1)]
        except tinylsm.ClosedError as exc:
            code = 0 if "forked child" in str(exc) else 2
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert db[key(1)] == val(1)  # the parent is unaffected
    db.flush()


@pytest.mark.parametrize("view", ["items", "keys", "iter", "values"])
def test_iteration_during_writes_raises_runtime_error(db, view):
    for i in range(10):
        db[key(i)] = val(i)
    it = iter(db) if view == "iter" else iter(getattr(db, view)())
    next(it)
    db[key(100)] = val(100)
    with pytest.raises(RuntimeError, match="changed during iteration"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_threads_write_and_iterate(tmp_path):
    path = tmp_path / "db"
    config = tinylsm.Config(max_log_length=4096, merge_window=2)
    db = tinylsm.open(path, key_size=K, value_size=V, config=config)
    errors = []

    def writer(base):
        try:
            for i in range(2000):
                db[key(base + i)] = val(base + i)
                if i % 500 == 0:
                    db.flush()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        torn = 0
        for _ in range(200):
            try:
                for k, v in db.items():
                    if int.from_bytes(k, "big") != int.from_bytes(v, "little"):
                        torn += 1
            except RuntimeError:
                pass  # documented: the store changed during iteration
        if torn:
            errors.append(AssertionError(f"{torn} torn items"))

    threads = [threading.Thread(target=writer, args=(b,)) for b in (0, 10000, 20000)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(db) == 6000
    db.close()
    with tinylsm.open(path, key_size=K, value_size=V) as again:
        assert len(again) == 6000


def test_stats_and_compaction(tmp_path):
    config = tinylsm.Config(max_log_length=2048, merge_window=3)
    with tinylsm.open(tmp_path / "db", key_size=K, value_size=V, config=config) as db:
        for i in range(3000):
            db[key(i % 700)] = val(i)
            if i % 7 == 0:
                db.remove(key((i * 13) % 700))
        db.flush()
        s = db.stats()
        assert s.keys == len(db)
        assert s.resident_bytes == len(db) * 16
        assert s.logged_bytes > 0 and s.written_bytes >= s.logged_bytes - s.log_bytes
        assert s.sstables >= 1
        db.compact()
        after = db.stats()
        assert after.sstables == 1
        assert after.log_bytes == 0
        assert after.on_disk_bytes < s.on_disk_bytes
        assert after.space_amp == after.on_disk_bytes / after.resident_bytes
        assert after.write_amp == after.written_bytes / after.logged_bytes
        assert after.compaction_error is None


def test_v0_is_a_sorted_set(tmp_path):
    with tinylsm.open(tmp_path / "db", key_size=3, value_size=0) as db:
        db[b"bbb"] = b""
        db[b"aaa"] = b""
        db.write_batch([(b"ccc", b""), (b"bbb", None)])
    with tinylsm.open(tmp_path / "db", key_size=3, value_size=0) as db:
        assert list(db) == [b"aaa", b"ccc"]


def test_unlogged_map_mutators_are_hidden(db):
    """The in-memory map's own set/delete/apply_records would change memory
    without logging: a store does not offer them."""
    for name in ("set", "delete", "apply_records", "apply_packed"):
        assert not hasattr(db, name)
        with pytest.raises(AttributeError, match=name):
            getattr(db, name)


def test_fast_and_slow_paths_agree(tmp_path):
    """Writes that fit the buffer take the compiled fast path, the others
    the slow one (bytearray keys, a full buffer, the log past its limit);
    the log and the map must agree either way."""
    path = tmp_path / "db"
    config = tinylsm.Config(max_log_length=700, log_bufwriter_size=100)
    model = {}
    with tinylsm.open(path, key_size=K, value_size=V, config=config) as db:
        for i in range(300):
            k = key(i % 37)
            if i % 5 == 0:
                assert db.remove(bytearray(k)) == model.pop(k, None)
            elif i % 7 == 0:
                assert db.remove(k) == model.pop(k, None)
            else:
                wrapped = memoryview(val(i)) if i % 3 == 0 else val(i)
                assert db.insert(k, wrapped) == model.get(k)
                model[k] = val(i)
        assert dict(db) == model
        assert db.stats().logged_bytes > 0
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        assert dict(db) == model


def test_threads_insert_and_flush_together(tmp_path):
    """Group commit: many threads flushing at once, every flush durable."""
    path = tmp_path / "db"
    db = tinylsm.open(path, key_size=K, value_size=V,
                      config=tinylsm.Config(max_log_length=3000))
    errors = []

    def worker(base):
        try:
            for i in range(150):
                db[key(base + i)] = val(base + i)
                db.flush()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t * 1000,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    want = {key(t * 1000 + i): val(t * 1000 + i) for t in range(8) for i in range(150)}
    assert dict(db) == want
    db.close()
    with tinylsm.open(path, key_size=K, value_size=V) as again:
        assert dict(again) == want


class _BytesPath:
    """An ``os.PathLike[bytes]``."""

    def __init__(self, path: bytes) -> None:
        self.path = path

    def __fspath__(self) -> bytes:
        return self.path


def test_bytes_paths(tmp_path):
    """A path may be bytes or PathLike[bytes], as for os functions; the
    store's path is then a str naming the same directory."""
    raw = os.fsencode(tmp_path / "db")
    with tinylsm.open(raw, key_size=K, value_size=V) as db:
        assert db.path == str(tmp_path / "db")
        db[key(1)] = val(1)
    with tinylsm.open(_BytesPath(raw)) as db:
        assert db.path == str(tmp_path / "db") and db[key(1)] == val(1)
    with tinylsm.open(raw, readonly=True) as reader:
        assert reader[key(1)] == val(1)


def test_undecodable_bytes_path(tmp_path):
    """A name that is not UTF-8 round-trips through the str path
    (surrogateescape), naming the directory it was given."""
    raw = os.fsencode(tmp_path) + b"/db-\xff\xfe"
    try:
        os.mkdir(raw)
    except (OSError, UnicodeError) as exc:
        pytest.skip(f"the file system refuses a non-UTF-8 name: {exc}")
    with tinylsm.open(raw, key_size=K, value_size=V) as db:
        assert isinstance(db.path, str) and os.fsencode(db.path) == raw
        db[key(1)] = val(1)
    assert b"log" in os.listdir(raw) and b"tinylsm.meta" in os.listdir(raw)
    with tinylsm.open(os.fsdecode(raw)) as db:  # the same store, by its str name
        assert db[key(1)] == val(1)


def test_path_of_wrong_type(tmp_path):
    with pytest.raises(TypeError, match="int"):
        tinylsm.open(3, key_size=K, value_size=V)
