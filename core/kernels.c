/* kernels.c: float32/BF16 kernels on top of OpenBLAS and the per-ISA BF16
 * kernels of kern_bf16.c, with naive references. */
#include "kernels.h"

#include "common.h"
#include "cpu.h"
#include "kern_impl.h"

#include <cblas.h>
#include <immintrin.h>
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
static kern_bf16_gemm_eo_fn bf16_gemm_eo; /* the same on even/odd x; NULL under SCALAR */
/* F32 rows: exact, AVX2 whenever the CPU has it (also under AVX-512). */
typedef void (*f32_rows_fn)(const float *w, int64_t cols, const float *x, float *y, int64_t r0, int64_t r1);
static f32_rows_fn f32_rows;
static kern_isa active_isa;
/* AMX for many-token BF16 products: where the CPU and OS allow it, under an
 * AVX-512 variant, unless TRUSTMOE_AMX=0 or kern_set_amx(0). */
static int amx_allowed = 1, amx_on;
static void amx_update(void) { amx_on = amx_allowed && cpu_get()->amx && active_isa >= KERN_ISA_AVX512; }

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

static void gemm_rows_scalar(const uint16_t *w, int64_t cols, const float *x, const float *const *xs, int n,
                             float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    for (int t = 0; t < n; t++)
        kern_bf16_rows_scalar(w, cols, xs ? xs[t] : x + (size_t)t * (size_t)cols, y + (size_t)t * (size_t)ldy, r0, r1);
}

/* The few-token product is always exact: AVX512BF16 uses the AVX-512 one. */
static kern_bf16_gemm_fn gemm_for(kern_isa isa)
{
    return isa >= KERN_ISA_AVX512 ? kern_bf16_gemm_rows_avx512
           : isa == KERN_ISA_AVX2 ? kern_bf16_gemm_rows_avx2
                                  : gemm_rows_scalar;
}

static kern_bf16_gemm_eo_fn gemm_eo_for(kern_isa isa)
{
    return isa >= KERN_ISA_AVX512 ? kern_bf16_gemm_eo_rows_avx512
           : isa == KERN_ISA_AVX2 ? kern_bf16_gemm_eo_rows_avx2
                                  : NULL;
}

int kern_set_isa(kern_isa isa)
{
    ensure_isa(); /* so a later first use does not override this choice */
    if (!kern_isa_supported(isa)) return -1;
    active_isa = isa;
    bf16_rows = isa_fns[isa];
    bf16_4mat = isa_4mat[isa];
    bf16_gemm = gemm_for(isa);
    bf16_gemm_eo = gemm_eo_for(isa);
    f32_rows = isa == KERN_ISA_SCALAR ? kern_f32_rows_scalar : kern_f32_rows_avx2;
    amx_update();
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
    /* prefetch target: L2 on AMD, L1 elsewhere, unless TRUSTMOE_PREFETCH says */
    kern_bf16_prefetch_l2 = cpu_get()->amd;
    const char *pf = getenv("TRUSTMOE_PREFETCH");
    if (pf && *pf) {
        if (!strcmp(pf, "l1") || !strcmp(pf, "l2")) kern_bf16_prefetch_l2 = pf[1] == '2';
        else fprintf(stderr, "trustmoe: TRUSTMOE_PREFETCH=%s unknown (l1, l2), using %s\n", pf,
                     kern_bf16_prefetch_l2 ? "l2" : "l1");
    }
    active_isa = best;
    bf16_rows = isa_fns[best];
    bf16_4mat = isa_4mat[best];
    bf16_gemm = gemm_for(best);
    bf16_gemm_eo = gemm_eo_for(best);
    f32_rows = best == KERN_ISA_SCALAR ? kern_f32_rows_scalar : kern_f32_rows_avx2;
    const char *amx = getenv("TRUSTMOE_AMX");
    if (amx && *amx) {
        if (!strcmp(amx, "0") || !strcmp(amx, "1")) amx_allowed = amx[0] == '1';
        else fprintf(stderr, "trustmoe: TRUSTMOE_AMX=%s unknown (0, 1), using 1\n", amx);
    }
    amx_update();
}

static pthread_once_t isa_once = PTHREAD_ONCE_INIT;
static void ensure_isa(void) { pthread_once(&isa_once, pick_isa); }

const char *kern_prefetch_target(void)
{
    ensure_isa();
    return kern_bf16_prefetch_l2 ? "l2" : "l1";
}

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

