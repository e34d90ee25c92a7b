/* mkmodel.c: seeded synthetic checkpoints (format in mkmodel.h); the
 * `trustmoe mkmodel` command is coordinator/cli/cmd_mkmodel.c. */
#include "mkmodel.h"
#include "input.h"

#include "config.h"
#include "cpu.h"
#include "dtype.h"

#include <cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <immintrin.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- presets ----------------------------------------------------------------- */

static const mk_preset presets[] = {
    /* The Qwen3-Omni-30B-A3B thinker text model. */
    {.name = "omni30b", .n_layers = 48, .n_experts = 128, .top_k = 8, .hidden = 2048, .moe_inter = 768,
     .dense_inter = 768, .n_heads = 32, .n_kv_heads = 4, .head_dim = 128, .vocab = 152064, .max_pos = 65536,
     .rope_theta = 1e6, .rms_eps = 1e-6, .norm_topk_prob = 1},
    /* omni30b's shapes at 12 layers (16.2 GB): per-layer figures of the full
     * model on hosts where building 61 GB per run costs more than the run. */
    {.name = "omni30b-12", .n_layers = 12, .n_experts = 128, .top_k = 8, .hidden = 2048, .moe_inter = 768,
     .dense_inter = 768, .n_heads = 32, .n_kv_heads = 4, .head_dim = 128, .vocab = 152064, .max_pos = 65536,
     .rope_theta = 1e6, .rms_eps = 1e-6, .norm_topk_prob = 1},
    /* omni30b's shapes at 2 layers (3.2 GB with the embeddings and lm_head):
     * per-layer figures on a developer machine. */
    {.name = "omni30b-2", .n_layers = 2, .n_experts = 128, .top_k = 8, .hidden = 2048, .moe_inter = 768,
     .dense_inter = 768, .n_heads = 32, .n_kv_heads = 4, .head_dim = 128, .vocab = 152064, .max_pos = 65536,
     .rope_theta = 1e6, .rms_eps = 1e-6, .norm_topk_prob = 1},
    /* Same depth and expert count at a quarter of the width: 2.8 GB. */
    {.name = "omni48-small", .n_layers = 48, .n_experts = 128, .top_k = 8, .hidden = 512, .moe_inter = 128,
     .dense_inter = 128, .n_heads = 8, .n_kv_heads = 2, .head_dim = 64, .vocab = 151936, .max_pos = 40960,
     .rope_theta = 1e6, .rms_eps = 1e-6, .norm_topk_prob = 1},
    /* For tests: a few hundred KB. */
    {.name = "tiny", .n_layers = 4, .n_experts = 16, .top_k = 4, .hidden = 64, .moe_inter = 32,
     .dense_inter = 32, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16, .vocab = 512, .max_pos = 256,
     .rope_theta = 1e6, .rms_eps = 1e-6, .norm_topk_prob = 1},
};

const mk_preset *mk_preset_find(const char *name)
{
    for (size_t i = 0; i < TM_ARRAY_LEN(presets); i++)
        if (!strcmp(presets[i].name, name)) return &presets[i];
    return NULL;
}

int mk_preset_count(void) { return (int)TM_ARRAY_LEN(presets); }
const mk_preset *mk_preset_at(int i) { return i >= 0 && i < mk_preset_count() ? &presets[i] : NULL; }

