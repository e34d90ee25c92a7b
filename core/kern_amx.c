/* kern_amx.c: BF16 products on AMX tiles (Intel Sapphire Rapids and later).
 *
 * Y[n, ldy] columns [r0, r1) = X · Wᵀ, W bf16 [rows, cols] row-major.  One
 * TDPBF16PS multiplies an A tile of 16 weight rows × 32 columns, read
 * straight from W (stride cols·2 bytes), by a B tile of the same 32 columns
 * of 16 tokens, into a C tile of 16 rows × 16 tokens in f32.  B wants each
 * token's columns in pairs: row i of the tile holds, for token j, columns
 * 2i and 2i+1 at bf16 index 2j and 2j+1.  kern_amx_pack writes X that way
 * once per product (kernels.h gives the layout), so the threads that split
 * the rows all read the same packed X.
 *
 * Precision.  The tiles multiply bf16 by bf16.  Each x is split into three
 * bf16 planes, hi = bf16(x), mid = bf16(x − hi), lo = bf16(x − hi − mid)
 * (each remainder exact in f32), and C takes all three products.  Eight
 * significant bits per plane hold x's 24, so hi + mid + lo == x for every
 * normal x above 2⁻¹¹⁰ (below, lo or mid flush to zero): every product is
 * exact, every sum is f32, as in the AVX-512 kernels; only the order of the
 * sums differs.  test_expert_group holds the results to the f32 kernels'
 * tolerance against a double-precision reference.
 *
 * Determinism.  A tile's arithmetic is per element: C[m][j] depends on row m
 * of A and token j of B only, in a fixed order over the columns (hi, then
 * lo, per 32 columns).  Which rows share a tile, how the rows are split over
 * threads and how many tokens there are leave every output's bits alone.
 */
#include "kern_impl.h"

#include "cpu.h"

#include <string.h>

#define AMX_ROWS 16 /* weight rows per A tile, tokens per B tile */
#define AMX_K 32    /* bf16 columns per tile step */
#define AMX_TILE 512 /* bf16 values in a 16 × 64-byte tile */
#define AMX_GROUP 4  /* row tiles (C tiles) per pass over a token block */
#define AMX_PLANES 3 /* hi, mid, lo */

/* bf16 rounding as vcvtne2ps2bf16 does it: to nearest even, a denormal to a
 * signed zero, NaN kept quiet. */
static inline uint16_t bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return (uint16_t)((u >> 16) | 0x40);
    if (!(u & 0x7f800000u)) return (uint16_t)((u >> 16) & 0x8000);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float bf16_value(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The three planes of one value; x beyond bf16's range (hi infinite or
 * NaN) has no remainder. */
static inline void split_one(float x, uint16_t p[AMX_PLANES])
{
    p[0] = bf16_round(x);
    if (((p[0] >> 7) & 0xff) == 0xff) {
        p[1] = p[2] = 0;
        return;
    }
    float r = x - bf16_value(p[0]);
    p[1] = bf16_round(r);
    p[2] = bf16_round(r - bf16_value(p[1]));
}

/* The planes of one column pair of one token, as the 32-bit units the B
 * tiles hold. */
static inline void split_pair(float a, float b, uint32_t u[AMX_PLANES])
{
    uint16_t pa[AMX_PLANES], pb[AMX_PLANES];
    split_one(a, pa);
    split_one(b, pb);
    for (int q = 0; q < AMX_PLANES; q++) u[q] = (uint32_t)pa[q] | (uint32_t)pb[q] << 16;
}

/* split_pair on 32 columns of one token (16 units per plane) through
 * vcvtne2ps2bf16, whose rounding bf16_round copies: the same bits. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static inline void split32(const float *x,
                                                                                       __m512i out[AMX_PLANES])
{
    __m512 lo = _mm512_loadu_ps(x), hi = _mm512_loadu_ps(x + 16);
    /* widened: each bf16 of a rounded vector back to f32 */
