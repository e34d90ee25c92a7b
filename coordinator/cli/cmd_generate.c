/* cmd_generate.c: the generate command: prompts in (ids, text, chat, or a file of
 * prompts generated as one batch), tokens out, streamed as text when the
 * model folder has a tokenizer. */
#include "cli.h"
#include "commands.h"
#include "input.h"
#include "kernels.h"
#include "tokenizer.h"

#include <cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int32_t *prompt; /* [n_prompt] */
    int n_prompt;
    int32_t *out;    /* [n_predict] */
    int n_out;
    int done;
    const char *stop;
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
    if (!tok)
        return tm_errf(err, TM_EINPUT, "%s/tokenizer.json not found: text prompts need a tokenizer (or use --ids)",
                       o->model_dir);
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
    tm_status st = tm_read_input(o->prompts_file, "prompts file", TM_CAP_PROMPTS, &text, &text_len, err);
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
    if (tok) {
        char *t = tok_decode(tok, q->out, (size_t)q->n_out, NULL);
        cJSON_AddStringToObject(obj, "text", t);
        free(t);
    }
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

typedef struct {
    cli_opts o;
    trust_opts to;
    int selecting;
    tok_tokenizer *tok;
    gen_seq *seqs;            /* [n_seqs] */
    int n_seqs, total_prompt; /* sequences; prompt tokens over all of them */
    tm_model m;
    tm_state s;
    sampler smp;
    moe_backend be;
    unsigned char *mask;      /* rank 0's empty expert mask in an MPI job */
    int have_model, have_state, have_smp, started;
    trust_run tr;
    int have_trust;
    tm_selector sel;
    float *logits;            /* [n_seqs, vocab] f32: each sequence's next-token logits */
    int32_t *batch_ids;       /* [total_prompt] ids of one forward call */
    int *batch_seq;           /* [total_prompt] their sequences */
    int *batch_of;            /* [n_seqs] the sequence of each decode row */
    int32_t tok_im_end, tok_eot; /* chat stop tokens beyond the config's eos ids (-1: none) */
    int stream;               /* one sequence printed as it comes */
    tok_stream ts;
    char *stream_buf;         /* [stream_cap] */
    size_t stream_cap;
    double t_load, t_prefill, t_decode;
    int n_decoded;
} gen_run;

/* The tokenizer (when the folder has one) and the prompts as ids. */
static tm_status gen_read_input(gen_run *g, tm_err *err)
{
    tm_status st;
    char tok_path[4200];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", g->o.model_dir);
    if (access(tok_path, F_OK) == 0 && (st = tok_load(tok_path, &g->tok, err)) != TM_OK) return st;
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
    if ((st = cli_load_model(&g->o, &g->m, &g->mask, err)) != TM_OK) return st;
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
    if ((st = state_init_batch(&g->s, &g->m, g->n_seqs, ctx, TM_MAX(g->total_prompt, g->n_seqs), err)) != TM_OK)
        return st;
    g->have_state = 1;
    sampler_init(&g->smp, &o->samp, cfg->vocab_size);
    g->have_smp = 1;
    g->logits = tm_malloc(sizeof(float) * (size_t)cfg->vocab_size * (size_t)TM_MAX(g->n_seqs, 1));
    g->batch_ids = tm_malloc(sizeof(int32_t) * (size_t)g->total_prompt);
    g->batch_seq = tm_malloc(sizeof(int) * (size_t)g->total_prompt);
    g->batch_of = tm_malloc(sizeof(int) * (size_t)g->n_seqs);
    for (int q = 0; q < g->n_seqs; q++) g->seqs[q].out = tm_malloc(sizeof(int32_t) * (size_t)(o->n_predict + 1));
    if ((st = cli_start_backend(o, &g->m, &g->s, &g->be, &g->started, err)) != TM_OK) return st;
    g->t_load = tm_now() - t0;
    if (g->selecting) {
        /* one context per run: the first prompt's */
        st = cli_trust_begin(&g->tr, &g->to, &g->m, g->seqs[0].prompt, g->seqs[0].n_prompt, &g->sel, err);
        if (st != TM_OK) return st;
        g->have_trust = 1;
    }
    g->tok_im_end = g->tok ? tok_token_id(g->tok, "<|im_end|>") : -1;
    g->tok_eot = g->tok ? tok_token_id(g->tok, "<|endoftext|>") : -1;
    g->stream = g->n_seqs == 1 && !o->json;
    if (g->stream && g->tok) {
        g->stream_cap = tok_stream_cap(g->tok);
        tok_stream_init(&g->ts, g->tok);
        g->stream_buf = tm_malloc(g->stream_cap);
    }
    return TM_OK;
}

/* Every prompt in one forward pass; keeps the logits of each prompt's last
 * token. */
