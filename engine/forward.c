/* forward.c: the coordinator's forward pass: embeddings, attention with a KV
 * cache, router and selection, the MoE block through a moe_backend, final
 * norm and lm_head.  Everything is float32; nothing is allocated per call. */
#include "model.h"

#include "kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tokens per block of the attention pass at most (the scores scratch holds
 * that many tokens' heads per thread). */
#define ATT_QBLOCK 8

/* ---- RoPE ---------------------------------------------------------------- */

void rope_inv_freq(float *inv_freq, int head_dim, float theta)
{
    /* as transformers: base ** (arange(0, dim, 2).float() / dim), in float32 */
    for (int j = 0; j < head_dim / 2; j++)
        inv_freq[j] = 1.0f / powf(theta, (float)(2 * j) / (float)head_dim);
}

static void rotate(float *x, int n_heads, int head_dim, const float *ang)
{
    int half = head_dim / 2;
    for (int j = 0; j < half; j++) {
        float c = cosf(ang[j]), s = sinf(ang[j]);
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)h * head_dim;
            float a = v[j], b = v[j + half];
            v[j] = a * c - b * s;
            v[j + half] = b * c + a * s;
        }
    }
}

#define ROPE_MAX_HALF (CFG_MAX_HEAD_DIM / 2) /* config validation keeps head_dim within it */

void rope_apply(float *x, int n_heads, int head_dim, const float *inv_freq, int pos)
{
    float ang[ROPE_MAX_HALF];
    TM_ASSERT(head_dim / 2 <= ROPE_MAX_HALF);
    for (int j = 0; j < head_dim / 2; j++) ang[j] = (float)pos * inv_freq[j];
    rotate(x, n_heads, head_dim, ang);
}

void mrope_apply(float *x, int n_heads, int head_dim, const float *inv_freq, const int section[3], int pos_t,
                 int pos_h, int pos_w)
{
    /* Interleaved layout THW THW ... TTT: slot j takes H when j % 3 == 1 and
     * j < 3 * section[1], W when j % 3 == 2 and j < 3 * section[2], else T. */
    float ang[ROPE_MAX_HALF];
    TM_ASSERT(head_dim / 2 <= ROPE_MAX_HALF);
    for (int j = 0; j < head_dim / 2; j++) {
        int pos = pos_t;
        if (j % 3 == 1 && j < 3 * section[1]) pos = pos_h;
        if (j % 3 == 2 && j < 3 * section[2]) pos = pos_w;
        ang[j] = (float)pos * inv_freq[j];
    }
    rotate(x, n_heads, head_dim, ang);
}

/* ---- routing ------------------------------------------------------------- */

