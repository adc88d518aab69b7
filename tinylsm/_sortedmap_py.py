"""The in-memory sorted map, pure Python: a dict plus a lazily sorted key list.

This is the narrow interface the engine keeps its data behind, so that a
compact compiled map can take its place.  Every method is called with the
store's lock held except ``get``, ``contains``, ``len`` and iteration, which
rely on the GIL making single dict operations atomic.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Iterator, List, Optional, Tuple


class SortedMap:
    """Fixed-size ``bytes`` keys to ``bytes`` values, iterable in key order.

    Point operations are O(1).  The sorted key list is rebuilt on the first
    ordered read after a change: O(m log m + n) for m new keys when nothing
    was removed since the last ordered read, O(n) otherwise.
    """

    def __init__(self, key_size: int, value_size: int) -> None:
        self.key_size = key_size
        self.value_size = value_size
        self._d: dict = {}
        self._keys: Optional[List[bytes]] = None  # sorted, may hold removed keys
        self._new: List[bytes] = []  # added since _keys was built
        self._removed = False
        #: Bumped by every change; iterators compare it to detect writes.
        self.version = 0

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: bytes) -> bool:
        return key in self._d

    def get(self, key: bytes) -> Optional[bytes]:
        return self._d.get(key)

    def set(self, key: bytes, value: bytes) -> Optional[bytes]:
        d = self._d
        old = d.get(key)
        d[key] = value
        if old is None and self._keys is not None:
            self._new.append(key)
        self.version += 1
        return old

    def delete(self, key: bytes) -> Optional[bytes]:
        old = self._d.pop(key, None)
        if old is not None:
            self._removed = True
            self.version += 1
        return old

    def apply_records(self, records: bytes, key_size: int, value_size: int) -> None:
        """Apply packed records (see ``codec``) in order; tag 0 deletes."""
        rsize = 5 + key_size + value_size
        vstart = 5 + key_size
        data = bytes(records)
        for off in range(0, len(data), rsize):
            key = data[off + 5 : off + vstart]
            if data[off + 4]:
                self.set(key, data[off + vstart : off + rsize])
            else:
                self.delete(key)

    def sorted_keys(self) -> List[bytes]:
        """The live keys in order; the list must not be modified by callers."""
        keys = self._keys
        d = self._d
        if keys is None:
            keys = sorted(d)
        elif self._removed:
            fresh = set(self._new)
            keys = [k for k in keys if k in d and k not in fresh]
            keys.extend(k for k in fresh if k in d)
            keys.sort()
        elif self._new:
            keys = keys + [k for k in self._new if k in d]
            keys.sort()  # two sorted runs: timsort merges them in O(n)
        else:
            return keys
        self._keys = keys
        self._new = []
        self._removed = False
        return keys

    def items(
        self, start: Optional[bytes] = None, stop: Optional[bytes] = None, reverse: bool = False
    ) -> Iterator[Tuple[bytes, bytes]]:
        """Yield ``(key, value)`` with ``start <= key < stop`` in key order.

        Raises ``RuntimeError`` if the map changes while the iterator is in
        use, as ``dict`` does.
        """
        keys = self.sorted_keys()
        version = self.version
        lo = 0 if start is None else bisect_left(keys, start)
        hi = len(keys) if stop is None else bisect_left(keys, stop)
        d = self._d
        indexes = range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)
        for i in indexes:
            if self.version != version:
                raise RuntimeError("tinylsm store changed during iteration")
            key = keys[i]
            yield key, d[key]

    def _check(self) -> None:
        """Verify the invariants; for tests."""
        keys = self.sorted_keys()
        if keys != sorted(self._d):
            raise AssertionError("sorted key list does not match the map")
        for k, v in self._d.items():
            if len(k) != self.key_size or len(v) != self.value_size:
                raise AssertionError(f"bad sizes for {k!r}")
