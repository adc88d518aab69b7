"""SSTable files: names, zstd framing, and crash-safe writing.

An sstable is one zstd stream of an sstable payload (see ``codec``).  The
Rust crate never finishes its zstd frames, so reading always goes through a
streaming decompressor, which returns what the complete blocks hold.  It is
fed a chunk at a time (``TableReader``), so reading a table holds a few
chunks and zstd's window, never the whole file or payload.
"""
from __future__ import annotations

import os
import struct
from typing import Dict, Iterator, List, Optional, Tuple

import zstandard

from . import _logread
from ._backend import codec
from ._format import (
    HEX_NAME,
    SST_COMPLETE,
    SST_SHORT,
    SST_TRAILING,
    SSTABLE_NAME,
    SSTABLE_TMP_SUFFIX,
    SSTableScan,
    sstable_name,
    sstable_tmp_name,
)
from ._fs import Files
from .errors import CorruptionError

_U64 = struct.Struct("<Q")


def list_dir(files: Files, directory: str) -> Tuple[Dict[int, str], List[str]]:
    """Sort the names in ``directory`` into sstables and unfinished writes.

    Returns ``({id: name}, [tmp names])``; other names are ignored, as the
    Rust crate ignores them.  A name the Rust crate would parse as an id but
    could not open (hex, but not 16 lower-case digits) raises
    ``CorruptionError`` naming the file, instead of a bare "not found".
    """
    tables: Dict[int, str] = {}
    tmps: List[str] = []
    for name in sorted(files.listdir(directory)):
        if SSTABLE_NAME.match(name):
            tables[int(name, 16)] = name
        elif HEX_NAME.match(name):
            raise CorruptionError(
                f"sstable name {os.path.join(directory, name)!r} is hex but not "
                f"16 lower-case hex digits: rename it to "
                f"{sstable_name(int(name, 16))!r} if it is an sstable, or move it away"
            )
        elif name.endswith(SSTABLE_TMP_SUFFIX):
            tmps.append(name)
    return tables, tmps


def decompress(data: bytes, path: str) -> bytes:
    """Decompress an sstable file's bytes, finished zstd frames or not."""
    try:
        return zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(data)
    except zstandard.ZstdError as exc:
        raise _damaged(path, exc) from None


def _damaged(path: str, exc: zstandard.ZstdError) -> CorruptionError:
    detail = f"zstd stream is damaged: {exc}"
    return CorruptionError(f"sstable {path}: {detail}", path=path, detail=detail)


def read(files: Files, path: str, key_size: int, value_size: int) -> Tuple[SSTableScan, int]:
    """Read and check sstable ``path``; return its scan and the file's size.

    The verdicts of ``TableReader``, with every record in the scan.
    """
    # a big chunk: few calls into zstd, each of which takes the GIL back
    # from a busy writer (see WRITE_CHUNK)
    reader = TableReader(files, path, key_size, value_size, WRITE_CHUNK)
    records = b"".join(reader)
    assert reader.scan is not None
    return reader.scan._replace(records=records), reader.nbytes


#: The zstd frame header is at most this long (ZSTD_FRAMEHEADERSIZE_MAX).
_FRAME_HEADER_MAX = 18


