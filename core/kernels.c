/* kernels.c: float32/BF16 kernels on top of OpenBLAS and the per-ISA BF16
 * kernels of kern_bf16.c, with naive references. */
#include "kernels.h"

#include "common.h"
#include "cpu.h"
#include "kern_impl.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_mat(const tm_mat *w)
{
    TM_ASSERT_MSG(w->dtype == TM_DT_F32 || w->dtype == TM_DT_BF16, "kernel matrix must be F32 or BF16");
    TM_ASSERT(w->data != NULL && w->rows > 0 && w->cols > 0);
}

/* ---- reference kernels --------------------------------------------------- */

void kern_matvec_ref(const tm_mat *w, const float *x, float *y)
{
    check_mat(w);
    for (int64_t r = 0; r < w->rows; r++) {
        double acc = 0.0;
        for (int64_t c = 0; c < w->cols; c++) {
            float wv = w->dtype == TM_DT_F32 ? ((const float *)w->data)[r * w->cols + c]
                                             : tm_bf16_to_f32(((const uint16_t *)w->data)[r * w->cols + c]);
            acc += (double)wv * (double)x[c];
        }
        y[r] = (float)acc;
    }
}

void kern_matmul_ref(const tm_mat *w, const float *x, int n, float *y)
{
    for (int i = 0; i < n; i++) kern_matvec_ref(w, x + (size_t)i * w->cols, y + (size_t)i * w->rows);
}

/* ---- ISA dispatch -------------------------------------------------------- */

static const char *const isa_names[KERN_ISA_COUNT] = {"scalar", "avx2", "avx512", "avx512bf16"};
static const kern_bf16_rows_fn isa_fns[KERN_ISA_COUNT] = {kern_bf16_rows_scalar, kern_bf16_rows4s_avx2,
                                                           kern_bf16_rows4s_avx512, kern_bf16_rows_avx512bf16};
static kern_bf16_rows_fn bf16_rows;   /* the active variant, set on first use */
/* Four same-shape matrices at once, for the variants that have it. */
static const kern_bf16_4mat_fn isa_4mat[KERN_ISA_COUNT] = {NULL, kern_bf16_4mat_avx2, kern_bf16_4mat_avx512, NULL};
static const int64_t isa_4mat_cols[KERN_ISA_COUNT] = {0, 16, 32, 0}; /* cols must be a multiple */
static kern_bf16_4mat_fn bf16_4mat;
static kern_bf16_gemm_fn bf16_gemm;   /* its few-token product */
/* F32 rows: exact, AVX2 whenever the CPU has it (also under AVX-512). */
typedef void (*f32_rows_fn)(const float *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);
static f32_rows_fn f32_rows;
static kern_isa active_isa;

const char *kern_isa_name(kern_isa isa) { return (unsigned)isa < KERN_ISA_COUNT ? isa_names[isa] : "?"; }

int kern_isa_supported(kern_isa isa)
{
    const cpu_info *ci = cpu_get();
    int avx2 = ci->avx2 && ci->fma;
    int avx512 = avx2 && ci->avx512f && ci->avx512bw && ci->avx512vl;
    switch (isa) {
    case KERN_ISA_SCALAR: return 1;
    case KERN_ISA_AVX2: return avx2;
    case KERN_ISA_AVX512: return avx512;
    case KERN_ISA_AVX512BF16: return avx512 && ci->avx512bf16;
    default: return 0;
    }
}

static void ensure_isa(void);

static void gemm_rows_scalar(const uint16_t *w, int64_t cols, const float *x, int n, float *y, int64_t ldy,
                             int64_t r0, int64_t r1)
{
    for (int t = 0; t < n; t++)
        kern_bf16_rows_scalar(w, cols, x + (size_t)t * (size_t)cols, y + (size_t)t * (size_t)ldy, r0, r1);
}

/* The few-token product is always exact: AVX512BF16 uses the AVX-512 one. */
static kern_bf16_gemm_fn gemm_for(kern_isa isa)
{
    return isa >= KERN_ISA_AVX512 ? kern_bf16_gemm_rows_avx512
           : isa == KERN_ISA_AVX2 ? kern_bf16_gemm_rows_avx2
                                  : gemm_rows_scalar;
}

