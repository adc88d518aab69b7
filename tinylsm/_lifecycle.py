"""The life of a store, and of the process around it.

A store is OPENING until ``open()`` returns, OPEN while it serves calls,
CLOSING while ``close()`` (or collection) waits for work in flight, then
CLOSED; in a child made by ``fork`` it is FORKED.  Only OPEN serves calls.
This module also keeps the registry of open stores for the two process
events that concern them all: interpreter exit (each is closed, so that
buffered changes reach the OS) and ``fork`` (each is forgotten in the
child, and the child's copies of the descriptors are closed at once, so
that the parent's lock is the parent's alone).
"""
from __future__ import annotations

import atexit
import logging
import os
import weakref
from typing import TYPE_CHECKING, Optional

from ._fs import DEFAULT as DEFAULT_FILES
from ._log import LogWriter
from ._meta import StoreLock

if TYPE_CHECKING:
    from .lsm import Lsm

log = logging.getLogger("tinylsm")

OPENING, OPEN, CLOSING, CLOSED, FORKED = "opening", "open", "closing", "closed", "forked"

# id -> store; Lsm is a Mapping, hence unhashable, so no WeakSet
_open_stores: "weakref.WeakValueDictionary[int, Lsm]" = weakref.WeakValueDictionary()


def register(store: "Lsm") -> None:
    """Count ``store`` among the open ones (until it is collected)."""
    _open_stores[id(store)] = store


def release(log_writer: Optional[LogWriter], dirlock: Optional[StoreLock]) -> None:
    """Close a store's log and give its lock up (no merge may run by now)."""
    try:
        if log_writer is not None:
            log_writer.close()
    finally:
        if dirlock is not None:
            dirlock.close()


def _close_all_at_exit() -> None:
    for store in list(_open_stores.values()):
        try:
            store.close()
        except Exception as exc:  # reported, and the other stores still close
            log.error("tinylsm: closing %s at exit: %r", store.path, exc)


def _after_fork_in_child() -> None:
    stores = list(_open_stores.values())
    _open_stores.clear()
    for store in stores:
        store._forked()
    # every descriptor the stores opened (logs, a merge's files): the parent
    # keeps its own copies
    files = {id(f): f for f in [DEFAULT_FILES] + [s._files for s in stores]}
    for f in files.values():
        f.close_all_in_child()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
