/* bench_kernels.c: the machine's read bandwidth, the BF16 matrix-vector
 * kernels at the decode shapes of omni48-small and omni30b, and the
 * cblas_sgemm / kern_matmul / cblas_sbgemm rates at prefill shapes.
 *
 *   build/bench/bench_kernels [-t THREADS] [-r REPEATS] [-m MIB] [-s SECTIONS]
 *   SECTIONS: comma list of bw, matvec, decode, gemm, group, proj (default all but group and proj)
 *
 * Every figure is the median of REPEATS timed passes.  Weights are read from
 * a buffer of MIB MiB (default 256, far beyond the L3) that each pass walks
 * once, so the matrix-vector figures are DRAM streaming rates as in decode,
 * where every expert matrix is read once per token.  Table to stdout.
 */
#include "common.h"
#include "cpu.h"
#include "expert.h"
#include "kernels.h"

#include <cblas.h>
#include <dlfcn.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

static int repeats = 5;

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- read bandwidth ---------------------------------------------------- */

#define PROBE_CHUNK 65536 /* floats per parallel_for unit (256 KiB) */

typedef struct {
    const float *buf;
    float *partial; /* [n_chunks] */
} probe_arg;

/* Sums a range of chunks with four AVX2 accumulators: loads only, no stores
 * to the stream, as in a matrix-vector product. */
__attribute__((target("avx2"))) static void probe_range(void *arg, int64_t c0, int64_t c1)
{
    const probe_arg *a = arg;
    for (int64_t c = c0; c < c1; c++) {
        const float *p = a->buf + c * PROBE_CHUNK;
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int i = 0; i < PROBE_CHUNK; i += 32) {
            s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
            s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
            s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
            s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
        }
        float t[8];
        _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        a->partial[c] = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
    }
}

/* The same sum over four interleaved streams (the quarters of each chunk)
 * with software prefetch 1 KiB ahead, the access pattern of the matvec
 * kernels; HINT is where the prefetch puts the line (L1 or L2).  On some
 * machines the plain single stream reads slower. */
#define PROBE4(name, HINT)                                                                                     \
    __attribute__((target("avx2"))) static void name(void *arg, int64_t c0, int64_t c1)                                                  \
    {                                                                                                          \
        const probe_arg *a = arg;                                                                              \
        enum { Q = PROBE_CHUNK / 4, AHEAD = 256 /* floats: 1 KiB */ };                                         \
        for (int64_t c = c0; c < c1; c++) {                                                                    \
            const float *p = a->buf + c * PROBE_CHUNK;                                                         \
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                                        \
            for (int i = 0; i < Q; i += 16) {                                                                  \
                _mm_prefetch((const char *)(p + i + AHEAD), HINT);                                             \
                _mm_prefetch((const char *)(p + Q + i + AHEAD), HINT);                                         \
                _mm_prefetch((const char *)(p + 2 * Q + i + AHEAD), HINT);                                     \
                _mm_prefetch((const char *)(p + 3 * Q + i + AHEAD), HINT);                                     \
                s0 = _mm256_add_ps(s0, _mm256_add_ps(_mm256_load_ps(p + i), _mm256_load_ps(p + i + 8)));      \
                s1 = _mm256_add_ps(s1, _mm256_add_ps(_mm256_load_ps(p + Q + i), _mm256_load_ps(p + Q + i + 8))); \
                s2 = _mm256_add_ps(s2,                                                                         \
                                   _mm256_add_ps(_mm256_load_ps(p + 2 * Q + i), _mm256_load_ps(p + 2 * Q + i + 8))); \
                s3 = _mm256_add_ps(s3,                                                                         \
                                   _mm256_add_ps(_mm256_load_ps(p + 3 * Q + i), _mm256_load_ps(p + 3 * Q + i + 8))); \
            }                                                                                                  \
            float t[8];                                                                                        \
            _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));                  \
            a->partial[c] = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];                             \
        }                                                                                                      \
    }
PROBE4(probe_range4_l1, _MM_HINT_T0)
PROBE4(probe_range4_l2, _MM_HINT_T1)

