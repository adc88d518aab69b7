"""Every public method racing ``close()`` (or garbage collection) from another thread.

Thread A calls one method again and again on a store that holds data (the
writing methods write new keys and note each call that returned); the test's
own thread, B, sleeps a random short time and closes the store.  Each race
proves:

1. every call in A returned or raised ``ClosedError``, nothing else, and a
   call that began after ``close()`` returned raised ``ClosedError``;
2. (*quiet* races) the store's files, hashed the moment ``close()``
   returned, are the same once A has finished: after ``close()`` returns the
   process touches nothing of the store;
3. (*reopen* races) another thread opens the store as a writer the moment
   its lock is free (it polls from before ``close()``; still locked after
   ``close()`` returned is an error), while A may still run, writes to it
   and (compact case) compacts;
4. reopened at the end, the store holds exactly the writes of the calls
   that returned (and those of the second writer): a call that raised
   ``ClosedError`` changed nothing.

Races alternate between the two kinds, with seeded random delays.  CI runs
the counts below; ``TINYLSM_TORTURE=1`` runs ten times as many.
"""
from __future__ import annotations

import gc
import hashlib
import os
import random
import shutil
import threading
import time
import traceback
from typing import Callable, Dict, List, Optional, Tuple

import pytest

import tinylsm
from faults import report, snapshot

K, V = 8, 8
# the pure-Python twin merges several times slower: half the keys still take it
# a good fraction of a second
SMALL_KEYS, BIG_KEYS = 6000, 200_000 if tinylsm.BACKEND == "cython" else 100_000
NEW, MARK, PRE = 1 << 40, 2 << 40, 3 << 40  # key ranges: A's writes, B's, preludes
# many small sstables, rollovers and background merges all the time
SMALL = tinylsm.Config(max_log_length=16 * 1024, merge_window=2, log_bufwriter_size=4096)
# a dozen and more sstables that only compact() merges
BIG = tinylsm.Config(max_log_length=128 * 1024, merge_window=255, max_space_amp=255)
# on BIG's tables: merge after merge as soon as it opens
MERGING = tinylsm.Config(max_log_length=64 * 1024, merge_window=2, merge_ratio=255)
JOIN_SECONDS = 60
SEED = int(os.environ.get("TINYLSM_RACE_SEED", "20240612"))


def _races(ci: int, heavy: bool = False) -> int:
    if heavy and tinylsm.BACKEND == "python":
        ci //= 2  # each race opens, merges and reads 100k keys in pure Python
    if os.environ.get("TINYLSM_TORTURE", "") not in ("", "0"):
        return ci * 10
    return ci if os.environ.get("CI") else ci * 2


def key(i: int) -> bytes:
    return (i * 0x9E3779B97F4A7C15 % (1 << 64)).to_bytes(K, "big")  # scattered order


def val(i: int) -> bytes:
    return (i * 7 + 1).to_bytes(V, "little")


def tree(path: str) -> Dict[str, Tuple[int, str]]:
    """Every file of the store: relative path -> (size, sha256)."""
    return {n: (len(d), hashlib.sha256(d).hexdigest()) for n, d in snapshot(path).items()}


def tree_diff(a: dict, b: dict) -> str:
    names = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
    return "; ".join(f"{n}: {a.get(n, ('absent',))[0]} -> {b.get(n, ('absent',))[0]} bytes"
                     for n in names)


def build(path: str, n: int, config: tinylsm.Config) -> Dict[bytes, bytes]:
    model = {key(i): val(i) for i in range(n)}
    items = list(model.items())
    with tinylsm.open(path, key_size=K, value_size=V, config=config) as db:
        for s in range(0, n, 1000):
            db.write_batch(items[s:s + 1000])
            db._rollover.roll()  # if due, now: as many sstables on every run
    return model


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """The two stores every race starts from (copied), their maps, and how
    long a compact() of the big one takes here (to aim the close at it)."""
    root = tmp_path_factory.mktemp("templates")
    small, big = str(root / "small"), str(root / "big")
    out = {"small": (small, build(small, SMALL_KEYS, SMALL)),
           "big": (big, build(big, BIG_KEYS, BIG))}
    assert len(os.listdir(os.path.join(big, "sstables"))) >= 12
    shutil.copytree(big, str(root / "timed"))
    with tinylsm.open(str(root / "timed"), config=BIG) as db:
        start = time.monotonic()
        db.compact()
        out["compact_seconds"] = time.monotonic() - start
    return out


