/* test_sched.c: the scheduler against one-sequence generation on the tiny
 * synthetic model: same greedy ids alone, batched, joining late, with
 * chunked prefill; slots freed; queue bound; cancel. */
#include "scheduler.h"

#include <CUnit/Basic.h>

#include "cunit_run.h"
#include <stdlib.h>
#include <string.h>

#define MAXGEN 24

static tm_model g_m;

typedef struct {
    int32_t out[MAXGEN + 1];
    int n;
    int done;
    sched_stop why;
    int stop_after; /* on_token asks to stop after this many (0: never) */
} collect;

static int on_token(void *ctx, int32_t id, const float *logits, int vocab)
{
    collect *c = ctx;
    CU_ASSERT(vocab == g_m.cfg.vocab_size && logits != NULL);
    c->out[c->n++] = id;
    return c->stop_after && c->n >= c->stop_after;
}

static void on_done(void *ctx, sched_stop why, int n)
{
    collect *c = ctx;
    c->done++;
    c->why = why;
    CU_ASSERT(n == c->n);
}

/* Reference: greedy generation of one sequence with model_forward. */
static void reference(const int32_t *prompt, int n, int gen, int32_t *out)
{
    tm_state s;
    tm_err err;
    int V = g_m.cfg.vocab_size;
    CU_ASSERT_FATAL(state_init(&s, &g_m, n + gen + 1, n + gen + 1, &err) == TM_OK);
    moe_backend be = model_local_backend(&g_m, &s);
    float *lg = malloc(sizeof(float) * (size_t)V);
    CU_ASSERT_FATAL(model_forward(&g_m, &s, prompt, n, &be, NULL, lg, 0, &err) == TM_OK);
    for (int i = 0; i < gen; i++) {
        out[i] = sampler_argmax(lg, V);
        if (i + 1 < gen) CU_ASSERT_FATAL(model_forward(&g_m, &s, &out[i], 1, &be, NULL, lg, 0, &err) == TM_OK);
    }
    free(lg);
    state_free(&s);
}

static sched_request greedy(collect *c, int max_tokens)
{
    sched_request r = {0};
    r.samp = sampler_default_params();
    r.samp.temperature = 0;
    r.max_tokens = max_tokens;
    r.on_token = on_token;
    r.on_done = on_done;
    r.ctx = c;
    return r;
}

static void prompt_of(int i, int32_t *p, int n)
{
    for (int j = 0; j < n; j++) p[j] = (int32_t)((i * 131 + j * 17 + 5) % g_m.cfg.vocab_size);
}

static int run_to_end(sched *sc)
{
    tm_err err;
    int steps = 0;
    while (sched_running(sc) + sched_queued(sc) > 0 && steps < 1000) {
        CU_ASSERT_FATAL(sched_step(sc, &err) == TM_OK);
        steps++;
    }
    return steps;
}

/* Sequences with different prompt lengths, some joining after others have
 * started, chunked prefill: each gets the ids it gets alone. */
static void check_mix(int max_seqs, int chunk, int join_late)
{
    enum { N = 5 };
    static const int len[N] = {3, 11, 1, 7, 20};
    int32_t prompts[N][32], ref[N][MAXGEN];
    collect c[N];
    memset(c, 0, sizeof c);
    for (int i = 0; i < N; i++) {
        prompt_of(i, prompts[i], len[i]);
        reference(prompts[i], len[i], 12, ref[i]);
    }
    moe_backend be_dummy;
    tm_state tmp;
    tm_err err;
    sched sc;
    sched_params p = sched_default_params();
    p.max_seqs = max_seqs;
    p.chunk = chunk;
    p.ctx = 64;
    p.max_queue = N;
    /* the local backend computes from the scheduler's own state */
    CU_ASSERT_FATAL(state_init(&tmp, &g_m, 4, 4, &err) == TM_OK);
    be_dummy = model_local_backend(&g_m, &tmp);
    CU_ASSERT_FATAL(sched_init(&sc, &g_m, &be_dummy, NULL, &p, &err) == TM_OK);
    be_dummy = model_local_backend(&g_m, &sc.s);
    int first = join_late ? 2 : N;
    for (int i = 0; i < first; i++) {
        sched_request r = greedy(&c[i], 12);
        CU_ASSERT_FATAL(sched_add(&sc, prompts[i], len[i], &r, &err) == TM_OK);
    }
    if (join_late) {
        for (int k = 0; k < 3; k++) CU_ASSERT_FATAL(sched_step(&sc, &err) == TM_OK);
        for (int i = first; i < N; i++) {
            sched_request r = greedy(&c[i], 12);
            CU_ASSERT_FATAL(sched_add(&sc, prompts[i], len[i], &r, &err) == TM_OK);
        }
    }
    run_to_end(&sc);
    for (int i = 0; i < N; i++) {
        CU_ASSERT(c[i].done == 1);
        CU_ASSERT(c[i].n == 12);
        CU_ASSERT(c[i].why == SCHED_STOP_LENGTH || c[i].why == SCHED_STOP_EOS);
        CU_ASSERT(memcmp(c[i].out, ref[i], sizeof(int32_t) * (size_t)c[i].n) == 0);
    }
    CU_ASSERT(sched_running(&sc) == 0 && sched_queued(&sc) == 0);
    sched_free(&sc);
    state_free(&tmp);
}

