# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
# cython: cdivision=True, initializedcheck=False, annotation_typing=False
"""The in-memory sorted map, compiled: the twin of ``tinylsm._map_py``.

Fixed-size keys (K bytes) map to fixed-size values (V bytes, V may be 0).
No Python object is kept per key; all data sits in a few C arrays:

* the *arena*: slots of K + V bytes (key then value), grown by doubling;
  slot ids are ``uint32``;
* a *live bitmap*, one bit per slot;
* a *hash table* of ``slot + 1`` (``uint32``, 0 is empty), with bits of the
  key's hash in the entry's high bits so that a probe seldom reads another
  key's slot (see ``tl_tag`` in ``_map.h``): open addressing, power-of-two
  size, linear probing, load factor at most 0.7, deletion by backward shift
  (no tombstones).  It grows by doubling, incrementally: the previous table
  is kept and migrated a few positions per change (see ``_grow``), so that
  no single change pays for moving every key;
* the *sorted index*: slot ids in key order (``memcmp`` order), maintained
  lazily.  A new key's slot goes to the *pending* list; a deleted key's slot
  goes to the *zombie* list.  The first ordered read after changes (or a
  delete that finds the zombies outnumbering half the keys) *merges*: it
  drops dead ids from the pending list, sorts it (an in-place MSD radix sort
  on 8-byte key prefixes; skipped when the keys came in increasing order,
  as they do when an sstable is loaded), removes the zombies from the sorted
  index and merges the pending ids in (galloping from the end, moving runs
  of ids with ``memmove``).  Only then do zombie slots go to the *free list*
  for reuse, so a reused slot never leaves a stale id in the index.

Memory per key is K + V (arena) + 4 / load (hash table, 5.7 to 11.4) + 4
(sorted index) + 1/8 (bitmap), plus 4 per key changed since the last merge;
the first sort of m new keys borrows 12 * m bytes for a moment, and while
the table grows the previous one (half its size) is kept too.  Arrays of
1 MiB or more are mapped pages of their own (``mmap``, grown with ``mremap``
on Linux), so freed memory goes back to the system at once and growing
space that is never written costs no resident memory; a lookup reads the
table, then the arena, at random, so both ask for huge pages (see
``tl_advise_huge`` in ``_map.h`` for when).

A lookup of a key in a map larger than the CPU's caches waits for two
cache misses in a row, the table's entry and then the slot it names (the
slot's address is known only once the entry is read); ``get_many``
overlaps those of many keys.

Every method runs entirely while holding the GIL and never calls back into
Python code while the arrays are in an intermediate state, so each call is
atomic with respect to other Python threads; the engine relies on that for
its lock-free reads.  Sorting holds the GIL too.
"""
cimport cython
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Check, PyByteArray_GET_SIZE
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.ref cimport PyObject

import os

from ._format import MAX_ITEM_SIZE, as_int, bad_size, bad_type, check_sizes
from .errors import ClosedError

cdef extern from "Python.h":
    # Raw forms, so that reference counts are explicit where it matters.
    PyObject *_new_bytes "PyBytes_FromStringAndSize"(const char *s, Py_ssize_t n)
    PyObject *_new_tuple "PyTuple_New"(Py_ssize_t n)
    PyObject *_new_list "PyList_New"(Py_ssize_t n)
    void _list_set "PyList_SET_ITEM"(PyObject *t, Py_ssize_t i, PyObject *o)
    void _incref "Py_INCREF"(PyObject *o)
    PyObject **_seq_fast_items "PySequence_Fast_ITEMS"(PyObject *o)
    PyObject *_none "Py_None"
    PyObject *_tuple_item "PyTuple_GET_ITEM"(PyObject *t, Py_ssize_t i)
    void _tuple_set "PyTuple_SET_ITEM"(PyObject *t, Py_ssize_t i, PyObject *o)
    Py_ssize_t _refcnt "Py_REFCNT"(PyObject *o)
    void _decref "Py_DECREF"(PyObject *o)

cdef extern from "_map.h":
    uint64_t tl_load64be(const uint8_t *p) noexcept nogil
    uint64_t tl_prefix(const uint8_t *p, size_t n) noexcept nogil
    uint64_t tl_hash(const uint8_t *p, size_t k, uint64_t seed) noexcept nogil
    bint tl_keyeq(const uint8_t *a, const uint8_t *b, size_t k) noexcept nogil
    int tl_keycmp(const uint8_t *a, const uint8_t *b, size_t k) noexcept nogil
    uint32_t tl_tag(uint64_t h, unsigned int shift) noexcept nogil
    uint32_t tl_id_mask(unsigned int shift) noexcept nogil
    unsigned int tl_id_bits(size_t positions, size_t slots) noexcept nogil
    void TL_PREFETCH(const void *p) noexcept nogil
    void *tl_alloc(size_t n, int flags) noexcept nogil
    void tl_advise_huge(void *p, size_t n) noexcept nogil
    size_t tl_shrink_tail(void *p, size_t n) noexcept nogil
    enum:
        TL_ZERO
        TL_HUGE
        TL_SMALL
        TL_MMAP_MIN
    void tl_free(void *p, size_t n) noexcept nogil
    void *tl_realloc(void *p, size_t old, size_t n) noexcept nogil
    void *tl_realloc0(void *p, size_t old, size_t n) noexcept nogil
    void *tl_realloc_huge(void *p, size_t old, size_t n, int advise) noexcept nogil
    int tl_ctz64(uint64_t x) noexcept nogil
    object _steal "TL_STEAL"(PyObject *o)  # a new reference, or NULL: raise
    size_t _NOPOS "TL_NOPOS"
    size_t _MAX_SLOTS "TL_MAX_SLOTS"
    uint32_t _REMOVED "TL_REMOVED"
    uint32_t _TOMB "TL_TOMB"

# Per-process hash seed.
cdef uint64_t _SEED = int.from_bytes(os.urandom(8), "little")

cdef extern from "_format.h":
    enum: _MAX_ITEM "TL_MAX_ITEM"
    void tinylsm_crc32_init() noexcept nogil
    void tl_frame_put(unsigned char *f, const unsigned char *key, const unsigned char *value,
                      size_t k, size_t v, size_t pad) noexcept nogil
if MAX_ITEM_SIZE != _MAX_ITEM:  # pragma: no cover - guards an edit of _format
    raise ImportError("tinylsm._map was built for MAX_ITEM_SIZE 65536")

# _NOPOS: no key found.  Slots: the table stores slot + 1 and the index
# uses 2**32 - 1 as a "removed" mark (_REMOVED), so 2**32 - 2 (_MAX_SLOTS).
# A delete merges eagerly once there are more zombies than _ZOMBIE_SLACK plus
# half the keys, so that slots of deleted keys are reused even without
# ordered reads.  Pending and zombie buffers above _KEEP_IDS ids are freed
# after a merge.
# Radix sort buckets of at most _SMALL_SORT are insertion-sorted.
# The iterator prefetches the slot _AHEAD ids ahead (an export's gather,
# with no Python object to make per record, _GATHER_AHEAD); apply_records hashes
# _RING records ahead (a power of two).
# A growing table migrates _MIGRATE positions of the previous one per change
# (at least 2: see _grow), prefetching the slots _MIGRATE_AHEAD ahead.
cdef enum:
    _ZOMBIE_SLACK = 1024
    _KEEP_IDS = 4096
    _SMALL_SORT = 32
    _AHEAD = 16
    _GATHER_AHEAD = 32
    _RING = 16
    _MIGRATE = 64
    _MIGRATE_AHEAD = 8

_CHANGED = "tinylsm store changed during iteration"


ctypedef struct _Ids:
    uint32_t *p
    size_t n
    size_t cap


ctypedef struct _Pair:
    # an 8-byte key prefix (big-endian, as hi:lo) and its slot id: 12 bytes
    uint32_t hi
    uint32_t lo
    uint32_t id


cdef int _ids_reserve(_Ids *v, size_t need) except -1:
    """Make room for ``need`` ids in total (grows by half again at least)."""
    cdef size_t cap
    cdef uint32_t *p
    if need <= v.cap:
        return 0
    cap = v.cap + (v.cap >> 1)
    if cap < need:
        cap = need
    if cap < 16:
        cap = 16
    p = <uint32_t *>tl_realloc(v.p, v.cap * sizeof(uint32_t), cap * sizeof(uint32_t))
    if p == NULL:
        raise MemoryError()
    v.p = p
    v.cap = cap
    return 0


cdef void _ids_free(_Ids *v) noexcept:
    tl_free(v.p, v.cap * sizeof(uint32_t))
    v.p = NULL
    v.n = 0
    v.cap = 0


cdef inline uint64_t _pkey(const _Pair *p) noexcept nogil:
    return (<uint64_t>p.hi << 32) | p.lo


cdef inline unsigned int _digit(const _Pair *p, int byte) noexcept nogil:
    if byte < 4:
        return (p.hi >> (24 - 8 * byte)) & 0xFF
    return (p.lo >> (56 - 8 * byte)) & 0xFF


cdef void _insertion_sort(_Pair *a, size_t n) noexcept nogil:
    cdef size_t i, j
    cdef _Pair x
    cdef uint64_t k
    for i in range(1, n):
        x = a[i]
        k = _pkey(&x)
        j = i
        while j > 0 and _pkey(&a[j - 1]) > k:
            a[j] = a[j - 1]
            j -= 1
        a[j] = x


cdef void _radix_sort(_Pair *a, size_t n, int byte, int nbytes) noexcept nogil:
    """Sort ``a`` by prefix, in place (American flag sort), from ``byte`` on.

    Every element's prefix bytes before ``byte`` are equal.  Buckets where
    all elements share the byte are skipped without moving anything.
    """
    cdef size_t count[256]
    cdef size_t nxt[256]
    cdef size_t end[256]
    cdef size_t i, s, c
    cdef unsigned int b, d
    cdef _Pair x, t
    while True:
        if n <= _SMALL_SORT:
            _insertion_sort(a, n)
            return
        if byte >= nbytes:
            return
        memset(count, 0, sizeof(count))
        for i in range(n):
            count[_digit(&a[i], byte)] += 1
        if count[_digit(&a[0], byte)] != n:
            break
        byte += 1
    s = 0
    for b in range(256):
        nxt[b] = s
        s += count[b]
        end[b] = s
    for b in range(256):
        while nxt[b] < end[b]:
            x = a[nxt[b]]
            d = _digit(&x, byte)
            while d != b:
                t = a[nxt[d]]
                a[nxt[d]] = x
                nxt[d] += 1
                x = t
                d = _digit(&x, byte)
            a[nxt[b]] = x
            nxt[b] += 1
    if byte + 1 >= nbytes:
        return
    s = 0
    for b in range(256):
        c = count[b]
        if c > 1:
            _radix_sort(a + s, c, byte + 1, nbytes)
        s += c