static double probe_with(const void *buf, size_t bytes, kern_range_fn fn)
{
    int64_t n_chunks = (int64_t)(bytes / (PROBE_CHUNK * sizeof(float)));
    probe_arg a = {buf, tm_calloc((size_t)n_chunks, sizeof(float))};
    double *t = tm_malloc((size_t)repeats * sizeof *t);
    fn(&a, 0, n_chunks); /* warm-up: page faults, TLB */
    for (int r = 0; r < repeats; r++) {
        double t0 = tm_now();
        kern_parallel_for(n_chunks, 1, fn, &a);
        t[r] = tm_now() - t0;
    }
    double gbs = (double)n_chunks * PROBE_CHUNK * sizeof(float) / median(t, repeats) / 1e9;
    free(t);
    free(a.partial);
    return gbs;
}

/* The highest of the probes, so ratios against it are not flattered. */
static double probe_bandwidth(const void *buf, size_t bytes, double *plain, double *streams4)
{
    *plain = probe_with(buf, bytes, probe_range);
    *streams4 = TM_MAX(probe_with(buf, bytes, probe_range4_l1), probe_with(buf, bytes, probe_range4_l2));
    return TM_MAX(*plain, *streams4);
}

/* ---- matvec ---------------------------------------------------------------- */

typedef struct {
    const char *what;
    int64_t rows, cols;
} shape;

/* GB/s of kern_matvec on [rows, cols] bf16, walking distinct copies through
 * the whole buffer once per pass (at least one copy). */
static double matvec_gbs(const uint16_t *buf, size_t buf_bytes, int64_t rows, int64_t cols, const float *x, float *y)
{
    /* A matrix larger than the buffer (omni30b's lm_head, 622 MB): time the
     * rows that fit; the rate is the same. */
    rows = TM_MIN(rows, (int64_t)(buf_bytes / ((size_t)cols * 2)));
    size_t mbytes = (size_t)(rows * cols) * 2;
    size_t copies = TM_MAX((size_t)1, buf_bytes / mbytes);
    /* at least ~64 MiB per timed pass so the clock and the noise of a
     * shared machine average out */
    int passes = (int)TM_MAX((size_t)1, ((size_t)64 << 20) / (copies * mbytes));
    double *t = tm_malloc((size_t)repeats * sizeof *t);
    tm_mat w = {TM_DT_BF16, buf, rows, cols};
    for (size_t c = 0; c < copies; c++) { /* warm-up */
        w.data = (const char *)buf + c * mbytes;
        kern_matvec(&w, x, y);
    }
    for (int r = 0; r < repeats; r++) {
        double t0 = tm_now();
        for (int p = 0; p < passes; p++)
            for (size_t c = 0; c < copies; c++) {
                w.data = (const char *)buf + c * mbytes;
                kern_matvec(&w, x, y);
            }
        t[r] = tm_now() - t0;
    }
    double gbs = (double)passes * (double)copies * (double)mbytes / median(t, repeats) / 1e9;
    free(t);
    return gbs;
}

typedef struct {
    const char *name;
    int hidden, inter, nh, nkv, hd, vocab, layers, experts, top_k;
} model_shape;

static const model_shape models[] = {
    {"omni48-small", 512, 128, 8, 2, 64, 151936, 48, 128, 8},
    {"omni30b", 2048, 768, 32, 4, 128, 152064, 48, 128, 8},
};

/* One decode step's weight reads: per layer q, k, v, o, router and top_k
 * experts (gate+up fused, down), then lm_head; each matrix at a new place
 * in the buffer, as the real model's are.  batched: each layer's selected
 * experts go through kern_matvec_many, gate and up of all of them in one
 * pass of the pool and the downs in a second, instead of one call per
 * matrix.  Returns seconds per token. */
