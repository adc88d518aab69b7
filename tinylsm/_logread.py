"""Reading a log in bounded chunks: the log reader of recovery and of
``tinylsm verify``, and of anything else that reads changes back from a log.

``LogReader`` gives the same verdict as ``codec.scan_log`` over the whole
range, and the same records, but holds only a few chunks of the log in
memory at a time, however long the log and however large its batches.
"""
from __future__ import annotations

import struct
import zlib
from typing import Iterator, List, Optional, Tuple

from ._backend import codec
from ._format import BATCH_TAG, STOP_END, STOP_SHORT, LogScan, batch_count
from ._fs import Files
from .errors import CorruptionError

#: Bytes read from a file at a time (a log read is rounded down to whole
#: frames, at least one).  Recovery holds a few chunks at once (and zstd its
#: window, 2 MiB for tinylsm's tables), so this bounds its memory beyond the
#: map: at 512 KiB a reopen of 1,000,000 keys at 8/8 peaks about 10% above
#: the open store, and larger chunks gain no measurable speed.  Tests make
#: it tiny, so that frames, batch headers, batches and zstd blocks straddle
#: chunk boundaries.
CHUNK_SIZE = 1 << 19

_U32 = struct.Struct("<I")


def chunk(given: Optional[int] = None) -> int:
    """``given``, or ``CHUNK_SIZE`` as it is now (tests patch it)."""
    size = CHUNK_SIZE if given is None else given
    if size < 1:
        raise ValueError(f"chunk size: expected at least 1, got {size}")
    return size


def _batch_header(count: int, key_size: int, value_size: int) -> bytes:
    """A well-formed batch header frame announcing ``count`` frames."""
    fsize = codec.frame_size(key_size, value_size)
    return (_U32.pack(codec.batch_crc(count)) + bytes((BATCH_TAG,))
            + count.to_bytes(8, "little") + bytes(fsize - 13))


