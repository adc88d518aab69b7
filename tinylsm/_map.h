/* The compiled map's C helpers (tinylsm/_map.pyx): key loads and order,
 * the table hash, and the allocator that maps large arrays.  Kept out of the
 * .pyx so that it is compiled, linted and read as C. */
#ifndef TINYLSM_MAP_H
#define TINYLSM_MAP_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_format.h"  /* tl_load64be, tl_prefix */

/* Hand a new reference to Cython without an extra incref. */
#define TL_STEAL(o) (o)

#define TL_NOPOS ((size_t)-1)      /* no position */
#define TL_MAX_SLOTS ((size_t)0xFFFFFFFEu)
#define TL_REMOVED ((uint32_t)0xFFFFFFFFu)
/* A position of the previous hash table (while it is migrated) whose key
   has moved on or been deleted: occupied, never a match.  Table entries are
   slot + 1 <= TL_MAX_SLOTS, so this value is free. */
#define TL_TOMB ((uint32_t)0xFFFFFFFFu)

#if defined(__GNUC__) || defined(__clang__)
#define TL_PREFETCH(p) __builtin_prefetch((const void *)(p))
#define TL_LIKELY(x) __builtin_expect(!!(x), 1)
#else
#define TL_PREFETCH(p) ((void)0)
#define TL_LIKELY(x) (x)
#endif

static inline uint64_t tl_load64(const uint8_t *p) {
    uint64_t v; memcpy(&v, p, 8); return v;
}
/* murmur3's 64-bit finalizer: every input bit affects every output bit. */
static inline uint64_t tl_fmix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33; return x;
}
/* The table hash of a K-byte key: 8 bytes a step, each step a bijection
   of the state for a fixed word, then the finalizer.  The seed is random
   per process, so collisions cannot be planned from outside. */
static inline uint64_t tl_hash(const uint8_t *p, size_t k, uint64_t seed) {
    uint64_t h = seed ^ ((uint64_t)k * 0x9e3779b97f4a7c15ULL);
    uint64_t w;
    while (k >= 8) {
        h = (h ^ tl_load64(p)) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 32;
        p += 8; k -= 8;
    }
    if (k) {
        w = 0; memcpy(&w, p, k);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
    }
    return tl_fmix(h);
}
/* Memory: arrays of 1 MiB or more are mapped pages of their own, so that
   freeing one always gives its memory back to the system (glibc keeps
   freed heap memory resident once its mmap threshold has risen, as it
   does after Python frees any large buffer), growth is mremap (no copy)
   on Linux, and a new hash table starts as untouched zero pages.
   Callers pass each block's size back on realloc and free.  ``flags`` of
   tl_alloc: TL_ZERO for zeroed memory, TL_HUGE (with TL_ZERO) to ask for
   huge pages at once, TL_SMALL to refuse them until advised otherwise. */
#define TL_ZERO 1
#define TL_HUGE 2
#define TL_SMALL 4
#if !defined(_WIN32)
#include <sys/mman.h>
#define TL_MMAP_MIN ((size_t)1 << 20)
#define TL_HUGE_MIN ((size_t)4 << 20)
#else
#define TL_MMAP_MIN ((size_t)-1)
#endif
/* Huge pages: random lookups touch a new page almost every time, and
   with 4 KiB pages each costs a TLB miss (a two-level walk under a VM).
   Asking for huge pages has a price, though: with the kernel's usual THP
   defrag setting ("madvise") each first touch of a 2 MiB page zeroes it and
   may compact memory first, which was measured at up to 7 ms.  Under a
   VM that hands free memory back to its host (free page reporting), a huge
   page also comes more often from memory the host must back afresh: a bulk
   load of 1M records of 8/8 into a new map ran at 5.4 to 9.4M records/s
   asking for huge pages as it went, and at 13.3 to 15.6M without (lookups
   afterwards as fast, within the noise, at that size).  So a table built
   in one step by a bulk load of records (apply_records at least as large
   as the map) and the arena's growth during it are faulted in as small
   pages (advised against huge ones, for THP "always" too), and advised
   for huge pages once the load ends (defer_huge in _map.pyx); a
   table built by reserve(), whose keys come later, is advised at once; a
   table grown incrementally is advised only once it is fully written
   (tl_advise_huge), so that khugepaged merges its pages in the background
   instead of a change faulting them in.  The arena is advised as it grows
   (tl_realloc_huge): it is written in slot order, so a change faults in
   one 2 MiB page per 2 MiB of new slots, at the same cost per byte as 4 KiB
   pages when memory is not fragmented; and a lookup reads the table, then
   its slot in the arena, so both must be huge for the TLB to cover a large
   map. */