tm_status mk_preset_from_config(const char *path, mk_preset *out, tm_err *err)
{
    char *text = NULL;
    size_t len;
    tm_status st = tm_read_file(path, &text, &len, err);
    if (st != TM_OK) return st;
    tm_config *c = tm_calloc(1, sizeof *c);
    st = cfg_parse(c, text, path, err);
    free(text);
    if (st == TM_OK) {
        for (int i = 0; i < c->num_layers && i < CFG_MAX_LAYERS; i++)
            if (!cfg_layer_is_moe(c, i)) {
                st = tm_errf(err, TM_EINPUT, "%s: layer %d is a dense MLP; mkmodel writes all-MoE models only",
                             path, i);
                break;
            }
    }
    if (st == TM_OK) {
        memset(out, 0, sizeof *out);
        const char *base = strrchr(path, '/');
        snprintf(out->name, sizeof out->name, "%s", base ? base + 1 : path);
        out->n_layers = c->num_layers;
        out->n_experts = c->num_experts;
        out->top_k = c->top_k;
        out->hidden = c->hidden_size;
        out->moe_inter = c->moe_intermediate_size;
        out->dense_inter = c->intermediate_size > 0 ? c->intermediate_size : c->moe_intermediate_size;
        out->n_heads = c->num_heads;
        out->n_kv_heads = c->num_kv_heads;
        out->head_dim = c->head_dim;
        out->vocab = c->vocab_size;
        out->max_pos = c->max_position_embeddings;
        out->rope_theta = c->rope_theta;
        out->rms_eps = c->rms_norm_eps;
        out->norm_topk_prob = c->norm_topk_prob;
        if (out->n_layers <= 0 || out->n_experts <= 0 || out->top_k <= 0 || out->top_k > out->n_experts ||
            out->hidden <= 0 || out->moe_inter <= 0 || out->n_heads <= 0 || out->n_kv_heads <= 0 ||
            out->head_dim <= 0 || out->vocab <= 0)
            st = tm_errf(err, TM_EINPUT, "%s: a size is missing or not positive (layers %d, experts %d, top-k %d, "
                         "hidden %d, moe_intermediate %d, heads %d/%d, head_dim %d, vocab %d)", path, out->n_layers,
                         out->n_experts, out->top_k, out->hidden, out->moe_inter, out->n_heads, out->n_kv_heads,
                         out->head_dim, out->vocab);
    }
    free(c);
    return st;
}

/* ---- tensors ----------------------------------------------------------------- */

/* Per layer: 9 fixed tensors, then gate/up/down of each expert. */
enum { PER_LAYER_FIXED = 9 };
static const char *const layer_fixed[PER_LAYER_FIXED] = {
    "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "self_attn.q_norm.weight",
    "self_attn.k_norm.weight", "post_attention_layernorm.weight", "mlp.gate.weight",
};
static const char *const expert_proj[3] = {"gate_proj", "up_proj", "down_proj"};

static int64_t per_layer(const mk_preset *p) { return PER_LAYER_FIXED + 3 * (int64_t)p->n_experts; }

int64_t mk_tensor_count(const mk_preset *p) { return 1 + (int64_t)p->n_layers * per_layer(p) + 2; }

static void set2(mk_tensor *t, int64_t rows, int64_t cols)
{
    t->ndim = 2;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->std = 1.0f / sqrtf((float)cols);
}

static void set_norm(mk_tensor *t, int64_t n)
{
    t->ndim = 1;
    t->shape[0] = n;
    t->shape[1] = 1;
    t->std = 0.0f;
}

/* Shape of the layer-relative tensor `rest` (after "model.layers.{i}."). */
static int layer_shape(const mk_preset *p, const char *rest, mk_tensor *t)
{
    int64_t H = p->hidden, Q = (int64_t)p->n_heads * p->head_dim, KV = (int64_t)p->n_kv_heads * p->head_dim;
    if (!strcmp(rest, "input_layernorm.weight") || !strcmp(rest, "post_attention_layernorm.weight")) set_norm(t, H);
    else if (!strcmp(rest, "self_attn.q_proj.weight")) set2(t, Q, H);
    else if (!strcmp(rest, "self_attn.k_proj.weight") || !strcmp(rest, "self_attn.v_proj.weight")) set2(t, KV, H);
    else if (!strcmp(rest, "self_attn.o_proj.weight")) set2(t, H, Q);
    else if (!strcmp(rest, "self_attn.q_norm.weight") || !strcmp(rest, "self_attn.k_norm.weight"))
        set_norm(t, p->head_dim);
    else if (!strcmp(rest, "mlp.gate.weight")) set2(t, p->n_experts, H);
    else if (!strncmp(rest, "mlp.experts.", 12)) {
        char *end;
        errno = 0;
        long e = strtol(rest + 12, &end, 10);
        if (end == rest + 12 || errno || e < 0 || e >= p->n_experts || *end != '.') return -1;
        if (end - (rest + 12) > 1 && rest[12] == '0') return -1; /* one spelling per tensor */
        if (!strcmp(end, ".gate_proj.weight") || !strcmp(end, ".up_proj.weight")) set2(t, p->moe_inter, H);
        else if (!strcmp(end, ".down_proj.weight")) set2(t, H, p->moe_inter);
        else return -1;
    } else return -1;
    return 0;
}

