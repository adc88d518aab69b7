"""Resident memory per key of the in-memory maps, measured in fresh processes.

    python bench/map_memory.py                 # the table: 10M keys, 8/8 and 32/32
    python bench/map_memory.py --n 1000000     # smaller
    python bench/map_memory.py --one cython 8 8 10000000 bulk   # one measurement, JSON

Each measurement runs in its own process: it builds N packed records of
random keys (not counted), reads the resident set size (``/proc/self/statm``),
loads them into the map (``apply_records``, or ``set`` one by one), brings
the sorted index up to date with an ordered read, and reads the resident set
size again.  ``rss/key`` is the difference over N; ``peak/key`` uses the
process's resident high-water mark (reset after the records are built, via
``/proc/self/clear_refs``), so it includes the temporary buffers of the
first sort.  A ``dict`` of ``bytes`` (the
pure-Python twin's layout) is measured at a smaller N and is per key all the
same.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def reset_peak() -> bool:
    """Reset the kernel's resident high-water mark (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak() -> int:
    """The resident high-water mark: since ``reset_peak``, or of the process."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def records(n: int, k: int, v: int, seed: int = 1) -> bytes:
    """N live records of random keys (duplicates are rare) and values."""
    rnd = random.Random(seed)
    r = 5 + k + v
    buf = bytearray(n * r)
    buf[4::r] = b"\x01" * n
    for j in range(5, r):
        buf[j::r] = rnd.randbytes(n)
    return bytes(buf)


def measure(impl: str, k: int, v: int, n: int, mode: str) -> dict:
    sys.path.insert(0, ROOT)
    from tinylsm.bench import rss

    recs = records(n, k, v)
    r = 5 + k + v
    if impl == "cython":
        from tinylsm._map import SortedMap
    elif impl == "python":
        from tinylsm._map_py import SortedMap
    base = rss()
    exact_peak = reset_peak()
    base_peak = base if exact_peak else peak()
    if impl == "dict":
        d = {recs[i + 5:i + 5 + k]: recs[i + 5 + k:i + r] for i in range(0, len(recs), r)}
        count = len(d)
        nbytes = None
    else:
        m = SortedMap(k, v)
        if mode == "bulk":
            m.apply_records(recs, k, v)
        else:
            for i in range(0, len(recs), r):
                m.set(recs[i + 5:i + 5 + k], recs[i + 5 + k:i + r])
        for _ in m.items(None, b""):  # brings the sorted index up to date
            pass
        count = len(m)
        nbytes = m.nbytes
    after = rss()
    return {
        "impl": impl, "k": k, "v": v, "n": count, "mode": mode,
        "rss_per_key": (after - base) / count,
        # without a reset the high-water mark may predate the load: unknown
        "peak_per_key": (max(peak(), after) - base_peak) / count if exact_peak else None,
        "nbytes_per_key": None if nbytes is None else nbytes / count,
    }


def run_one(impl: str, k: int, v: int, n: int, mode: str = "bulk") -> dict:
    """``measure`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--one", impl, str(k), str(v), str(n), mode],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="keys for the compiled map")
    parser.add_argument("--dict-n", type=int, default=1_000_000, help="keys for dict and the twin")
    parser.add_argument("--set", action="store_true", help="also load with set() one by one")
    parser.add_argument("--one", nargs=5, metavar=("IMPL", "K", "V", "N", "MODE"))
    args = parser.parse_args()
    if args.one:
        impl, k, v, n, mode = args.one
        print(json.dumps(measure(impl, int(k), int(v), int(n), mode)))
        return
    rows = []
    for k, v in [(8, 8), (32, 32)]:
        rows.append(run_one("cython", k, v, args.n, "bulk"))
        if args.set:
            rows.append(run_one("cython", k, v, args.n, "set"))
        rows.append(run_one("python", k, v, args.dict_n, "bulk"))
        rows.append(run_one("dict", k, v, args.dict_n, "-"))
    print(f"{'map':8} {'K/V':>6} {'keys':>11} {'load':>5} {'rss B/key':>10} "
          f"{'peak B/key':>11} {'nbytes B/key':>13}")
    for row in rows:
        nb = "" if row["nbytes_per_key"] is None else f"{row['nbytes_per_key']:.1f}"
        pk = "" if row["peak_per_key"] is None else f"{row['peak_per_key']:.1f}"
        print(f"{row['impl']:8} {row['k']:>3}/{row['v']:<2} {row['n']:>11,} {row['mode']:>5} "
              f"{row['rss_per_key']:10.1f} {pk:>11} {nb:>13}")


if __name__ == "__main__":
    main()
