"""A batch of packed records on its way to the log, a piece at a time.

``write_packed`` of a large batch never holds the batch's frames whole: it
encodes them in pieces of about ``PIECE_BYTES``, each written to the log
as it is made (``LogWriter.append_pieces``), and the map then applies the
records themselves (``apply_packed``).  That saves a buffer as large as
the log's share of the batch (21 bytes per record of 8/8, 1.3 times the
records), and the time to fault it in, about a sixth of an import of 1M
records of 8/8.  The log and the map must read the same bytes, so records
in a buffer that another thread could change meanwhile are copied first
(``unchanging``); ``bytes``, and views of ``bytes``, are read in place.
"""
from __future__ import annotations

from typing import Iterator, Optional

from ._backend import codec

#: Bytes of frames per piece: below glibc's first mmap threshold (128 KiB),
#: so that each piece reuses the heap memory of the one before.
PIECE_BYTES = 96 * 1024
#: Batches of fewer frame bytes are encoded whole (outside the store's lock).
STREAM_BYTES = 1 << 20


def unchanging(view: memoryview) -> memoryview:
    """``view``, or a view of a copy of it if its bytes could change."""
    return view if isinstance(view.obj, bytes) else memoryview(view.tobytes())


def pieces(records: memoryview, removals: Optional[memoryview], key_size: int,
           value_size: int) -> Iterator[bytes]:
    """The frames ``codec.encode_packed(records, removals, ...)`` makes, in
    pieces: the batch's header, then about ``PIECE_BYTES`` at a time."""
    k, v = key_size, value_size
    n = len(records) // (k + v)
    m = 0 if removals is None else len(removals) // k
    yield codec.batch_header(n + m, k, v)
    step = max(1, PIECE_BYTES // codec.frame_size(k, v))
    for i in range(0, n, step):
        yield codec.encode_packed(records[i * (k + v):(i + step) * (k + v)], None, k, v,
                                  header=False)
    if removals is not None:
        for i in range(0, m, step):
            yield codec.encode_packed(b"", removals[i * k:(i + step) * k], k, v, header=False)