void mk_tensor_at(const mk_preset *p, int64_t i, mk_tensor *t)
{
    TM_ASSERT(i >= 0 && i < mk_tensor_count(p));
    int64_t last = mk_tensor_count(p) - 1;
    if (i == 0) {
        snprintf(t->name, sizeof t->name, "model.embed_tokens.weight");
        set2(t, p->vocab, p->hidden);
        t->std = 1.0f;
        return;
    }
    if (i == last - 1) {
        snprintf(t->name, sizeof t->name, "model.norm.weight");
        set_norm(t, p->hidden);
        return;
    }
    if (i == last) {
        snprintf(t->name, sizeof t->name, "lm_head.weight");
        set2(t, p->vocab, p->hidden);
        return;
    }
    int64_t layer = (i - 1) / per_layer(p), j = (i - 1) % per_layer(p);
    char rest[64];
    if (j < PER_LAYER_FIXED) snprintf(rest, sizeof rest, "%s", layer_fixed[j]);
    else
        snprintf(rest, sizeof rest, "mlp.experts.%" PRId64 ".%s.weight", (j - PER_LAYER_FIXED) / 3,
                 expert_proj[(j - PER_LAYER_FIXED) % 3]);
    snprintf(t->name, sizeof t->name, "model.layers.%" PRId64 ".%s", layer, rest);
    int rc = layer_shape(p, rest, t);
    TM_ASSERT(rc == 0);
}

int mk_tensor_find(const mk_preset *p, const char *name, mk_tensor *t)
{
    if (!strncmp(name, "thinker.", 8)) name += 8;
    if (strlen(name) >= sizeof t->name) return -1;
    snprintf(t->name, sizeof t->name, "%s", name);
    if (!strcmp(name, "model.embed_tokens.weight")) {
        set2(t, p->vocab, p->hidden);
        t->std = 1.0f;
        return 0;
    }
    if (!strcmp(name, "model.norm.weight")) {
        set_norm(t, p->hidden);
        return 0;
    }
    if (!strcmp(name, "lm_head.weight")) {
        set2(t, p->vocab, p->hidden);
        return 0;
    }
    if (strncmp(name, "model.layers.", 13)) return -1;
    char *end;
    errno = 0;
    long layer = strtol(name + 13, &end, 10);
    if (end == name + 13 || errno || layer < 0 || layer >= p->n_layers || *end != '.') return -1;
    if (end - (name + 13) > 1 && name[13] == '0') return -1;
    return layer_shape(p, end + 1, t);
}

uint64_t mk_model_bytes(const mk_preset *p)
{
    uint64_t total = 0;
    mk_tensor t;
    for (int64_t i = 0; i < mk_tensor_count(p); i++) {
        mk_tensor_at(p, i, &t);
        total += 2u * (uint64_t)mk_tensor_numel(&t);
    }
    return total;
}

/* ---- values ------------------------------------------------------------------ */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

#define MK_PHI 0x9e3779b97f4a7c15ull

/* Element i of a tensor: the sum of the four 16-bit fields of
 * mix64(key + (i + 1)·φ), centred, times scale, rounded to BF16. The sum of
 * four uniform fields is close to normal, and every element depends only on
 * (seed, name, i), so any range can be filled alone. */
static void fill_scalar(uint64_t key, float scale, uint16_t *out, size_t first, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        uint64_t h = mix64(key + (uint64_t)(first + i + 1) * MK_PHI);
        uint32_t s = (uint32_t)(h & 0xffff) + (uint32_t)((h >> 16) & 0xffff) + (uint32_t)((h >> 32) & 0xffff) +
                     (uint32_t)(h >> 48);
        out[i] = tm_f32_to_bf16((float)((int32_t)s - 131070) * scale);
    }
}