@cython.auto_pickle(False)
@cython.final
@cython.auto_pickle(False)
cdef class SortedMap:
    """Fixed-size ``bytes`` keys to ``bytes`` values, iterable in key order.

    ``get``, ``set``, ``delete`` and ``in`` are O(1); the sorted index is
    brought up to date on the first ordered read after changes, in
    O(m log m + m log(n/m) + n) for m changes (the ``n`` term is a ``memmove``
    of 4-byte ids).  ``m[key]`` raises ``KeyError`` for an absent key.
    """

    cdef size_t K, V, S           # key, value and slot sizes
    cdef uint8_t *arena           # slots of K + V bytes
    cdef size_t nslots            # slots handed out (live, zombie or free)
    cdef size_t slotcap           # slots allocated
    cdef uint64_t *live           # bitmap over slots
    cdef size_t livewords         # its size in 64-bit words
    cdef uint32_t *table          # slot + 1 and hash bits (see tl_tag), or 0 for empty
    cdef size_t tmask             # table size - 1
    cdef unsigned int tshift      # its entries' id bits (tl_id_bits)
    cdef uint32_t tids            # the mask of those bits
    cdef size_t tlimit            # most keys before the table grows
    cdef uint32_t *old            # the previous table while it is migrated, else NULL
    cdef size_t omask             # its size - 1
    cdef unsigned int oshift      # its entries' id bits
    cdef uint32_t oids            # the mask of those bits
    cdef size_t ocursor           # its positions below this have been migrated
    cdef size_t ostep             # positions migrated per change (_MIGRATE)
    cdef uint8_t *spent           # a migrated previous table, released piecemeal
    cdef size_t spentlen          # its bytes left
    cdef bint growing             # old or spent is set: changes have work to do
    cdef bint defer_huge          # a bulk load: no huge pages until it ends
    cdef size_t newpos            # where _locate found room for a new key
    cdef uint32_t newtag          # and its entry's hash bits
    cdef size_t n                 # live keys
    cdef _Ids order               # sorted index: slot ids in key order
    cdef _Ids pending             # slots of keys added since the last merge
    cdef _Ids zombies             # slots of keys deleted since the last merge
    cdef _Ids freelist            # slots ready for reuse
    cdef bint pending_sorted      # pending keys came in non-decreasing order
    cdef object dead              # (exception type, message) once invalidated
    #: Bumped by every change; iterators compare it to detect writes.
    cdef readonly unsigned long long version

    def __cinit__(self, key_size, value_size):
        check_sizes(key_size, value_size)
        self.table = <uint32_t *>tl_alloc(8 * sizeof(uint32_t), TL_ZERO)
        if self.table == NULL:
            raise MemoryError()
        self.tmask = 7
        self.tlimit = 5
        self._set_shift(tl_id_bits(8, 64))  # the arena's first 64 slots
        self.ostep = _MIGRATE
        self.pending_sorted = True
        self.K = key_size
        self.V = value_size
        self.S = self.K + self.V
        self.dead = None

    def __dealloc__(self):
        self._free_all()

    @cython.final
    cdef void _free_all(self) noexcept:
        tl_free(self.arena, self.slotcap * self.S)
        tl_free(self.live, self.livewords * 8)
        if self.table != NULL:
            tl_free(self.table, (self.tmask + 1) * sizeof(uint32_t))
        self._drop_old()
        self.arena = NULL
        self.live = NULL
        self.table = NULL
        _ids_free(&self.order)
        _ids_free(&self.pending)
        _ids_free(&self.zombies)
        _ids_free(&self.freelist)
        self.nslots = self.slotcap = self.livewords = self.n = 0
        self.tmask = self.tlimit = 0
        self.pending_sorted = True

    # -- sizes --------------------------------------------------------------------

    @property
    def key_size(self):
        """K, fixed when the map is made."""
        return self.K

    @property
    def value_size(self):
        """V, fixed when the map is made."""
        return self.V

    @property
    def nbytes(self):
        """Bytes of memory held by the map's arrays (allocated, not touched)."""
        return (self.slotcap * self.S + self.livewords * 8
                + ((self.tmask + 1) if self.table != NULL else 0) * 4
                + ((self.omask + 1) if self.old != NULL else 0) * 4 + self.spentlen
                + (self.order.cap + self.pending.cap + self.zombies.cap
                   + self.freelist.cap) * 4)

    def __sizeof__(self):
        return object.__sizeof__(self) + self.nbytes

    # -- invalidation -------------------------------------------------------------

    def _invalidate(self, exc_type, message):
        """Free everything; from now on every use raises ``exc_type(message)``.

        For an owner that is closed or forked away: lookups then fail loudly
        instead of finding nothing.  Irreversible (``__init__`` aside).
        """
        self._free_all()
        self.dead = (exc_type, str(message))
        self.version += 1

    @cython.final
    cdef int _raise_dead(self) except -1:
        exc_type, message = self.dead
        raise exc_type(message)

    @cython.final
    cdef inline int _alive(self) except -1:
        if self.dead is not None:
            self._raise_dead()
        return 0

    # -- hash table ---------------------------------------------------------------

    @cython.final
    cdef inline void _set_shift(self, unsigned int shift) noexcept:
        self.tshift = shift
        self.tids = tl_id_mask(shift)

    @cython.final
    cdef inline size_t _slot_of(self, uint32_t e) noexcept:
        """The slot a (non-empty) entry of the table names."""
        return <size_t>(e & self.tids) - 1

    @cython.final
    cdef inline size_t _probe(self, const uint8_t *key, uint64_t h, bint *found) noexcept:
        """The table position holding ``key`` (``found`` set), or else the
        empty position where it would go (``found`` cleared).

        Each slot compared is a cache miss in a large map, and the next
        position's entry is almost always on the line just read: so the
        slots of the two positions after the one compared are fetched
        meanwhile, and a key found one or two positions past its home, or
        a new key's probe over a run, costs about one slot's miss, not one
        per slot compared.  Only the slots of entries whose hash bits match
        ``key``'s are read or fetched at all (see tl_tag in _map.h)."""
        cdef size_t K = self.K, S = self.S, mask = self.tmask
        cdef size_t i = <size_t>h & mask, j
        cdef uint32_t e, f, ids = self.tids, tag = tl_tag(h, self.tshift)
        cdef const uint32_t *table = self.table
        cdef const uint8_t *arena = self.arena
        e = table[i]
        if e == 0:
            found[0] = False
            return i
        j = (i + 1) & mask
        f = table[j]
        if f != 0 and (f & ~ids) == tag:
            TL_PREFETCH(arena + <size_t>((f & ids) - 1) * S)
        while True:
            j = (j + 1) & mask  # two positions ahead of i
            f = table[j]
            if f != 0 and (f & ~ids) == tag:
                TL_PREFETCH(arena + <size_t>((f & ids) - 1) * S)
            if (e & ~ids) == tag and tl_keyeq(arena + <size_t>((e & ids) - 1) * S, key, K):
                found[0] = True
                return i
            i = (i + 1) & mask
            e = table[i]
            if e == 0:
                found[0] = False
                return i

    @cython.final
    cdef size_t _probe_old(self, const uint8_t *key, uint64_t h) noexcept:
        """The position of the previous table holding ``key``, or _NOPOS
        (only while it is migrated)."""
        cdef size_t K = self.K, S = self.S, mask = self.omask
        cdef size_t i = <size_t>h & mask
        cdef uint32_t e, ids = self.oids, tag = tl_tag(h, self.oshift)
        cdef const uint32_t *old = self.old
        cdef const uint8_t *arena = self.arena
        while True:
            e = old[i]
            if e == 0:
                return _NOPOS
            if (e != _TOMB and (e & ~ids) == tag
                    and tl_keyeq(arena + <size_t>((e & ids) - 1) * S, key, K)):
                return i
            i = (i + 1) & mask

    @cython.final
    cdef inline size_t _find_h(self, const uint8_t *key, uint64_t h) noexcept:
        """The slot holding ``key`` (of hash ``h``), or _NOPOS."""
        cdef bint found
        cdef size_t pos
        cdef const uint32_t *old = self.old
        if old != NULL:  # both tables' lines are fetched at once
            TL_PREFETCH(old + (<size_t>h & self.omask))
        pos = self._probe(key, h, &found)
        if found:
            return self._slot_of(self.table[pos])
        if old != NULL:
            pos = self._probe_old(key, h)
            if pos != _NOPOS:
                return <size_t>(old[pos] & self.oids) - 1
        return _NOPOS

    @cython.final
    cdef inline size_t _find(self, const uint8_t *key) noexcept:
        """The slot holding ``key``, or _NOPOS."""
        if self.table == NULL:  # invalidated
            return _NOPOS
        return self._find_h(key, tl_hash(key, self.K, _SEED))

    # Growth is incremental.  When a new key would pass the load limit, _grow
    # allocates a table of twice the size (zero pages, mapped lazily: O(1)),
    # keeps the previous one as ``old``, and from then on every change first
    # migrates the next ``ostep`` positions of ``old`` (_migrate, in position
    # order from ``ocursor``) and then does its own work.  While migrating:
    #
    # * every live key is in exactly one of the tables: ``table``, or ``old``
    #   at a position holding its slot + 1;
    # * ``old`` gets no new entries (new keys go to ``table``).  A migrated
    #   position, and one whose key is deleted, becomes _TOMB: occupied but
    #   never a match, so probe runs in ``old`` stay intact, wrapping ones
    #   included, and a key is found there only while it lives there.  Empty
    #   positions stay empty, so a miss in ``old`` costs what it did before;
    # * ``table`` is an ordinary linear-probing table (its deletes shift
    #   back as usual); a key being migrated is absent from it, so migration
    #   only looks for an empty position, comparing no keys.
    #
    # Lookups search ``table``, then ``old``.  Migrating in position order
    # reads ``old`` sequentially and writes ``table`` near positions i and
    # i + C (a key's new home is its old home, or that plus the old size C):
    # two sequential streams, so the new table's pages are faulted in order,
    # and the one random access per key, its slot in the arena, is fetched
    # _MIGRATE_AHEAD positions ahead.  (The one-step _rehash walks the arena
    # and writes the table at random: the same one miss per key.)
    #
    # Migration finishes before ``table`` fills.  Growth starts when a new
    # key finds n = tlimit_old = floor(0.7 C), C >= 8, and the next growth
    # needs n > tlimit_new = floor(1.4 C) >= 2 floor(0.7 C).  So at least
    # tlimit_new - tlimit_old + 1 >= floor(0.7 C) + 1 changes run _migrate in
    # between (the growing insert, one per key added, and the next growing
    # insert before its check), and with ostep >= 2 they migrate at least
    # 2 floor(0.7 C) + 2 >= 1.4 C >= C positions: all of them.  Deletes and
    # overwrites migrate too, which only ends it sooner.  (_grow would still
    # finish a migration in progress, should this ever not hold.)  A change
    # thus pays for at most ostep positions, about ostep * 0.7 keys moved,
    # and a few page faults of the new table.
    #
    # Then the old table goes: a small one at once, a large one (mapped
    # pages) 1 MiB per change (_step), since unmapping 4 KiB pages costs
    # about 0.1 ms per MiB.  That takes 4 C / 2**20 changes, and at least
    # 0.2 C changes are left before the next growth even with ostep = 2.
    # The new table is not asked for huge pages until it is fully written
    # (see tl_advise_huge in _map.h): faulting one in can stall for ms.

    @cython.final
    cdef void _migrate(self, size_t count) noexcept:
        """Move the keys of the next ``count`` positions of the previous
        table into the table; free it once all its positions are done."""
        cdef size_t i = self.ocursor, top = self.omask + 1, end, j, a, slot
        cdef size_t mask = self.tmask, K = self.K, S = self.S
        cdef uint64_t h
        cdef uint32_t e, oids = self.oids
        cdef uint32_t *old = self.old
        cdef uint32_t *table = self.table
        cdef const uint8_t *arena = self.arena
        end = top if count >= top - i else i + count
        while i < end:
            a = i + _MIGRATE_AHEAD
            if a < top:
                e = old[a]
                if e != 0 and e != _TOMB:
                    TL_PREFETCH(arena + <size_t>((e & oids) - 1) * S)
            e = old[i]
            if e != 0 and e != _TOMB:
                slot = <size_t>(e & oids) - 1
                h = tl_hash(arena + slot * S, K, _SEED)
                j = <size_t>h & mask
                while table[j]:
                    j = (j + 1) & mask
                table[j] = tl_tag(h, self.tshift) | <uint32_t>(slot + 1)
                old[i] = _TOMB
            i += 1
        self.ocursor = end
        if end == top:  # done: the table is fully written, the old one unused
            tl_advise_huge(table, (mask + 1) * sizeof(uint32_t))
            if top * sizeof(uint32_t) >= TL_MMAP_MIN:
                self.spent = <uint8_t *>old
                self.spentlen = top * sizeof(uint32_t)
                self.old = NULL
                self.omask = self.ocursor = 0
                self.oshift = self.oids = 0
            else:
                self._drop_old()

    @cython.final
    cdef void _step(self, uint64_t h) noexcept:
        """A change's share of a growth, before it looks up its key (of hash
        ``h``; its line of the previous table is fetched meanwhile):
        migrate ``ostep`` positions, or release a piece of the migrated
        table (unmapping a large one at once costs about 0.1 ms per MiB)."""
        if self.old != NULL:
            TL_PREFETCH(self.old + (<size_t>h & self.omask))
            self._migrate(self.ostep)
        elif self.spent != NULL:
            self.spentlen = tl_shrink_tail(self.spent, self.spentlen)
            if self.spentlen == 0:
                self.spent = NULL
                self.growing = False

    @cython.final
    cdef void _drop_old(self) noexcept:
        """Free the previous table now (its keys all moved, or all re-added)."""
        if self.old != NULL:
            tl_free(self.old, (self.omask + 1) * sizeof(uint32_t))
        tl_free(self.spent, self.spentlen)
        self.old = NULL
        self.spent = NULL
        self.omask = self.ocursor = self.spentlen = 0
        self.oshift = self.oids = 0
        self.growing = False

    @cython.final
    cdef int _grow(self) except -1:
        """Start migrating into a table of twice the size (see above)."""
        cdef size_t cap
        cdef uint32_t *table
        if self.old != NULL:  # not reached: see the bound above
            self._migrate(self.omask + 1)
        cap = (self.tmask + 1) * 2
        if cap > (<size_t>1 << 40):
            raise MemoryError()
        table = <uint32_t *>tl_alloc(cap * sizeof(uint32_t), TL_ZERO)
        if table == NULL:
            raise MemoryError()
        self._drop_old()  # what is left of the one before (little, if anything)
        self.growing = True
        self.old = self.table
        self.omask = self.tmask
        self.oshift = self.tshift
        self.oids = self.tids
        self.ocursor = 0
        self.table = table
        self.tmask = cap - 1
        self.tlimit = cap * 7 // 10
        self._set_shift(tl_id_bits(cap, self.slotcap))
        self._migrate(self.ostep)
        return 0

    @cython.final
    cdef void _advise_huge(self) noexcept:
        """Ask for huge pages for the table and the arena as they stand
        (khugepaged merges pages already faulted in, in the background)."""
        if self.old == NULL:  # else the table is advised once migrated
            tl_advise_huge(self.table, (self.tmask + 1) * sizeof(uint32_t))
        if self.slotcap * self.S >= TL_MMAP_MIN:
            tl_advise_huge(self.arena, self.slotcap * self.S)

    @cython.final
    cdef int _rehash(self, size_t need, size_t slots=0) except -1:
        """Rebuild, in one step, the smallest table that holds ``need`` keys
        (at least the live ones) within the load limit, and whose entries
        name ``slots`` slots (at least the arena's), ending any migration:
        O(n + slots / 64).  Only for a bulk load at least as large as the
        map, so that the work is proportional to the load (or, rarely, for
        an arena that outgrows what the entries can name)."""
        cdef size_t cap = 8, mask, i, slot, w
        cdef uint64_t bits, h
        cdef unsigned int shift
        cdef uint32_t *table
        cdef const uint8_t *arena = self.arena
        cdef size_t K = self.K, S = self.S
        if need < self.n:
            need = self.n
        while cap * 7 // 10 < need:
            if cap > (<size_t>1 << 40):
                raise MemoryError()
            cap *= 2
        table = <uint32_t *>tl_alloc(cap * sizeof(uint32_t),
                                     TL_ZERO | (TL_SMALL if self.defer_huge else TL_HUGE))
        if table == NULL:
            raise MemoryError()
        mask = cap - 1
        shift = tl_id_bits(cap, slots if slots > self.slotcap else self.slotcap)
        for w in range((self.nslots + 63) >> 6):
            bits = self.live[w]
            while bits:
                slot = (w << 6) + tl_ctz64(bits)
                bits &= bits - 1
                h = tl_hash(arena + slot * S, K, _SEED)
                i = <size_t>h & mask
                while table[i]:
                    i = (i + 1) & mask
                table[i] = tl_tag(h, shift) | <uint32_t>(slot + 1)
        tl_free(self.table, (self.tmask + 1) * sizeof(uint32_t))
        self._drop_old()
        self.table = table
        self.tmask = mask
        self.tlimit = cap * 7 // 10
        self._set_shift(shift)
        return 0

    @cython.final
    cdef void _table_remove(self, size_t pos) noexcept:
        """Empty table position ``pos``, shifting later entries of the probe
        run back so that no lookup needs a tombstone."""
        cdef size_t mask = self.tmask, i = pos, j = pos, home
        cdef uint32_t e
        cdef uint32_t *table = self.table
        cdef size_t K = self.K, S = self.S
        while True:
            j = (j + 1) & mask
            e = table[j]
            if e == 0:
                break
            home = <size_t>tl_hash(self.arena + self._slot_of(e) * S, K, _SEED) & mask
            # move e to i unless its home lies cyclically in (i, j]
            if ((j - home) & mask) >= ((j - i) & mask):
                table[i] = e
                i = j
        table[i] = 0

    # -- slots ---------------------------------------------------------------------

    @cython.final
    cdef int _grow_arena(self) except -1:
        """Double the arena (and the live bitmap)."""
        cdef size_t cap = self.slotcap * 2 if self.slotcap else 64
        if cap > _MAX_SLOTS:
            cap = _MAX_SLOTS
        if cap <= self.slotcap:
            raise MemoryError("tinylsm map is full (2**32 - 2 slots)")
        return self._grow_arena_to(cap)

    @cython.final
    cdef int _grow_arena_to(self, size_t cap) except -1:
        """Grow the arena (and the live bitmap) to ``cap`` > slotcap slots."""
        cdef size_t old_words = self.livewords, words
        cdef uint8_t *arena
        cdef uint64_t *live
        if (cap > (<size_t>self.tids) - 1
                or (self.old != NULL and cap > (<size_t>self.oids) - 1)):
            # the entries cannot name the new slots (an arena grown past 4
            # slots per position, as after a table shrunk to fit its keys):
            # rebuild the table, of the same size, with wider ids
            self._rehash(self.tlimit if self.tlimit > self.n else self.n, cap)
        if self.S and cap > (<size_t>-1) // self.S:
            raise MemoryError()
        words = (cap + 63) >> 6
        # both grow in place or by mremap (large blocks): no copy, and the
        # bitmap's new words come zeroed without being touched
        live = <uint64_t *>tl_realloc0(self.live, old_words * 8, words * 8)
        if live == NULL:
            raise MemoryError()
        self.live = live
        self.livewords = words
        if self.S:
            arena = <uint8_t *>tl_realloc_huge(self.arena, self.slotcap * self.S, cap * self.S,
                                               not self.defer_huge)
            if arena == NULL:
                raise MemoryError()
            self.arena = arena
        self.slotcap = cap
        return 0

    @cython.final
    cdef inline bint _is_live(self, size_t slot) noexcept:
        return (self.live[slot >> 6] >> (slot & 63)) & 1

    # -- changes -------------------------------------------------------------------

    # A change is made in two steps, so that the store's fast paths can
    # append the change to the log in between: _locate does everything that
    # may fail (it allocates, and may start a growth, but changes no key),
    # _store then cannot fail.  The store appends its log frame after
    # _locate and calls _store only once the log took it.

    @cython.final
    cdef int _locate(self, const uint8_t *key, uint64_t h, size_t *slot) except -1:
        """Find ``key`` (of hash ``h``): ``slot[0]`` is its slot; or, if it
        is absent, make room for it (table, arena, pending list), note the
        table position it goes to and set ``slot[0]`` to _NOPOS.  Raises
        MemoryError having changed no key."""
        cdef bint found
        cdef size_t pos, opos
        if self.growing:
            self._step(h)
        pos = self._probe(key, h, &found)
        if found:
            slot[0] = self._slot_of(self.table[pos])
            return 0
        if self.old != NULL:
            opos = self._probe_old(key, h)
            if opos != _NOPOS:
                slot[0] = <size_t>(self.old[opos] & self.oids) - 1
                return 0
        if self.K == 0:
            raise RuntimeError("SortedMap.__init__ was not called")
        # every allocation first, so that a MemoryError changes nothing (a
        # growth that has begun changes no key)
        if self.n + 1 > self.tlimit:
            self._grow()
            pos = self._probe(key, h, &found)
        if self.freelist.n == 0 and self.nslots == self.slotcap:
            self._grow_arena()
        _ids_reserve(&self.pending, self.pending.n + 1)
        self.newpos = pos
        self.newtag = tl_tag(h, self.tshift)
        slot[0] = _NOPOS
        return 0

    @cython.final
    cdef void _store(self, const uint8_t *key, const uint8_t *value, size_t slot) noexcept:
        """Set ``key`` to ``value`` right after ``_locate(key, ...)`` gave
        ``slot``, with no change in between."""
        cdef size_t last
        cdef uint8_t *p
        if slot != _NOPOS:
            memcpy(self.arena + slot * self.S + self.K, value, self.V)
            self.version += 1
            return
        if self.freelist.n:
            self.freelist.n -= 1
            slot = self.freelist.p[self.freelist.n]
        else:
            slot = self.nslots
            self.nslots += 1
        p = self.arena + slot * self.S
        memcpy(p, key, self.K)
        memcpy(p + self.K, value, self.V)
        self.live[slot >> 6] |= (<uint64_t>1) << (slot & 63)
        self.table[self.newpos] = self.newtag | <uint32_t>(slot + 1)
        if self.pending_sorted and self.pending.n:
            last = self.pending.p[self.pending.n - 1]
            if tl_keycmp(self.arena + last * self.S, key, self.K) > 0:
                self.pending_sorted = False
        self.pending.p[self.pending.n] = <uint32_t>slot
        self.pending.n += 1
        self.n += 1
        self.version += 1

    @cython.final
    cdef object _set(self, const uint8_t *key, const uint8_t *value, uint64_t h,
                     bint want_old):
        """Set ``key`` (of hash ``h``) to ``value``; the previous value (if
        ``want_old``) or None."""
        cdef size_t slot
        cdef object old = None
        self._locate(key, h, &slot)
        if want_old and slot != _NOPOS:
            old = self._value_at(slot)
        self._store(key, value, slot)
        return old

    @cython.final
    cdef object _delete(self, const uint8_t *key, uint64_t h, bint want_old):
        """Remove ``key`` (of hash ``h``); its value (if ``want_old``, else
        True) or None."""
        cdef bint found
        cdef size_t pos, opos = _NOPOS, slot
        cdef object old = True
        if self.growing:
            self._step(h)
        pos = self._probe(key, h, &found)
        if found:
            slot = self._slot_of(self.table[pos])
        elif self.old != NULL:
            opos = self._probe_old(key, h)
            if opos == _NOPOS:
                return None
            slot = <size_t>(self.old[opos] & self.oids) - 1
        else:
            return None
        _ids_reserve(&self.zombies, self.zombies.n + 1)
        if want_old:
            old = _steal(_new_bytes(<const char *>(self.arena + slot * self.S + self.K),
                                    self.V))
        if found:
            self._table_remove(pos)
        else:  # still in the previous table: a tombstone keeps its runs intact
            self.old[opos] = _TOMB
        self.live[slot >> 6] &= ~((<uint64_t>1) << (slot & 63))
        self.zombies.p[self.zombies.n] = <uint32_t>slot
        self.zombies.n += 1
        self.n -= 1
        self.version += 1
        if self.zombies.n > _ZOMBIE_SLACK + self.n // 2:
            try:
                self._merge()
            except MemoryError:
                pass  # the merge changed nothing; the next one will do it
        return old

    # -- the sorted index ----------------------------------------------------------

    @cython.final
    cdef int _sort_ids(self, uint32_t *ids, size_t n) except -1:
        """Sort slot ids by their keys: radix sort on 8-byte prefixes, then
        each run of equal prefixes on the next 8 bytes, and so on (with a
        work list, not recursion: a long shared prefix goes deep)."""
        cdef _Pair *pairs = <_Pair *>tl_alloc(n * sizeof(_Pair), 0)
        cdef size_t *work = NULL   # (start, count, offset) triples
        cdef size_t *grown
        cdef size_t nwork = 0, capwork = 0, start, cnt, off, width, i, j
        cdef size_t K = self.K, S = self.S
        cdef const uint8_t *base
        cdef uint64_t pre
        if pairs == NULL:
            raise MemoryError()
        start, cnt, off = 0, n, 0
        try:
            while True:
                width = K - off if K - off < 8 else 8
                base = self.arena + off
                for i in range(start, start + cnt):
                    pre = tl_prefix(base + <size_t>ids[i] * S, width)
                    pairs[i].hi = <uint32_t>(pre >> 32)
                    pairs[i].lo = <uint32_t>pre
                    pairs[i].id = ids[i]
                _radix_sort(pairs + start, cnt, 0, <int>width)
                for i in range(start, start + cnt):
                    ids[i] = pairs[i].id
                if K - off > 8:
                    i = start
                    while i < start + cnt:
                        pre = _pkey(&pairs[i])
                        j = i + 1
                        while j < start + cnt and _pkey(&pairs[j]) == pre:
                            j += 1
                        if j - i > 1:
                            if nwork + 3 > capwork:
                                grown = <size_t *>tl_realloc(
                                    work, capwork * sizeof(size_t),
                                    (capwork * 2 if capwork else 48) * sizeof(size_t))
                                if grown == NULL:
                                    raise MemoryError()
                                work = grown
                                capwork = capwork * 2 if capwork else 48
                            work[nwork] = i
                            work[nwork + 1] = j - i
                            work[nwork + 2] = off + 8
                            nwork += 3
                        i = j
                if nwork == 0:
                    break
                nwork -= 3
                start, cnt, off = work[nwork], work[nwork + 1], work[nwork + 2]
        finally:
            tl_free(pairs, n * sizeof(_Pair))
            tl_free(work, capwork * sizeof(size_t))
        return 0

    @cython.final
    cdef size_t _gallop(self, const uint32_t *a, size_t hi, const uint8_t *key) noexcept:
        """How many of ``a[:hi]`` (sorted) are less than ``key``, searching
        back from ``hi``: O(log d) for the answer ``hi - d``."""
        cdef size_t K = self.K, S = self.S, lo, b, step, mid
        cdef const uint8_t *arena = self.arena
        if hi == 0 or tl_keycmp(arena + <size_t>a[hi - 1] * S, key, K) < 0:
            return hi
        b = hi - 1  # a[b] > key
        step = 1
        while True:
            if step > b:
                lo = 0
                break
            mid = b - step
            if tl_keycmp(arena + <size_t>a[mid] * S, key, K) < 0:
                lo = mid + 1
                break
            b = mid
            step *= 2
        # the answer is in [lo, b]; a[b] > key
        while lo < b:
            mid = lo + (b - lo) // 2
            if tl_keycmp(arena + <size_t>a[mid] * S, key, K) < 0:
                lo = mid + 1
            else:
                b = mid
        return lo

    @cython.final
    cdef size_t _lower_bound(self, const uint8_t *key, size_t klen) noexcept:
        """First index of the sorted index whose key is >= the ``klen``
        bytes at ``key`` (``bytes`` comparison: a prefix sorts first)."""
        cdef size_t lo = 0, hi = self.order.n, mid, K = self.K, S = self.S
        cdef size_t common = K if K < klen else klen
        cdef int c
        cdef const uint8_t *arena = self.arena
        cdef const uint32_t *ids = self.order.p
        while lo < hi:
            mid = lo + (hi - lo) // 2
            c = tl_keycmp(arena + <size_t>ids[mid] * S, key, common) if common else 0
            if c < 0 or (c == 0 and K < klen):
                lo = mid + 1
            else:
                hi = mid
        return lo

    @cython.final
    cdef int _merge(self) except -1:
        """Bring the sorted index up to date; free the zombies' slots."""
        cdef size_t np, nz, i, j, first, total, hi, out, pos, cnt, S = self.S, K = self.K
        cdef uint32_t slot
        cdef uint32_t *ids
        cdef uint32_t *pend
        cdef size_t *where = NULL
        if self.pending.n == 0 and self.zombies.n == 0:
            return 0
        nz = self.zombies.n
        # every allocation first (the pending filter below is harmless)
        _ids_reserve(&self.freelist, self.freelist.n + nz)
        _ids_reserve(&self.order, self.order.n + self.pending.n)
        # 1. drop pending ids of keys deleted since
        pend = self.pending.p
        np = 0
        for i in range(self.pending.n):
            slot = pend[i]
            if self._is_live(slot):
                pend[np] = slot
                np += 1
        self.pending.n = np
        # 2. sort them, unless they came in order
        if not self.pending_sorted and np > 1:
            self._sort_ids(pend, np)
        self.pending_sorted = True
        # 3. remove the zombies from the sorted index
        ids = self.order.p
        total = self.order.n
        if nz and total:
            first = total
            if nz < total // 32:
                # few: find each by binary search (its key bytes are intact:
                # a zombie slot is not reused before this merge ends)
                where = <size_t *>tl_alloc(nz * sizeof(size_t), 0)
                if where == NULL:
                    raise MemoryError()
                j = 0
                for i in range(nz):
                    slot = self.zombies.p[i]
                    pos = self._lower_bound(self.arena + <size_t>slot * S, K)
                    if pos < total and ids[pos] == slot:
                        where[j] = pos
                        j += 1
                for i in range(j):
                    ids[where[i]] = _REMOVED
                    if where[i] < first:
                        first = where[i]
                tl_free(where, nz * sizeof(size_t))
            else:
                for i in range(total):
                    if not self._is_live(ids[i]):
                        ids[i] = _REMOVED
                        if i < first:
                            first = i
            out = first
            for i in range(first, total):
                if ids[i] != _REMOVED:
                    ids[out] = ids[i]
                    out += 1
            self.order.n = total = out
        # 4. merge the pending ids in, from the end
        if np:
            hi = total
            out = total + np
            i = np
            while i > 0:
                i -= 1
                slot = pend[i]
                pos = self._gallop(ids, hi, self.arena + <size_t>slot * S)
                cnt = hi - pos
                out -= cnt
                if cnt:
                    memmove(ids + out, ids + pos, cnt * sizeof(uint32_t))
                hi = pos
                out -= 1
                ids[out] = slot
            self.order.n = total + np
        # 5. the zombies' slots are no longer referenced: reuse them
        if nz:
            memcpy(self.freelist.p + self.freelist.n, self.zombies.p, nz * sizeof(uint32_t))
            self.freelist.n += nz
        self.pending.n = 0
        self.zombies.n = 0
        if self.pending.cap > _KEEP_IDS:
            _ids_free(&self.pending)
        if self.zombies.cap > _KEEP_IDS:
            _ids_free(&self.zombies)
        return 0

    # -- public interface ----------------------------------------------------------

    def __len__(self):
        if self.dead is not None:
            self._raise_dead()
        return self.n

    @cython.final
    cdef inline size_t _lookup(self, object key) noexcept:
        """``key``'s slot, or _NOPOS (also for a key that is not bytes-like
        or not K bytes long)."""
        if PyBytes_Check(key):
            if <size_t>PyBytes_GET_SIZE(key) != self.K:
                return _NOPOS
            return self._find(<const uint8_t *>PyBytes_AS_STRING(key))
        return self._lookup_other(key)

    @cython.final
    cdef size_t _lookup_other(self, object key) noexcept:
        if PyByteArray_Check(key):
            if <size_t>PyByteArray_GET_SIZE(key) != self.K:
                return _NOPOS
            return self._find(<const uint8_t *>PyByteArray_AS_STRING(key))
        key = _lookup_bytes(key)
        if key is None or <size_t>PyBytes_GET_SIZE(key) != self.K:
            return _NOPOS
        return self._find(<const uint8_t *>PyBytes_AS_STRING(key))

    @cython.final
    cdef inline object _value_at(self, size_t slot):
        return _steal(_new_bytes(<const char *>(self.arena + slot * self.S + self.K), self.V))

    def __contains__(self, key):
        if self.dead is not None:
            self._raise_dead()
        return self._lookup(key) != _NOPOS

    @cython.always_allow_keywords(False)
    def get(self, key):
        """The value of ``key``, or None (also for a key that is not
        bytes-like or not ``key_size`` bytes long)."""
        cdef size_t slot
        if self.dead is not None:
            self._raise_dead()
        slot = self._lookup(key)
        if slot == _NOPOS:
            return None
        return self._value_at(slot)

    def __getitem__(self, key):
        cdef size_t slot
        if self.dead is not None:
            self._raise_dead()
        slot = self._lookup(key)
        if slot == _NOPOS:
            raise KeyError(key)
        return self._value_at(slot)

    def set(self, key, value):
        """Set ``key`` to ``value``; return the previous value or None.

        Raises TypeError for a key or value that is not bytes-like and
        ValueError for one of the wrong size; nothing changes then.
        """
        self._alive()
        if not (PyBytes_Check(key) and <size_t>PyBytes_GET_SIZE(key) == self.K):
            key = _coerce(key, self.K, "key")
        if not (PyBytes_Check(value) and <size_t>PyBytes_GET_SIZE(value) == self.V):
            value = _coerce(value, self.V, "value")
        cdef const uint8_t *kp = <const uint8_t *>PyBytes_AS_STRING(key)
        return self._set(kp, <const uint8_t *>PyBytes_AS_STRING(value),
                         tl_hash(kp, self.K, _SEED), True)

    @cython.always_allow_keywords(False)
    def delete(self, key):
        """Remove ``key``; return its value, or None if it was absent (also
        for a key that is not bytes-like or not ``key_size`` bytes long)."""
        self._alive()
        if not PyBytes_Check(key):
            key = _lookup_bytes(key)
            if key is None:
                return None
        if <size_t>PyBytes_GET_SIZE(key) != self.K:
            return None
        cdef const uint8_t *kp = <const uint8_t *>PyBytes_AS_STRING(key)
        return self._delete(kp, tl_hash(kp, self.K, _SEED), True)

    def reserve(self, n):
        """Make room for ``n`` keys in all, so that a map loaded up to ``n``
        keys (a bulk load: ``apply_records`` a chunk at a time, as recovery
        does) never grows its hash table or its arena on the way.

        The table is rebuilt once, to the size ``n`` keys grow it to (O(keys
        held now), ending any growth under way); the arena's room is only
        address space until slots are written.  Reserving for more keys than
        come costs the larger table (5.7 to 11.4 bytes per key reserved, as
        its keys touch all its pages); nothing is ever given back to fit a
        smaller ``n``.  Raises TypeError
        for an ``n`` that is not an int, ValueError for a negative one or one
        past the most keys a map holds (2**32 - 2), MemoryError (changing
        nothing) when memory is short.
        """
        cdef size_t want
        self._alive()
        want = as_int(n, "n", 0, _MAX_SLOTS)
        if want > self.tlimit:
            self._rehash(want)
        if want > self.slotcap:
            self._grow_arena_to(want)

    def apply_records(self, records, key_size, value_size):
        """Apply packed records (see ``codec``) in order; tag 0 deletes.

        Raises ValueError (changing nothing) for sizes other than the map's
        or a length that is not a multiple of the record size.
        """
        cdef Py_buffer view
        cdef size_t count, rsize
        self._alive()
        self._check_sizes(key_size, value_size)
        rsize = 5 + self.S
        PyObject_GetBuffer(records, &view, PyBUF_SIMPLE)
        try:
            if <size_t>view.len % rsize:
                raise ValueError(
                    f"packed records: expected a multiple of {rsize} bytes, got {view.len}")
            count = <size_t>view.len // rsize
            presized = self._bulk_begin(count)
            try:
                self._apply_run(<const uint8_t *>view.buf, count, rsize, 5, -1)
            finally:
                self._bulk_end(presized)
        finally:
            PyBuffer_Release(&view)

    def apply_packed(self, records, removals, key_size, value_size):
        """Set the packed records of ``records`` (each its key then its value,
        K + V bytes) in order, then delete the keys of ``removals`` (K bytes
        each; None: none): the changes ``codec.encode_packed`` logs.

        Raises ValueError (changing nothing) for sizes other than the map's
        or a length that is not a multiple of a record (or a key).
        """
        cdef Py_buffer rview
        cdef Py_buffer gview
        cdef size_t n, m = 0
        self._alive()
        self._check_sizes(key_size, value_size)
        PyObject_GetBuffer(records, &rview, PyBUF_SIMPLE)
        gview.buf = NULL
        try:
            if removals is not None:
                PyObject_GetBuffer(removals, &gview, PyBUF_SIMPLE)
            if <size_t>rview.len % self.S:
                raise ValueError(f"packed records: expected a multiple of "
                                 f"{self.S} bytes, got {rview.len}")
            if gview.buf != NULL and <size_t>gview.len % self.K:
                raise ValueError(f"packed keys: expected a multiple of "
                                 f"{self.K} bytes, got {gview.len}")
            n = <size_t>rview.len // self.S
            if gview.buf != NULL:
                m = <size_t>gview.len // self.K
            presized = self._bulk_begin(n + m)
            try:
                self._apply_run(<const uint8_t *>rview.buf, n, self.S, 0, 1)
                if m:
                    self._apply_run(<const uint8_t *>gview.buf, m, self.K, 0, 0)
            finally:
                self._bulk_end(presized)
        finally:
            PyBuffer_Release(&rview)
            if gview.buf != NULL:
                PyBuffer_Release(&gview)

    cdef int _check_sizes(self, key_size, value_size) except -1:
        if key_size != self.K or value_size != self.V:
            raise ValueError(
                f"records of key_size={key_size}, value_size={value_size} for a map of "
                f"key_size={self.K}, value_size={self.V}")
        return 0

    cdef bint _bulk_begin(self, size_t count) noexcept:
        """Before applying ``count`` changes: True if it sized the table
        for them at once (see ``_bulk_end``)."""
        if self.n + count > self.tlimit and self.n <= count:
            # one rehash instead of many, when the map is no larger than
            # the load (so that the rehash, O(n), costs what applying the
            # records does; a smaller load grows incrementally, each record
            # paying its share).  The table and the arena's new pages are
            # faulted in as small pages, and asked for huge ones once
            # loaded (see tl_advise_huge in _map.h).
            self.defer_huge = True
            try:
                self._rehash(self.n + count)
                return True
            except MemoryError:
                return False
        return False

    cdef void _bulk_end(self, bint presized) noexcept:
        """After a load: undo the table's sizing if the changes were mostly
        overwrites or deletes, and ask for huge pages."""
        if presized and self.n < self.tlimit // 4:
            try:
                self._rehash(self.n)
            except MemoryError:
                pass
        if self.defer_huge:
            self.defer_huge = False
            self._advise_huge()

    cdef int _apply_run(self, const uint8_t *p, size_t count, size_t stride, size_t koff,
                        int tag) except -1:
        """Apply ``count`` changes ``stride`` bytes apart from ``p``, each a
        key at ``koff`` and its value after it; ``tag`` 1 sets them, 0
        deletes them, -1 reads each one's tag at ``koff - 1`` (0 deletes)."""
        cdef size_t i, j, K = self.K
        cdef uint64_t h
        cdef uint64_t ring[_RING]
        cdef uint32_t e
        cdef const uint8_t *key
        # Memory latency dominates a large load: the hashes run _RING
        # records ahead, so that the table entry and then the slot it
        # names are fetched while earlier records are applied (and the
        # previous table's entry, while the table grows; a growth during
        # the load changes the table under the ring, which costs only
        # useless prefetches).
        for i in range(count if count < _RING else _RING):
            ring[i] = tl_hash(p + i * stride + koff, K, _SEED)
            TL_PREFETCH(self.table + (<size_t>ring[i] & self.tmask))
        for i in range(count):
            h = ring[i % _RING]
            j = i + _RING
            if j < count:
                ring[j % _RING] = tl_hash(p + j * stride + koff, K, _SEED)
                TL_PREFETCH(self.table + (<size_t>ring[j % _RING] & self.tmask))
                if self.old != NULL:
                    TL_PREFETCH(self.old + (<size_t>ring[j % _RING] & self.omask))
            j = i + _RING // 2
            if j < count:
                e = self.table[<size_t>ring[j % _RING] & self.tmask]
                if e and (e & ~self.tids) == tl_tag(ring[j % _RING], self.tshift):
                    TL_PREFETCH(self.arena + self._slot_of(e) * self.S)
            key = p + i * stride + koff
            if tag == 1 or (tag < 0 and (key - 1)[0]):
                self._set(key, key + K, h, False)
            else:
                self._delete(key, h, False)
        return 0

    def items(self, start=None, stop=None, reverse=False):
        """An iterator of ``(key, value)`` with ``start <= key < stop`` in key
        order (descending with ``reverse``); either bound may be None.

        The range is fixed now; the pairs are read as the iterator advances.
        Its next step after any change raises RuntimeError, as ``dict`` does.
        """
        return self._cursor(_Iter.__new__(_Iter), start, stop, reverse)

    def keys(self, start=None, stop=None, reverse=False):
        """An iterator of the keys ``start <= key < stop`` in key order
        (descending with ``reverse``), as ``items`` gives them but without
        their values (no pair, no value object made per key).

        The range is fixed now; its next step after any change raises
        RuntimeError, as ``items`` does.
        """
        return self._cursor(_KeyIter.__new__(_KeyIter), start, stop, reverse)

    def export(self, start=None, stop=None, reverse=False, chunk_records=65536):
        """An iterator of chunks of the packed records ``key + value`` (K + V
        bytes each) with ``start <= key < stop``, in key order (descending
        with ``reverse``); either bound may be None.

        Each chunk is a read-only ``memoryview`` (format ``B``) of a new
        ``bytes`` object of at most ``chunk_records`` records (only the last
        may hold fewer; an empty range yields no chunk).  A chunk is never
        written again once handed out, so a caller may keep every one.
        Each chunk is copied in one step, holding the GIL, so each is
        consistent; the range is fixed now, and the next step after any
        change raises RuntimeError, as ``items`` does.  Raises TypeError
        for a ``chunk_records`` that is not an int, ValueError for one
        below 1.  Cost: O(K + V) per record, a gather from the arena (the
        slots of the next _GATHER_AHEAD records are prefetched).
        """
        chunk_records = as_int(chunk_records, "chunk_records", 1)
        cdef _Chunks it = _Chunks.__new__(_Chunks)
        self._cursor(it, start, stop, reverse)
        # a range holds at most 2**32 - 2 records: larger counts are all one
        it.chunk = chunk_records if chunk_records < _MAX_SLOTS else _MAX_SLOTS
        return it

    @cython.final
    cdef object _cursor(self, _Cursor it, object start, object stop, bint reverse):
        """``it`` set over the keys ``start <= key < stop`` (either bound
        None), in key order or reversed."""
        cdef size_t lo, hi
        self._alive()
        if start is not None:
            start = _require_bytes(start, "start")
        if stop is not None:
            stop = _require_bytes(stop, "stop")
        self._merge()
        lo = 0 if start is None else self._lower_bound(
            <const uint8_t *>PyBytes_AS_STRING(start), PyBytes_GET_SIZE(start))
        hi = self.order.n if stop is None else self._lower_bound(
            <const uint8_t *>PyBytes_AS_STRING(stop), PyBytes_GET_SIZE(stop))
        if hi < lo:
            hi = lo
        it.m = self
        it.version = self.version
        if reverse:
            it.pos = <Py_ssize_t>hi - 1
            it.end = <Py_ssize_t>lo - 1
            it.step = -1
        else:
            it.pos = lo
            it.end = hi
            it.step = 1
        return it

    @property
    def _arena_block(self):
        """(address, bytes) of the arena's memory; for tests."""
        return (<size_t>self.arena, self.slotcap * self.S)

    @property
    def _table_block(self):
        """(address, bytes) of the hash table's memory; for tests."""
        return (<size_t>self.table, (self.tmask + 1) * sizeof(uint32_t))

    @property
    def _id_bits(self):
        """How many low bits of the table's entries hold a slot id (the
        rest hold hash bits: see tl_tag in _map.h); for tests."""
        return self.tshift

    @property
    def _migrating(self):
        """Whether the table is growing (the previous one still in use); for tests."""
        return self.old != NULL

    def _set_migration_step(self, positions):
        """Migrate ``positions`` (at least 2) positions of a growing table per
        change from now on, instead of _MIGRATE; for tests, which make
        growth span many changes.  Call it before the table first grows."""
        if positions < 2:
            raise ValueError("a migration step of at least 2 positions")
        self.ostep = positions

    def _where(self, key):
        """Where the table holds ``key`` (``bytes`` of key_size): None, or
        (which, position, home, size) with which 0 for the table and 1 for
        the previous one while it is migrated; for tests."""
        cdef uint64_t h
        cdef bint found
        cdef size_t pos
        self._alive()
        key = _coerce(key, self.K, "key")
        h = tl_hash(<const uint8_t *>PyBytes_AS_STRING(key), self.K, _SEED)
        pos = self._probe(<const uint8_t *>PyBytes_AS_STRING(key), h, &found)
        if found:
            return (0, pos, <size_t>h & self.tmask, self.tmask + 1)
        if self.old != NULL:
            pos = self._probe_old(<const uint8_t *>PyBytes_AS_STRING(key), h)
            if pos != _NOPOS:
                return (1, pos, <size_t>h & self.omask, self.omask + 1)
        return None

    def _check(self):
        """Verify the invariants (after bringing the index up to date); for tests."""
        cdef size_t i, j, slot, home, mask, live = 0, entries = 0, K = self.K, S = self.S
        cdef size_t omask = self.omask, left
        cdef uint32_t e
        cdef uint64_t h
        self._alive()
        self._merge()
        mask = self.tmask
        if self.pending.n or self.zombies.n:
            raise AssertionError("pending or zombie ids left after a merge")
        if self.nslots > self.slotcap or self.n > self.tlimit or self.tlimit >= mask + 1:
            raise AssertionError("counts out of bounds")
        # the entries name every slot of the arena (ids + 1 below the mask)
        if (self.tids != tl_id_mask(self.tshift) or self.slotcap > (<size_t>self.tids) - 1
                or (self.old != NULL and self.slotcap > (<size_t>self.oids) - 1)):
            raise AssertionError(f"{self.slotcap} slots past the entries' ids "
                                 f"({self.tshift} bits; previous table {self.oshift})")
        for slot in range(self.slotcap):
            if self._is_live(slot):
                if slot >= self.nslots:
                    raise AssertionError(f"slot {slot} live beyond the handed-out slots")
                live += 1
                if self._find(self.arena + slot * S) != slot:
                    raise AssertionError(f"live slot {slot} not found by its key")
        if live != self.n:
            raise AssertionError(f"{live} live slots for {self.n} keys")
        for i in range(mask + 1):
            e = self.table[i]
            if e == 0:
                continue
            if e == _TOMB:
                raise AssertionError(f"tombstone at table position {i}")
            entries += 1
            slot = self._slot_of(e)
            if slot >= self.nslots or not self._is_live(slot):
                raise AssertionError(f"table entry {i} names dead slot {slot}")
            h = tl_hash(self.arena + slot * S, K, _SEED)
            if (e & ~self.tids) != tl_tag(h, self.tshift):
                raise AssertionError(f"table entry {i}: hash bits not its key's")
            home = <size_t>h & mask
            j = home
            while j != i:
                if self.table[j] == 0:
                    raise AssertionError(f"table entry {i} unreachable from {home}")
                j = (j + 1) & mask
        if self.growing != (self.old != NULL or self.spent != NULL):
            raise AssertionError("growth flag out of step")
        if self.old != NULL:
            # the previous table: keys only at positions not yet migrated,
            # each reachable from its home through occupied positions
            if self.ocursor > omask or self.ostep < 2 or 2 * (omask + 1) != mask + 1:
                raise AssertionError("migration state out of bounds")
            # _grow's bound: the changes left before the next growth (at
            # least one per key added) migrate every position left
            left = omask + 1 - self.ocursor
            if left > self.ostep * (self.tlimit - self.n + 1):
                raise AssertionError(
                    f"{left} positions to migrate in {self.tlimit - self.n + 1} changes")
            for i in range(omask + 1):
                e = self.old[i]
                if e == 0 or e == _TOMB:
                    continue
                if i < self.ocursor:
                    raise AssertionError(f"migrated position {i} still holds a key")
                entries += 1
                slot = <size_t>(e & self.oids) - 1
                if slot >= self.nslots or not self._is_live(slot):
                    raise AssertionError(f"previous table's entry {i} names dead slot {slot}")
                h = tl_hash(self.arena + slot * S, K, _SEED)
                if (e & ~self.oids) != tl_tag(h, self.oshift):
                    raise AssertionError(f"previous table's entry {i}: hash bits not its key's")
                home = <size_t>h & omask
                j = home
                while j != i:
                    if self.old[j] == 0:
                        raise AssertionError(
                            f"previous table's entry {i} unreachable from {home}")
                    j = (j + 1) & omask
        # every live slot is found by its key and every entry names a live
        # slot, so n entries in all means that no key is in both tables
        if entries != self.n:
            raise AssertionError(f"{entries} table entries for {self.n} keys")
        if self.order.n != self.n:
            raise AssertionError(f"sorted index holds {self.order.n} ids for {self.n} keys")
        for i in range(self.order.n):
            slot = self.order.p[i]
            if slot >= self.nslots or not self._is_live(slot):
                raise AssertionError(f"sorted index names dead slot {slot}")
            if i and tl_keycmp(self.arena + <size_t>self.order.p[i - 1] * S,
                               self.arena + slot * S, K) >= 0:
                raise AssertionError(f"sorted index out of order at {i}")
        if self.n + self.freelist.n != self.nslots:
            raise AssertionError(
                f"{self.n} keys + {self.freelist.n} free slots != {self.nslots} slots")
        seen = set()
        for i in range(self.freelist.n):
            slot = self.freelist.p[i]
            if slot >= self.nslots or self._is_live(slot) or slot in seen:
                raise AssertionError(f"bad free slot {slot}")
            seen.add(slot)


