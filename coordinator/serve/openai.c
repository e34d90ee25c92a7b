/* openai.c: OpenAI request and response shapes for completions and chat
 * completions: field checks with the field named on error, prompts to
 * tokens, responses and Server-Sent Event chunks. */
#include "openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *openai_error(const char *type, const char *param, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    cJSON_AddNullToObject(e, "code");
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

const char *openai_finish_reason(sched_stop why)
{
    /* a sequence cut short by a failure or the server stopping: vLLM's "abort" */
    if (why == SCHED_STOP_ERROR) return "abort";
    return why == SCHED_STOP_LENGTH || why == SCHED_STOP_CONTEXT ? "length" : "stop";
}

/* ---- field checks ------------------------------------------------------------ */

typedef struct {
    char **err_json;
    int status;
} bad;

static int fail(bad *b, int status, const char *param, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(bad *b, int status, const char *param, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    *b->err_json = openai_error(status == 404 ? "not_found_error" : "invalid_request_error", param, "%s", msg);
    b->status = status;
    return status;
}

/* A number field in [lo, hi]; absent keeps *out.  Returns 0 or the status. */
static int get_number(const cJSON *body, const char *name, double lo, double hi, double *out, bad *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, name);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v)) return fail(b, 400, name, "'%s' must be a number", name);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return fail(b, 400, name, "'%s' must be between %g and %g, got %g", name, lo, hi, v->valuedouble);
    *out = v->valuedouble;
    return 0;
}

/* An integer field in [lo, hi]; absent keeps *out. */
static int get_int(const cJSON *body, const char *name, long lo, long hi, long *out, bad *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, name);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return fail(b, 400, name, "'%s' must be an integer", name);
    if (!(v->valuedouble >= (double)lo && v->valuedouble <= (double)hi))
        return fail(b, 400, name, "'%s' must be between %ld and %ld, got %.0f", name, lo, hi, v->valuedouble);
    *out = (long)v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *body, const char *name, int *out, bad *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, name);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return fail(b, 400, name, "'%s' must be true or false", name);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Text as tokens: UTF-8 is checked by the tokenizer, whose message names the
 * byte offset. */
static int encode(const openai_ctx *e, const char *param, const char *text, int32_t **ids, int *n, bad *b)
{
    if (!e->tok) return fail(b, 400, param, "this model has no tokenizer: give the prompt as an array of token ids");
    size_t cnt = 0;
    tm_err err;
    if (tok_encode(e->tok, text, strlen(text), ids, &cnt, &err) != TM_OK)
        return fail(b, 400, param, "%s: %s", param, err.msg);
    *n = (int)cnt;
    return 0;
}

static int completion_prompt(const cJSON *body, const openai_ctx *e, srv_req *q, bad *b)
{
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(body, "prompt");
    if (!pr) return fail(b, 400, "prompt", "'prompt' is required");
    if (cJSON_IsArray(pr) && cJSON_GetArraySize(pr) == 1 && cJSON_IsString(cJSON_GetArrayItem(pr, 0)))
        pr = cJSON_GetArrayItem(pr, 0);
    if (cJSON_IsString(pr)) return encode(e, "prompt", pr->valuestring, &q->prompt, &q->n_prompt, b);
    if (!cJSON_IsArray(pr))
        return fail(b, 400, "prompt", "'prompt' must be a string or an array of token ids");
    int n = cJSON_GetArraySize(pr), V = e->vocab, i = 0;
    q->prompt = tm_malloc(sizeof(int32_t) * (size_t)TM_MAX(n, 1));
    const cJSON *v;
    cJSON_ArrayForEach(v, pr)
    {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
            v->valuedouble >= V)
            return fail(b, 400, "prompt", "'prompt'[%d] is not a token id in 0..%d", i, V - 1);
        q->prompt[i++] = (int32_t)v->valuedouble;
    }
    q->n_prompt = n;
    return 0;
}

