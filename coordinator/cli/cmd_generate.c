/* cmd_generate.c: the generate command: prompts in (ids, text, chat, or a file of
 * prompts generated as one batch), tokens out, streamed as text when the
 * model folder has a tokenizer. */
#include "cli.h"
#include "commands.h"
#include "input.h"
#include "kernels.h"
#include "scheduler.h"
#include "tokenizer.h"

#include <cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct gen_run gen_run;

typedef struct {
    gen_run *run;    /* the run it belongs to (the scheduler's callbacks get the sequence) */
    int32_t *prompt; /* [n_prompt] */
    int n_prompt;
    int32_t *out;    /* [n_predict] */
    int n_out;
    int done;
    const char *stop;
    tok_stream ts;   /* with a tokenizer: the output as text */
    char *text;      /* [text_cap] the visible text (special tokens hidden, cut at a stop string) */
    size_t text_len, text_cap, shown; /* shown: bytes already streamed */
} gen_seq;

/* ---- prompts --------------------------------------------------------------- */

static int is_id_list(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || *s == ',' || *s == ' ')) return 0;
    return 1;
}

/* Text (optionally wrapped in the chat template) to ids. */
static tm_status encode_text(const tok_tokenizer *tok, const cli_opts *o, const char *text, int32_t **ids, int *n,
                             tm_err *err)
{
    if (!tok) {
        tok_tokenizer *none = NULL;
        tm_status st = cli_load_tokenizer(o, 1, &none, err); /* fails, saying how to get one */
        if (none) tok_free(none);
        return st != TM_OK ? st : tm_errf(err, TM_EINPUT, "text prompts need a tokenizer");
    }
    if (!*text) return tm_errf(err, TM_EINPUT, "empty prompt");
    char *wrapped = o->chat ? tok_chat_prompt(o->system, text) : NULL;
    const char *src = wrapped ? wrapped : text;
    size_t count = 0;
    tm_status st = tok_encode(tok, src, strlen(src), ids, &count, err);
    free(wrapped);
    if (st == TM_OK && count == 0) {
        free(*ids);
        *ids = NULL;
        st = tm_errf(err, TM_EINPUT, "prompt encodes to no tokens");
    }
    if (st != TM_OK) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "prompt: %.1000s", err->msg);
        return tm_errf(err, TM_EINPUT, "%s", msg);
    }
    *n = (int)count;
    return TM_OK;
}

/* Every id of every prompt is a row of the embedding: checked once, before
 * context classification or the forward pass reads one. */
static tm_status check_prompt_ids(const gen_seq *seqs, int n_seqs, const tm_config *c, const char *dir,
                                  tm_err *err)
{
    for (int q = 0; q < n_seqs; q++)
        for (int i = 0; i < seqs[q].n_prompt; i++)
            if (seqs[q].prompt[i] < 0 || seqs[q].prompt[i] >= c->vocab_size)
                return tm_errf(err, TM_EINPUT, "prompt %d: token id %d at position %d is outside the vocab of %s (0..%d)",
                               q + 1, (int)seqs[q].prompt[i], i, dir ? dir : "the model", c->vocab_size - 1);
    return TM_OK;
}

