# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False, cdivision=True
# cython: annotation_typing=False, initializedcheck=False
"""Compiled codec: the twin of ``tinylsm._codec_py`` (pure Python).

Both modules expose the same functions with the same results, byte for byte
and error for error; ``tests/test_codec_parity.py`` holds them to it.  The
format is described in FORMAT.md; with R = 5 + K + V a *record* is
``crc u32 | tag u8 | key K | value V`` and a log *frame* is a record padded
with zeros to F = 5 + max(8, K + V) bytes, or a batch header (tag 2).

How this module keeps to the twin:

* arguments are checked by the same steps in the same order (``check_sizes``
  from ``_format``, then ``len()``, ``bytes()`` or ``memoryview().cast("B")``
  exactly where the twin calls them), so odd inputs fail with the same
  exception and message; only exact ``bytes`` (and ``bytearray``) items take
  a C fast path, which cannot fail differently;
* checksums are zlib's CRC-32, computed by slicing-by-8 (``_crc32.h``),
  which is faster than zlib's own function on record-sized inputs;
* every loop over records (log scan, sstable check, sort, merge) runs without
  the GIL on C buffers, so a compaction thread can run beside a writer.  Output
  is written straight into the ``bytes`` object that is returned.

``unpack_records`` and the encoders read Python objects and so keep the GIL.
"""
import struct
import zlib

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_New, PyList_SET_ITEM
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM

from ._format import (
    LogScan,
    MAX_ITEM_SIZE,
    SST_BAD_KEY_ORDER,
    SST_BAD_TAG,
    SST_COMPLETE,
    SST_CORRUPT,
    SST_CRC,
    SST_SHORT,
    SST_TOMBSTONE_VALUE,
    SST_TRAILING,
    SSTableScan,
    STOP_BAD_PADDING,
    STOP_BAD_TAG,
    STOP_CRC,
    STOP_END,
    STOP_NESTED_BATCH,
    STOP_SHORT,
    STOP_TOMBSTONE_VALUE,
    as_int,
    bad_size,
    bad_type,
    check_sizes,
    packed_view,
)

cdef extern from "_format.h":
    # zlib's CRC-32, slicing-by-8: 2 to 4 times zlib's speed on records
    void tinylsm_crc32_init() noexcept nogil
    uint32_t tinylsm_crc32(uint32_t crc, const unsigned char *p, size_t n) noexcept nogil
    void tinylsm_crc32_x4(const unsigned char **p, size_t n, uint32_t *out) noexcept nogil
    # the frame layout, shared with the store's fast path in _map.pyx
    uint32_t _ld32 "tl_ld32"(const unsigned char *p) noexcept nogil
    uint64_t _ld64 "tl_ld64"(const unsigned char *p) noexcept nogil
    void _st32 "tl_st32"(unsigned char *p, uint32_t x) noexcept nogil
    void _st64 "tl_st64"(unsigned char *p, uint64_t x) noexcept nogil
    uint64_t tl_prefix(const unsigned char *p, size_t n) noexcept nogil
    void _finish_frame "tl_frame_finish"(unsigned char *f, size_t k, size_t v,
                                          size_t pad) noexcept nogil
    void _put_header "tl_batch_header"(unsigned char *f, uint64_t n, size_t fsize) noexcept nogil
    enum: _MAX_ITEM "TL_MAX_ITEM"

tinylsm_crc32_init()

cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject **bytes, Py_ssize_t newsize) except -1
    Py_ssize_t Py_SIZE(object o)
    # Borrowed-pointer forms, for the encoders' fast path.
    bint _tuple_exact "PyTuple_CheckExact"(PyObject *o)
    Py_ssize_t _tuple_size "PyTuple_GET_SIZE"(PyObject *o)
    PyObject *_tuple_item "PyTuple_GET_ITEM"(PyObject *o, Py_ssize_t i)
    bint _bytes_exact "PyBytes_CheckExact"(PyObject *o)
    Py_ssize_t _bytes_size "PyBytes_GET_SIZE"(PyObject *o)
    char *_bytes_data "PyBytes_AS_STRING"(PyObject *o)

cdef PyObject *_NONE = <PyObject *>None

_U64 = struct.Struct("<Q")

# _MAX_ITEM (from _format.h) must equal _format.MAX_ITEM_SIZE, so that the
# fast size check agrees with check_sizes.
if MAX_ITEM_SIZE != _MAX_ITEM:  # pragma: no cover - guards an edit of _format
    raise ImportError("tinylsm._codec was built for MAX_ITEM_SIZE 65536")

# Zeros to compare padding and tombstone values against and to checksum a
# tombstone's V zero bytes: large enough for any value (V <= 65536) and any
# batch header padding (F - 13 < 2 * 65536).
cdef enum:
    _ZSIZE = 131072
cdef unsigned char _ZEROS[_ZSIZE]  # static storage: all zeros, never written

# Stop codes of the log scan, indexes into _STOPS.
cdef enum:
    _S_END = 0
    _S_SHORT = 1
    _S_BAD_TAG = 2
    _S_NESTED = 3
    _S_CRC = 4
    _S_PAD = 5
    _S_TOMB = 6

_STOPS = (
    STOP_END,
    STOP_SHORT,
    STOP_BAD_TAG,
    STOP_NESTED_BATCH,
    STOP_CRC,
    STOP_BAD_PADDING,
    STOP_TOMBSTONE_VALUE,
)

# Why an sstable record is bad.
cdef enum:
    _R_NONE = 0
    _R_TAG = 1
    _R_CRC = 2
    _R_TOMB = 3
    _R_ORDER = 4


