/* worker.c: the serve loop of ranks 1..N (see worker.h and cluster/dist.h). */
#define TM_DIST_INTERNAL
#include "worker.h"

#include "dist.h"
#include "kernels.h"
#include "placement.h"
#include "trustmoe.pb-c.h"
#include "wire.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- fault switch ----------------------------------------------------------- */

static const char *const fault_names[] = {"none",   "dtype",   "truncate", "corrupt",
                                          "exit",   "silent",  "version",  "startup-stall"};

const char *worker_fault_name(worker_fault_kind k) { return fault_names[k]; }

worker_fault worker_fault_from_env(void)
{
    worker_fault f = {WORKER_FAULT_NONE, 1, 1, 0};
    const char *k = getenv("TRUSTMOE_FAULT");
    if (!k || !*k) return f;
    for (int i = 1; i < (int)TM_ARRAY_LEN(fault_names); i++)
        if (!strcmp(k, fault_names[i])) f.kind = (worker_fault_kind)i;
    if (f.kind == WORKER_FAULT_NONE)
        fprintf(stderr, "trustmoe: TRUSTMOE_FAULT=%s is not one of dtype, truncate, corrupt, exit, silent, version, "
                        "startup-stall; "
                        "ignored\n", k);
    const char *r = getenv("TRUSTMOE_FAULT_RANK"), *s = getenv("TRUSTMOE_FAULT_STEP");
    if (r) f.rank = atoi(r);
    if (s) f.step = atoi(s);
    return f;
}

/* ---- state --------------------------------------------------------------------- */

typedef struct {
    int rank;
    tm_model m;
    int have_model;
    place_map pm;
    int L, E, H, K, inter;
    tm_dtype dt;
    int checksum;
    double comm_timeout, idle_timeout;
    worker_fault fault;

    /* buffers for cap rows, grown to the largest request */
    int cap;
    uint8_t *in;       /* [in_cap] the received message */
    size_t in_cap;
    uint8_t *out;      /* header + [cap, H] wire dtype */
    float *x;          /* [cap, H] f32 rows */
    float *partial;    /* [cap, H] f32 */
    int32_t *ids;      /* [cap * K] expert of each (row, slot); -1: none */
    float *wts;        /* [cap * K] its weight */
    wire_pair *pairs;  /* [cap * K] */
    expert_group grp;  /* the grouped expert path (expert.h), grown with requests */

    uint32_t seq;
    int last_step;
    /* statistics */
    uint64_t requests, tokens, expert_tokens, bytes_sent, bytes_received;
    double compute_s, convert_s, idle_s;
} worker;

static void worker_grow(worker *w, int rows, int pairs)
{
    if (rows <= w->cap && pairs <= w->K) return;
    int cap = TM_MAX(rows, 2 * w->cap);
    w->K = TM_MAX(w->K, pairs);
    w->cap = cap;
    free(w->out);
    free(w->x);
    free(w->partial);
    free(w->ids);
    free(w->wts);
    free(w->pairs);
    size_t rh = (size_t)cap * w->H;
    w->out = tm_malloc(WIRE_HEADER_BYTES + rh * sizeof(float));
    w->x = tm_malloc(rh * sizeof(float));
    w->partial = tm_malloc(rh * sizeof(float));
    w->ids = tm_malloc((size_t)cap * w->K * sizeof(int32_t));
    w->wts = tm_malloc((size_t)cap * w->K * sizeof(float));
    w->pairs = tm_malloc((size_t)cap * w->K * sizeof(wire_pair));
}

static void worker_free(worker *w)
{
    free(w->in);
    free(w->out);
    free(w->x);
    free(w->partial);
    free(w->ids);
    free(w->wts);
    free(w->pairs);
    expert_group_free(&w->grp);
    if (w->pm.offsets) place_free(&w->pm);
    if (w->have_model) model_free(&w->m);
}

