/* dist.c: the coordinator side of expert parallelism (see dist.h), the flags,
 * MPI start-up, and the helpers both roles share. */
#define TM_DIST_INTERNAL
#include "dist.h"

#include "mkmodel.h"
#include "placement.h"
#include "trustmoe.pb-c.h"
#include "wire.h"

#include <cJSON.h>
#include <errno.h>
#include <sched.h>
#include <sys/prctl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef TRUSTMOE_BUILD_ID
#define TRUSTMOE_BUILD_ID __DATE__ " " __TIME__
#endif
#define DIST_VERSION "trustmoe 0.1, wire v" TM_STR(WIRE_VERSION) ", build " TRUSTMOE_BUILD_ID
#define TM_STR_(x) #x
#define TM_STR(x) TM_STR_(x)

/* ---- flags ----------------------------------------------------------------- */

dist_params dist_default_params(void)
{
    dist_params p = {
        .placement = "contiguous",
        .replicas = 1,
        .wire_dtype = TM_DT_F32,
        .checksum = 0,
        .comm_timeout = 60.0,
        .stats_json = NULL,
        .idle_timeout = 600.0,
        .workers = 0,
    };
    return p;
}

void dist_usage(FILE *f)
{
    fprintf(f, "  --placement P       expert placement over worker ranks: contiguous (default), round-robin,\n"
               "                      balanced:STATS (the expert loads of an earlier --stats-json),\n"
               "                      or a JSON file {\"experts\": [[layer, expert, rank], ...]}\n"
               "  --replicas R        host every expert on R distinct workers (default 1)\n"
               "  --wire-dtype D      activations on the wire: f32 (default) or bf16\n"
               "  --wire-checksum     CRC32C over every activation payload\n"
               "  --comm-timeout S    seconds a worker's reply may take before the job is aborted (default 60)\n"
               "  --idle-timeout S    seconds for loading and handshake, and a worker's wait for work (default 600)\n"
               "  --stats-json FILE   write throughput, time split, bytes and expert load to FILE\n"
               "  --workers N         inspect: print the placement for N worker ranks\n");
}

static int parse_seconds(const char *flag, const char *v, double *out, tm_err *err)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x > 0 && x <= 1e6)) {
        tm_errf(err, TM_EINPUT, "%s: '%s' is not a number of seconds in (0, 1e6]", flag, v);
        return -1;
    }
    *out = x;
    return 1;
}

static int parse_count(const char *flag, const char *v, int lo, int hi, int *out, tm_err *err)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        tm_errf(err, TM_EINPUT, "%s: '%s' is not an integer in %d..%d", flag, v, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 1;
}

int dist_parse_flag(dist_params *p, int argc, char **argv, int *i, tm_err *err)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--wire-checksum")) {
        p->checksum = 1;
        return 1;
    }
    static const char *const valued[] = {"--placement", "--replicas", "--wire-dtype", "--comm-timeout",
                                         "--idle-timeout", "--stats-json", "--workers"};
    size_t which = TM_ARRAY_LEN(valued);
    for (size_t j = 0; j < TM_ARRAY_LEN(valued); j++)
        if (!strcmp(a, valued[j])) which = j;
    if (which == TM_ARRAY_LEN(valued)) return 0;
    if (*i + 1 >= argc) {
        tm_errf(err, TM_EINPUT, "%s needs a value", a);
        return -1;
    }
    const char *v = argv[++*i];
    switch (which) {
    case 0:
        if (!*v) {
            tm_errf(err, TM_EINPUT, "--placement: empty value");
            return -1;
        }
        p->placement = v;
        return 1;
    case 1: return parse_count(a, v, 1, 1024, &p->replicas, err);
    case 2:
        if (!strcmp(v, "f32")) p->wire_dtype = TM_DT_F32;
        else if (!strcmp(v, "bf16")) p->wire_dtype = TM_DT_BF16;
        else {
            tm_errf(err, TM_EINPUT, "--wire-dtype: '%s' is not f32 or bf16", v);
            return -1;
        }
        return 1;
    case 3: return parse_seconds(a, v, &p->comm_timeout, err);
    case 4: return parse_seconds(a, v, &p->idle_timeout, err);
    case 5: p->stats_json = v; return 1;
    default: return parse_count(a, v, 1, 1 << 20, &p->workers, err);
    }
}

/* ---- MPI start-up and shared helpers ------------------------------------------ */

static int g_mpi, g_finalized, g_rank, g_size = 1;
static MPI_Comm g_comm = MPI_COMM_NULL;
static char g_host[256];
static double g_spin_s = 500e-6;  /* poll spin window; TRUSTMOE_POLL_SPIN_US overrides */
static long g_sleep_max_ns = 500000L; /* longest poll sleep; TRUSTMOE_POLL_SLEEP_US overrides */

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
    int provided = 0;
    /* kernel threads never call MPI; only the main thread does */
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
    tm_abort_hook = dist_abort_hook;
    /* the default 50 us timer slack would dominate the poll's short sleeps */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    const char *spin = getenv("TRUSTMOE_POLL_SPIN_US");
    if (spin) g_spin_s = atof(spin) * 1e-6;
    const char *sl = getenv("TRUSTMOE_POLL_SLEEP_US");
    if (sl && atol(sl) > 0) g_sleep_max_ns = atol(sl) * 1000L;
    *rank = g_rank;
    *size = g_size;
}

int dist_mpi_active(void) { return g_mpi && !g_finalized; }
MPI_Comm dist_comm(void) { return g_comm; }
const char *dist_build_version(void) { return DIST_VERSION; }
const char *dist_hostname(void) { return g_host; }

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

/* Polling against a deadline.  For the first g_spin_s of a wait the
 * poll only yields the CPU: the gaps between layers are that short in decode,
 * and on an oversubscribed box the yield hands the core to the rank we wait
 * for.  After that it sleeps, doubling from 20 us up to g_sleep_max_ns, so
 * an idle rank costs almost nothing and oversleeps by at most that much. */

