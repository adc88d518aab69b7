"""``insert_if_absent`` and ``setdefault``: insert only when the key is
absent, atomically across threads, logging only an insert."""
from __future__ import annotations

import random
import sys
import threading

import pytest

import tinylsm
from tinylsm._backend import codec

K, V = 8, 8
FRAME = codec.frame_size(K, V)


def key(i: int) -> bytes:
    return i.to_bytes(K, "big")


def val(thread: int, i: int) -> bytes:
    return (thread << 32 | i).to_bytes(V, "big")


@pytest.fixture
def db(tmp_path):
    store = tinylsm.open(tmp_path / "db", key_size=K, value_size=V)
    yield store
    store.close()


def test_inserts_only_when_absent(db):
    assert db.insert_if_absent(key(1), val(0, 1)) is None
    assert db.insert_if_absent(key(1), val(0, 2)) == val(0, 1)
    assert db[key(1)] == val(0, 1)
    assert db.setdefault(key(2), val(0, 3)) == val(0, 3)
    assert db.setdefault(key(2), val(0, 4)) == val(0, 3)
    assert dict(db) == {key(1): val(0, 1), key(2): val(0, 3)}


def test_bytes_like_arguments_give_bytes(db):
    got = db.setdefault(bytearray(key(1)), memoryview(val(0, 1)))
    assert type(got) is bytes and got == val(0, 1)
    assert db.insert_if_absent(memoryview(key(1)), bytearray(val(0, 2))) == val(0, 1)
    assert type(db.insert_if_absent(key(1), val(0, 3))) is bytes


def test_only_an_insert_is_logged(db, tmp_path):
    db.insert_if_absent(key(1), val(0, 1))
    assert db.stats().logged_bytes == FRAME
    for _ in range(3):
        db.insert_if_absent(key(1), val(0, 2))
        db.setdefault(key(1), val(0, 3))
    assert db.stats().logged_bytes == FRAME
    db.close()
    assert (tmp_path / "db" / "log").stat().st_size == FRAME
    with tinylsm.open(tmp_path / "db") as again:
        assert dict(again) == {key(1): val(0, 1)}


def test_setdefault_without_a_default_is_refused(db):
    """A store cannot hold None, so MutableMapping's default default makes no
    sense: refused whether the key is present or not, changing nothing."""
    db[key(1)] = val(0, 1)
    for k in (key(1), key(2)):
        with pytest.raises(TypeError, match=r"setdefault\(\): a default value is required"):
            db.setdefault(k)
        with pytest.raises(TypeError, match="value: expected a bytes-like object, got NoneType"):
            db.insert_if_absent(k, None)
    assert dict(db) == {key(1): val(0, 1)}
    assert db.stats().logged_bytes == FRAME


def test_read_only_store_refuses_even_a_present_key(tmp_path):
    with tinylsm.open(tmp_path / "db", key_size=K, value_size=V) as db:
        db[key(1)] = val(0, 1)
    with tinylsm.open(tmp_path / "db", readonly=True) as reader:
        for k in (key(1), key(2)):
            with pytest.raises(tinylsm.ReadOnlyError):
                reader.insert_if_absent(k, val(0, 2))
            with pytest.raises(tinylsm.ReadOnlyError):
                reader.setdefault(k, val(0, 2))


def test_closed_store_refuses(db):
    db.close()
    with pytest.raises(tinylsm.ClosedError):
        db.insert_if_absent(key(1), val(0, 1))
    with pytest.raises(tinylsm.ClosedError):
        db.setdefault(key(1), val(0, 1))


def test_slow_path_past_the_log_limit(tmp_path):
    """Writes past the log limit take the slow path and roll the log over;
    present keys still log nothing."""
    config = tinylsm.Config(max_log_length=10 * FRAME, log_bufwriter_size=0)
    with tinylsm.open(tmp_path / "db", key_size=K, value_size=V, config=config) as db:
        for i in range(100):
            assert db.insert_if_absent(key(i), val(0, i)) is None
            assert db.setdefault(key(i), val(1, i)) == val(0, i)
        assert db.stats().logged_bytes == 100 * FRAME
    with tinylsm.open(tmp_path / "db", config=config) as db:
        assert dict(db) == {key(i): val(0, i) for i in range(100)}


@pytest.mark.parametrize("bufsize", [0, 32 << 10], ids=["unbuffered", "buffered"])
@pytest.mark.parametrize("as_bytearray", [False, True], ids=["bytes", "bytearray"])
def test_threads_racing_on_the_same_keys(tmp_path, bufsize, as_bytearray):
    """Many threads insert the same keys at once, in different orders, half
    with ``insert_if_absent`` and half with ``setdefault``: each key has
    exactly one winner, every thread sees the winner's value, and each key
    is logged once.  Unbuffered, every insert writes to the file (the GIL is
    let go mid-write); bytearray keys always take the slow path."""
    n_threads, n_keys = 8, 300
    path = tmp_path / "db"
    config = tinylsm.Config(log_bufwriter_size=bufsize)
    db = tinylsm.open(path, key_size=K, value_size=V, config=config)
    results = [dict() for _ in range(n_threads)]
    errors = []
    start = threading.Barrier(n_threads)

    def race(t: int) -> None:
        try:
            order = list(range(n_keys))
            random.Random(t).shuffle(order)
            start.wait()
            for i in order:
                k = bytearray(key(i)) if as_bytearray else key(i)
                if t % 2:
                    results[t][i] = db.setdefault(k, val(t, i))
                else:
                    results[t][i] = db.insert_if_absent(k, val(t, i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=race, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    stored = dict(db)
    assert len(stored) == n_keys
    for i in range(n_keys):
        winner = int.from_bytes(stored[key(i)], "big") >> 32
        for t in range(n_threads):
            got = results[t][i]
            if t % 2:  # setdefault: the stored value, whoever stored it
                assert got == stored[key(i)], (t, i)
            else:  # insert_if_absent: None for the winner only
                assert got == (None if t == winner else stored[key(i)]), (t, i)
    assert db.stats().logged_bytes == n_keys * FRAME
    db.close()
    with tinylsm.open(path) as again:
        assert dict(again) == stored
