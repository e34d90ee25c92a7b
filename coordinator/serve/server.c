/* server.c: the HTTP side (connection threads) and the serving loop (the
 * model's thread) of `trustmoe serve`; see server.h. */
#include "server.h"

#include "openai.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern const char serve_page_html[];

#define TTFT_BUCKETS 11
#define ITL_BUCKETS 11
static const double ttft_le[TTFT_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double itl_le[ITL_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};

typedef struct {
    uint64_t count[16];
    uint64_t n;
    double sum;
} histogram;

enum { EP_COMPLETIONS, EP_CHAT, EP_TOKENIZE, EP_DETOKENIZE, EP_MODELS, EP_HEALTH, EP_METRICS, EP_PAGE, EP_OTHER, EP_N };
static const char *const ep_name[EP_N] = {"completions", "chat_completions", "tokenize", "detokenize", "models",
                                          "health", "metrics", "page", "other"};

typedef struct {
    serve_params p;
    serve_engine e;
    openai_ctx oc;         /* what the JSON shapes need */
    tm_selector trust_sel; /* the trust run's selector, which serve_select calls */
    tm_selector sel;       /* serve_select: each token with its request's selection */
    sched *sc;
    struct MHD_Daemon *d;
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* the serving loop: new request, cancel, metrics wanted, stop */
    srv_req *in_head, *in_tail;
    int n_in, n_live;        /* waiting to enter the scheduler; in it */
    int n_open;              /* requests libmicrohttpd is working on (answered at shutdown) */
    int draining;            /* a signal came: new requests get 503 */
    int stopping;            /* the loop ended: connections stop waiting */
    /* metrics (under mu) */
    uint64_t requests[EP_N][6]; /* by status class: 2xx 4xx(not 429) 429 5xx, [4] total */
    uint64_t prompt_tokens, generated_tokens, finished[3]; /* stop, length, error */
    histogram ttft, itl;
    int metrics_want;        /* a connection waits for metrics_text */
    uint64_t metrics_gen;
    char *metrics_text;
    tm_status failure;
    tm_err fail_err;
} srv;

static volatile sig_atomic_t g_signalled;
static void on_signal(int sig) { g_signalled = sig; }

static double now_s(void) { return tm_now(); }

static void hist_add(histogram *h, const double *le, int nb, double v)
{
    for (int i = 0; i < nb; i++)
        if (v <= le[i]) h->count[i]++;
    h->n++;
    h->sum += v;
}

serve_params serve_default_params(void)
{
    serve_params p = {.host = "127.0.0.1", .port = 8080, .max_body = 1 << 20, .model_name = "trustmoe", .grace = 10.0,
                      .batch_wait = 0.005,
                      .samp = sampler_default_params(), .port_file = NULL};
    return p;
}

/* ---- requests: life and output ---------------------------------------------------- */

static void req_unref(srv *s, srv_req *q)
{
    if (--q->refs > 0) return;
    for (int i = 0; i < q->n_stops; i++) free(q->stops[i]);
    free(q->prompt);
    free(q->text);
    free(q->toks);
    free(q->sbuf);
    pthread_cond_destroy(&q->cv);
    free(q);
    (void)s;
}

static void text_append(srv_req *q, const char *s, size_t n)
{
    if (q->len + n + 1 > q->cap) {
        q->cap = TM_MAX(q->cap * 2, q->len + n + 256);
        q->text = tm_realloc(q->text, q->cap);
    }
    memcpy(q->text + q->len, s, n);
    q->len += n;
    q->text[q->len] = 0;
}

/* Cuts the text at the first stop string (the sampler's search); else marks
 * the text no stop string can still begin in as safe to send.  A stop that
 * began before q->safe would have been found already, so the search starts
 * there.  Returns 1 when a stop string was found. */
static int apply_stops(srv_req *q)
{
    const sampler_params *sp = &q->r.samp;
    long at = sampler_stop_find(sp, q->text + q->safe, q->len - q->safe);
    if (at >= 0) {
        q->len = q->safe + (size_t)at;
        q->text[q->len] = 0;
        q->safe = q->len;
        return 1;
    }
    q->safe = TM_MAX(q->safe, q->len - sampler_stop_holdback(sp, q->text, q->len));
    return 0;
}

static void record_logprobs(srv_req *q, srv_tok *t, const float *logits, int V)
{
    float mx = logits[0];
    for (int v = 1; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
    double sum = 0;
    for (int v = 0; v < V; v++) sum += exp((double)logits[v] - mx);
    double lse = mx + log(sum);
    t->logprob = (float)(logits[t->id] - lse);
    t->n_top = q->n_logprobs;
    for (int k = 0; k < t->n_top; k++) t->top_id[k] = -1;
    for (int v = 0; v < V; v++) { /* insertion into a short sorted list */
        int k = t->n_top;
        while (k > 0 && (t->top_id[k - 1] < 0 || logits[v] > logits[t->top_id[k - 1]])) k--;
        if (k >= t->n_top) continue;
        memmove(&t->top_id[k + 1], &t->top_id[k], sizeof(int32_t) * (size_t)(t->n_top - k - 1));
        t->top_id[k] = v;
    }
    for (int k = 0; k < t->n_top; k++) t->top_lp[k] = (float)(logits[t->top_id[k]] - lse);
}

static srv *g_srv; /* the callbacks below run on the serving thread, inside sched_step */

static int on_token(void *ctx, int32_t id, const float *logits, int vocab)
{
    srv_req *q = ctx;
    srv *s = g_srv;
    pthread_mutex_lock(&s->mu);
    if (q->cancelled) { /* the client went away: end the sequence here */
        pthread_mutex_unlock(&s->mu);
        return 1;
    }
    double t = now_s();
    if (q->n_toks == 0) {
        q->t_first = t;
        hist_add(&s->ttft, ttft_le, TTFT_BUCKETS, t - q->t_arrive);
    } else {
        hist_add(&s->itl, itl_le, ITL_BUCKETS, t - q->t_prev);
    }
    q->t_prev = t;
    s->generated_tokens++;
    int is_stop_id = cfg_is_eos(&s->e.m->cfg, id);
    for (int i = 0; i < 3 && !is_stop_id; i++) is_stop_id = q->stop_ids[i] == id;
    if (!is_stop_id) {
        if (s->e.tok) {
            size_t k = tok_stream_push(&q->ts, id, q->sbuf, q->scap);
            text_append(q, q->sbuf, k);
        } else {
            char buf[16];
            int k = snprintf(buf, sizeof buf, q->n_toks ? ",%d" : "%d", id);
            text_append(q, buf, (size_t)k);
        }
    }
    int stop = apply_stops(q);
    if (q->n_toks == q->cap_toks) {
        q->cap_toks = TM_MAX(16, 2 * q->cap_toks);
        q->toks = tm_realloc(q->toks, sizeof(srv_tok) * (size_t)q->cap_toks);
    }
    srv_tok *tk = &q->toks[q->n_toks++];
    memset(tk, 0, sizeof *tk);
    tk->id = id;
    tk->text_end = q->len;
    if (q->n_logprobs >= 0) record_logprobs(q, tk, logits, vocab);
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&s->mu);
    return stop;
}

static void on_done(void *ctx, sched_stop why, int n)
{
    srv_req *q = ctx;
    srv *s = g_srv;
    pthread_mutex_lock(&s->mu);
    if (s->e.tok && why != SCHED_STOP_CALLER) { /* the detokenizer's tail, unless a stop string cut it */
        size_t k = tok_stream_flush(&q->ts, q->sbuf, q->scap);
        text_append(q, q->sbuf, k);
        apply_stops(q);
    }
    q->safe = q->len;
    q->why = why;
    q->failed = why == SCHED_STOP_ERROR;
    q->done = 1;
    s->finished[q->failed ? 2 : why == SCHED_STOP_LENGTH || why == SCHED_STOP_CONTEXT]++;
    s->n_live--;
    pthread_cond_broadcast(&q->cv);
    req_unref(s, q);
    pthread_mutex_unlock(&s->mu);
    (void)n;
}

/* Each token's experts by its own request's selection: the model's routing,
 * or the trust run's selector set to the request's mode and alpha.  With
 * experts masked (--mask, --unavailable) the router's choice also goes
 * through the selector, which fills masked slots with the next best. */
static int serve_select(void *ctx, int layer, int t, const float *probs, int k, int norm_topk, int32_t *ids,
                        float *w)
{
    srv *s = ctx;
    const srv_req *q = sched_token_request(s->sc, t)->ctx;
    if (!s->e.trust || (q->sel_mode == TRUST_SELECT_ROUTER && !s->e.trust->mask)) {
        model_route_topk(probs, s->e.m->cfg.num_experts, k, norm_topk, ids, w);
        return 0;
    }
    s->e.trust->sel.p.mode = q->sel_mode;
    s->e.trust->sel.p.alpha = q->sel_alpha;
    return s->trust_sel.select(s->trust_sel.ctx, layer, t, probs, k, norm_topk, ids, w);
}

/* ---- the serving loop ------------------------------------------------------------ */

static size_t render_metrics(srv *s, char *buf, size_t cap)
{
    size_t w = 0;
#define OUT(...) (w += (size_t)snprintf(buf + w, w < cap ? cap - w : 0, __VA_ARGS__))
    OUT("# HELP trustmoe_requests_total HTTP requests by endpoint and status class.\n"
        "# TYPE trustmoe_requests_total counter\n");
    static const char *const cls[4] = {"2xx", "4xx", "429", "5xx"};
    for (int e = 0; e < EP_N; e++)
        for (int c = 0; c < 4; c++)
            if (s->requests[e][c])
                OUT("trustmoe_requests_total{endpoint=\"%s\",status=\"%s\"} %llu\n", ep_name[e], cls[c],
                    (unsigned long long)s->requests[e][c]);
    OUT("# HELP trustmoe_prompt_tokens_total Prompt tokens of accepted generation requests.\n"
        "# TYPE trustmoe_prompt_tokens_total counter\ntrustmoe_prompt_tokens_total %llu\n",
        (unsigned long long)s->prompt_tokens);
    OUT("# HELP trustmoe_generation_tokens_total Tokens generated.\n"
        "# TYPE trustmoe_generation_tokens_total counter\ntrustmoe_generation_tokens_total %llu\n",
        (unsigned long long)s->generated_tokens);
    OUT("# HELP trustmoe_requests_finished_total Generation requests by finish reason.\n"
        "# TYPE trustmoe_requests_finished_total counter\n"
        "trustmoe_requests_finished_total{reason=\"stop\"} %llu\n"
        "trustmoe_requests_finished_total{reason=\"length\"} %llu\n"
        "trustmoe_requests_finished_total{reason=\"error\"} %llu\n",
        (unsigned long long)s->finished[0], (unsigned long long)s->finished[1], (unsigned long long)s->finished[2]);
    OUT("# HELP trustmoe_sequences_running Sequences in KV slots.\n# TYPE trustmoe_sequences_running gauge\n"
        "trustmoe_sequences_running %d\n", sched_running(s->sc));
    OUT("# HELP trustmoe_sequences_queued Requests waiting for a slot.\n# TYPE trustmoe_sequences_queued gauge\n"
        "trustmoe_sequences_queued %d\n", sched_queued(s->sc) + s->n_in);
    OUT("# HELP trustmoe_scheduler_steps_total Forward calls of the scheduler.\n"
        "# TYPE trustmoe_scheduler_steps_total counter\ntrustmoe_scheduler_steps_total %llu\n",
        (unsigned long long)s->sc->steps);
    const struct {
        const char *name, *help;
        const histogram *h;
        const double *le;
        int nb;
    } hs[2] = {{"trustmoe_time_to_first_token_seconds", "From request arrival to its first token.", &s->ttft,
                ttft_le, TTFT_BUCKETS},
               {"trustmoe_inter_token_latency_seconds", "Between consecutive tokens of a request.", &s->itl, itl_le,
                ITL_BUCKETS}};
    for (int i = 0; i < 2; i++) {
        OUT("# HELP %s %s\n# TYPE %s histogram\n", hs[i].name, hs[i].help, hs[i].name);
        for (int b = 0; b < hs[i].nb; b++)
            OUT("%s_bucket{le=\"%g\"} %llu\n", hs[i].name, hs[i].le[b], (unsigned long long)hs[i].h->count[b]);
        OUT("%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", hs[i].name,
            (unsigned long long)hs[i].h->n, hs[i].name, hs[i].h->sum, hs[i].name, (unsigned long long)hs[i].h->n);
    }
#undef OUT
    if (w < cap && s->e.exchange_metrics) w += s->e.exchange_metrics(s->e.be, buf + w, cap - w);
    return TM_MIN(w, cap - 1);
}

/* New requests into the scheduler, cancelled ones out, metrics when asked.
 * Called with mu held. */
static void take_work(srv *s)
{
    while (s->in_head) {
        srv_req *q = s->in_head;
        s->in_head = q->next;
        if (!s->in_head) s->in_tail = NULL;
        s->n_in--;
        tm_err err;
        q->r.on_token = on_token;
        q->r.on_done = on_done;
        q->r.ctx = q;
        q->r.stop_ids = q->stop_ids;
        q->r.n_stop_ids = 3;
        if (q->cancelled || sched_add(s->sc, q->prompt, q->n_prompt, &q->r, &err) != TM_OK) {
            /* the connection checked size and context; only a race with the
             * queue bound or a cancel lands here */
            q->done = q->failed = 1;
            q->why = SCHED_STOP_ERROR;
            pthread_cond_broadcast(&q->cv);
            req_unref(s, q);
            continue;
        }
        s->n_live++;
        s->prompt_tokens += (uint64_t)q->n_prompt;
    }
    if (s->metrics_want) {
        size_t cap = 1 << 20;
        char *buf = tm_malloc(cap);
        render_metrics(s, buf, cap);
        free(s->metrics_text);
        s->metrics_text = buf;
        s->metrics_gen++;
        s->metrics_want = 0;
        pthread_cond_broadcast(&s->wake);
    }
}

/* An idle server that has just been handed a request keeps admitting while
 * more arrive at most batch_wait apart (up to SERVE_BURST_WAITS of them):
 * clients that send together then prefill in one step.  Without it the
 * first request's prefill runs alone and the rest of a burst waits for it
 * (a 48-layer model: 0.3 s more to every other first token).  A lone
 * request pays batch_wait once.  Called with mu held. */
#define SERVE_BURST_WAITS 10

static void gather_burst(srv *s)
{
    double last = now_s(), end = last + SERVE_BURST_WAITS * s->p.batch_wait;
    while (!g_signalled && !s->stopping) {
        double until = TM_MIN(last + s->p.batch_wait, end), now = now_s();
        if (now >= until) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)((until - now) * 1e9);
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        if (!s->in_head) pthread_cond_timedwait(&s->wake, &s->mu, &ts);
        if (s->in_head) {
            take_work(s);
            last = now_s();
        }
    }
}

