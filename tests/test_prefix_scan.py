"""``range(prefix=...)``: the keys that begin with a prefix, in either order."""
from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinylsm
from tinylsm import _prefix

K, V = 3, 1

# bytes that sit at the edges of the increment: 0x00, 0xfe and 0xff
EDGY = st.sampled_from(b"\x00\x01\x7f\xfe\xff")


def keys_of(size: int):
    return st.binary(min_size=size, max_size=size) | st.lists(
        EDGY, min_size=size, max_size=size).map(bytes)


@given(keys=st.sets(keys_of(K), max_size=40),
       prefix=st.integers(0, K).flatmap(keys_of),
       reverse=st.booleans())
def test_prefix_scan_is_the_full_scan_filtered(keys, prefix, reverse):
    with tempfile.TemporaryDirectory() as tmp:
        with tinylsm.open(os.path.join(tmp, "db"), key_size=K, value_size=V) as db:
            db.write_batch((k, k[-1:]) for k in keys)
            expected = [(k, v) for k, v in db.range() if k.startswith(prefix)]
            if reverse:
                expected.reverse()
            assert list(db.range(prefix=prefix, reverse=reverse)) == expected
            # the views are unaffected
            assert list(db.keys()) == sorted(keys)
            assert list(db.items()) == [(k, k[-1:]) for k in sorted(keys)]


@given(prefix=st.integers(0, 4).flatmap(keys_of), other=keys_of(4))
def test_bounds_hold_exactly_the_keys_with_the_prefix(prefix, other):
    start, stop = _prefix.bounds(prefix, 4)
    inside = start <= other and (stop is None or other < stop)
    assert inside == other.startswith(prefix)


@pytest.fixture
def db(tmp_path):
    store = tinylsm.open(tmp_path / "db", key_size=K, value_size=V)
    store.write_batch((k, b"v") for k in (b"\x00\x00\x00", b"\x00\xff\x00", b"\x00\xff\xff",
                                          b"\x01\x00\x00", b"\xff\xff\xfe", b"\xff\xff\xff"))
    yield store
    store.close()


def keys_with(db, **kw):
    return [k for k, _ in db.range(**kw)]


def test_the_issues_example(db):
    """A prefix shorter than a key, ending in 0xff: the reported failure."""
    assert keys_with(db, prefix=b"\x00\xff") == [b"\x00\xff\x00", b"\x00\xff\xff"]
    assert keys_with(db, prefix=b"\x00\xff", reverse=True) == [b"\x00\xff\xff",
                                                               b"\x00\xff\x00"]


def test_edges(db):
    every = keys_with(db)
    assert keys_with(db, prefix=b"") == every
    assert keys_with(db, prefix=b"", reverse=True) == every[::-1]
    assert keys_with(db, prefix=b"\xff\xff") == [b"\xff\xff\xfe", b"\xff\xff\xff"]
    assert keys_with(db, prefix=b"\xff\xff\xff") == [b"\xff\xff\xff"]  # open-ended
    assert keys_with(db, prefix=b"\x00\xff\xff") == [b"\x00\xff\xff"]  # a whole key
    assert keys_with(db, prefix=b"\x01\x00\x01") == []
    assert keys_with(db, prefix=b"\x02") == []


def test_any_bytes_like_prefix(db):
    for prefix in (bytearray(b"\x00\xff"), memoryview(b"\x00\xff"),
                   memoryview(b"..\x00\xff")[2:]):
        assert keys_with(db, prefix=prefix) == [b"\x00\xff\x00", b"\x00\xff\xff"]


def test_refused(db):
    with pytest.raises(ValueError, match=r"prefix: expected at most 3 bytes, got 4"):
        db.range(prefix=b"\x00" * 4)
    with pytest.raises(TypeError, match=r"prefix: expected a bytes-like object, got str"):
        db.range(prefix="ab")
    for bounds in (dict(start=b"\x00" * 3), dict(stop=b"\x01" * 3)):
        with pytest.raises(TypeError, match=r"give prefix, or start and stop, not both"):
            db.range(prefix=b"\x00", **bounds)


def test_closed_store(db):
    db.close()
    with pytest.raises(tinylsm.ClosedError):
        db.range(prefix=b"\x00")