def records_hint(files: Files, fd: int, key_size: int, value_size: int) -> int:
    """How many records the sstable open as ``fd`` holds, from its zstd frame
    header (tinylsm writes the payload's size there); 0 when the header
    does not say (the Rust crate's streaming frames) or is damaged, which
    reading the table reports."""
    try:
        size = zstandard.frame_content_size(files.pread_all(fd, _FRAME_HEADER_MAX, 0))
    except zstandard.ZstdError:
        return 0
    # a damaged header must not make room for billions of keys: no record
    # compresses below one byte of the file
    return max(0, min((size - 8) // codec.record_size(key_size, value_size), files.size(fd)))


class TableReader:
    """The checked records of sstable ``path``, chunk by chunk.

    Iterating yields packed records (bytes-like, 5 + K + V each) in file
    order; every record yielded has passed every check of
    ``codec.decode_sstable`` (tag, checksum, tombstone value, key order,
    also across chunks).  The file is read ``_logread.CHUNK_SIZE`` bytes at
    a time and decompressed as it comes, in pieces of about a quarter chunk
    (or one zstd block, up to 128 KiB), so memory stays a few chunks and
    zstd's window whatever the table's size.

    The verdicts are those of decoding the whole payload at once: a damaged
    zstd stream anywhere, or a corrupt record, raises ``CorruptionError``
    naming the file, the record and the reason (the stream is read to its
    end first, so damage to it takes precedence as it did, and the payload's
    length is known for the size hint).  Records yielded before the damage
    was found must then be discarded by the caller.  A short file (a torn
    write of the Rust crate's in-place flush, whose data is still in the
    log) ends normally with ``scan.status`` ``short``, the records before
    the tear yielded; a short table tinylsm wrote is damage and raises.
    After iteration, ``scan`` is the ``SSTableScan`` (``records`` empty) and
    ``nbytes`` the file's size.
    """

    def __init__(self, files: Files, path: str, key_size: int, value_size: int,
                 chunk_size: Optional[int] = None, fd: int = -1) -> None:
        self.files = files
        self.path = path
        self.fd = fd  # given: read from it, and leave it open
        self.key_size = key_size
        self.value_size = value_size
        self.step = _logread.chunk(chunk_size)
        self.scan: Optional[SSTableScan] = None
        self.nbytes = 0
        self._head = b""  # the file's first bytes: its zstd frame header
        self._read = 0  # bytes read from the file

    def __iter__(self) -> Iterator["bytes | memoryview"]:
        k, v, path = self.key_size, self.value_size, self.path
        rsize = codec.record_size(k, v)
        self.scan = None
        expected = -1  # the count in the payload's first 8 bytes, once read
        count = tombstones = 0  # records checked
        prev = b""  # the last record checked: the next key must follow its key
        rest = b""  # payload bytes not yet checked (part of the count or of a record)
        total = 0  # payload bytes
        error: Optional[Tuple[int, str]] = None  # the first bad record, and why
        for out in self._payload():
            total += len(out)
            if error is not None:
                continue  # read on: damage to the stream comes first, and the length
            body = memoryview(out)
            if expected < 0:
                if len(rest) + len(body) < 8:
                    rest += body
                    continue
                cut = 8 - len(rest)
                expected = _U64.unpack(rest + body[:cut])[0]
                rest, body = b"", body[cut:]
            # the records come from rest + body, without joining the two first
            n = min((len(rest) + len(body)) // rsize, expected - count)
            if n:
                cut = n * rsize - len(rest)  # >= 1: rest is shorter than a record
                # the previous chunk's last record leads, so that the order
                # of keys is checked across the boundary as within a chunk
                skip = 1 if prev else 0
                payload = b"".join((_U64.pack(n + skip), prev, rest, body[:cut]))
                scan = codec.decode_sstable(payload, k, v)
                got = scan.count - skip
                tombstones += scan.tombstones - (skip and prev[4] == 0)
                if got:
                    yield memoryview(scan.records)[rsize:] if skip else scan.records
                count += got
                if scan.status != SST_COMPLETE:
                    error = (count, scan.reason)
                    continue
                prev = payload[-rsize:]
                rest, body = b"", body[cut:]
            if count == expected and len(rest) + len(body):
                error = (count, SST_TRAILING)
                continue
            rest += body  # less than a record
        self.nbytes = nbytes = self._read
        if error is not None:
            index, reason = error
            detail = (f"record {index} of {expected}: {reason}"
                      + _sizes_hint(total, expected, k, v))
            raise CorruptionError(f"sstable {path}: {detail}", path=path, detail=detail)
        if expected < 0:
            scan = SSTableScan(b"", 0, -1, SST_SHORT, 0, "", 0)
        elif count < expected:
            scan = SSTableScan(b"", count, expected, SST_SHORT, count, "", tombstones)
        else:
            scan = SSTableScan(b"", count, expected, SST_COMPLETE, -1, "", tombstones)
        if scan.status == SST_SHORT and nbytes and not _streamed(self._head):
            # Only the Rust crate's in-place flush tears an sstable (its data is
            # then still in the log), and the crate writes streaming frames,
            # which leave the content size unknown.  tinylsm writes its tables
            # whole, size in the header, through -tmp: a short one is damage,
            # and accepting it would silently drop its tail.
            detail = (f"cut short ({scan.count} of "
                      f"{scan.expected if scan.expected >= 0 else '?'} records), and it is "
                      "not a torn streaming write of tiny-lsm: the file is damaged"
                      + _sizes_hint(total, scan.expected, k, v))
            raise CorruptionError(f"sstable {path}: {detail}", path=path, detail=detail)
        self.scan = scan

    def _payload(self) -> Iterator[bytes]:
        """The decompressed payload, in pieces of about a chunk; raises
        ``CorruptionError`` for a damaged stream."""
        files, step = self.files, self.step
        fd = files.open_ro(self.path) if self.fd < 0 else self.fd
        try:
            size = files.size(fd)
            self._read = 0
            # an explicit write_size: the default fails (MemoryError) when
            # a call is given a few bytes (python-zstandard 0.25)
            target = max(1, step // 4)  # payload bytes per call (a zstd block
            # holds up to 128 KiB, so a call may return that much anyway)
            # Output buffers of a call's whole target: python-zstandard takes
            # the GIL back after each buffer, a wait beside a busy writer.
            dobj = zstandard.ZstdDecompressor().decompressobj(
                read_across_frames=True,
                write_size=max(zstandard.DECOMPRESSION_RECOMMENDED_OUTPUT_SIZE, target))
            head = b""
            feed = min(target, 1024)  # compressed bytes per call, adapted to the ratio
            for off in range(0, size, step):
                want = min(step, size - off)
                data = files.pread_all(fd, want, off)
                self._read += len(data)
                if len(head) < _FRAME_HEADER_MAX:
                    head += data[:_FRAME_HEADER_MAX - len(head)]
                    self._head = head
                view = memoryview(data)
                i = 0
                while i < len(data):
                    piece = view[i:i + feed]
                    try:
                        out = dobj.decompress(piece)
                    except zstandard.ZstdError as exc:
                        raise self._damage(fd, exc) from None
                    i += len(piece)
                    # about a quarter chunk of output per call, whatever the ratio
                    feed = (max(1, min(step, len(piece) * target // len(out))) if out
                            else min(step, feed * 2))
                    if out:
                        yield out
                if len(data) < want:
                    break  # the file shrank: it ends here
        finally:
            if fd != self.fd:
                files.close(fd)


    def _damage(self, fd: int, exc: zstandard.ZstdError) -> CorruptionError:
        """The error for a damaged stream, in zstd's words for the whole
        file at once: for some damage zstd names another cause when it is
        given a frame in pieces, and the message must not depend on the
        chunk size.  Only a table that is refused anyway is read whole."""
        data = self.files.pread_all(fd, self.files.size(fd))
        try:
            decompress(data, self.path)
        except CorruptionError as whole:
            return whole
        return _damaged(self.path, exc)


def _sizes_hint(total: int, expected: int, key_size: int, value_size: int) -> str:
    """A note for a payload of ``total`` bytes whose records do not make
    ``expected`` whole records of these sizes: the likelier cause is then a
    wrong key or value size (a damaged size record, or sizes given for a
    Rust crate's store), not a flipped bit in a record."""
    rsize = codec.record_size(key_size, value_size)
    body = total - 8
    if body < 0 or (body % rsize == 0 and body // rsize == expected):
        return ""
    return (f" (its {body} bytes of records are not {expected} records of "
            f"{rsize} bytes: is key_size={key_size}, value_size={value_size} right "
            "for this store?)")


def _streamed(data: bytes) -> bool:
    """True if ``data`` starts with a zstd frame header that leaves the
    content size unknown, as a streaming encoder (the Rust crate's) writes."""
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError:
        return False  # not even a whole frame header
    return params.content_size == zstandard.CONTENTSIZE_UNKNOWN


#: Uncompressed bytes handed to zstd, and compressed bytes written, at a
#: time; also the chunk of ``read``.  Each call into zstd releases the GIL
#: and must take it back, which beside a thread running Python waits up to
#: ``sys.getswitchinterval()`` (5 ms): python-zstandard's default pieces (a
#: zstd block, 128 KiB) made writing and reading a table 5 to 20 times
#: slower beside a busy writer than alone.  8 MiB pieces make it a few calls
#: per table, and hold at most one piece beyond the records.
WRITE_CHUNK = 8 << 20


def write(
    files: Files,
    directory: str,
    sst_id: int,
    records: bytes,
    key_size: int,
    value_size: int,
    level: int,
) -> int:
    """Write sorted ``records`` as sstable ``sst_id``; return the file's size.

    The data goes to ``<id>-tmp``, is fsynced, renamed to its final name and
    the directory fsynced, so a crash leaves either no sstable (the ``-tmp``
    file is deleted at recovery) or a complete one; never a torn one.  It is
    compressed and written ``WRITE_CHUNK`` at a time, as one zstd frame whose
    header holds the payload's size: no whole uncompressed payload or
    compressed file is held in memory, and no long copy holds the GIL.
    """
    header = codec.sstable_header(records, key_size, value_size)
    view = memoryview(records).cast("B")
    chunker = zstandard.ZstdCompressor(level=level).chunker(
        size=len(header) + len(view), chunk_size=WRITE_CHUNK)
    tmp = os.path.join(directory, sstable_tmp_name(sst_id))
    fd = files.create(tmp)
    try:
        written = 0
        pieces = [header] + [view[i:i + WRITE_CHUNK] for i in range(0, len(view), WRITE_CHUNK)]
        for piece in pieces + [None]:
            # zstandard's stub leaves finish() unannotated
            for out in (chunker.finish()  # type: ignore[no-untyped-call]
                        if piece is None else chunker.compress(piece)):
                files.pwrite(fd, out, written)
                written += len(out)
        files.fsync(fd)
    finally:
        files.close(fd)
    files.rename(tmp, os.path.join(directory, sstable_name(sst_id)))
    files.fsync_dir(directory)
    return written
