/* report.c: the end of a run: shutdown of the workers with their statistics,
 * the summary on stderr, and the --stats-json document. */
#include "dispatch_ctx.h" /* first: it opens dist.h's internal part */
#include "dispatch.h"

#include "trustmoe.pb-c.h"

#include <cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
        int rc = MPI_Irecv(buf + (size_t)r * STATS_MAX_BYTES, STATS_MAX_BYTES, MPI_BYTE, r, DIST_TAG_STATS, dist_comm(),
                           &c->req[r]);
        if (rc != MPI_SUCCESS) dist_die(1, "stats receive from rank %d: %s", r, dist_mpi_error(rc));
    }
    for (int r = 1; r < size; r++) {
        int rc = MPI_Isend(msg, (int)len, MPI_BYTE, r, DIST_TAG_CONTROL, dist_comm(), &c->req[size + r]);
        if (rc != MPI_SUCCESS) dist_die(1, "shutdown send to rank %d: %s", r, dist_mpi_error(rc));
    }
    int rc = dist_wait_all(c->req, c->sts, 2 * size, c->p.comm_timeout, c->p.comm_timeout);
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

/* The totals both the summary and the JSON use. */
typedef struct {
    uint64_t sent, recvd, toks;      /* bytes to and from the workers; tokens of the run */
    double imb, imb_rows;            /* max/mean expert-tokens and token rows per rank */
    double calls;                    /* MoE layer calls (at least 1) */
    double fanout;                   /* workers contacted per (token, MoE layer) */
    double pf_tps, dc_tps;           /* prefill and decode tokens per second */
    double t_attn, t_attn_core, t_route, t_moe, t_head;
} report_totals;

static report_totals totals_of(const dist_ctx *c, const tm_state *s)
{
    report_totals x = {0};
    uint64_t max_pairs = 0, sum_pairs = 0, max_rows = 0, sum_rows = 0;
    int first = c->distributed && !c->local_experts ? 1 : 0; /* ranks that compute experts */
    for (int r = 1; r < c->size; r++) {
        x.sent += c->bytes_to[r];
        x.recvd += c->bytes_from[r];
    }
    for (int r = first; r < c->size; r++) {
        max_pairs = TM_MAX(max_pairs, c->rank_pairs[r]);
        sum_pairs += c->rank_pairs[r];
        max_rows = TM_MAX(max_rows, c->rank_rows[r]);
        sum_rows += c->rank_rows[r];
    }
    int n_ranks = c->size - first;
    x.imb = sum_pairs ? (double)max_pairs * n_ranks / (double)sum_pairs : 0.0;
    x.imb_rows = sum_rows ? (double)max_rows * n_ranks / (double)sum_rows : 0.0;
    x.toks = c->prefill_tok + c->decode_tok;
    uint64_t rows = 0;
    for (int r = 1; r < c->size; r++) rows += c->rank_rows[r];
    x.fanout = c->token_layers ? (double)rows / (double)c->token_layers : 0.0;
    x.calls = c->n_layer_calls ? (double)c->n_layer_calls : 1.0;
    x.pf_tps = c->prefill_s > 0 ? (double)c->prefill_tok / c->prefill_s : 0.0;
    x.dc_tps = c->decode_s > 0 ? (double)c->decode_tok / c->decode_s : 0.0;
    if (s) {
        x.t_attn = s->t_attn;
        x.t_attn_core = s->t_attn_core;
        x.t_route = s->t_route;
        x.t_moe = s->t_moe;
        x.t_head = s->t_head;
    }
    return x;
}

/* The summary on stderr: one throughput line (and one line of the job's
 * shape when distributed); -v adds the time split and the per-rank lines. */