typedef struct {
    double t0;
    long ns;
} backoff;

static void backoff_wait(backoff *b)
{
    if (tm_now() - b->t0 < g_spin_s) {
        sched_yield();
        return;
    }
    b->ns = b->ns ? TM_MIN(b->ns * 2, g_sleep_max_ns) : TM_MIN(20000L, g_sleep_max_ns);
    struct timespec ts = {0, b->ns};
    nanosleep(&ts, NULL);
}

int dist_wait_all(MPI_Request *reqs, MPI_Status *sts, int n, double timeout)
{
    double deadline = tm_now() + timeout;
    backoff b = {tm_now(), 0};
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
        if (tm_now() > deadline) return open;
        backoff_wait(&b);
    }
}

int dist_probe(int src, MPI_Status *st, double timeout)
{
    double deadline = tm_now() + timeout;
    backoff b = {tm_now(), 0};
    for (;;) {
        int flag = 0, rc = MPI_Iprobe(src, MPI_ANY_TAG, g_comm, &flag, st);
        if (rc != MPI_SUCCESS) dist_die(1, "MPI_Iprobe from rank %d failed: %s", src, dist_mpi_error(rc));
        if (flag) return 1;
        if (tm_now() > deadline) return 0;
        backoff_wait(&b);
    }
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

unsigned char *dist_no_experts_mask(const char *model_dir, const model_load_params *lp, tm_err *err)
{
    int layers = 0, experts = 0;
    if (dist_model_shape(model_dir, lp, &layers, &experts, err) != TM_OK) return NULL;
    return tm_calloc((size_t)layers * (size_t)TM_MAX(experts, 1), 1);
}

/* ---- the coordinator's state ---------------------------------------------------- */

#define DIST_CTX_MAGIC 0x44495354 /* marks a moe_backend.ctx made here */
#define HS_MAX_BYTES 65536
#define STATS_MAX_BYTES 4096

typedef struct {
    char host[256];
    int pid, experts;
    uint64_t weight_bytes, rss, rss_before;
    int have_stats;
    uint64_t requests, tokens, expert_tokens, bytes_sent, bytes_received, rss_end;
    double compute_s, convert_s, idle_s;
} rank_info;

typedef struct {
    uint32_t magic;
    int distributed; /* 0: the local backend wrapped for statistics */
    const tm_model *m;
    dist_params p;
    moe_backend inner;
    int size, W, L, E, H, K, first_moe;
    place_map pm;
    size_t dts; /* bytes per activation element on the wire */

    /* per-call buffers, sized for cap_T tokens; grown only when a call brings
     * more tokens than any before (the prefill), never per token */
    int cap_T;
    int *dest;        /* [cap_T * K] destination rank of each (token, slot) */
    int *stamp;       /* [size] last token that opened a row on each rank */
    int *n_rows;      /* [size] token rows going to each rank */
    int *fill;        /* [size] pair slots used in the current row */
    int *rows_of;     /* [size, cap_T] token index of each row */
    uint8_t **send;   /* [size] header + cap_T * (H * dts + K * 8) */
    uint8_t **recv;   /* [size] header + cap_T * H * 4 + slack */
    size_t *send_cap, *recv_cap;
    MPI_Request *req; /* [2 * size]: receives, then sends */
    MPI_Status *sts;  /* [2 * size] */
    uint32_t *seq;    /* [size] next sequence number per worker */
    uint64_t *tok_counter; /* [L] tokens seen per layer: spreads replicas */

    /* steps */
    int step, step_explicit, step_open, steps_seen, step_T;
    double step_t0;

    /* statistics */
    uint64_t *expert_tokens; /* [L * E] */
    uint64_t *rank_rows;     /* [size] token rows sent to each rank */
    uint64_t *rank_pairs;    /* [size] (token, expert) evaluations per rank */
    uint64_t *bytes_to, *bytes_from; /* [size] */
    double t_dispatch, t_wait, t_combine, t_local;
    uint64_t n_layer_calls;
    double prefill_s, decode_s;
    uint64_t prefill_tok, decode_tok, decode_steps;
    rank_info *info; /* [size] */
} dist_ctx;

static dist_ctx *ctx_of(moe_backend *be)
{
    if (!be || !be->ctx) return NULL;
    dist_ctx *c = be->ctx;
    return c->magic == DIST_CTX_MAGIC ? c : NULL;
}

static dist_ctx *ctx_new(const tm_model *m, const dist_params *p, int size)
{
    dist_ctx *c = tm_calloc(1, sizeof *c);
    const tm_config *cfg = &m->cfg;
    c->magic = DIST_CTX_MAGIC;
    c->m = m;
    c->p = *p;
    c->size = size;
    c->W = size - 1;
    c->L = cfg->num_layers;
    c->E = TM_MAX(cfg->num_experts, 1);
    c->H = cfg->hidden_size;
    c->K = TM_MAX(cfg->top_k, 1);
    c->first_moe = -1;
    for (int l = 0; l < c->L && c->first_moe < 0; l++)
        if (cfg_layer_is_moe(cfg, l)) c->first_moe = l;
    c->dts = tm_dtype_size(p->wire_dtype);
    c->expert_tokens = tm_calloc((size_t)c->L * c->E, sizeof(uint64_t));
    c->tok_counter = tm_calloc((size_t)c->L, sizeof(uint64_t));
    c->rank_rows = tm_calloc((size_t)size, sizeof(uint64_t));
    c->rank_pairs = tm_calloc((size_t)size, sizeof(uint64_t));
    c->bytes_to = tm_calloc((size_t)size, sizeof(uint64_t));
    c->bytes_from = tm_calloc((size_t)size, sizeof(uint64_t));
    c->info = tm_calloc((size_t)size, sizeof(rank_info));
    c->stamp = tm_calloc((size_t)size, sizeof(int));
    c->n_rows = tm_calloc((size_t)size, sizeof(int));
    c->fill = tm_calloc((size_t)size, sizeof(int));
    c->send = tm_calloc((size_t)size, sizeof(uint8_t *));
    c->recv = tm_calloc((size_t)size, sizeof(uint8_t *));
    c->send_cap = tm_calloc((size_t)size, sizeof(size_t));
    c->recv_cap = tm_calloc((size_t)size, sizeof(size_t));
    c->req = tm_malloc(2 * (size_t)size * sizeof(MPI_Request));
    c->sts = tm_calloc(2 * (size_t)size, sizeof(MPI_Status));
    c->seq = tm_calloc((size_t)size, sizeof(uint32_t));
    for (int i = 0; i < 2 * size; i++) c->req[i] = MPI_REQUEST_NULL;
    snprintf(c->info[0].host, sizeof c->info[0].host, "%s", g_host);
    c->info[0].pid = (int)getpid();
    return c;
}

static void ctx_grow(dist_ctx *c, int T)
{
    if (T <= c->cap_T) return;
    int cap = TM_MAX(T, 2 * c->cap_T);
    c->cap_T = cap;
    free(c->dest);
    free(c->rows_of);
    c->dest = tm_malloc((size_t)cap * c->K * sizeof(int));
    c->rows_of = tm_malloc((size_t)c->size * cap * sizeof(int));
    if (!c->distributed) return;
    for (int r = 1; r < c->size; r++) {
        free(c->send[r]);
        free(c->recv[r]);
        c->send_cap[r] = WIRE_HEADER_BYTES + (size_t)cap * ((size_t)c->H * c->dts + (size_t)c->K * WIRE_PAIR_BYTES);
        /* room for an F32 reply and a little more, so a wrong dtype tag or an
         * oversized reply is reported by the header check, not as a truncation */
        c->recv_cap[r] = WIRE_HEADER_BYTES + (size_t)cap * c->H * sizeof(float) + 256;
        /* MPI counts are int: one message per worker and layer must stay below 2 GiB */
        TM_ASSERT_MSG(c->send_cap[r] < (size_t)INT32_MAX && c->recv_cap[r] < (size_t)INT32_MAX,
                      "too many tokens in one forward call for one MPI message");
        c->send[r] = tm_malloc(c->send_cap[r]);
        c->recv[r] = tm_malloc(c->recv_cap[r]);
    }
}

static void ctx_free(dist_ctx *c)
{
    for (int r = 0; r < c->size; r++) {
        free(c->send[r]);
        free(c->recv[r]);
    }
    free(c->send);
    free(c->recv);
    free(c->send_cap);
    free(c->recv_cap);
    free(c->req);
    free(c->sts);
    free(c->seq);
    free(c->dest);
    free(c->rows_of);
    free(c->stamp);
    free(c->n_rows);
    free(c->fill);
    free(c->expert_tokens);
    free(c->tok_counter);
    free(c->rank_rows);
    free(c->rank_pairs);
    free(c->bytes_to);
    free(c->bytes_from);
    free(c->info);
    if (c->pm.offsets) place_free(&c->pm);
    c->magic = 0;
    free(c);
}

/* ---- steps: prefill and decode throughput ------------------------------------- */

static void step_close(dist_ctx *c)
{
    if (!c->step_open) return;
    double dt = tm_now() - c->step_t0;
    int T = TM_MAX(c->step_T, 0);
    if (c->step == 0) {
        c->prefill_s += dt;
        c->prefill_tok += (uint64_t)T;
    } else {
        c->decode_s += dt;
        c->decode_tok += (uint64_t)T;
        c->decode_steps++;
    }
    c->step_open = 0;
}

static void step_begin(dist_ctx *c, int step)
{
    step_close(c);
    c->step = step;
    c->step_open = 1;
    c->step_T = -1;
    c->step_t0 = tm_now();
}

void dist_set_step(moe_backend *be, int step)
{
    dist_ctx *c = ctx_of(be);
    if (!c) return;
    step_begin(c, step);
    c->step_explicit = 1;
}

/* Called at the first MoE layer of every forward call. */
static void step_on_call(dist_ctx *c, int T)
{
    if (!c->step_explicit) step_begin(c, c->steps_seen == 0 ? 0 : c->step + 1);
    c->step_explicit = 0;
    if (c->step_T < 0) c->step_T = T;
    c->steps_seen++;
}

/* ---- the distributed layer ------------------------------------------------------ */

static _Noreturn void die_wire(dist_ctx *c, int r, const char *msg)
{
    dist_die(1, "%s [worker rank %d, host %s, pid %d]", msg, r, c->info[r].host, c->info[r].pid);
}

static int dist_run_layer(moe_backend *b, int layer, const float *x, int T, const int32_t *ids, const float *w,
                          int k, float *out)
{
    dist_ctx *c = b->ctx;
    if (T <= 0) return 0;
    if (layer == c->first_moe) step_on_call(c, T);
    double t0 = tm_now();
    TM_ASSERT(k >= 1 && k <= c->K && layer >= 0 && layer < c->L && c->pm.is_moe[layer]);
    ctx_grow(c, T);
    const int H = c->H, E = c->E, size = c->size;
    const tm_dtype dt = c->p.wire_dtype;
    const size_t row_bytes = (size_t)H * c->dts;
    const uint64_t base = c->tok_counter[layer];

    /* pass 1: destination of every (token, slot); rows per worker.  All of a
     * token's experts use the same replica index, so a token spreads over as
     * few workers as the placement allows. */
    for (int r = 0; r < size; r++) {
        c->n_rows[r] = 0;
        c->stamp[r] = -1;
    }
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e = ids[(size_t)t * k + j];
            TM_ASSERT_MSG(e >= 0 && e < E, "expert id out of range");
            int n = place_count(&c->pm, layer, e);
            int r = place_ranks(&c->pm, layer, e)[(base + (uint64_t)t) % (uint64_t)n];
            c->dest[(size_t)t * k + j] = r;
            c->expert_tokens[(size_t)layer * E + e]++;
            c->rank_pairs[r]++;
            if (c->stamp[r] != t) {
                c->stamp[r] = t;
                c->n_rows[r]++;
            }
        }

    /* pass 2: pack each worker's rows and (expert, weight) pairs */
    for (int r = 0; r < size; r++) {
        c->stamp[r] = -1;
        c->fill[r] = 0;
    }
    int *cursor = c->fill; /* reused: rows written so far per worker */
    int slot_used[64];
    TM_ASSERT(k <= 64);
    for (int t = 0; t < T; t++) {
        for (int j = 0; j < k; j++) slot_used[j] = 0;
        for (int j = 0; j < k; j++) {
            int r = c->dest[(size_t)t * k + j];
            if (c->stamp[r] == t) continue;
            c->stamp[r] = t;
            int row = cursor[r]++;
            c->rows_of[(size_t)r * c->cap_T + row] = t;
            uint8_t *act = c->send[r] + WIRE_HEADER_BYTES;
            wire_pack_rows(dt, x + (size_t)t * H, (size_t)H, act + (size_t)row * row_bytes);
            uint8_t *pairs = act + (size_t)c->n_rows[r] * row_bytes + (size_t)row * k * WIRE_PAIR_BYTES;
            int np = 0;
            for (int jj = j; jj < k; jj++) {
                if (slot_used[jj] || c->dest[(size_t)t * k + jj] != r) continue;
                slot_used[jj] = 1;
                wire_pair pr = {ids[(size_t)t * k + jj], w[(size_t)t * k + jj]};
                memcpy(pairs + (size_t)np++ * WIRE_PAIR_BYTES, &pr, WIRE_PAIR_BYTES);
            }
            for (; np < k; np++) {
                wire_pair pr = {-1, 0.0f};
                memcpy(pairs + (size_t)np * WIRE_PAIR_BYTES, &pr, WIRE_PAIR_BYTES);
            }
        }
    }

    /* receives first, then sends */
    MPI_Comm comm = g_comm;
    for (int r = 1; r < size; r++) {
        c->req[r] = c->req[size + r] = MPI_REQUEST_NULL;
        if (!c->n_rows[r]) continue;
        int rc = MPI_Irecv(c->recv[r], (int)c->recv_cap[r], MPI_BYTE, r, DIST_TAG_RESULT, comm, &c->req[r]);
        if (rc != MPI_SUCCESS) die_wire(c, r, dist_mpi_error(rc));
    }
    for (int r = 1; r < size; r++) {
        if (!c->n_rows[r]) continue;
        wire_header h = wire_header_init(WIRE_KIND_DISPATCH);
        h.step = c->step;
        h.layer = layer;
        h.seq = c->seq[r];
        h.src_rank = 0;
        h.dtype = (uint32_t)dt;
        h.rows = (uint32_t)c->n_rows[r];
        h.cols = (uint32_t)H;
        h.pairs = (uint32_t)k;
        h.payload_bytes = wire_payload_bytes(h.dtype, h.rows, h.cols, h.pairs);
        if (c->p.checksum) {
            h.flags |= WIRE_FLAG_CHECKSUM;
            h.checksum = wire_crc32c(c->send[r] + WIRE_HEADER_BYTES, (size_t)h.payload_bytes);
        }
        wire_encode(&h, c->send[r]);
        size_t n = WIRE_HEADER_BYTES + (size_t)h.payload_bytes;
        int rc = MPI_Isend(c->send[r], (int)n, MPI_BYTE, r, DIST_TAG_DISPATCH, comm, &c->req[size + r]);
        if (rc != MPI_SUCCESS) die_wire(c, r, dist_mpi_error(rc));
        c->bytes_to[r] += n;
        c->rank_rows[r] += (uint64_t)c->n_rows[r];
    }
    double t1 = tm_now();
    c->t_dispatch += t1 - t0;

    int rc = dist_wait_all(c->req, c->sts, 2 * size, c->p.comm_timeout);
    if (rc >= 0) {
        char late[512];
        size_t o = 0;
        late[0] = '\0';
        for (int r = 1; r < size && o < sizeof late - 64; r++)
            if (c->req[r] != MPI_REQUEST_NULL || c->req[size + r] != MPI_REQUEST_NULL)
                o += (size_t)snprintf(late + o, sizeof late - o, "%s%d (%s, pid %d)", o ? ", " : "", r,
                                      c->info[r].host, c->info[r].pid);
        dist_die(1, "timeout: no reply at step %d, layer %d within %g s (--comm-timeout) from worker rank %s",
                 c->step, layer, c->p.comm_timeout, late);
    }
    if (rc <= -2) {
        int i = -2 - rc, r = i % size;
        char msg[600];
        snprintf(msg, sizeof msg, "step %d, layer %d: %s of activations failed: %s", c->step, layer,
                 i < size ? "receive" : "send", dist_mpi_error(c->sts[i].MPI_ERROR));
        die_wire(c, r, msg);
    }
    double t2 = tm_now();
    c->t_wait += t2 - t1;

    /* combine in ascending worker rank: a fixed order, so runs repeat bitwise */
    for (int r = 1; r < size; r++) {
        if (!c->n_rows[r]) continue;
        int count = 0;
        MPI_Get_count(&c->sts[r], MPI_BYTE, &count);
        wire_header got, want = wire_header_init(WIRE_KIND_RESULT);
        tm_err err;
        if (wire_decode(&got, c->recv[r], (size_t)count, 0, &err) != TM_OK) die_wire(c, r, err.msg);
        want.step = c->step;
        want.layer = layer;
        want.seq = c->seq[r];
        want.src_rank = r;
        want.dtype = (uint32_t)dt;
        want.rows = (uint32_t)c->n_rows[r];
        want.cols = (uint32_t)H;
        want.pairs = 0;
        want.flags = c->p.checksum ? WIRE_FLAG_CHECKSUM : 0;
        if (wire_check(&got, &want, WIRE_CHK_ALL, (size_t)count, c->recv[r] + WIRE_HEADER_BYTES, 0, &err) != TM_OK)
            die_wire(c, r, err.msg);
        const uint8_t *act = c->recv[r] + WIRE_HEADER_BYTES;
        const int *rows = c->rows_of + (size_t)r * c->cap_T;
        for (int i = 0; i < c->n_rows[r]; i++)
            wire_add_rows(dt, act + (size_t)i * row_bytes, (size_t)H, out + (size_t)rows[i] * H);
        c->bytes_from[r] += (uint64_t)count;
        c->seq[r]++;
    }
    c->tok_counter[layer] += (uint64_t)T;
    c->t_combine += tm_now() - t2;
    c->n_layer_calls++;
    return 0;
}

