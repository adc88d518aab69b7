"""``StoreCore``, the store's hot paths, on its own: what its fast paths log
and change, and that a change the log did not take never reaches the map.

A ``Core`` here is a ``StoreCore`` attached to a map and a log buffer, whose
slow paths record their calls and do what ``Lsm``'s do (append the frame,
then change the map).  The compiled twin takes most calls on its fast paths
(one C call: the frame appended to the buffer, then the map changed); the
pure-Python twin sends every call to the slow paths.  Both must leave the
same frames in the buffer and the same map.
"""
from __future__ import annotations

import random
from typing import Dict, List, Optional

import pytest

from conftest import BUILDS, load_twin


def make_core(build: str, k: int, v: int, cap: int = 1 << 62):
    maps = load_twin("_map", build)
    codec = load_twin("_codec", build)

    class Core(maps.StoreCore):
        def __init__(self) -> None:
            self.slow: List[str] = []
            self.buf = bytearray()
            self.m = maps.SortedMap(k, v)
            self._attach(self.m, self.buf, codec.frame_size(k, v))
            self._set_fast_cap(cap)

        def _slow_insert(self, key, value):
            self.slow.append("insert")
            frame = codec.encode_frame(key, value, k, v)
            self.buf += frame
            return self.m.set(key, value)

        def _slow_remove(self, key):
            self.slow.append("remove")
            if key not in self.m:
                return None
            self.buf += codec.encode_frame(key, None, k, v)
            return self.m.delete(key)

        def _slow_insert_if_absent(self, key, value):
            self.slow.append("insert_if_absent")
            old = self.m.get(key)
            if old is not None:
                return old
            self.buf += codec.encode_frame(key, value, k, v)
            return self.m.set(key, value)

    return Core(), codec


def _random_changes(build: str, k: int, v: int):
    """Random inserts (by ``insert``, ``[]=``, ``insert_if_absent``) and
    removes, with the buffer written out now and then (emptied in place,
    wholly or from the front, as the log does), checked against a dict
    model; returns the whole log and the map's items."""
    rnd = random.Random(k * 100 + v)
    keys = [rnd.randbytes(k) for _ in range(50)]
    core, codec = make_core(build, k, v)
    model: Dict[bytes, bytes] = {}
    frames: List[bytes] = []  # what the log got, written out or buffered
    written = 0
    for _ in range(5000):
        key = rnd.choice(keys)
        value = rnd.randbytes(v)
        r = rnd.random()
        if r < 0.3:
            assert core.insert(key, value) == model.get(key)
            model[key] = value
            frames.append(codec.encode_frame(key, value, k, v))
        elif r < 0.55:
            core[key] = value
            model[key] = value
            frames.append(codec.encode_frame(key, value, k, v))
        elif r < 0.7:
            got = core.insert_if_absent(key, value)
            assert got == model.get(key)
            if got is None:
                model[key] = value
                frames.append(codec.encode_frame(key, value, k, v))
        elif r < 0.95:
            old = model.pop(key, None)
            assert core.remove(key) == old
            if old is not None:
                frames.append(codec.encode_frame(key, None, k, v))
        elif r < 0.98:
            written += len(core.buf)
            del core.buf[:]
        else:
            cut = rnd.randrange(len(core.buf) + 1)
            written += cut
            del core.buf[:cut]
        assert written + len(core.buf) == sum(map(len, frames))
    log = b"".join(frames)
    assert core.buf == log[written:]
    assert dict(core.m.items()) == model
    core.m._check()
    if build == "cython":
        assert core.slow == []
    return log, list(core.m.items())


@pytest.mark.parametrize("k,v", [(8, 8), (3, 0), (32, 32)], ids=["k8v8", "k3v0", "k32v32"])
def test_changes_log_their_frames_in_both_builds(k, v):
    """Both builds return what a dict model says, log exactly the frames
    of the changes made, and end alike."""
    assert _random_changes("cython", k, v) == _random_changes("python", k, v)


