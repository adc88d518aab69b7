"""Parity of the compiled map (tinylsm._map) and its pure-Python twin.

Both maps get the same sequences of changes and reads and must return equal
results, equal to a ``dict`` model's, and pass their own ``_check()``.  Small
key spaces make overwrites, deletes and re-inserts after deletes common; the
larger seeded workloads reach the compiled map's radix sort, its merge paths,
its eager merge under churn and its table growth.
"""
from __future__ import annotations

import array
import operator
import random
from typing import Dict, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import load_twin

#: (K, V) pairs the Hypothesis tests run with; (8, 0) has no value at all.
SIZES = [(1, 1), (2, 3), (8, 8), (16, 4), (32, 32), (8, 0)]
SIZE_IDS = [f"k{k}v{v}" for k, v in SIZES]


def outcome(fn, *args):
    """What a call did: its result, or the type and message it raised."""
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the exception is the result
        return ("raised", type(exc), str(exc))
    if hasattr(result, "__next__"):
        result = list(result)
    return ("returned", result)


def pack(changes, k: int, v: int) -> bytes:
    """Packed records for ``(key, value_or_None)`` changes (crc left zero:
    maps do not check it)."""
    return b"".join(
        b"\0\0\0\0" + (b"\x01" + key + value if value is not None else b"\x00" + key + bytes(v))
        for key, value in changes
    )


class Twins:
    """Both maps and a dict model, driven in lockstep."""

    def __init__(self, both_maps, k: int, v: int) -> None:
        self.k, self.v = k, v
        self.maps = [cls(k, v) for cls in both_maps]
        self.model: Dict[bytes, bytes] = {}

    def same(self, name: str, *args):
        results = [outcome(getattr(m, name), *args) for m in self.maps]
        assert results[0] == results[1], f"{name}{args!r:.200}: {results[0]!r:.300} != {results[1]!r:.300}"
        return results[0]

    def set(self, key: bytes, value: bytes) -> None:
        got = self.same("set", key, value)
        assert got == ("returned", self.model.get(key))
        self.model[key] = value

    def delete(self, key: bytes) -> None:
        got = self.same("delete", key)
        assert got == ("returned", self.model.pop(key, None))

    def apply(self, changes) -> None:
        self.same("apply_records", pack(changes, self.k, self.v), self.k, self.v)
        for key, value in changes:
            if value is None:
                self.model.pop(key, None)
            else:
                self.model[key] = value

    def apply_packed(self, pairs, removals) -> None:
        """Records set in order, then removals deleted (``write_packed``)."""
        records = b"".join(key + value for key, value in pairs)
        gone = None if removals is None else b"".join(removals)
        self.same("apply_packed", records, gone, self.k, self.v)
        for key, value in pairs:
            self.model[key] = value
        for key in removals or ():
            self.model.pop(key, None)

    def items(self, start: Optional[bytes], stop: Optional[bytes], reverse: bool) -> None:
        got = self.same("items", start, stop, reverse)
        want = sorted(
            (kv for kv in self.model.items()
             if (start is None or kv[0] >= start) and (stop is None or kv[0] < stop)),
            reverse=reverse,
        )
        assert got == ("returned", want)
        got = self.same("keys", start, stop, reverse)
        assert got == ("returned", [key for key, _ in want])
        chunk = 1 + len(want) // 3  # three chunks, the last one shorter
        got = self.same("export", start, stop, reverse, chunk)
        assert [bytes(c) for c in got[1]] == [
            b"".join(k + v for k, v in want[i:i + chunk]) for i in range(0, len(want), chunk)]

    def verify(self) -> None:
        for m in self.maps:
            m._check()
            assert len(m) == len(self.model)
        assert self.maps[0].version == self.maps[1].version
        assert list(self.maps[0].items()) == list(self.maps[1].items()) == sorted(self.model.items())
        assert list(self.maps[0].keys()) == list(self.maps[1].keys()) == sorted(self.model)
        for key, value in self.model.items():
            for m in self.maps:
                assert m.get(key) == value and m[key] == value and key in m


