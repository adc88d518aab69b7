"""The ``lmdb`` engine (when the ``lmdb`` package is installed): one
environment per store, ``sync=True``; every write workload ends with the
commit of a write transaction."""
from __future__ import annotations

import importlib
import os
import shutil
from itertools import islice
from typing import Any, Optional

from .. import sustained
from ..data import Data
from ..durable import GroupOpen, SyncPair
from ..measure import expect, timed
from .base import Engine, shared

# An optional peer, imported by name so that type checking passes the same
# whether it is installed (with its own types) or not: Any here either way.
lmdb: Any
try:
    lmdb = importlib.import_module("lmdb")
except ImportError:  # pragma: no cover - depends on the environment
    lmdb = None


class LmdbEngine(Engine):
    name = "lmdb"

    def __init__(self, data: Data, root: str) -> None:
        super().__init__(data, root)
        self.map_size = max(1 << 30, 8 * data.n * (data.key_size + data.value_size + 64))

    @classmethod
    def unavailable(cls, key_size: int, root: str) -> Optional[str]:
        if lmdb is None:
            return "lmdb: not installed (pip install lmdb), skipped"
        probe = lmdb.open(os.path.join(root, "lmdb-probe"))
        limit = probe.max_key_size()
        probe.close()
        if key_size > limit:
            return f"lmdb: keys of {key_size} bytes exceed its limit of {limit}, skipped"
        return None

    def _path(self, sub: str) -> str:
        return os.path.join(self.root, "lmdb-" + sub)

    def _open_store(self, sub: str) -> Any:
        return lmdb.open(self._path(sub), map_size=self.map_size, sync=True, metasync=True)

    def _fill(self, env: Any) -> None:
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(self.d.items)

    def insert(self) -> float:
        env = self._open_store("insert")

        def insert_all() -> None:
            with env.begin(write=True) as txn:
                put = txn.put
                for k, v in self.d.items:
                    put(k, v)

        t, _ = timed(insert_all)
        self._keep(env)
        return self.d.n / t

    def batch(self) -> float:
        shutil.rmtree(self._path("batch"), ignore_errors=True)
        env = self._open_store("batch")
        t, _ = timed(lambda: self._fill(env))
        expect("lmdb entries", env.stat()["entries"], self.d.n)
        env.close()
        return self.d.n / t

    def get(self) -> float:
        env = self._store()

        def get_all() -> int:
            found = 0
            with env.begin() as txn:
                get = txn.get
                for k in self.d.get_keys:
                    found += get(k) is not None
            return found

        return self._gets_rate(get_all)

    def scan(self) -> float:
        env = self._store()

        def scan_all() -> int:
            with env.begin() as txn:
                return sum(1 for _ in txn.cursor())

        return self._scan_rate(scan_all)

    def range(self) -> float:
        env = self._store()
        length = self.d.range_length

        def query_all() -> int:
            got = 0
            with env.begin() as txn:
                cur = txn.cursor()
                for s in self.d.range_starts:
                    if cur.set_range(s):
                        got += sum(1 for _ in islice(cur.iternext(), length))
            return got

        return self._range_rate(query_all)

    def _reopen(self) -> float:
        """Seconds to open the environment and read one key."""
        path = self._full("batch")
        key = self.d.keys[0]

        def open_and_get() -> Any:
            env = lmdb.open(path, map_size=self.map_size)
            with env.begin() as txn:
                expect("lmdb get after reopen", txn.get(key), self.d.values[0])
            return env

        t, env = timed(open_and_get)
        env.close()
        return t

    reopen_log = reopen_sst = _reopen

    def _durable(self, sub: str) -> SyncPair:
        env = self._open_store(sub)

        def one(k: bytes, v: bytes) -> None:
            # one writer at a time; each commit fsyncs (sync=True)
            with env.begin(write=True) as txn:
                txn.put(k, v)

        return one, env.close

    def sync_open(self) -> SyncPair:
        return self._durable("sync")

    def group_open(self, threads: int) -> GroupOpen:
        return shared(self._durable("group"), threads)

    def sustained(self) -> sustained.Sustained:
        """The same timed loop as tinylsm's, one put per write transaction,
        ``sync=False``: no fsync per commit, as tinylsm's inserts have none."""
        path = self._path("sustained")
        shutil.rmtree(path, ignore_errors=True)
        count = self.d.sustained_count
        env = lmdb.open(path, sync=False, metasync=False,
                        map_size=max(self.map_size, 8 * count * (self.d.key_size
                                                                 + self.d.value_size + 64)))

        def put(k: bytes, v: bytes) -> None:
            with env.begin(write=True) as txn:
                txn.put(k, v)

        try:
            got = sustained.measure(put, self.d)
            expect("lmdb entries after the sustained inserts", env.stat()["entries"], count)
        finally:
            env.close()
        shutil.rmtree(path, ignore_errors=True)
        return got

    def disk(self) -> float:
        path = self._full("batch")
        env = lmdb.open(path, map_size=self.map_size, readonly=True)
        try:
            info, stat = env.info(), env.stat()
            used: int = (info["last_pgno"] + 1) * stat["psize"]
        finally:
            env.close()
        return used / self.d.n
