"""The in-memory sorted map, pure Python: a dict plus a lazily sorted key list.

This is the narrow interface the engine keeps its data behind; the compiled
twin ``tinylsm._map`` (a compact C map) has the same behaviour, and
``tests/test_map_parity.py`` holds the two to it.  Every method is called with
the store's lock held except ``get``, ``in``, ``[]``, ``len`` and iteration,
which rely on the GIL making single dict operations atomic.

Keys for lookups (``get``, ``in``, ``[]``, ``delete``) may be any bytes-like
object; one that is not bytes-like or not ``key_size`` bytes long is simply
absent.  ``set`` raises ``TypeError``/``ValueError`` for such keys or values.
"""
from __future__ import annotations

import sys
from bisect import bisect_left
from itertools import chain
from typing import (Any, Dict, Iterable, Iterator, List, NoReturn, Optional, Tuple, TypeVar, Union,
                    overload)

from ._codec_py import _records_data
from ._format import as_bytes, as_int, as_sized, check_sizes
from ._types import Buffer
from .errors import ClosedError

_T = TypeVar("_T")

_CHANGED = "tinylsm store changed during iteration"
#: The most keys a map holds: the compiled twin's slot ids are 32-bit.
_MAX_KEYS = 2**32 - 2


def _as_bytes(obj: object) -> Optional[bytes]:
    """A lookup key as ``bytes`` if it is bytes-like, else None (absent)."""
    if type(obj) is bytes:
        return obj
    try:
        return memoryview(obj).tobytes()  # type: ignore[arg-type]
    except (TypeError, ValueError, BufferError):
        return None


_require_bytes = as_bytes  # the one rule for keys (see _format)
_coerce = as_sized


def _rounded(size: int) -> int:
    return (size + 15) & ~15


class _Dead:
    """Stands in for the dict of an invalidated map: any use raises."""

    def __init__(self, exc_type: type, message: str) -> None:
        self.exc_type = exc_type
        self.message = message

    def _raise(self, *args: object) -> None:
        raise self.exc_type(self.message)

    get = pop = items = __getitem__ = __setitem__ = __contains__ = __len__ = __iter__ = _raise


