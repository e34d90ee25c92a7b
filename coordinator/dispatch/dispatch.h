/* dispatch.h: rank 0's side of expert parallelism.
 *
 * coordinator/dispatch/ owns the exchange as the coordinator sees it: the
 * placement sent out and the handshakes checked at start (handshake.c), per
 * MoE layer the token rows sent to the workers that host their experts and
 * the partial sums added back in a fixed order (dispatch.c), and at the end
 * the workers' shutdown and the statistics report (report.c).  The protocol
 * itself is described in cluster/dist.h.  It may call core/, proto/,
 * engine/ and cluster/; the commands in coordinator/cli/ call it.
 *
 * At -np 1 the same backend wraps the local expert computation, so every run
 * keeps the same statistics.
 */
#ifndef TM_DISPATCH_H
#define TM_DISPATCH_H

#include "dist.h"

/* For rank 0 with size > 1: a zero expert mask [layers * experts] sized from
 * model_dir/config.json (or lp->synthetic's preset), so model_load maps no
 * expert.  free() it after model_free. */
unsigned char *dist_no_experts_mask(const char *model_dir, const model_load_params *lp, tm_err *err);

/* For rank 0 with size > 1: its expert mask under the placement of p
 * (--placement, --replicas, --coordinator-share): the experts rank 0 hosts
 * itself, usually none.  free() it after model_free. */
unsigned char *dist_coordinator_mask(const char *model_dir, const model_load_params *lp, const dist_params *p,
                                     int size, tm_err *err);
/* Rank 0 with size > 1: handshake + placement; fills *be with a backend that
 * dispatches to the workers.  On a handshake or placement error the message
 * is printed and the job is aborted (workers are waiting on us). */
tm_status dist_coordinator_start(const tm_model *m, const dist_params *p, int size, moe_backend *be, tm_err *err);
/* Size 1: wrap the local backend so that the same statistics are kept. */
tm_status dist_local_start(const tm_model *m, const dist_params *p, moe_backend inner, moe_backend *be, tm_err *err);
/* --unavailable R,...: avail[layers * experts] (all 1 on entry) gets 0 for
 * every expert that only the listed worker ranks host, so selection fills
 * its slots from the others and no token is sent to those ranks.  Needs the
 * coordinator's backend of an MPI job, ranks in 1..size-1, at least one
 * worker left, and one replica per expert (with more, the dispatch would
 * still pick the listed ranks' copies).  *n_masked: the experts masked. */
tm_status dist_unavailable_mask(moe_backend *be, const char *ranks, unsigned char *avail, int *n_masked,
                                tm_err *err);
/* The generation step of the next forward call (0 = prefill); optional:
 * without it each forward call counts as the next step. */
void dist_set_step(moe_backend *be, int step);
/* The command's own phase times, which the summary and --stats-json then
 * report instead of the per-forward-call figures: one set of numbers for
 * every output.  Prefill is the prompt's forward pass; decode the forward
 * passes after it (tokens: rows; steps: calls), sampling included. */
typedef struct {
    double load_s, prefill_s, decode_s;
    uint64_t prefill_tok, decode_tok, decode_steps;
} dist_times;
void dist_set_times(moe_backend *be, const dist_times *t);
/* Writes stats, shuts the workers down, finalizes MPI.  be may be NULL (or a
 * backend not made here) when start never ran: then the waiting workers are
 * told to stop (CONTROL SHUTDOWN before any placement) and every rank
 * finalizes, so rank 0 exits with exit_code and one line of error. */
/* Returns the exit code: exit_code, or 1 when it was 0 and --stats-json
 * could not be written. */
int dist_finish(moe_backend *be, int exit_code, const tm_state *s);
/* The exchange statistics so far as Prometheus text (per-phase time, per
 * (layer, expert) and per-rank load) into buf[cap]; returns the bytes
 * written (0 for a backend not made here). */
size_t dist_prometheus(moe_backend *be, char *buf, size_t cap);

#endif