static double decode_step(const model_shape *m, const uint16_t *buf, size_t buf_bytes, const float *x, float *y,
                          int batched, double *bytes_out)
{
    int64_t H = m->hidden, Q = (int64_t)m->nh * m->hd, KV = (int64_t)m->nkv * m->hd, FF = m->inter;
    shape seq[] = {{"q", Q, H}, {"k", KV, H}, {"v", KV, H}, {"o", H, Q}, {"router", m->experts, H}};
    size_t off = 0, bytes = 0;
#define NEXT(r, c) (bytes += (size_t)((r) * (c)) * 2, off = (off + (size_t)((r) * (c)) * 2 > buf_bytes ? 0 : off), \
                    (tm_mat){TM_DT_BF16, (const char *)buf + off, (r), (c)})
    double *t = tm_malloc((size_t)repeats * sizeof *t);
    for (int r = -1; r < repeats; r++) {
        bytes = 0;
        double t0 = tm_now();
        for (int l = 0; l < m->layers; l++) {
            for (size_t s = 0; s < TM_ARRAY_LEN(seq); s++) {
                tm_mat w = NEXT(seq[s].rows, seq[s].cols);
                kern_matvec(&w, x, y);
                off += (size_t)(w.rows * w.cols) * 2;
            }
            if (batched) {
                tm_mat gu[2 * 16], dn[16];
                const float *xs[2 * 16];
                float *ys[2 * 16];
                int K = TM_MIN(m->top_k, 16);
                for (int k = 0; k < K; k++) {
                    gu[2 * k] = NEXT(FF, H);
                    off += (size_t)(FF * H) * 2;
                    gu[2 * k + 1] = NEXT(FF, H);
                    off += (size_t)(FF * H) * 2;
                    dn[k] = NEXT(H, FF);
                    off += (size_t)(FF * H) * 2;
                }
                for (int k = 0; k < 2 * K; k++) {
                    xs[k] = x;
                    ys[k] = y + (size_t)k * (size_t)FF;
                }
                kern_matvec_many(2 * K, gu, xs, ys);
                for (int k = 0; k < K; k++) ys[k] = y + (size_t)k * (size_t)H;
                kern_matvec_many(K, dn, xs, ys);
            } else {
                for (int k = 0; k < m->top_k; k++) {
                    tm_mat g = NEXT(FF, H);
                    off += (size_t)(FF * H) * 2;
                    tm_mat u = NEXT(FF, H);
                    off += (size_t)(FF * H) * 2;
                    kern_matmul2(&g, &u, x, 1, y, y + FF);
                    tm_mat d = NEXT(H, FF);
                    off += (size_t)(FF * H) * 2;
                    kern_matvec(&d, x, y);
                }
            }
        }
        /* lm_head in row blocks of at most half the buffer */
        for (int64_t r0 = 0, blk = (int64_t)(buf_bytes / 2 / ((size_t)H * 2)); r0 < m->vocab; r0 += blk) {
            tm_mat lm = NEXT(TM_MIN(blk, (int64_t)m->vocab - r0), H);
            off += (size_t)(lm.rows * lm.cols) * 2;
            kern_matvec(&lm, x, y);
        }
        if (r >= 0) t[r] = tm_now() - t0;
    }
#undef NEXT
    *bytes_out = (double)bytes;
    double s = median(t, repeats);
    free(t);
    return s;
}

/* ---- GEMM ------------------------------------------------------------------ */

static double gflops_of(double flop, double *t)
{
    return flop / median(t, repeats) / 1e9;
}

static double sgemm_gflops(int M, int N, int K)
{
    float *a = tm_malloc((size_t)M * K * 4), *b = tm_malloc((size_t)N * K * 4), *c = tm_malloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)N * K; i++) b[i] = (float)(i % 5) * 0.1f;
    double *t = tm_malloc((size_t)repeats * sizeof *t);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, a, K, b, K, 0.f, c, N);
    for (int r = 0; r < repeats; r++) {
        double t0 = tm_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, a, K, b, K, 0.f, c, N);
        t[r] = tm_now() - t0;
    }
    double g = gflops_of(2.0 * M * N * K, t);
    free(a), free(b), free(c), free(t);
    return g;
}

/* Debian 12's OpenBLAS 0.3.21 declares cblas_sbgemm in cblas.h but is built
 * without BUILD_BFLOAT16, so the symbol is absent; look it up at run time to
 * measure it wherever a library has it. */
typedef void (*sbgemm_fn)(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE, enum CBLAS_TRANSPOSE, blasint, blasint, blasint,
                          float, const bfloat16 *, blasint, const bfloat16 *, blasint, float, float *, blasint);

/* The grouped expert path's product: x in the even/odd layout, rows split
 * over the pool as expert_group_run splits them. */
typedef struct {
    const tm_mat *w;
    const float *const *xs;
    int n;
    float *y;
} eo_task;

static void eo_rows(void *arg, int64_t r0, int64_t r1)
{
    const eo_task *t = arg;
    kern_matmul_rows_eo(t->w, t->xs, t->n, t->y, t->w->rows, r0, r1);
}

