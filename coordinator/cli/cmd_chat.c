/* cmd_chat.c: `trustmoe chat`: a multi-turn conversation in the terminal.
 * Each turn renders the whole history with the Qwen3 chat template and runs
 * it through the scheduler (one sequence), streaming the reply.  Ctrl-C stops
 * the reply being written (what was written stays in the history); Ctrl-C at
 * an empty prompt, EOF or /exit ends the chat. */
#include "commands.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kernels.h"
#include "scheduler.h"
#include "tokenizer.h"

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

typedef struct {
    const tok_tokenizer *tok;
    tok_stream ts;
    char *buf;       /* [cap] detokenizer output */
    size_t cap;
    char *reply;     /* the reply so far, for the history */
    size_t len;
    int32_t stop[2]; /* <|im_end|>, <|endoftext|> */
    int done;
    sched_stop why;
} turn;

static void reply_add(turn *t, const char *s, size_t n)
{
    t->reply = tm_realloc(t->reply, t->len + n + 1);
    memcpy(t->reply + t->len, s, n);
    t->len += n;
    t->reply[t->len] = 0;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
}

static int chat_token(void *ctx, int32_t id, const float *logits, int vocab)
{
    turn *t = ctx;
    (void)logits, (void)vocab;
    if (id != t->stop[0] && id != t->stop[1]) {
        size_t k = tok_stream_push(&t->ts, id, t->buf, t->cap);
        reply_add(t, t->buf, k);
    }
    return g_interrupted != 0;
}

static void chat_done(void *ctx, sched_stop why, int n)
{
    turn *t = ctx;
    (void)n;
    reply_add(t, t->buf, tok_stream_flush(&t->ts, t->buf, t->cap));
    t->why = why;
    t->done = 1;
}

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
    h->role[h->n] = strdup(role);
    h->text[h->n++] = strdup(text);
}

static void history_drop_oldest(history *h, int keep_system)
{
    int i = keep_system && h->n && !strcmp(h->role[0], "system") ? 1 : 0;
    if (i >= h->n) return;
    free(h->role[i]);
    free(h->text[i]);
    memmove(h->role + i, h->role + i + 1, sizeof(char *) * (size_t)(h->n - i - 1));
    memmove(h->text + i, h->text + i + 1, sizeof(char *) * (size_t)(h->n - i - 1));
    h->n--;
}

static void history_free(history *h)
{
    for (int i = 0; i < h->n; i++) {
        free(h->role[i]);
        free(h->text[i]);
    }
    free(h->role);
    free(h->text);
}

/* The history as prompt ids; the oldest turns go while it and n_predict do
 * not fit the context. */
static tm_status render(history *h, const tok_tokenizer *tok, int ctx, int n_predict, int32_t **ids, size_t *n,
                        tm_err *err)
{
    for (;;) {
        char *text = tok_chat_render((const char *const *)h->role, (const char *const *)h->text, h->n);
        tm_status st = tok_encode(tok, text, strlen(text), ids, n, err);
        free(text);
        if (st != TM_OK) return st;
        if ((int)*n + n_predict <= ctx) return TM_OK;
        free(*ids);
        *ids = NULL;
        int before = h->n;
        history_drop_oldest(h, 1);
        if (h->n == before || h->n == 0 || !strcmp(h->role[h->n - 1], "system"))
            return tm_errf(err, TM_EINPUT, "the message does not fit the context of %d tokens with -n %d", ctx,
                           n_predict);
    }
}