/* Serves until a signal; then refuses new requests (503), lets the running
 * ones finish for up to grace seconds, and cancels what is left. */
static tm_status serve_loop(srv *s, tm_err *err)
{
    double t_signal = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (g_signalled && !s->draining) {
            s->draining = 1;
            t_signal = now_s();
            fprintf(stderr, "trustmoe serve: stopping: %d requests in flight, %.0f s to finish (--shutdown-grace)\n",
                    s->n_in + s->n_live, s->p.grace);
        }
        int was_idle = sched_running(s->sc) + sched_queued(s->sc) == 0;
        take_work(s);
        int busy = sched_running(s->sc) + sched_queued(s->sc) > 0;
        if (s->draining && (!busy || now_s() - t_signal > s->p.grace)) break;
        if (busy && was_idle && !s->draining && s->p.batch_wait > 0) gather_burst(s);
        if (!busy) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000L; /* wake to notice a signal */
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            if (!s->in_head && !s->metrics_want) pthread_cond_timedwait(&s->wake, &s->mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        tm_status st = sched_step(s->sc, err);
        pthread_mutex_lock(&s->mu);
        if (st != TM_OK) {
            s->failure = st;
            break;
        }
    }
    s->stopping = 1;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    /* what is left is cancelled; its connections answer and close */
    sched_end_all(s->sc, SCHED_STOP_ERROR);
    pthread_mutex_lock(&s->mu);
    for (srv_req *q = s->in_head; q; q = q->next) {
        q->done = q->failed = 1;
        q->why = SCHED_STOP_ERROR;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return s->failure;
}

/* ---- HTTP ------------------------------------------------------------------------- */

typedef struct {
    char *body;
    size_t len;
    int too_big;
    int ep;
} conn;

static int status_class(unsigned status)
{
    return status < 400 ? 0 : status == 429 ? 2 : status < 500 ? 1 : 3;
}

static enum MHD_Result reply(srv *s, struct MHD_Connection *c, int ep, unsigned status, const char *type, char *body)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    pthread_mutex_lock(&s->mu);
    s->requests[ep][status_class(status)]++;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static enum MHD_Result reply_json(srv *s, struct MHD_Connection *c, int ep, unsigned status, char *json)
{
    return reply(s, c, ep, status, "application/json", json);
}

static enum MHD_Result reply_error(srv *s, struct MHD_Connection *c, int ep, unsigned status, const char *type,
                                   const char *param, const char *msg)
{
    return reply_json(s, c, ep, status, openai_error(type, param, "%s", msg));
}

static enum MHD_Result get_models(srv *s, struct MHD_Connection *c)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "object", "list");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", s->p.model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "trustmoe");
    cJSON_AddNumberToObject(m, "max_model_len", s->sc->p.ctx);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(j, "data"), m);
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return reply_json(s, c, EP_MODELS, 200, out);
}

