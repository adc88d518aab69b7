"""The write-ahead log file behind its in-memory buffer."""
from __future__ import annotations

import logging
import threading
import time
from typing import Iterable, List, Optional, Tuple, Union

from ._fs import Files
from .errors import LogFailedError, describe

log = logging.getLogger("tinylsm")

#: Roles in a group-commit flush (see ``LogWriter.begin_sync``).
LEAD, FOLLOW, GATHER = 0, 1, 2
#: The longest a would-be leader waits for other flushers.
MAX_GATHER_SECONDS = 0.002


#: Zeros written ahead of the log's end once it is being fsynced, so that
#: most fsyncs change no file size and need no journal commit (``_write``).
PREALLOCATE = 256 * 1024


class LogWriter:
    """Appends frames to the log through a buffer of ``bufsize`` bytes.

    ``size`` is the length of the log, every byte of it valid frames.  Data
    is written with ``pwrite`` at ``size``, so a failed write can be cut off
    again (``truncate``) and leaves nothing half-written for later appends to
    follow.  Once the log has been fsynced, the file also holds zeros after
    ``size``, up to ``allocated``: overwriting bytes the file already has
    and syncing them (``fdatasync``) skips the file-system journal commit
    that growing the file costs, which is most of a durable write's time.
    Recovery reads zeros as the end of the log and writes over them; the
    Rust crate cuts them off; ``close()`` cuts them off too.

    After an error the log cannot vouch for (a failed fsync, or a
    failed cut after a failed write) the writer is *broken* and refuses
    further writes: after a failed fsync Linux may have dropped the dirty
    pages and report a later fsync as successful, so retrying would lie.
    """

    def __init__(self, files: Files, path: str, fd: int, size: int, bufsize: int,
                 allocated: int = 0) -> None:
        self.files = files
        self.path = path
        self.fd = fd
        self.size = size
        #: The file's length: ``size``, then zeros (see the class docstring).
        self.allocated = max(size, allocated)
        #: Zeros are written ahead only once someone fsyncs (bulk loads
        #: that never flush would write them for nothing).
        self._preallocating = False
        self.bufsize = bufsize
        self.buf = bytearray()
        self.broken: Optional[BaseException] = None
        #: A rollover is switching files: appends stay in the buffer.
        self.held = False
        #: Bytes handed to the OS since opening.
        self.written = 0
        #: Bumped each time a rollover switches to a new file (``switch``).
        self.epoch = 0
        #: Bytes of the current epoch known to be fsynced.
        self.synced = 0
        # _mutex guards epoch, synced and the group-commit state; the fsync
        # itself runs outside it.  Waiters are counted so that the common
        # case, one flusher, never pays for a notify.
        self._mutex = threading.Lock()
        self._sync_cv = threading.Condition(self._mutex)
        self._syncing = False  # a leader's fsync is under way
        self._waiters = 0
        self._gather_cv = threading.Condition(self._mutex)
        self._gathering = False  # a would-be leader waits for followers
        self._arrived = 0  # followers that came while it waited
        self._crowd = 1  # threads seen flushing together
        self._fsync_time = 0.0  # the last fsync's duration, capped
        # the descriptor the fsync under way works on, and the ones a
        # rollover's switch replaced (closed by close_retired, once no fsync
        # works on them, or by close)
        self._sync_fd = fd
        self._retired: List[int] = []

    @property
    def length(self) -> int:
        """Bytes of the log, written or still buffered."""
        return self.size + len(self.buf)

    def check(self) -> None:
        if self.broken is not None:
            raise LogFailedError(
                f"log {self.path} refuses writes after an earlier failure "
                f"({self.broken!r}); close the store and open it again"
            )

    def append(self, data: bytes) -> None:
        """Take ``data`` (whole frames) into the log, or raise having taken none.

        Only the buffer's existing content may reach the file here; if
        writing it fails the new data is not taken and the caller must not
        apply the change.
        """
        if self.broken is not None:
            self.check()
        if len(self.buf) + len(data) <= self.bufsize or self.held:
            self.buf += data
            return
        self.write_out()
        if len(data) <= self.bufsize:
            self.buf += data
        else:
            self._write(data)

    def hold(self) -> None:
        """(Store lock held, buffer written out) Keep appends in the buffer
        until ``switch`` or ``release``: a rollover is moving the log."""
        if self.buf:
            raise AssertionError("hold with buffered data")
        self.held = True

    def release(self) -> None:
        """(Store lock held) End a hold: the held appends go to the log."""
        self.held = False
        self.write_out()

    def salvage(self) -> None:
        """(Store lock held, log broken by a failed switch) Hand the buffer to
        the OS anyway: its changes were taken before the failure (the map
        holds them), so a process crash must not lose them, and writing them
        promises nothing, since no flush succeeds on a broken log."""
        if self.buf and self.fd >= 0:
            data = bytes(self.buf)
            self.files.pwrite(self.fd, data, self.size)
            del self.buf[:]
            self.size += len(data)
            self.written += len(data)
            self.allocated = max(self.allocated, self.size)

    def drain(self, limit: int) -> bool:
        """(Store lock held) Write out at most ``limit`` bytes from the front
        of the buffer, held or not; True once it holds no more than a
        buffer's worth (``release`` may then end the hold)."""
        n = min(limit, len(self.buf) - self.bufsize)
        if n > 0:
            self._write(bytes(self.buf[:n]))
            del self.buf[:n]
        return len(self.buf) <= self.bufsize

    def write_out(self) -> None:
        """Hand the buffer to the OS (no fsync); nothing while held (the
        caller waits for the hold to end if it needs the bytes out)."""
        if self.held:
            return
        if self.buf:
            self._write(self.buf)
            # emptied in place: the store's compiled fast path appends to
            # this very object
            del self.buf[:]

    def append_pieces(self, pieces: Iterable[bytes]) -> None:
        """Take the frames ``pieces`` make together as one append (a batch
        encoded a piece at a time): each is written to the file as it
        comes, after the buffer, so the whole never sits in memory; or
        raise having taken none (the file cut back), also when ``pieces``
        itself raises.  While a rollover holds appends they go to the
        buffer, as any append does then."""
        if self.broken is not None:
            self.check()
        if self.held:
            for piece in pieces:
                self.buf += piece
            return
        self.write_out()
        self._write(pieces)

    def _write(self, data: Union[bytes, bytearray, Iterable[bytes]]) -> None:
        """Write ``data`` (or each piece of it, in order) at the log's end,
        or raise having cut the file back to it."""
        self.check()
        end = self.size
        try:
            for piece in (data,) if isinstance(data, (bytes, bytearray)) else data:
                self.files.pwrite(self.fd, piece, end)
                end += len(piece)
        except BaseException as exc:
            try:
                self.files.truncate(self.fd, self.size)
                self.allocated = self.size
            except BaseException as cut_exc:
                self.broken = cut_exc
            raise exc
        self.written += end - self.size
        self.size = end
        if self.size > self.allocated:
            self.allocated = self.size
            if self._preallocating:
                self._preallocate()

    def _preallocate(self) -> None:
        """Write ``PREALLOCATE`` zeros after the log's end.  They become
        durable with the next fsync (which pays the journal commit once for
        the next ``PREALLOCATE`` bytes of log).  If the disk has no room for
        them, the zeros written are cut off again and the log goes on
        without (the frames are written already: nothing is lost)."""
        try:
            self.files.pwrite(self.fd, bytes(PREALLOCATE), self.size)
        except OSError as exc:
            log.warning("tinylsm: log %s: no longer writing zeros ahead of the log "
                        "(%s)", self.path, describe(exc))
            self._preallocating = False
            try:
                self.files.truncate(self.fd, self.size)
            except OSError as cut_exc:  # zeros left: read as the log's end
                log.warning("tinylsm: log %s: could not cut the zeros after offset "
                            "%d: %s", self.path, self.size, describe(cut_exc))
        else:
            self.allocated = self.size + PREALLOCATE

    def sync(self) -> None:
        """Write out the buffer and fsync the log (store lock held)."""
        self.write_out()
        self.make_durable(self.epoch, self.size)

    def make_durable(self, epoch: int, target: int) -> None:
        """Fsync the log unless its first ``target`` bytes of ``epoch`` are
        durable already (no store lock needed: nothing is written out)."""
        with self._mutex:
            # Waits for a leader's fsync, never for a gatherer (unlike
            # wait_synced): a gatherer needs the store lock sync()'s caller holds.
            while True:
                if self.epoch != epoch or self.synced >= target:
                    return
                self.check()
                if not self._syncing:
                    break
                self._wait()
            self._start_syncing()
        self.end_sync(epoch, target)

    # Group commit.  Threads that flush at the same time share one pwrite
    # and one fsync: the *leader* writes the whole buffer out (its changes
    # and those of every thread that flushed since the last write-out) and
    # fsyncs it outside the store lock; *followers* write nothing and wait
    # for an fsync that covers their bytes, or lead the next one.  Waiting
    # threads make no system calls, so the GIL is not handed around.
    #
    # With one flusher at a time the leader fsyncs at once.  Once several
    # threads flush together (``_crowd``, learnt from how many waited for
    # the last fsync), a would-be leader first *gathers*: it waits, for at
    # most one fsync's time, until the others have come back with their
    # next changes.  Without that the threads split into two groups that
    # alternate, each fsync serving only half of them.

    def begin_sync(self, gathered: bool = False) -> Optional[Tuple[int, int, int]]:
        """Start a flush (store lock held): None when every byte taken so
        far is durable already, else ``(epoch, target, role)`` with role
        LEAD (call ``end_sync(epoch, target)``), FOLLOW (call
        ``wait_synced(epoch, target)``) or GATHER (call ``gather()``, then
        ``begin_sync(gathered=True)`` again; if that cannot happen, call
        ``abandon_gather()``)."""
        epoch, target = self.epoch, self.length
        with self._mutex:
            if gathered:
                self._gathering = False
            if self.synced >= target:
                if gathered:
                    self._drop_gather()  # nobody leads after all
                return None
            if self.broken is not None:
                if gathered:
                    self._drop_gather()
                self.check()
            if self._syncing or self._gathering:
                if self._gathering:
                    self._arrived += 1
                    if self._arrived + 1 >= self._crowd:
                        self._gather_cv.notify()
                return epoch, target, FOLLOW
            if not gathered and self._crowd > 1:
                self._gathering = True
                self._arrived = 0
                return epoch, target, GATHER
            self._start_syncing()
        try:
            self.write_out()
        except BaseException:
            with self._mutex:
                self._done_syncing()
            raise
        return epoch, self.size, LEAD

    def gather(self) -> None:
        """Wait (no lock held) until the other flushers are waiting on the
        next fsync, or one fsync's time has passed."""
        with self._mutex:
            deadline = time.monotonic() + self._fsync_time
            try:
                while self._arrived + 1 < self._crowd:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._gather_cv.wait(left)
            except BaseException:  # interrupted: the followers must not wait on us
                self._drop_gather()
                raise
            self._crowd = self._arrived + 1  # fewer came: expect fewer

    def abandon_gather(self) -> None:
        """The gathering thread will not lead after all (it raised)."""
        with self._mutex:
            if self._gathering:
                self._drop_gather()

    def _drop_gather(self) -> None:
        """(``_mutex`` held) End a gathering that leads to no fsync: its
        followers wake and re-check."""
        self._gathering = False
        if self._waiters:
            self._sync_cv.notify_all()

    def end_sync(self, epoch: int, covered: int) -> None:
        """The leader's fsync (store lock *not* held), covering ``covered``
        bytes of ``epoch``: every byte written before it started."""
        start = time.monotonic()
        try:
            self.files.fsync(self._sync_fd)
        except BaseException as exc:
            with self._mutex:
                self.broken = exc
                self._done_syncing()
            raise
        self._preallocating = True
        with self._mutex:
            self._fsync_time = min(time.monotonic() - start, MAX_GATHER_SECONDS)
            if self.epoch == epoch:
                self.synced = max(self.synced, covered)
            if self._waiters + 1 > self._crowd:
                self._crowd = self._waiters + 1
            self._done_syncing()

    def wait_synced(self, epoch: int, target: int) -> bool:
        """A follower's wait (store lock not held): True once ``target``
        bytes of ``epoch`` are durable, False when the caller must lead the
        next fsync; raises if the log broke."""
        with self._mutex:
            while True:
                if self.epoch == epoch and self.synced >= target:
                    return True
                # a broken log is reported even once closed (its close did
                # not make the bytes durable), or switched (a failed switch
                # breaks it first)
                self.check()
                if self.epoch != epoch:  # a rollover's switch made them durable
                    return True
                if self.fd < 0:  # closed: close() synced what was taken
                    return True
                if not (self._syncing or self._gathering):
                    return False
                self._wait()

    def _wait(self) -> None:
        """Wait (holding ``_mutex``) for the fsync under way to end."""
        self._waiters += 1
        try:
            self._sync_cv.wait()
        finally:
            self._waiters -= 1

    def _start_syncing(self) -> None:
        """(``_mutex`` held) This thread fsyncs next, on today's descriptor."""
        self._syncing = True
        self._sync_fd = self.fd

    def _done_syncing(self) -> None:
        self._syncing = False
        if self._waiters:
            self._sync_cv.notify_all()

    def _close_retired(self) -> None:
        while self._retired:
            self.files.close(self._retired.pop())

    def close_retired(self) -> None:
        """(No store lock held) Close the descriptors ``switch`` replaced,
        once no fsync works on them."""
        with self._mutex:
            self._idle()
            retired, self._retired = self._retired, []
        for fd in retired:
            self.files.close(fd)

    def _idle(self) -> None:
        """Wait (holding ``_mutex``) until no fsync is under way."""
        while self._syncing:
            self._wait()

    def switch(self, fd: int, size: int, durable: bool = True) -> None:
        """Write to ``fd`` from now on: a rollover renamed it over the log,
        holding the log's last ``size`` bytes, fsynced along with the rename.

        Called with the store lock held; the buffer holds what was appended
        since ``hold`` (it goes to ``fd`` next, and stays held until
        ``release``).  Every byte written out
        before is durable now, so every flush waiting on the old descriptor
        may return; the old descriptor is closed once no fsync works on it.
        Not ``durable`` (the rename's directory fsync failed, and the log is
        broken): nothing counts as durable, and waiting flushes raise.
        """
        with self._mutex:
            old, self.fd = self.fd, fd
            self.size = self.allocated = size
            self.epoch += 1
            self.synced = size if durable else 0
            # closed by close_retired, outside the store lock: closing the
            # last descriptor of a big unlinked file frees it, tens of ms
            self._retired.append(old)
            if self._waiters:
                self._sync_cv.notify_all()

    def close(self) -> None:
        """Close the log, cutting off the zeros after it (nothing any reader
        takes for a change: cutting them in place is harmless), so that a
        closed store's log is its frames alone."""
        with self._mutex:
            self._idle()  # not while another thread fsyncs it
            fd, self.fd = self.fd, -1
            self._close_retired()
            if fd >= 0:  # -1: a read-only store opened without a log file
                try:
                    if self.allocated > self.size and self.broken is None:
                        self.files.truncate(fd, self.size)
                except OSError as exc:  # the zeros stay: read as the log's end
                    log.warning("tinylsm: log %s: could not cut the zeros after "
                                "offset %d at closing: %s", self.path, self.size,
                                describe(exc))
                finally:
                    self.files.close(fd)
