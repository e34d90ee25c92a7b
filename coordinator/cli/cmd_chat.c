/* cmd_chat.c: `trustmoe chat`: a multi-turn conversation in the terminal.
 * Each turn asks for a reply to the whole history, streaming it: from the
 * model loaded here (-m: the Qwen3 chat template through the scheduler, one
 * sequence) or from a server (--url, chat_client.h).  The two differ only in
 * how one reply is produced; the history and the prompt loop are one.
 * Ctrl-C stops the reply being written (what was written stays in the
 * history); Ctrl-C at an empty prompt, EOF or /exit ends the chat. */
#include "commands.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_client.h"
#include "cli.h"
#include "dist.h"
#include "kernels.h"
#include "scheduler.h"
#include "tokenizer.h"

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

/* ---- the conversation ----------------------------------------------------------- */

typedef struct {
    char **role, **text; /* [n] the conversation */
    int n, cap;
} history;

static void history_add(history *h, const char *role, const char *text)
{
    if (h->n == h->cap) {
        h->cap = TM_MAX(8, 2 * h->cap);
        h->role = tm_realloc(h->role, sizeof(char *) * (size_t)h->cap);
        h->text = tm_realloc(h->text, sizeof(char *) * (size_t)h->cap);
    }
    h->role[h->n] = tm_strdup(role);
    h->text[h->n++] = tm_strdup(text);
}

static void history_drop(history *h, int i)
{
    free(h->role[i]);
    free(h->text[i]);
    memmove(h->role + i, h->role + i + 1, sizeof(char *) * (size_t)(h->n - i - 1));
    memmove(h->text + i, h->text + i + 1, sizeof(char *) * (size_t)(h->n - i - 1));
    h->n--;
}

/* The conversation less the `skip` oldest turns after the system turn, as
 * arrays of h->n or fewer; returns their count. */
static int history_view(const history *h, int skip, const char **role, const char **text)
{
    int sys = h->n && !strcmp(h->role[0], "system"), n = 0;
    for (int i = 0; i < h->n; i++) {
        if (i >= sys && i < sys + skip) continue;
        role[n] = h->role[i];
        text[n++] = h->text[i];
    }
    return n;
}

static void history_free(history *h)
{
    for (int i = 0; i < h->n; i++) {
        free(h->role[i]);
        free(h->text[i]);
    }
    free(h->role);
    free(h->text);
    memset(h, 0, sizeof *h);
}

/* The reply being written: text[0..shown) is on stdout, the rest held back
 * while it could begin a stop string. */
typedef struct {
    char *text;
    size_t len, cap, shown;
} reply;

static void reply_append(reply *r, const char *s, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        r->cap = TM_MAX(r->len + n + 1, 2 * r->cap);
        r->text = tm_realloc(r->text, r->cap);
    }
    memcpy(r->text + r->len, s, n);
    r->len += n;
    r->text[r->len] = 0;
}

static void reply_show(reply *r, size_t upto)
{
    if (upto <= r->shown) return;
    fwrite(r->text + r->shown, 1, upto - r->shown, stdout);
    fflush(stdout);
    r->shown = upto;
}

/* One reply to the conversation (role[i], text[i]), i < n, which ends with
 * the user's message, written into out as it comes; turn_no counts the
 * replies so far (a given seed moves on per turn).  The local engine's, or
 * chat_client_reply. */
typedef chat_turn_end (*reply_fn)(void *engine, const char *const *role, const char *const *text, int n,
                                  uint64_t turn_no, reply *out, tm_err *err);

/* Answers the newest message of h with fn.  While the conversation and -n do
 * not fit the context, the oldest turns after the system turn are left out
 * of the request, and out of h once a reply came; a message that does not
 * fit even alone leaves the earlier turns as they were. */