class Race:
    """What thread A did: changes of the calls that returned and of those
    that raised ``ClosedError``, and anything else that went wrong."""

    def __init__(self, path: str, model: Dict[bytes, bytes], quiet: bool) -> None:
        self.path, self.quiet = path, quiet
        self.model = model  # the map before A started; A's reads check it
        self.keys = sorted(model)
        self.acked: List[list] = []
        self.failed: List[list] = []
        self.errors: List[str] = []
        self.closes: List[dict] = []  # A's own close(): the tree when it returned
        self.closed = threading.Event()  # B's close() has returned
        self.calls = 0

    def write(self, changes: list, call: Callable[[], object]) -> None:
        try:
            call()
        except tinylsm.ClosedError:
            self.failed.append(changes)
            raise
        self.acked.append(changes)

    def expect(self, what: str, got: object, want: object) -> None:
        if got != want:
            self.errors.append(f"{what}: got {str(got)[:200]}, expected {str(want)[:200]}")


def apply(model: Dict[bytes, bytes], changes: list) -> None:
    for k, v in changes:
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v


class M:
    """One call (or two) of each method; ``i`` counts A's calls from 1."""

    def insert(db, r: Race, i: int) -> None:
        r.write([(key(NEW + i), val(i))], lambda: db.insert(key(NEW + i), val(i)))

    def remove(db, r: Race, i: int) -> None:
        k = r.keys[i % len(r.keys)]
        r.write([(k, None)], lambda: db.remove(k))

    def write_batch(db, r: Race, i: int) -> None:
        items = [(key(NEW + 8 * i + j), val(i + j)) for j in range(7)]
        items.append((r.keys[i % len(r.keys)], None))
        r.write(items, lambda: db.write_batch(items))

    def write_packed(db, r: Race, i: int) -> None:
        items = [(key(NEW + 8 * i + j), val(i + j)) for j in range(7)]
        gone = r.keys[i % len(r.keys)]
        r.write(items + [(gone, None)],
                lambda: db.write_packed(b"".join(k + v for k, v in items), removals=gone))

    def flush(db, r: Race, i: int) -> None:
        M.insert(db, r, i)
        db.flush()

    def compact(db, r: Race, i: int) -> None:
        if i > 1:  # the first one merges the template's sstables alone
            items = [(key(NEW + 1000 * i + j), val(j)) for j in range(1000)]
            r.write(items, lambda: db.write_batch(items))
        db.compact()

    def stats(db, r: Race, i: int) -> None:
        r.expect("stats().keys", db.stats().keys, len(r.model))

    def get(db, r: Race, i: int) -> None:
        k = r.keys[i % len(r.keys)]
        r.expect("get", db.get(k), r.model[k])

    def contains(db, r: Race, i: int) -> None:
        r.expect("in", r.keys[i % len(r.keys)] in db, True)

    def len_(db, r: Race, i: int) -> None:
        r.expect("len", len(db), len(r.model))

    def items(db, r: Race, i: int) -> None:
        seen = 0
        for k, v in db.items():  # step by step: close() may come between two steps
            seen += 1
            if r.model.get(k) != v:
                r.expect(f"items() at {k.hex()}", v, r.model.get(k))
        r.expect("items() count", seen, len(r.model))

    def export(db, r: Race, i: int) -> None:
        k, v = len(r.keys[0]), len(r.model[r.keys[0]])
        seen = 0
        for chunk in db.export(chunk_records=97):  # close() may come between two chunks
            for off in range(0, len(chunk), k + v):
                rec = bytes(chunk[off:off + k + v])
                seen += 1
                if r.model.get(rec[:k]) != rec[k:]:
                    r.expect(f"export() at {rec[:k].hex()}", rec[k:], r.model.get(rec[:k]))
        r.expect("export() count", seen, len(r.model))

    def range_(db, r: Race, i: int) -> None:
        j = i * 37 % (len(r.keys) - 600)
        want = iter(r.keys[j:j + 500])
        for k, v in db.range(r.keys[j], r.keys[j + 500]):
            w = next(want, None)
            r.expect("range() item", (k, v), (w, r.model.get(w)))
        r.expect("range() end", next(want, None), None)

    def close(db, r: Race, i: int) -> None:
        db.close()
        if r.quiet:  # else another writer may be changing the files
            r.closes.append(tree(r.path))


