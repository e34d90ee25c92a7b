/* test_expert_group.c: the grouped expert path (expert_group_run) and its
 * row-range kernel (kern_matmul_rows) against double-precision references on
 * random inputs, bitwise across thread counts, and bitwise against the
 * per-expert path where both take the same kernel.
 *
 * Routings covered: random with odd token counts, experts with one token,
 * experts with none, every token on one expert, pairs skipped (id -1, as a
 * worker sees the pairs other ranks host), a single token. */
#include "common.h"
#include "cpu.h"
#include "expert.h"
#include "kernels.h"

#include <CUnit/Basic.h>

#include "cunit_run.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 4503599627370496.0 - 1.0);
}
static int irand(int n) { return (int)((frand() + 1.0f) * 0.5f * (float)n) % n; }

static tm_mat rand_mat(tm_dtype dt, int64_t rows, int64_t cols, float scale)
{
    size_t n = (size_t)(rows * cols);
    void *d;
    if (dt == TM_DT_BF16) {
        uint16_t *b = tm_malloc(n * 2);
        for (size_t i = 0; i < n; i++) b[i] = tm_f32_to_bf16(frand() * scale);
        d = b;
    } else {
        float *f = tm_malloc(n * 4);
        for (size_t i = 0; i < n; i++) f[i] = frand() * scale;
        d = f;
    }
    return (tm_mat){dt, d, rows, cols};
}

static float *rand_vec(size_t n)
{
    float *v = tm_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = frand();
    return v;
}

/* Rows [0, R) of n tokens' outputs at stride ld: *bad counts whole's misses
 * of ref beyond the f32 kernels' bound, 1e-5 · Σ_c |w_rc · x_c| (x[t] in the
 * natural layout), *differ the outputs where parts (another row split) is
 * not bitwise whole. */
static void check_rows(const tm_mat *w, const float *const *x, int n, const float *whole, const float *parts,
                       const float *ref, int64_t ld, int *bad, int *differ)
{
    *bad = *differ = 0;
    const int64_t C = w->cols;
    for (int t = 0; t < n; t++)
        for (int64_t r = 0; r < w->rows; r++) {
            size_t i = (size_t)t * (size_t)ld + (size_t)r;
            double mag = 0;
            for (int64_t c = 0; c < C; c++) {
                double wv = w->dtype == TM_DT_F32 ? ((const float *)w->data)[r * C + c]
                                                  : tm_bf16_to_f32(((const uint16_t *)w->data)[r * C + c]);
                mag += fabs(wv * x[t][c]);
            }
            *bad += !(fabs((double)whole[i] - ref[i]) <= 1e-5 * mag + 1e-30);
            *differ += memcmp(&whole[i], &parts[i], 4) != 0;
        }
}

/* ---- kern_matmul_rows ---------------------------------------------------------- */

static void test_matmul_rows(void)
{
    static const int64_t SHAPES[][2] = {{33, 129}, {48, 64}, {7, 3}, {257, 1000}};
    static const tm_dtype DTS[] = {TM_DT_BF16, TM_DT_F32};
    for (size_t s = 0; s < TM_ARRAY_LEN(SHAPES); s++)
        for (size_t d = 0; d < TM_ARRAY_LEN(DTS); d++)
            for (int n = 1; n <= 9; n += 4) {
                int64_t R = SHAPES[s][0], C = SHAPES[s][1], ld = R + 5;
                tm_mat w = rand_mat(DTS[d], R, C, 1.0f);
                /* tokens scattered over a larger buffer, in reverse order */
                float *xb = rand_vec((size_t)(n + 3) * (size_t)C);
                const float **xs = tm_malloc(sizeof(*xs) * (size_t)n);
                for (int t = 0; t < n; t++) xs[t] = xb + (size_t)(n + 2 - t) * (size_t)C;
                float *whole = tm_calloc((size_t)n * (size_t)ld, 4), *parts = tm_calloc((size_t)n * (size_t)ld, 4);
                float *ref = tm_calloc((size_t)n * (size_t)ld, 4);
                kern_matmul_rows(&w, xs, n, whole, ld, 0, R);
                kern_matmul_rows_ref(&w, xs, n, ref, ld, 0, R);
                /* random splits of the rows, as threads would take them */
                for (int64_t r0 = 0; r0 < R;) {
                    int64_t step = 1 + irand(9), r1 = TM_MIN(R, r0 + step);
                    kern_matmul_rows(&w, xs, n, parts, ld, r0, r1);
                    r0 = r1;
                }
                int bad, differ;
                check_rows(&w, xs, n, whole, parts, ref, ld, &bad, &differ);
                CU_ASSERT_EQUAL(bad, 0);
                CU_ASSERT_EQUAL(differ, 0);
                free((void *)w.data), free(xb), free((void *)xs), free(whole), free(parts), free(ref);
            }
}