class LogReader:
    """The validated changes of log bytes ``[start, end)``, chunk by chunk.

    Contract:

    * ``start`` must be a frame boundary outside any batch (0, or the end of
      an earlier scan); ``end`` defaults to the file's size.  Bytes are read
      with ``files.pread_all`` at most ``chunk_size`` (default
      ``CHUNK_SIZE``) at a time, rounded down to whole frames but at least
      one frame; nothing is written.  A file shorter than ``end`` ends where
      it ends.
    * Iterating yields ``bytes`` of packed records (5 + K + V each, as
      ``codec.scan_log`` packs them), in log order.  Every record yielded
      has passed every check of a log scan and is one recovery applies: a
      frame outside any batch, or a frame of a batch whose header and every
      frame lie in the range, intact.  No record of a batch is yielded
      before the batch's last frame has been read and checked, so applying
      each chunk as it comes never applies a batch that is cut short.  A
      batch that straddles a chunk boundary is not held: its frames before
      the chunk that completes it are read again, as the same pieces, and
      yielded piece by piece, each only once its bytes are the ones checked
      (the same CRC-32 as on the first read); so memory stays a few chunks,
      whatever the batch's size, and such a batch's bytes are read twice.
    * Once iteration ends, ``scan`` is the verdict: a ``LogScan`` equal to
      ``codec.scan_log`` of the range's bytes, with ``records`` empty and
      the offsets (``end``, ``stop_offset``) those of the file.  Stopped
      early, ``scan`` stays None.
    * ``OSError`` from reading propagates (naming the file).  A batch whose
      bytes read differently the second time raises ``CorruptionError``
      (another process changed the log under the reader: tinylsm's lock
      keeps tinylsm out, not the Rust crate); what was yielded before
      must then be discarded.
    """

    def __init__(self, files: Files, fd: int, key_size: int, value_size: int,
                 start: int = 0, end: Optional[int] = None,
                 chunk_size: Optional[int] = None) -> None:
        self.files = files
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.fsize = codec.frame_size(key_size, value_size)
        if start % self.fsize:
            raise ValueError(f"log read from offset {start}: not a frame boundary "
                             f"(frames of {self.fsize} bytes)")
        self.start = start
        self.end = files.size(fd) if end is None else end
        size = chunk(chunk_size)
        self.step = max(self.fsize, size - size % self.fsize)
        self.scan: Optional[LogScan] = None
        self._count = 0
        self._tombstones = 0

    def __iter__(self) -> Iterator[bytes]:
        k, v, fsize, step = self.key_size, self.value_size, self.fsize, self.step
        files, fd, end = self.files, self.fd, self.end
        off = self.start  # the next byte to read: a frame boundary
        done = off  # just past the last change that is complete
        owed = 0  # frames the open batch still owes
        # the open batch's frames read so far: (offset, length, crc32) pieces
        pieces: List[Tuple[int, int, int]] = []
        self.scan = None
        self._count = self._tombstones = 0
        while True:
            want = min(step, end - off)
            data = files.pread_all(fd, want, off) if want > 0 else b""
            last = len(data) < want or off + len(data) >= end
            # Inside a batch, the bytes are scanned behind a header that
            # owes what the open batch owes: the scan then judges them
            # exactly as a scan from the start of the log would.
            shift = fsize if owed else 0
            buf = _batch_header(owed, k, v) + data if owed else data
            base = off - shift  # the file offset of buf[0]
            scan = codec.scan_log(buf, k, v)
            if owed and scan.end:  # the open batch is complete: its start first
                yield from self._again(pieces)
            if scan.count:
                self._count += scan.count
                self._tombstones += scan.tombstones
                yield scan.records
            if scan.end:
                done = base + scan.end
            if last or scan.stop not in (STOP_END, STOP_SHORT):
                self.scan = LogScan(b"", self._count, done, scan.stop,
                                    base + scan.stop_offset, self._tombstones)
                return
            # the chunk ended on a frame boundary; a batch may be open
            if scan.end < len(buf):
                header = buf[scan.end:scan.end + fsize]
                owed = batch_count(header) - ((len(buf) - scan.end) // fsize - 1)
                if shift and scan.end == 0:  # the batch open before goes on
                    pieces.append((off, len(data), zlib.crc32(data)))
                else:  # a batch opened in this chunk: its frames after the header
                    frames = memoryview(buf)[scan.end + fsize:]
                    pieces = ([(base + scan.end + fsize, len(frames), zlib.crc32(frames))]
                              if len(frames) else [])
            else:
                owed, pieces = 0, []
            off += len(data)

    def _again(self, pieces: List[Tuple[int, int, int]]) -> Iterator[bytes]:
        """The records of a batch's frames read before the chunk that
        completed it, read again piece by piece; each piece is yielded only
        if its bytes are those the scan checked."""
        k, v, fsize = self.key_size, self.value_size, self.fsize
        for off, length, crc in pieces:
            data = self.files.pread_all(self.fd, length, off)
            if len(data) != length or zlib.crc32(data) != crc:
                raise CorruptionError(
                    f"log {self.files.name(self.fd)}: bytes {off} to {off + length} read "
                    "differently the second time (the file changed while it was read)")
            # frames of a batch, all checked: with K + V >= 8 they have no
            # padding and already are the records
            self._count += length // fsize
            self._tombstones += data[4::fsize].count(0)
            yield data if fsize == 5 + k + v else codec.frame_records(data, k, v)


def zeros(files: Files, fd: int, start: int, end: int,
          chunk_size: Optional[int] = None) -> bool:
    """True if bytes ``[start, end)`` of ``fd`` are all zero (or none),
    read a chunk at a time."""
    step = chunk(chunk_size)
    for off in range(start, end, step):
        data = files.pread_all(fd, min(step, end - off), off)
        if data.count(0) != len(data):
            return False
        if len(data) < min(step, end - off):
            break
    return True


def nonzero_end(files: Files, fd: int, start: int, end: int,
                chunk_size: Optional[int] = None) -> int:
    """The offset after the last non-zero byte of ``[start, end)`` of
    ``fd`` (``start`` if all are zeros), read a chunk at a time from the
    end."""
    step = chunk(chunk_size)
    stop = end
    while stop > start:
        off = max(start, stop - step)
        data = files.pread_all(fd, stop - off, off)
        stripped = data.rstrip(b"\0")
        if stripped or len(data) < stop - off:
            return off + len(stripped)
        stop = off
    return start
