/* sampler.c: greedy, temperature, top-k and top-p sampling. */
#include "sampler.h"

#include "common.h"

#include <math.h>
#include <stdlib.h>

sampler_params sampler_default_params(void)
{
    sampler_params p = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 42};
    return p;
}

void sampler_reset(sampler *s, const sampler_params *p)
{
    s->p = *p;
    s->state = p->seed * 0x9E3779B97F4A7C15ull + 1;
}

void sampler_init(sampler *s, const sampler_params *p, int vocab)
{
    sampler_reset(s, p);
    s->vocab = vocab;
    s->idx = tm_malloc(sizeof(int) * (size_t)vocab);
    s->prob = tm_malloc(sizeof(float) * (size_t)vocab);
}

void sampler_free(sampler *s)
{
    free(s->idx);
    free(s->prob);
}

static double next_uniform(sampler *s)
{
    /* xorshift64*: enough for sampling, fully determined by the seed */
    s->state ^= s->state >> 12;
    s->state ^= s->state << 25;
    s->state ^= s->state >> 27;
    return (double)((s->state * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

int sampler_argmax(const float *logits, int n)
{
    /* the best value in a register: comparing against logits[best] makes
     * each step wait for a load (0.3 ms over a 152k vocabulary) */
    int best = 0;
    float bv = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > bv) bv = logits[i], best = i;
    return best;
}

static const float *cmp_base;
static int cmp_desc(const void *a, const void *b)
{
    float x = cmp_base[*(const int *)a], y = cmp_base[*(const int *)b];
    if (x != y) return x > y ? -1 : 1;
    return *(const int *)a - *(const int *)b;
}

/* "a ranks below b": smaller logit, or equal logit and larger id. */
static int below(const float *l, int a, int b) { return l[a] < l[b] || (l[a] == l[b] && a > b); }

static void sift_down(int *h, int n, int i, const float *l)
{
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && below(l, h[c + 1], h[c])) c++;
        if (!below(l, h[c], h[i])) return;
        int t = h[c];
        h[c] = h[i];
        h[i] = t;
        i = c;
    }
}

/* idx[0..n) = the n largest logits, sorted descending: a min-heap of size n
 * over the vocabulary, O(V log n) instead of sorting all V. */
static void top_n(const float *l, int V, int n, int *idx)
{
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = n / 2 - 1; i >= 0; i--) sift_down(idx, n, i, l);
    for (int v = n; v < V; v++)
        if (below(l, idx[0], v)) {
            idx[0] = v;
            sift_down(idx, n, 0, l);
        }
    cmp_base = l;
    qsort(idx, (size_t)n, sizeof(int), cmp_desc);
}

int sampler_sample(sampler *s, const float *logits)
{
    int V = s->vocab;
    if (s->p.temperature <= 0.f) return sampler_argmax(logits, V);
    /* candidates: top-k by logit (all when top_k is 0) */
    int n = s->p.top_k > 0 && s->p.top_k < V ? s->p.top_k : V;
    top_n(logits, V, n, s->idx);
    float mx = logits[s->idx[0]];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        s->prob[i] = expf((logits[s->idx[i]] - mx) / s->p.temperature);
        sum += s->prob[i];
    }
    /* top-p: the smallest prefix whose mass reaches p */
    if (s->p.top_p > 0.f && s->p.top_p < 1.f) {
        double acc = 0.0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            acc += s->prob[i] / sum;
            if (acc >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        sum = 0.0;
        for (int i = 0; i < n; i++) sum += s->prob[i];
    }
    double r = next_uniform(s) * sum, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[i];
        if (r < acc) return s->idx[i];
    }
    return s->idx[n - 1];
}
