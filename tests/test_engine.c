/* test_engine.c: the single-process engine against Hugging Face fixtures,
 * plus RoPE/MRoPE, config forms and dtype conversions. */
#include "config.h"
#include "input.h"
#include "dtype.h"
#include "kernels.h"
#include "model.h"
#include "sampler.h"

#include <CUnit/Basic.h>

#include "cunit_run.h"
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/"

/* ---- parity with transformers ------------------------------------------ */

typedef struct {
    double worst_rel;  /* max over prompts of max|err| / max|ref| */
    int greedy_ok;     /* greedy ids identical up to the first small margin */
    int n_prompts;
} parity;

static float *read_f32(const char *path, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *b = malloc(n * sizeof(float));
    size_t got = fread(b, sizeof(float), n, f);
    fclose(f);
    if (got != n) {
        free(b);
        return NULL;
    }
    return b;
}

static parity run_parity(const char *model_dir, const char *ref_dir, int weight_dtype)
{
    parity r = {0, 1, 0};
    char path[512];
    snprintf(path, sizeof path, "%s/manifest.json", ref_dir);
    char *text = NULL;
    tm_err err;
    CU_ASSERT_FATAL(tm_read_file(path, &text, NULL, &err) == TM_OK);
    cJSON *man = cJSON_Parse(text);
    free(text);
    CU_ASSERT_FATAL(man != NULL);

    tm_model m;
    model_load_params lp = model_default_load_params();
    lp.weight_dtype = weight_dtype;
    tm_status st = model_load(&m, model_dir, &lp, &err);
    if (st != TM_OK) fprintf(stderr, "%s\n", err.msg);
    CU_ASSERT_FATAL(st == TM_OK);
    int V = m.cfg.vocab_size;

    const cJSON *prompts = cJSON_GetObjectItem(man, "prompts");
    for (const cJSON *p = prompts->child; p; p = p->next) {
        const cJSON *ids_j = cJSON_GetObjectItem(p, "ids"), *greedy = cJSON_GetObjectItem(p, "greedy");
        const cJSON *margins = cJSON_GetObjectItem(p, "greedy_margins");
        int n = cJSON_GetArraySize(ids_j), n_gen = cJSON_GetArraySize(greedy);
        int32_t ids[64];
        for (int i = 0; i < n; i++) ids[i] = cJSON_GetArrayItem(ids_j, i)->valueint;
        snprintf(path, sizeof path, "%s/%s", ref_dir, cJSON_GetObjectItem(p, "logits")->valuestring);
        float *ref = read_f32(path, (size_t)n * V);
        CU_ASSERT_FATAL(ref != NULL);

        tm_state s;
        CU_ASSERT_FATAL(state_init(&s, &m, n + n_gen, n, &err) == TM_OK);
        moe_backend be = model_local_backend(&m, &s);
        float *logits = malloc(sizeof(float) * (size_t)n * V);
        CU_ASSERT_FATAL(model_forward(&m, &s, ids, n, &be, NULL, logits, 1, &err) == TM_OK);
        double max_err = 0, max_ref = 0;
        for (size_t i = 0; i < (size_t)n * V; i++) {
            max_err = fmax(max_err, fabs((double)logits[i] - ref[i]));
            max_ref = fmax(max_ref, fabs((double)ref[i]));
        }
        r.worst_rel = fmax(r.worst_rel, max_err / max_ref);

        /* greedy continuation with the KV cache */
        float *last = logits + (size_t)(n - 1) * V;
        for (int g = 0; g < n_gen; g++) {
            int32_t next = sampler_argmax(last, V);
            if (next != cJSON_GetArrayItem(greedy, g)->valueint) {
                if (cJSON_GetArrayItem(margins, g)->valuedouble >= 1e-3) r.greedy_ok = 0;
                break;
            }
            if (g + 1 < n_gen) CU_ASSERT_FATAL(model_forward(&m, &s, &next, 1, &be, NULL, last, 0, &err) == TM_OK);
        }
        r.n_prompts++;
        free(logits);
        free(ref);
        state_free(&s);
    }
    model_free(&m);
    cJSON_Delete(man);
    return r;
}