int kern_set_isa(kern_isa isa)
{
    ensure_isa(); /* so a later first use does not override this choice */
    if (!kern_isa_supported(isa)) return -1;
    active_isa = isa;
    bf16_rows = isa_fns[isa];
    bf16_4mat = isa_4mat[isa];
    bf16_gemm = gemm_for(isa);
    f32_rows = isa == KERN_ISA_SCALAR ? kern_f32_rows_scalar : kern_f32_rows_avx2;
    return 0;
}

/* The widest exact variant; vdpbf16ps only on request since it rounds x. */
static void pick_isa(void)
{
    kern_isa best = kern_isa_supported(KERN_ISA_AVX512) ? KERN_ISA_AVX512
                    : kern_isa_supported(KERN_ISA_AVX2) ? KERN_ISA_AVX2
                                                         : KERN_ISA_SCALAR;
    const char *env = getenv("TRUSTMOE_KERN_ISA");
    if (env && *env) {
        int found = 0;
        for (int i = 0; i < KERN_ISA_COUNT; i++)
            if (!strcmp(env, isa_names[i])) {
                found = 1;
                if (kern_isa_supported((kern_isa)i)) best = (kern_isa)i;
                else fprintf(stderr, "trustmoe: TRUSTMOE_KERN_ISA=%s not supported by this CPU, using %s\n", env,
                             isa_names[best]);
            }
        if (!found)
            fprintf(stderr, "trustmoe: TRUSTMOE_KERN_ISA=%s unknown (scalar, avx2, avx512, avx512bf16), using %s\n",
                    env, isa_names[best]);
    }
    active_isa = best;
    bf16_rows = isa_fns[best];
    bf16_4mat = isa_4mat[best];
    bf16_gemm = gemm_for(best);
    f32_rows = best == KERN_ISA_SCALAR ? kern_f32_rows_scalar : kern_f32_rows_avx2;
}

static pthread_once_t isa_once = PTHREAD_ONCE_INIT;
static void ensure_isa(void) { pthread_once(&isa_once, pick_isa); }

kern_isa kern_isa_active(void)
{
    ensure_isa();
    return active_isa;
}

/* ---- fast kernels -------------------------------------------------------- */

/* Below this many weights per call a matrix-vector product is a few
 * microseconds and waking the pool costs more than it saves. */
#define MATVEC_PAR_MIN ((int64_t)1 << 15)
#define MATVEC_ROW_ALIGN 16 /* keeps the 4-row blocks and cache lines of y whole */

typedef struct {
    kern_bf16_rows_fn fn;
    const tm_mat *w[2];
    const float *x;
    float *y[2];
    int64_t split; /* rows of w[0]; rows past it belong to w[1] */
} matvec_task;

static void matvec_range(void *arg, int64_t i0, int64_t i1)
{
    const matvec_task *t = arg;
    for (int k = 0; k < 2 && i0 < i1; k++) {
        int64_t base = k ? t->split : 0, end = k ? INT64_MAX : t->split;
        if (!t->w[k]) break;
        int64_t a = TM_MAX(i0, base) - base, b = TM_MIN(i1, end) - base;
        if (a >= b) continue;
        const tm_mat *w = t->w[k];
        if (w->dtype == TM_DT_BF16) t->fn(w->data, w->cols, t->x, t->y[k], a, b);
        else f32_rows(w->data, w->cols, t->x, t->y[k], a, b);
    }
}

/* One or two matrices sharing x, rows split over the pool in one pass. */
static void matvec_run(const tm_mat *a, const tm_mat *b, const float *x, float *ya, float *yb)
{
    ensure_isa();
    matvec_task t = {bf16_rows, {a, b}, x, {ya, yb}, a->rows};
    int64_t rows = a->rows + (b ? b->rows : 0);
    int64_t work = a->rows * a->cols + (b ? b->rows * b->cols : 0);
    if (kern_threads() > 1 && work >= MATVEC_PAR_MIN) {
        kern_parallel_for(rows, MATVEC_ROW_ALIGN, matvec_range, &t);
    } else {
        matvec_range(&t, 0, rows);
    }
}