/* Receive the message `st` announced into w->in (grown to fit). */
static int worker_recv(worker *w, const MPI_Status *st)
{
    int count = 0;
    MPI_Get_count(st, MPI_BYTE, &count);
    if ((size_t)count > w->in_cap) {
        free(w->in);
        w->in_cap = TM_MAX((size_t)count, 2 * w->in_cap);
        w->in = tm_malloc(w->in_cap);
    }
    MPI_Status rs;
    int rc = MPI_Recv(w->in, count, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG, dist_comm(), &rs);
    if (rc != MPI_SUCCESS) dist_die(1, "receive of tag %d from rank 0: %s", st->MPI_TAG, dist_mpi_error(rc));
    return count;
}

static void worker_send(worker *w, const void *buf, size_t n, int tag)
{
    MPI_Request req;
    MPI_Status st;
    int rc = MPI_Isend(buf, (int)n, MPI_BYTE, 0, tag, dist_comm(), &req);
    if (rc != MPI_SUCCESS) dist_die(1, "send of tag %d to rank 0: %s", tag, dist_mpi_error(rc));
    rc = dist_wait_all(&req, &st, 1, w->comm_timeout, dist_hot_window());
    if (rc >= 0) dist_die(1, "send of tag %d to rank 0 did not complete within %g s", tag, w->comm_timeout);
    if (rc <= -2) dist_die(1, "send of tag %d to rank 0: %s", tag, dist_mpi_error(st.MPI_ERROR));
}

/* ---- start: placement in, load, handshake out ------------------------------------ */

/* Waits for the Placement and takes the run's wire settings from it. */
static Trustmoe__Placement *receive_placement(worker *w, const dist_params *p)
{
    MPI_Status st;
    if (!dist_probe(0, &st, p->idle_timeout, 0.0))
        dist_die(1, "no placement from the coordinator within %g s (--idle-timeout)", p->idle_timeout);
    if (st.MPI_TAG == DIST_TAG_CONTROL) {
        /* the coordinator stopped before placing anything (bad input): it
         * reports the error; this rank just ends */
        worker_recv(w, &st);
        return NULL;
    }
    if (st.MPI_TAG != DIST_TAG_PLACEMENT) dist_die(1, "expected the placement, received tag %d", st.MPI_TAG);
    int n = worker_recv(w, &st);
    Trustmoe__Placement *pl = trustmoe__placement__unpack(NULL, (size_t)n, w->in);
    if (!pl) dist_die(1, "the placement message (%d bytes) does not decode", n);
    if (pl->world_size != dist_size())
        dist_die(1, "the placement is for %d ranks, this job has %d", pl->world_size, dist_size());
    if (pl->wire_dtype != TM_DT_F32 && pl->wire_dtype != TM_DT_BF16)
        dist_die(1, "the placement asks for wire dtype %d, not F32 or BF16", pl->wire_dtype);
    w->dt = (tm_dtype)pl->wire_dtype;
    w->checksum = pl->checksum;
    w->comm_timeout = pl->comm_timeout;
    w->idle_timeout = pl->idle_timeout;
    return pl;
}

/* Loads the experts the placement gives this rank (no dense weights) and
 * fills the handshake's model fields.  A problem goes into errbuf[1200] for
 * the coordinator to report: a worker of another shape still loads (no
 * experts) to report its identity. */
