/* kernels.h: the numeric kernels.  Each optimised kernel has a naive
 * reference (*_ref) beside it; tests/test_kernels.c compares them on random
 * inputs of odd sizes.
 *
 * Matrices are tm_mat views, row-major [rows, cols], dtype F32 or BF16
 * (asserted).  Activations are always float32.
 */
#ifndef TM_KERNELS_H
#define TM_KERNELS_H

#include "dtype.h"

/* Number of threads the kernels may use (BLAS and our own loops).  n > 1
 * starts a persistent pool of n-1 workers once (resized only when n changes);
 * n == 1 (MPI ranks) runs everything on the calling thread. */
void kern_set_threads(int n);
int kern_threads(void);

/* Run fn(arg, i0, i1) over disjoint ranges covering [0, n) on the pool, the
 * caller taking the first range; each range starts at a multiple of `align`.
 * Runs serially when the pool has one thread, is busy (a call from another
 * thread), or n < 2 * align.  fn must not call kern_parallel_for. */
typedef void (*kern_range_fn)(void *arg, int64_t i0, int64_t i1);
void kern_parallel_for(int64_t n, int64_t align, kern_range_fn fn, void *arg);

/* The instruction-set variants of the BF16 matrix-vector kernel.
 *   SCALAR      portable C, the last resort.
 *   AVX2        bf16 widened to f32, FMA in f32 (x86-64-v3 baseline).
 *   AVX512      the same on 512-bit vectors (avx512f/bw/vl).
 *   AVX512BF16  vdpbf16ps: x is rounded to bf16 first, so each product has a
 *               relative error up to 2^-9; |y - y_ref| <= 2^-8 · Σ|w·x| is
 *               what the test holds it to.  Not chosen by default. */
typedef enum {
    KERN_ISA_SCALAR = 0,
    KERN_ISA_AVX2,
    KERN_ISA_AVX512,
    KERN_ISA_AVX512BF16,
    KERN_ISA_COUNT
} kern_isa;

const char *kern_isa_name(kern_isa isa);
int kern_isa_supported(kern_isa isa);
/* The variant kern_matvec uses for BF16: the widest exact one the CPU has,
 * unless kern_set_isa or TRUSTMOE_KERN_ISA (scalar|avx2|avx512|avx512bf16)
 * chose another.  Returns -1 (and changes nothing) if unsupported. */
kern_isa kern_isa_active(void);
int kern_set_isa(kern_isa isa);
/* Where the BF16 kernels' software prefetch puts lines: "l1" or "l2" (the
 * default by CPU vendor, or TRUSTMOE_PREFETCH=l1|l2). */
const char *kern_prefetch_target(void);
/* One variant directly, single-threaded, for tests and benchmarks. */
void kern_matvec_isa(kern_isa isa, const tm_mat *w, const float *x, float *y);

/* y[w.rows] = W · x[w.cols] */
void kern_matvec(const tm_mat *w, const float *x, float *y);
void kern_matvec_ref(const tm_mat *w, const float *x, float *y);

/* Y[n, w.rows] = X[n, w.cols] · Wᵀ.  n may be 1. */
void kern_matmul(const tm_mat *w, const float *x, int n, float *y);
void kern_matmul_ref(const tm_mat *w, const float *x, int n, float *y);

/* BF16 W only: the register-blocked product (weights widened in registers,
 * four tokens per pass over a block of rows), threaded over rows.
 * kern_matmul uses it for every n > 1; exposed for benchmarks and tests. */
void kern_matmul_direct(const tm_mat *w, const float *x, int n, float *y);

/* One thread's share of a few-token product: rows [r0, r1) of
 * Y[n, ldy] = X · Wᵀ, token t's row of X at x[t] (an expert's tokens read in
 * place from a batch).  Runs on the calling thread (meant for a pool task);
 * y[t·ldy + r] depends only on row r and token t, so splitting the rows over
 * any number of threads gives the same bits. */
void kern_matmul_rows(const tm_mat *w, const float *const *x, int n, float *y, int64_t ldy, int64_t r0, int64_t r1);
void kern_matmul_rows_ref(const tm_mat *w, const float *const *x, int n, float *y, int64_t ldy, int64_t r0,
                          int64_t r1);

/* The even/odd layout: each KERN_EO_CHUNK-column chunk of an activation row
 * holds its even columns first, then its odd ones, so that the BF16 product
 * below widens 32 weights with one shift and one mask (kern_bf16.c).  The
 * grouped expert path keeps its activations in this layout. */
#define KERN_EO_CHUNK 32
/* Where column c of a row sits in the layout. */
static inline int64_t kern_eo_pos(int64_t c)
{
    int64_t i = c % KERN_EO_CHUNK;
    return c - i + (i & 1 ? KERN_EO_CHUNK / 2 : 0) + i / 2;
}
/* Whether kern_matmul_rows_eo takes w: BF16, cols % 32 == 0, and an AVX2 or
 * AVX-512 variant active. */
int kern_eo_usable(const tm_mat *w);
/* out[cols] = x[cols] in the layout; cols % 32 == 0. */
void kern_eo_pack(const float *x, float *out, int64_t cols);
/* kern_matmul_rows with every x[t] in the layout (same contract: one thread,
 * each output independent of the row split). */