void kern_matvec(const tm_mat *w, const float *x, float *y)
{
    check_mat(w);
    matvec_run(w, NULL, x, y, NULL);
}

void kern_matvec_isa(kern_isa isa, const tm_mat *w, const float *x, float *y)
{
    check_mat(w);
    TM_ASSERT_MSG(w->dtype == TM_DT_BF16, "kern_matvec_isa takes BF16 weights");
    TM_ASSERT_MSG(kern_isa_supported(isa), "ISA variant not supported by this CPU");
    isa_fns[isa](w->data, w->cols, x, y, 0, w->rows);
}

/* The register-blocked product beats widening plus sgemm at every token
 * count measured with several threads (the widening is serial), and up to
 * about 64 tokens on one thread (bench/bench_kernels, "BF16-weight GEMM";
 * bench/RESULTS.md). */
#define KERN_DIRECT_MAX_N 64

/* BF16 weights are widened a block of rows at a time into a per-thread
 * scratch that grows once to MATMUL_BLOCK_ELEMS and is then reused; the block
 * (1 MiB of f32) stays in L2/L3 while sgemm reads it. */
#define MATMUL_BLOCK_ELEMS ((size_t)1 << 18)
static _Thread_local float *scratch; /* [MATMUL_BLOCK_ELEMS] f32 */

static void widen(const uint16_t *in, float *out, int64_t n)
{
    if (kern_isa_supported(KERN_ISA_AVX2)) kern_bf16_widen_avx2(in, out, n);
    else tm_convert_to_f32(TM_DT_BF16, in, out, (size_t)n);
}

typedef struct {
    kern_bf16_gemm_fn fn;
    const tm_mat *w;
    const float *x;
    int n;
    float *y;
} direct_task;

static void direct_range(void *arg, int64_t i0, int64_t i1)
{
    const direct_task *t = arg;
    t->fn(t->w->data, t->w->cols, t->x, t->n, t->y, t->w->rows, i0, i1);
}

void kern_matmul_direct(const tm_mat *w, const float *x, int n, float *y)
{
    check_mat(w);
    TM_ASSERT_MSG(w->dtype == TM_DT_BF16, "kern_matmul_direct takes BF16 weights");
    TM_ASSERT(n >= 1);
    ensure_isa();
    direct_task t = {bf16_gemm, w, x, n, y};
    if (kern_threads() > 1 && w->rows * w->cols >= MATVEC_PAR_MIN) kern_parallel_for(w->rows, MATVEC_ROW_ALIGN, direct_range, &t);
    else direct_range(&t, 0, w->rows);
}

typedef struct {
    int n;
    const tm_mat *w;         /* [n] */
    const float *const *x;   /* [n] */
    float *const *y;         /* [n] */
    int64_t start[KERN_MANY_MAX + 1]; /* first global row of each matrix */
} many_task;

static void many_range(void *arg, int64_t i0, int64_t i1)
{
    const many_task *t = arg;
    for (int k = 0; k < t->n; k++) {
        int64_t a = TM_MAX(i0, t->start[k]), b = TM_MIN(i1, t->start[k + 1]);
        if (a >= b) continue;
        const tm_mat *w = &t->w[k];
        a -= t->start[k];
        b -= t->start[k];
        if (w->dtype == TM_DT_BF16) bf16_rows(w->data, w->cols, t->x[k], t->y[k], a, b);
        else f32_rows(w->data, w->cols, t->x[k], t->y[k], a, b);
    }
}

/* Whether w[0..3] can go through bf16_4mat: one BF16 shape whose rows the
 * four-stream kernel would take too (so the sums are the same either way). */
static int four_alike(const tm_mat *w)
{
    if (!bf16_4mat) return 0;
    int64_t mult = isa_4mat_cols[active_isa];
    for (int j = 0; j < 4; j++)
        if (w[j].dtype != TM_DT_BF16 || w[j].rows != w[0].rows || w[j].cols != w[0].cols) return 0;
    return w[0].cols % mult == 0 && w[0].rows / 4 >= 4;
}