static void load_own_experts(worker *w, const char *model_dir, const model_load_params *lp,
                             const Trustmoe__Placement *pl, Trustmoe__Handshake *hs, char *errbuf)
{
    tm_err err;
    int my_layers = 0, my_experts = 0;
    if (dist_model_shape(model_dir, lp, &my_layers, &my_experts, &err) != TM_OK) {
        snprintf(errbuf, 1200, "%s", err.msg);
        return;
    }
    hs->num_layers = my_layers;
    hs->num_experts = my_experts;
    model_load_params wp = lp ? *lp : model_default_load_params();
    wp.load_dense = 0;
    int same_shape = my_layers == pl->num_layers && my_experts == pl->num_experts;
    unsigned char *mask = tm_calloc((size_t)my_layers * (size_t)TM_MAX(my_experts, 1), 1);
    if (same_shape) {
        if (place_from_csr(&w->pm, pl->num_layers, pl->num_experts, pl->world_size - 1, pl->offsets, pl->n_offsets,
                           pl->ranks, pl->n_ranks, 0, &err) != TM_OK)
            snprintf(errbuf, 1200, "received placement: %s", err.msg);
        else
            place_rank_mask(&w->pm, w->rank, mask);
    }
    wp.expert_mask = mask;
    if (!errbuf[0]) {
        if (model_load(&w->m, model_dir, &wp, &err) != TM_OK) {
            snprintf(errbuf, 1200, "%s", err.msg);
        } else {
            w->have_model = 1;
            hs->model_identity = w->m.identity;
            hs->content_sample = dist_content_sample(&w->m.st);
            if (!same_shape)
                snprintf(errbuf, 1200,
                         "model %.512s has %d layers x %d experts, the coordinator's %.512s has %d x %d (identity %016llx "
                         "vs %016llx); every rank must load the same checkpoint",
                         w->m.dir, my_layers, my_experts, pl->model_dir, pl->num_layers, pl->num_experts,
                         (unsigned long long)w->m.identity, (unsigned long long)pl->model_identity);
        }
    }
    free(mask);
}

/* The model's shapes for serving, checked against the coordinator's, and
 * the experts actually hosted. */
static void take_shapes(worker *w, const Trustmoe__Placement *pl, Trustmoe__Handshake *hs, char *errbuf)
{
    const tm_config *c = &w->m.cfg;
    w->L = c->num_layers;
    w->E = c->num_experts;
    w->H = c->hidden_size;
    w->inter = c->moe_intermediate_size;
    w->K = TM_MAX(c->top_k, 1);
    if (pl->hidden != w->H || pl->top_k != c->top_k)
        snprintf(errbuf, 1200, "hidden %d / top_k %d, the coordinator's model has %d / %d", w->H, c->top_k,
                 pl->hidden, pl->top_k);
    int hosted = 0;
    for (int l = 0; l < w->L; l++)
        for (int e = 0; e < w->E && w->m.layers[l].experts; e++) hosted += w->m.layers[l].experts[e].gate.data != NULL;
    hs->experts_hosted = hosted;
    hs->weight_bytes = (uint64_t)hosted * place_expert_bytes(c, w->m.weight_dtype);
}

/* Returns 0 when the coordinator stopped the job before the placement. */
static int worker_start(worker *w, const char *model_dir, const dist_params *p, const model_load_params *lp)
{
    size_t rss0 = tm_rss_bytes();
    Trustmoe__Placement *pl = receive_placement(w, p);
    if (!pl) return 0;

    Trustmoe__Handshake hs = TRUSTMOE__HANDSHAKE__INIT;
    char errbuf[1200] = "";
    hs.rank = w->rank;
    hs.host = (char *)dist_hostname();
    hs.pid = (int)getpid();
    hs.model_dir = (char *)(lp && lp->synthetic ? lp->synthetic : model_dir);
    hs.build_version = (char *)dist_build_version();
    char fake_version[300];
    if (w->fault.kind == WORKER_FAULT_VERSION && w->fault.rank == w->rank) {
        snprintf(fake_version, sizeof fake_version, "%s (TRUSTMOE_FAULT=version)", dist_build_version());
        hs.build_version = fake_version;
        fprintf(stderr, "trustmoe: worker rank %d: TRUSTMOE_FAULT=version: reporting another build\n", w->rank);
    }
    load_own_experts(w, model_dir, lp, pl, &hs, errbuf);
    if (w->have_model && !errbuf[0]) take_shapes(w, pl, &hs, errbuf);
    hs.resident_bytes = tm_rss_bytes();
    hs.resident_before_load = rss0;
    hs.error = errbuf;
    trustmoe__placement__free_unpacked(pl, NULL);

    size_t len = trustmoe__handshake__get_packed_size(&hs);
    uint8_t *buf = tm_malloc(len);
    trustmoe__handshake__pack(&hs, buf);
    worker_send(w, buf, len, DIST_TAG_HANDSHAKE);
    free(buf);
    /* On an error the coordinator reports it and aborts the job; we wait in
     * the serve loop like any worker, so there is a single message. */
    if (w->have_model && !errbuf[0]) expert_group_init(&w->grp, w->E, w->H, w->inter, 16 * w->K);
    worker_grow(w, 16, w->K);
    return 1;
}

