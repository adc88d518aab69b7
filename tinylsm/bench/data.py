"""The generated data every engine works on: N random distinct keys and
values, the keys the gets look up (in a random order, as new objects), the
starts of the range queries, and how many items the ``sustained`` workload
inserts (it makes them itself, see ``sustained.py``)."""
from __future__ import annotations

import bisect
import random
from typing import Dict, List, Optional

from .._backend import codec

#: The ``sustained`` workload inserts by default this many items per key (-n),
#: at most as many as distinct keys exist: 6,000,000 for the default
#: 1,000,000, whose 8-byte keys and values (21-byte log frames) fill the
#: default 32 MiB log about 3.8 times; 120,000 (no rollover) for -n 20000.
SUSTAINED_PER_KEY = 6


class Data:
    """The generated keys and values, shared by every engine."""

    def __init__(self, n: int, key_size: int, value_size: int, seed: int,
                 range_queries: int, range_length: int, sync_count: int,
                 sustained_count: Optional[int] = None) -> None:
        rng = random.Random(seed)
        self.n, self.key_size, self.value_size, self.seed = n, key_size, value_size, seed
        #: inserts of the ``sustained`` workload
        self.sustained_count = (min(SUSTAINED_PER_KEY * n, 256 ** key_size)
                                if sustained_count is None else sustained_count)
        self.keys = _distinct_keys(rng, n, key_size)
        blob = _randbytes(rng, value_size * n)
        self.values = [blob[i * value_size:(i + 1) * value_size] for i in range(n)]
        self.items = list(zip(self.keys, self.values))
        self.get_order = self.keys[:]
        rng.shuffle(self.get_order)
        #: The keys the gets look up, in ``get_order``: new objects of equal
        #: value, as an application computes its keys.  Looking up the very
        #: objects that were inserted flatters a ``dict`` (a key compares
        #: equal by identity, and its hash is cached in the object) and makes
        #: every engine read each key object at random in memory.
        self.get_keys = [bytes(memoryview(k)) for k in self.get_order]
        self.range_starts = [rng.choice(self.keys) for _ in range(range_queries)]
        self.range_length = range_length
        self.sorted_keys = sorted(self.keys)
        self.range_items = sum(
            len(self.sorted_keys[i:i + range_length])
            for i in (bisect.bisect_left(self.sorted_keys, s) for s in self.range_starts)
        )
        self.sync_items = self.items[:sync_count]
        self.frame_size = frame_size(key_size, value_size)


def frame_size(key_size: int, value_size: int) -> int:
    """Bytes of one log frame; ValueError for sizes tinylsm refuses."""
    return codec.frame_size(key_size, value_size)


def _randbytes(rng: random.Random, n: int) -> bytes:
    """``rng.randbytes(n)`` for any n: one call is limited to 2**31 bits."""
    chunk = 1 << 26
    return b"".join(rng.randbytes(min(chunk, n - i)) for i in range(0, n, chunk))


def _distinct_keys(rng: random.Random, n: int, k: int) -> List[bytes]:
    space = 256 ** k
    if n > space:
        raise ValueError(f"-n {n}: only {space} distinct keys of {k} bytes exist")
    # a dense key space: sample it; a sparse one: draw until n are distinct
    if space <= 4 * n:
        return [i.to_bytes(k, "big") for i in rng.sample(range(space), n)]
    seen: Dict[bytes, None] = {}
    while len(seen) < n:
        need = n - len(seen)
        blob = _randbytes(rng, k * need)
        for i in range(need):
            seen[blob[i * k:(i + 1) * k]] = None
    return list(seen)