static enum MHD_Result get_metrics(srv *s, struct MHD_Connection *c)
{
    pthread_mutex_lock(&s->mu);
    uint64_t gen = s->metrics_gen;
    s->metrics_want = 1;
    pthread_cond_broadcast(&s->wake);
    while (s->metrics_gen == gen && !s->stopping) pthread_cond_wait(&s->wake, &s->mu);
    char *text = s->metrics_text ? strdup(s->metrics_text) : strdup("");
    pthread_mutex_unlock(&s->mu);
    return reply(s, c, EP_METRICS, 200, "text/plain; version=0.0.4", text);
}

/* POST /tokenize {"prompt": TEXT} or {"messages": [...]}; /detokenize {"tokens": [...]}. */
static enum MHD_Result post_tokenize(srv *s, struct MHD_Connection *c, const cJSON *body, int detok)
{
    int ep = detok ? EP_DETOKENIZE : EP_TOKENIZE;
    if (!s->e.tok) return reply_error(s, c, ep, 400, "invalid_request_error", NULL, "this model has no tokenizer");
    if (!cJSON_IsObject(body)) return reply_error(s, c, ep, 400, "invalid_request_error", NULL, "the body must be a JSON object");
    cJSON *out = cJSON_CreateObject();
    if (detok) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(body, "tokens"), *v;
        if (!cJSON_IsArray(t)) {
            cJSON_Delete(out);
            return reply_error(s, c, ep, 400, "invalid_request_error", "tokens", "'tokens' must be an array of token ids");
        }
        int n = cJSON_GetArraySize(t), i = 0, V = (int)tok_vocab_size(s->e.tok);
        int32_t *ids = tm_malloc(sizeof(int32_t) * (size_t)TM_MAX(n, 1));
        cJSON_ArrayForEach(v, t)
        {
            if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
                v->valuedouble >= V) {
                free(ids);
                cJSON_Delete(out);
                char msg[96];
                snprintf(msg, sizeof msg, "'tokens'[%d] is not a token id in 0..%d", i, V - 1);
                return reply_error(s, c, ep, 400, "invalid_request_error", "tokens", msg);
            }
            ids[i++] = (int32_t)v->valuedouble;
        }
        char *text = tok_decode(s->e.tok, ids, (size_t)n, NULL);
        cJSON_AddStringToObject(out, "prompt", text);
        free(text);
        free(ids);
    } else {
        srv_req tmp;
        memset(&tmp, 0, sizeof tmp);
        char *err_json = NULL;
        cJSON *b2 = cJSON_Duplicate(body, 1);
        /* the same prompt rules as completions (text or chat messages) */
        int chat = cJSON_GetObjectItemCaseSensitive(body, "messages") != NULL;
        cJSON_DeleteItemFromObjectCaseSensitive(b2, "max_tokens");
        cJSON_AddNumberToObject(b2, "max_tokens", 1);
        int st = openai_parse_request(b2, chat, &s->oc, &tmp, &err_json);
        cJSON_Delete(b2);
        if (st && !(st == 400 && tmp.n_prompt > 0 && strstr(err_json, "max_tokens"))) {
            for (int i = 0; i < tmp.n_stops; i++) free(tmp.stops[i]);
            free(tmp.prompt);
            cJSON_Delete(out);
            return reply_json(s, c, ep, (unsigned)st, err_json);
        }
        free(err_json);
        cJSON *arr = cJSON_AddArrayToObject(out, "tokens");
        for (int i = 0; i < tmp.n_prompt; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(tmp.prompt[i]));
        cJSON_AddNumberToObject(out, "count", tmp.n_prompt);
        cJSON_AddNumberToObject(out, "max_model_len", s->sc->p.ctx);
        for (int i = 0; i < tmp.n_stops; i++) free(tmp.stops[i]);
        free(tmp.prompt);
    }
    char *text = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    return reply_json(s, c, ep, 200, text);
}