/* The packing for the tiles (AVX-512, no AMX needed): whole 32-column
 * steps (the vector split and its 16 × 16 turn) and column pairs give the
 * same bits, under any split of the columns, for token counts that leave
 * padding in a 16-token block and that fill several; and the planes sum to
 * x exactly. */
static void test_amx_pack(void)
{
    if (!cpu_get()->avx512bw) {
        fprintf(stderr, "(no AVX-512 on this machine: the tiles' packing is not tested here) ");
        return;
    }
    /* values the bf16 split treats apart (zeros, denormals, ties, the edge of
     * bf16's range, infinities, NaN): packed 32 columns at a time and one
     * pair at a time, the same bits; and hi + mid + lo is x exactly wherever
     * x is normal and above 2^-110 */
    {
        static const float SPECIAL[] = {0.0f, -0.0f, 1e-40f, -1e-39f, 1.00390625f, 1.01171875f, 3.3e38f,
                                        -3.39e38f, 1e-30f, 65504.0f, 1.0f / 3.0f, -2.7182818f};
        enum { C = 64 };
        float xs1[C];
        for (int c = 0; c < C; c++) xs1[c] = SPECIAL[c % TM_ARRAY_LEN(SPECIAL)] * (c < 32 ? 1.0f : -1.0f);
        xs1[40] = INFINITY, xs1[41] = NAN;
        const float *xp1[1] = {xs1};
        size_t len = kern_amx_packed_len(1, C);
        uint16_t *pa = tm_malloc(len * 2), *pb = tm_malloc(len * 2);
        memset(pb, 0xff, len * 2);
        kern_amx_pack(xp1, 1, C, 0, C, pa);
        for (int c = 0; c < C; c += 2) kern_amx_pack(xp1, 1, C, c, c + 2, pb);
        CU_ASSERT(memcmp(pa, pb, len * 2) == 0);
        for (int c = 0; c < C; c++) {
            if (c == 40 || c == 41) continue;
            /* step c / 32, plane q: token 0's column c at 32 · ((c % 32) / 2) + c % 2 */
            size_t at = (size_t)(c / 32) * 1536 + (size_t)((c % 32) / 2) * 32 + (size_t)(c % 2);
            double v = (double)tm_bf16_to_f32(pa[at]) + (double)tm_bf16_to_f32(pa[at + 512]) +
                       (double)tm_bf16_to_f32(pa[at + 1024]);
            double x = xs1[c];
            if (fabs(x) < 1.2e-38) {
                CU_ASSERT(v == 0.0); /* denormals go to zero */
            } else if (fabs(x) > 1e-33) {
                CU_ASSERT(v == x);
            } else {
                CU_ASSERT(fabs(v - x) <= fabs(x) * 1e-7);
            }
        }
        free(pa), free(pb);
    }
    static const int64_t COLS[] = {32, 96, 768, 2048};
    static const int NS[] = {1, 3, 16, 17, 40};
    for (size_t s = 0; s < TM_ARRAY_LEN(COLS); s++)
        for (size_t k = 0; k < TM_ARRAY_LEN(NS); k++) {
            int n = NS[k];
            int64_t C = COLS[s];
            float *xb = rand_vec((size_t)(n + 2) * (size_t)C);
            const float **xs = tm_malloc(sizeof(*xs) * (size_t)n);
            for (int t = 0; t < n; t++) xs[t] = xb + (size_t)(n + 1 - t) * (size_t)C;
            size_t len = kern_amx_packed_len(n, C);
            uint16_t *pw = tm_malloc(len * 2), *pp = tm_malloc(len * 2), *p2 = tm_malloc(len * 2);
            memset(pp, 0xff, len * 2); /* every value of the split packs below must be written */
            memset(p2, 0xff, len * 2);
            kern_amx_pack(xs, n, C, 0, C, pw);
            for (int64_t c0 = 0; c0 < C;) {
                int64_t step = 2 * (1 + irand(40)), c1 = TM_MIN(C, c0 + step);
                kern_amx_pack(xs, n, C, c0, c1, pp);
                c0 = c1;
            }
            for (int64_t c0 = 0; c0 < C; c0 += 2) kern_amx_pack(xs, n, C, c0, c0 + 2, p2); /* pairs only */
            CU_ASSERT(memcmp(pw, pp, len * 2) == 0);
            CU_ASSERT(memcmp(pw, p2, len * 2) == 0);
            free(xb), free((void *)xs), free(pw), free(pp), free(p2);
        }
}