/* BF16 products of several tokens all take the register-blocked direct
 * product, whatever the thread count: each output's summation order is then
 * the same for any number of threads (widening blocks for sgemm was up to
 * 20% faster on one thread above 64 tokens, bench/RESULTS.md, but summed in
 * another order). */

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
    t->fn(t->w->data, t->w->cols, t->x, NULL, t->n, t->y, t->w->rows, i0, i1);
}

/* ---- AMX ------------------------------------------------------------------ */

int kern_amx_usable(const tm_mat *w)
{
    ensure_isa();
    return amx_on && w->dtype == TM_DT_BF16 && w->rows >= 16 && w->cols % 32 == 0;
}

int kern_set_amx(int on)
{
    ensure_isa();
    if (on && !cpu_get()->amx) return -1;
    amx_allowed = on != 0;
    amx_update();
    return 0;
}

size_t kern_amx_packed_len(int n, int64_t cols)
{
    /* blocks of 16 tokens × cols columns × three planes */
    return (size_t)((n + 15) / 16) * 16 * (size_t)cols * 3;
}

void kern_amx_pack(const float *const *x, int n, int64_t cols, int64_t c0, int64_t c1, uint16_t *out)
{
    TM_ASSERT(cols % 32 == 0 && 0 <= c0 && c0 <= c1 && c1 <= cols && c0 % 2 == 0 && c1 % 2 == 0);
    kern_amx_pack_range(NULL, x, n, cols, c0, c1, out);
}

void kern_matmul_rows_amx(const tm_mat *w, const uint16_t *xb, int n, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    TM_ASSERT_MSG(kern_amx_usable(w), "kern_matmul_rows_amx: AMX on, BF16 weights, rows >= 16, cols % 32 == 0");
    TM_ASSERT(n >= 0 && 0 <= r0 && r0 <= r1 && r1 <= w->rows);
    if (n && r0 < r1) kern_bf16_gemm_amx(w->data, w->rows, w->cols, xb, n, y, ldy, r0, r1);
}

typedef struct {
    const tm_mat *w;
    const float *x;
    int n;
    uint16_t *xb;
    float *y;
} amx_task;

static void amx_pack_cols(void *arg, int64_t c0, int64_t c1)
{
    const amx_task *t = arg;
    kern_amx_pack_range(t->x, NULL, t->n, t->w->cols, c0, c1, t->xb);
}

static void amx_rows(void *arg, int64_t r0, int64_t r1)
{
    const amx_task *t = arg;
    kern_bf16_gemm_amx(t->w->data, t->w->rows, t->w->cols, t->xb, t->n, t->y, t->w->rows, r0, r1);
}

/* X packed for the tiles, then the rows over the pool.  The packed X lives
 * in a buffer per calling thread, grown when a product needs more. */