# -- C helpers ------------------------------------------------------------------


cdef inline uint32_t _crc(uint32_t c, const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """CRC-32 (zlib's) continued over ``n`` bytes."""
    return tinylsm_crc32(c, p, <size_t>n)


cdef inline uint32_t _record_crc(const unsigned char *tag, Py_ssize_t k,
                                 Py_ssize_t v) noexcept nogil:
    """FORMAT.md's crc of the record whose tag byte ``tag`` points at.

    A tombstone (tag 0) is checksummed over V zero bytes, not the stored ones.
    """
    if tag[0] == 1:
        return _crc(0, tag, 1 + k + v) ^ 0xFF
    return _crc(_crc(0, tag, 1 + k), _ZEROS, v) ^ 0xFF


cdef inline bint _is_zero(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t step
    while n > 0:
        step = n if n < _ZSIZE else _ZSIZE
        if memcmp(p, _ZEROS, step) != 0:
            return False
        p += step
        n -= step
    return True


cdef class _Out:
    """A ``bytes`` object under construction, returned by ``take``.

    Writing into a fresh ``bytes`` (reference count 1, not yet shared) is the
    documented use of ``PyBytes_FromStringAndSize(NULL, n)``; it needs no GIL.
    """

    cdef PyObject *obj
    cdef unsigned char *data
    cdef Py_ssize_t cap

    def __dealloc__(self):
        Py_XDECREF(self.obj)

    cdef int reserve(self, Py_ssize_t need) except -1:
        """Make room for at least ``need`` bytes (contents kept)."""
        cdef bytes fresh
        if need < 1:
            need = 1  # never the shared empty bytes, which cannot be resized
        if self.obj == NULL:
            fresh = PyBytes_FromStringAndSize(NULL, need)
            Py_INCREF(fresh)
            self.obj = <PyObject *>fresh
        elif need > self.cap:
            if need < 2 * self.cap:
                need = 2 * self.cap
            _PyBytes_Resize(&self.obj, need)
        else:
            return 0
        self.cap = need
        self.data = <unsigned char *>PyBytes_AS_STRING(<object>self.obj)
        return 0

    cdef bytes take(self, Py_ssize_t n):
        """The first ``n`` bytes written, as the finished ``bytes``."""
        cdef bytes result
        if n == 0 or self.obj == NULL:
            return b""
        if n != self.cap:
            _PyBytes_Resize(&self.obj, n)
        result = <bytes>self.obj
        Py_XDECREF(self.obj)
        self.obj = NULL
        self.data = NULL
        self.cap = 0
        return result


cdef int _sizes(object key_size, object value_size, Py_ssize_t *k,
                Py_ssize_t *v) except -1:
    """``check_sizes`` with a fast path for plain ints already in range."""
    if not (type(key_size) is int and type(value_size) is int
            and 1 <= key_size <= _MAX_ITEM and 0 <= value_size <= _MAX_ITEM):
        check_sizes(key_size, value_size)
    k[0] = key_size
    v[0] = value_size
    return 0


cdef inline Py_ssize_t _fsize(Py_ssize_t k, Py_ssize_t v) noexcept nogil:
    return 5 + (k + v if k + v > 8 else 8)


# -- argument checking ----------------------------------------------------------


cdef str _where(Py_ssize_t index):
    return "" if index < 0 else f" of item {index}"


cdef int _put_bytes(object obj, Py_ssize_t size, str what, Py_ssize_t index,
                    unsigned char *dest) except -1:
    """Copy ``obj`` (bytes of exactly ``size``) to ``dest``, or raise naming it.

    The twin's ``_as_bytes``: ``bytes`` is used as it is, any other
    bytes-like object (buffer protocol) as its raw bytes.
    """
    cdef object data
    cdef Py_ssize_t n
    cdef const char *src
    if isinstance(obj, bytes):
        data = obj
        n = PyBytes_GET_SIZE(data)
        src = PyBytes_AS_STRING(data)
    elif type(obj) is bytearray:  # its content is what bytes(obj) copies
        data = obj
        n = PyByteArray_GET_SIZE(data)
        src = PyByteArray_AS_STRING(data)
    else:
        try:
            data = memoryview(obj).tobytes()
        except TypeError:
            raise bad_type(f"{what}{_where(index)}", obj) from None
        n = PyBytes_GET_SIZE(data)
        src = PyBytes_AS_STRING(data)
    if n != size:
        raise bad_size(f"{what}{_where(index)}", size, n)
    memcpy(dest, src, size)
    return 0


cdef tuple _split_item(object item, Py_ssize_t index):
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    raise TypeError(
        f"item {index}: expected a (key, value_or_None) pair, "
        f"got {type(item).__name__}"
        + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
    )


cdef bytes _records_data(object records, Py_ssize_t rsize, str what="packed records"):
    """The twin's ``_records_data``: raw bytes, whole units of ``rsize`` only."""
    cdef bytes data
    if type(records) is bytes:
        data = <bytes>records
    else:
        data = memoryview(records).cast("B").tobytes()
    if PyBytes_GET_SIZE(data) % rsize:
        raise ValueError(
            f"{what}: expected a multiple of {rsize} bytes, "
            f"got {PyBytes_GET_SIZE(data)}"
        )
    return data


# -- log ------------------------------------------------------------------------


cdef inline bint _fast_item(PyObject *item, unsigned char *dest, Py_ssize_t k,
                            Py_ssize_t v, Py_ssize_t pad) noexcept:
    """Write the frame of a ``(bytes, bytes_or_None)`` tuple of the right
    sizes and return True; return False for anything else (``_put_item``
    then checks it).  Runs no Python code, so borrowed pointers are safe."""
    cdef PyObject *key
    cdef PyObject *value
    if not _tuple_exact(item) or _tuple_size(item) != 2:
        return False
    key = _tuple_item(item, 0)
    value = _tuple_item(item, 1)
    if not _bytes_exact(key) or _bytes_size(key) != k:
        return False
    if value == _NONE:
        dest[4] = 0
        memset(dest + 5 + k, 0, v)
    elif _bytes_exact(value) and _bytes_size(value) == v:
        dest[4] = 1
        memcpy(dest + 5 + k, _bytes_data(value), v)
    else:
        return False
    memcpy(dest + 5, _bytes_data(key), k)
    _finish_frame(dest, k, v, pad)
    return True


cdef int _put_item(object item, Py_ssize_t index, unsigned char *dest,
                   Py_ssize_t k, Py_ssize_t v, Py_ssize_t pad) except -1:
    """Check one ``(key, value_or_None)`` item the twin's way and write its
    frame at ``dest``, or raise what the twin raises."""
    key, value = _split_item(item, index)
    _put_bytes(key, k, "key", index, dest + 5)
    if value is None:
        dest[4] = 0
        memset(dest + 5 + k, 0, v)
    else:
        dest[4] = 1
        _put_bytes(value, v, "value", index, dest + 5 + k)
    _finish_frame(dest, k, v, pad)
    return 0


cdef bytes _encode_items(object items, Py_ssize_t k, Py_ssize_t v,
                         Py_ssize_t fsize, bint header):
    """Frames (or records, with ``fsize`` = R) of all items, checked first.

    Exact lists and tuples are walked by index (re-reading a list's length,
    as iterating it would); anything else through the iterator protocol, as
    ``enumerate`` does in the twin.  The output grows only with real items.
    """
    cdef _Out out = _Out()
    cdef Py_ssize_t base = fsize if header else 0
    cdef Py_ssize_t pad = fsize - 5 - k - v
    cdef Py_ssize_t i = 0
    cdef unsigned char *dest
    cdef object item
    if type(items) is list or type(items) is tuple:
        out.reserve(base + len(items) * fsize)
        while i < Py_SIZE(items):  # a list may change size in _put_item
            if base + (i + 1) * fsize > out.cap:
                out.reserve(base + (i + 1) * fsize)
            dest = out.data + base + i * fsize
            if type(items) is list:
                if _fast_item(PyList_GET_ITEM(items, i), dest, k, v, pad):
                    i += 1
                    continue
                item = <object>PyList_GET_ITEM(items, i)  # a reference of our own
            else:
                if _fast_item(PyTuple_GET_ITEM(items, i), dest, k, v, pad):
                    i += 1
                    continue
                item = <object>PyTuple_GET_ITEM(items, i)
            _put_item(item, i, dest, k, v, pad)
            i += 1
    else:
        out.reserve(base + 64 * fsize)
        for item in items:
            if base + (i + 1) * fsize > out.cap:
                out.reserve(base + (i + 1) * fsize)
            dest = out.data + base + i * fsize
            if not _fast_item(<PyObject *>item, dest, k, v, pad):
                _put_item(item, i, dest, k, v, pad)
            i += 1
    if header:
        out.reserve(fsize)
        _put_header(out.data, <uint64_t>i, fsize)
    return out.take(base + i * fsize)


def frame_size(key_size: int, value_size: int) -> int:
    """Bytes of one log frame: ``5 + max(8, K + V)``."""
    cdef Py_ssize_t k, v
    _sizes(key_size, value_size, &k, &v)
    return _fsize(k, v)


def record_size(key_size: int, value_size: int) -> int:
    """Bytes of one packed record: ``5 + K + V``."""
    cdef Py_ssize_t k, v
    _sizes(key_size, value_size, &k, &v)
    return 5 + k + v


def crc(tag: int, key: bytes, value: Optional[bytes]) -> int:
    """The record checksum of FORMAT.md: ``crc32(tag + key + value) ^ 0xFF``.

    ``value`` of ``None`` (or empty) adds no bytes, whatever the tag: for a
    tombstone's checksum pass its V zero bytes, ``bytes(value_size)``.
    """
    cdef unsigned char t
    cdef uint32_t c
    if (type(tag) is int and 0 <= tag <= 255 and type(key) is bytes
            and (value is None or type(value) is bytes)):
        t = tag
        c = _crc(0, &t, 1)
        c = _crc(c, <const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
        if value is not None:
            c = _crc(c, <const unsigned char *>PyBytes_AS_STRING(value),
                     PyBytes_GET_SIZE(value))
        return c ^ 0xFF
    # Anything else goes through the twin's own expression, for its errors.
    return zlib.crc32(bytes((tag,)) + bytes(key) + (value or b"")) ^ 0xFF


def batch_crc(count: int) -> int:
    """Checksum of a batch header: ``crc32(count as u64 LE) ^ 0xFF``."""
    cdef unsigned char b[8]
    if type(count) is int and 0 <= count <= 0xFFFFFFFFFFFFFFFF:
        _st64(b, <uint64_t>count)
        return _crc(0, b, 8) ^ 0xFF
    return zlib.crc32(_U64.pack(count)) ^ 0xFF


def batch_header(count: int, key_size: int, value_size: int) -> bytes:
    """The header frame of a batch of ``count`` changes (an int from 0 to
    2**64 - 1: TypeError or ValueError otherwise)."""
    cdef Py_ssize_t k, v
    cdef bytes out
    _sizes(key_size, value_size, &k, &v)
    as_int(count, "count", 0, 0xFFFFFFFFFFFFFFFF)
    out = PyBytes_FromStringAndSize(NULL, _fsize(k, v))
    _put_header(<unsigned char *>PyBytes_AS_STRING(out), <uint64_t>count, _fsize(k, v))
    return out


def encode_frame(key: object, value: object, key_size: int, value_size: int) -> bytes:
    """One KV frame for ``key`` and ``value`` (``None`` writes a tombstone).

    Raises ``TypeError`` or ``ValueError`` naming the key or value that is
    not bytes of the right size.
    """
    cdef Py_ssize_t k, v, fsize
    cdef bytes out
    cdef unsigned char *p
    _sizes(key_size, value_size, &k, &v)
    fsize = _fsize(k, v)
    out = PyBytes_FromStringAndSize(NULL, fsize)
    p = <unsigned char *>PyBytes_AS_STRING(out)
    _put_bytes(key, k, "key", -1, p + 5)
    if value is None:
        p[4] = 0
        memset(p + 5 + k, 0, v)
    else:
        p[4] = 1
        _put_bytes(value, v, "value", -1, p + 5 + k)
    _finish_frame(p, k, v, fsize - 5 - k - v)
    return out


def encode_log(
    items: Sequence[object], key_size: int, value_size: int, batch: bool = False
) -> bytes:
    """Frames for every ``(key, value_or_None)`` of ``items``, in order.

    With ``batch`` the frames are preceded by a batch header of
    ``len(items)``, so that recovery applies all of them or none.  Every item
    is checked before anything is encoded: one bad item raises and nothing
    is returned.
    """
    cdef Py_ssize_t k, v
    _sizes(key_size, value_size, &k, &v)
    if not isinstance(items, (list, tuple)):
        items = list(items)
    return _encode_items(items, k, v, _fsize(k, v), batch)


cdef void _encode_packed(const unsigned char *src, Py_ssize_t n, const unsigned char *keys,
                         Py_ssize_t m, Py_ssize_t k, Py_ssize_t v,
                         unsigned char *out, bint header) noexcept nogil:
    """A batch header of n + m (if ``header``), the n insert frames of the
    records at ``src`` (K + V bytes each), then the m tombstone frames of
    the keys at ``keys``, written to ``out``."""
    cdef Py_ssize_t fsize = _fsize(k, v), pad = fsize - 5 - k - v, i, j
    cdef const unsigned char *msg[4]
    cdef uint32_t crcs[4]
    if header:
        _put_header(out, <uint64_t>(n + m), fsize)
        out += fsize
    # four frames at a time, their checksums computed together (see
    # tinylsm_crc32_x4), then the rest one by one
    for i in range(n // 4):
        for j in range(4):
            out[j * fsize + 4] = 1
            memcpy(out + j * fsize + 5, src + j * (k + v), k + v)
            if pad:
                memset(out + j * fsize + 5 + k + v, 0, pad)
            msg[j] = out + j * fsize + 4
        tinylsm_crc32_x4(msg, 1 + k + v, crcs)
        for j in range(4):
            _st32(out + j * fsize, crcs[j] ^ 0xFF)
        src += 4 * (k + v)
        out += 4 * fsize
    for i in range(n % 4):
        out[4] = 1
        memcpy(out + 5, src, k + v)
        _finish_frame(out, k, v, pad)
        src += k + v
        out += fsize
    for i in range(m):
        out[4] = 0
        memcpy(out + 5, keys, k)
        memset(out + 5 + k, 0, v)
        _finish_frame(out, k, v, pad)
        keys += k
        out += fsize


def encode_packed(records: object, removals: object, key_size: int, value_size: int,
                  header: bool = True) -> bytes:
    """The frames of one batch of packed records: exactly what
    ``encode_log(items, key_size, value_size, batch=True)`` makes of

        [(key, value) for each record key + value of records]
        + [(key, None) for each key of removals]

    or, with ``header`` false, those frames without the batch's header (a
    part of a batch encoded piece by piece, after ``batch_header``).

    ``records`` is any bytes-like object of n * (K + V) bytes, each record
    its key then its value; ``removals`` (or None: none) one of m * K bytes,
    keys.  Raises ``TypeError`` for an argument that is not bytes-like and
    ``ValueError`` for one that is not a whole number of records (or keys),
    naming it and the sizes; nothing is encoded then.  One C loop, without
    the GIL: the frames are what the log and the map both take, so a
    caller's buffer changing meanwhile cannot make them disagree.
    """
    cdef Py_ssize_t k, v, n, m = 0
    cdef Py_buffer rbuf
    cdef Py_buffer gbuf
    cdef bytes out
    cdef unsigned char *dest
    _sizes(key_size, value_size, &k, &v)
    rview = packed_view(records, k + v, f"K+V={k + v}", "records")
    gview = None if removals is None else packed_view(removals, k, f"K={k}", "removals")
    PyObject_GetBuffer(rview, &rbuf, PyBUF_SIMPLE)
    gbuf.buf = NULL
    try:
        if gview is not None:
            PyObject_GetBuffer(gview, &gbuf, PyBUF_SIMPLE)
            m = gbuf.len // k
        n = rbuf.len // (k + v)
        with_header = bool(header)
        out = PyBytes_FromStringAndSize(NULL, (with_header + n + m) * _fsize(k, v))
        dest = <unsigned char *>PyBytes_AS_STRING(out)
        with nogil:
            _encode_packed(<const unsigned char *>rbuf.buf, n,
                           <const unsigned char *>gbuf.buf, m, k, v, dest, with_header)
    finally:
        PyBuffer_Release(&rbuf)
        if gbuf.buf != NULL:
            PyBuffer_Release(&gbuf)
    return out


ctypedef struct _ScanResult:
    Py_ssize_t off       # where the scan stopped
    Py_ssize_t end       # just past the last applied frame or batch
    Py_ssize_t count     # applied records
    Py_ssize_t tombstones
    int stop


cdef void _scan(const unsigned char *buf, Py_ssize_t total, Py_ssize_t k,
                Py_ssize_t v, unsigned char *out, _ScanResult *res) noexcept nogil:
    """The log scan.  The records of an open batch are written after the
    applied ones and counted by ``pending``; they become applied when the
    batch completes.  A batch's count is only a counter, never a size."""
    cdef Py_ssize_t fsize = _fsize(k, v)
    cdef Py_ssize_t rsize = 5 + k + v
    cdef Py_ssize_t off = 0, end = 0, count = 0, pending = 0
    cdef Py_ssize_t tombstones = 0, pending_tombstones = 0
    cdef uint64_t remaining = 0
    cdef const unsigned char *p
    cdef unsigned char tag
    cdef int stop
    while True:
        if total - off < fsize:
            stop = _S_END if off == total else _S_SHORT
            break
        p = buf + off
        tag = p[4]
        if tag == 2:
            if remaining:
                stop = _S_NESTED
                break
            if (_crc(0, p + 5, 8) ^ 0xFF) != _ld32(p):
                stop = _S_CRC
                break
            if not _is_zero(p + 13, fsize - 13):
                stop = _S_PAD
                break
            remaining = _ld64(p + 5)
            off += fsize
            if not remaining:
                end = off
            continue
        if tag > 1:
            stop = _S_BAD_TAG
            break
        if _record_crc(p + 4, k, v) != _ld32(p):
            stop = _S_CRC
            break
        if fsize > rsize and not _is_zero(p + rsize, fsize - rsize):
            stop = _S_PAD
            break
        if tag == 0 and not _is_zero(p + 5 + k, v):
            stop = _S_TOMB
            break
        memcpy(out + (count + pending) * rsize, p, rsize)
        off += fsize
        if remaining:
            pending += 1
            pending_tombstones += tag == 0
            remaining -= 1
            if not remaining:
                count += pending
                tombstones += pending_tombstones
                pending = pending_tombstones = 0
                end = off
        else:
            count += 1
            tombstones += tag == 0
            end = off
    res.off = off
    res.end = end
    res.count = count
    res.tombstones = tombstones
    res.stop = stop


def scan_log(buf: bytes, key_size: int, value_size: int) -> LogScan:
    """Scan a log from offset 0 and return what recovery applies.

    The scan stops at the first short frame, unknown tag, batch header inside
    a batch, checksum mismatch, non-zero padding or tombstone with a non-zero
    value area.  ``records`` holds the applied changes in log order (a batch
    only when all its frames are intact) and ``end`` the offset just past the
    last applied frame or batch: the length to truncate the log to.
    """
    cdef Py_ssize_t k, v, fsize
    cdef Py_buffer view
    cdef _ScanResult res
    cdef _Out out = _Out()
    _sizes(key_size, value_size, &k, &v)
    fsize = _fsize(k, v)
    mv = memoryview(buf).cast("B")
    PyObject_GetBuffer(mv, &view, PyBUF_SIMPLE)
    try:
        out.reserve((view.len // fsize) * (5 + k + v))
        with nogil:
            _scan(<const unsigned char *>view.buf, view.len, k, v, out.data, &res)
    finally:
        PyBuffer_Release(&view)
    return LogScan(
        out.take(res.count * (5 + k + v)),
        res.count,
        res.end,
        _STOPS[res.stop],
        res.off,
        res.tombstones,
    )


# -- records and sstables ---------------------------------------------------------


def batch_records(frames: bytes, key_size: int, value_size: int):
    """The packed records of one batch made by ``encode_log(..., batch=True)``.

    When K + V >= 8 a frame has no padding, so the frames after the header
    already are the records: a view of them is returned, without a copy.
    """
    cdef Py_ssize_t k, v
    _sizes(key_size, value_size, &k, &v)
    if k + v >= 8:
        return memoryview(frames)[_fsize(k, v):]
    return frame_records(memoryview(frames)[_fsize(k, v):], key_size, value_size)


def frame_records(frames: bytes, key_size: int, value_size: int) -> bytes:
    """The packed records of log frames made by ``encode_log``.

    Batch headers are dropped and padding cut off; nothing else is checked
    (a log read from disk goes through ``scan_log``).  Raises ``ValueError``
    unless ``frames`` holds whole frames.
    """
    cdef Py_ssize_t k = 0, v = 0, fsize, rsize, total, off, n = 0
    cdef bytes data
    cdef const unsigned char *src
    cdef unsigned char *dst
    _sizes(key_size, value_size, &k, &v)
    fsize = _fsize(k, v)
    rsize = 5 + k + v
    data = _records_data(frames, fsize, "log frames")
    total = PyBytes_GET_SIZE(data)
    src = <const unsigned char *>PyBytes_AS_STRING(data)
    off = 0
    while off < total:
        n += src[off + 4] != 2
        off += fsize
    out = PyBytes_FromStringAndSize(NULL, n * rsize)
    dst = <unsigned char *>PyBytes_AS_STRING(out)
    with nogil:
        off = 0
        while off < total:
            if src[off + 4] != 2:
                memcpy(dst, src + off, rsize)
                dst += rsize
            off += fsize
    return out


def pack_records(items: Iterable[object], key_size: int, value_size: int) -> bytes:
    """Pack ``(key, value_or_None)`` pairs into records, checksums included.

    The pairs are packed in the order given; ``encode_sstable`` checks order.
    """
    cdef Py_ssize_t k, v
    _sizes(key_size, value_size, &k, &v)
    return _encode_items(items, k, v, 5 + k + v, False)


def unpack_records(records: bytes, key_size: int, value_size: int) -> List[Change]:
    """Split packed records into ``(key, value_or_None)`` pairs, unchecked."""
    cdef Py_ssize_t k, v, rsize, n, i
    cdef bytes data
    cdef const unsigned char *p
    cdef list result
    cdef tuple pair
    _sizes(key_size, value_size, &k, &v)
    rsize = 5 + k + v
    data = _records_data(records, rsize)
    n = PyBytes_GET_SIZE(data) // rsize
    p = <const unsigned char *>PyBytes_AS_STRING(data)
    result = PyList_New(n)
    for i in range(n):
        pair = (
            PyBytes_FromStringAndSize(<const char *>p + 5, k),
            PyBytes_FromStringAndSize(<const char *>p + 5 + k, v) if p[4] else None,
        )
        Py_INCREF(pair)
        PyList_SET_ITEM(result, i, pair)
        p += rsize
    return result


cdef Py_ssize_t _first_unordered(const unsigned char *keys, Py_ssize_t n,
                                 Py_ssize_t k, Py_ssize_t rsize) noexcept nogil:
    """Index of the first key (at ``keys + i * rsize``) not greater than the
    one before it, or -1 when all are strictly increasing."""
    cdef Py_ssize_t i
    for i in range(1, n):
        if memcmp(keys + i * rsize, keys + (i - 1) * rsize, k) <= 0:
            return i
    return -1


def sstable_header(records: bytes, key_size: int, value_size: int) -> bytes:
    """The start of the sstable payload of ``records``: its ``count u64``
    (the records follow it, as they are).

    Raises ``ValueError`` unless the keys are strictly increasing, since a
    file with unsorted keys would be refused when read back.
    """
    cdef Py_ssize_t k, v, rsize, count, bad
    cdef bytes data, out
    cdef const unsigned char *p
    _sizes(key_size, value_size, &k, &v)
    rsize = 5 + k + v
    data = _records_data(records, rsize)
    count = PyBytes_GET_SIZE(data) // rsize
    p = <const unsigned char *>PyBytes_AS_STRING(data)
    with nogil:
        bad = _first_unordered(p + 5, count, k, rsize)
    if bad >= 0:
        raise ValueError(
            f"packed records: keys must be strictly increasing, "
            f"record {bad} is not greater than record {bad - 1}"
        )
    out = PyBytes_FromStringAndSize(NULL, 8)
    _st64(<unsigned char *>PyBytes_AS_STRING(out), <uint64_t>count)
    return out


def encode_sstable(records: bytes, key_size: int, value_size: int) -> bytes:
    """The uncompressed sstable payload: ``sstable_header`` then the records
    (``ValueError`` as ``sstable_header``)."""
    cdef bytes header = sstable_header(records, key_size, value_size)
    cdef bytes data = _records_data(records, 5 + key_size + value_size)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 8 + size)
    memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(header), 8)
    memcpy(PyBytes_AS_STRING(out) + 8, PyBytes_AS_STRING(data), size)
    return out


def decode_sstable(payload: bytes, key_size: int, value_size: int) -> SSTableScan:
    """Check an uncompressed sstable payload and return its valid records.

    ``status`` says how it ended: ``complete``; ``short`` when the payload
    stops before ``count`` records (a torn write: the records before the tear
    are returned); ``corrupt`` when a record is damaged (``error_index`` and
    ``reason`` say which and why; the records before it are returned) or
    bytes follow the last record.
    """
    cdef Py_ssize_t k, v, rsize, total, whole, check, i = 0, tombstones = 0
    cdef uint64_t expected
    cdef Py_buffer view
    cdef const unsigned char *base
    cdef const unsigned char *p
    cdef unsigned char tag = 0
    cdef int why = _R_NONE
    cdef bytes records
    _sizes(key_size, value_size, &k, &v)
    rsize = 5 + k + v
    mv = memoryview(payload).cast("B")
    PyObject_GetBuffer(mv, &view, PyBUF_SIMPLE)
    try:
        total = view.len
        if total < 8:
            return SSTableScan(b"", 0, -1, SST_SHORT, 0, "", 0)
        base = <const unsigned char *>view.buf
        expected = _ld64(base)
        whole = (total - 8) // rsize
        check = whole if <uint64_t>whole < expected else <Py_ssize_t>expected
        with nogil:
            p = base + 8
            while i < check:
                tag = p[4]
                if tag > 1:
                    why = _R_TAG
                    break
                if _record_crc(p + 4, k, v) != _ld32(p):
                    why = _R_CRC
                    break
                if tag == 0 and not _is_zero(p + 5 + k, v):
                    why = _R_TOMB
                    break
                if i and memcmp(p + 5, p + 5 - rsize, k) <= 0:
                    why = _R_ORDER
                    break
                tombstones += tag == 0
                i += 1
                p += rsize
        records = PyBytes_FromStringAndSize(<const char *>base + 8, i * rsize)
    finally:
        PyBuffer_Release(&view)
    if why != _R_NONE:
        if why == _R_TAG:
            reason = f"{SST_BAD_TAG} {tag}"
        elif why == _R_CRC:
            reason = SST_CRC
        elif why == _R_TOMB:
            reason = SST_TOMBSTONE_VALUE
        else:
            reason = SST_BAD_KEY_ORDER
        return SSTableScan(records, i, expected, SST_CORRUPT, i, reason, tombstones)
    if <uint64_t>whole > expected or (
        <uint64_t>whole == expected and (total - 8) % rsize
    ):
        return SSTableScan(records, i, expected, SST_CORRUPT, i, SST_TRAILING, tombstones)
    if <uint64_t>whole < expected:
        return SSTableScan(records, i, expected, SST_SHORT, i, "", tombstones)
    return SSTableScan(records, i, expected, SST_COMPLETE, -1, "", tombstones)


# -- sorting and merging ------------------------------------------------------------

# A record to sort: the first 8 key bytes as a big-endian integer (zero
# filled), so most comparisons are one integer compare, and its offset.
ctypedef struct _Ent:
    uint64_t pre
    Py_ssize_t off


cdef inline int _ent_cmp(const _Ent *a, const _Ent *b, const unsigned char *data,
                         Py_ssize_t k) noexcept nogil:
    """Compare the keys of two records: <0, 0 or >0."""
    if a.pre != b.pre:
        return -1 if a.pre < b.pre else 1
    if k > 8:
        return memcmp(data + a.off + 13, data + b.off + 13, k - 8)
    return 0


cdef void _merge_sort(_Ent *a, _Ent *tmp, Py_ssize_t n, const unsigned char *data,
                      Py_ssize_t k) noexcept nogil:
    """Stable sort of ``a`` by key: insertion sort of blocks of 32, then
    bottom-up merges that take from the right only when strictly smaller."""
    cdef Py_ssize_t lo, hi, mid, i, j, o, w
    cdef _Ent x
    cdef _Ent *src = a
    cdef _Ent *dst = tmp
    cdef _Ent *swap
    for lo in range(0, n, 32):
        hi = lo + 32 if lo + 32 < n else n
        for i in range(lo + 1, hi):
            x = a[i]
            j = i
            while j > lo and _ent_cmp(&x, &a[j - 1], data, k) < 0:
                a[j] = a[j - 1]
                j -= 1
            a[j] = x
    w = 32
    while w < n:
        lo = 0
        while lo < n:
            mid = lo + w if lo + w < n else n
            hi = lo + 2 * w if lo + 2 * w < n else n
            if mid >= hi or _ent_cmp(&src[mid - 1], &src[mid], data, k) <= 0:
                memcpy(dst + lo, src + lo, (hi - lo) * sizeof(_Ent))
            else:
                i = lo
                j = mid
                o = lo
                while i < mid and j < hi:
                    if _ent_cmp(&src[j], &src[i], data, k) < 0:
                        dst[o] = src[j]
                        j += 1
                    else:
                        dst[o] = src[i]
                        i += 1
                    o += 1
                if i < mid:
                    memcpy(dst + o, src + i, (mid - i) * sizeof(_Ent))
                elif j < hi:
                    memcpy(dst + o, src + j, (hi - j) * sizeof(_Ent))
            lo += 2 * w
        swap = src
        src = dst
        dst = swap
        w *= 2
    if src != a:
        memcpy(a, src, n * sizeof(_Ent))


cdef Py_ssize_t _sort_last(const unsigned char *data, Py_ssize_t n, Py_ssize_t k,
                           Py_ssize_t rsize, bint drop, _Ent *ents, _Ent *tmp,
                           unsigned char *out) noexcept nogil:
    """Write the last record of each key, in key order, to ``out`` (tombstones
    left out with ``drop``); return the bytes written.  This is the twin's
    ``dict`` of latest records followed by ``sorted``."""
    cdef Py_ssize_t i, written = 0
    for i in range(n):
        ents[i].pre = tl_prefix(data + i * rsize + 5, <size_t>k)
        ents[i].off = i * rsize
    _merge_sort(ents, tmp, n, data, k)
    for i in range(n):
        # Equal keys stay in input order: the last of a run of them wins.
        if i + 1 < n and _ent_cmp(&ents[i], &ents[i + 1], data, k) == 0:
            continue
        if drop and data[ents[i].off + 4] == 0:
            continue
        memcpy(out + written, data + ents[i].off, rsize)
        written += rsize
    return written


cdef bytes _sorted_latest(const unsigned char *data, Py_ssize_t size, Py_ssize_t k,
                          Py_ssize_t rsize, bint drop):
    cdef Py_ssize_t n = size // rsize, written
    cdef _Out out = _Out()
    cdef _Ent *ents
    cdef _Ent *tmp
    if n == 0:
        return b""
    out.reserve(n * rsize)
    ents = <_Ent *>malloc(n * sizeof(_Ent))
    tmp = <_Ent *>malloc(n * sizeof(_Ent))
    if ents == NULL or tmp == NULL:
        free(ents)
        free(tmp)
        raise MemoryError()
    with nogil:
        written = _sort_last(data, n, k, rsize, drop, ents, tmp, out.data)
        free(ents)
        free(tmp)
    return out.take(written)


def sort_records(records: bytes, key_size: int, value_size: int) -> bytes:
    """Sort records by key, keeping only the last record of each key.

    This turns the changes of a log (in log order) into an sstable's records.
    O(n log n): a stable merge sort of (key prefix, offset) pairs.
    """
    cdef Py_ssize_t k, v, rsize
    cdef bytes data
    _sizes(key_size, value_size, &k, &v)
    rsize = 5 + k + v
    data = _records_data(records, rsize)
    return _sorted_latest(<const unsigned char *>PyBytes_AS_STRING(data),
                          PyBytes_GET_SIZE(data), k, rsize, False)


ctypedef struct _Run:
    const unsigned char *data
    Py_ssize_t pos
    Py_ssize_t end


cdef inline bint _run_lt(const _Run *runs, Py_ssize_t a, Py_ssize_t b,
                         Py_ssize_t k) noexcept nogil:
    """Heap order: smaller head key first, the newer run first on a tie."""
    cdef int c = memcmp(runs[a].data + runs[a].pos + 5, runs[b].data + runs[b].pos + 5, k)
    return c < 0 or (c == 0 and a > b)


cdef void _sift_node(Py_ssize_t *heap, Py_ssize_t size, Py_ssize_t i,
                     const _Run *runs, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t child, top = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _run_lt(runs, heap[child + 1], heap[child], k):
            child += 1
        if not _run_lt(runs, heap[child], top, k):
            break
        heap[i] = heap[child]
        i = child
    heap[i] = top


cdef Py_ssize_t _advance_top(Py_ssize_t *heap, Py_ssize_t size, _Run *runs,
                             Py_ssize_t rsize, Py_ssize_t k) noexcept nogil:
    """Step the run at the top of the heap; return the new heap size."""
    cdef Py_ssize_t r = heap[0]
    runs[r].pos += rsize
    if runs[r].pos >= runs[r].end:
        size -= 1
        heap[0] = heap[size]
    if size > 0:
        _sift_node(heap, size, 0, runs, k)
    return size


cdef Py_ssize_t _kway_merge(_Run *runs, Py_ssize_t nruns, Py_ssize_t k,
                            Py_ssize_t rsize, bint drop, Py_ssize_t *heap,
                            unsigned char *out) noexcept nogil:
    """Merge sorted runs with unique keys; the newest run wins a key."""
    cdef Py_ssize_t i, size = 0, written = 0
    cdef const unsigned char *rec
    for i in range(nruns):
        if runs[i].pos < runs[i].end:
            heap[size] = i
            size += 1
    # Heapify: sift down every inner node, last first.
    i = size // 2
    while i > 0:
        i -= 1
        _sift_node(heap, size, i, runs, k)
    while size > 0:
        rec = runs[heap[0]].data + runs[heap[0]].pos
        if not (drop and rec[4] == 0):
            memcpy(out + written, rec, rsize)
            written += rsize
        size = _advance_top(heap, size, runs, rsize, k)
        # Older runs holding the same key come next: skip them.
        while size > 0 and memcmp(runs[heap[0]].data + runs[heap[0]].pos + 5,
                                  rec + 5, k) == 0:
            size = _advance_top(heap, size, runs, rsize, k)
    return written


def merge_runs(
    runs: Sequence[bytes], key_size: int, value_size: int, drop_tombstones: bool
) -> bytes:
    """Merge sorted runs of records, oldest first, into one sorted run.

    For a key found in several runs the newest record wins.  With
    ``drop_tombstones`` (the merge includes the oldest sstable, so nothing
    older is left to hide) tombstones are left out of the result.

    Runs that are sorted with unique keys (every run the engine makes) are
    merged k ways with a heap, O(n log k); otherwise the result is still the
    twin's (the last record of each key, in key order), by a sort.
    """
    cdef Py_ssize_t k = 0, v = 0, rsize = 0, nruns, i, total = 0, written
    cdef bint drop, sorted_runs = True
    cdef list datas = []
    cdef bytes data
    cdef _Run *cruns
    cdef Py_ssize_t *heap
    cdef unsigned char *joined
    cdef _Out out
    _sizes(key_size, value_size, &k, &v)
    rsize = 5 + k + v
    for run in runs:
        datas.append(_records_data(run, rsize))
    drop = drop_tombstones
    nruns = len(datas)
    if nruns == 0:
        return b""
    cruns = <_Run *>malloc(nruns * sizeof(_Run))
    heap = <Py_ssize_t *>malloc(nruns * sizeof(Py_ssize_t))
    if cruns == NULL or heap == NULL:
        free(cruns)
        free(heap)
        raise MemoryError()
    try:
        for i in range(nruns):
            data = datas[i]
            cruns[i].data = <const unsigned char *>PyBytes_AS_STRING(data)
            cruns[i].pos = 0
            cruns[i].end = (PyBytes_GET_SIZE(data) // rsize) * rsize
            total += cruns[i].end
        with nogil:
            for i in range(nruns):
                if _first_unordered(cruns[i].data + 5, cruns[i].end // rsize, k, rsize) >= 0:
                    sorted_runs = False
                    break
        if not sorted_runs:
            # Not runs the engine makes: the last record of each key wins.
            joined = <unsigned char *>malloc(total if total else 1)
            if joined == NULL:
                raise MemoryError()
            try:
                with nogil:
                    total = 0
                    for i in range(nruns):
                        memcpy(joined + total, cruns[i].data, cruns[i].end)
                        total += cruns[i].end
                return _sorted_latest(joined, total, k, rsize, drop)
            finally:
                free(joined)
        out = _Out()
        out.reserve(total)
        with nogil:
            written = _kway_merge(cruns, nruns, k, rsize, drop, heap, out.data)
        return out.take(written)
    finally:
        free(cruns)
        free(heap)