static void check_fixture(const char *name, const char *ref_name)
{
    char dir[256], ref[256];
    snprintf(dir, sizeof dir, FIX "%s", name);
    snprintf(ref, sizeof ref, FIX "%s/ref", ref_name);
    for (int wd = 0; wd < 2; wd++) {
        parity r = run_parity(dir, ref, wd == 0 ? -1 : TM_DT_F32);
        printf("\n  %-24s weights %-4s: %d prompts, max rel logit error %.3e, greedy %s", name,
               wd == 0 ? "auto" : "f32", r.n_prompts, r.worst_rel, r.greedy_ok ? "identical" : "DIFFERENT");
        CU_ASSERT(r.n_prompts >= 4);
        CU_ASSERT(r.worst_rel <= 1e-4);
        CU_ASSERT(r.greedy_ok);
    }
}

static void test_parity_qwen3_bf16(void) { check_fixture("qwen3moe-bf16", "qwen3moe-bf16"); }
static void test_parity_qwen3_v5_fused(void) { check_fixture("qwen3moe-v5-fused", "qwen3moe-bf16"); }
static void test_parity_mixed_sharded(void) { check_fixture("qwen3moe-mixed-sharded", "qwen3moe-mixed-sharded"); }
static void test_parity_omni(void) { check_fixture("omni-thinker-bf16", "omni-thinker-bf16"); }

/* The fused (v5) layout holds the same bytes as the per-expert layout, so
 * logits are bitwise identical. */
static void test_fused_equals_per_expert(void)
{
    tm_err err;
    tm_model a, b;
    CU_ASSERT_FATAL(model_load(&a, FIX "qwen3moe-bf16", NULL, &err) == TM_OK);
    CU_ASSERT_FATAL(model_load(&b, FIX "qwen3moe-v5-fused", NULL, &err) == TM_OK);
    int32_t ids[] = {3, 1, 4, 1, 5, 9, 2, 6};
    int n = 8, V = a.cfg.vocab_size;
    float *la = malloc(sizeof(float) * n * V), *lb = malloc(sizeof(float) * n * V);
    tm_state sa, sb;
    CU_ASSERT_FATAL(state_init(&sa, &a, n, n, &err) == TM_OK);
    CU_ASSERT_FATAL(state_init(&sb, &b, n, n, &err) == TM_OK);
    moe_backend ba = model_local_backend(&a, &sa);
    CU_ASSERT(model_forward(&a, &sa, ids, n, &ba, NULL, la, 1, &err) == TM_OK);
    moe_backend bb = model_local_backend(&b, &sb);
    CU_ASSERT(model_forward(&b, &sb, ids, n, &bb, NULL, lb, 1, &err) == TM_OK);
    CU_ASSERT(memcmp(la, lb, sizeof(float) * n * V) == 0);
    free(la);
    free(lb);
    state_free(&sa);
    state_free(&sb);
    model_free(&a);
    model_free(&b);
}

/* Prefill of n tokens and token-by-token decode agree. */
static void test_kv_cache_consistency(void)
{
    tm_err err;
    tm_model m;
    CU_ASSERT_FATAL(model_load(&m, FIX "omni-thinker-bf16", NULL, &err) == TM_OK);
    int32_t ids[] = {10, 20, 30, 40, 50, 60, 70};
    int n = 7, V = m.cfg.vocab_size;
    float *all = malloc(sizeof(float) * n * V), *one = malloc(sizeof(float) * V);
    tm_state s;
    CU_ASSERT_FATAL(state_init(&s, &m, n, n, &err) == TM_OK);
    moe_backend be = model_local_backend(&m, &s);
    CU_ASSERT(model_forward(&m, &s, ids, n, &be, NULL, all, 1, &err) == TM_OK);
    state_reset(&s);
    double worst = 0;
    for (int t = 0; t < n; t++) {
        CU_ASSERT(model_forward(&m, &s, ids + t, 1, &be, NULL, one, 0, &err) == TM_OK);
        for (int v = 0; v < V; v++) worst = fmax(worst, fabs(one[v] - all[(size_t)t * V + v]));
    }
    CU_ASSERT(worst < 1e-4);
    /* the cache is full now: one more token is an error, not an overflow */
    int32_t extra = 1;
    CU_ASSERT(model_forward(&m, &s, &extra, 1, &be, NULL, one, 0, &err) == TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "context") != NULL);
    state_free(&s);
    free(all);
    free(one);
    model_free(&m);
}