static void matmul_amx(const tm_mat *w, const float *x, int n, float *y)
{
    static __thread uint16_t *buf;
    static __thread size_t cap;
    size_t need = kern_amx_packed_len(n, w->cols);
    if (need > cap) {
        free(buf);
        cap = TM_MAX(need, 2 * cap);
        buf = tm_malloc(cap * sizeof(uint16_t));
    }
    amx_task t = {w, x, n, buf, y};
    int par = kern_threads() > 1;
    if (par && (int64_t)n * w->cols >= MATVEC_PAR_MIN) kern_parallel_for(w->cols, 32, amx_pack_cols, &t);
    else amx_pack_cols(&t, 0, w->cols);
    if (par && w->rows * w->cols >= MATVEC_PAR_MIN) kern_parallel_for(w->rows, 16, amx_rows, &t);
    else amx_rows(&t, 0, w->rows);
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

void kern_matmul_rows(const tm_mat *w, const float *const *x, int n, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    check_mat(w);
    TM_ASSERT(n >= 0 && 0 <= r0 && r0 <= r1 && r1 <= w->rows);
    if (!n || r0 == r1) return;
    ensure_isa();
    if (w->dtype == TM_DT_BF16) {
        bf16_gemm(w->data, w->cols, NULL, x, n, y, ldy, r0, r1);
        return;
    }
    for (int t = 0; t < n; t++) f32_rows(w->data, w->cols, x[t], y + (size_t)t * (size_t)ldy, r0, r1);
}

void kern_matmul_rows_ref(const tm_mat *w, const float *const *x, int n, float *y, int64_t ldy, int64_t r0,
                          int64_t r1)
{
    check_mat(w);
    for (int t = 0; t < n; t++)
        for (int64_t r = r0; r < r1; r++) {
            double acc = 0.0;
            for (int64_t c = 0; c < w->cols; c++) {
                float wv = w->dtype == TM_DT_F32 ? ((const float *)w->data)[r * w->cols + c]
                                                 : tm_bf16_to_f32(((const uint16_t *)w->data)[r * w->cols + c]);
                acc += (double)wv * (double)x[t][c];
            }
            y[(size_t)t * (size_t)ldy + (size_t)r] = (float)acc;
        }
}

int kern_eo_usable(const tm_mat *w)
{
    ensure_isa();
    return bf16_gemm_eo && w->dtype == TM_DT_BF16 && w->cols % KERN_EO_CHUNK == 0;
}

void kern_eo_pack(const float *x, float *out, int64_t cols)
{
    TM_ASSERT(cols % KERN_EO_CHUNK == 0);
    for (int64_t c0 = 0; c0 < cols; c0 += KERN_EO_CHUNK)
        for (int i = 0; i < KERN_EO_CHUNK / 2; i++) {
            out[c0 + i] = x[c0 + 2 * i];
            out[c0 + KERN_EO_CHUNK / 2 + i] = x[c0 + 2 * i + 1];
        }
}

void kern_matmul_rows_eo(const tm_mat *w, const float *const *x, int n, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
    TM_ASSERT_MSG(kern_eo_usable(w), "kern_matmul_rows_eo: BF16 weights, cols % 32 == 0, an AVX2 or AVX-512 variant");
    TM_ASSERT(n >= 0 && 0 <= r0 && r0 <= r1 && r1 <= w->rows);
    if (n && r0 < r1) bf16_gemm_eo(w->data, w->cols, x, n, y, ldy, r0, r1);
}

void kern_matmul_rows_eo_ref(const tm_mat *w, const float *const *x, int n, float *y, int64_t ldy, int64_t r0,
                             int64_t r1)
{
    check_mat(w);
    for (int t = 0; t < n; t++)
        for (int64_t r = r0; r < r1; r++) {
            double acc = 0.0;
            for (int64_t c = 0; c < w->cols; c++)
                acc += (double)tm_bf16_to_f32(((const uint16_t *)w->data)[r * w->cols + c]) * (double)x[t][kern_eo_pos(c)];
            y[(size_t)t * (size_t)ldy + (size_t)r] = (float)acc;
        }
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
    if (w->dtype == TM_DT_BF16) {
        if (n >= KERN_AMX_MIN_TOKENS && kern_amx_usable(w)) matmul_amx(w, x, n, y);
        else kern_matmul_direct(w, x, n, y);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, (int)w->rows, (int)w->cols, 1.0f, x, (int)w->cols,
                w->data, (int)w->cols, 0.0f, y, (int)w->rows);
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

/* The library is built for baseline x86-64: the AVX2 code below carries its
 * own target and runs only where the CPU has AVX2 and FMA. */
#define AVX2_FN __attribute__((target("avx2,fma")))
static int elem_avx2 = -1;
static inline int use_avx2(void)
{
    int v = __atomic_load_n(&elem_avx2, __ATOMIC_RELAXED);
    if (v < 0) { /* racing first calls store the same value */
        v = kern_isa_supported(KERN_ISA_AVX2);
        __atomic_store_n(&elem_avx2, v, __ATOMIC_RELAXED);
    }
    return v;
}

AVX2_FN static void rmsnorm_avx2(float *out, const float *x, const float *w, int n, float eps)
{
    __m256 acc = _mm256_setzero_ps(), z = acc;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    float ss = _mm_cvtss_f32(kern_hsum4_256(acc, z, z, z));
    for (; i < n; i++) ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    __m256 iv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), iv)));
    for (; i < n; i++) out[i] = w[i] * (x[i] * inv);
}

void kern_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    if (use_avx2()) {
        rmsnorm_avx2(out, x, w, n, eps);
        return;
    }
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

/* e^x for 8 lanes: x = k·ln2 + r with |r| <= ln2/2, e^r by its Taylor
 * polynomial to degree 7 (relative error under 2e-7), 2^k through the
 * exponent bits; x is clamped to [-87, 88] so 2^k stays a normal float. */
