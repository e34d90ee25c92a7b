/* kern_bf16.c: the BF16 matrix-vector kernel, one function per instruction
 * set, each compiled for its own target so the library itself stays
 * x86-64-v3.  kernels.c picks one at run time (cpu.h).
 *
 * All variants compute y[r] = Σ_c bf16_to_f32(W[r, c]) · x[c] over a row
 * range [r0, r1), W row-major [rows, cols] bf16, x [cols] f32, y [rows] f32.
 * Decode reads each weight once, so the kernels are bound by memory
 * bandwidth: they walk four rows at a time (four independent streams, and x
 * loaded once per four rows) with two accumulators per row to hide the FMA
 * latency.
 */
#include "kern_impl.h"

#include <immintrin.h>
#include <string.h>

/* Software prefetch of the rows a block ahead: matrices in decode are small
 * (128 KiB for omni48-small's experts) and each is read once, so the
 * hardware prefetcher alone rarely gets up to speed before the matrix ends.
 * Prefetching past the last row is harmless.
 *
 * Where the line goes is the caller's choice (kern_bf16_prefetch_l2): into
 * L1 (prefetcht0) or only into L2 (prefetcht1), which leaves L1's few miss
 * buffers to the loads and lets more lines be in flight.  Measured on
 * omni48-small decode at one thread, L2 is 12% faster on an AMD EPYC (Zen 4)
 * and slower on an Intel Xeon (bench/RESULTS.md); kernels.c picks by vendor.
 * Each kernel body below is inlined twice, once per target, so the choice
 * costs nothing inside the loops. */
int kern_bf16_prefetch_l2;

#define PF(p, l2) ((l2) ? _mm_prefetch((const char *)(p), _MM_HINT_T1) : _mm_prefetch((const char *)(p), _MM_HINT_T0))
#define PREFETCH4(p, stride, l2)                                                                       \
    do {                                                                                               \
        PF((p), l2);                                                                                   \
        PF((p) + (stride), l2);                                                                        \
        PF((p) + 2 * (stride), l2);                                                                    \
        PF((p) + 3 * (stride), l2);                                                                    \
    } while (0)
#define INLINE static inline __attribute__((always_inline))

/* ---- portable ------------------------------------------------------------ */

void kern_bf16_rows_scalar(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const uint16_t *wr = w + r * cols;
        float acc[8] = {0};
        int64_t c = 0;
        for (; c + 8 <= cols; c += 8)
            for (int k = 0; k < 8; k++) acc[k] += tm_bf16_to_f32(wr[c + k]) * x[c + k];
        float s = 0.f;
        for (; c < cols; c++) s += tm_bf16_to_f32(wr[c]) * x[c];
        for (int k = 0; k < 8; k++) s += acc[k];
        y[r] = s;
    }
}

/* ---- AVX2 + FMA ---------------------------------------------------------- */

/* 8 bf16 at p → 8 f32: zero-extend to 32 bits and shift into the high half. */
#define CVT8(p) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))

__attribute__((target("avx2,fma"))) static float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Rows ahead to prefetch: two rows of 512 or more columns, more when rows
 * are short, so the prefetch stays about 1 KiB or more ahead of the loads
 * (two beat four and eight on the 16-core host, decode of omni48-small). */
static inline int64_t pf_rows(int64_t cols) { return cols >= 512 ? 2 : 2 * ((512 + cols - 1) / cols); }

