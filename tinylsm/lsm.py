"""The store: ``open()`` and ``Lsm``."""
from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from collections.abc import ItemsView, KeysView, MutableMapping, ValuesView
from typing import (TYPE_CHECKING, Callable, Iterable, Iterator, List, NoReturn, Optional, Tuple,
                    TypeVar, Union, overload)

from . import _packed, _prefix, _recovery
from ._lifecycle import CLOSED, CLOSING, FORKED, OPEN, OPENING, register, release
from ._views import Items, Keys, Values
from ._backend import codec, maps
from ._compactor import Compactor
from ._rollover import Rollover
from ._worker import Stopped
from ._fs import DEFAULT as DEFAULT_FILES
from ._fs import Files
from ._log import GATHER, LEAD, LogWriter
from ._format import LOG_NAME, SSTABLE_DIR, as_sized, packed_view
from ._logread import LogReader
from ._meta import StoreLock, writer_present
from ._types import Buffer
from .config import Config, Stats
from .errors import ClosedError, CompactionError, LogFailedError, ReadOnlyError, describe

log = logging.getLogger("tinylsm")

_T = TypeVar("_T")

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


class _Exclusive:
    """``with _Exclusive(store):`` holds the store's lock and marks it busy.

    The slow paths release the GIL for I/O while they hold the lock; being
    busy sends every fast path of another thread to the slow path, where it
    waits for the lock, so writes stay serialized.
    """

    __slots__ = ("store",)

    def __init__(self, store: "Lsm") -> None:
        self.store = store

    def __enter__(self) -> None:
        store = self.store
        store._lock.acquire()
        store._busy += 1

    def __exit__(self, *exc_info: object) -> None:
        store = self.store
        try:
            store._busy -= 1
            store._refresh_fast_cap()
        finally:
            store._lock.release()


def open(  # noqa: A001 - the module's entry point, as in dbm.open
    path: PathLike,
    *,
    key_size: Optional[int] = None,
    value_size: Optional[int] = None,
    config: Optional[Config] = None,
    readonly: bool = False,
    _files: Optional[Files] = None,
) -> "Lsm":
    """Open the store in directory ``path``, creating or recovering it.

    ``path`` is a ``str``, ``bytes`` or path-like object, as for ``os``
    functions; ``Lsm.path`` is it as a ``str`` (``os.fsdecode``).

    A new store is made only in a new or empty directory, and records
    ``key_size`` and ``value_size``; an existing one takes the sizes it
    records, and each size given (one or both) must match its recorded one
    (a directory written by the Rust crate records none, and opens with
    both sizes given).  Recovery deletes unfinished ``-tmp``
    sstables, reads the sstables in id order, replays the log on top and
    cuts the log after the last change it can trust; bytes after that point
    that may be data are first copied to a ``tinylsm.kept-*`` file (see
    ``Stats.kept_files``).  Everything is checked before anything on disk is
    changed.  Cost: reads every sstable and the log once, in chunks (a
    batch longer than a chunk twice), O(bytes on disk), and builds the map
    in memory (about 27 bytes per key in all at 8/8, 75 at 32/32, as
    measured by ``tinylsm bench``), holding only a few chunks beyond it.

    With ``readonly`` nothing on disk is changed (no truncation, no deletion,
    no compaction, no metadata, no lock file); sizes default to the
    recorded ones.  A read-only open works beside a writer, in this process
    or another: it holds the map after some prefix of the writer's log that
    includes every change flushed before the open began (``live`` says
    whether a writer is there, ``refresh()`` catches up).  It holds the
    writer up only while it opens its files (microseconds; see
    ``tinylsm._gate``), and never once open.

    Raises ``LockedError`` if another writer holds the directory (a
    read-only open only if a writer holds up its opening for 30 seconds,
    a stopped process), ``ValueError`` for sizes that do not match the recorded
    ones, ``CorruptionError`` for damage recovery must not paper over (a
    damaged ``tinylsm.meta``, a log whose first frame is not one, a lost
    ``sstables/``, an odd file where a store file belongs), and
    ``FileExistsError`` for a directory of files that are not a store.
    """
    return Lsm(path, key_size=key_size, value_size=value_size, config=config,
               readonly=readonly, _files=_files)