static tm_status read_prompts(const tok_tokenizer *tok, const cli_opts *o, gen_seq **seqs, int *n_seqs, tm_err *err)
{
    char *text = NULL;
    size_t text_len = 0;
    tm_status st = cli_read_text(o->prompts_file, "prompts file", TM_CAP_PROMPTS, &text, &text_len, err);
    if (st != TM_OK) return st;
    const char *nul = memchr(text, '\0', text_len);
    if (nul) {
        int at = 1;
        for (const char *p = text; p < nul; p++) at += *p == '\n';
        free(text);
        return tm_errf(err, TM_EINPUT, "%s:%d: a NUL byte in the prompts file", o->prompts_file, at);
    }
    int cap = 8, n = 0, line_no = 0;
    gen_seq *v = tm_calloc((size_t)cap, sizeof *v);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        line_no++;
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r') line[--len] = '\0';
        if (!len) continue;
        if (n == o->max_batch) {
            /* every prompt of the batch holds a KV cache of the whole context */
            st = tm_errf(err, TM_EINPUT, "%s:%d: more than %d prompts (--max-batch)", o->prompts_file, line_no,
                         o->max_batch);
            break;
        }
        if (n == cap) v = tm_realloc(v, sizeof *v * (size_t)(cap *= 2));
        memset(&v[n], 0, sizeof v[n]);
        st = is_id_list(line) ? cli_parse_ids(line, &v[n].prompt, &v[n].n_prompt, err)
                              : encode_text(tok, o, line, &v[n].prompt, &v[n].n_prompt, err);
        if (st != TM_OK) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%.200s:%d: %.800s", o->prompts_file, line_no, err->msg);
            tm_errf(err, st, "%s", msg);
            break;
        }
        n++;
    }
    free(text);
    if (st == TM_OK && n == 0) st = tm_errf(err, TM_EINPUT, "%s: no prompts", o->prompts_file);
    *seqs = v;
    *n_seqs = n;
    return st;
}

/* ---- output ---------------------------------------------------------------- */

static cJSON *json_int_array(const int32_t *ids, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

static void add_seq_json(cJSON *obj, const gen_seq *q, const tok_tokenizer *tok)
{
    cJSON_AddItemToObject(obj, "prompt_ids", json_int_array(q->prompt, q->n_prompt));
    cJSON_AddItemToObject(obj, "ids", json_int_array(q->out, q->n_out));
    if (tok) cJSON_AddStringToObject(obj, "text", q->text ? q->text : "");
    cJSON_AddStringToObject(obj, "stop", q->stop ? q->stop : "length");
}

/* The run's --stats-json gets a "selection" object: per-layer expert-load
 * diversity under the trust selector and the context used. */
static tm_status add_selection_stats(const char *path, const trust_run *tr, tm_err *err)
{
    char *text = NULL;
    tm_status st = tm_read_file(path, &text, NULL, err);
    if (st != TM_OK) return st;
    cJSON *doc = cJSON_Parse(text);
    free(text);
    char *metrics = trust_metrics_json(&tr->metrics);
    cJSON *sel = metrics ? cJSON_Parse(metrics) : NULL;
    free(metrics);
    if (!doc || !sel) {
        cJSON_Delete(doc);
        cJSON_Delete(sel);
        return tm_errf(err, TM_EFAIL, "%s: cannot add the selection statistics", path);
    }
    cJSON_AddStringToObject(sel, "mode", trust_select_mode_name(tr->o.mode));
    cJSON_AddStringToObject(sel, "context", trust_run_context(tr));
    cJSON_AddItemToObject(doc, "selection", sel);
    char *out = cJSON_Print(doc);
    cJSON_Delete(doc);
    FILE *f = fopen(path, "w");
    int bad = !f || fputs(out, f) < 0;
    if (f && fclose(f) != 0) bad = 1;
    free(out);
    return bad ? tm_errf(err, TM_EFAIL, "%s: write failed", path) : TM_OK;
}

/* ---- one run: its steps ------------------------------------------------------- */

struct gen_run {
    cli_opts o;
    trust_opts to;
    int selecting;
    tok_tokenizer *tok;
    gen_seq *seqs;            /* [n_seqs] */
    int n_seqs, total_prompt; /* sequences; prompt tokens over all of them */
    tm_model m;
    sched sc;                 /* the generation loop (coordinator/sched/), with the KV state */
    sampler_params sp;        /* the sampling of every sequence, its seed drawn when random */
    moe_backend be;
    unsigned char *mask;      /* rank 0's empty expert mask in an MPI job */
    int have_model, have_state, started;
    trust_run tr;
    int have_trust;
    tm_selector sel;
    int32_t tok_im_end, tok_eot; /* chat stop tokens beyond the config's eos ids (-1: none) */
    int stream;               /* one sequence printed as it comes */
    int echoed;               /* the prompt was printed before the text */
    char *piece;              /* [piece_cap] one token's text */
    size_t piece_cap;
    double t_load, t_prefill, t_decode;
    int n_decoded, decode_steps;
};

/* The tokenizer (when the folder has one) and the prompts as ids. */
static tm_status gen_read_input(gen_run *g, tm_err *err)
{
    tm_status st;
    if ((st = cli_check_model_dir(&g->o, err)) != TM_OK) return st;
    if ((st = cli_apply_generation_config(&g->o, err)) != TM_OK) return st;
    if ((st = cli_load_tokenizer(&g->o, g->o.samp.n_stop > 0, &g->tok, err)) != TM_OK) {
        if (g->o.samp.n_stop) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "--stop needs a tokenizer: %.900s", err->msg);
            return tm_errf(err, TM_EINPUT, "%s", msg);
        }
        return st;
    }
    if (g->o.prompts_file) return read_prompts(g->tok, &g->o, &g->seqs, &g->n_seqs, err);
    g->seqs = tm_calloc(1, sizeof *g->seqs);
    g->n_seqs = 1;
    return g->o.ids_arg ? cli_parse_ids(g->o.ids_arg, &g->seqs[0].prompt, &g->seqs[0].n_prompt, err)
                        : encode_text(g->tok, &g->o, g->o.prompt, &g->seqs[0].prompt, &g->seqs[0].n_prompt, err);
}