AVX2_FN static inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = x - k·ln2 in two steps (ln2 split into a short head and a tail) */
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* The attention's softmax: the maximum, e^(x - max) through exp8 into x
 * while 8 lanes sum them, then x / sum.  The tail takes the same vector
 * code with its spare lanes zeroed before the sum, so the bits depend only
 * on x and n. */
AVX2_FN static void softmax_avx2(float *x, int n)
{
    __m256 mv = _mm256_set1_ps(x[0]);
    int i = 0;
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    float mt[8];
    _mm256_storeu_ps(mt, mv);
    float m = mt[0];
    for (int l = 1; l < 8; l++) m = mt[l] > m ? mt[l] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    __m256 mb = _mm256_set1_ps(m), sum = _mm256_setzero_ps(), z = sum;
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mb));
        _mm256_storeu_ps(x + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (i < n) {
        float t[8] = {0};
        memcpy(t, x + i, sizeof(float) * (size_t)(n - i));
        __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
        __m256 keep = _mm256_cmp_ps(lane, _mm256_set1_ps((float)(n - i)), _CMP_LT_OQ);
        __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_loadu_ps(t), mb)), keep);
        _mm256_storeu_ps(t, e);
        memcpy(x + i, t, sizeof(float) * (size_t)(n - i));
        sum = _mm256_add_ps(sum, e);
    }
    __m256 inv = _mm256_set1_ps(1.0f / _mm_cvtss_f32(kern_hsum4_256(sum, z, z, z)));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    float s = _mm256_cvtss_f32(inv);
    for (; i < n; i++) x[i] *= s;
}

void kern_softmax_attn(float *x, int n)
{
    if (use_avx2()) softmax_avx2(x, n);
    else kern_softmax(x, n);
}

AVX2_FN static int silu_mul_avx2(float *g, const float *u, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        __m256 sx = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(sx, _mm256_loadu_ps(u + i)));
    }
    if (i < n) {
        /* the tail through the same vector code, so an element's result does
         * not depend on where a caller's range ends (threads split rows) */
        float gt[8] = {0}, ut[8] = {0};
        memcpy(gt, g + i, sizeof(float) * (size_t)(n - i));
        memcpy(ut, u + i, sizeof(float) * (size_t)(n - i));
        __m256 x = _mm256_loadu_ps(gt);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        _mm256_storeu_ps(gt, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), _mm256_loadu_ps(ut)));
        memcpy(g + i, gt, sizeof(float) * (size_t)(n - i));
    }
    return n;
}

void kern_silu_mul(float *g, const float *u, int n)
{
    int i = use_avx2() ? silu_mul_avx2(g, u, n) : 0;
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* sc[j] = scale · q·k_j for j in [0, L), four keys per step (D % 8 == 0). */
AVX2_FN static void attend_scores(const float *q, const float *k, int64_t ld, int L, int D, float scale, float *sc)
{
    int j = 0;
    for (; j + 4 <= L; j += 4) {
        const float *k0 = k + (size_t)j * (size_t)ld, *k1 = k0 + ld, *k2 = k1 + ld, *k3 = k2 + ld;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int c = 0; c < D; c += 8) {
            __m256 qv = _mm256_loadu_ps(q + c);
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + c), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + c), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + c), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + c), a3);
        }
        _mm_storeu_ps(sc + j, _mm_mul_ps(kern_hsum4_256(a0, a1, a2, a3), _mm_set1_ps(scale)));
    }
    for (; j < L; j++) {
        const float *k0 = k + (size_t)j * (size_t)ld;
        __m256 a0 = _mm256_setzero_ps(), z = a0;
        for (int c = 0; c < D; c += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(k0 + c), a0);
        sc[j] = _mm_cvtss_f32(kern_hsum4_256(a0, z, z, z)) * scale;
    }
}

/* out[D] += Σ_j p[j] · v_j, 32 columns (four registers) per pass over V; the
 * sums run over j in order from out's values, so blocks of keys taken one
 * after another give the bits of one pass over all of them. */