/* ---- generation over HTTP ------------------------------------------------------------ */

typedef struct {
    srv *s;
    srv_req *q;
    char *pending; /* an SSE chunk not yet handed to the socket */
    size_t off, len;
    int ended;
} stream_ctx;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_ctx *sc = cls;
    srv *s = sc->s;
    srv_req *q = sc->q;
    (void)pos;
    while (sc->off >= sc->len) {
        free(sc->pending);
        sc->pending = NULL;
        sc->off = sc->len = 0;
        if (sc->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&s->mu);
        while (!q->done && q->safe <= q->sent && !(q->chat && !q->sent_role) && !s->stopping)
            pthread_cond_wait(&q->cv, &s->mu);
        int final = q->done || s->stopping;
        if (!q->done && s->stopping) q->why = SCHED_STOP_ERROR;
        sc->pending = openai_stream_chunk(q, &s->oc, final);
        pthread_mutex_unlock(&s->mu);
        sc->len = strlen(sc->pending);
        sc->ended = final;
    }
    size_t n = TM_MIN(max, sc->len - sc->off);
    memcpy(buf, sc->pending + sc->off, n);
    sc->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    stream_ctx *sc = cls;
    pthread_mutex_lock(&sc->s->mu);
    if (!sc->q->done) sc->q->cancelled = 1; /* the client went away */
    pthread_cond_broadcast(&sc->s->wake);
    req_unref(sc->s, sc->q);
    pthread_mutex_unlock(&sc->s->mu);
    free(sc->pending);
    free(sc);
}