/* Model, context length, KV state, sampler, buffers, expert backend (with
 * the workers' loading and handshake) and trust selection. */
static tm_status gen_setup(gen_run *g, tm_err *err)
{
    tm_status st;
    const cli_opts *o = &g->o;
    kern_set_threads(o->threads);
    double t0 = tm_now();
    /* at a terminal the wait for the weights says what it is, then clears */
    int progress = o->verbosity > 0 && isatty(STDERR_FILENO);
    if (progress) fprintf(stderr, "trustmoe: loading %s ...", o->model_dir);
    st = cli_load_model(&g->o, &g->m, &g->mask, err);
    if (progress) fprintf(stderr, "\r\033[K");
    if (st != TM_OK) return st;
    g->have_model = 1;
    const tm_config *cfg = &g->m.cfg;
    if ((st = check_prompt_ids(g->seqs, g->n_seqs, cfg, o->model_dir, err)) != TM_OK) return st;
    int longest = 0;
    for (int q = 0; q < g->n_seqs; q++) {
        g->total_prompt += g->seqs[q].n_prompt;
        longest = TM_MAX(longest, g->seqs[q].n_prompt);
    }
    int ctx = o->ctx ? o->ctx : longest + o->n_predict;
    if (o->ctx && ctx > cfg->max_position_embeddings)
        return tm_errf(err, TM_EINPUT, "-c %d exceeds max_position_embeddings %d of %s/config.json", ctx,
                       cfg->max_position_embeddings, o->model_dir);
    ctx = TM_MIN(ctx, cfg->max_position_embeddings);
    if (longest > ctx)
        return tm_errf(err, TM_EINPUT, "prompt of %d tokens is longer than the context of %d tokens", longest, ctx);
    /* every prompt prefills in the first step, as one batch; then one token
     * per live sequence per step */
    sched_params sp = sched_default_params();
    sp.max_seqs = TM_MAX(g->n_seqs, 1);
    sp.max_queue = sp.max_seqs;
    sp.ctx = ctx;
    sp.chunk = TM_MAX(g->total_prompt, 1);
    sp.on_step = dist_set_step;
    if ((st = sched_init(&g->sc, &g->m, &g->be, &g->sel, &sp, err)) != TM_OK) return st;
    g->have_state = 1;
    sampler seed_of; /* draws the random seed once, for every sequence and the summary */
    sampler_init(&seed_of, &o->samp, 1);
    g->sp = seed_of.p;
    sampler_free(&seed_of);
    for (int q = 0; q < g->n_seqs; q++) {
        gen_seq *sq = &g->seqs[q];
        sq->run = g;
        sq->out = tm_malloc(sizeof(int32_t) * (size_t)(o->n_predict + 1));
        if (g->tok) {
            tok_stream_init(&sq->ts, g->tok);
            sq->text_cap = 256;
            sq->text = tm_malloc(sq->text_cap);
            sq->text[0] = '\0';
        }
    }
    if ((st = cli_start_backend(o, &g->m, &g->sc.s, &g->be, &g->started, err)) != TM_OK) return st;
    g->t_load = tm_now() - t0;
    if (g->selecting) {
        /* one context per run: the first prompt's */
        st = cli_trust_begin(o, &g->be, &g->m, &g->tr, &g->to, g->seqs[0].prompt, g->seqs[0].n_prompt, &g->sel,
                             err);
        if (st != TM_OK) return st;
        g->have_trust = 1;
        if (o->verbosity == 0) g->tr.quiet = 1;
    }
    g->tok_im_end = g->tok ? tok_token_id(g->tok, "<|im_end|>") : -1;
    g->tok_eot = g->tok ? tok_token_id(g->tok, "<|endoftext|>") : -1;
    g->stream = !o->prompts_file && !o->json;
    if (g->tok) {
        g->piece_cap = tok_stream_cap(g->tok) + 1;
        g->piece = tm_malloc(g->piece_cap);
    }
    return TM_OK;
}