__attribute__((target("avx2,fma"))) INLINE void rows_avx2(const uint16_t *w, int64_t cols, const float *x, float *y,
                                                             int64_t r0, int64_t r1, const int l2)
{
    int64_t pfr = pf_rows(cols);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint16_t *w0 = w + r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        const uint16_t *wp = w0 + pfr * cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int64_t c = 0;
        for (; c + 16 <= cols; c += 16) {
            if (!(c & 31)) PREFETCH4(wp + c, cols, l2);
            __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8);
            a0 = _mm256_fmadd_ps(CVT8(w0 + c), x0, a0);
            b0 = _mm256_fmadd_ps(CVT8(w0 + c + 8), x1, b0);
            a1 = _mm256_fmadd_ps(CVT8(w1 + c), x0, a1);
            b1 = _mm256_fmadd_ps(CVT8(w1 + c + 8), x1, b1);
            a2 = _mm256_fmadd_ps(CVT8(w2 + c), x0, a2);
            b2 = _mm256_fmadd_ps(CVT8(w2 + c + 8), x1, b2);
            a3 = _mm256_fmadd_ps(CVT8(w3 + c), x0, a3);
            b3 = _mm256_fmadd_ps(CVT8(w3 + c + 8), x1, b3);
        }
        for (; c + 8 <= cols; c += 8) {
            __m256 x0 = _mm256_loadu_ps(x + c);
            a0 = _mm256_fmadd_ps(CVT8(w0 + c), x0, a0);
            a1 = _mm256_fmadd_ps(CVT8(w1 + c), x0, a1);
            a2 = _mm256_fmadd_ps(CVT8(w2 + c), x0, a2);
            a3 = _mm256_fmadd_ps(CVT8(w3 + c), x0, a3);
        }
        float s4[4];
        _mm_storeu_ps(s4, kern_hsum4_256(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1), _mm256_add_ps(a2, b2),
                                    _mm256_add_ps(a3, b3)));
        float s0 = s4[0], s1 = s4[1], s2 = s4[2], s3 = s4[3];
        for (; c < cols; c++) {
            s0 += tm_bf16_to_f32(w0[c]) * x[c];
            s1 += tm_bf16_to_f32(w1[c]) * x[c];
            s2 += tm_bf16_to_f32(w2[c]) * x[c];
            s3 += tm_bf16_to_f32(w3[c]) * x[c];
        }
        y[r] = s0;
        y[r + 1] = s1;
        y[r + 2] = s2;
        y[r + 3] = s3;
    }
    for (; r < r1; r++) {
        const uint16_t *w0 = w + r * cols;
        __m256 a0 = _mm256_setzero_ps(), b0 = a0;
        int64_t c = 0;
        for (; c + 16 <= cols; c += 16) {
            a0 = _mm256_fmadd_ps(CVT8(w0 + c), _mm256_loadu_ps(x + c), a0);
            b0 = _mm256_fmadd_ps(CVT8(w0 + c + 8), _mm256_loadu_ps(x + c + 8), b0);
        }
        for (; c + 8 <= cols; c += 8) a0 = _mm256_fmadd_ps(CVT8(w0 + c), _mm256_loadu_ps(x + c), a0);
        float s = hsum256(_mm256_add_ps(a0, b0));
        for (; c < cols; c++) s += tm_bf16_to_f32(w0[c]) * x[c];
        y[r] = s;
    }
}

/* Four rows a quarter of the range apart per step: four independent streams
 * through memory instead of one, which is what lets a single core approach
 * its read bandwidth on a long matrix (the AVX-512 variant below likewise). */
__attribute__((target("avx2,fma"))) void kern_bf16_rows4s_avx2(const uint16_t *w, int64_t cols, const float *x,
                                                                float *y, int64_t r0, int64_t r1)
{
    int64_t q = (r1 - r0) / 4;
    if (q < 4 || (cols & 15)) {
        kern_bf16_rows_avx2(w, cols, x, y, r0, r1);
        return;
    }
    /* the four quarters as four matrices sharing x */
    const uint16_t *w4[4] = {w + r0 * cols, w + (r0 + q) * cols, w + (r0 + 2 * q) * cols, w + (r0 + 3 * q) * cols};
    const float *x4[4] = {x, x, x, x};
    float *y4[4] = {y + r0, y + r0 + q, y + r0 + 2 * q, y + r0 + 3 * q};
    kern_bf16_4mat_avx2(w4, cols, x4, y4, q);
    if (r0 + 4 * q < r1) kern_bf16_rows_avx2(w, cols, x, y, r0 + 4 * q, r1);
}

/* Row i of four matrices of one shape per step: four memory streams, where
 * one matrix read row after row is a single stream (a layer's experts at one
 * token, or the four quarters of one matrix: kern_bf16_rows4s_avx2). */