def hammer(db, method: Callable, r: Race) -> None:
    """Thread A: call ``method`` until three calls have begun after B's close()."""
    after = 0
    while after < 3:
        r.calls += 1
        started_after = r.closed.is_set()
        try:
            method(db, r, r.calls)
        except tinylsm.ClosedError:
            pass
        except BaseException:
            r.errors.append(f"call {r.calls} raised:\n{traceback.format_exc()}")
            return
        else:
            if started_after and method is not M.close:
                r.errors.append(f"call {r.calls} began after close() returned, yet returned")
        after += started_after


def check_data(path: str, config, want: Dict[bytes, bytes], r: Optional[Race]) -> None:
    """Reopen the store and require exactly ``want``."""
    with tinylsm.open(path, key_size=K, value_size=V, config=config) as db:
        got = dict(db.items())
    if got != want:
        lost = [k for k in want if got.get(k) != want[k]]
        extra = [k for k in got if k not in want]
        failed = {k for changes in (r.failed if r else []) for k, _ in changes}
        raise AssertionError(
            f"reopened store differs from the acknowledged writes: {len(lost)} keys lost "
            f"or wrong (of {len(want)}), {len(extra)} keys that should be absent; "
            f"{len(failed.intersection(lost + extra))} of these written by calls that "
            "raised ClosedError")


def prelude(db, model: Dict[bytes, bytes], n: int) -> None:
    """Writes that leave rollovers and background merges under way."""
    for s in range(0, n, 100):
        items = [(key(PRE + s + j), val(s + j)) for j in range(100)]
        db.write_batch(items)
        apply(model, items)


def take_over(path: str, config, closed: threading.Event, compact: bool, mark: int,
              marks: dict, errors: list) -> None:
    """Another writer: open the store the moment its lock is free (polling),
    compact it if asked, write to it.  A LockedError once ``closed`` is set
    is an error."""
    try:
        while True:
            after = closed.is_set()
            try:
                second = tinylsm.open(path, key_size=K, value_size=V, config=config)
                break
            except tinylsm.LockedError as exc:
                if after:
                    errors.append(f"the store is closed, yet still locked: {exc}")
                    return
                time.sleep(0.001)
        with second:
            if compact:
                second.compact()
            for j in range(20):
                second.insert(key(mark + j), val(j))
                marks[key(mark + j)] = val(j)
            second.flush()
    except BaseException:
        errors.append(f"the writer taking over failed:\n{traceback.format_exc()}")


def race_once(root: str, template: str, base: dict, config, method: Callable,
              settle: float, delay: float, quiet: bool, n: int) -> None:
    path = os.path.join(root, f"race{n}")
    shutil.copytree(template, path)
    model = dict(base)
    db = tinylsm.open(path, key_size=K, value_size=V, config=config)
    if config is SMALL:
        prelude(db, model, 1500)
    r = Race(path, model, quiet)
    time.sleep(settle)  # or not: the background merge thread busy, or idle
    a = threading.Thread(target=hammer, args=(db, method, r), daemon=True)
    marks: Dict[bytes, bytes] = {}
    taker = threading.Thread(target=take_over, daemon=True, args=(
        path, config, r.closed, method is M.compact, MARK + 100 * n, marks, r.errors))
    a.start()
    if not quiet:  # takes the store over the moment close() lets it go
        taker.start()
    time.sleep(delay)
    try:
        db.close()
    except BaseException:
        r.errors.append(f"close() raised:\n{traceback.format_exc()}")
    at_close = tree(path) if quiet else {}
    r.closed.set()
    a.join(JOIN_SECONDS)
    if not quiet:
        taker.join(JOIN_SECONDS)
    kind = "quiet" if quiet else "reopen"
    where = f"{method.__name__.rstrip('_')} race {n} ({kind}, A after {settle * 1000:.1f} ms, " \
            f"close after {delay * 1000:.1f} more, {r.calls} calls in A)"
    assert not a.is_alive() and not taker.is_alive(), \
        f"{where}: a thread still runs {JOIN_SECONDS} s after close()"
    assert not r.errors, f"{where}: " + "\n".join(r.errors[:3])
    if quiet:
        after = tree(path)
        diff = tree_diff(at_close, after)
        assert not diff, f"{where}: files changed after close() returned: {diff}"
        for t in r.closes:
            diff = tree_diff(t, after)
            assert not diff, f"{where}: files changed after A's close() returned: {diff}"
    for changes in r.acked:
        apply(model, changes)
    model.update(marks)
    try:
        check_data(path, config, model, r)
    except AssertionError as exc:
        raise AssertionError(f"{where}: {exc}") from None
    shutil.rmtree(path)