/* Special tokens (<|im_end|>, <|endoftext|>, <|im_start|>, ...: added
 * tokens spelled <|...|>) and the eos ids are hidden from the text unless
 * --special; the ids keep them. */
static int gen_hidden(const gen_run *g, int32_t id)
{
    if (g->o.special) return 0;
    if (cfg_is_eos(&g->m.cfg, id) || id == g->tok_im_end || id == g->tok_eot) return 1;
    size_t n = 0;
    const char *b = tok_token_bytes(g->tok, id, &n);
    if (!b || n < 4 || n >= 64 || memcmp(b, "<|", 2) || memcmp(b + n - 2, "|>", 2)) return 0;
    char name[64];
    memcpy(name, b, n);
    name[n] = '\0';
    return tok_token_id(g->tok, name) == id; /* an added token, not text that looks like one */
}

static void gen_append(gen_seq *q, const char *b, size_t n)
{
    if (q->text_len + n + 1 > q->text_cap) {
        while (q->text_len + n + 1 > q->text_cap) q->text_cap *= 2;
        q->text = tm_realloc(q->text, q->text_cap);
    }
    memcpy(q->text + q->text_len, b, n);
    q->text_len += n;
    q->text[q->text_len] = '\0';
}

/* Writes the streamed sequence's text up to `upto`. */
static void gen_show(gen_seq *q, size_t upto)
{
    if (upto <= q->shown) return;
    fwrite(q->text + q->shown, 1, upto - q->shown, stdout);
    q->shown = upto;
    fflush(stdout);
}

/* Adds a sampled token to q's text; returns 1 when a stop string ended it
 * (the text then ends before the stop string). */
static int gen_push_text(gen_run *g, gen_seq *q, int32_t next)
{
    const sampler_params *sp = &g->sp;
    size_t before = q->text_len;
    if (!gen_hidden(g, next)) gen_append(q, g->piece, tok_stream_push(&q->ts, next, g->piece, g->piece_cap));
    long at = sampler_stop_cut(sp, q->text, before, q->text_len);
    if (at < 0) return 0;
    q->text_len = (size_t)at;
    q->text[q->text_len] = '\0';
    return 1;
}

/* The rest of q's text once it is done: the stream's pending bytes (not
 * after a stop string). */
static void gen_end_text(gen_run *g, gen_seq *q)
{
    if (q->stop && !strcmp(q->stop, "stop")) return;
    gen_append(q, g->piece, tok_stream_flush(&q->ts, g->piece, g->piece_cap));
}

/* The streamed sequence after a sampled token: text (held back while it
 * could be the start of a stop string), or ids without a tokenizer. */
