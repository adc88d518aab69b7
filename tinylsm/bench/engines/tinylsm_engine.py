"""The tinylsm engine: every workload, on stores in the run's directory."""
from __future__ import annotations

import os
import shutil
from itertools import islice
from typing import Optional, Tuple

import tinylsm

from .. import latency, sustained
from ..durable import GroupOpen, SyncPair
from ..measure import dir_bytes, expect, timed
from ..memory import Reopen, reopen_in_child, rss_per_key
from .base import Engine, shared

#: A log that never becomes an sstable by itself, for the store whose data
#: must stay in the log, which reopen-log and memory read (it is written
#: with this Config, and reopened with the default one; the notes under the
#: table say so).
_BIG_LOG = tinylsm.Config(max_log_length=(1 << 63) - 1)


class TinyLsmEngine(Engine):
    name = "tinylsm"

    def _path(self, sub: str) -> str:
        return os.path.join(self.root, "tinylsm-" + sub)

    def _open_store(self, sub: str, config: Optional[tinylsm.Config] = None) -> tinylsm.Lsm:
        return tinylsm.open(self._path(sub), key_size=self.d.key_size,
                            value_size=self.d.value_size, config=config)

    def _fill(self, db: tinylsm.Lsm) -> None:
        db.write_batch(self.d.items)
        db.flush()

    def _log_dir(self) -> str:
        """A closed store of all items, every one of them in the log."""
        path = self._path("log")
        if not os.path.exists(path):
            with self._open_store("log", _BIG_LOG) as db:
                db.write_batch(self.d.items)
        return path

    def _sst_dir(self) -> str:
        """A closed store of all items in one sstable, the log empty."""
        path = self._path("sst")
        if not os.path.exists(path):
            with self._open_store("sst") as db:
                db.write_batch(self.d.items)
                db.compact()  # the log becomes an sstable, merged into one
                expect("tinylsm log after compact", db.stats().log_bytes, 0)
        return path

    def insert(self) -> float:
        db = self._open_store("insert")

        def insert_all() -> None:
            for k, v in self.d.items:
                db[k] = v
            db.flush()

        t, _ = timed(insert_all)
        expect("tinylsm keys after insert", len(db), self.d.n)
        self._keep(db)
        return self.d.n / t

    def batch(self) -> float:
        """One write_batch of every item and a flush, default Config: a batch
        past max_log_length lands whole, then the log rolls over in the
        background (not waited for)."""
        db = self._open_store("batch")

        def write_all() -> None:
            db.write_batch(self.d.items)
            db.flush()

        t, _ = timed(write_all)
        expect("tinylsm keys after write_batch", len(db), self.d.n)
        db.close()
        shutil.rmtree(self._path("batch"), ignore_errors=True)
        return self.d.n / t

    def import_packed(self) -> float:
        """write_packed of every item into a new store, default Config, timed
        to its return: encoding, the log append (its write to the OS, no
        fsync; no flush) and the map.  The packed records are one bytes
        object made before the clock starts; a log past max_log_length
        rolls over in the background (not waited for)."""
        records = b"".join(k + v for k, v in self.d.items)
        db = self._open_store("import")
        t, _ = timed(lambda: db.write_packed(records))
        expect("tinylsm keys after write_packed", len(db), self.d.n)
        db.close()
        shutil.rmtree(self._path("import"), ignore_errors=True)
        return self.d.n / t

    def get(self) -> float:
        return self._subscript_gets(self._store())

    def get_many(self) -> float:
        return self._batch_gets(self._store().get_many)

    def scan(self) -> float:
        db = self._store()
        return self._scan_rate(lambda: sum(1 for _ in db.items()))

    def export(self) -> float:
        """Every record, packed, in key order: export() with its default
        chunks (65,536 records, each a new bytes object); the records are
        counted from the chunks' lengths."""
        db = self._store()
        size = self.d.key_size + self.d.value_size
        return self._scan_rate(lambda: sum(len(chunk) for chunk in db.export()) // size)

    def range(self) -> float:
        db = self._store()
        length = self.d.range_length

        def query_all() -> int:
            got = 0
            for start in self.d.range_starts:
                for _ in islice(db.range(start), length):
                    got += 1
            return got

        return self._range_rate(query_all)

    def _reopen(self, path: str, config: Optional[tinylsm.Config] = None) -> float:
        """Seconds until the store at ``path`` answers: it recovers every key."""
        t, db = timed(lambda: tinylsm.open(path, config=config))
        expect("tinylsm keys after reopen", len(db), self.d.n)
        db.close()
        return t

    def reopen_log(self) -> float:
        return self._reopen(self._log_dir())

    def reopen_sst(self) -> float:
        return self._reopen(self._sst_dir())

    def _durable(self, sub: str) -> SyncPair:
        db = self._open_store(sub)

        def one(k: bytes, v: bytes) -> None:
            db[k] = v
            db.flush()  # durable when it returns; concurrent flushes share fsyncs

        return one, db.close

    def sync_open(self) -> SyncPair:
        return self._durable("sync")

    def group_open(self, threads: int) -> GroupOpen:
        return shared(self._durable("group"), threads)  # one store, every thread

    def latency_during_compaction(self) -> latency.Latency:
        """Insert latencies while compact() runs, on a store refilled for
        each call (see latency.py)."""
        path = self._path("latency")
        latency.fill(path, self.d)
        return latency.during_compaction(path, self.d, _BIG_LOG.max_log_length)

    def sustained(self) -> sustained.Sustained:
        """Timed inserts into a new store with the default Config; a
        rollover shows between chunks as a log shorter than it would be."""
        path = self._path("sustained")
        shutil.rmtree(path, ignore_errors=True)
        db = self._open_store("sustained", tinylsm.Config())
        try:
            got = sustained.measure(db.__setitem__, self.d)
            expect("tinylsm keys after the sustained inserts", len(db), self.d.sustained_count)
            st = db.stats()
        finally:
            db.close()
        shutil.rmtree(path, ignore_errors=True)  # the run's biggest store
        return got._replace(rollovers=st.rollovers, sstables=st.sstables, merges=st.merges,
                            stalls=st.write_stalls)

    def memory(self) -> Optional[float]:
        path = self._log_dir()
        return rss_per_key(
            "import tinylsm\n"
            "base = rss()\n"
            f"db = tinylsm.open({path!r}, readonly=True)\n"
            "print(rss() - base, len(db))\n",
            self.d.n,
        )

    def reopen_memory(self) -> Tuple[Optional[Reopen], Optional[Reopen]]:
        """Reopens in fresh processes with the default Config: data in the
        log, then in sstables."""
        return (reopen_in_child(self._log_dir(), self.d.n),
                reopen_in_child(self._sst_dir(), self.d.n))

    def disk(self) -> float:
        return dir_bytes(self._sst_dir()) / self.d.n
