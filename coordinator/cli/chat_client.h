/* chat_client.h: `trustmoe chat --url URL`: the replies of a conversation
 * asked of a running `trustmoe serve`, or any OpenAI-compatible server,
 * over HTTP (libcurl, cJSON).
 *
 * BASE is URL without a trailing "/" or "/v1".
 *   start-up  GET BASE/v1/models; the first model's id is the "model" of every
 *             request, and its max_model_len, where the server gives one,
 *             bounds -n.  No answer, or no {"data": [{"id": ...}]}: an error
 *             naming the URL.
 *   a turn    POST BASE/v1/chat/completions {"model", "messages": the whole
 *             conversation, "stream": true, "max_tokens": -n, and of
 *             temperature, top_p, top_k, min_p, presence_penalty,
 *             frequency_penalty, seed, stop those given on the command line}.
 *             The reply is Server-Sent Events: "data: {chunk}" lines whose
 *             choices[0].delta.content is the next piece of text, then
 *             "data: [DONE]".
 *   errors    a 4xx with an OpenAI error body ({"error": {"message", "param"}})
 *             refuses one request and the chat goes on; one whose param is
 *             max_tokens says the conversation does not fit the context (the
 *             caller drops its oldest turn and asks again, as the local chat
 *             does).  No connection, a 5xx, or a stream that breaks off before
 *             [DONE] ends the chat.
 *   Ctrl-C    the stop flag, read by libcurl's progress callback, aborts the
 *             transfer; the text so far is the reply.
 */
#ifndef TM_CHAT_CLIENT_H
#define TM_CHAT_CLIENT_H

#include <signal.h>

#include "cli.h"
#include "common.h"

/* How one turn ended; the local engine's turns (cmd_chat.c) end the same ways. */
typedef enum {
    CHAT_TURN_OK,      /* the reply, whole or stopped by Ctrl-C */
    CHAT_TURN_FULL,    /* the conversation and -n do not fit the context */
    CHAT_TURN_REFUSED, /* this message was refused (err says why); the chat goes on */
    CHAT_TURN_FAILED,  /* the server is gone or broke off the reply; the chat ends */
} chat_turn_end;

/* Receives each piece of a reply's text as it arrives. */
typedef void (*chat_text_fn)(void *ctx, const char *s, size_t n);

typedef struct {
    const cli_opts *o;        /* --url, -n, the sampling flags given */
    char *base;               /* URL without a trailing "/" or "/v1" */
    char *model;              /* the first id of GET /v1/models */
    long max_model_len;       /* its context in tokens; 0: not given */
    void *curl;               /* CURL *, one handle for every request */
    char curl_err[256];       /* CURLOPT_ERRORBUFFER (CURL_ERROR_SIZE) */
    /* one response */
    long status;              /* HTTP status, read at the first body bytes */
    int streaming;            /* a 200 to this request is an event stream */
    char *body;               /* [body_len] a non-streamed body (the model list, an error) */
    size_t body_len, body_cap;
    char *line;               /* [line_len] the event-stream line being received */
    size_t line_len, line_cap;
    int done;                 /* data: [DONE] was seen */
    char *stream_err;         /* an error the stream itself carried, or why it made no sense */
    chat_text_fn on_text;
    void *text_ctx;
    volatile sig_atomic_t *stop;
} chat_client;

/* Checks the server behind o->url (GET /v1/models) and picks its model.
 * TM_EINPUT: a URL that is not http(s), or -n out of the server's context;
 * TM_EFAIL: no server there, or not an OpenAI-compatible one.
 * chat_client_free is safe after a failure. */
tm_status chat_client_init(chat_client *c, const cli_opts *o, tm_err *err);
/* One reply to the conversation (role[i], text[i]), i < n, streamed to
 * on_text.  turn_no moves a given seed on per turn, as the local chat does. */
chat_turn_end chat_client_reply(chat_client *c, const char *const *role, const char *const *text, int n,
                                uint64_t turn_no, chat_text_fn on_text, void *ctx, volatile sig_atomic_t *stop,
                                tm_err *err);
void chat_client_free(chat_client *c);

/* What the client makes of a server's bytes, without the network (the HTTP
 * calls above use them; tests/fuzz/fuzz_chat_client.c feeds them):
 *   chat_client_stream   event-stream bytes as they arrive, in any pieces:
 *                        content to on_text, [DONE] to done, an error or a
 *                        line that is not JSON to stream_err; 0: abort.
 *   chat_client_models   a GET /v1/models body: model and max_model_len.
 *   chat_client_refusal  a 4xx body: the server's message in err. */
int chat_client_stream(chat_client *c, const char *p, size_t n);
tm_status chat_client_models(chat_client *c, const char *body, size_t len, tm_err *err);
chat_turn_end chat_client_refusal(chat_client *c, const char *body, size_t len, tm_err *err);

#endif