/* Three sequences decoded together give the logits each gives alone. */
static void test_batch_equals_single(void)
{
    tm_err err;
    tm_model m;
    CU_ASSERT_FATAL(model_load(&m, FIX "qwen3moe-mixed-sharded", NULL, &err) == TM_OK);
    int V = m.cfg.vocab_size;
    int32_t prompts[3][4] = {{5, 6, 7, 8}, {100, 200, 300, 400}, {9, 9, 9, 9}};
    int32_t next[3] = {11, 22, 33};
    float *single = malloc(sizeof(float) * 3 * V), *batch = malloc(sizeof(float) * 3 * V);
    for (int q = 0; q < 3; q++) {
        tm_state s;
        CU_ASSERT_FATAL(state_init(&s, &m, 8, 8, &err) == TM_OK);
        moe_backend be = model_local_backend(&m, &s);
        CU_ASSERT(model_forward(&m, &s, prompts[q], 4, &be, NULL, NULL, 0, &err) == TM_OK);
        CU_ASSERT(model_forward(&m, &s, &next[q], 1, &be, NULL, single + (size_t)q * V, 0, &err) == TM_OK);
        state_free(&s);
    }
    tm_state s;
    CU_ASSERT_FATAL(state_init_batch(&s, &m, 3, 8, 12, &err) == TM_OK);
    moe_backend be = model_local_backend(&m, &s);
    int32_t all[12];
    int seq[12];
    for (int q = 0; q < 3; q++)
        for (int i = 0; i < 4; i++) {
            all[q * 4 + i] = prompts[q][i];
            seq[q * 4 + i] = q;
        }
    CU_ASSERT(model_forward_batch(&m, &s, all, seq, 12, &be, NULL, NULL, &err) == TM_OK);
    int seq3[3] = {0, 1, 2};
    CU_ASSERT(model_forward_batch(&m, &s, next, seq3, 3, &be, NULL, batch, &err) == TM_OK);
    double worst = 0;
    for (size_t i = 0; i < (size_t)3 * V; i++) worst = fmax(worst, fabs(single[i] - batch[i]));
    CU_ASSERT(worst < 1e-4);
    CU_ASSERT(s.seq_len[0] == 5 && s.seq_len[1] == 5 && s.seq_len[2] == 5);
    state_free(&s);
    free(single);
    free(batch);
    model_free(&m);
}

/* ---- RoPE ---------------------------------------------------------------- */

static void test_mrope_equals_rope_for_text(void)
{
    int D = 128, nh = 3;
    int section[3] = {24, 20, 20};
    float inv[64], a[3 * 128], b[3 * 128];
    rope_inv_freq(inv, D, 1e6f);
    srand(7);
    for (int pos = 0; pos < 300; pos += 37) {
        for (int i = 0; i < nh * D; i++) a[i] = b[i] = (float)rand() / RAND_MAX - 0.5f;
        rope_apply(a, nh, D, inv, pos);
        mrope_apply(b, nh, D, inv, section, pos, pos, pos);
        CU_ASSERT(memcmp(a, b, sizeof a) == 0);
    }
    /* with distinct axes the interleaving matters: slot 1 follows H */
    for (int i = 0; i < nh * D; i++) a[i] = b[i] = 1.0f;
    rope_apply(a, nh, D, inv, 5);
    mrope_apply(b, nh, D, inv, section, 5, 9, 5);
    CU_ASSERT(a[0] == b[0]);
    CU_ASSERT(a[1] != b[1]);
    CU_ASSERT(a[2] == b[2]);
    CU_ASSERT(a[60] == b[60] && a[61] == b[61]); /* slots >= 60 are temporal */
}

static void test_rope_inv_freq_float32(void)
{
    float inv[64];
    rope_inv_freq(inv, 128, 1e6f);
    CU_ASSERT(inv[0] == 1.0f);
    CU_ASSERT(fabsf(inv[1] - 1.0f / powf(1e6f, 2.0f / 128.0f)) == 0.0f);
    CU_ASSERT(inv[63] < 1e-5f && inv[63] > 1e-7f);
}

/* ---- config forms --------------------------------------------------------- */

static const char *base_cfg =
    "{\"model_type\":\"qwen3_moe\",\"vocab_size\":100,\"hidden_size\":16,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":8,\"moe_intermediate_size\":8,"
    "\"num_experts\":8,\"num_experts_per_tok\":2,\"norm_topk_prob\":true,\"rms_norm_eps\":1e-6,"
    "\"max_position_embeddings\":64,\"rope_theta\":10000.0%s}";

