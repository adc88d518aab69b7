"""The victim of ``test_kill.py``: writes to a store until it is SIGKILLed.

Usage: ``python kill_writer.py DIR SEED``.  It opens (recovers) the store in
DIR and then, forever, issues random inserts, removes and batches, with a
flush now and then and a full compaction rarely, under a tiny
``max_log_length`` so that sstable flushes and background merges happen
all the time.  On stdout, one line per event, each written with a single
``os.write`` (atomic on a pipe) *before* the event it announces:

* ``READY`` once the store is open;
* ``I <key> <value>``, ``R <key>``, ``B <n> <key>=<value or ->...``: the
  operation about to be issued (hex);
* ``ACK``: after a ``flush()`` (or ``compact()``) returned, so every
  operation announced before it is acknowledged.

A line cut short by the kill was not followed by its operation.  Any error
exits with status 1 and a traceback on stderr: only SIGKILL may stop it.
"""
from __future__ import annotations

import os
import random
import sys

import tinylsm

K, V = 8, 10
KEYS = 300
CONFIG = tinylsm.Config(max_log_length=1500, merge_window=3, merge_ratio=3,
                        max_space_amp=2, log_bufwriter_size=200)


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    db = tinylsm.open(path, key_size=K, value_size=V, config=CONFIG)
    say("READY")

    def k() -> bytes:
        return rng.randrange(KEYS).to_bytes(K, "big")

    def v() -> bytes:
        return rng.randbytes(V)

    n = 0
    while True:
        n += 1
        r = rng.random()
        if r < 0.55:
            key, value = k(), v()
            say(f"I {key.hex()} {value.hex()}")
            db.insert(key, value)
        elif r < 0.8:
            key = k()
            say(f"R {key.hex()}")
            db.remove(key)
        elif r < 0.96:
            items = [(k(), None if rng.random() < 0.3 else v())
                     for _ in range(rng.randrange(0, 9))]
            say(f"B {len(items)} " + " ".join(
                f"{a.hex()}={b.hex() if b is not None else '-'}" for a, b in items))
            db.write_batch(items)
        elif r < 0.999:
            db.flush()
            say("ACK")
        else:
            db.compact()
            say("ACK")


if __name__ == "__main__":
    main()
