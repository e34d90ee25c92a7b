/* generate.c: the generate command: prompts in (ids, text, chat, or a file of
 * prompts generated as one batch), tokens out, streamed as text when the
 * model folder has a tokenizer. */
#include "cli.h"
#include "commands.h"
#include "kernels.h"
#include "input.h"
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
    cli_opts o;
    tm_err err = {{0}};
    trust_opts to;
    int selecting = 0;
    tm_status st = cli_parse_with_trust(&argc, argv, &o, &to, &selecting, &err);
    int sources = !!o.ids_arg + !!o.prompt + !!o.prompts_file;
    if (st == TM_OK && sources != 1) st = tm_errf(&err, TM_EINPUT, "give exactly one of -p TEXT, --ids or --prompts FILE");
    if (st != TM_OK) return cli_fail("generate", &err, st);

    int rc = 0;
    if (cli_run_worker(&o, &rc)) return rc;
    tok_tokenizer *tok = NULL;
    gen_seq *seqs = NULL;
    int n_seqs = 0, have_model = 0, have_state = 0, have_smp = 0, started = 0;
    unsigned char *mask = NULL;
    moe_backend be = {0};
    float *logits = NULL;
    int32_t *batch_ids = NULL;
    int *batch_seq = NULL, *batch_of = NULL;
    cJSON *json = NULL;
    tm_model m;
    tm_state s;
    sampler smp;
    trust_run tr;
    int have_trust = 0;
    tm_selector sel = {NULL, NULL};
    char *stream_buf = NULL;

    char tok_path[4200];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", o.model_dir);
    if (access(tok_path, F_OK) == 0 && (st = tok_load(tok_path, &tok, &err)) != TM_OK) goto out;
    if (o.prompts_file) {
        if ((st = read_prompts(tok, &o, &seqs, &n_seqs, &err)) != TM_OK) goto out;
    } else {
        seqs = tm_calloc(1, sizeof *seqs);
        n_seqs = 1;
        st = o.ids_arg ? cli_parse_ids(o.ids_arg, &seqs[0].prompt, &seqs[0].n_prompt, &err)
                       : encode_text(tok, &o, o.prompt, &seqs[0].prompt, &seqs[0].n_prompt, &err);
        if (st != TM_OK) goto out;
    }

    kern_set_threads(o.threads);
    double t_load = tm_now();
    if ((st = cli_load_model(&o, &m, &mask, &err)) != TM_OK) goto out;
    have_model = 1;
    int V = m.cfg.vocab_size, total_prompt = 0, longest = 0;
    if ((st = check_prompt_ids(seqs, n_seqs, &m.cfg, o.model_dir, &err)) != TM_OK) goto out;
    for (int q = 0; q < n_seqs; q++) {
        total_prompt += seqs[q].n_prompt;
        longest = TM_MAX(longest, seqs[q].n_prompt);
    }
    int ctx = o.ctx ? o.ctx : longest + o.n_predict;
    if (o.ctx && ctx > m.cfg.max_position_embeddings) {
        st = tm_errf(&err, TM_EINPUT, "-c %d exceeds max_position_embeddings %d of %s/config.json", ctx,
                     m.cfg.max_position_embeddings, o.model_dir);
        goto out;
    }
    ctx = TM_MIN(ctx, m.cfg.max_position_embeddings);
    if (longest > ctx) {
        st = tm_errf(&err, TM_EINPUT, "prompt of %d tokens is longer than the context of %d tokens", longest, ctx);
        goto out;
    }
    if ((st = state_init_batch(&s, &m, n_seqs, ctx, TM_MAX(total_prompt, n_seqs), &err)) != TM_OK) goto out;
    have_state = 1;
    sampler_init(&smp, &o.samp, V);
    have_smp = 1;
    logits = tm_malloc(sizeof(float) * (size_t)V * (size_t)TM_MAX(n_seqs, 1));
    batch_ids = tm_malloc(sizeof(int32_t) * (size_t)total_prompt);
    batch_seq = tm_malloc(sizeof(int) * (size_t)total_prompt);
    batch_of = tm_malloc(sizeof(int) * (size_t)n_seqs);
    for (int q = 0; q < n_seqs; q++) seqs[q].out = tm_malloc(sizeof(int32_t) * (size_t)(o.n_predict + 1));
    if ((st = cli_start_backend(&o, &m, &s, &be, &started, &err)) != TM_OK) goto out;
    t_load = tm_now() - t_load; /* with the workers' loading and handshake */
    if (selecting) {
        /* one context per run: the first prompt's */
        if ((st = cli_trust_begin(&tr, &to, &m, seqs[0].prompt, seqs[0].n_prompt, &sel, &err)) != TM_OK) goto out;
        have_trust = 1;
    }

    /* the chat stop tokens, beyond the config's eos ids */
    int32_t tok_im_end = tok ? tok_token_id(tok, "<|im_end|>") : -1;
    int32_t tok_eot = tok ? tok_token_id(tok, "<|endoftext|>") : -1;

    /* stream text only for a single sequence printed as it comes */
    int stream = n_seqs == 1 && !o.json;
    tok_stream ts;
    size_t stream_cap = tok ? tok_stream_cap(tok) : 0;
    if (stream && tok) {
        tok_stream_init(&ts, tok);
        stream_buf = tm_malloc(stream_cap);
    }

    /* prefill: every prompt in one pass; logits of each prompt's last token */
    double t0 = tm_now();
    int T = 0, step = 0;
    dist_set_step(&be, step++);
    for (int q = 0; q < n_seqs; q++)
        for (int i = 0; i < seqs[q].n_prompt; i++) {
            batch_ids[T] = seqs[q].prompt[i];
            batch_seq[T++] = q;
        }
    float *all = n_seqs == 1 ? NULL : tm_malloc(sizeof(float) * (size_t)V * (size_t)T);
    if (n_seqs == 1) {
        st = model_forward(&m, &s, batch_ids, T, &be, &sel, logits, 0, &err);
    } else {
        st = model_forward_batch(&m, &s, batch_ids, batch_seq, T, &be, &sel, all, &err);
        for (int q = 0, end = 0; st == TM_OK && q < n_seqs; q++) {
            end += seqs[q].n_prompt;
            memcpy(logits + (size_t)q * V, all + (size_t)(end - 1) * V, sizeof(float) * (size_t)V);
        }
    }
    free(all);
    if (st != TM_OK) goto out;
    double t_prefill = tm_now() - t0, t1 = tm_now();

    /* decode: one token per live sequence per step */
    int n_tokens_decoded = 0;
    for (;;) {
        int live = 0;
        for (int q = 0; q < n_seqs; q++) {
            gen_seq *g = &seqs[q];
            if (g->done) continue;
            int32_t next = sampler_sample(&smp, logits + (size_t)q * V);
            g->out[g->n_out++] = next;
            if (stream) {
                if (tok) {
                    size_t k = tok_stream_push(&ts, next, stream_buf, stream_cap);
                    fwrite(stream_buf, 1, k, stdout);
                } else {
                    printf(g->n_out > 1 ? ",%d" : "%d", next);
                }
                fflush(stdout);
            }
            if (cfg_is_eos(&m.cfg, next) || next == tok_im_end || next == tok_eot) {
                g->done = 1;
                g->stop = "eos";
            } else if (g->n_out >= o.n_predict) {
                g->done = 1;
                g->stop = "length";
            } else if (s.seq_len[q] >= s.max_ctx) {
                g->done = 1;
                g->stop = "context";
            } else {
                batch_ids[live] = next;
                batch_seq[live] = q;
                batch_of[live++] = q;
            }
        }
        if (!live) break;
        dist_set_step(&be, step++);
        st = model_forward_batch(&m, &s, batch_ids, batch_seq, live, &be, &sel, logits, &err);
        if (st != TM_OK) goto out;
        n_tokens_decoded += live;
        /* rows come back in batch order; put them at their sequence's slot */
        for (int i = live - 1; i >= 0; i--)
            if (batch_of[i] != i) memmove(logits + (size_t)batch_of[i] * V, logits + (size_t)i * V, sizeof(float) * (size_t)V);
    }
    double t_decode = tm_now() - t1;
    if (stream) {
        if (tok) fwrite(stream_buf, 1, tok_stream_flush(&ts, stream_buf, stream_cap), stdout);
        printf("\n");
        fflush(stdout);
    }

    double ms_per_tok = n_tokens_decoded ? 1e3 * t_decode / n_tokens_decoded : 0.0;
    double tps = t_decode > 0 ? n_tokens_decoded / t_decode : 0.0;
    fprintf(stderr, "trustmoe generate: load %.1f ms; prefill %d tokens in %.2f ms (%.2f tokens per second)\n",
            1e3 * t_load, total_prompt, 1e3 * t_prefill, total_prompt / (t_prefill > 0 ? t_prefill : 1e-9));
    fprintf(stderr, "trustmoe generate: decode %d tokens over %d sequences, %.2f ms per token, %.2f tokens per second\n",
            n_tokens_decoded, n_seqs, ms_per_tok, tps);
    if (have_trust) trust_run_print_summary(&tr, stderr);
    if (o.json || n_seqs > 1) {
        json = cJSON_CreateObject();
        if (n_seqs == 1) {
            add_seq_json(json, &seqs[0], tok);
        } else {
            cJSON *arr = cJSON_AddArrayToObject(json, "sequences");
            for (int q = 0; q < n_seqs; q++) {
                cJSON *e = cJSON_CreateObject();
                add_seq_json(e, &seqs[q], tok);
                cJSON_AddItemToArray(arr, e);
            }
        }
        cJSON *tm = cJSON_AddObjectToObject(json, "timings");
        cJSON_AddNumberToObject(tm, "load_ms", 1e3 * t_load);
        cJSON_AddNumberToObject(tm, "prefill_ms", 1e3 * t_prefill);
        cJSON_AddNumberToObject(tm, "prefill_tokens_per_second", total_prompt / (t_prefill > 0 ? t_prefill : 1e-9));
        cJSON_AddNumberToObject(tm, "decode_ms_per_token", ms_per_tok);
        cJSON_AddNumberToObject(tm, "tokens_per_second", tps);
        cJSON_AddNumberToObject(tm, "decode_tokens", n_tokens_decoded);
        cJSON_AddNumberToObject(tm, "sequences", n_seqs);
        cJSON *split = cJSON_AddObjectToObject(tm, "split_ms");
        cJSON_AddNumberToObject(split, "attention", 1e3 * s.t_attn);
        cJSON_AddNumberToObject(split, "routing_selection", 1e3 * s.t_route);
        cJSON_AddNumberToObject(split, "experts", 1e3 * s.t_moe);
        cJSON_AddNumberToObject(split, "lm_head", 1e3 * s.t_head);
        char *text = cJSON_PrintUnformatted(json);
        printf("%s\n", text);
        free(text);
    }
out:
    if (st != TM_OK) rc = cli_fail("generate", &err, st);
    rc = cli_finish(&be, started, rc, have_state ? &s : NULL);
    if (rc == 0 && have_trust && o.dist.stats_json && add_selection_stats(o.dist.stats_json, &tr, &err) != TM_OK)
        rc = cli_fail("generate", &err, TM_EFAIL);
    cJSON_Delete(json);
    free(stream_buf);
    free(logits);
    free(batch_ids);
    free(batch_seq);
    free(batch_of);
    for (int q = 0; seqs && q < n_seqs; q++) {
        free(seqs[q].prompt);
        free(seqs[q].out);
    }
    free(seqs);
    if (have_trust) trust_run_close(&tr);
    if (have_smp) sampler_free(&smp);
    if (have_state) state_free(&s);
    if (have_model) model_free(&m);
    free(mask);
    if (tok) tok_free(tok);
    return rc;
}