/* ---- local (size 1): the same statistics around the local backend ------------- */

static int local_run_layer(moe_backend *b, int layer, const float *x, int T, const int32_t *ids, const float *w,
                           int k, float *out)
{
    dist_ctx *c = b->ctx;
    if (T <= 0) return 0;
    if (layer == c->first_moe) step_on_call(c, T);
    for (size_t i = 0; i < (size_t)T * k; i++)
        if (ids[i] >= 0 && ids[i] < c->E) c->expert_tokens[(size_t)layer * c->E + ids[i]]++;
    c->rank_pairs[0] += (uint64_t)T * k;
    c->rank_rows[0] += (uint64_t)T;
    double t0 = tm_now();
    int rc = c->inner.run_layer(&c->inner, layer, x, T, ids, w, k, out);
    c->t_local += tm_now() - t0;
    c->n_layer_calls++;
    return rc;
}

tm_status dist_local_start(const tm_model *m, const dist_params *p, moe_backend inner, moe_backend *be, tm_err *err)
{
    dist_ctx *c = ctx_new(m, p, 1);
    c->distributed = 0;
    c->inner = inner;
    be->run_layer = local_run_layer;
    be->ctx = c;
    return TM_OK;
}

/* ---- start: placement out, handshakes in ---------------------------------------- */

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

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