@st.composite
def scripts(draw, k: int, v: int):
    """A small key space and a list of operations on it."""
    keys = draw(st.lists(st.binary(min_size=k, max_size=k), min_size=1, max_size=10, unique=True))
    key = st.sampled_from(keys)
    value = st.binary(min_size=v, max_size=v)
    bound = st.none() | key | st.binary(max_size=k + 1)
    op = st.one_of(
        st.tuples(st.just("set"), key, value),
        st.tuples(st.just("set"), key, value),
        st.tuples(st.just("delete"), key),
        st.tuples(st.just("apply"), st.lists(st.tuples(key, st.none() | value), max_size=8)),
        st.tuples(st.just("packed"), st.lists(st.tuples(key, value), max_size=8),
                  st.none() | st.lists(key, max_size=4)),
        st.tuples(st.just("items"), bound, bound, st.booleans()),
        st.tuples(st.just("get"), key | st.binary(max_size=k + 1)),
        st.tuples(st.just("check")),
    )
    return draw(st.lists(op, max_size=40))


@pytest.mark.parametrize("k,v", SIZES, ids=SIZE_IDS)
@given(data=st.data())
def test_random_scripts(both_maps, k, v, data):
    twins = Twins(both_maps, k, v)
    for op in data.draw(scripts(k, v)):
        name = op[0]
        if name == "set":
            twins.set(op[1], op[2])
        elif name == "delete":
            twins.delete(op[1])
        elif name == "apply":
            twins.apply(op[1])
        elif name == "packed":
            twins.apply_packed(op[1], op[2])
        elif name == "items":
            twins.items(op[1], op[2], op[3])
        elif name == "get":
            got = twins.same("get", op[1])
            assert got == ("returned", twins.model.get(op[1]))
            assert twins.same("__contains__", op[1]) == ("returned", op[1] in twins.model)
        else:
            twins.verify()
    twins.verify()


def _workload(both_maps, k: int, v: int, seed: int, nkeys: int, nops: int, prefix: bytes) -> None:
    """A seeded random workload on ``nkeys`` keys sharing ``prefix``."""
    rnd = random.Random(seed)
    tail = k - len(prefix)
    keys = list(dict.fromkeys(prefix + rnd.randbytes(tail) for _ in range(nkeys)))
    twins = Twins(both_maps, k, v)
    for _ in range(nops):
        r = rnd.random()
        key = rnd.choice(keys)
        if r < 0.45:
            twins.set(key, rnd.randbytes(v))
        elif r < 0.7:
            twins.delete(key)
        elif r < 0.75:
            changes = [(rnd.choice(keys), None if rnd.random() < 0.3 else rnd.randbytes(v))
                       for _ in range(rnd.randrange(200))]
            twins.apply(changes)
        elif r < 0.76:
            twins.apply_packed([(rnd.choice(keys), rnd.randbytes(v)) for _ in range(rnd.randrange(300))],
                               [rnd.choice(keys) for _ in range(rnd.randrange(30))])
        elif r < 0.78:
            bounds = sorted(rnd.sample(keys, 2))
            twins.items(bounds[0], bounds[1], rnd.random() < 0.5)
        elif r < 0.79:
            twins.verify()
    twins.verify()


@pytest.mark.parametrize("k,v,prefix", [
    (8, 8, b""), (16, 4, b"user:"), (32, 32, b"common-prefix-of-20b"), (2, 3, b""), (8, 0, b"\0\0\0"),
], ids=["k8v8", "k16v4-shared5", "k32v32-shared20", "k2v3", "k8v0-shared3"])
@given(seed=st.integers(0, 2**32))
def test_seeded_workloads(both_maps, k, v, prefix, seed):
    _workload(both_maps, k, v, seed, nkeys=300, nops=600, prefix=prefix)