def test_fast_paths_take_what_they_can():
    """The compiled twin's fast paths take exact ``bytes`` of the right
    sizes while the buffer stays within the fast cap; the rest go to the
    slow paths.  The pure twin has no fast path."""
    core, codec = make_core("cython", 4, 2, cap=-1)
    core.insert(b"abcd", b"xy")
    core[b"abcd"] = b"zz"
    assert core.slow == ["insert", "insert"]
    frame = codec.frame_size(4, 2)
    core._set_fast_cap(len(core.buf) + 2 * frame)
    core.slow.clear()
    core[b"abce"] = b"12"                        # fast
    assert core.insert(b"abcd", b"34") == b"zz"  # fast: the cap is reached now
    core[bytearray(b"abcf")] = b"12"             # not bytes: slow
    core[b"abcg"] = b"12"                        # no room: slow
    assert core.remove(b"abce") == b"12"         # no room: slow
    assert core.slow == ["insert", "insert", "remove"]
    assert len(core.buf) == 7 * frame
    py, _ = make_core("python", 4, 2)
    py[b"abcd"] = b"xy"
    py.insert(b"abcd", b"zz")
    assert py.remove(b"abcd") == b"zz"
    assert py.slow == ["insert", "insert", "remove"]


@pytest.mark.parametrize("build", BUILDS)
def test_setitem_and_delitem_do_not_go_through_insert_and_remove(build):
    """``store[k] = v`` and ``del store[k]`` do insert's and remove's work
    themselves in both builds (no lookup of the method on the instance): a
    subclass's ``insert`` or ``remove`` is not called."""
    core, _ = make_core(build, 2, 2)

    def refuse(self, *args):
        raise AssertionError("called")

    type(core).insert = type(core).remove = refuse
    core[b"ab"] = b"cd"
    assert core.m.get(b"ab") == b"cd"
    del core[b"ab"]
    assert core.m.get(b"ab") is None
    with pytest.raises(KeyError):
        del core[b"ab"]


@pytest.mark.parametrize("change", ["insert", "setitem", "overwrite", "insert_if_absent",
                                    "remove"])
def test_a_change_the_log_refuses_leaves_the_map_alone(change):
    """While a view of the buffer is held, the buffer cannot be resized:
    the fast path raises BufferError, and neither the map nor the buffer
    has changed (a map change the log did not take would be lost in a
    crash)."""
    core, codec = make_core("cython", 8, 8)
    for i in range(100):
        core[i.to_bytes(8, "big")] = bytes(8)
    present, absent = (5).to_bytes(8, "big"), (500).to_bytes(8, "big")
    before = (list(core.m.items()), bytes(core.buf), core.m.version)
    call = {
        "insert": lambda: core.insert(absent, b"new-valu"),
        "setitem": lambda: core.__setitem__(absent, b"new-valu"),
        "overwrite": lambda: core.insert(present, b"new-valu"),
        "insert_if_absent": lambda: core.insert_if_absent(absent, b"new-valu"),
        "remove": lambda: core.remove(present),
    }[change]
    with memoryview(core.buf):
        with pytest.raises(BufferError):
            call()
        assert (list(core.m.items()), bytes(core.buf), core.m.version) == before
    assert core.slow == []
    call()  # and once the view is gone, it goes through
    assert bytes(core.buf) != before[1] and core.m.version == before[2] + 1
    core.m._check()


