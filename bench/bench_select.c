/* bench_select.c: cost of one expert selection (issue 5 item 5) at the
 * omni48-small / Qwen3-30B shape: 128 experts, top-8, 48 layers.
 *
 *   build/bench/bench_select [REPEATS] [TOKENS]      (default 21, 2000)
 *
 * Each repeat times TOKENS tokens x 48 layers of selection calls on float32
 * softmax vectors (random logits ~ N(0, 1.5^2), a pool of 512 precomputed
 * vectors, so they stay in cache as the router's freshly written output
 * does).  Modes:
 *   engine       model_route_topk: the engine's own top-k, no trust code
 *   router       trust_select, --select router
 *   blend        trust_select, --select blend --alpha 0.9
 *   trust-first  trust_select, --select trust-first, min-evidence 2,
 *                epsilon 0 (nearly every call trust-driven)
 *   trust-first-e0.1  the same with epsilon 0.1
 * The trust modes read a random trust table (trust in [0.05, 0.5), evidence
 * 0..9) and count into a trust_metrics, as `generate --select ...` does.
 * Prints, per mode, the median (and min) ns per call over the repeats and
 * the median us per token (48 calls); bench/select.sh compares that with
 * the decode time per token.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "model.h"
#include "trust_metrics.h"
#include "trust_rep.h"
#include "trust_rng.h"
#include "trust_select.h"

enum { E = 128, K = 8, L = 48, POOL = 512 };

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float *probs_pool(uint64_t seed)
{
    float *p = tm_malloc((size_t)POOL * E * sizeof *p);
    uint64_t rng = seed;
    for (int i = 0; i < POOL; i++) {
        float *v = p + (size_t)i * E, mx = -1e30f;
        for (int e = 0; e < E; e++) {
            /* Box-Muller */
            double u1 = trust_rng_uniform(&rng), u2 = trust_rng_uniform(&rng);
            v[e] = (float)(1.5 * sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2));
            mx = v[e] > mx ? v[e] : mx;
        }
        double s = 0;
        for (int e = 0; e < E; e++) s += (v[e] = expf(v[e] - mx));
        for (int e = 0; e < E; e++) v[e] = (float)(v[e] / s);
    }
    return p;
}

typedef struct {
    const char *name;
    int engine; /* 1: model_route_topk */
    trust_select_mode mode;
    float epsilon;
} bench_mode;

static volatile double sink;

/* ns per call of one repeat */
static double run_once(const bench_mode *bm, trust_selector *s, const float *pool, int tokens)
{
    int32_t ids[K];
    float w[K];
    double acc = 0;
    double t0 = tm_now();
    for (int t = 0; t < tokens; t++) {
        for (int l = 0; l < L; l++) {
            const float *p = pool + (size_t)((t * L + l) % POOL) * E;
            if (bm->engine)
                model_route_topk(p, E, K, 1, ids, w);
            else
                trust_select(s, l, p, K, 1, ids, w);
            acc += w[0] + ids[K - 1];
        }
    }
    double dt = tm_now() - t0;
    sink += acc;
    return 1e9 * dt / ((double)tokens * L);
}

int main(int argc, char **argv)
{
    int repeats = argc > 1 ? atoi(argv[1]) : 21;
    int tokens = argc > 2 ? atoi(argv[2]) : 2000;
    if (repeats < 1 || tokens < 1) {
        fprintf(stderr, "usage: bench_select [REPEATS] [TOKENS]\n");
        return 2;
    }
    float *pool = probs_pool(7);

    trust_table tab;
    trust_table_init(&tab, L, E, "context_0");
    uint64_t rng = 11;
    for (int i = 0; i < L * E; i++) {
        tab.trust[i] = (float)(0.05 + 0.45 * trust_rng_uniform(&rng));
        tab.evidence[i] = (int32_t)trust_rng_below(&rng, 10);
    }
    trust_metrics met;
    trust_metrics_init(&met, L, E);

    const bench_mode modes[] = {
        {"engine", 1, TRUST_SELECT_ROUTER, 0.0f},
        {"router", 0, TRUST_SELECT_ROUTER, 0.0f},
        {"blend", 0, TRUST_SELECT_BLEND, 0.0f},
        {"trust-first", 0, TRUST_SELECT_TRUST_FIRST, 0.0f},
        {"trust-first-e0.1", 0, TRUST_SELECT_TRUST_FIRST, 0.1f},
    };
    enum { NM = sizeof modes / sizeof modes[0] };
    trust_selector sel[NM];
    for (int i = 0; i < NM; i++) {
        trust_select_params p = trust_select_default_params();
        p.mode = modes[i].mode;
        p.n_layers = L;
        p.n_experts = E;
        p.top_k = K;
        p.alpha = 0.9f;
        p.min_evidence = 2;
        p.epsilon = modes[i].epsilon;
        tm_err err = {{0}};
        if (trust_selector_init(&sel[i], &p, &err) || trust_selector_set_table(&sel[i], &tab, &err)) {
            fprintf(stderr, "bench_select: %s\n", err.msg);
            return 1;
        }
        trust_selector_set_metrics(&sel[i], &met);
    }

    /* warm up, then interleave the modes within every repeat so that load
     * from other processes falls on all of them alike */
    double *ns = tm_malloc((size_t)NM * repeats * sizeof *ns);
    for (int i = 0; i < NM; i++) run_once(&modes[i], &sel[i], pool, tokens / 4 + 1);
    for (int r = 0; r < repeats; r++)
        for (int i = 0; i < NM; i++) ns[(size_t)i * repeats + r] = run_once(&modes[i], &sel[i], pool, tokens);

    printf("# bench_select: E=%d k=%d layers=%d, %d repeats of %d tokens (%d calls each)\n", E, K, L, repeats,
           tokens, tokens * L);
    printf("%-18s %12s %12s %14s\n", "mode", "ns/call_med", "ns/call_min", "us/token_med");
    for (int i = 0; i < NM; i++) {
        double *v = ns + (size_t)i * repeats;
        qsort(v, (size_t)repeats, sizeof *v, cmp_double);
        double med = v[repeats / 2];
        printf("%-18s %12.1f %12.1f %14.3f\n", modes[i].name, med, v[0], med * L / 1e3);
    }
    int64_t driven = 0, sels = 0;
    for (int l = 0; l < L; l++) driven += met.trust_driven[l], sels += met.selections[l];
    fprintf(stderr, "bench_select: %lld counted selections, %lld trust-driven\n", (long long)sels,
            (long long)driven);

    for (int i = 0; i < NM; i++) trust_selector_free(&sel[i]);
    trust_metrics_free(&met);
    trust_table_free(&tab);
    free(ns);
    free(pool);
    return 0;
}
