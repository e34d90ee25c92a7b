/* trust_quality.c: window quality and weight-proportional credit (rules in
 * trust_quality.h). */
#include "trust_quality.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void trust_quality_init(trust_quality_acc *a, int n_layers, int n_experts, int k)
{
    TM_ASSERT(n_layers > 0 && n_experts > 0 && k > 0 && k <= n_experts);
    memset(a, 0, sizeof *a);
    a->n_layers = n_layers;
    a->n_experts = n_experts;
    a->k = k;
    a->wsum = tm_calloc((size_t)n_layers * n_experts, sizeof *a->wsum);
    a->tokens = tm_calloc((size_t)n_layers, sizeof *a->tokens);
}

void trust_quality_reset(trust_quality_acc *a)
{
    memset(a->wsum, 0, (size_t)a->n_layers * a->n_experts * sizeof *a->wsum);
    memset(a->tokens, 0, (size_t)a->n_layers * sizeof *a->tokens);
    a->ce_sum = 0;
    a->n_scored = 0;
}

void trust_quality_free(trust_quality_acc *a)
{
    free(a->wsum);
    free(a->tokens);
    memset(a, 0, sizeof *a);
}

void trust_quality_add(trust_quality_acc *a, int layer, const int32_t *ids, const float *w, int k)
{
    TM_ASSERT(layer >= 0 && layer < a->n_layers);
    double *row = a->wsum + (size_t)layer * a->n_experts;
    for (int i = 0; i < k; i++) {
        TM_ASSERT(ids[i] >= 0 && ids[i] < a->n_experts);
        row[ids[i]] += w[i];
    }
    a->tokens[layer]++;
}

void trust_quality_add_batch(trust_quality_acc *a, int layer, const int32_t *ids, const float *w,
                             int T, int k)
{
    for (int t = 0; t < T; t++) trust_quality_add(a, layer, ids + (size_t)t * k, w + (size_t)t * k, k);
}

void trust_quality_add_ce(trust_quality_acc *a, double ce_sum, int64_t n)
{
    a->ce_sum += ce_sum;
    a->n_scored += n;
}

double trust_quality_from_ppl(double ppl)
{
    return 1.0 / (1.0 + ppl / 10.0);
}

double trust_quality_window_q(const trust_quality_acc *a)
{
    if (a->n_scored <= 0) return -1.0;
    /* exp overflows to inf for a hopeless window, and q is then 0. */
    return trust_quality_from_ppl(exp(a->ce_sum / (double)a->n_scored));
}

double trust_quality_credit(const trust_quality_acc *a, int layer, int expert)
{
    int64_t t = a->tokens[layer];
    if (t <= 0) return 0;
    double c = a->k * a->wsum[(size_t)layer * a->n_experts + expert] / (double)t;
    return c < 0 ? 0 : c > 1 ? 1 : c;
}

const char *trust_signal_name(trust_signal s)
{
    return s == TRUST_SIGNAL_ADVANTAGE ? "advantage" : "absolute";
}

tm_status trust_signal_parse(const char *s, trust_signal *out, tm_err *err)
{
    if (!strcmp(s, "absolute")) *out = TRUST_SIGNAL_ABSOLUTE;
    else if (!strcmp(s, "advantage")) *out = TRUST_SIGNAL_ADVANTAGE;
    else return tm_errf(err, TM_EINPUT, "--signal: unknown signal \"%s\" (absolute, advantage)", s);
    return TM_OK;
}

double trust_baseline_target(trust_baseline *b, double q, double gain, double beta)
{
    double target = TRUST_PRIOR;
    if (b->windows == 0) {
        b->mean = q;
        b->var = 0;
    } else {
        double d = q - b->mean;
        if (b->windows >= TRUST_BASELINE_WARMUP) {
            double z = d / (sqrt(b->var) + 1e-3);
            target = TRUST_PRIOR + gain * z;
            target = target < 0 ? 0 : target > 1 ? 1 : target;
        }
        /* the incremental EMA of mean and variance (West 1979) */
        b->mean += beta * d;
        b->var = (1 - beta) * (b->var + beta * d * d);
    }
    b->windows++;
    return target;
}

tm_status trust_quality_commit(trust_quality_acc *a, trust_db *db, const char *model,
                               trust_table *table, double ema_rate, int64_t now, double *q_out,
                               tm_err *err)
{
    double q = trust_quality_window_q(a);
    if (q_out) *q_out = q;
    return trust_quality_commit_value(a, db, model, table, ema_rate, now, q, err);
}

tm_status trust_quality_commit_value(trust_quality_acc *a, trust_db *db, const char *model,
                                     trust_table *table, double ema_rate, int64_t now, double q,
                                     tm_err *err)
{
    tm_status st = TM_OK;
    if (trust_quality_window_q(a) < 0) goto done;
    TM_ASSERT(db || table);
    TM_ASSERT(!table || (table->n_layers == a->n_layers && table->n_experts == a->n_experts));
    const char *ctx = table ? table->context : "general";
    int own = db && !db->in_tx;
    if (own && (st = trust_db_begin(db, err))) goto done;
    for (int l = 0; l < a->n_layers && !st; l++) {
        for (int e = 0; e < a->n_experts && !st; e++) {
            double c = trust_quality_credit(a, l, e);
            if (c <= 0) continue;
            size_t i = (size_t)l * a->n_experts + e;
            if (db) {
                trust_entry ent;
                st = trust_db_record(db, model, l, e, ctx, q, c, now, &ent, err);
                if (!st && table) {
                    table->trust[i] = (float)ent.trust;
                    table->evidence[i] = ent.evidence > INT32_MAX ? INT32_MAX : (int32_t)ent.evidence;
                }
            } else {
                table->trust[i] += (float)(ema_rate * c * (q - table->trust[i]));
                if (table->evidence[i] < INT32_MAX) table->evidence[i]++;
            }
        }
    }
    if (own) {
        if (st)
            trust_db_rollback(db);
        else
            st = trust_db_commit(db, err);
    }
done:
    trust_quality_reset(a);
    return st;
}
