/* chat_client.c: `trustmoe chat --url`: the model list, the chat request and
 * its event stream, and the error shapes (chat_client.h has the protocol). */
#include "chat_client.h"

#include <cJSON.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* a model list or an error body is small; one event-stream line carries one
 * piece of text */
#define CLIENT_MAX_BODY (1u << 20)
#define CLIENT_MAX_LINE (16u << 20)

/* ---- the URL ------------------------------------------------------------------ */

/* URL less any trailing "/" and "/v1", so the endpoints' paths can follow it. */
static tm_status base_url(const char *url, char **out, tm_err *err)
{
    if (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8))
        return tm_errf(err, TM_EINPUT, "--url %s: not an http:// or https:// URL", url);
    size_t n = strlen(url), scheme = strchr(url, ':') - url + 3;
    while (n > scheme && url[n - 1] == '/') n--;
    if (n > scheme + 3 && !strncmp(url + n - 3, "/v1", 3)) n -= 3;
    while (n > scheme && url[n - 1] == '/') n--;
    if (n == scheme) return tm_errf(err, TM_EINPUT, "--url %s: no host", url);
    *out = tm_malloc(n + 1);
    memcpy(*out, url, n);
    (*out)[n] = 0;
    return TM_OK;
}

/* ---- one request ------------------------------------------------------------------ */

static void stream_fail(chat_client *c, const char *msg)
{
    if (!c->stream_err) c->stream_err = tm_strdup(msg);
}

/* One line of the event stream: "data: {chunk}" or "data: [DONE]"; comments,
 * event names and blank lines carry nothing here.  An error the stream
 * carries is kept and the stream read on; 0 (a line that is not JSON) aborts
 * the transfer. */
static int sse_line(chat_client *c, char *s, size_t n)
{
    if (n && s[n - 1] == '\r') s[--n] = 0;
    if (n < 5 || memcmp(s, "data:", 5)) return 1;
    s += 5, n -= 5;
    while (n && *s == ' ') s++, n--;
    if (!strcmp(s, "[DONE]")) {
        c->done = 1;
        return 1;
    }
    cJSON *j = cJSON_ParseWithLength(s, n);
    if (!j) {
        char msg[160];
        snprintf(msg, sizeof msg, "the event stream holds a line that is not JSON: data: %.80s", s);
        stream_fail(c, msg);
        return 0;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (e) {
        const cJSON *m = cJSON_IsString(e) ? e : cJSON_GetObjectItemCaseSensitive(e, "message");
        stream_fail(c, cJSON_IsString(m) ? m->valuestring : "the event stream carried an error");
    }
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(ch, "delta");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(d, "content");
    if (cJSON_IsString(t) && t->valuestring[0]) c->on_text(c->text_ctx, t->valuestring, strlen(t->valuestring));
    cJSON_Delete(j);
    return 1;
}

static int grow(char **buf, size_t *cap, size_t need, size_t max)
{
    if (need > max) return 0;
    if (need > *cap) {
        *cap = TM_MAX(need, 2 * *cap);
        *buf = tm_realloc(*buf, *cap);
    }
    return 1;
}

/* libcurl's write callback: a 200 to a chat request is an event stream, read
 * line by line as it comes; anything else is kept whole. */
static size_t on_body(char *p, size_t size, size_t nmemb, void *ctx)
{
    chat_client *c = ctx;
    size_t n = size * nmemb;
    if (!c->status) curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &c->status);
    if (!c->streaming || c->status != 200) {
        if (!grow(&c->body, &c->body_cap, c->body_len + n + 1, CLIENT_MAX_BODY + 1)) {
            stream_fail(c, "the answer is larger than 1 MiB");
            return 0;
        }
        memcpy(c->body + c->body_len, p, n);
        c->body_len += n;
        c->body[c->body_len] = 0;
        return n;
    }
    return chat_client_stream(c, p, n) ? n : 0;
}

int chat_client_stream(chat_client *c, const char *p, size_t n)
{
    for (const char *q = p, *end = p + n; q < end;) {
        const char *nl = memchr(q, '\n', (size_t)(end - q));
        size_t k = (size_t)((nl ? nl : end) - q);
        if (!grow(&c->line, &c->line_cap, c->line_len + k + 1, CLIENT_MAX_LINE)) {
            stream_fail(c, "an event-stream line is longer than 16 MiB");
            return 0;
        }
        memcpy(c->line + c->line_len, q, k);
        c->line_len += k;
        c->line[c->line_len] = 0;
        if (!nl) break;
        if (!sse_line(c, c->line, c->line_len)) return 0;
        c->line_len = 0;
        q = nl + 1;
    }
    return 1;
}

/* libcurl's progress callback, called at least once a second: Ctrl-C aborts. */
static int on_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    chat_client *c = ctx;
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return c->stop && *c->stop;
}