__attribute__((target("avx2,fma"))) INLINE void mat4_avx2(const uint16_t *const *w, int64_t cols,
                                                             const float *const *x, float *const *y, int64_t rows,
                                                             const int l2)
{
    int64_t pfr = pf_rows(cols);
    for (int64_t i = 0; i < rows; i++) {
        const uint16_t *w0 = w[0] + i * cols, *w1 = w[1] + i * cols, *w2 = w[2] + i * cols, *w3 = w[3] + i * cols;
        int64_t ahead = (i + pfr < rows ? pfr : 0) * cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int64_t c = 0; c < cols; c += 16) {
            if (!(c & 31)) {
                PF(w0 + ahead + c, l2);
                PF(w1 + ahead + c, l2);
                PF(w2 + ahead + c, l2);
                PF(w3 + ahead + c, l2);
            }
            a0 = _mm256_fmadd_ps(CVT8(w0 + c), _mm256_loadu_ps(x[0] + c), a0);
            b0 = _mm256_fmadd_ps(CVT8(w0 + c + 8), _mm256_loadu_ps(x[0] + c + 8), b0);
            a1 = _mm256_fmadd_ps(CVT8(w1 + c), _mm256_loadu_ps(x[1] + c), a1);
            b1 = _mm256_fmadd_ps(CVT8(w1 + c + 8), _mm256_loadu_ps(x[1] + c + 8), b1);
            a2 = _mm256_fmadd_ps(CVT8(w2 + c), _mm256_loadu_ps(x[2] + c), a2);
            b2 = _mm256_fmadd_ps(CVT8(w2 + c + 8), _mm256_loadu_ps(x[2] + c + 8), b2);
            a3 = _mm256_fmadd_ps(CVT8(w3 + c), _mm256_loadu_ps(x[3] + c), a3);
            b3 = _mm256_fmadd_ps(CVT8(w3 + c + 8), _mm256_loadu_ps(x[3] + c + 8), b3);
        }
        float s4[4];
        _mm_storeu_ps(s4, kern_hsum4_256(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1), _mm256_add_ps(a2, b2),
                                    _mm256_add_ps(a3, b3)));
        y[0][i] = s4[0];
        y[1][i] = s4[1];
        y[2][i] = s4[2];
        y[3][i] = s4[3];
    }
}

/* The entry points: each body above inlined once per prefetch target. */
__attribute__((target("avx2,fma"))) void kern_bf16_rows_avx2(const uint16_t *w, int64_t cols, const float *x,
                                                              float *y, int64_t r0, int64_t r1)
{
    if (kern_bf16_prefetch_l2) rows_avx2(w, cols, x, y, r0, r1, 1);
    else rows_avx2(w, cols, x, y, r0, r1, 0);
}

__attribute__((target("avx2,fma"))) void kern_bf16_4mat_avx2(const uint16_t *const *w, int64_t cols,
                                                              const float *const *x, float *const *y, int64_t rows)
{
    if (kern_bf16_prefetch_l2) mat4_avx2(w, cols, x, y, rows, 1);
    else mat4_avx2(w, cols, x, y, rows, 0);
}

/* ---- AVX-512 (F, BW, VL) ------------------------------------------------- */

/* 16 bf16 at p (the lanes in mask m; others read as 0) → 16 f32. */
#define CVT16M(p, m)                                                                                   \
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16((m), (p))), 16))
#define CVT16(p) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))

