"""The rollover: the log's changes become an sstable off the writers' path.

When the log passes ``max_log_length``, a background thread

1. notes the log's length M (store lock held, buffer written out first);
2. fsyncs the log (if a flush has not made ``log[0:M]`` durable already),
   reads ``log[0:M]``, sorts it and writes sstable N (``N-tmp``, fsync,
   rename, directory fsync), then hands it to the compactor (no lock);
3. copies ``log[M:]`` to ``tinylsm.log-from-M`` in rounds and fsyncs it,
   until little is left (no lock);
4. waits until no reader is opening files (``_gate``: the rename retires
   the old log, a removing step), writes the buffer out to the log and from
   then on holds appends in the buffer (store lock held, briefly); copies
   the rest, fsyncs the copy, renames it over ``log`` and lets readers in
   again, fsyncs the directory (no lock); then
   switches the writer to the copy (lock held, briefly) and drains the
   held appends to it, a piece per lock holding.

Writers append all along: during step 4 into the buffer only, which may
then grow past ``log_bufwriter_size`` (up to ``HOLD_BYTES``, after which
appends wait); a ``flush()`` in step 4 waits for its end.  If writers
outrun the thread (the log reaches twice the limit while a rollover is
due), appends wait for the rollover: a write stall, counted in ``Stats``.
The directory keeps the Rust crate's shape at every instant: one log named
``log``, sstables named as always.

Why every crash state recovers the map of an uninterrupted run:

* Until the rename of step 4, ``log`` is the old log: it holds every
  change, and sstable N (once its rename is durable) holds the changes of
  ``log[0:M]``, which were fsynced before N was written, so no crash can
  leave N beside a log shorter than M (whose replay over N would undo
  N's later changes).  Recovery reads the sstables in id order, then replays the
  whole log.  Replaying ``log[0:M]`` over a map that already holds its
  result gives that map again, because a replay sets each key it touches
  to its last value in log order (or removes it), whatever the key held
  before; ``log[M:]`` then comes on top, as it would have.  Merges that fold
  N into older tables (dropping tombstones) keep this: the tables together
  still give the map as of ``log[0:M]``.
* N is durable (renamed, directory fsynced) before step 3 starts, so by the
  time the copy can become ``log``, the new log needs only ``log[M:]``.
* The copy is fsynced before the rename, and nothing is written to any
  file between the old log's end being frozen and the directory fsync
  (appends are held in memory, and a flush waits), so whichever entry a
  power cut leaves, ``log`` holds every byte a ``flush()`` has
  acknowledged: the old file had them fsynced, and so has the copy.
* A flush acknowledged before step 4 fsynced the old file, and its bytes
  are in the copy; a flush waiting across the switch returns once the
  switch is done (``LogWriter.switch``), which is after the directory
  fsync; a flush called during step 4 waits for its end, then writes the
  held appends to the new file and fsyncs it.
* A copy left by a crash before its rename is provably redundant only if
  it equals ``log[M:M+len]`` byte for byte: recovery then deletes it;
  otherwise (a power cut can leave the copy holding bytes the old log lost,
  bytes no flush acknowledged) it is set aside as a kept file, never
  destroyed (``settle_copies``).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, ContextManager, List, Optional, Tuple

from . import _kept, sstable
from ._backend import codec
from ._compactor import RETRY_DELAYS, Compactor
from ._format import LOG_COPY_NAME, LOG_NAME, STOP_END, log_copy_name, sstable_tmp_name
from ._fs import Files
from ._gate import OPENING_TIMEOUT, Gate
from ._log import LogWriter
from ._logread import LogReader
from ._worker import Stopped, Worker
from .config import Config
from .errors import CorruptionError, describe

log = logging.getLogger("tinylsm")

#: Step 3 stops copying when this little is left for step 4 (under the lock),
#: or after this many rounds (writers faster than the disk).
CATCH_UP_BYTES = 256 * 1024
CATCH_UP_ROUNDS = 4
#: Bytes copied per read and write in steps 3 and 4, and compared per read
#: by ``settle_copies``.
COPY_CHUNK = 4 << 20
#: Bytes the buffer may hold while step 4 holds appends in it; an append
#: past that waits for the switch (a write stall).
HOLD_BYTES = 8 << 20
#: Held bytes written out per lock holding once the switch is done.
DRAIN_BYTES = 256 * 1024
#: Log bytes read, checked and sorted into one run at a time by step 2:
#: larger than recovery's chunks, since each chunk costs this thread a GIL
#: hand-off from a busy writer (up to ``sys.getswitchinterval()``).
TABLE_CHUNK = 4 << 20


class _Job:
    """One rollover: the log's first ``start`` bytes become sstable ``sst_id``."""

    __slots__ = ("start", "epoch", "sst_id", "drop_tombstones", "table_done", "copy_path",
                 "copy_fd", "copied")

    def __init__(self, start: int, epoch: int, sst_id: int, drop_tombstones: bool) -> None:
        self.start = start
        self.epoch = epoch
        self.sst_id = sst_id
        self.drop_tombstones = drop_tombstones
        self.table_done = False
        self.copy_path = ""
        self.copy_fd = -1
        self.copied = 0  # bytes of log[start:] in the copy