/* The AMX product: against the double reference at the f32 kernels'
 * tolerance, bitwise under any split of the rows (also ones that do not
 * start on a 16-row tile) and of the packed columns; token counts below, at
 * and past a 16-token block and past a group of four blocks. */
static void test_matmul_rows_amx(void)
{
    static const int64_t SHAPES[][2] = {{16, 32}, {33, 96}, {64, 512}, {200, 2048}};
    static const int NS[] = {1, 3, 16, 17, 40, 70};
    void *probe_buf = NULL;
    tm_mat probe = rand_mat(TM_DT_BF16, 16, 32, 1.0f);
    probe_buf = (void *)probe.data;
    int on = kern_amx_usable(&probe);
    free(probe_buf);
    if (!on) {
        fprintf(stderr, "(no AMX on this machine: its product is not tested here) ");
        return;
    }
    for (size_t s = 0; s < TM_ARRAY_LEN(SHAPES); s++)
        for (size_t k = 0; k < TM_ARRAY_LEN(NS); k++) {
            int n = NS[k];
            int64_t R = SHAPES[s][0], C = SHAPES[s][1], ld = R + 3;
            tm_mat w = rand_mat(TM_DT_BF16, R, C, 1.0f);
            CU_ASSERT(kern_amx_usable(&w));
            float *xb = rand_vec((size_t)(n + 2) * (size_t)C);
            const float **xs = tm_malloc(sizeof(*xs) * (size_t)n);
            for (int t = 0; t < n; t++) xs[t] = xb + (size_t)(n + 1 - t) * (size_t)C;
            size_t len = kern_amx_packed_len(n, C);
            uint16_t *pw = tm_malloc(len * 2), *pp = tm_malloc(len * 2);
            kern_amx_pack(xs, n, C, 0, C, pw);
            float *whole = tm_calloc((size_t)n * (size_t)ld, 4), *parts = tm_calloc((size_t)n * (size_t)ld, 4);
            float *ref = tm_calloc((size_t)n * (size_t)ld, 4);
            kern_matmul_rows_amx(&w, pw, n, whole, ld, 0, R);
            kern_matmul_rows_ref(&w, xs, n, ref, ld, 0, R);
            for (int64_t r0 = 0; r0 < R;) {
                int64_t step = 1 + irand(40), r1 = TM_MIN(R, r0 + step);
                kern_matmul_rows_amx(&w, pw, n, parts, ld, r0, r1);
                r0 = r1;
            }
            int bad, differ, outside = 0;
            check_rows(&w, xs, n, whole, parts, ref, ld, &bad, &differ);
            for (int t = 0; t < n; t++)
                for (int64_t r = R; r < ld; r++) outside += whole[(size_t)t * (size_t)ld + (size_t)r] != 0.0f;
            CU_ASSERT_EQUAL(bad, 0);
            CU_ASSERT_EQUAL(differ, 0);
            CU_ASSERT_EQUAL(outside, 0); /* nothing written past the rows */
            free((void *)w.data), free(xb), free((void *)xs), free(pw), free(pp), free(whole), free(parts), free(ref);
        }
}

