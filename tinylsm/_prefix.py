"""The key range of a prefix: what ``Lsm.range(prefix=...)`` scans.

Keys have a fixed size K, so a prefix of ``n <= K`` bytes names the keys
from ``prefix + b"\\x00" * (K - n)`` up to, not including, the first key
after them: the prefix with its last byte that is not 0xff incremented
(the 0xff bytes after it dropped), padded with zeros.  A prefix of 0xff
bytes only has no such successor: its range is open-ended.
"""
from __future__ import annotations

from typing import Optional, Tuple

from ._format import as_bytes


def bounds(prefix: object, key_size: int) -> Tuple[bytes, Optional[bytes]]:
    """``(start, stop)`` of the keys of ``key_size`` bytes that begin with
    ``prefix`` (any bytes-like object): ``start <= key < stop``, ``stop``
    ``None`` when no key after them exists.

    Raises ``TypeError`` for a prefix that is not bytes-like and
    ``ValueError`` for one longer than ``key_size``.  O(K).

    >>> bounds(b"\\x00\\xff", 4)
    (b'\\x00\\xff\\x00\\x00', b'\\x01\\x00\\x00\\x00')
    >>> bounds(b"a", 2)
    (b'a\\x00', b'b\\x00')
    >>> bounds(b"\\xff\\xff", 3)
    (b'\\xff\\xff\\x00', None)
    >>> bounds(b"", 2)
    (b'\\x00\\x00', None)
    >>> bounds(b"abc", 2)
    Traceback (most recent call last):
        ...
    ValueError: prefix: expected at most 2 bytes, got 3
    """
    data = as_bytes(prefix, "prefix")
    if len(data) > key_size:
        raise ValueError(f"prefix: expected at most {key_size} bytes, got {len(data)}")
    start = data + bytes(key_size - len(data))
    head = data.rstrip(b"\xff")
    if not head:  # empty, or all 0xff: nothing sorts after these keys
        return start, None
    successor = head[:-1] + bytes((head[-1] + 1,))
    return start, successor + bytes(key_size - len(successor))