/* As kern_hsum4_256: per 128-bit lane [Σa0, Σa1, Σa2, Σa3] partial sums, then the
 * four lanes added. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static __m128 hsum4_512(__m512 a0, __m512 a1, __m512 a2,
                                                                             __m512 a3)
{
    __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    __m512d d0 = _mm512_castps_pd(t0), d1 = _mm512_castps_pd(t1);
    __m512 u = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(d0, d1)), _mm512_castpd_ps(_mm512_unpackhi_pd(d0, d1)));
    __m256 v = _mm256_add_ps(_mm512_castps512_ps256(u), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(u), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) INLINE void
rows_avx512(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1, const int l2)
{
    int64_t tail = cols & 15;
    __mmask16 tm = (__mmask16)((1u << tail) - 1u);
    int64_t cmain = cols - tail;
    int64_t pfr = pf_rows(cols);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint16_t *w0 = w + r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        const uint16_t *wp = w0 + pfr * cols;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int64_t c = 0;
        for (; c + 32 <= cmain; c += 32) {
            PREFETCH4(wp + c, cols, l2);
            __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
            a0 = _mm512_fmadd_ps(CVT16(w0 + c), x0, a0);
            b0 = _mm512_fmadd_ps(CVT16(w0 + c + 16), x1, b0);
            a1 = _mm512_fmadd_ps(CVT16(w1 + c), x0, a1);
            b1 = _mm512_fmadd_ps(CVT16(w1 + c + 16), x1, b1);
            a2 = _mm512_fmadd_ps(CVT16(w2 + c), x0, a2);
            b2 = _mm512_fmadd_ps(CVT16(w2 + c + 16), x1, b2);
            a3 = _mm512_fmadd_ps(CVT16(w3 + c), x0, a3);
            b3 = _mm512_fmadd_ps(CVT16(w3 + c + 16), x1, b3);
        }
        if (c < cmain) {
            __m512 x0 = _mm512_loadu_ps(x + c);
            a0 = _mm512_fmadd_ps(CVT16(w0 + c), x0, a0);
            a1 = _mm512_fmadd_ps(CVT16(w1 + c), x0, a1);
            a2 = _mm512_fmadd_ps(CVT16(w2 + c), x0, a2);
            a3 = _mm512_fmadd_ps(CVT16(w3 + c), x0, a3);
            c += 16;
        }
        if (tail) {
            __m512 x0 = _mm512_maskz_loadu_ps(tm, x + c);
            b0 = _mm512_fmadd_ps(CVT16M(w0 + c, tm), x0, b0);
            b1 = _mm512_fmadd_ps(CVT16M(w1 + c, tm), x0, b1);
            b2 = _mm512_fmadd_ps(CVT16M(w2 + c, tm), x0, b2);
            b3 = _mm512_fmadd_ps(CVT16M(w3 + c, tm), x0, b3);
        }
        _mm_storeu_ps(y + r, hsum4_512(_mm512_add_ps(a0, b0), _mm512_add_ps(a1, b1), _mm512_add_ps(a2, b2),
                                       _mm512_add_ps(a3, b3)));
    }
    for (; r < r1; r++) {
        const uint16_t *w0 = w + r * cols;
        __m512 a0 = _mm512_setzero_ps(), b0 = a0;
        int64_t c = 0;
        for (; c + 32 <= cmain; c += 32) {
            a0 = _mm512_fmadd_ps(CVT16(w0 + c), _mm512_loadu_ps(x + c), a0);
            b0 = _mm512_fmadd_ps(CVT16(w0 + c + 16), _mm512_loadu_ps(x + c + 16), b0);
        }
        for (; c < cmain; c += 16) a0 = _mm512_fmadd_ps(CVT16(w0 + c), _mm512_loadu_ps(x + c), a0);
        if (tail) b0 = _mm512_fmadd_ps(CVT16M(w0 + c, tm), _mm512_maskz_loadu_ps(tm, x + c), b0);
        y[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    }
}

/* Four streams, as kern_bf16_rows4s_avx2. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) void
kern_bf16_rows4s_avx512(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1)
{
    int64_t q = (r1 - r0) / 4;
    if (q < 4 || (cols & 31)) {
        kern_bf16_rows_avx512(w, cols, x, y, r0, r1);
        return;
    }
    const uint16_t *w4[4] = {w + r0 * cols, w + (r0 + q) * cols, w + (r0 + 2 * q) * cols, w + (r0 + 3 * q) * cols};
    const float *x4[4] = {x, x, x, x};
    float *y4[4] = {y + r0, y + r0 + q, y + r0 + 2 * q, y + r0 + 3 * q};
    kern_bf16_4mat_avx512(w4, cols, x4, y4, q);
    if (r0 + 4 * q < r1) kern_bf16_rows_avx512(w, cols, x, y, r0 + 4 * q, r1);
}

/* Four matrices at once, as kern_bf16_4mat_avx2. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) INLINE void
mat4_avx512(const uint16_t *const *w, int64_t cols, const float *const *x, float *const *y, int64_t rows,
            const int l2)
{
    int64_t pfr = pf_rows(cols);
    for (int64_t i = 0; i < rows; i++) {
        const uint16_t *w0 = w[0] + i * cols, *w1 = w[1] + i * cols, *w2 = w[2] + i * cols, *w3 = w[3] + i * cols;
        int64_t ahead = (i + pfr < rows ? pfr : 0) * cols;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int64_t c = 0; c < cols; c += 32) {
            PF(w0 + ahead + c, l2);
            PF(w1 + ahead + c, l2);
            PF(w2 + ahead + c, l2);
            PF(w3 + ahead + c, l2);
            a0 = _mm512_fmadd_ps(CVT16(w0 + c), _mm512_loadu_ps(x[0] + c), a0);
            b0 = _mm512_fmadd_ps(CVT16(w0 + c + 16), _mm512_loadu_ps(x[0] + c + 16), b0);
            a1 = _mm512_fmadd_ps(CVT16(w1 + c), _mm512_loadu_ps(x[1] + c), a1);
            b1 = _mm512_fmadd_ps(CVT16(w1 + c + 16), _mm512_loadu_ps(x[1] + c + 16), b1);
            a2 = _mm512_fmadd_ps(CVT16(w2 + c), _mm512_loadu_ps(x[2] + c), a2);
            b2 = _mm512_fmadd_ps(CVT16(w2 + c + 16), _mm512_loadu_ps(x[2] + c + 16), b2);
            a3 = _mm512_fmadd_ps(CVT16(w3 + c), _mm512_loadu_ps(x[3] + c), a3);
            b3 = _mm512_fmadd_ps(CVT16(w3 + c + 16), _mm512_loadu_ps(x[3] + c + 16), b3);
        }
        y[0][i] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
        y[1][i] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
        y[2][i] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
        y[3][i] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
    }
}

/* The entry points, as for AVX2. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) void
kern_bf16_rows_avx512(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1)
{
    if (kern_bf16_prefetch_l2) rows_avx512(w, cols, x, y, r0, r1, 1);
    else rows_avx512(w, cols, x, y, r0, r1, 0);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void
kern_bf16_4mat_avx512(const uint16_t *const *w, int64_t cols, const float *const *x, float *const *y, int64_t rows)
{
    if (kern_bf16_prefetch_l2) mat4_avx512(w, cols, x, y, rows, 1);
    else mat4_avx512(w, cols, x, y, rows, 0);
}

/* ---- AVX512-BF16 --------------------------------------------------------- */