#define WIDEN(v, half) _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64((v), (half))), 16)
    __m512i h = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    __m512 rl = _mm512_sub_ps(lo, _mm512_castsi512_ps(WIDEN(h, 0)));
    __m512 rh = _mm512_sub_ps(hi, _mm512_castsi512_ps(WIDEN(h, 1)));
    __m512i m = (__m512i)_mm512_cvtne2ps_pbh(rh, rl);
    rl = _mm512_sub_ps(rl, _mm512_castsi512_ps(WIDEN(m, 0)));
    rh = _mm512_sub_ps(rh, _mm512_castsi512_ps(WIDEN(m, 1)));
    __m512i l = (__m512i)_mm512_cvtne2ps_pbh(rh, rl);
    /* x beyond bf16's range: no remainder (a 16-bit lane's exponent all ones) */
    __mmask32 big = _mm512_cmpeq_epi16_mask(_mm512_and_si512(h, _mm512_set1_epi16(0x7f80)), _mm512_set1_epi16(0x7f80));
#undef WIDEN
    out[0] = h;
    out[1] = _mm512_mask_mov_epi16(m, big, _mm512_setzero_si512());
    out[2] = _mm512_mask_mov_epi16(l, big, _mm512_setzero_si512());
}

/* r[i][j] <-> r[j][i] for a 16 × 16 block of 32-bit values in 16 registers:
 * pairs, then quads within the 128-bit lanes, then the lanes. */
__attribute__((target("avx512f,avx512bw"))) static inline void transpose16(__m512i r[16])
{
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    /* u[4b + k]: rows 4b..4b+3, columns k, k + 4, k + 8, k + 12 (one per lane) */
    for (int b = 0; b < 16; b += 4) {
        u[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
        u[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
        u[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
        u[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
    }
    for (int k = 0; k < 4; k++) {
        __m512i v0 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x88), v1 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xdd);
        __m512i w0 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x88), w1 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xdd);
        r[k] = _mm512_shuffle_i32x4(v0, w0, 0x88);
        r[k + 8] = _mm512_shuffle_i32x4(v0, w0, 0xdd);
        r[k + 4] = _mm512_shuffle_i32x4(v1, w1, 0x88);
        r[k + 12] = _mm512_shuffle_i32x4(v1, w1, 0xdd);
    }
}

/* Columns [c0, c1) of one token, pair by pair (the edges of a range that
 * does not cover whole 32-column steps). */
static void pack_pairs(const float *xt, int j, int64_t c0, int64_t c1, uint32_t *blk)
{
    for (int64_t c = c0; c < c1; c += 2) {
        uint32_t *tile = blk + (size_t)(c / AMX_K) * AMX_PLANES * (AMX_TILE / 2);
        uint32_t u[AMX_PLANES] = {0, 0, 0};
        if (xt) split_pair(xt[c], xt[c + 1], u);
        /* row (c % 32) / 2 of the tile, token j: one 32-bit unit */
        size_t at = (size_t)((c % AMX_K) / 2) * AMX_ROWS + (size_t)j;
        for (int q = 0; q < AMX_PLANES; q++) tile[q * (AMX_TILE / 2) + at] = u[q];
    }
}

