/* placement.h: which rank(s) host expert e of layer l.
 *
 * Worker ranks are 1..n_workers.  Rank 0, the coordinator, hosts experts only
 * when asked: a coordinator share (--coordinator-share F) or rank 0 named in
 * a placement file.  It then computes them while the workers compute theirs
 * (coordinator/dispatch/dispatch.c).  A placement is
 * built once, from a policy, before any compute, validated, and sent to every
 * worker in the handshake (proto/trustmoe.proto, Placement).
 *
 * Policies (--placement), for E experts per MoE layer and W workers:
 *   contiguous   expert e on worker (e * W) / E: each worker a block of ids
 *   round-robin  expert e on worker e mod W
 *   balanced:STATS  from the "expert_tokens" of an earlier run's --stats-json:
 *                per layer, experts in decreasing order of measured tokens,
 *                each replica on the least-loaded worker not yet holding it
 *   coactivation:STATS  from the "co_selection" counts of an earlier
 *                eval's or generate's --stats-json (trust selection on):
 *                per layer, experts often chosen for the same token go to
 *                the same worker, each worker keeping its contiguous
 *                number of experts and at most max(1.1 x mean, the
 *                balanced start's max) expert-tokens; no replicas
 *   FILE         a JSON file (below)
 * --replicas R (contiguous, round-robin) puts replica j of an expert on the
 * worker j places after its first one (mod W), so R <= W distinct workers;
 * with balanced, R replicas of every expert share its load.
 * A coordinator share F (contiguous, round-robin) gives rank 0
 * n0 = round(F * E) experts of every MoE layer, one copy each: contiguous
 * the first n0 ids, round-robin n0 ids spread evenly (e where
 * floor((e+1) n0 / E) > floor(e n0 / E)).  The other E - n0 experts go to
 * the workers by the policy, in id order, with their replicas.
 * The coordinator spreads tokens between the replicas of an expert by token
 * index (coordinator/dispatch/dispatch.c), so the choice is deterministic.
 *
 * FILE format: one object with a list of [layer, expert, rank] triples;
 * `rank` may also be a list of ranks (replicas, in the order tokens are
 * spread over them).  Rank 0 is the coordinator.  An optional "workers" must equal the number of worker
 * ranks of the run, to catch a file written for another -np.
 *
 *   {"workers": 2,
 *    "experts": [[0, 0, 1], [0, 1, [2, 1]], [1, 0, 2], ...]}
 *
 * Every (layer, expert) of every MoE layer must be hosted at least once;
 * dense (mlp_only) layers host nothing.  Any violation -- an expert hosted
 * nowhere, a rank out of range, a duplicate -- is an error that names the
 * layer and expert, raised before the model is run.
 */
#ifndef TM_PLACEMENT_H
#define TM_PLACEMENT_H

#include "common.h"
#include "config.h"
#include "dtype.h"

typedef struct {
    int n_layers, n_experts;
    int n_workers;           /* worker ranks are 1..n_workers; 0 is the coordinator */
    char policy[256];        /* "contiguous", "round-robin", "balanced:STATS" or the file path */
    unsigned char *is_moe;   /* [n_layers] */
    int *offsets;            /* [n_layers * n_experts + 1]: CSR into ranks */
    int *ranks;              /* [offsets[n_layers * n_experts]] */
    size_t expert_bytes;     /* weight bytes of one expert in the loaded dtype */
} place_map;

/* Weight bytes of one expert (gate, up, down) held in dtype wdt. */
size_t place_expert_bytes(const tm_config *c, tm_dtype wdt);

/* Build and validate the map for n_workers >= 1 worker ranks.  policy NULL
 * or "" means contiguous; replicas <= 0 means 1. */
tm_status place_build(place_map *pm, const tm_config *c, size_t expert_bytes, int n_workers, const char *policy,
                      int replicas, tm_err *err);
/* The same with a coordinator share in [0, 1] (see above; 0 is place_build). */
tm_status place_build_share(place_map *pm, const tm_config *c, size_t expert_bytes, int n_workers,
                            const char *policy, int replicas, double coordinator_share, tm_err *err);
/* Whether a placement of policy and coordinator_share can give rank 0
 * experts: a share above 0, or a placement file (which may name rank 0);
 * the policies alone give rank 0 none, so rank 0 need not build them to
 * know its own (empty) share. */
int place_may_host_coordinator(const char *policy, double coordinator_share);
/* Adopt a map received in CSR form (copies the arrays) and validate it. */
tm_status place_from_csr(place_map *pm, int n_layers, int n_experts, int n_workers, const int *offsets,
                         size_t n_offsets, const int *ranks, size_t n_ranks, size_t expert_bytes, tm_err *err);
tm_status place_validate(const place_map *pm, tm_err *err);
void place_free(place_map *pm);

static inline int place_count(const place_map *pm, int layer, int expert)
{
    int i = layer * pm->n_experts + expert;
    return pm->offsets[i + 1] - pm->offsets[i];
}
static inline const int *place_ranks(const place_map *pm, int layer, int expert)
{
    return pm->ranks + pm->offsets[layer * pm->n_experts + expert];
}
int place_hosts(const place_map *pm, int rank, int layer, int expert);
/* (layer, expert) pairs hosted by `rank`, and their weight bytes. */
int place_rank_experts(const place_map *pm, int rank);
size_t place_rank_bytes(const place_map *pm, int rank);
/* mask[layer * n_experts + expert] = 1 where `rank` hosts it (model_load's expert_mask). */
void place_rank_mask(const place_map *pm, int rank, unsigned char *mask);

/* Print the map (grouping layers whose maps are equal, expert ids as ranges)
 * and the experts and weight bytes per rank: what `trustmoe inspect
 * --workers N [--placement P] [--replicas R]` shows without MPI.  Returns the
 * exit code: 0, or 2 with the reason printed to stderr. */
int placement_print(FILE *f, const tm_config *c, tm_dtype weight_dtype, const char *policy, int replicas,
                    int n_workers);

#endif
