/* trust_metrics.c: diversity and collapse metrics (definitions in the header). */
#include "trust_metrics.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void trust_metrics_init(trust_metrics *m, int n_layers, int n_experts)
{
    TM_ASSERT(n_layers > 0 && n_experts > 0);
    memset(m, 0, sizeof *m);
    m->n_layers = n_layers;
    m->n_experts = n_experts;
    m->load = tm_calloc((size_t)n_layers * n_experts, sizeof *m->load);
    m->selections = tm_calloc((size_t)n_layers, sizeof(int64_t));
    m->changed = tm_calloc((size_t)n_layers, sizeof(int64_t));
    m->masked = tm_calloc((size_t)n_layers, sizeof(int64_t));
    m->budget_fallbacks = tm_calloc((size_t)n_layers, sizeof(int64_t));
    m->explored = tm_calloc((size_t)n_layers, sizeof(int64_t));
    m->trust_driven = tm_calloc((size_t)n_layers, sizeof(int64_t));
    m->co = tm_calloc((size_t)n_layers * n_experts * n_experts, sizeof *m->co);
}

void trust_metrics_reset(trust_metrics *m)
{
    size_t L = (size_t)m->n_layers;
    memset(m->load, 0, L * m->n_experts * sizeof *m->load);
    memset(m->selections, 0, L * sizeof(int64_t));
    memset(m->changed, 0, L * sizeof(int64_t));
    memset(m->masked, 0, L * sizeof(int64_t));
    memset(m->budget_fallbacks, 0, L * sizeof(int64_t));
    memset(m->explored, 0, L * sizeof(int64_t));
    memset(m->trust_driven, 0, L * sizeof(int64_t));
    memset(m->co, 0, L * m->n_experts * m->n_experts * sizeof *m->co);
}

void trust_metrics_free(trust_metrics *m)
{
    free(m->load);
    free(m->selections);
    free(m->changed);
    free(m->masked);
    free(m->budget_fallbacks);
    free(m->explored);
    free(m->trust_driven);
    free(m->co);
    memset(m, 0, sizeof *m);
}

void trust_metrics_add(trust_metrics *m, int layer, const int32_t *ids, int k)
{
    TM_ASSERT(layer >= 0 && layer < m->n_layers);
    int64_t *row = m->load + (size_t)layer * m->n_experts;
    for (int i = 0; i < k; i++) {
        TM_ASSERT(ids[i] >= 0 && ids[i] < m->n_experts);
        row[ids[i]]++;
    }
    int64_t *co = m->co + (size_t)layer * m->n_experts * m->n_experts;
    for (int i = 0; i < k; i++)
        for (int j = i + 1; j < k; j++) {
            int a = ids[i] < ids[j] ? ids[i] : ids[j], b = ids[i] ^ ids[j] ^ a;
            co[(size_t)a * m->n_experts + b]++;
        }
    m->selections[layer]++;
}