/* Whole steps [s0, s1) of a block of 16 tokens (NULL: a padding token, all
 * zero): each token's 32 columns split into 16 units per plane, then each
 * plane's 16 × 16 units turned so that a tile row holds one column pair of
 * all 16 tokens, and stored whole. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void pack_steps(const float *const xt[AMX_ROWS],
                                                                               int64_t s0, int64_t s1, uint32_t *blk)
{
    for (int64_t s = s0; s < s1; s++) {
        __m512i r[AMX_PLANES][AMX_ROWS];
        for (int j = 0; j < AMX_ROWS; j++) {
            __m512i p[AMX_PLANES] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
            if (xt[j]) split32(xt[j] + s * AMX_K, p);
            for (int q = 0; q < AMX_PLANES; q++) r[q][j] = p[q];
        }
        uint32_t *tile = blk + (size_t)s * AMX_PLANES * (AMX_TILE / 2);
        for (int q = 0; q < AMX_PLANES; q++) {
            transpose16(r[q]);
            for (int i = 0; i < AMX_ROWS; i++)
                _mm512_storeu_si512((void *)(tile + q * (AMX_TILE / 2) + i * AMX_ROWS), r[q][i]);
        }
    }
}

/* Whole 32-column steps through the vector split where the CPU has
 * AVX512-BF16 (every CPU with AMX-BF16 does), the rest pair by pair; both
 * give the same bits, so any split of the columns packs alike. */
void kern_amx_pack_range(const float *x, const float *const *xs, int n, int64_t cols, int64_t c0, int64_t c1,
                         uint16_t *out)
{
    const int64_t steps = cols / AMX_K;
    const int nb = (n + AMX_ROWS - 1) / AMX_ROWS;
    /* whole steps [s0, s1); pairs before and after them */
    int64_t s0 = (c0 + AMX_K - 1) / AMX_K, s1 = cpu_get()->avx512bf16 ? c1 / AMX_K : 0;
    int64_t e0 = s0 < s1 ? s0 * AMX_K : c1, e1 = s0 < s1 ? s1 * AMX_K : c1;
    for (int b = 0; b < nb; b++) {
        uint32_t *blk = (uint32_t *)(out + (size_t)b * (size_t)steps * AMX_PLANES * AMX_TILE);
        const float *xt[AMX_ROWS];
        for (int j = 0; j < AMX_ROWS; j++) {
            int t = b * AMX_ROWS + j;
            xt[j] = t >= n ? NULL : xs ? xs[t] : x + (size_t)t * (size_t)cols;
            pack_pairs(xt[j], j, c0, e0, blk);
            pack_pairs(xt[j], j, e1, c1, blk);
        }
        if (s0 < s1) pack_steps(xt, s0, s1, blk);
    }
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

/* Tiles 0-3: C (16 rows × 16 f32); 4: A; 5, 6, 7: B's three planes. */
__attribute__((target("amx-tile"))) static void amx_configure(void)
{
    amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = AMX_ROWS;
        cfg.colsb[i] = 64;
    }
    _tile_loadconfig(&cfg);
}

/* C tile `ct` += A (rows of W from wr) · B (the three planes loaded in tiles 5-7). */
#define AMX_ROWTILE(ct, wr)                                                                                       \
    do {                                                                                                          \
        _tile_loadd(4, (wr), stride);                                                                             \
        _tile_dpbf16ps(ct, 4, 5);                                                                                 \
        _tile_dpbf16ps(ct, 4, 6);                                                                                 \
        _tile_dpbf16ps(ct, 4, 7);                                                                                 \
    } while (0)

/* Per block of up to four row tiles (64 rows) and token block: each step
 * loads the token block's three planes once and takes them through every
 * row tile.  The rows go in chunks of about AMX_CHUNK_BYTES of weights,
 * token blocks outside the 64-row blocks of a chunk: the chunk's weights
 * stay in L2 across the token blocks, and a token block's packed X (192 KiB
 * at 2048 columns) is read from memory or L3 once per chunk rather than once
 * per 64 rows.  Every C tile takes the same steps in any order, so the
 * order leaves the bits alone. */
#define AMX_CHUNK_BYTES ((int64_t)1 << 20)

/* C tiles 0..nrt-1 for the 64 rows from r (within [r, re)) and token block
 * b, stored into y's rows of those tokens. */