/* The base config with the fields of `extra` (",\"key\":value...") set or
 * replaced. */
static tm_status parse_with(const char *extra, tm_config *c, tm_err *err)
{
    char buf[2048], over[1024];
    snprintf(buf, sizeof buf, base_cfg, "");
    snprintf(over, sizeof over, "{%s}", extra[0] == ',' ? extra + 1 : extra);
    cJSON *base = cJSON_Parse(buf), *o = cJSON_Parse(over);
    CU_ASSERT_FATAL(base && o);
    for (cJSON *it = o->child; it; it = it->next)
        if (cJSON_GetObjectItemCaseSensitive(base, it->string))
            cJSON_ReplaceItemInObjectCaseSensitive(base, it->string, cJSON_Duplicate(it, 1));
        else
            cJSON_AddItemToObject(base, it->string, cJSON_Duplicate(it, 1));
    char *text = cJSON_PrintUnformatted(base);
    tm_status st = cfg_parse(c, text, "config.json", err);
    free(text);
    cJSON_Delete(base);
    cJSON_Delete(o);
    return st;
}

static void test_config_forms(void)
{
    tm_config c;
    tm_err err;
    CU_ASSERT(parse_with("", &c, &err) == TM_OK);
    CU_ASSERT(c.num_experts == 8 && c.top_k == 2 && c.head_dim == 8 && c.rope_theta == 10000.0f);
    /* v5: num_local_experts and rope_parameters */
    const char *v5 = "{\"model_type\":\"qwen3_moe\",\"vocab_size\":100,\"hidden_size\":16,\"num_hidden_layers\":2,"
                     "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":8,\"moe_intermediate_size\":8,"
                     "\"num_local_experts\":8,\"num_experts_per_tok\":2,\"norm_topk_prob\":true,\"rms_norm_eps\":1e-6,"
                     "\"max_position_embeddings\":64,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":5e6}}";
    CU_ASSERT(cfg_parse(&c, v5, "config.json", &err) == TM_OK);
    CU_ASSERT(c.num_experts == 8 && c.rope_theta == 5e6f);
    /* sparse step and mlp_only_layers */
    CU_ASSERT(parse_with(",\"decoder_sparse_step\":2,\"intermediate_size\":32", &c, &err) == TM_OK);
    CU_ASSERT(!cfg_layer_is_moe(&c, 0) && cfg_layer_is_moe(&c, 1));
    CU_ASSERT(parse_with(",\"mlp_only_layers\":[1],\"intermediate_size\":32", &c, &err) == TM_OK);
    CU_ASSERT(cfg_layer_is_moe(&c, 0) && !cfg_layer_is_moe(&c, 1));
    /* head_dim absent: hidden / heads, as transformers does */
    const char *nohd = "{\"model_type\":\"qwen3_moe\",\"vocab_size\":100,\"hidden_size\":16,\"num_hidden_layers\":2,"
                       "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"moe_intermediate_size\":8,"
                       "\"num_experts\":8,\"num_experts_per_tok\":2,\"norm_topk_prob\":false,\"rms_norm_eps\":1e-6,"
                       "\"max_position_embeddings\":64,\"rope_theta\":10000.0}";
    CU_ASSERT(cfg_parse(&c, nohd, "config.json", &err) == TM_OK);
    CU_ASSERT(c.head_dim == 4 && !c.head_dim_from_config);
}

static void test_config_errors(void)
{
    tm_config c;
    tm_err err;
    CU_ASSERT(cfg_parse(&c, "{not json", "config.json", &err) == TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "config.json") != NULL);
    CU_ASSERT(parse_with(",\"num_experts_per_tok\":9", &c, &err) == TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "num_experts_per_tok") != NULL);
    CU_ASSERT(parse_with(",\"num_key_value_heads\":3", &c, &err) == TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "num_key_value_heads") != NULL);
    CU_ASSERT(parse_with(",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}", &c, &err) == TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "yarn") != NULL);
    CU_ASSERT(parse_with(",\"mlp_only_layers\":[5]", &c, &err) == TM_EINPUT);
    CU_ASSERT(parse_with(",\"decoder_sparse_step\":2", &c, &err) == TM_EINPUT); /* dense layer, no intermediate_size */
    CU_ASSERT(strstr(err.msg, "intermediate_size") != NULL);
    CU_ASSERT(cfg_parse(&c, "{\"model_type\":\"llama\"}", "config.json", &err) == TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "llama") != NULL);
    CU_ASSERT(cfg_parse(&c, "{\"model_type\":\"qwen3_moe\",\"hidden_size\":16}", "config.json", &err) == TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "missing field") != NULL);
    CU_ASSERT(parse_with(",\"hidden_size\":\"big\"", &c, &err) == TM_EINPUT);
}