class Lsm(maps.StoreCore, MutableMapping[bytes, bytes]):
    """A crash-safe sorted map of fixed-size ``bytes`` keys to ``bytes`` values.

    All data lives in memory; reads never touch the disk.  Every change is
    appended to a checksummed log behind a buffer of
    ``config.log_bufwriter_size`` bytes.

    Durability:

    * a change survives a *process* crash once it is handed to the OS: when
      the buffer fills, at ``flush()``, ``close()``, garbage collection or
      interpreter exit;
    * a change survives a *power cut* (or kernel crash) only once a
      ``flush()`` after it has returned;
    * a ``write_batch`` (or ``write_packed``) is recovered whole or not at all.

    Threads: one store may be shared by many threads; writes are serialized.
    Iterating (``iter``, ``keys``, ``items``, ``values``, ``range``,
    ``export``) while another thread changes the store raises
    ``RuntimeError``, as ``dict`` does; it never yields a torn item (nor a
    torn chunk).  A store cannot be used in a child
    process made by ``fork``: any use raises ``ClosedError``.

    Reads (``[]``, ``get``, ``get_many``, ``in``, ``len``) and most ``insert``
    and ``remove`` calls run in compiled code in one call (see ``StoreCore``).
    """

    if TYPE_CHECKING:
        # StoreCore's methods (the compiled hot paths) as a type checker
        # shows them to users: declared here, so that its messages name
        # Lsm and not the internal base class.  Never run.
        @property
        def key_size(self) -> int: ...
        @property
        def value_size(self) -> int: ...
        def insert(self, key: Buffer, value: Buffer) -> Optional[bytes]: ...
        def insert_if_absent(self, key: Buffer, value: Buffer) -> Optional[bytes]: ...
        def remove(self, key: Buffer) -> Optional[bytes]: ...
        def __setitem__(self, key: Buffer, value: Buffer) -> None: ...
        def __delitem__(self, key: Buffer) -> None: ...
        def __getitem__(self, key: Buffer) -> bytes: ...
        def __len__(self) -> int: ...
        def __contains__(self, key: object) -> bool: ...
        @overload
        def get(self, key: Buffer, default: None = None) -> Optional[bytes]: ...
        @overload
        def get(self, key: Buffer, default: Union[bytes, _T]) -> Union[bytes, _T]: ...
        def get(self, key: Buffer, default: object = None) -> object: ...
        def get_many(self, keys: Iterable[Buffer]) -> List[Optional[bytes]]: ...
        # and MutableMapping's pop(), which takes any key __getitem__ takes
        @overload
        def pop(self, key: Buffer) -> bytes: ...
        @overload
        def pop(self, key: Buffer, default: Union[bytes, _T]) -> Union[bytes, _T]: ...
        def pop(self, key: Buffer, default: object = None) -> object: ...

    def __init__(
        self,
        path: PathLike,
        *,
        key_size: Optional[int] = None,
        value_size: Optional[int] = None,
        config: Optional[Config] = None,
        readonly: bool = False,
        _files: Optional[Files] = None,
    ) -> None:
        self._state = OPENING  # until fully opened (for __del__ too)
        if config is None:
            config = Config()
        elif not isinstance(config, Config):
            raise TypeError(f"config: expected tinylsm.Config, got {type(config).__name__}")
        # a str from here on (bytes decoded as os does, so that undecodable
        # bytes survive as surrogates and name the same file)
        self.path = os.fsdecode(path)
        self.config = config
        self.readonly = bool(readonly)
        self._files = _files if _files is not None else DEFAULT_FILES
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._dirlock: Optional[StoreLock] = None
        self._log: Optional[LogWriter] = None
        self._compactor: Optional[Compactor] = None
        self._rollover: Optional[Rollover] = None
        self._closed_event = threading.Event()
        self._read_bytes = 0
        self._kept: List[Tuple[str, int]] = []

        try:
            opening = _recovery.prepare(self._files, self.path, key_size, value_size,
                                        self.readonly)
            self._dirlock = opening.lock
            k, v = opening.key_size, opening.value_size
            self._frame_size = codec.frame_size(k, v)
            data = maps.SortedMap(k, v)
            done = _recovery.recover(self._files, self.path, data.apply_records,
                                     opening, self.readonly, config.log_bufwriter_size,
                                     data.reserve)
        except BaseException:
            self._release_files()
            self._state = CLOSED
            raise
        self._log = done.log
        self._read_bytes = done.read_bytes
        # the data this opening found, which its rollovers and merges may
        # rewrite: Stats.write_amp counts it beside the changes logged
        self._recovered_bytes = done.log.size + sum(t.nbytes for t in done.tables.values())
        self._kept = done.kept
        self._attach(data, self._log.buf, self._frame_size)
        # the threads must not keep the store alive (its collection writes
        # the buffer out), hence weak references
        ref = weakref.ref(self)
        ssdir = os.path.join(self.path, SSTABLE_DIR)
        self._compactor = Compactor(self._files, ssdir, k, v, config, done.tables,
                                    lambda: _live_keys(ref))
        self._rollover = Rollover(self._files, self.path, ssdir, k, v, config, self._log,
                                  self._compactor, max(done.tables, default=0) + 1,
                                  self._lock, lambda: _exclusive(ref))
        if not self.readonly:
            self._compactor.start()
            self._rollover.start()
        self._state = OPEN
        self._refresh_fast_cap()
        register(self)

    @property
    def _closed(self) -> bool:
        return self._state is not OPEN

    # -- reading -------------------------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        # the map's own key iterator: no pair or value made per key
        with self._lock:
            return self._map.keys()

    def keys(self) -> KeysView[bytes]:
        """The keys, in key order (costs as ``range``)."""
        return Keys(self)

    def items(self) -> ItemsView[bytes, bytes]:
        """``(key, value)`` pairs, in key order (costs as ``range``)."""
        return Items(self)

    def values(self) -> ValuesView[bytes]:
        """The values, in key order (costs as ``range``)."""
        return Values(self)

    def range(
        self, start: Optional[Buffer] = None, stop: Optional[Buffer] = None, *,
        reverse: bool = False, prefix: Optional[Buffer] = None,
    ) -> Iterator[Tuple[bytes, bytes]]:
        """Yield ``(key, value)`` for ``start <= key < stop`` in key order.

        Either end may be ``None`` (open).  With ``reverse`` the same pairs
        come in descending order.  Raises ``RuntimeError`` on the next step
        if the store changes while the iterator is in use.

        ``prefix`` (any bytes-like object of at most ``key_size`` bytes,
        instead of ``start`` and ``stop``) yields the keys that begin with
        it: ``b""`` every key, a whole key at most that key.  Giving it with
        ``start`` or ``stop`` raises ``TypeError``, a longer one ``ValueError``.

        Cost: O(log n) to find the start, then O(1) per pair, no I/O.  The
        first ordered read (``range``, iteration, ``keys``/``items``/``values``)
        after m inserts or removes first brings the sorted index up to date:
        O(m log m + n) (a radix sort of the m new keys and one merge pass), so
        alternating single writes with ordered reads costs O(n) each time.

        >>> import tinylsm, tempfile, os
        >>> db = tinylsm.open(os.path.join(tempfile.mkdtemp(), "db"), key_size=1, value_size=1)
        >>> db.write_batch([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
        >>> list(db.range(b"b"))
        [(b'b', b'2'), (b'c', b'3')]
        >>> [k for k, _ in db.range(stop=b"c", reverse=True)]
        [b'b', b'a']
        >>> db.close()
        >>> db = tinylsm.open(os.path.join(tempfile.mkdtemp(), "db"), key_size=2, value_size=0)
        >>> db.write_batch([(b"az", b""), (b"ba", b""), (b"bz", b""), (b"ca", b"")])
        >>> [k for k, _ in db.range(prefix=b"b")]
        [b'ba', b'bz']
        >>> db.close()
        """
        start, stop = self._bounds("range", start, stop, prefix)
        with self._lock:
            return self._map.items(start, stop, reverse)

    def export(
        self, start: Optional[Buffer] = None, stop: Optional[Buffer] = None, *,
        prefix: Optional[Buffer] = None, reverse: bool = False, chunk_records: int = 65536,
    ) -> Iterator[memoryview]:
        """Yield the records ``key + value`` of ``range()`` packed in chunks.

        ``start``, ``stop``, ``prefix`` and ``reverse`` select and order the
        records as for ``range()``, and are checked the same way.  Each
        chunk is a read-only ``memoryview`` (format ``B``) of ``m * (K + V)``
        bytes, ``m`` records one after the other, each its key then its
        value, no separator: at most ``chunk_records`` (a positive ``int``;
        ``TypeError`` or ``ValueError`` otherwise) records a chunk, only
        the last one shorter; an empty range yields no chunk.  Every chunk
        is a new ``bytes`` object's view, never written again: a chunk the
        caller keeps stays as it was.  NumPy reads one without a copy:
        ``numpy.frombuffer(chunk, dtype=[("key", f"S{K}"), ("value", f"S{V}")])``.

        Consistency: each chunk is copied in one step, while no other
        thread can run, so each chunk is a consistent part of the store.
        Across chunks the rule of iteration holds: if the store changes
        between two chunks, the next step raises ``RuntimeError("tinylsm
        store changed during iteration")``; the chunks yielded before are
        still valid.  (A read-only store changes only by ``refresh()``.)

        Cost: as ``range()`` to start, then O(K + V) per record, copied
        from the map without making an object per record: several times
        the speed of ``items()`` (see README, "Bulk export and import").
        Memory: one chunk at a time, ``chunk_records * (K + V)`` bytes.

        >>> import tinylsm, tempfile, os
        >>> db = tinylsm.open(os.path.join(tempfile.mkdtemp(), "db"), key_size=1, value_size=1)
        >>> db.write_batch([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
        >>> [bytes(chunk) for chunk in db.export(chunk_records=2)]
        [b'a1b2', b'c3']
        >>> [bytes(chunk) for chunk in db.export(b"b", reverse=True)]
        [b'c3b2']
        >>> db.close()
        """
        start, stop = self._bounds("export", start, stop, prefix)
        with self._lock:
            return self._map.export(start, stop, reverse, chunk_records)

    def _bounds(self, method: str, start: object, stop: object, prefix: object
                ) -> Tuple[Optional[bytes], Optional[bytes]]:
        """``(start, stop)`` of an ordered read, checked: keys of ``key_size``
        bytes or ``None``, or the range of ``prefix`` (see ``range()``)."""
        k = self.key_size
        if prefix is not None:
            if start is not None or stop is not None:
                raise TypeError(f"{method}(): give prefix, or start and stop, not both")
            return _prefix.bounds(prefix, k)
        if start is not None:
            start = as_sized(start, k, "key")
        if stop is not None:
            stop = as_sized(stop, k, "key")
        return start, stop

    # -- writing -------------------------------------------------------------------

    def _refresh_fast_cap(self) -> None:
        """Tell the fast paths how far the buffer may grow without a slow
        path's work: a write-out, a rollover to ask for, or an error to raise."""
        log_writer = self._log
        rollover = self._rollover
        if (self._closed or self.readonly or log_writer is None or rollover is None
                or log_writer.broken is not None):
            self._set_fast_cap(-1)
        else:
            self._set_fast_cap(rollover.fast_cap(log_writer))

    def _check_open(self) -> None:
        if self._closed:
            len(self)  # raises ClosedError with the reason
            raise ClosedError(f"store {self.path!r} is closed")

    def _writable(self, appending: bool = True) -> LogWriter:
        """The log, ready to take a change (lock held), or raise why not.

        Past the limit it asks for a rollover; a caller ``appending`` to the
        log may then have to wait for it (a write stall)."""
        log_writer = self._log
        if self._closed or self.readonly or log_writer is None:
            self._check_open()
            raise ReadOnlyError(f"store {self.path!r} is open read-only")
        if log_writer.length > self.config.max_log_length or log_writer.held:
            assert self._rollover is not None  # set while open
            self._rollover.before_write(appending)  # may wait
            if self._closed:  # closed while it waited
                self._check_open()
        return log_writer

    # insert(), remove() and insert_if_absent() are StoreCore's: they call
    # these when they cannot finish in one compiled step.

    def _slow_insert(self, key: Buffer, value: Buffer) -> Optional[bytes]:
        if value is None:  # encode_frame would make it a tombstone
            raise TypeError("value: expected a bytes-like object, got "
                            "NoneType (use remove() to delete a key)")
        frame = codec.encode_frame(key, value, self.key_size, self.value_size)
        with _Exclusive(self):
            self._writable().append(frame)
            return self._map.set(key, value)

    def _slow_remove(self, key: Buffer) -> Optional[bytes]:
        key = as_sized(key, self.key_size, "key")
        with _Exclusive(self):
            if key not in self._map:
                self._writable()
                return None
            frame = codec.encode_frame(key, None, self.key_size, self.value_size)
            self._writable().append(frame)
            return self._map.delete(key)

    def _slow_insert_if_absent(self, key: Buffer, value: Buffer) -> Optional[bytes]:
        if value is None:
            raise TypeError("value: expected a bytes-like object, got NoneType")
        k, v = self.key_size, self.value_size
        # bytes now, so that the frame and the map get the same bytes even
        # if the caller's buffer changes meanwhile
        key, value = as_sized(key, k, "key"), as_sized(value, v, "value")
        frame = codec.encode_frame(key, value, k, v)
        with _Exclusive(self):
            log_writer = self._writable()  # may wait, letting other writers in
            old = self._map.get(key)
            if old is not None:
                return old
            log_writer.append(frame)
            return self._map.set(key, value)

    def setdefault(self, key: Buffer, default: Optional[Buffer] = None) -> bytes:
        """The value of ``key``, inserting ``default`` first if it is absent.

        Atomic, unlike ``MutableMapping.setdefault``: of threads racing on
        the same absent key, exactly one inserts and every one gets the
        value it inserted (see ``insert_if_absent``, which tells whether
        this call inserted).  A store cannot hold ``None``, so ``default``
        is required: leaving it out raises ``TypeError``, whether the key
        is present or not.  The key and ``default`` are checked as by
        ``insert`` even when the key is present.  O(1) amortized.

        >>> import tinylsm, tempfile, os
        >>> db = tinylsm.open(os.path.join(tempfile.mkdtemp(), "db"), key_size=1, value_size=1)
        >>> db.setdefault(b"a", b"1"), db.setdefault(b"a", b"2")
        (b'1', b'1')
        >>> db.insert_if_absent(b"b", b"3"), db.insert_if_absent(b"b", b"4")
        (None, b'3')
        >>> db.setdefault(b"c")
        Traceback (most recent call last):
            ...
        TypeError: setdefault(): a default value is required (a store cannot hold None; ...)
        >>> db.close()
        """
        if default is None:
            raise TypeError("setdefault(): a default value is required (a store cannot "
                            "hold None; use get() to read without inserting)")
        old = self.insert_if_absent(key, default)
        if old is not None:
            return old
        return as_sized(default, self.value_size, "value")

    def write_batch(self, items: Iterable[Tuple[Buffer, Optional[Buffer]]]) -> None:
        """Apply ``(key, value_or_None)`` changes atomically, in order.

        ``None`` removes the key; a later item for the same key wins.  Every
        item is checked first: one bad item raises ``TypeError`` or
        ``ValueError`` naming it and nothing is applied.  Recovery applies
        the whole batch or none of it.  Cost: O(len(items)), one log append.

        >>> import tinylsm, tempfile, os
        >>> db = tinylsm.open(os.path.join(tempfile.mkdtemp(), "db"), key_size=1, value_size=1)
        >>> db.write_batch([(b"a", b"1"), (b"b", b"2"), (b"a", None)])
        >>> dict(db.items())
        {b'b': b'2'}
        >>> db.write_batch([(b"c", b"too long")])
        Traceback (most recent call last):
            ...
        ValueError: value of item 0: expected 1 bytes, got 8
        >>> db.close()
        """
        if not isinstance(items, (list, tuple)):
            items = list(items)
        self._log_batch(codec.encode_log(items, self.key_size, self.value_size, batch=True))

    def write_packed(self, records: Buffer, removals: Optional[Buffer] = None) -> None:
        """Apply packed records, then packed removals, atomically: one batch.

        ``records`` is any bytes-like object (``bytes``, ``bytearray``,
        ``memoryview``, ``array.array``, a NumPy array: its raw bytes) of
        ``n * (K + V)`` bytes, each record a key then its value, as
        ``export()`` yields them; ``removals``, if given, one of ``m * K``
        bytes, keys to remove.  It does what this does, with the same log
        bytes, but without an object per record::

            write_batch([(key, value) for each record of records]
                        + [(key, None) for each key of removals])

        so a later record for the same key wins, and a key in ``removals``
        is absent afterwards whatever ``records`` holds.  Recovery (and the
        Rust crate) applies the whole batch or none of it.  Both lengths
        are checked first: ``TypeError`` for an argument that is not
        bytes-like, ``ValueError`` for a length that is not a whole number
        of records or keys (``records: expected a multiple of K+V=16 bytes,
        got 17``); nothing is applied then.  Empty input logs an empty
        batch, as ``write_batch([])`` does.  Cost: O(n + m), one pass to
        encode (C, without the GIL), one to the log, one over the map.  A
        batch of more than 1 MiB of log frames is encoded a piece at a time,
        each piece written to the log as it is made, so its frames are never
        in memory whole; its records are then read again by the map, so a
        buffer that another thread could change meanwhile (anything but
        ``bytes`` or a view of ``bytes``) is copied first.

        >>> import tinylsm, tempfile, os
        >>> db = tinylsm.open(os.path.join(tempfile.mkdtemp(), "db"), key_size=1, value_size=1)
        >>> db.write_packed(b"a1b2c3", removals=b"b")
        >>> [bytes(chunk) for chunk in db.export()]
        [b'a1c3']
        >>> db.write_packed(b"d4e")
        Traceback (most recent call last):
            ...
        ValueError: records: expected a multiple of K+V=2 bytes, got 3
        >>> db.close()
        """
        k, v = self.key_size, self.value_size
        rview = packed_view(records, k + v, f"K+V={k + v}", "records")
        gview = None if removals is None else packed_view(removals, k, f"K={k}", "removals")
        count = 1 + len(rview) // (k + v) + (0 if gview is None else len(gview) // k)
        if count * codec.frame_size(k, v) <= _packed.STREAM_BYTES:
            self._log_batch(codec.encode_packed(rview, gview, k, v))
            return
        rview = _packed.unchanging(rview)
        gview = None if gview is None else _packed.unchanging(gview)
        with _Exclusive(self):
            log_writer = self._writable()
            log_writer.append_pieces(_packed.pieces(rview, gview, k, v))
            self._map.apply_packed(rview, gview, k, v)
            assert self._rollover is not None  # set while open
            self._rollover.ask(log_writer.length)

    def _log_batch(self, frames: bytes) -> None:
        """Append one batch's frames (a header, then its changes) to the log
        and apply its changes to the map, as one step."""
        k, v = self.key_size, self.value_size
        records = codec.batch_records(frames, k, v)
        with _Exclusive(self):
            log_writer = self._writable()
            log_writer.append(frames)
            self._map.apply_records(records, k, v)
            assert self._rollover is not None  # set while open
            self._rollover.ask(log_writer.length)  # a batch past the limit: at once

    def flush(self) -> None:
        """Write the log buffer out and fsync it: every change made before
        the call survives a power cut once this returns.

        Threads flushing at the same time share fsyncs (group commit), and
        other threads keep writing while the disk works.

        Like every write, it asks for a log rollover once the log is past
        ``config.max_log_length`` (its changes become an sstable in the
        background); unlike a write, it never waits for one.  Cost: one
        ``pwrite`` and one
        ``fsync`` of the log (shared with other threads flushing at the same
        time).
        """
        gathered = False
        while True:
            # _Exclusive spelled out: this is the path every durable write takes
            self._lock.acquire()
            self._busy += 1
            try:
                log_writer = self._writable(appending=False)
                state = log_writer.begin_sync(gathered)
            except BaseException:
                if gathered and self._log is not None:
                    self._log.abandon_gather()
                raise
            finally:
                self._busy -= 1
                self._refresh_fast_cap()
                self._lock.release()
            if state is None:
                return
            epoch, target, role = state
            gathered = False
            try:
                if role == LEAD:
                    log_writer.end_sync(epoch, target)  # outside the lock
                    return
                if role == GATHER:
                    log_writer.gather()
                    gathered = True
                elif log_writer.wait_synced(epoch, target):
                    return
            except BaseException:
                self._refresh_fast_cap()  # a failed fsync breaks the log: no fast path
                raise

    def compact(self) -> None:
        """Merge the log and every sstable into one sstable, durably.

        Tombstones are dropped, since nothing older is left for them to hide.
        Readers and other writers are not blocked while the merge runs.
        Raises ``ClosedError`` (having changed nothing more) if the store is
        closed from another thread before the merge is done.  Cost: reads and
        rewrites every sstable, O(records on disk); at its peak it holds
        about 3.5 times the merged records' bytes (K + V + 1 each) beside the
        map: the inputs decompressed, the merged records and their
        compressed form (README, Memory).
        """
        with _Exclusive(self):
            self._writable(appending=False)
            rollover, compactor = self._rollover, self._compactor
        assert rollover is not None and compactor is not None  # set while open
        try:
            rollover.roll_now()
            compactor.compact_all()
        except Stopped:
            raise ClosedError(f"store {self.path!r} was closed during compact()") from None

    # -- a read-only store beside a writer ----------------------------------------

    @property
    def live(self) -> bool:
        """Whether a writer has the store open now: this store itself if it
        is writable, or a writer in this or another process beside a
        read-only one (whose contents are then a snapshot that
        ``refresh()`` brings up to date).  Costs a lock probe, no I/O."""
        self._check_open()
        return not self.readonly or writer_present(self.path)

    def refresh(self) -> bool:
        """Bring a read-only store up to date with the store's writer; True
        if it read anything new.  A writable store is always up to date
        (False).

        Afterwards the store holds the map after a later prefix of the
        writer's log than before, including every change flushed before
        the call.  If the writer is still appending to the log this store
        read, only the log's new bytes are read (O(new changes)); if the
        log was replaced since (a rollover, or a writer's recovery), the
        store is read again as by ``open()`` (O(bytes on disk)), into a new
        map that replaces the old one when complete.  An iterator begun
        before raises ``RuntimeError`` on its next step if new changes were
        applied to its map, as for any change; after a re-read it goes on
        over the earlier contents, whole.  Raises as ``open()`` does if the
        files read are damaged; the store then keeps its earlier contents.
        """
        with _Exclusive(self):
            self._check_open()
            if not self.readonly:
                return False
            log_writer = self._log
            assert log_writer is not None  # set while open
            if self._log_is_current(log_writer):
                return self._read_log_tail(log_writer)
            self._reload()
            return True

    def _log_is_current(self, log_writer: LogWriter) -> bool:
        """Whether ``log`` still names the file this store read, grown or not."""
        if log_writer.fd < 0:
            return False
        try:
            named = os.stat(os.path.join(self.path, LOG_NAME))
        except FileNotFoundError:
            return False
        mine = os.fstat(log_writer.fd)
        return ((named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)
                and mine.st_size >= log_writer.size)  # never cut in place by tinylsm

    def _read_log_tail(self, log_writer: LogWriter) -> bool:
        """Apply the changes appended to the log since it was last read.
        The bytes before ``log_writer.size`` never change (``_gate``), and
        a log retired meanwhile only ever grew up to its retirement, so
        what is read here is always the next part of a prefix."""
        k, v = self.key_size, self.value_size
        reader = LogReader(self._files, log_writer.fd, k, v, log_writer.size)
        data = self._map
        for records in reader:
            data.apply_records(records, k, v)
        scan = reader.scan
        assert scan is not None  # read to its end
        self._read_bytes += reader.end - log_writer.size
        grew = scan.end > log_writer.size
        log_writer.size = scan.end
        return grew

    def _reload(self) -> None:
        """Read the store again, as ``open()`` does, into a new map."""
        k, v = self.key_size, self.value_size
        data = maps.SortedMap(k, v)
        opening = _recovery.Opening(None, k, v, False, _recovery.META_OK)
        done = _recovery.recover(self._files, self.path, data.apply_records, opening,
                                 True, self.config.log_bufwriter_size, data.reserve)
        old_log = self._log
        self._log = done.log
        self._read_bytes += done.read_bytes
        self._kept = done.kept
        assert self._compactor is not None and self._rollover is not None  # set while open
        self._compactor.tables = done.tables
        self._rollover.log = done.log
        self._attach(data, done.log.buf, self._frame_size)
        if old_log is not None:
            old_log.close()

    # -- state -------------------------------------------------------------------

    def stats(self) -> Stats:
        """Sizes and traffic counters; see ``Stats``.  O(number of sstables)."""
        with self._lock:
            self._check_open()
            assert self._log is not None and self._compactor is not None
            assert self._rollover is not None
            tables = self._compactor.snapshot()
            comp, roll = self._compactor, self._rollover
            keys = len(self)
            resident = keys * (self.key_size + self.value_size)
            on_disk = self._log.size + sum(t.nbytes for t in tables.values())
            # every byte appended to the log is written out or still buffered
            logged = self._log.written + len(self._log.buf)
            written = self._log.written + roll.written_bytes + comp.written_bytes
            # both ratios are 0.0 when they have nothing to divide by, never
            # a count divided by a stand-in 1
            put = logged + self._recovered_bytes
            error = comp.error
            return Stats(
                resident_bytes=resident,
                on_disk_bytes=on_disk,
                logged_bytes=logged,
                written_bytes=written,
                read_bytes=self._read_bytes + roll.read_bytes + comp.read_bytes,
                space_amp=on_disk / resident if resident else 0.0,
                write_amp=written / put if put else 0.0,
                keys=keys,
                sstables=len(tables),
                log_bytes=self._log.length,
                merges=comp.merges,
                compaction_error=None if error is None else describe(error),
                kept_files=len(self._kept),
                kept_bytes=sum(size for _, size in self._kept),
                rollovers=roll.rollovers,
                write_stalls=roll.stalls,
                write_stall_seconds=roll.stall_seconds,
                rollover_error=None if roll.error is None else describe(roll.error),
                memory_bytes=self._map.nbytes,
                recovered_bytes=self._recovered_bytes,
            )

    def close(self) -> None:
        """Flush and fsync the log, stop merging, release the files and the lock.

        Idempotent, and safe from any thread while others use the store:
        every write that returned before ``close()`` began is durable when it
        returns; a write racing it either completes first (and is durable) or
        raises ``ClosedError`` having changed nothing.  A ``compact()`` or
        background merge or log rollover in progress gives up at a safe point
        or finishes first: when ``close()`` returns, this process touches no file of the
        store again, and another opener may take it.  Any other use
        afterwards raises ``ClosedError``.  If the background merge failed,
        it is tried once more; if it fails again the store is still closed
        cleanly and the error is raised as ``CompactionError`` (the data is
        safe: a failed merge changes nothing).  If the log broke earlier (a
        failed fsync or switch: writes were refused since), the store is
        closed and ``LogFailedError`` is raised: the changes since the last
        successful ``flush()`` are not known to be durable.
        """
        with self._lock:
            state = self._state
            if state is OPEN:
                self._state = CLOSING
                self._set_fast_cap(-1)  # other threads' writes now wait and fail
        if state is not OPEN:
            if state is CLOSING:  # by another thread: done when it is
                self._closed_event.wait()
            return
        error: Optional[BaseException] = None
        broken: Optional[BaseException] = None
        unwritten = 0
        try:
            # without the lock: a rollover's first and last steps take it
            if self._rollover is not None:
                self._rollover.stop()
        finally:
            with self._lock:
                try:
                    if not self.readonly and self._log is not None:
                        broken = self._log.broken
                        if broken is None:
                            self._log.sync()
                        else:  # not tried again: a retried fsync would lie
                            unwritten = len(self._log.buf)
                finally:
                    try:
                        compactor = self._compactor
                        if compactor is not None:
                            compactor.stop(retry=True)
                            error = compactor.error
                    finally:
                        try:
                            self._release_files()
                        finally:
                            # whatever failed, the store is closed, and a
                            # close() waiting in another thread returns
                            self._state = CLOSED
                            self._map._invalidate(ClosedError, f"store {self.path!r} is closed")
                            self._closed_event.set()
        if broken is not None:
            lost = (f"; {unwritten} bytes of changes taken before it broke were never "
                    f"written" if unwritten else "")
            merge = "" if error is None else f"; its background merge failed too ({describe(error)})"
            raise LogFailedError(
                f"store {self.path!r} is closed, but its log broke earlier ({describe(broken)}): "
                f"changes since the last successful flush() may not survive a power cut{lost}"
                f"{merge}") from broken
        if error is not None:
            raise CompactionError(
                f"background compaction of {self.path!r} failed: {describe(error)}"
            ) from error

    def _release_files(self) -> None:
        """Close the log and give the lock up (any merge is stopped by now)."""
        release(self._log, self._dirlock)
        self._log = None
        self._dirlock = None

    def __enter__(self) -> "Lsm":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"{len(self)} keys" if self._state is OPEN else self._state
        return (f"<tinylsm.Lsm {self.path!r} key_size={self.key_size} "
                f"value_size={self.value_size} {state}>")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        # a copy would share the log's descriptor and the lock, and closing
        # it (or collecting it) would close them under the original
        raise TypeError(
            f"tinylsm.Lsm cannot be copied or pickled: it owns the files and lock of "
            f"{self.path!r}; open the store again (tinylsm.open) where it is needed")

    __reduce__ = __reduce_ex__  # type: ignore[assignment]

    def __copy__(self) -> NoReturn:
        self.__reduce_ex__(None)

    def __deepcopy__(self, memo: object) -> NoReturn:
        self.__reduce_ex__(None)

    def __del__(self) -> None:
        # Garbage collection writes the buffer out (no fsync) so that what
        # was acknowledged survives a process crash, as documented.
        if getattr(self, "_state", None) is not OPEN or os.getpid() != self._pid:
            return
        self._state = CLOSING
        try:
            if self._log is not None and not self.readonly:
                if self._log.broken is None:
                    self._log.write_out()
                else:
                    log.error("tinylsm: store %s collected with its log broken (%s): changes "
                              "since the last successful flush() may be lost", self.path,
                              describe(self._log.broken))
        except OSError as exc:
            log.error("tinylsm: could not write the log of %s at collection: %r", self.path, exc)
        finally:
            # the files are let go once no merge can touch them; if this runs
            # on the compaction thread itself, that thread does it as it exits
            let_go = functools.partial(release, self._log, self._dirlock)
            self._log = None
            self._dirlock = None
            _stop_threads(self._rollover, self._compactor, let_go)
            self._state = CLOSED

    def _forked(self) -> None:
        """In a forked child: make every use fail, never touch the files (the
        parent still owns them, its lock and its buffered data), and close
        the child's copies of the descriptors, so that the parent can reopen
        the store once it has closed it, and the child can open it then."""
        self._state = FORKED
        self._set_fast_cap(-1)
        self._map._invalidate(
            ClosedError,
            f"store {self.path!r} was opened in process {self._pid} and cannot "
            f"be used in its forked child {os.getpid()}; open it again in the child "
            "once the parent has closed it",
        )
        self._log = None  # its descriptor: closed with the rest of its Files'
        if self._dirlock is not None:
            self._dirlock.close()  # the child's copies only: the parent keeps its lock
            self._dirlock = None
        self._compactor = None
        self._rollover = None


def _stop_threads(rollover: Optional[Rollover], compactor: Optional[Compactor],
                  after: Callable[[], None]) -> None:
    """Stop the rollover, then the compactor, then run ``after``; from one
    of those threads itself, the rest happens as it exits."""
    def then() -> None:
        if compactor is not None:
            compactor.stop(after=after)
        else:
            after()

    if rollover is not None:
        rollover.stop(after=then)
    else:
        then()


def _exclusive(ref: "weakref.ReferenceType[Lsm]") -> _Exclusive:
    store = ref()
    if store is None:
        raise Stopped()
    return _Exclusive(store)


def _live_keys(ref: "weakref.ReferenceType[Lsm]") -> int:
    store = ref()
    if store is None:
        return 0
    try:
        return len(store._map)
    except ClosedError:
        return 0