AVX2_FN static void attend_values(const float *p, const float *v, int64_t ld, int L, int D, float *out)
{
    int c = 0;
    for (; c + 32 <= D; c += 32) {
        __m256 a0 = _mm256_loadu_ps(out + c), a1 = _mm256_loadu_ps(out + c + 8);
        __m256 a2 = _mm256_loadu_ps(out + c + 16), a3 = _mm256_loadu_ps(out + c + 24);
        for (int j = 0; j < L; j++) {
            const float *vj = v + (size_t)j * (size_t)ld + c;
            __m256 pj = _mm256_broadcast_ss(p + j);
            a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj), a0);
            a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8), a1);
            a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 16), a2);
            a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 24), a3);
        }
        _mm256_storeu_ps(out + c, a0);
        _mm256_storeu_ps(out + c + 8, a1);
        _mm256_storeu_ps(out + c + 16, a2);
        _mm256_storeu_ps(out + c + 24, a3);
    }
    for (; c < D; c += 8) {
        __m256 a0 = _mm256_loadu_ps(out + c);
        for (int j = 0; j < L; j++)
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), _mm256_loadu_ps(v + (size_t)j * (size_t)ld + c), a0);
        _mm256_storeu_ps(out + c, a0);
    }
}

/* Keys per block: the g query heads of a group take their scores, then their
 * weighted values, one block at a time, so the block's K or V rows (16 KiB
 * at D = 128) are read from memory once and from L1 by the other heads. */
#define ATTEND_BLOCK 32

void kern_attend_one(const float *q, int g, const float *k, const float *v, int64_t ld, int L, int D, float scale,
                     float *scores, float *out)
{
    if (D % 8 == 0 && use_avx2()) {
        for (int j0 = 0; j0 < L; j0 += ATTEND_BLOCK) {
            int n = TM_MIN(ATTEND_BLOCK, L - j0);
            for (int h = 0; h < g; h++)
                attend_scores(q + (size_t)h * (size_t)D, k + (size_t)j0 * (size_t)ld, ld, n, D, scale,
                              scores + (size_t)h * (size_t)L + j0);
        }
        for (int h = 0; h < g; h++) kern_softmax_attn(scores + (size_t)h * (size_t)L, L);
        memset(out, 0, sizeof(float) * (size_t)g * (size_t)D);
        for (int j0 = 0; j0 < L; j0 += ATTEND_BLOCK) {
            int n = TM_MIN(ATTEND_BLOCK, L - j0);
            for (int h = 0; h < g; h++)
                attend_values(scores + (size_t)h * (size_t)L + j0, v + (size_t)j0 * (size_t)ld, ld, n, D,
                              out + (size_t)h * (size_t)D);
        }
        return;
    }
    for (int h = 0; h < g; h++) {
        const float *qh = q + (size_t)h * (size_t)D;
        float *sc = scores + (size_t)h * (size_t)L, *oh = out + (size_t)h * (size_t)D;
        for (int j = 0; j < L; j++) {
            float d = 0.f;
            for (int i = 0; i < D; i++) d += qh[i] * k[(size_t)j * (size_t)ld + (size_t)i];
            sc[j] = d * scale;
        }
        kern_softmax_attn(sc, L);
        memset(oh, 0, sizeof(float) * (size_t)D);
        for (int j = 0; j < L; j++) kern_axpy(oh, sc[j], v + (size_t)j * (size_t)ld, D);
    }
}

/* ---- attention of a block of tokens ---------------------------------------------
 * Query rows in groups of four heads of one token (so of one key count):
 * each K row loaded serves four queries and each V row four outputs, where
 * kern_attend_one loads one per product.  Every score is the same chain of
 * 8-lane products and kern_hsum4_256 as in attend_scores (a score's bits do
 * not depend on which keys share its step), and every output element sums
 * p·v over the keys in order from zero as attend_values does, so each row
 * gets kern_attend_one's bits.  The 32-register AVX-512 file holds a group's
 * 16 accumulators beside the loaded rows. */
#define AVX512VL_FN __attribute__((target("avx2,fma,avx512f,avx512vl")))
#define ATT_GROUP 4

