"""An adversary's damage to a store directory: recovery never destroys what
it cannot prove is garbage, and odd files are errors, never hangs.

Each test names the failure of the outside adversarial review it proves
fixed (issue 10, items 2, 3, 7, 8 and 9).  Every test checks that nothing on
disk changed when the open is refused, byte for byte.
"""
from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import re
import shutil
import socket
import threading
from pathlib import Path
from typing import Callable, Dict

import pytest

import tinylsm
from tinylsm import _logread
from tinylsm._backend import codec
from tinylsm._fs import Files

from faults import Crash, FaultyFiles, abandon, report
from helpers import snapshot

K, V = 8, 8
F = codec.frame_size(K, V)


def key(i: int) -> bytes:
    return i.to_bytes(K, "big")


def val(i: int) -> bytes:
    return (i * 7).to_bytes(V, "little")


def make_store(path: Path, n: int = 100, flushed_sstables: bool = False) -> Dict[bytes, bytes]:
    """A store of ``n`` keys, all in the log (or also in one sstable)."""
    model = {}
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        for i in range(n):
            db[key(i)] = val(i)
            model[key(i)] = val(i)
        if flushed_sstables:
            db.compact()
            db[key(n)] = val(n)
            model[key(n)] = val(n)
        db.flush()
    return model


def each_crash(tmp_path: Path, prepare, do):
    """Crash ``do(work, files)`` at each of its file operations in turn, on a
    directory ``prepare(work)`` made afresh; yield the crash point and the
    two states it leaves: as a killed process left it, and after a power cut
    (only what was fsynced).  Stops once ``do`` completes without a crash."""
    for crash_at in itertools.count(1):
        work = tmp_path / f"w{crash_at}"
        prepare(work)
        files = FaultyFiles(str(work))
        files.crash_at(crash_at)
        try:
            db = do(work, files)
        except Crash:
            pass
        else:
            abandon(db)  # the crash comes later: every step was tried
            return
        yield crash_at, (work, Path(files.power_cut(str(tmp_path / f"p{crash_at}"))))


def refused(path: Path, exc_type, match: str, **kw) -> None:
    """open() raises ``exc_type`` matching ``match`` and changes nothing."""
    before = snapshot(path)
    with pytest.raises(exc_type, match=match):
        tinylsm.open(path, **kw)
    assert snapshot(path) == before


# -- item 2: the size record -----------------------------------------------------


def _meta(path: Path) -> dict:
    return json.loads((path / "tinylsm.meta").read_text())


def test_flipped_size_in_meta_is_refused_and_log_kept(tmp_path):
    path = tmp_path / "db"
    make_store(path)
    raw = (path / "tinylsm.meta").read_bytes()
    (path / "tinylsm.meta").write_bytes(raw.replace(b'"key_size": 8', b'"key_size": 9'))
    refused(path, tinylsm.CorruptionError, r"tinylsm\.meta.*checksum mismatch")
    refused(path, tinylsm.CorruptionError, r"tinylsm\.meta", key_size=9, value_size=8)
    (path / "tinylsm.meta").write_bytes(raw)  # restored: everything is still there
    with tinylsm.open(path) as db:
        assert len(db) == 100


def test_every_single_bit_flip_in_meta_is_caught(tmp_path, record_property):
    path = tmp_path / "db"
    make_store(path, n=3)
    raw = (path / "tinylsm.meta").read_bytes()
    tried = 0
    for i in range(len(raw)):
        for bit in range(8):
            damaged = bytearray(raw)
            damaged[i] ^= 1 << bit
            (path / "tinylsm.meta").write_bytes(bytes(damaged))
            tried += 1
            try:
                db = tinylsm.open(path)
            except tinylsm.CorruptionError as exc:
                assert "tinylsm.meta" in str(exc)
                continue
            # the one harmless kind of flip: JSON whitespace that stays whitespace
            with db:
                assert (db.key_size, db.value_size, len(db)) == (K, V, 3)
    (path / "tinylsm.meta").write_bytes(raw)
    with tinylsm.open(path) as db:
        assert len(db) == 3
    report(record_property, "meta_bit_flips", tried)


def test_legacy_meta_with_a_wrong_size_never_truncates_the_log(tmp_path):
    """A 0.1 size record (no checksum) is still read, and upgraded; if its
    sizes are wrong, the log that does not parse is refused, not cut."""
    path = tmp_path / "db"
    make_store(path, flushed_sstables=False)
    legacy = {"format": "tiny-lsm", "key_size": 9, "value_size": 8}
    (path / "tinylsm.meta").write_text(json.dumps(legacy) + "\n")
    refused(path, tinylsm.CorruptionError, r"log .*offset 0.*key_size=9")
    legacy["key_size"] = 8
    (path / "tinylsm.meta").write_text(json.dumps(legacy) + "\n")
    with tinylsm.open(path) as db:
        assert len(db) == 100
    assert "crc32" in _meta(path)  # upgraded by the writable open