static void tl_advise_huge(void *p, size_t n) {
#if !defined(_WIN32) && defined(MADV_HUGEPAGE)
    if (p != NULL && n >= TL_HUGE_MIN) (void)madvise(p, n, MADV_HUGEPAGE);
#else
    (void)p; (void)n;
#endif
}
/* No huge pages for now, even where THP is "always" (a bulk load). */
static void tl_advise_small(void *p, size_t n) {
#if !defined(_WIN32) && defined(MADV_NOHUGEPAGE)
    if (p != NULL && n >= TL_HUGE_MIN) (void)madvise(p, n, MADV_NOHUGEPAGE);
#else
    (void)p; (void)n;
#endif
}
static void *tl_alloc(size_t n, int flags) {
#if !defined(_WIN32)
    if (n >= TL_MMAP_MIN) {
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;  /* else zero-filled */
        if (flags & TL_HUGE) tl_advise_huge(p, n);
        else if (flags & TL_SMALL) tl_advise_small(p, n);
        return p;
    }
#endif
    return (flags & TL_ZERO) ? calloc(n ? n : 1, 1) : malloc(n ? n : 1);
}
static void tl_free(void *p, size_t n) {
    if (p == NULL) return;
#if !defined(_WIN32)
    if (n >= TL_MMAP_MIN) { munmap(p, n); return; }
#endif
    free(p);
}
/* Unmapping costs about 0.1 ms per MiB of 4 KiB pages, so a large block
   that need not go at once is released a piece at a time: tl_shrink_tail
   frees the last TL_RELEASE bytes (or all) of a block of ``n`` bytes from
   tl_alloc, whose first call must see n >= TL_MMAP_MIN (else it frees all),
   and returns the bytes left.  Mapped blocks are whole pages, and they are
   cut at multiples of TL_RELEASE from their start, so every cut is page
   aligned. */
#define TL_RELEASE ((size_t)1 << 20)
static size_t tl_shrink_tail(void *p, size_t n) {
#if !defined(_WIN32)
    size_t keep;
    if (n > TL_RELEASE) {
        keep = (n - 1) & ~(TL_RELEASE - 1);  /* n - keep in (0, TL_RELEASE] */
        munmap((char *)p + keep, n - keep);
        return keep;
    }
    if (n) munmap(p, n);
    return 0;
#else
    tl_free(p, n);
    return 0;
#endif
}
/* Resize a block of ``old`` bytes (p may be NULL, old 0) to ``n`` bytes,
   keeping the contents; NULL (p untouched) when memory is short. */
static void *tl_realloc(void *p, size_t old, size_t n) {
    void *q;
    if (p == NULL) return tl_alloc(n, 0);
    if (old < TL_MMAP_MIN && n < TL_MMAP_MIN) return realloc(p, n ? n : 1);
#if defined(__linux__) && defined(MREMAP_MAYMOVE)
    if (old >= TL_MMAP_MIN && n >= TL_MMAP_MIN) {
        q = mremap(p, old, n, MREMAP_MAYMOVE);
        return q == MAP_FAILED ? NULL : q;
    }
#endif
    q = tl_alloc(n, 0);
    if (q == NULL) return NULL;
    memcpy(q, p, old < n ? old : n);
    tl_free(p, old);
    return q;
}

/* The arena's blocks of TL_MMAP_MIN bytes or more start on a huge page
   boundary, since a huge page can only back an aligned 2 MiB and a kernel
   before 6.7 places anonymous maps anywhere: tl_map_aligned maps 2 MiB
   more and cuts off what lies before the boundary and after the block. */
#if defined(__linux__) && defined(MREMAP_MAYMOVE) && defined(MREMAP_FIXED) \
    && defined(MADV_HUGEPAGE)
#include <unistd.h>
#define TL_HUGE_ARENA 1
#define TL_HUGE_PAGE ((size_t)2 << 20)
static void *tl_map_aligned(size_t n) {
    size_t span = n + TL_HUGE_PAGE, head, end;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *q;
    if (p == MAP_FAILED) return NULL;
    q = (char *)(((uintptr_t)p + TL_HUGE_PAGE - 1) & ~(uintptr_t)(TL_HUGE_PAGE - 1));
    head = (size_t)(q - p);
    end = (n + page - 1) & ~(page - 1);  /* the pages tl_free(q, n) unmaps */
    if (head) munmap(p, head);
    if (span - head > end) munmap(q + end, span - head - end);
    return q;
}
#endif

