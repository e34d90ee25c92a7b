/* trust_context.c: k-means contexts (definitions in trust_context.h). */
#include "trust_context.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trust_rng.h"

trust_kmeans_params trust_kmeans_default_params(void)
{
    trust_kmeans_params p = {.k = 8, .max_iter = 100, .seed = 42};
    return p;
}

void trust_contexts_init(trust_contexts *c, int k, int dim)
{
    TM_ASSERT(k > 0 && dim > 0);
    c->k = k;
    c->dim = dim;
    c->centroids = tm_calloc((size_t)k * dim, sizeof *c->centroids);
    c->n_samples = tm_calloc((size_t)k, sizeof *c->n_samples);
}

void trust_contexts_free(trust_contexts *c)
{
    free(c->centroids);
    free(c->n_samples);
    memset(c, 0, sizeof *c);
}

void trust_context_name(int c, char *buf, size_t size)
{
    snprintf(buf, size, "context_%d", c);
}

void trust_context_mean(const float *h, int T, int dim, float *mean)
{
    for (int j = 0; j < dim; j++) mean[j] = 0.0f;
    if (T <= 0) return;
    /* Accumulate in double: prompts can be thousands of rows. */
    for (int j = 0; j < dim; j++) {
        double acc = 0;
        for (int t = 0; t < T; t++) acc += h[(size_t)t * dim + j];
        mean[j] = (float)(acc / T);
    }
}

static double dist2(const float *a, const float *b, int dim)
{
    double s = 0;
    for (int j = 0; j < dim; j++) {
        double d = (double)a[j] - (double)b[j];
        s += d * d;
    }
    return s;
}

/* out = x / ||x||; returns 0 for an all-zero (or non-finite) x. */
static int normalise(const float *x, int dim, float *out)
{
    double s = 0;
    for (int j = 0; j < dim; j++) s += (double)x[j] * x[j];
    if (!(s > 0) || !isfinite(s)) return 0;
    double inv = 1.0 / sqrt(s);
    for (int j = 0; j < dim; j++) out[j] = (float)(x[j] * inv);
    return 1;
}

static int nearest(const trust_contexts *c, const float *xn, double *d2)
{
    int best = 0;
    double bd = DBL_MAX;
    for (int j = 0; j < c->k; j++) {
        double d = dist2(xn, c->centroids + (size_t)j * c->dim, c->dim);
        if (d < bd) {
            bd = d;
            best = j;
        }
    }
    if (d2) *d2 = bd;
    return best;
}

tm_status trust_contexts_fit(trust_contexts *c, const float *x, int n, int dim,
                             const trust_kmeans_params *p, int32_t *assign_out, tm_err *err)
{
    tm_status st = TM_OK;
    const int k = p->k;
    float *xn = NULL;
    double *d2 = NULL, *sum = NULL;
    int32_t *assign = NULL;
    memset(c, 0, sizeof *c);
    if (k < 1 || dim < 1 || n < k)
        return tm_errf(err, TM_EINPUT, "fit-contexts: k=%d contexts need at least k samples, got %d", k, n);
    xn = tm_malloc((size_t)n * dim * sizeof *xn);
    d2 = tm_malloc((size_t)n * sizeof *d2);
    sum = tm_malloc((size_t)k * dim * sizeof *sum);
    assign = tm_malloc((size_t)n * sizeof *assign);
    for (int i = 0; i < n; i++) {
        if (!normalise(x + (size_t)i * dim, dim, xn + (size_t)i * dim)) {
            st = tm_errf(err, TM_EINPUT, "fit-contexts: sample %d is all zeros or not finite", i);
            goto done;
        }
    }
    trust_contexts_init(c, k, dim);
    uint64_t rng = p->seed;

    /* k-means++: first centre uniform, each next one drawn with probability
     * proportional to the squared distance to the nearest centre so far. */
    int first = (int)trust_rng_below(&rng, (uint32_t)n);
    memcpy(c->centroids, xn + (size_t)first * dim, (size_t)dim * sizeof(float));
    for (int i = 0; i < n; i++) d2[i] = dist2(xn + (size_t)i * dim, c->centroids, dim);
    for (int j = 1; j < k; j++) {
        double total = 0;
        for (int i = 0; i < n; i++) total += d2[i];
        int pick = n - 1;
        if (total > 0) {
            double r = trust_rng_uniform(&rng) * total, acc = 0;
            for (int i = 0; i < n; i++) {
                acc += d2[i];
                if (acc > r) {
                    pick = i;
                    break;
                }
            }
        } else {
            pick = (int)trust_rng_below(&rng, (uint32_t)n); /* all points equal */
        }
        float *cj = c->centroids + (size_t)j * dim;
        memcpy(cj, xn + (size_t)pick * dim, (size_t)dim * sizeof(float));
        for (int i = 0; i < n; i++) {
            double d = dist2(xn + (size_t)i * dim, cj, dim);
            if (d < d2[i]) d2[i] = d;
        }
    }

    /* Lloyd iterations until no assignment changes. */
    for (int i = 0; i < n; i++) assign[i] = -1;
    for (int it = 0; it < p->max_iter; it++) {
        int moved = 0;
        for (int i = 0; i < n; i++) {
            int a = nearest(c, xn + (size_t)i * dim, &d2[i]);
            moved += a != assign[i];
            assign[i] = a;
        }
        if (!moved) break;
        memset(sum, 0, (size_t)k * dim * sizeof *sum);
        memset(c->n_samples, 0, (size_t)k * sizeof *c->n_samples);
        for (int i = 0; i < n; i++) {
            double *sj = sum + (size_t)assign[i] * dim;
            const float *xi = xn + (size_t)i * dim;
            for (int q = 0; q < dim; q++) sj[q] += xi[q];
            c->n_samples[assign[i]]++;
        }
        for (int j = 0; j < k; j++) {
            float *cj = c->centroids + (size_t)j * dim;
            if (c->n_samples[j] == 0) {
                /* An empty cluster takes the point farthest from its centre. */
                int far = 0;
                for (int i = 1; i < n; i++)
                    if (d2[i] > d2[far]) far = i;
                memcpy(cj, xn + (size_t)far * dim, (size_t)dim * sizeof(float));
                d2[far] = 0;
                continue;
            }
            for (int q = 0; q < dim; q++) cj[q] = (float)(sum[(size_t)j * dim + q] / c->n_samples[j]);
        }
    }
    memset(c->n_samples, 0, (size_t)k * sizeof *c->n_samples);
    for (int i = 0; i < n; i++) {
        assign[i] = nearest(c, xn + (size_t)i * dim, NULL);
        c->n_samples[assign[i]]++;
    }
    if (assign_out) memcpy(assign_out, assign, (size_t)n * sizeof *assign);
done:
    if (st) trust_contexts_free(c);
    free(xn);
    free(d2);
    free(sum);
    free(assign);
    return st;
}

int trust_contexts_classify(const trust_contexts *c, const float *x, float *dist, float *conf)
{
    /* A stack buffer would bound dim; the classification runs once per
     * request, so one allocation here is acceptable. */
    float *xn = tm_malloc((size_t)c->dim * sizeof *xn);
    int best = -1;
    double d2 = 0;
    if (normalise(x, c->dim, xn)) best = nearest(c, xn, &d2);
    if (dist) *dist = best < 0 ? 0.0f : (float)sqrt(d2);
    if (conf) *conf = best < 0 ? 0.0f : (float)exp(-d2);
    free(xn);
    return best;
}
