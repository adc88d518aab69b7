"""Bad input: each is refused with its own error type and a clear message, and
nothing on disk changes (every file's bytes are compared before and after).
"""
from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
import zstandard

import golden
import tinylsm
from helpers import child_env, snapshot
from workload import contents, key, make_ops, open_db, prefix_models, run

K, V = 8, 10
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "db"
    ops = make_ops(77, 30, K, V)
    db = open_db(path, K, V, log_bufwriter_size=64)
    run(db, ops)
    db.flush()
    model = prefix_models(ops)[-1]
    yield db, path, model
    db.close()


@contextmanager
def unchanged(db, path, model):
    """Nothing of the store changes, in memory or on disk."""
    db.flush()
    before = snapshot(path)
    yield
    assert contents(db) == model, "the map changed"
    db.flush()
    assert snapshot(path) == before, "a file changed"


def _refused(exc_type, match, fn, *args):
    with pytest.raises(exc_type, match=match):
        fn(*args)


BAD_TYPES = [("str", "abcdefgh"), ("int", 12345678), ("NoneType", None),
             ("float", 1.5), ("list", [1, 2])]


@pytest.mark.parametrize("type_name,bad", BAD_TYPES, ids=[t for t, _ in BAD_TYPES])
def test_key_of_wrong_type(store, type_name, bad):
    db, path, model = store
    good_v = b"v" * V
    msg = rf"key: expected a bytes-like object, got {type_name}"
    with unchanged(db, path, model):
        _refused(TypeError, msg, db.insert, bad, good_v)
        _refused(TypeError, msg, db.__setitem__, bad, good_v)
        _refused(TypeError, msg, db.remove, bad)
        _refused(TypeError, msg, db.__delitem__, bad)
        _refused(TypeError, msg, db.__getitem__, bad)
        _refused(TypeError, msg, db.get, bad)
        _refused(TypeError, msg, db.__contains__, bad)
        _refused(TypeError, msg, db.insert_if_absent, bad, good_v)
        _refused(TypeError, msg, db.setdefault, bad, good_v)
        if bad is not None:  # None is an open end of a range
            _refused(TypeError, msg, lambda: list(db.range(bad)))
            _refused(TypeError, rf"prefix: expected a bytes-like object, got {type_name}",
                     lambda: list(db.range(prefix=bad)))


@pytest.mark.parametrize("type_name,bad", BAD_TYPES, ids=[t for t, _ in BAD_TYPES])
def test_value_of_wrong_type(store, type_name, bad):
    db, path, model = store
    present = next(iter(model))
    msg = rf"value: expected a bytes-like object, got {type_name}"
    with unchanged(db, path, model):
        _refused(TypeError, msg, db.insert, present, bad)
        _refused(TypeError, msg, db.__setitem__, present, bad)
        _refused(TypeError, msg, db.insert, key(200, K), bad)
        # refused whether the key is present or not
        _refused(TypeError, msg, db.insert_if_absent, present, bad)
        _refused(TypeError, msg, db.insert_if_absent, key(200, K), bad)
        if bad is None:  # no default: refused as such, present or not
            msg = r"setdefault\(\): a default value is required"
        _refused(TypeError, msg, db.setdefault, present, bad)
        _refused(TypeError, msg, db.setdefault, key(200, K), bad)
    assert db[present] == model[present]
    db.close()
    with open_db(path, K, V) as again:  # and the log agrees with memory
        assert contents(again) == model


@pytest.mark.parametrize("size", [0, K - 1, K + 1, 3 * K])
def test_key_of_wrong_size(store, size):
    db, path, model = store
    msg = rf"key: expected {K} bytes, got {size}"
    with unchanged(db, path, model):
        for bad in (b"k" * size, bytearray(b"k" * size), memoryview(b"k" * size)):
            _refused(ValueError, msg, db.insert, bad, b"v" * V)
            _refused(ValueError, msg, db.remove, bad)
            _refused(ValueError, msg, db.get, bad)
            _refused(ValueError, msg, db.__getitem__, bad)
            _refused(ValueError, msg, db.__contains__, bad)
            _refused(ValueError, msg, db.insert_if_absent, bad, b"v" * V)
            _refused(ValueError, msg, db.setdefault, bad, b"v" * V)


@pytest.mark.parametrize("size", [0, V - 1, V + 1])
def test_value_of_wrong_size(store, size):
    db, path, model = store
    with unchanged(db, path, model):
        msg = rf"value: expected {V} bytes, got {size}"
        _refused(ValueError, msg, db.insert, key(1, K), b"v" * size)
        present = next(iter(model))
        for k in (present, key(200, K)):  # refused whether the key is present or not
            _refused(ValueError, msg, db.insert_if_absent, k, b"v" * size)
            _refused(ValueError, msg, db.setdefault, k, bytearray(b"v" * size))