static void gen_stream(gen_run *g, gen_seq *q, int32_t next)
{
    if (!g->tok) {
        printf(q->n_out > 1 ? ",%d" : "%d", next);
        fflush(stdout);
        return;
    }
    if (q->done) {
        gen_end_text(g, q);
        gen_show(q, q->text_len);
    } else {
        gen_show(q, q->text_len - sampler_stop_holdback(&g->sp, q->text, q->text_len));
    }
}

/* At a terminal the prompt comes first, so the text reads on from it
 * (pipes get the generated text only).  Under mpirun rank 0's stdout is
 * Open MPI's pseudo-terminal whatever mpirun's own stdout is, so there the
 * text alone is printed. */
static void gen_echo(gen_run *g)
{
    const cli_opts *o = &g->o;
    if (!g->stream || o->echo == 0 || !isatty(STDOUT_FILENO) || dist_mpi_active()) return;
    if (o->prompt) {
        fputs(o->prompt, stdout);
    } else if (g->tok) {
        char *t = tok_decode(g->tok, g->seqs[0].prompt, (size_t)g->seqs[0].n_prompt, NULL);
        fputs(t, stdout);
        free(t);
    } else {
        return;
    }
    g->echoed = 1;
    fflush(stdout);
}

/* The scheduler's callbacks: a sequence's token (its text, a stop string,
 * the stream), and its end. */
static int gen_on_token(void *ctx, int32_t id, const float *logits, int vocab)
{
    gen_seq *sq = ctx;
    gen_run *g = sq->run;
    (void)logits, (void)vocab;
    sq->out[sq->n_out++] = id;
    int stopped = g->tok ? gen_push_text(g, sq, id) : 0;
    if (g->stream) gen_stream(g, sq, id);
    return stopped;
}

static void gen_on_done(void *ctx, sched_stop why, int n)
{
    gen_seq *sq = ctx;
    gen_run *g = sq->run;
    (void)n;
    sq->done = 1;
    sq->stop = why == SCHED_STOP_CALLER ? "stop" : sched_stop_name(why);
    if (g->tok) gen_end_text(g, sq);
    if (g->stream && g->tok) gen_show(sq, sq->text_len);
}

/* Every sequence through the scheduler: the first step is the prefill (all
 * prompts, and each one's first token), the rest decode. */
static tm_status gen_run_all(gen_run *g, tm_err *err)
{
    gen_echo(g);
    int32_t stop_ids[2] = {g->tok_im_end, g->tok_eot};
    for (int q = 0; q < g->n_seqs; q++) {
        gen_seq *sq = &g->seqs[q];
        if (g->o.n_predict == 0) { /* nothing to generate */
            sq->done = 1;
            sq->stop = "length";
            continue;
        }
        sched_request r = {.samp = g->sp, .max_tokens = g->o.n_predict, .stop_ids = stop_ids, .n_stop_ids = 2,
                           .on_token = gen_on_token, .on_done = gen_on_done, .ctx = sq};
        r.samp.seed = g->sp.seed + (uint64_t)q; /* each sequence its own stream */
        tm_status st = sched_add(&g->sc, sq->prompt, sq->n_prompt, &r, err);
        if (st != TM_OK) return st;
    }
    double t0 = tm_now();
    tm_status st = sched_step(&g->sc, err);
    g->t_prefill = tm_now() - t0;
    uint64_t first = g->sc.generated_tokens, steps = g->sc.steps;
    double t1 = tm_now();
    while (st == TM_OK && sched_running(&g->sc) + sched_queued(&g->sc) > 0) st = sched_step(&g->sc, err);
    g->t_decode = tm_now() - t1;
    g->n_decoded = (int)(g->sc.generated_tokens - first);
    g->decode_steps = (int)(g->sc.steps - steps);
    /* the text ends its line, and is out before any summary line */
    if (g->stream && (g->seqs[0].n_out || g->echoed)) printf("\n");
    fflush(stdout);
    return st;
}

/* The figures: one set, handed to the run's report (the summary on stderr
 * and --stats-json) and used by --json. */
