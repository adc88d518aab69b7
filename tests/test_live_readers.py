"""Read-only opens beside a writer: the snapshot guarantee, proven by
interleaving a reader's open with every file operation of the writer's
flush, rollover and merge, and the writer's steps with every file
operation of a reader's open (see ``tinylsm/_gate.py``).

The guarantee checked each time: the reader holds the map after some prefix
of the writer's changes (in log order), and that prefix includes every
change flushed before the reader began opening.  A reader kept open and
refreshed moves forward only.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Dict, List, Optional

import pytest

import tinylsm
from tinylsm import _worker
from tinylsm._backend import codec
from tinylsm._fs import Files

from faults import OPS, report

K, V = 4, 4
#: Small enough that a few dozen changes roll the log over.
CONFIG = tinylsm.Config(max_log_length=600, log_bufwriter_size=0, merge_window=2,
                        merge_ratio=255)


class HookFiles(Files):
    """Real file operations, each preceded by ``hook(op, path)``."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Callable[[str, str], None] = lambda op, path: None


def _hooked(op: str):
    def method(self, *args, **kwargs):
        self.hook(op, str(args[0]) if args and isinstance(args[0], str) else op)
        return getattr(Files, op)(self, *args, **kwargs)
    method.__name__ = op
    return method


for _op in OPS + ("copy_range",):
    setattr(HookFiles, _op, _hooked(_op))


class Model:
    """The writer's changes in log order: ``states[i]`` is the map after
    the first ``i`` changes; ``flushed`` how many a ``flush()`` made durable."""

    def __init__(self) -> None:
        self.states: List[Dict[bytes, bytes]] = [{}]
        self.flushed = 0

    def change(self, key: bytes, value: Optional[bytes]) -> None:
        state = dict(self.states[-1])
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
        self.states.append(state)

    def prefixes(self, got: Dict[bytes, bytes], floor: int) -> List[int]:
        """The prefixes of at least ``floor`` changes whose map is ``got``."""
        return [i for i in range(floor, len(self.states)) if self.states[i] == got]


def key(i: int) -> bytes:
    return i.to_bytes(K, "big")


class Writer:
    """A writable store without background threads, driven step by step,
    with its changes in a ``Model``."""

    def __init__(self, path: str, files: Files) -> None:
        self.db = tinylsm.open(path, key_size=K, value_size=V, config=CONFIG, _files=files)
        self.model = Model()
        self.n = 0

    def put(self, count: int = 1) -> None:
        for _ in range(count):
            self.n += 1
            k, v = key(self.n % 13), self.n.to_bytes(V, "big")
            if self.n % 5 == 0:
                self.db.remove(k)
                self.model.change(k, None)
            else:
                self.db[k] = v
                self.model.change(k, v)

    def flush(self) -> None:
        pending = len(self.model.states) - 1
        self.db.flush()
        self.model.flushed = pending

    def roll(self) -> None:
        self.db._rollover.roll(everything=True)

    def merge(self) -> None:
        self.db._compactor.compact_all()


@pytest.fixture(autouse=True)
def no_threads(monkeypatch):
    """Rollovers and merges run when the test says, in its thread."""
    monkeypatch.setattr(_worker.Worker, "start", lambda self: None)


def closed_store(path: str, changes: int) -> Writer:
    """A store of ``changes`` changes, flushed and closed (its Writer's
    model says what they were)."""
    w = Writer(path, Files())
    w.put(changes)
    w.flush()
    w.db.close()
    return w


def read_snapshot(path: str, files: Optional[Files] = None) -> Dict[bytes, bytes]:
    with tinylsm.open(path, readonly=True, _files=files) as db:
        assert db.live
        return dict(db.items())


def check(model: Model, got: Dict[bytes, bytes], floor: int) -> List[int]:
    found = model.prefixes(got, floor)
    assert found, (f"reader's map ({len(got)} keys) is not the map after any prefix of "
                   f"at least {floor} of the writer's {len(model.states) - 1} changes")
    return found