cdef bytes _require_bytes(object obj, str what):
    """``obj`` as ``bytes`` (any length), by ``_format``'s rule for keys."""
    if type(obj) is bytes:
        return obj
    if PyObject_CheckBuffer(obj):
        return memoryview(obj).tobytes()
    raise bad_type(what, obj)


cdef bytes _coerce(object obj, size_t size, str what):
    """``obj`` as ``bytes`` of ``size``, by ``_format``'s rule for keys."""
    cdef bytes data = _require_bytes(obj, what)
    if <size_t>PyBytes_GET_SIZE(data) != size:
        raise bad_size(what, size, PyBytes_GET_SIZE(data))
    return data


cdef inline PyObject **_seq_items(object seq) noexcept:
    """The items of a list or tuple, in place."""
    return _seq_fast_items(<PyObject *>seq)


cdef object _lookup_bytes(object key):
    """A lookup key that is not ``bytes``, as ``bytes``; None when it is
    not bytes-like (such a key is simply absent)."""
    if not PyObject_CheckBuffer(key):
        return None
    try:
        return memoryview(key).tobytes()
    except Exception:  # an exporter that fails: absent, as for any non-key
        return None


@cython.auto_pickle(False)
@cython.no_gc_clear  # __next__ relies on self.m never becoming None
cdef class _Cursor:
    """A range of the sorted index, walked by the iterators below."""

    cdef SortedMap m
    cdef unsigned long long version
    cdef Py_ssize_t pos, end, step

    def __iter__(self):
        return self

    def __length_hint__(self):
        return (self.end - self.pos) * self.step

    @cython.final
    cdef inline int _check(self) except -1:
        """Raise StopIteration at the end of the range and RuntimeError
        after a change (ClosedError once the map is invalidated)."""
        if self.pos == self.end:
            raise StopIteration
        if self.m.version != self.version:
            self.pos = self.end
            self.m._alive()  # closed (or forked away): say so, not "changed"
            raise RuntimeError(_CHANGED)
        return 0

    @cython.final
    cdef inline const uint8_t *_next_slot(self) except NULL:
        """The next slot of the range (its key, then its value), or raise
        as ``_check`` does."""
        cdef SortedMap m = self.m
        cdef Py_ssize_t pos = self.pos, ahead
        self._check()
        self.pos = pos + self.step
        ahead = pos + _AHEAD * self.step
        if (self.step > 0 and ahead < self.end) or (self.step < 0 and ahead > self.end):
            TL_PREFETCH(m.arena + <size_t>m.order.p[ahead] * m.S)
        return m.arena + <size_t>m.order.p[pos] * m.S