static void test_matmul_rows_eo(void)
{
    static const int64_t SHAPES[][2] = {{33, 128}, {48, 64}, {5, 32}, {257, 2048}};
    if (kern_isa_active() == KERN_ISA_SCALAR) return; /* no even/odd product there */
    for (size_t s = 0; s < TM_ARRAY_LEN(SHAPES); s++)
        for (int n = 1; n <= 9; n += 2) {
            int64_t R = SHAPES[s][0], C = SHAPES[s][1], ld = R + 3;
            tm_mat w = rand_mat(TM_DT_BF16, R, C, 1.0f);
            CU_ASSERT(kern_eo_usable(&w));
            float *xb = rand_vec((size_t)n * (size_t)C), *xe = tm_malloc(sizeof(float) * (size_t)n * (size_t)C);
            const float **xs = tm_malloc(sizeof(*xs) * (size_t)n);
            for (int t = 0; t < n; t++) {
                kern_eo_pack(xb + (size_t)t * C, xe + (size_t)t * C, C);
                xs[t] = xe + (size_t)t * C;
                for (int64_t c = 0; c < C; c++) CU_ASSERT(xe[(size_t)t * C + (size_t)kern_eo_pos(c)] == xb[(size_t)t * C + c]);
            }
            float *whole = tm_calloc((size_t)n * (size_t)ld, 4), *parts = tm_calloc((size_t)n * (size_t)ld, 4);
            float *ref = tm_calloc((size_t)n * (size_t)ld, 4);
            kern_matmul_rows_eo(&w, xs, n, whole, ld, 0, R);
            /* the reference reads x in the natural layout */
            for (int t = 0; t < n; t++) xs[t] = xb + (size_t)t * C;
            kern_matmul_rows_ref(&w, xs, n, ref, ld, 0, R);
            for (int t = 0; t < n; t++) xs[t] = xe + (size_t)t * C;
            for (int64_t r0 = 0; r0 < R;) {
                int64_t step = 1 + irand(9), r1 = TM_MIN(R, r0 + step);
                kern_matmul_rows_eo(&w, xs, n, parts, ld, r0, r1);
                r0 = r1;
            }
            int bad, differ;
            for (int t = 0; t < n; t++) xs[t] = xb + (size_t)t * C; /* the bound reads x in the natural layout */
            check_rows(&w, xs, n, whole, parts, ref, ld, &bad, &differ);
            CU_ASSERT_EQUAL(bad, 0);
            CU_ASSERT_EQUAL(differ, 0);
            free((void *)w.data), free(xb), free(xe), free((void *)xs), free(whole), free(parts), free(ref);
        }
}

/* ---- expert_group_run ------------------------------------------------------- */

typedef struct {
    const char *name;
    int T, k;
} routing_case;

/* Fills ids for case c: 0 random (odd T), 1 all on one expert, 2 most
 * experts with one token and some with none, 3 some pairs skipped, 4 one
 * token. */
static void make_ids(int c, int T, int k, int E, int32_t *ids, float *w)
{
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int i = t * k + j, e;
            switch (c) {
            case 1: e = 3 % E; break;
            case 2: e = (i * 2) % E; break; /* even ids only: odd experts get nothing */
            case 3: e = (i % 3 == 1) ? -1 : irand(E); break;
            default: e = irand(E);
            }
            ids[i] = e;
            w[i] = 0.1f + (frand() + 1.0f) * 0.5f;
        }
}