def gate_free(path: str) -> bool:
    """Whether a reader could take the gate now (no removing step under way)."""
    import fcntl
    fd = os.open(os.path.join(path, "sstables"), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


WRITER_STEPS = {
    "flush": lambda w: (w.put(3), w.flush()),
    "rollover": lambda w: (w.put(2), w.roll()),
    "merge": lambda w: w.merge(),
    "recovery": None,  # reopening after a torn write: the log is cut
}


def _prepare(tmp_path, files: Files) -> Writer:
    """A store with two sstables, a log of changes, and a flush behind it."""
    w = Writer(str(tmp_path / "db"), files)
    w.put(20)
    w.flush()
    w.roll()
    w.put(20)
    w.roll()
    w.put(6)
    w.flush()
    w.put(3)  # written out (no buffer), not flushed
    assert len(w.db._compactor.tables) >= 2
    return w


@pytest.mark.parametrize("step", ["flush", "rollover", "merge"])
def test_a_reader_opening_at_every_file_operation_of_the_writer(tmp_path, step,
                                                               record_property):
    """Writer paused before each of its file operations in a step; a reader
    opens then (in a thread, if the writer holds the gate at that point,
    finishing once the step is done).  A reader opened before it all is
    refreshed at every point and must only move forward."""
    files = HookFiles()
    w = _prepare(tmp_path, files)
    path = w.db.path
    pending: List[threading.Thread] = []
    results: List[tuple] = []
    follower = tinylsm.open(path, readonly=True)
    follow_floor = [check(w.model, dict(follower.items()), w.model.flushed)[0]]
    points = [0]

    def at_op(op: str, _path: str) -> None:
        points[0] += 1
        floor = w.model.flushed

        def read() -> None:
            results.append((read_snapshot(path), floor))

        if gate_free(path):
            read()
            follower.refresh()
            follow_floor[0] = check(w.model, dict(follower.items()), max(floor, follow_floor[0]))[0]
        else:  # inside a removing step: the reader waits for its end
            t = threading.Thread(target=read)
            t.start()
            pending.append(t)

    files.hook = at_op
    WRITER_STEPS[step](w)
    files.hook = lambda op, p: None
    for t in pending:
        t.join(10)
        assert not t.is_alive(), "a reader stayed blocked after the writer's step"
    for got, floor in results:
        check(w.model, got, floor)
    assert points[0] >= 3 and len(results) == points[0]
    report(record_property, f"reader_opens_during_{step}", points[0])
    report(record_property, f"reader_opens_waiting_for_{step}", len(pending))
    follower.refresh()
    check(w.model, dict(follower.items()), max(w.model.flushed, follow_floor[0]))
    follower.close()
    w.db.close()
    assert read_snapshot_after_close(path) == w.model.states[-1]


def read_snapshot_after_close(path: str) -> Dict[bytes, bytes]:
    with tinylsm.open(path, readonly=True) as db:
        assert not db.live
        return dict(db.items())


def _reader_ops(path: str) -> int:
    files = HookFiles()
    count = [0]
    files.hook = lambda op, p: count.__setitem__(0, count[0] + 1)
    read_snapshot(path, files)
    return count[0]


@pytest.mark.parametrize("step", ["flush", "rollover", "merge"])
def test_a_writer_step_at_every_file_operation_of_a_reader(tmp_path, step,
                                                          record_property):
    """Reader paused before each of its file operations while opening; the
    writer runs a whole step then (in a thread: while the reader holds the
    gate the step's removing part waits for it)."""
    probe = _prepare(tmp_path / "probe", Files())
    n_ops = _reader_ops(probe.db.path)
    probe.db.close()
    assert n_ops >= 4
    for at in range(1, n_ops + 1):
        w = _prepare(tmp_path / f"at{at}", Files())
        floor = w.model.flushed
        files = HookFiles()
        seen = [0]
        done = threading.Event()
        errors: List[BaseException] = []

        def run_step() -> None:
            try:
                WRITER_STEPS[step](w)
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                done.set()

        def at_op(op: str, _path: str, at=at) -> None:
            seen[0] += 1
            if seen[0] == at:
                t = threading.Thread(target=run_step)
                t.start()
                done.wait(0.3)  # finished, or waiting for the gate we hold

        files.hook = at_op
        got = read_snapshot(w.db.path, files)
        assert done.wait(10) and not errors, errors
        check(w.model, got, floor)
        w.db.close()
    report(record_property, f"{step}_at_reader_operations", n_ops)


def test_a_reader_beside_the_writers_recovery_cutting_a_torn_log(tmp_path):
    """A writer reopening a store whose log ends in a torn frame cuts it by
    replacing the file: a reader that opened the old log before reads its
    bytes unchanged, and one opening at each step sees a prefix."""
    path = str(tmp_path / "db")
    w = closed_store(path, 10)
    log_path = os.path.join(path, "log")
    with open(log_path, "ab") as f:
        f.write(b"\x01\x02\x03")  # a torn frame
    early = tinylsm.open(path, readonly=True)
    before = os.stat(log_path).st_ino
    files = HookFiles()
    snapshots: List[Dict[bytes, bytes]] = []
    pending: List[threading.Thread] = []

    def at_op(op: str, _path: str) -> None:
        def read() -> None:
            with tinylsm.open(path, readonly=True) as db:
                snapshots.append(dict(db.items()))
        if gate_free(path):
            read()
        else:
            pending.append(threading.Thread(target=read))
            pending[-1].start()

    files.hook = at_op
    db = tinylsm.open(path, config=CONFIG, _files=files)
    files.hook = lambda op, p: None
    for t in pending:
        t.join(10)
    assert os.stat(log_path).st_ino != before, "the torn log was cut in place"
    assert os.path.getsize(log_path) % codec.frame_size(K, V) == 0
    assert len(snapshots) > 5 and pending, "no reader opened during the log's replacement"
    for got in snapshots:
        assert got == w.model.states[-1]
    assert early.refresh() is True  # the log was replaced: read again
    assert dict(early.items()) == w.model.states[-1]
    db[key(1)] = b"new!"
    assert early.refresh() is True  # the same log grew: only its tail read
    assert early[key(1)] == b"new!"
    assert early.refresh() is False
    early.close()
    db.close()


# -- reader processes beside a writer process under load ---------------------------

#: Keys the load writer cycles over, and the seconds it runs (``TINYLSM_TORTURE``: 10x).
LOAD_KEYS = 1500
LOAD_SECONDS_CI, LOAD_SECONDS_TORTURE = 3.0, 30.0

# Change i sets key (i * 7919) % LOAD_KEYS to i, or removes it when i % 6 == 0;
# the map after n changes is then known without replaying them.
LOAD_WRITER = """
import os, sys, tinylsm
path, nkeys = sys.argv[1], int(sys.argv[2])
config = tinylsm.Config(max_log_length=32 * 1024, merge_window=3)
def note(n):
    with open(path + ".flushed.tmp", "w") as f:
        f.write(str(n))
    os.replace(path + ".flushed.tmp", path + ".flushed")
with tinylsm.open(path, key_size=8, value_size=8, config=config) as db:
    note(0)
    open(path + ".started", "w").close()
    i = 0
    while not os.path.exists(path + ".stop"):
        for _ in range(500):
            i += 1
            k = ((i * 7919) % nkeys).to_bytes(8, "big")
            if i % 6 == 0:
                db.remove(k)
            else:
                db[k] = i.to_bytes(8, "big")
        db.flush()
        note(i)
    st = db.stats()
    print(i, st.rollovers, st.merges)
"""

LOAD_READER = """
import os, sys, tinylsm
path, nkeys = sys.argv[1], int(sys.argv[2])
inverse = pow(7919, -1, nkeys)
first = [(k * inverse) % nkeys or nkeys for k in range(nkeys)]  # first change of key k

def expected(key, n):
    c = first[key]
    if n < c:
        return None
    last = c + (n - c) // nkeys * nkeys
    return None if last % 6 == 0 else last.to_bytes(8, "big")

def prefix_of(got, floor):
    # the number of changes n >= floor whose map is got, or None
    top = max([int.from_bytes(v, "big") for v in got.values()] + [0])
    for n in range(max(top, floor), top + 7):
        if all(got.get(k.to_bytes(8, "big")) == expected(k, n) for k in range(nkeys)) \
                and len(got) == sum(expected(k, n) is not None for k in range(nkeys)):
            return n
    return None

def flushed():
    with open(path + ".flushed") as f:
        return int(f.read())

opens = refreshes = 0
follower = None
last = 0
while True:
    done = os.path.exists(path + ".done")
    floor = flushed()
    with tinylsm.open(path, readonly=True) as db:
        n = prefix_of(dict(db.items()), floor)
    opens += 1
    if n is None:
        print("BAD open, floor", floor); sys.exit(1)
    if follower is None:
        follower = tinylsm.open(path, readonly=True)
    else:
        floor = flushed()
        follower.refresh()
        refreshes += 1
        m = prefix_of(dict(follower.items()), max(floor, last))
        if m is None:
            print("BAD refresh, floor", floor, "before", last); sys.exit(1)
        last = m
    if done:
        break
follower.close()
print(opens, refreshes)
"""


def test_reader_processes_beside_a_writer_process_under_load(tmp_path, record_property):
    """Two reader processes open the store again and again (and refresh a
    store kept open) while a writer process changes it, flushes, rolls the
    log over and merges in the background.  Each open must hold the map
    after a prefix of the writer's changes that includes every flushed one;
    each refresh must move forward only."""
    import subprocess
    import sys
    import time

    from helpers import child_env

    torture = os.environ.get("TINYLSM_TORTURE", "") not in ("", "0")
    seconds = LOAD_SECONDS_TORTURE if torture else LOAD_SECONDS_CI
    path = str(tmp_path / "db")
    env = child_env()
    writer = subprocess.Popen([sys.executable, "-c", LOAD_WRITER, path, str(LOAD_KEYS)],
                              env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(path + ".started"):
        assert writer.poll() is None and time.monotonic() < deadline, "writer did not start"
        time.sleep(0.01)
    readers = [subprocess.Popen([sys.executable, "-c", LOAD_READER, path, str(LOAD_KEYS)],
                                env=env, stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    time.sleep(seconds)
    open(path + ".stop", "w").close()
    out, _ = writer.communicate(timeout=600)
    assert writer.returncode == 0
    changes, rollovers, merges = map(int, out.split())
    open(path + ".done", "w").close()
    opens = refreshes = 0
    for r in readers:
        rout, _ = r.communicate(timeout=600)
        assert r.returncode == 0, rout
        o, f = map(int, rout.split())
        opens, refreshes = opens + o, refreshes + f
    assert rollovers >= 5 and merges >= 1, (rollovers, merges)
    assert opens >= 10, opens
    report(record_property, "live_reader_opens", opens)
    report(record_property, "live_reader_refreshes", refreshes)
    report(record_property, "live_writer_changes", changes)
    report(record_property, "live_writer_rollovers", rollovers)
    report(record_property, "live_writer_merges", merges)


def test_refresh_racing_close(tmp_path):
    """refresh() from threads while another thread closes the reader: each
    call returns or raises ClosedError, nothing else, and the reader's log
    descriptor is closed once close() returns."""
    path = str(tmp_path / "db")
    w = Writer(path, Files())
    for round_ in range(8):
        reader = tinylsm.open(path, readonly=True)
        errors: List[BaseException] = []
        start = threading.Barrier(3)

        def refresher() -> None:
            start.wait()
            try:
                for _ in range(200):
                    w.put(1)
                    reader.refresh()
            except tinylsm.ClosedError:
                pass
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=refresher) for _ in range(2)]
        for t in threads:
            t.start()
        start.wait()
        if round_ % 2:
            w.roll()  # the next refresh reads the store again
        reader.close()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert reader._log is None
        with pytest.raises(tinylsm.ClosedError):
            reader.refresh()
    w.db.close()


def test_a_frame_read_half_written_is_told_from_damage(tmp_path):
    """A reader beside a live writer may read a frame being written over
    zeros half-copied; read again, it is whole (``in_flight``), where a
    damaged frame stays damaged."""
    from tinylsm import _recovery
    from tinylsm._fs import DEFAULT

    path = str(tmp_path / "db")
    closed_store(path, 6)
    log_path = os.path.join(path, "log")
    frame = codec.frame_size(K, V)
    with open(log_path, "rb") as f:
        whole = f.read()
    last = len(whole) - frame
    fd = os.open(log_path, os.O_RDWR)
    try:
        os.pwrite(fd, whole[last:last + frame // 2] + bytes(frame - frame // 2), last)
        plan = _recovery.plan_log(DEFAULT, fd, K, V)
        assert plan.scan.end == last
        assert not _recovery.in_flight(DEFAULT, fd, K, V, plan.scan)  # still damaged
        os.pwrite(fd, whole[last:], last)  # the write completes
        assert _recovery.in_flight(DEFAULT, fd, K, V, plan.scan)
    finally:
        os.close(fd)