static dist_times gen_times(const gen_run *g)
{
    dist_times t = {.load_s = g->t_load,
                    .prefill_s = g->t_prefill,
                    .decode_s = g->t_decode,
                    .prefill_tok = (uint64_t)g->total_prompt,
                    .decode_tok = (uint64_t)g->n_decoded,
                    .decode_steps = (uint64_t)g->decode_steps};
    return t;
}

/* --prompts without --json: each sequence under a header line, in the
 * order of the file, whatever the number of lines. */
static void gen_print_plain(const gen_run *g)
{
    for (int q = 0; q < g->n_seqs; q++) {
        const gen_seq *sq = &g->seqs[q];
        printf("%s==> prompt %d of %d (%d tokens, stop: %s) <==\n", q ? "\n" : "", q + 1, g->n_seqs, sq->n_out,
               sq->stop ? sq->stop : "length");
        if (g->tok) {
            fputs(sq->text, stdout);
        } else {
            for (int i = 0; i < sq->n_out; i++) printf(i ? ",%d" : "%d", sq->out[i]);
        }
        printf("\n");
    }
    fflush(stdout);
}

/* Stderr: the seed and sampling, a warning for every sequence the context
 * cut short, and with -v the trust tables; stdout: --json or the --prompts
 * text. */
static void gen_report(gen_run *g)
{
    const cli_opts *o = &g->o;
    const sampler_params *sp = &g->sp;
    dist_times t = gen_times(g);
    dist_set_times(&g->be, &t);
    if (o->verbosity > 0) {
        if (sp->temperature > 0)
            fprintf(stderr, "trustmoe generate: seed %llu; temp %g, top-k %d, top-p %g, min-p %g\n",
                    (unsigned long long)sp->seed, sp->temperature, sp->top_k, sp->top_p, sp->min_p);
        else
            fprintf(stderr, "trustmoe generate: seed %llu; greedy (--temp 0)\n", (unsigned long long)sp->seed);
        for (int q = 0; q < g->n_seqs; q++) {
            const gen_seq *sq = &g->seqs[q];
            if (sq->stop && !strcmp(sq->stop, "context") && sq->n_out < o->n_predict)
                fprintf(stderr,
                        "trustmoe generate: warning: %s%d of -n %d tokens: the context of %d tokens is full "
                        "(-c raises it, up to max_position_embeddings %d)\n",
                        g->n_seqs > 1 ? "a sequence stopped after " : "stopped after ", sq->n_out, o->n_predict,
                        g->sc.s.max_ctx, g->m.cfg.max_position_embeddings);
        }
        if (g->have_trust && o->verbosity > 1) trust_run_print_summary(&g->tr, stderr);
    }
    if (!o->json) {
        if (o->prompts_file) gen_print_plain(g);
        return;
    }
    cJSON *json = cJSON_CreateObject();
    if (!o->prompts_file) {
        add_seq_json(json, &g->seqs[0], g->tok);
    } else {
        cJSON *arr = cJSON_AddArrayToObject(json, "sequences");
        for (int q = 0; q < g->n_seqs; q++) {
            cJSON *e = cJSON_CreateObject();
            add_seq_json(e, &g->seqs[q], g->tok);
            cJSON_AddItemToArray(arr, e);
        }
    }
    cJSON_AddNumberToObject(json, "seed", (double)sp->seed);
    double ms_per_tok = t.decode_tok ? 1e3 * t.decode_s / (double)t.decode_tok : 0.0;
    cJSON *tm = cJSON_AddObjectToObject(json, "timings");
    cJSON_AddNumberToObject(tm, "load_ms", 1e3 * t.load_s);
    cJSON_AddNumberToObject(tm, "prefill_ms", 1e3 * t.prefill_s);
    cJSON_AddNumberToObject(tm, "prefill_tokens", (double)t.prefill_tok);
    cJSON_AddNumberToObject(tm, "prefill_tokens_per_second", t.prefill_s > 0 ? (double)t.prefill_tok / t.prefill_s : 0.0);
    cJSON_AddNumberToObject(tm, "decode_ms", 1e3 * t.decode_s);
    cJSON_AddNumberToObject(tm, "decode_ms_per_token", ms_per_tok);
    cJSON_AddNumberToObject(tm, "tokens_per_second", t.decode_s > 0 ? (double)t.decode_tok / t.decode_s : 0.0);
    cJSON_AddNumberToObject(tm, "decode_tokens", (double)t.decode_tok);
    cJSON_AddNumberToObject(tm, "sequences", g->n_seqs);
    cJSON *split = cJSON_AddObjectToObject(tm, "split_ms");
    cJSON_AddNumberToObject(split, "attention", 1e3 * g->sc.s.t_attn);
    cJSON_AddNumberToObject(split, "attention_core", 1e3 * g->sc.s.t_attn_core);
    cJSON_AddNumberToObject(split, "routing_selection", 1e3 * g->sc.s.t_route);
    cJSON_AddNumberToObject(split, "experts", 1e3 * g->sc.s.t_moe);
    cJSON_AddNumberToObject(split, "lm_head", 1e3 * g->sc.s.t_head);
    char *text = cJSON_PrintUnformatted(json);
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    cJSON_Delete(json);
}