void model_route_topk(const float *probs, int n_experts, int k, int norm_topk, int32_t *ids, float *w)
{
    /* one pass keeping the best k sorted by descending probability; an
     * expert enters only above the current k-th, so ties keep the lower id
     * first, as a stable descending sort would */
    int n = 0;
    for (int e = 0; e < n_experts; e++) {
        float p = probs[e];
        if (n == k && !(p > w[k - 1])) continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && w[j - 1] < p) {
            w[j] = w[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        w[j] = p;
        ids[j] = e;
    }
    if (norm_topk) {
        float s = 0.f;
        for (int j = 0; j < k; j++) s += w[j];
        for (int j = 0; j < k; j++) w[j] /= s;
    }
}

/* ---- state --------------------------------------------------------------- */

tm_status state_init(tm_state *s, const tm_model *m, int max_ctx, int max_tokens, tm_err *err)
{
    return state_init_batch(s, m, 1, max_ctx, max_tokens, err);
}

/* A zeroed buffer whose pages are all written here, at load: a call's
 * activations, which a first prefill would otherwise fault in page by page
 * in its first layer.  (The KV cache is left to fault in as it fills.) */
static void *calloc_touched(size_t n, size_t size)
{
    void *p = tm_malloc(n * size);
    memset(p, 0, n * size);
    return p;
}

tm_status state_init_batch(tm_state *s, const tm_model *m, int n_seq, int max_ctx, int max_tokens, tm_err *err)
{
    const tm_config *c = &m->cfg;
    memset(s, 0, sizeof *s);
    if (n_seq <= 0) return tm_errf(err, TM_EINPUT, "number of sequences must be positive (got %d)", n_seq);
    if (max_ctx <= 0) return tm_errf(err, TM_EINPUT, "context length must be positive (got %d)", max_ctx);
    if (max_ctx > c->max_position_embeddings)
        return tm_errf(err, TM_EINPUT, "context length %d exceeds max_position_embeddings %d", max_ctx,
                       c->max_position_embeddings);
    if (max_tokens <= 0) max_tokens = max_ctx;
    size_t T = (size_t)max_tokens, H = (size_t)c->hidden_size, D = (size_t)c->head_dim;
    size_t qd = (size_t)c->num_heads * D, kvd = (size_t)c->num_kv_heads * D;
    size_t inter = (size_t)TM_MAX(c->intermediate_size, c->moe_intermediate_size);
    s->max_ctx = max_ctx;
    s->max_tokens = max_tokens;
    s->n_seq = n_seq;
    s->seq_len = tm_calloc((size_t)n_seq, sizeof(int));
    s->seq_next = tm_calloc((size_t)n_seq, sizeof(int));
    s->tok_seq = tm_calloc(T, sizeof(int));
    s->tok_pos = tm_calloc(T, sizeof(int));
    size_t cache = (size_t)c->num_layers * (size_t)n_seq * (size_t)max_ctx * kvd;
    s->k_cache = tm_calloc(cache, sizeof(float));
    s->v_cache = tm_calloc(cache, sizeof(float));
    s->inv_freq = tm_calloc(D / 2, sizeof(float));
    rope_inv_freq(s->inv_freq, (int)D, c->rope_theta);
    s->x = calloc_touched(T * H, sizeof(float));
    s->xn = calloc_touched(T * H, sizeof(float));
    s->q = calloc_touched(T * qd, sizeof(float));
    s->k = calloc_touched(T * kvd, sizeof(float));
    s->v = calloc_touched(T * kvd, sizeof(float));
    s->att = calloc_touched(T * qd, sizeof(float));
    /* [ATT_QBLOCK tokens × group heads, max_ctx] per thread of the attention pass */
    s->att_slots = TM_MAX(1, kern_threads());
    s->scores = tm_calloc((size_t)s->att_slots * ATT_QBLOCK * (size_t)(c->num_heads / c->num_kv_heads) *
                              (size_t)max_ctx,
                          sizeof(float));
    s->att_blk = tm_calloc(T + 1, sizeof(int));
    s->probs = calloc_touched(T * (size_t)c->num_experts, sizeof(float));
    s->sel_ids = tm_calloc(T * (size_t)c->top_k, sizeof(int32_t));
    s->sel_w = tm_calloc(T * (size_t)c->top_k, sizeof(float));
    s->moe_out = calloc_touched(T * H, sizeof(float));
    s->mlp_scratch = tm_calloc(T * 2 * inter, sizeof(float));
    s->dec_scratch = tm_calloc((size_t)c->top_k * (2 * (size_t)c->moe_intermediate_size + H), sizeof(float));
    if (c->num_experts > 0 && c->moe_intermediate_size > 0)
        expert_group_init(&s->grp, c->num_experts, (int)H, c->moe_intermediate_size, (int)T * c->top_k);
    return TM_OK;
}

/* TRUSTMOE_EXPERT_STATS=1: what the local expert phase read and computed,
 * for the first forward call (a prefill) and the others (decode steps), so a
 * benchmark can put its time against the floor of the routing actually
 * taken. */
static void report_expert_stats(const tm_state *s)
{
    const char *env = getenv("TRUSTMOE_EXPERT_STATS");
    if (!env || strcmp(env, "1") || !s->grp.stats.calls) return;
    const expert_group_stats *a = &s->moe_first, *b = &s->grp.stats;
    expert_group_stats d = {b->calls - a->calls, b->pairs - a->pairs, b->bytes - a->bytes, b->flops - a->flops,
                            b->seconds - a->seconds, {0}};
    for (int i = 0; i < 4; i++) d.pass_s[i] = b->pass_s[i] - a->pass_s[i];
    const expert_group_stats *v[2] = {a, &d};
    for (int i = 0; i < 2; i++)
        fprintf(stderr, "trustmoe: local experts, %s: %llu layer calls, %llu pairs, %.4f GB of expert weights, "
                        "%.3f GFLOP, %.2f ms (grouped passes: pack %.2f, gate and up %.2f, down %.2f, combine %.2f ms)\n",
                i ? "later calls" : "first call", (unsigned long long)v[i]->calls, (unsigned long long)v[i]->pairs,
                v[i]->bytes / 1e9, v[i]->flops / 1e9, 1e3 * v[i]->seconds, 1e3 * v[i]->pass_s[0],
                1e3 * v[i]->pass_s[1], 1e3 * v[i]->pass_s[2], 1e3 * v[i]->pass_s[3]);
}

void state_free(tm_state *s)
{
    report_expert_stats(s);
    expert_group_free(&s->grp);
    free(s->seq_len); free(s->seq_next); free(s->tok_seq); free(s->tok_pos); free(s->k_cache); free(s->v_cache); free(s->inv_freq); free(s->x); free(s->xn); free(s->q); free(s->k);
    free(s->v); free(s->att); free(s->scores); free(s->att_blk); free(s->probs); free(s->sel_ids); free(s->sel_w);
    free(s->moe_out); free(s->mlp_scratch); free(s->dec_scratch);
    memset(s, 0, sizeof *s);
}

void state_reset(tm_state *s) { memset(s->seq_len, 0, sizeof(int) * (size_t)s->n_seq); }

/* ---- local experts --------------------------------------------------------- */

/* One token takes expert_one_token; a batch of T > 1 tokens the grouped
 * path (expert.h): two passes of the thread pool per layer, each weight row
 * read once. */
static int local_run_layer(moe_backend *b, int layer, const float *x, int T, const int32_t *ids, const float *w,
                           int k, float *out)
{
    tm_state *s = b->ctx;
    const tm_model *m = s->local_model;
    if (T == 1 && k <= KERN_MANY_MAX) {
        double t0 = tm_now();
        /* one pass of the pool for the gate and up products, one for the down */
        s->grp.stats.bytes += expert_one_token(m->layers[layer].experts, x, ids, w, k, out, s->dec_scratch);
        s->grp.stats.calls++;
        s->grp.stats.pairs += (uint64_t)k;
        s->grp.stats.flops += 6.0 * k * (double)m->cfg.hidden_size * (double)m->cfg.moe_intermediate_size;
        s->grp.stats.seconds += tm_now() - t0;
        return 0;
    }
    expert_group_run(&s->grp, m->layers[layer].experts, x, T, ids, w, k, out);
    return 0;
}

moe_backend model_local_backend(const tm_model *m, tm_state *s)
{
    s->local_model = m;
    moe_backend b = {local_run_layer, s};
    return b;
}

/* ---- attention ------------------------------------------------------------- */

/* One layer's attention for the T tokens of a call, in two passes of the
 * thread pool:
 *   1. per token: q/k RMSNorm, RoPE, and its K and V into the cache;
 *   2. per (KV head, block of tokens): the group of query heads sharing that
 *      KV head, for up to ATT_QBLOCK consecutive tokens of one sequence (a
 *      prefill's run of positions), against the keys of the sequence up to
 *      each token's own position (causal), through kern_attend_block.  Items
 *      are taken from a shared counter, the last blocks (the longest, in a
 *      prefill) first; each writes only its own output, so the result does
 *      not depend on the thread count or the order taken.
 * A token gets kern_attend_one's bits in any block, so prefill and decode
 * run the same arithmetic per query and the blocking may follow the batch. */
#define ATT_PAR_MIN ((int64_t)1 << 16)

typedef struct {
    const tm_model *m;
    tm_state *s;
    int l, T;
    float *kl, *vl;          /* this layer's caches: [n_seq, max_ctx, kv_heads * head_dim] f32 */
    int n_blk;               /* pass 2: token blocks, starting at s->att_blk[b] */
    atomic_int next;         /* pass 2: the next item */
} attn_task;

static void attn_rope_rows(void *arg, int64_t t0, int64_t t1)
{
    const attn_task *a = arg;
    const tm_config *c = &a->m->cfg;
    const tm_layer *ly = &a->m->layers[a->l];
    tm_state *s = a->s;
    int D = c->head_dim, nh = c->num_heads, nkv = c->num_kv_heads, qd = nh * D, kvd = nkv * D;
    size_t seq_stride = (size_t)s->max_ctx * kvd;
    for (int64_t t = t0; t < t1; t++) {
        int pos = s->tok_pos[t];
        float *kc = a->kl + (size_t)s->tok_seq[t] * seq_stride, *vc = a->vl + (size_t)s->tok_seq[t] * seq_stride;
        float *q = s->q + (size_t)t * qd, *k = s->k + (size_t)t * kvd;
        for (int h = 0; h < nh; h++) kern_rmsnorm(q + h * D, q + h * D, ly->q_norm, D, c->rms_norm_eps);
        for (int h = 0; h < nkv; h++) kern_rmsnorm(k + h * D, k + h * D, ly->k_norm, D, c->rms_norm_eps);
        if (c->has_mrope) {
            /* text only: the temporal, height and width positions are equal */
            mrope_apply(q, nh, D, s->inv_freq, c->mrope_section, pos, pos, pos);
            mrope_apply(k, nkv, D, s->inv_freq, c->mrope_section, pos, pos, pos);
        } else {
            rope_apply(q, nh, D, s->inv_freq, pos);
            rope_apply(k, nkv, D, s->inv_freq, pos);
        }
        memcpy(kc + (size_t)pos * kvd, k, sizeof(float) * (size_t)kvd);
        memcpy(vc + (size_t)pos * kvd, s->v + (size_t)t * kvd, sizeof(float) * (size_t)kvd);
    }
}

/* The pool calls this once per thread (range [slot, slot + 1)), or once with
 * the whole range when it runs serially; the slot picks the scores scratch. */
static void attn_items(void *arg, int64_t slot, int64_t slot_end)
{
    attn_task *a = arg;
    const tm_config *c = &a->m->cfg;
    tm_state *s = a->s;
    int D = c->head_dim, nh = c->num_heads, nkv = c->num_kv_heads, group = nh / nkv;
    int qd = nh * D, kvd = nkv * D;
    float scale = 1.0f / sqrtf((float)D);
    size_t seq_stride = (size_t)s->max_ctx * kvd;
    float *scores = s->scores + (size_t)slot * ATT_QBLOCK * group * s->max_ctx;
    (void)slot_end;
    for (int i; (i = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed)) < a->n_blk * nkv;) {
        int kh = i % nkv, b = a->n_blk - 1 - i / nkv; /* the last blocks first */
        int t = s->att_blk[b], n = s->att_blk[b + 1] - t;
        const float *kc = a->kl + (size_t)s->tok_seq[t] * seq_stride, *vc = a->vl + (size_t)s->tok_seq[t] * seq_stride;
        size_t off = (size_t)t * qd + (size_t)kh * group * D;
        kern_attend_block(s->q + off, s->att + off, qd, n, group, s->tok_pos[t] + 1, kc + (size_t)kh * D,
                          vc + (size_t)kh * D, kvd, D, scale, scores);
    }
}

