"""The lines under the table: how to read the ratios, how each workload's
figures were taken, and what was skipped or failed."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from .durable import GROUP_THREADS, SYNC_SECONDS
from .latency import LATENCY_PASSES
from .rows import WORKLOADS
from .workloads import Session

LEGEND = ("(N.NNx) after a peer's figure: tinylsm's ratio to it, above 1 when tinylsm "
          "is faster or smaller.")

_COMMITS = {"tinylsm": "tinylsm flush()", "sqlite3": "sqlite3 COMMIT (WAL, synchronous=FULL)",
            "lmdb": "lmdb commit (sync=True)"}

#: ``note(session, engines shown)``: a line, or None when there is nothing to say.
Note = Callable[[Session, Sequence[str]], Optional[str]]


def _writes(s: Session, shown: Sequence[str]) -> str:
    return ("writes end with one fsynced commit: "
            + ", ".join(_COMMITS[e] for e in shown if e in _COMMITS) + ".")


def _dict_order(s: Session, shown: Sequence[str]) -> Optional[str]:
    if "dict" not in shown:
        return None
    return "dict: scan sorts the keys; range bisects a key list sorted beforehand (not timed)."


def _reopen(s: Session, shown: Sequence[str]) -> str:
    peers = [e for e in shown if e in ("sqlite3", "lmdb")]
    return ("reopen: tinylsm recovers every key into memory"
            + (f"; {' and '.join(peers)} open the file and read one key." if peers else "."))


def _sync(s: Session, shown: Sequence[str]) -> str:
    return (f"sync: the stores take turns over {len(s.data.sync_items):,} inserts at most "
            f"({SYNC_SECONDS:g} s per store at most); disk = os.write + os.fsync of one "
            f"{s.data.frame_size}-byte frame.")


def _group_commit(s: Session, shown: Sequence[str]) -> str:
    return (f"group commit: {GROUP_THREADS} threads insert + commit durably at once on one "
            "store (sqlite3: a connection each; lmdb: a write transaction per insert; "
            "disk: os.write + os.fsync on one file), taking turns with 1 thread on the same "
            f"store, {len(s.data.sync_items):,} inserts per thread at most ({SYNC_SECONDS:g} s "
            "per store at most).")


def _latency(s: Session, shown: Sequence[str]) -> Optional[str]:
    lat = s.latency
    if lat is None:
        return None
    return (f"latency: one thread timed each insert (perf_counter_ns) while compact() merged "
            f"{lat.sstables} sstables of {lat.records:,} records ({s.data.n:,} keys written "
            f"{LATENCY_PASSES} times) in another thread, for {lat.compact_seconds:.2f} s.")


def _memory(s: Session, shown: Sequence[str]) -> str:
    return ("memory: resident memory (RSS) per key added by holding every key and value, "
            "measured in a fresh process.")


def _disk(s: Session, shown: Sequence[str]) -> str:
    return "disk: file bytes per key after loading (tinylsm: after compact())."


#: workload -> its note; workloads that share a note share the function.
NOTES: Dict[str, Note] = {
    "insert": _writes, "batch": _writes,
    "scan": _dict_order, "range": _dict_order,
    "reopen-log": _reopen, "reopen-sst": _reopen,
    "sync": _sync, "group-commit": _group_commit, "latency": _latency,
    "memory": _memory, "disk": _disk,
}


def notes(s: Session, workloads: Sequence[str], shown: Sequence[str]) -> List[str]:
    """The legend, the notes of the workloads that ran (each once, in the
    table's order) and the session's own notes (skipped or failed peers)."""
    out = [LEGEND]
    for name in WORKLOADS:
        note = NOTES.get(name) if name in workloads else None
        text = note(s, shown) if note else None
        if text and text not in out:
            out.append(text)
    return out + s.notes