static chat_turn_end chat_turn(history *h, reply_fn fn, void *engine, uint64_t turn_no, reply *out, tm_err *err)
{
    const char **role = tm_malloc(sizeof(char *) * (size_t)h->n), **text = tm_malloc(sizeof(char *) * (size_t)h->n);
    int sys = !strcmp(h->role[0], "system"), skip = 0;
    chat_turn_end end;
    for (;;) {
        int n = history_view(h, skip, role, text);
        end = fn(engine, role, text, n, turn_no, out, err);
        if (end != CHAT_TURN_FULL || sys + skip + 1 >= h->n) break;
        skip++;
    }
    free(role);
    free(text);
    if (end == CHAT_TURN_OK)
        while (skip--) history_drop(h, sys);
    return end;
}

/* Reads messages until EOF or /exit and answers each with fn. */
static tm_status chat_loop(const cli_opts *o, reply_fn fn, void *engine, tm_err *err)
{
    history h = {0};
    char *line = NULL;
    size_t line_cap = 0;
    tm_status st = TM_OK;
    if (o->system) history_add(&h, "system", o->system);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: Ctrl-C ends a blocked read */
    int tty = isatty(STDIN_FILENO);
    uint64_t turn_no = 0;
    for (;;) {
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        g_interrupted = 0;
        errno = 0;
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) {
            if (errno == EINTR && g_interrupted) clearerr(stdin);
            break; /* EOF, or Ctrl-C at the prompt */
        }
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (!got) continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            history_free(&h);
            if (o->system) history_add(&h, "system", o->system);
            continue;
        }
        history_add(&h, "user", line);
        reply r = {0};
        chat_turn_end end = chat_turn(&h, fn, engine, turn_no, &r, err);
        if (r.shown || end == CHAT_TURN_OK || end == CHAT_TURN_FAILED) fputs("\n", stdout);
        fflush(stdout);
        if (end == CHAT_TURN_FULL || end == CHAT_TURN_REFUSED) {
            /* a message too long for the context, or one the server refused: say so and go on */
            fprintf(stderr, "trustmoe chat: %s\n", err->msg);
            history_drop(&h, h.n - 1);
        } else if (end == CHAT_TURN_OK) {
            history_add(&h, "assistant", r.text ? r.text : "");
            turn_no++;
        }
        free(r.text);
        if (end == CHAT_TURN_FAILED) {
            st = TM_EFAIL;
            break;
        }
        if (end == CHAT_TURN_OK && g_interrupted) fprintf(stderr, "trustmoe chat: reply stopped (Ctrl-C)\n");
    }
    free(line);
    history_free(&h);
    return st;
}

/* ---- replies from the model loaded here ------------------------------------------- */

typedef struct {
    cli_opts *o;
    tok_tokenizer *tok;
    tm_model m;
    sched sc;
    moe_backend be;
    unsigned char *mask;
    int have_model, have_sched, started;
    int ctx;
    int32_t stop[2]; /* <|im_end|>, <|endoftext|> */
    char *buf;       /* [cap] detokenizer output */
    size_t cap;
} local_chat;

typedef struct {
    const local_chat *lc;
    tok_stream ts;
    reply *out;
    int done, stopped; /* stopped: at a --stop string */
} local_turn;

/* Adds detokenized text to the reply; returns 1 at a --stop string (the
 * reply then ends before it). */
static int local_text(local_turn *t, const char *s, size_t n)
{
    const sampler_params *sp = &t->lc->o->samp;
    reply *r = t->out;
    size_t before = r->len;
    reply_append(r, s, n);
    long at = sampler_stop_cut(sp, r->text, before, r->len);
    if (at >= 0) {
        r->len = (size_t)at;
        r->text[r->len] = 0;
        reply_show(r, r->len);
        return 1;
    }
    reply_show(r, r->len - sampler_stop_holdback(sp, r->text, r->len));
    return 0;
}

static int local_token(void *ctx, int32_t id, const float *logits, int vocab)
{
    local_turn *t = ctx;
    const local_chat *lc = t->lc;
    (void)logits, (void)vocab;
    if (id != lc->stop[0] && id != lc->stop[1] && local_text(t, lc->buf, tok_stream_push(&t->ts, id, lc->buf, lc->cap)))
        return t->stopped = 1;
    return g_interrupted != 0;
}