/* x[t] += add[t] (when add is given), then out[t] = rmsnorm(x[t]) · norm
 * (when out is given), for the T rows of [T, H]: the residual and norm steps
 * between the passes, over the pool when the batch is large.  Per element
 * the same arithmetic at any thread count. */
typedef struct {
    float *x, *out;
    const float *add, *norm;
    int H;
    float eps;
} add_norm_task;

static void add_norm_rows(void *arg, int64_t t0, int64_t t1)
{
    const add_norm_task *a = arg;
    size_t H = (size_t)a->H;
    for (int64_t t = t0; t < t1; t++) {
        float *x = a->x + (size_t)t * H;
        if (a->add)
            for (size_t i = 0; i < H; i++) x[i] += a->add[(size_t)t * H + i];
        if (a->out) kern_rmsnorm(a->out + (size_t)t * H, x, a->norm, a->H, a->eps);
    }
}

#define ADD_NORM_PAR_MIN ((int64_t)1 << 16) /* elements: below, one thread (decode) */

static void add_norm(float *x, const float *add, float *out, const float *norm, int T, int H, float eps)
{
    add_norm_task a = {x, out, add, norm, H, eps};
    if (kern_threads() > 1 && (int64_t)T * H >= ADD_NORM_PAR_MIN) kern_parallel_for(T, 1, add_norm_rows, &a);
    else add_norm_rows(&a, 0, T);
}

