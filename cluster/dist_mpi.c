/* dist_mpi.c: what both roles share of the MPI job: start-up, the job's
 * communicator, deadline polling, fatal errors, finalize, and the model
 * facts the handshake compares (see dist.h). */
#define TM_DIST_INTERNAL
#include "dist.h"

#include "mkmodel.h"
#include "wire.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#ifndef TRUSTMOE_BUILD_ID
#define TRUSTMOE_BUILD_ID __DATE__ " " __TIME__
#endif
#define DIST_VERSION "trustmoe 0.1, wire v" TM_STR(WIRE_VERSION) ", build " TRUSTMOE_BUILD_ID
#define TM_STR_(x) #x
#define TM_STR(x) TM_STR_(x)

/* ---- MPI start-up and shared helpers ------------------------------------------ */

static int g_mpi, g_finalized, g_rank, g_size = 1;
static MPI_Comm g_comm = MPI_COMM_NULL;
static char g_host[256];
/* A worker spins for the next request this long after its last one: longer
 * than the gap between two decode steps (lm_head, sampling), far shorter than
 * a pause between requests.  TRUSTMOE_POLL_SPIN_US overrides. */
static double g_hot_s = 20e-3;
static long g_sleep_max_ns = 500000L; /* longest idle sleep in the first 100 ms; TRUSTMOE_POLL_SLEEP_US overrides */

static void dist_abort_hook(int code)
{
    if (g_mpi && !g_finalized) MPI_Abort(g_comm != MPI_COMM_NULL ? g_comm : MPI_COMM_WORLD, code);
}

/* Started by a launcher?  Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE, PMIx
 * launchers (srun --mpi=pmix) PMIX_RANK, older PMI ones PMI_RANK. */
static int launched_by_mpi(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

/* ---- start-up watchdog ------------------------------------------------------ */

/* MPI_Init and the MPI_Comm_dup after it are collective and have no
 * deadline: if one rank is stopped or never starts, every other rank waits
 * in them forever.  A thread started before MPI_Init ends this rank after
 * the idle timeout unless start-up completed; the launcher then takes down
 * the rest of the job (its ranks' own watchdogs fire too).  MPI cannot be
 * used to abort here (it is not initialised), so the thread writes one line
 * and calls _exit.  Everything after start-up polls against deadlines. */

static double g_startup_timeout = 600.0; /* dist_set_startup_timeout; the --idle-timeout default */
static pthread_mutex_t g_wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wd_cv;
static int g_wd_done;

void dist_set_startup_timeout(double seconds)
{
    if (seconds > 0) g_startup_timeout = seconds;
}

/* The launcher's rank for this process (MPI does not know it yet); -1 if none. */
static int launcher_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"};
    for (size_t i = 0; i < TM_ARRAY_LEN(vars); i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return -1;
}

static void *watchdog_main(void *arg)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    double t = (double)until.tv_sec + until.tv_nsec * 1e-9 + g_startup_timeout;
    until.tv_sec = (time_t)t;
    until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
    pthread_mutex_lock(&g_wd_mu);
    int rc = 0;
    while (!g_wd_done && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&g_wd_cv, &g_wd_mu, &until);
    if (!g_wd_done) {
        fprintf(stderr,
                "trustmoe: rank %d (%s): start-up did not complete within %g s (--idle-timeout): a rank stopped or "
                "cannot be reached\n",
                launcher_rank(), g_host, g_startup_timeout);
        fflush(stderr);
        _exit(1);
    }
    pthread_mutex_unlock(&g_wd_mu);
    return arg;
}

static pthread_t watchdog_start(int *started)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g_wd_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_t t;
    *started = pthread_create(&t, NULL, watchdog_main, NULL) == 0;
    if (!*started) fprintf(stderr, "trustmoe: rank %d: no start-up watchdog (pthread_create failed)\n", launcher_rank());
    return t;
}

static void watchdog_stop(pthread_t t, int started)
{
    pthread_mutex_lock(&g_wd_mu);
    g_wd_done = 1;
    pthread_cond_signal(&g_wd_cv);
    pthread_mutex_unlock(&g_wd_mu);
    if (started) pthread_join(t, NULL);
}

/* TRUSTMOE_FAULT=startup-stall: rank TRUSTMOE_FAULT_RANK (default 1) stops
 * itself before MPI_Init, as a rank suspended or stuck at launch would. */
