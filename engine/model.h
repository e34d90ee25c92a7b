/* model.h: a Qwen3-MoE text decoder loaded from a Hugging Face folder, and
 * its forward pass on the coordinator.
 *
 * engine/ owns the model: loading (also a worker's subset of experts), the
 * forward pass with its KV state, the sampler and the seeded synthetic
 * models (mkmodel.h).  Experts run through a moe_backend, so the engine
 * never knows whether they are local or on other ranks.  It calls only
 * core/; the worker, cluster/ and the coordinator's folders call it.
 *
 * Matrices are tm_mat views in the chosen weight dtype: BF16 tensors stay
 * BF16 and mapped (--weight-dtype bf16), or every matrix is converted once to
 * F32 (--weight-dtype f32).  F16 and F64 tensors are always converted
 * explicitly to F32; norms are always F32.  RoPE frequencies come from the
 * config, never from a checkpoint buffer.
 */
#ifndef TM_MODEL_H
#define TM_MODEL_H

#include "arena.h"
#include "config.h"
#include "expert.h"
#include "safetensors.h"

typedef struct {
    int is_moe;
    float *attn_norm; /* [hidden] f32 */
    float *ffn_norm;  /* [hidden] f32 */
    float *q_norm;    /* [head_dim] f32 */
    float *k_norm;    /* [head_dim] f32 */
    tm_mat wq;        /* [heads * head_dim, hidden] */
    tm_mat wk;        /* [kv_heads * head_dim, hidden] */
    tm_mat wv;        /* [kv_heads * head_dim, hidden] */
    tm_mat wo;        /* [hidden, heads * head_dim] */
    tm_mat router;    /* [experts, hidden] */
    tm_expert *experts; /* [experts]; .gate.data == NULL where not hosted here */
    tm_expert dense;    /* dense MLP when !is_moe */
} tm_layer;

typedef struct {
    char *name;
    char reason[96];
} tm_ignored;

typedef struct {
    tm_config cfg;
    st_set st;
    char dir[4096];
    tm_dtype weight_dtype; /* F32 or BF16: the dtype matrices are kept in */
    tm_mat embed;          /* [vocab, hidden] */
    tm_mat lm_head;        /* [vocab, hidden]; the embedding when tied */
    float *final_norm;     /* [hidden] f32 */
    tm_layer *layers;      /* [num_layers] */

    /* what was loaded, for inspect */
    size_t weight_bytes;   /* bytes of weights held, in the chosen dtypes */
    size_t expert_bytes;   /* the part of weight_bytes that is experts */
    int n_used;
    tm_ignored *ignored;
    int n_ignored;
    int dtype_count[TM_DT_COUNT]; /* stored dtypes of the tensors used */
    uint64_t identity;     /* hash of config values and the tensor index */

    const void *synthetic; /* the mk_preset of a synthetic model, else NULL */
    uint64_t synthetic_seed;
    tm_arena arena;        /* weights held in memory: copies, conversions, synthetic */
} tm_model;

typedef struct {
    int weight_dtype;      /* -1: BF16 if the checkpoint's matrices are BF16, else F32 */
    int check_finite;      /* scan loaded weights for NaN/Inf (default 1) */
    int map_weights;       /* 1: matrices stay in the mmap'd files (no copy; 4 KiB pages);
                              0 (default): copied into huge-page memory, which decode streams faster */
    int load_dense;        /* attention, norms, router, embeddings, lm_head (default 1) */
    const unsigned char *expert_mask; /* [layers * experts]: 1 = load; NULL = all */
    const char *synthetic;   /* a mkmodel preset: build its seeded weights in memory, no files */
    uint64_t synthetic_seed; /* the seed mkmodel --seed would take (default 0) */
    int load_threads;        /* threads that build, copy and scan the weights, when more
                                than kern_threads() (restored after); 0: kern_threads() */
} model_load_params;

model_load_params model_default_load_params(void);
/* dir is ignored when p->synthetic is set.  A synthetic model holds exactly
 * the bytes `trustmoe mkmodel --preset NAME --seed S` writes, but builds only
 * the tensors this process loads (a worker: its own experts). */
tm_status model_load(tm_model *m, const char *dir, const model_load_params *p, tm_err *err);
void model_free(tm_model *m);

/* ---- forward ------------------------------------------------------------- */

/* Expert selection after the router's float32 softmax.  probs: [experts];
 * writes k ids and their mixing weights.  NULL selector: the model's own
 * top-k (renormalised when norm_topk_prob). */
typedef struct {
    int (*select)(void *ctx, int layer, int token, const float *probs, int k, int norm_topk, int32_t *ids,
                  float *w);
    void *ctx;
} tm_selector;

/* The model's own routing: top-k of probs (ties to the lower id), weights
 * renormalised over the chosen when norm_topk. */
void model_route_topk(const float *probs, int n_experts, int k, int norm_topk, int32_t *ids, float *w);

