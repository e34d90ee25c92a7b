/* trust_metrics.h: per-layer expert diversity and collapse metrics over a
 * run of selections, and their JSON form (for `eval` and --stats-json).
 *
 * Over the per-layer load n_e (how many token selections picked expert e):
 *   distinct   |{e : n_e > 0}|
 *   entropy    H = -Σ p_e log2 p_e with p_e = n_e / Σn, in bits
 *              (entropy_norm = H / log2(n_experts), 1 = perfectly even)
 *   gini       Σ_i Σ_j |n_i - n_j| / (2 E Σn) over all E experts, unused
 *              ones included (0 = even, (E-1)/E = one expert takes all)
 *   top4_share (sum of the 4 largest n_e) / Σn
 *   changed    fraction of token selections whose expert set differs from
 *              the router's own top-k under the same mask
 */
#ifndef TM_TRUST_METRICS_H
#define TM_TRUST_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "common.h"

typedef struct {
    int n_layers, n_experts;
    int64_t *load;          /* [n_layers, n_experts] selections per expert  */
    int64_t *selections;    /* [n_layers] token selections                  */
    int64_t *changed;       /* [n_layers] selections trust changed          */
    int64_t *masked;        /* [n_layers] masked/denied substitutions       */
    int64_t *budget_fallbacks; /* [n_layers] selections replaced by budget  */
    int64_t *explored;      /* [n_layers] epsilon-exploration selections    */
    int64_t *trust_driven;  /* [n_layers] trust-first selections by trust   */
    int64_t *co;            /* [n_layers, n_experts, n_experts] selections
                               that chose both a < b (upper triangle)       */
} trust_metrics;

typedef struct {
    int distinct;
    double entropy, entropy_norm, gini, top4_share, changed_frac;
} trust_layer_stats;

void trust_metrics_init(trust_metrics *m, int n_layers, int n_experts);
void trust_metrics_reset(trust_metrics *m);
void trust_metrics_free(trust_metrics *m);

/* Count one token selection at `layer`: ids[k] chosen experts. */
void trust_metrics_add(trust_metrics *m, int layer, const int32_t *ids, int k);

/* T selections at once: ids[T, k] (e.g. from the engine's on_route
 * observer when routing runs without the trust selector). */
void trust_metrics_add_batch(trust_metrics *m, int layer, const int32_t *ids, int T, int k);

/* Metrics of one layer's load (any n_experts-long count vector). */
void trust_metrics_of_load(const int64_t *load /*[n]*/, int n, trust_layer_stats *out);
void trust_metrics_layer(const trust_metrics *m, int layer, trust_layer_stats *out);

/* Write {"n_layers", "n_experts", "layers": [{layer, selections, distinct,
 * entropy_bits, entropy_norm, gini, top4_share, changed_frac, masked,
 * budget_fallbacks, explored, trust_driven}], "mean": {...},
 * "co_selection": [layer][a][b] co-selection counts, symmetric, the
 * diagonal being the expert's load} to path. */
tm_status trust_metrics_write_json(const trust_metrics *m, const char *path, tm_err *err);
/* The same document as a malloc'd string (free with free()). */
char *trust_metrics_json(const trust_metrics *m);

#endif
