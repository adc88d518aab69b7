/* The on-disk format of FORMAT.md, in C, in one place for both compiled
 * modules (the codec, and the store's fast path in the map): integer
 * layout, the log frame, the batch header and key prefixes.  The Python
 * side of the same facts (names, sizes, stop reasons) is _format.py, and
 * the pure-Python twin of this file is part of _codec_py.py. */
#ifndef TINYLSM_FORMAT_H
#define TINYLSM_FORMAT_H

#include <stdint.h>
#include <string.h>

#include "_crc32.h"

/* Largest key or value size; equal to _format.MAX_ITEM_SIZE (each module
 * checks that at import). */
#define TL_MAX_ITEM 65536

/* Little-endian integers, as every integer in the files is. */
static inline uint32_t tl_ld32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16)
         | ((uint32_t)p[3] << 24);
}
static inline uint64_t tl_ld64(const unsigned char *p)
{
    return (uint64_t)tl_ld32(p) | ((uint64_t)tl_ld32(p + 4) << 32);
}
static inline void tl_st32(unsigned char *p, uint32_t x)
{
    p[0] = (unsigned char)x;
    p[1] = (unsigned char)(x >> 8);
    p[2] = (unsigned char)(x >> 16);
    p[3] = (unsigned char)(x >> 24);
}
static inline void tl_st64(unsigned char *p, uint64_t x)
{
    tl_st32(p, (uint32_t)x);
    tl_st32(p + 4, (uint32_t)(x >> 32));
}

/* 8 bytes as a big-endian number: compilers turn this into load + bswap. */
static inline uint64_t tl_load64be(const uint8_t *p)
{
    return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40)
         | ((uint64_t)p[3] << 32) | ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16)
         | ((uint64_t)p[6] << 8) | (uint64_t)p[7];
}
/* Up to 8 bytes of a key as a big-endian number, zero-padded on the right:
 * comparing prefixes compares keys in memcmp order, as far as they go. */
static inline uint64_t tl_prefix(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    size_t i;
    if (n >= 8)
        return tl_load64be(p);
    for (i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (56 - 8 * i);
    return v;
}

/* A KV frame is crc u32, tag u8, key K, value V, zero padding to
 * 5 + max(8, K + V) bytes.  This writes the padding and the checksum once
 * tag, key and value are in place. */
static inline void tl_frame_finish(unsigned char *f, size_t k, size_t v, size_t pad)
{
    if (pad)
        memset(f + 5 + k + v, 0, pad);
    tl_st32(f, tinylsm_crc32(0, f + 4, 1 + k + v) ^ 0xFFu);
}

/* The whole frame of key -> value at f; value NULL writes a tombstone
 * (tag 0, V zero bytes, which is also what its checksum covers). */
static inline void tl_frame_put(unsigned char *f, const unsigned char *key,
                                const unsigned char *value, size_t k, size_t v,
                                size_t pad)
{
    memcpy(f + 5, key, k);
    if (value != NULL) {
        f[4] = 1;
        memcpy(f + 5 + k, value, v);
    } else {
        f[4] = 0;
        memset(f + 5 + k, 0, v);
    }
    tl_frame_finish(f, k, v, pad);
}

/* A batch header of n frames: crc32(n as u64 LE) ^ 0xFF, tag 2, n, zero
 * padding to the frame size. */
static inline void tl_batch_header(unsigned char *f, uint64_t n, size_t fsize)
{
    tl_st64(f + 5, n);
    tl_st32(f, tinylsm_crc32(0, f + 5, 8) ^ 0xFFu);
    f[4] = 2;
    memset(f + 13, 0, fsize - 13);
}

#endif
