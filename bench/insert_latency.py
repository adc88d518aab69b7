"""Single-insert latency of the compiled map as it grows, and its throughput.

    python bench/insert_latency.py                # 10M random 8/8 keys
    python bench/insert_latency.py --n 1000000    # smaller
    python bench/insert_latency.py --baseline /other/checkout/tinylsm/_map.cpython-311-x86_64-linux-gnu.so
    python bench/insert_latency.py --repeat 0     # throughput only
    python bench/insert_latency.py --json         # one JSON line

Inserts N random 8-byte keys (8-byte values) one ``set`` at a time into an
empty ``SortedMap`` and times each call, by the wall clock
(``time.perf_counter_ns``) and by the thread's CPU time
(``time.thread_time_ns``, which leaves out the time the thread was
preempted); it reports the slowest calls (with the map's size then), the
99.9th and 99.99th percentiles and how many calls took over 1 ms.  The pass
runs ``--repeat`` times (default 2) on fresh maps and each call's figure is
its least over the runs: a pause the map causes comes back at the same call
every time (the table grows at the same sizes), while the noise of a shared
machine (other processes, interrupts, steal time, which the thread's CPU
time may include) seldom hits the same call twice.  A ``dict`` gets the same
passes: its resizes are one-step pauses.

Then ``--rounds`` rounds (default 3) of throughput passes, best round kept:
``set`` of all keys into an empty map, and ``get`` of all keys in a random
order.  ``--baseline`` loads another build of ``tinylsm._map`` (a compiled
module file, e.g. the main checkout's) into the same process and gives it
the same passes, alternating with this one, so that the ratios between the
two are measured under the same conditions; ratios against the ``dict``
are given too.  The current directory must not shadow the build to test:
run it from elsewhere with ``PYTHONPATH`` naming the checkout.

The map's table grows incrementally and asks for huge pages only once it is
fully written (faulting huge pages in can stall an insert for ms), so a
freshly grown large table has 4 KiB pages until khugepaged merges it in the
background (16 MiB per ~15 s on the machine these notes were written on).
Reads and inserts right after a growth pay for that in TLB misses: here,
about 5% to 13% on 10M-key get passes run at once, nothing once merged;
a table built by a bulk load (``apply_records``) gets huge pages at once.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import random
import sys
import time
from array import array
from typing import Callable, Dict, List


def make_keys(n: int, seed: int) -> List[bytes]:
    blob = random.Random(seed).randbytes(8 * n)
    return [blob[i:i + 8] for i in range(0, 8 * n, 8)]


def load_build(path: str):
    """A compiled ``tinylsm._map`` from ``path``, beside the imported one."""
    current = sys.modules.pop("tinylsm._map")
    try:
        spec = importlib.util.spec_from_file_location("tinylsm._map", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.modules["tinylsm._map"] = current
    return module


def latencies(store, keys: List[bytes]):
    """Nanoseconds of each ``store(k, k)`` call, in order: wall clock and
    thread CPU time."""
    ns = time.perf_counter_ns
    cpu = time.thread_time_ns
    wall = array("q", bytes(8 * len(keys)))
    used = array("q", bytes(8 * len(keys)))
    i = 0
    for k in keys:
        c = cpu()
        t = ns()
        store(k, k)
        wall[i] = ns() - t
        used[i] = cpu() - c
        i += 1
    return wall, used


def summary(lat: array) -> Dict[str, object]:
    order = sorted(range(len(lat)), key=lat.__getitem__, reverse=True)[:8]
    ranked = sorted(lat)
    n = len(ranked)
    return {
        "max_us": ranked[-1] / 1e3,
        "p99.99_us": ranked[min(n - 1, int(n * 0.9999))] / 1e3,
        "p99.9_us": ranked[min(n - 1, int(n * 0.999))] / 1e3,
        "median_ns": ranked[n // 2],
        "over_1ms": sum(1 for x in ranked[-10000:] if x > 1_000_000),
        "slowest": [(i, lat[i] / 1e3) for i in order],  # (keys before, us)
    }


def set_all(store, keys):
    for k in keys:
        store(k, k)


def get_all(get, keys):
    for k in keys:
        get(k)


def setter(obj) -> Callable:
    return obj.__setitem__ if isinstance(obj, dict) else obj.set


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2,
                    help="latency passes per structure (0: none)")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (0: none)")
    ap.add_argument("--baseline", help="another build's compiled _map module file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import tinylsm._map as mod

    makers: Dict[str, Callable] = {"map": lambda: mod.SortedMap(8, 8)}
    builds = {"map": mod.__file__}
    if args.baseline:
        base = load_build(args.baseline)
        makers["baseline"] = lambda: base.SortedMap(8, 8)
        builds["baseline"] = base.__file__
    makers["dict"] = dict

    keys = make_keys(args.n, args.seed)
    shuffled = keys[:]
    random.Random(args.seed + 1).shuffle(shuffled)
    gc.disable()
    out: Dict[str, object] = {"n": args.n, "builds": builds}

    for name, make in makers.items() if args.repeat else ():
        wall = used = None
        for _ in range(args.repeat):
            store = make()
            w, u = latencies(setter(store), keys)
            del store
            if wall is None:
                wall, used = w, u
            else:
                wall = array("q", map(min, wall, w))
                used = array("q", map(min, used, u))
            del w, u
        out[name], out[name + "_cpu"] = summary(wall), summary(used)
        del wall, used

    best: Dict[str, float] = {}
    for _ in range(args.rounds):
        for name, make in makers.items():
            store = make()
            c = time.thread_time()
            set_all(setter(store), keys)
            best[f"{name} set"] = min(best.get(f"{name} set", 1e99), time.thread_time() - c)
            c = time.thread_time()
            get_all(store.get, shuffled)
            best[f"{name} get"] = min(best.get(f"{name} get", 1e99), time.thread_time() - c)
            del store
    out["throughput_cpu_s"] = best

    if args.json:
        print(json.dumps(out))
        return 0
    for name, path in builds.items():
        print(f"{name}: {path}")
    print(f"N={args.n:,} random 8/8 keys")
    if args.repeat:
        print(f"one set() per call; each call's least of {args.repeat} runs")
    for name in makers if args.repeat else ():
        for clock in ("", "_cpu"):
            s = out[name + clock]
            print(f"  {name + (' cpu' if clock else ' wall'):13}: max {s['max_us']:9.1f} us  "
                  f"p99.99 {s['p99.99_us']:6.1f} us  p99.9 {s['p99.9_us']:5.1f} us  "
                  f"median {s['median_ns']} ns  over 1 ms: {s['over_1ms']}")
            print("                 slowest (keys before: us): "
                  + ", ".join(f"{i:,}: {us:.0f}" for i, us in s["slowest"]))
    if args.rounds:
        print(f"throughput, thread CPU time, best of {args.rounds} rounds:")
    for op in ("set", "get") if args.rounds else ():
        line = f"  {op}: " + ", ".join(
            f"{name} {args.n / best[f'{name} {op}'] / 1e6:.2f} M/s" for name in makers)
        line += f"; map x{best[f'map {op}'] / best[f'dict {op}']:.3f} of dict's time"
        if args.baseline:
            line += (f", baseline x{best[f'baseline {op}'] / best[f'dict {op}']:.3f};"
                     f" map x{best[f'map {op}'] / best[f'baseline {op}']:.3f} of baseline's")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
