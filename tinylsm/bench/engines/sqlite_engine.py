"""The ``sqlite3`` engine: one ``WITHOUT ROWID`` table of (k, v), WAL
journal, ``synchronous=FULL``; every write workload ends with a COMMIT."""
from __future__ import annotations

import os
import sqlite3
from typing import Any

from ..durable import GroupOpen, Insert, SyncPair
from ..measure import expect, timed
from .base import Engine

_INSERT = "INSERT OR REPLACE INTO kv VALUES (?, ?)"
_SELECT = "SELECT v FROM kv WHERE k = ?"


class SqliteEngine(Engine):
    name = "sqlite3"

    def _path(self, sub: str) -> str:
        return os.path.join(self.root, f"sqlite-{sub}.db")

    def _open_store(self, sub: str, **kw: Any) -> sqlite3.Connection:
        con: sqlite3.Connection = sqlite3.connect(  # explicit BEGIN
            self._path(sub), isolation_level=None, **kw)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL)"
                    " WITHOUT ROWID")
        return con

    def _fill(self, con: sqlite3.Connection) -> None:
        con.execute("BEGIN")
        con.executemany(_INSERT, self.d.items)
        con.execute("COMMIT")

    def insert(self) -> float:
        con = self._open_store("insert")

        def insert_all() -> None:
            execute, sql = con.execute, _INSERT
            execute("BEGIN")
            for item in self.d.items:
                execute(sql, item)
            execute("COMMIT")

        t, _ = timed(insert_all)
        self._keep(con)
        return self.d.n / t

    def batch(self) -> float:
        path = self._path("batch")
        if os.path.exists(path):
            os.unlink(path)
        con = self._open_store("batch")
        t, _ = timed(lambda: self._fill(con))
        expect("sqlite3 rows", con.execute("SELECT count(*) FROM kv").fetchone()[0], self.d.n)
        con.close()
        return self.d.n / t

    def get(self) -> float:
        con = self._store()

        def get_all() -> int:
            execute, sql = con.execute, _SELECT
            found = 0
            for k in self.d.get_keys:
                found += execute(sql, (k,)).fetchone() is not None
            return found

        return self._gets_rate(get_all)

    def scan(self) -> float:
        con = self._store()
        return self._scan_rate(
            lambda: sum(1 for _ in con.execute("SELECT k, v FROM kv ORDER BY k")))

    def range(self) -> float:
        con = self._store()
        sql = "SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?"
        length = self.d.range_length

        def query_all() -> int:
            execute = con.execute
            return sum(len(execute(sql, (s, length)).fetchall()) for s in self.d.range_starts)

        return self._range_rate(query_all)

    def _reopen(self) -> float:
        """Seconds to open the database and read one key."""
        path = self._full("batch")
        key = self.d.keys[0]

        def open_and_get() -> sqlite3.Connection:
            con = sqlite3.connect(path, isolation_level=None)
            expect("sqlite3 get after reopen", con.execute(_SELECT, (key,)).fetchone(),
                   (self.d.values[0],))
            return con

        t, con = timed(open_and_get)
        con.close()
        return t

    reopen_log = reopen_sst = _reopen

    def sync_open(self) -> SyncPair:
        con = self._open_store("sync")  # autocommit: every INSERT commits and fsyncs

        def one(k: bytes, v: bytes) -> None:
            con.execute(_INSERT, (k, v))

        return one, con.close

    def group_open(self, threads: int) -> GroupOpen:
        # the first creates the table before the others connect
        cons = [self._open_store("group", check_same_thread=False, timeout=60)]
        for _ in range(threads - 1):
            con = sqlite3.connect(self._path("group"), isolation_level=None,
                                  check_same_thread=False, timeout=60)
            con.execute("PRAGMA synchronous=FULL")  # per connection; WAL is per file
            cons.append(con)

        def for_thread(con: sqlite3.Connection) -> Insert:
            def one(k: bytes, v: bytes) -> None:
                con.execute(_INSERT, (k, v))  # autocommit: each INSERT commits and fsyncs
            return one

        def close() -> None:
            for con in cons:
                con.close()

        return [for_thread(con) for con in cons], close

    def disk(self) -> float:
        path = self._full("batch")
        size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        return size / self.d.n
