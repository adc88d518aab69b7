"""Incremental growth of the compiled map's hash table.

When the table reaches its load limit the compiled map allocates one of
twice the size and migrates the previous one a few positions per change, so
for a while a key may live in either table (see ``SortedMap._grow`` in
``tinylsm/_map.pyx``).  These tests set the smallest migration step (2
positions per change, the least the growth bound allows) so that growth
spans many changes, and drive the map through many growths with inserts,
updates, deletes (of keys in either table, and of keys whose probe run wraps
around the table's end), re-inserts, lookups, ordered reads and bulk
loads, comparing it with a ``dict`` model (and, in the Hypothesis test,
with the pure-Python twin) after every step batch.  ``_check()`` verifies
the tables' invariants, among them that the migration left always fits in
the changes left before the next growth.
"""
from __future__ import annotations

import os
import random
from collections import Counter
from typing import Dict, List

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import load_twin
from test_map_parity import Twins, pack


@pytest.fixture(scope="module")
def CMap():
    return load_twin("_map", "cython").SortedMap


class Probe:
    """The compiled map (written directly or through a ``StoreCore``'s fast
    paths) and a dict model, with counts of the cases met."""

    def __init__(self, CMap, k: int, v: int, step: int = 2, core: bool = False) -> None:
        self.k, self.v = k, v
        self.m = CMap(k, v)
        self.m._set_migration_step(step)
        self.model: Dict[bytes, bytes] = {}
        self.seen: Counter = Counter()
        self.was_migrating = False
        self.core = None
        if core:
            mod = load_twin("_map", "cython")
            codec = load_twin("_codec", "cython")

            class Core(mod.StoreCore):
                def _slow_insert(self, key, value):
                    raise AssertionError("slow path")

                def _slow_remove(self, key):
                    raise AssertionError("slow path")

            self.core = Core()
            self.core._attach(self.m, bytearray(), codec.frame_size(k, v))
            self.core._set_fast_cap(1 << 62)

    def where(self, key: bytes) -> str:
        w = self.m._where(key)
        if w is None:
            return "absent"
        which, pos, home, size = w
        name = ("table", "previous")[which]
        if pos < home:  # its probe run wraps around the end
            return name + " wrapped"
        if pos == size - 1:
            return name + " last"
        return name

    def note(self, what: str) -> None:
        self.seen[what] += 1
        if self.m._migrating:
            self.was_migrating = True
            self.seen[what + " migrating"] += 1

    def set(self, key: bytes, value: bytes) -> None:
        self.note("set " + self.where(key))
        got = self.core.insert(key, value) if self.core is not None else self.m.set(key, value)
        assert got == self.model.get(key)
        self.model[key] = value
        self.after_change()

    def delete(self, key: bytes) -> None:
        self.note("delete " + self.where(key))
        got = self.core.remove(key) if self.core is not None else self.m.delete(key)
        assert got == self.model.pop(key, None)
        self.after_change()

    def apply(self, changes) -> None:
        self.note(f"apply {'small' if len(changes) < len(self.model) else 'large'}")
        self.m.apply_records(pack(changes, self.k, self.v), self.k, self.v)
        for key, value in changes:
            if value is None:
                self.model.pop(key, None)
            else:
                self.model[key] = value
        self.after_change()

    def after_change(self) -> None:
        if self.m._migrating:
            self.was_migrating = True

    def lookups(self, keys: List[bytes]) -> None:
        target = self.core if self.core is not None else self.m
        for key in keys:
            want = self.model.get(key)
            assert self.m.get(key) == want
            assert (key in self.m) == (want is not None)
            assert target.get(key) == want
            if want is not None:
                assert self.m[key] == want
            else:
                with pytest.raises(KeyError):
                    self.m[key]

    def compare(self, rnd: random.Random) -> None:
        m = self.m
        assert len(m) == len(self.model)
        self.lookups(list(self.model))
        ordered = sorted(self.model.items())
        assert list(m.items()) == ordered
        if ordered:
            a, b = sorted(rnd.choice(ordered)[0] for _ in range(2))
            assert list(m.items(a, b, reverse=True)) == [kv for kv in reversed(ordered)
                                                         if a <= kv[0] < b]
        m._check()