tm_status dist_coordinator_start(const tm_model *m, const dist_params *p, int size, moe_backend *be, tm_err *err)
{
    TM_ASSERT_MSG(g_mpi && g_rank == 0 && size == g_size && size > 1, "dist_coordinator_start: rank 0 of an MPI job");
    dist_ctx *c = ctx_new(m, p, size);
    c->distributed = 1;
    const tm_config *cfg = &m->cfg;
    if (p->wire_dtype != TM_DT_F32 && p->wire_dtype != TM_DT_BF16)
        dist_die(2, "--wire-dtype must be f32 or bf16");
    tm_status st = place_build(&c->pm, cfg, place_expert_bytes(cfg, m->weight_dtype), size - 1, p->placement,
                               p->replicas, err);
    if (st != TM_OK) dist_die(2, "%s (no expert was run)", err->msg);
    uint64_t sample = dist_content_sample(&m->st);

    Trustmoe__Placement pl = TRUSTMOE__PLACEMENT__INIT;
    pl.build_version = (char *)dist_build_version();
    pl.model_identity = m->identity;
    pl.world_size = size;
    pl.num_layers = c->L;
    pl.num_experts = cfg->num_experts;
    pl.hidden = c->H;
    pl.top_k = cfg->top_k;
    pl.wire_dtype = (int32_t)p->wire_dtype;
    pl.checksum = p->checksum != 0;
    pl.comm_timeout = p->comm_timeout;
    pl.idle_timeout = p->idle_timeout;
    pl.policy = c->pm.policy;
    pl.n_offsets = (size_t)c->pm.n_layers * c->pm.n_experts + 1;
    pl.offsets = c->pm.offsets;
    pl.n_ranks = (size_t)c->pm.offsets[pl.n_offsets - 1];
    pl.ranks = c->pm.ranks;
    pl.model_dir = (char *)m->dir;
    pl.content_sample = sample;
    size_t pl_len = trustmoe__placement__get_packed_size(&pl);
    uint8_t *pl_buf = tm_malloc(pl_len);
    trustmoe__placement__pack(&pl, pl_buf);

    uint8_t *hs_buf = tm_malloc((size_t)size * HS_MAX_BYTES);
    for (int r = 1; r < size; r++) {
        int rc = MPI_Irecv(hs_buf + (size_t)r * HS_MAX_BYTES, HS_MAX_BYTES, MPI_BYTE, r, DIST_TAG_HANDSHAKE, g_comm,
                           &c->req[r]);
        if (rc != MPI_SUCCESS) dist_die(1, "handshake receive from rank %d: %s", r, dist_mpi_error(rc));
    }
    for (int r = 1; r < size; r++) {
        int rc = MPI_Isend(pl_buf, (int)pl_len, MPI_BYTE, r, DIST_TAG_PLACEMENT, g_comm, &c->req[size + r]);
        if (rc != MPI_SUCCESS) dist_die(1, "placement send to rank %d: %s", r, dist_mpi_error(rc));
    }
    int rc = dist_wait_all(c->req, c->sts, 2 * size, p->idle_timeout);
    if (rc >= 0)
        dist_die(1, "handshake: no answer from worker rank %d within %g s (--idle-timeout): still loading its experts, "
                 "stopped, or not running trustmoe",
                 rc % size, p->idle_timeout);
    if (rc <= -2) dist_die(1, "handshake with rank %d: %s", (-2 - rc) % size, dist_mpi_error(c->sts[-2 - rc].MPI_ERROR));

    for (int r = 1; r < size; r++) {
        int count = 0;
        MPI_Get_count(&c->sts[r], MPI_BYTE, &count);
        Trustmoe__Handshake *hs =
            trustmoe__handshake__unpack(NULL, (size_t)count, hs_buf + (size_t)r * HS_MAX_BYTES);
        if (!hs) dist_die(1, "handshake: rank %d sent %d bytes that are not a Handshake message", r, count);
        rank_info *ri = &c->info[r];
        snprintf(ri->host, sizeof ri->host, "%s", hs->host);
        ri->pid = hs->pid;
        ri->experts = hs->experts_hosted;
        ri->weight_bytes = hs->weight_bytes;
        ri->rss = hs->resident_bytes;
        ri->rss_before = hs->resident_before_load;
        if (hs->rank != r) dist_die(1, "handshake: the message from rank %d says rank %d", r, hs->rank);
        if (hs->error && hs->error[0])
            dist_die(2, "handshake: worker rank %d (host %s, model %s): %s", r, hs->host, hs->model_dir, hs->error);
        if (strcmp(hs->build_version, dist_build_version()))
            dist_die(2,
                     "handshake: build mismatch: worker rank %d (host %s) runs '%s', the coordinator runs '%s'; every "
                     "rank must run the same trustmoe build",
                     r, hs->host, hs->build_version, dist_build_version());
        if (hs->model_identity != m->identity || hs->content_sample != sample)
            dist_die(2,
                     "handshake: model mismatch: worker rank %d (host %s) loaded %s with identity %016llx, content "
                     "sample %08llx; the coordinator (host %s) loaded %s with identity %016llx, content sample "
                     "%08llx; every rank must load the same checkpoint",
                     r, hs->host, hs->model_dir, (unsigned long long)hs->model_identity,
                     (unsigned long long)hs->content_sample, g_host, m->dir, (unsigned long long)m->identity,
                     (unsigned long long)sample);
        int want = place_rank_experts(&c->pm, r);
        if (hs->experts_hosted != want)
            dist_die(1, "handshake: worker rank %d (host %s) loaded %d experts, the placement gives it %d", r,
                     hs->host, hs->experts_hosted, want);
        trustmoe__handshake__free_unpacked(hs, NULL);
        fprintf(stderr,
                "trustmoe: rank %d (%s, pid %d): %d experts, %.2f MiB of expert weights, resident %.2f MiB "
                "(%.2f MiB before load)\n",
                r, ri->host, ri->pid, ri->experts, mib(ri->weight_bytes), mib(ri->rss), mib(ri->rss_before));
    }
    free(hs_buf);
    free(pl_buf);
    fprintf(stderr, "trustmoe: %d workers ready; placement %s, replicas %d, wire %s%s, comm timeout %g s\n", c->W,
            c->pm.policy, TM_MAX(p->replicas, 1), tm_dtype_name(p->wire_dtype), p->checksum ? " + CRC32C" : "",
            p->comm_timeout);
    ctx_grow(c, 64);
    be->run_layer = dist_run_layer;
    be->ctx = c;
    (void)err;
    return TM_OK;
}