/* vdpbf16ps multiplies bf16 pairs, so x is rounded to bf16 first, a panel of
 * XB_PANEL columns at a time into a stack buffer (no allocation per call);
 * the panel is zero-padded to a multiple of 32 so a masked weight load of
 * the tail meets zeros. */
#define XB_PANEL 4096

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void
kern_bf16_rows_avx512bf16(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1)
{
    uint16_t xb[XB_PANEL] __attribute__((aligned(64)));
    for (int64_t r = r0; r < r1; r++) y[r] = 0.f;
    for (int64_t p0 = 0; p0 < cols; p0 += XB_PANEL) {
        int64_t pc = TM_MIN((int64_t)XB_PANEL, cols - p0);
        int64_t pc32 = (pc + 31) & ~(int64_t)31;
        for (int64_t c = 0; c < pc32; c += 32) {
            int64_t left = pc - c;
            __mmask16 m0 = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1u) : 0;
            __mmask16 m1 = left >= 32 ? (__mmask16)0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1u) : 0;
            __m512 lo = _mm512_maskz_loadu_ps(m0, x + p0 + c), hi = _mm512_maskz_loadu_ps(m1, x + p0 + c + 16);
            _mm512_store_si512((__m512i *)(xb + c), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
        int64_t tail = pc & 31;
        __mmask32 tm = (__mmask32)((1ull << tail) - 1ull);
        int64_t cmain = pc - tail;
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            const uint16_t *w0 = w + r * cols + p0, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            int64_t c = 0;
            for (; c < cmain; c += 32) {
                __m512bh xv = (__m512bh)_mm512_load_si512((const __m512i *)(xb + c));
                a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(w0 + c), xv);
                a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(w1 + c), xv);
                a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(w2 + c), xv);
                a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(w3 + c), xv);
            }
            if (tail) {
                __m512bh xv = (__m512bh)_mm512_load_si512((const __m512i *)(xb + c));
                a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(tm, w0 + c), xv);
                a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_maskz_loadu_epi16(tm, w1 + c), xv);
                a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_maskz_loadu_epi16(tm, w2 + c), xv);
                a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_maskz_loadu_epi16(tm, w3 + c), xv);
            }
            y[r] += _mm512_reduce_add_ps(a0);
            y[r + 1] += _mm512_reduce_add_ps(a1);
            y[r + 2] += _mm512_reduce_add_ps(a2);
            y[r + 3] += _mm512_reduce_add_ps(a3);
        }
        for (; r < r1; r++) {
            const uint16_t *w0 = w + r * cols + p0;
            __m512 a0 = _mm512_setzero_ps();
            int64_t c = 0;
            for (; c < cmain; c += 32)
                a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(w0 + c),
                                      (__m512bh)_mm512_load_si512((const __m512i *)(xb + c)));
            if (tail)
                a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(tm, w0 + c),
                                      (__m512bh)_mm512_load_si512((const __m512i *)(xb + c)));
            y[r] += _mm512_reduce_add_ps(a0);
        }
    }
}