class SortedMap:
    """Fixed-size ``bytes`` keys to ``bytes`` values, iterable in key order.

    Point operations are O(1).  The sorted key list is rebuilt on the first
    ordered read after a change: O(m log m + n) for m new keys when nothing
    was removed since the last ordered read, O(n) otherwise.  ``m[key]``
    raises ``KeyError`` for an absent key.
    """

    def __init__(self, key_size: int, value_size: int) -> None:
        check_sizes(key_size, value_size)
        self._k = key_size
        self._v = value_size
        # bytes to bytes, but looked up with any object (a lookup key that
        # is not bytes-like as None, which is simply absent)
        self._d: Dict[Any, bytes] = {}
        self._keys: Optional[List[bytes]] = None  # sorted, may hold removed keys
        self._new: List[bytes] = []  # added since _keys was built
        self._removed = False
        #: Bumped by every change; iterators compare it to detect writes.
        self.version = 0
        #: apply_records is under way (it bumps ``version`` at its end)
        self._applying = False

    # -- sizes ---------------------------------------------------------------------

    @property
    def key_size(self) -> int:
        """K, fixed when the map is made."""
        return self._k

    @property
    def value_size(self) -> int:
        """V, fixed when the map is made."""
        return self._v

    @property
    def nbytes(self) -> int:
        """Bytes of memory held by the dict, its keys and values and the key
        lists: an estimate (objects rounded up to 16 bytes, as pymalloc does)."""
        d = self._d
        header = sys.getsizeof(b"")
        per_item = _rounded(header + self._k) + (_rounded(header + self._v) if self._v else 0)
        keys = sys.getsizeof(self._keys) if self._keys is not None else 0
        return sys.getsizeof(d) + len(d) * per_item + keys + sys.getsizeof(self._new)

    def _invalidate(self, exc_type: type, message: str) -> None:
        """Drop everything; from now on every use raises ``exc_type(message)``."""
        self._d = _Dead(exc_type, str(message))  # type: ignore[assignment]
        self._keys = None
        self._new = []
        self.version += 1

    # -- point operations ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: object) -> bool:
        if type(key) is not bytes:
            key = _as_bytes(key)
        return key in self._d

    def get(self, key: Buffer) -> Optional[bytes]:
        if type(key) is not bytes:
            key = _as_bytes(key)  # type: ignore[assignment]
        return self._d.get(key)

    def __getitem__(self, key: Buffer) -> bytes:
        value = self._d.get(key if type(key) is bytes else _as_bytes(key))
        if value is None:
            raise KeyError(key)
        return value

    def set(self, key: Buffer, value: Buffer) -> Optional[bytes]:
        """Set ``key`` to ``value``; return the previous value or None.

        Raises TypeError for a key or value that is not bytes-like and
        ValueError for one of the wrong size; nothing changes then.
        """
        d = self._d
        len(d)  # raises once invalidated
        if type(key) is not bytes or len(key) != self._k:
            key = _coerce(key, self._k, "key")
        if type(value) is not bytes or len(value) != self._v:
            value = _coerce(value, self._v, "value")
        old = d.get(key)
        d[key] = value
        if old is None and self._keys is not None:
            self._new.append(key)
        self.version += 1
        return old

    def delete(self, key: Buffer) -> Optional[bytes]:
        """Remove ``key``; return its value, or None if it was absent."""
        len(self._d)  # raises once invalidated
        if type(key) is not bytes:
            key = _as_bytes(key)  # type: ignore[assignment]
        old = self._d.pop(key, None)
        if old is not None:
            self._removed = True
            self.version += 1
        return old

    def reserve(self, n: int) -> None:
        """Make room for ``n`` keys in all, so that a map loaded up to ``n``
        keys never grows on the way: in the compiled twin.  A ``dict`` has no
        way to be sized in advance, so here it only checks ``n``: TypeError
        for one that is not an int, ValueError for a negative one or one past
        the most keys a map holds (2**32 - 2).
        """
        len(self._d)  # raises once invalidated
        as_int(n, "n", 0, _MAX_KEYS)

    def apply_records(self, records: Buffer, key_size: int, value_size: int) -> None:
        """Apply packed records (see ``codec``) in order; tag 0 deletes.

        Raises ValueError (changing nothing) for sizes other than the map's
        or a length that is not a multiple of the record size.
        """
        len(self._d)  # raises once invalidated
        self._check_sizes(key_size, value_size)
        rsize = 5 + key_size + value_size
        self._apply_runs([(_records_data(records, rsize), rsize, 5, None)])

    def apply_packed(self, records: Buffer, removals: Optional[Buffer], key_size: int,
                     value_size: int) -> None:
        """Set the packed records of ``records`` (each its key then its value,
        K + V bytes) in order, then delete the keys of ``removals`` (K bytes
        each; None: none): the changes ``codec.encode_packed`` logs.

        Raises ValueError (changing nothing) for sizes other than the map's
        or a length that is not a multiple of a record (or a key).
        """
        len(self._d)  # raises once invalidated
        self._check_sizes(key_size, value_size)
        runs: List[Tuple[bytes, int, int, Optional[bool]]] = [
            (_records_data(records, key_size + value_size), key_size + value_size, 0, True)]
        if removals is not None:
            runs.append((_records_data(removals, key_size, "packed keys"), key_size, 0, False))
        self._apply_runs(runs)

    def _check_sizes(self, key_size: int, value_size: int) -> None:
        if key_size != self._k or value_size != self._v:
            raise ValueError(
                f"records of key_size={key_size}, value_size={value_size} for a map of "
                f"key_size={self._k}, value_size={self._v}")

    def _apply_runs(self, runs: List[Tuple[bytes, int, int, Optional[bool]]]) -> None:
        """Apply each run ``(data, stride, koff, sets)``: changes ``stride``
        bytes apart, each a key at ``koff`` and its value after it; ``sets``
        True sets them, False deletes them, None reads each one's tag at
        ``koff - 1`` (0 deletes)."""
        d = self._d
        new = self._new if self._keys is not None else None
        k, v = self._k, self._v
        changes = 0
        removed = False
        self._applying = True  # an export's chunk copied meanwhile is refused
        try:
            for data, stride, koff, sets in runs:
                for off in range(koff, len(data), stride):
                    key = data[off:off + k]
                    if sets if sets is not None else data[off - 1]:
                        if new is not None and key not in d:
                            new.append(key)
                        d[key] = data[off + k:off + k + v]
                        changes += 1
                    elif d.pop(key, None) is not None:
                        removed = True
                        changes += 1
        finally:
            self._removed = self._removed or removed
            self.version += changes
            self._applying = False

    # -- ordered reads -------------------------------------------------------------

    def _sorted_keys(self) -> List[bytes]:
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
        self, start: Optional[Buffer] = None, stop: Optional[Buffer] = None, reverse: bool = False
    ) -> Iterator[Tuple[bytes, bytes]]:
        """An iterator of ``(key, value)`` with ``start <= key < stop`` in key
        order (descending with ``reverse``); either bound may be None.

        The range is fixed now; the pairs are read as the iterator advances.
        Its next step after any change raises RuntimeError, as ``dict`` does.
        """
        keys, indexes = self._range(start, stop, reverse)
        return self._iterate(keys, indexes, self.version)

    def keys(
        self, start: Optional[Buffer] = None, stop: Optional[Buffer] = None, reverse: bool = False
    ) -> Iterator[bytes]:
        """An iterator of the keys ``start <= key < stop`` in key order
        (descending with ``reverse``), as ``items`` gives them but without
        their values (no pair, no value object made per key).

        The range is fixed now; its next step after any change raises
        RuntimeError, as ``items`` does.
        """
        keys, indexes = self._range(start, stop, reverse)
        return self._iterate_keys(keys, indexes, self.version)

    def export(
        self, start: Optional[Buffer] = None, stop: Optional[Buffer] = None,
        reverse: bool = False, chunk_records: int = 65536,
    ) -> Iterator[memoryview]:
        """An iterator of chunks of the packed records ``key + value`` (K + V
        bytes each) with ``start <= key < stop``, in key order (descending
        with ``reverse``); either bound may be None.

        Each chunk is a read-only ``memoryview`` (format ``B``) of a new
        ``bytes`` object of at most ``chunk_records`` records (only the last
        may hold fewer; an empty range yields no chunk).  A chunk is never
        written again once handed out, so a caller may keep every one.
        Each chunk is joined in one step (one C call, which no other thread
        interrupts), so each is consistent; the range is fixed now, and the
        next step after any change raises RuntimeError, as ``items`` does.
        Raises TypeError for a ``chunk_records`` that is not an int,
        ValueError for one below 1.  Cost: O(K + V) per record.
        """
        chunk = as_int(chunk_records, "chunk_records", 1)
        keys, indexes = self._range(start, stop, reverse)
        return self._chunks(keys, indexes, chunk, self.version)

    def _chunks(self, keys: List[bytes], indexes: range, chunk: int, version: int
                ) -> Iterator[memoryview]:
        d = self._d
        stop, step = indexes.stop, indexes.step
        for i in range(indexes.start, stop, chunk * step):
            end = i + chunk * step
            end = min(end, stop) if step > 0 else max(end, stop)
            part = keys[i:end if end >= 0 else None:step]
            try:
                # key, value, key, value, ...: one join of a C loop (the
                # values fetched by map), so no other thread runs during it
                data = b"".join(chain.from_iterable(zip(part, map(d.__getitem__, part))))
            except KeyError:  # removed since the check: a change, raised below
                data = b""
            # checked after the copy: a change before or during it (a batch
            # under way included) raises instead of yielding the chunk
            if self.version != version or self._applying:
                self._changed()
            yield memoryview(data)

    def _range(self, start: Optional[Buffer], stop: Optional[Buffer], reverse: bool
               ) -> Tuple[List[bytes], range]:
        """The sorted keys, and the indexes of those ``start <= key < stop``
        (either bound None) in key order or reversed."""
        len(self._d)  # raises once invalidated
        if start is not None and type(start) is not bytes:
            start = _require_bytes(start, "start")
        if stop is not None and type(stop) is not bytes:
            stop = _require_bytes(stop, "stop")
        keys = self._sorted_keys()
        lo = 0 if start is None else bisect_left(keys, start)
        hi = len(keys) if stop is None else bisect_left(keys, stop)
        return keys, range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)

    def _changed(self) -> None:
        if isinstance(self._d, _Dead):
            self._d._raise()  # closed (or forked away): say so
        raise RuntimeError(_CHANGED)

    def _iterate(self, keys: List[bytes], indexes: range, version: int
                 ) -> Iterator[Tuple[bytes, bytes]]:
        d = self._d
        for i in indexes:
            if self.version != version:
                self._changed()
            key = keys[i]
            yield key, d[key]

    def _iterate_keys(self, keys: List[bytes], indexes: range, version: int
                      ) -> Iterator[bytes]:
        for i in indexes:
            if self.version != version:
                self._changed()
            yield keys[i]

    def _check(self) -> None:
        """Verify the invariants; for tests."""
        keys = self._sorted_keys()
        if keys != sorted(self._d):
            raise AssertionError("sorted key list does not match the map")
        for k, v in self._d.items():
            if type(k) is not bytes or type(v) is not bytes:
                raise AssertionError(f"not bytes: {k!r}")
            if len(k) != self._k or len(v) != self._v:
                raise AssertionError(f"bad sizes for {k!r}")