/* kern_matmul (bf16 weights widened, then sgemm), the direct product, the
 * even/odd product (-1 where unusable) and cblas_sbgemm (x rounded to bf16;
 * -1 if the library lacks it) on Y[n, rows] = X[n, cols] · Wᵀ. */
static void bf16_gemm_gflops(int n, int rows, int cols, double *g_matmul, double *g_direct, double *g_eo,
                             double *g_sbgemm)
{
    uint16_t *w = tm_malloc((size_t)rows * cols * 2), *xb = tm_malloc((size_t)n * cols * 2);
    float *x = tm_malloc((size_t)n * cols * 4), *y = tm_malloc((size_t)n * rows * 4);
    for (size_t i = 0; i < (size_t)rows * cols; i++) w[i] = tm_f32_to_bf16((float)((int)(i % 13) - 6) * 0.05f);
    for (size_t i = 0; i < (size_t)n * cols; i++) x[i] = (float)((int)(i % 11) - 5) * 0.1f;
    tm_mat m = {TM_DT_BF16, w, rows, cols};
    double *t = tm_malloc((size_t)repeats * sizeof *t);
    kern_matmul(&m, x, n, y);
    for (int r = 0; r < repeats; r++) {
        double t0 = tm_now();
        kern_matmul(&m, x, n, y);
        t[r] = tm_now() - t0;
    }
    *g_matmul = gflops_of(2.0 * n * rows * cols, t);
    for (int r = 0; r < repeats; r++) {
        double t0 = tm_now();
        kern_matmul_direct(&m, x, n, y);
        t[r] = tm_now() - t0;
    }
    *g_direct = gflops_of(2.0 * n * rows * cols, t);
    *g_eo = -1;
    if (kern_eo_usable(&m)) {
        float *xe = tm_malloc((size_t)n * cols * 4);
        const float **xs = tm_malloc((size_t)n * sizeof *xs);
        for (int i = 0; i < n; i++) {
            kern_eo_pack(x + (size_t)i * cols, xe + (size_t)i * cols, cols);
            xs[i] = xe + (size_t)i * cols;
        }
        eo_task et = {&m, xs, n, y};
        for (int r = -1; r < repeats; r++) {
            double t0 = tm_now();
            kern_parallel_for(rows, 16, eo_rows, &et);
            if (r >= 0) t[r] = tm_now() - t0;
        }
        *g_eo = gflops_of(2.0 * n * rows * cols, t);
        free(xe);
        free((void *)xs);
    }
    sbgemm_fn sbgemm = (sbgemm_fn)dlsym(RTLD_DEFAULT, "cblas_sbgemm");
    *g_sbgemm = -1;
    for (int r = -1; r < repeats && sbgemm; r++) {
        double t0 = tm_now();
        tm_f32_to_bf16_array(x, xb, (size_t)n * cols);
        sbgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, cols, 1.f, (const bfloat16 *)xb, cols,
                     (const bfloat16 *)w, cols, 0.f, y, rows);
        if (r >= 0) t[r] = tm_now() - t0;
    }
    if (sbgemm) *g_sbgemm = gflops_of(2.0 * n * rows * cols, t);
    free(w), free(xb), free(x), free(y), free(t);
}

/* ---- the grouped expert path from memory --------------------------------- */

/* One layer of omni30b's experts (128 x 9.4 MB BF16, far beyond the L3)
 * through expert_group_run with T tokens routed top-8 at random, on each
 * path (AVX-512, and AMX tiles where the CPU has them): the median time per
 * layer call, the active experts' bytes read per second, the GFLOP/s of the
 * pairs, and the passes. */