/* Splits the T tokens into blocks of consecutive positions of one sequence,
 * at most ATT_QBLOCK tokens and few enough that the items (blocks × KV
 * heads) keep every thread fed; returns the count, s->att_blk[b] the first
 * token of block b and s->att_blk[count] == T. */
static int attn_blocks(tm_state *s, int T, int n_kv, int threads)
{
    int qb = TM_MAX(1, TM_MIN(ATT_QBLOCK, T * n_kv / (4 * threads))), n = 0;
    for (int t = 0; t < T; t++)
        if (t == 0 || s->tok_seq[t] != s->tok_seq[t - 1] || s->tok_pos[t] != s->tok_pos[t - 1] + 1 ||
            t - s->att_blk[n - 1] == qb)
            s->att_blk[n++] = t;
    s->att_blk[n] = T;
    return n;
}

static void attention(const tm_model *m, tm_state *s, int l, int T)
{
    const tm_config *c = &m->cfg;
    const tm_layer *ly = &m->layers[l];
    int H = c->hidden_size, kvd = c->num_kv_heads * c->head_dim;
    size_t layer_stride = (size_t)s->n_seq * s->max_ctx * kvd;

    add_norm(s->x, NULL, s->xn, ly->attn_norm, T, H, c->rms_norm_eps);
    kern_matmul(&ly->wq, s->xn, T, s->q);
    kern_matmul(&ly->wk, s->xn, T, s->k);
    kern_matmul(&ly->wv, s->xn, T, s->v);
    attn_task a = {m, s, l, T, s->k_cache + (size_t)l * layer_stride, s->v_cache + (size_t)l * layer_stride, 0, 0};
    /* Either pass runs on the calling thread when its work (multiply-adds,
     * roughly) is below a pool wake-up's worth: one decode token, tiny models. */
    double t0 = tm_now();
    int64_t qkd = (int64_t)(c->num_heads + c->num_kv_heads) * c->head_dim, keys = 0;
    for (int t = 0; t < T; t++) keys += s->tok_pos[t] + 1;
    if ((int64_t)T * qkd >= ATT_PAR_MIN) kern_parallel_for(T, 1, attn_rope_rows, &a);
    else attn_rope_rows(&a, 0, T);
    int slots = TM_MIN(kern_threads(), s->att_slots);
    a.n_blk = attn_blocks(s, T, c->num_kv_heads, slots);
    if (keys * 2 * c->num_heads * c->head_dim >= ATT_PAR_MIN && slots > 1) kern_parallel_for(slots, 1, attn_items, &a);
    else attn_items(&a, 0, 1);
    s->t_attn_core += tm_now() - t0;
    kern_matmul(&ly->wo, s->att, T, s->xn); /* xn reused as the projection output */
    /* the residual, then the feed-forward norm into xn (in place: each row's
     * projection is added before its norm overwrites it) */
    add_norm(s->x, s->xn, s->xn, ly->ffn_norm, T, H, c->rms_norm_eps);
}