@pytest.mark.parametrize("prefix", [b"", b"same8byt", b"same-first-ten-b"], ids=["random", "shared8", "shared16"])
def test_bulk_sort_matches_sorted(Map, prefix):
    """A large unsorted bulk load (radix sort with equal-prefix runs), then
    removals found by binary search, then by a full pass."""
    k, v = 32, 4
    rnd = random.Random(len(prefix))
    model = {prefix + rnd.randbytes(k - len(prefix)): rnd.randbytes(v) for _ in range(20000)}
    # duplicates in the prefix's next bytes make deeper tie runs
    for key in list(model)[:2000]:
        model[key[:-1] + b"\xff"] = b"dupe"
    m = Map(k, v)
    m.apply_records(pack(model.items(), k, v), k, v)
    m._check()
    assert list(m.items()) == sorted(model.items())
    for key in rnd.sample(sorted(model), 50):  # few: binary search
        assert m.delete(key) == model.pop(key)
    assert list(m.items()) == sorted(model.items())
    for key in rnd.sample(sorted(model), 5000):  # many: full pass
        assert m.delete(key) == model.pop(key)
    for i in range(3000):  # re-inserts reuse the freed slots
        key = prefix + rnd.randbytes(k - len(prefix))
        m.set(key, b"new!")
        model[key] = b"new!"
    m._check()
    assert list(m.items(reverse=True)) == sorted(model.items(), reverse=True)


def test_long_shared_prefixes(both_maps):
    """Keys that differ only far in (the radix sort's tie runs go deep)."""
    k = 1024
    rnd = random.Random(11)
    keys = [bytes(k - 16) + rnd.randbytes(16) for _ in range(300)]
    keys += [bytes(rnd.randrange(k)) + b"\1" + bytes(0) for _ in range(300)]
    keys = [key.ljust(k, b"\0")[:k] for key in keys]
    for Map in both_maps:
        m = Map(k, 1)
        m.apply_records(pack([(key, b"x") for key in keys], k, 1), k, 1)
        assert [key for key, _ in m.items()] == sorted(set(keys))
        m._check()


def test_growth_past_many_resizes(Map):
    n = 100_000
    m = Map(8, 8)
    rnd = random.Random(5)
    keys = [rnd.randbytes(8) for _ in range(n)]
    model = {}
    for i, key in enumerate(keys):
        m.set(key, i.to_bytes(8, "little"))
        model[key] = i.to_bytes(8, "little")
    assert len(m) == len(model)
    m._check()
    for key in keys[::2]:
        assert m.delete(key) == model.pop(key)
    for key in keys[::4]:
        m.set(key, b"again!!!")
        model[key] = b"again!!!"
    m._check()
    assert len(m) == len(model)
    assert list(m.items()) == sorted(model.items())
    for key in keys[:1000]:
        assert m.get(key) == model.get(key)
    # increasing keys take the merge's append path
    m2 = Map(4, 0)
    for i in range(n):
        m2.set(i.to_bytes(4, "big"), b"")
        if i % 10_000 == 0:
            assert len(list(m2.items())) == i + 1
    m2._check()
    assert [key for key, _ in m2.items()] == [i.to_bytes(4, "big") for i in range(n)]


def test_churn_without_ordered_reads_stays_bounded():
    """Deleted keys' slots are reused even if nothing ever reads in order."""
    Map = load_twin("_map", "cython").SortedMap
    m = Map(8, 8)
    for i in range(1000):
        m.set(i.to_bytes(8, "big"), bytes(8))
    before = None
    for i in range(1000, 300_000):
        m.set(i.to_bytes(8, "big"), bytes(8))
        m.delete((i - 1000).to_bytes(8, "big"))
        if i == 20_000:
            before = m.nbytes
    assert len(m) == 1000
    assert m.nbytes <= before
    m._check()


# -- iteration -------------------------------------------------------------------


