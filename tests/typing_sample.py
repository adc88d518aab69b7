"""A user program that tests/test_typing.py type-checks with ``mypy --strict``
(it must report nothing) and runs (``main(directory)``), in both builds.

It uses the public API as a user would, with ``bytes``, ``bytearray``,
``memoryview`` and ``array.array`` keys and values (every buffer is
accepted, see ``tinylsm.Buffer``), and checks each result's static type
by assigning it to an annotated variable: a result of another type is an
error.  (The exact types, and the messages a misuse gets, are pinned by
tests/test_typing.py with ``reveal_type``.)
"""
from __future__ import annotations

import array
import os
import sys
import tempfile
from typing import Dict, Iterator, List, Optional, Tuple

import tinylsm
from tinylsm import Buffer, Config, Lsm, Stats


def as_key(n: int) -> Buffer:
    """A helper a user might write: any buffer is a key."""
    return n.to_bytes(4, "big")


def main(directory: str) -> None:
    path = os.path.join(directory, "db")
    config = Config(log_bufwriter_size=1024, max_log_length=1 << 20)
    with tinylsm.open(path, key_size=4, value_size=2, config=config) as db:
        store: Lsm = db
        ba, mv = bytearray(b"kkk1"), memoryview(b"kkk2")
        old: Optional[bytes] = store.insert(b"kkk0", b"v0")
        old = store.insert(ba, bytearray(b"v1"))
        old = store.insert(mv, memoryview(b"v2"))
        old = store.insert(array.array("b", b"kkk3"), b"v3")
        old = store.insert(as_key(9), b"v9")
        db[b"kkk4"] = b"v4"
        db[bytearray(b"kkk5")] = memoryview(b"v5")
        value: bytes = db[b"kkk4"]
        value = db[mv]
        got: Optional[bytes] = db.get(b"kkk0")
        got = db.get(ba)
        either: bytes | int = db.get(b"none", 0)
        same: bytes = db.get(b"none", b"--")
        many: List[Optional[bytes]] = db.get_many([b"kkk0", ba, mv])
        present: bool = b"kkk0" in db and ba in db
        n: int = len(db)
        old = db.insert_if_absent(b"kkk6", b"v6")
        now: bytes = db.setdefault(mv, b"zz")
        now = db.setdefault(bytearray(b"kkk7"), memoryview(b"v7"))
        removed: Optional[bytes] = db.remove(ba)
        del db[memoryview(b"kkk5")]
        db.write_batch([(b"kkk8", b"v8"), (bytearray(b"kkk0"), None), (mv, memoryview(b"w2"))])
        pairs: Iterator[Tuple[bytes, bytes]] = db.range(b"kkk0", bytearray(b"kkk9"))
        pairs = db.range(prefix=memoryview(b"kk"), reverse=True)
        listed: List[Tuple[bytes, bytes]] = list(pairs)
        keys: List[bytes] = list(db.keys())
        items: Dict[bytes, bytes] = dict(db.items())
        values: List[bytes] = list(db.values())
        chunks: List[memoryview] = list(db.export(prefix=b"kkk", chunk_records=2))
        db.write_packed(bytearray(b"".join(chunks)), removals=memoryview(b"kkk8"))
        db.write_packed(array.array("b", b"kkk9v9"))
        for key in db:
            value = db[key]
        db.flush()
        db.compact()
        stats: Stats = db.stats()
        sizes: Tuple[int, int, int] = (stats.keys, stats.on_disk_bytes, stats.sstables)
        ratio: float = stats.space_amp
        error: Optional[str] = stats.compaction_error
        k: int = db.key_size + db.value_size
        live: bool = db.live
        fresh: bool = db.refresh()
        print(old, value, got, either, same, many, present, n, now, removed, listed, keys,
              items, values, sizes, ratio, error, k, live, fresh)
    reader = tinylsm.open(path, readonly=True)
    try:
        reader.insert(b"kkk0", b"no")
    except tinylsm.ReadOnlyError as exc:
        print("read-only:", exc)
    finally:
        reader.close()
    try:
        db.get(b"kkk0")
    except tinylsm.ClosedError as exc:
        print("closed:", exc)
    except tinylsm.Error:
        raise
    backend: str = tinylsm.BACKEND
    print(backend, tinylsm.__version__)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
