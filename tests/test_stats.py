"""``Stats``: every field means what it says, across reopens too, and the
README documents every field of ``Stats`` and ``Config``."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import tinylsm
from tinylsm._backend import codec

K, V = 8, 8
FRAME = codec.frame_size(K, V)
README = Path(__file__).resolve().parent.parent / "README.md"


def key(i: int) -> bytes:
    return i.to_bytes(K, "big")


def check_ratios(s: tinylsm.Stats) -> None:
    """The two ratios are the documented quotients of the other fields."""
    put = s.logged_bytes + s.recovered_bytes
    assert s.write_amp == (s.written_bytes / put if put else 0.0)
    assert s.space_amp == (s.on_disk_bytes / s.resident_bytes if s.resident_bytes else 0.0)


def on_disk(path: Path) -> int:
    return (path / "log").stat().st_size + sum(
        f.stat().st_size for f in (path / "sstables").iterdir())


def test_write_amp_after_a_reopen_and_one_write(tmp_path):
    """The reported case: a store written, closed, reopened, written once.
    The write rolls the recovered log over; dividing that work by the one
    change logged since opening gave a ratio near a million."""
    path = tmp_path / "db"
    config = tinylsm.Config(max_log_length=100_000)
    with tinylsm.open(path, key_size=K, value_size=V, config=config) as db:
        db.write_batch((key(i), bytes(V)) for i in range(200_000))
        first = db.stats()
        check_ratios(first)
        assert first.recovered_bytes == 0
        assert first.write_amp == first.written_bytes / first.logged_bytes
    found = on_disk(path)
    with tinylsm.open(path, config=config) as db:
        s = db.stats()
        assert s.recovered_bytes == found and s.logged_bytes == 0 and s.written_bytes == 0
        assert s.read_bytes >= found  # recovery read it all
        check_ratios(s)
        db[key(1 << 40)] = bytes(V)
        db.flush()
        db.compact()  # the recovered log's rollover is done by now
        s = db.stats()
    assert s.logged_bytes == FRAME and s.rollovers >= 1
    assert s.written_bytes > 1000 * s.logged_bytes  # the work on the found data
    check_ratios(s)
    assert 0 < s.write_amp < 3, s


def test_write_amp_after_a_reopen_that_merges_old_sstables(tmp_path):
    """Sstables written before the reopen and merged after it: their merge
    counts against the data found, not the changes since."""
    path = tmp_path / "db"
    quiet = tinylsm.Config(max_log_length=20 * FRAME, merge_window=255, max_space_amp=255)
    with tinylsm.open(path, key_size=K, value_size=V, config=quiet) as db:
        for i in range(600):
            db[key(i % 300)] = i.to_bytes(V, "big")
        db.compact()
        db.write_batch((key(i), bytes(V)) for i in range(300, 400))
    with tinylsm.open(path, config=quiet) as db:
        db[key(0)] = bytes(V)
        db.compact()
        s = db.stats()
    assert s.merges >= 1 and s.logged_bytes == FRAME
    check_ratios(s)
    assert 0 < s.write_amp < 3, s


def test_ratios_with_nothing_to_divide_by(tmp_path):
    with tinylsm.open(tmp_path / "db", key_size=K, value_size=V) as db:
        s = db.stats()
        assert (s.space_amp, s.write_amp) == (0.0, 0.0)
        db[key(1)] = bytes(V)
        db.remove(key(1))
        db.flush()
        s = db.stats()
        assert s.keys == 0 and s.on_disk_bytes == 2 * FRAME
        assert s.space_amp == 0.0  # no live data: no ratio (it was 42.0)
        check_ratios(s)


def test_memory_is_the_maps_and_grows_with_keys(tmp_path):
    with tinylsm.open(tmp_path / "db", key_size=K, value_size=V) as db:
        empty = db.stats().memory_bytes
        assert empty > 0
        sizes = []
        for n in (1_000, 20_000):
            db.write_batch((key(i), bytes(V)) for i in range(n))
            list(db.keys())  # the sorted index built too
            s = db.stats()
            assert s.memory_bytes == db._map.nbytes
            # more than the live data: a hash table and a sorted index (or
            # a dict, a list and objects) beside the keys and values
            assert s.memory_bytes > s.resident_bytes + s.keys * 4, s
            sizes.append(s.memory_bytes)
        assert empty < sizes[0] < sizes[1]
        db.write_batch((key(i), None) for i in range(20_000))
        assert db.stats().resident_bytes == 0


@pytest.mark.skipif(tinylsm.BACKEND != "cython", reason="the compiled map's own layout")
def test_compiled_memory_counts_every_array(tmp_path):
    """Arena (K + V per slot), hash table (4 per position, load at most
    0.7) and sorted index (4 per key): at least K + V + 9.7 per key."""
    with tinylsm.open(tmp_path / "db", key_size=K, value_size=V) as db:
        db.write_batch((key(i), bytes(V)) for i in range(50_000))
        list(db.keys())
        s = db.stats()
    assert s.memory_bytes >= s.keys * (K + V + 4 / 0.7 + 4)


# -- the README documents every field -------------------------------------------------------


def table_fields(heading: str, first: str) -> list:
    """The names in the first column of the README table whose first row
    names ``first``, in the section ``heading``."""
    text = README.read_text()
    section = text[text.index(f"\n{heading}\n"):]
    section = section[:section.index("\n## ", 1)]
    start = section.index(f"| `{first}` |")
    rows = section[start:].split("\n\n", 1)[0].splitlines()
    return [re.match(r"\| `(\w+)` \|", row).group(1) for row in rows]


@pytest.mark.parametrize("cls,first", [(tinylsm.Config, "max_space_amp"),
                                       (tinylsm.Stats, "resident_bytes")])
def test_readme_and_docstring_document_every_field(cls, first):
    names = [f.name for f in dataclasses.fields(cls)]
    documented = table_fields("## Config and Stats", first)
    assert sorted(documented) == sorted(names), (
        f"README's {cls.__name__} table and the class's fields differ: "
        f"missing {sorted(set(names) - set(documented))}, "
        f"unknown {sorted(set(documented) - set(names))}")
    for name in names:
        assert f"``{name}``" in cls.__doc__, f"{cls.__name__} docstring: {name}"


def test_config_table_gives_the_defaults():
    text = README.read_text()
    for f in dataclasses.fields(tinylsm.Config):
        row = re.search(rf"^\| `{f.name}` \|[^|]*\| ([\d,]+)", text, re.M)
        assert row and int(row.group(1).replace(",", "")) == f.default, f.name