BAD_BATCHES = [
    ("str key", [(key(100, K), b"a" * V), ("x" * K, b"b" * V)], TypeError,
     r"key of item 1: expected a bytes-like object, got str"),
    ("short value", [(key(100, K), b"a" * V), (key(101, K), None), (key(102, K), b"b")],
     ValueError, rf"value of item 2: expected {V} bytes, got 1"),
    ("int value", [(key(100, K), 7)], TypeError,
     r"value of item 0: expected a bytes-like object, got int"),
    ("long key", [(key(1, K), None), (b"k" * (K + 1), b"a" * V)], ValueError,
     rf"key of item 1: expected {K} bytes, got {K + 1}"),
    ("not a pair", [(key(100, K), b"a" * V), (key(101, K),)], TypeError,
     r"item 1: expected a \(key, value_or_None\) pair"),
    ("None item", [(key(100, K), b"a" * V), None], TypeError,
     r"item 1: expected a \(key, value_or_None\) pair, got NoneType"),
]


@pytest.mark.parametrize("name,items,exc_type,msg", BAD_BATCHES,
                         ids=[b[0] for b in BAD_BATCHES])
@pytest.mark.parametrize("as_generator", [False, True], ids=["list", "generator"])
def test_batch_with_one_bad_item(store, name, items, exc_type, msg, as_generator):
    db, path, model = store
    with unchanged(db, path, model):
        _refused(exc_type, msg, db.write_batch, iter(items) if as_generator else items)
    db.close()
    with open_db(path, K, V) as again:
        assert contents(again) == model


def test_other_sizes_on_reopen(store):
    db, path, model = store
    db.close()
    before = snapshot(path)
    for k, v in ((K, V + 1), (K - 1, V), (V, K)):
        with pytest.raises(ValueError, match=rf"created with key_size={K}, value_size={V}; "
                                             rf"opened with key_size={k}, value_size={v}"):
            open_db(path, k, v)
    assert snapshot(path) == before


def test_one_size_on_reopen(store):
    """One size given for a store that records both: checked against its
    recorded one, the other taken from the record."""
    db, path, model = store
    db.close()
    for sizes in (dict(key_size=K), dict(value_size=V), dict(key_size=K, value_size=V)):
        with tinylsm.open(path, **sizes) as again:
            assert (again.key_size, again.value_size) == (K, V)
            assert contents(again) == model
        with tinylsm.open(path, readonly=True, **sizes) as reader:
            assert (reader.key_size, reader.value_size) == (K, V)
    before = snapshot(path)
    for sizes, wrong in ((dict(key_size=K + 1), "key_size differs"),
                         (dict(value_size=V - 1), "value_size differs"),
                         (dict(key_size=V, value_size=K), "key_size and value_size differ")):
        given = ", ".join(f"{name}={size}" for name, size in sizes.items())
        with pytest.raises(ValueError, match=rf"created with key_size={K}, value_size={V}; "
                                             rf"opened with {given} \({wrong}\)"):
            tinylsm.open(path, **sizes)
    for sizes, exc, msg in ((dict(key_size=0), ValueError, "key_size: expected 1 to 65536"),
                            (dict(value_size="8"), TypeError, "value_size: expected int")):
        with pytest.raises(exc, match=msg):
            tinylsm.open(path, **sizes)
    assert snapshot(path) == before


def test_second_opener_in_this_process(store):
    db, path, model = store
    with unchanged(db, path, model):
        with pytest.raises(tinylsm.LockedError, match="already open for writing"):
            open_db(path, K, V)
        with tinylsm.open(path, readonly=True) as reader:  # a reader may, beside it
            assert reader.live


def test_second_opener_in_another_process(store):
    db, path, model = store
    script = textwrap.dedent(f"""
        import tinylsm
        try:
            tinylsm.open({str(path)!r}, key_size={K}, value_size={V})
        except tinylsm.LockedError as exc:
            print("LockedError:", exc)
        else:
            print("opened")
    """)
    env = child_env()
    with unchanged(db, path, model):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, timeout=120)
    assert out.stdout.startswith("LockedError:") and "already open" in out.stdout, out
    db.close()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.stdout.strip() == "opened", out  # the lock went with the first opener


def test_file_where_the_directory_should_be(tmp_path):
    path = tmp_path / "db"
    path.write_bytes(b"not a store")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        open_db(path, K, V)
    assert path.read_bytes() == b"not a store"


@pytest.mark.parametrize("name", ["abc", "1", "00000000000000001", "000000000000000A",
                                  "+0000000000000001"])
