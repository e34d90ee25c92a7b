/* model.c: loading a Qwen3-MoE / Qwen3-Omni-thinker checkpoint into tm_model.
 * The forward pass is in forward.c. */
#include "model.h"

#include "kernels.h"
#include "mkmodel.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

model_load_params model_default_load_params(void)
{
    model_load_params p = {.weight_dtype = -1, .check_finite = 1, .load_dense = 1, .expert_mask = NULL};
    return p;
}

/* ---- bookkeeping --------------------------------------------------------- */

typedef struct {
    tm_model *m;
    const model_load_params *p;
    unsigned char *used; /* [n_tensors] */
    tm_err *err;
} loader;

static void *own(tm_model *m, size_t bytes) { return tm_arena_alloc(&m->arena, bytes); }

typedef struct {
    char *dst;
    const char *src;
} copy_job;

static void copy_range(void *arg, int64_t i0, int64_t i1)
{
    const copy_job *j = arg;
    memcpy(j->dst + i0, j->src + i0, (size_t)(i1 - i0));
}

/* A mapped tensor's bytes into huge-page memory, on the thread pool. */
static void *own_copy(tm_model *m, const void *src, size_t bytes)
{
    copy_job j = {own(m, bytes), src};
    kern_parallel_for((int64_t)bytes, 1 << 20, copy_range, &j);
    return j.dst;
}

