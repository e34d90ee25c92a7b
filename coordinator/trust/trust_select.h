/* trust_select.h: per-token, per-layer choice of the k experts and their
 * mixing weights, from the router's float32 softmax and the learned trust.
 *
 * coordinator/trust/ owns trust-based selection: this selector, the
 * reputation (trust_rep) and its SQLite store (trust_db), contexts
 * (trust_context), window quality (trust_quality), diversity metrics
 * (trust_metrics), policy masks (trust_policy), the ATP budget (trust_atp),
 * and the per-run bundle that wires them to the engine (trust_run).  It calls
 * core/ and engine/ (the model, for contexts); the commands call it.
 *
 * Modes (score on which top-k is taken; ties go to the lower expert id):
 *   ROUTER       p(e): the model's own top-k, equal to torch.topk on
 *                distinct values.  Weights as HF: p renormalised over the
 *                chosen when norm_topk, else the raw p.
 *   BLEND        alpha * p(e) + (1 - alpha) * trust(layer, e, context).
 *                alpha is the router's share, applied to probabilities (not
 *                raw logits, whose scale swamps trust in [0, 1]).
 *   TRUST_FIRST  experts with evidence >= min_evidence and trust >=
 *                trust_floor in this context come first, by trust; the
 *                router's order fills the remaining slots.  When fewer than
 *                min_trusted such experts exist the router's choice stands.
 *                With probability epsilon a selection instead takes k
 *                available experts uniformly (seeded, deterministic).
 * Outside ROUTER the weights are always p renormalised over the chosen
 * experts (uniform 1/k if they all have p = 0), so the expert outputs are
 * mixed as a convex combination.
 *
 * Availability: mask (not placed / worker failed) and the authorization
 * policy give each (layer, expert) an "ok" flag.  A not-ok expert is never
 * chosen; the next best takes its place and info.masked counts how many of
 * the unrestricted router top-k were replaced.  In ROUTER mode a learned
 * substitution table (trust_selector_set_substitutes, fitted by `trust
 * train`) can choose the replacement instead: each unavailable expert e of
 * the unmasked top-k is replaced by the best-ranked available substitute
 * for e that is not already chosen, weighted p(e) times the fitted gain
 * c(e, s); the weights are normalised by the p-sum of the unmasked top-k,
 * so a perfect stand-in reproduces the unmasked output.  An expert with no
 * usable substitute falls back to the router's next best.  Without a
 * table, with every expert available, or under an ATP budget (which has
 * its own fallback), ROUTER is unchanged.
 *
 * ATP budget (optional, per request): each selection costs the sum of its
 * experts' trust_atp_cost(util of the hosting worker, trust).  When the
 * remaining budget cannot pay for the chosen experts, the k cheapest ok
 * experts are taken instead (ties: higher p), whatever is left of the
 * budget is charged, and info.budget_fallback is set.
 *
 * Nothing is allocated per call.  The engine's order of calls:
 *   once:        trust_selector_init(&s, &params, &err)
 *   per request: trust_selector_set_table(&s, &table_for_context)   (or NULL)
 *                trust_selector_set_policy(&s, &policy, requester, &err)
 *                trust_selector_set_mask(&s, avail, &err)    (when placement
 *                                                  or worker health changes)
 *                trust_selector_set_utilization(&s, util)     (optional)
 *                trust_selector_set_budget(&s, atp or -1)
 *   per token and layer, after the router softmax:
 *                trust_select(&s, layer, probs, k, norm_topk, ids, w)
 *                (s.info describes that call)
 *   per quality window (training): trust_selector_reward(&s, q)
 *   at the end:  trust_selector_free(&s)
 */
#ifndef TM_TRUST_SELECT_H
#define TM_TRUST_SELECT_H

#include <stdint.h>

#include "common.h"
#include "trust_metrics.h"
#include "trust_policy.h"
#include "trust_rep.h"

typedef enum {
    TRUST_SELECT_ROUTER = 0,
    TRUST_SELECT_BLEND,
    TRUST_SELECT_TRUST_FIRST,
} trust_select_mode;

/* "router" | "blend" | "trust-first" */
const char *trust_select_mode_name(trust_select_mode m);
tm_status trust_select_mode_parse(const char *s, trust_select_mode *out, tm_err *err);

typedef struct {
    trust_select_mode mode; /* default ROUTER                                  */
    int n_layers;           /* 48 for Qwen3-MoE                                */
    int n_experts;          /* 128                                             */
    int top_k;              /* largest k a call asks for (masks must leave it) */
    float alpha;            /* BLEND: router share in [0, 1]; default 0.5      */
    int min_evidence;       /* TRUST_FIRST: windows of evidence; default 2     */
    int min_trusted;        /* TRUST_FIRST: experts needed to act; default 2   */
    float trust_floor;      /* TRUST_FIRST: least trust to lead; default 0.3   */
    float epsilon;          /* TRUST_FIRST: exploration probability; default 0 */
    uint64_t seed;          /* exploration stream; default 42                  */
} trust_select_params;

trust_select_params trust_select_default_params(void);

/* What the last trust_select call did. */
typedef struct {
    int changed;         /* chosen set differs from the router's top-k under
                            the same mask (trust's doing, not the mask's)   */
    int masked;          /* router top-k experts replaced as unavailable     */
    int budget_fallback; /* 1: the budget could not pay, cheapest taken      */
    int explored;        /* 1: epsilon exploration                           */
    int trust_driven;    /* 1: TRUST_FIRST led with trusted experts          */
    int32_t cost;        /* ATP charged (0 without a budget)                 */
} trust_select_info;