def test_sstable_name_hex_but_not_16_digits(store, name):
    db, path, model = store
    db.close()
    (path / "sstables" / name).write_bytes(b"whatever")
    before = snapshot(path)
    with pytest.raises(tinylsm.CorruptionError, match="hex but not 16 lower-case hex digits"):
        open_db(path, K, V)
    assert snapshot(path) == before


# -- the Rust crate's torn flush ----------------------------------------------------------


def _golden_copy(tmp_path):
    scenario = golden.load("sstables_k8_v8")
    path = golden.copy_db(scenario, tmp_path)
    tables = sorted(p for p in (path / "sstables").iterdir() if len(p.name) == 16)
    assert len(tables) == 2
    return scenario, path, tables


def test_golden_sstables_control(tmp_path):
    scenario, path, _ = _golden_copy(tmp_path)
    with tinylsm.open(path, key_size=8, value_size=8) as db:
        assert contents(db) == scenario.data


@pytest.mark.parametrize("which", ["older", "newest"])
def test_rust_sstable_cut_short_opens(tmp_path, caplog, which):
    """A partial streaming frame is tiny-lsm's torn in-place flush: it opens,
    with a warning, and the store goes on."""
    scenario, path, tables = _golden_copy(tmp_path)
    table = tables[0] if which == "older" else tables[-1]
    data = table.read_bytes()
    table.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="tinylsm"):
        with tinylsm.open(path, key_size=8, value_size=8) as db:
            got = contents(db)
            assert got and set(got) <= set(scenario.data) | _all_keys(scenario)
            db[b"\xff" * 8] = b"\xee" * 8
    assert any("cut short" in r.getMessage() and table.name in r.getMessage()
               for r in caplog.records)
    with tinylsm.open(path, key_size=8, value_size=8) as db:
        assert contents(db) == {**got, b"\xff" * 8: b"\xee" * 8}


def _all_keys(scenario):
    keys = set()
    for op in scenario.ops:
        if op[0] in ("I", "R"):
            keys.add(op[1])
        elif op[0] == "B":
            keys.update(kk for kk, _ in op[1])
    return keys


def test_rust_empty_newest_sstable_opens(tmp_path, caplog):
    """An empty newest sstable is tiny-lsm's flush torn before its first
    write (the crate itself cannot open it); the log still holds its data."""
    scenario, path, tables = _golden_copy(tmp_path)
    tables[-1].write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="tinylsm"):
        with tinylsm.open(path, key_size=8, value_size=8) as db:
            assert len(db) > 0
            db.flush()
    assert not tables[-1].exists()  # removed: it held nothing
    assert any("empty sstable" in r.getMessage() for r in caplog.records)
    with tinylsm.open(path, key_size=8, value_size=8) as db:
        assert len(db) > 0