/* One thread: matrices of one shape four at a time, the rest one by one. */
static void many_serial(const many_task *t)
{
    int k = 0;
    while (k < t->n) {
        if (k + 4 <= t->n && four_alike(t->w + k)) {
            const uint16_t *w4[4] = {t->w[k].data, t->w[k + 1].data, t->w[k + 2].data, t->w[k + 3].data};
            bf16_4mat(w4, t->w[k].cols, t->x + k, t->y + k, t->w[k].rows);
            k += 4;
        } else {
            many_range((void *)t, t->start[k], t->start[k + 1]);
            k++;
        }
    }
}

void kern_matvec_many(int n, const tm_mat *w, const float *const *x, float *const *y)
{
    TM_ASSERT(n >= 0);
    ensure_isa();
    for (int k0 = 0; k0 < n; k0 += KERN_MANY_MAX) {
        many_task t = {TM_MIN(KERN_MANY_MAX, n - k0), w + k0, x + k0, y + k0, {0}};
        int64_t work = 0;
        for (int k = 0; k < t.n; k++) {
            check_mat(&t.w[k]);
            t.start[k + 1] = t.start[k] + t.w[k].rows;
            work += t.w[k].rows * t.w[k].cols;
        }
        if (kern_threads() > 1 && work >= MATVEC_PAR_MIN) kern_parallel_for(t.start[t.n], MATVEC_ROW_ALIGN, many_range, &t);
        else many_serial(&t);
    }
}

void kern_matmul(const tm_mat *w, const float *x, int n, float *y)
{
    check_mat(w);
    if (n == 1) {
        kern_matvec(w, x, y);
        return;
    }
    if (w->dtype == TM_DT_BF16 && (n <= KERN_DIRECT_MAX_N || kern_threads() > 1)) {
        kern_matmul_direct(w, x, n, y);
        return;
    }
    if (w->dtype == TM_DT_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, (int)w->rows, (int)w->cols, 1.0f, x,
                    (int)w->cols, w->data, (int)w->cols, 0.0f, y, (int)w->rows);
        return;
    }
    if (!scratch) scratch = tm_malloc(MATMUL_BLOCK_ELEMS * sizeof(float));
    int64_t block = TM_MAX((int64_t)1, (int64_t)MATMUL_BLOCK_ELEMS / w->cols);
    if (block * w->cols > (int64_t)MATMUL_BLOCK_ELEMS) {
        /* A row wider than the block (no such model): one token at a time. */
        for (int i = 0; i < n; i++) kern_matvec(w, x + (size_t)i * w->cols, y + (size_t)i * w->rows);
        return;
    }
    const uint16_t *wd = w->data;
    for (int64_t r0 = 0; r0 < w->rows; r0 += block) {
        int64_t nr = TM_MIN(block, w->rows - r0);
        widen(wd + r0 * w->cols, scratch, nr * w->cols);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, (int)nr, (int)w->cols, 1.0f, x, (int)w->cols,
                    scratch, (int)w->cols, 0.0f, y + r0, (int)w->rows);
    }
}

void kern_matmul2(const tm_mat *a, const tm_mat *b, const float *x, int n, float *ya, float *yb)
{
    check_mat(a);
    check_mat(b);
    TM_ASSERT(a->cols == b->cols);
    if (n == 1) {
        matvec_run(a, b, x, ya, yb);
        return;
    }
    kern_matmul(a, x, n, ya);
    kern_matmul(b, x, n, yb);
}

/* ---- elementwise --------------------------------------------------------- */

void kern_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    float ss = 0.f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * inv);
}

void kern_softmax(float *x, int n)
{
    float m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    float s = 0.f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    float inv = 1.0f / s;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void kern_silu_mul(float *g, const float *u, int n)
{
    for (int i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void kern_axpy(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void kern_row_f32(const tm_mat *w, int64_t r, float *out)
{
    TM_ASSERT(r >= 0 && r < w->rows);
    size_t sz = tm_dtype_size(w->dtype);
    tm_convert_to_f32(w->dtype, (const char *)w->data + (size_t)r * (size_t)w->cols * sz, out, (size_t)w->cols);
}