/* sc[r][j] = scale · q_r·k_j for the nr <= 4 rows, keys [0, L). */
AVX512VL_FN static void block_scores(const float *const q[ATT_GROUP], int nr, const float *k, int64_t ld, int L,
                                     int D, float scale, float *const sc[ATT_GROUP])
{
    int j = 0;
    for (; j + 4 <= L; j += 4) {
        const float *kj = k + (size_t)j * (size_t)ld;
        __m256 a[ATT_GROUP][4];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < ATT_GROUP; r++)
            _Pragma("GCC unroll 4")
            for (int i = 0; i < 4; i++) a[r][i] = _mm256_setzero_ps();
        for (int c = 0; c < D; c += 8) {
            __m256 k0 = _mm256_loadu_ps(kj + c), k1 = _mm256_loadu_ps(kj + ld + c);
            __m256 k2 = _mm256_loadu_ps(kj + 2 * ld + c), k3 = _mm256_loadu_ps(kj + 3 * ld + c);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < ATT_GROUP; r++) {
                __m256 qv = _mm256_loadu_ps(q[r] + c);
                a[r][0] = _mm256_fmadd_ps(qv, k0, a[r][0]);
                a[r][1] = _mm256_fmadd_ps(qv, k1, a[r][1]);
                a[r][2] = _mm256_fmadd_ps(qv, k2, a[r][2]);
                a[r][3] = _mm256_fmadd_ps(qv, k3, a[r][3]);
            }
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < nr; r++)
            _mm_storeu_ps(sc[r] + j, _mm_mul_ps(kern_hsum4_256(a[r][0], a[r][1], a[r][2], a[r][3]), _mm_set1_ps(scale)));
    }
    for (; j < L; j++) {
        const float *kj = k + (size_t)j * (size_t)ld;
        __m256 a[ATT_GROUP], z = _mm256_setzero_ps();
        _Pragma("GCC unroll 4")
        for (int r = 0; r < ATT_GROUP; r++) a[r] = z;
        for (int c = 0; c < D; c += 8) {
            __m256 k0 = _mm256_loadu_ps(kj + c);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < ATT_GROUP; r++) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q[r] + c), k0, a[r]);
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < nr; r++) sc[r][j] = _mm_cvtss_f32(kern_hsum4_256(a[r], z, z, z)) * scale;
    }
}

/* out_r[D] += Σ_j p_r[j] · v_j over keys [0, n), for the nr <= 4 rows. */
AVX512VL_FN static void block_values(const float *const p[ATT_GROUP], int nr, const float *v, int64_t ld, int n, int D,
                                     float *const out[ATT_GROUP])
{
    int c = 0;
    for (; c + 32 <= D; c += 32) {
        __m256 a[ATT_GROUP][4];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < ATT_GROUP; r++)
            _Pragma("GCC unroll 4")
            for (int i = 0; i < 4; i++) a[r][i] = _mm256_loadu_ps(out[r] + c + 8 * i);
        for (int j = 0; j < n; j++) {
            const float *vj = v + (size_t)j * (size_t)ld + c;
            __m256 v0 = _mm256_loadu_ps(vj), v1 = _mm256_loadu_ps(vj + 8);
            __m256 v2 = _mm256_loadu_ps(vj + 16), v3 = _mm256_loadu_ps(vj + 24);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < ATT_GROUP; r++) {
                __m256 pj = _mm256_broadcast_ss(p[r] + j);
                a[r][0] = _mm256_fmadd_ps(pj, v0, a[r][0]);
                a[r][1] = _mm256_fmadd_ps(pj, v1, a[r][1]);
                a[r][2] = _mm256_fmadd_ps(pj, v2, a[r][2]);
                a[r][3] = _mm256_fmadd_ps(pj, v3, a[r][3]);
            }
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < nr; r++)
            _Pragma("GCC unroll 4")
            for (int i = 0; i < 4; i++) _mm256_storeu_ps(out[r] + c + 8 * i, a[r][i]);
    }
    for (; c < D; c += 8) {
        __m256 a[ATT_GROUP];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < ATT_GROUP; r++) a[r] = _mm256_loadu_ps(out[r] + c);
        for (int j = 0; j < n; j++) {
            __m256 vj = _mm256_loadu_ps(v + (size_t)j * (size_t)ld + c);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < ATT_GROUP; r++) a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p[r] + j), vj, a[r]);
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < nr; r++) _mm256_storeu_ps(out[r] + c, a[r]);
    }
}

/* The rows of the group of heads [h0, h0 + nr) of token i: its queries, its
 * outputs and its scores (rows of length Lmax); a short group repeats its
 * first row in the spare slots, whose results are not stored. */
static void group_rows(const float *q, float *out, float *scores, int64_t stride, int g, int D, int Lmax, int i,
                       int h0, int nr, const float *qr[ATT_GROUP], float *orow[ATT_GROUP], float *sr[ATT_GROUP])
{
    for (int r = 0; r < ATT_GROUP; r++) {
        size_t h = (size_t)h0 + (size_t)(r < nr ? r : 0);
        qr[r] = q + (size_t)i * (size_t)stride + h * (size_t)D;
        orow[r] = out + (size_t)i * (size_t)stride + h * (size_t)D;
        sr[r] = scores + ((size_t)i * (size_t)g + h) * (size_t)Lmax;
    }
}

