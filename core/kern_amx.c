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

/* bf16_round on 16 lanes (the bf16 in each 32-bit lane's low half). */
__attribute__((target("avx512f,avx512bw"))) static inline __m512i bf16_round16(__m512i u)
{
    const __m512i expm = _mm512_set1_epi32(0x7f800000), mant = _mm512_set1_epi32(0x7fffff);
    __m512i e = _mm512_and_si512(u, expm);
    __mmask16 inf_nan = _mm512_cmpeq_epi32_mask(e, expm);
    __mmask16 nan = _mm512_mask_test_epi32_mask(inf_nan, u, mant);
    __mmask16 den = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
    return _mm512_mask_mov_epi32(r, den, _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x8000)));
}

/* split_pair on 32 columns of one token: 16 units per plane. */
__attribute__((target("avx512f,avx512bw"))) static inline void split32(const float *x, __m512i out[AMX_PLANES])
{
    const __m512i expm = _mm512_set1_epi32(0x7f800000);
    __m512i u[2] = {_mm512_loadu_si512((const void *)x), _mm512_loadu_si512((const void *)(x + 16))};
    __m256i p16[AMX_PLANES][2];
    for (int k = 0; k < 2; k++) {
        __m512i h = bf16_round16(u[k]);
        __m512 r = _mm512_sub_ps(_mm512_castsi512_ps(u[k]), _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
        __m512i m = bf16_round16(_mm512_castps_si512(r));
        __m512 r2 = _mm512_sub_ps(r, _mm512_castsi512_ps(_mm512_slli_epi32(m, 16)));
        __m512i l = bf16_round16(_mm512_castps_si512(r2));
        /* x beyond bf16's range: no remainder */
        __mmask16 big = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_slli_epi32(h, 16), expm), expm);
        m = _mm512_mask_mov_epi32(m, big, _mm512_setzero_si512());
        l = _mm512_mask_mov_epi32(l, big, _mm512_setzero_si512());
        p16[0][k] = _mm512_cvtepi32_epi16(h);
        p16[1][k] = _mm512_cvtepi32_epi16(m);
        p16[2][k] = _mm512_cvtepi32_epi16(l);
    }
    for (int q = 0; q < AMX_PLANES; q++)
        out[q] = _mm512_inserti64x4(_mm512_castsi256_si512(p16[q][0]), p16[q][1], 1);
}

/* Whole 32-column steps of one token (vector), the rest pair by pair; both
 * give the same bits, so any split of the columns packs alike. */
__attribute__((target("avx512f,avx512bw"))) static void pack_token(const float *xt, int j, int64_t c0, int64_t c1,
                                                                    uint32_t *blk)
{
    const __m512i rows = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240);
    int64_t c = c0;
    while (c < c1) {
        /* the step's planes, 256 units (one tile) each */
        uint32_t *tile = blk + (size_t)(c / AMX_K) * AMX_PLANES * (AMX_TILE / 2);
        if (c % AMX_K == 0 && c + AMX_K <= c1) {
            __m512i p[AMX_PLANES] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
            if (xt) split32(xt + c, p);
            for (int q = 0; q < AMX_PLANES; q++) _mm512_i32scatter_epi32(tile + q * (AMX_TILE / 2) + j, rows, p[q], 4);
            c += AMX_K;
            continue;
        }
        uint32_t u[AMX_PLANES] = {0, 0, 0};
        if (xt) split_pair(xt[c], xt[c + 1], u);
        /* row (c % 32) / 2 of the tile, token j: one 32-bit unit */
        size_t at = (size_t)((c % AMX_K) / 2) * AMX_ROWS + (size_t)j;
        for (int q = 0; q < AMX_PLANES; q++) tile[q * (AMX_TILE / 2) + at] = u[q];
        c += 2;
    }
}

void kern_amx_pack_range(const float *x, const float *const *xs, int n, int64_t cols, int64_t c0, int64_t c1,
                         uint16_t *out)
{
    const int64_t steps = cols / AMX_K;
    const int nb = (n + AMX_ROWS - 1) / AMX_ROWS;
    for (int t = 0; t < nb * AMX_ROWS; t++) {
        const float *xt = t >= n ? NULL : xs ? xs[t] : x + (size_t)t * (size_t)cols;
        uint32_t *blk = (uint32_t *)(out + (size_t)(t / AMX_ROWS) * (size_t)steps * AMX_PLANES * AMX_TILE);
        pack_token(xt, t % AMX_ROWS, c0, c1, blk);
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
 * row tile, so the packed X is read once per 64 rows, and the block's
 * weights (64 rows, 256 KiB at 2048 columns) stay in L2 across the token
 * blocks. */
__attribute__((target("amx-tile,amx-bf16"))) void kern_bf16_gemm_amx(const uint16_t *w, int64_t rows, int64_t cols,
                                                                      const uint16_t *xb, int n, float *y,
                                                                      int64_t ldy, int64_t r0, int64_t r1)
{
    amx_configure();
    const int64_t steps = cols / AMX_K, stride = cols * 2;
    const size_t bstride = (size_t)steps * AMX_PLANES * AMX_TILE; /* bf16 values per token block */
    const int nb = (n + AMX_ROWS - 1) / AMX_ROWS;
    float c[AMX_GROUP][AMX_ROWS * AMX_ROWS] __attribute__((aligned(64)));
    for (int64_t r = r0; r < r1; r += AMX_GROUP * AMX_ROWS) {
        int nrt = (int)TM_MIN((int64_t)AMX_GROUP, (r1 - r + AMX_ROWS - 1) / AMX_ROWS);
        const uint16_t *wr[AMX_GROUP];
        int64_t ra[AMX_GROUP];
        int m0[AMX_GROUP], m1[AMX_GROUP];
        for (int q = 0; q < AMX_GROUP; q++) {
            /* a tile past the end of a matrix whose rows are not a multiple
             * of 16 starts early, inside W; its rows before rq were done */
            int64_t rq = r + (int64_t)TM_MIN(q, nrt - 1) * AMX_ROWS;
            ra[q] = rq + AMX_ROWS <= rows ? rq : rows - AMX_ROWS;
            m0[q] = (int)(rq - ra[q]);
            m1[q] = (int)TM_MIN((int64_t)AMX_ROWS, r1 - ra[q]);
            wr[q] = w + (size_t)ra[q] * (size_t)cols;
        }
        for (int b = 0; b < nb; b++) {
            const uint16_t *xs = xb + (size_t)b * bstride;
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
            int nt = TM_MIN(AMX_ROWS, n - b * AMX_ROWS);
            for (int q = 0; q < nrt; q++)
                for (int j = 0; j < nt; j++) {
                    float *yt = y + (size_t)(b * AMX_ROWS + j) * (size_t)ldy + (size_t)ra[q];
                    for (int m = m0[q]; m < m1[q]; m++) yt[m] = c[q][m * AMX_ROWS + j];
                }
        }
    }
    _tile_release();
}
