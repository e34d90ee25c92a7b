/* test_kernels.c: every fast kernel, and every ISA variant this CPU has,
 * against its naive reference on random inputs of odd sizes.
 *
 * Errors are measured against the condition of the dot product:
 *   |y - y_ref| <= tol · Σ_c |w_rc · x_c|  (+ a tiny absolute floor)
 * which is what float32 accumulation can promise regardless of cancellation.
 *   exact variants (scalar, avx2, avx512, sgemm paths): tol = 1e-5
 *   avx512bf16 (x rounded to bf16, relative error 2^-9 per product): tol = 2^-8
 */
#include "common.h"
#include "cpu.h"
#include "expert.h"
#include "kernels.h"

#include <CUnit/Basic.h>

#include "cunit_run.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const int64_t ROWS[] = {1, 7, 33, 257};
static const int64_t COLS[] = {3, 31, 129, 512, 1000}; /* 512: the four-stream path (cols % 32 == 0) */
#define TOL_EXACT 1e-5
#define TOL_BF16DOT (1.0 / 256.0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 4503599627370496.0 - 1.0);
}

/* A random matrix of dtype dt: data [rows, cols] (bf16 or f32). */
static tm_mat rand_mat(tm_dtype dt, int64_t rows, int64_t cols, void **buf)
{
    size_t n = (size_t)(rows * cols);
    if (dt == TM_DT_BF16) {
        uint16_t *b = tm_malloc(n * 2);
        for (size_t i = 0; i < n; i++) b[i] = tm_f32_to_bf16(frand());
        *buf = b;
    } else {
        float *f = tm_malloc(n * 4);
        for (size_t i = 0; i < n; i++) f[i] = frand();
        *buf = f;
    }
    return (tm_mat){dt, *buf, rows, cols};
}

static float *rand_vec(size_t n)
{
    float *v = tm_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = frand() * 2.0f;
    return v;
}

static double elem(const tm_mat *w, int64_t i)
{
    return w->dtype == TM_DT_F32 ? ((const float *)w->data)[i] : tm_bf16_to_f32(((const uint16_t *)w->data)[i]);
}

/* Checks y[n, rows] against y_ref with the bound above; returns failures. */
static int check_out(const tm_mat *w, const float *x, int n, const float *y, const float *yref, double tol,
                     const char *what)
{
    int bad = 0;
    for (int t = 0; t < n; t++)
        for (int64_t r = 0; r < w->rows; r++) {
            double mag = 0.0;
            for (int64_t c = 0; c < w->cols; c++)
                mag += fabs(elem(w, r * w->cols + c) * x[(size_t)t * w->cols + c]);
            double err = fabs((double)y[(size_t)t * w->rows + r] - (double)yref[(size_t)t * w->rows + r]);
            if (!(err <= tol * mag + 1e-30)) {
                if (bad++ < 3)
                    fprintf(stderr, "%s %s [%lld x %lld] n=%d: y[%d,%lld] = %g, ref %g, |err| %g > %g\n", what,
                            tm_dtype_name(w->dtype), (long long)w->rows, (long long)w->cols, n, t, (long long)r,
                            y[(size_t)t * w->rows + r], yref[(size_t)t * w->rows + r], err, tol * mag);
            }
        }
    return bad;
}

/* ---- matvec ---------------------------------------------------------------- */

static void test_matvec_isa(void)
{
    for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
        if (!kern_isa_supported((kern_isa)isa)) {
            fprintf(stderr, "  (variant %s not supported here, skipped)\n", kern_isa_name((kern_isa)isa));
            continue;
        }
        double tol = isa == KERN_ISA_AVX512BF16 ? TOL_BF16DOT : TOL_EXACT;
        for (size_t i = 0; i < TM_ARRAY_LEN(ROWS); i++)
            for (size_t j = 0; j < TM_ARRAY_LEN(COLS); j++) {
                void *buf;
                tm_mat w = rand_mat(TM_DT_BF16, ROWS[i], COLS[j], &buf);
                float *x = rand_vec((size_t)COLS[j]);
                float *y = tm_calloc((size_t)ROWS[i], 4), *yr = tm_calloc((size_t)ROWS[i], 4);
                kern_matvec_ref(&w, x, yr);
                kern_matvec_isa((kern_isa)isa, &w, x, y);
                CU_ASSERT_EQUAL(check_out(&w, x, 1, y, yr, tol, kern_isa_name((kern_isa)isa)), 0);
                free(buf), free(x), free(y), free(yr);
            }
    }
}