__attribute__((target("avx512f,avx512bw,amx-tile,amx-bf16"))) static inline void
amx_group(const uint16_t *w, int64_t rows, int64_t cols, const uint16_t *xs, int nt, float *y, int64_t ldy, int64_t r,
          int64_t re)
{
    const int64_t steps = cols / AMX_K, stride = cols * 2;
    float c[AMX_GROUP][AMX_ROWS * AMX_ROWS] __attribute__((aligned(64)));
    int nrt = (int)TM_MIN((int64_t)AMX_GROUP, (re - r + AMX_ROWS - 1) / AMX_ROWS);
    const uint16_t *wr[AMX_GROUP];
    int64_t ra[AMX_GROUP];
    int m0[AMX_GROUP], m1[AMX_GROUP];
    for (int q = 0; q < AMX_GROUP; q++) {
        /* a tile past the end of a matrix whose rows are not a multiple of
         * 16 starts early, inside W; its rows before rq were done */
        int64_t rq = r + (int64_t)TM_MIN(q, nrt - 1) * AMX_ROWS;
        ra[q] = rq + AMX_ROWS <= rows ? rq : rows - AMX_ROWS;
        m0[q] = (int)(rq - ra[q]);
        m1[q] = (int)TM_MIN((int64_t)AMX_ROWS, re - ra[q]);
        wr[q] = w + (size_t)ra[q] * (size_t)cols;
    }
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t s = 0; s < steps; s++) {
        const uint16_t *xk = xs + (size_t)s * AMX_PLANES * AMX_TILE;
        _tile_loadd(5, xk, 64);
        _tile_loadd(6, xk + AMX_TILE, 64);
        _tile_loadd(7, xk + 2 * AMX_TILE, 64);
        AMX_ROWTILE(0, wr[0] + s * AMX_K);
        if (nrt > 1) AMX_ROWTILE(1, wr[1] + s * AMX_K);
        if (nrt > 2) AMX_ROWTILE(2, wr[2] + s * AMX_K);
        if (nrt > 3) AMX_ROWTILE(3, wr[3] + s * AMX_K);
    }
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    _tile_stored(2, c[2], 64);
    _tile_stored(3, c[3], 64);
    /* C is rows × tokens, y tokens × rows: each C turned, then a token's
     * rows [m0, m1) stored at once */
    for (int q = 0; q < nrt; q++) {
        __m512i ct[AMX_ROWS];
        for (int m = 0; m < AMX_ROWS; m++) ct[m] = _mm512_load_si512((const void *)(c[q] + m * AMX_ROWS));
        transpose16(ct);
        __mmask16 keep = (__mmask16)(((1u << m1[q]) - 1u) & ~((1u << m0[q]) - 1u));
        for (int j = 0; j < nt; j++)
            _mm512_mask_storeu_ps(y + (size_t)j * (size_t)ldy + (size_t)ra[q], keep, _mm512_castsi512_ps(ct[j]));
    }
}

__attribute__((target("avx512f,avx512bw,amx-tile,amx-bf16"))) void kern_bf16_gemm_amx(const uint16_t *w, int64_t rows,
                                                                                    int64_t cols, const uint16_t *xb,
                                                                                    int n, float *y, int64_t ldy,
                                                                                    int64_t r0, int64_t r1)
{
    amx_configure();
    const size_t bstride = (size_t)(cols / AMX_K) * AMX_PLANES * AMX_TILE; /* bf16 values per token block */
    const int nb = (n + AMX_ROWS - 1) / AMX_ROWS;
    const int64_t grp = AMX_GROUP * AMX_ROWS, chunk = TM_MAX(grp, AMX_CHUNK_BYTES / (cols * 2) / grp * grp);
    for (int64_t rc = r0; rc < r1; rc += chunk) {
        int64_t re = TM_MIN(r1, rc + chunk);
        for (int b = 0; b < nb; b++)
            for (int64_t r = rc; r < re; r += grp)
                amx_group(w, rows, cols, xb + (size_t)b * bstride, TM_MIN(AMX_ROWS, n - b * AMX_ROWS),
                          y + (size_t)b * AMX_ROWS * (size_t)ldy, ldy, r, re);
    }
    _tile_release();
}
