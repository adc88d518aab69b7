"""The rows of the table: each workload's label, unit and which way is
better, and the rows a workload shows below its own."""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

from .durable import GROUP_THREADS
from .engines.base import GET_MANY_BATCH
from .sustained import SLOW_NS, SUBROW_FIELDS


class Row(NamedTuple):
    """How a row of the table shows its figures."""

    label: str
    unit: str
    higher_is_better: bool


#: workload -> its row, in the order of the table and of ``--workloads all``.
WORKLOADS: Dict[str, Row] = {
    "insert": Row("insert one by one", "ops/s", True),
    "batch": Row("write_batch of N items", "items/s", True),
    "import": Row("write_packed of N packed records", "records/s", True),
    "get": Row("get, random order", "ops/s", True),
    "get-many": Row(f"get_many, {GET_MANY_BATCH:,} keys a call", "keys/s", True),
    "scan": Row("full ordered scan", "items/s", True),
    "export": Row("full export of packed records", "records/s", True),
    "range": Row("range queries", "queries/s", True),
    "reopen-log": Row("reopen, data in log", "s", False),
    "reopen-sst": Row("reopen, data in sstables", "s", False),
    "sync": Row("insert + flush (fsync)", "ops/s", True),
    "group-commit": Row(f"group commit, {GROUP_THREADS} threads", "ops/s", True),
    "latency": Row("insert during compact(), p99", "us", False),
    "sustained": Row("sustained insert, default Config", "ops/s", True),
    "memory": Row("memory per key", "B/key", False),
    "reopen-memory": Row("peak memory while reopening, data in log", "B/key", False),
    "disk": Row("disk per key", "B/key", False),
}

#: Rows a workload shows besides its own ("" stands for its own), in order.
SUBROWS: Dict[str, Tuple[str, ...]] = {
    "group-commit": ("", "group-commit-1", "group-commit-x"),
    "export": ("", "export-x"),
    "latency": ("latency-p50", "", "latency-max", "latency-count"),
    "sustained": ("",) + tuple(row for row, _ in SUBROW_FIELDS),
    "reopen-memory": ("", "reopen-memory-log-x", "reopen-memory-sst", "reopen-memory-sst-x",
                      "reopen-memory-log-s", "reopen-memory-sst-s"),
}

#: row -> how it shows, for the rows of SUBROWS
ROWS: Dict[str, Row] = {
    "group-commit-1": Row("group commit, 1 thread (baseline)", "ops/s", True),
    "export-x": Row("full export / full ordered scan", "x", True),
    "group-commit-x": Row(f"group commit, {GROUP_THREADS} threads / 1 thread", "x", True),
    "latency-p50": Row("insert during compact(), p50", "us", False),
    "latency-max": Row("insert during compact(), max", "us", False),
    "latency-count": Row("inserts timed during compact()", "inserts", True),
    "sustained-p50": Row("sustained insert, p50", "us", False),
    "sustained-p99": Row("sustained insert, p99", "us", False),
    "sustained-p999": Row("sustained insert, p99.9", "us", False),
    "sustained-max": Row("sustained insert, max", "us", False),
    "sustained-slow": Row(f"sustained inserts over {SLOW_NS // 1_000_000} ms", "inserts", False),
    "reopen-memory-log-x": Row("peak / open store, data in log", "x", False),
    "reopen-memory-sst": Row("peak memory while reopening, data in sstables", "B/key", False),
    "reopen-memory-sst-x": Row("peak / open store, data in sstables", "x", False),
    "reopen-memory-log-s": Row("reopen in a fresh process, data in log", "s", False),
    "reopen-memory-sst-s": Row("reopen in a fresh process, data in sstables", "s", False),
}

#: What the workloads measured: row -> engine -> figure (None: no figure
#: where the engine ran, e.g. memory without /proc).
Figures = Dict[str, Dict[str, Optional[float]]]

#: Units shown without ratios: each engine's own figure (a speed-up, or
#: latencies of a workload that only tinylsm runs).
NO_RATIO_UNITS = ("us", "x", "inserts")


def labels(n: int, range_length: int) -> Dict[str, str]:
    """Labels that name this run's sizes, in place of WORKLOADS' own."""
    return {
        "batch": f"write_batch of {n:,}",
        "import": f"write_packed of {n:,}",
        "range": f"range queries ({range_length} items)",
    }


def row(name: str) -> Row:
    """The row of a workload, or of one of the rows of SUBROWS."""
    return ROWS[name] if name in ROWS else WORKLOADS[name]