def test_buffer_room_is_reused_not_reallocated_per_frame():
    """The fast path grows an emptied buffer once, to the fast cap, and
    then fills it (``bytearray`` would grow by an eighth at a time, copying
    it each time); after a write-out empties it, once again."""
    cap = 32 * 1024
    core, codec = make_core("cython", 8, 8, cap=cap)
    frame = codec.frame_size(8, 8)
    for _ in range(2):
        allocs = set()
        for i in range(cap // frame):
            core[i.to_bytes(8, "big")] = bytes(8)
            allocs.add(core.buf.__alloc__())
        assert allocs == {cap + 1}  # its bytes and bytearray's trailing NUL
        assert core.slow == [] and len(core.buf) == (cap // frame) * frame
        core[b"one more"] = bytes(8)  # over the cap: slow
        assert core.slow == ["insert"]
        core.slow.clear()
        del core.buf[:]  # written out


# -- get_many ----------------------------------------------------------------------


def _outcome(fn, *args):
    try:
        return ("returned", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the exception is the result
        return ("raised", type(exc), str(exc))


@pytest.mark.parametrize("k,v", [(8, 8), (1, 0), (16, 4)], ids=["k8v8", "k1v0", "k16v4"])
def test_get_many_matches_get_in_both_builds(k, v):
    """Batches of present and absent keys (bytes, bytearray, memoryview; in
    lists, tuples and generators; empty; longer than a batch) give the
    values ``get`` gives, in order, in both builds."""
    rnd = random.Random(k)
    cores = [make_core(build, k, v)[0] for build in BUILDS]
    space = [rnd.randbytes(k) for _ in range(300)]
    for key in space[:200]:
        value = rnd.randbytes(v)
        for core in cores:
            core[key] = value
    for size in (0, 1, 15, 16, 17, 100, 1000):
        keys = [rnd.choice(space) for _ in range(size)]
        for core in cores:
            want = [core.get(key) for key in keys]
            assert core.get_many(keys) == want
            assert core.get_many(tuple(keys)) == want
            assert core.get_many(key for key in keys) == want
            mixed = [bytearray(key) if i % 3 == 1 else memoryview(key) if i % 3 == 2 else key
                     for i, key in enumerate(keys)]
            assert core.get_many(mixed) == want
            assert all(type(got) is bytes for got in core.get_many(mixed) if got is not None)


@pytest.mark.parametrize("bad,message", [
    ([b"abcd", b"abc"], (ValueError, "key of item 1: expected 4 bytes, got 3")),
    ([b"abcd", b"abcd", "abcd"], (TypeError, "key of item 2: expected a bytes-like object, "
                                             "got str")),
    ([None], (TypeError, "key of item 0: expected a bytes-like object, got NoneType")),
    (b"abcd", (TypeError, "keys: expected an iterable of keys, got bytes (for one key, use "
                          "get())")),
    (memoryview(b"abcd"), (TypeError, "keys: expected an iterable of keys, got memoryview "
                                      "(for one key, use get())")),
    (5, (TypeError, "'int' object is not iterable")),
], ids=["short", "str", "none", "bytes", "memoryview", "int"])
def test_get_many_refuses_bad_keys_alike(bad, message):
    """A bad key raises, naming its position, the same error in both
    builds; present keys before it make no difference."""
    got = []
    for build in BUILDS:
        core, _ = make_core(build, 4, 1)
        core[b"abcd"] = b"x"
        got.append(_outcome(core.get_many, bad))
    assert got[0] == got[1] == ("raised", *message)


def test_get_many_while_the_table_grows():
    """Keys in either table while the compiled map's table migrates (the
    smallest step makes growth span many changes)."""
    core, _ = make_core("cython", 8, 8)
    core.m._set_migration_step(2)
    rnd = random.Random(9)
    model = {}
    checked_migrating = 0
    for i in range(20_000):
        key = rnd.randbytes(8)
        core[key] = key
        model[key] = key
        if core.m._migrating and i % 97 == 0:
            keys = rnd.sample(list(model), 40) + [rnd.randbytes(8) for _ in range(10)]
            assert core.get_many(keys) == [model.get(key) for key in keys]
            checked_migrating += 1
    assert checked_migrating > 10


@pytest.mark.parametrize("build", BUILDS)
def test_get_many_on_a_closed_map(build):
    class Closed(Exception):
        pass

    core, _ = make_core(build, 2, 2)
    core[b"ab"] = b"cd"
    core.m._invalidate(Closed, "it is closed")
    for keys in ([b"ab"], [], [b"bad key"]):
        with pytest.raises(Closed, match="it is closed"):
            core.get_many(keys)
