"""What every engine adapter shares: the data and directory it works in,
the stores it keeps on disk, the loaded store its read workloads share, and
how those workloads are timed and checked.

An engine has one method per workload it supports, named after it
(``reopen-log``: ``reopen_log``), that returns the figure in the workload's
unit; ``sync_open`` and ``group_open`` open the durable inserts of the
``sync`` and ``group-commit`` workloads (see ``durable.py``).  A workload
whose method an engine lacks shows as "-" in its column.
"""
from __future__ import annotations

import os
from typing import Any, Callable, List, Mapping, Optional

from ..data import Data
from ..durable import GroupOpen, SyncPair
from ..measure import checked_rate

#: Keys per call of the ``get-many`` workload: a batch an application would
#: read at once.  One call of a million keys also makes a million value
#: objects at once, and in a process that has run for a while Python's
#: allocator then costs as much as the lookups themselves.
GET_MANY_BATCH = 1000


class Engine:
    """An engine adapter: the base of those in this package."""

    #: The engine's column in the table, and its name in ``--engines``.
    name = ""

    def __init__(self, data: Data, root: str) -> None:
        self.d = data
        self.root = root
        #: The store of every item that the read workloads share, made once.
        self.loaded: Any = None

    @classmethod
    def unavailable(cls, key_size: int, root: str) -> Optional[str]:
        """Why this engine cannot run here (a note for the user), or None."""
        return None

    # The stores on disk: an engine that has some says where one lives, how
    # it opens (created when missing) and how it takes every item.

    def _path(self, sub: str) -> str:
        """Where the store ``sub`` lives, in the run's directory."""
        raise NotImplementedError

    def _open_store(self, sub: str) -> Any:
        """The store ``sub``, opened (and created when missing)."""
        raise NotImplementedError

    def _fill(self, store: Any) -> None:
        """Put every item into ``store``, ending with a durable commit."""
        raise NotImplementedError

    def _filled(self, sub: str) -> Any:
        """The store ``sub``, opened and given every item."""
        store = self._open_store(sub)
        self._fill(store)
        return store

    def _full(self, sub: str) -> str:
        """The path of a closed store ``sub`` of every item, made unless it
        exists (the ``batch`` workload may have made it already)."""
        path = self._path(sub)
        if not os.path.exists(path):
            self._release(self._filled(sub))
        return path

    def _load(self) -> Any:
        """A new store of every item, for the read workloads."""
        return self._filled("loaded")

    def _store(self) -> Any:
        if self.loaded is None:
            self.loaded = self._load()
        return self.loaded

    def _keep(self, store: Any) -> None:
        """The store a write workload filled serves the reads from now on,
        unless one does already (then it is released)."""
        if self.loaded is None:
            self.loaded = store
        else:
            self._release(store)

    def _release(self, store: Any) -> None:
        store.close()

    # The read workloads: the engine gives the loop, which returns what it
    # counted; these time it and check the count.

    def _gets_rate(self, get_all: Callable[[], int]) -> float:
        """ops/s of ``get_all()``, which gets every key in the shared random
        order and returns how many it found."""
        return checked_rate(f"{self.name} gets found", get_all, self.d.n, self.d.n)

    def _subscript_gets(self, store: Mapping[bytes, bytes]) -> float:
        """ops/s of ``store[k]`` for every key, in the shared random order
        (fresh key objects: ``Data.get_keys``)."""
        order = self.d.get_keys

        def get_all() -> int:
            found = 0
            for k in order:
                found += store[k] is not None
            return found

        return self._gets_rate(get_all)

    def _batch_gets(self, get_many: Callable[[List[bytes]], List[Optional[bytes]]]) -> float:
        """keys/s of ``get_many(batch)`` over every key, in the shared
        random order (fresh key objects), GET_MANY_BATCH keys a call; the
        keys found are counted from the lists it returns."""
        keys = self.d.get_keys
        batches = [keys[i:i + GET_MANY_BATCH] for i in range(0, len(keys), GET_MANY_BATCH)]

        def get_all() -> int:
            found = 0
            for batch in batches:
                values = get_many(batch)
                found += len(values) - values.count(None)
            return found

        return self._gets_rate(get_all)

    def _scan_rate(self, scan_all: Callable[[], int]) -> float:
        """items/s of ``scan_all()``, which reads every item in key order
        and returns how many it read."""
        return checked_rate(f"{self.name} scan items", scan_all, self.d.n, self.d.n)

    def _range_rate(self, query_all: Callable[[], int]) -> float:
        """queries/s of ``query_all()``, which runs every range query and
        returns how many items they gave."""
        return checked_rate(f"{self.name} range items", query_all, self.d.range_items,
                            len(self.d.range_starts))

    def close(self) -> None:
        """Release the loaded store; the files stay until the run's
        directory is removed."""
        if self.loaded is not None:
            self._release(self.loaded)
            self.loaded = None


def shared(pair: SyncPair, threads: int) -> GroupOpen:
    """A ``group_open`` result in which every thread calls the one durable
    insert of ``pair`` (the engine serializes or groups them itself)."""
    one, close = pair
    return [one] * threads, close