def drive(probe: Probe, rnd: random.Random, nops: int, grow_to: int) -> None:
    """A random mix of changes that grows the map to about ``grow_to`` keys
    (through many growths), comparing with the model every few changes."""
    k, v = probe.k, probe.v
    deleted: List[bytes] = []
    live: List[bytes] = []

    def fresh() -> bytes:
        return rnd.randbytes(k)

    def value() -> bytes:
        return rnd.randbytes(v)

    for i in range(nops):
        if len(probe.model) < 64 or i % 16 == 0:
            live = list(probe.model)  # refreshed now and then: a pick may be stale
        r = rnd.random()
        grow = len(probe.model) < grow_to
        if r < (0.45 if grow else 0.25):
            probe.set(fresh(), value())
        elif r < 0.6 and live:
            probe.set(rnd.choice(live), value())  # an update (maybe a stale pick)
        elif r < 0.78 and live:
            key = rnd.choice(live)
            probe.delete(key)
            deleted.append(key)
        elif r < 0.82:
            probe.delete(fresh())  # absent
        elif r < 0.9 and deleted:
            probe.set(deleted.pop(rnd.randrange(len(deleted))), value())  # re-insert
        elif r < 0.95:
            pool = live + deleted[-8:] if live else [fresh()]
            changes = [(rnd.choice(pool) if rnd.random() < 0.6 else fresh(),
                        None if rnd.random() < 0.3 else value())
                       for _ in range(rnd.randrange(1, 9))]
            probe.apply(changes)
        else:
            probe.lookups([rnd.choice(live) if live and rnd.random() < 0.7 else fresh()
                           for _ in range(8)])
        if i % 97 == 0:
            probe.compare(rnd)
    probe.compare(rnd)


@pytest.mark.parametrize("k,v,core", [
    (8, 8, False), (8, 8, True), (2, 3, False), (16, 4, False), (8, 0, True),
], ids=["k8v8", "k8v8-core", "k2v3", "k16v4", "k8v0-core"])
def test_growth_with_every_kind_of_change(CMap, k, v, core):
    rnd = random.Random(k * 100 + v + core)
    probe = Probe(CMap, k, v, core=core)
    drive(probe, rnd, nops=12_000, grow_to=3000)
    seen = probe.seen
    # the cases this test exists for (counts are large: the seed of the
    # table hash changes per process, so each is met many times, not once)
    assert seen["delete previous migrating"] > 0, seen
    assert seen["set previous migrating"] > 0, seen  # an update of a key not yet moved
    assert seen["set absent migrating"] > 0, seen
    assert seen["apply small migrating"] > 0, seen


def test_reinserting_keys_deleted_from_the_previous_table(CMap):
    """Keys deleted while still in the previous table come back (into the
    new one) and go again, while the migration goes on."""
    rnd = random.Random(3)
    probe = Probe(CMap, 8, 8)
    keys = [rnd.randbytes(8) for _ in range(2000)]
    back = 0
    for i, key in enumerate(keys):
        probe.set(key, bytes(8))
        if probe.m._migrating:
            # a few earlier keys, likely still in the previous table
            for old in rnd.sample(keys[:i], min(i, 3)):
                where = probe.where(old)
                if old in probe.model and where.startswith("previous"):
                    probe.delete(old)
                    probe.lookups([old])
                    probe.set(old, b"again!!!")
                    assert probe.where(old).startswith("table")
                    back += 1
                    if rnd.random() < 0.5:
                        probe.delete(old)
        if i % 50 == 0:
            probe.compare(rnd)
    probe.compare(rnd)
    assert back > 100


def test_deletes_in_wrapped_runs(CMap):
    """Deletes of keys whose probe run wraps around the table's end (and of
    the key at its last position), in either table.  Right after a growth
    starts, the previous table's wrapping runs are intact (migration begins
    at position 0, so their first part is already migrated); the new
    table's deletes shift keys back across the end."""
    rnd = random.Random(5)
    hits = Counter()
    wanted = ("previous wrapped", "previous last", "table wrapped", "table last")
    for _ in range(300):
        probe = Probe(CMap, 8, 8)
        migrating = False
        while len(probe.model) < 300:
            probe.set(rnd.randbytes(8), bytes(8))
            if probe.m._migrating != migrating or len(probe.model) % 50 == 0:
                for key in list(probe.model):
                    where = probe.where(key)
                    if where in wanted:
                        hits[where] += 1
                        probe.delete(key)
                        probe.lookups(list(probe.model))
                        probe.m._check()
                        probe.set(key, b"back!!!!")
                        probe.lookups(list(probe.model))
            migrating = probe.m._migrating
        probe.compare(rnd)
        if min(hits[w] for w in wanted) >= 10:
            break
    assert min(hits[w] for w in wanted) > 0, hits


