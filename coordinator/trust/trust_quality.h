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
 * Two signals (--signal) decide what trust moves toward:
 *   absolute   the window's q itself.  q of a small model sits far below
 *              the 0.5 prior, so every update lowers trust, fastest for the
 *              most-used experts: trust ends up as inverse usage.
 *   advantage  (default) how much better this window did than its context
 *              usually does: with a per-context EMA baseline (mean m, variance v,
 *              rate TRUST_BASELINE_RATE) of q,
 *                 target = clip(0.5 + gain * (q - m) / (sqrt(v) + 0.001))
 *              (gain TRUST_ADVANTAGE_GAIN: 0.1 per standard deviation;
 *              0.5 during the first TRUST_BASELINE_WARMUP windows of a
 *              context).  An expert's trust then rises when the windows
 *              that lean on it beat the context's norm, and usage alone
 *              moves it toward 0.5, not down.
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

typedef enum {
    TRUST_SIGNAL_ABSOLUTE = 0,
    TRUST_SIGNAL_ADVANTAGE,
} trust_signal;

#define TRUST_ADVANTAGE_GAIN 0.1
#define TRUST_BASELINE_RATE 0.05
#define TRUST_BASELINE_WARMUP 4

/* "absolute" | "advantage" */
const char *trust_signal_name(trust_signal s);
tm_status trust_signal_parse(const char *s, trust_signal *out, tm_err *err);

/* The advantage target of a window with quality q against baseline b,
 * which then takes q in (EMA rate beta). */
double trust_baseline_target(trust_baseline *b, double q, double gain, double beta);

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
/* The same, folding `value` (e.g. an advantage target) in place of the
 * window's q; the window must have scored tokens for anything to change. */
tm_status trust_quality_commit_value(trust_quality_acc *a, trust_db *db, const char *model,
                                     trust_table *table, double ema_rate, int64_t now, double value,
                                     tm_err *err);

#endif
