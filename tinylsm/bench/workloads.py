"""What each workload runs, as a table of small functions (``RUNS``).

Most workloads call the engine method of their name on each engine that has
it, one engine after the other; ``sync`` and ``group-commit`` run every
engine in one step, taking turns (see ``durable.py``); ``latency`` and
``sustained`` show percentiles in rows of their own, ``reopen-memory``
each reopen's peak, ratio and time, and ``export`` its ratio to ``scan``.  A workload returns its figures by row
(a workload, or one of the rows ``rows.SUBROWS`` adds) and engine.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from .. import _progress
from .data import Data
from .durable import group_interleaved, sync_interleaved
from .engines import Engine
from .latency import Latency
from .measure import tolerate
from .memory import Reopen
from .report import fmt
from .rows import Figures, row
from .sustained import SUBROW_FIELDS, Sustained


class Session:
    """One run: the data, the engines (tinylsm first), the notes for under
    the table, and the progress bar."""

    def __init__(self, data: Data, engines: Dict[str, Engine]) -> None:
        self.data = data
        self.engines = engines
        self.notes: List[str] = []
        #: tinylsm's latency run, whose details the note under the table gives
        self.latency: Optional[Latency] = None
        #: tinylsm's sustained run, whose rollovers the note under the table gives
        self.sustained: Optional[Sustained] = None
        #: tinylsm's reopens in fresh processes (log, sstables), for the note
        self.reopened: Optional[Tuple[Optional[Reopen], Optional[Reopen]]] = None
        self.bar: Any = None  # while run() runs: its progress bar
        #: The figures of the workloads run so far (``export`` divides by ``scan``'s).
        self.figures: Figures = {}

    def having(self, method: str) -> Dict[str, Engine]:
        """The engines that have ``method``, in column order."""
        return {name: e for name, e in self.engines.items() if hasattr(e, method)}

    def run(self, names: Sequence[str]) -> Figures:
        """Run the workloads ``names`` in turn; returns their figures.  With
        no bar on stderr, a line there says which workload runs; a line
        gives each workload's figures as it ends (above the bar, if any)."""
        steps = sum(1 if RUNS[n].together else len(self.having(RUNS[n].method))
                    for n in names)
        figures = self.figures
        self.bar = _progress.bar(total=steps, desc="bench", unit="step")
        try:
            for name in names:
                _progress.announce(f"running {name} ...")
                began = time.perf_counter()
                got = RUNS[name].run(self, name, RUNS[name].method)
                figures.update(got)
                _progress.line(finished(name, got.get(name, {}), time.perf_counter() - began))
        finally:
            self.bar.close()
        return figures

    def close(self) -> None:
        """Close every engine's stores."""
        for engine in self.engines.values():
            engine.close()


def finished(name: str, figures: Dict[str, Optional[float]], seconds: float) -> str:
    """The line that says a workload ended: its own row's figure per engine."""
    unit = row(name).unit
    shown = [f"{engine} {fmt(value, unit)}" for engine, value in figures.items()
             if value is not None]
    return (f"{name}: {', '.join(shown) or 'no figures'}"
            + (f" {unit}" if shown and unit not in ("s", "B/key") else "")
            + f" ({seconds:.1f} s)")


def _each(s: Session, name: str, method: str) -> Iterator[Tuple[str, Any]]:
    """(engine, what its ``method`` returned) for each engine that has it,
    one progress step each; a peer that fails is noted and left out."""
    for engine, obj in s.having(method).items():
        s.bar.set_description_str(f"{name} {engine}")
        try:
            value = getattr(obj, method)()
        except Exception as exc:
            tolerate(engine, name, exc, s.notes)
            continue
        finally:
            s.bar.update()
        yield engine, value


def _one_row(s: Session, name: str, method: str) -> Figures:
    """Each engine's figure, as its method returns it."""
    return {name: dict(_each(s, name, method))}


def _export(s: Session, name: str, method: str) -> Figures:
    """Each engine's export rate, and its ratio to the same engine's
    per-item scan when ``scan`` ran before it in this run."""
    rates = dict(_each(s, name, method))
    scans = s.figures.get("scan", {})
    return {name: rates,
            "export-x": {e: r / scans[e] if scans.get(e) else None for e, r in rates.items()}}