static void print_report(const dist_ctx *c, const report_totals *x)
{
    FILE *f = stderr;
    char load[64] = "";
    if (c->load_s >= 0) snprintf(load, sizeof load, "load %.1f ms; ", 1e3 * c->load_s);
    if (c->decode_tok)
        fprintf(f, "trustmoe: %sprefill %llu tokens in %.2f ms (%.2f tokens per second); decode %llu tokens in %.2f ms "
                   "(%.2f ms per token, %.2f tokens per second)\n",
                load, (unsigned long long)c->prefill_tok, 1e3 * c->prefill_s, x->pf_tps,
                (unsigned long long)c->decode_tok, 1e3 * c->decode_s, 1e3 * c->decode_s / (double)c->decode_tok,
                x->dc_tps);
    else
        fprintf(f, "trustmoe: %sprefill %llu tokens in %.2f ms (%.2f tokens per second); no decode\n", load,
                (unsigned long long)c->prefill_tok, 1e3 * c->prefill_s, x->pf_tps);
    if (c->distributed)
        fprintf(f, "trustmoe: %d ranks (%d worker%s), placement %s, replicas %d, wire %s%s; %.0f bytes per token "
                   "(all layers, both ways); load imbalance %.3f (max/mean expert-tokens per worker); fan-out %.3f "
                   "workers per (token, layer); per MoE layer call the wait is the slowest worker's compute %.1f us "
                   "+ exchange overhead %.1f us (median %.1f us over %llu decode calls)\n",
                c->size, c->W, c->W == 1 ? "" : "s", c->pm.policy, TM_MAX(c->p.replicas, 1),
                tm_dtype_name(c->p.wire_dtype), c->p.checksum ? " + CRC32C" : "",
                x->toks ? (double)(x->sent + x->recvd) / (double)x->toks : 0.0, x->imb, x->fanout,
                1e6 * c->t_slowest / x->calls, 1e6 * c->t_overhead / x->calls, dist_overhead_median_us(c),
                (unsigned long long)c->ov_calls);
    if (!c->p.verbose) return;
    fprintf(f, "trustmoe: time attention %.2f ms (core %.2f), routing %.2f ms, experts %.2f ms (dispatch %.2f, "
               "wait %.2f, combine %.2f, local %.2f), head %.2f ms\n",
            1e3 * x->t_attn, 1e3 * x->t_attn_core, 1e3 * x->t_route, 1e3 * x->t_moe, 1e3 * c->t_dispatch,
            1e3 * c->t_wait, 1e3 * c->t_combine, 1e3 * c->t_local, 1e3 * x->t_head);
    if (!c->distributed) return;
    fprintf(f, "trustmoe: per MoE layer call: dispatch %.1f us, wait %.1f us, combine %.1f us\n",
            1e6 * c->t_dispatch / x->calls, 1e6 * c->t_wait / x->calls, 1e6 * c->t_combine / x->calls);
    if (c->local_experts)
        fprintf(f, "trustmoe: rank 0 (%s): %d (layer, expert) instances, %.2f MiB, %llu token rows, %llu "
                   "expert-tokens, compute %.2f ms\n",
                c->info[0].host, c->local_experts, dist_mib(c->info[0].weight_bytes),
                (unsigned long long)c->rank_rows[0], (unsigned long long)c->rank_pairs[0], 1e3 * c->t_local);
    for (int r = 1; r < c->size; r++) {
        const rank_info *ri = &c->info[r];
        fprintf(f, "trustmoe: rank %d (%s): %d (layer, expert) instances, %.2f MiB, resident %.2f MiB, %llu token "
                   "rows, %llu expert-tokens, compute %.2f ms, sent %.1f KiB, received %.1f KiB\n",
                r, ri->host, ri->experts, dist_mib(ri->weight_bytes), dist_mib(ri->rss_end ? ri->rss_end : ri->rss),
                (unsigned long long)c->rank_rows[r], (unsigned long long)c->rank_pairs[r], 1e3 * ri->compute_s,
                c->bytes_from[r] / 1024.0, c->bytes_to[r] / 1024.0);
    }
    fprintf(f, "trustmoe: load imbalance (max/mean per worker): %.3f expert-tokens, %.3f token rows\n", x->imb,
            x->imb_rows);
}

