"""Background merging of sstables, and the size bookkeeping it needs."""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, List, Optional

from . import sstable
from ._backend import codec
from ._format import SST_COMPLETE, sstable_name
from ._fs import Files
from ._gate import Gate
from .config import Config
from ._worker import Stopped, Worker
from .errors import describe

log = logging.getLogger("tinylsm")

#: Seconds to wait before retrying a failed merge, doubling up to the last.
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: Seconds the last attempt at ``close()`` waits for readers opening beside
#: the store before it leaves a merge's inputs in place.
CLOSING_GATE_TIMEOUT = 5.0


@dataclass
class Table:
    """One sstable as the compactor sees it."""

    records: int  # records it holds: the one size unit of the merge policy
    nbytes: int  # size of its file


class Compactor(Worker):
    """Owns the sstable directory listing and merges runs of sstables.

    Sizes are counted in records, before and after a restart alike (tiny-lsm
    mixes three units).  A merge reads, merges and writes with no lock held
    but ``_merge_lock`` (one merge at a time), so writers and readers never
    wait for it; with the compiled codec the heavy loops also release the
    GIL.
    """

    name = "tinylsm-compactor"

    def __init__(
        self,
        files: Files,
        directory: str,
        key_size: int,
        value_size: int,
        config: Config,
        tables: Dict[int, Table],
        live_keys: Callable[[], int],
    ) -> None:
        self.files = files
        self.directory = directory
        self.key_size = key_size
        self.value_size = value_size
        self.config = config
        self.tables = tables
        self.live_keys = live_keys
        self.read_bytes = 0
        self.written_bytes = 0
        self.merges = 0
        self.error: Optional[BaseException] = None
        super().__init__()
        self._merge_lock = threading.Lock()
        self._wake = True  # look at the tables found at opening
        self._retry_on_stop = False
        self.gate = Gate(directory)

    # -- bookkeeping, called by the store ------------------------------------

    def add(self, sst_id: int, records: int, nbytes: int) -> None:
        """Register a new sstable and wake the thread to consider a merge."""
        with self._cv:
            self.tables[sst_id] = Table(records, nbytes)
            self._wake = True
            self._cv.notify()

    def snapshot(self) -> Dict[int, Table]:
        with self._cv:
            return dict(self.tables)

    # -- the thread ------------------------------------------------------------

    def stop(self, after: Optional[Callable[[], None]] = None, retry: bool = False) -> None:
        """Stop merging (see ``Worker.stop``).

        ``retry``: if the last background merge failed, the thread tries it
        once more before it exits, so that a cause that has gone (a disk
        with room again) is not reported as ``error``.
        """
        with self._cv:
            self._retry_on_stop = retry and self.error is not None
        super().stop(after)

    def _idle(self) -> ContextManager[object]:
        return self._merge_lock

    def _loop(self) -> None:
        failures = 0
        while True:
            if not self._wait_for_work():
                if self._retry_on_stop:
                    self._last_attempt()
                return
            try:
                merged = self.maintain()
            except Stopped:
                continue  # the loop's top ends it, with the last attempt if asked
            except Exception as exc:  # reported by stats() and close(), retried
                self.error = exc
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.error("tinylsm: background merge in %s failed (retry in %.1fs): %s",
                          self.directory, delay, describe(exc))
                self._pause(delay)
                continue
            failures = 0
            self.error = None
            if merged:
                with self._cv:
                    self._wake = True  # one run at a time; look again

    # -- policy ----------------------------------------------------------------

    def pick_run(self) -> List[int]:
        """The ids to merge next by tiny-lsm's policy, or ``[]``."""
        tables = sorted(self.snapshot().items())
        if len(tables) > 1:
            stored = sum(t.records for _, t in tables)
            if stored > self.config.max_space_amp * (self.live_keys() + 1):
                return [i for i, _ in tables]
        window = self.config.merge_window
        ratio = self.config.merge_ratio
        for start in range(len(tables) - window + 1):
            run = tables[start : start + window]
            first = run[0][1].records
            if all(t.records * ratio > first for _, t in run[1:]):
                return [i for i, _ in run]
        return []

    def maintain(self, closing: bool = False) -> bool:
        """Merge one run if the policy asks for it; True if one was merged.

        ``closing``: run even though the store is closing (its last attempt
        after a failed merge, from ``close()``); otherwise raises ``Stopped``
        once the store is closing.
        """
        with self._merge_lock:
            self._safe_point(closing)
            run = self.pick_run()
            if not run:
                return False
            self._merge(run, closing)
            return True

    def compact_all(self) -> None:
        """Merge every sstable into one (a full compaction), durably.

        Raises ``Stopped`` if the store closes first.
        """
        with self._merge_lock:
            self._safe_point(False)
            run = sorted(self.snapshot())
            if len(run) > 1 or (run and self._has_tombstones_or_short(run[0])):
                self._merge(run)

    def _last_attempt(self) -> None:
        try:
            self.maintain(closing=True)
        except Exception as exc:  # reported by close()
            self.error = exc
        else:
            self.error = None

    def _safe_point(self, closing: bool = False) -> None:
        if not closing:
            super()._safe_point()

    def _stop_check(self) -> None:
        """Give up waiting for readers once the store is closing."""
        if self._stopping:
            raise Stopped()

    def _has_tombstones_or_short(self, sst_id: int) -> bool:
        scan, _ = sstable.read(self.files, self._path(sst_id), self.key_size, self.value_size)
        return scan.tombstones > 0 or scan.status != SST_COMPLETE

    # -- the merge ---------------------------------------------------------------

    def _path(self, sst_id: int) -> str:
        return os.path.join(self.directory, sstable_name(sst_id))

    def _merge(self, run: List[int], closing: bool = False) -> None:
        """Merge sstables ``run`` (ascending ids, contiguous) into its first id.

        Crash safety: the merged table replaces the *lowest* id of the run by
        an atomic rename, then the others are deleted in ascending order with
        a directory fsync after each.  Any crash state is then "merged table,
        then a suffix of the run": every key's newest record is still the
        last applied, and a tombstone dropped from the merged table cannot
        let an older leftover value come back (placing it at the highest id,
        as tiny-lsm does, would allow exactly that).
        """
        k, v = self.key_size, self.value_size
        runs = []
        oldest = min(self.snapshot())
        for sst_id in run:
            self._safe_point(closing)
            scan, nbytes = sstable.read(self.files, self._path(sst_id), k, v)
            self.read_bytes += nbytes
            runs.append(scan.records)
        self._safe_point(closing)
        merged = codec.merge_runs(runs, k, v, run[0] == oldest)
        del runs
        self._safe_point(closing)  # the last one: from here on the merge finishes
        target = run[0]
        nbytes = sstable.write(
            self.files, self.directory, target, merged, k, v,
            self.config.zstd_sstable_compression_level,
        )
        self.written_bytes += nbytes
        with self._cv:
            self.tables[target] = Table(len(merged) // codec.record_size(k, v), nbytes)
        # Readers opening beside us may have listed the inputs (``_gate``).
        # If the store closes while they hold us up, the inputs stay: the
        # merged table then a suffix of the run is a state the order above
        # allows, and a later merge folds them in again.
        # close()'s last attempt waits a while, then reports the wait
        check: Optional[Callable[[], None]] = None if closing else self._stop_check
        timeout = CLOSING_GATE_TIMEOUT if closing else None
        with self.gate.exclusive(check, timeout, what="a merge"):
            for sst_id in run[1:]:
                self.files.unlink(self._path(sst_id))
                with self._cv:  # gone, even if the fsync below fails: never read it again
                    del self.tables[sst_id]
                self.files.fsync_dir(self.directory)
        self.merges += 1
        log.debug("tinylsm: merged sstables %s into %016x", [f"{i:x}" for i in run], target)