/* GET (post NULL) or POST BASE+path; the status is c->status. */
static CURLcode perform(chat_client *c, const char *path, const char *post, struct curl_slist *headers)
{
    CURL *h = c->curl;
    size_t n = strlen(c->base) + strlen(path) + 1;
    char *url = tm_malloc(n);
    snprintf(url, n, "%s%s", c->base, path);
    c->status = 0;
    c->body_len = c->line_len = 0;
    c->done = 0;
    free(c->stream_err);
    c->stream_err = NULL;
    c->curl_err[0] = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    if (post) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(post));
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    /* a reply may take long (a long prefill, a queue); the model list may not */
    curl_easy_setopt(h, CURLOPT_TIMEOUT, post ? 0L : 30L);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
    free(url);
    return rc;
}

static const char *curl_msg(const chat_client *c, CURLcode rc)
{
    if (rc == CURLE_WRITE_ERROR && c->stream_err) return c->stream_err;
    return c->curl_err[0] ? c->curl_err : curl_easy_strerror(rc);
}

/* ---- start-up: the model list --------------------------------------------------------- */

static tm_status get_models(chat_client *c, tm_err *err)
{
    const char *url = c->o->url;
    CURLcode rc = perform(c, "/v1/models", NULL, NULL);
    if (rc != CURLE_OK) return tm_errf(err, TM_EFAIL, "--url %s: GET /v1/models: %s", url, curl_msg(c, rc));
    if (c->status != 200)
        return tm_errf(err, TM_EFAIL, "--url %s: GET /v1/models answered HTTP %ld: not an OpenAI-compatible server",
                       url, c->status);
    return chat_client_models(c, c->body ? c->body : "", c->body_len, err);
}

tm_status chat_client_models(chat_client *c, const char *body, size_t len_bytes, tm_err *err)
{
    const char *url = c->o->url;
    cJSON *j = cJSON_ParseWithLength(body, len_bytes);
    const cJSON *m0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "data"), 0);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(m0, "id");
    const cJSON *len = cJSON_GetObjectItemCaseSensitive(m0, "max_model_len");
    tm_status st = TM_OK;
    if (!cJSON_IsString(id) || !id->valuestring[0]) {
        st = tm_errf(err, TM_EFAIL,
                     "--url %s: GET /v1/models lists no model (no data[0].id): not an OpenAI-compatible server", url);
    } else {
        c->model = tm_strdup(id->valuestring);
        if (cJSON_IsNumber(len) && len->valuedouble >= 1 && len->valuedouble < 1e12)
            c->max_model_len = (long)len->valuedouble;
    }
    cJSON_Delete(j);
    return st;
}

tm_status chat_client_init(chat_client *c, const cli_opts *o, tm_err *err)
{
    memset(c, 0, sizeof *c);
    c->o = o;
    tm_status st = base_url(o->url, &c->base, err);
    if (st != TM_OK) return st;
    if (o->n_predict < 1) return tm_errf(err, TM_EINPUT, "-n %d: a reply needs at least 1 token", o->n_predict);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return tm_errf(err, TM_EFAIL, "libcurl did not start");
    if (!(c->curl = curl_easy_init())) {
        curl_global_cleanup();
        return tm_errf(err, TM_EFAIL, "libcurl did not start");
    }
    CURL *h = c->curl;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "trustmoe-chat");
    if ((st = get_models(c, err)) != TM_OK) return st;
    if (c->max_model_len && o->n_predict >= c->max_model_len)
        return tm_errf(err, TM_EINPUT, "-n %d: a reply needs 1 to %ld tokens (the server's context is %ld)",
                       o->n_predict, c->max_model_len - 1, c->max_model_len);
    if (o->verbosity >= 2)
        fprintf(stderr, "trustmoe chat: %s, model %s (context %ld)\n", c->base, c->model, c->max_model_len);
    return TM_OK;
}

void chat_client_free(chat_client *c)
{
    if (c->curl) {
        curl_easy_cleanup(c->curl);
        curl_global_cleanup();
    }
    free(c->base);
    free(c->model);
    free(c->body);
    free(c->line);
    free(c->stream_err);
    memset(c, 0, sizeof *c);
}

/* ---- a turn ----------------------------------------------------------------------------- */

/* A flag's float as the number it was written as (0.7, not 0.699999988). */
static double flag_number(float x)
{
    char b[32];
    snprintf(b, sizeof b, "%.7g", (double)x);
    return strtod(b, NULL);
}

/* The request: the conversation, -n, and the sampling flags the user gave;
 * what is left out is the server's default. */
