/* trust_select.c: the per-token expert selector (modes and rules in
 * trust_select.h). */
#include "trust_select.h"

#include <stdlib.h>
#include <string.h>

#include "trust_atp.h"
#include "trust_rng.h"

/* ---- modes and params ---------------------------------------------------- */

static const char *const mode_names[] = {"router", "blend", "trust-first"};

const char *trust_select_mode_name(trust_select_mode m)
{
    return (unsigned)m < TM_ARRAY_LEN(mode_names) ? mode_names[m] : "?";
}

tm_status trust_select_mode_parse(const char *s, trust_select_mode *out, tm_err *err)
{
    for (size_t i = 0; i < TM_ARRAY_LEN(mode_names); i++) {
        if (strcmp(s, mode_names[i]) == 0) {
            *out = (trust_select_mode)i;
            return TM_OK;
        }
    }
    return tm_errf(err, TM_EINPUT, "--select: unknown mode \"%s\" (router, blend, trust-first)", s);
}

trust_select_params trust_select_default_params(void)
{
    trust_select_params p = {
        .mode = TRUST_SELECT_ROUTER,
        .n_layers = 48,
        .n_experts = 128,
        .top_k = 8,
        .alpha = 0.95f, /* bench/RESULTS.md "Trust selection": within 1% of router perplexity */
        .min_evidence = 2,
        .min_trusted = 2,
        .trust_floor = 0.3f,
        .epsilon = 0.0f,
        .seed = 42,
    };
    return p;
}

/* ---- top-k --------------------------------------------------------------- */

/* Insert e into ids[0..*m) (kept best first, at most k) if it beats the
 * last; e rises between calls, so a strict > keeps an equal lower id ahead. */
static inline void topk_push(const float *key, int k, int32_t *ids, int *m, int e)
{
    float v = key[e];
    if (*m == k && !(v > key[ids[k - 1]])) return;
    int i = *m < k ? (*m)++ : k - 1;
    while (i > 0 && v > key[ids[i - 1]]) {
        ids[i] = ids[i - 1];
        i--;
    }
    ids[i] = e;
}

int trust_topk(const float *key, const uint8_t *ok, int n, int k, int32_t *ids)
{
    int m = 0, e = 0;
    if (ok) {
        for (; e < n; e++)
            if (ok[e]) topk_push(key, k, ids, &m, e);
        return m;
    }
    for (; e < n && m < k; e++) topk_push(key, k, ids, &m, e);
    /* Once k are held, most blocks of 8 hold nothing above the k-th best:
     * one branch-free test per block skips them. */
    for (; e + 8 <= n; e += 8) {
        const float t = key[ids[k - 1]], *b = key + e;
        int any = (b[0] > t) | (b[1] > t) | (b[2] > t) | (b[3] > t) | (b[4] > t) | (b[5] > t) |
                  (b[6] > t) | (b[7] > t);
        if (!any) continue;
        for (int j = 0; j < 8; j++) topk_push(key, k, ids, &m, e + j);
    }
    for (; e < n; e++) topk_push(key, k, ids, &m, e);
    return m;
}

static const float *ref_key;

static int cmp_ref(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (ref_key[x] != ref_key[y]) return ref_key[x] > ref_key[y] ? -1 : 1;
    return (x > y) - (x < y);
}

int trust_topk_ref(const float *key, const uint8_t *ok, int n, int k, int32_t *ids)
{
    int32_t *all = tm_malloc((size_t)n * sizeof *all);
    int m = 0;
    for (int e = 0; e < n; e++)
        if (!ok || ok[e]) all[m++] = e;
    ref_key = key;
    qsort(all, (size_t)m, sizeof *all, cmp_ref);
    int got = TM_MIN(m, k);
    memcpy(ids, all, (size_t)got * sizeof *ids);
    free(all);
    return got;
}

/* ---- setup ----------------------------------------------------------------- */