/* ---- finish: shutdown, statistics ------------------------------------------------ */

static void collect_worker_stats(dist_ctx *c, int exit_code)
{
    int size = c->size;
    uint8_t *buf = tm_malloc((size_t)size * STATS_MAX_BYTES);
    Trustmoe__Control ctl = TRUSTMOE__CONTROL__INIT;
    ctl.kind = TRUSTMOE__CONTROL__KIND__SHUTDOWN;
    ctl.exit_code = exit_code;
    uint8_t msg[64];
    size_t len = trustmoe__control__pack(&ctl, msg);
    for (int r = 1; r < size; r++) {
        int rc = MPI_Irecv(buf + (size_t)r * STATS_MAX_BYTES, STATS_MAX_BYTES, MPI_BYTE, r, DIST_TAG_STATS, g_comm,
                           &c->req[r]);
        if (rc != MPI_SUCCESS) dist_die(1, "stats receive from rank %d: %s", r, dist_mpi_error(rc));
    }
    for (int r = 1; r < size; r++) {
        int rc = MPI_Isend(msg, (int)len, MPI_BYTE, r, DIST_TAG_CONTROL, g_comm, &c->req[size + r]);
        if (rc != MPI_SUCCESS) dist_die(1, "shutdown send to rank %d: %s", r, dist_mpi_error(rc));
    }
    int rc = dist_wait_all(c->req, c->sts, 2 * size, c->p.comm_timeout);
    if (rc >= 0)
        dist_die(1, "shutdown: worker rank %d (%s) did not answer within %g s (--comm-timeout)", rc % size,
                 c->info[rc % size].host, c->p.comm_timeout);
    if (rc <= -2) dist_die(1, "shutdown: rank %d: %s", (-2 - rc) % size, dist_mpi_error(c->sts[-2 - rc].MPI_ERROR));
    for (int r = 1; r < size; r++) {
        int count = 0;
        MPI_Get_count(&c->sts[r], MPI_BYTE, &count);
        Trustmoe__WorkerStats *ws = trustmoe__worker_stats__unpack(NULL, (size_t)count, buf + (size_t)r * STATS_MAX_BYTES);
        if (!ws) dist_die(1, "shutdown: rank %d sent %d bytes that are not WorkerStats", r, count);
        rank_info *ri = &c->info[r];
        ri->have_stats = 1;
        ri->requests = ws->requests;
        ri->tokens = ws->tokens;
        ri->expert_tokens = ws->expert_tokens;
        ri->compute_s = ws->compute_s;
        ri->convert_s = ws->convert_s;
        ri->idle_s = ws->idle_s;
        ri->bytes_sent = ws->bytes_sent;
        ri->bytes_received = ws->bytes_received;
        ri->rss_end = ws->resident_bytes;
        trustmoe__worker_stats__free_unpacked(ws, NULL);
    }
    free(buf);
}