class _Unopened:
    """The map of a store that is not open (yet): every use raises."""

    key_size = 1
    value_size = 0
    _k = 1
    _v = 0

    def __init__(self) -> None:
        self._d = _Dead(ClosedError, "the store is not open")

    def __getattr__(self, name: str) -> object:
        self._d._raise()
        raise AssertionError("unreachable")  # pragma: no cover

    def __len__(self) -> int:
        return len(self._d)  # type: ignore[arg-type]

    def __contains__(self, key: object) -> bool:
        return key in self._d


class StoreCore:
    """The hot paths of a store: the twin of ``tinylsm._map.StoreCore``.

    It holds the store's map (``_map``, given by ``_attach`` once the sizes
    are known).  Reads are served here, checking the key only on a miss.
    Writes always go to ``_slow_insert`` / ``_slow_remove`` /
    ``_slow_insert_if_absent``, which the owner implements under its lock:
    the compiled twin's fast path is safe because one C call runs without
    letting another thread in, but Python code can be interrupted between
    checking for room and appending its frame, and ``close()`` could then
    write the buffer out in between and lose the frame.  Every write thus
    takes the decisions the compiled slow path takes, and both builds behave
    alike.  All of these are O(1), no I/O.
    """

    _map: SortedMap = _Unopened()  # type: ignore[assignment]
    _busy = 0  # raised by the owner's slow paths; read only by the compiled twin

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    def _attach(self, map: SortedMap, buf: bytearray, frame_size: int) -> None:
        """Hold ``map`` as the store's data.  (The compiled twin also appends
        its fast writes to ``buf``; this one has no fast path.)"""
        self._map = map

    def _set_fast_cap(self, cap: int) -> None:
        """Where the compiled twin's fast paths may run; nothing here, as
        this twin has no fast path."""

    def _slow_insert(self, key: Buffer, value: Buffer) -> Optional[bytes]:
        """The owner's insert when the fast path cannot finish it."""
        raise NotImplementedError

    def _slow_remove(self, key: Buffer) -> Optional[bytes]:
        """The owner's remove when the fast path cannot finish it."""
        raise NotImplementedError

    def _slow_insert_if_absent(self, key: Buffer, value: Buffer) -> Optional[bytes]:
        """The owner's insert_if_absent when the fast path cannot finish it."""
        raise NotImplementedError

    @property
    def key_size(self) -> int:
        """K, the size of every key in bytes."""
        return self._map._k

    @property
    def value_size(self) -> int:
        """V, the size of every value in bytes."""
        return self._map._v

    def insert(self, key: Buffer, value: Buffer) -> Optional[bytes]:
        """Set ``key`` to ``value``; return the previous value or ``None``.

        The change is in memory and in the log buffer when this returns (see
        ``tinylsm.Lsm`` for when it is durable).  Raises ``TypeError`` or
        ``ValueError`` for a key or value that is not bytes-like of the
        store's sizes, and ``OSError`` if the log cannot take the change:
        nothing changed then.  O(1) amortized.
        """
        return self._slow_insert(key, value)

    def __setitem__(self, key: Buffer, value: Buffer) -> None:
        # insert's work, as the compiled twin does it: not through
        # ``self.insert`` (which a subclass may have replaced)
        self._slow_insert(key, value)

    def insert_if_absent(self, key: Buffer, value: Buffer) -> Optional[bytes]:
        """Set ``key`` to ``value`` only if it is absent: return ``None`` when
        it inserted, else the value ``key`` has (and change nothing).

        Atomic: of threads racing to insert the same absent key, exactly one
        inserts and the others get its value.  Only an insert is logged.
        Raises as ``insert`` does, whether the key is present or not.  O(1)
        amortized.
        """
        return self._slow_insert_if_absent(key, value)

    def remove(self, key: Buffer) -> Optional[bytes]:
        """Delete ``key``; return its value, or ``None`` if it was absent.

        Removing an absent key changes nothing and logs nothing.  Raises as
        ``insert`` does.  O(1) amortized.
        """
        return self._slow_remove(key)

    def __delitem__(self, key: Buffer) -> None:
        # remove's work, as the compiled twin does it: not through
        # ``self.remove`` (which a subclass may have replaced)
        if self._slow_remove(key) is None:
            raise KeyError(key)

    def __len__(self) -> int:
        return len(self._map)

    def __getitem__(self, key: Buffer) -> bytes:
        m = self._map
        value = m.get(key)
        if value is None:
            _coerce(key, m._k, "key")  # raises for a key of the wrong type or size
            raise KeyError(key)
        return value

    @overload
    def get(self, key: Buffer, default: None = None) -> Optional[bytes]: ...
    @overload
    def get(self, key: Buffer, default: Union[bytes, _T]) -> Union[bytes, _T]: ...
    def get(self, key: Buffer, default: object = None) -> object:
        """The value of ``key``, or ``default`` when it is absent. O(1), no I/O."""
        m = self._map
        value = m.get(key)
        if value is None:
            _coerce(key, m._k, "key")
            return default
        return value

    def __contains__(self, key: object) -> bool:
        m = self._map
        if key in m:
            return True
        _coerce(key, m._k, "key")
        return False

    def get_many(self, keys: Iterable[Buffer]) -> List[Optional[bytes]]:
        """The values of ``keys`` (an iterable of keys), in order: a list
        with each key's value, or ``None`` where a key is absent.

        Every key is checked as ``get`` checks it, before any is looked up:
        one that is not bytes-like or not ``key_size`` bytes long raises
        ``TypeError`` or ``ValueError`` naming its position.  The values
        are read in one step, with no change from another thread in
        between.  Cost: O(len(keys)), no I/O (the compiled twin overlaps
        the lookups' cache misses; this one is a loop of dict lookups).
        """
        m = self._map
        len(m)  # raises once closed
        if isinstance(keys, (bytes, bytearray, memoryview, str)):
            raise TypeError(f"keys: expected an iterable of keys, got {type(keys).__name__} "
                            "(for one key, use get())")
        k = m._k
        checked = [key if type(key) is bytes and len(key) == k
                   else _coerce(key, k, f"key of item {i}") for i, key in enumerate(keys)]
        # list(map(...)) of a dict's get runs as one C loop, with no
        # bytecode in between for the interpreter to switch threads at
        return list(map(m._d.get, checked))