/* messages -> the Qwen3 chat template, ending in the assistant's turn. */
static int chat_prompt(const cJSON *body, const openai_ctx *e, srv_req *q, bad *b)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
    if (!cJSON_IsArray(msgs)) return fail(b, 400, "messages", "'messages' must be an array");
    int n = cJSON_GetArraySize(msgs);
    if (n == 0) return fail(b, 400, "messages", "'messages' is empty");
    const char **roles = tm_calloc((size_t)n, sizeof *roles), **texts = tm_calloc((size_t)n, sizeof *texts);
    char **owned = tm_calloc((size_t)n, sizeof *owned);
    int rc = 0, i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        char param[48];
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!cJSON_IsString(role) || (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "user") &&
                                      strcmp(role->valuestring, "assistant"))) {
            rc = fail(b, 400, param, "'%s' must be \"system\", \"user\" or \"assistant\"", param);
            break;
        }
        snprintf(param, sizeof param, "messages[%d].content", i);
        if (cJSON_IsString(content)) {
            texts[i] = content->valuestring;
        } else if (cJSON_IsArray(content)) { /* [{"type": "text", "text": ...}, ...] */
            size_t len = 0;
            const cJSON *part;
            cJSON_ArrayForEach(part, content)
            {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (!cJSON_IsString(t)) break;
                len += strlen(t->valuestring);
            }
            if (part) {
                rc = fail(b, 400, param, "'%s' parts must be {\"type\": \"text\", \"text\": ...}", param);
                break;
            }
            owned[i] = tm_calloc(len + 1, 1);
            cJSON_ArrayForEach(part, content) strcat(owned[i], cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring);
            texts[i] = owned[i];
        } else {
            rc = fail(b, 400, param, "'%s' must be a string", param);
            break;
        }
        roles[i++] = role->valuestring;
    }
    if (!rc) {
        char *text = tok_chat_render(roles, texts, n);
        rc = encode(e, "messages", text, &q->prompt, &q->n_prompt, b);
        free(text);
    }
    for (int j = 0; j < n; j++) free(owned[j]);
    free(owned);
    free(roles);
    free(texts);
    return rc;
}

/* "stop": the strings are the request's (q->stops); the sampler params point
 * at them, so the server cuts the text with the sampler's search. */
static int get_stops(const cJSON *body, srv_req *q, bad *b)
{
    q->r.samp.n_stop = 0;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(body, "stop");
    if (!st || cJSON_IsNull(st)) return 0;
    if (cJSON_IsString(st)) {
        if (!st->valuestring[0]) return fail(b, 400, "stop", "'stop' strings must not be empty");
        q->stops[q->n_stops++] = strdup(st->valuestring);
    } else if (cJSON_IsArray(st)) {
        if (cJSON_GetArraySize(st) > SRV_MAX_STOPS)
            return fail(b, 400, "stop", "'stop' takes at most %d strings", SRV_MAX_STOPS);
        const cJSON *v;
        cJSON_ArrayForEach(v, st)
        {
            if (!cJSON_IsString(v) || !v->valuestring[0])
                return fail(b, 400, "stop", "'stop' must be a string or an array of non-empty strings");
            q->stops[q->n_stops++] = strdup(v->valuestring);
        }
    } else {
        return fail(b, 400, "stop", "'stop' must be a string or an array of strings");
    }
    for (int i = 0; i < q->n_stops; i++) q->r.samp.stop[i] = q->stops[i];
    q->r.samp.n_stop = q->n_stops;
    return 0;
}

/* Sampling fields over the server's defaults. */
static int get_sampling(const cJSON *body, const openai_ctx *e, srv_req *q, bad *b)
{
    sampler_params sp = e->samp;
    double temp = sp.temperature, top_p = sp.top_p, min_p = 0;
    long top_k = sp.top_k, seed = -1;
    int rc;
    if ((rc = get_number(body, "temperature", 0, 2, &temp, b))) return rc;
    if ((rc = get_number(body, "top_p", 1e-6, 1, &top_p, b))) return rc;
    if ((rc = get_int(body, "top_k", -1, 1 << 30, &top_k, b))) return rc;
    if ((rc = get_int(body, "seed", 0, INT64_MAX / 2, &seed, b))) return rc;
    double presence = sp.presence_penalty, frequency = sp.frequency_penalty;
    min_p = sp.min_p;
    if ((rc = get_number(body, "min_p", 0, 1, &min_p, b))) return rc;
    if ((rc = get_number(body, "presence_penalty", -2, 2, &presence, b))) return rc;
    if ((rc = get_number(body, "frequency_penalty", -2, 2, &frequency, b))) return rc;
    sp.min_p = (float)min_p;
    sp.presence_penalty = (float)presence;
    sp.frequency_penalty = (float)frequency;
    sp.temperature = (float)temp;
    sp.top_p = (float)top_p;
    sp.top_k = top_k < 0 ? 0 : (int)top_k;
    sp.seed = seed >= 0 ? (uint64_t)seed : SAMPLER_SEED_RANDOM; /* drawn when the sequence starts */
    q->r.samp = sp;
    return 0;
}

/* "trustmoe": {"select": "router"|"blend"|"trust-first", "alpha": A}: this
 * request's expert selection over the server's. */
