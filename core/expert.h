/* expert.h: one SwiGLU expert (or a dense MLP) and the MoE dispatch seam.
 *
 *   y = down( silu(gate · x) ⊙ (up · x) )
 *
 * gate, up: [inter, hidden]; down: [hidden, inter]; F32 or BF16 (tm_mat).
 */
#ifndef TM_EXPERT_H
#define TM_EXPERT_H

#include "dtype.h"

typedef struct {
    tm_mat gate; /* [inter, hidden] */
    tm_mat up;   /* [inter, hidden] */
    tm_mat down; /* [hidden, inter] */
} tm_expert;

/* y[n, hidden] = expert(x[n, hidden]).  scratch: [n, 2 * inter] f32. */
void expert_forward(const tm_expert *e, const float *x, int n, float *y, float *scratch);

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
