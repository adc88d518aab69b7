"""Real kills aimed at one public method: SIGKILL a writer inside compact(),
close(), open()'s recovery of a big log, a rollover flush, or a huge write_batch.

``adversary_writer.py`` loops around the method of its mode, announcing each
operation before it issues it, each acknowledged flush (or compact, or
close) after it returns, and ``DO <method>`` just before the slow call; the
kill comes a seeded random time after that line, within the median time
the call has taken so far (times 1.3).  After each kill the store is reopened
here for writing, and it must:

1. open;
2. hold every change acknowledged before the kill;
3. equal the model after some prefix of the announced operations that
   contains every acknowledged one (a batch counts whole), as in
   ``test_kill.py``;
4. hold no stray file (``*-tmp``, ``*.tmp``, ...) once closed: only ``log``,
   ``sstables/<16 hex digits>``, ``tinylsm.meta``, ``tinylsm.lock`` and the
   log tails recovery sets aside, ``tinylsm.kept-*`` (counted).

``compact`` and ``recover`` start each writer from a fresh copy of a
prepared store; ``close``, ``rollover`` and ``batch`` pile their kills up on
one store.  CI runs ``KILLS_CI`` kills per method; ``TINYLSM_TORTURE=1`` runs
``KILLS_TORTURE`` (``TINYLSM_TORTURE=N``, N > 1: N).
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import tinylsm
from helpers import child_env
from adversary_writer import K, MODES, V, gen_batch
from faults import report

HERE = Path(__file__).resolve().parent
WRITER = HERE / "adversary_writer.py"
REPO = HERE.parent
KILLS_CI, KILLS_TORTURE = 8, 60
SEED = int(os.environ.get("TINYLSM_KILL_SEED", "20240613"))
TOP_NAMES = re.compile(r"(log|sstables|tinylsm\.meta|tinylsm\.lock|tinylsm\.kept-.+)\Z")
SSTABLE_NAME = re.compile(r"[0-9a-f]{16}\Z")
Model = Dict[bytes, bytes]
Change = Tuple[bytes, Optional[bytes]]


def _kills() -> int:
    torture = int(os.environ.get("TINYLSM_TORTURE", "0") or 0)
    return KILLS_TORTURE if torture == 1 else torture or KILLS_CI


# for the parent's reopen: no merge, so that the checks wait for none
QUIET = tinylsm.Config(merge_window=255, max_space_amp=255)


def _load(path: str, config: tinylsm.Config = QUIET) -> Model:
    with tinylsm.open(path, key_size=K, value_size=V, config=config) as db:
        return dict(db.items())


def _write(path: str, config: tinylsm.Config, items: List[Change]) -> None:
    with tinylsm.open(path, key_size=K, value_size=V, config=config) as db:
        for s in range(0, len(items), 1000):
            db.write_batch(items[s:s + 1000])
            db._rollover.roll()  # if due, now: as many sstables on every run


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Stores the fresh-copy modes start from: ``compact``'s has 200k keys
    (100k for the pure-Python twin) in a dozen and more sstables;
    ``recover``'s a 3 MB log (1.5 MB) on top of sstables, ending in a torn
    frame, as a killed writer leaves it."""
    root = tmp_path_factory.mktemp("prepared")
    scale = 1 if tinylsm.BACKEND == "cython" else 2  # the pure-Python twin is slower
    big = str(root / "compact")
    _write(big, MODES["compact"], gen_batch(1, 200_000 // scale, 1 << 40, 0))
    assert len(os.listdir(os.path.join(big, "sstables"))) >= 12
    log = str(root / "recover")
    _write(log, tinylsm.Config(max_log_length=256 * 1024), gen_batch(2, 60_000, 1 << 20, 0))
    _write(log, tinylsm.Config(max_log_length=1 << 40),
           gen_batch(3, 150_000 // scale, 1 << 20, 200))
    with open(os.path.join(log, "log"), "ab") as f:
        f.write(bytes.fromhex("0123456789abcdef0123"))  # a frame cut short
    return {"compact": (big, _load(big)), "recover": (log, _load(log))}


def _kill_once(mode: str, path: str, seed: int, delay: float, stderr: Path) -> bytes:
    """Run the writer until its first ``DO`` of ``mode``'s method, wait
    ``delay`` more, SIGKILL it; its whole output."""
    env = child_env()
    trigger = b"DO " + TRIGGERS[mode].encode() + b"\n"
    out = bytearray()
    cv = threading.Condition()
    eof = threading.Event()
    with open(stderr, "wb") as err:
        proc = subprocess.Popen([sys.executable, str(WRITER), mode, path, str(seed)],
                                stdout=subprocess.PIPE, stderr=err, env=env, cwd=str(REPO))

        def read() -> None:
            assert proc.stdout is not None
            while True:
                chunk = proc.stdout.read1(65536)
                with cv:
                    out.extend(chunk)
                    if not chunk:
                        eof.set()
                    cv.notify_all()
                if not chunk:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        with cv:
            cv.wait_for(lambda: out.startswith(trigger) or b"\n" + trigger in out
                        or eof.is_set(), timeout=120)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"the {mode} writer exited by itself ({proc.returncode}): "
                             + stderr.read_text()[-3000:])
    return bytes(out)


TRIGGERS = {"compact": "compact", "close": "close", "recover": "open",
            "rollover": "flush", "batch": "batch"}


def _parse(out: bytes, trigger: str) -> Tuple[List[List[Change]], int, List[float], bool]:
    """The operations announced (whole lines only) as change lists, how many
    were acknowledged, the durations reported, and whether the kill came
    inside the aimed-at method (a ``DO`` with no ``DONE`` after it)."""
    ops: List[List[Change]] = []
    acked, times, inside, last_do = 0, [], False, ""
    for raw in out.split(b"\n")[:-1]:  # the last piece has no newline: cut by the kill
        w = raw.decode().split()
        if w[0] == "ACK":
            acked = len(ops)
        elif w[0] == "DO":
            inside, last_do = w[1] == trigger, w[1]
        elif w[0] == "DONE":
            inside = False
            if last_do == trigger:  # seconds since that DO
                times.append(float(w[2]))
        elif w[0] == "I":
            ops.append([(bytes.fromhex(w[1]), bytes.fromhex(w[2]))])
        elif w[0] == "R":
            ops.append([(bytes.fromhex(w[1]), None)])
        elif w[0] == "B":
            items = [item.split("=") for item in w[2:]]
            assert len(items) == int(w[1]), raw
            ops.append([(bytes.fromhex(a), None if b == "-" else bytes.fromhex(b))
                        for a, b in items])
        elif w[0] == "G":
            ops.append(gen_batch(*map(int, w[1:])))
        elif w[0] != "READY":
            raise AssertionError(f"writer said {raw!r}")
    return ops, acked, times, inside


def _match(base: Model, ops: List[List[Change]], acked: int, got: Model) -> int:
    """The first ``j >= acked`` such that ``got`` is ``base`` after ``ops[:j]``,
    or AssertionError.  The set of keys where the model and ``got`` differ is
    kept up to date change by change: each prefix costs only its own changes."""
    model = dict(base)

    def apply(op: List[Change]) -> None:
        for k, v in op:
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v

    for op in ops[:acked]:
        apply(op)
    bad = {k for k in model.keys() | got.keys() if model.get(k) != got.get(k)}
    lost = sum(1 for k in bad if k in model)
    for j in range(acked, len(ops) + 1):
        if not bad:
            return j
        if j == len(ops):
            break
        apply(ops[j])
        for k, _ in ops[j]:
            if model.get(k) == got.get(k):
                bad.discard(k)
            else:
                bad.add(k)
    raise AssertionError(
        f"the reopened store is not the model after any prefix of {acked}..{len(ops)} "
        f"of the {len(ops)} announced operations ({lost} keys of the acknowledged "
        "prefix's model are missing or different)")


def _strays(path: str) -> Tuple[List[str], List[str]]:
    """Names in the store that tinylsm does not own, and the kept tails."""
    strays, kept = [], []
    for name in os.listdir(path):
        if not TOP_NAMES.match(name):
            strays.append(name)
        if name.startswith("tinylsm.kept-"):
            kept.append(name)
    for name in os.listdir(os.path.join(path, "sstables")):
        if not SSTABLE_NAME.match(name):
            strays.append("sstables/" + name)
    return strays, kept


@pytest.mark.parametrize("mode", list(TRIGGERS))
def test_kill_inside_method(mode, prepared, tmp_path, record_property):
    """SIGKILL inside ``mode``'s method, again and again: each time the store
    opens, keeps every acknowledged change, is the model after a prefix of
    the announced operations, and holds no stray file."""
    rng = random.Random(f"{SEED}-{mode}")
    path = str(tmp_path / "db")
    fresh = prepared.get(mode)
    base: Model = {}
    durations: List[float] = []
    guess = 0.05  # until a call is seen to end: doubled while kills land inside
    inside = ops_total = acked_total = 0
    kept_seen = set()
    kills = _kills()
    for n in range(kills):
        if fresh is not None:
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(fresh[0], path)
            base = fresh[1]
        # within the call's typical time (a first guess until it is known)
        window = 1.3 * statistics.median(durations) if durations else guess
        delay = rng.uniform(0, window)
        out = _kill_once(mode, path, rng.randrange(1 << 30), delay, tmp_path / "stderr")
        ops, acked, times, was_inside = _parse(out, TRIGGERS[mode])
        durations += times
        guess *= 2 if was_inside else 1
        where = f"{mode} kill {n + 1} ({delay * 1000:.1f} ms after DO {TRIGGERS[mode]})"
        try:
            got = _load(path)
        except Exception as exc:
            raise AssertionError(f"{where}: the store does not open: {exc!r}") from exc
        try:
            _match(base, ops, acked, got)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None
        strays, kept = _strays(path)
        assert not strays, f"{where}: stray files after a writable reopen: {strays}"
        base = got
        inside += was_inside
        ops_total += len(ops)
        acked_total += acked
        kept_seen.update((n if fresh else 0, name) for name in kept)
    report(record_property, f"kill_{mode}_kills", kills)
    report(record_property, f"kill_{mode}_inside_method", inside)
    report(record_property, f"kill_{mode}_ops_announced", ops_total)
    report(record_property, f"kill_{mode}_ops_acknowledged", acked_total)
    report(record_property, f"kill_{mode}_kept_tails", len(kept_seen))
    print(f"[tinylsm-count] kill_{mode}: median {TRIGGERS[mode]} "
          f"{statistics.median(durations or [0]) * 1000:.0f} ms")
