/* test_mkmodel.c: the synthetic-weight generator that `mkmodel` writes and
 * `--synthetic` builds in memory: any element range equals the same slice of
 * the whole tensor, names resolve to the shapes the file lists, and the
 * presets have the parameter counts of reference/qwen3_moe.md section 7. */
#include "mkmodel.h"

#include "dtype.h"

#include <CUnit/Basic.h>

#include "cunit_run.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_presets(void)
{
    const mk_preset *o = mk_preset_find("omni30b"), *s = mk_preset_find("omni48-small"), *t = mk_preset_find("tiny");
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_PTR_NULL(mk_preset_find("omni31b"));
    /* 30,532,646,912 parameters for the Omni thinker text model (reference §7) */
    CU_ASSERT_EQUAL(mk_model_bytes(o), 2ull * 30532646912ull);
    CU_ASSERT_EQUAL(mk_tensor_count(o), 18867);
    CU_ASSERT_EQUAL(mk_tensor_count(s), 18867);
    CU_ASSERT(o->hidden == 2048 && o->moe_inter == 768 && o->n_heads == 32 && o->n_kv_heads == 4 &&
              o->head_dim == 128 && o->vocab == 152064 && o->n_experts == 128 && o->top_k == 8);
    CU_ASSERT(s->hidden == 512 && s->moe_inter == 128 && s->n_heads == 8 && s->n_kv_heads == 2 &&
              s->head_dim == 64 && s->vocab == 151936 && s->n_layers == 48);
    CU_ASSERT(t->n_layers == 4 && t->n_experts == 16 && t->top_k == 4 && t->hidden == 64);
}

static void test_names(void)
{
    const mk_preset *p = mk_preset_find("omni48-small");
    mk_tensor a, b;
    int bad = 0;
    for (int64_t i = 0; i < mk_tensor_count(p); i += 1 + i % 7) {
        mk_tensor_at(p, i, &a);
        if (mk_tensor_find(p, a.name, &b) != 0 || b.ndim != a.ndim || b.shape[0] != a.shape[0] ||
            b.shape[1] != a.shape[1] || b.std != a.std)
            bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(mk_tensor_find(p, "thinker.model.layers.47.mlp.experts.127.down_proj.weight", &b), 0);
    CU_ASSERT(b.shape[0] == 512 && b.shape[1] == 128);
    CU_ASSERT_EQUAL(mk_tensor_find(p, "model.layers.3.self_attn.q_proj.weight", &b), 0);
    CU_ASSERT(b.shape[0] == 512 && b.shape[1] == 512 && fabsf(b.std - 1.0f / sqrtf(512.f)) < 1e-7f);
    CU_ASSERT_EQUAL(mk_tensor_find(p, "model.layers.48.input_layernorm.weight", &b), -1);
    CU_ASSERT_EQUAL(mk_tensor_find(p, "model.layers.0.mlp.experts.128.up_proj.weight", &b), -1);
    CU_ASSERT_EQUAL(mk_tensor_find(p, "model.layers.01.input_layernorm.weight", &b), -1);
    CU_ASSERT_EQUAL(mk_tensor_find(p, "model.layers.0.mlp.experts.3.up_proj.bias", &b), -1);
    CU_ASSERT_EQUAL(mk_tensor_find(p, "lm_head.weight", &b), 0);
    CU_ASSERT(b.shape[0] == 151936 && b.shape[1] == 512);
}

static uint64_t ref_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t ref_fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static void test_fill(void)
{
    const mk_preset *p = mk_preset_find("tiny");
    const char *name = "model.layers.2.mlp.experts.5.down_proj.weight"; /* [64, 32] */
    enum { N = 64 * 32 };
    uint16_t all[N], part[N], other[N];
    CU_ASSERT_EQUAL_FATAL(mk_fill_tensor(p, 42, name, all, 0, N), 0);
    int diff = 0;
    for (size_t off = 0; off < N; off += 37) {
        size_t cnt = N - off < 101 ? N - off : 101;
        CU_ASSERT_EQUAL(mk_fill_tensor(p, 42, name, part, off, cnt), 0);
        diff += memcmp(part, all + off, cnt * 2) != 0;
    }
    CU_ASSERT_EQUAL(diff, 0);
    /* every element is the definition's, whatever path the CPU takes: the
     * splitmix64 finaliser of key + (i + 1)·φ, its four 16-bit fields summed,
     * centred, scaled by std / 37837.23 and rounded to BF16 */
    uint64_t key = ref_mix64(42 ^ ref_fnv1a64(name)), bad = 0;
    float scale = (1.0f / sqrtf(32.0f)) / 37837.23f; /* down_proj: std 1/sqrt(moe_inter) */
    for (size_t i = 0; i < N; i++) {
        uint64_t h = ref_mix64(key + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull);
        int32_t s = (int32_t)((h & 0xffff) + ((h >> 16) & 0xffff) + ((h >> 32) & 0xffff) + (h >> 48)) - 131070;
        bad += all[i] != tm_f32_to_bf16((float)s * scale);
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* the "thinker." spelling gives the same bytes; another seed or tensor does not */
    CU_ASSERT_EQUAL(mk_fill_tensor(p, 42, "thinker.model.layers.2.mlp.experts.5.down_proj.weight", other, 0, N), 0);
    CU_ASSERT_EQUAL(memcmp(other, all, sizeof all), 0);
    mk_fill_tensor(p, 43, name, other, 0, N);
    CU_ASSERT_NOT_EQUAL(memcmp(other, all, sizeof all), 0);
    mk_fill_tensor(p, 42, "model.layers.2.mlp.experts.6.down_proj.weight", other, 0, N);
    CU_ASSERT_NOT_EQUAL(memcmp(other, all, sizeof all), 0);
    /* statistics: mean 0, std 1/sqrt(32) */
    double m = 0, v = 0;
    for (int i = 0; i < N; i++) m += tm_bf16_to_f32(all[i]);
    m /= N;
    for (int i = 0; i < N; i++) v += (tm_bf16_to_f32(all[i]) - m) * (tm_bf16_to_f32(all[i]) - m);
    double sd = sqrt(v / N), want = 1.0 / sqrt(32.0);
    CU_ASSERT(fabs(m) < 4 * want / sqrt(N));
    CU_ASSERT(fabs(sd / want - 1) < 0.1);
    /* norms are exactly 1 */
    CU_ASSERT_EQUAL(mk_fill_tensor(p, 42, "model.norm.weight", part, 0, 64), 0);
    int ones = 0;
    for (int i = 0; i < 64; i++) ones += part[i] == 0x3f80;
    CU_ASSERT_EQUAL(ones, 64);
    /* errors write nothing */
    part[0] = 0xdead;
    CU_ASSERT_EQUAL(mk_fill_tensor(p, 42, "model.nope.weight", part, 0, 1), -1);
    CU_ASSERT_EQUAL(mk_fill_tensor(p, 42, name, part, N - 1, 2), -1);
    CU_ASSERT_EQUAL(mk_fill_tensor(p, 42, name, part, N + 1, 0), -1);
    CU_ASSERT_EQUAL(part[0], 0xdead);
    CU_ASSERT_EQUAL(mk_fill_tensor(p, 42, name, part, N, 0), 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("mkmodel", NULL, NULL);
    CU_add_test(s, "presets and parameter counts", test_presets);
    CU_add_test(s, "tensor names and shapes", test_names);
    CU_add_test(s, "fill: slices, seeds, statistics, errors", test_fill);
    return cunit_run();
}