void kern_attend_block(const float *q, float *out, int64_t stride, int n, int g, int L0, const float *k,
                       const float *v, int64_t ld, int D, float scale, float *scores)
{
    int Lmax = L0 + n - 1;
    if (D % 8 || !kern_isa_supported(KERN_ISA_AVX512)) {
        for (int i = 0; i < n; i++)
            kern_attend_one(q + (size_t)i * (size_t)stride, g, k, v, ld, L0 + i, D, scale, scores,
                            out + (size_t)i * (size_t)stride);
        return;
    }
    const float *qr[ATT_GROUP];
    float *orow[ATT_GROUP], *sr[ATT_GROUP];
    /* the groups: at most four heads of one token, so of one key count */
    for (int i = 0; i < n; i++)
        for (int h0 = 0; h0 < g; h0 += ATT_GROUP) {
            int nr = TM_MIN(ATT_GROUP, g - h0), L = L0 + i;
            group_rows(q, out, scores, stride, g, D, Lmax, i, h0, nr, qr, orow, sr);
            block_scores(qr, nr, k, ld, L, D, scale, sr);
            for (int r = 0; r < nr; r++) kern_softmax_attn(sr[r], L);
        }
    for (int i = 0; i < n; i++) memset(out + (size_t)i * (size_t)stride, 0, sizeof(float) * (size_t)g * (size_t)D);
    /* values by blocks of keys, every group that reaches a block taking it
     * while it is in L1 */
    for (int j0 = 0; j0 < Lmax; j0 += ATTEND_BLOCK)
        for (int i = 0; i < n; i++) {
            int L = L0 + i;
            if (L <= j0) continue;
            int nk = TM_MIN(ATTEND_BLOCK, L - j0);
            for (int h0 = 0; h0 < g; h0 += ATT_GROUP) {
                int nr = TM_MIN(ATT_GROUP, g - h0);
                const float *pr[ATT_GROUP];
                group_rows(q, out, scores, stride, g, D, Lmax, i, h0, nr, qr, orow, sr);
                for (int r = 0; r < ATT_GROUP; r++) pr[r] = sr[r] + j0;
                block_values(pr, nr, v + (size_t)j0 * (size_t)ld, ld, nk, D, orow);
            }
        }
}

void kern_attend_one_ref(const float *q, int g, const float *k, const float *v, int64_t ld, int L, int D,
                         float scale, float *out)
{
    double *p = tm_malloc(sizeof(double) * (size_t)L);
    for (int h = 0; h < g; h++) {
        const float *qh = q + (size_t)h * (size_t)D;
        double mx = -INFINITY, sum = 0.0;
        for (int j = 0; j < L; j++) {
            double d = 0.0;
            for (int i = 0; i < D; i++) d += (double)qh[i] * k[(size_t)j * (size_t)ld + (size_t)i];
            p[j] = d * scale;
            mx = p[j] > mx ? p[j] : mx;
        }
        for (int j = 0; j < L; j++) sum += (p[j] = exp(p[j] - mx));
        for (int i = 0; i < D; i++) {
            double o = 0.0;
            for (int j = 0; j < L; j++) o += p[j] / sum * v[(size_t)j * (size_t)ld + (size_t)i];
            out[(size_t)h * (size_t)D + (size_t)i] = (float)o;
        }
    }
    free(p);
}

/* A product, then a sum, each rounded (no fused multiply-add), as the
 * scalar loop does: the same bits on any machine. */
AVX2_FN static int axpy_avx2(float *y, float a, const float *x, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(av, _mm256_loadu_ps(x + i))));
    return i;
}

void kern_axpy(float *y, float a, const float *x, int n)
{
    int i = use_avx2() ? axpy_avx2(y, a, x, n) : 0;
    for (; i < n; i++) y[i] += a * x[i];
}

void kern_row_f32(const tm_mat *w, int64_t r, float *out)
{
    TM_ASSERT(r >= 0 && r < w->rows);
    size_t sz = tm_dtype_size(w->dtype);
    tm_convert_to_f32(w->dtype, (const char *)w->data + (size_t)r * (size_t)w->cols * sz, out, (size_t)w->cols);
}