static void gen_free(gen_run *g)
{
    free(g->piece);
    for (int q = 0; g->seqs && q < g->n_seqs; q++) {
        free(g->seqs[q].prompt);
        free(g->seqs[q].out);
        free(g->seqs[q].text);
    }
    free(g->seqs);
    if (g->have_trust) trust_run_close(&g->tr);
    if (g->have_state) sched_free(&g->sc);
    if (g->have_model) model_free(&g->m);
    free(g->mask);
    if (g->tok) tok_free(g->tok);
}

/* ---- the command ------------------------------------------------------------- */

int cmd_generate(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: trustmoe generate (-m DIR | --synthetic PRESET) (-p TEXT | --ids 1,2,3 | --prompts FILE) [options]\n"
               "Generates with a KV cache and streams the text to stdout (ids without a tokenizer).\n"
               "Sampling starts from the defaults below, then the model folder's generation_config.json\n"
               "(temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens), then the flags.\n"
               "Generation stops at an eos id (config.json, generation_config.json), <|im_end|> or\n"
               "<|endoftext|>, a --stop string, after -n tokens, or when the context is full (a warning).\n"
               "--prompts runs one prompt per line as one batch and prints each sequence under a\n"
               "'==> prompt N of M <==' line, or one JSON object with --json.  Diagnostics go to stderr:\n"
               "the seed and one summary line (-q: none, -v: more).\n");
        cli_usage(stdout, CLI_GENERATE);
        return 0;
    }
    gen_run *g = tm_calloc(1, sizeof *g);
    g->sel = (tm_selector){NULL, NULL};
    tm_err err = {{0}};
    tm_status st = cli_parse_with_trust(CLI_GENERATE, &argc, argv, &g->o, &g->to, &g->selecting, &err);
    int sources = !!g->o.ids_arg + !!g->o.prompt + !!g->o.prompts_file;
    if (st == TM_OK && sources != 1) st = tm_errf(&err, TM_EINPUT, "give exactly one of -p TEXT, --ids or --prompts FILE");
    if (st != TM_OK) {
        free(g);
        return cli_fail_early("generate", &err, st);
    }
    int rc = 0;
    if (cli_run_worker(&g->o, &rc)) {
        free(g);
        return rc;
    }
    if ((st = gen_read_input(g, &err)) == TM_OK && (st = gen_setup(g, &err)) == TM_OK &&
        (st = gen_run_all(g, &err)) == TM_OK)
        gen_report(g);
    if (st != TM_OK) rc = cli_fail("generate", &err, st);
    rc = cli_finish(&g->be, g->started, rc, g->have_state ? &g->sc.s : NULL);
    if (rc == 0 && g->have_trust && g->o.dist.stats_json &&
        add_selection_stats(g->o.dist.stats_json, &g->tr, &err) != TM_OK)
        rc = cli_fail("generate", &err, TM_EFAIL);
    gen_free(g);
    free(g);
    return rc;
}