static char *request_body(const chat_client *c, const char *const *role, const char *const *text, int n,
                          uint64_t turn_no)
{
    const cli_opts *o = c->o;
    const sampler_params *sp = &o->samp;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", c->model);
    cJSON *msgs = cJSON_AddArrayToObject(j, "messages");
    for (int i = 0; i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", role[i]);
        cJSON_AddStringToObject(m, "content", text[i]);
        cJSON_AddItemToArray(msgs, m);
    }
    cJSON_AddBoolToObject(j, "stream", 1);
    cJSON_AddNumberToObject(j, "max_tokens", o->n_predict);
    if (o->given & CLI_GIVEN_TEMP) cJSON_AddNumberToObject(j, "temperature", flag_number(sp->temperature));
    if (o->given & CLI_GIVEN_TOP_P) cJSON_AddNumberToObject(j, "top_p", flag_number(sp->top_p));
    /* --top-k 0 keeps all tokens: -1 in the OpenAI-compatible servers (vLLM's convention) */
    if (o->given & CLI_GIVEN_TOP_K) cJSON_AddNumberToObject(j, "top_k", sp->top_k ? sp->top_k : -1);
    if (o->given & CLI_GIVEN_MIN_P) cJSON_AddNumberToObject(j, "min_p", flag_number(sp->min_p));
    if (o->given & CLI_GIVEN_PRESENCE)
        cJSON_AddNumberToObject(j, "presence_penalty", flag_number(sp->presence_penalty));
    if (o->given & CLI_GIVEN_FREQUENCY)
        cJSON_AddNumberToObject(j, "frequency_penalty", flag_number(sp->frequency_penalty));
    if (sp->seed != SAMPLER_SEED_RANDOM) cJSON_AddNumberToObject(j, "seed", (double)(sp->seed + turn_no));
    if (sp->n_stop) {
        cJSON *st = cJSON_AddArrayToObject(j, "stop");
        for (int k = 0; k < sp->n_stop; k++) cJSON_AddItemToArray(st, cJSON_CreateString(sp->stop[k]));
    }
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* A 4xx: the server's own message when it sent an OpenAI error body. */
chat_turn_end chat_client_refusal(chat_client *c, const char *body, size_t len, tm_err *err)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    const cJSON *param = cJSON_GetObjectItemCaseSensitive(e, "param");
    chat_turn_end end = CHAT_TURN_REFUSED;
    if (cJSON_IsString(m)) {
        tm_errf(err, TM_EINPUT, "%s", m->valuestring);
        if (cJSON_IsString(param) &&
            (!strcmp(param->valuestring, "max_tokens") || !strcmp(param->valuestring, "max_completion_tokens")))
            end = CHAT_TURN_FULL;
    } else {
        tm_errf(err, TM_EINPUT, "--url %s: POST /v1/chat/completions answered HTTP %ld", c->o->url, c->status);
    }
    cJSON_Delete(j);
    return end;
}

chat_turn_end chat_client_reply(chat_client *c, const char *const *role, const char *const *text, int n,
                                uint64_t turn_no, chat_text_fn on_text, void *ctx, volatile sig_atomic_t *stop,
                                tm_err *err)
{
    const char *url = c->o->url;
    char *body = request_body(c, role, text, n, turn_no);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Accept: text/event-stream");
    c->on_text = on_text;
    c->text_ctx = ctx;
    c->stop = stop;
    c->streaming = 1;
    CURLcode rc = perform(c, "/v1/chat/completions", body, hdr);
    c->streaming = 0;
    c->stop = NULL;
    curl_slist_free_all(hdr);
    free(body);
    if (rc == CURLE_ABORTED_BY_CALLBACK) return CHAT_TURN_OK; /* Ctrl-C: the text so far is the reply */
    if (rc != CURLE_OK) {
        const char *what = c->status == 200 ? "the reply broke off" : "POST /v1/chat/completions";
        tm_errf(err, TM_EFAIL, "--url %s: %s: %s", url, what, curl_msg(c, rc));
        return CHAT_TURN_FAILED;
    }
    if (c->status >= 400 && c->status < 500) return chat_client_refusal(c, c->body ? c->body : "", c->body_len, err);
    if (c->status != 200) {
        cJSON *j = cJSON_ParseWithLength(c->body ? c->body : "", c->body_len);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), "message");
        tm_errf(err, TM_EFAIL, "--url %s: POST /v1/chat/completions answered HTTP %ld%s%s", url, c->status,
                cJSON_IsString(m) ? ": " : "", cJSON_IsString(m) ? m->valuestring : "");
        cJSON_Delete(j);
        return CHAT_TURN_FAILED;
    }
    if (c->stream_err) {
        tm_errf(err, TM_EINPUT, "%s", c->stream_err);
        return CHAT_TURN_REFUSED;
    }
    if (!c->done) {
        tm_errf(err, TM_EFAIL, "--url %s: the reply broke off before data: [DONE]", url);
        return CHAT_TURN_FAILED;
    }
    return CHAT_TURN_OK;
}