static void group_section(void)
{
    enum { NE = 128, HID = 2048, INTER = 768, TOPK = 8 };
    size_t per = (size_t)3 * INTER * HID; /* bf16 values of one expert */
    uint16_t *w = tm_malloc((size_t)NE * per * 2);
    uint64_t s = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < (size_t)NE * per; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        w[i] = (uint16_t)(0x3c00 + (s & 0x3ff)) ^ (uint16_t)((s >> 20) & 0x8000);
    }
    tm_expert ex[NE];
    for (int e = 0; e < NE; e++) {
        uint16_t *b = w + (size_t)e * per;
        ex[e].gate = (tm_mat){TM_DT_BF16, b, INTER, HID};
        ex[e].up = (tm_mat){TM_DT_BF16, b + (size_t)INTER * HID, INTER, HID};
        ex[e].down = (tm_mat){TM_DT_BF16, b + (size_t)2 * INTER * HID, HID, INTER};
    }
    printf("\ngrouped experts, omni30b layer (%d experts x %.1f MB), top-%d at random, ms per layer call:\n", NE,
           (double)per * 2 / 1e6, TOPK);
    printf("  %-6s %-14s %9s %8s %9s  %s\n", "tokens", "path", "ms", "GB/s", "GFLOP/s", "passes pack/gate-up/down/combine ms");
    static const int TS[] = {16, 64, 128, 512};
    for (size_t ti = 0; ti < TM_ARRAY_LEN(TS); ti++) {
        int T = TS[ti];
        float *x = tm_malloc((size_t)T * HID * 4), *out = tm_malloc((size_t)T * HID * 4), *wt = tm_malloc((size_t)T * TOPK * 4);
        int32_t *ids = tm_malloc((size_t)T * TOPK * sizeof *ids);
        for (size_t i = 0; i < (size_t)T * HID; i++) x[i] = 0.01f * (float)((int)(i % 23) - 11);
        for (int t = 0; t < T; t++)
            for (int j = 0; j < TOPK; j++) {
                int e, dup;
                do {
                    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                    e = (int)(s % NE);
                    dup = 0;
                    for (int q = 0; q < j; q++) dup |= ids[t * TOPK + q] == e;
                } while (dup);
                ids[t * TOPK + j] = e;
                wt[t * TOPK + j] = 1.0f / TOPK;
            }
        static const struct { const char *name; int amx_min; } paths[] = {
            {"avx-512", 1 << 30}, {"amx", 1}};
        for (size_t pi = 0; pi < TM_ARRAY_LEN(paths); pi++) {
            if (paths[pi].amx_min == 1 && !cpu_get()->amx) continue;
            expert_group g;
            expert_group_init(&g, NE, HID, INTER, T * TOPK);
            g.amx_min_tokens = paths[pi].amx_min;
            double *t = tm_malloc((size_t)repeats * sizeof *t);
            for (int r = -1; r < repeats; r++) {
                memset(out, 0, (size_t)T * HID * 4);
                expert_group_stats before = g.stats;
                double t0 = tm_now();
                expert_group_run(&g, ex, x, T, ids, wt, TOPK, out);
                if (r >= 0) t[r] = tm_now() - t0;
                if (r == repeats - 1) {
                    double ms = median(t, repeats) * 1e3, bytes = g.stats.bytes - before.bytes;
                    double fl = g.stats.flops - before.flops;
                    printf("  %-6d %-14s %9.2f %8.1f %9.1f  %.2f / %.2f / %.2f / %.2f\n", T, paths[pi].name, ms,
                           bytes / ms / 1e6, fl / ms / 1e6, (g.stats.pass_s[0] - before.pass_s[0]) * 1e3,
                           (g.stats.pass_s[1] - before.pass_s[1]) * 1e3, (g.stats.pass_s[2] - before.pass_s[2]) * 1e3,
                           (g.stats.pass_s[3] - before.pass_s[3]) * 1e3);
                }
            }
            free(t);
            expert_group_free(&g);
            fflush(stdout);
        }
        free(x), free(out), free(wt), free(ids);
    }
    free(w);
}

/* ---- a prefill's attention projections from memory ---------------------- */

/* omni30b's q, k, v, o and router of all 48 layers (1.8 GB, beyond the L3),
 * through kern_matmul for T tokens, layer by layer as a prefill takes them:
 * per matrix the summed median time over the layers and its GFLOP/s. */
