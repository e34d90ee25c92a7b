/* expert.h: one SwiGLU expert (or a dense MLP) and the MoE dispatch seam.
 *
 *   y = down( silu(gate · x) ⊙ (up · x) )
 *
 * gate, up: [inter, hidden]; down: [hidden, inter]; F32 or BF16 (tm_mat).
 */
#ifndef TM_EXPERT_H
#define TM_EXPERT_H

#include "dtype.h"

#include <stdatomic.h>

typedef struct {
    tm_mat gate; /* [inter, hidden] */
    tm_mat up;   /* [inter, hidden] */
    tm_mat down; /* [hidden, inter] */
} tm_expert;

/* y[n, hidden] = expert(x[n, hidden]).  scratch: [n, 2 * inter] f32. */
void expert_forward(const tm_expert *e, const float *x, int n, float *y, float *scratch);

/* ---- the grouped path: a layer's batch of (token, expert) pairs ----------
 *
 *   out[t] += Σ_j w[t·k + j] · expert_{ids[t·k + j]}(x[t])     (ids < 0 skipped)
 *
 * Pairs are grouped by expert (ascending id, then ascending t·k + j), and the
 * thread pool runs two passes per layer instead of three per expert (a third,
 * short one first in the even/odd layout, to pack the input rows):
 *   1. gate/up: each thread takes the same block of intermediate rows of every
 *      active expert and computes gate and up for all of that expert's tokens,
 *      then silu(gate)·up for its block;
 *   2. down + combine: each thread takes a block of hidden rows of every active
 *      expert's down projection, then adds w·y into its columns of out.
 * Each weight row is read once per layer by one thread, whatever the number
 * of tokens; the blocks are equal row counts of every expert, so the threads
 * read equal bytes and do equal arithmetic.  Every output element has one
 * summation order (kern_matmul_rows[_eo], then the combine in ascending
 * expert id), so results are bitwise identical for any thread count.
 * Where every matrix allows it (BF16, hidden and inter multiples of 32, an
 * AVX2 or AVX-512 CPU) and the experts have enough tokens each, the
 * activations are kept in the even/odd layout of kernels.h, whose product
 * widens the weights with half the instructions.  Where the CPU has AMX and
 * the experts have enough tokens each, the products run on AMX tiles
 * instead, and the threads take whole experts' row blocks (EXPERT_TILE_ROWS)
 * rather than a block of every expert's rows: pass 0 packs each expert's
 * tokens for the tiles, pass 1 (gate, up) packs silu(gate)·up for pass 2
 * (down, into y), and a pass 3 adds w·y into out over blocks of columns,
 * experts in ascending id as in the other paths. */
/* What an expert phase read and computed: bytes of the distinct experts'
 * weights per layer call, 6·hidden·inter flops per pair; pass_s splits the
 * grouped path's seconds: packing the inputs, gate and up, down, combine. */
typedef struct {
    uint64_t calls, pairs;
    double bytes, flops, seconds;
    double pass_s[4];
} expert_group_stats;

typedef struct {
    int n_experts, hidden, inter;
    int cap;             /* pairs the scratch holds */
    int *count;          /* [n_experts + 1] start of each expert's pairs in grouped order */
    int *pair;           /* [cap] flat index t·k + j of each grouped pair */
    int *active;         /* [n_experts] experts with pairs, ascending */
    int n_active;
    int natural_only;    /* never the even/odd layout (TRUSTMOE_EXPERT_LAYOUT=natural, to compare) */
    int eo_min_tokens;   /* the even/odd layout from this many pairs per active expert on
                            (default EXPERT_GROUP_EO_MIN_TOKENS) */
    int eo;              /* this call keeps activations in the even/odd layout (kernels.h) */
    int amx_min_tokens;  /* AMX from this many pairs per active expert on (default
                            EXPERT_GROUP_AMX_MIN_TOKENS; AMX itself: kernels.h) */
    int amx;             /* this call's products run on AMX tiles */
    int tile_rows;       /* rows per tile of the AMX passes (default EXPERT_TILE_ROWS) */
    int *blk;            /* [n_experts] first 16-pair block of each active expert's packed rows */
    size_t xb_cap, hb_cap; /* bf16 values xb and hb hold */
    uint16_t *xb;        /* each active expert's x rows packed for the tiles (kern_amx_pack) */
    uint16_t *hb;        /* the same for silu(gate)·up, the down projections' input */
    atomic_int next_tile; /* AMX passes: the next tile to take (expert.c) */
    const float **xrow;  /* [cap] input row of each grouped pair (x, or xp when eo) */
    const float **hrow;  /* [cap] its input row of the down projection (a, or h when eo) */
    float *a;            /* [cap, inter] f32: gate products, then silu(gate)·up */
    float *u;            /* [cap, inter] f32: up products */
    float *h;            /* [cap, inter] f32: a in the even/odd layout */
    float *y;            /* [cap, hidden] f32: down products */
    int cap_rows;        /* rows xp holds */
    float *xp;           /* [cap_rows, hidden] f32: the batch's x in the even/odd layout */
    /* the current call, for the pool's tasks */
    const tm_expert *experts; /* [n_experts] */
    const float *x;      /* [T, hidden] */
    const float *w;      /* [T·k] mixing weights */
    int k;
    float *out;          /* [T, hidden] */
    double par_min_bytes; /* below this many bytes of active weights a call runs on
                             the calling thread (default EXPERT_GROUP_PAR_MIN_BYTES) */
    expert_group_stats stats; /* accumulated over calls */
} expert_group;