def test_wrong_sizes_beside_sstables_blame_the_sizes(tmp_path):
    path = tmp_path / "db"
    make_store(path, flushed_sstables=True)
    legacy = {"format": "tiny-lsm", "key_size": 9, "value_size": 8}
    (path / "tinylsm.meta").write_text(json.dumps(legacy) + "\n")
    refused(path, tinylsm.CorruptionError, r"is key_size=9, value_size=8 right")


@pytest.mark.parametrize("content", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"format": "tiny-lsm", "key_size": 0, "value_size": 8, "crc32": 1}',
    b'{"format": "tiny-lsm", "key_size": -5, "value_size": 8}',
    b'{"format": "tiny-lsm", "key_size": 1000000000000, "value_size": 8}',
    b'{"format": "tiny-lsm", "key_size": true, "value_size": 8}',
    b'{"format": "tiny-lsm", "key_size": 8.0, "value_size": 8}',
    b'{"format": "tiny-lsm", "key_size": 8, "value_size": 8, "extra": 1}',
    b'{"format": "other", "key_size": 8, "value_size": 8}',
    b'[8, 8]',
    b'\xff\xfe',
    b'',
], ids=["nested", "zero", "negative", "huge", "bool", "float", "extra", "format",
        "list", "binary", "empty"])
def test_damaged_meta_is_a_corruption_error_naming_it(tmp_path, content):
    path = tmp_path / "db"
    make_store(path, n=5)
    (path / "tinylsm.meta").write_bytes(content)
    refused(path, tinylsm.CorruptionError, r"metadata file .*tinylsm\.meta")
    refused(path, tinylsm.CorruptionError, r"tinylsm\.meta", readonly=True)


# -- item 3: the log's bytes after the point recovery replays to -------------------


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_first_frame_refuses_and_keeps_the_log(tmp_path, chunk_size):
    path = tmp_path / "db"
    make_store(path)
    _flip(path / "log", 5)  # a key byte of frame 0
    refused(path, tinylsm.CorruptionError, r"log .*checksum mismatch at offset 0")
    refused(path, tinylsm.CorruptionError, r"log .*offset 0", readonly=True)


def test_flip_mid_log_keeps_the_prefix_and_sets_the_rest_aside(tmp_path, caplog, chunk_size):
    path = tmp_path / "db"
    model = make_store(path)
    original = (path / "log").read_bytes()
    _flip(path / "log", 50 * F + 7)
    damaged = (path / "log").read_bytes()
    with caplog.at_level(logging.WARNING, logger="tinylsm"):
        with tinylsm.open(path) as db:
            assert dict(db.items()) == {key(i): model[key(i)] for i in range(50)}
            st = db.stats()
    kept = [n for n in os.listdir(path) if n.startswith("tinylsm.kept-")]
    assert kept == ["tinylsm.kept-000001-at-%d" % (50 * F)]
    assert (path / kept[0]).read_bytes() == damaged[50 * F:]
    assert (path / "log").read_bytes() == original[:50 * F]
    assert (st.kept_files, st.kept_bytes) == (1, 50 * F)
    assert kept[0] in caplog.text
    # the kept bytes, put back after the good prefix, are the original log
    assert original[:50 * F] + damaged[50 * F:] == damaged
    # a later damage gets its own file; nothing is overwritten
    with tinylsm.open(path) as db:
        db[key(1000)] = val(1000)
        db[key(1001)] = val(1001)
    _flip(path / "log", 50 * F + 7)
    with tinylsm.open(path) as db:
        assert db.stats().kept_files == 2
    assert sorted(n for n in os.listdir(path) if n.startswith("tinylsm.kept-"))[0] == kept[0]


@pytest.mark.parametrize("tail,kept", [
    (b"\0" * (3 * F), False),  # zeros: space allocated, never written
    (b"\x01" * (F - 1), False),  # less than one frame: a torn final frame
    (b"\x01" * F, False),  # one frame's bytes that are no frame
    (b"\x01" * (F + 1), True),  # more than one torn frame: may be data
], ids=["zeros", "short", "one-bad-frame", "more"])
def test_tail_policy(tmp_path, tail, kept, chunk_size):
    path = tmp_path / "db"
    make_store(path, n=10)
    with open(path / "log", "ab") as f:
        f.write(tail)
    with tinylsm.open(path) as db:
        assert len(db) == 10
        assert db.stats().kept_files == int(kept)
    assert (path / "log").stat().st_size == 10 * F