static enum MHD_Result post_generate(srv *s, struct MHD_Connection *c, const cJSON *body, int chat)
{
    int ep = chat ? EP_CHAT : EP_COMPLETIONS;
    srv_req *q = tm_calloc(1, sizeof *q);
    pthread_cond_init(&q->cv, NULL);
    q->refs = 1;
    q->chat = chat;
    char *err_json = NULL;
    int st = openai_parse_request(body, chat, &s->oc, q, &err_json);
    if (st) {
        pthread_mutex_lock(&s->mu);
        req_unref(s, q);
        pthread_mutex_unlock(&s->mu);
        return reply_json(s, c, ep, (unsigned)st, err_json);
    }
    static atomic_ulong counter;
    snprintf(q->id, sizeof q->id, "%s-%lx%06lx", chat ? "chatcmpl" : "cmpl", (unsigned long)time(NULL),
             (unsigned long)atomic_fetch_add(&counter, 1));
    q->created = (long)time(NULL);
    q->stop_ids[0] = q->stop_ids[1] = q->stop_ids[2] = -1;
    if (s->e.tok) {
        q->stop_ids[0] = tok_token_id(s->e.tok, "<|im_end|>");
        q->stop_ids[1] = tok_token_id(s->e.tok, "<|endoftext|>");
        q->scap = tok_stream_cap(s->e.tok);
        q->sbuf = tm_malloc(q->scap);
        tok_stream_init(&q->ts, s->e.tok);
    }
    q->t_arrive = now_s();