void trust_metrics_add_batch(trust_metrics *m, int layer, const int32_t *ids, int T, int k)
{
    for (int t = 0; t < T; t++) trust_metrics_add(m, layer, ids + (size_t)t * k, k);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void trust_metrics_of_load(const int64_t *load, int n, trust_layer_stats *out)
{
    memset(out, 0, sizeof *out);
    double total = 0;
    for (int e = 0; e < n; e++) {
        total += (double)load[e];
        out->distinct += load[e] > 0;
    }
    if (total <= 0) return;
    for (int e = 0; e < n; e++) {
        if (load[e] <= 0) continue;
        double p = (double)load[e] / total;
        out->entropy -= p * log2(p);
    }
    out->entropy_norm = n > 1 ? out->entropy / log2((double)n) : 0;
    /* Gini from the ascending order statistics:
     * G = 2 Σ_i i·x_(i) / (n Σx) - (n + 1) / n,  i = 1..n. */
    int64_t *sorted = tm_malloc((size_t)n * sizeof *sorted);
    memcpy(sorted, load, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_i64);
    double acc = 0, top = 0;
    for (int i = 0; i < n; i++) acc += (double)(i + 1) * (double)sorted[i];
    out->gini = 2.0 * acc / ((double)n * total) - (double)(n + 1) / n;
    for (int i = n - 1; i >= 0 && i >= n - 4; i--) top += (double)sorted[i];
    out->top4_share = top / total;
    free(sorted);
}

void trust_metrics_layer(const trust_metrics *m, int layer, trust_layer_stats *out)
{
    TM_ASSERT(layer >= 0 && layer < m->n_layers);
    trust_metrics_of_load(m->load + (size_t)layer * m->n_experts, m->n_experts, out);
    int64_t s = m->selections[layer];
    out->changed_frac = s > 0 ? (double)m->changed[layer] / (double)s : 0;
}

static cJSON *metrics_doc(const trust_metrics *m)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "n_layers", m->n_layers);
    cJSON_AddNumberToObject(root, "n_experts", m->n_experts);
    cJSON *layers = cJSON_AddArrayToObject(root, "layers");
    trust_layer_stats mean = {0};
    double mean_distinct = 0;
    for (int l = 0; l < m->n_layers; l++) {
        trust_layer_stats s;
        trust_metrics_layer(m, l, &s);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "layer", l);
        cJSON_AddNumberToObject(o, "selections", (double)m->selections[l]);
        cJSON_AddNumberToObject(o, "distinct", s.distinct);
        cJSON_AddNumberToObject(o, "entropy_bits", s.entropy);
        cJSON_AddNumberToObject(o, "entropy_norm", s.entropy_norm);
        cJSON_AddNumberToObject(o, "gini", s.gini);
        cJSON_AddNumberToObject(o, "top4_share", s.top4_share);
        cJSON_AddNumberToObject(o, "changed_frac", s.changed_frac);
        cJSON_AddNumberToObject(o, "masked", (double)m->masked[l]);
        cJSON_AddNumberToObject(o, "budget_fallbacks", (double)m->budget_fallbacks[l]);
        cJSON_AddNumberToObject(o, "explored", (double)m->explored[l]);
        cJSON_AddNumberToObject(o, "trust_driven", (double)m->trust_driven[l]);
        cJSON_AddItemToArray(layers, o);
        mean_distinct += s.distinct;
        mean.entropy += s.entropy;
        mean.entropy_norm += s.entropy_norm;
        mean.gini += s.gini;
        mean.top4_share += s.top4_share;
        mean.changed_frac += s.changed_frac;
    }
    double L = m->n_layers;
    cJSON *o = cJSON_AddObjectToObject(root, "mean");
    cJSON_AddNumberToObject(o, "distinct", mean_distinct / L);
    cJSON_AddNumberToObject(o, "entropy_bits", mean.entropy / L);
    cJSON_AddNumberToObject(o, "entropy_norm", mean.entropy_norm / L);
    cJSON_AddNumberToObject(o, "gini", mean.gini / L);
    cJSON_AddNumberToObject(o, "top4_share", mean.top4_share / L);
    cJSON_AddNumberToObject(o, "changed_frac", mean.changed_frac / L);
    /* co_selection[l][a][b]: tokens that chose both a and b (symmetric; the
     * diagonal is the expert's own load), what coactivation placement reads */
    cJSON *co = cJSON_AddArrayToObject(root, "co_selection");
    const int E = m->n_experts;
    for (int l = 0; l < m->n_layers; l++) {
        const int64_t *c = m->co + (size_t)l * E * E;
        cJSON *rows = cJSON_CreateArray();
        for (int a = 0; a < E; a++) {
            cJSON *row = cJSON_CreateArray();
            for (int b = 0; b < E; b++) {
                int64_t v = a == b ? m->load[(size_t)l * E + a] : a < b ? c[(size_t)a * E + b] : c[(size_t)b * E + a];
                cJSON_AddItemToArray(row, cJSON_CreateNumber((double)v));
            }
            cJSON_AddItemToArray(rows, row);
        }
        cJSON_AddItemToArray(co, rows);
    }
    return root;
}

char *trust_metrics_json(const trust_metrics *m)
{
    cJSON *root = metrics_doc(m);
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    TM_ASSERT(s != NULL);
    return s;
}

tm_status trust_metrics_write_json(const trust_metrics *m, const char *path, tm_err *err)
{
    tm_status st = TM_OK;
    char *s = trust_metrics_json(m);
    FILE *f = fopen(path, "w");
    if (!f) {
        st = tm_errf(err, TM_EFAIL, "%s: cannot write stats: %s", path, strerror(errno));
        goto done;
    }
    if (fputs(s, f) < 0 || fputc('\n', f) < 0) st = tm_errf(err, TM_EFAIL, "%s: write failed", path);
    if (fclose(f) != 0 && st == TM_OK) st = tm_errf(err, TM_EFAIL, "%s: write failed", path);
done:
    free(s);
    return st;
}