static void test_alone_and_batched(void) { check_mix(8, 512, 0); }
static void test_join_late(void) { check_mix(8, 512, 1); }
static void test_chunked_prefill(void) { check_mix(8, 3, 1); }
static void test_few_slots(void) { check_mix(2, 4, 0); } /* slots are freed and reused */

static void test_queue_bound_and_cancel(void)
{
    tm_state tmp;
    tm_err err;
    sched sc;
    sched_params p = sched_default_params();
    p.max_seqs = 1;
    p.max_queue = 1;
    p.ctx = 32;
    CU_ASSERT_FATAL(state_init(&tmp, &g_m, 4, 4, &err) == TM_OK);
    moe_backend be = model_local_backend(&g_m, &tmp);
    CU_ASSERT_FATAL(sched_init(&sc, &g_m, &be, NULL, &p, &err) == TM_OK);
    be = model_local_backend(&g_m, &sc.s);
    collect a = {0}, b = {0}, c = {0};
    int32_t pr[4];
    prompt_of(1, pr, 4);
    sched_request ra = greedy(&a, 20), rb = greedy(&b, 20), rc = greedy(&c, 20);
    CU_ASSERT(sched_add(&sc, pr, 4, &ra, &err) == TM_OK);
    CU_ASSERT(sched_step(&sc, &err) == TM_OK); /* a takes the only slot */
    CU_ASSERT(sched_add(&sc, pr, 4, &rb, &err) == TM_OK);
    CU_ASSERT(sched_add(&sc, pr, 4, &rc, &err) == TM_EINPUT); /* the queue holds one */
    CU_ASSERT(strstr(err.msg, "queue full") != NULL);
    CU_ASSERT(sched_cancel(&sc, &b) == 1 && b.done == 1 && b.n == 0);
    CU_ASSERT(sched_cancel(&sc, &a) == 1 && a.done == 1 && a.why == SCHED_STOP_CALLER);
    CU_ASSERT(sched_running(&sc) == 0 && sched_queued(&sc) == 0);
    /* a prompt longer than the context, and an id outside the vocabulary */
    int32_t longp[40] = {0};
    CU_ASSERT(sched_add(&sc, longp, 40, &rc, &err) == TM_EINPUT);
    int32_t bad = g_m.cfg.vocab_size;
    CU_ASSERT(sched_add(&sc, &bad, 1, &rc, &err) == TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "outside the vocabulary") != NULL);
    sched_free(&sc);
    state_free(&tmp);
}

/* on_token's stop, and the context bound. */
static void test_stops(void)
{
    tm_state tmp;
    tm_err err;
    sched sc;
    sched_params p = sched_default_params();
    p.ctx = 10;
    CU_ASSERT_FATAL(state_init(&tmp, &g_m, 4, 4, &err) == TM_OK);
    moe_backend be = model_local_backend(&g_m, &tmp);
    CU_ASSERT_FATAL(sched_init(&sc, &g_m, &be, NULL, &p, &err) == TM_OK);
    be = model_local_backend(&g_m, &sc.s);
    collect a = {0}, b = {0};
    a.stop_after = 3;
    int32_t pr[6];
    prompt_of(2, pr, 6);
    sched_request ra = greedy(&a, 20), rb = greedy(&b, 20);
    CU_ASSERT(sched_add(&sc, pr, 6, &ra, &err) == TM_OK);
    CU_ASSERT(sched_add(&sc, pr, 6, &rb, &err) == TM_OK);
    run_to_end(&sc);
    CU_ASSERT(a.n == 3 && a.why == SCHED_STOP_CALLER);
    /* 6 prompt tokens in a 10-token cache: the 5th token fills it */
    CU_ASSERT(b.why == SCHED_STOP_CONTEXT || b.why == SCHED_STOP_EOS);
    if (b.why == SCHED_STOP_CONTEXT) CU_ASSERT(b.n == 5);
    sched_free(&sc);
    state_free(&tmp);
}

int main(void)
{
    tm_err err;
    model_load_params lp = model_default_load_params();
    lp.synthetic = "tiny";
    if (model_load(&g_m, NULL, &lp, &err) != TM_OK) {
        fprintf(stderr, "tiny: %s\n", err.msg);
        return 1;
    }
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("sched", NULL, NULL);
    CU_add_test(s, "alone and batched: the ids of one sequence", test_alone_and_batched);
    CU_add_test(s, "sequences joining between steps", test_join_late);
    CU_add_test(s, "chunked prefill", test_chunked_prefill);
    CU_add_test(s, "two slots for five sequences", test_few_slots);
    CU_add_test(s, "queue bound, cancel, bad prompts", test_queue_bound_and_cancel);
    CU_add_test(s, "caller stop and full context", test_stops);
    int rc = cunit_run();
    model_free(&g_m);
    return rc;
}