    pthread_mutex_lock(&s->mu);
    if (s->draining || s->stopping) {
        req_unref(s, q);
        pthread_mutex_unlock(&s->mu);
        return reply_error(s, c, ep, 503, "server_error", NULL, "the server is stopping");
    }
    int taken = s->n_in + s->n_live; /* running and waiting */
    if (taken >= s->sc->p.max_seqs + s->sc->p.max_queue) {
        req_unref(s, q);
        pthread_mutex_unlock(&s->mu);
        char msg[200];
        snprintf(msg, sizeof msg,
                 "the server is at capacity: %d requests running or waiting (--max-seqs %d, --max-queue %d)", taken,
                 s->sc->p.max_seqs, s->sc->p.max_queue);
        return reply_error(s, c, ep, 429, "rate_limit_error", NULL, msg);
    }
    q->refs = 2; /* this connection and the serving loop */
    if (s->in_tail) s->in_tail->next = q;
    else s->in_head = q;
    s->in_tail = q;
    s->n_in++;
    pthread_cond_broadcast(&s->wake);

    if (q->stream) {
        pthread_mutex_unlock(&s->mu);
        stream_ctx *sc = tm_calloc(1, sizeof *sc);
        sc->s = s;
        sc->q = q;
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, sc, stream_free);
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        enum MHD_Result ok = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        pthread_mutex_lock(&s->mu);
        s->requests[ep][0]++;
        pthread_mutex_unlock(&s->mu);
        return ok;
    }
    while (!q->done && !s->stopping) pthread_cond_wait(&q->cv, &s->mu);
    int failed = q->failed || !q->done;
    char *out = failed ? NULL : openai_response(q, &s->oc);
    req_unref(s, q);
    pthread_mutex_unlock(&s->mu);
    if (failed) return reply_error(s, c, ep, 500, "server_error", NULL, "generation failed or the server is stopping");
    return reply_json(s, c, ep, 200, out);
}

