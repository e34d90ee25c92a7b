/* dispatch.c: the coordinator's side of the exchange (see cluster/dist.h for
 * the protocol): per-layer dispatch of token rows to the workers, rank 0's
 * own share of the experts computed while they work, and the combine of
 * the partial sums; the same statistics around the local backend at -np 1,
 * and prefill/decode step accounting. */
#include "dispatch_ctx.h" /* first: it opens dist.h's internal part */
#include "dispatch.h"

#include "expert.h"
#include "kernels.h"
#include "wire.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the coordinator's state ---------------------------------------------------- */

dist_ctx *dist_ctx_of(moe_backend *be)
{
    if (!be || !be->ctx) return NULL;
    dist_ctx *c = be->ctx;
    return c->magic == DIST_CTX_MAGIC ? c : NULL;
}

dist_ctx *dist_ctx_new(const tm_model *m, const dist_params *p, int size)
{
    dist_ctx *c = tm_calloc(1, sizeof *c);
    const tm_config *cfg = &m->cfg;
    c->magic = DIST_CTX_MAGIC;
    c->load_s = -1.0;
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
    c->row_base = tm_calloc((size_t)size + 1, sizeof(int));
    c->send = tm_calloc((size_t)size, sizeof(uint8_t *));
    c->recv = tm_calloc((size_t)size, sizeof(uint8_t *));
    c->send_cap = tm_calloc((size_t)size, sizeof(size_t));
    c->recv_cap = tm_calloc((size_t)size, sizeof(size_t));
    c->req = tm_malloc(2 * (size_t)size * sizeof(MPI_Request));
    c->sts = tm_calloc(2 * (size_t)size, sizeof(MPI_Status));
    c->seq = tm_calloc((size_t)size, sizeof(uint32_t));
    c->ov_hist = tm_calloc(DIST_OV_BINS, sizeof(uint32_t));
    for (int i = 0; i < 2 * size; i++) c->req[i] = MPI_REQUEST_NULL;
    snprintf(c->info[0].host, sizeof c->info[0].host, "%s", dist_hostname());
    c->info[0].pid = (int)getpid();
    return c;
}

void dist_ctx_grow(dist_ctx *c, int T)
{
    if (T <= c->cap_T) return;
    int cap = TM_MAX(T, 2 * c->cap_T);
    c->cap_T = cap;
    free(c->dest);
    free(c->rows_of);
    c->dest = tm_malloc((size_t)cap * c->K * sizeof(int));
    c->rows_of = tm_malloc((size_t)c->size * cap * sizeof(int));
    if (!c->distributed) return;
    if (c->local_experts) {
        free(c->lids);
        c->lids = tm_malloc((size_t)cap * c->K * sizeof(int32_t));
    }
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

void dist_ctx_free(dist_ctx *c)
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
    if (c->local_experts) expert_group_free(&c->lgrp);
    free(c->lids);
    free(c->lscratch);
    free(c->ov_hist);
    free(c->dest);
    free(c->rows_of);
    free(c->stamp);
    free(c->n_rows);
    free(c->fill);
    free(c->row_base);
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

void dist_step_close(dist_ctx *c)
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
    dist_step_close(c);
    c->step = step;
    c->step_open = 1;
    c->step_T = -1;
    c->step_t0 = tm_now();
}

void dist_set_step(moe_backend *be, int step)
{
    dist_ctx *c = dist_ctx_of(be);
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

/* Pass 1: the destination rank of every (token, slot) and the token rows
 * per rank.  All of a token's experts use the same replica index, so a token
 * spreads over as few workers as the placement allows. */
static void route_tokens(dist_ctx *c, int layer, int T, const int32_t *ids, int k)
{
    const uint64_t base = c->tok_counter[layer];
    for (int r = 0; r < c->size; r++) {
        c->n_rows[r] = 0;
        c->stamp[r] = -1;
    }
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e = ids[(size_t)t * k + j];
            TM_ASSERT_MSG(e >= 0 && e < c->E, "expert id out of range");
            int n = place_count(&c->pm, layer, e);
            int r = place_ranks(&c->pm, layer, e)[(base + (uint64_t)t) % (uint64_t)n];
            c->dest[(size_t)t * k + j] = r;
            c->expert_tokens[(size_t)layer * c->E + e]++;
            c->rank_pairs[r]++;
            if (c->stamp[r] != t) {
                c->stamp[r] = t;
                c->n_rows[r]++;
            }
        }
}

