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

    The fields and defaults are those of tiny-lsm's ``Config``:

    * ``max_space_amp``: a full compaction runs when the sstables hold more
      than this many records per live key;
    * ``max_log_length``: when the log passes this many bytes, its changes
      become a new sstable and the log is truncated;
    * ``merge_ratio`` and ``merge_window``: the background merge looks for
      ``merge_window`` consecutive sstables, each later one more than
      ``1/merge_ratio`` the size of the first, and merges them;
    * ``log_bufwriter_size``: bytes buffered in memory before the log is
      written (0 writes every change at once);
    * ``zstd_sstable_compression_level``: zstd level of sstables (1 to 22).

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
    """A snapshot of a store's sizes and traffic, in bytes.

    * ``resident_bytes``: live keys times ``K + V``;
    * ``on_disk_bytes``: the log plus every sstable file;
    * ``logged_bytes``: bytes of changes appended to the log since opening;
    * ``written_bytes``: bytes written to disk since opening (log, sstable
      flushes and merges);
    * ``read_bytes``: bytes read from disk since opening (recovery, sstable
      flushes and merges);
    * ``space_amp``: ``on_disk_bytes / resident_bytes``;
    * ``write_amp``: ``written_bytes / logged_bytes``, disk bytes written per
      byte of change (tiny-lsm divides by ``on_disk_bytes`` instead, which
      measures nothing useful once data is deleted).

    The remaining fields are tinylsm's own: key count, sstable count, log
    length, merges done, the last background error (``None`` if none), and
    the log tails that recovery set aside instead of destroying them
    (``tinylsm.kept-*`` files in the store directory: how many, and their
    bytes; see ``tinylsm verify``); the log rollovers done since opening
    (the log's changes turned into an sstable in the background), the writes
    that had to wait because the log reached twice ``max_log_length`` before
    the rollover was done, and the seconds they waited in all; and the last
    rollover's error (``None`` if none; it is retried, and the log keeps
    every change meanwhile).
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
