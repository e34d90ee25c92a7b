/* trust_rep.c: reputation update rules and the in-memory trust table. */
#include "trust_rep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

void trust_entry_init(trust_entry *e)
{
    memset(e, 0, sizeof *e);
    e->trust = TRUST_PRIOR;
    e->last_quality = -1.0;
}

void trust_entry_update(trust_entry *e, double q, double step, double credit, int64_t now)
{
    e->trust += step * (q - e->trust);
    e->evidence += 1;
    e->last_quality = q;
    e->last_credit = credit;
    e->last_used = now;
    if (e->n_window == TRUST_WINDOW) {
        memmove(e->window, e->window + 1, (TRUST_WINDOW - 1) * sizeof e->window[0]);
        e->n_window--;
    }
    e->window[e->n_window++] = (float)q;
}

double trust_entry_window_score(const trust_entry *e, double lambda)
{
    if (e->n_window == 0) return TRUST_PRIOR;
    double mean = 0, var = 0;
    for (int i = 0; i < e->n_window; i++) mean += e->window[i];
    mean /= e->n_window;
    for (int i = 0; i < e->n_window; i++) var += (e->window[i] - mean) * (e->window[i] - mean);
    var /= e->n_window;
    double s = mean - lambda * var;
    return s < 0 ? 0 : s > 1 ? 1 : s;
}

void trust_pair_update(trust_pair *p, double q)
{
    p->quality = p->count == 0 ? q : 0.9 * p->quality + 0.1 * q;
    p->count++;
}

double trust_substitution_bump(double trust, double dq)
{
    if (dq <= 0) return trust;
    trust += dq < 0.1 ? dq : 0.1;
    return trust > 1 ? 1 : trust;
}

void trust_table_init(trust_table *t, int n_layers, int n_experts, const char *context)
{
    TM_ASSERT(n_layers > 0 && n_experts > 0);
    memset(t, 0, sizeof *t);
    t->n_layers = n_layers;
    t->n_experts = n_experts;
    snprintf(t->context, sizeof t->context, "%s", context ? context : "general");
    size_t n = (size_t)n_layers * n_experts;
    t->trust = tm_malloc(n * sizeof *t->trust);
    t->evidence = tm_malloc(n * sizeof *t->evidence);
    trust_table_reset(t);
}

void trust_table_reset(trust_table *t)
{
    size_t n = (size_t)t->n_layers * t->n_experts;
    for (size_t i = 0; i < n; i++) {
        t->trust[i] = (float)TRUST_PRIOR;
        t->evidence[i] = 0;
    }
}

void trust_table_free(trust_table *t)
{
    free(t->trust);
    free(t->evidence);
    memset(t, 0, sizeof *t);
}