@cython.auto_pickle(False)
@cython.final
@cython.no_gc_clear
cdef class _KeyIter(_Cursor):
    """Iterator over a range of the sorted index: its keys."""

    def __next__(self):
        return _steal(_new_bytes(<const char *>self._next_slot(), self.m.K))


@cython.auto_pickle(False)
@cython.final
@cython.no_gc_clear
cdef class _Iter(_Cursor):
    """Iterator over a range of the sorted index: ``(key, value)`` tuples."""

    cdef object result  # the last tuple handed out, reused when nobody kept it

    def __next__(self):
        cdef SortedMap m = self.m
        cdef const uint8_t *p = self._next_slot()
        cdef PyObject *k
        cdef PyObject *v
        cdef PyObject *r
        cdef PyObject *old
        # both copies are made before anything that could run Python code
        k = _new_bytes(<const char *>p, m.K)
        if k == NULL:
            raise MemoryError()
        v = _new_bytes(<const char *>(p + m.K), m.V)
        if v == NULL:
            _decref(k)
            raise MemoryError()
        r = <PyObject *>self.result
        if r != NULL and r != <PyObject *>None and _refcnt(r) == 1:
            # nobody else holds the last tuple: refill it, as dict's items
            # iterator does (it holds only bytes, so it needs no GC tracking)
            old = _tuple_item(r, 0)
            _tuple_set(r, 0, k)
            _decref(old)
            old = _tuple_item(r, 1)
            _tuple_set(r, 1, v)
            _decref(old)
            return self.result
        r = _new_tuple(2)
        if r == NULL:
            _decref(k)
            _decref(v)
            raise MemoryError()
        _tuple_set(r, 0, k)
        _tuple_set(r, 1, v)
        self.result = _steal(r)
        return self.result