/* One rank's entry of "ranks_detail". */
static cJSON *rank_json(const dist_ctx *c, const report_totals *x, int r)
{
    const rank_info *ri = &c->info[r];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rank", r);
    cJSON_AddStringToObject(o, "host", ri->host);
    cJSON_AddNumberToObject(o, "pid", ri->pid);
    if (r == 0) {
        cJSON_AddStringToObject(o, "role", "coordinator");
        cJSON_AddNumberToObject(o, "bytes_sent", (double)x->sent);
        cJSON_AddNumberToObject(o, "bytes_received", (double)x->recvd);
        cJSON_AddNumberToObject(o, "resident_bytes", (double)tm_rss_bytes());
        if (c->distributed) cJSON_AddNumberToObject(o, "experts", c->local_experts);
        if (!c->distributed || c->local_experts) {
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
    return o;
}

/* The --stats-json document: the same figures, per-rank detail and the
 * per-layer expert loads. */
static int write_stats_json(const dist_ctx *c, const report_totals *x)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "ranks", c->size);
    cJSON_AddNumberToObject(j, "workers", c->W);
    cJSON_AddStringToObject(j, "placement", c->distributed ? c->pm.policy : "local");
    cJSON_AddNumberToObject(j, "replicas", TM_MAX(c->p.replicas, 1));
    cJSON_AddStringToObject(j, "wire_dtype", tm_dtype_name(c->p.wire_dtype));
    cJSON_AddBoolToObject(j, "wire_checksum", c->p.checksum);
    cJSON_AddStringToObject(j, "build", dist_build_version());
    if (c->load_s >= 0) cJSON_AddNumberToObject(j, "load_seconds", c->load_s);
    cJSON *pf = cJSON_AddObjectToObject(j, "prefill");
    cJSON_AddNumberToObject(pf, "tokens", (double)c->prefill_tok);
    cJSON_AddNumberToObject(pf, "seconds", c->prefill_s);
    cJSON_AddNumberToObject(pf, "tokens_per_second", x->pf_tps);
    cJSON *dc = cJSON_AddObjectToObject(j, "decode");
    cJSON_AddNumberToObject(dc, "tokens", (double)c->decode_tok);
    cJSON_AddNumberToObject(dc, "steps", (double)c->decode_steps);
    cJSON_AddNumberToObject(dc, "seconds", c->decode_s);
    cJSON_AddNumberToObject(dc, "tokens_per_second", x->dc_tps);
    cJSON *tm = cJSON_AddObjectToObject(j, "time_s");
    cJSON_AddNumberToObject(tm, "attention", x->t_attn);
    cJSON_AddNumberToObject(tm, "attention_core", x->t_attn_core);
    cJSON_AddNumberToObject(tm, "routing", x->t_route);
    cJSON_AddNumberToObject(tm, "experts", x->t_moe);
    cJSON_AddNumberToObject(tm, "dispatch", c->t_dispatch);
    cJSON_AddNumberToObject(tm, "dispatch_wait", c->t_wait);
    cJSON_AddNumberToObject(tm, "combine", c->t_combine);
    cJSON_AddNumberToObject(tm, "expert_compute_local", c->t_local);
    cJSON_AddNumberToObject(tm, "head", x->t_head);
    cJSON_AddNumberToObject(j, "moe_layer_calls", (double)c->n_layer_calls);
    cJSON *pl = cJSON_AddObjectToObject(j, "per_layer_us");
    cJSON_AddNumberToObject(pl, "dispatch", 1e6 * c->t_dispatch / x->calls);
    cJSON_AddNumberToObject(pl, "dispatch_wait", 1e6 * c->t_wait / x->calls);
    cJSON_AddNumberToObject(pl, "combine", 1e6 * c->t_combine / x->calls);
    /* dispatch_wait = slowest_compute + exchange_overhead, call by call */
    cJSON_AddNumberToObject(pl, "slowest_compute", 1e6 * c->t_slowest / x->calls);
    cJSON_AddNumberToObject(pl, "exchange_overhead", 1e6 * c->t_overhead / x->calls);
    cJSON_AddNumberToObject(pl, "exchange_overhead_decode_median", dist_overhead_median_us(c));
    cJSON_AddNumberToObject(pl, "decode_calls", (double)c->ov_calls);
    cJSON *by = cJSON_AddObjectToObject(j, "bytes");
    cJSON_AddNumberToObject(by, "sent", (double)x->sent);
    cJSON_AddNumberToObject(by, "received", (double)x->recvd);
    cJSON_AddNumberToObject(by, "per_token", x->toks ? (double)(x->sent + x->recvd) / (double)x->toks : 0.0);
    cJSON_AddNumberToObject(j, "load_imbalance", x->imb);
    cJSON_AddNumberToObject(j, "load_imbalance_token_rows", x->imb_rows);
    cJSON *fo = cJSON_AddObjectToObject(j, "fanout");
    cJSON_AddNumberToObject(fo, "workers_per_token_layer", x->fanout);
    cJSON_AddNumberToObject(fo, "messages", (double)c->messages);
    cJSON_AddNumberToObject(fo, "messages_per_token", x->toks ? (double)c->messages / (double)x->toks : 0.0);
    cJSON *ranks = cJSON_AddArrayToObject(j, "ranks_detail");
    for (int r = 0; r < c->size; r++) cJSON_AddItemToArray(ranks, rank_json(c, x, r));
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
    else if (c->p.verbose)
        fprintf(stderr, "trustmoe: statistics written to %s\n", c->p.stats_json);
    free(text);
    cJSON_Delete(j);
    return bad;
}