/* ---- dtypes ---------------------------------------------------------------- */

static void test_dtype_conversions(void)
{
    CU_ASSERT(tm_f16_to_f32(0x3c00) == 1.0f);
    CU_ASSERT(tm_f16_to_f32(0xc000) == -2.0f);
    CU_ASSERT(tm_f16_to_f32(0x0001) == ldexpf(1.0f, -24)); /* smallest subnormal */
    CU_ASSERT(tm_f16_to_f32(0x7bff) == 65504.0f);
    CU_ASSERT(isinf(tm_f16_to_f32(0x7c00)));
    CU_ASSERT(isnan(tm_f16_to_f32(0x7e00)));
    CU_ASSERT(tm_bf16_to_f32(0x3f80) == 1.0f);
    CU_ASSERT(tm_f32_to_bf16(1.0f) == 0x3f80);
    /* round to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 */
    CU_ASSERT(tm_f32_to_bf16(1.0f + ldexpf(1.0f, -8)) == 0x3f80);
    CU_ASSERT(tm_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)) == 0x3f82);
    CU_ASSERT(isnan(tm_bf16_to_f32(tm_f32_to_bf16(NAN))));
    double d[3] = {1.5, -0.25, 1e300};
    float f[3];
    tm_convert_to_f32(TM_DT_F64, d, f, 3);
    CU_ASSERT(f[0] == 1.5f && f[1] == -0.25f && isinf(f[2]));
    CU_ASSERT(tm_count_nonfinite(TM_DT_F64, d, 3) == 0);
    CU_ASSERT(tm_count_nonfinite(TM_DT_F32, f, 3) == 1);
    tm_dtype dt;
    CU_ASSERT(tm_dtype_parse("BF16", &dt) == 0 && dt == TM_DT_BF16);
    CU_ASSERT(tm_dtype_parse("I8", &dt) == -1);
}

static void test_route_topk(void)
{
    float p[6] = {0.1f, 0.3f, 0.05f, 0.3f, 0.2f, 0.05f};
    int32_t ids[3];
    float w[3];
    model_route_topk(p, 6, 3, 1, ids, w);
    CU_ASSERT(ids[0] == 1 && ids[1] == 3 && ids[2] == 4); /* tie 0.3/0.3: lower id first */
    CU_ASSERT(fabsf(w[0] + w[1] + w[2] - 1.0f) < 1e-6f);
    model_route_topk(p, 6, 3, 0, ids, w);
    CU_ASSERT(w[0] == 0.3f && w[2] == 0.2f);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("engine", NULL, NULL);
    CU_add_test(s, "parity qwen3moe bf16 (hub layout)", test_parity_qwen3_bf16);
    CU_add_test(s, "parity qwen3moe v5 fused experts", test_parity_qwen3_v5_fused);
    CU_add_test(s, "parity mixed dtypes, sharded, tied, dense layer", test_parity_mixed_sharded);
    CU_add_test(s, "parity qwen3-omni thinker", test_parity_omni);
    CU_add_test(s, "fused layout bitwise equals per-expert", test_fused_equals_per_expert);
    CU_add_test(s, "KV cache decode equals prefill", test_kv_cache_consistency);
    CU_add_test(s, "batched sequences equal single ones", test_batch_equals_single);
    CU_add_test(s, "MRoPE equals RoPE for text", test_mrope_equals_rope_for_text);
    CU_add_test(s, "RoPE inv_freq in float32", test_rope_inv_freq_float32);
    CU_add_test(s, "config forms", test_config_forms);
    CU_add_test(s, "config errors", test_config_errors);
    CU_add_test(s, "dtype conversions", test_dtype_conversions);
    CU_add_test(s, "router top-k", test_route_topk);
    return cunit_run();
}