def test_growth_finishes_in_time_under_churn(CMap):
    """Only inserts count toward the next growth, yet deletes and updates
    migrate too; ``_check`` verifies after each change that the positions
    left fit in the changes left."""
    rnd = random.Random(9)
    probe = Probe(CMap, 4, 1)
    keys: List[bytes] = []
    for i in range(3000):
        key = rnd.randbytes(4)
        probe.set(key, b"x")
        keys.append(key)
        if i % 3 == 0:
            probe.delete(keys.pop(rnd.randrange(len(keys))))
        if i % 7 == 0 or probe.m._migrating and i % 2:
            probe.m._check()
    probe.compare(rnd)
    assert probe.was_migrating


def test_bulk_loads_across_growth(CMap):
    """A load no larger than the map grows the table incrementally, record
    by record; a larger one rebuilds it at once (ending any migration), and
    shrinks it when the records were mostly deletes."""
    rnd = random.Random(4)
    probe = Probe(CMap, 8, 4)
    keys = [rnd.randbytes(8) for _ in range(4000)]
    for key in keys[:300]:
        probe.set(key, b"init")
    for start in range(300, 1500, 60):  # small loads, through growths
        probe.apply([(key, b"bulk") for key in keys[start:start + 50]]
                    + [(rnd.choice(keys[:start]), None) for _ in range(10)])
        probe.compare(rnd)
    assert probe.seen["apply small migrating"] > 0
    while not probe.m._migrating:
        probe.set(rnd.randbytes(8), b"more")
    # a large load in mid-migration: one rebuild
    probe.apply([(key, b"big!") for key in keys[1500:]])
    assert not probe.m._migrating
    probe.compare(rnd)
    big = probe.m.nbytes
    # mostly deletes: the presized table is undone
    live = list(probe.model)
    probe.apply([(key, None) for key in live] + [(key, b"tiny") for key in live[:10]])
    probe.compare(rnd)
    assert probe.m.nbytes <= big
    # and it grows again from there, incrementally
    for _ in range(500):
        probe.set(rnd.randbytes(8), b"next")
    probe.compare(rnd)


def test_large_table_is_released_piecewise(CMap):
    """A previous table of 1 MiB or more is unmapped 1 MiB per change once
    migrated: 1 piece after the growth at 2**18 positions, 2 at 2**19."""
    m = CMap(8, 0)
    model = []
    released = []
    before = m.nbytes
    for i in range(400_000):
        key = (i * 0x9E3779B97F4A7C15 % 2**64).to_bytes(8, "big")
        m.set(key, b"")
        model.append(key)
        now = m.nbytes
        if before - now == 1 << 20:
            released.append(i)
        before = now
        if m._migrating and i % 1000 == 0:
            assert all(key in m for key in model[-500:])
    assert len(released) == 3 and released[2] == released[1] + 1, released
    m._check()
    assert len(m) == len(model)
    assert all(m.get(key) == b"" for key in model)


def test_memory_counts_both_tables(CMap):
    m = CMap(8, 8)
    m._set_migration_step(2)
    i = 0
    while not m._migrating:
        m.set(i.to_bytes(8, "big"), bytes(8))
        i += 1
    during = m.nbytes
    while m._migrating:
        m.set(i.to_bytes(8, "big"), bytes(8))
        i += 1
    # the previous table (half the new one's size) was counted, then freed
    assert during > m.nbytes - 16 * 64  # the arena may have grown meanwhile
    assert m.__sizeof__() > m.nbytes
    m._check()


def test_invalidate_while_migrating(CMap):
    class Closed(Exception):
        pass

    m = CMap(8, 8)
    m._set_migration_step(2)
    i = 0
    while not m._migrating:
        m.set(i.to_bytes(8, "big"), bytes(8))
        i += 1
    m._invalidate(Closed, "closed")
    for call in (lambda: m.get(bytes(8)), lambda: bytes(8) in m, lambda: m.set(bytes(8), bytes(8))):
        with pytest.raises(Closed):
            call()


def test_migration_step_is_bounded_below(CMap):
    with pytest.raises(ValueError):
        CMap(8, 8)._set_migration_step(1)


# -- Hypothesis: both maps and the model, the compiled map migrating slowly ---


@st.composite
def growth_scripts(draw):
    k = draw(st.sampled_from([1, 2, 8]))
    v = draw(st.sampled_from([0, 1, 8]))
    keys = draw(st.lists(st.binary(min_size=k, max_size=k), min_size=8, max_size=120,
                         unique=True))
    key = st.sampled_from(keys)
    value = st.binary(min_size=v, max_size=v)
    op = st.one_of(
        st.tuples(st.just("set"), key, value),
        st.tuples(st.just("set"), key, value),
        st.tuples(st.just("set"), key, value),
        st.tuples(st.just("delete"), key),
        st.tuples(st.just("apply"), st.lists(st.tuples(key, st.none() | value), max_size=6)),
        st.tuples(st.just("get"), key),
        st.tuples(st.just("items"), st.none() | key, st.none() | key, st.booleans()),
        st.tuples(st.just("check")),
    )
    step = draw(st.sampled_from([2, 3, 64]))
    return k, v, step, draw(st.lists(op, max_size=300))