tm_status trust_selector_init(trust_selector *s, const trust_select_params *p, tm_err *err)
{
    memset(s, 0, sizeof *s);
    if (p->n_layers <= 0 || p->n_experts <= 0)
        return tm_errf(err, TM_EINPUT, "trust selector: %d layers, %d experts: must be positive",
                       p->n_layers, p->n_experts);
    if (p->top_k < 1 || p->top_k > p->n_experts)
        return tm_errf(err, TM_EINPUT, "trust selector: top-k %d out of range (1..%d experts)",
                       p->top_k, p->n_experts);
    if (!(p->alpha >= 0 && p->alpha <= 1))
        return tm_errf(err, TM_EINPUT, "--alpha %g: must lie in [0, 1]", (double)p->alpha);
    if (!(p->epsilon >= 0 && p->epsilon <= 1))
        return tm_errf(err, TM_EINPUT, "--epsilon %g: must lie in [0, 1]", (double)p->epsilon);
    if (p->min_evidence < 0)
        return tm_errf(err, TM_EINPUT, "--min-evidence %d: must be >= 0", p->min_evidence);
    if ((unsigned)p->mode > TRUST_SELECT_TRUST_FIRST)
        return tm_errf(err, TM_EINPUT, "trust selector: unknown mode %d", (int)p->mode);
    s->p = *p;
    size_t L = (size_t)p->n_layers, E = (size_t)p->n_experts;
    s->mask = tm_malloc(L * E);
    s->allowed = tm_malloc(L * E);
    s->ok = tm_malloc(L * E);
    s->all_ok = tm_malloc(L);
    s->util = tm_calloc(L * E, sizeof *s->util);
    s->cost = tm_malloc(L * E * sizeof *s->cost);
    s->score = tm_malloc(E * sizeof *s->score);
    s->cand = tm_malloc(E * sizeof *s->cand);
    s->router = tm_malloc(E * sizeof *s->router);
    s->raw = tm_malloc(E * sizeof *s->raw);
    s->carry = tm_malloc(E * sizeof *s->carry);
    memset(s->mask, 1, L * E);
    memset(s->allowed, 1, L * E);
    memset(s->ok, 1, L * E);
    memset(s->all_ok, 1, L);
    s->budget = -1;
    s->rng = p->seed;
    trust_selector_refresh(s);
    return TM_OK;
}

void trust_selector_free(trust_selector *s)
{
    free(s->mask);
    free(s->allowed);
    free(s->ok);
    free(s->all_ok);
    free(s->util);
    free(s->cost);
    free(s->score);
    free(s->cand);
    free(s->router);
    free(s->raw);
    free(s->carry);
    memset(s, 0, sizeof *s);
}

static float trust_at(const trust_selector *s, size_t i)
{
    return s->table ? s->table->trust[i] : (float)TRUST_PRIOR;
}

void trust_selector_refresh(trust_selector *s)
{
    size_t n = (size_t)s->p.n_layers * s->p.n_experts;
    for (size_t i = 0; i < n; i++) s->cost[i] = trust_atp_cost(s->util[i], trust_at(s, i));
}

tm_status trust_selector_set_table(trust_selector *s, const trust_table *t, tm_err *err)
{
    if (t && (t->n_layers != s->p.n_layers || t->n_experts != s->p.n_experts))
        return tm_errf(err, TM_EINPUT,
                       "trust table \"%s\": %d layers x %d experts, the model has %d x %d",
                       t->context, t->n_layers, t->n_experts, s->p.n_layers, s->p.n_experts);
    s->table = t;
    trust_selector_refresh(s);
    return TM_OK;
}

