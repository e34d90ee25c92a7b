/* dispatch_ctx.h: the coordinator's exchange state, shared by the files of
 * coordinator/dispatch/ and nothing else: dispatch.c (per-layer dispatch and
 * combine, the local wrapper, step accounting), handshake.c (placement out,
 * handshakes in) and report.c (shutdown, statistics). */
#ifndef TM_DISPATCH_CTX_H
#define TM_DISPATCH_CTX_H

#define TM_DIST_INTERNAL
#include "dist.h"
#include "expert.h"
#include "model.h"
#include "placement.h"

#define DIST_CTX_MAGIC 0x44495354 /* marks a moe_backend.ctx made here */
#define HS_MAX_BYTES 65536
#define STATS_MAX_BYTES 4096
#define DIST_OV_BINS 65536 /* exchange overhead histogram: 1 us bins up to 65 ms */

static inline double dist_mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

typedef struct {
    char host[256];
    int pid, experts;
    uint64_t weight_bytes, rss, rss_before;
    int have_stats;
    uint64_t requests, tokens, expert_tokens, bytes_sent, bytes_received, rss_end;
    double compute_s, convert_s, idle_s;
} rank_info;

typedef struct {
    uint32_t magic;
    int distributed; /* 0: the local backend wrapped for statistics */
    const tm_model *m;
    dist_params p;
    moe_backend inner;
    int size, W, L, E, H, K, first_moe;
    place_map pm;
    size_t dts; /* bytes per activation element on the wire */

    /* per-call buffers, sized for cap_T tokens; grown only when a call brings
     * more tokens than any before (the prefill), never per token */
    int cap_T;
    int *dest;        /* [cap_T * K] destination rank of each (token, slot) */
    int *stamp;       /* [size] last token that opened a row on each rank */
    int *n_rows;      /* [size] token rows going to each rank */
    int *fill;        /* [size] pair slots used in the current row */
    int *rows_of;     /* [size, cap_T] token index of each row */
    int *row_base;    /* [size + 1] first row of each worker in all workers' rows, rank order */
    uint8_t **send;   /* [size] header + cap_T * (H * dts + K * 8) */
    uint8_t **recv;   /* [size] header + cap_T * H * 4 + slack */
    size_t *send_cap, *recv_cap;
    MPI_Request *req; /* [2 * size]: receives, then sends */
    MPI_Status *sts;  /* [2 * size] */
    uint32_t *seq;    /* [size] next sequence number per worker */
    /* rank 0's own experts (a coordinator share; 0: none), computed like a
     * worker's: the grouped path over its pairs (core/expert.h) */
    int local_experts;
    expert_group lgrp; /* when local_experts */
    int32_t *lids;    /* [cap_T * K] ids of rank 0's pairs, -1 for the others */
    float *lscratch;  /* [K, 2 * moe_inter + H] f32: expert_one_token's */
    uint64_t *tok_counter; /* [L] tokens seen per layer: spreads replicas */

    /* steps */
    int step, step_explicit, step_open, steps_seen, step_T;
    double step_t0;

    /* statistics */
    uint64_t *expert_tokens; /* [L * E] */
    uint64_t *rank_rows;     /* [size] token rows sent to each rank */
    uint64_t *rank_pairs;    /* [size] (token, expert) evaluations per rank */
    uint64_t *bytes_to, *bytes_from; /* [size] */
    double t_dispatch, t_wait, t_combine, t_local;
    /* per MoE layer call: the slowest participant's expert compute (a
     * worker's from its RESULT header, or rank 0's own share), and the
     * exchange overhead: wait minus that compute */
    double t_slowest, t_overhead;
    uint32_t *ov_hist; /* [DIST_OV_BINS] decode calls by overhead, 1 us bins; the last bin holds the rest */
    uint64_t ov_calls;
    uint64_t n_layer_calls;
    uint64_t token_layers;   /* Σ T over MoE layer calls: (token, layer) pairs */
    uint64_t messages;       /* dispatch messages sent to workers */
    double prefill_s, decode_s;
    uint64_t prefill_tok, decode_tok, decode_steps;
    double load_s;   /* dist_set_times: the command's load time (< 0: not given) */
    rank_info *info; /* [size] */
} dist_ctx;

/* The context of a backend made here, or NULL. */
dist_ctx *dist_ctx_of(moe_backend *be);
/* Counters and buffers for a job of `size` ranks (1: local). */
dist_ctx *dist_ctx_new(const tm_model *m, const dist_params *p, int size);
/* The exchange overhead below which half of the decode calls fell, us. */
double dist_overhead_median_us(const dist_ctx *c);
/* Grows the per-call buffers to hold T tokens (never per token). */
void dist_ctx_grow(dist_ctx *c, int T);
void dist_ctx_free(dist_ctx *c);
/* Ends the open step, adding its time to prefill or decode. */
void dist_step_close(dist_ctx *c);
/* The exchange backend's run_layer, installed by dist_coordinator_start. */
int dist_run_layer(moe_backend *b, int layer, const float *x, int T, const int32_t *ids, const float *w, int k,
                   float *out);

#endif