cdef void _gather(const uint8_t *arena, const uint32_t *ids, Py_ssize_t step,
                  Py_ssize_t count, Py_ssize_t left, size_t S, uint8_t *out) noexcept nogil:
    """Copy the slots of ``count`` ids, ``ids[0]``, ``ids[step]``, ..., one
    after the other to ``out``.  The arena is in slot order, not key order,
    so each slot is a cache miss in a large map: the slots _GATHER_AHEAD ids
    further on (of the ``left`` ids the range still holds from ``ids[0]``
    on) are prefetched, so that many misses are under way at once."""
    cdef Py_ssize_t i
    for i in range(count):
        if i + _GATHER_AHEAD < left:
            TL_PREFETCH(arena + <size_t>ids[(i + _GATHER_AHEAD) * step] * S)
        memcpy(out + <size_t>i * S, arena + <size_t>ids[i * step] * S, S)


@cython.auto_pickle(False)
@cython.final
@cython.no_gc_clear
cdef class _Chunks(_Cursor):
    """Iterator over a range of the sorted index: chunks of packed records
    (``SortedMap.export``)."""

    cdef Py_ssize_t chunk  # records per chunk, at most

    def __length_hint__(self):
        return ((self.end - self.pos) * self.step + self.chunk - 1) // self.chunk

    def __next__(self):
        cdef SortedMap m = self.m
        cdef Py_ssize_t left, count
        cdef bytes out
        if self.pos == self.end:
            raise StopIteration
        left = (self.end - self.pos) * self.step
        count = left if left < self.chunk else self.chunk
        out = PyBytes_FromStringAndSize(NULL, count * <Py_ssize_t>m.S)
        # checked once the chunk is allocated (which may run a finalizer,
        # that is Python code): nothing runs between the check and the copy
        self._check()
        _gather(m.arena, m.order.p + self.pos, self.step, count, left, m.S,
                <uint8_t *>PyBytes_AS_STRING(out))
        self.pos += count * self.step
        return memoryview(out)


