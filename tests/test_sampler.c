/* test_sampler.c: greedy, top-k, top-p, min-p, seeding, penalties, stop
 * strings and generation_config.json of the sampler. */
#include "sampler.h"

#include <CUnit/Basic.h>

#include "cunit_run.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define V 1000

static void test_greedy(void)
{
    float l[V];
    for (int i = 0; i < V; i++) l[i] = (float)(i % 97);
    l[500] = 200.f;
    l[700] = 200.f; /* tie: the lower id wins */
    sampler s;
    sampler_params p = sampler_default_params();
    p.temperature = 0;
    sampler_init(&s, &p, V);
    CU_ASSERT(sampler_sample(&s, l) == 500);
    sampler_free(&s);
}

/* Only the k largest logits are ever drawn, and all of them can be. */
static void test_top_k(void)
{
    float l[V];
    srand(3);
    for (int i = 0; i < V; i++) l[i] = (float)rand() / RAND_MAX;
    int order[V];
    for (int i = 0; i < V; i++) order[i] = i;
    for (int i = 0; i < 5; i++) /* the five largest, by selection */
        for (int j = i + 1; j < V; j++)
            if (l[order[j]] > l[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    sampler s;
    sampler_params p = {.temperature = 1.0f, .top_k = 5, .top_p = 1.0f, .seed = 9};
    sampler_init(&s, &p, V);
    int seen[5] = {0};
    for (int n = 0; n < 2000; n++) {
        int id = sampler_sample(&s, l), ok = 0;
        for (int i = 0; i < 5; i++)
            if (id == order[i]) seen[i] = ok = 1;
        CU_ASSERT(ok);
    }
    for (int i = 0; i < 5; i++) CU_ASSERT(seen[i]);
    sampler_free(&s);
}

/* top-p keeps the smallest prefix reaching p: one dominant token alone. */
static void test_top_p(void)
{
    float l[V];
    for (int i = 0; i < V; i++) l[i] = 0.f;
    l[42] = 20.f; /* softmax mass ~ 1 - 1e-6 */
    sampler s;
    sampler_params p = {.temperature = 1.0f, .top_k = 0, .top_p = 0.9f, .seed = 1};
    sampler_init(&s, &p, V);
    for (int n = 0; n < 200; n++) CU_ASSERT(sampler_sample(&s, l) == 42);
    sampler_free(&s);
}

static void test_seeded(void)
{
    float l[V];
    for (int i = 0; i < V; i++) l[i] = sinf((float)i);
    sampler a, b, c;
    sampler_params p = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 5};
    sampler_init(&a, &p, V);
    sampler_init(&b, &p, V);
    p.seed = 6;
    sampler_init(&c, &p, V);
    int same = 1, differ = 0;
    for (int n = 0; n < 50; n++) {
        int x = sampler_sample(&a, l), y = sampler_sample(&b, l), z = sampler_sample(&c, l);
        same &= x == y;
        differ |= x != z;
    }
    CU_ASSERT(same);
    CU_ASSERT(differ);
    sampler_free(&a);
    sampler_free(&b);
    sampler_free(&c);
}

/* min-p 0.5 keeps only tokens at least half as likely as the top one. */
static void test_min_p(void)
{
    float l[V];
    for (int i = 0; i < V; i++) l[i] = -30.f;
    l[3] = 0.f;
    l[9] = logf(0.6f); /* 0.6 of the top: kept */
    l[11] = logf(0.4f); /* 0.4 of the top: dropped */
    sampler s;
    sampler_params p = sampler_default_params();
    p.temperature = 1.f;
    p.top_k = 0;
    p.top_p = 1.f;
    p.min_p = 0.5f;
    p.seed = 3;
    sampler_init(&s, &p, V);
    int seen3 = 0, seen9 = 0, other = 0;
    for (int n = 0; n < 400; n++) {
        int id = sampler_sample(&s, l);
        seen3 += id == 3;
        seen9 += id == 9;
        other += id != 3 && id != 9;
    }
    CU_ASSERT(seen3 > 0 && seen9 > 0);
    CU_ASSERT_EQUAL(other, 0);
    sampler_free(&s);
}

/* No seed given: one is drawn and kept in s.p.seed; the same seed replays. */
static void test_random_seed(void)
{
    float l[V];
    for (int i = 0; i < V; i++) l[i] = (float)(i % 13) * 0.1f;
    sampler a, b, c;
    sampler_params p = sampler_default_params();
    CU_ASSERT_EQUAL(p.seed, SAMPLER_SEED_RANDOM);
    sampler_init(&a, &p, V);
    sampler_init(&c, &p, V);
    CU_ASSERT(a.p.seed != SAMPLER_SEED_RANDOM && a.p.seed <= 0x7fffffffull);
    CU_ASSERT(a.p.seed != c.p.seed); /* 2^-31 chance of a false failure */
    p.seed = a.p.seed;
    sampler_init(&b, &p, V);
    int same = 1;
    for (int n = 0; n < 100; n++) same &= sampler_sample(&a, l) == sampler_sample(&b, l);
    CU_ASSERT(same);
    sampler_free(&a);
    sampler_free(&b);
    sampler_free(&c);
}

static void test_penalties(void)
{
    float l[8] = {1.f, 2.f, -1.f, 0.5f, 0.f, 0.f, 0.f, 0.f};
    int32_t hist[] = {1, 2, 1, 7, 3};
    sampler s;
    sampler_params p = sampler_default_params();
    p.repeat_penalty = 2.f;
    p.presence_penalty = 0.25f;
    p.frequency_penalty = 0.125f;
    p.penalty_last_n = 4; /* the oldest 1 falls out of the window: 2, 1, 7, 3 */
    sampler_init(&s, &p, 8);
    sampler_apply_penalties(&s, l, hist, 5);
    CU_ASSERT_DOUBLE_EQUAL(l[0], 1.f, 1e-6);                       /* unseen */
    CU_ASSERT_DOUBLE_EQUAL(l[1], 2.f / 2 - 0.25f - 0.125f, 1e-6);  /* once in the window */
    CU_ASSERT_DOUBLE_EQUAL(l[2], -1.f * 2 - 0.25f - 0.125f, 1e-6); /* negative: multiplied */
    CU_ASSERT_DOUBLE_EQUAL(l[3], 0.5f / 2 - 0.25f - 0.125f, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(l[7], 0.f - 0.25f - 0.125f, 1e-6);
    for (int i = 0; i < 8; i++) CU_ASSERT_EQUAL(s.count[i], 0);
    float m[8] = {0};
    int32_t rep[] = {5, 5, 5};
    sampler_apply_penalties(&s, m, rep, 3);
    CU_ASSERT_DOUBLE_EQUAL(m[5], -0.25f - 3 * 0.125f, 1e-6); /* frequency counts each occurrence */
    sampler_free(&s);
    /* off by default: logits untouched */
    float z[8] = {1.f, 2.f, -1.f, 0.5f, 0.f, 0.f, 0.f, 0.f};
    p = sampler_default_params();
    sampler_init(&s, &p, 8);
    sampler_apply_penalties(&s, z, hist, 5);
    CU_ASSERT_DOUBLE_EQUAL(z[1], 2.f, 0);
    CU_ASSERT_DOUBLE_EQUAL(z[2], -1.f, 0);
    sampler_free(&s);
}

static void test_stop_strings(void)
{
    sampler_params p = sampler_default_params();
    p.stop[p.n_stop++] = "END";
    p.stop[p.n_stop++] = "\n\n";
    const char *t = "one\n\ntwo END";
    CU_ASSERT_EQUAL(sampler_stop_find(&p, t, strlen(t)), 3);
    CU_ASSERT_EQUAL(sampler_stop_find(&p, "abc", 3), -1);
    CU_ASSERT_EQUAL(sampler_stop_find(&p, "xEND", 4), 1);
    CU_ASSERT_EQUAL(sampler_stop_holdback(&p, "abcEN", 5), 2);
    CU_ASSERT_EQUAL(sampler_stop_holdback(&p, "abcE", 4), 1);
    CU_ASSERT_EQUAL(sampler_stop_holdback(&p, "abc\n", 4), 1);
    CU_ASSERT_EQUAL(sampler_stop_holdback(&p, "abc", 3), 0);
    CU_ASSERT_EQUAL(sampler_stop_holdback(&p, "", 0), 0);
    /* a stop string completed by the appended part, across the boundary or inside it */
    CU_ASSERT_EQUAL(sampler_stop_cut(&p, "abcEND", 4, 6), 3);
    CU_ASSERT_EQUAL(sampler_stop_cut(&p, "abcxEND", 4, 7), 4);
    CU_ASSERT_EQUAL(sampler_stop_cut(&p, "abcxy", 4, 5), -1);
    CU_ASSERT_EQUAL(sampler_stop_cut(&p, "abc", 3, 3), -1); /* nothing appended */
    /* an earlier stop string in the part already searched is not found again */
    CU_ASSERT_EQUAL(sampler_stop_cut(&p, "ENDxxxxxxyz", 9, 11), -1);
    sampler_params none = sampler_default_params();
    CU_ASSERT_EQUAL(sampler_stop_cut(&none, "abcEND", 3, 6), -1);
}

static void test_generation_config(void)
{
    char dir[] = "/tmp/tm_gencfg_XXXXXX";
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    sampler_params p = sampler_default_params();
    int n = 16;
    tm_err err = {{0}};
    CU_ASSERT_EQUAL(sampler_read_generation_config(dir, &p, &n, &err), TM_OK); /* no file: nothing changes */
    CU_ASSERT_DOUBLE_EQUAL(p.temperature, 0.8f, 0);
    FILE *f = fopen(path, "w");
    fputs("{\"temperature\": 0.6, \"top_k\": 20, \"top_p\": 0.9, \"repetition_penalty\": 1.1, "
          "\"max_new_tokens\": 7, \"eos_token_id\": [1, 2]}", f);
    fclose(f);
    CU_ASSERT_EQUAL(sampler_read_generation_config(dir, &p, &n, &err), TM_OK);
    CU_ASSERT_DOUBLE_EQUAL(p.temperature, 0.6f, 1e-6);
    CU_ASSERT_EQUAL(p.top_k, 20);
    CU_ASSERT_DOUBLE_EQUAL(p.top_p, 0.9f, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(p.repeat_penalty, 1.1f, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(p.min_p, 0.f, 0);
    CU_ASSERT_EQUAL(n, 7);
    f = fopen(path, "w");
    fputs("{\"top_p\": \"high\"}", f);
    fclose(f);
    CU_ASSERT_EQUAL(sampler_read_generation_config(dir, &p, &n, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "generation_config.json") && strstr(err.msg, "top_p"));
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("sampler", NULL, NULL);
    CU_add_test(s, "greedy, ties to the lower id", test_greedy);
    CU_add_test(s, "top-k", test_top_k);
    CU_add_test(s, "top-p", test_top_p);
    CU_add_test(s, "seeded", test_seeded);
    CU_add_test(s, "min-p", test_min_p);
    CU_add_test(s, "random seed, reported and replayable", test_random_seed);
    CU_add_test(s, "repeat, presence and frequency penalties", test_penalties);
    CU_add_test(s, "stop strings and hold-back", test_stop_strings);
    CU_add_test(s, "generation_config.json", test_generation_config);
    return cunit_run();
}