/* amx: run with AMX on (where the machine has it: else returns at once) or off. */
static void check_group(tm_dtype dt, int H, int I, int E, int amx)
{
    if (kern_set_amx(amx) != 0) return;
    static const routing_case CASES[] = {{"random", 13, 3}, {"one expert", 9, 1}, {"one token each", 5, 2},
                                         {"skipped pairs", 11, 3}, {"single token", 1, 4}};
    tm_expert *ex = tm_calloc((size_t)E, sizeof *ex);
    for (int e = 0; e < E; e++) {
        ex[e].gate = rand_mat(dt, I, H, 1.0f / sqrtf((float)H));
        ex[e].up = rand_mat(dt, I, H, 1.0f / sqrtf((float)H));
        ex[e].down = rand_mat(dt, H, I, 1.0f / sqrtf((float)I));
    }
    expert_group g;
    expert_group_init(&g, E, H, I, 4); /* small: the runs below make it grow */
    g.par_min_bytes = 0;                /* these experts are small: use the pool anyway */
    g.eo_min_tokens = 0;                /* and AMX or the even/odd layout wherever the shapes allow */
    g.amx_min_tokens = 0;
    for (size_t c = 0; c < TM_ARRAY_LEN(CASES); c++) {
        int T = CASES[c].T, k = CASES[c].k, P = T * k;
        int32_t *ids = tm_malloc(sizeof(int32_t) * (size_t)P);
        float *w = tm_malloc(sizeof(float) * (size_t)P);
        make_ids((int)c, T, k, E, ids, w);
        float *x = rand_vec((size_t)T * H), *out0 = rand_vec((size_t)T * H);
        size_t bytes = sizeof(float) * (size_t)T * H;
        float *ref = tm_malloc(bytes), *first = tm_malloc(bytes), *out = tm_malloc(bytes);
        memcpy(ref, out0, bytes);
        expert_group_run_ref(ex, H, I, x, T, ids, w, k, ref);
        for (int th = 1; th <= 4; th++) {
            kern_set_threads(th);
            memcpy(out, out0, bytes);
            expert_group_run(&g, ex, x, T, ids, w, k, out);
            int bad = 0;
            for (size_t i = 0; i < (size_t)T * H; i++) bad += !(fabs(out[i] - ref[i]) <= 1e-5 * (1.0 + fabs(ref[i])));
            if (bad) fprintf(stderr, "%s %s H=%d I=%d threads %d: %d outputs off the reference\n", CASES[c].name,
                             tm_dtype_name(dt), H, I, th, bad);
            CU_ASSERT_EQUAL(bad, 0);
            if (th == 1) memcpy(first, out, bytes);
            else CU_ASSERT_EQUAL(memcmp(first, out, bytes), 0); /* bitwise across thread counts */
        }
        if (c == 1 && dt == TM_DT_BF16) {
            /* all T (2..64) tokens on one expert against expert_forward: in
             * the natural layout both take the same direct product and agree
             * bit for bit, and so do both on AMX (expert_forward from
             * KERN_AMX_MIN_TOKENS tokens); the even/odd layout sums in
             * another order */
            kern_set_threads(2);
            float *y = tm_malloc(bytes), *scr = tm_malloc(sizeof(float) * (size_t)T * 2 * I);
            memcpy(out, out0, bytes);
            expert_forward(&ex[ids[0]], x, T, y, scr);
            for (int t = 0; t < T; t++) kern_axpy(out + (size_t)t * H, w[t], y + (size_t)t * H, H);
            if (g.eo || (g.amx && T < KERN_AMX_MIN_TOKENS)) {
                int bad = 0;
                for (size_t i = 0; i < (size_t)T * H; i++) bad += !(fabs(out[i] - first[i]) <= 1e-5 * (1.0 + fabs(first[i])));
                CU_ASSERT_EQUAL(bad, 0);
            } else {
                CU_ASSERT_EQUAL(memcmp(first, out, bytes), 0);
            }
            free(y), free(scr);
        }
        /* the path each shape should take under a vector variant */
        int tiles = dt == TM_DT_BF16 && H % 32 == 0 && I % 32 == 0;
        if (kern_isa_active() != KERN_ISA_SCALAR) {
            CU_ASSERT_EQUAL(g.amx, amx && tiles);
            CU_ASSERT_EQUAL(g.eo, !amx && tiles);
        }
        free(ids), free(w), free(x), free(out0), free(ref), free(first), free(out);
    }
    kern_set_threads(1);
    kern_set_amx(1);
    CU_ASSERT(g.stats.calls == 4 * TM_ARRAY_LEN(CASES));
    expert_group_free(&g);
    for (int e = 0; e < E; e++) free((void *)ex[e].gate.data), free((void *)ex[e].up.data), free((void *)ex[e].down.data);
    free(ex);
}