/* The dispatched kernel, 1 and 3 threads, every supported ISA, F32 and BF16,
 * plus a matrix large enough to be split over the pool. */
static void test_matvec_dispatch(void)
{
    kern_isa saved = kern_isa_active();
    static const int64_t big[][2] = {{1031, 67}, {4099, 40}};
    for (int th = 1; th <= 3; th += 2) {
        kern_set_threads(th);
        for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
            if (kern_set_isa((kern_isa)isa) != 0) continue;
            double tolb = isa == KERN_ISA_AVX512BF16 ? TOL_BF16DOT : TOL_EXACT;
            for (int dt = 0; dt < 2; dt++) {
                tm_dtype d = dt ? TM_DT_BF16 : TM_DT_F32;
                for (size_t i = 0; i < TM_ARRAY_LEN(ROWS) + TM_ARRAY_LEN(big); i++)
                    for (size_t j = 0; j < TM_ARRAY_LEN(COLS); j++) {
                        int64_t R = i < TM_ARRAY_LEN(ROWS) ? ROWS[i] : big[i - TM_ARRAY_LEN(ROWS)][0];
                        int64_t C = i < TM_ARRAY_LEN(ROWS) ? COLS[j] : big[i - TM_ARRAY_LEN(ROWS)][1] * (int64_t)(j + 1);
                        void *buf;
                        tm_mat w = rand_mat(d, R, C, &buf);
                        float *x = rand_vec((size_t)C);
                        float *y = tm_calloc((size_t)R, 4), *yr = tm_calloc((size_t)R, 4);
                        kern_matvec_ref(&w, x, yr);
                        kern_matvec(&w, x, y);
                        CU_ASSERT_EQUAL(check_out(&w, x, 1, y, yr, d == TM_DT_BF16 ? tolb : TOL_EXACT, "matvec"), 0);
                        free(buf), free(x), free(y), free(yr);
                    }
            }
        }
    }
    kern_set_threads(1);
    kern_set_isa(saved);
}

/* ---- matmul ---------------------------------------------------------------- */

static void test_matmul(void)
{
    static const int NS[] = {1, 2, 5, 17};
    for (int th = 1; th <= 2; th++) {
        kern_set_threads(th);
        for (int dt = 0; dt < 2; dt++)
            for (size_t k = 0; k < TM_ARRAY_LEN(NS); k++)
                for (size_t i = 0; i < TM_ARRAY_LEN(ROWS); i++)
                    for (size_t j = 0; j < TM_ARRAY_LEN(COLS); j++) {
                        int n = NS[k];
                        void *buf;
                        tm_mat w = rand_mat(dt ? TM_DT_BF16 : TM_DT_F32, ROWS[i], COLS[j], &buf);
                        float *x = rand_vec((size_t)(n * COLS[j]));
                        float *y = tm_calloc((size_t)(n * ROWS[i]), 4), *yr = tm_calloc((size_t)(n * ROWS[i]), 4);
                        kern_matmul_ref(&w, x, n, yr);
                        kern_matmul(&w, x, n, y);
                        CU_ASSERT_EQUAL(check_out(&w, x, n, y, yr, TOL_EXACT, "matmul"), 0);
                        free(buf), free(x), free(y), free(yr);
                    }
    }
    /* More rows than one widened block (1 MiB of f32). */
    void *buf;
    tm_mat w = rand_mat(TM_DT_BF16, 1100, 300, &buf);
    float *x = rand_vec(3 * 300);
    float *y = tm_calloc(3 * 1100, 4), *yr = tm_calloc(3 * 1100, 4);
    kern_matmul_ref(&w, x, 3, yr);
    kern_matmul(&w, x, 3, y);
    CU_ASSERT_EQUAL(check_out(&w, x, 3, y, yr, TOL_EXACT, "matmul-blocks"), 0);
    free(buf), free(x), free(y), free(yr);
    kern_set_threads(1);
}

