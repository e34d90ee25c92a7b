/* sampler.c: greedy, temperature, top-k, top-p and min-p sampling,
 * penalties, stop strings, generation_config.json. */
#include "sampler.h"

#include "input.h"

#include <cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

sampler_params sampler_default_params(void)
{
    sampler_params p = {.temperature = 0.8f,
                        .top_k = 40,
                        .top_p = 0.95f,
                        .min_p = 0.0f,
                        .repeat_penalty = 1.0f,
                        .penalty_last_n = 64,
                        .seed = SAMPLER_SEED_RANDOM};
    return p;
}

/* ---- generation_config.json ---------------------------------------------------- */

static tm_status gc_number(const cJSON *doc, const char *key, double lo, double hi, const char *path, double *out,
                           int *found, tm_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, key);
    *found = 0;
    if (!v || cJSON_IsNull(v)) return TM_OK;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi))
        return tm_errf(err, TM_EINPUT, "%s: \"%s\" is not a number in %g..%g", path, key, lo, hi);
    *out = v->valuedouble;
    *found = 1;
    return TM_OK;
}

tm_status sampler_read_generation_config(const char *dir, sampler_params *p, int *max_new_tokens, tm_err *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (access(path, F_OK) != 0) return TM_OK;
    char *text = NULL;
    tm_status st = tm_read_file(path, &text, NULL, err);
    if (st != TM_OK) return st;
    cJSON *doc = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return tm_errf(err, TM_EINPUT, "%s: not a JSON object", path);
    }
    double x;
    int found;
    if ((st = gc_number(doc, "temperature", 0, 100, path, &x, &found, err)) == TM_OK && found) p->temperature = (float)x;
    if (st == TM_OK && (st = gc_number(doc, "top_k", 0, 1 << 24, path, &x, &found, err)) == TM_OK && found)
        p->top_k = (int)x;
    if (st == TM_OK && (st = gc_number(doc, "top_p", 0, 1, path, &x, &found, err)) == TM_OK && found) p->top_p = (float)x;
    if (st == TM_OK && (st = gc_number(doc, "min_p", 0, 1, path, &x, &found, err)) == TM_OK && found) p->min_p = (float)x;
    if (st == TM_OK && (st = gc_number(doc, "repetition_penalty", 0, 100, path, &x, &found, err)) == TM_OK && found)
        p->repeat_penalty = (float)x;
    if (st == TM_OK && (st = gc_number(doc, "max_new_tokens", 0, 1 << 24, path, &x, &found, err)) == TM_OK && found)
        *max_new_tokens = (int)x;
    cJSON_Delete(doc);
    return st;
}

/* ---- sampler ---------------------------------------------------------------------- */

static uint64_t random_seed(void)
{
    uint64_t seed = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, &seed, sizeof seed) != (ssize_t)sizeof seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
    }
    if (fd >= 0) close(fd);
    /* a seed a user can type back in with -s (0..2^31-1) */
    return seed & 0x7fffffffull;
}

void sampler_reset(sampler *s, const sampler_params *p)
{
    s->p = *p;
    if (s->p.seed == SAMPLER_SEED_RANDOM) s->p.seed = random_seed();
    s->state = s->p.seed * 0x9E3779B97F4A7C15ull + 1;
}

void sampler_init(sampler *s, const sampler_params *p, int vocab)
{
    sampler_reset(s, p);
    s->vocab = vocab;
    s->idx = tm_malloc(sizeof(int) * (size_t)vocab);
    s->prob = tm_malloc(sizeof(float) * (size_t)vocab);
    s->count = tm_calloc((size_t)vocab, sizeof(int));
}

void sampler_free(sampler *s)
{
    free(s->idx);
    free(s->prob);
    free(s->count);
}

void sampler_apply_penalties(sampler *s, float *logits, const int32_t *hist, int n)
{
    const sampler_params *p = &s->p;
    int rep = p->repeat_penalty > 0.f && p->repeat_penalty != 1.f;
    if (!rep && p->presence_penalty == 0.f && p->frequency_penalty == 0.f) return;
    int from = p->penalty_last_n < 0 || p->penalty_last_n > n ? 0 : n - p->penalty_last_n;
    for (int i = from; i < n; i++)
        if (hist[i] >= 0 && hist[i] < s->vocab) s->count[hist[i]]++;
    for (int i = from; i < n; i++) {
        int t = hist[i];
        if (t < 0 || t >= s->vocab || !s->count[t]) continue; /* out of range, or done */
        float l = logits[t];
        if (rep) l = l > 0.f ? l / p->repeat_penalty : l * p->repeat_penalty;
        logits[t] = l - p->presence_penalty - p->frequency_penalty * (float)s->count[t];
        s->count[t] = 0;
    }
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
    /* min-p: prob[0] is the top token's, exp(0) = 1 before normalising */
    if (s->p.min_p > 0.f) {
        int keep = 1;
        while (keep < n && s->prob[keep] >= s->p.min_p) keep++;
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

/* ---- stop strings ------------------------------------------------------------------ */

long sampler_stop_find(const sampler_params *p, const char *text, size_t len)
{
    long best = -1;
    for (int k = 0; k < p->n_stop; k++) {
        size_t m = strlen(p->stop[k]);
        if (!m || m > len) continue;
        for (size_t i = 0; i + m <= len && (best < 0 || (long)i < best); i++)
            if (!memcmp(text + i, p->stop[k], m)) {
                best = (long)i;
                break;
            }
    }
    return best;
}

size_t sampler_stop_holdback(const sampler_params *p, const char *text, size_t len)
{
    size_t hold = 0;
    for (int k = 0; k < p->n_stop; k++) {
        size_t m = strlen(p->stop[k]);
        for (size_t t = m ? m - 1 : 0; t > hold; t--)
            if (t <= len && !memcmp(text + len - t, p->stop[k], t)) {
                hold = t;
                break;
            }
    }
    return hold;
}

long sampler_stop_cut(const sampler_params *p, const char *text, size_t before, size_t len)
{
    if (!p->n_stop || len <= before) return -1;
    size_t longest = 0;
    for (int k = 0; k < p->n_stop; k++) longest = TM_MAX(longest, strlen(p->stop[k]));
    size_t from = before > longest ? before - longest + 1 : 0;
    long at = sampler_stop_find(p, text + from, len - from);
    return at < 0 ? -1 : (long)from + at;
}
