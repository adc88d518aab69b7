"""The ``dict`` engine: a plain dict, the in-memory speed to compare with.

It has no durable commit, so no ``sync``, ``group-commit`` or ``reopen``;
``scan`` sorts the keys (a dict is not ordered by key) and ``range``
bisects a key list sorted beforehand, untimed.
"""
from __future__ import annotations

import bisect
from typing import Dict, Optional

from .. import sustained
from ..measure import expect, timed
from ..memory import rss_per_key
from .base import Engine


class DictEngine(Engine):
    name = "dict"

    def _load(self) -> Dict[bytes, bytes]:
        return dict(self.d.items)

    def _release(self, store: Dict[bytes, bytes]) -> None:
        pass  # nothing to close: dropping it frees it

    def insert(self) -> float:
        store: Dict[bytes, bytes] = {}

        def insert_all() -> None:
            for k, v in self.d.items:
                store[k] = v

        t, _ = timed(insert_all)
        self._keep(store)
        return self.d.n / t

    def batch(self) -> float:
        store: Dict[bytes, bytes] = {}
        t, _ = timed(lambda: store.update(self.d.items))
        expect("dict keys", len(store), self.d.n)
        return self.d.n / t

    def sustained(self) -> sustained.Sustained:
        """The same timed loop as tinylsm's, into a new dict."""
        store: Dict[bytes, bytes] = {}
        got = sustained.measure(store.__setitem__, self.d)
        expect("dict keys after the sustained inserts", len(store), self.d.sustained_count)
        return got

    def get(self) -> float:
        return self._subscript_gets(self._store())

    def get_many(self) -> float:
        """A dict's fastest batch form: ``list(map(d.get, keys))``."""
        get = self._store().get
        return self._batch_gets(lambda keys: list(map(get, keys)))

    def scan(self) -> float:
        store = self._store()
        return self._scan_rate(lambda: sum(1 for k in sorted(store) if store[k] is not None))

    def range(self) -> float:
        store = self._store()
        keys = sorted(store)  # built beforehand, not timed
        length = self.d.range_length

        def query_all() -> int:
            got = 0
            for start in self.d.range_starts:
                i = bisect.bisect_left(keys, start)
                for k in keys[i:i + length]:
                    got += store[k] is not None
            return got

        return self._range_rate(query_all)

    def memory(self) -> Optional[float]:
        k, v, n = self.d.key_size, self.d.value_size, self.d.n
        # fresh key and value objects, as a store that owns its data has
        return rss_per_key(
            "import random\n"
            "rng = random.Random(1)\n"
            "base = rss()\n"
            "d = {}\n"
            f"while len(d) < {n}:\n"
            f"    d[rng.randbytes({k})] = rng.randbytes({v})\n"
            "print(rss() - base, len(d))\n",
            n,
        )