static void tname(char *buf, size_t cap, const tm_model *m, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void tname(char *buf, size_t cap, const tm_model *m, const char *fmt, ...)
{
    int n = snprintf(buf, cap, "%s", m->cfg.tensor_prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, cap - (size_t)n, fmt, ap);
    va_end(ap);
}

typedef struct {
    const mk_preset *preset;
    uint64_t seed;
    const char *name;
    uint16_t *out; /* [numel] bf16 */
} fill_job;

static void fill_range(void *arg, int64_t i0, int64_t i1)
{
    const fill_job *j = arg;
    TM_ASSERT(mk_fill_tensor(j->preset, j->seed, j->name, j->out + i0, (size_t)i0, (size_t)(i1 - i0)) == 0);
}

static tm_status find(loader *L, const char *name, const char *what, const st_tensor **out)
{
    const st_tensor *t = st_find(&L->m->st, name);
    if (!t) return tm_errf(L->err, TM_EINPUT, "%s: tensor '%s' is missing (%s)", L->m->dir, name, what);
    if (!t->data && L->m->synthetic) {
        /* built on first use, so a worker builds only its own experts */
        st_tensor *w = &L->m->st.tensors[t - L->m->st.tensors];
        fill_job job = {L->m->synthetic, L->m->synthetic_seed, name, own(L->m, w->nbytes)};
        kern_parallel_for((int64_t)st_numel(w), 1 << 16, fill_range, &job);
        w->data = job.out;
    }
    st_prefetch(&L->m->st, t);
    if (t->dtype < 0)
        return tm_errf(L->err, TM_EINPUT, "%s: tensor '%s': dtype '%s' is not supported (BF16, F16, F32, F64)",
                       st_path(&L->m->st, t), name, t->dtype_str);
    L->used[t - L->m->st.tensors] = 1;
    L->m->n_used++;
    L->m->dtype_count[t->dtype]++;
    *out = t;
    return TM_OK;
}

static tm_status check_shape(loader *L, const st_tensor *t, int ndim, const int64_t *want)
{
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == want[i];
    if (ok) return TM_OK;
    char got[128] = "", exp[128] = "";
    size_t g = 0, e = 0;
    for (int i = 0; i < t->ndim; i++)
        g += (size_t)snprintf(got + g, sizeof got - g, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    for (int i = 0; i < ndim; i++)
        e += (size_t)snprintf(exp + e, sizeof exp - e, "%s%lld", i ? ", " : "", (long long)want[i]);
    return tm_errf(L->err, TM_EINPUT, "%s: tensor '%s': shape [%s] does not match the config (expected [%s])",
                   st_path(&L->m->st, t), t->name, got, exp);
}

typedef struct {
    tm_dtype dt;
    const char *data;
    atomic_size_t bad;
} scan_job;

static void scan_range(void *arg, int64_t i0, int64_t i1)
{
    scan_job *j = arg;
    size_t bad = tm_count_nonfinite(j->dt, j->data + (size_t)i0 * tm_dtype_size(j->dt), (size_t)(i1 - i0));
    if (bad) atomic_fetch_add(&j->bad, bad);
}

static tm_status check_finite(loader *L, const st_tensor *t, tm_dtype dt, const void *data, size_t n)
{
    if (!L->p->check_finite) return TM_OK;
    scan_job job = {dt, data, 0};
    kern_parallel_for((int64_t)n, 1 << 16, scan_range, &job); /* a mapped file's pages come in on every thread */
    size_t bad = atomic_load(&job.bad);
    if (bad)
        return tm_errf(L->err, TM_EINPUT,
                       "%s: tensor '%s' holds %zu non-finite values (NaN or Inf)%s; --no-check-finite skips this scan",
                       st_path(&L->m->st, t), t->name, bad, dt != (tm_dtype)t->dtype ? " after conversion to F32" : "");
    return TM_OK;
}

/* A matrix view of `rows` x `cols` starting at element `offset` of tensor t,
 * kept in BF16 or F32 as the weight dtype allows, converted explicitly
 * otherwise. */
static tm_status bind_mat(loader *L, const st_tensor *t, size_t offset, int64_t rows, int64_t cols, tm_mat *out,
                          int is_expert)
{
    tm_model *m = L->m;
    tm_dtype src = (tm_dtype)t->dtype;
    size_t n = (size_t)rows * (size_t)cols;
    const char *base = (const char *)t->data + offset * tm_dtype_size(src);
    out->rows = rows;
    out->cols = cols;
    if (src == TM_DT_F32 || (src == TM_DT_BF16 && m->weight_dtype == TM_DT_BF16)) {
        out->dtype = src;
        out->data = base;
        if (!L->p->map_weights && t->file >= 0) out->data = own_copy(m, base, n * tm_dtype_size(src));
    } else {
        float *dst = own(m, n * sizeof(float));
        tm_convert_to_f32(src, base, dst, n);
        out->dtype = TM_DT_F32;
        out->data = dst;
    }
    tm_status st = check_finite(L, t, out->dtype, out->data, n);
    if (out->data != base) {
        /* the stored copy is no longer needed in memory */
        st_tensor part = *t;
        part.data = base;
        part.nbytes = n * tm_dtype_size(src);
        st_release(&m->st, &part);
    }
    size_t bytes = n * tm_dtype_size(out->dtype);
    m->weight_bytes += bytes;
    if (is_expert) m->expert_bytes += bytes;
    return st;
}

static tm_status load_mat(loader *L, const char *name, const char *what, int64_t rows, int64_t cols, tm_mat *out)
{
    const st_tensor *t;
    tm_status st = find(L, name, what, &t);
    int64_t shape[2] = {rows, cols};
    if (st == TM_OK) st = check_shape(L, t, 2, shape);
    if (st == TM_OK) st = bind_mat(L, t, 0, rows, cols, out, 0);
    return st;
}

/* Vectors (norm weights) are always converted to float32. */
static tm_status load_vec(loader *L, const char *name, const char *what, int64_t n, float **out)
{
    const st_tensor *t;
    tm_status st = find(L, name, what, &t);
    if (st == TM_OK) st = check_shape(L, t, 1, &n);
    if (st != TM_OK) return st;
    *out = own(L->m, (size_t)n * sizeof(float));
    tm_convert_to_f32((tm_dtype)t->dtype, t->data, *out, (size_t)n);
    L->m->weight_bytes += (size_t)n * sizeof(float);
    return check_finite(L, t, TM_DT_F32, *out, (size_t)n);
}

/* ---- experts: per-expert (hub) or fused (transformers v5) ------------------ */

static int hosted(const loader *L, int layer, int e)
{
    return !L->p->expert_mask || L->p->expert_mask[(size_t)layer * (size_t)L->m->cfg.num_experts + (size_t)e];
}

static tm_status load_experts(loader *L, int l)
{
    tm_model *m = L->m;
    const tm_config *c = &m->cfg;
    int64_t H = c->hidden_size, I = c->moe_intermediate_size, E = c->num_experts;
    tm_layer *ly = &m->layers[l];
    ly->experts = tm_calloc((size_t)E, sizeof(tm_expert));
    char name[512], name2[512];
    tname(name, sizeof name, m, "model.layers.%d.mlp.experts.gate_up_proj", l);
    tname(name2, sizeof name2, m, "model.layers.%d.mlp.experts.down_proj", l);
    tm_status st = TM_OK;
    if (st_find(&m->st, name)) {
        const st_tensor *gu, *dn;
        int64_t s_gu[3] = {E, 2 * I, H}, s_dn[3] = {E, H, I};
        if ((st = find(L, name, "fused experts", &gu)) != TM_OK) return st;
        if ((st = find(L, name2, "fused experts", &dn)) != TM_OK) return st;
        if ((st = check_shape(L, gu, 3, s_gu)) != TM_OK) return st;
        if ((st = check_shape(L, dn, 3, s_dn)) != TM_OK) return st;
        for (int e = 0; e < E && st == TM_OK; e++) {
            if (!hosted(L, l, e)) continue;
            tm_expert *x = &ly->experts[e];
            size_t base = (size_t)e * (size_t)(2 * I * H);
            if ((st = bind_mat(L, gu, base, I, H, &x->gate, 1)) != TM_OK) break;
            if ((st = bind_mat(L, gu, base + (size_t)(I * H), I, H, &x->up, 1)) != TM_OK) break;
            st = bind_mat(L, dn, (size_t)e * (size_t)(H * I), H, I, &x->down, 1);
        }
        return st;
    }
    for (int e = 0; e < E; e++) {
        if (!hosted(L, l, e)) continue;
        tm_expert *x = &ly->experts[e];
        static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
        tm_mat *dst[3] = {&x->gate, &x->up, &x->down};
        for (int j = 0; j < 3; j++) {
            tname(name, sizeof name, m, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, proj[j]);
            int64_t rows = j == 2 ? H : I, cols = j == 2 ? I : H;
            if ((st = load_mat(L, name, "expert weights", rows, cols, dst[j])) != TM_OK) return st;
            m->expert_bytes += (size_t)(rows * cols) * tm_dtype_size(dst[j]->dtype);
        }
    }
    return TM_OK;
}

/* ---- the whole model ----------------------------------------------------- */

static tm_status load_layer(loader *L, int l)
{
    tm_model *m = L->m;
    const tm_config *c = &m->cfg;
    tm_layer *ly = &m->layers[l];
    int64_t H = c->hidden_size, D = c->head_dim;
    char n[512];
    tm_status st = TM_OK;
    ly->is_moe = cfg_layer_is_moe(c, l);
    if (L->p->load_dense) {
#define MAT(field, rows, cols, fmt)                                                                                   \
    tname(n, sizeof n, m, fmt, l);                                                                                    \
    if ((st = load_mat(L, n, "attention", rows, cols, &ly->field)) != TM_OK) return st
#define VEC(field, len, fmt)                                                                                          \
    tname(n, sizeof n, m, fmt, l);                                                                                    \
    if ((st = load_vec(L, n, "norm", len, &ly->field)) != TM_OK) return st
        VEC(attn_norm, H, "model.layers.%d.input_layernorm.weight");
        VEC(ffn_norm, H, "model.layers.%d.post_attention_layernorm.weight");
        VEC(q_norm, D, "model.layers.%d.self_attn.q_norm.weight");
        VEC(k_norm, D, "model.layers.%d.self_attn.k_norm.weight");
        MAT(wq, c->num_heads * D, H, "model.layers.%d.self_attn.q_proj.weight");
        MAT(wk, c->num_kv_heads * D, H, "model.layers.%d.self_attn.k_proj.weight");
        MAT(wv, c->num_kv_heads * D, H, "model.layers.%d.self_attn.v_proj.weight");
        MAT(wo, H, c->num_heads * D, "model.layers.%d.self_attn.o_proj.weight");
#undef MAT
#undef VEC
        if (ly->is_moe) {
            tname(n, sizeof n, m, "model.layers.%d.mlp.gate.weight", l);
            if ((st = load_mat(L, n, "router", c->num_experts, H, &ly->router)) != TM_OK) return st;
        } else {
            int64_t I = c->intermediate_size;
            tname(n, sizeof n, m, "model.layers.%d.mlp.gate_proj.weight", l);
            if ((st = load_mat(L, n, "dense MLP", I, H, &ly->dense.gate)) != TM_OK) return st;
            tname(n, sizeof n, m, "model.layers.%d.mlp.up_proj.weight", l);
            if ((st = load_mat(L, n, "dense MLP", I, H, &ly->dense.up)) != TM_OK) return st;
            tname(n, sizeof n, m, "model.layers.%d.mlp.down_proj.weight", l);
            if ((st = load_mat(L, n, "dense MLP", H, I, &ly->dense.down)) != TM_OK) return st;
        }
    }
    if (ly->is_moe) st = load_experts(L, l);
    return st;
}

static const char *ignore_reason(const tm_model *m, const char *name)
{
    const char *p = m->cfg.tensor_prefix;
    size_t pl = strlen(p);
    if (strstr(name, "rotary_emb.inv_freq")) return "RoPE frequencies are computed in float32 from the config";
    if (pl && strncmp(name, p, pl)) return "not part of the thinker (talker, code2wav, ...)";
    const char *rest = name + pl;
    if (!strncmp(rest, "audio_tower.", 12)) return "audio encoder: text-only inference";
    if (!strncmp(rest, "visual.", 7)) return "vision encoder: text-only inference";
    if (strstr(rest, ".mlp.experts.")) return "expert not hosted on this rank";
    if (!strncmp(rest, "model.", 6) || !strncmp(rest, "lm_head", 7)) return "not used by the text decoder";
    return "not part of the text model";
}

/* The config mkmodel writes for a preset. */
static void synthetic_config(tm_config *c, const mk_preset *p)
{
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "qwen3_moe");
    snprintf(c->architecture, sizeof c->architecture, "Qwen3MoeForCausalLM (synthetic %s)", p->name);
    c->vocab_size = p->vocab;
    c->hidden_size = p->hidden;
    c->num_layers = p->n_layers;
    c->num_heads = p->n_heads;
    c->num_kv_heads = p->n_kv_heads;
    c->head_dim = p->head_dim;
    c->head_dim_from_config = 1;
    c->moe_intermediate_size = p->moe_inter;
    c->intermediate_size = p->dense_inter;
    c->num_experts = p->n_experts;
    c->top_k = p->top_k;
    c->norm_topk_prob = p->norm_topk_prob;
    c->decoder_sparse_step = 1;
    c->rope_theta = (float)p->rope_theta;
    c->rms_norm_eps = (float)p->rms_eps;
    c->max_position_embeddings = p->max_pos;
    c->bos_token_id = p->vocab > 151645 ? 151643 : p->vocab - 2;
    c->eos_ids[c->n_eos++] = p->vocab > 151645 ? 151645 : p->vocab - 1;
}

static tm_status open_synthetic(tm_model *m, const model_load_params *p, tm_err *err)
{
    const mk_preset *pre = mk_preset_find(p->synthetic);
    if (!pre) {
        char names[256] = "";
        for (int i = 0; i < mk_preset_count(); i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", mk_preset_at(i)->name);
        return tm_errf(err, TM_EINPUT, "--synthetic %s: unknown preset (%s)", p->synthetic, names);
    }
    m->synthetic = pre;
    m->synthetic_seed = p->synthetic_seed;
    snprintf(m->dir, sizeof m->dir, "synthetic:%s:seed=%llu", pre->name, (unsigned long long)p->synthetic_seed);
    synthetic_config(&m->cfg, pre);
    for (int64_t i = 0; i < mk_tensor_count(pre); i++) {
        mk_tensor t;
        mk_tensor_at(pre, i, &t);
        st_add_virtual(&m->st, t.name, TM_DT_BF16, t.ndim, t.shape);
    }
    st_index(&m->st);
    return TM_OK;
}

tm_status model_load(tm_model *m, const char *dir, const model_load_params *p, tm_err *err)
{
    memset(m, 0, sizeof *m);
    model_load_params defaults = model_default_load_params();
    if (!p) p = &defaults;
    tm_status st;
    if (p->synthetic) {
        if ((st = open_synthetic(m, p, err)) != TM_OK) return st;
    } else {
        snprintf(m->dir, sizeof m->dir, "%s", dir);
        if ((st = cfg_load(&m->cfg, dir, err)) != TM_OK) return st;
        if ((st = st_open_dir(&m->st, dir, err)) != TM_OK) return st;
        if (p->expert_mask) st_advise_sparse(&m->st);
    }
    const tm_config *c = &m->cfg;

    /* weight dtype: BF16 when the checkpoint's matrices are BF16 */
    if (p->weight_dtype >= 0) {
        m->weight_dtype = (tm_dtype)p->weight_dtype;
    } else {
        char n[512];
        tname(n, sizeof n, m, "model.layers.0.self_attn.q_proj.weight");
        const st_tensor *t = st_find(&m->st, n);
        m->weight_dtype = t && t->dtype == TM_DT_BF16 ? TM_DT_BF16 : TM_DT_F32;
    }
    if (m->weight_dtype != TM_DT_BF16 && m->weight_dtype != TM_DT_F32)
        return tm_errf(err, TM_EINPUT, "weight dtype must be bf16 or f32");

    /* the run's -t may be one core of a host that has more for the load */
    int run_threads = kern_threads();
    if (p->load_threads > run_threads) kern_set_threads(p->load_threads);
    loader L = {m, p, tm_calloc((size_t)m->st.n_tensors, 1), err};
    m->layers = tm_calloc((size_t)c->num_layers, sizeof(tm_layer));
    char n[512];
    if (p->load_dense) {
        tname(n, sizeof n, m, "model.embed_tokens.weight");
        if ((st = load_mat(&L, n, "embeddings", c->vocab_size, c->hidden_size, &m->embed)) != TM_OK) goto out;
        tname(n, sizeof n, m, "model.norm.weight");
        if ((st = load_vec(&L, n, "final norm", c->hidden_size, &m->final_norm)) != TM_OK) goto out;
        if (c->tie_word_embeddings) {
            m->lm_head = m->embed;
        } else {
            tname(n, sizeof n, m, "lm_head.weight");
            if ((st = load_mat(&L, n, "lm_head", c->vocab_size, c->hidden_size, &m->lm_head)) != TM_OK) goto out;
        }
    }
    for (int l = 0; l < c->num_layers; l++)
        if ((st = load_layer(&L, l)) != TM_OK) goto out;

    /* everything not used is listed with its reason */
    uint64_t h = 1469598103934665603ull;
#define MIX(v) h = (h ^ (uint64_t)(v)) * 1099511628211ull
    MIX(c->vocab_size); MIX(c->hidden_size); MIX(c->num_layers); MIX(c->num_heads); MIX(c->num_kv_heads);
    MIX(c->head_dim); MIX(c->moe_intermediate_size); MIX(c->intermediate_size); MIX(c->num_experts);
    MIX(c->top_k); MIX(c->norm_topk_prob); MIX(c->decoder_sparse_step); MIX(c->tie_word_embeddings);
    /* synthetic weights are named by their seed: ranks that built different
     * seeds must not pass the handshake */
    MIX(m->synthetic != NULL);
    MIX(m->synthetic_seed);
    uint32_t bits;
    memcpy(&bits, &c->rope_theta, 4); MIX(bits);
    memcpy(&bits, &c->rms_norm_eps, 4); MIX(bits);
    for (int i = 0; i < m->st.n_tensors; i++) {
        const st_tensor *t = &m->st.tensors[i];
        for (const char *s = t->name; *s; s++) MIX((unsigned char)*s);
        MIX(t->dtype); MIX(t->nbytes);
        for (int d = 0; d < t->ndim; d++) MIX(t->shape[d]);
        if (L.used[i]) continue;
        const char *why = ignore_reason(m, t->name);
        if (!strcmp(why, "expert not hosted on this rank")) continue; /* counted, not listed */
        m->ignored = tm_realloc(m->ignored, sizeof(tm_ignored) * (size_t)(m->n_ignored + 1));
        m->ignored[m->n_ignored].name = tm_strdup(t->name);
        snprintf(m->ignored[m->n_ignored].reason, sizeof m->ignored[0].reason, "%s", why);
        m->n_ignored++;
    }
#undef MIX
    m->identity = h;
out:
    if (kern_threads() != run_threads) kern_set_threads(run_threads);
    free(L.used);
    if (st != TM_OK) model_free(m);
    return st;
}

void model_free(tm_model *m)
{
    if (m->layers)
        for (int l = 0; l < m->cfg.num_layers; l++) free(m->layers[l].experts);
    free(m->layers);
    tm_arena_free(&m->arena);
    for (int i = 0; i < m->n_ignored; i++) free(m->ignored[i].name);
    free(m->ignored);
    st_close(&m->st);
    memset(m, 0, sizeof *m);
}