/* A layer's experts under this many bytes take a few microseconds on one
 * thread, less than two wake-ups of the pool (the tiny test models). */
#define EXPERT_GROUP_PAR_MIN_BYTES (256.0 * 1024)

/* The even/odd layout pays where several tokens share each weight row: on
 * the 16-core host (bench/RESULTS.md) it took 3-8% off the expert phase of
 * 128- and 512-token prefills (11 and 38 tokens per active expert) and added
 * 22% to batch-16 decode steps (under 2 per expert). */
#define EXPERT_GROUP_EO_MIN_TOKENS 8

/* Rows of one expert per tile of the AMX passes: 128 rows × 2048 columns of
 * BF16 are 512 KiB, so a layer's 128 experts make 768 gate/up tiles and 2048
 * down tiles to balance over the threads.  On the 16-core host 128 rows took
 * 9-12% off the expert phase of 256- and 512-token prefills against 256 rows
 * and were no slower at 64 and 128 tokens (bench/RESULTS.md); the gain is the
 * end of each pass, where fewer threads are left with a tile.
 * TRUSTMOE_EXPERT_TILE_ROWS (a multiple of 16) moves it, to compare. */
#define EXPERT_TILE_ROWS 128

/* AMX from 8 pairs per active expert: below that the tiles' 16-token blocks
 * are mostly padding and the AVX-512 product was faster on one core. */
#define EXPERT_GROUP_AMX_MIN_TOKENS 8

/* Scratch for cap pairs (grown by expert_group_run when a call has more). */
void expert_group_init(expert_group *g, int n_experts, int hidden, int inter, int cap);
void expert_group_free(expert_group *g);
/* x: [T, hidden] f32; ids, w: [T, k]; out: [T, hidden] f32, accumulated
 * into.  experts[e] must hold weights for every id used. */
void expert_group_run(expert_group *g, const tm_expert *experts, const float *x, int T, const int32_t *ids,
                      const float *w, int k, float *out);
/* The naive reference: each pair on its own in double precision, summed in
 * ascending (t, j) order; for tests. */
void expert_group_run_ref(const tm_expert *experts, int hidden, int inter, const float *x, int T, const int32_t *ids,
                          const float *w, int k, float *out);
/* One token through several experts (decode at batch 1): experts[ids[j]]
 * for each j in [0, k) with ids[j] >= 0 (-1: a slot computed elsewhere).
 * The gate and up projections run as one pass of matrix-vector products and
 * the down projections as a second, so the pool wakes twice instead of three
 * times per expert; out[hidden] += w[j]·y_j in ascending expert id (slot
 * order among equal ids), as the grouped path sums.  k <= KERN_MANY_MAX;
 * scratch: [k, 2·inter + hidden] f32.  Returns the bytes of the distinct
 * experts read. */
double expert_one_token(const tm_expert *experts, const float *x, const int32_t *ids, const float *w, int k,
                        float *out, float *scratch);
/* Bytes of an expert's three matrices. */
double expert_bytes(const tm_expert *e);

/* The seam between the coordinator's model and wherever experts run.
 * run_layer adds Σ_k w[t,k] · expert_{ids[t,k]}(x[t]) into out[t] for every
 * token t.  x: [T, hidden] f32 (post-attention-norm hidden states);
 * ids, w: [T, k]; out: [T, hidden] f32, accumulated into.
 * Returns 0, or non-zero on a failure it has already reported. */
typedef struct moe_backend {
    int (*run_layer)(struct moe_backend *b, int layer, const float *x, int T, const int32_t *ids,
                     const float *w, int k, float *out);
    void *ctx;
} moe_backend;

#endif