/* The register-blocked BF16 product under every ISA, partial row and token
 * blocks included, threaded and not. */
static void test_matmul_direct(void)
{
    static const int NS[] = {1, 2, 3, 5, 8, 17};
    kern_isa saved = kern_isa_active();
    for (int th = 1; th <= 2; th++) {
        kern_set_threads(th);
        for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
            if (kern_set_isa((kern_isa)isa) != 0) continue;
            for (size_t k = 0; k < TM_ARRAY_LEN(NS); k++)
                for (size_t i = 0; i < TM_ARRAY_LEN(ROWS); i++)
                    for (size_t j = 0; j < TM_ARRAY_LEN(COLS); j++) {
                        int n = NS[k];
                        int64_t R = ROWS[i] * (th == 2 ? 9 : 1);
                        void *buf;
                        tm_mat w = rand_mat(TM_DT_BF16, R, COLS[j], &buf);
                        float *x = rand_vec((size_t)(n * COLS[j]));
                        float *y = tm_calloc((size_t)(n * R), 4), *yr = tm_calloc((size_t)(n * R), 4);
                        kern_matmul_ref(&w, x, n, yr);
                        kern_matmul_direct(&w, x, n, y);
                        CU_ASSERT_EQUAL(check_out(&w, x, n, y, yr, TOL_EXACT, kern_isa_name((kern_isa)isa)), 0);
                        free(buf), free(x), free(y), free(yr);
                    }
        }
    }
    kern_set_threads(1);
    kern_set_isa(saved);
}

static void test_matvec_many(void)
{
    enum { N = 70 }; /* more than KERN_MANY_MAX: two passes */
    for (int th = 1; th <= 3; th += 2) {
        kern_set_threads(th);
        tm_mat w[N];
        void *buf[N];
        float *x[N], *y[N], *yr[N];
        for (int k = 0; k < N; k++) {
            int64_t R = ROWS[k % 4] * (1 + k % 3), C = COLS[(k / 4) % 4];
            w[k] = rand_mat(k % 5 ? TM_DT_BF16 : TM_DT_F32, R, C, &buf[k]);
            x[k] = rand_vec((size_t)C);
            y[k] = tm_calloc((size_t)R, 4);
            yr[k] = tm_calloc((size_t)R, 4);
            kern_matvec_ref(&w[k], x[k], yr[k]);
        }
        kern_matvec_many(N, w, (const float *const *)x, y);
        for (int k = 0; k < N; k++) {
            CU_ASSERT_EQUAL(check_out(&w[k], x[k], 1, y[k], yr[k],
                                      kern_isa_active() == KERN_ISA_AVX512BF16 ? TOL_BF16DOT : TOL_EXACT, "many"), 0);
            free(buf[k]), free(x[k]), free(y[k]), free(yr[k]);
        }
    }
    kern_set_threads(1);
}

/* Same-shape BF16 matrices go four at a time on one thread (a layer's
 * experts at one token); every row must equal kern_matvec's bit for bit. */
static void test_matvec_many_same_shape(void)
{
    enum { N = 11 };
    static const int64_t shapes[2][2] = {{128, 512}, {512, 128}};
    kern_set_threads(1);
    for (int s = 0; s < 2; s++) {
        tm_mat w[N];
        void *buf[N];
        float *x[N], *y[N], *y1[N], *yr[N];
        int64_t R = shapes[s][0], C = shapes[s][1];
        for (int k = 0; k < N; k++) {
            w[k] = rand_mat(TM_DT_BF16, R, C, &buf[k]);
            x[k] = rand_vec((size_t)C);
            y[k] = tm_calloc((size_t)R, 4);
            y1[k] = tm_calloc((size_t)R, 4);
            yr[k] = tm_calloc((size_t)R, 4);
            kern_matvec_ref(&w[k], x[k], yr[k]);
            kern_matvec(&w[k], x[k], y1[k]);
        }
        kern_matvec_many(N, w, (const float *const *)x, y);
        for (int k = 0; k < N; k++) {
            CU_ASSERT_EQUAL(check_out(&w[k], x[k], 1, y[k], yr[k],
                                      kern_isa_active() == KERN_ISA_AVX512BF16 ? TOL_BF16DOT : TOL_EXACT, "many4"), 0);
            CU_ASSERT(memcmp(y[k], y1[k], sizeof(float) * (size_t)R) == 0);
            free(buf[k]), free(x[k]), free(y[k]), free(y1[k]), free(yr[k]);
        }
    }
}

