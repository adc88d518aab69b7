"""A lock that cannot be sidestepped, a store that cannot be copied, and one
rule for keys (issue 10, items 4, 5, 6 and 10).

An operator deleting or replacing ``tinylsm.lock``, a forked child holding
inherited descriptors, ``copy.copy`` of a store: none of them may let two
writers into one directory or point a store's writes at another file.
"""
from __future__ import annotations

import array
import copy
import os
import pickle
import subprocess
import sys
import threading
import time
from typing import List
from pathlib import Path

import pytest

import tinylsm

from helpers import child_env

K, V = 8, 8


def key(i: int) -> bytes:
    return i.to_bytes(K, "big")


def val(i: int) -> bytes:
    return (i * 3).to_bytes(V, "little")


@pytest.fixture
def db(tmp_path):
    store = tinylsm.open(tmp_path / "db", key_size=K, value_size=V)
    yield store
    store.close()


def _second_writer_in_a_child(path: Path) -> subprocess.CompletedProcess:
    env = child_env()
    code = ("import sys, tinylsm\n"
            "try:\n"
            "    tinylsm.open(sys.argv[1], key_size=8, value_size=8).close()\n"
            "except tinylsm.LockedError as exc:\n"
            "    print(exc); sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", code, str(path)], env=env,
                          capture_output=True, text=True, timeout=60)


# -- item 5: deleting or replacing the lock file -----------------------------------


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_lock_file_gone_still_keeps_a_second_writer_out(db, how):
    path = Path(db.path)
    os.unlink(path / "tinylsm.lock")
    if how == "replaced":
        (path / "tinylsm.lock").write_bytes(b"")
    with pytest.raises(tinylsm.LockedError, match="already open"):
        tinylsm.open(path, key_size=K, value_size=V)
    with tinylsm.open(path, readonly=True) as reader:  # the writer is still seen
        assert reader.live
    child = _second_writer_in_a_child(path)
    assert child.returncode == 3, child.stderr
    # and the first writer's flushed changes are all there afterwards
    db[key(1)] = val(1)
    db.flush()
    db.close()
    with tinylsm.open(path) as again:
        assert again[key(1)] == val(1)


def test_reader_after_the_lock_file_was_deleted(tmp_path):
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=K, value_size=V) as w:
        w[key(1)] = val(1)
    os.unlink(path / "tinylsm.lock")
    with tinylsm.open(path, readonly=True) as r1, tinylsm.open(path, readonly=True) as r2:
        assert r1[key(1)] == r2[key(1)] == val(1)
        assert not r1.live
        assert not (path / "tinylsm.lock").exists()  # a reader creates nothing
        with tinylsm.open(path, key_size=K, value_size=V) as w:  # a writer beside them
            assert r1.live and r2.live
            w[key(2)] = val(2)
            w.flush()
            assert r2.refresh() and r2[key(2)] == val(2)


# -- item 4: a forked child and the lock ----------------------------------------------


def _wait_line(fd: int) -> bytes:
    out = b""
    while not out.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        out += chunk
    return out


def test_forked_child_gives_the_lock_back_and_can_open_after_the_parent(db):
    """The child drops its inherited descriptors at once: the parent can
    close and reopen its store while the child lives, and the child can
    open the store once the parent has closed it."""
    path = Path(db.path)
    db[key(1)] = val(1)
    db.flush()
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 10
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            try:
                tinylsm.open(path, key_size=K, value_size=V)
                code = 11  # got in while the parent still had it open
            except tinylsm.LockedError:
                os.write(to_parent_w, b"locked out\n")
                _wait_line(to_child_r)  # the parent has closed its store
                with tinylsm.open(path, key_size=K, value_size=V) as mine:
                    assert mine[key(1)] == val(1)
                    mine[key(2)] = val(2)
                code = 0
        except BaseException:  # noqa: BLE001 - reported through the exit code
            code = 12
        os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        assert _wait_line(to_parent_r) == b"locked out\n"
        db.close()
        # the child still lives: the parent can take its store again at once
        with tinylsm.open(path, key_size=K, value_size=V) as again:
            assert again[key(1)] == val(1)
        os.write(to_child_w, b"closed\n")
    finally:
        os.close(to_child_w)  # a child still waiting sees the end and exits
        os.close(to_parent_r)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    with tinylsm.open(path) as after:
        assert after[key(2)] == val(2)


def test_descriptors_are_close_on_exec(db):
    """A program run by the store's process inherits none of its files."""
    fds = sorted(int(n) for n in os.listdir(f"/proc/{os.getpid()}/fd"))
    store_fds = [fd for fd in fds
                 if os.path.realpath(f"/proc/self/fd/{fd}").startswith(db.path)]
    assert len(store_fds) >= 3  # the directory, the lock file, the log
    import fcntl
    for fd in store_fds:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, fd