static void proj_section(void)
{
    const model_shape *m = &models[1];
    int64_t H = m->hidden, Q = (int64_t)m->nh * m->hd, KV = (int64_t)m->nkv * m->hd;
    const shape seq[] = {{"q", Q, H}, {"k", KV, H}, {"v", KV, H}, {"o", H, Q}, {"router", m->experts, H}};
    enum { NM = 5 };
    size_t per = 0;
    for (int i = 0; i < NM; i++) per += (size_t)(seq[i].rows * seq[i].cols);
    uint16_t *w = tm_malloc((size_t)m->layers * per * 2);
    for (size_t i = 0; i < (size_t)m->layers * per; i++) w[i] = tm_f32_to_bf16((float)((int)(i % 13) - 6) * 0.01f);
    printf("\nattention projections and router, omni30b, %d layers (%.2f GB), ms per prefill (all layers):\n",
           m->layers, (double)m->layers * per * 2 / 1e9);
    printf("  %-6s", "tokens");
    for (int i = 0; i < NM; i++) printf(" %9s %7s", seq[i].what, "GFLOP/s");
    printf(" %9s\n", "all");
    static const int TS[] = {16, 64, 128, 256};
    for (size_t ti = 0; ti < TM_ARRAY_LEN(TS); ti++) {
        int T = TS[ti];
        float *x = tm_malloc((size_t)T * Q * 4), *y = tm_malloc((size_t)T * Q * 4);
        for (size_t i = 0; i < (size_t)T * Q; i++) x[i] = 0.01f * (float)((int)(i % 23) - 11);
        double *t = tm_malloc((size_t)repeats * NM * sizeof *t), tot = 0;
        for (int r = -1; r < repeats; r++) {
            double acc[NM] = {0};
            const uint16_t *b = w;
            for (int l = 0; l < m->layers; l++)
                for (int i = 0; i < NM; i++) {
                    tm_mat mm = {TM_DT_BF16, b, seq[i].rows, seq[i].cols};
                    double t0 = tm_now();
                    kern_matmul(&mm, x, T, y);
                    acc[i] += tm_now() - t0;
                    b += (size_t)(seq[i].rows * seq[i].cols);
                }
            for (int i = 0; r >= 0 && i < NM; i++) t[(size_t)i * repeats + r] = acc[i];
        }
        printf("  %-6d", T);
        for (int i = 0; i < NM; i++) {
            double ms = median(t + (size_t)i * repeats, repeats) * 1e3;
            tot += ms;
            printf(" %9.2f %7.1f", ms, 2.0 * T * seq[i].rows * seq[i].cols * m->layers / ms / 1e6);
        }
        printf(" %9.2f\n", tot);
        fflush(stdout);
        free(x), free(y), free(t);
    }
    free(w);
}

