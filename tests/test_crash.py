"""Crash at every file operation of a flush, a compaction and a recovery.

Each sweep runs the same action again and again on a fresh copy of the same
store, with the process "dying" at file operation 1, 2, 3, ... of it (see
``faults.FaultyFiles.crash_at``), until the action runs to the end.  For
every crash point two states are reopened with the plain engine:

* the directory as the dead process left it (a process crash: everything
  handed to the OS is there), and
* the state a power cut at that moment would leave (``power_cut``): file
  data not fsynced dropped, directory changes not fsynced undone.

Both must recover the model after some prefix of the issued operations that
holds every acknowledged one (``flush``, ``compact`` and ``close`` acknowledge
what came before them), and the recovered store must go on working: a
write, a flush, a full compaction and another reopen must keep the map.

Writes are also cut in the middle (half, and one byte) at every ``pwrite``.
The background threads are not started (``Worker.start`` is patched): merges
run only where the action asks, and log rollovers in the writing thread, so
every run does the same operations in the same order.
"""
from __future__ import annotations

import os
import shutil
from typing import Dict, List, Optional, Sequence

import pytest

from tinylsm import _rollover
from tinylsm._backend import codec
from tinylsm._worker import Worker
from faults import Crash, FaultyFiles, NoSyncFiles, abandon, report
from workload import (
    NO_AUTO_MERGE,
    SIZES,
    Model,
    Op,
    contents,
    key,
    log_path,
    make_ops,
    open_db,
    prefix_models,
    run,
    run_op,
    sstable_paths,
)

FAST = NoSyncFiles()


@pytest.fixture(autouse=True)
def no_compaction_thread(monkeypatch):
    monkeypatch.setattr(Worker, "start", lambda self: None)


class Progress:
    """The map-changing ops done (in the order they took effect), how many
    are under way (a rollover hook runs ops inside another one), and how
    many are acknowledged."""

    def __init__(self) -> None:
        self.order: List[Op] = []
        self.running = 0
        self.acked = 0

    @property
    def issued(self) -> int:
        return len(self.order) + self.running


#: Points of a log rollover (``_rollover.Rollover``) where an ``("H", point,
#: ops)`` op runs ``ops``: after its table is written, after its catch-up copy,
#: and once the switch holds appends in the buffer (writes only there: a
#: flush waits for the switch, which this very thread runs).
HOOKS = {"table": "_write_table", "copied": "_catch_up", "held": "_hold"}


def hook(db, point: str, ops: Sequence[Op], do) -> None:
    """Run ``do(op)`` for each of ``ops`` right after the next rollover's
    step ``point`` (once)."""
    rollover = db._rollover
    name = HOOKS[point]
    step = getattr(rollover, name)

    def hooked(job, *args):
        got = step(job, *args)
        delattr(rollover, name)  # once
        for op in ops:
            do(op)
        return got

    setattr(rollover, name, hooked)


def act(path: str, k: int, v: int, files, config: Dict[str, int], ops: Sequence[Op],
        progress: Progress) -> None:
    """Open, run ``ops`` (plus "C" = compact, "M" = one policy merge step),
    close.  ``progress`` counts the map-changing ops issued and acknowledged."""
    db = None

    def do(op: Op) -> None:
        if op[0] == "C":
            db.compact()
            progress.acked = len(progress.order)
        elif op[0] == "M":
            compactor = db._compactor  # the thread is off: run its step here
            assert compactor.pick_run(), "the scenario should make the policy merge"
            assert compactor.maintain()
        elif op[0] == "F":
            db.flush()
            progress.acked = len(progress.order)
        elif op[0] == "H":
            hook(db, op[1], op[2], do)
        else:
            progress.running += 1
            run_op(db, op)
            progress.running -= 1
            progress.order.append(op)  # after: a hook may run ops inside it

    try:
        db = open_db(path, k, v, files=files, **config)
        for op in ops:
            do(op)
        db.close()
        progress.acked = len(progress.order)
    except Crash:
        abandon(db)
        raise


def check_state(path: str, k: int, v: int, models: List[Model], progress: Progress,
                config: Dict[str, int], what: str) -> None:
    with open_db(path, k, v, files=FAST, **config) as db:
        got = contents(db)
        assert any(models[j] == got for j in range(progress.acked, progress.issued + 1)), (
            f"{what}: the map is not the model after any of the first "
            f"{progress.acked}..{progress.issued} operations"
        )
        # and the store goes on: write, flush, merge everything, reopen
        extra = key(251, k)
        db[extra] = b"\x05" * v
        db.flush()
        db.compact()
    with open_db(path, k, v, files=FAST, **config) as db:
        assert contents(db) == {**got, extra: b"\x05" * v}, f"{what}: lost after reopening"
        assert len(sstable_paths(path)) <= 1