static int get_selection(const cJSON *body, const openai_ctx *e, srv_req *q, bad *b)
{
    q->sel_mode = e->sel_mode;
    q->sel_alpha = e->sel_alpha;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(body, "trustmoe");
    if (!t || cJSON_IsNull(t)) return 0;
    if (!cJSON_IsObject(t)) return fail(b, 400, "trustmoe", "'trustmoe' must be an object");
    const cJSON *sel = cJSON_GetObjectItemCaseSensitive(t, "select");
    if (sel && !cJSON_IsNull(sel)) {
        tm_err err;
        if (!cJSON_IsString(sel) || trust_select_mode_parse(sel->valuestring, &q->sel_mode, &err) != TM_OK)
            return fail(b, 400, "trustmoe.select", "'trustmoe.select' must be \"router\", \"blend\" or \"trust-first\"");
    }
    double alpha = q->sel_alpha;
    int rc = get_number(t, "alpha", 0, 1, &alpha, b);
    if (rc) {
        free(*b->err_json);
        return fail(b, 400, "trustmoe.alpha", "'trustmoe.alpha' must be a number in [0, 1]");
    }
    q->sel_alpha = (float)alpha;
    return 0;
}

int openai_parse_request(const cJSON *body, int chat, const openai_ctx *e, srv_req *q,
                         char **err_json)
{
    bad b = {err_json, 0};
    if (!cJSON_IsObject(body)) return fail(&b, 400, NULL, "the body must be a JSON object");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(body, "model");
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model)) return fail(&b, 400, "model", "'model' must be a string");
        if (strcmp(model->valuestring, e->model_name))
            return fail(&b, 404, "model", "the model '%s' does not exist; this server serves '%s'",
                        model->valuestring, e->model_name);
    }
    long n = 1;
    int rc;
    if ((rc = get_int(body, "n", 1, 1, &n, &b))) return rc;
    if ((rc = get_bool(body, "stream", &q->stream, &b))) return rc;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) return fail(&b, 400, "stream_options", "'stream_options' must be an object");
        if ((rc = get_bool(so, "include_usage", &q->include_usage, &b))) return rc;
    }
    q->n_logprobs = -1;
    if (!chat) {
        long lp = -1;
        if ((rc = get_int(body, "logprobs", 0, SRV_MAX_LOGPROBS, &lp, &b))) return rc;
        q->n_logprobs = (int)lp;
    }
    if ((rc = get_sampling(body, e, q, &b))) return rc;
    if ((rc = get_stops(body, q, &b))) return rc;
    if ((rc = get_selection(body, e, q, &b))) return rc;
    if ((rc = chat ? chat_prompt(body, e, q, &b) : completion_prompt(body, e, q, &b))) return rc;
    if (q->n_prompt < 1) return fail(&b, 400, chat ? "messages" : "prompt", "the prompt has no tokens");
    long max_tokens = e->ctx - q->n_prompt;
    const char *mt = cJSON_GetObjectItemCaseSensitive(body, "max_completion_tokens") ? "max_completion_tokens"
                                                                                      : "max_tokens";
    if ((rc = get_int(body, mt, 1, 1 << 30, &max_tokens, &b))) return rc;
    if (q->n_prompt + max_tokens > e->ctx)
        return fail(&b, 400, mt,
                    "the prompt (%d tokens) plus '%s' (%ld) exceed the context of %d tokens (--ctx-size)",
                    q->n_prompt, mt, max_tokens, e->ctx);
    q->r.max_tokens = (int)max_tokens;
    return 0;
}

/* ---- responses -------------------------------------------------------------------- */

static void add_usage(cJSON *j, const srv_req *q)
{
    cJSON *u = cJSON_AddObjectToObject(j, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", q->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", q->n_toks);
    cJSON_AddNumberToObject(u, "total_tokens", q->n_prompt + q->n_toks);
}

static cJSON *token_text(const openai_ctx *e, int32_t id)
{
    size_t len = 0;
    const char *t = e->tok ? tok_token_bytes(e->tok, id, &len) : NULL;
    if (!t) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", id);
        return cJSON_CreateString(buf);
    }
    char *s = tm_malloc(len + 1);
    memcpy(s, t, len);
    s[len] = 0;
    cJSON *j = cJSON_CreateString(s);
    free(s);
    return j;
}

