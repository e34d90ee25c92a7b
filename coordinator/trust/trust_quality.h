/* trust_quality.h: turning measured next-token quality into reputation.
 *
 * Per window of teacher-forced text (trustmoe trust train):
 *   ce   = mean next-token cross-entropy in nats over the window's tokens
 *   ppl  = exp(ce)
 *   q    = 1 / (1 + ppl / 10)            (ppl 10 -> 0.5, ppl 1 -> 0.909)
 * and, per (layer, expert), the credit
 *   credit = min(1, k * W / T)
 * where W is the routing weight the expert carried summed over the window's
 * T token selections at that layer, and k the experts per token.  An expert
 * that carried an average 1/k share of every token gets credit 1; one used
 * for a tenth of the tokens gets about 0.1.  Its trust then moves toward
 * the unweighted q with step ema_rate * credit, and both q and the credit are
 * stored, so thresholds on trust keep the scale of q.
 *
 * Engine use, per window:
 *   trust_quality_add(&acc, layer, ids, w, k)   after each trust_select
 *   trust_quality_add_ce(&acc, ce_sum, n)       per scored token(s)
 *   trust_quality_commit(&acc, &db, model, &table, now, &q, &err)
 *   trust_selector_reward(&sel, q)              when an ATP budget is on
 */
#ifndef TM_TRUST_QUALITY_H
#define TM_TRUST_QUALITY_H

#include <stdint.h>

#include "common.h"
#include "trust_db.h"
#include "trust_rep.h"

typedef struct {
    int n_layers, n_experts, k;
    double *wsum;       /* [n_layers, n_experts] routing weight carried     */
    int64_t *tokens;    /* [n_layers] token selections seen this window     */
    double ce_sum;      /* Σ next-token cross-entropy, nats                 */
    int64_t n_scored;   /* tokens whose cross-entropy is in ce_sum          */
} trust_quality_acc;

void trust_quality_init(trust_quality_acc *a, int n_layers, int n_experts, int k);
void trust_quality_reset(trust_quality_acc *a);
void trust_quality_free(trust_quality_acc *a);

/* One token selection at `layer`: ids[k], w[k] f32 as trust_select gave. */
void trust_quality_add(trust_quality_acc *a, int layer, const int32_t *ids, const float *w, int k);
/* T token selections at once (the engine's on_route observer):
 * ids[T, k], w[T, k] f32. */
void trust_quality_add_batch(trust_quality_acc *a, int layer, const int32_t *ids, const float *w,
                             int T, int k);
/* ce_sum: Σ -log p(next token) in nats over n tokens. */
void trust_quality_add_ce(trust_quality_acc *a, double ce_sum, int64_t n);

/* q = 1 / (1 + ppl / 10). */
double trust_quality_from_ppl(double ppl);
/* The window's q, or -1 when no token was scored. */
double trust_quality_window_q(const trust_quality_acc *a);
/* credit of (layer, expert) in [0, 1] (0 when unused). */
double trust_quality_credit(const trust_quality_acc *a, int layer, int expert);

/* Fold the window into the reputation of context table->context: one
 * transaction updating every credited (layer, expert); table (optional)
 * then mirrors the stored trust and evidence.  db may be NULL to update
 * only the in-memory table (with rate ema_rate).  *q_out receives q.  The
 * accumulator is reset afterwards; a window with no scored token changes
 * nothing.  Inside the caller's trust_db_begin the updates join that
 * transaction (so the caller can commit more with them); otherwise the
 * window gets a transaction of its own. */
tm_status trust_quality_commit(trust_quality_acc *a, trust_db *db, const char *model,
                               trust_table *table, double ema_rate, int64_t now, double *q_out,
                               tm_err *err);

#endif