/* tl_realloc for the arena (growth only): blocks of TL_MMAP_MIN bytes or
   more are aligned (above), and advised for huge pages from TL_HUGE_MIN
   on (without ``advise``: against them, for a bulk load).  A mapped block grows in place when the addresses after it are
   free; otherwise its pages move (mremap, no copy) to the start of a new
   aligned block.  Pages faulted before the advice stay small until
   khugepaged merges them: only the first 2 MiB, of which at most 1 MiB
   was written before.  The price in memory: the 2 MiB page being filled is
   resident whole, up to 2 MiB more than the slots written (measured: 30.3
   against 28.5 bytes per key at 1M keys of 8/8, 27.1 against 26.8 at
   10M). */
static void *tl_realloc_huge(void *p, size_t old, size_t n, int advise) {
#ifdef TL_HUGE_ARENA
    void *q;
    if (n >= TL_MMAP_MIN && n > old) {
        if (p != NULL && old >= TL_MMAP_MIN) {
            q = mremap(p, old, n, 0);
            if (q == MAP_FAILED) {
                q = tl_map_aligned(n);
                if (q == NULL) return NULL;
                if (mremap(p, old, old, MREMAP_MAYMOVE | MREMAP_FIXED, q) == MAP_FAILED) {
                    munmap(q, n);
                    return NULL;
                }
            }
        } else {
            q = tl_map_aligned(n);
            if (q == NULL) return NULL;
            if (p != NULL) {
                memcpy(q, p, old);
                tl_free(p, old);
            }
        }
        if (advise) tl_advise_huge(q, n);
        else tl_advise_small(q, n);
        return q;
    }
#else
    (void)advise;
#endif
    return tl_realloc(p, old, n);
}

/* tl_realloc, with the new bytes [old, n) zeroed.  Mapped blocks come out
   of mmap or mremap as zero pages beyond ``old`` (nothing ever writes past a
   block's size), so only heap blocks need a memset: growing a large live
   bitmap touches no memory. */
static void *tl_realloc0(void *p, size_t old, size_t n) {
    void *q = tl_realloc(p, old, n);
    if (q != NULL && n > old && n < TL_MMAP_MIN) memset((char *)q + old, 0, n - old);
    return q;
}

/* The index of the lowest set bit of x (x != 0). */
static inline int tl_ctz64(uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(x);
#else
    int n = 0;
    while (!(x & 1)) { x >>= 1; n++; }
    return n;
#endif
}

/* A hash table entry is a slot id + 1 in its low ``shift`` bits (0: an
   empty position), and in the bits above them the same bits of the key's
   hash (of its high half, which the position does not depend on): a probe
   compares those before it reads the slot, so it reads slots of other keys
   only for about one in 2**(32 - shift) of them.  A table's shift leaves
   room for slot ids up to 4 times its size (tl_id_bits), so that at 1M
   keys (2**21 positions) an entry carries 8 such bits, and none from
   2**29 positions on (then every slot is compared, as with no tag).  TL_TOMB, all
   ones, is never an entry: ids + 1 stay below the all-ones id. */
static inline uint32_t tl_tag(uint64_t h, unsigned shift) {
    return (uint32_t)(((h >> 32) >> shift) << shift);  /* shift <= 32 */
}
static inline uint32_t tl_id_mask(unsigned shift) {
    return (uint32_t)(((uint64_t)1 << shift) - 1);
}
/* The least shift (at most 32) whose entries name ``slots`` slots and 4
   slots per position of a table of ``positions``. */
static inline unsigned tl_id_bits(size_t positions, size_t slots) {
    size_t need = 4 * positions > slots ? 4 * positions : slots;
    unsigned shift = 1;
    while (shift < 32 && ((size_t)1 << shift) - 2 < need) shift++;
    return shift;
}

static inline int tl_keyeq(const uint8_t *a, const uint8_t *b, size_t k) {
    if (TL_LIKELY(k == 8)) return tl_load64(a) == tl_load64(b);
    return memcmp(a, b, k) == 0;
}
/* memcmp order, 8 bytes at a time. */
static inline int tl_keycmp(const uint8_t *a, const uint8_t *b, size_t k) {
    uint64_t x, y;
    while (k >= 8) {
        x = tl_load64be(a); y = tl_load64be(b);
        if (x != y) return x < y ? -1 : 1;
        a += 8; b += 8; k -= 8;
    }
    return k ? memcmp(a, b, k) : 0;
}

#endif