/* The same values eight at a time: the 64-bit products are vpmullq's low
 * halves, the conversion and the product by scale round as the scalar ones
 * do, and the values are finite, so tm_f32_to_bf16's NaN case never arises. */
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl"))) static void fill_avx512(uint64_t key, float scale,
                                                                                       uint16_t *out, size_t first,
                                                                                       size_t count)
{
    const __m512i phi = _mm512_set1_epi64((long long)MK_PHI);
    const __m512i c1 = _mm512_set1_epi64((long long)0xbf58476d1ce4e5b9ull);
    const __m512i c2 = _mm512_set1_epi64((long long)0x94d049bb133111ebull);
    const __m512i lo16 = _mm512_set1_epi64(0xffff);
    const __m512i vkey = _mm512_set1_epi64((long long)key);
    const __m256 vscale = _mm256_set1_ps(scale);
    const __m256i centre = _mm256_set1_epi32(131070), half = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    __m512i idx = _mm512_add_epi64(_mm512_set1_epi64((long long)(first + 1)), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m512i z = _mm512_add_epi64(vkey, _mm512_mullo_epi64(idx, phi));
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), c1);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), c2);
        z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
        __m512i s = _mm512_add_epi64(_mm512_and_si512(z, lo16), _mm512_and_si512(_mm512_srli_epi64(z, 16), lo16));
        s = _mm512_add_epi64(s, _mm512_and_si512(_mm512_srli_epi64(z, 32), lo16));
        s = _mm512_add_epi64(s, _mm512_srli_epi64(z, 48));
        __m256i c = _mm256_sub_epi32(_mm512_cvtepi64_epi32(s), centre);
        __m256i u = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(c), vscale));
        u = _mm256_add_epi32(u, _mm256_add_epi32(half, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtepi32_epi16(_mm256_srli_epi32(u, 16)));
        idx = _mm512_add_epi64(idx, _mm512_set1_epi64(8));
    }
    fill_scalar(key, scale, out + i, first + i, count - i);
}

int mk_fill_tensor(const mk_preset *p, uint64_t seed, const char *name, uint16_t *bf16_out, size_t offset,
                   size_t count)
{
    mk_tensor t;
    if (mk_tensor_find(p, name, &t) != 0) return -1;
    size_t numel = (size_t)mk_tensor_numel(&t);
    if (offset > numel || count > numel - offset) return -1;
    if (t.std == 0.0f) {
        for (size_t i = 0; i < count; i++) bf16_out[i] = 0x3f80; /* 1.0 */
        return 0;
    }
    uint64_t key = mix64(seed ^ fnv1a64(t.name)); /* t.name has no "thinker." */
    float scale = t.std / 37837.23f;
    const cpu_info *ci = cpu_get();
    if (ci->avx512f && ci->avx512dq && ci->avx512bw && ci->avx512vl)
        fill_avx512(key, scale, bf16_out, offset, count);
    else
        fill_scalar(key, scale, bf16_out, offset, count);
    return 0;
}