def test_torn_batch_is_set_aside(tmp_path, chunk_size):
    """A write_batch cut short holds well-formed frames: they are kept."""
    path = tmp_path / "db"
    make_store(path, n=10)
    frames = codec.encode_log([(key(100 + i), val(i)) for i in range(5)], K, V, batch=True)
    with open(path / "log", "ab") as f:
        f.write(bytes(frames)[:3 * F])  # header + 2 of 5 frames
    with tinylsm.open(path) as db:
        assert len(db) == 10
        assert (db.stats().kept_files, db.stats().kept_bytes) == (1, 3 * F)


def test_read_only_open_sets_nothing_aside(tmp_path, chunk_size):
    path = tmp_path / "db"
    make_store(path)
    _flip(path / "log", 50 * F + 7)
    before = snapshot(path)
    with tinylsm.open(path, readonly=True) as db:
        assert len(db) == 50
    assert snapshot(path) == before


@pytest.mark.parametrize("chunk", [None, 16 * F], ids=["chunk-default", "chunk-16-frames"])
def test_crash_while_setting_aside_keeps_the_tail_somewhere(tmp_path, record_property,
                                                             monkeypatch, chunk):
    """At every file operation of the repair, a crash (as a killed process
    and as a power cut leave it) keeps the tail in the log or in a kept
    file, and the next open recovers the prefix.  With small chunks the
    tail is copied in several writes, and a crash can fall between them."""
    if chunk is not None:
        monkeypatch.setattr(_logread, "CHUNK_SIZE", chunk)
    path = tmp_path / "db"
    make_store(path)
    _flip(path / "log", 50 * F + 7)
    tail = (path / "log").read_bytes()[50 * F:]
    points = 0
    for crash_at, states in each_crash(tmp_path, lambda work: shutil.copytree(path, work),
                                       lambda work, files: tinylsm.open(work, _files=files)):
        points += 1
        for state in states:
            kept = [(state / n).read_bytes() for n in os.listdir(state)
                    if n.startswith("tinylsm.kept-")]
            assert (state / "log").read_bytes()[50 * F:] == tail or tail in kept, \
                f"the tail is lost after a crash at operation {crash_at}"
            with tinylsm.open(state) as db:
                assert len(db) == 50
    assert points > 5
    report(record_property, "set_aside_crash_points", points)


def test_unfinished_kept_copy_is_removed_by_a_writer_only(tmp_path):
    """A crash while a tail was being copied leaves ``<kept>.tmp``; the log
    still holds those bytes, so a writable open removes the copy."""
    path = tmp_path / "db"
    make_store(path, n=10)
    partial = path / "tinylsm.kept-000001-at-0.tmp"
    partial.write_bytes(b"\x01" * 7)
    with tinylsm.open(path, readonly=True) as db:
        assert len(db) == 10
    assert partial.exists()
    with tinylsm.open(path) as db:
        assert len(db) == 10 and db.stats().kept_files == 0
    assert not partial.exists()


# -- item 7: odd files are errors, never hangs ---------------------------------------


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _socket(p: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()


def _directory(p: Path) -> None:
    p.mkdir()


def _dangling(p: Path) -> None:
    os.symlink(p.parent / "nowhere", p)


def _device(p: Path) -> None:
    os.symlink("/dev/null", p)


ODD: Dict[str, Callable[[Path], None]] = {
    "fifo": _fifo, "socket": _socket, "directory": _directory,
    "dangling-symlink": _dangling, "device": _device,
}
WHERE = {
    "log": "log",
    "meta": "tinylsm.meta",
    "sstable": "sstables/0000000000000001",
}


def _open_in_thread(path: Path, **kw) -> BaseException:
    """open() in a thread that must end within 10 s: return what it raised."""
    out = []

    def run():
        try:
            tinylsm.open(path, **kw).close()
            out.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), f"open() of {path} hangs"
    assert out and out[0] is not None, "open() accepted an odd file"
    return out[0]


@pytest.mark.parametrize("kind", sorted(ODD))
@pytest.mark.parametrize("where", sorted(WHERE))
def test_odd_file_is_an_error_naming_it(tmp_path, kind, where):
    path = tmp_path / "db"
    make_store(path, n=5, flushed_sstables=(where == "sstable"))
    target = path / WHERE[where]
    if target.exists():
        if target.is_dir():
            target.rmdir()
        else:
            target.unlink()
    ODD[kind](target)
    before = snapshot(path)
    for kw in ({}, {"readonly": True}):
        exc = _open_in_thread(path, **kw)
        assert isinstance(exc, (tinylsm.CorruptionError, OSError)), repr(exc)
        assert str(target) in str(exc), f"{exc!r} does not name {target}"
    assert snapshot(path) == before


