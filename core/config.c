/* config.c: config.json parsing and validation. */
#include "config.h"
#include "input.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- field access -------------------------------------------------------- */

typedef struct {
    const char *file;
    tm_err *err;
    tm_status st;
} ctx;

static const cJSON *get(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

/* Reads an integer field; `def` < INT32_MIN-ish means required. */
#define REQUIRED (-2147483647 - 1)

static int get_int(ctx *x, const cJSON *o, const char *key, int def)
{
    const cJSON *v = get(o, key);
    if (!v || cJSON_IsNull(v)) {
        if (def == REQUIRED && x->st == TM_OK)
            x->st = tm_errf(x->err, TM_EINPUT, "%s: missing field '%s'", x->file, key);
        return def == REQUIRED ? 0 : def;
    }
    int i;
    if (!tm_json_i32(v, INT32_MIN, INT32_MAX, &i)) {
        if (x->st == TM_OK) x->st = tm_errf(x->err, TM_EINPUT, "%s: field '%s' must be a 32-bit integer", x->file, key);
        return 0;
    }
    return i;
}

static double get_num(ctx *x, const cJSON *o, const char *key, double def, int required)
{
    const cJSON *v = get(o, key);
    if (!v || cJSON_IsNull(v)) {
        if (required && x->st == TM_OK) x->st = tm_errf(x->err, TM_EINPUT, "%s: missing field '%s'", x->file, key);
        return def;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        if (x->st == TM_OK) x->st = tm_errf(x->err, TM_EINPUT, "%s: field '%s' must be a finite number", x->file, key);
        return def;
    }
    return v->valuedouble;
}

static int get_bool(ctx *x, const cJSON *o, const char *key, int def)
{
    const cJSON *v = get(o, key);
    if (!v || cJSON_IsNull(v)) return def;
    if (!cJSON_IsBool(v)) {
        if (x->st == TM_OK) x->st = tm_errf(x->err, TM_EINPUT, "%s: field '%s' must be true or false", x->file, key);
        return def;
    }
    return cJSON_IsTrue(v);
}

static void copy_str(char *dst, size_t cap, const cJSON *v)
{
    snprintf(dst, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

/* eos_token_id may be an int or a list of ints. */
static void read_eos(ctx *x, tm_config *c, const cJSON *v)
{
    int id;
    if (cJSON_IsNumber(v)) {
        if (!tm_json_i32(v, 0, INT32_MAX, &id)) {
            if (x->st == TM_OK)
                x->st = tm_errf(x->err, TM_EINPUT, "%s: eos_token_id %g is not a token id", x->file, v->valuedouble);
            return;
        }
        if (c->n_eos < CFG_MAX_EOS && !cfg_is_eos(c, id)) c->eos_ids[c->n_eos++] = id;
    } else if (cJSON_IsArray(v)) {
        for (const cJSON *e = v->child; e; e = e->next) read_eos(x, c, e);
    }
}

/* ---- parse --------------------------------------------------------------- */

static tm_status parse_text_config(tm_config *c, ctx *x, const cJSON *t)
{
    copy_str(c->text_model_type, sizeof c->text_model_type, get(t, "model_type"));
    c->vocab_size = get_int(x, t, "vocab_size", REQUIRED);
    c->hidden_size = get_int(x, t, "hidden_size", REQUIRED);
    c->num_layers = get_int(x, t, "num_hidden_layers", REQUIRED);
    c->num_heads = get_int(x, t, "num_attention_heads", REQUIRED);
    c->num_kv_heads = get_int(x, t, "num_key_value_heads", c->num_heads);
    c->head_dim_from_config = get(t, "head_dim") != NULL && !cJSON_IsNull(get(t, "head_dim"));
    c->head_dim = c->head_dim_from_config ? get_int(x, t, "head_dim", REQUIRED)
                                          : (c->num_heads > 0 ? c->hidden_size / c->num_heads : 0);
    c->moe_intermediate_size = get_int(x, t, "moe_intermediate_size", REQUIRED);
    c->intermediate_size = get_int(x, t, "intermediate_size", 0);
    c->num_experts = get(t, "num_experts") ? get_int(x, t, "num_experts", REQUIRED)
                                           : get_int(x, t, "num_local_experts", REQUIRED);
    if (!get(t, "num_experts") && !get(t, "num_local_experts") && x->st == TM_OK)
        x->st = tm_errf(x->err, TM_EINPUT, "%s: missing field 'num_experts' (or 'num_local_experts')", x->file);
    c->top_k = get_int(x, t, "num_experts_per_tok", REQUIRED);
    /* norm_topk_prob's class default differs between Qwen3-MoE (false) and
     * the Omni text config (true): require it rather than guess. */
    if (!get(t, "norm_topk_prob") && x->st == TM_OK)
        x->st = tm_errf(x->err, TM_EINPUT, "%s: missing field 'norm_topk_prob'", x->file);
    c->norm_topk_prob = get_bool(x, t, "norm_topk_prob", 0);
    c->decoder_sparse_step = get_int(x, t, "decoder_sparse_step", 1);
    c->rms_norm_eps = (float)get_num(x, t, "rms_norm_eps", 1e-6, 1);
    c->max_position_embeddings = get_int(x, t, "max_position_embeddings", REQUIRED);
    c->tie_word_embeddings = get_bool(x, t, "tie_word_embeddings", 0);
    c->bos_token_id = get_int(x, t, "bos_token_id", -1);
    read_eos(x, c, get(t, "eos_token_id"));

    const cJSON *mlp_only = get(t, "mlp_only_layers");
    if (mlp_only && !cJSON_IsNull(mlp_only)) {
        if (!cJSON_IsArray(mlp_only) && x->st == TM_OK)
            x->st = tm_errf(x->err, TM_EINPUT, "%s: mlp_only_layers must be a list", x->file);
        for (const cJSON *e = cJSON_IsArray(mlp_only) ? mlp_only->child : NULL; e; e = e->next) {
            int l;
            if (!tm_json_i32(e, 0, INT32_MAX, &l)) l = -1;
            if (l < 0 || l >= c->num_layers || l >= CFG_MAX_LAYERS) {
                if (x->st == TM_OK)
                    x->st = tm_errf(x->err, TM_EINPUT, "%s: mlp_only_layers holds %d, outside 0..%d", x->file, l,
                                    c->num_layers - 1);
            } else {
                c->mlp_only[l] = 1;
            }
        }
    }

    /* RoPE: rope_theta (hub), or rope_parameters (v5); mrope_section from
     * rope_scaling or rope_parameters. */
    const cJSON *rp = get(t, "rope_parameters");
    const cJSON *rs = get(t, "rope_scaling");
    if (cJSON_IsObject(rp) && get(rp, "rope_theta"))
        c->rope_theta = (float)get_num(x, rp, "rope_theta", 0, 1);
    else
        c->rope_theta = (float)get_num(x, t, "rope_theta", 0, 1);
    const cJSON *rope_obj = cJSON_IsObject(rp) ? rp : (cJSON_IsObject(rs) ? rs : NULL);
    if (rope_obj) {
        const cJSON *type = get(rope_obj, "rope_type");
        if (!type) type = get(rope_obj, "type");
        if (cJSON_IsString(type) && strcmp(type->valuestring, "default") && x->st == TM_OK)
            x->st = tm_errf(x->err, TM_EINPUT, "%s: rope type '%s' is not supported (only 'default')", x->file,
                            type->valuestring);
        const cJSON *ms = get(rope_obj, "mrope_section");
        if (cJSON_IsArray(ms)) {
            if (cJSON_GetArraySize(ms) != 3) {
                if (x->st == TM_OK) x->st = tm_errf(x->err, TM_EINPUT, "%s: mrope_section must have 3 entries", x->file);
            } else {
                for (int i = 0; i < 3; i++)
                    if (!tm_json_i32(cJSON_GetArrayItem(ms, i), 0, CFG_MAX_HEAD_DIM, &c->mrope_section[i]) &&
                        x->st == TM_OK)
                        x->st = tm_errf(x->err, TM_EINPUT, "%s: mrope_section[%d] must be an integer in 0..%d",
                                        x->file, i, CFG_MAX_HEAD_DIM);
                c->has_mrope = 1;
            }
        }
    }
    return x->st;
}

static tm_status validate(const tm_config *c, const char *file, tm_err *err)
{
#define POS(f)                                                                                                        \
    if (c->f <= 0) return tm_errf(err, TM_EINPUT, "%s: %s must be positive (got %d)", file, #f, c->f)
    POS(vocab_size);
    POS(hidden_size);
    POS(num_layers);
    POS(num_heads);
    POS(num_kv_heads);
    POS(head_dim);
    POS(moe_intermediate_size);
    POS(num_experts);
    POS(top_k);
    POS(decoder_sparse_step);
    POS(max_position_embeddings);
#undef POS
    if (c->num_layers > CFG_MAX_LAYERS)
        return tm_errf(err, TM_EINPUT, "%s: num_hidden_layers %d exceeds %d", file, c->num_layers, CFG_MAX_LAYERS);
    /* kernel and table limits: forward's RoPE table, the expert masks */
    if (c->head_dim > CFG_MAX_HEAD_DIM)
        return tm_errf(err, TM_EINPUT, "%s: head_dim %d exceeds %d", file, c->head_dim, CFG_MAX_HEAD_DIM);
    if (c->num_experts > CFG_MAX_EXPERTS)
        return tm_errf(err, TM_EINPUT, "%s: num_experts %d exceeds %d", file, c->num_experts, CFG_MAX_EXPERTS);
    /* products the engine forms in int: heads x head_dim, vocab and hidden rows */
    if ((int64_t)c->num_heads * c->head_dim > CFG_MAX_WIDTH || (int64_t)c->hidden_size > CFG_MAX_WIDTH ||
        (int64_t)c->moe_intermediate_size > CFG_MAX_WIDTH || (int64_t)c->intermediate_size > CFG_MAX_WIDTH ||
        (int64_t)c->vocab_size > CFG_MAX_VOCAB)
        return tm_errf(err, TM_EINPUT,
                       "%s: hidden_size, intermediate sizes and num_attention_heads x head_dim must be at most %d, "
                       "vocab_size at most %d",
                       file, CFG_MAX_WIDTH, CFG_MAX_VOCAB);
    if (c->top_k > c->num_experts)
        return tm_errf(err, TM_EINPUT, "%s: num_experts_per_tok %d exceeds num_experts %d", file, c->top_k,
                       c->num_experts);
    if (c->num_heads % c->num_kv_heads)
        return tm_errf(err, TM_EINPUT, "%s: num_key_value_heads %d does not divide num_attention_heads %d", file,
                       c->num_kv_heads, c->num_heads);
    if (c->head_dim % 2) return tm_errf(err, TM_EINPUT, "%s: head_dim %d must be even for RoPE", file, c->head_dim);
    if (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta))
        return tm_errf(err, TM_EINPUT, "%s: rope_theta %g must be a finite number above 1", file, c->rope_theta);
    if (!(c->rms_norm_eps > 0.0f)) return tm_errf(err, TM_EINPUT, "%s: rms_norm_eps must be positive", file);
    if (c->has_mrope) {
        int64_t sum = (int64_t)c->mrope_section[0] + c->mrope_section[1] + c->mrope_section[2];
        if (sum != c->head_dim / 2 || c->mrope_section[0] < 0 || c->mrope_section[1] < 0 || c->mrope_section[2] < 0)
            return tm_errf(err, TM_EINPUT, "%s: mrope_section [%d, %d, %d] must sum to head_dim/2 = %d", file,
                           c->mrope_section[0], c->mrope_section[1], c->mrope_section[2], c->head_dim / 2);
    }
    for (int l = 0; l < c->num_layers; l++)
        if (!cfg_layer_is_moe(c, l) && c->intermediate_size <= 0)
            return tm_errf(err, TM_EINPUT, "%s: layer %d is a dense MLP but intermediate_size is missing", file, l);
    return TM_OK;
}

tm_status cfg_parse(tm_config *c, const char *text, const char *name, tm_err *err)
{
    memset(c, 0, sizeof *c);
    ctx x = {name, err, TM_OK};
    cJSON *root = cJSON_Parse(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return tm_errf(err, TM_EINPUT, "%s: not a JSON object", name);
    }
    copy_str(c->model_type, sizeof c->model_type, get(root, "model_type"));
    const cJSON *arch = get(root, "architectures");
    copy_str(c->architecture, sizeof c->architecture, cJSON_IsArray(arch) ? arch->child : NULL);
    const cJSON *text_cfg = root;
    if (!strcmp(c->model_type, "qwen3_omni_moe")) {
        const cJSON *th = get(root, "thinker_config");
        text_cfg = th ? get(th, "text_config") : NULL;
        if (!cJSON_IsObject(text_cfg)) {
            cJSON_Delete(root);
            return tm_errf(err, TM_EINPUT, "%s: model_type qwen3_omni_moe without thinker_config.text_config", name);
        }
        c->is_omni = 1;
        strcpy(c->tensor_prefix, "thinker.");
    } else if (strcmp(c->model_type, "qwen3_moe") && strcmp(c->model_type, "qwen3_omni_moe_text") &&
               strcmp(c->model_type, "qwen3_omni_moe_thinker")) {
        cJSON_Delete(root);
        return tm_errf(err, TM_EINPUT, "%s: model_type '%s' is not supported (qwen3_moe or qwen3_omni_moe)", name,
                       c->model_type);
    }
    parse_text_config(c, &x, text_cfg);
    if (c->is_omni) {
        /* chat stop tokens live at the top level of the Omni config */
        read_eos(&x, c, get(root, "im_end_token_id"));
        read_eos(&x, c, get(root, "eos_token_id"));
    }
    cJSON_Delete(root);
    if (x.st != TM_OK) return x.st;
    return validate(c, name, err);
}

tm_status cfg_load(tm_config *c, const char *dir, tm_err *err)
{
    char path[4096], *text = NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    tm_status st = tm_read_input(path, "config", TM_CAP_CONFIG, &text, NULL, err);
    if (st != TM_OK) return st;
    st = cfg_parse(c, text, path, err);
    free(text);
    if (st != TM_OK) return st;

    /* generation_config.json may add eos ids; it is optional. */
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (access(path, F_OK) == 0) {
        if ((st = tm_read_input(path, "generation config", TM_CAP_CONFIG, &text, NULL, err)) != TM_OK) return st;
        cJSON *g = cJSON_Parse(text);
        if (!g) {
            free(text);
            return tm_errf(err, TM_EINPUT, "%s: not valid JSON", path);
        }
        ctx x = {path, err, TM_OK};
        read_eos(&x, c, get(g, "eos_token_id"));
        cJSON_Delete(g);
        free(text);
        if (x.st != TM_OK) return x.st;
    }
    return TM_OK;
}

int cfg_layer_is_moe(const tm_config *c, int layer)
{
    return !c->mlp_only[layer] && c->num_experts > 0 && (layer + 1) % c->decoder_sparse_step == 0;
}

int cfg_is_eos(const tm_config *c, int id)
{
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id) return 1;
    return 0;
}

void cfg_print(const tm_config *c, FILE *f)
{
    fprintf(f, "model_type: %s\n", c->model_type);
    if (c->is_omni) fprintf(f, "text_model_type: %s\n", c->text_model_type);
    fprintf(f, "architecture: %s\n", c->architecture[0] ? c->architecture : "(none)");
    fprintf(f, "tensor_prefix: '%s'\n", c->tensor_prefix);
    fprintf(f, "vocab_size: %d\nhidden_size: %d\nnum_hidden_layers: %d\n", c->vocab_size, c->hidden_size, c->num_layers);
    fprintf(f, "num_attention_heads: %d\nnum_key_value_heads: %d\n", c->num_heads, c->num_kv_heads);
    fprintf(f, "head_dim: %d%s\n", c->head_dim, c->head_dim_from_config ? "" : " (hidden_size / heads: not in config)");
    fprintf(f, "num_experts: %d\nnum_experts_per_tok: %d\nnorm_topk_prob: %s\n", c->num_experts, c->top_k,
            c->norm_topk_prob ? "true" : "false");
    fprintf(f, "moe_intermediate_size: %d\nintermediate_size: %d\n", c->moe_intermediate_size, c->intermediate_size);
    fprintf(f, "decoder_sparse_step: %d\nmlp_only_layers: [", c->decoder_sparse_step);
    int first = 1;
    for (int l = 0; l < c->num_layers; l++)
        if (c->mlp_only[l]) {
            fprintf(f, first ? "%d" : ", %d", l);
            first = 0;
        }
    int dense = 0;
    for (int l = 0; l < c->num_layers; l++) dense += !cfg_layer_is_moe(c, l);
    fprintf(f, "]\ndense MLP layers: %d of %d\n", dense, c->num_layers);
    fprintf(f, "rope_theta: %.1f\nrms_norm_eps: %g\n", (double)c->rope_theta, (double)c->rms_norm_eps);
    if (c->has_mrope)
        fprintf(f, "mrope_section: [%d, %d, %d] (interleaved)\n", c->mrope_section[0], c->mrope_section[1],
                c->mrope_section[2]);
    fprintf(f, "max_position_embeddings: %d\ntie_word_embeddings: %s\n", c->max_position_embeddings,
            c->tie_word_embeddings ? "true" : "false");
    fprintf(f, "eos_token_ids: [");
    for (int i = 0; i < c->n_eos; i++) fprintf(f, i ? ", %d" : "%d", c->eos_ids[i]);
    fprintf(f, "]\n");
}