/* ---- writer ------------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        TM_ASSERT(n >= 0);
        if (b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        b->cap = 2 * (b->cap + (size_t)n + 64);
        b->buf = tm_realloc(b->buf, b->cap);
    }
}

static tm_status write_config(const mk_preset *p, const char *dir, tm_err *err)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("Qwen3MoeForCausalLM"));
    cJSON_AddStringToObject(o, "model_type", "qwen3_moe");
    cJSON_AddStringToObject(o, "torch_dtype", "bfloat16");
    cJSON_AddStringToObject(o, "transformers_version", "4.51.0");
    cJSON_AddFalseToObject(o, "attention_bias");
    cJSON_AddNumberToObject(o, "attention_dropout", 0.0);
    /* Qwen's ids where the vocabulary has them; small test vocabularies end
     * with their own. */
    cJSON_AddNumberToObject(o, "bos_token_id", p->vocab > 151645 ? 151643 : p->vocab - 2);
    cJSON_AddNumberToObject(o, "eos_token_id", p->vocab > 151645 ? 151645 : p->vocab - 1);
    cJSON_AddNumberToObject(o, "decoder_sparse_step", 1);
    cJSON_AddNumberToObject(o, "head_dim", p->head_dim);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddNumberToObject(o, "hidden_size", p->hidden);
    cJSON_AddNumberToObject(o, "initializer_range", 0.02);
    cJSON_AddNumberToObject(o, "intermediate_size", p->dense_inter);
    cJSON_AddNumberToObject(o, "max_position_embeddings", p->max_pos);
    cJSON_AddNumberToObject(o, "max_window_layers", p->n_layers);
    cJSON_AddArrayToObject(o, "mlp_only_layers");
    cJSON_AddNumberToObject(o, "moe_intermediate_size", p->moe_inter);
    cJSON_AddBoolToObject(o, "norm_topk_prob", p->norm_topk_prob);
    cJSON_AddNumberToObject(o, "num_attention_heads", p->n_heads);
    cJSON_AddNumberToObject(o, "num_experts", p->n_experts);
    cJSON_AddNumberToObject(o, "num_experts_per_tok", p->top_k);
    cJSON_AddNumberToObject(o, "num_hidden_layers", p->n_layers);
    cJSON_AddNumberToObject(o, "num_key_value_heads", p->n_kv_heads);
    cJSON_AddBoolToObject(o, "output_router_logits", 0);
    cJSON_AddNumberToObject(o, "rms_norm_eps", p->rms_eps);
    cJSON_AddNullToObject(o, "rope_scaling");
    cJSON_AddNumberToObject(o, "rope_theta", p->rope_theta);
    cJSON_AddNumberToObject(o, "router_aux_loss_coef", 0.001);
    cJSON_AddNullToObject(o, "sliding_window");
    cJSON_AddBoolToObject(o, "tie_word_embeddings", 0);
    cJSON_AddBoolToObject(o, "use_cache", 1);
    cJSON_AddBoolToObject(o, "use_sliding_window", 0);
    cJSON_AddNumberToObject(o, "vocab_size", p->vocab);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    tm_status st = TM_OK;
    if (!f) st = tm_errf(err, TM_EINPUT, "cannot write %s: %s", path, strerror(errno));
    else {
        int bad = fputs(text, f) < 0 || fputc('\n', f) == EOF;
        bad |= fclose(f) != 0;
        if (bad) st = tm_errf(err, TM_EFAIL, "write error on %s: %s", path, strerror(errno));
    }
    free(text);
    return st;
}

#define CHUNK_ELEMS ((size_t)1 << 20)

/* One shard: tensors [t0, t1) into path (via path.tmp, renamed when whole). */
static tm_status write_shard(const mk_preset *p, uint64_t seed, int64_t t0, int64_t t1, const char *path,
                             uint16_t *chunk, tm_err *err)
{
    sbuf h = {0};
    mk_tensor t;
    uint64_t off = 0;
    sb_printf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int64_t i = t0; i < t1; i++) {
        mk_tensor_at(p, i, &t);
        uint64_t bytes = 2u * (uint64_t)mk_tensor_numel(&t);
        if (t.ndim == 1)
            sb_printf(&h, ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%" PRId64 "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}",
                      t.name, t.shape[0], off, off + bytes);
        else
            sb_printf(&h, ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%" PRId64 ",%" PRId64 "],\"data_offsets\":[%" PRIu64
                      ",%" PRIu64 "]}", t.name, t.shape[0], t.shape[1], off, off + bytes);
        off += bytes;
    }
    sb_printf(&h, "}");
    while (h.len % 8) sb_printf(&h, " ");

    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    tm_status st = TM_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = tm_errf(err, TM_EINPUT, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    setvbuf(f, NULL, _IOFBF, (size_t)4 << 20);
    uint8_t len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (uint8_t)((uint64_t)h.len >> (8 * k));
    int bad = fwrite(len8, 1, 8, f) != 8 || fwrite(h.buf, 1, h.len, f) != h.len;
    for (int64_t i = t0; i < t1 && !bad; i++) {
        mk_tensor_at(p, i, &t);
        size_t numel = (size_t)mk_tensor_numel(&t);
        for (size_t o = 0; o < numel && !bad; o += CHUNK_ELEMS) {
            size_t n = TM_MIN(CHUNK_ELEMS, numel - o);
            int rc = mk_fill_tensor(p, seed, t.name, chunk, o, n);
            TM_ASSERT(rc == 0);
            bad = fwrite(chunk, 2, n, f) != n;
        }
    }
    bad |= fclose(f) != 0;
    if (bad) {
        st = tm_errf(err, TM_EFAIL, "write error on %s: %s", tmp, strerror(errno));
        unlink(tmp);
    } else if (rename(tmp, path) != 0) {
        st = tm_errf(err, TM_EFAIL, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    }
out:
    free(h.buf);
    return st;
}

static tm_status make_dir(const char *dir, tm_err *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return tm_errf(err, TM_EINPUT, "output path too long: %s", dir);
    for (char *s = path + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(path, 0777) != 0 && errno != EEXIST)
                return tm_errf(err, TM_EINPUT, "cannot create %s: %s", path, strerror(errno));
            *s = c;
            if (!c) break;
        }
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return tm_errf(err, TM_EINPUT, "%s is not a directory", dir);
    if (access(dir, W_OK) != 0) return tm_errf(err, TM_EINPUT, "cannot write to %s: %s", dir, strerror(errno));
    return TM_OK;
}