void kern_matmul_rows_eo(const tm_mat *w, const float *const *x, int n, float *y, int64_t ldy, int64_t r0, int64_t r1);
void kern_matmul_rows_eo_ref(const tm_mat *w, const float *const *x, int n, float *y, int64_t ldy, int64_t r0,
                             int64_t r1);

/* AMX tiles (kern_amx.c): the few-token product for many tokens, with X
 * packed once per product into three bf16 planes (hi + mid + lo == x) in the
 * tiles' pair layout, blocks of 16 tokens (the last padded with zeros):
 *   block b, step s (columns 32s..32s+31), plane q: 512 bf16 at
 *   ((b·cols/32 + s)·3 + q)·512; token j's columns 32s+2i, 32s+2i+1 at 32i+2j.
 * Exact products and f32 sums like kern_matmul_rows, summed in another order
 * (kern_amx.c); each output again depends only on its row and token.
 * Used where the CPU and OS allow AMX (cpu.h), unless TRUSTMOE_AMX=0. */
#define KERN_AMX_MIN_TOKENS 8 /* kern_matmul takes AMX from this many tokens */
/* Whether AMX is on and w takes it: BF16, rows >= 16, cols % 32 == 0. */
int kern_amx_usable(const tm_mat *w);
/* Turns AMX off (0) or back on (1) where the machine has it; -1: it has not. */
int kern_set_amx(int on);
/* bf16 values kern_amx_pack writes for n tokens of cols columns. */
size_t kern_amx_packed_len(int n, int64_t cols);
/* Packs columns [c0, c1) (both even) of tokens x[0..n) into out, zeros for
 * the padding tokens; threads may pack disjoint column ranges at once. */
void kern_amx_pack(const float *const *x, int n, int64_t cols, int64_t c0, int64_t c1, uint16_t *out);
/* kern_matmul_rows on packed X (one thread, rows [r0, r1)); kern_amx_usable(w). */
void kern_matmul_rows_amx(const tm_mat *w, const uint16_t *xb, int n, float *y, int64_t ldy, int64_t r0, int64_t r1);

/* n independent products y[k][w[k].rows] = w[k] · x[k] in one pass of the
 * thread pool (e.g. the down projections of a layer's selected experts), so
 * small matrices do not each pay for a wake-up of the pool. */
#define KERN_MANY_MAX 64 /* larger n runs in several passes */
void kern_matvec_many(int n, const tm_mat *w, const float *const *x, float *const *y);

/* Two products of the same input (an expert's gate and up projections):
 * ya[n, a.rows] = X · Aᵀ, yb[n, b.rows] = X · Bᵀ, with a.cols == b.cols.  At
 * n == 1 both run in one pass of the thread pool. */
void kern_matmul2(const tm_mat *a, const tm_mat *b, const float *x, int n, float *ya, float *yb);

/* out[n] = x / rms(x) * w   (w f32 [n]); out may alias x. */
void kern_rmsnorm(float *out, const float *x, const float *w, int n, float eps);

/* In-place softmax over n values, computed in float32 with max subtraction. */
void kern_softmax(float *x, int n);
/* The same with an 8-lane exponential (relative error under 2e-7) on AVX2
 * machines: the attention's, many times faster; the router keeps
 * kern_softmax, whose probabilities choose the experts. */
void kern_softmax_attn(float *x, int n);

/* g[i] = silu(g[i]) * u[i]; each element's result is the same whatever n
 * and offset it is computed under. */
void kern_silu_mul(float *g, const float *u, int n);

/* y[i] += a * x[i] */
void kern_axpy(float *y, float a, const float *x, int n);

/* Decode attention of one token for g query heads that share one KV head
 * (grouped-query attention): q holds the g heads (D floats each), row j of
 * K and V sits at k + j·ld and v + j·ld, and out[h·D .. h·D + D) =
 * softmax(scale · K·q_h) · V.  scores: scratch [g · L], left holding the
 * probabilities.  Vectorised where D % 8 == 0, without a matrix product's
 * call cost. */
void kern_attend_one(const float *q, int g, const float *k, const float *v, int64_t ld, int L, int D, float scale,
                     float *scores, float *out);
void kern_attend_one_ref(const float *q, int g, const float *k, const float *v, int64_t ld, int L, int D,
                         float scale, float *out);

/* kern_attend_one for n consecutive tokens of one sequence at once (a
 * prefill's block): token i's g heads sit at q + i·stride and out + i·stride,
 * and it attends to the first L0 + i keys.  Each token's output has the bits
 * kern_attend_one gives it alone; the block reads each K and V row once for
 * many queries.  scores: scratch [n · g · (L0 + n - 1)]. */
void kern_attend_block(const float *q, float *out, int64_t stride, int n, int g, int L0, const float *k,
                       const float *v, int64_t ld, int D, float scale, float *scores);

/* out[w.cols] = row r of W, converted to float32. */
void kern_row_f32(const tm_mat *w, int64_t r, float *out);

#endif