@given(script=growth_scripts())
def test_growth_scripts(both_maps, script):
    k, v, step, ops = script
    twins = Twins(both_maps, k, v)
    twins.maps[0]._set_migration_step(step)
    for op in ops:
        name = op[0]
        if name == "set":
            twins.set(op[1], op[2])
        elif name == "delete":
            twins.delete(op[1])
        elif name == "apply":
            twins.apply(op[1])
        elif name == "get":
            assert twins.same("get", op[1]) == ("returned", twins.model.get(op[1]))
            assert twins.same("__contains__", op[1]) == ("returned", op[1] in twins.model)
            assert twins.same("__len__") == ("returned", len(twins.model))
        elif name == "items":
            twins.items(op[1], op[2], op[3])
        else:
            twins.verify()
    twins.verify()


# -- the arena's memory --------------------------------------------------------------

_HUGE = 2 << 20


def _vm_flags(address: int) -> List[str]:
    """The VmFlags of the mapping of this process that holds ``address``."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def _block_after(address: int, size: int):
    """Map a page right after ``address + size`` (rounded up to a page), so
    that a block there cannot grow in place; returns an unmap function."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    where = (address + size + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
    fixed_noreplace = 0x100000
    got = libc.mmap(where, mmap.PAGESIZE, mmap.PROT_READ,
                    mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | fixed_noreplace, -1, 0)
    if got != where:
        pytest.skip(f"could not map a page at {where:#x} (errno {ctypes.get_errno()})")
    return lambda: libc.munmap(where, mmap.PAGESIZE)


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux /proc only")
@pytest.mark.parametrize("blocked", [False, True], ids=["grows-in-place", "moves"])
def test_arena_is_aligned_and_asks_for_huge_pages(CMap, blocked):
    """From 1 MiB on the arena starts on a 2 MiB boundary (a huge page can
    only back an aligned 2 MiB), from 4 MiB on it is advised for huge pages
    (VmFlags ``hg``), and it keeps its slots whether it grows in place or
    has to move (``blocked``: a page mapped right after it)."""
    m = CMap(8, 8)
    seen = []
    unblock = None
    rnd = random.Random(3)
    keys = []
    try:
        while len(seen) < 4:
            address, size = m._arena_block
            if blocked and size >= 1 << 20 and unblock is None:
                unblock = _block_after(address, size)
            key = rnd.randbytes(8)
            m.set(key, key)
            keys.append(key)
            now = m._arena_block
            if now[1] != size and now[1] >= 1 << 20:
                seen.append(now)
                assert now[0] % _HUGE == 0, (now, seen)
                if now[1] >= 4 << 20:
                    assert "hg" in _vm_flags(now[0]) and "hg" in _vm_flags(now[0] + now[1] - 1)
                if unblock is not None:
                    assert now[0] != address  # it had to move
                    unblock()
                    unblock = None
    finally:
        if unblock is not None:
            unblock()
    assert seen[-1][1] >= 8 << 20
    m._check()
    assert all(m.get(key) == key for key in keys)


def _anon_huge_kb(address: int, size: int) -> int:
    """AnonHugePages of this process's mappings over ``[address, address + size)``."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo < address + size and address < hi
            elif inside and head == "AnonHugePages:":
                total += int(line.split()[1])
    return total


def _thp_enabled() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def _collapsed() -> int:
    """Huge pages khugepaged has made, machine-wide (0 where not counted)."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                name, value = line.split()
                if name == "thp_collapse_alloc":
                    return int(value)
    except OSError:
        pass
    return 0


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux /proc only")
def test_a_bulk_load_faults_small_pages_then_asks_for_huge_ones(CMap):
    """A bulk load (apply_records as large as the map) faults its table and
    arena in as small pages, since a huge page fault can stall for ms, and
    asks for huge pages once it is done (VmFlags ``hg``), for khugepaged to
    merge them in the background.  khugepaged may do so at once, so a load
    during which it merged anything (anywhere) proves nothing about the
    faults: the load is tried again, up to 5 times."""
    n = 600_000  # a table of 2**20 entries: 4 MiB, the smallest advised
    rnd = random.Random(5)
    records = pack([(rnd.randbytes(8), b"v" * 8) for _ in range(n)], 8, 8)
    for _ in range(5):
        before = _collapsed()
        m = CMap(8, 8)
        m.apply_records(records, 8, 8)
        table, arena = m._table_block, m._arena_block
        assert table[1] >= 4 << 20 and arena[1] >= 4 << 20
        huge = {address: _anon_huge_kb(address, size) for address, size in (table, arena)}
        for address, size in (table, arena):
            for where in (address, address + size - 1):
                assert "hg" in _vm_flags(where)
                assert "nh" not in _vm_flags(where)
        assert len(m) == n
        m._check()
        if not _thp_enabled() or _collapsed() == before:
            break
    else:
        raise AssertionError("khugepaged merged pages during each of 5 loads: inconclusive")
    if _thp_enabled():
        assert huge == {table[0]: 0, arena[0]: 0}, "faulted as huge pages during the load"