/* Returns nonzero when --stats-json could not be written. */
static int report(dist_ctx *c, const tm_state *s, int exit_code)
{
    report_totals x = totals_of(c, s);
    /* a failed run's figures would mislead; its one line is the error */
    if (!exit_code && !c->p.quiet) print_report(c, &x);
    return c->p.stats_json ? write_stats_json(c, &x) : 0;
}

size_t dist_prometheus(moe_backend *be, char *buf, size_t cap)
{
    const dist_ctx *c = dist_ctx_of(be);
    if (!c || cap == 0) return 0;
    size_t w = 0;
#define OUT(...) (w += (size_t)snprintf(buf + w, w < cap ? cap - w : 0, __VA_ARGS__))
    double calls = c->n_layer_calls ? (double)c->n_layer_calls : 1.0;
    OUT("# HELP trustmoe_moe_layer_calls_total MoE layer calls (one per MoE layer per forward pass).\n"
        "# TYPE trustmoe_moe_layer_calls_total counter\ntrustmoe_moe_layer_calls_total %llu\n",
        (unsigned long long)c->n_layer_calls);
    OUT("# HELP trustmoe_exchange_seconds_total Expert exchange time by phase, over all MoE layer calls.\n"
        "# TYPE trustmoe_exchange_seconds_total counter\n"
        "trustmoe_exchange_seconds_total{phase=\"dispatch\"} %.6f\n"
        "trustmoe_exchange_seconds_total{phase=\"wait\"} %.6f\n"
        "trustmoe_exchange_seconds_total{phase=\"combine\"} %.6f\n"
        "trustmoe_exchange_seconds_total{phase=\"local\"} %.6f\n",
        c->t_dispatch, c->t_wait, c->t_combine, c->t_local);
    OUT("# HELP trustmoe_exchange_per_layer_call_microseconds Mean exchange time per MoE layer call.\n"
        "# TYPE trustmoe_exchange_per_layer_call_microseconds gauge\n"
        "trustmoe_exchange_per_layer_call_microseconds{phase=\"dispatch\"} %.2f\n"
        "trustmoe_exchange_per_layer_call_microseconds{phase=\"wait\"} %.2f\n"
        "trustmoe_exchange_per_layer_call_microseconds{phase=\"combine\"} %.2f\n",
        1e6 * c->t_dispatch / calls, 1e6 * c->t_wait / calls, 1e6 * c->t_combine / calls);
    OUT("# HELP trustmoe_expert_tokens_total Tokens routed to each (layer, expert).\n"
        "# TYPE trustmoe_expert_tokens_total counter\n");
    for (int l = 0; l < c->L && w < cap; l++) {
        if (!cfg_layer_is_moe(&c->m->cfg, l)) continue;
        for (int e = 0; e < c->E && w < cap; e++)
            OUT("trustmoe_expert_tokens_total{layer=\"%d\",expert=\"%d\"} %llu\n", l, e,
                (unsigned long long)c->expert_tokens[(size_t)l * c->E + e]);
    }
    OUT("# HELP trustmoe_rank_expert_tokens_total (token, expert) evaluations per rank.\n"
        "# TYPE trustmoe_rank_expert_tokens_total counter\n");
    for (int r = c->distributed ? 1 : 0; r < c->size && w < cap; r++)
        OUT("trustmoe_rank_expert_tokens_total{rank=\"%d\"} %llu\n", r, (unsigned long long)c->rank_pairs[r]);
#undef OUT
    return TM_MIN(w, cap - 1);
}