/* A layer call's rows for the pool: packing the workers' rows, adding their
 * replies.  A row of a real model (hidden 2048 and up) takes about half a
 * microsecond to convert, so below XFER_PAR_MIN_ROWS rows (decode) the
 * pool's wake-up costs more than the copy and the calling thread does it. */
#define XFER_PAR_MIN_ROWS 32

typedef struct {
    dist_ctx *c;
    const float *x; /* [T, H]: the rows to pack */
    float *out;     /* [T, H]: where the replies are added */
} xfer_job;

/* Rows [i0, i1) of all workers' rows (rank order, c->row_base) packed
 * into their payloads. */
static void pack_rows_range(void *arg, int64_t i0, int64_t i1)
{
    const xfer_job *j = arg;
    const dist_ctx *c = j->c;
    const size_t row_bytes = (size_t)c->H * c->dts;
    int r = 1;
    for (int64_t i = i0; i < i1; i++) {
        while (i >= c->row_base[r + 1]) r++;
        int row = (int)(i - c->row_base[r]);
        int t = c->rows_of[(size_t)r * c->cap_T + row];
        wire_pack_rows(c->p.wire_dtype, j->x + (size_t)t * c->H, (size_t)c->H,
                       c->send[r] + WIRE_HEADER_BYTES + (size_t)row * row_bytes);
    }
}

/* Pass 2: each worker's payload, its token rows then one row of k
 * (expert, weight) pairs per token, padded with (-1, 0).  The pairs and
 * the row order are laid out here; the rows themselves are converted by
 * pack_rows_range, on the pool for a prefill.  Rank 0's own pairs are not
 * packed: compute_local reads them from c->dest. */
