/* CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320: zlib's crc32),
 * slicing-by-8.
 *
 * Why not zlib's own crc32: tinylsm checksums one short record at a time
 * (17 to a few hundred bytes), where zlib 1.2.13 spends most of its time in
 * per-call setup and a byte-wise loop.  Measured on the project's machine
 * (bench/crc32_micro.c): 17 bytes 26.5 ns (zlib) vs 11.0 ns; 65 bytes
 * 156.5 ns vs 36.1 ns; 261 bytes 235.5 ns vs 148.5 ns.  The results are
 * identical to zlib's, which the parity tests check against zlib.crc32.
 */
#ifndef TINYLSM_CRC32_H
#define TINYLSM_CRC32_H

#include <stdint.h>
#include <string.h>

static uint32_t tinylsm_crc_table[8][256];

static void tinylsm_crc32_init(void)
{
    uint32_t i, c;
    int k, t;
    for (i = 0; i < 256; i++) {
        c = i;
        for (k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        tinylsm_crc_table[0][i] = c;
    }
    for (i = 0; i < 256; i++)
        for (t = 1; t < 8; t++)
            tinylsm_crc_table[t][i] = (tinylsm_crc_table[t - 1][i] >> 8)
                ^ tinylsm_crc_table[0][tinylsm_crc_table[t - 1][i] & 0xff];
}

/* Continue ``crc`` (0 to start) over ``n`` bytes at ``p``, as zlib's crc32. */
static inline uint32_t tinylsm_crc32(uint32_t crc, const unsigned char *p, size_t n)
{
    const uint32_t (*T)[256] = (const uint32_t (*)[256])tinylsm_crc_table;
    crc = ~crc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (n >= 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
        a ^= crc;
        crc = T[7][a & 0xff] ^ T[6][(a >> 8) & 0xff] ^ T[5][(a >> 16) & 0xff]
            ^ T[4][a >> 24] ^ T[3][b & 0xff] ^ T[2][(b >> 8) & 0xff]
            ^ T[1][(b >> 16) & 0xff] ^ T[0][b >> 24];
        p += 8;
        n -= 8;
    }
#endif
    while (n--)
        crc = T[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* The CRC-32s of four messages of ``n`` bytes each, at ``p[0]`` to ``p[3]``,
 * to ``out[0]`` to ``out[3]``.  One message's CRC is a chain of dependent
 * table loads; four chains interleaved keep the CPU busy while each waits,
 * about twice the speed of four calls of tinylsm_crc32 on records of 17 to
 * 69 bytes (encode_packed, which checksums records of one size). */
#define TL_CRC_STEP8(c, q) do { \
        uint32_t a_, b_; \
        memcpy(&a_, (q), 4); \
        memcpy(&b_, (q) + 4, 4); \
        a_ ^= (c); \
        (c) = T[7][a_ & 0xff] ^ T[6][(a_ >> 8) & 0xff] ^ T[5][(a_ >> 16) & 0xff] \
            ^ T[4][a_ >> 24] ^ T[3][b_ & 0xff] ^ T[2][(b_ >> 8) & 0xff] \
            ^ T[1][(b_ >> 16) & 0xff] ^ T[0][b_ >> 24]; \
        (q) += 8; \
    } while (0)

static inline void tinylsm_crc32_x4(const unsigned char *const p[4], size_t n, uint32_t out[4])
{
    const uint32_t (*T)[256] = (const uint32_t (*)[256])tinylsm_crc_table;
    const unsigned char *a = p[0], *b = p[1], *c = p[2], *d = p[3];
    uint32_t ca = 0xFFFFFFFFu, cb = 0xFFFFFFFFu, cc = 0xFFFFFFFFu, cd = 0xFFFFFFFFu;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (n >= 8) {
        TL_CRC_STEP8(ca, a);
        TL_CRC_STEP8(cb, b);
        TL_CRC_STEP8(cc, c);
        TL_CRC_STEP8(cd, d);
        n -= 8;
    }
#endif
    while (n--) {
        ca = T[0][(ca ^ *a++) & 0xff] ^ (ca >> 8);
        cb = T[0][(cb ^ *b++) & 0xff] ^ (cb >> 8);
        cc = T[0][(cc ^ *c++) & 0xff] ^ (cc >> 8);
        cd = T[0][(cd ^ *d++) & 0xff] ^ (cd >> 8);
    }
    out[0] = ~ca;
    out[1] = ~cb;
    out[2] = ~cc;
    out[3] = ~cd;
}

#endif