/* ---- few-token products ---------------------------------------------------
 * Y[n, ldy] (columns r0..r1) = X[n, cols] · Wᵀ with W bf16: batched decode and
 * prefill give each expert a handful of tokens, where widening the weights to
 * a buffer and calling sgemm costs more than the product.  Here each block of
 * four weight rows is widened in registers once per 16 columns and
 * multiplied with four tokens at a time (16 accumulators), so the weights
 * stream from memory once and the block (4 rows, ≤ 32 KiB) stays in L1 while
 * the token groups pass over it.  Missing rows or tokens in a partial block
 * point at row or token 0 and their results are dropped, which keeps one
 * code path.  Exact: f32 products and sums, like the matrix-vector kernels.
 *
 * Token t's row is xs[t] when xs is given (an expert's tokens scattered over
 * a batch, read in place), else x + t·cols.  Each output depends only on its
 * row and token, never on r0, r1 or n, so any split of the rows over threads
 * gives the same bits.
 *
 * While the first token group passes over a block, the next block is
 * prefetched two cache lines per 16 columns (its whole extent by the end of
 * the row): a thread's share of an expert is a few rows of 1.5-4 KiB, too
 * short a stream for the hardware prefetcher to get ahead on. */

#define XROW(t) (xs ? xs[t] : x + (size_t)(t) * (size_t)cols)

__attribute__((target("avx512f,avx512bw,avx512vl"))) void
kern_bf16_gemm_rows_avx512(const uint16_t *w, int64_t cols, const float *x, const float *const *xs, int n, float *y,
                           int64_t ldy, int64_t r0, int64_t r1)
{
    int64_t tail = cols & 15;
    __mmask16 tm = (__mmask16)((1u << tail) - 1u);
    int64_t cmain = cols - tail;
    for (int64_t r = r0; r < r1; r += 4) {
        int nr = (int)TM_MIN((int64_t)4, r1 - r);
        const uint16_t *wr[4];
        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) wr[k] = w + (r + (k < nr ? k : 0)) * cols;
        /* the next block, or this one again at the end of the range */
        const char *pf = (const char *)(w + (r + 4 < r1 ? r + 4 : r) * cols);
        for (int t0 = 0; t0 < n; t0 += 4) {
            int nt = TM_MIN(4, n - t0);
            const float *xt[4];
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) xt[j] = XROW(t0 + (j < nt ? j : 0));
            __m512 acc[4][4];
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) acc[j][k] = _mm512_setzero_ps();
            int64_t c = 0;
            for (; c < cmain; c += 16) {
                if (!t0) {
                    _mm_prefetch(pf + 8 * c, _MM_HINT_T0);
                    _mm_prefetch(pf + 8 * c + 64, _MM_HINT_T0);
                }
                __m512 wv[4];
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) wv[k] = CVT16(wr[k] + c);
                _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
                    __m512 xv = _mm512_loadu_ps(xt[j] + c);
                    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) acc[j][k] = _mm512_fmadd_ps(wv[k], xv, acc[j][k]);
                }
            }
            if (tail) {
                __m512 wv[4];
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) wv[k] = CVT16M(wr[k] + c, tm);
                _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
                    __m512 xv = _mm512_maskz_loadu_ps(tm, xt[j] + c);
                    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) acc[j][k] = _mm512_fmadd_ps(wv[k], xv, acc[j][k]);
                }
            }
            for (int j = 0; j < nt; j++)
                for (int k = 0; k < nr; k++) y[(size_t)(t0 + j) * (size_t)ldy + (size_t)(r + k)] = _mm512_reduce_add_ps(acc[j][k]);
        }
    }
}

