"""The public API of the store: mapping behaviour, errors, lifecycle, threads."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path

import pytest

import tinylsm

K, V = 8, 8


def key(i: int) -> bytes:
    return i.to_bytes(K, "big")


def val(i: int) -> bytes:
    return i.to_bytes(V, "little")


def snapshot(path: Path) -> dict:
    """Every file under ``path`` with its bytes, to prove nothing changed."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture
def db(tmp_path):
    store = tinylsm.open(tmp_path / "db", key_size=K, value_size=V)
    yield store
    store.close()


def test_public_names_are_pinned():
    """Exactly these names: an addition or a loss is a decision, not an accident."""
    assert sorted(tinylsm.__all__) == sorted([
        "BACKEND", "ClosedError", "CompactionError", "Config", "CorruptionError", "Error",
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


@pytest.mark.parametrize("bad,exc,message", [
    ("abcdefgh", TypeError, "key: expected a bytes-like object, got str"),
    (12345678, TypeError, "got int"),
    (None, TypeError, "got NoneType"),
    (b"short", ValueError, "key: expected 8 bytes, got 5"),
    (b"much too long", ValueError, "expected 8 bytes, got 13"),
])
def test_bad_keys(tmp_path, bad, exc, message):
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        db[key(1)] = val(1)
        db.flush()
        before = snapshot(path)
        with pytest.raises(exc, match=message):
            db.insert(bad, val(1))
        with pytest.raises(exc, match=message):
            db.remove(bad)
        with pytest.raises(exc, match=message):
            db[bad]
        with pytest.raises(exc, match=message):
            db.get(bad)
        db.flush()
        assert snapshot(path) == before
        assert dict(db) == {key(1): val(1)}


@pytest.mark.parametrize("bad,exc,message", [
    ("abcdefgh", TypeError, "value: expected a bytes-like object, got str"),
    (5, TypeError, "got int"),
    (b"1234567", ValueError, "value: expected 8 bytes, got 7"),
])
def test_bad_values(tmp_path, bad, exc, message):
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        db.flush()
        before = snapshot(path)
        with pytest.raises(exc, match=message):
            db.insert(key(1), bad)
        with pytest.raises(exc, match=message):
            db[key(1)] = bad
        db.flush()
        assert snapshot(path) == before
        assert len(db) == 0


def test_bad_batch_item_applies_nothing(tmp_path):
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        db[key(1)] = val(1)
        db.flush()
        before = snapshot(path)
        with pytest.raises(ValueError, match="value of item 2: expected 8 bytes, got 3"):
            db.write_batch([(key(5), val(5)), (key(1), None), (key(6), b"bad")])
        with pytest.raises(TypeError, match="item 1: expected a \\(key, value_or_None\\) pair"):
            db.write_batch([(key(5), val(5)), key(6)])
        db.flush()
        assert snapshot(path) == before
        assert dict(db) == {key(1): val(1)}


def test_sizes_and_config_validation(tmp_path):
    with pytest.raises(ValueError, match="key_size: expected 1 to"):
        tinylsm.open(tmp_path / "a", key_size=0, value_size=1)
    with pytest.raises(TypeError, match="value_size: expected int, got str"):
        tinylsm.open(tmp_path / "a", key_size=1, value_size="8")
    with pytest.raises(TypeError, match="key_size and value_size are required"):
        tinylsm.open(tmp_path / "a")
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match="Config.merge_window: expected 2 to 255, got 0"):
        tinylsm.Config(merge_window=0)
    with pytest.raises(ValueError, match="Config.zstd_sstable_compression_level"):
        tinylsm.Config(zstd_sstable_compression_level=23)
    with pytest.raises(TypeError, match="Config.max_log_length: expected int, got float"):
        tinylsm.Config(max_log_length=1.5)
    with pytest.raises(TypeError, match="config: expected tinylsm.Config, got dict"):
        tinylsm.open(tmp_path / "a", key_size=1, value_size=1, config={})
    assert tinylsm.Config() == tinylsm.Config(
        max_space_amp=2, max_log_length=32 << 20, merge_ratio=3, merge_window=10,
        log_bufwriter_size=32 << 10, zstd_sstable_compression_level=3,
    )


def test_size_mismatch_on_reopen_changes_nothing(tmp_path):
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        db[key(1)] = val(1)
    before = snapshot(path)
    with pytest.raises(ValueError, match="created with key_size=8, value_size=8; "
                                         "opened with key_size=4, value_size=8"):
        tinylsm.open(path, key_size=4, value_size=8)
    assert snapshot(path) == before
    with tinylsm.open(path) as db:  # sizes come from the metadata file
        assert (db.key_size, db.value_size) == (K, V)
        assert db[key(1)] == val(1)


def test_second_opener_is_locked_out(tmp_path, db):
    with pytest.raises(tinylsm.LockedError, match="already open"):
        tinylsm.open(db.path, key_size=K, value_size=V)
    code = (
        "import sys, tinylsm\n"
        "try:\n"
        f"    tinylsm.open({db.path!r}, key_size=8, value_size=8)\n"
        "except tinylsm.LockedError as e:\n"
        "    print('locked:', e); sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 3, proc.stderr
    assert "already open" in proc.stdout
    db.close()
    tinylsm.open(db.path, key_size=K, value_size=V).close()  # the lock is released


def test_file_in_place_of_directory(tmp_path):
    path = tmp_path / "db"
    path.write_bytes(b"not a store")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        tinylsm.open(path, key_size=K, value_size=V)
    assert path.read_bytes() == b"not a store"


def test_hex_sstable_name_of_wrong_length_is_reported(tmp_path):
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        db[key(1)] = val(1)
    (path / "sstables" / "2a").write_bytes(b"")
    before = snapshot(path)
    with pytest.raises(tinylsm.CorruptionError, match="sstables/2a' is hex but not 16 lower-case"):
        tinylsm.open(path, key_size=K, value_size=V)
    assert snapshot(path) == before


def test_use_after_close(tmp_path):
    db = tinylsm.open(tmp_path / "db", key_size=K, value_size=V)
    db[key(1)] = val(1)
    db.close()
    db.close()  # idempotent
    for action in (
        lambda: db[key(1)], lambda: db.get(key(1)), lambda: key(1) in db, lambda: len(db),
        lambda: db.insert(key(1), val(1)), lambda: db.remove(key(1)), lambda: list(db),
        lambda: db.write_batch([]), lambda: db.flush(), lambda: db.stats(),
        lambda: db.compact(), lambda: list(db.range()),
    ):
        with pytest.raises(tinylsm.ClosedError, match="is closed"):
            action()


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
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=Path(__file__).resolve().parent.parent)
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


def test_iteration_during_writes_raises_runtime_error(db):
    for i in range(10):
        db[key(i)] = val(i)
    it = iter(db.items())
    next(it)
    db[key(100)] = val(100)
    with pytest.raises(RuntimeError, match="changed during iteration"):
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
    for name in ("set", "delete", "apply_records"):
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