void dist_set_times(moe_backend *be, const dist_times *t)
{
    dist_ctx *c = dist_ctx_of(be);
    if (!c) return;
    dist_step_close(c);
    c->load_s = t->load_s;
    c->prefill_s = t->prefill_s;
    c->prefill_tok = t->prefill_tok;
    c->decode_s = t->decode_s;
    c->decode_tok = t->decode_tok;
    c->decode_steps = t->decode_steps;
}

/* Before any placement every worker waits in its first probe: a SHUTDOWN
 * there ends it cleanly, with no statistics to collect. */
static void stop_unstarted_workers(int exit_code, double timeout)
{
    int size = dist_size();
    Trustmoe__Control ctl = TRUSTMOE__CONTROL__INIT;
    ctl.kind = TRUSTMOE__CONTROL__KIND__SHUTDOWN;
    ctl.exit_code = exit_code;
    uint8_t msg[64];
    size_t len = trustmoe__control__pack(&ctl, msg);
    MPI_Request *req = tm_calloc((size_t)size, sizeof *req);
    MPI_Status *sts = tm_calloc((size_t)size, sizeof *sts);
    req[0] = MPI_REQUEST_NULL;
    for (int r = 1; r < size; r++) {
        int rc = MPI_Isend(msg, (int)len, MPI_BYTE, r, DIST_TAG_CONTROL, dist_comm(), &req[r]);
        if (rc != MPI_SUCCESS) dist_die(exit_code, "shutdown send to rank %d: %s", r, dist_mpi_error(rc));
    }
    int rc = dist_wait_all(req, sts, size, timeout, 0.0);
    if (rc != -1) dist_die(exit_code, "shutdown: worker rank %d did not take the stop message", rc >= 0 ? rc : -2 - rc);
    free(req);
    free(sts);
}

int dist_finish(moe_backend *be, int exit_code, const tm_state *s)
{
    dist_ctx *c = dist_ctx_of(be);
    if (!c) {
        if (dist_mpi_active() && dist_size() > 1 && dist_rank() == 0)
            stop_unstarted_workers(exit_code ? exit_code : 1, dist_default_params().comm_timeout);
        dist_finalize();
        return exit_code;
    }
    dist_step_close(c);
    if (c->distributed) collect_worker_stats(c, exit_code);
    if (report(c, s, exit_code) && exit_code == 0) exit_code = 1;
    dist_ctx_free(c);
    be->ctx = NULL;
    dist_finalize();
    return exit_code;
}