def _latency(s: Session, name: str, method: str) -> Figures:
    """p50, p99 (the workload's own row), max, and how many inserts were timed."""
    rows: Figures = {"latency-p50": {}, name: {}, "latency-max": {}, "latency-count": {}}
    for engine, lat in _each(s, name, method):
        rows["latency-p50"][engine] = lat.p50_us
        rows[name][engine] = lat.p99_us
        rows["latency-max"][engine] = lat.max_us
        rows["latency-count"][engine] = lat.inserts
        if engine == "tinylsm":
            s.latency = lat
    return rows


def _sustained(s: Session, name: str, method: str) -> Figures:
    """Throughput (the workload's own row), p50, p99, p99.9, max, and the
    inserts slower than SLOW_NS."""
    rows: Figures = {name: {}, **{row: {} for row, _ in SUBROW_FIELDS}}
    for engine, got in _each(s, name, method):
        rows[name][engine] = got.rate
        for row, field in SUBROW_FIELDS:
            rows[row][engine] = getattr(got, field)
        if engine == "tinylsm":
            s.sustained = got
    return rows


def _reopen_memory(s: Session, name: str, method: str) -> Figures:
    """Peak memory while reopening, data in log (the workload's own row),
    its ratio to the open store's, the same with data in sstables, and each
    reopen's time (all in fresh processes)."""
    rows: Figures = {name: {}, "reopen-memory-log-x": {}, "reopen-memory-sst": {},
                     "reopen-memory-sst-x": {}, "reopen-memory-log-s": {},
                     "reopen-memory-sst-s": {}}
    for engine, (log, sst) in _each(s, name, method):
        for got, peak, ratio, seconds in (
                (log, name, "reopen-memory-log-x", "reopen-memory-log-s"),
                (sst, "reopen-memory-sst", "reopen-memory-sst-x", "reopen-memory-sst-s")):
            rows[peak][engine] = None if got is None else got.peak
            rows[ratio][engine] = None if got is None else got.ratio
            rows[seconds][engine] = None if got is None else got.seconds
        if engine == "tinylsm":
            s.reopened = (log, sst)
    return rows


def _openers(s: Session, name: str, method: str) -> Dict[str, Callable[..., Any]]:
    """Each engine's ``method``, which opens its durable inserts, for a
    workload that runs every engine in one progress step."""
    s.bar.set_description_str(f"{name} all")
    return {e: getattr(obj, method) for e, obj in s.having(method).items()}


def _sync(s: Session, name: str, method: str) -> Figures:
    """Durable inserts, one at a time, the engines taking turns."""
    rates = sync_interleaved(_openers(s, name, method), s.data.sync_items)
    s.bar.update()
    return {name: dict(rates)}


def _group_commit(s: Session, name: str, method: str) -> Figures:
    """Durable inserts from many threads and from one, and the speed-up."""
    rates, failed = group_interleaved(_openers(s, name, method), s.data.sync_items)
    s.notes.extend(failed)
    s.bar.update()
    return {
        name: {e: many for e, (many, _) in rates.items()},
        "group-commit-1": {e: one for e, (_, one) in rates.items()},
        "group-commit-x": {e: many / one for e, (many, one) in rates.items()},
    }


class Workload(NamedTuple):
    """How a workload runs."""

    #: The engine method it calls; the engines without it sit it out.
    method: str
    #: ``run(session, workload, method)``: its figures.
    run: Callable[[Session, str, str], Figures]
    #: One progress step for every engine at once (they take turns).
    together: bool = False


#: workload -> how it runs, for every workload of ``rows.WORKLOADS``.
RUNS: Dict[str, Workload] = {
    "insert": Workload("insert", _one_row),
    "batch": Workload("batch", _one_row),
    "import": Workload("import_packed", _one_row),
    "get": Workload("get", _one_row),
    "get-many": Workload("get_many", _one_row),
    "scan": Workload("scan", _one_row),
    "export": Workload("export", _export),
    "range": Workload("range", _one_row),
    "reopen-log": Workload("reopen_log", _one_row),
    "reopen-sst": Workload("reopen_sst", _one_row),
    "sync": Workload("sync_open", _sync, together=True),
    "group-commit": Workload("group_open", _group_commit, together=True),
    "latency": Workload("latency_during_compaction", _latency),
    "sustained": Workload("sustained", _sustained),
    "memory": Workload("memory", _one_row),
    "reopen-memory": Workload("reopen_memory", _reopen_memory),
    "disk": Workload("disk", _one_row),
}
