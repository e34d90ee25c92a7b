/* kern_impl.h: internal to the kernels: the per-ISA row-range functions that
 * kernels.c dispatches to.  Each computes y[r] for r in [r0, r1):
 *   w [rows, cols] bf16 row-major, x [cols] f32, y [rows] f32. */
#ifndef TM_KERN_IMPL_H
#define TM_KERN_IMPL_H

#include "common.h"
#include "dtype.h"

#include <immintrin.h>

/* The four sums of a0..a3 at once: two rounds of horizontal adds, then the
 * two 128-bit halves (lane i holds Σ ai).  With short rows (omni48-small's
 * down projection has 128 columns) four separate reductions cost as much as
 * the products.  Only AVX2 (or wider) code calls it. */
__attribute__((target("avx2,fma"))) static inline __m128 kern_hsum4_256(__m256 a0, __m256 a1, __m256 a2, __m256 a3)
{
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Nonzero: the AVX2/AVX-512 kernels prefetch into L2 instead of L1 (set by
 * kernels.c before first use; kern_bf16.c says why). */
extern int kern_bf16_prefetch_l2;

typedef void (*kern_bf16_rows_fn)(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);

void kern_bf16_rows_scalar(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);
void kern_bf16_rows_avx2(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);
void kern_bf16_rows_avx512(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);
/* Row i of four BF16 matrices of one shape [rows, cols] per step, each with
 * its own x and y. */
typedef void (*kern_bf16_4mat_fn)(const uint16_t *const *w, int64_t cols, const float *const *x, float *const *y,
                                  int64_t rows);
void kern_bf16_4mat_avx2(const uint16_t *const *w, int64_t cols, const float *const *x, float *const *y,
                         int64_t rows);
void kern_bf16_4mat_avx512(const uint16_t *const *w, int64_t cols, const float *const *x, float *const *y,
                           int64_t rows);
void kern_bf16_rows4s_avx2(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);
void kern_bf16_rows4s_avx512(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);
void kern_bf16_rows_avx512bf16(const uint16_t *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);

/* Y[n, ldy] columns [r0, r1) = X[n, cols] · Wᵀ (W bf16 [rows, cols]); token
 * t's row of X is xs[t] when xs is not NULL, else x + t·cols. */
typedef void (*kern_bf16_gemm_fn)(const uint16_t *w, int64_t cols, const float *x, const float *const *xs, int n,
                                  float *y, int64_t ldy, int64_t r0, int64_t r1);
void kern_bf16_gemm_rows_avx2(const uint16_t *w, int64_t cols, const float *x, const float *const *xs, int n,
                              float *y, int64_t ldy, int64_t r0, int64_t r1);
void kern_bf16_gemm_rows_avx512(const uint16_t *w, int64_t cols, const float *x, const float *const *xs, int n,
                                float *y, int64_t ldy, int64_t r0, int64_t r1);

/* The same with X in the even/odd layout (kernels.h), cols % 32 == 0. */
typedef void (*kern_bf16_gemm_eo_fn)(const uint16_t *w, int64_t cols, const float *const *xs, int n, float *y,
                                     int64_t ldy, int64_t r0, int64_t r1);
void kern_bf16_gemm_eo_rows_avx2(const uint16_t *w, int64_t cols, const float *const *xs, int n, float *y,
                                 int64_t ldy, int64_t r0, int64_t r1);
void kern_bf16_gemm_eo_rows_avx512(const uint16_t *w, int64_t cols, const float *const *xs, int n, float *y,
                                   int64_t ldy, int64_t r0, int64_t r1);

/* AMX (kern_amx.c): the same product with X packed by kern_amx_pack_range
 * (kernels.h: kern_amx_pack); W needs rows >= 16 and cols % 32 == 0. */
void kern_bf16_gemm_amx(const uint16_t *w, int64_t rows, int64_t cols, const uint16_t *xb, int n, float *y,
                        int64_t ldy, int64_t r0, int64_t r1);
/* Token t's row is xs[t] when xs is not NULL, else x + t·cols. */
void kern_amx_pack_range(const float *x, const float *const *xs, int n, int64_t cols, int64_t c0, int64_t c1,
                         uint16_t *out);

/* The same for F32 weights (w [rows, cols] f32). */
void kern_f32_rows_avx2(const float *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);
void kern_f32_rows_scalar(const float *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);

#endif