static tm_status gen_prefill(gen_run *g, tm_err *err)
{
    const int V = g->m.cfg.vocab_size;
    double t0 = tm_now();
    int T = 0;
    dist_set_step(&g->be, 0);
    for (int q = 0; q < g->n_seqs; q++)
        for (int i = 0; i < g->seqs[q].n_prompt; i++) {
            g->batch_ids[T] = g->seqs[q].prompt[i];
            g->batch_seq[T++] = q;
        }
    tm_status st;
    if (g->n_seqs == 1) {
        st = model_forward(&g->m, &g->s, g->batch_ids, T, &g->be, &g->sel, g->logits, 0, err);
    } else {
        float *all = tm_malloc(sizeof(float) * (size_t)V * (size_t)T); /* [T, vocab] */
        st = model_forward_batch(&g->m, &g->s, g->batch_ids, g->batch_seq, T, &g->be, &g->sel, all, err);
        for (int q = 0, end = 0; st == TM_OK && q < g->n_seqs; q++) {
            end += g->seqs[q].n_prompt;
            memcpy(g->logits + (size_t)q * V, all + (size_t)(end - 1) * V, sizeof(float) * (size_t)V);
        }
        free(all);
    }
    g->t_prefill = tm_now() - t0;
    return st;
}

/* Prints a sampled token of the streamed sequence: text, or ids without a
 * tokenizer. */
static void gen_emit(gen_run *g, const gen_seq *q, int32_t next)
{
    if (g->tok) {
        size_t k = tok_stream_push(&g->ts, next, g->stream_buf, g->stream_cap);
        fwrite(g->stream_buf, 1, k, stdout);
    } else {
        printf(q->n_out > 1 ? ",%d" : "%d", next);
    }
    fflush(stdout);
}

/* Marks q done when next ends it: an eos or chat stop id, -n reached, or a
 * full context.  Returns 1 when it stays live. */
static int gen_continues(gen_run *g, gen_seq *q, int qi, int32_t next)
{
    if (cfg_is_eos(&g->m.cfg, next) || next == g->tok_im_end || next == g->tok_eot) q->stop = "eos";
    else if (q->n_out >= g->o.n_predict) q->stop = "length";
    else if (g->s.seq_len[qi] >= g->s.max_ctx) q->stop = "context";
    else return 1;
    q->done = 1;
    return 0;
}

/* One token per live sequence per step until every sequence is done. */
static tm_status gen_decode(gen_run *g, tm_err *err)
{
    const int V = g->m.cfg.vocab_size;
    double t0 = tm_now();
    for (int step = 1;; step++) {
        int live = 0;
        for (int q = 0; q < g->n_seqs; q++) {
            gen_seq *sq = &g->seqs[q];
            if (sq->done) continue;
            int32_t next = sampler_sample(&g->smp, g->logits + (size_t)q * V);
            sq->out[sq->n_out++] = next;
            if (g->stream) gen_emit(g, sq, next);
            if (!gen_continues(g, sq, q, next)) continue;
            g->batch_ids[live] = next;
            g->batch_seq[live] = q;
            g->batch_of[live++] = q;
        }
        if (!live) break;
        dist_set_step(&g->be, step);
        tm_status st = model_forward_batch(&g->m, &g->s, g->batch_ids, g->batch_seq, live, &g->be, &g->sel,
                                           g->logits, err);
        if (st != TM_OK) return st;
        g->n_decoded += live;
        /* rows come back in batch order; put them at their sequence's slot */
        for (int i = live - 1; i >= 0; i--)
            if (g->batch_of[i] != i)
                memmove(g->logits + (size_t)g->batch_of[i] * V, g->logits + (size_t)i * V, sizeof(float) * (size_t)V);
    }
    g->t_decode = tm_now() - t0;
    if (g->stream) {
        if (g->tok) fwrite(g->stream_buf, 1, tok_stream_flush(&g->ts, g->stream_buf, g->stream_cap), stdout);
        printf("\n");
        fflush(stdout);
    }
    return TM_OK;
}

/* Timings on stderr; the sequences and timings as JSON on stdout with --json
 * or several sequences. */