# -- reserve -------------------------------------------------------------------------


def test_reserve_then_load_never_grows(CMap):
    """After reserve(n), loading n keys a chunk at a time (as recovery does)
    or one set() at a time never grows the table or the arena."""
    n = 50_000
    rnd = random.Random(7)
    keys = list(dict.fromkeys(rnd.randbytes(8) for _ in range(n)))
    for how in ("chunks", "sets"):
        m = CMap(8, 8)
        m._set_migration_step(2)
        m.reserve(len(keys))
        arena, size = m._arena_block
        table = m.nbytes - size
        assert size >= len(keys) * 16
        if how == "chunks":
            for i in range(0, len(keys), 3000):
                m.apply_records(pack([(key, key) for key in keys[i:i + 3000]], 8, 8), 8, 8)
                assert not m._migrating and m._arena_block == (arena, size)
        else:
            for key in keys:
                m.set(key, key)
                assert not m._migrating
        assert m._arena_block == (arena, size)
        list(m.items(None, b""))  # the sorted index, which reserve leaves alone
        m._check()
        assert all(m.get(key) == key for key in keys)
        # the table is the one reserve made: at least n / 0.7 positions
        assert table >= len(keys) / 0.7 * 4
        m.set(b"one more", b"12345678")  # past the reservation: grows as usual
        m._check()


def test_reserve_on_a_map_in_use(CMap):
    """Reserving while the table grows ends the growth (one rebuild); a
    smaller reservation than the map has changes nothing."""
    m = CMap(8, 8)
    m._set_migration_step(2)
    model = {}
    i = 0
    while not m._migrating:
        key = (i * 0x9E3779B97F4A7C15 % 2**64).to_bytes(8, "big")
        m.set(key, key)
        model[key] = key
        i += 1
    for key in list(model)[::3]:
        assert m.delete(key) == model.pop(key)
    m.reserve(4 * len(model))
    assert not m._migrating
    m._check()
    assert dict(m.items()) == model
    before = (m.nbytes, m._arena_block)
    m.reserve(len(model) // 2)
    m.reserve(0)
    assert (m.nbytes, m._arena_block) == before
    for k in range(3 * len(model)):
        key = k.to_bytes(8, "little")
        m.set(key, key)
        model[key] = key
        assert not m._migrating
    m._check()
    assert dict(m.items()) == model


# -- hash bits in the table's entries ---------------------------------------------------


def test_entries_carry_hash_bits_and_widen_their_ids(CMap):
    """A table's entries keep their high bits for hash bits, leaving room
    for slot ids up to 4 per position; churn on a tiny map (deleted keys'
    slots wait for a merge, up to 1024 of them) grows the arena past that,
    and the table is rebuilt with wider ids; every key stays found."""
    m = CMap(8, 8)
    assert m._id_bits < 32
    live = {}
    widths = {m._id_bits}
    for i in range(3000):
        key = i.to_bytes(8, "big")
        m.set(key, key)
        live[key] = key
        if len(live) > 4:
            old = next(iter(live))
            assert m.delete(old) == live.pop(old)
        widths.add(m._id_bits)
        if i % 250 == 0:
            assert all(m.get(k) == v for k, v in live.items())
    m._check()
    assert len(widths) > 1  # the ids widened with the arena
    assert m._id_bits <= 32 and dict(m.items()) == live
    # a large map keeps 9 or more hash bits per entry at 1M-key sizes
    big = CMap(4, 0)
    big.apply_records(pack([(i.to_bytes(4, "big"), b"") for i in range(300_000)], 4, 0), 4, 0)
    assert 32 - big._id_bits >= 9
    big._check()
