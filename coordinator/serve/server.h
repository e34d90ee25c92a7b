/* server.h: `trustmoe serve`, an OpenAI-compatible HTTP server over the
 * scheduler.
 *
 * coordinator/serve/ owns HTTP: libmicrohttpd for the sockets, cJSON for the
 * bodies.  It calls core/, engine/, coordinator/text/ (tokenize, detokenize,
 * chat template) and coordinator/sched/ (the generation loop); the command
 * (coordinator/cli/cmd_serve.c) gives it a loaded model and expert backend.
 *
 * Threads.  libmicrohttpd runs one thread per connection; those threads
 * parse and check requests, tokenize, and wait.  Everything that touches the
 * model runs on the thread that called serve_run (rank 0's MPI thread): it
 * moves new requests into the scheduler between steps, runs the steps, and
 * hands each token to its request (text, stop strings, logprobs) under the
 * server's mutex.  A connection thread never calls MPI or the model.
 *
 *   POST /v1/completions, /v1/chat/completions   OpenAI shapes; "stream": true
 *                                                 sends Server-Sent Events
 *   GET  /v1/models, /health, /metrics (Prometheus text), / (chat page)
 *   POST /tokenize, /detokenize
 *
 * Bad requests get 4xx with an OpenAI-style body
 *   {"error": {"message": ..., "type": "invalid_request_error", "param": FIELD, "code": ...}}
 * and the server keeps serving.  Past max_seqs running and max_queue
 * waiting, a request gets 429.  SIGINT or SIGTERM: new requests get 503,
 * running ones finish within `grace` seconds or are cancelled, then
 * serve_run returns.
 */
#ifndef TM_SERVER_H
#define TM_SERVER_H

#include <stddef.h>

#include "common.h"
#include "model.h"
#include "scheduler.h"
#include "sampler.h"
#include "tokenizer.h"
#include "trust_run.h"

typedef struct {
    const char *host;      /* address to bind (default 127.0.0.1) */
    int port;              /* default 8080; 0 picks a free port (printed) */
    size_t max_body;       /* request body cap in bytes (413 above) */
    const char *model_name; /* the id /v1/models lists and requests must name */
    sampler_params samp;   /* defaults for fields a request leaves out */
    const char *port_file; /* optional: the bound port is written here once listening */
    double grace;          /* seconds running requests may take to finish after SIGTERM */
    double batch_wait;     /* seconds an idle server waits for more of a burst before its first
                              step, while requests keep arriving at most this far apart (0: none) */
} serve_params;

serve_params serve_default_params(void);

typedef struct {
    const tm_model *m;
    sched *sc;                  /* the generation loop, with its backend and selection; its
                                      max_seqs, ctx and max_queue are the server's limits */
    moe_backend *be;
    const tok_tokenizer *tok;      /* NULL: prompts must be token ids */
    /* The server's trust selection (its database, policy and context), which
     * a request's "trustmoe" object can switch per request; NULL: every
     * request takes the model's own routing. */
    trust_run *trust;
    /* Appends Prometheus lines about the expert exchange to buf[cap]
     * (per-layer time, per-expert load); returns the bytes written.  Called
     * on the serving thread. */
    size_t (*exchange_metrics)(moe_backend *be, char *buf, size_t cap);
} serve_engine;

/* Serves until SIGINT or SIGTERM.  TM_EINPUT when the address cannot be
 * bound (err names it), TM_EFAIL when a forward pass failed. */
tm_status serve_run(const serve_params *p, const serve_engine *e, tm_err *err);

#endif
