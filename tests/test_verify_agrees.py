"""``tinylsm verify`` and ``open()`` read through the same code, so their
verdicts agree: verify calls a file CORRUPT exactly when open() refuses the
store, and describes what recovery keeps, sets aside or cuts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tinylsm
from tinylsm._backend import codec

from helpers import child_env, snapshot

K, V = 8, 8
F = codec.frame_size(K, V)


def _store(path: Path, sstable: bool) -> None:
    with tinylsm.open(path, key_size=K, value_size=V) as db:
        for i in range(200):
            db[i.to_bytes(K, "big")] = bytes(V)
        if sstable:
            db.compact()


def _cut_sstable(path: Path) -> None:
    table = sorted((path / "sstables").iterdir())[-1]
    data = table.read_bytes()
    table.write_bytes(data[: len(data) // 2])


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


DAMAGE = {
    # name: (store with an sstable?, damage, open refuses?, verify's word)
    "tinylsm-sstable-cut": (True, _cut_sstable, True, "CORRUPT"),
    "sstable-byte-flipped": (True, lambda p: _flip(sorted((p / "sstables").iterdir())[-1], 60),
                             True, "CORRUPT"),
    "first-log-frame-flipped": (False, lambda p: _flip(p / "log", 7), True, "CORRUPT"),
    "mid-log-frame-flipped": (False, lambda p: _flip(p / "log", 100 * F + 7), False, "CORRUPT"),
    "torn-last-frame": (False, lambda p: (p / "log").write_bytes((p / "log").read_bytes()[:-3]),
                        False, "TORN TAIL"),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_verify_and_open_agree(tmp_path, name):
    with_sstable, damage, refused, word = DAMAGE[name]
    path = tmp_path / "db"
    _store(path, with_sstable)
    damage(path)
    before = snapshot(path)
    out = subprocess.run([sys.executable, "-m", "tinylsm", "verify", str(path)],
                         capture_output=True, text=True, env=child_env(), timeout=120)
    assert snapshot(path) == before  # verify changes nothing
    assert out.returncode == 1, out.stdout + out.stderr
    assert f": {word}: " in out.stdout, out.stdout
    recovery = [line for line in out.stdout.splitlines() if line.startswith("recovery:")]
    if refused:
        with pytest.raises(tinylsm.CorruptionError):
            tinylsm.open(path)
        assert recovery and "FAILS" in recovery[0], out.stdout
        assert snapshot(path) == before  # and open() changed nothing either
    else:
        assert recovery and "ok" in recovery[0], out.stdout
        keeps = "aside in a tinylsm.kept-* file" in out.stdout
        with tinylsm.open(path) as db:
            assert db.stats().kept_files == int(keeps)
    assert os.path.exists(path / "log")