int main(int argc, char **argv)
{
    int threads = 1;
    size_t mib = 256;
    const char *sections = "bw,matvec,decode,gemm";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) repeats = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) mib = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "-s") && i + 1 < argc) sections = argv[++i];
        else {
            fprintf(stderr, "usage: bench_kernels [-t THREADS] [-r REPEATS] [-m MIB] [-s bw,matvec,decode,gemm,group,proj]\n");
            return 2;
        }
    }
    if (threads < 1 || repeats < 1 || mib < 16) {
        fprintf(stderr, "bench_kernels: need -t >= 1, -r >= 1, -m >= 16\n");
        return 2;
    }
    kern_set_threads(threads);
    char desc[256];
    cpu_describe(desc, sizeof desc);
    printf("# bench_kernels: %s\n# threads %d, median of %d, buffer %zu MiB, default bf16 matvec %s, prefetch to %s\n",
           desc, threads, repeats, mib, kern_isa_name(kern_isa_active()), kern_prefetch_target());

    size_t bytes = mib << 20;
    uint16_t *buf = aligned_alloc(64, bytes);
    TM_ASSERT(buf);
    /* moderate random bf16 values (no NaN/denormal slow paths) */
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < bytes / 2; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        buf[i] = (uint16_t)(0x3c00 + (s & 0x7ff)) ^ (uint16_t)((s >> 20) & 0x8000);
    }
    double bw_a, bw_b;
    double bw = probe_bandwidth(buf, bytes, &bw_a, &bw_b);
    if (strstr(sections, "bw"))
        printf("\nread bandwidth (%d threads): %.1f GB/s  (one stream %.1f, four streams + prefetch %.1f)\n", threads,
               bw, bw_a, bw_b);

    float *x = tm_malloc(8192 * sizeof(float)), *y = tm_malloc(200000 * sizeof(float)); /* ≥ vocab and ≥ 2·top_k·inter */
    for (int i = 0; i < 8192; i++) x[i] = 0.01f * (float)(i % 17);

    kern_isa def = kern_isa_active();
    for (size_t mi = 0; mi < TM_ARRAY_LEN(models) && strstr(sections, "matvec"); mi++) {
        if (mi == 0) {
    printf("\nBF16 matvec, GB/s of weights (%% of read bandwidth)\n");
    printf("%-13s %-9s %14s %9s", "model", "matrix", "rows x cols", "KiB");
    for (int isa = 0; isa < KERN_ISA_COUNT; isa++)
        if (kern_isa_supported((kern_isa)isa)) printf(" %14s", kern_isa_name((kern_isa)isa));
    printf("\n");
        }
        const model_shape *m = &models[mi];
        int64_t H = m->hidden, Q = (int64_t)m->nh * m->hd, KV = (int64_t)m->nkv * m->hd, FF = m->inter;
        shape sh[] = {{"q_proj", Q, H}, {"k/v_proj", KV, H}, {"o_proj", H, Q}, {"router", m->experts, H},
                      {"gate/up", FF, H}, {"down", H, FF}, {"lm_head", m->vocab, H}};
        for (size_t k = 0; k < TM_ARRAY_LEN(sh); k++) {
            printf("%-13s %-9s %6lld x %-6lld %9.0f", m->name, sh[k].what, (long long)sh[k].rows,
                   (long long)sh[k].cols, (double)(sh[k].rows * sh[k].cols) * 2 / 1024);
            for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
                if (kern_set_isa((kern_isa)isa) != 0) continue;
                double g = matvec_gbs(buf, bytes, sh[k].rows, sh[k].cols, x, y);
                printf(" %7.1f (%3.0f%%)", g, 100 * g / bw);
            }
            printf("\n");
            fflush(stdout);
        }
    }
    kern_set_isa(def);

    if (strstr(sections, "decode")) printf("\ndecode-step weight reads (all matrices of one token, batch 1, %s):\n", kern_isa_name(def));
    for (size_t mi = 0; mi < TM_ARRAY_LEN(models) && strstr(sections, "decode"); mi++) {
        for (int batched = 0; batched < 2; batched++) {
            double b;
            double sec = decode_step(&models[mi], buf, bytes, x, y, batched, &b);
            printf("  %-13s %-15s %7.1f MB/token  %8.2f ms/token  %6.1f GB/s  (%3.0f%% of read bandwidth)\n",
                   models[mi].name, batched ? "experts batched" : "one per matrix", b / 1e6, sec * 1e3, b / sec / 1e9,
                   100 * b / sec / 1e9 / bw);
        }
    }
    if (strstr(sections, "bw") && strstr(sections, "decode")) {
        double bw2 = probe_bandwidth(buf, bytes, &bw_a, &bw_b);
        printf("read bandwidth again after the runs: %.1f GB/s (the machine's noise)\n", bw2);
    }
    free(buf);
    if (strstr(sections, "group")) group_section();
    if (strstr(sections, "proj")) proj_section();
    if (!strstr(sections, "gemm")) {
        free(x), free(y);
        return 0;
    }

    printf("\ncblas_sgemm GFLOP/s (Y[M,N] = A[M,K] · B[N,K]^T):\n");
    static const int sq[][3] = {{1024, 1024, 1024}, {128, 2048, 2048}, {128, 768, 2048}};
    for (size_t i = 0; i < TM_ARRAY_LEN(sq); i++)
        printf("  M %4d N %4d K %4d   %7.1f\n", sq[i][0], sq[i][1], sq[i][2], sgemm_gflops(sq[i][0], sq[i][1], sq[i][2]));

    printf("\nBF16-weight GEMM GFLOP/s, expert gate/up shape (n tokens x rows x cols):\n");
    printf("  %-28s %12s %12s %12s %12s\n", "shape", "kern_matmul", "direct", "even/odd", "cblas_sbgemm");
    for (size_t mi = 0; mi < TM_ARRAY_LEN(models); mi++) {
        static const int NS[] = {4, 8, 16, 32, 128};
        for (size_t k = 0; k < TM_ARRAY_LEN(NS); k++) {
            double g1, gd, ge, g2;
            bf16_gemm_gflops(NS[k], models[mi].inter, models[mi].hidden, &g1, &gd, &ge, &g2);
            char lab[64];
            snprintf(lab, sizeof lab, "%s n=%d %dx%d", models[mi].name, NS[k], models[mi].inter, models[mi].hidden);
            printf("  %-28s %12.1f %12.1f %12.1f", lab, g1, gd, ge);
            if (g2 >= 0) printf(" %12.1f\n", g2);
            else printf(" %12s\n", "absent");
        }
    }
    free(x), free(y);
    return 0;
}
