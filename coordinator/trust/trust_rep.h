/* trust_rep.h: reputation values and their update rules, independent of
 * storage (trust_db.c persists them, trust_select.c reads them).
 *
 * A reputation entry belongs to one (model, layer, expert, context).  Its
 * trust is an exponential moving average of measured quality:
 *     t <- t + step * (q - t),   prior 0.5,
 * where step is the EMA rate (default 0.1) times the expert's credit in the
 * window (see trust_quality.h).  With step = rate this is the research
 * system's update: 0.5 -> 0.54 -> 0.576 for q = 0.9, rate 0.1.
 *
 * q is always the unweighted window quality: weighting q itself by the
 * routing weight (q * 0.25 ~ 0.19) put every expert below a 0.3 threshold in
 * the research system, so the weight scales the step instead, and the credit
 * is stored beside q.
 */
#ifndef TM_TRUST_REP_H
#define TM_TRUST_REP_H

#include <stdint.h>

#define TRUST_PRIOR 0.5
#define TRUST_WINDOW 8 /* recent qualities kept per entry */

typedef struct {
    double trust;        /* EMA trust, prior TRUST_PRIOR                      */
    int64_t evidence;    /* windows that credited this expert                 */
    double last_quality; /* unweighted q of the last window; -1 when none     */
    double last_credit;  /* routing-weight credit of that window, in [0, 1]   */
    int64_t last_used;   /* unix seconds; 0 when never                        */
    int n_window;        /* valid entries of window, oldest first             */
    float window[TRUST_WINDOW]; /* recent unweighted qualities                */
} trust_entry;

/* A fresh entry: trust 0.5, no evidence. */
void trust_entry_init(trust_entry *e);

/* Fold one window's quality q into e with EMA step `step` (rate * credit). */
void trust_entry_update(trust_entry *e, double q, double step, double credit, int64_t now);

/* mean(window) - lambda * var(window), clipped to [0, 1]; the prior when
 * the window is empty.  lambda 0.05 was the research system's best. */
double trust_entry_window_score(const trust_entry *e, double lambda);

/* Co-activation of an ordered expert pair in one layer: the count and an
 * EMA (rate 0.1) of the quality of windows where both were used; the first
 * observation sets the quality directly (0.85 then 0.95 gives 0.86). */
typedef struct {
    int64_t count;
    double quality;
} trust_pair;

void trust_pair_update(trust_pair *p, double q);

/* A substitution that improved quality by dq > 0 raises the substitute's
 * trust by min(0.1, dq), capped at 1 (0.5 + 0.15 -> 0.6). */
double trust_substitution_bump(double trust, double dq);

/* A context's running window quality: EMA mean and variance of q (the
 * advantage signal's reference point, trust_quality.h). */
typedef struct {
    double mean, var;
    int64_t windows;
} trust_baseline;

/* The in-memory trust of one (model, context) over all layers and experts,
 * which is what the selector reads per token. */
typedef struct {
    int n_layers, n_experts;
    char context[64];  /* context name, e.g. "context_3" or "general"        */
    float *trust;      /* [n_layers, n_experts] f32, prior 0.5               */
    int32_t *evidence; /* [n_layers, n_experts] windows of evidence          */
} trust_table;

/* Allocate a table at the prior.  trust_table_free on a zeroed or freed
 * table is a no-op. */
void trust_table_init(trust_table *t, int n_layers, int n_experts, const char *context);
void trust_table_reset(trust_table *t);
void trust_table_free(trust_table *t);

#endif