tm_status mk_write_model(const mk_preset *p, uint64_t seed, const char *dir, tm_err *err)
{
    tm_status st = make_dir(dir, err);
    if (st != TM_OK) return st;
    int64_t nt = mk_tensor_count(p);
    /* Plan the shards: greedy, in tensor order, each at most MK_SHARD_BYTES
     * (a single tensor larger than that gets a shard of its own). */
    uint64_t limit = MK_SHARD_BYTES;
    const char *env = getenv("TRUSTMOE_MK_SHARD_BYTES"); /* tests shard small models */
    if (env && strtoull(env, NULL, 10) > 0) limit = strtoull(env, NULL, 10);
    int64_t *first = tm_malloc((size_t)(nt + 1) * sizeof *first);
    int n_shards = 0;
    uint64_t cur = 0, total = 0;
    mk_tensor t;
    for (int64_t i = 0; i < nt; i++) {
        mk_tensor_at(p, i, &t);
        uint64_t b = 2u * (uint64_t)mk_tensor_numel(&t);
        if (i == 0 || (cur > 0 && cur + b > limit)) {
            first[n_shards++] = i;
            cur = 0;
        }
        cur += b;
        total += b;
    }
    first[n_shards] = nt;

    uint16_t *chunk = tm_malloc(CHUNK_ELEMS * sizeof *chunk);
    char path[4096];
    double t_start = tm_now();
    if ((st = write_config(p, dir, err)) != TM_OK) goto done;
    for (int s = 0; s < n_shards; s++) {
        if (n_shards == 1) snprintf(path, sizeof path, "%s/model.safetensors", dir);
        else snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, s + 1, n_shards);
        if ((st = write_shard(p, seed, first[s], first[s + 1], path, chunk, err)) != TM_OK) goto done;
        if (n_shards > 1) fprintf(stderr, "mkmodel: wrote %s\n", path);
    }
    if (n_shards > 1) {
        sbuf ix = {0};
        sb_printf(&ix, "{\n  \"metadata\": {\"total_size\": %" PRIu64 "},\n  \"weight_map\": {", total);
        for (int s = 0; s < n_shards; s++)
            for (int64_t i = first[s]; i < first[s + 1]; i++) {
                mk_tensor_at(p, i, &t);
                sb_printf(&ix, "%s\n    \"%s\": \"model-%05d-of-%05d.safetensors\"", i ? "," : "", t.name, s + 1,
                          n_shards);
            }
        sb_printf(&ix, "\n  }\n}\n");
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        FILE *f = fopen(path, "w");
        if (!f) st = tm_errf(err, TM_EINPUT, "cannot write %s: %s", path, strerror(errno));
        else if ((fwrite(ix.buf, 1, ix.len, f) != ix.len) | (fclose(f) != 0))
            st = tm_errf(err, TM_EFAIL, "write error on %s: %s", path, strerror(errno));
        free(ix.buf);
    }
    if (st == TM_OK)
        fprintf(stderr, "mkmodel: %s: %" PRId64 " tensors, %.3f GB in %d file%s, %.1f s\n", p->name, nt,
                (double)total / 1e9, n_shards, n_shards > 1 ? "s" : "", tm_now() - t_start);
done:
    free(chunk);
    free(first);
    return st;
}