/* AVX2 has 16 vector registers: four rows by two tokens (8 accumulators). */
__attribute__((target("avx2,fma"))) void kern_bf16_gemm_rows_avx2(const uint16_t *w, int64_t cols, const float *x,
                                                                   const float *const *xs, int n, float *y,
                                                                   int64_t ldy, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r += 4) {
        int nr = (int)TM_MIN((int64_t)4, r1 - r);
        const uint16_t *wr[4];
        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) wr[k] = w + (r + (k < nr ? k : 0)) * cols;
        const char *pf = (const char *)(w + (r + 4 < r1 ? r + 4 : r) * cols);
        for (int t0 = 0; t0 < n; t0 += 2) {
            int nt = TM_MIN(2, n - t0);
            const float *xt[2];
            _Pragma("GCC unroll 4") for (int j = 0; j < 2; j++) xt[j] = XROW(t0 + (j < nt ? j : 0));
            __m256 acc[2][4];
            _Pragma("GCC unroll 4") for (int j = 0; j < 2; j++)
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) acc[j][k] = _mm256_setzero_ps();
            int64_t c = 0;
            for (; c + 8 <= cols; c += 8) {
                if (!t0 && !(c & 15)) {
                    _mm_prefetch(pf + 8 * c, _MM_HINT_T0);
                    _mm_prefetch(pf + 8 * c + 64, _MM_HINT_T0);
                }
                __m256 wv[4];
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) wv[k] = CVT8(wr[k] + c);
                _Pragma("GCC unroll 4") for (int j = 0; j < 2; j++) {
                    __m256 xv = _mm256_loadu_ps(xt[j] + c);
                    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) acc[j][k] = _mm256_fmadd_ps(wv[k], xv, acc[j][k]);
                }
            }
            for (int j = 0; j < nt; j++)
                for (int k = 0; k < nr; k++) {
                    float s = hsum256(acc[j][k]);
                    for (int64_t cc = c; cc < cols; cc++) s += tm_bf16_to_f32(wr[k][cc]) * xt[j][cc];
                    y[(size_t)(t0 + j) * (size_t)ldy + (size_t)(r + k)] = s;
                }
        }
    }
}

#undef XROW

/* ---- few-token products, even/odd layout -----------------------------------
 * The same product where each 32-column chunk of x is stored even columns
 * first (kernels.h, kern_eo_pack).  One 64-byte load of 32 bf16 weights then
 * widens with one shift (even columns: the low halves of each 32-bit pair)
 * and one mask (odd columns: the high halves), against a zero-extension and
 * a shift per 16 columns above: the widening shares the FMA ports, so this
 * leaves more of them to the products when several tokens share a row.
 * cols % 32 == 0 (the caller checks). */

__attribute__((target("avx512f,avx512bw,avx512vl"))) void
kern_bf16_gemm_eo_rows_avx512(const uint16_t *w, int64_t cols, const float *const *xs, int n, float *y, int64_t ldy,
                              int64_t r0, int64_t r1)
{
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    for (int64_t r = r0; r < r1; r += 4) {
        int nr = (int)TM_MIN((int64_t)4, r1 - r);
        const uint16_t *wr[4];
        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) wr[k] = w + (r + (k < nr ? k : 0)) * cols;
        const char *pf = (const char *)(w + (r + 4 < r1 ? r + 4 : r) * cols);
        for (int t0 = 0; t0 < n; t0 += 4) {
            int nt = TM_MIN(4, n - t0);
            const float *xt[4];
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) xt[j] = xs[t0 + (j < nt ? j : 0)];
            __m512 acc[4][4];
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) acc[j][k] = _mm512_setzero_ps();
            for (int64_t c = 0; c < cols; c += 32) {
                if (!t0) {
                    /* 4 rows x 64 bytes per step: four lines of the next block */
                    _mm_prefetch(pf + 8 * c, _MM_HINT_T0);
                    _mm_prefetch(pf + 8 * c + 64, _MM_HINT_T0);
                    _mm_prefetch(pf + 8 * c + 128, _MM_HINT_T0);
                    _mm_prefetch(pf + 8 * c + 192, _MM_HINT_T0);
                }
                __m512 we[4], wo[4];
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                    __m512i v = _mm512_loadu_si512((const void *)(wr[k] + c));
                    we[k] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
                    wo[k] = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
                }
                _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
                    __m512 xe = _mm512_loadu_ps(xt[j] + c), xo = _mm512_loadu_ps(xt[j] + c + 16);
                    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                        acc[j][k] = _mm512_fmadd_ps(we[k], xe, acc[j][k]);
                        acc[j][k] = _mm512_fmadd_ps(wo[k], xo, acc[j][k]);
                    }
                }
            }
            for (int j = 0; j < nt; j++)
                for (int k = 0; k < nr; k++) y[(size_t)(t0 + j) * (size_t)ldy + (size_t)(r + k)] = _mm512_reduce_add_ps(acc[j][k]);
        }
    }
}

/* AVX2: four rows by two tokens; a 16-column half of a chunk per row at a
 * time (its even columns sit at chunk offset 8·half, its odd ones at
 * 16 + 8·half), the four x vectors held across the rows. */