/* The legacy completions logprobs object over tokens [t0, t1). */
static cJSON *logprobs_json(const srv_req *q, const openai_ctx *e, int t0, int t1)
{
    cJSON *lp = cJSON_CreateObject();
    cJSON *toks = cJSON_AddArrayToObject(lp, "tokens"), *lps = cJSON_AddArrayToObject(lp, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(lp, "top_logprobs"), *offs = cJSON_AddArrayToObject(lp, "text_offset");
    for (int i = t0; i < t1; i++) {
        const srv_tok *t = &q->toks[i];
        cJSON_AddItemToArray(toks, token_text(e, t->id));
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(t->logprob));
        cJSON *top = cJSON_CreateObject();
        for (int k = 0; k < t->n_top; k++) {
            cJSON *name = token_text(e, t->top_id[k]);
            cJSON_AddNumberToObject(top, name->valuestring, t->top_lp[k]);
            cJSON_Delete(name);
        }
        cJSON_AddItemToArray(tops, top);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber(i == 0 ? 0 : (double)q->toks[i - 1].text_end));
    }
    return lp;
}

static cJSON *response_head(const srv_req *q, const openai_ctx *e, const char *object)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", q->id);
    cJSON_AddStringToObject(j, "object", object);
    cJSON_AddNumberToObject(j, "created", (double)q->created);
    cJSON_AddStringToObject(j, "model", e->model_name);
    return j;
}

static cJSON *text_of(const char *s, size_t len)
{
    char *t = tm_malloc(len + 1);
    memcpy(t, s, len);
    t[len] = 0;
    cJSON *j = cJSON_CreateString(t);
    free(t);
    return j;
}

char *openai_response(const srv_req *q, const openai_ctx *e)
{
    cJSON *j = response_head(q, e, q->chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(j, "choices"), *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    if (q->chat) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddItemToObject(m, "content", text_of(q->text, q->len));
        cJSON_AddNullToObject(c, "logprobs");
    } else {
        cJSON_AddItemToObject(c, "text", text_of(q->text, q->len));
        if (q->n_logprobs >= 0) cJSON_AddItemToObject(c, "logprobs", logprobs_json(q, e, 0, q->n_toks));
        else cJSON_AddNullToObject(c, "logprobs");
    }
    cJSON_AddStringToObject(c, "finish_reason", openai_finish_reason(q->why));
    cJSON_AddItemToArray(choices, c);
    add_usage(j, q);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static void sse_append(char **out, size_t *len, cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    size_t n = strlen(s);
    *out = tm_realloc(*out, *len + n + 9);
    *len += (size_t)sprintf(*out + *len, "data: %s\n\n", s);
    free(s);
}

char *openai_stream_chunk(srv_req *q, const openai_ctx *e, int final)
{
    size_t upto = final ? q->len : q->safe;
    int t1 = q->sent_toks;
    while (t1 < q->n_toks && q->toks[t1].text_end <= upto) t1++;
    if (final) t1 = q->n_toks;
    char *out = NULL;
    size_t len = 0;
    const char *object = q->chat ? "chat.completion.chunk" : "text_completion";
    if (q->chat && !q->sent_role) {
        cJSON *j = response_head(q, e, object), *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "index", 0);
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", "");
        cJSON_AddNullToObject(c, "finish_reason");
        cJSON_AddItemToArray(cJSON_AddArrayToObject(j, "choices"), c);
        sse_append(&out, &len, j);
        cJSON_Delete(j);
        q->sent_role = 1;
    }
    if (upto > q->sent || (final && !q->sent_final)) {
        cJSON *j = response_head(q, e, object), *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "index", 0);
        cJSON *delta = text_of(q->text + q->sent, upto - q->sent);
        if (q->chat) {
            cJSON *d = cJSON_AddObjectToObject(c, "delta");
            if (upto > q->sent) cJSON_AddItemToObject(d, "content", delta);
            else cJSON_Delete(delta);
        } else {
            cJSON_AddItemToObject(c, "text", delta);
            if (q->n_logprobs >= 0) cJSON_AddItemToObject(c, "logprobs", logprobs_json(q, e, q->sent_toks, t1));
            else cJSON_AddNullToObject(c, "logprobs");
        }
        if (final) cJSON_AddStringToObject(c, "finish_reason", openai_finish_reason(q->why));
        else cJSON_AddNullToObject(c, "finish_reason");
        cJSON_AddItemToArray(cJSON_AddArrayToObject(j, "choices"), c);
        sse_append(&out, &len, j);
        cJSON_Delete(j);
        q->sent = upto;
        q->sent_toks = t1;
    }
    if (final && !q->sent_final) {
        if (q->include_usage) {
            cJSON *j = response_head(q, e, object);
            cJSON_AddArrayToObject(j, "choices");
            add_usage(j, q);
            sse_append(&out, &len, j);
            cJSON_Delete(j);
        }
        out = tm_realloc(out, len + 16);
        len += (size_t)sprintf(out + len, "data: [DONE]\n\n");
        q->sent_final = 1;
    }
    if (!out) out = tm_calloc(1, 1);
    return out;
}