typedef struct {
    int max_ctx;        /* KV cache length per sequence */
    int max_tokens;     /* most tokens in one forward call */
    int n_seq;          /* sequences sharing this state (batched generation) */
    int *seq_len;       /* [n_seq] tokens already in each sequence's cache */
    int *seq_next;      /* [n_seq] scratch: next free position during a call */
    int *tok_seq;       /* [max_tokens] sequence of each token of the call */
    int *tok_pos;       /* [max_tokens] position of each token of the call */
    float *k_cache;     /* [layers, n_seq, max_ctx, kv_heads * head_dim] f32 */
    float *v_cache;     /* [layers, n_seq, max_ctx, kv_heads * head_dim] f32 */
    float *inv_freq;    /* [head_dim / 2] f32, from rope_theta */
    float *x;           /* [T, hidden] residual stream */
    float *xn;          /* [T, hidden] normed */
    float *q;           /* [T, heads * head_dim] */
    float *k;           /* [T, kv_heads * head_dim] */
    float *v;           /* [T, kv_heads * head_dim] */
    float *att;         /* [T, heads * head_dim] */
    float *scores;      /* [att_slots, ATT_QBLOCK * heads / kv_heads, max_ctx] attention probabilities, per thread */
    int *att_blk;       /* [max_tokens + 1] the token blocks of an attention pass (their first tokens) */
    int att_slots;      /* threads the attention pass may use: kern_threads() at state_init */
    float *probs;       /* [T, experts] */
    int32_t *sel_ids;   /* [T, top_k] */
    float *sel_w;       /* [T, top_k] */
    float *moe_out;     /* [T, hidden] */
    float *mlp_scratch; /* [T, 2 * max(inter, moe_inter)] dense MLP layers */
    float *dec_scratch; /* [top_k, 2 * moe_inter + hidden] one-token expert outputs */
    expert_group grp;   /* the local experts of a batch of T > 1, sized for T * top_k pairs;
                           its counters also take the one-token calls */
    expert_group_stats moe_first; /* grp's counters after the first forward call */
    int n_calls;        /* forward calls completed */
    /* per-call observers (may be NULL) */
    void (*on_hidden)(void *ctx, int layer, const float *x, int T); /* residual after each layer */
    void (*on_route)(void *ctx, int layer, const int32_t *ids, const float *w, const float *probs, int T);
    void *observer_ctx;
    const tm_model *local_model; /* the model model_local_backend computes experts of */
    /* timings, seconds, accumulated; t_attn_core is the part of t_attn
     * between the projections (q/k norms, RoPE, scores and values) */
    double t_attn, t_attn_core, t_route, t_moe, t_head;
} tm_state;

/* One sequence. */
tm_status state_init(tm_state *s, const tm_model *m, int max_ctx, int max_tokens, tm_err *err);
/* n_seq sequences, each with its own KV cache of max_ctx tokens. */
tm_status state_init_batch(tm_state *s, const tm_model *m, int n_seq, int max_ctx, int max_tokens, tm_err *err);
void state_free(tm_state *s);
void state_reset(tm_state *s); /* empty every sequence's KV cache */

/* Compute experts locally from m's weights (all experts must be loaded). */
moe_backend model_local_backend(const tm_model *m, tm_state *s);

/* Run T tokens of sequence 0 at positions seq_len[0].. and advance it.
 * logits: [T, vocab] when all_logits, else [1, vocab] for the last token;
 * NULL skips the head.  Returns TM_OK, TM_EINPUT (context full, id out of
 * range; err says which) or TM_EFAIL (backend failure, already reported). */
tm_status model_forward(const tm_model *m, tm_state *s, const int32_t *ids, int T, moe_backend *be,
                        const tm_selector *sel, float *logits, int all_logits, tm_err *err);
/* Batched: token t belongs to sequence seq[t] and takes the next position of
 * that sequence (tokens of one sequence in order).  Attention runs per
 * sequence; the router, selection and experts see all T tokens at once.
 * logits: [T, vocab] (NULL skips the head). */
tm_status model_forward_batch(const tm_model *m, tm_state *s, const int32_t *ids, const int *seq, int T,
                              moe_backend *be, const tm_selector *sel, float *logits, tm_err *err);

/* Batched as above, with the LM head only over rows[0..n_rows) (ascending
 * token indices): logits [n_rows, vocab].  The scheduler's step: a prompt
 * chunk needs no logits until its last token. */
tm_status model_forward_rows(const tm_model *m, tm_state *s, const int32_t *ids, const int *seq, int T,
                             moe_backend *be, const tm_selector *sel, const int *rows, int n_rows, float *logits,
                             tm_err *err);

/* RoPE helpers (exposed for tests). */
void rope_inv_freq(float *inv_freq, int head_dim, float theta);
/* Rotate-half RoPE over n_heads heads of x[n_heads, head_dim] at position pos. */
void rope_apply(float *x, int n_heads, int head_dim, const float *inv_freq, int pos);
/* Interleaved MRoPE (Qwen3-Omni): frequency slot j takes the T, H or W
 * position by the interleaved layout of `section` (T,H,W counts). */
void mrope_apply(float *x, int n_heads, int head_dim, const float *inv_freq, const int section[3], int pos_t,
                 int pos_h, int pos_w);

#endif