/* ---- one request ------------------------------------------------------------------- */

static _Noreturn void worker_fault_fire_exit(worker *w, const wire_header *h)
{
    fprintf(stderr, "trustmoe: worker rank %d: TRUSTMOE_FAULT=exit: exiting at step %d, layer %d\n", w->rank,
            h->step, h->layer);
    fflush(stderr);
    _exit(3);
}

static _Noreturn void worker_fault_fire_silent(worker *w, const wire_header *h)
{
    fprintf(stderr, "trustmoe: worker rank %d: TRUSTMOE_FAULT=silent: no more replies from step %d, layer %d\n",
            w->rank, h->step, h->layer);
    fflush(stderr);
    for (;;) pause(); /* ended by the coordinator's MPI_Abort */
}

/* Decodes and checks a DISPATCH header against what this worker expects
 * (source, sequence, dtype, width, checksum, layer, step, shape). */
static void check_request(worker *w, int count, wire_header *h)
{
    wire_header want = wire_header_init(WIRE_KIND_DISPATCH);
    tm_err err;
    if (wire_decode(h, w->in, (size_t)count, w->rank, &err) != TM_OK) dist_die(1, "%s", err.msg);
    want.src_rank = 0;
    want.seq = w->seq;
    want.dtype = (uint32_t)w->dt;
    want.cols = (uint32_t)w->H;
    want.flags = w->checksum ? WIRE_FLAG_CHECKSUM : 0;
    unsigned mask = WIRE_CHK_KIND | WIRE_CHK_SRC | WIRE_CHK_SEQ | WIRE_CHK_DTYPE | WIRE_CHK_COLS | WIRE_CHK_FLAGS;
    if (wire_check(h, &want, mask, (size_t)count, w->in + WIRE_HEADER_BYTES, w->rank, &err) != TM_OK)
        dist_die(1, "%s", err.msg);
    if (h->layer < 0 || h->layer >= w->L || !w->pm.is_moe[h->layer])
        dist_die(1, "wire: rank 0 -> rank %d, step %d: field 'layer': %d is not a MoE layer of this model", w->rank,
                 h->step, h->layer);
    if (h->step < w->last_step)
        dist_die(1, "wire: rank 0 -> rank %d, layer %d: field 'step': expected >= %d, received %d", w->rank, h->layer,
                 w->last_step, h->step);
    if (h->rows < 1 || h->pairs < 1 || h->pairs > 64)
        dist_die(1, "wire: rank 0 -> rank %d, step %d, layer %d: %u rows of %u pairs is not a request", w->rank,
                 h->step, h->layer, h->rows, h->pairs);
    w->last_step = h->step;
}

/* The request's (expert, weight) pairs as the two arrays the grouped path
 * takes (-1: no pair).  Returns the number of (token, expert) pairs; an
 * expert this rank does not host ends the job. */
static int take_pairs(worker *w, const wire_header *h, int rows, int P)
{
    const int E = w->E, layer = h->layer;
    int n_pairs = 0;
    for (int i = 0; i < rows * P; i++) {
        int e = w->pairs[i].expert;
        if (e >= 0 && (e >= E || !w->m.layers[layer].experts[e].gate.data))
            dist_die(1, "step %d, layer %d: asked to run expert %d, which this rank does not host (placement "
                     "mismatch)", h->step, layer, e);
        w->ids[i] = e < 0 ? -1 : e;
        w->wts[i] = w->pairs[i].weight;
        n_pairs += e >= 0;
    }
    return n_pairs;
}