/* ---- the forward pass -------------------------------------------------------- */

static tm_status run(const tm_model *m, tm_state *s, const int32_t *ids, int T, moe_backend *be,
                     const tm_selector *sel, float *logits, int first_logit, tm_err *err)
{
    const tm_config *c = &m->cfg;
    int H = c->hidden_size, E = c->num_experts, K = c->top_k;
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= c->vocab_size)
            return tm_errf(err, TM_EINPUT, "token id %d at position %d is outside the vocabulary (0..%d)", ids[t],
                           s->tok_pos[t], c->vocab_size - 1);

    for (int t = 0; t < T; t++) kern_row_f32(&m->embed, ids[t], s->x + (size_t)t * H);
    for (int l = 0; l < c->num_layers; l++) {
        const tm_layer *ly = &m->layers[l];
        double ta = tm_now();
        attention(m, s, l, T); /* leaves the feed-forward norm of x in xn */
        double tb = tm_now();
        s->t_attn += tb - ta;
        memset(s->moe_out, 0, sizeof(float) * (size_t)T * H);
        if (ly->is_moe) {
            kern_matmul(&ly->router, s->xn, T, s->probs);
            for (int t = 0; t < T; t++) {
                float *p = s->probs + (size_t)t * E;
                int32_t *id = s->sel_ids + (size_t)t * K;
                float *w = s->sel_w + (size_t)t * K;
                kern_softmax(p, E);
                if (sel && sel->select) {
                    if (sel->select(sel->ctx, l, t, p, K, c->norm_topk_prob, id, w) != 0)
                        return tm_errf(err, TM_EFAIL, "layer %d, token %d: expert selection failed", l, t);
                } else
                    model_route_topk(p, E, K, c->norm_topk_prob, id, w);
            }
            if (s->on_route) s->on_route(s->observer_ctx, l, s->sel_ids, s->sel_w, s->probs, T);
            double tc = tm_now();
            s->t_route += tc - tb;
            if (be->run_layer(be, l, s->xn, T, s->sel_ids, s->sel_w, K, s->moe_out) != 0)
                return tm_errf(err, TM_EFAIL, "layer %d: expert dispatch failed", l);
            s->t_moe += tm_now() - tc;
        } else {
            expert_forward(&ly->dense, s->xn, T, s->moe_out, s->mlp_scratch);
            s->t_moe += tm_now() - tb;
        }
        add_norm(s->x, s->moe_out, NULL, NULL, T, H, 0.0f);
        if (s->on_hidden) s->on_hidden(s->observer_ctx, l, s->x, T);
    }
    double th = tm_now();
    if (logits) {
        int n = T - first_logit;
        for (int t = first_logit; t < T; t++)
            kern_rmsnorm(s->xn + (size_t)(t - first_logit) * H, s->x + (size_t)t * H, m->final_norm, H, c->rms_norm_eps);
        kern_matmul(&m->lm_head, s->xn, n, logits);
    }
    s->t_head += tm_now() - th;
    return TM_OK;
}