METHODS = [M.insert, M.remove, M.write_batch, M.write_packed, M.flush, M.compact, M.stats, M.get,
           M.contains, M.len_, M.items, M.export, M.range_, M.close]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.__name__.rstrip("_"))
def test_method_racing_close(method, templates, tmp_path, record_property):
    """``method`` in a loop in one thread, ``close()`` in another: only
    ``ClosedError``, no file touched after close() returns, a writer can
    take over at once, and exactly the calls that returned are kept."""
    rng = random.Random(f"{SEED}-{method.__name__}")
    if method is M.compact:
        template, base = templates["big"]
        config, races, top = BIG, _races(8, heavy=True), 1.5 * templates["compact_seconds"]
    else:
        template, base = templates["small"]
        config, races, top = SMALL, _races(8), 0.015
    for n in range(races):
        settle = rng.choice((0, rng.uniform(0, 0.02)))
        race_once(str(tmp_path), template, base, config, method, settle,
                  rng.uniform(0, top), quiet=n % 2 == 0, n=n)
    report(record_property, f"close_races_{method.__name__.rstrip('_')}", races)


def compactor_threads() -> set:
    return {t for t in threading.enumerate() if t.name == "tinylsm-compactor"}


def test_garbage_collection_racing_merge(templates, tmp_path, record_property):
    """Dropping the last reference while background merges run: the lock is
    free once ``del``/``gc.collect()`` returns and not before the merge has
    stopped (reopen races: another thread takes the store over the moment
    it can, and compacts), no file changes any more (quiet races), and every
    write that returned is there, the buffered ones too."""
    rng = random.Random(f"{SEED}-gc")
    template, base = templates["big"]
    races = _races(6, heavy=True)
    top = 1.5 * templates["compact_seconds"]
    for n in range(races):
        path = os.path.join(str(tmp_path), f"gc{n}")
        shutil.copytree(template, path)
        model = dict(base)
        before = compactor_threads()
        db = tinylsm.open(path, key_size=K, value_size=V, config=MERGING)
        mine = compactor_threads() - before
        prelude(db, model, 4000)  # rollovers: more merges, and a buffered tail
        collected, marks, errors = threading.Event(), {}, []
        taker = threading.Thread(target=take_over, daemon=True, args=(
            path, MERGING, collected, True, MARK, marks, errors))
        if n % 2:  # takes the store over the moment the collection lets it go
            taker.start()
        time.sleep(rng.uniform(0, top))
        del db
        gc.collect()
        collected.set()
        at_gc = tree(path)
        if n % 2:
            taker.join(JOIN_SECONDS)
            assert not taker.is_alive() and not errors, f"gc race {n}: {errors}"
        for t in mine:
            t.join(JOIN_SECONDS)
            assert not t.is_alive(), f"gc race {n}: the merge thread outlived its store"
        if n % 2 == 0:
            diff = tree_diff(at_gc, tree(path))
            assert not diff, f"gc race {n}: files changed after the store was collected: {diff}"
        model.update(marks)
        check_data(path, BIG, model, None)
        shutil.rmtree(path)
    report(record_property, "gc_merge_races", races)