def sweep(tmp_path, base: Optional[str], k: int, v: int, config: Dict[str, int],
          ops: Sequence[Op], start: Model, name: str, record_property) -> int:
    """Crash at every operation index (and cut every write) of ``act``;
    return how many crash states were checked."""
    states = 0

    def attempt(label: str, arm) -> bool:
        nonlocal states
        run_dir = str(tmp_path / label)
        if base is not None:
            shutil.copytree(base, run_dir)
        files = FaultyFiles(root=run_dir)
        arm(files)
        progress = Progress()
        crashed = False
        try:
            act(run_dir, k, v, files, config, ops, progress)
        except Crash:
            crashed = True
        power = files.power_cut(str(tmp_path / (label + "-power")))
        check_state(run_dir, k, v, models, progress, config, f"{name} {label} process crash")
        check_state(power, k, v, models, progress, config, f"{name} {label} power cut")
        states += 2
        shutil.rmtree(run_dir)
        shutil.rmtree(power)
        return crashed

    # a full run, to learn the operations, and its end state (no crash)
    probe = FaultyFiles(root=None)
    probe_dir = str(tmp_path / "probe")
    if base is not None:
        shutil.copytree(base, probe_dir)
    done = Progress()
    act(probe_dir, k, v, probe, config, ops, done)
    # hooks run ops inside others: the order they ran in is the model's
    models = prefix_models(done.order, start)
    trace = list(probe.trace)
    assert not attempt("nocrash", lambda f: None)

    for n in range(1, len(trace) + 1):
        assert attempt(f"at{n}", lambda f, n=n: f.crash_at(n)), f"no crash at {n}?"
    writes = [c for c in trace if c.op == "pwrite" and c.size > 1]
    for i, call in enumerate(writes):
        for keep in (1, call.size // 2):
            assert attempt(f"cut{i}-{keep}",
                           lambda f, call=call, keep=keep: f.cut(keep, nth=1,
                                                                 when=lambda c: c.index == call.index))
    report(record_property, f"crash_states_{name}", states)
    return states


# -- scenarios ------------------------------------------------------------------------


def build_base(tmp_path, k: int, v: int, batches: Sequence[Sequence[Op]],
               log_ops: Sequence[Op] = ()) -> (str, Model):
    """A store whose sstables hold ``batches`` (one sstable each, oldest
    first) and whose log holds ``log_ops``; no crash involved."""
    path = str(tmp_path / "base")
    big = dict(max_log_length=1 << 20, log_bufwriter_size=0, **NO_AUTO_MERGE)
    all_ops: List[Op] = []
    for ops in batches:
        with open_db(path, k, v, files=FAST, **big) as db:
            run(db, ops)
        with open_db(path, k, v, files=FAST, **dict(big, max_log_length=1)) as db:
            db.flush()
        all_ops += ops
    with open_db(path, k, v, files=FAST, **big) as db:
        run(db, log_ops)
    all_ops += log_ops
    assert len(sstable_paths(path)) == len(batches)
    return path, prefix_models(all_ops)[-1]


CONFIG = dict(max_log_length=64, merge_window=2, merge_ratio=3, max_space_amp=255,
              log_bufwriter_size=0)


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_crash_during_flush_to_sstable(tmp_path, k, v, record_property):
    # an older sstable, so the flush keeps tombstones that hide its keys
    base, model = build_base(tmp_path, k, v, [make_ops(1, 14, k, v, keys=8)],
                             log_ops=make_ops(2, 14, k, v, keys=10))
    cfg = dict(CONFIG, max_log_length=1)  # the log is over it: flush() makes an sstable
    sweep(tmp_path, base, k, v, cfg, [("F",)], model, f"flush_to_sstable_k{k}_v{v}",
          record_property)


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_crash_during_full_compaction(tmp_path, k, v, record_property):
    base, model = build_base(
        tmp_path, k, v,
        [make_ops(3, 12, k, v, keys=8), make_ops(4, 12, k, v, keys=10),
         make_ops(5, 10, k, v, keys=10)],
        log_ops=make_ops(6, 5, k, v, keys=10),
    )
    sweep(tmp_path, base, k, v, dict(CONFIG), [("C",)], model, f"compaction_k{k}_v{v}",
          record_property)


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_crash_during_partial_merge(tmp_path, k, v, record_property):
    # one big old table, then two small ones: the policy merges the two
    # newest, which must keep their tombstones (older data is left out)
    big_table = [("I", key(i, k), bytes([i]) * v) for i in range(20)]
    small1 = [("I", key(1, k), b"\x01" * v), ("R", key(2, k)), ("R", key(3, k)),
              ("I", key(30, k), b"\x02" * v)]
    small2 = [("R", key(1, k)), ("I", key(3, k), b"\x03" * v), ("R", key(4, k)),
              ("I", key(31, k), b"\x04" * v)]
    base, model = build_base(tmp_path, k, v, [big_table, small1, small2])
    sweep(tmp_path, base, k, v, dict(CONFIG), [("M",)], model, f"partial_merge_k{k}_v{v}",
          record_property)


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_crash_while_writing_flushing_and_compacting(tmp_path, k, v, record_property):
    """A store made from nothing: creation, writes, flushes that turn into
    sstables, a merge, all under crashes and power cuts at every step."""
    ops = make_ops(8, 16, k, v, keys=8, flush_every=5)
    ops = ops[:8] + [("C",)] + ops[8:] + [("F",)]
    sweep(tmp_path, None, k, v, dict(CONFIG), ops, {}, f"from_scratch_k{k}_v{v}",
          record_property)


def test_crash_during_recovery_repairs(tmp_path, record_property):
    """Recovery that truncates a torn log, deletes a -tmp leftover and an
    empty sstable (tiny-lsm's torn flush) and writes the size record."""
    k, v = 8, 8
    base, model = build_base(tmp_path, k, v, [make_ops(9, 12, k, v, keys=8)],
                             log_ops=make_ops(10, 12, k, v, keys=8))
    os.remove(os.path.join(base, "tinylsm.meta"))  # as the Rust crate leaves it
    with open(log_path(base), "ab") as f:
        f.write(b"\x01\x02\x03")  # a torn tail
    ssdir = os.path.join(base, "sstables")
    with open(os.path.join(ssdir, "7-tmp"), "wb") as f:
        f.write(b"partial")
    open(os.path.join(ssdir, "%016x" % 2), "wb").close()  # empty newest sstable
    sweep(tmp_path, base, k, v, dict(CONFIG, max_log_length=1 << 20), [], model,
          "recovery", record_property)


@pytest.mark.parametrize("catch_up", ["step4", "step3"])
@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_crash_during_a_rollover_with_writes_and_flushes_between_its_steps(
        tmp_path, monkeypatch, k, v, catch_up, record_property):
    """A log rollover whose steps are far apart: changes, flushes and removes
    come after its table is written and after its catch-up copy, before it
    switches the log.  Every crash state recovers a prefix holding every
    acknowledged change: a flush acknowledged before the switch stays
    durable after it, whether step 3 copied the bytes or step 4 did."""
    if catch_up == "step3":
        monkeypatch.setattr(_rollover, "CATCH_UP_BYTES", 0)
    log_ops = make_ops(12, 6, k, v, keys=8, flush_every=99)
    base, model = build_base(tmp_path, k, v, [make_ops(11, 10, k, v, keys=8)],
                             log_ops=log_ops)
    logged = next(op[1] for op in log_ops if op[0] == "I")  # durable in the log
    between_table = make_ops(13, 5, k, v, keys=10, flush_every=3)  # ends unflushed
    between_copy = [("R", key(1, k)), ("F",), ("I", key(2, k), b"\x07" * v)]
    while_held = [("I", key(7, k), b"\x0b" * v), ("R", key(30, k)),
                  ("B", [(key(8, k), b"\x0c" * v), (key(2, k), None)])]
    unsynced = [("I", logged, b"\x05" * v), ("I", key(30, k), b"\x06" * v)]
    ops = [("H", "table", between_table), ("H", "copied", between_copy),
           ("H", "held", while_held), *unsynced,
           ("I", key(3, k), b"\x09" * v),  # over the limit: rolls over first
           ("I", key(4, k), b"\x0a" * v), ("F",)]
    # the limit is passed by the unsynced changes: the rollover must make
    # them durable before its table (or a power cut replays a shorter log
    # over the table)
    frame = codec.frame_size(k, v)
    cfg = dict(CONFIG, max_log_length=os.path.getsize(log_path(base)) + 2 * frame - 1,
               log_bufwriter_size=frame - 1)
    sweep(tmp_path, base, k, v, cfg, ops, model, f"rollover_{catch_up}_k{k}_v{v}",
          record_property)