__attribute__((target("avx2,fma"))) void kern_bf16_gemm_eo_rows_avx2(const uint16_t *w, int64_t cols,
                                                                      const float *const *xs, int n, float *y,
                                                                      int64_t ldy, int64_t r0, int64_t r1)
{
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    for (int64_t r = r0; r < r1; r += 4) {
        int nr = (int)TM_MIN((int64_t)4, r1 - r);
        const uint16_t *wr[4];
        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) wr[k] = w + (r + (k < nr ? k : 0)) * cols;
        const char *pf = (const char *)(w + (r + 4 < r1 ? r + 4 : r) * cols);
        for (int t0 = 0; t0 < n; t0 += 2) {
            int nt = TM_MIN(2, n - t0);
            const float *xt0 = xs[t0], *xt1 = xs[t0 + (nt > 1 ? 1 : 0)];
            __m256 acc[2][4];
            _Pragma("GCC unroll 4") for (int j = 0; j < 2; j++)
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) acc[j][k] = _mm256_setzero_ps();
            for (int64_t c = 0; c < cols; c += 32)
                for (int h = 0; h < 2; h++) {
                    if (!t0) {
                        _mm_prefetch(pf + 8 * c + 128 * h, _MM_HINT_T0);
                        _mm_prefetch(pf + 8 * c + 128 * h + 64, _MM_HINT_T0);
                    }
                    __m256 xe0 = _mm256_loadu_ps(xt0 + c + 8 * h), xo0 = _mm256_loadu_ps(xt0 + c + 16 + 8 * h);
                    __m256 xe1 = _mm256_loadu_ps(xt1 + c + 8 * h), xo1 = _mm256_loadu_ps(xt1 + c + 16 + 8 * h);
                    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                        __m256i v = _mm256_loadu_si256((const __m256i *)(wr[k] + c + 16 * h));
                        __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
                        __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(v, hi));
                        acc[0][k] = _mm256_fmadd_ps(wo, xo0, _mm256_fmadd_ps(we, xe0, acc[0][k]));
                        acc[1][k] = _mm256_fmadd_ps(wo, xo1, _mm256_fmadd_ps(we, xe1, acc[1][k]));
                    }
                }
            for (int j = 0; j < nt; j++)
                for (int k = 0; k < nr; k++) y[(size_t)(t0 + j) * (size_t)ldy + (size_t)(r + k)] = hsum256(acc[j][k]);
        }
    }
}

/* ---- f32 rows -------------------------------------------------------------
 * F32 matrices (weights loaded with --weight-dtype f32) inside the thread
 * pool: calling OpenBLAS from the pool's threads would nest its own threads
 * in ours, so F32 rows get the same four-row AVX2 loop here. */
__attribute__((target("avx2,fma"))) void kern_f32_rows_avx2(const float *w, int64_t cols, const float *x, float *y,
                                                             int64_t r0, int64_t r1)
{
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const float *w0 = w + r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t c = 0;
        for (; c + 8 <= cols; c += 8) {
            __m256 xv = _mm256_loadu_ps(x + c);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + c), xv, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + c), xv, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + c), xv, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + c), xv, a3);
        }
        float s[4];
        _mm_storeu_ps(s, kern_hsum4_256(a0, a1, a2, a3));
        for (; c < cols; c++) {
            s[0] += w0[c] * x[c];
            s[1] += w1[c] * x[c];
            s[2] += w2[c] * x[c];
            s[3] += w3[c] * x[c];
        }
        y[r] = s[0], y[r + 1] = s[1], y[r + 2] = s[2], y[r + 3] = s[3];
    }
    for (; r < r1; r++) {
        const float *w0 = w + r * cols;
        __m256 a0 = _mm256_setzero_ps();
        int64_t c = 0;
        for (; c + 8 <= cols; c += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + c), _mm256_loadu_ps(x + c), a0);
        /* reduced as the four-row blocks reduce, so a row's result does not
         * depend on which block it falls in (threads split rows anywhere) */
        __m256 z = _mm256_setzero_ps();
        float s = _mm_cvtss_f32(kern_hsum4_256(a0, z, z, z));
        for (; c < cols; c++) s += w0[c] * x[c];
        y[r] = s;
    }
}

void kern_f32_rows_scalar(const float *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *wr = w + r * cols;
        float s = 0.f;
        for (int64_t c = 0; c < cols; c++) s += wr[c] * x[c];
        y[r] = s;
    }
}
