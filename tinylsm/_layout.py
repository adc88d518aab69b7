"""What a store directory holds, and making a new one.

A store directory holds ``log`` and ``sstables/`` (the Rust crate's files)
and tinylsm's own ``tinylsm.meta`` (the sizes), ``tinylsm.lock`` and kept
log tails (see ``_kept``).  ``open()`` creates a store only in a new or empty
directory, and refuses to scatter these names among someone else's files.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import FrozenSet, NamedTuple

from . import _kept
from ._fs import Files, mode_of, not_a_file
from ._format import LOCK_NAME, LOG_COPY_NAME, LOG_NAME, META_NAME, SSTABLE_DIR, TMP_SUFFIX
from .errors import CorruptionError

#: The names whose presence means "a store is (being) made here".
STORE_NAMES = frozenset({LOG_NAME, SSTABLE_DIR, META_NAME})
#: tinylsm's helper names, which alone do not make a store.
_HELPER_NAMES = frozenset({LOCK_NAME, META_NAME + TMP_SUFFIX})


class Layout(NamedTuple):
    """The store files found in a directory."""

    names: FrozenSet[str]
    has_sstables: bool  # sstables/ exists (and is a directory)
    has_meta: bool
    log_size: int  # -1 when there is no log
    has_sstables_content: bool  # sstables/ holds any entry

    @property
    def is_store(self) -> bool:
        return bool(self.names & STORE_NAMES)

    @property
    def holds_data(self) -> bool:
        return self.log_size > 0 or self.has_sstables_content


def inspect(files: Files, path: str) -> Layout:
    """List ``path`` and check the kinds of the store's names.

    Raises ``CorruptionError`` for a created store whose ``sstables/`` is
    missing or is not a directory, or whose ``log`` is not a regular file.
    """
    names = frozenset(files.listdir(path))
    ssdir = os.path.join(path, SSTABLE_DIR)
    has_sstables = content = False
    if SSTABLE_DIR in names:
        mode = mode_of(ssdir)
        if not stat.S_ISDIR(mode):
            raise not_a_file(ssdir, mode, "the sstables directory")
        has_sstables = True
        content = bool(files.listdir(ssdir))
    log_size = -1
    if LOG_NAME in names:
        log_path = os.path.join(path, LOG_NAME)
        mode = mode_of(log_path)
        if not stat.S_ISREG(mode):
            raise not_a_file(log_path, mode)
        log_size = os.stat(log_path).st_size
    layout = Layout(names, has_sstables, META_NAME in names, log_size, content)
    if layout.is_store and not has_sstables:
        found = ", ".join(sorted(names & STORE_NAMES))
        raise CorruptionError(
            f"store {path!r} holds {found} but no {SSTABLE_DIR}/ directory: its "
            "sstables have been lost or moved, and opening it would show the log's "
            f"changes only; restore {SSTABLE_DIR}/ (nothing was changed)")
    return layout


def foreign_names(layout: Layout) -> FrozenSet[str]:
    """Names in a directory that holds no store which are not tinylsm's own."""
    return frozenset(n for n in layout.names - _HELPER_NAMES
                     if not _kept.is_kept_name(n) and not LOG_COPY_NAME.match(n))


def refuse_foreign(path: str, foreign: FrozenSet[str]) -> None:
    """Raise ``FileExistsError`` naming a few of ``foreign``: open() does
    not turn a directory of unrelated files into a store."""
    sample = ", ".join(repr(n) for n in sorted(foreign)[:5])
    more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
    raise FileExistsError(
        errno.EEXIST,
        f"directory holds files that are not a tinylsm store ({sample}{more}); "
        "open() creates a store only in a new or empty directory",
        path,
    )


def make_sstables_dir(files: Files, path: str) -> None:
    """First step of a new store (the Rust crate's order too): ``sstables/``,
    durably.  The size record, written last, completes the store."""
    files.mkdir(os.path.join(path, SSTABLE_DIR))
    files.fsync_dir(path)


def fsync_parents(files: Files, path: str) -> None:
    """Make the entries of directories ``os.makedirs`` created durable."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and parent != os.path.dirname(parent):
        try:
            files.fsync_dir(parent)
        except OSError:
            break  # not ours to sync (permissions); the store itself is
        parent = os.path.dirname(parent)