/* Assigns positions; fails before any compute if a sequence would overflow. */
static tm_status place_tokens(tm_state *s, const int *seq, int T, tm_err *err)
{
    if (T <= 0) return tm_errf(err, TM_EINPUT, "empty input");
    if (T > s->max_tokens)
        return tm_errf(err, TM_EINPUT, "%d tokens in one pass exceed the %d allowed", T, s->max_tokens);
    for (int t = 0; t < T; t++) {
        int q = seq ? seq[t] : 0;
        if (q < 0 || q >= s->n_seq) return tm_errf(err, TM_EINPUT, "token %d: sequence %d out of range", t, q);
        s->tok_seq[t] = q;
    }
    memcpy(s->seq_next, s->seq_len, sizeof(int) * (size_t)s->n_seq);
    for (int t = 0; t < T; t++) {
        s->tok_pos[t] = s->seq_next[s->tok_seq[t]]++;
        int q = s->tok_seq[t];
        if (s->tok_pos[t] >= s->max_ctx)
            return tm_errf(err, TM_EINPUT, "context full: sequence %d would exceed the context length %d (-c)", q,
                           s->max_ctx);
    }
    return TM_OK;
}

static void advance(tm_state *s, int T)
{
    if (s->n_calls++ == 0) s->moe_first = s->grp.stats;
    for (int t = 0; t < T; t++)
        if (s->tok_pos[t] + 1 > s->seq_len[s->tok_seq[t]]) s->seq_len[s->tok_seq[t]] = s->tok_pos[t] + 1;
}

tm_status model_forward(const tm_model *m, tm_state *s, const int32_t *ids, int T, moe_backend *be,
                        const tm_selector *sel, float *logits, int all_logits, tm_err *err)
{
    tm_status st = place_tokens(s, NULL, T, err);
    if (st == TM_OK) st = run(m, s, ids, T, be, sel, logits, all_logits ? 0 : T - 1, err);
    if (st == TM_OK) advance(s, T);
    return st;
}

tm_status model_forward_batch(const tm_model *m, tm_state *s, const int32_t *ids, const int *seq, int T,
                              moe_backend *be, const tm_selector *sel, float *logits, tm_err *err)
{
    tm_status st = place_tokens(s, seq, T, err);
    if (st == TM_OK) st = run(m, s, ids, T, be, sel, logits, 0, err);
    if (st == TM_OK) advance(s, T);
    return st;
}

tm_status model_forward_rows(const tm_model *m, tm_state *s, const int32_t *ids, const int *seq, int T,
                             moe_backend *be, const tm_selector *sel, const int *rows, int n_rows, float *logits,
                             tm_err *err)
{
    const tm_config *c = &m->cfg;
    const int H = c->hidden_size;
    tm_status st = place_tokens(s, seq, T, err);
    if (st == TM_OK) st = run(m, s, ids, T, be, sel, NULL, 0, err);
    if (st != TM_OK) return st;
    double th = tm_now();
    for (int i = 0; i < n_rows; i++) {
        TM_ASSERT(rows[i] >= 0 && rows[i] < T);
        kern_rmsnorm(s->xn + (size_t)i * H, s->x + (size_t)rows[i] * H, m->final_norm, H, c->rms_norm_eps);
    }
    if (n_rows > 0) kern_matmul(&m->lm_head, s->xn, n_rows, logits);
    s->t_head += tm_now() - th;
    advance(s, T);
    return TM_OK;
}