static void test_matmul2(void)
{
    static const int NS[] = {1, 4};
    for (int th = 1; th <= 2; th++) {
        kern_set_threads(th);
        for (int dt = 0; dt < 2; dt++)
            for (size_t k = 0; k < TM_ARRAY_LEN(NS); k++)
                for (size_t i = 0; i < TM_ARRAY_LEN(ROWS); i++) {
                    int n = NS[k];
                    int64_t C = 129, Ra = ROWS[i], Rb = ROWS[(i + 1) % TM_ARRAY_LEN(ROWS)] * 40;
                    void *ba, *bb;
                    tm_mat a = rand_mat(dt ? TM_DT_BF16 : TM_DT_F32, Ra, C, &ba);
                    tm_mat b = rand_mat(dt ? TM_DT_F32 : TM_DT_BF16, Rb, C, &bb); /* mixed dtypes too */
                    float *x = rand_vec((size_t)(n * C));
                    float *ya = tm_calloc((size_t)(n * Ra), 4), *yar = tm_calloc((size_t)(n * Ra), 4);
                    float *yb = tm_calloc((size_t)(n * Rb), 4), *ybr = tm_calloc((size_t)(n * Rb), 4);
                    kern_matmul_ref(&a, x, n, yar);
                    kern_matmul_ref(&b, x, n, ybr);
                    kern_matmul2(&a, &b, x, n, ya, yb);
                    CU_ASSERT_EQUAL(check_out(&a, x, n, ya, yar, TOL_EXACT, "matmul2.a"), 0);
                    CU_ASSERT_EQUAL(check_out(&b, x, n, yb, ybr, TOL_EXACT, "matmul2.b"), 0);
                    free(ba), free(bb), free(x), free(ya), free(yar), free(yb), free(ybr);
                }
    }
    kern_set_threads(1);
}

/* ---- expert --------------------------------------------------------------- */