@pytest.mark.parametrize("kind", ["file", "fifo", "missing"])
def test_sstables_dir_replaced_or_missing(tmp_path, kind):
    path = tmp_path / "db"
    make_store(path, n=5, flushed_sstables=True)
    for name in os.listdir(path / "sstables"):
        os.unlink(path / "sstables" / name)
    os.rmdir(path / "sstables")
    if kind == "file":
        (path / "sstables").write_bytes(b"x")
    elif kind == "fifo":
        os.mkfifo(path / "sstables")
    match = "no sstables/ directory" if kind == "missing" else "sstables.*where tinylsm expects"
    for kw in ({}, {"readonly": True}):
        exc = _open_in_thread(path, **kw)
        assert isinstance(exc, tinylsm.CorruptionError), repr(exc)
        assert re.search(match, str(exc)), str(exc)


def test_errors_on_a_descriptor_name_the_file(tmp_path):
    """pwrite, fsync, truncate: the OS names no file; Files does."""
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    files = Files()
    fd = files.open_ro(str(p))
    try:
        with pytest.raises(OSError) as info:
            files.pwrite(fd, b"x", 0)
        assert info.value.errno == errno.EBADF and info.value.filename == str(p)
        with pytest.raises(OSError) as info:
            files.truncate(fd, 0)
        assert info.value.filename == str(p)
    finally:
        files.close(fd)


def test_enospc_in_a_merge_names_the_file_and_clears_once_space_is_back(tmp_path):
    path = tmp_path / "db"
    with tinylsm.open(path, key_size=K, value_size=V,
                      config=tinylsm.Config(max_log_length=2000, merge_window=255)) as db:
        for i in range(2000):
            db[key(i)] = val(i)
    files = FaultyFiles()
    files.fail("pwrite", errno.ENOSPC, when=lambda c: c.path.endswith("-tmp"), times=1)
    db = tinylsm.open(path, _files=files, config=tinylsm.Config(merge_window=2))
    for _ in range(1000):
        if db.stats().compaction_error:
            break
        threading.Event().wait(0.01)
    error = db.stats().compaction_error
    assert error is not None and "No space left" in error and "-tmp" in error, error
    db.close()  # the merge is tried again at close and succeeds: no stale error
    assert files.injected == 1
    with tinylsm.open(path) as db:
        assert len(db) == 2000


# -- item 9: creating a store only where asked, atomically --------------------------


def test_open_refuses_a_folder_of_unrelated_files(tmp_path):
    path = tmp_path / "src"
    path.mkdir()
    (path / "main.py").write_text("print('hello')\n")
    (path / "README").write_text("a project\n")
    refused(path, FileExistsError, r"not a tinylsm store \('README', 'main.py'\)",
            key_size=K, value_size=V)


def test_empty_directory_becomes_a_store(tmp_path):
    path = tmp_path / "empty"
    path.mkdir()
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        db[key(1)] = val(1)
    with tinylsm.open(path) as db:
        assert db[key(1)] == val(1)


def test_kill_during_first_open_leaves_no_store_or_a_complete_one(tmp_path, record_property):
    """A crash at every file operation of the very first open (kept as a
    killed process and as a power cut leave it): the directory then opens
    with the sizes given, or, without them, either opens (complete) or says
    clearly that no sizes are recorded and no data is there."""
    points = 0
    for crash_at, states in each_crash(
            tmp_path, lambda work: work.mkdir(),
            lambda work, files: tinylsm.open(work / "db", key_size=K, value_size=V,
                                             _files=files)):
        points += 1
        for state in (s / "db" for s in states):
            if not state.exists():
                continue
            try:
                with tinylsm.open(state) as db:
                    assert (db.key_size, db.value_size, len(db)) == (K, V, 0)
            except TypeError as exc:
                assert "records no key and value sizes, and holds no data" in str(exc)
            with tinylsm.open(state, key_size=K, value_size=V) as db:
                db[key(1)] = val(1)
            with tinylsm.open(state) as db:  # complete now
                assert db[key(1)] == val(1)
    assert points >= 5
    report(record_property, "first_open_crash_points", points)


@pytest.mark.parametrize("kind", sorted(ODD))
def test_odd_leftover_rollover_copy_is_an_error_naming_it(tmp_path, kind):
    """A ``tinylsm.log-from-M`` that is not a regular file: a writer's open
    refuses naming it (recovery compares a leftover copy with the log before
    it removes one), a reader ignores it (it reads only the log), and
    neither changes anything."""
    path = tmp_path / "db"
    make_store(path, n=5, flushed_sstables=False)
    target = path / "tinylsm.log-from-0"
    ODD[kind](target)
    before = snapshot(path)
    exc = _open_in_thread(path)
    assert isinstance(exc, (tinylsm.CorruptionError, OSError)), repr(exc)
    assert str(target) in str(exc), f"{exc!r} does not name {target}"
    assert snapshot(path) == before
    with tinylsm.open(path, readonly=True) as db:
        assert len(db) == 5
    assert snapshot(path) == before