class Rollover(Worker):
    """Runs rollovers on its thread (or in the caller's, when not started).

    ``exclusive()`` is the store's lock as a context (``_Exclusive``): step 1
    and step 4 run in it; ``lock`` is that same lock, on which writers wait
    out a stall.
    """

    name = "tinylsm-rollover"

    def __init__(self, files: Files, path: str, ssdir: str, key_size: int, value_size: int,
                 config: Config, log_writer: LogWriter, compactor: Compactor,
                 next_id: int, lock: "threading.RLock",
                 exclusive: Callable[[], ContextManager[None]]) -> None:
        super().__init__()
        self.files = files
        self.path = path
        self.ssdir = ssdir
        self.key_size = key_size
        self.value_size = value_size
        self.config = config
        self.log = log_writer
        self.compactor = compactor
        self.next_id = next_id
        self.exclusive = exclusive
        self.gate = Gate(ssdir)
        self.read_bytes = 0
        self.written_bytes = 0
        self.rollovers = 0
        self.stalls = 0
        self.stall_seconds = 0.0
        self.error: Optional[BaseException] = None
        self._job: Optional[_Job] = None  # kept across a failure once its table is written
        self._job_lock = threading.Lock()  # one rollover at a time
        self._due = False  # asked for, not yet done
        self._switched = threading.Condition(lock)  # stalled writers wait here

    # -- called by the store, its lock held ----------------------------------

    @property
    def limit(self) -> int:
        """The log length at which the next write must come to the slow path:
        the rollover trigger, or once one is due, the stall point."""
        limit = self.config.max_log_length
        return 2 * limit if self._due and self.running else limit

    def fast_cap(self, log_writer: LogWriter) -> int:
        """How far the buffer may grow before a write takes the slow path."""
        if log_writer.held:
            return HOLD_BYTES
        return min(log_writer.bufsize, self.limit - log_writer.size)

    def before_write(self, appending: bool) -> None:
        """(Store lock held, released while waiting) Before a write to the
        log: ask for a rollover if the log is past the limit.  An append
        waits while writers outrun the thread, or while step 4 holds
        appends and the buffer is full (a write stall); a flush never waits
        for a rollover, but waits for step 4's end, since it needs its
        bytes written out."""
        log_writer = self.log
        self.note_length(log_writer.length, stall=appending)
        if log_writer.held and (not appending or len(log_writer.buf) >= HOLD_BYTES):
            self._wait_while(lambda: log_writer.held, appending)

    def note_length(self, length: int, stall: bool) -> None:
        """The log is ``length`` bytes long: ask for a rollover if it is over
        the limit; with ``stall``, wait (releasing the lock) while writers
        outrun the thread."""
        if length <= self.config.max_log_length:
            return
        if not self.running:
            # no thread (the tests' deterministic runs): roll now, in this
            # one, unless a rollover is under way (then it is ours, below)
            self._due = True
            if self._job_lock.acquire(blocking=False):
                try:
                    self._roll(False)
                finally:
                    self._job_lock.release()
            return
        if not self._due:
            self._due = True
            self.wake()
        if stall and length >= 2 * self.config.max_log_length and self.error is None:
            # until the rollover under way ends, not merely begins (its
            # first step clears ``_due``)
            self._wait_while(lambda: ((self._due or self._job_lock.locked()) and self.running
                                      and self.error is None
                                      and self.log.length >= 2 * self.config.max_log_length),
                             True)

    def ask(self, length: int) -> None:
        """Like ``note_length`` but never waits nor fails (a change is
        taken already): the thread starts a rollover if one is due; without
        a thread, the next write does."""
        if length > self.config.max_log_length and self.running and not self._due:
            self._due = True
            self.wake()

    def _wait_while(self, blocked: Callable[[], bool], stall: bool) -> None:
        """(Store lock held, released while waiting) Wait on a rollover
        until ``blocked()`` is false; with ``stall``, count it in ``Stats``.
        Re-checked every 0.1 s, and at the end of each rollover."""
        start = time.monotonic()
        if stall:
            self.stalls += 1
        with self._switched:
            while blocked():
                self._switched.wait(0.1)
        if stall:
            self.stall_seconds += time.monotonic() - start

    def roll_now(self) -> None:
        """Turn the whole log into an sstable, in the caller's thread, and
        return once it is done (``compact()``).  No store lock held."""
        while self.roll(everything=True):
            pass  # that finished an earlier rollover's steps: now the rest

    # -- the thread ------------------------------------------------------------

    def _idle(self) -> ContextManager[object]:
        return self._job_lock

    def _loop(self) -> None:
        failures = 0
        while self._wait_for_work():
            try:
                self.roll()
            except Stopped:
                continue
            except Exception as exc:  # the log still holds everything; retried
                self.error = exc
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.error("tinylsm: turning the log of %s into an sstable failed "
                          "(retry in %.1fs): %s", self.path, delay, describe(exc))
                self._wake_stalled()
                self._pause(delay)
                continue
            failures = 0
            self.error = None

    # -- one rollover ----------------------------------------------------------

    def roll(self, everything: bool = False) -> bool:
        """Steps 1 to 4 (see the module's docstring), if a rollover is due
        (or ``everything``: the whole log, now)."""
        with self._job_lock:
            return self._roll(everything)

    def _roll(self, everything: bool) -> bool:
        """``roll`` with ``_job_lock`` held; True if it finished the steps of
        an earlier, failed rollover instead of a new one."""
        job = self._begin(everything)
        if job is None:
            return False
        resumed = job.table_done
        try:
            if not job.table_done:
                self._write_table(job)
            self._catch_up(job)
            self._switch(job)
        except BaseException:
            self._discard_copy(job)
            raise
        finally:
            self._wake_stalled()
        return resumed

    def _begin(self, everything: bool) -> Optional[_Job]:
        """Step 1, under the store lock."""
        with self.exclusive():
            self._safe_point()
            log_writer = self.log
            if not everything and log_writer.length <= self.config.max_log_length:
                self._due = False
                return None
            log_writer.check()
            log_writer.write_out()
            self._due = False
            if self._job is not None:  # its table is written; redo steps 3 and 4
                return self._job
            if log_writer.size == 0:
                return None
            # with no older table, no tombstone has anything to hide
            job = _Job(log_writer.size, log_writer.epoch, self.next_id,
                       not self.compactor.tables)
            self.next_id += 1
            return job

    def _write_table(self, job: _Job) -> None:
        """Step 2, no lock held: ``log[0:start]`` becomes sstable ``sst_id``."""
        k, v = self.key_size, self.value_size
        log_writer = self.log
        # The table must never be durable while the log could lose some of
        # the changes it holds: a power cut would then leave a shorter log,
        # whose replay over the table would undo its later changes.
        log_writer.make_durable(job.epoch, job.start)
        # The descriptor is stable until this job's own switch, and the bytes
        # before ``start`` never change.  Each chunk is sorted into a run as
        # it comes, and the runs merged once (the newest run wins a key):
        # memory stays about twice the table's records, never the log's
        # bytes plus three copies of its records.
        reader = LogReader(self.files, log_writer.fd, k, v, 0, job.start, TABLE_CHUNK)
        runs = []
        for chunk in reader:
            self._safe_point()
            runs.append(codec.sort_records(chunk, k, v))
        scan = reader.scan
        assert scan is not None  # the loop ran to its end
        self.read_bytes += job.start
        if scan.end != job.start or scan.stop != STOP_END:
            raise CorruptionError(
                f"log {log_writer.path}: re-reading it to write an sstable, "
                f"{scan.stop} at offset {scan.stop_offset} of {job.start}")
        self._safe_point()
        # with no older table, no tombstone has anything to hide
        records = codec.merge_runs(runs, k, v, job.drop_tombstones)
        del runs
        self._safe_point()
        try:
            nbytes = sstable.write(self.files, self.ssdir, job.sst_id, records, k, v,
                                   self.config.zstd_sstable_compression_level)
        except BaseException:
            discard(self.files, os.path.join(self.ssdir, sstable_tmp_name(job.sst_id)))
            raise
        self.written_bytes += nbytes
        self.compactor.add(job.sst_id, len(records) // codec.record_size(k, v), nbytes)
        job.table_done = True
        self._job = job  # from here on a retry reuses the table

    def _catch_up(self, job: _Job) -> None:
        """Step 3, no lock held: copy ``log[start:]`` and fsync the copy, in
        rounds, until little is left for step 4 to copy and fsync."""
        job.copy_path = os.path.join(self.path, log_copy_name(job.start))
        job.copy_fd = self.files.create(job.copy_path)
        job.copied = 0
        for _ in range(CATCH_UP_ROUNDS):
            if self.log.size - job.start - job.copied <= CATCH_UP_BYTES:
                break
            self._safe_point()
            self._copy(job, self.log.size)
            # each round's fsync is one fewer for step 4, which holds the
            # writers (also the old log's: its dirty pages would otherwise
            # ride along with step 4's journal commit)
            self.files.fsync(job.copy_fd)
            self.log.make_durable(job.epoch, self.log.size)

    def _copy(self, job: _Job, end: int) -> None:
        """Copy ``log[start + copied:end]`` to the copy."""
        n = copy_log(self.files, self.log.fd, self.log.path, job.copy_fd,
                     job.start + job.copied, end, job.copied)
        job.copied += n
        self.read_bytes += n
        self.written_bytes += n

    def _switch(self, job: _Job) -> None:
        """Step 4.  The store lock is held only to freeze the old log's end
        (``_hold``) and to move the writer to the copy; the last copy, its
        fsync, the rename and the directory fsync run without it, while
        writers append to the buffer, which is not written out meanwhile
        (``LogWriter.hold``)."""
        files = self.files
        exclusive = self.exclusive()  # holds the store: no collection mid-switch
        # The rename retires the old log, which readers opening beside us
        # may be about to open (``_gate``): wait for them now, while writers
        # still append, rather than once they are held.
        gate = self.gate.exclusive(self._safe_point, what="a log rollover")
        renamed = False
        try:
            end = self._hold(job, exclusive)
            self._copy(job, end)
            files.fsync(job.copy_fd)
            files.rename(job.copy_path, self.log.path)
            renamed = True
            gate.release()
            files.fsync_dir(self.path)
        except BaseException as exc:
            gate.release()
            if not self.log.held:  # given up before the hold: nothing to undo
                raise
            with exclusive:
                self.log.held = False
                if renamed:
                    # ``log`` is the copy now, but its entry may not survive
                    # a power cut: nothing written to it can be acknowledged
                    self.log.broken = exc
                    self._move(job, durable=False)
                    # the appends held meanwhile were taken (the map holds
                    # them): they follow the name, as after a switch
                    try:
                        self.log.salvage()
                    except OSError as write_exc:
                        log.error("tinylsm: log %s: could not write the changes taken "
                                  "during a failed switch: %s", self.log.path,
                                  describe(write_exc))
            self.log.close_retired()
            raise
        with exclusive:
            self._move(job)
            self.rollovers += 1
        self.log.close_retired()
        # The appends held meanwhile go to the new log a piece at a time,
        # each under the lock: written out at once by the next writer, a few
        # MiB into fresh page cache could hold it for tens of milliseconds.
        try:
            while True:
                with exclusive:
                    if self.log.drain(DRAIN_BYTES):
                        self.log.release()
                        break
        except BaseException:
            with exclusive:
                self.log.held = False
            raise

    def _hold(self, job: _Job, exclusive: ContextManager[None]) -> int:
        """Step 4's start, under the store lock: write the buffer out, and
        hold further appends in it; return the old log's end."""
        with exclusive:
            self._safe_point()  # the last one: from here on the switch finishes
            log_writer = self.log
            log_writer.check()
            log_writer.write_out()
            log_writer.hold()
            return log_writer.size

    def _move(self, job: _Job, durable: bool = True) -> None:
        """(Store lock held) The writer follows the name to the copy, with
        the appends held meanwhile still in its buffer."""
        fd, job.copy_fd = job.copy_fd, -1
        self._job = None
        self.log.switch(fd, job.copied, durable)

    def _discard_copy(self, job: _Job) -> None:
        if job.copy_fd >= 0:
            fd, job.copy_fd = job.copy_fd, -1
            self.files.close(fd)
            # a copy of bytes the log still holds: redundant (and if this
            # fails, recovery checks it against the log before removing it)
            discard(self.files, job.copy_path)

    def _wake_stalled(self) -> None:
        with self._switched:
            self._switched.notify_all()


def discard(files: Files, path: str) -> None:
    """Remove a file known to be redundant; if that fails, recovery will."""
    try:
        files.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("tinylsm: could not remove %s (recovery will): %r", path, exc)


def copy_log(files: Files, src: int, src_path: str, dst: int, start: int, end: int,
             dst_offset: int) -> int:
    """Copy ``src[start:end]`` to ``dst`` at ``dst_offset``; return the
    bytes copied (all of them, or raise)."""
    done = 0
    while start + done < end:
        n = files.copy_range(src, dst, min(COPY_CHUNK, end - start - done), start + done,
                             dst_offset + done)
        if n == 0:
            raise CorruptionError(f"log {src_path}: ends at {start + done}, "
                                  f"before the {end} bytes written")
        done += n
    return done


def replace_log(files: Files, path: str, log_fd: int, end: int, gate: Gate) -> int:
    """Cut the log to ``end`` bytes at recovery, the way a rollover replaces
    it, never in place (a reader opening beside the writer may be reading
    it, see ``_gate``): copy ``log[0:end]`` to a copy, fsync it, rename it
    over ``log`` under the gate, fsync the directory.  Returns the copy's
    descriptor and closes ``log_fd``; if this raises, ``log_fd`` is still
    the caller's.  A crash before the rename leaves a copy equal to the
    log's first bytes, which the next recovery deletes (``settle_copies``);
    after it, ``log`` is the cut log (or, until the directory fsync, the
    old one, cut again by the next recovery)."""
    log_path = os.path.join(path, LOG_NAME)
    copy_path = os.path.join(path, log_copy_name(0))
    fd = files.create(copy_path)
    renamed = False
    try:
        copy_log(files, log_fd, log_path, fd, 0, end, 0)
        files.fsync(fd)
        with gate.exclusive(timeout=OPENING_TIMEOUT, what="recovery"):
            files.rename(copy_path, log_path)
            renamed = True
        files.fsync_dir(path)
    except BaseException:
        files.close(fd)
        if not renamed:
            discard(files, copy_path)
        raise
    files.close(log_fd)
    return fd


def settle_copies(files: Files, path: str, log_fd: int, log_size: int) -> List[Tuple[str, str]]:
    """Deal with rollover copies a crash left before their rename (lock held,
    before the log is cut): a copy equal to the log's bytes from its offset
    is deleted; any other is set aside as a kept file.  Returns ``(name,
    what became of it)`` for each."""
    done = []
    for name in sorted(files.listdir(path)):
        match = LOG_COPY_NAME.match(name)
        if match is None:
            continue
        copy = os.path.join(path, name)
        start = int(match.group(1))
        if _is_copy_of(files, copy, log_fd, log_size, start):
            files.unlink(copy)
            done.append((name, "deleted (a copy of bytes the log holds)"))
        else:
            kept = _kept.set_aside_file(files, path, copy, start)
            done.append((name, f"kept as {os.path.basename(kept)} (it differs from the log)"))
    if done:
        files.fsync_dir(path)
    return done


def _is_copy_of(files: Files, copy: str, log_fd: int, log_size: int, start: int) -> bool:
    fd = files.open_ro(copy)
    try:
        size = files.size(fd)
        if start + size > log_size:
            return False
        offset = 0
        while offset < size:
            n = min(COPY_CHUNK, size - offset)
            if files.pread_all(fd, n, offset) != files.pread_all(log_fd, n, start + offset):
                return False
            offset += n
        return True
    finally:
        files.close(fd)