/* ok = mask & allowed, and every layer must keep top_k usable experts. */
static tm_status combine_ok(trust_selector *s, const char *what, tm_err *err)
{
    int L = s->p.n_layers, E = s->p.n_experts;
    for (int l = 0; l < L; l++) {
        int n = 0;
        for (int e = 0; e < E; e++) {
            size_t i = (size_t)l * E + e;
            s->ok[i] = s->mask[i] && s->allowed[i];
            n += s->ok[i];
        }
        s->all_ok[l] = n == E;
        if (n < s->p.top_k)
            return tm_errf(err, TM_EINPUT,
                           "%s: layer %d: only %d of %d experts are available and allowed, "
                           "top-k needs %d",
                           what, l, n, E, s->p.top_k);
    }
    return TM_OK;
}

tm_status trust_selector_set_mask(trust_selector *s, const uint8_t *mask, tm_err *err)
{
    size_t n = (size_t)s->p.n_layers * s->p.n_experts;
    for (size_t i = 0; i < n; i++) s->mask[i] = mask ? mask[i] != 0 : 1;
    return combine_ok(s, "availability mask", err);
}

tm_status trust_selector_set_policy(trust_selector *s, const trust_policy *pol,
                                    const char *requester, tm_err *err)
{
    size_t n = (size_t)s->p.n_layers * s->p.n_experts;
    if (pol) {
        if (pol->n_layers != s->p.n_layers || pol->n_experts != s->p.n_experts)
            return tm_errf(err, TM_EINPUT, "policy: parsed for %d layers x %d experts, model has %d x %d",
                           pol->n_layers, pol->n_experts, s->p.n_layers, s->p.n_experts);
        trust_policy_mask(pol, requester, s->allowed);
    } else {
        memset(s->allowed, 1, n);
    }
    char what[160];
    snprintf(what, sizeof what, "policy for requester \"%s\"", requester ? requester : "");
    return combine_ok(s, what, err);
}

void trust_selector_set_substitutes(trust_selector *s, const int32_t *rank, const float *gain)
{
    TM_ASSERT(!rank == !gain);
    s->subst = rank;
    s->gain = gain;
}

void trust_selector_set_utilization(trust_selector *s, const float *util)
{
    size_t n = (size_t)s->p.n_layers * s->p.n_experts;
    for (size_t i = 0; i < n; i++) s->util[i] = util ? util[i] : 0.0f;
    trust_selector_refresh(s);
}

void trust_selector_set_budget(trust_selector *s, int64_t budget)
{
    s->budget = budget;
    s->spent = 0;
    s->unrewarded = 0;
}

int64_t trust_selector_budget_left(const trust_selector *s)
{
    return s->budget < 0 ? -1 : s->budget - s->spent;
}

int32_t trust_selector_reward(trust_selector *s, double q)
{
    int32_t r = trust_atp_reward(s->unrewarded, q);
    s->unrewarded = 0;
    if (s->budget >= 0) s->budget += r;
    return r;
}

void trust_selector_set_metrics(trust_selector *s, trust_metrics *m)
{
    TM_ASSERT(!m || (m->n_layers == s->p.n_layers && m->n_experts == s->p.n_experts));
    s->metrics = m;
}

/* ---- selection ------------------------------------------------------------- */

/* k distinct ok experts, uniformly, by a partial Fisher-Yates shuffle. */
static void explore(trust_selector *s, const uint8_t *ok, int k, int32_t *ids)
{
    int n = 0, E = s->p.n_experts;
    for (int e = 0; e < E; e++)
        if (ok[e]) s->cand[n++] = e;
    for (int i = 0; i < k; i++) {
        int j = i + (int)trust_rng_below(&s->rng, (uint32_t)(n - i));
        int32_t t = s->cand[i];
        s->cand[i] = s->cand[j];
        s->cand[j] = t;
        ids[i] = s->cand[i];
    }
}

static int same_set(const int32_t *a, const int32_t *b, int k)
{
    for (int i = 0; i < k; i++) {
        int found = 0;
        for (int j = 0; j < k && !found; j++) found = a[i] == b[j];
        if (!found) return 0;
    }
    return 1;
}

