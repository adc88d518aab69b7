"""Bulk export and import against the per-item calls, in fresh processes.

    python bench/bulk.py [--processes P] [--count N] [--sizes 8/8,32/32]

Each process generates N random records, then times, with the default
Config and a new store each time:

* ``first import``: its first ``write_packed()`` of the records as one
  ``bytes`` (the figure a program that imports once at start-up sees: the
  map's and the page cache's memory are new to the process);
* the best of 3 of ``write_packed()``, ``write_batch()`` of a ready list
  of tuples, ``items()`` over the whole store and ``export()`` of it,
  forwards and reversed.

Rates are records (or items) per second; ratios are taken within one
process.  The README's "Bulk export and import" figures come from this.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

ROUNDS = 3


def _one_process(n: int, k: int, v: int, seed: int) -> Dict[str, float]:
    import tinylsm

    rnd = random.Random(seed)
    records = rnd.randbytes(n * (k + v))
    size = k + v
    root = tempfile.mkdtemp(prefix="tinylsm-bulk-")
    counter = iter(range(1 << 30))

    def new_store() -> "tinylsm.Lsm":
        return tinylsm.open(os.path.join(root, str(next(counter))), key_size=k, value_size=v)

    def import_once() -> float:
        db = new_store()
        t = time.perf_counter()
        db.write_packed(records)
        elapsed = time.perf_counter() - t
        db.close()
        return n / elapsed

    out: Dict[str, float] = {"first import": import_once()}
    out["import"] = max(import_once() for _ in range(ROUNDS))
    items = [(records[i:i + k], records[i + k:i + size]) for i in range(0, len(records), size)]

    def batch_once() -> float:
        db = new_store()
        t = time.perf_counter()
        db.write_batch(items)
        elapsed = time.perf_counter() - t
        db.close()
        return n / elapsed

    out["write_batch"] = max(batch_once() for _ in range(ROUNDS))
    del items
    db = new_store()
    db.write_packed(records)
    length = len(db)

    def scan_once() -> float:
        t = time.perf_counter()
        count = sum(1 for _ in db.items())
        elapsed = time.perf_counter() - t
        assert count == length
        return count / elapsed

    def export_once(reverse: bool = False) -> float:
        t = time.perf_counter()
        count = sum(len(chunk) for chunk in db.export(reverse=reverse)) // size
        elapsed = time.perf_counter() - t
        assert count == length
        return count / elapsed

    out["items"] = max(scan_once() for _ in range(ROUNDS))
    out["export"] = max(export_once() for _ in range(ROUNDS))
    out["export reversed"] = max(export_once(True) for _ in range(ROUNDS))
    db.close()
    shutil.rmtree(root)
    return out


def _span(values: List[float]) -> str:
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{lo / 1e6:.1f}M to {hi / 1e6:.1f}M (median {mid / 1e6:.1f}M)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--sizes", default="8/8,32/32")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        k, v, seed = (int(x) for x in args.child.split(","))
        print(json.dumps(_one_process(args.count, k, v, seed)))
        return
    import tinylsm

    print(f"tinylsm {tinylsm.__version__} (codec: {tinylsm.BACKEND}), {args.count:,} records, "
          f"{args.processes} fresh processes per size, default Config")
    for sizes in args.sizes.split(","):
        k, v = (int(x) for x in sizes.split("/"))
        runs = []
        for p in range(args.processes):
            done = subprocess.run(
                [sys.executable, __file__, "--count", str(args.count),
                 "--child", f"{k},{v},{p + 1}"],
                check=True, capture_output=True, text=True)
            runs.append(json.loads(done.stdout))
        print(f"\n{k}/{v}")
        for name in ("first import", "import", "write_batch", "items", "export",
                     "export reversed"):
            print(f"  {name:15s} {_span([r[name] for r in runs])}")
        for num, den in (("import", "write_batch"), ("export", "items")):
            ratios = [r[num] / r[den] for r in runs]
            print(f"  {num} / {den}: {min(ratios):.2f}x to {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