static void startup_fault(void)
{
    const char *k = getenv("TRUSTMOE_FAULT"), *r = getenv("TRUSTMOE_FAULT_RANK");
    if (!k || strcmp(k, "startup-stall") != 0 || launcher_rank() != (r ? atoi(r) : 1)) return;
    fprintf(stderr, "trustmoe: rank %d: TRUSTMOE_FAULT=startup-stall: stopping before MPI_Init\n", launcher_rank());
    fflush(stderr);
    raise(SIGSTOP);
}

void dist_init(int *argc, char ***argv, int *rank, int *size)
{
    if (!g_host[0] && gethostname(g_host, sizeof g_host - 1) != 0) snprintf(g_host, sizeof g_host, "?");
    *rank = 0;
    *size = 1;
    if (g_mpi || !launched_by_mpi()) {
        *rank = g_rank;
        *size = g_size;
        return;
    }
    startup_fault();
    int wd_started = 0;
    pthread_t wd = watchdog_start(&wd_started);
    int provided = 0;
    /* kernel threads and the watchdog never call MPI; only the main thread does */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "trustmoe: MPI_Init_thread failed\n");
        exit(1);
    }
    g_mpi = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_dup(MPI_COMM_WORLD, &g_comm);
    MPI_Comm_set_errhandler(g_comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(g_comm, &g_rank);
    MPI_Comm_size(g_comm, &g_size);
    watchdog_stop(wd, wd_started);
    tm_abort_hook = dist_abort_hook;
    /* the default 50 us timer slack would dominate the poll's short sleeps */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    const char *spin = getenv("TRUSTMOE_POLL_SPIN_US");
    if (spin) g_hot_s = atof(spin) * 1e-6;
    const char *sl = getenv("TRUSTMOE_POLL_SLEEP_US");
    if (sl && atol(sl) > 0) g_sleep_max_ns = atol(sl) * 1000L;
    *rank = g_rank;
    *size = g_size;
}

int dist_mpi_active(void) { return g_mpi && !g_finalized; }
MPI_Comm dist_comm(void) { return g_comm; }
const char *dist_build_version(void) { return DIST_VERSION; }
const char *dist_hostname(void) { return g_host; }

int dist_load_threads(int threads)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return threads;
    int local = 1;
    if (g_mpi) {
        const char *env = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
        local = env ? atoi(env) : 0;
        if (local < 1) return threads; /* not told how many share this host */
    }
    return TM_MAX(threads, CPU_COUNT(&set) / local);
}

const char *dist_mpi_error(int code)
{
    static char buf[MPI_MAX_ERROR_STRING + 32];
    int len = 0;
    if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) snprintf(buf, sizeof buf, "MPI error %d", code);
    return buf;
}

_Noreturn void dist_die(int code, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "trustmoe: rank %d (%s): %s\n", g_rank, g_host, msg);
    fflush(stderr);
    if (g_mpi && !g_finalized) MPI_Abort(g_comm, code);
    exit(code);
}

/* Polling against a deadline: spinning while something is due, sleeping
 * otherwise (dist.h).
 *
 * Spinning (rank 0 after its sends, a worker's own send, a worker within
 * g_hot_s of its last request, i.e. while a generation step is in flight):
 * one MPI_Test/MPI_Iprobe per round and a sched_yield, so a message is seen
 * within microseconds and a rank sharing its core still hands the core over.
 *
 * Sleeping (loading, a worker between requests): the poll sleeps, doubling from 20 us up to g_sleep_max_ns, and
 * after 100 ms of waiting up to DIST_IDLE_SLEEP_NS: a wake-up with its
 * MPI_Iprobe costs tens of microseconds of CPU, so an idle worker then costs
 * a few tenths of a percent of a core.
 *
 * Both modes check the deadline every round, so a dead or silent peer ends
 * the wait on time either way. */

#define DIST_IDLE_SLEEP_NS 20000000L /* 20 ms: 50 wake-ups a second once idle */

typedef struct {
    double t0;
    long ns;
    int idle;
} backoff;

static void backoff_wait(backoff *b)
{
    if (!b->idle) {
        sched_yield();
        return;
    }
    double waited = tm_now() - b->t0;
    long cap = waited < 0.1 ? g_sleep_max_ns : TM_MAX(g_sleep_max_ns, DIST_IDLE_SLEEP_NS);
    b->ns = b->ns ? TM_MIN(b->ns * 2, cap) : TM_MIN(20000L, cap);
    struct timespec ts = {b->ns / 1000000000L, b->ns % 1000000000L};
    nanosleep(&ts, NULL);
}

