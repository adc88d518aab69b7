"""The victim of ``test_adversary_kill.py``: one public method, over and over, until SIGKILL.

Usage: ``python adversary_writer.py MODE DIR SEED``.  Each mode opens the
store in DIR and loops around one slow method (see ``MODES``).  On stdout,
one line per event, each written with a single ``os.write`` (atomic on a
pipe) *before* the event it announces:

* ``DO <what>``: the slow method is about to be called (the parent aims its
  kill after this line); ``DONE <what> <seconds>``: it returned, that long
  after the last ``DO``;
* ``READY`` once the store is open;
* ``I <key> <value>``, ``R <key>``, ``B <n> <key>=<value or ->...`` (hex),
  and ``G <seed> <n> <keyspace> <permille>``: the batch ``gen_batch`` makes
  from those numbers (too big to spell out): the operation about to be issued;
* ``ACK``: a ``flush()``, ``compact()`` or ``close()`` returned, so every
  operation announced before it is acknowledged.

A line cut short by the kill was not followed by its operation.  Any error
exits with status 1 and a traceback on stderr: only SIGKILL may stop it.
"""
from __future__ import annotations

import os
import random
import sys
import time
from typing import List, Optional, Tuple

import tinylsm

K, V = 8, 8
MODES = {
    # a dozen and more sstables (made by the test) that only compact() merges
    "compact": tinylsm.Config(max_log_length=128 * 1024, merge_window=255, max_space_amp=255),
    # rollovers and a background merge under way when close() comes
    "close": tinylsm.Config(max_log_length=512 * 1024, merge_window=2, merge_ratio=255,
                            log_bufwriter_size=1 << 20),
    # a log (made by the test) many times max_log_length: the first flush rolls it over
    "recover": tinylsm.Config(max_log_length=512 * 1024, merge_window=3),
    # flush() of a log past max_log_length: an sstable, then the log truncated
    "rollover": tinylsm.Config(max_log_length=1 << 20, log_bufwriter_size=64 * 1024,
                               merge_window=3),
    # batches of 50k to 150k changes, bigger than the buffer
    "batch": tinylsm.Config(max_log_length=4 << 20, merge_window=3),
}


def gen_batch(seed: int, n: int, keyspace: int,
              permille: int) -> List[Tuple[bytes, Optional[bytes]]]:
    """``n`` changes of keys below ``keyspace``, ``permille``/1000 of them removes."""
    rng = random.Random(seed)
    return [(rng.randrange(keyspace).to_bytes(K, "big"),
             None if rng.randrange(1000) < permille else rng.randbytes(V)) for _ in range(n)]


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


class Writer:
    """One mode's loop (``run_<mode>``) over a store, announcing as it goes."""

    def __init__(self, mode: str, path: str, seed: int) -> None:
        self.mode, self.path, self.rng = mode, path, random.Random(seed)
        self.config = MODES[mode]
        self.started = 0.0
        self.db = None

    def do(self, what: str) -> None:
        say(f"DO {what}")
        self.started = time.monotonic()

    def done(self, what: str) -> None:
        say(f"DONE {what} {time.monotonic() - self.started:.6f}")

    def open(self) -> None:
        self.do("open")
        self.db = tinylsm.open(self.path, key_size=K, value_size=V, config=self.config)
        self.done("open")
        say("READY")

    def batch(self, n: int, keyspace: int, permille: int = 200, announce: str = "") -> None:
        seed = self.rng.randrange(1 << 40)
        items = gen_batch(seed, n, keyspace, permille)
        if announce:
            self.do(announce)
        say(f"G {seed} {n} {keyspace} {permille}")
        self.db.write_batch(items)
        if announce:
            self.done(announce)

    def small_ops(self, count: int, keyspace: int) -> None:
        """Inserts and removes (the compiled fast path) and small batches."""
        rng, db = self.rng, self.db
        for _ in range(count):
            r, k = rng.random(), rng.randrange(keyspace).to_bytes(K, "big")
            if r < 0.6:
                v = rng.randbytes(V)
                say(f"I {k.hex()} {v.hex()}")
                db.insert(k, v)
            elif r < 0.85:
                say(f"R {k.hex()}")
                db.remove(k)
            else:
                items = [(rng.randrange(keyspace).to_bytes(K, "big"),
                          None if rng.random() < 0.3 else rng.randbytes(V))
                         for _ in range(rng.randrange(0, 9))]
                say(f"B {len(items)} " + " ".join(
                    f"{a.hex()}={b.hex() if b is not None else '-'}" for a, b in items))
                db.write_batch(items)

    def ack(self, call) -> None:
        call()
        say("ACK")

    def run(self) -> None:
        getattr(self, "run_" + self.mode)()

    def run_compact(self) -> None:
        self.open()
        while True:
            self.do("compact")
            self.ack(self.db.compact)
            self.done("compact")
            self.batch(2000, 1 << 20)
            self.ack(self.db.flush)

    def run_close(self) -> None:
        self.open()
        for _ in range(self.rng.randrange(0, 4)):
            self.batch(10_000, 100_000)
        self.small_ops(self.rng.randrange(2000, 6000), 100_000)
        self.do("close")
        self.ack(self.db.close)
        self.done("close")
        time.sleep(3600)  # only SIGKILL may stop it

    def run_recover(self) -> None:
        self.open()  # the slow part: recovering the big log
        self.batch(500, 1 << 20)  # rolls the big log over into an sstable
        self.ack(self.db.flush)
        self.done("rollover")  # since "DO open": the parent aims at both
        while True:
            self.batch(500, 1 << 20)
            self.ack(self.db.flush)

    def run_rollover(self) -> None:
        self.open()
        limit = self.config.max_log_length
        while True:
            while self.db.stats().log_bytes <= limit:
                self.batch(2000, 300_000)
            self.do("flush")
            self.ack(self.db.flush)
            self.done("flush")

    def run_batch(self) -> None:
        self.open()
        while True:
            self.batch(self.rng.randrange(50_000, 150_000), 200_000, 300, announce="batch")
            self.ack(self.db.flush)


if __name__ == "__main__":
    Writer(sys.argv[1], sys.argv[2], int(sys.argv[3])).run()