static int endpoint_of(const char *url, const char *method, int *is_post)
{
    *is_post = !strcmp(method, "POST");
    if (!strcmp(url, "/v1/completions")) return EP_COMPLETIONS;
    if (!strcmp(url, "/v1/chat/completions")) return EP_CHAT;
    if (!strcmp(url, "/tokenize")) return EP_TOKENIZE;
    if (!strcmp(url, "/detokenize")) return EP_DETOKENIZE;
    if (!strcmp(url, "/v1/models")) return EP_MODELS;
    if (!strcmp(url, "/health")) return EP_HEALTH;
    if (!strcmp(url, "/metrics")) return EP_METRICS;
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) return EP_PAGE;
    return EP_OTHER;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    srv *s = cls;
    (void)version;
    conn *cn = *con_cls;
    if (!cn) {
        cn = tm_calloc(1, sizeof *cn);
        *con_cls = cn;
        pthread_mutex_lock(&s->mu);
        s->n_open++;
        pthread_mutex_unlock(&s->mu);
        return MHD_YES;
    }
    if (*upload_size) {
        if (cn->len + *upload_size > s->p.max_body) {
            cn->too_big = 1;
        } else {
            cn->body = tm_realloc(cn->body, cn->len + *upload_size + 1);
            memcpy(cn->body + cn->len, upload, *upload_size);
            cn->len += *upload_size;
            cn->body[cn->len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    int is_post;
    int ep = endpoint_of(url, method, &is_post);
    if (!strcmp(method, "OPTIONS")) {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", "Content-Type, Authorization");
        enum MHD_Result ok = MHD_queue_response(c, 204, r);
        MHD_destroy_response(r);
        return ok;
    }
    if (ep == EP_OTHER) {
        char msg[300];
        snprintf(msg, sizeof msg, "no endpoint %.200s %.64s", method, url);
        return reply_error(s, c, ep, 404, "not_found_error", NULL, msg);
    }
    int wants_post = ep == EP_COMPLETIONS || ep == EP_CHAT || ep == EP_TOKENIZE || ep == EP_DETOKENIZE;
    if (wants_post != is_post || (!is_post && strcmp(method, "GET") && strcmp(method, "HEAD"))) {
        char msg[200];
        snprintf(msg, sizeof msg, "%.64s takes %s, not %.32s", url, wants_post ? "POST" : "GET", method);
        return reply_error(s, c, ep, 405, "invalid_request_error", NULL, msg);
    }
    switch (ep) {
    case EP_HEALTH: return reply_json(s, c, ep, 200, strdup("{\"status\":\"ok\"}"));
    case EP_MODELS: return get_models(s, c);
    case EP_METRICS: return get_metrics(s, c);
    case EP_PAGE: return reply(s, c, ep, 200, "text/html; charset=utf-8", strdup(serve_page_html));
    default: break;
    }
    if (cn->too_big) {
        char msg[120];
        snprintf(msg, sizeof msg, "the request body is larger than %zu bytes (--max-body)", s->p.max_body);
        return reply_error(s, c, ep, 413, "invalid_request_error", NULL, msg);
    }
    cJSON *body = cn->body ? cJSON_ParseWithLength(cn->body, cn->len) : NULL;
    if (!body) return reply_error(s, c, ep, 400, "invalid_request_error", NULL, "the body is not valid JSON");
    enum MHD_Result ok = ep == EP_TOKENIZE || ep == EP_DETOKENIZE ? post_tokenize(s, c, body, ep == EP_DETOKENIZE)
                                                                   : post_generate(s, c, body, ep == EP_CHAT);
    cJSON_Delete(body);
    return ok;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    srv *s = cls;
    conn *cn = *con_cls;
    (void)c, (void)toe;
    if (!cn) return;
    pthread_mutex_lock(&s->mu);
    s->n_open--;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    free(cn->body);
    free(cn);
    *con_cls = NULL;
}

/* ---- start and stop ---------------------------------------------------------------- */

tm_status serve_run(const serve_params *p, const serve_engine *e, tm_err *err)
{
    srv *s = tm_calloc(1, sizeof *s);
    s->p = *p;
    s->e = *e;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    s->sc = e->sc;
    s->oc = (openai_ctx){p->model_name, e->sc->p.ctx, e->m->cfg.vocab_size, e->tok, p->samp, TRUST_SELECT_ROUTER,
                         1.0f};
    if (e->trust) {
        s->oc.sel_mode = e->trust->o.mode;
        s->oc.sel_alpha = e->trust->o.alpha;
        s->trust_sel = trust_run_selector(e->trust);
    }
    s->sel = (tm_selector){serve_select, s};
    s->sc->sel = &s->sel;
    tm_status st = TM_OK;
    g_srv = s;

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)p->port);
    if (inet_pton(AF_INET, p->host, &addr.sin_addr) != 1) {
        st = tm_errf(err, TM_EINPUT, "--host %s: not an IPv4 address", p->host);
        goto out;
    }
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, (uint16_t)p->port,
                            NULL, NULL, handle, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_CONNECTION_TIMEOUT, 600u,
                            MHD_OPTION_END);
    if (!s->d) {
        st = tm_errf(err, TM_EINPUT, "--host %s --port %d: cannot listen there (%s)", p->host, p->port,
                     strerror(errno));
        goto out;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    int port = info ? info->port : p->port;
    fprintf(stderr, "trustmoe serve: model %s on http://%s:%d/ (max %d sequences of %d tokens, queue %d; pid %d)\n",
            p->model_name, p->host, port, s->sc->p.max_seqs, s->sc->p.ctx, s->sc->p.max_queue, (int)getpid());
    if (p->port_file) {
        FILE *f = fopen(p->port_file, "w");
        if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0) {
            st = tm_errf(err, TM_EINPUT, "--port-file %s: cannot write: %s", p->port_file, strerror(errno));
            goto out;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    st = serve_loop(s, err);
    /* the last answers and stream ends go out before the sockets close */
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < 50 && s->n_open > 0; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s->wake, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    fprintf(stderr, "trustmoe serve: stopping (%s)\n", st == TM_OK ? "signal" : err->msg);
out:
    if (s->d) MHD_stop_daemon(s->d); /* joins the connection threads; they see `stopping` */
    g_srv = NULL;
    while (s->in_head) {
        srv_req *q = s->in_head;
        s->in_head = q->next;
        req_unref(s, q);
    }
    free(s->metrics_text);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    free(s);
    return st;
}