/* partial[row] = Σ weight · expert(x[row]) over the row's pairs: each
 * expert's weights read once for all of its rows (expert.h's grouped path),
 * experts summed in ascending id: bitwise repeatable. */
static void compute_experts(worker *w, int layer, int rows, int P)
{
    memset(w->partial, 0, sizeof(float) * (size_t)rows * w->H);
    expert_group_run(&w->grp, w->m.layers[layer].experts, w->x, rows, w->ids, w->wts, P, w->partial);
}

/* The RESULT message in w->out: one pre-summed row per token and the
 * compute time it took, with the test fault applied when it fires.  Returns
 * the bytes to send. */
static size_t pack_reply(worker *w, const wire_header *h, int rows, double compute_s, int fire)
{
    const worker_fault *f = &w->fault;
    wire_header o = wire_header_init(WIRE_KIND_RESULT);
    o.step = h->step;
    o.layer = h->layer;
    o.seq = h->seq;
    o.src_rank = w->rank;
    o.dtype = (uint32_t)w->dt;
    o.rows = (uint32_t)rows;
    o.cols = (uint32_t)w->H;
    o.pairs = 0;
    o.compute_us = (float)(1e6 * compute_s);
    o.payload_bytes = wire_payload_bytes(o.dtype, o.rows, o.cols, 0);
    uint8_t *payload = w->out + WIRE_HEADER_BYTES;
    wire_pack_rows(w->dt, w->partial, (size_t)rows * w->H, payload);
    if (w->checksum) {
        o.flags |= WIRE_FLAG_CHECKSUM;
        o.checksum = wire_crc32c(payload, (size_t)o.payload_bytes);
    }
    size_t send_bytes = WIRE_HEADER_BYTES + (size_t)o.payload_bytes;
    if (fire) {
        w->fault.fired = 1;
        const char *what = "";
        switch (f->kind) {
        case WORKER_FAULT_DTYPE:
            o.dtype = w->dt == TM_DT_F32 ? TM_DT_BF16 : TM_DT_F32;
            what = "wrong dtype tag";
            break;
        case WORKER_FAULT_TRUNCATE:
            send_bytes = WIRE_HEADER_BYTES + (size_t)o.payload_bytes / 2;
            what = "truncated payload";
            break;
        case WORKER_FAULT_CORRUPT:
            payload[o.payload_bytes / 2] ^= 0x40;
            what = w->checksum ? "corrupted payload" : "corrupted payload (undetectable with --no-wire-checksum)";
            break;
        default: break;
        }
        fprintf(stderr, "trustmoe: worker rank %d: TRUSTMOE_FAULT=%s: %s at step %d, layer %d\n", w->rank,
                worker_fault_name(f->kind), what, h->step, h->layer);
    }
    wire_encode(&o, w->out);
    return send_bytes;
}