static void gen_report(const gen_run *g)
{
    double ms_per_tok = g->n_decoded ? 1e3 * g->t_decode / g->n_decoded : 0.0;
    double tps = g->t_decode > 0 ? g->n_decoded / g->t_decode : 0.0;
    double pf_tps = g->total_prompt / (g->t_prefill > 0 ? g->t_prefill : 1e-9);
    fprintf(stderr, "trustmoe generate: load %.1f ms; prefill %d tokens in %.2f ms (%.2f tokens per second)\n",
            1e3 * g->t_load, g->total_prompt, 1e3 * g->t_prefill, pf_tps);
    fprintf(stderr, "trustmoe generate: decode %d tokens over %d sequences, %.2f ms per token, %.2f tokens per second\n",
            g->n_decoded, g->n_seqs, ms_per_tok, tps);
    if (g->have_trust) trust_run_print_summary(&g->tr, stderr);
    if (!g->o.json && g->n_seqs == 1) return;
    cJSON *json = cJSON_CreateObject();
    if (g->n_seqs == 1) {
        add_seq_json(json, &g->seqs[0], g->tok);
    } else {
        cJSON *arr = cJSON_AddArrayToObject(json, "sequences");
        for (int q = 0; q < g->n_seqs; q++) {
            cJSON *e = cJSON_CreateObject();
            add_seq_json(e, &g->seqs[q], g->tok);
            cJSON_AddItemToArray(arr, e);
        }
    }
    cJSON *tm = cJSON_AddObjectToObject(json, "timings");
    cJSON_AddNumberToObject(tm, "load_ms", 1e3 * g->t_load);
    cJSON_AddNumberToObject(tm, "prefill_ms", 1e3 * g->t_prefill);
    cJSON_AddNumberToObject(tm, "prefill_tokens_per_second", pf_tps);
    cJSON_AddNumberToObject(tm, "decode_ms_per_token", ms_per_tok);
    cJSON_AddNumberToObject(tm, "tokens_per_second", tps);
    cJSON_AddNumberToObject(tm, "decode_tokens", g->n_decoded);
    cJSON_AddNumberToObject(tm, "sequences", g->n_seqs);
    cJSON *split = cJSON_AddObjectToObject(tm, "split_ms");
    cJSON_AddNumberToObject(split, "attention", 1e3 * g->s.t_attn);
    cJSON_AddNumberToObject(split, "routing_selection", 1e3 * g->s.t_route);
    cJSON_AddNumberToObject(split, "experts", 1e3 * g->s.t_moe);
    cJSON_AddNumberToObject(split, "lm_head", 1e3 * g->s.t_head);
    char *text = cJSON_PrintUnformatted(json);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(json);
}

static void gen_free(gen_run *g)
{
    free(g->stream_buf);
    free(g->logits);
    free(g->batch_ids);
    free(g->batch_seq);
    free(g->batch_of);
    for (int q = 0; g->seqs && q < g->n_seqs; q++) {
        free(g->seqs[q].prompt);
        free(g->seqs[q].out);
    }
    free(g->seqs);
    if (g->have_trust) trust_run_close(&g->tr);
    if (g->have_smp) sampler_free(&g->smp);
    if (g->have_state) state_free(&g->s);
    if (g->have_model) model_free(&g->m);
    free(g->mask);
    if (g->tok) tok_free(g->tok);
}

/* ---- the command ------------------------------------------------------------- */

int cmd_generate(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: trustmoe generate -m DIR (-p TEXT | --ids 1,2,3 | --prompts FILE) -n N\n"
               "                         [--temp T --top-k K --top-p P -s SEED] [--chat] [--system TEXT] [--json]\n"
               "Generates with a KV cache; --temp 0 is greedy.  Text streams to stdout when the model\n"
               "folder has tokenizer.json.  --prompts runs one prompt per line (text, or ids '1,2,3')\n"
               "as one batch: attention per sequence, each layer's experts batched across all of them;\n"
               "--max-batch N caps the prompts of one batch (default 256).\n"
               "--chat wraps the prompt in the Qwen3 chat template (with --system as a system turn).\n"
               "Generation stops at an eos id (config.json, generation_config.json) or after -n tokens.\n");
        cli_usage_common(stdout);
        trust_opts_usage(stdout);
        return 0;
    }
    gen_run *g = tm_calloc(1, sizeof *g);
    g->sel = (tm_selector){NULL, NULL};
    tm_err err = {{0}};
    tm_status st = cli_parse_with_trust(&argc, argv, &g->o, &g->to, &g->selecting, &err);
    int sources = !!g->o.ids_arg + !!g->o.prompt + !!g->o.prompts_file;
    if (st == TM_OK && sources != 1) st = tm_errf(&err, TM_EINPUT, "give exactly one of -p TEXT, --ids or --prompts FILE");
    if (st != TM_OK) {
        free(g);
        return cli_fail("generate", &err, st);
    }
    int rc = 0;
    if (cli_run_worker(&g->o, &rc)) {
        free(g);
        return rc;
    }
    if ((st = gen_read_input(g, &err)) == TM_OK && (st = gen_setup(g, &err)) == TM_OK &&
        (st = gen_prefill(g, &err)) == TM_OK && (st = gen_decode(g, &err)) == TM_OK)
        gen_report(g);
    if (st != TM_OK) rc = cli_fail("generate", &err, st);
    rc = cli_finish(&g->be, g->started, rc, g->have_state ? &g->s : NULL);
    if (rc == 0 && g->have_trust && g->o.dist.stats_json &&
        add_selection_stats(g->o.dist.stats_json, &g->tr, &err) != TM_OK)
        rc = cli_fail("generate", &err, TM_EFAIL);
    gen_free(g);
    free(g);
    return rc;
}
