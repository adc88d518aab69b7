"""The lines under the table: how to read the ratios, how each workload's
figures were taken (with the tinylsm ``Config`` settings a workload changes
from the default), and what was skipped or failed."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import tinylsm

from .durable import GROUP_THREADS, SYNC_SECONDS
from .engines.base import GET_MANY_BATCH
from .latency import LATENCY_PASSES, LATENCY_TABLES_PER_PASS, NO_MERGE
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


def _big_log(s: Session, shown: Sequence[str]) -> str:
    return ("reopen-log, memory, reopen-memory: tinylsm's store is written with "
            "Config(max_log_length=2**63-1), so that every item stays in the log, and "
            "reopened with the default Config(); every other workload without such a "
            "line uses the default Config() (batch too: its log rolls over in the "
            "background).")


def _dict_order(s: Session, shown: Sequence[str]) -> Optional[str]:
    if "dict" not in shown:
        return None
    return "dict: scan sorts the keys; range bisects a key list sorted beforehand (not timed)."


def _import(s: Session, shown: Sequence[str]) -> str:
    return ("import: tinylsm write_packed() of every item as one bytes object of packed "
            "records (made before the clock starts) into a new store with the default "
            "Config(), timed to its return: the encoding, the log append (written to the "
            "OS, not fsynced) and the map; a log past max_log_length rolls over in the "
            "background, not waited for. The other stores have no such call.")


def _export(s: Session, shown: Sequence[str]) -> str:
    return ("export: tinylsm export() of the whole store, 65,536 records a chunk (a new "
            "bytes object each), no object per record; the ratio row divides it by the "
            "same store's full ordered scan (items(), a tuple and two bytes objects per "
            "item) in this run. The other stores have no such call.")


def _reopen(s: Session, shown: Sequence[str]) -> str:
    peers = [e for e in shown if e in ("sqlite3", "lmdb")]
    return ("reopen: tinylsm recovers every key into memory"
            + (f"; {' and '.join(peers)} open the file and read one key." if peers else "."))


def _sync(s: Session, shown: Sequence[str]) -> str:
    return (f"sync: the stores take turns over {len(s.data.sync_items):,} inserts at most "
            f"({SYNC_SECONDS:g} s per store at most); disk = os.write + os.fsync of one "
            f"{s.data.frame_size}-byte frame (appending); tinylsm's flush is an fdatasync "
            "of frames written over zeros it wrote ahead of the log.")


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
            f"{LATENCY_PASSES} times) in another thread, for {lat.compact_seconds:.2f} s; "
            f"Config({_settings(NO_MERGE)}) (no background merge), max_log_length="
            f"{s.data.frame_size}*N/{LATENCY_TABLES_PER_PASS} while filling and 2**63-1 "
            "while timing.")


def _get(s: Session, shown: Sequence[str]) -> str:
    return ("get: every store looks up every key once, in one random order, through "
            "key objects made anew (equal bytes, not the objects inserted), as an "
            "application computes its keys.")


def _get_many(s: Session, shown: Sequence[str]) -> str:
    return (f"get-many: get_many(keys) over every key in the same order, {GET_MANY_BATCH:,} "
            "keys a call (one call of every key would also make every value object at once)"
            + ("; dict: list(map(d.get, keys)) a batch at a time" if "dict" in shown else "")
            + "; the keys found are counted from the lists returned.")


def _settings(settings: Dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _sustained(s: Session, shown: Sequence[str]) -> Optional[str]:
    got = s.sustained
    if got is None:
        return None
    mib = tinylsm.Config().max_log_length / (1 << 20)
    peers = [e for e in shown if e in ("dict", "lmdb")]
    ways = {"dict": "dict runs the same loop",
            "lmdb": "lmdb one put per write transaction, sync=False (no fsync per insert, "
                    "as tinylsm has none)"}
    return (f"sustained: {got.inserts:,} distinct keys inserted one by one into a new store "
            f"with the default Config() (max_log_length {mib:g} MiB), each insert timed "
            f"(perf_counter_ns); the throughput includes the stalls; the log became an sstable "
            f"{got.rollovers} time(s) in the background, and {got.stalls} insert(s) waited "
            f"for it (a write stall); {got.sstables} sstable(s) and {got.merges} background "
            "merge(s) at the end"
            + (f"; {'; '.join(ways[e] for e in peers)}" if peers else "")
            + ("; sqlite3 left out: an insert per transaction fsyncs each one (that is "
               "the sync workload)" if "sqlite3" in s.engines else "") + ".")


def _memory(s: Session, shown: Sequence[str]) -> str:
    return ("memory: resident memory (RSS) per key added by holding every key and value, "
            "measured in a fresh process.")


def _reopen_memory(s: Session, shown: Sequence[str]) -> Optional[str]:
    if s.reopened is None:
        return None
    held = [f"{got.held:.1f} B/key with data in {where}"
            for got, where in zip(s.reopened, ("the log", "sstables")) if got is not None]
    return ("reopen-memory: a fresh process imports tinylsm, resets its peak RSS "
            "(/proc/self/clear_refs), opens the store with the default Config() and reads "
            "VmHWM; the peak is what the open added at its highest over the interpreter's "
            "RSS after its imports, the ratio divides it by what the open store holds after "
            "a garbage collection"
            + (f" ({', '.join(held)})" if held else "")
            + "; the time is the open() call alone.")


def _disk(s: Session, shown: Sequence[str]) -> str:
    return "disk: file bytes per key after loading (tinylsm: after compact())."


#: workload -> its notes; workloads that share a note share the function.
NOTES: Dict[str, Tuple[Note, ...]] = {
    "insert": (_writes,), "batch": (_writes, _big_log), "import": (_import,), "get": (_get,),
    "get-many": (_get, _get_many),
    "scan": (_dict_order,), "export": (_export,), "range": (_dict_order,),
    "reopen-log": (_reopen, _big_log), "reopen-sst": (_reopen,),
    "sync": (_sync,), "group-commit": (_group_commit,), "latency": (_latency,),
    "sustained": (_sustained,), "memory": (_memory, _big_log),
    "reopen-memory": (_reopen_memory, _big_log), "disk": (_disk,),
}


def notes(s: Session, workloads: Sequence[str], shown: Sequence[str]) -> List[str]:
    """The legend, the notes of the workloads that ran (each once, in the
    table's order) and the session's own notes (skipped or failed peers)."""
    out = [LEGEND]
    for name in WORKLOADS:
        for note in NOTES.get(name, ()) if name in workloads else ():
            text = note(s, shown)
            if text and text not in out:
                out.append(text)
    return out + s.notes