static void worker_dispatch(worker *w, int count)
{
    wire_header h;
    double t0 = tm_now();
    check_request(w, count, &h);
    int rows = (int)h.rows, P = (int)h.pairs, H = w->H;
    worker_grow(w, rows, P);

    const worker_fault *f = &w->fault;
    int fire = f->kind != WORKER_FAULT_NONE && !f->fired && f->rank == w->rank && h.step >= f->step;
    if (fire && f->kind == WORKER_FAULT_EXIT) worker_fault_fire_exit(w, &h);
    if (fire && f->kind == WORKER_FAULT_SILENT) worker_fault_fire_silent(w, &h);

    /* unpack rows and pairs */
    const uint8_t *act = w->in + WIRE_HEADER_BYTES;
    size_t row_bytes = (size_t)H * tm_dtype_size(w->dt);
    wire_unpack_rows(w->dt, act, (size_t)rows * H, w->x);
    memcpy(w->pairs, act + (size_t)rows * row_bytes, (size_t)rows * P * sizeof(wire_pair));
    double t1 = tm_now();
    int n_pairs = take_pairs(w, &h, rows, P);
    compute_experts(w, h.layer, rows, P);
    double t2 = tm_now();
    size_t send_bytes = pack_reply(w, &h, rows, t2 - t1, fire);
    double t3 = tm_now();
    worker_send(w, w->out, send_bytes, DIST_TAG_RESULT);
    /* activation traffic only, as the coordinator counts it */
    w->bytes_sent += send_bytes;
    w->bytes_received += (uint64_t)count;
    w->seq++;
    w->requests++;
    w->tokens += (uint64_t)rows;
    w->expert_tokens += (uint64_t)n_pairs;
    w->compute_s += t2 - t1;
    w->convert_s += (t1 - t0) + (t3 - t2);
}

/* ---- serve ------------------------------------------------------------------------- */

static int worker_shutdown(worker *w, int count)
{
    Trustmoe__Control *ctl = trustmoe__control__unpack(NULL, (size_t)count, w->in);
    if (!ctl) dist_die(1, "a control message (%d bytes) does not decode", count);
    int code = ctl->exit_code;
    int kind = ctl->kind;
    trustmoe__control__free_unpacked(ctl, NULL);
    if (kind != TRUSTMOE__CONTROL__KIND__SHUTDOWN) dist_die(1, "unknown control message kind %d", kind);
    Trustmoe__WorkerStats ws = TRUSTMOE__WORKER_STATS__INIT;
    ws.rank = w->rank;
    ws.requests = w->requests;
    ws.tokens = w->tokens;
    ws.expert_tokens = w->expert_tokens;
    ws.compute_s = w->compute_s;
    ws.convert_s = w->convert_s;
    ws.idle_s = w->idle_s;
    ws.bytes_sent = w->bytes_sent;
    ws.bytes_received = w->bytes_received;
    ws.resident_bytes = tm_rss_bytes();
    uint8_t buf[256];
    size_t len = trustmoe__worker_stats__pack(&ws, buf);
    worker_send(w, buf, len, DIST_TAG_STATS);
    (void)code; /* the coordinator's exit status is the job's; workers end cleanly */
    return 0;
}

int worker_main(const char *model_dir, const dist_params *p, const model_load_params *lp)
{
    int rank = 0, size = 1;
    dist_init(NULL, NULL, &rank, &size);
    TM_ASSERT_MSG(dist_mpi_active() && rank > 0, "worker_main runs on ranks > 0 of an MPI job");
    worker w;
    memset(&w, 0, sizeof w);
    w.rank = rank;
    w.fault = worker_fault_from_env();
    w.comm_timeout = p->comm_timeout;
    w.idle_timeout = p->idle_timeout;
    int code = 0;
    /* spin for the next request while a step is in flight, sleep once idle */
    double hot_until = 0.0;
    for (int serving = worker_start(&w, model_dir, p, lp); serving;) {
        MPI_Status st;
        double t0 = tm_now();
        if (!dist_probe(0, &st, w.idle_timeout, hot_until))
            dist_die(1, "no request from the coordinator for %g s (--idle-timeout; last step %d)", w.idle_timeout,
                     w.last_step);
        w.idle_s += tm_now() - t0;
        int count = worker_recv(&w, &st);
        if (st.MPI_TAG == DIST_TAG_DISPATCH) {
            worker_dispatch(&w, count);
            hot_until = tm_now() + dist_hot_window();
        } else if (st.MPI_TAG == DIST_TAG_CONTROL) {
            code = worker_shutdown(&w, count);
            break;
        } else {
            dist_die(1, "unexpected message tag %d from rank 0", st.MPI_TAG);
        }
    }
    worker_free(&w);
    dist_finalize();
    return code;
}
