"""The log rollover on its own thread: writers beside it, stalls, failures,
leftovers, close.  (Crash states at each of its file operations, with
changes and flushes between its steps: test_crash.py.)"""
from __future__ import annotations

import os
import random
import sys
import threading
import time

import pytest

import tinylsm
from tinylsm import _rollover
from tinylsm._backend import codec
from tinylsm._format import log_copy_name
from tinylsm._fs import Files
from faults import Crash, FaultyFiles, abandon
from helpers import snapshot
from workload import contents, log_path, sstable_paths

K, V = 8, 8
FRAME = codec.frame_size(K, V)


def key(i: int) -> bytes:
    return i.to_bytes(K, "big")


def wait_for(predicate, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


class SlowTables(Files):
    """Real files; renaming an sstable into place first waits on ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def rename(self, src: str, dst: str) -> None:
        if src.endswith("-tmp"):
            self.gate.wait(60)
        super().rename(src, dst)


class LockedFaultyFiles(FaultyFiles):
    """FaultyFiles for several threads: one operation at a time."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mutex = threading.RLock()

    def _enter(self, *args, **kwargs):
        with self.mutex:
            return super()._enter(*args, **kwargs)

    for _name in ("open_rw", "open_ro", "create", "pwrite", "pread_all", "fsync",
                  "truncate", "size", "close", "rename", "unlink", "mkdir",
                  "listdir", "file_size", "fsync_dir", "copy_range"):
        def _locked(self, *args, _name=_name, **kwargs):
            with self.mutex:
                return getattr(FaultyFiles, _name)(self, *args, **kwargs)
        locals()[_name] = _locked
    del _name, _locked



def holds_after_reopen(db, want) -> None:
    """``db`` holds ``want``, closed and opened again too."""
    assert dict(db) == want
    db.close()
    with tinylsm.open(db.path) as again:
        assert dict(again) == want

def test_writes_go_on_while_the_table_is_written_and_the_log_stays_one_file(tmp_path):
    files = SlowTables()
    limit = 50 * FRAME
    db = tinylsm.open(tmp_path / "db", key_size=K, value_size=V, _files=files,
                      config=tinylsm.Config(max_log_length=limit, log_bufwriter_size=0))
    for i in range(60):  # past the limit: the thread starts, and waits at the rename
        db[key(i)] = key(i)
    assert wait_for(lambda: any(n.endswith("-tmp")
                                for n in os.listdir(tmp_path / "db" / "sstables")))
    for i in range(60, 90):  # writes meanwhile neither wait nor fail
        db[key(i)] = key(i)
    assert db.stats().rollovers == 0 and db.stats().write_stalls == 0
    names = sorted(os.listdir(tmp_path / "db"))
    assert names == ["log", "sstables", "tinylsm.lock", "tinylsm.meta"]
    files.gate.set()
    assert wait_for(lambda: db.stats().rollovers == 1)
    assert sorted(os.listdir(tmp_path / "db")) == ["log", "sstables", "tinylsm.lock", "tinylsm.meta"]
    assert len(sstable_paths(tmp_path / "db")) == 1
    # the new log holds what came after the rollover's start, the table the rest
    assert os.path.getsize(log_path(tmp_path / "db")) < 60 * FRAME
    want = {key(i): key(i) for i in range(90)}
    holds_after_reopen(db, want)


def test_writers_stall_at_twice_the_limit_and_the_stall_is_counted(tmp_path):
    files = SlowTables()
    limit = 40 * FRAME
    db = tinylsm.open(tmp_path / "db", key_size=K, value_size=V, _files=files,
                      config=tinylsm.Config(max_log_length=limit, log_bufwriter_size=0))
    done = threading.Event()
    lengths = []

    def writer() -> None:
        for i in range(200):
            db[key(i)] = key(i)
            lengths.append(db._log.length)
        done.set()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    # the writer stops at twice the limit while the rollover cannot finish
    assert wait_for(lambda: len(lengths) >= 80 and db._log.length >= 2 * limit, 10)
    stuck_at = len(lengths)
    time.sleep(0.3)  # the stall holds until the rollover ends, not merely begins
    assert not done.is_set() and len(lengths) == stuck_at
    assert db._log.length < 2 * limit + FRAME
    files.gate.set()
    assert done.wait(30)
    t.join(10)
    st = db.stats()
    assert st.write_stalls >= 1 and st.write_stall_seconds >= 0.2, st
    assert st.rollovers >= 1
    # while the rollover could not finish, the log stayed within twice the
    # limit (during its switch, appends are held in the buffer instead)
    assert max(lengths[:stuck_at]) < 2 * limit + FRAME, (max(lengths), stuck_at)
    assert dict(db) == {key(i): key(i) for i in range(200)}
    db.close()


def test_a_failed_rollover_is_reported_retried_and_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(_rollover, "RETRY_DELAYS", (0.05,))
    files = FaultyFiles()
    files.fail("create", when=lambda c: c.path.endswith("-tmp"), times=2)
    limit = 30 * FRAME
    db = tinylsm.open(tmp_path / "db", key_size=K, value_size=V, _files=files,
                      config=tinylsm.Config(max_log_length=limit, log_bufwriter_size=0))
    for i in range(40):
        db[key(i)] = key(i)
    assert wait_for(lambda: db.stats().rollover_error is not None
                    or db.stats().rollovers == 1)
    for i in range(40, 100):  # no stall while the rollover fails: the log grows
        db[key(i)] = key(i)
    # the success clears the error
    assert wait_for(lambda: db.stats().rollovers >= 1 and db.stats().rollover_error is None)
    assert files.injected == 2
    want = {key(i): key(i) for i in range(100)}
    holds_after_reopen(db, want)


def test_a_failed_switch_keeps_the_table_and_redoes_only_the_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(_rollover, "RETRY_DELAYS", (0.05,))
    files = FaultyFiles()
    files.fail("rename", when=lambda c: os.path.basename(c.path).startswith("tinylsm.log-from"))
    limit = 30 * FRAME
    db = tinylsm.open(tmp_path / "db", key_size=K, value_size=V, _files=files,
                      config=tinylsm.Config(max_log_length=limit, log_bufwriter_size=0))
    for i in range(40):
        db[key(i)] = key(i)
    assert wait_for(lambda: db.stats().rollovers == 1)
    assert files.injected == 1
    assert len(sstable_paths(tmp_path / "db")) == 1  # the table was not written twice
    assert not [n for n in os.listdir(tmp_path / "db") if n.startswith("tinylsm.log-from")]
    want = {key(i): key(i) for i in range(40)}
    holds_after_reopen(db, want)


def test_a_switch_whose_directory_fsync_fails_acknowledges_nothing_after(tmp_path):
    """The rename over ``log`` happened but may not survive a power cut: the
    log refuses writes and flushes from then on, and nothing acknowledged
    before is lost."""
    files = FaultyFiles()
    limit = 30 * FRAME
    path = tmp_path / "db"
    db = tinylsm.open(path, key_size=K, value_size=V, _files=files,
                      config=tinylsm.Config(max_log_length=limit, log_bufwriter_size=0))
    files.fail("fsync_dir", code=5, when=lambda c: c.path.rstrip("/").endswith("db"))
    written = []
    for i in range(40):  # past the limit: a rollover (every write handed to the OS)
        try:
            db[key(i)] = key(i)
        except tinylsm.Error as exc:  # the switch failed already
            assert "refuses writes" in str(exc)
            break
        written.append(i)
    assert wait_for(lambda: db.stats().rollover_error is not None)
    assert files.injected == 1
    assert "Input/output error" in db.stats().rollover_error
    with pytest.raises(tinylsm.Error, match="refuses writes"):
        db[key(99)] = key(99)
    with pytest.raises(tinylsm.Error, match="refuses writes"):
        db.write_batch([(key(98), key(98))])
    with pytest.raises(tinylsm.LogFailedError, match="broke earlier"):
        db.close()  # its writes may not survive a power cut: close says so
    with tinylsm.open(path, key_size=K, value_size=V) as again:
        assert dict(again) == {key(i): key(i) for i in written}
    assert len(written) > 30  # the rollover started past the limit


def test_appends_held_by_a_switch_whose_directory_fsync_fails_reach_the_log(tmp_path):
    """Writes that land while the switch holds appends, and return, are in the
    map: when the switch then fails after its rename they must still reach
    the file now named ``log``, or a reopen would lose writes that returned."""
    files = FaultyFiles()
    limit = 30 * FRAME
    path = tmp_path / "db"
    in_switch, go_on = threading.Event(), threading.Event()

    def hold_then_fail(call) -> bool:
        if not call.path.rstrip("/").endswith("db"):
            return False
        in_switch.set()
        go_on.wait(30)
        return True

    db = tinylsm.open(path, key_size=K, value_size=V, _files=files,
                      config=tinylsm.Config(max_log_length=limit, log_bufwriter_size=0))
    files.fail("fsync_dir", code=5, when=hold_then_fail)
    for i in range(32):  # past the limit (seen by the next write): a rollover
        db[key(i)] = key(i)
    assert in_switch.wait(30)
    assert db._log.held  # the directory fsync comes while appends are held
    for i in range(32, 37):  # taken into the held buffer, and returned
        db[key(i)] = key(i)
    go_on.set()
    assert wait_for(lambda: db.stats().rollover_error is not None)
    assert files.injected == 1
    with pytest.raises(tinylsm.Error, match="refuses writes"):
        db[key(99)] = key(99)
    want = {key(i): key(i) for i in range(37)}
    assert dict(db) == want
    with pytest.raises(tinylsm.LogFailedError, match="broke earlier"):
        db.close()
    with tinylsm.open(path, key_size=K, value_size=V) as again:
        assert dict(again) == want


def test_a_batch_past_the_limit_lands_whole_then_rolls_over(tmp_path):
    limit = 10 * FRAME
    db = tinylsm.open(tmp_path / "db", key_size=K, value_size=V,
                      config=tinylsm.Config(max_log_length=limit))
    batch = [(key(i), key(i)) for i in range(500)]  # 50 times the limit
    db.write_batch(batch)
    assert wait_for(lambda: db.stats().rollovers == 1)
    assert db.stats().write_stalls == 0
    assert dict(db) == dict(batch)
    db.close()
    with tinylsm.open(tmp_path / "db", key_size=K, value_size=V) as again:
        assert dict(again) == dict(batch)
        assert again.stats().log_bytes == 0


def test_close_during_a_rollover_gives_it_up_and_leaves_no_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(_rollover, "CATCH_UP_BYTES", 0)
    entered = threading.Event()
    release = threading.Event()
    real = _rollover.Rollover._catch_up

    def slow_catch_up(self, job):
        real(self, job)
        entered.set()
        release.wait(5)

    monkeypatch.setattr(_rollover.Rollover, "_catch_up", slow_catch_up)
    limit = 20 * FRAME
    path = tmp_path / "db"
    db = tinylsm.open(path, key_size=K, value_size=V,
                      config=tinylsm.Config(max_log_length=limit, log_bufwriter_size=0))
    for i in range(30):
        db[key(i)] = key(i)
    assert entered.wait(10)
    assert any(n.startswith("tinylsm.log-from") for n in os.listdir(path))
    closer = threading.Thread(target=db.close)
    closer.start()
    time.sleep(0.05)
    release.set()
    closer.join(10)
    assert not closer.is_alive()
    after = snapshot(path)
    assert not [n for n in os.listdir(path) if n.startswith("tinylsm.log-from")]
    time.sleep(0.1)
    assert snapshot(path) == after  # nothing touched after close returned
    with tinylsm.open(path, key_size=K, value_size=V) as again:
        assert dict(again) == {key(i): key(i) for i in range(30)}


@pytest.mark.parametrize("same", [True, False], ids=["equal", "differs"])
def test_a_leftover_copy_is_deleted_only_if_the_log_holds_its_bytes(tmp_path, same):
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=K, value_size=V,
                      config=tinylsm.Config(log_bufwriter_size=0)) as db:
        for i in range(20):
            db[key(i)] = key(i)
    data = open(log_path(path), "rb").read()
    start = 5 * FRAME
    copy = bytearray(data[start:])
    if not same:
        copy[-1] ^= 1
    with open(path / log_copy_name(start), "wb") as f:
        f.write(copy)
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        assert dict(db) == {key(i): key(i) for i in range(20)}
        st = db.stats()
    names = sorted(os.listdir(path))
    assert log_copy_name(start) not in names
    kept = [n for n in names if n.startswith("tinylsm.kept-")]
    if same:
        assert kept == [] and st.kept_files == 0
    else:
        assert kept == [f"tinylsm.kept-000001-at-{start}"] and st.kept_files == 1
        assert open(path / kept[0], "rb").read() == bytes(copy)  # every byte kept


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("seed", range(32))
def test_threads_flushing_across_rollovers_lose_nothing_acknowledged(tmp_path, seed):
    """Writers and flushers on several threads, the rollover thread switching
    the log under them, until the "process dies" at a random file operation:
    the state a power cut leaves then holds every change whose flush
    returned (group commit across the switch included)."""
    rng = random.Random(seed)
    files = LockedFaultyFiles(root=str(tmp_path / "db"))
    db = tinylsm.open(tmp_path / "db", key_size=K, value_size=V, _files=files,
                      config=tinylsm.Config(max_log_length=64 * FRAME,
                                            log_bufwriter_size=rng.choice([0, 5 * FRAME])))
    acked, issued = set(), set()
    lock = threading.Lock()

    def worker(t: int) -> None:
        mine = []
        try:
            for i in range(100_000):
                k = key(t << 32 | i)
                with lock:
                    issued.add(k)
                db[k] = k
                mine.append(k)
                if rng.random() < 0.3:
                    db.flush()
                    with lock:
                        acked.update(mine)
                    mine = []
        except (Crash, tinylsm.Error, OSError):
            return

    files.crash_at(rng.randrange(200, 1500))
    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    assert files.dead, "the crash point was never reached"
    abandon(db)
    power = files.power_cut(str(tmp_path / "power"))
    with tinylsm.open(power, key_size=K, value_size=V) as again:
        got = contents(again)
    assert acked, "no flush returned before the crash: the test checked nothing"
    assert acked <= set(got), f"{len(acked - set(got))} acknowledged keys lost"
    assert set(got) <= issued and all(v == k for k, v in got.items())


def test_memory_a_rollover_freed_is_given_back_once_it_ends(tmp_path, monkeypatch):
    from tinylsm import _memory

    calls = []
    real = _memory.trim
    monkeypatch.setattr(_memory, "trim", lambda: calls.append(threading.current_thread().name)
                        or real())
    db = tinylsm.open(tmp_path / "db", key_size=K, value_size=V,
                      config=tinylsm.Config(max_log_length=50 * FRAME, log_bufwriter_size=0))
    try:
        assert "tinylsm-rollover" not in calls  # no rollover yet: nothing to give back
        for i in range(60):
            db[key(i)] = key(i)
        assert wait_for(lambda: db.stats().rollovers == 1)
        assert wait_for(lambda: "tinylsm-rollover" in calls)
        assert threading.current_thread().name not in calls  # never on a writer's time
    finally:
        db.close()
    # glibc (Linux, where this suite runs) has malloc_trim
    assert real() is sys.platform.startswith("linux")