# -- item 6: copying a store ---------------------------------------------------------


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_copying_a_store_is_refused(db, how):
    db[key(1)] = val(1)
    do = {"copy": copy.copy, "deepcopy": copy.deepcopy,
          "pickle": lambda x: pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL)}[how]
    with pytest.raises(TypeError, match="cannot be copied or pickled"):
        do(db)
    import gc
    gc.collect()  # no half-made copy may close the original's files
    db[key(2)] = val(2)
    db.flush()
    path = db.path
    db.close()
    with tinylsm.open(path) as again:
        assert dict(again.items()) == {key(1): val(1), key(2): val(2)}


# -- item 10: one rule for keys, hit or miss -----------------------------------------


def test_any_bytes_like_key_hit_or_miss(db):
    db[key(1)] = val(1)
    present = array.array("B", key(1))
    absent = array.array("B", key(2))
    assert db[present] == val(1) and db.get(present) == val(1) and present in db
    assert db.get(absent) is None and absent not in db
    with pytest.raises(KeyError):
        db[absent]
    for wrong in (array.array("B", b"123"), array.array("I", [1, 2, 3])):
        for op in (db.get, db.__contains__, db.__getitem__, db.remove):
            with pytest.raises(ValueError, match=r"key: expected 8 bytes, got"):
                op(wrong)
    db.insert(array.array("B", key(3)), memoryview(val(3)))
    db.write_batch([(array.array("B", key(4)), array.array("B", val(4)))])
    assert db[key(3)] == val(3) and db[key(4)] == val(4)
    assert db.remove(array.array("B", key(3))) == val(3)
    for not_bytes in ("abcdefgh", 12345678, None, [1] * 8):
        for op in (db.get, db.__contains__, db.__getitem__, db.remove):
            with pytest.raises(TypeError, match="key: expected a bytes-like object"):
                op(not_bytes)


# -- every public method racing fork ---------------------------------------------------

FORK_METHODS = {
    "insert": lambda db, i: db.insert(key(i), val(i)),
    "write_batch": lambda db, i: db.write_batch([(key(i), val(i)), (key(i + 1), None)]),
    "write_packed": lambda db, i: db.write_packed(key(i) + val(i), removals=key(i + 1)),
    "flush": lambda db, i: (db.insert(key(i), val(i)), db.flush()),
    "compact": lambda db, i: (db.insert(key(i), val(i)), db.compact()),
    "get": lambda db, i: db.get(key(i % 50)),
    "items": lambda db, i: sum(1 for _ in db.items()),
    "export": lambda db, i: sum(len(chunk) for chunk in db.export(chunk_records=7)),
    "stats": lambda db, i: db.stats(),
}


def _child_checks(db, path: Path) -> int:
    """In a forked child: the exit status, 0 when the inherited store is
    unusable and the parent's lock keeps the child out."""
    try:
        db.get(key(0))
        return 11
    except tinylsm.ClosedError:
        pass
    try:
        tinylsm.open(path).close()
        return 12
    except tinylsm.LockedError:
        return 0


@pytest.mark.parametrize("method", sorted(FORK_METHODS))
def test_method_racing_fork(tmp_path, method, record_property):
    """A thread calls ``method`` again and again while the main thread forks.
    Each child finds the store unusable (ClosedError), is refused as a second
    writer while the parent holds it, and exits; the parent's calls go on,
    and after its close() every write that returned is there."""
    path = tmp_path / "db"
    db = tinylsm.open(path, key_size=K, value_size=V,
                      config=tinylsm.Config(max_log_length=4096, merge_window=2))
    for i in range(50):
        db[key(i)] = val(i)
    stop = threading.Event()
    errors: List[BaseException] = []
    done = [0]

    def hammer() -> None:
        i = 1000
        try:
            while not stop.is_set():
                FORK_METHODS[method](db, i)
                done[0] = i
                i += 2
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=hammer)
    thread.start()
    forks = 0
    try:
        for _ in range(6):
            time.sleep(0.02)
            pid = os.fork()
            if pid == 0:
                status = 13
                try:
                    status = _child_checks(db, path)
                finally:
                    os._exit(status)
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (method, status)
            forks += 1
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors
    last = done[0]
    if method in ("insert", "flush", "write_batch"):
        # the forks raced the rollover thread too (a 4 KiB log limit)
        assert db.stats().rollovers > 0, method
    db.close()
    with tinylsm.open(path) as again:
        if method in ("insert", "flush", "compact", "write_batch") and last:
            assert again[key(last)] == val(last)
        for i in range(50):
            assert again[key(i)] == val(i)
    record_property(f"fork_races_{method}", forks)