def test_rust_torn_flush_with_its_data_in_the_log(tmp_path):
    """The exact crash case of the crate: the log's changes being flushed
    in place to the next sstable, torn half-way.  The map must be exact."""
    scenario, path, tables = _golden_copy(tmp_path)
    log = (path / "log").read_bytes()
    from tinylsm._backend import codec

    scan = codec.scan_log(log, 8, 8)
    assert scan.count > 0
    payload = codec.encode_sstable(codec.sort_records(scan.records, 8, 8), 8, 8)
    cobj = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    stream = cobj.compress(payload) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    next_id = int(tables[-1].name, 16) + 1
    for cut in (len(stream) // 3, len(stream) - 1, 0):
        torn = path / "sstables" / f"{next_id:016x}"
        torn.write_bytes(stream[:cut])
        with tinylsm.open(path, key_size=8, value_size=8) as db:
            assert contents(db) == scenario.data, cut
        if torn.exists():
            torn.unlink()


def test_empty_sstable_that_is_no_torn_flush(tmp_path):
    """Empty, but older than another sstable, or with an empty log: no crash
    of either implementation leaves that, so it is damage."""
    scenario, path, tables = _golden_copy(tmp_path)
    tables[0].write_bytes(b"")
    before = snapshot(path)
    with pytest.raises(tinylsm.CorruptionError, match="empty, and is not the newest"):
        tinylsm.open(path, key_size=8, value_size=8)
    assert _without_lock(snapshot(path)) == before

    scenario, path, tables = _golden_copy(tmp_path / "2")
    tables[-1].write_bytes(b"")
    (path / "log").write_bytes(b"")
    before = snapshot(path)
    with pytest.raises(tinylsm.CorruptionError, match="the log holds no changes"):
        tinylsm.open(path, key_size=8, value_size=8)
    assert _without_lock(snapshot(path)) == before


def _without_lock(files):
    """A writer creates the (empty) lock file first, to lock before it reads:
    a golden copy, made by the Rust crate, has none before."""
    assert files.pop("tinylsm.lock") == b""
    return files


# -- read-only directory --------------------------------------------------------------


@contextmanager
def _read_only_bind(path: Path):
    """``path`` made read-only by a read-only bind mount onto itself."""
    def sh(*cmd):
        return subprocess.run(cmd, capture_output=True, text=True)

    r = sh("mount", "--bind", str(path), str(path))
    if r.returncode != 0:
        pytest.skip(f"no read-only bind mount here ({r.stderr.strip()}), and chmod cannot "
                    "make a directory read-only for root")
    try:
        r = sh("mount", "-o", "remount,ro,bind", str(path))
        if r.returncode != 0:
            pytest.skip(f"cannot remount read-only ({r.stderr.strip()})")
        yield
    finally:
        sh("umount", str(path))


def _writer_refused(path: Path, codes) -> None:
    with pytest.raises(OSError) as exc:
        open_db(path, K, V)
    assert exc.value.errno in codes, exc.value
    assert str(path) in str(exc.value)


def test_read_only_directory(store):
    db, path, model = store
    db.close()
    before = snapshot(path)
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        try:
            _writer_refused(path, (errno.EACCES, errno.EPERM))
            with tinylsm.open(path, readonly=True) as ro:
                assert contents(ro) == model
        finally:
            os.chmod(path, 0o755)
    else:
        with _read_only_bind(path):
            _writer_refused(path, (errno.EROFS,))
            with tinylsm.open(path, readonly=True) as ro:
                assert contents(ro) == model
                with pytest.raises(tinylsm.ReadOnlyError, match="read-only"):
                    ro[key(1, K)] = b"x" * V
    assert snapshot(path) == before


# -- config and closed stores ------------------------------------------------------------


CONFIG_BAD = [
    ("max_space_amp", 0), ("max_space_amp", 256),
    ("max_log_length", 0), ("max_log_length", -5), ("max_log_length", 1 << 63),
    ("merge_ratio", 0), ("merge_ratio", 256),
    ("merge_window", 1), ("merge_window", 0), ("merge_window", 256),
    ("log_bufwriter_size", -1), ("log_bufwriter_size", 1 << 32),
    ("zstd_sstable_compression_level", 0), ("zstd_sstable_compression_level", 23),
]


@pytest.mark.parametrize("field,value", CONFIG_BAD, ids=[f"{f}={v}" for f, v in CONFIG_BAD])
def test_config_out_of_range(field, value):
    with pytest.raises(ValueError, match=rf"Config\.{field}: expected \d+ to \d+, got {value}"):
        tinylsm.Config(**{field: value})


@pytest.mark.parametrize("bad", ["3", 2.0, True, None])
def test_config_of_wrong_type(bad):
    with pytest.raises(TypeError, match=rf"Config\.merge_ratio: expected int, got "
                                        rf"{type(bad).__name__}"):
        tinylsm.Config(merge_ratio=bad)


@pytest.mark.parametrize("sizes,exc,match", [
    ((0, 1), ValueError, "key_size: expected 1 to 65536, got 0"),
    ((1, -1), ValueError, "value_size: expected 0 to 65536, got -1"),
    ((1 << 16 + 1, 1), ValueError, "key_size: expected 1 to 65536"),
    ((1, "8"), TypeError, "value_size: expected int, got str"),
    ((True, 8), TypeError, "key_size: expected int, got bool"),
    ((None, None), TypeError, "key_size and value_size are required"),
    ((8, None), TypeError, "key_size and value_size are required"),
])
def test_sizes_of_a_new_store(tmp_path, sizes, exc, match):
    with pytest.raises(exc, match=match):
        tinylsm.open(tmp_path / "db", key_size=sizes[0], value_size=sizes[1])
    assert not (tmp_path / "db").exists()


def test_config_not_a_config(tmp_path):
    with pytest.raises(TypeError, match="config: expected tinylsm.Config, got dict"):
        tinylsm.open(tmp_path / "db", key_size=K, value_size=V, config={"merge_window": 2})
    assert not (tmp_path / "db").exists()


def test_use_after_close(store):
    db, path, model = store
    db.close()
    before = snapshot(path)
    k, v = key(1, K), b"v" * V
    uses = [
        lambda: db.insert(k, v), lambda: db.__setitem__(k, v), lambda: db.remove(k),
        lambda: db.__delitem__(k), lambda: db.get(k), lambda: db[k], lambda: k in db,
        lambda: db.get_many([k]), lambda: db.get_many([]),
        lambda: len(db), lambda: list(db), lambda: list(db.items()), lambda: list(db.keys()),
        lambda: list(db.values()), lambda: list(db.range()), lambda: db.write_batch([(k, v)]),
        lambda: db.flush(), lambda: db.compact(), lambda: db.stats(),
    ]
    for use in uses:
        with pytest.raises(tinylsm.ClosedError, match="is closed"):
            use()
    db.close()  # idempotent
    assert snapshot(path) == before