static void test_expert(void)
{
    int64_t H = 129, I = 33;
    void *bg, *bu, *bd;
    tm_expert e = {rand_mat(TM_DT_BF16, I, H, &bg), rand_mat(TM_DT_BF16, I, H, &bu), rand_mat(TM_DT_BF16, H, I, &bd)};
    for (int n = 1; n <= 6; n += 5) {
        float *x = rand_vec((size_t)(n * H));
        float *y = tm_calloc((size_t)(n * H), 4), *scr = tm_calloc((size_t)(n * 2 * I), 4);
        float *g = tm_calloc((size_t)(n * I), 4), *u = tm_calloc((size_t)(n * I), 4);
        float *yr = tm_calloc((size_t)(n * H), 4);
        expert_forward(&e, x, n, y, scr);
        kern_matmul_ref(&e.gate, x, n, g);
        kern_matmul_ref(&e.up, x, n, u);
        for (int i = 0; i < n * I; i++) g[i] = (float)((double)g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
        kern_matmul_ref(&e.down, g, n, yr);
        int bad = 0;
        for (int i = 0; i < n * H; i++)
            if (fabs(y[i] - yr[i]) > 1e-4 * (1.0 + fabs(yr[i]))) bad++;
        CU_ASSERT_EQUAL(bad, 0);
        free(x), free(y), free(scr), free(g), free(u), free(yr);
    }
    free(bg), free(bu), free(bd);
}

/* ---- pool and elementwise ------------------------------------------------ */

static int hits[10007];
static void mark(void *arg, int64_t i0, int64_t i1)
{
    (void)arg;
    for (int64_t i = i0; i < i1; i++) __atomic_fetch_add(&hits[i], 1, __ATOMIC_RELAXED);
}

static void test_parallel_for(void)
{
    for (int th = 1; th <= 4; th++) {
        kern_set_threads(th);
        for (int rep = 0; rep < 200; rep++) {
            int64_t n = 1 + (rep * 97) % 10007;
            memset(hits, 0, sizeof hits);
            kern_parallel_for(n, 1 + rep % 17, mark, NULL);
            int bad = 0;
            for (int64_t i = 0; i < n; i++) bad += hits[i] != 1;
            CU_ASSERT_EQUAL(bad, 0);
        }
    }
    kern_set_threads(1);
}

static void test_elementwise(void)
{
    static const int NS[] = {1, 7, 33, 1000};
    for (size_t k = 0; k < TM_ARRAY_LEN(NS); k++) {
        int n = NS[k];
        float *x = rand_vec((size_t)n), *w = rand_vec((size_t)n), *o = tm_malloc((size_t)n * 4);
        float *u = rand_vec((size_t)n), *g = tm_malloc((size_t)n * 4);
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
        double inv = 1.0 / sqrt(ss / n + 1e-6);
        kern_rmsnorm(o, x, w, n, 1e-6f);
        int bad = 0;
        for (int i = 0; i < n; i++) bad += fabs(o[i] - w[i] * x[i] * inv) > 1e-5 * (1 + fabs(w[i] * x[i] * inv));
        /* softmax */
        memcpy(g, x, (size_t)n * 4);
        kern_softmax(g, n);
        double m = x[0], s = 0;
        for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
        for (int i = 0; i < n; i++) s += exp(x[i] - m);
        for (int i = 0; i < n; i++) bad += fabs(g[i] - exp(x[i] - m) / s) > 1e-6 + 1e-5 * (exp(x[i] - m) / s);
        memcpy(g, x, (size_t)n * 4); /* the attention's, wider inputs too */
        for (int i = 0; i < n; i++) g[i] *= 20.0f;
        kern_softmax_attn(g, n);
        s = 0;
        for (int i = 0; i < n; i++) s += exp(20.0 * (x[i] - m));
        for (int i = 0; i < n; i++) {
            double p = exp(20.0 * (x[i] - m)) / s;
            bad += fabs(g[i] - p) > 1e-7 + 1e-5 * p;
        }
        /* silu_mul and axpy */
        memcpy(g, x, (size_t)n * 4);
        kern_silu_mul(g, u, n);
        for (int i = 0; i < n; i++) {
            double r = x[i] / (1.0 + exp(-(double)x[i])) * u[i];
            bad += fabs(g[i] - r) > 1e-5 * (1 + fabs(r));
        }
        memcpy(g, x, (size_t)n * 4);
        kern_axpy(g, 0.5f, u, n);
        for (int i = 0; i < n; i++) bad += fabs(g[i] - (x[i] + 0.5 * u[i])) > 1e-6 * (1 + fabs(x[i]) + fabs(u[i]));
        CU_ASSERT_EQUAL(bad, 0);
        free(x), free(w), free(o), free(u), free(g);
    }
}

/* One token's heads of a KV group against a cache of L rows with a stride
 * wider than the head (as in the KV cache, where a row holds every KV head). */
static void test_attend_one(void)
{
    static const int LS[] = {1, 3, 9, 40, 300}, DS[] = {64, 128, 40, 13}, GS[] = {1, 4};
    for (size_t a = 0; a < TM_ARRAY_LEN(LS); a++)
        for (size_t b = 0; b < TM_ARRAY_LEN(DS); b++)
            for (size_t c = 0; c < TM_ARRAY_LEN(GS); c++) {
                int L = LS[a], D = DS[b], g = GS[c];
                int64_t ld = 2 * D + 3;
                float *q = rand_vec((size_t)g * D), *k = rand_vec((size_t)L * ld), *v = rand_vec((size_t)L * ld);
                float *sc = tm_malloc((size_t)g * L * 4), *o = tm_malloc((size_t)g * D * 4);
                float *r = tm_malloc((size_t)g * D * 4);
                float scale = 1.0f / sqrtf((float)D);
                kern_attend_one(q, g, k + D, v + D, ld, L, D, scale, sc, o);
                kern_attend_one_ref(q, g, k + D, v + D, ld, L, D, scale, r);
                int bad = 0;
                for (int i = 0; i < g * D; i++) bad += fabs(o[i] - r[i]) > 1e-5 * (1 + fabs(r[i]));
                CU_ASSERT_EQUAL(bad, 0);
                for (int h = 0; h < g; h++) { /* the scores left are each head's probabilities */
                    double psum = 0;
                    for (int j = 0; j < L; j++) psum += sc[(size_t)h * L + j];
                    CU_ASSERT_DOUBLE_EQUAL(psum, 1.0, 1e-5);
                }
                free(q), free(k), free(v), free(sc), free(o), free(r);
            }
}

/* A block of n consecutive tokens (the first attends to L0 keys) gives each
 * token's heads the bits of kern_attend_one alone: group sizes that fill the
 * four-row groups and that leave short ones, head sizes with and without a
 * 32-column block, blocks that start at and across the 32-key blocks. */
static void test_attend_block(void)
{
    static const int NS[] = {1, 2, 5, 8}, L0S[] = {1, 4, 31, 33, 70}, DS[] = {128, 40, 8, 13}, GS[] = {1, 3, 4, 8};
    int bad_bits = 0, bad_ref = 0;
    for (size_t a = 0; a < TM_ARRAY_LEN(NS); a++)
        for (size_t b = 0; b < TM_ARRAY_LEN(L0S); b++)
            for (size_t c = 0; c < TM_ARRAY_LEN(DS); c++)
                for (size_t d = 0; d < TM_ARRAY_LEN(GS); d++) {
                    int n = NS[a], L0 = L0S[b], D = DS[c], g = GS[d], L = L0 + n - 1;
                    int64_t ld = 2 * D + 3, stride = (int64_t)g * D + 5;
                    float *q = rand_vec((size_t)n * stride), *k = rand_vec((size_t)L * ld), *v = rand_vec((size_t)L * ld);
                    float *o = tm_calloc((size_t)n * stride, 4), *one = tm_malloc((size_t)g * D * 4);
                    float *r = tm_malloc((size_t)g * D * 4), *sc = tm_malloc((size_t)n * g * L * 4);
                    float scale = 1.0f / sqrtf((float)D);
                    kern_attend_block(q, o, stride, n, g, L0, k + D, v + D, ld, D, scale, sc);
                    for (int i = 0; i < n; i++) {
                        const float *qi = q + (size_t)i * stride, *oi = o + (size_t)i * stride;
                        kern_attend_one(qi, g, k + D, v + D, ld, L0 + i, D, scale, sc, one);
                        kern_attend_one_ref(qi, g, k + D, v + D, ld, L0 + i, D, scale, r);
                        bad_bits += memcmp(oi, one, (size_t)g * D * 4) != 0;
                        for (int e = 0; e < g * D; e++) bad_ref += fabs(oi[e] - r[e]) > 1e-5 * (1 + fabs(r[e]));
                    }
                    free(q), free(k), free(v), free(o), free(one), free(r), free(sc);
                }
    CU_ASSERT_EQUAL(bad_bits, 0);
    CU_ASSERT_EQUAL(bad_ref, 0);
}

int main(void)
{
    char desc[256];
    cpu_describe(desc, sizeof desc);
    fprintf(stderr, "cpu: %s; default bf16 matvec: %s\n", desc, kern_isa_name(kern_isa_active()));
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("kernels", NULL, NULL);
    CU_add_test(s, "matvec per ISA vs ref", test_matvec_isa);
    CU_add_test(s, "matvec dispatch, threads", test_matvec_dispatch);
    CU_add_test(s, "matmul vs ref", test_matmul);
    CU_add_test(s, "matmul_direct per ISA vs ref", test_matmul_direct);
    CU_add_test(s, "matvec_many vs ref", test_matvec_many);
    CU_add_test(s, "matvec_many, same shapes, vs matvec", test_matvec_many_same_shape);
    CU_add_test(s, "matmul2 vs ref", test_matmul2);
    CU_add_test(s, "expert_forward vs ref", test_expert);
    CU_add_test(s, "parallel_for covers once", test_parallel_for);
    CU_add_test(s, "elementwise vs double", test_elementwise);
    CU_add_test(s, "attend_one vs double", test_attend_one);
    CU_add_test(s, "attend_block: attend_one's bits per token", test_attend_block);
    return cunit_run();
}
