"""Small deterministic workloads and the ``dict`` model they are checked against.

An operation is one of ``("I", key, value)``, ``("R", key)``,
``("B", [(key, value_or_None), ...])``, ``("P", records, removals, items)``
(``write_packed`` of packed ``key + value`` records and packed keys or None,
the equivalent batch ``items`` last: see ``packed``)
and ``("F",)`` (flush).  ``run``
applies them to a store, ``model_after`` to a ``dict``, and ``log_ends``
computes, from the format alone (FORMAT.md), where each operation's frames
end in the log, so that a test knows exactly which operations a log cut at
any offset keeps.
"""
from __future__ import annotations

import os
import random
from bisect import bisect_right
from typing import Dict, List, Optional, Sequence, Tuple

import tinylsm

Op = Tuple
Model = Dict[bytes, bytes]

#: (K, V) pairs the exhaustive tests use: K + V > 16 (the batch case the
#: original crate panics on) and K + V < 8 (padded frames).
SIZES = [(8, 10), (2, 3)]


def key(i: int, k: int) -> bytes:
    return (i % (1 << (8 * k))).to_bytes(k, "big")


def value(rng: random.Random, v: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(v))


def make_ops(seed: int, n: int, k: int, v: int, keys: int = 12,
             flush_every: int = 7) -> List[Op]:
    """``n`` operations over ``keys`` keys: inserts, overwrites, removes (of
    present and absent keys), batches (empty, with tombstones, with a key
    repeated, a lone tombstone), and a flush every ``flush_every``;
    ``packed_ops`` puts packed writes among them."""
    rng = random.Random(seed)
    ops: List[Op] = []
    fixed = [
        ("B", []),
        ("B", [(key(1, k), value(rng, v)), (key(2, k), None), (key(1, k), value(rng, v))]),
        ("B", [(key(keys + 5, k), None)]),
    ]
    for i in range(n):
        if i % flush_every == flush_every - 1:
            ops.append(("F",))
            continue
        if i % 9 == 4 and fixed:
            ops.append(fixed.pop(0))
            continue
        r = rng.random()
        if r < 0.55:
            ops.append(("I", key(rng.randrange(keys), k), value(rng, v)))
        elif r < 0.75:
            ops.append(("R", key(rng.randrange(keys + 3), k)))
        else:
            items = []
            for _ in range(rng.randrange(1, 5)):
                kk = key(rng.randrange(keys + 3), k)
                items.append((kk, None if rng.random() < 0.35 else value(rng, v)))
            ops.append(("B", items))
    ops.extend(fixed)
    return ops


def packed_ops(seed: int, ops: List[Op], k: int, v: int, keys: int = 12) -> List[Op]:
    """``ops`` with packed writes put in at every fifth place: one with a key
    repeated and a removal of a key it writes and of an absent key, one of
    removals only, one of records only, and an empty one."""
    rng = random.Random(seed)
    extra = [
        packed([(key(3, k), value(rng, v)), (key(4, k), value(rng, v)),
                (key(3, k), value(rng, v))], [key(4, k), key(keys + 6, k)]),
        packed([], [key(1, k), key(5, k)]),
        packed([(key(rng.randrange(keys), k), value(rng, v)) for _ in range(4)], None),
        packed([], None),
    ]
    out: List[Op] = []
    for i, op in enumerate(ops):
        if i % 5 == 2 and extra:
            out.append(extra.pop(0))
        out.append(op)
    return out + extra


def packed(pairs: Sequence[Tuple[bytes, bytes]], removals: Optional[Sequence[bytes]]) -> Op:
    """The ``write_packed`` operation of ``pairs`` and ``removals``; its last
    field is the equivalent ``write_batch`` items, for the model."""
    return ("P", b"".join(kk + vv for kk, vv in pairs),
            None if removals is None else b"".join(removals),
            list(pairs) + [(kk, None) for kk in removals or ()])


def apply(model: Model, op: Op) -> None:
    if op[0] == "I":
        model[op[1]] = op[2]
    elif op[0] == "R":
        model.pop(op[1], None)
    elif op[0] in "BP":
        for kk, vv in op[1] if op[0] == "B" else op[3]:
            if vv is None:
                model.pop(kk, None)
            else:
                model[kk] = vv


def prefix_models(ops: Sequence[Op], start: Optional[Model] = None) -> List[Model]:
    """``out[i]`` is the model after the first ``i`` operations."""
    model = dict(start or {})
    out = [dict(model)]
    for op in ops:
        apply(model, op)
        out.append(dict(model))
    return out


def run_op(db, op: Op) -> None:
    if op[0] == "I":
        db.insert(op[1], op[2])
    elif op[0] == "R":
        db.remove(op[1])
    elif op[0] == "B":
        db.write_batch(op[1])
    elif op[0] == "P":
        db.write_packed(op[1], op[2])
    elif op[0] == "F":
        db.flush()
    else:
        raise AssertionError(f"unknown op {op!r}")


def run(db, ops: Sequence[Op]) -> None:
    for op in ops:
        run_op(db, op)


def log_ends(ops: Sequence[Op], k: int, v: int, start: Optional[Model] = None) -> List[int]:
    """``ends[i]``: the log length once the first ``i`` operations are written
    (a remove of an absent key writes nothing; a batch, or ``write_packed``,
    writes a header and one frame per item)."""
    frame = 5 + max(8, k + v)
    model = dict(start or {})
    ends = [0]
    for op in ops:
        n = 0
        if op[0] == "I":
            n = 1
        elif op[0] == "R":
            n = 1 if op[1] in model else 0
        elif op[0] in "BP":
            n = 1 + len(op[1] if op[0] == "B" else op[3])
        apply(model, op)
        ends.append(ends[-1] + n * frame)
    return ends


def kept_by_cut(ends: Sequence[int], cut: int) -> int:
    """How many operations a log cut to ``cut`` bytes keeps whole."""
    return bisect_right(ends, cut) - 1


def contents(db) -> Model:
    return dict(db.items())


def log_path(path) -> str:
    return os.path.join(os.fspath(path), "log")


def sstable_paths(path) -> List[str]:
    ssdir = os.path.join(os.fspath(path), "sstables")
    return sorted(os.path.join(ssdir, n) for n in os.listdir(ssdir)
                  if len(n) == 16 and all(c in "0123456789abcdef" for c in n))


def open_db(path, k: int, v: int, files=None, **config) -> "tinylsm.Lsm":
    cfg = tinylsm.Config(**config) if config else None
    return tinylsm.open(os.fspath(path), key_size=k, value_size=v, config=cfg, _files=files)


#: No background merge ever picks a run: merges happen only when a test asks.
NO_AUTO_MERGE = dict(merge_window=255, max_space_amp=255)
