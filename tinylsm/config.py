"""Tuning knobs (``Config``) and counters (``Stats``) of a store."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

_MAX_U32 = (1 << 32) - 1

# field -> (lowest, highest) accepted value; the Rust crate's integer widths
# bound the highs, and the lows are what keeps the engine well defined
# (tiny-lsm 0.4.6 panics on merge_window=0 and loops on merge_window=1).
_RANGES = {
    "max_space_amp": (1, 255),
    "max_log_length": (1, (1 << 63) - 1),
    "merge_ratio": (1, 255),
    "merge_window": (2, 255),
    "log_bufwriter_size": (0, _MAX_U32),
    "zstd_sstable_compression_level": (1, 22),
}


@dataclass(frozen=True)
class Config:
    """Options of a store; all of them may change between openings.

    The fields and defaults are those of tiny-lsm's ``Config`` (accepted
    range, default):

    * ``max_space_amp`` (records per live key, 1 to 255, 2): when two or
      more sstables hold more than this many records per live key, a
      background merge merges all of them;
    * ``max_log_length`` (bytes, 1 to 2**63 - 1, 32 MiB): when the log
      passes this length, a rollover in the background turns its changes
      into a new sstable and starts the log afresh; writes wait for it (a
      write stall) once the log is twice as long;
    * ``merge_ratio`` (1 to 255, 3) and ``merge_window`` (sstables, 2 to 255,
      10): the background merge looks for ``merge_window`` consecutive
      sstables, each later one more than ``1/merge_ratio`` the size (in
      records) of the first, and merges them;
    * ``log_bufwriter_size`` (bytes, 0 to 2**32 - 1, 32 KiB): changes
      buffered in memory before the log is written (0 writes every change
      at once);
    * ``zstd_sstable_compression_level`` (1 to 22, 3): the zstd level of
      the sstables written.

    Raises ``TypeError`` for a non-integer field and ``ValueError`` naming
    the field for a value out of range.
    """

    max_space_amp: int = 2
    max_log_length: int = 32 * 1024 * 1024
    merge_ratio: int = 3
    merge_window: int = 10
    log_bufwriter_size: int = 32 * 1024
    zstd_sstable_compression_level: int = 3

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(
                    f"Config.{f.name}: expected int, got {type(value).__name__}"
                )
            low, high = _RANGES[f.name]
            if not low <= value <= high:
                raise ValueError(
                    f"Config.{f.name}: expected {low} to {high}, got {value}"
                )


@dataclass(frozen=True)
class Stats:
    """A snapshot of a store's sizes and traffic (``Lsm.stats()``).

    Counters "since opening" start at zero when the store is opened; the
    rest describe the store as it is now.  Sizes are in bytes.

    * ``resident_bytes``: the live data: live keys times ``K + V``, the
      bytes of the keys and values the store holds (not the memory it
      uses: see ``memory_bytes``);
    * ``on_disk_bytes``: the log file (not its buffered bytes) plus every
      sstable file, now (kept log tails aside);
    * ``logged_bytes``: bytes of changes appended to the log since opening
      (log frames, buffered ones included);
    * ``written_bytes``: bytes written to disk since opening: the log, the
      sstables that log rollovers and merges wrote, and the rollovers'
      copies of the log's newer part, whichever opening logged the changes
      they hold;
    * ``read_bytes``: bytes read from disk since opening, the recovery at
      opening included (sstables and the log), then rollovers and merges;
    * ``space_amp``: ``on_disk_bytes / resident_bytes``, disk bytes per byte
      of live data; ``0.0`` when there is no live data (no ratio);
    * ``write_amp``: ``written_bytes / (logged_bytes + recovered_bytes)``,
      disk bytes written per byte of data this opening had to put on disk:
      the changes it logged, and the log and sstables it found at opening,
      which its rollovers and merges rewrite too; ``0.0`` when both are 0.
      For a store created by this opening it is the usual ratio,
      ``written_bytes / logged_bytes``.  (Dividing by ``logged_bytes`` alone
      would count the work on data logged before a reopen against the
      changes since: a reopen, one write and the rollover of the recovered
      log made that ratio about a million.  tiny-lsm divides by
      ``on_disk_bytes``, which measures nothing useful once data is
      deleted.)
    * ``keys``: live keys;
    * ``sstables``: sstable files;
    * ``log_bytes``: the log's length, buffered bytes included;
    * ``merges``: merges of sstables done since opening, in the background
      or by ``compact()``;
    * ``compaction_error``: the error of the background merge's last
      attempt as text, ``None`` if it succeeded or none failed (a failed
      merge is retried, and ``close()`` raises if its last try fails);
    * ``kept_files`` and ``kept_bytes``: the log tails recovery set aside
      instead of destroying them (``tinylsm.kept-*`` files in the store
      directory, see ``tinylsm verify``): how many, and their bytes;
    * ``rollovers``: log rollovers done since opening (the log's changes
      turned into an sstable in the background);
    * ``write_stalls`` and ``write_stall_seconds``: writes since opening that
      had to wait for a rollover (the log had reached twice
      ``max_log_length``, or a rollover's switch held appends with the
      buffer full), and the seconds they waited in all;
    * ``rollover_error``: the error of the last rollover attempt as text,
      ``None`` if it succeeded or none failed (a failed one is retried, and
      the log keeps every change meanwhile);
    * ``memory_bytes``: memory the in-memory map holds.  Compiled: its C
      arrays as allocated (K + V per slot, the hash table, the sorted
      index, the live bitmap and its id lists; pages allocated but not yet
      touched count too).  Pure Python: an estimate of the dict, the sorted
      key list and the key and value ``bytes`` objects (each rounded up to
      16 bytes, as pymalloc does).  The log buffer is not included;
    * ``recovered_bytes``: the bytes of the log and the sstables that the
      store held when it was opened (after recovery), the data the opening
      found; ``write_amp`` counts it.
    """

    resident_bytes: int
    on_disk_bytes: int
    logged_bytes: int
    written_bytes: int
    read_bytes: int
    space_amp: float
    write_amp: float
    keys: int = 0
    sstables: int = 0
    log_bytes: int = 0
    merges: int = 0
    compaction_error: Optional[str] = None
    kept_files: int = 0
    kept_bytes: int = 0
    rollovers: int = 0
    write_stalls: int = 0
    write_stall_seconds: float = 0.0
    rollover_error: Optional[str] = None
    memory_bytes: int = 0
    recovered_bytes: int = 0