@pytest.mark.parametrize("change", ["set", "overwrite", "delete", "apply"])
@pytest.mark.parametrize("kind", ["items", "keys"])
def test_iteration_raises_after_a_change(Map, change, kind):
    m = Map(2, 1)
    for i in range(10):
        m.set(bytes((0, i)), b"x")
    it = getattr(m, kind)()
    assert next(it) == ((b"\0\0", b"x") if kind == "items" else b"\0\0")
    if change == "set":
        m.set(b"\1\1", b"y")
    elif change == "overwrite":
        m.set(b"\0\5", b"x")
    elif change == "delete":
        m.delete(b"\x00\x09")
    else:
        m.apply_records(pack([(b"\0\3", None)], 2, 1), 2, 1)
    with pytest.raises(RuntimeError, match="tinylsm store changed during iteration"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_iteration_range_is_fixed_at_the_call(Map):
    m = Map(1, 0)
    m.set(b"a", b"")
    it = m.items(b"a", b"z")
    m.set(b"b", b"")
    with pytest.raises(RuntimeError):
        next(it)
    # no change, no error; an absent delete is no change
    it = m.items()
    m.delete(b"q")
    m.apply_records(b"", 1, 0)
    assert list(it) == [(b"a", b""), (b"b", b"")]
    # an exhausted iterator ends quietly even after a change
    it = m.items()
    assert len(list(it)) == 2
    m.set(b"c", b"")
    assert list(it) == []


def test_iteration_tuples_are_independent(Map):
    m = Map(1, 1)
    for i in range(20):
        m.set(bytes((i,)), bytes((i * 2,)))
    kept = []
    for pair in m.items():
        kept.append(pair)
    assert kept == [(bytes((i,)), bytes((i * 2,))) for i in range(20)]
    unpacked = [(key, value) for key, value in m.items(reverse=True)]
    assert unpacked == kept[::-1]
    it = m.items()
    first, second = next(it), next(it)
    assert first == (b"\0", b"\0") and second == (b"\1", b"\2")


def test_bounds(Map):
    m = Map(2, 0)
    for key in (b"aa", b"ab", b"b\0", b"ba", b"zz"):
        m.set(key, b"")
    def keys(*a, **kw):
        got = [key for key, _ in m.items(*a, **kw)]
        assert list(m.keys(*a, **kw)) == got
        return got

    assert keys(b"a", b"b") == [b"aa", b"ab"]
    assert keys(b"ab\0", b"ba") == [b"b\0"]
    assert keys(b"b", None) == [b"b\0", b"ba", b"zz"]
    assert keys(b"", b"") == []
    assert keys(b"zz", b"aa") == []
    assert keys(bytearray(b"ab"), memoryview(b"ba")) == [b"ab", b"b\0"]
    assert keys(None, b"ba", reverse=True) == [b"b\0", b"ab", b"aa"]
    with pytest.raises(TypeError, match="start: expected a bytes-like object, got str"):
        m.items("aa")
    with pytest.raises(TypeError, match="stop: expected a bytes-like object, got int"):
        m.items(None, 5)


# -- point operations ------------------------------------------------------------


def test_lookups_accept_bytes_like_and_ignore_the_rest(Map):
    m = Map(8, 4)
    key = (1).to_bytes(8, "little")
    m.set(key, b"vvvv")
    for same in (key, bytearray(key), memoryview(key), array.array("I", [1, 0]),
                 memoryview(b"xx" + key)[2:]):
        assert m.get(same) == b"vvvv"
        assert same in m
        assert m[same] == b"vvvv"
    for other in (key[:7], key + b"\0", "12345678", 12345678, None, 1.5, [1] * 8):
        assert m.get(other) is None
        assert other not in m
        assert m.delete(other) is None
        with pytest.raises(KeyError) as info:
            m[other]
        assert info.value.args == (other,)
    assert m.delete(bytearray(key)) == b"vvvv"
    assert len(m) == 0
    m.set(memoryview(key), bytearray(b"wwww"))
    value = m.get(key)
    assert type(value) is bytes and value == b"wwww"


def test_set_rejects_bad_keys_and_values(both_maps):
    for Map in both_maps:
        m = Map(4, 2)
        for args, exc, message in [
            (("abcd", b"vv"), TypeError, "key: expected a bytes-like object, got str"),
            ((b"abc", b"vv"), ValueError, "key: expected 4 bytes, got 3"),
            ((b"abcd", None), TypeError, "value: expected a bytes-like object, got NoneType"),
            ((b"abcd", b"vvv"), ValueError, "value: expected 2 bytes, got 3"),
            ((b"abc", b"vvv"), ValueError, "key: expected 4 bytes, got 3"),
        ]:
            with pytest.raises(exc) as info:
                m.set(*args)
            assert str(info.value) == message
        assert len(m) == 0 and m.version == 0
        m._check()


def test_constructor_and_apply_records_errors(both_maps):
    c, p = both_maps
    for args in [(0, 1), (1, -1), (65537, 0), ("8", 8), (True, 8), (8, 1.0)]:
        assert outcome(c, *args) == outcome(p, *args)
        assert outcome(c, *args)[0] == "raised"
    for Map in both_maps:
        m = Map(2, 2)
        with pytest.raises(ValueError, match="multiple of 9 bytes, got 10"):
            m.apply_records(bytes(10), 2, 2)
        with pytest.raises(ValueError, match="key_size=3"):
            m.apply_records(bytes(10), 3, 2)
        with pytest.raises(TypeError):
            m.apply_records(None, 2, 2)
        m.apply_records(bytearray(pack([(b"ab", b"cd")], 2, 2)), 2, 2)
        m.apply_records(memoryview(pack([(b"ab", b"ef"), (b"xy", b"zz"), (b"xy", None)], 2, 2)), 2, 2)
        assert list(m.items()) == [(b"ab", b"ef")]
        assert m.version == 4


def test_apply_packed_errors_change_nothing(both_maps):
    for Map in both_maps:
        m = Map(2, 2)
        m.apply_packed(b"abcd", None, 2, 2)
        for args, exc, message in [
            ((bytes(5), None, 2, 2), ValueError, "packed records: expected a multiple of 4 bytes, got 5"),
            ((bytes(4), bytes(3), 2, 2), ValueError, "packed keys: expected a multiple of 2 bytes, got 3"),
            ((bytes(4), None, 3, 2), ValueError, "key_size=3"),
            ((None, None, 2, 2), TypeError, None),
            ((bytes(4), "ab", 2, 2), TypeError, None),
        ]:
            with pytest.raises(exc, match=message):
                m.apply_packed(*args)
        assert list(m.items()) == [(b"ab", b"cd")] and m.version == 1
        m.apply_packed(bytearray(b"xyzzabef"), memoryview(b"xy"), 2, 2)
        assert list(m.items()) == [(b"ab", b"ef")] and m.version == 4
        m._check()


def test_reserve_checks_its_argument_alike(both_maps):
    c, p = both_maps
    for n in ("3", 2.0, True, None, -1, 2**32 - 1, 2**64):
        got = [outcome(Map(8, 8).reserve, n) for Map in (c, p)]
        assert got[0] == got[1] and got[0][0] == "raised", (n, got)
    for Map in both_maps:
        m = Map(4, 4)
        m.set(b"abcd", b"efgh")
        assert m.reserve(0) is None and m.reserve(1000) is None
        assert list(m.items()) == [(b"abcd", b"efgh")] and m.version == 1
        m._check()


def test_sizes_are_fixed(Map):
    m = Map(4, 4)
    assert (m.key_size, m.value_size) == (4, 4)
    for name in ("key_size", "value_size"):
        with pytest.raises(AttributeError):
            setattr(m, name, 2)
    with pytest.raises(ValueError):
        Map(0, 4)
    with pytest.raises(TypeError):
        Map(4, "4")


def test_invalidate(Map):
    class Closed(Exception):
        pass

    m = Map(1, 1)
    m.set(b"a", b"b")
    m.set(b"c", b"d")
    it, keys = m.items(), m.keys()
    assert next(it) == (b"a", b"b") and next(keys) == b"a"
    m._invalidate(Closed, "store is closed")
    for call in (lambda: m.get(b"a"), lambda: m[b"a"], lambda: b"a" in m, lambda: len(m),
                 lambda: m.set(b"a", b"b"), lambda: m.delete(b"a"), lambda: m.items(),
                 lambda: m.keys(), lambda: m.reserve(10), lambda: m.apply_records(b"", 1, 1)):
        with pytest.raises(Closed, match="store is closed"):
            call()
    for started in (it, keys):
        with pytest.raises(Closed, match="store is closed"):
            next(started)


def test_nbytes(Map):
    m = Map(8, 8)
    empty = m.nbytes
    for i in range(10_000):
        m.set(i.to_bytes(8, "big"), bytes(8))
    list(m.items())
    assert m.nbytes > empty + 10_000 * 16


def test_compiled_map_is_compact():
    """Per-key memory of the compiled map's arrays at 8/8 and 32/32."""
    Map = load_twin("_map", "cython").SortedMap
    for k, v, limit in [(8, 8, 48), (32, 32, 110)]:
        m = Map(k, v)
        n = 200_000
        rnd = random.Random(k)
        blob = rnd.randbytes(n * k)
        m.apply_records(b"".join(b"\0\0\0\0\1" + blob[i * k:(i + 1) * k] + bytes(v)
                                 for i in range(n)), k, v)
        list(m.items(None, b""))
        # allocated (not merely touched) bytes, so growth slack counts too
        assert m.nbytes / len(m) < limit


# -- export ---------------------------------------------------------------------------


def _loaded(Map, n: int = 10):
    m = Map(2, 1)
    for i in range(n):
        m.set(bytes((0, i)), bytes((i,)))
    return m


@pytest.mark.parametrize("args, error", [
    ((None, None, False, "3"), "TypeError: chunk_records: expected int, got str"),
    ((None, None, False, True), "TypeError: chunk_records: expected int, got bool"),
    ((None, None, False, 1.0), "TypeError: chunk_records: expected int, got float"),
    ((None, None, False, 0), "ValueError: chunk_records: expected at least 1, got 0"),
    ((None, None, False, -5), "ValueError: chunk_records: expected at least 1, got -5"),
    (("ab", None, False, 2), "TypeError: start: expected a bytes-like object, got str"),
])
def test_export_refuses_bad_arguments_alike(both_maps, args, error):
    results = [outcome(_loaded(Map).export, *args) for Map in both_maps]
    assert results[0] == results[1]
    assert f"{results[0][1].__name__}: {results[0][2]}" == error


def test_export_chunks(both_maps):
    for Map in both_maps:
        m = _loaded(Map)
        chunks = list(m.export(None, None, False, 4))
        assert [len(c) for c in chunks] == [12, 12, 6]
        assert all(c.readonly and c.format == "B" and c.ndim == 1 for c in chunks)
        assert b"".join(chunks) == b"".join(bytes((0, i, i)) for i in range(10))
        assert list(m.export(None, None, True, 2**70)) == [b"".join(
            bytes((0, i, i)) for i in reversed(range(10)))]
        assert list(m.export(b"\5", b"\1")) == [] and list(Map(3, 0).export()) == []
    compiled = _loaded(both_maps[0]).export(b"\0\3", None, False, 3)
    assert operator.length_hint(compiled) == 3  # chunks: 7 records, 3 a chunk
    next(compiled)
    assert operator.length_hint(compiled) == 2


def test_export_after_a_change_raises_and_kept_chunks_stay(both_maps):
    for Map in both_maps:
        m = _loaded(Map)
        it = m.export(None, None, False, 3)
        first = next(it)
        kept = bytes(first)
        m.set(b"\0\1", b"z")  # a key of the chunk already handed out
        with pytest.raises(RuntimeError, match="changed during iteration"):
            next(it)
        assert bytes(first) == kept  # a new bytes object per chunk
        with pytest.raises(StopIteration):
            next(it)
        it = m.export(None, None, True, 3)
        next(it)
        m.apply_records(pack([(b"\0\x20", b"n")], 2, 1), 2, 1)
        with pytest.raises(RuntimeError, match="changed during iteration"):
            next(it)
        it = m.export(None, None, False, 100)
        assert len(next(it)) == 33
        m.set(b"\0\x21", b"z")
        with pytest.raises(StopIteration):  # done before the change: no error
            next(it)


def test_export_of_an_invalidated_map(both_maps):
    for Map in both_maps:
        m = _loaded(Map)
        it = m.export(None, None, False, 2)
        next(it)
        m._invalidate(ValueError, "gone")
        with pytest.raises(ValueError, match="gone"):
            next(it)
        with pytest.raises(ValueError, match="gone"):
            m.export()


def test_pure_export_refuses_a_chunk_copied_during_a_batch():
    """The pure map applies a batch key by key: a chunk copied while one is
    under way (another thread, between two of its keys) raises."""
    Map = load_twin("_map", "python").SortedMap
    m = _loaded(Map)
    it = m.export(None, None, False, 2)
    m._applying = True  # as apply_records sets it while it runs
    with pytest.raises(RuntimeError, match="changed during iteration"):
        next(it)
