"""SSTable files: names, zstd framing, and crash-safe writing.

An sstable is one zstd stream of an sstable payload (see ``codec``).  The
Rust crate never finishes its zstd frames, so reading always goes through a
streaming decompressor, which returns what the complete blocks hold.
"""
from __future__ import annotations

import os
from typing import Dict, List, Tuple

import zstandard

from ._backend import codec
from ._format import (
    HEX_NAME,
    SST_CORRUPT,
    SST_SHORT,
    SSTABLE_NAME,
    SSTABLE_TMP_SUFFIX,
    SSTableScan,
    sstable_name,
    sstable_tmp_name,
)
from ._fs import Files
from .errors import CorruptionError

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
        detail = f"zstd stream is damaged: {exc}"
        raise CorruptionError(f"sstable {path}: {detail}", path=path, detail=detail) from None


def read(files: Files, path: str, key_size: int, value_size: int) -> Tuple[SSTableScan, int]:
    """Read and check sstable ``path``; return its scan and the file's size.

    A corrupt record raises ``CorruptionError`` naming the file, the record
    and the reason.  A short file (a torn write of the Rust crate's in-place
    flush, whose data is still in the log) is returned with status
    ``short`` and the records before the tear.
    """
    data = files.read_file(path)
    payload = decompress(data, path)
    scan = codec.decode_sstable(payload, key_size, value_size)
    if scan.status == SST_CORRUPT:
        detail = (f"record {scan.error_index} of {scan.expected}: {scan.reason}"
                  + _sizes_hint(payload, scan.expected, key_size, value_size))
        raise CorruptionError(f"sstable {path}: {detail}", path=path, detail=detail)
    if scan.status == SST_SHORT and data and not _streamed(data):
        # Only the Rust crate's in-place flush tears an sstable (its data is
        # then still in the log), and the crate writes streaming frames,
        # which leave the content size unknown.  tinylsm writes its tables
        # whole, size in the header, through -tmp: a short one is damage,
        # and accepting it would silently drop its tail.
        detail = (f"cut short ({scan.count} of "
                  f"{scan.expected if scan.expected >= 0 else '?'} records), and it is "
                  "not a torn streaming write of tiny-lsm: the file is damaged"
                  + _sizes_hint(payload, scan.expected, key_size, value_size))
        raise CorruptionError(f"sstable {path}: {detail}", path=path, detail=detail)
    return scan, len(data)


def _sizes_hint(payload: bytes, expected: int, key_size: int, value_size: int) -> str:
    """A note for a payload whose length fits no whole number of records of
    these sizes: the likelier cause is then a wrong key or value size (a
    damaged size record, or sizes given for a Rust crate's store), not a
    flipped bit in a record."""
    rsize = codec.record_size(key_size, value_size)
    body = len(payload) - 8
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


#: Uncompressed bytes handed to zstd, and compressed bytes written, at a time.
WRITE_CHUNK = 1 << 20


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
    comp = zstandard.ZstdCompressor(level=level).compressobj(size=len(header) + len(view))
    tmp = os.path.join(directory, sstable_tmp_name(sst_id))
    fd = files.create(tmp)
    try:
        written = 0
        pieces = [header] + [view[i:i + WRITE_CHUNK] for i in range(0, len(view), WRITE_CHUNK)]
        for piece in pieces + [None]:
            out = comp.flush() if piece is None else comp.compress(piece)
            if out:
                files.pwrite(fd, out, written)
                written += len(out)
        files.fsync(fd)
    finally:
        files.close(fd)
    files.rename(tmp, os.path.join(directory, sstable_name(sst_id)))
    files.fsync_dir(directory)
    return written
