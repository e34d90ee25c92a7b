/* kern_pool.c: the kernels' persistent thread pool.
 *
 * Decode calls a matrix-vector product every few microseconds, so threads
 * are created once (kern_set_threads) and each call only publishes a task and
 * bumps a generation counter.  Workers spin briefly on the counter (a wake-up
 * through the futex costs tens of microseconds) and then sleep on a condition
 * variable, so an idle pool costs no CPU.  Nothing is allocated per call.
 */
#include "kernels.h"

#include "common.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Polls before a worker sleeps: 0.5-1 ms of pause instructions, longer than
 * the gap between two products of a decode step.  TRUSTMOE_POOL_SPIN sets
 * it (0: sleep at once), for ranks that share their cores with others. */
#define POOL_SPIN 20000
static int pool_spin = -1;

static int spin_limit(void)
{
    int v = __atomic_load_n(&pool_spin, __ATOMIC_RELAXED);
    if (v < 0) { /* racing first calls store the same value */
        const char *e = getenv("TRUSTMOE_POOL_SPIN");
        char *end = NULL;
        long x = e && *e ? strtol(e, &end, 10) : -1;
        v = e && *e && end && !*end && x >= 0 && x <= 100000000L ? (int)x : POOL_SPIN;
        __atomic_store_n(&pool_spin, v, __ATOMIC_RELAXED);
    }
    return v;
}

typedef struct {
    int n;             /* threads in all, the caller included */
    pthread_t *th;     /* [n - 1] */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;   /* bumped once per task */
    atomic_int pending; /* workers still running the current task */
    atomic_int busy;   /* 1 while a caller owns the pool */
    int quit;
    /* the current task */
    kern_range_fn fn;
    void *arg;
    int64_t len, align;
} kern_pool;

static kern_pool pool = {.n = 1, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
static int n_threads = 1;

/* Range of part i of n over [0, len), boundaries on multiples of align. */
static void split(int64_t len, int64_t align, int i, int n, int64_t *i0, int64_t *i1)
{
    int64_t blocks = (len + align - 1) / align;
    int64_t b0 = blocks * i / n, b1 = blocks * (i + 1) / n;
    *i0 = TM_MIN(b0 * align, len);
    *i1 = TM_MIN(b1 * align, len);
}

typedef struct {
    int id;
    unsigned gen0; /* pool.gen when the worker was created */
} worker_arg;
static worker_arg *worker_args; /* [n - 1] */

static void *worker_main(void *p)
{
    int id = ((worker_arg *)p)->id;
    /* Not the current value: a task may already have been published before
     * this thread got to run. */
    unsigned seen = ((worker_arg *)p)->gen0;
    for (;;) {
        unsigned g;
        int spins = 0, limit = spin_limit();
        while ((g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen && spins < limit) {
            spins++;
            __builtin_ia32_pause();
        }
        if (g == seen) {
            pthread_mutex_lock(&pool.mu);
            while ((g = atomic_load(&pool.gen)) == seen && !pool.quit) pthread_cond_wait(&pool.cv, &pool.mu);
            int quit = pool.quit;
            pthread_mutex_unlock(&pool.mu);
            if (quit) return NULL;
        }
        seen = g;
        if (pool.quit) return NULL;
        int64_t i0, i1;
        split(pool.len, pool.align, id, pool.n, &i0, &i1);
        if (i1 > i0) pool.fn(pool.arg, i0, i1);
        atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release);
    }
}

static void pool_stop(void)
{
    if (pool.n <= 1) return;
    pthread_mutex_lock(&pool.mu);
    pool.quit = 1;
    atomic_fetch_add(&pool.gen, 1);
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < pool.n - 1; i++) pthread_join(pool.th[i], NULL);
    free(pool.th);
    free(worker_args);
    pool.th = NULL;
    worker_args = NULL;
    pool.quit = 0;
    pool.n = 1;
}

static void pool_start(int n)
{
    pool.n = n;
    pool.th = tm_calloc((size_t)(n - 1), sizeof *pool.th);
    worker_args = tm_calloc((size_t)(n - 1), sizeof *worker_args);
    for (int i = 0; i < n - 1; i++) {
        worker_args[i].id = i + 1;
        worker_args[i].gen0 = atomic_load(&pool.gen);
        int rc = pthread_create(&pool.th[i], NULL, worker_main, &worker_args[i]);
        TM_ASSERT_MSG(rc == 0, "cannot start a kernel thread");
    }
}

void kern_set_threads(int n)
{
    n = n < 1 ? 1 : n;
    if (n != pool.n) {
        /* Not meant to race with kernel calls: set once at start-up. */
        pool_stop();
        if (n > 1) pool_start(n);
    }
    n_threads = n;
    openblas_set_num_threads(n);
}

int kern_threads(void) { return n_threads; }

void kern_parallel_for(int64_t n, int64_t align, kern_range_fn fn, void *arg)
{
    if (n <= 0) return;
    if (align < 1) align = 1;
    int expect = 0;
    if (pool.n <= 1 || n < 2 * align || !atomic_compare_exchange_strong(&pool.busy, &expect, 1)) {
        fn(arg, 0, n);
        return;
    }
    pool.fn = fn;
    pool.arg = arg;
    pool.len = n;
    pool.align = align;
    atomic_store(&pool.pending, pool.n - 1);
    pthread_mutex_lock(&pool.mu);
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);

    int64_t i0, i1;
    split(n, align, 0, pool.n, &i0, &i1);
    if (i1 > i0) fn(arg, i0, i1);
    /* The workers are mid-task, so this wait is short; yield in case the
     * machine is oversubscribed and a worker needs this core. */
    for (int s = 0; atomic_load_explicit(&pool.pending, memory_order_acquire) > 0; s++) {
        if (s < 4096) __builtin_ia32_pause();
        else sched_yield();
    }
    atomic_store(&pool.busy, 0);
}