static int report(dist_ctx *c, const tm_state *s)
{
    uint64_t sent = 0, recvd = 0, max_pairs = 0, sum_pairs = 0, max_rows = 0, sum_rows = 0;
    int first = c->distributed ? 1 : 0;
    for (int r = 1; r < c->size; r++) {
        sent += c->bytes_to[r];
        recvd += c->bytes_from[r];
    }
    for (int r = first; r < c->size; r++) {
        max_pairs = TM_MAX(max_pairs, c->rank_pairs[r]);
        sum_pairs += c->rank_pairs[r];
        max_rows = TM_MAX(max_rows, c->rank_rows[r]);
        sum_rows += c->rank_rows[r];
    }
    int n_ranks = c->size - first;
    double imb = sum_pairs ? (double)max_pairs * n_ranks / (double)sum_pairs : 0.0;
    double imb_rows = sum_rows ? (double)max_rows * n_ranks / (double)sum_rows : 0.0;
    uint64_t toks = c->prefill_tok + c->decode_tok;
    double calls = c->n_layer_calls ? (double)c->n_layer_calls : 1.0;
    double pf_tps = c->prefill_s > 0 ? (double)c->prefill_tok / c->prefill_s : 0.0;
    double dc_tps = c->decode_s > 0 ? (double)c->decode_tok / c->decode_s : 0.0;
    double t_attn = s ? s->t_attn : 0, t_route = s ? s->t_route : 0, t_moe = s ? s->t_moe : 0, t_head = s ? s->t_head : 0;

    if (c->distributed || c->p.stats_json) {
        FILE *f = stderr;
        fprintf(f, "trustmoe: %d rank%s (%d worker%s), placement %s, replicas %d, wire %s%s\n", c->size,
                c->size > 1 ? "s" : "", c->W, c->W == 1 ? "" : "s", c->distributed ? c->pm.policy : "local",
                TM_MAX(c->p.replicas, 1), tm_dtype_name(c->p.wire_dtype), c->p.checksum ? " + CRC32C" : "");
        fprintf(f, "trustmoe: prefill %llu tokens in %.2f ms (%.2f tokens per second); decode %llu tokens in %.2f ms "
                   "(%.2f ms per token, %.2f tokens per second)\n",
                (unsigned long long)c->prefill_tok, 1e3 * c->prefill_s, pf_tps, (unsigned long long)c->decode_tok,
                1e3 * c->decode_s, c->decode_tok ? 1e3 * c->decode_s / (double)c->decode_tok : 0.0, dc_tps);
        fprintf(f, "trustmoe: time attention %.2f ms, routing %.2f ms, experts %.2f ms (dispatch %.2f, wait %.2f, "
                   "combine %.2f, local %.2f), head %.2f ms\n",
                1e3 * t_attn, 1e3 * t_route, 1e3 * t_moe, 1e3 * c->t_dispatch, 1e3 * c->t_wait, 1e3 * c->t_combine,
                1e3 * c->t_local, 1e3 * t_head);
        if (c->distributed) {
            fprintf(f, "trustmoe: per MoE layer call: dispatch %.1f us, wait %.1f us, combine %.1f us; %.0f bytes per "
                       "token (all layers, both ways)\n",
                    1e6 * c->t_dispatch / calls, 1e6 * c->t_wait / calls, 1e6 * c->t_combine / calls,
                    toks ? (double)(sent + recvd) / (double)toks : 0.0);
            for (int r = 1; r < c->size; r++) {
                const rank_info *ri = &c->info[r];
                fprintf(f, "trustmoe: rank %d (%s): %d experts %.2f MiB, resident %.2f MiB, %llu token rows, %llu "
                           "expert-tokens, compute %.2f ms, sent %.1f KiB, received %.1f KiB\n",
                        r, ri->host, ri->experts, mib(ri->weight_bytes), mib(ri->rss_end ? ri->rss_end : ri->rss),
                        (unsigned long long)c->rank_rows[r], (unsigned long long)c->rank_pairs[r], 1e3 * ri->compute_s,
                        c->bytes_from[r] / 1024.0, c->bytes_to[r] / 1024.0);
            }
            fprintf(f, "trustmoe: load imbalance (max/mean per worker): %.3f expert-tokens, %.3f token rows\n", imb,
                    imb_rows);
        }
    }
    if (!c->p.stats_json) return 0;

    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "ranks", c->size);
    cJSON_AddNumberToObject(j, "workers", c->W);
    cJSON_AddStringToObject(j, "placement", c->distributed ? c->pm.policy : "local");
    cJSON_AddNumberToObject(j, "replicas", TM_MAX(c->p.replicas, 1));
    cJSON_AddStringToObject(j, "wire_dtype", tm_dtype_name(c->p.wire_dtype));
    cJSON_AddBoolToObject(j, "wire_checksum", c->p.checksum);
    cJSON_AddStringToObject(j, "build", dist_build_version());
    cJSON *pf = cJSON_AddObjectToObject(j, "prefill");
    cJSON_AddNumberToObject(pf, "tokens", (double)c->prefill_tok);
    cJSON_AddNumberToObject(pf, "seconds", c->prefill_s);
    cJSON_AddNumberToObject(pf, "tokens_per_second", pf_tps);
    cJSON *dc = cJSON_AddObjectToObject(j, "decode");
    cJSON_AddNumberToObject(dc, "tokens", (double)c->decode_tok);
    cJSON_AddNumberToObject(dc, "steps", (double)c->decode_steps);
    cJSON_AddNumberToObject(dc, "seconds", c->decode_s);
    cJSON_AddNumberToObject(dc, "tokens_per_second", dc_tps);
    cJSON *tm = cJSON_AddObjectToObject(j, "time_s");
    cJSON_AddNumberToObject(tm, "attention", t_attn);
    cJSON_AddNumberToObject(tm, "routing", t_route);
    cJSON_AddNumberToObject(tm, "experts", t_moe);
    cJSON_AddNumberToObject(tm, "dispatch", c->t_dispatch);
    cJSON_AddNumberToObject(tm, "dispatch_wait", c->t_wait);
    cJSON_AddNumberToObject(tm, "combine", c->t_combine);
    cJSON_AddNumberToObject(tm, "expert_compute_local", c->t_local);
    cJSON_AddNumberToObject(tm, "head", t_head);
    cJSON_AddNumberToObject(j, "moe_layer_calls", (double)c->n_layer_calls);
    cJSON *pl = cJSON_AddObjectToObject(j, "per_layer_us");
    cJSON_AddNumberToObject(pl, "dispatch", 1e6 * c->t_dispatch / calls);
    cJSON_AddNumberToObject(pl, "dispatch_wait", 1e6 * c->t_wait / calls);
    cJSON_AddNumberToObject(pl, "combine", 1e6 * c->t_combine / calls);
    cJSON *by = cJSON_AddObjectToObject(j, "bytes");
    cJSON_AddNumberToObject(by, "sent", (double)sent);
    cJSON_AddNumberToObject(by, "received", (double)recvd);
    cJSON_AddNumberToObject(by, "per_token", toks ? (double)(sent + recvd) / (double)toks : 0.0);
    cJSON_AddNumberToObject(j, "load_imbalance", imb);
    cJSON_AddNumberToObject(j, "load_imbalance_token_rows", imb_rows);
    cJSON *ranks = cJSON_AddArrayToObject(j, "ranks_detail");
    for (int r = 0; r < c->size; r++) {
        const rank_info *ri = &c->info[r];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "rank", r);
        cJSON_AddStringToObject(o, "host", ri->host);
        cJSON_AddNumberToObject(o, "pid", ri->pid);
        if (r == 0) {
            cJSON_AddStringToObject(o, "role", "coordinator");
            cJSON_AddNumberToObject(o, "bytes_sent", (double)sent);
            cJSON_AddNumberToObject(o, "bytes_received", (double)recvd);
            cJSON_AddNumberToObject(o, "resident_bytes", (double)tm_rss_bytes());
            if (!c->distributed) {
                cJSON_AddNumberToObject(o, "token_rows", (double)c->rank_rows[0]);
                cJSON_AddNumberToObject(o, "expert_tokens", (double)c->rank_pairs[0]);
                cJSON_AddNumberToObject(o, "expert_compute_s", c->t_local);
            }
        } else {
            cJSON_AddStringToObject(o, "role", "worker");
            cJSON_AddNumberToObject(o, "experts", ri->experts);
            cJSON_AddNumberToObject(o, "weight_bytes", (double)ri->weight_bytes);
            cJSON_AddNumberToObject(o, "resident_bytes_after_load", (double)ri->rss);
            cJSON_AddNumberToObject(o, "resident_bytes_before_load", (double)ri->rss_before);
            cJSON_AddNumberToObject(o, "resident_bytes", (double)ri->rss_end);
            cJSON_AddNumberToObject(o, "token_rows", (double)c->rank_rows[r]);
            cJSON_AddNumberToObject(o, "expert_tokens", (double)c->rank_pairs[r]);
            cJSON_AddNumberToObject(o, "requests", (double)ri->requests);
            cJSON_AddNumberToObject(o, "expert_compute_s", ri->compute_s);
            cJSON_AddNumberToObject(o, "convert_s", ri->convert_s);
            cJSON_AddNumberToObject(o, "idle_s", ri->idle_s);
            cJSON_AddNumberToObject(o, "bytes_sent", (double)ri->bytes_sent);
            cJSON_AddNumberToObject(o, "bytes_received", (double)ri->bytes_received);
        }
        cJSON_AddItemToArray(ranks, o);
    }
    cJSON *et = cJSON_AddArrayToObject(j, "expert_tokens");
    for (int l = 0; l < c->L; l++) {
        cJSON *row = cJSON_CreateArray();
        if (cfg_layer_is_moe(&c->m->cfg, l))
            for (int e = 0; e < c->E; e++)
                cJSON_AddItemToArray(row, cJSON_CreateNumber((double)c->expert_tokens[(size_t)l * c->E + e]));
        cJSON_AddItemToArray(et, row);
    }
    char *text = cJSON_Print(j);
    FILE *f = fopen(c->p.stats_json, "w");
    int bad = !f || fputs(text, f) < 0 || fputc('\n', f) < 0;
    if (f && fclose(f) != 0) bad = 1;
    if (bad)
        fprintf(stderr, "trustmoe: --stats-json %s: cannot write: %s\n", c->p.stats_json, strerror(errno));
    else
        fprintf(stderr, "trustmoe: statistics written to %s\n", c->p.stats_json);
    free(text);
    cJSON_Delete(j);
    return bad;
}

int dist_finish(moe_backend *be, int exit_code, const tm_state *s)
{
    dist_ctx *c = ctx_of(be);
    if (!c) {
        if (g_mpi && !g_finalized) {
            if (g_size > 1 && g_rank == 0)
                dist_die(exit_code ? exit_code : 1, "stopping the job before the workers were started");
            g_finalized = 1;
            MPI_Finalize();
        }
        return exit_code;
    }
    step_close(c);
    if (c->distributed) collect_worker_stats(c, exit_code);
    if (report(c, s) && exit_code == 0) exit_code = 1;
    ctx_free(c);
    be->ctx = NULL;
    if (g_mpi && !g_finalized) {
        g_finalized = 1;
        MPI_Comm_free(&g_comm);
        MPI_Finalize();
    }
    return exit_code;
}