static void pack_requests(dist_ctx *c, const float *x, int T, const int32_t *ids, const float *w, int k)
{
    const size_t row_bytes = (size_t)c->H * c->dts;
    for (int r = 0; r < c->size; r++) {
        c->stamp[r] = -1;
        c->fill[r] = 0;
    }
    int *cursor = c->fill; /* rows written so far per worker */
    int slot_used[64];
    TM_ASSERT(k <= 64);
    for (int t = 0; t < T; t++) {
        for (int j = 0; j < k; j++) slot_used[j] = 0;
        for (int j = 0; j < k; j++) {
            int r = c->dest[(size_t)t * k + j];
            if (r == 0 || c->stamp[r] == t) continue; /* rank 0's pairs stay here */
            c->stamp[r] = t;
            int row = cursor[r]++;
            c->rows_of[(size_t)r * c->cap_T + row] = t;
            uint8_t *pairs = c->send[r] + WIRE_HEADER_BYTES + (size_t)c->n_rows[r] * row_bytes +
                             (size_t)row * k * WIRE_PAIR_BYTES;
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
    c->row_base[0] = c->row_base[1] = 0;
    for (int r = 1; r < c->size; r++) c->row_base[r + 1] = c->row_base[r] + c->n_rows[r];
    int64_t rows = c->row_base[c->size];
    xfer_job job = {c, x, NULL};
    if (rows >= XFER_PAR_MIN_ROWS) kern_parallel_for(rows, 1, pack_rows_range, &job);
    else pack_rows_range(&job, 0, rows);
}

/* Receives for every worker with rows, then the DISPATCH sends. */
static void post_exchange(dist_ctx *c, int layer, int k)
{
    const int size = c->size;
    MPI_Comm comm = dist_comm();
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
        h.dtype = (uint32_t)c->p.wire_dtype;
        h.rows = (uint32_t)c->n_rows[r];
        h.cols = (uint32_t)c->H;
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
        c->messages++;
    }
}

/* Waits for the requests of the layer from c->req[first] on: the sends
 * alone (first = size) or every receive and send (first = 0).  A late or
 * failed worker ends the job with its rank, host and pid. */
static void await_exchange(dist_ctx *c, int layer, int first)
{
    const int size = c->size;
    int rc = dist_wait_all(c->req + first, c->sts + first, 2 * size - first, c->p.comm_timeout, c->p.comm_timeout);
    if (rc >= 0) rc += first;
    if (rc <= -2) rc -= first;
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
}

/* Rank 0's share: its (token, slot) pairs, the others' ids masked to -1,
 * through the code a worker and -np 1 run (expert_one_token for one token,
 * else the grouped path), added straight into `out` (zero on entry)
 * in the path's fixed order, so rank 0's rows come first in the combine.
 * Runs after the sends, while the workers compute theirs. */
static void compute_local(dist_ctx *c, int layer, const float *x, int T, const int32_t *ids, const float *w, int k,
                          float *out)
{
    for (int i = 0; i < T * k; i++) c->lids[i] = c->dest[i] == 0 ? ids[i] : -1;
    if (T == 1 && k <= KERN_MANY_MAX) expert_one_token(c->m->layers[layer].experts, x, c->lids, w, k, out, c->lscratch);
    else expert_group_run(&c->lgrp, c->m->layers[layer].experts, x, T, c->lids, w, k, out);
}

/* Columns [c0, c1) of every worker's reply rows added into out, workers
 * in ascending rank: each element's sum has one order, whatever the split. */
static void add_replies_range(void *arg, int64_t c0, int64_t c1)
{
    const xfer_job *j = arg;
    const dist_ctx *c = j->c;
    const size_t row_bytes = (size_t)c->H * c->dts;
    for (int r = 1; r < c->size; r++) {
        const uint8_t *act = c->recv[r] + WIRE_HEADER_BYTES + (size_t)c0 * c->dts;
        const int *rows = c->rows_of + (size_t)r * c->cap_T;
        for (int i = 0; i < c->n_rows[r]; i++)
            wire_add_rows(c->p.wire_dtype, act + (size_t)i * row_bytes, (size_t)(c1 - c0),
                          j->out + (size_t)rows[i] * c->H + c0);
    }
}

/* Checks every RESULT header against what was asked, then adds the rows
 * in ascending worker rank: a fixed order, so runs repeat bitwise.
 * Returns the slowest worker's compute time for this call, seconds. */
static double combine_replies(dist_ctx *c, int layer, float *out)
{
    double slowest = 0.0;
    const tm_dtype dt = c->p.wire_dtype;
    for (int r = 1; r < c->size; r++) {
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
        want.cols = (uint32_t)c->H;
        want.pairs = 0;
        want.flags = c->p.checksum ? WIRE_FLAG_CHECKSUM : 0;
        if (wire_check(&got, &want, WIRE_CHK_ALL, (size_t)count, c->recv[r] + WIRE_HEADER_BYTES, 0, &err) != TM_OK)
            die_wire(c, r, err.msg);
        slowest = TM_MAX(slowest, 1e-6 * (double)got.compute_us);
        c->bytes_from[r] += (uint64_t)count;
        c->seq[r]++;
    }
    xfer_job job = {c, NULL, out};
    if (c->row_base[c->size] >= XFER_PAR_MIN_ROWS) kern_parallel_for(c->H, 16, add_replies_range, &job);
    else add_replies_range(&job, 0, c->H);
    return slowest;
}

/* Wait minus the slowest compute of the call: what the exchange itself cost. */
static void record_overhead(dist_ctx *c, double wait, double slowest)
{
    double ov = TM_MAX(wait - slowest, 0.0);
    c->t_slowest += slowest;
    c->t_overhead += ov;
    if (c->step > 0) {
        c->ov_hist[TM_MIN((size_t)(ov * 1e6), (size_t)DIST_OV_BINS - 1)]++;
        c->ov_calls++;
    }
}

double dist_overhead_median_us(const dist_ctx *c)
{
    if (!c->ov_calls) return 0.0;
    uint64_t seen = 0;
    for (size_t i = 0; i < DIST_OV_BINS; i++) {
        seen += c->ov_hist[i];
        if (2 * seen >= c->ov_calls) return (double)i + 0.5;
    }
    return (double)DIST_OV_BINS;
}

int dist_run_layer(moe_backend *b, int layer, const float *x, int T, const int32_t *ids, const float *w, int k,
                   float *out)
{
    dist_ctx *c = b->ctx;
    if (T <= 0) return 0;
    if (layer == c->first_moe) step_on_call(c, T);
    double t0 = tm_now();
    TM_ASSERT(k >= 1 && k <= c->K && layer >= 0 && layer < c->L && c->pm.is_moe[layer]);
    dist_ctx_grow(c, T);
    c->token_layers += (uint64_t)T;
    route_tokens(c, layer, T, ids, k);
    pack_requests(c, x, T, ids, w, k);
    post_exchange(c, layer, k);
    double t1 = tm_now();
    c->t_dispatch += t1 - t0;
    double local = 0.0;
    if (c->n_rows[0]) {
        /* A message above the eager limit moves only while its sender makes
         * MPI progress (shared memory without single-copy), so the requests
         * are delivered before rank 0 computes without calling MPI. */
        await_exchange(c, layer, c->size); /* the sends: c->req[size..2 size) */
        compute_local(c, layer, x, T, ids, w, k, out);
        local = tm_now() - t1;
        c->t_local += local;
        c->rank_rows[0] += (uint64_t)c->n_rows[0];
    }
    await_exchange(c, layer, 0);
    double t2 = tm_now();
    c->t_wait += t2 - t1;
    double slowest = combine_replies(c, layer, out);
    record_overhead(c, t2 - t1, TM_MAX(slowest, local));
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
    dist_ctx *c = dist_ctx_new(m, p, 1);
    c->distributed = 0;
    c->inner = inner;
    be->run_layer = local_run_layer;
    be->ctx = c;
    return TM_OK;
}

/* ---- workers declared unavailable ------------------------------------------------ */

tm_status dist_unavailable_mask(moe_backend *be, const char *ranks, unsigned char *avail, int *n_masked,
                                tm_err *err)
{
    dist_ctx *c = dist_ctx_of(be);
    *n_masked = 0;
    if (!c || !c->distributed)
        return tm_errf(err, TM_EINPUT, "--unavailable %s: needs an MPI job with workers (mpirun -np 2 or more)", ranks);
    if (c->p.replicas > 1)
        return tm_errf(err, TM_EINPUT,
                       "--unavailable %s: not with --replicas %d (the dispatch would still send to the listed "
                       "ranks' copies)", ranks, c->p.replicas);
    unsigned char *out = tm_calloc((size_t)c->size, 1);
    int n_out = 0;
    tm_status st = TM_OK;
    for (const char *q = ranks; *q;) {
        char *end;
        long r = strtol(q, &end, 10);
        if (r < 1 || r >= c->size) {
            st = tm_errf(err, TM_EINPUT, "--unavailable %s: rank %ld is not a worker of this job (1..%d)", ranks, r,
                         c->size - 1);
            goto done;
        }
        n_out += !out[r];
        out[r] = 1;
        q = *end ? end + 1 : end;
    }
    if (n_out >= c->size - 1) {
        st = tm_errf(err, TM_EINPUT, "--unavailable %s: that is every worker; at least one must stay", ranks);
        goto done;
    }
    for (int l = 0; l < c->L; l++)
        for (int e = 0; e < c->E && c->pm.is_moe[l]; e++) {
            int count = place_count(&c->pm, l, e), left = 0;
            const int *rk = place_ranks(&c->pm, l, e);
            for (int i = 0; i < count; i++) left += !out[rk[i]];
            if (count && !left) {
                avail[(size_t)l * c->E + e] = 0;
                (*n_masked)++;
            }
        }
done:
    free(out);
    return st;
}

/* ---- rank 0 maps only the experts the placement gives it ------------------------ */

unsigned char *dist_no_experts_mask(const char *model_dir, const model_load_params *lp, tm_err *err)
{
    int layers = 0, experts = 0;
    if (dist_model_shape(model_dir, lp, &layers, &experts, err) != TM_OK) return NULL;
    return tm_calloc((size_t)layers * (size_t)TM_MAX(experts, 1), 1);
}

unsigned char *dist_coordinator_mask(const char *model_dir, const model_load_params *lp, const dist_params *p,
                                     int size, tm_err *err)
{
    tm_config cfg;
    if (dist_model_config(model_dir, lp, &cfg, err) != TM_OK) return NULL;
    unsigned char *mask = tm_calloc((size_t)cfg.num_layers * (size_t)TM_MAX(cfg.num_experts, 1), 1);
    /* a policy without a share gives rank 0 nothing: no need to build it
     * here as well (a coactivation placement takes seconds) */
    if (!place_may_host_coordinator(p->placement, p->coordinator_share)) return mask;
    place_map pm;
    tm_err perr;
    /* a placement that does not build is reported by dist_coordinator_start,
     * which builds it again from the loaded model */
    if (place_build_share(&pm, &cfg, 0, size - 1, p->placement, p->replicas, p->coordinator_share, &perr) == TM_OK) {
        place_rank_mask(&pm, 0, mask);
        place_free(&pm);
    }
    return mask;
}