typedef struct {
    trust_select_params p;
    const trust_table *table; /* current context's trust; NULL = prior    */
    uint8_t *mask;      /* [n_layers, n_experts] 1 = placed and healthy   */
    uint8_t *allowed;   /* [n_layers, n_experts] 1 = policy allows        */
    uint8_t *ok;        /* [n_layers, n_experts] mask & allowed           */
    uint8_t *all_ok;    /* [n_layers] 1 when every expert is ok           */
    float *util;        /* [n_layers, n_experts] hosting worker's load    */
    int32_t *cost;      /* [n_layers, n_experts] ATP cost                 */
    int64_t budget;     /* ATP granted to the request (+ refunds); <0 off */
    int64_t spent;      /* ATP charged since trust_selector_set_budget    */
    int64_t unrewarded; /* charged since the last trust_selector_reward   */
    uint64_t rng;       /* exploration state                              */
    trust_metrics *metrics; /* optional; every call is counted into it    */
    trust_select_info info;
    float *score;       /* [n_experts] scratch                            */
    int32_t *cand;      /* [n_experts] scratch                            */
    int32_t *router;    /* [n_experts] router's top-k under the mask      */
    int32_t *raw;       /* [n_experts] router's top-k without the mask    */
    const int32_t *subst; /* [n_layers, n_experts, n_experts] ranked
                             substitutes per expert, -1 ended; NULL: none */
    const float *gain;  /* [n_layers, n_experts, n_experts] f32 fitted gain */
    float *carry;       /* [n_experts] scratch: p carried by each slot    */
} trust_selector;

tm_status trust_selector_init(trust_selector *s, const trust_select_params *p, tm_err *err);
void trust_selector_free(trust_selector *s);

/* The trust table of the request's context (shape must match); NULL uses
 * the prior (0.5, no evidence), which makes BLEND a scaled ROUTER.  The
 * table is read, not copied: keep it alive while it is set.  Call
 * trust_selector_refresh after changing it in place. */
tm_status trust_selector_set_table(trust_selector *s, const trust_table *t, tm_err *err);
void trust_selector_refresh(trust_selector *s);

/* Ranked substitutes and their gains, [n_layers, n_experts, n_experts]
 * each (trust_db_load_substitutes), read not copied; NULL for both returns
 * to the router's next best. */
void trust_selector_set_substitutes(trust_selector *s, const int32_t *rank, const float *gain);

/* Availability mask [n_layers, n_experts] (1 = usable), NULL = all.  Fails,
 * naming the layer, if mask and policy leave fewer than top_k experts. */
tm_status trust_selector_set_mask(trust_selector *s, const uint8_t *mask, tm_err *err);

/* Authorization for `requester`; pol NULL allows everything. */
tm_status trust_selector_set_policy(trust_selector *s, const trust_policy *pol,
                                    const char *requester, tm_err *err);

/* Load in [0, 1] of the worker hosting each (layer, expert), for ATP
 * scarcity; NULL = 0 everywhere. */
void trust_selector_set_utilization(trust_selector *s, const float *util /*[L, E]*/);

/* Per-request ATP budget; budget < 0 turns charging off. */
void trust_selector_set_budget(trust_selector *s, int64_t budget);
/* ATP left (budget - spent), or -1 without a budget. */
int64_t trust_selector_budget_left(const trust_selector *s);
/* Refund for the ATP charged since the last call, per the quality q of
 * that window (trust_atp_reward); added to the budget and returned. */
int32_t trust_selector_reward(trust_selector *s, double q);

/* Count every selection into m (NULL stops counting). */
void trust_selector_set_metrics(trust_selector *s, trust_metrics *m);

/* Choose k experts at `layer` from probs[n_experts] (f32 router softmax).
 * ids[k]: chosen expert ids, best first; w[k] f32 mixing weights.
 * norm_topk: the config's norm_topk_prob (matters in ROUTER only).
 * Returns 0; 1 <= k <= top_k. */
int trust_select(trust_selector *s, int layer, const float *probs, int k, int norm_topk,
                 int32_t *ids, float *w);

/* Adapters to the engine's selection callback (tm_selector in model.h,
 * which passes the token's index within the forward call):
 *   one request, or all sequences in one context:
 *       tm_selector sel = {trust_select_hook, &selector};
 *   a batch whose sequences each have their own selector (context,
 *   requester, budget):
 *       trust_batch_hook h = {selectors, state.tok_seq};
 *       tm_selector sel = {trust_select_batch_hook, &h};
 * Both return trust_select's result. */
int trust_select_hook(void *selector, int layer, int token, const float *probs, int k, int norm_topk,
                      int32_t *ids, float *w);

typedef struct {
    trust_selector *const *by_seq; /* [n_seq] selector of each sequence         */
    const int *tok_seq;            /* [T] sequence of each token of the call    */
} trust_batch_hook;

int trust_select_batch_hook(void *hook, int layer, int token, const float *probs, int k,
                            int norm_topk, int32_t *ids, float *w);

/* Top-k of key[n] among ok experts (ok NULL = all), best first, ties to the
 * lower id, by one pass of insertion into k slots.  Returns how many were
 * found (< k only when fewer are ok).  key must be finite. */
int trust_topk(const float *key, const uint8_t *ok, int n, int k, int32_t *ids);
/* The naive reference: a full sort of (key desc, id asc). */
int trust_topk_ref(const float *key, const uint8_t *ok, int n, int k, int32_t *ids);

#endif
