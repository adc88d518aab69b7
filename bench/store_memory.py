"""Resident memory of a whole store, for sizing a machine: steady bytes per
key, and the peaks while filling it (the log rolling over into sstables)
and while reopening it, each in a fresh process.

    python bench/store_memory.py                      # 3M keys, 8/8 and 32/32
    python bench/store_memory.py --n 1000000 --sizes 8/8

Each measurement is a fresh interpreter that imports tinylsm, generates its
keys and values first (not counted), resets the kernel's resident
high-water mark (``/proc/self/clear_refs``) and takes its resident size as
the base; figures are bytes per key over that base:

* ``fill, no rollover``: N inserts into a store whose log never rolls over
  (``max_log_length`` = 2**63 - 1): the peak is the map growing (its hash
  table is doubled with the previous one kept while it is migrated);
* ``fill, default Config``: the same inserts with the default ``Config``:
  the log rolls over into sstables in the background on the way;
  ``rollovers`` says how many;
* ``steady``: what the store filled with the default ``Config`` holds once
  its background work is over (after a collection), and what a reopened
  store holds;
* ``reopen, log`` and ``reopen, sstables``: the peak while ``open()``
  recovers the store written by the first and the second fill;
* ``compact()``: what merging that second store's tables into one adds to
  the open store at its peak (a merge holds its inputs' records and its
  output, decompressed).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

FILL = """
import gc, json, os, random, time
import tinylsm
from tinylsm.bench.memory import peak_rss, reset_peak, rss
n, k, v, path, huge = {n}, {k}, {v}, {path!r}, {huge}
rng = random.Random(1)
keys = list({{rng.getrandbits(8 * k).to_bytes(k, "big") for _ in range(int(n * 1.05))}})[:n]
value = bytes(v)
config = tinylsm.Config(max_log_length=2**63 - 1) if huge else tinylsm.Config()
gc.collect(); reset_peak(); base = rss()
db = tinylsm.open(path, key_size=k, value_size=v, config=config)
for key in keys:
    db[key] = value
db.flush()
peak = peak_rss() - base
# steady: once the background rollovers and merges are over
tables = os.path.join(path, "sstables")
deadline, quiet_since, seen = time.monotonic() + 60, time.monotonic(), None
while time.monotonic() < deadline and time.monotonic() - quiet_since < 2:
    now = sorted(os.listdir(tables))
    if now != seen or any(n.endswith("-tmp") for n in now):
        seen, quiet_since = now, time.monotonic()
    time.sleep(0.1)
rollovers = len(seen)
gc.collect()
steady = rss() - base  # the keys list is still held, as it was in the base
db.close()
print(json.dumps({{"peak": peak / n, "steady": steady / n, "sstables": rollovers}}))
"""

REOPEN = """
import gc, json
import tinylsm
from tinylsm.bench.memory import peak_rss, reset_peak, rss
gc.collect(); reset_peak(); base = rss()
db = tinylsm.open({path!r})
peak = peak_rss() - base
n = len(db)
gc.collect()
held = rss() - base
db.close()
print(json.dumps({{"peak": peak / n, "held": held / n}}))
"""


COMPACT = """
import gc, json
import tinylsm
from tinylsm.bench.memory import peak_rss, reset_peak, rss
db = tinylsm.open({path!r})
gc.collect(); reset_peak(); base = rss()
db.compact()
peak = peak_rss() - base
n = len(db)
db.close()
print(json.dumps({{"peak": peak / n}}))
"""


def child(code: str) -> Dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout)


def measure(n: int, k: int, v: int, root: str) -> List[Tuple[str, str]]:
    log_path, sst_path = os.path.join(root, f"log-{k}-{v}"), os.path.join(root, f"sst-{k}-{v}")
    quiet = child(FILL.format(n=n, k=k, v=v, path=log_path, huge=True))
    rolled = child(FILL.format(n=n, k=k, v=v, path=sst_path, huge=False))
    reopen_log = child(REOPEN.format(path=log_path))
    reopen_sst = child(REOPEN.format(path=sst_path))
    compact = child(COMPACT.format(path=sst_path))
    steady = rolled["steady"]
    return [
        ("steady (open store, filled)", f"{steady:.1f} B"),
        ("steady (reopened store)", f"{reopen_sst['held']:.1f} B"),
        ("fill, no rollover: peak", f"{quiet['peak']:.1f} B ({quiet['peak'] / steady:.2f}x)"),
        ("fill, default Config: peak", f"{rolled['peak']:.1f} B ({rolled['peak'] / steady:.2f}x)"
         f", {rolled['sstables']:.0f} sstables at the end"),
        ("reopen, data in log: peak",
         f"{reopen_log['peak']:.1f} B ({reopen_log['peak'] / steady:.2f}x)"),
        ("reopen, data in sstables: peak",
         f"{reopen_sst['peak']:.1f} B ({reopen_sst['peak'] / steady:.2f}x)"),
        ("compact() of that store: peak added",
         f"{compact['peak']:.1f} B ({compact['peak'] / steady:.2f}x)"),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 3M keys: enough log for the default Config to roll over at 8/8 too
    p.add_argument("--n", type=int, default=3_000_000)
    p.add_argument("--sizes", default="8/8,32/32", help="K/V pairs, comma-separated")
    args = p.parse_args()
    import tinylsm

    print(f"tinylsm {tinylsm.__version__} ({tinylsm.BACKEND}), {args.n:,} keys, "
          "bytes per key over a fresh interpreter's RSS (x: over steady)")
    with tempfile.TemporaryDirectory() as root:
        for pair in args.sizes.split(","):
            k, v = (int(x) for x in pair.split("/"))
            print(f"\nK={k} V={v}")
            for label, figure in measure(args.n, k, v, root):
                print(f"  {label:<36} {figure}")


if __name__ == "__main__":
    main()