static void local_done(void *ctx, sched_stop why, int n)
{
    local_turn *t = ctx;
    const local_chat *lc = t->lc;
    (void)why, (void)n;
    if (!t->stopped) local_text(t, lc->buf, tok_stream_flush(&t->ts, lc->buf, lc->cap));
    reply_show(t->out, t->out->len);
    t->done = 1;
}

static chat_turn_end local_reply(void *engine, const char *const *role, const char *const *text, int n_turns,
                                 uint64_t turn_no, reply *out, tm_err *err)
{
    local_chat *lc = engine;
    const cli_opts *o = lc->o;
    char *prompt = tok_chat_render(role, text, n_turns);
    int32_t *ids = NULL;
    size_t n = 0;
    tm_status st = tok_encode(lc->tok, prompt, strlen(prompt), &ids, &n, err);
    free(prompt);
    if (st != TM_OK) return CHAT_TURN_REFUSED;
    if ((int)n + o->n_predict > lc->ctx) {
        free(ids);
        tm_errf(err, TM_EINPUT, "the message does not fit the context of %d tokens with -n %d", lc->ctx, o->n_predict);
        return CHAT_TURN_FULL;
    }
    local_turn t = {.lc = lc, .out = out};
    tok_stream_init(&t.ts, lc->tok);
    sched_request r = {.samp = o->samp, .max_tokens = o->n_predict, .stop_ids = lc->stop, .n_stop_ids = 2,
                       .on_token = local_token, .on_done = local_done, .ctx = &t};
    /* each reply its own stream: a given seed moves on per turn, a random one is drawn anew */
    if (o->samp.seed != SAMPLER_SEED_RANDOM) r.samp.seed = o->samp.seed + turn_no;
    st = sched_add(&lc->sc, ids, (int)n, &r, err);
    free(ids);
    while (st == TM_OK && !t.done) st = sched_step(&lc->sc, err);
    return st == TM_OK ? CHAT_TURN_OK : CHAT_TURN_FAILED;
}

static tm_status local_open(local_chat *lc, cli_opts *o, tm_err *err)
{
    memset(lc, 0, sizeof *lc);
    lc->o = o;
    char tok_path[4200];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", o->model_dir);
    if (o->load.synthetic || access(tok_path, F_OK) != 0)
        return tm_errf(err, TM_EINPUT, "%s: chat needs a tokenizer (%s)", o->model_dir, tok_path);
    tm_status st = tok_load(tok_path, &lc->tok, err);
    if (st != TM_OK) return st;
    kern_set_threads(o->threads);
    if ((st = cli_load_model(o, &lc->m, &lc->mask, err)) != TM_OK) return st;
    lc->have_model = 1;
    const tm_config *cfg = &lc->m.cfg;
    sched_params sp = sched_default_params();
    sp.max_seqs = 1;
    sp.max_queue = 1;
    sp.ctx = lc->ctx = o->ctx ? o->ctx : TM_MIN(4096, cfg->max_position_embeddings);
    sp.on_step = dist_set_step;
    if (sp.ctx > cfg->max_position_embeddings)
        return tm_errf(err, TM_EINPUT, "-c %d exceeds max_position_embeddings %d", sp.ctx,
                       cfg->max_position_embeddings);
    if (o->n_predict < 1 || o->n_predict >= sp.ctx)
        return tm_errf(err, TM_EINPUT, "-n %d: a reply needs 1 to %d tokens (-c %d)", o->n_predict, sp.ctx - 1, sp.ctx);
    if ((st = sched_init(&lc->sc, &lc->m, &lc->be, NULL, &sp, err)) != TM_OK) return st;
    lc->have_sched = 1;
    if ((st = cli_start_backend(o, &lc->m, &lc->sc.s, &lc->be, &lc->started, err)) != TM_OK) return st;
    lc->stop[0] = tok_token_id(lc->tok, "<|im_end|>");
    lc->stop[1] = tok_token_id(lc->tok, "<|endoftext|>");
    lc->cap = tok_stream_cap(lc->tok);
    lc->buf = tm_malloc(lc->cap);
    return TM_OK;
}