/* Charge the budget for ids[k]; when it cannot pay, replace ids by the k
 * cheapest ok experts (ties: higher p) and charge what is left. */
static void charge(trust_selector *s, int layer, const float *probs, const uint8_t *ok, int k,
                   int32_t *ids)
{
    const int32_t *cost = s->cost + (size_t)layer * s->p.n_experts;
    int64_t left = s->budget - s->spent, sum = 0;
    for (int i = 0; i < k; i++) sum += cost[ids[i]];
    if (sum > left) {
        /* p in [0, 1] scaled by 0.5 only breaks ties between equal integer
         * costs; it can never outweigh a cost difference of 1. */
        for (int e = 0; e < s->p.n_experts; e++) s->score[e] = -(float)cost[e] + 0.5f * probs[e];
        trust_topk(s->score, ok, s->p.n_experts, k, ids);
        sum = 0;
        for (int i = 0; i < k; i++) sum += cost[ids[i]];
        if (sum > left) sum = left > 0 ? left : 0;
        s->info.budget_fallback = 1;
    }
    s->spent += sum;
    s->unrewarded += sum;
    s->info.cost = (int32_t)sum;
}

static int holds(const int32_t *ids, int n, int e)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == e) return 1;
    return 0;
}

/* ROUTER under a mask with a learned table: the available experts of the
 * unmasked top-k (s->raw) keep their places; each unavailable one e is
 * replaced by its best available substitute s not yet chosen, which
 * carries p(e) times the fitted gain c(e, s) (else by the router's next
 * best with its own p).  ids and s->carry end up ordered by carried
 * weight, best first.  Returns the p-sum of the unmasked top-k. */
static float learned_substitutes(trust_selector *s, int layer, const float *probs, const uint8_t *ok, int k,
                                 int32_t *ids)
{
    const int E = s->p.n_experts;
    float *carry = s->carry;
    int n = 0;
    for (int i = 0; i < k; i++)
        if (ok[s->raw[i]]) {
            ids[n] = s->raw[i];
            carry[n++] = probs[s->raw[i]];
        }
    for (int i = 0; i < k; i++) {
        int e = s->raw[i], pick = -1;
        if (ok[e]) continue;
        const size_t row = ((size_t)layer * E + e) * E;
        const int32_t *r = s->subst + row;
        float c = 0;
        for (int j = 0; j < E - 1 && r[j] >= 0 && pick < 0; j++)
            if (ok[r[j]] && !holds(ids, n, r[j])) pick = r[j];
        if (pick >= 0) {
            c = probs[e] * s->gain[row + pick];
        } else {
            /* the masked router top-k holds k ok experts, so one is free */
            for (int j = 0; j < k && pick < 0; j++)
                if (!holds(ids, n, s->router[j])) pick = s->router[j];
            TM_ASSERT(pick >= 0);
            c = probs[pick];
        }
        ids[n] = pick;
        carry[n++] = c;
    }
    float sum = 0.0f;
    for (int i = 0; i < k; i++) sum += probs[s->raw[i]];
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && carry[j] > carry[j - 1]; j--) {
            float c = carry[j];
            carry[j] = carry[j - 1];
            carry[j - 1] = c;
            int32_t t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    return sum;
}