static void test_group_bf16(void)
{
    for (int amx = 0; amx <= 1; amx++) {
        check_group(TM_DT_BF16, 129, 33, 9, amx); /* odd sizes: the kernels' column tails, partial row blocks */
        check_group(TM_DT_BF16, 64, 128, 6, amx); /* 16-row blocks at every thread count tried; even/odd or AMX */
        check_group(TM_DT_BF16, 96, 32, 5, amx);  /* 32 rows over 3-4 threads: AMX tiles that start early */
        check_group(TM_DT_BF16, 288, 544, 4, amx); /* several EXPERT_TILE_ROWS tiles per matrix, the last partial */
    }
}

/* The even/odd layout only from eo_min_tokens pairs per active expert on,
 * AMX (where the machine has it) from amx_min_tokens. */
static void test_group_eo_gate(void)
{
    int have_amx = kern_set_amx(1) == 0;
    int E = 4, H = 64, I = 32, k = 1;
    tm_expert *ex = tm_calloc((size_t)E, sizeof *ex);
    for (int e = 0; e < E; e++) {
        ex[e].gate = rand_mat(TM_DT_BF16, I, H, 0.1f);
        ex[e].up = rand_mat(TM_DT_BF16, I, H, 0.1f);
        ex[e].down = rand_mat(TM_DT_BF16, H, I, 0.1f);
    }
    expert_group g;
    expert_group_init(&g, E, H, I, 16);
    int32_t ids[16];
    float w[16], *x = rand_vec(16 * (size_t)H), *out = tm_calloc(16 * (size_t)H, 4);
    for (int amx = 0; amx <= have_amx; amx++) {
        kern_set_amx(amx);
        for (int T = 1; T <= 16; T++) {
            for (int t = 0; t < T; t++) ids[t] = t % 2, w[t] = 0.5f; /* two active experts */
            expert_group_run(&g, ex, x, T, ids, w, k, out);
            if (kern_isa_active() == KERN_ISA_SCALAR) continue;
            int tiles = amx && T >= 2 * EXPERT_GROUP_AMX_MIN_TOKENS;
            CU_ASSERT_EQUAL(g.amx, tiles);
            CU_ASSERT_EQUAL(g.eo, !tiles && T >= 2 * EXPERT_GROUP_EO_MIN_TOKENS);
        }
    }
    kern_set_amx(1);
    expert_group_free(&g);
    for (int e = 0; e < E; e++) free((void *)ex[e].gate.data), free((void *)ex[e].up.data), free((void *)ex[e].down.data);
    free(ex), free(x), free(out);
}

static void test_group_f32(void) { check_group(TM_DT_F32, 40, 24, 5, 0); }

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("expert_group", NULL, NULL);
    CU_add_test(s, "AMX packing: vector and pairs alike", test_amx_pack);
    CU_add_test(s, "matmul_rows vs ref, any row split", test_matmul_rows);
    CU_add_test(s, "matmul_rows_eo vs ref, any row split", test_matmul_rows_eo);
    CU_add_test(s, "matmul_rows_amx vs ref, any row split", test_matmul_rows_amx);
    CU_add_test(s, "grouped experts vs ref, bf16", test_group_bf16);
    CU_add_test(s, "grouped experts vs ref, f32", test_group_f32);
    CU_add_test(s, "even/odd layout from enough tokens per expert", test_group_eo_gate);
    return cunit_run();
}