/* Shuts the workers down and frees; returns the exit code for rc. */
static int local_close(local_chat *lc, int rc)
{
    rc = cli_finish(&lc->be, lc->started, rc, NULL);
    free(lc->buf);
    if (lc->have_sched) sched_free(&lc->sc);
    if (lc->have_model) model_free(&lc->m);
    free(lc->mask);
    if (lc->tok) tok_free(lc->tok);
    return rc;
}

static int chat_local(cli_opts *o)
{
    int rc = 0;
    if (cli_run_worker(o, &rc)) return rc;
    local_chat lc;
    tm_err err = {{0}};
    tm_status st = local_open(&lc, o, &err);
    if (st == TM_OK) st = chat_loop(o, local_reply, &lc, &err);
    if (st != TM_OK) rc = cli_fail("chat", &err, st);
    return local_close(&lc, rc);
}

/* ---- replies from a server -------------------------------------------------------------- */

static void remote_text(void *ctx, const char *s, size_t n)
{
    reply *r = ctx;
    reply_append(r, s, n);
    reply_show(r, r->len);
}

static chat_turn_end remote_reply(void *engine, const char *const *role, const char *const *text, int n,
                                  uint64_t turn_no, reply *out, tm_err *err)
{
    return chat_client_reply(engine, role, text, n, turn_no, remote_text, out, &g_interrupted, err);
}

static int chat_remote(const cli_opts *o)
{
    tm_err err = {{0}};
    int rank, size;
    dist_init(NULL, NULL, &rank, &size);
    if (size > 1) {
        tm_errf(&err, TM_EINPUT, "--url talks to a server: run chat --url without mpirun");
        return cli_fail_early("chat", &err, TM_EINPUT);
    }
    chat_client c;
    tm_status st = chat_client_init(&c, o, &err);
    if (st == TM_OK) st = chat_loop(o, remote_reply, &c, &err);
    chat_client_free(&c);
    int rc = st == TM_OK ? 0 : cli_fail("chat", &err, st);
    dist_finalize();
    return rc;
}

/* ---- the command ----------------------------------------------------------------------------- */

static void chat_usage(FILE *f)
{
    fprintf(f, "usage: trustmoe chat (-m DIR | --url URL) [--system TEXT] [-n N] [-c N] [--temp T ...]\n"
               "A multi-turn chat in the terminal: type a message, the reply streams back.  The whole\n"
               "conversation is the context of each reply (the oldest turns go when it is full).\n"
               "Ctrl-C stops a reply; Ctrl-C at an empty prompt, EOF (Ctrl-D) or /exit ends the chat;\n"
               "/reset forgets the conversation.  -n is the longest reply (default 512), -c the context\n"
               "(default 4096 or the model's limit).\n"
               "--url URL asks a running `trustmoe serve`, or any OpenAI-compatible server (URL with or\n"
               "without /v1), instead of loading a model: the first model of its /v1/models answers within\n"
               "the server's context; the sampling flags given here go with each request (the server's\n"
               "defaults stand for the others), and the model, engine and MPI flags are errors.\n");
}

int cmd_chat(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        chat_usage(stdout);
        cli_usage(stdout, CLI_CHAT);
        return 0;
    }
    cli_opts o;
    tm_err err = {{0}};
    tm_status st = cli_parse_opts(CLI_CHAT, argc, argv, &o, &err);
    if (st == TM_OK && !o.url) st = cli_apply_generation_config(&o, &err);
    if (st != TM_OK) return cli_fail("chat", &err, st);
    if (!(o.given & CLI_GIVEN_N)) o.n_predict = 512;
    return o.url ? chat_remote(&o) : chat_local(&o);
}