double dist_hot_window(void) { return g_hot_s; }

int dist_wait_all(MPI_Request *reqs, MPI_Status *sts, int n, double timeout, double spin)
{
    double t0 = tm_now(), deadline = t0 + timeout;
    backoff b = {t0, 0, 0};
    for (;;) {
        int open = -1;
        for (int i = 0; i < n; i++) {
            if (reqs[i] == MPI_REQUEST_NULL) continue;
            int flag = 0, rc = MPI_Test(&reqs[i], &flag, &sts[i]);
            if (rc != MPI_SUCCESS) {
                sts[i].MPI_ERROR = rc;
                return -2 - i;
            }
            if (!flag && open < 0) open = i;
        }
        if (open < 0) return -1;
        double now = tm_now();
        if (now > deadline) return open;
        if (!b.idle && now - t0 >= spin) {
            b.idle = 1;
            b.t0 = now;
        }
        backoff_wait(&b);
    }
}

int dist_probe(int src, MPI_Status *st, double timeout, double hot_until)
{
    double deadline = tm_now() + timeout;
    backoff b = {tm_now(), 0, 0};
    for (;;) {
        int flag = 0, rc = MPI_Iprobe(src, MPI_ANY_TAG, g_comm, &flag, st);
        if (rc != MPI_SUCCESS) dist_die(1, "MPI_Iprobe from rank %d failed: %s", src, dist_mpi_error(rc));
        if (flag) return 1;
        double now = tm_now();
        if (now > deadline) return 0;
        if (!b.idle && now >= hot_until) {
            b.idle = 1;
            b.t0 = now;
        }
        backoff_wait(&b);
    }
}

tm_status dist_model_config(const char *model_dir, const model_load_params *lp, tm_config *c, tm_err *err)
{
    if (lp && lp->synthetic) {
        const mk_preset *pre = mk_preset_find(lp->synthetic);
        if (!pre) return tm_errf(err, TM_EINPUT, "--synthetic %s: unknown preset", lp->synthetic);
        /* what a placement reads; every layer of a preset is a MoE layer */
        memset(c, 0, sizeof *c);
        c->num_layers = pre->n_layers;
        c->num_experts = pre->n_experts;
        c->top_k = pre->top_k;
        c->hidden_size = pre->hidden;
        c->moe_intermediate_size = pre->moe_inter;
        c->intermediate_size = pre->dense_inter;
        c->decoder_sparse_step = 1;
        return TM_OK;
    }
    return cfg_load(c, model_dir, err);
}

tm_status dist_model_shape(const char *model_dir, const model_load_params *lp, int *layers, int *experts,
                           tm_err *err)
{
    if (lp && lp->synthetic) {
        const mk_preset *pre = mk_preset_find(lp->synthetic);
        if (!pre) return tm_errf(err, TM_EINPUT, "--synthetic %s: unknown preset", lp->synthetic);
        *layers = pre->n_layers;
        *experts = pre->n_experts;
        return TM_OK;
    }
    tm_config c;
    tm_status st = cfg_load(&c, model_dir, err);
    if (st != TM_OK) return st;
    *layers = c.num_layers;
    *experts = c.num_experts;
    return TM_OK;
}

/* CRC32C over sampled bytes of every checkpoint file: the first and last
 * 16 KiB of its data.  The identity covers names, dtypes and shapes; this
 * catches two checkpoints of one architecture with different weights.  Per-node
 * copies of the same files give the same value. */
uint64_t dist_content_sample(const st_set *st)
{
    uint32_t crc = 0;
    for (int i = 0; i < st->n_files; i++) {
        const st_file *f = &st->files[i];
        if (!f->map || f->size <= f->data_start) continue;
        const uint8_t *d = (const uint8_t *)f->map + f->data_start;
        size_t n = f->size - f->data_start, s = TM_MIN(n, (size_t)16384);
        uint32_t a = wire_crc32c(d, s), z = wire_crc32c(d + n - s, s);
        crc = wire_crc32c(&a, 4) ^ (crc * 31u) ^ (z * 17u);
    }
    return crc;
}

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }

void dist_finalize(void)
{
    if (!g_mpi || g_finalized) return;
    g_finalized = 1;
    if (g_comm != MPI_COMM_NULL) MPI_Comm_free(&g_comm);
    MPI_Finalize();
}