int trust_select(trust_selector *s, int layer, const float *probs, int k, int norm_topk,
                 int32_t *ids, float *w)
{
    const int E = s->p.n_experts;
    TM_ASSERT(layer >= 0 && layer < s->p.n_layers);
    TM_ASSERT(k >= 1 && k <= s->p.top_k);
    const size_t row = (size_t)layer * E;
    const uint8_t *ok = s->ok + row;
    memset(&s->info, 0, sizeof s->info);

    int got = trust_topk(probs, s->all_ok[layer] ? NULL : ok, E, k, s->router);
    TM_ASSERT(got == k);
    if (!s->all_ok[layer]) {
        trust_topk(probs, NULL, E, k, s->raw);
        for (int i = 0; i < k; i++) s->info.masked += !ok[s->raw[i]];
    }

    int carried = s->p.mode == TRUST_SELECT_ROUTER && s->subst && !s->all_ok[layer] && s->budget < 0;
    float raw_sum = 0.0f;
    switch (s->p.mode) {
    case TRUST_SELECT_ROUTER:
        if (carried) raw_sum = learned_substitutes(s, layer, probs, ok, k, ids);
        else memcpy(ids, s->router, (size_t)k * sizeof *ids);
        break;
    case TRUST_SELECT_BLEND: {
        const float a = s->p.alpha;
        for (int e = 0; e < E; e++) s->score[e] = a * probs[e] + (1.0f - a) * trust_at(s, row + e);
        trust_topk(s->score, ok, E, k, ids);
        break;
    }
    case TRUST_SELECT_TRUST_FIRST: {
        if (s->p.epsilon > 0 && trust_rng_uniform(&s->rng) < s->p.epsilon) {
            explore(s, ok, k, ids);
            s->info.explored = 1;
            break;
        }
        int n_trusted = 0;
        if (s->table) {
            const float *t = s->table->trust + row;
            const int32_t *ev = s->table->evidence + row;
            /* Trusted experts score 2 + trust, above every probability, so
             * one top-k puts them first and lets the router fill the rest. */
            for (int e = 0; e < E; e++) {
                int trusted = ok[e] && ev[e] >= s->p.min_evidence && t[e] >= s->p.trust_floor;
                n_trusted += trusted;
                s->score[e] = trusted ? 2.0f + t[e] : probs[e];
            }
        }
        if (n_trusted >= s->p.min_trusted && n_trusted > 0) {
            trust_topk(s->score, ok, E, k, ids);
            s->info.trust_driven = 1;
        } else {
            memcpy(ids, s->router, (size_t)k * sizeof *ids);
        }
        break;
    }
    }
    s->info.changed = s->p.mode != TRUST_SELECT_ROUTER && !same_set(ids, s->router, k);
    if (s->budget >= 0) charge(s, layer, probs, ok, k, ids);

    if (carried) {
        /* normalised as the unmasked top-k would be, so a perfect stand-in
         * reproduces the unmasked output */
        for (int i = 0; i < k; i++)
            w[i] = !norm_topk ? s->carry[i] : raw_sum > 0.0f ? s->carry[i] / raw_sum : 1.0f / (float)k;
    } else if (s->p.mode == TRUST_SELECT_ROUTER && !norm_topk) {
        for (int i = 0; i < k; i++) w[i] = probs[ids[i]];
    } else {
        float sum = 0.0f;
        for (int i = 0; i < k; i++) sum += probs[ids[i]];
        for (int i = 0; i < k; i++) w[i] = sum > 0.0f ? probs[ids[i]] / sum : 1.0f / (float)k;
    }

    if (s->metrics) {
        trust_metrics *m = s->metrics;
        trust_metrics_add(m, layer, ids, k);
        m->changed[layer] += s->info.changed;
        m->masked[layer] += s->info.masked;
        m->budget_fallbacks[layer] += s->info.budget_fallback;
        m->explored[layer] += s->info.explored;
        m->trust_driven[layer] += s->info.trust_driven;
    }
    return 0;
}

/* ---- engine adapters --------------------------------------------------------- */

int trust_select_hook(void *selector, int layer, int token, const float *probs, int k, int norm_topk,
                      int32_t *ids, float *w)
{
    (void)token;
    return trust_select(selector, layer, probs, k, norm_topk, ids, w);
}

int trust_select_batch_hook(void *hook, int layer, int token, const float *probs, int k,
                            int norm_topk, int32_t *ids, float *w)
{
    const trust_batch_hook *h = hook;
    return trust_select(h->by_seq[h->tok_seq[token]], layer, probs, k, norm_topk, ids, w);
}