static void chat_usage(FILE *f)
{
    fprintf(f, "usage: trustmoe chat -m DIR [--system TEXT] [-n N] [-c N] [--temp T ...]\n"
               "A multi-turn chat in the terminal: type a message, the reply streams back.  The whole\n"
               "conversation is the context of each reply (the oldest turns go when it is full).\n"
               "Ctrl-C stops a reply; Ctrl-C at an empty prompt, EOF (Ctrl-D) or /exit ends the chat;\n"
               "/reset forgets the conversation.  -n is the longest reply (default 512), -c the context\n"
               "(default 4096 or the model's limit).\n");
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
    if (st == TM_OK) st = cli_apply_generation_config(&o, &err);
    if (st != TM_OK) return cli_fail("chat", &err, st);
    if (!(o.given & CLI_GIVEN_N)) o.n_predict = 512;
    int rc = 0;
    if (cli_run_worker(&o, &rc)) return rc;

    tok_tokenizer *tok = NULL;
    tm_model m;
    sched sc;
    moe_backend be = {0};
    unsigned char *mask = NULL;
    int have_model = 0, have_sched = 0, started = 0;
    history h = {0};
    char *line = NULL;
    size_t line_cap = 0;
    char tok_path[4200];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", o.model_dir);
    if (o.load.synthetic || access(tok_path, F_OK) != 0) {
        st = tm_errf(&err, TM_EINPUT, "%s: chat needs a tokenizer (%s)", o.model_dir, tok_path);
        goto out;
    }
    if ((st = tok_load(tok_path, &tok, &err)) != TM_OK) goto out;
    kern_set_threads(o.threads);
    if ((st = cli_load_model(&o, &m, &mask, &err)) != TM_OK) goto out;
    have_model = 1;
    sched_params sp = sched_default_params();
    sp.max_seqs = 1;
    sp.max_queue = 1;
    sp.ctx = o.ctx ? o.ctx : TM_MIN(4096, m.cfg.max_position_embeddings);
    sp.on_step = dist_set_step;
    if (sp.ctx > m.cfg.max_position_embeddings) {
        st = tm_errf(&err, TM_EINPUT, "-c %d exceeds max_position_embeddings %d", sp.ctx, m.cfg.max_position_embeddings);
        goto out;
    }
    if (o.n_predict < 1 || o.n_predict >= sp.ctx) {
        st = tm_errf(&err, TM_EINPUT, "-n %d: a reply needs 1 to %d tokens (-c %d)", o.n_predict, sp.ctx - 1, sp.ctx);
        goto out;
    }
    if ((st = sched_init(&sc, &m, &be, NULL, &sp, &err)) != TM_OK) goto out;
    have_sched = 1;
    if ((st = cli_start_backend(&o, &m, &sc.s, &be, &started, &err)) != TM_OK) goto out;
    if (o.system) history_add(&h, "system", o.system);

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
            memset(&h, 0, sizeof h);
            if (o.system) history_add(&h, "system", o.system);
            continue;
        }
        history_add(&h, "user", line);
        int32_t *ids = NULL;
        size_t n = 0;
        if ((st = render(&h, tok, sp.ctx, o.n_predict, &ids, &n, &err)) != TM_OK) {
            /* a message too long for the context: say so and go on */
            fprintf(stderr, "trustmoe chat: %s\n", err.msg);
            history_drop_oldest(&h, 0);
            st = TM_OK;
            continue;
        }
        turn t = {.tok = tok, .cap = tok_stream_cap(tok)};
        t.buf = tm_malloc(t.cap);
        tok_stream_init(&t.ts, tok);
        t.stop[0] = tok_token_id(tok, "<|im_end|>");
        t.stop[1] = tok_token_id(tok, "<|endoftext|>");
        sched_request r = {.samp = o.samp, .max_tokens = o.n_predict, .stop_ids = t.stop, .n_stop_ids = 2,
                           .on_token = chat_token, .on_done = chat_done, .ctx = &t};
        /* each reply its own stream: a given seed moves on per turn, a random one is drawn anew */
        if (o.samp.seed != SAMPLER_SEED_RANDOM) r.samp.seed = o.samp.seed + turn_no++;
        st = sched_add(&sc, ids, (int)n, &r, &err);
        free(ids);
        while (st == TM_OK && !t.done) st = sched_step(&sc, &err);
        fputs("\n", stdout);
        fflush(stdout);
        history_add(&h, "assistant", t.reply ? t.reply : "");
        free(t.reply);
        free(t.buf);
        if (st != TM_OK) goto out;
        if (g_interrupted) fprintf(stderr, "trustmoe chat: reply stopped (Ctrl-C)\n");
    }
out:
    if (st != TM_OK) rc = cli_fail("chat", &err, st);
    rc = cli_finish(&be, started, rc, NULL);
    free(line);
    history_free(&h);
    if (have_sched) sched_free(&sc);
    if (have_model) model_free(&m);
    free(mask);
    if (tok) tok_free(tok);
    return rc;
}