# -- the store's hot paths ------------------------------------------------------------

from cpython.bytearray cimport PyByteArray_Resize

cdef extern from "Python.h":
    # The fields of a bytearray (CPython's bytearrayobject.h): the fast
    # paths fill the room it has, as bytearray itself does (_append_frame).
    ctypedef struct _ByteArray "PyByteArrayObject":
        Py_ssize_t ob_alloc
        char *ob_bytes
        char *ob_start
        Py_ssize_t ob_exports
    void _set_size "Py_SET_SIZE"(object o, Py_ssize_t n)

# The room _append_frame gives an empty log buffer at once (the default
# buffer, 32 KiB, gets its whole size); a larger buffer doubles from there.
cdef enum:
    _APPEND_STEP = 1 << 20
    _BATCH = 16  # keys get_many looks up at once (see there)

# What a fast path returns when it cannot take a call (the slow path must).
cdef object _SLOW = object()

tinylsm_crc32_init()

# The map of a store that is not open (yet): every use raises.
cdef SortedMap _UNOPENED = SortedMap(1, 0)
_UNOPENED._invalidate(ClosedError, "the store is not open")


@cython.auto_pickle(False)
cdef class StoreCore:
    """The hot paths of a store, in one C call each: base class of ``Lsm``.

    It holds the store's map (``_map``, given by ``_attach`` once the sizes
    are known) and the log buffer.  ``insert``, ``remove`` and
    ``insert_if_absent`` append their log frame to the buffer and change the
    map when nothing else needs doing: the buffer has room, the log is below
    its limit, the key and value are exact ``bytes`` of the right sizes, the
    store is open for writing and no slow path is under way (``_busy``).
    Anything else goes to ``_slow_insert`` / ``_slow_remove`` /
    ``_slow_insert_if_absent``, which the owner implements under its lock.
    A fast path runs entirely while holding the GIL, so it is atomic with
    respect to other threads; the slow paths raise ``_busy`` for as long as
    they hold the lock, because they release the GIL for I/O.

    Lookups (``[]``, ``get``, ``in``) check the key only on a miss, so a hit
    costs what a ``dict`` lookup costs.  All of these are O(1) and do no I/O.
    """

    cdef readonly SortedMap _map  # the store's data
    cdef bytearray buf            # the log buffer (the LogWriter's object)
    cdef Py_ssize_t F             # log frame size
    cdef Py_ssize_t fast_cap      # the buffer may grow to this; -1: never fast
    cdef public int _busy

    def __cinit__(self, *args, **kwargs):
        self._map = _UNOPENED
        self.fast_cap = -1

    def _attach(self, SortedMap map not None, bytearray buf not None, Py_ssize_t frame_size):
        """Hold ``map`` as the store's data and append frames of
        ``frame_size`` bytes to ``buf``."""
        self._map = map
        self.buf = buf
        self.F = frame_size

    def _set_fast_cap(self, Py_ssize_t cap):
        """Let fast paths run while the buffer stays within ``cap`` bytes
        (-1: send every write to the slow path)."""
        self.fast_cap = cap

    def _slow_insert(self, key, value):
        """The owner's insert when the fast path cannot finish it."""
        raise NotImplementedError

    def _slow_remove(self, key):
        """The owner's remove when the fast path cannot finish it."""
        raise NotImplementedError

    def _slow_insert_if_absent(self, key, value):
        """The owner's insert_if_absent when the fast path cannot finish it."""
        raise NotImplementedError

    @property
    def key_size(self):
        """K, the size of every key in bytes."""
        return self._map.K

    @property
    def value_size(self):
        """V, the size of every value in bytes."""
        return self._map.V

    @cython.final
    cdef inline bint _fast_room(self) noexcept:
        return (self._busy == 0 and self.buf is not None
                and PyByteArray_GET_SIZE(self.buf) + self.F <= self.fast_cap)

    @cython.final
    cdef int _append_frame(self, const uint8_t *key, const uint8_t *value) except -1:
        """Append the frame of ``key`` -> ``value`` (NULL: a tombstone), or
        raise (MemoryError, BufferError) having appended nothing.

        The buffer is emptied (to a byte) each time it is written out, and
        ``PyByteArray_Resize`` would then grow it by an eighth at a time,
        copying it each time: about fifty copies per buffer's worth of
        frames.  So when it is full it grows to the fast cap (at most
        _APPEND_STEP bytes at once, doubling beyond), and frames fill the
        room by setting its size, as ``bytearray`` itself does when it
        shrinks a little.  Not while a view exports it: a resize must raise
        then, as it always did."""
        cdef bytearray buf = self.buf
        cdef _ByteArray *b = <_ByteArray *>buf
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(buf), need = n + self.F, target
        cdef size_t K = self._map.K, V = self._map.V
        if b.ob_exports != 0 or (b.ob_start - b.ob_bytes) + need >= b.ob_alloc:
            target = 2 * n if n > _APPEND_STEP else _APPEND_STEP
            if target > self.fast_cap:
                target = self.fast_cap
            if target < need:
                target = need
            PyByteArray_Resize(buf, target)
        _set_size(buf, need)
        b.ob_start[need] = 0  # bytearray's trailing NUL
        tl_frame_put(<unsigned char *>b.ob_start + n, key, value, K, V, self.F - 5 - K - V)
        return 0

    @cython.final
    cdef object _fast_insert(self, object key, object value, bint want_old):
        """insert's fast path, or _SLOW when it cannot take it."""
        cdef SortedMap m = self._map
        cdef const uint8_t *kp
        cdef const uint8_t *vp
        cdef uint64_t h
        cdef size_t slot
        cdef object old = None
        if not (PyBytes_Check(key) and PyBytes_Check(value)
                and <size_t>PyBytes_GET_SIZE(key) == m.K
                and <size_t>PyBytes_GET_SIZE(value) == m.V
                and self._fast_room()):
            return _SLOW
        kp = <const uint8_t *>PyBytes_AS_STRING(key)
        vp = <const uint8_t *>PyBytes_AS_STRING(value)
        h = tl_hash(kp, m.K, _SEED)
        # what may fail first (the map's room, the old value, the frame),
        # so that the map changes only once the log took the change
        m._locate(kp, h, &slot)
        if want_old and slot != _NOPOS:
            old = m._value_at(slot)
        self._append_frame(kp, vp)
        m._store(kp, vp, slot)
        return old

    def insert(self, key, value):
        """Set ``key`` to ``value``; return the previous value or ``None``.

        The change is in memory and in the log buffer when this returns (see
        ``tinylsm.Lsm`` for when it is durable).  Raises ``TypeError`` or
        ``ValueError`` for a key or value that is not bytes-like of the
        store's sizes, and ``OSError`` if the log cannot take the change:
        nothing changed then.  O(1) amortized.
        """
        cdef object old = self._fast_insert(key, value, True)
        if old is _SLOW:
            return self._slow_insert(key, value)
        return old

    def __setitem__(self, key, value):
        # insert's work without the previous value, and without looking
        # ``insert`` up on the instance and parsing its arguments
        if self._fast_insert(key, value, False) is _SLOW:
            self._slow_insert(key, value)

    def insert_if_absent(self, key, value):
        """Set ``key`` to ``value`` only if it is absent: return ``None`` when
        it inserted, else the value ``key`` has (and change nothing).

        Atomic: of threads racing to insert the same absent key, exactly one
        inserts and the others get its value.  Only an insert is logged.
        Raises as ``insert`` does, whether the key is present or not.  O(1)
        amortized.
        """
        cdef SortedMap m = self._map
        cdef const uint8_t *kp
        cdef const uint8_t *vp
        cdef size_t slot
        if (PyBytes_Check(key) and PyBytes_Check(value)
                and <size_t>PyBytes_GET_SIZE(key) == m.K
                and <size_t>PyBytes_GET_SIZE(value) == m.V
                and self._fast_room()):
            kp = <const uint8_t *>PyBytes_AS_STRING(key)
            vp = <const uint8_t *>PyBytes_AS_STRING(value)
            m._locate(kp, tl_hash(kp, m.K, _SEED), &slot)
            if slot != _NOPOS:
                return m._value_at(slot)  # present: nothing to log
            self._append_frame(kp, vp)
            m._store(kp, vp, slot)
            return None
        return self._slow_insert_if_absent(key, value)

    def remove(self, key):
        """Delete ``key``; return its value, or ``None`` if it was absent.

        Removing an absent key changes nothing and logs nothing.  Raises as
        ``insert`` does.  O(1) amortized.
        """
        return self._remove(key)

    @cython.final
    cdef object _remove(self, object key):
        """remove's work: its fast path, or the owner's slow one."""
        cdef SortedMap m = self._map
        cdef const uint8_t *kp
        cdef uint64_t h
        cdef size_t slot
        cdef object old
        if (PyBytes_Check(key) and <size_t>PyBytes_GET_SIZE(key) == m.K
                and self._fast_room()):
            kp = <const uint8_t *>PyBytes_AS_STRING(key)
            h = tl_hash(kp, m.K, _SEED)
            slot = m._find_h(kp, h)
            if slot == _NOPOS:
                return None  # nothing to remove, nothing to log
            # what may fail first, as in _fast_insert: then _delete cannot
            _ids_reserve(&m.zombies, m.zombies.n + 1)
            old = m._value_at(slot)
            self._append_frame(kp, NULL)
            m._delete(kp, h, False)
            return old
        return self._slow_remove(key)

    def __delitem__(self, key):
        # remove's work, without looking ``remove`` up on the instance
        if self._remove(key) is None:
            raise KeyError(key)

    @cython.final
    cdef inline SortedMap _open_map(self):
        """The map, or raise why the store cannot be used (closed, forked)."""
        cdef SortedMap m = self._map
        if m.dead is not None:
            m._raise_dead()
        return m

    def __len__(self):
        return self._open_map().n

    def __getitem__(self, key):
        cdef SortedMap m = self._open_map()
        cdef size_t slot = m._lookup(key)
        if slot == _NOPOS:
            _coerce(key, m.K, "key")  # raises for a key of the wrong type or size
            raise KeyError(key)
        return m._value_at(slot)

    def get(self, key, default=None):
        """The value of ``key``, or ``default`` when it is absent. O(1), no I/O."""
        cdef SortedMap m = self._open_map()
        cdef size_t slot = m._lookup(key)
        if slot == _NOPOS:
            _coerce(key, m.K, "key")
            return default
        return m._value_at(slot)

    def __contains__(self, key):
        cdef SortedMap m = self._open_map()
        if m._lookup(key) != _NOPOS:
            return True
        _coerce(key, m.K, "key")
        return False

    def get_many(self, keys):
        """The values of ``keys`` (an iterable of keys), in order: a list
        with each key's value, or ``None`` where a key is absent.

        Every key is checked as ``get`` checks it, before any is looked up:
        one that is not bytes-like or not ``key_size`` bytes long raises
        ``TypeError`` or ``ValueError`` naming its position.  The values
        are read in one step, with no change from another thread in
        between.  Cost: O(len(keys)), no I/O.  A lookup in a large store
        waits for two cache misses (the hash table, then the key's slot);
        here the keys are hashed and their table entries, then their slots,
        fetched a batch at a time, so that the misses of a batch overlap:
        on random keys in a store larger than the CPU's caches, several
        times faster than a loop of ``get`` calls.
        """
        cdef SortedMap m = self._open_map()
        cdef Py_ssize_t n, i, j, start, end
        cdef size_t K = m.K, S, mask, slot, pos
        cdef uint64_t h
        cdef uint64_t hs[_BATCH]
        cdef uint32_t e, tag, ids
        cdef const uint32_t *table
        cdef const uint8_t *arena
        cdef PyObject **items
        cdef PyObject *v
        cdef object key
        cdef list checked = None
        if isinstance(keys, (bytes, bytearray, memoryview, str)):
            raise TypeError(f"keys: expected an iterable of keys, got {type(keys).__name__} "
                            "(for one key, use get())")
        if type(keys) is not list and type(keys) is not tuple:
            keys = list(keys)
        n = len(keys)
        items = _seq_items(keys)
        # every key made bytes first: converting one may run code (and let
        # other threads in), reading the map then runs none
        for i in range(n):
            key = <object>items[i]
            if not (PyBytes_Check(key) and <size_t>PyBytes_GET_SIZE(key) == K):
                if checked is None:
                    checked = list(keys)
                checked[i] = _coerce(key, K, f"key of item {i}")
        if checked is not None:
            keys = checked
            items = _seq_items(keys)
        m = self._open_map()  # closed meanwhile?
        S = m.S
        mask = m.tmask
        ids = m.tids
        table = m.table
        arena = m.arena
        result = _steal(_new_list(n))
        # A batch at a time: hash every key and fetch its table line, then
        # fetch the slot its home position names (and the next position's,
        # as _probe would), then look each up, its lines there or on their
        # way by then, so that the cache misses of a batch overlap.  Batches
        # of 8 to 128 keys measured alike here (2.8x to 3.3x a loop of get,
        # 1M keys), as did stages skewed by a batch: the core's misses in
        # flight are the limit, not the schedule.
        start = 0
        while start < n:
            end = start + _BATCH if n - start > _BATCH else n
            for j in range(start, end):
                h = tl_hash(<const uint8_t *>PyBytes_AS_STRING(<object>items[j]), K, _SEED)
                hs[j - start] = h
                TL_PREFETCH(table + (<size_t>h & mask))
                if m.old != NULL:
                    TL_PREFETCH(m.old + (<size_t>h & m.omask))
            for j in range(start, end):
                h = hs[j - start]
                tag = tl_tag(h, m.tshift)
                pos = <size_t>h & mask
                e = table[pos]
                if e != 0:
                    if (e & ~ids) == tag:
                        TL_PREFETCH(arena + <size_t>((e & ids) - 1) * S)
                    e = table[(pos + 1) & mask]
                    if e != 0 and (e & ~ids) == tag:
                        TL_PREFETCH(arena + <size_t>((e & ids) - 1) * S)
            for j in range(start, end):
                slot = m._find_h(<const uint8_t *>PyBytes_AS_STRING(<object>items[j]),
                                 hs[j - start])
                if slot == _NOPOS:
                    _incref(_none)
                    _list_set(<PyObject *>result, j, _none)
                else:
                    v = _new_bytes(<const char *>(arena + slot * S + K), m.V)
                    if v == NULL:
                        raise MemoryError()  # the list's empty places are NULL: fine
                    _list_set(<PyObject *>result, j, v)
            start = end
        return result
