/* openai.h: OpenAI request and response shapes (openai.c) over one
 * generation request of the server (srv_req, which server.c moves through
 * the scheduler).  Private to coordinator/serve/. */
#ifndef TM_OPENAI_H
#define TM_OPENAI_H

#include <pthread.h>
#include <stdint.h>

#include <cJSON.h>

#include "sampler.h"
#include "scheduler.h"
#include "tokenizer.h"
#include "trust_select.h"

#define SRV_MAX_STOPS 8
_Static_assert(SRV_MAX_STOPS <= SAMPLER_MAX_STOP, "a request's stops fit the sampler's");
#define SRV_MAX_LOGPROBS 20

/* A generated token as the response reports it. */
typedef struct {
    int32_t id;
    size_t text_end; /* bytes of the response text through this token */
    float logprob;
    int n_top;
    int32_t top_id[SRV_MAX_LOGPROBS];
    float top_lp[SRV_MAX_LOGPROBS];
} srv_tok;

typedef struct srv_req {
    /* what was asked (set by the connection thread before queueing) */
    int chat, stream, include_usage;
    int n_logprobs;        /* completions "logprobs": -1 none, else top entries per token */
    char id[48];
    long created;
    int32_t *prompt;       /* [n_prompt] */
    int n_prompt;
    sched_request r;
    int32_t stop_ids[3];
    trust_select_mode sel_mode; /* "trustmoe": {"select": ..., "alpha": ...} over the server's */
    float sel_alpha;
    char *stops[SRV_MAX_STOPS];
    int n_stops;

    /* what came out (written on the serving thread under the server mutex) */
    char *text;            /* [len] generated text, stop string and stop ids excluded */
    size_t len, cap;
    size_t safe;           /* text[0..safe) can no longer be cut by a stop string */
    srv_tok *toks;         /* [n_toks] */
    int n_toks, cap_toks;
    int done, failed;
    sched_stop why;
    tok_stream ts;         /* streaming detokenizer (with a tokenizer) */
    char *sbuf;            /* [scap] its output */
    size_t scap;
    double t_arrive, t_first, t_prev;

    /* the connection thread's progress through the output (stream) */
    size_t sent;
    int sent_toks, sent_role, sent_final;

    int refs;              /* connection and scheduler each hold one */
    int cancelled;         /* the client went away */
    pthread_cond_t cv;     /* signalled on every change of the output */
    struct srv_req *next;  /* inbound list */
} srv_req;

/* What the shapes need of the server. */
typedef struct {
    const char *model_name;   /* the id requests must name */
    int ctx;                  /* tokens per sequence */
    int vocab;                /* the model's vocabulary */
    const tok_tokenizer *tok; /* NULL: prompts are token ids */
    sampler_params samp;      /* defaults for fields a request leaves out */
    trust_select_mode sel_mode; /* the server's expert selection */
    float sel_alpha;
} openai_ctx;

/* Parses a completions (chat = 0) or chat completions body into q: prompt
 * tokens, sampling, stops, stream and logprobs.  On a bad request returns
 * the HTTP status (400/404) and fills err_json with an OpenAI error body; 0
 * when q is ready to queue. */
int openai_parse_request(const cJSON *body, int chat, const openai_ctx *e, srv_req *q,
                         char **err_json);
/* The whole non-streaming response for a finished q. */
char *openai_response(const srv_req *q, const openai_ctx *e);
/* One SSE event ("data: {...}\n\n") with q's output from the last event on;
 * final != 0 adds finish_reason (and the usage chunk when asked). */
char *openai_stream_chunk(srv_req *q, const openai_ctx *e, int final);
/* {"error": {"message", "type", "param", "code"}} */
char *openai_error(const char *type, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *openai_finish_reason(sched_stop why);

#endif
