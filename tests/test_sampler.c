/* test_sampler.c: greedy, top-k, top-p and seeding of the sampler. */
#include "sampler.h"

#include <CUnit/Basic.h>

#include "cunit_run.h"
#include <math.h>
#include <stdlib.h>

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

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("sampler", NULL, NULL);
    CU_add_test(s, "greedy, ties to the lower id", test_greedy);
    CU_add_test(s, "top-k", test_top_k);
    CU_add_test(s, "top-p", test_top_p);
    CU_add_test(s, "seeded", test_seeded);
    return cunit_run();
}
