/* trust_cli.c: trust selection on the engine: flags, the per-run bundle and
 * the commands `trust fit-contexts`, `trust train`, `trust show` and `eval`
 * (see trust_cli.h). */
#include "trust_cli.h"

#include "dist.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "kernels.h"
#include "tokenizer.h"

/* ---- flags ---------------------------------------------------------------- */

void trust_opts_default(trust_opts *o)
{
    trust_select_params sp = trust_select_default_params();
    memset(o, 0, sizeof *o);
    o->mode = sp.mode;
    o->alpha = sp.alpha;
    o->min_evidence = sp.min_evidence;
    o->epsilon = sp.epsilon;
    o->seed = sp.seed;
    o->ema_rate = trust_db_default_params().ema_rate;
    o->atp_budget = -1;
    o->window = 128;
    o->epochs = 1;
    o->n_contexts = 8;
}

void trust_opts_usage(FILE *f)
{
    fprintf(f, "trust selection options:\n"
               "  --trust-db PATH      reputation database (SQLite, created if missing)\n"
               "  --select MODE        router (default) | blend | trust-first\n"
               "  --alpha A            blend: router share in [0,1] (default 0.95)\n"
               "  --min-evidence N     trust-first: windows of evidence to lead (default 2)\n"
               "  --epsilon E          trust-first: exploration probability (default 0)\n"
               "  --trust-seed S       exploration seed (default 42)\n"
               "  --trust-rate R       trust EMA rate (default 0.1)\n"
               "  --policy FILE        expert authorization policy (JSON)\n"
               "  --requester ID       requester id the policy is applied for\n"
               "  --atp-budget N       per-request ATP budget (default off)\n"
               "  --context NAME       use this context instead of classifying\n"
               "  --stats-json PATH    write per-layer diversity metrics as JSON\n"
               "  --corpus FILE        text (needs tokenizer.json) or token ids\n"
               "  --window N           tokens per quality window (default 128)\n"
               "  --max-windows N      stop after N windows (default all)\n"
               "  --epochs N           train: passes over the corpus (default 1)\n"
               "  --contexts K         fit-contexts: number of contexts (default 8)\n");
}

static tm_status take_int(const char *flag, const char *v, long lo, long hi, long *out, tm_err *err)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi)
        return tm_errf(err, TM_EINPUT, "%s: '%s' is not an integer in [%ld, %ld]", flag, v, lo, hi);
    *out = x;
    return TM_OK;
}

static tm_status take_real(const char *flag, const char *v, double lo, double hi, double *out,
                           tm_err *err)
{
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !(x >= lo && x <= hi))
        return tm_errf(err, TM_EINPUT, "%s: '%s' is not a number in [%g, %g]", flag, v, lo, hi);
    *out = x;
    return TM_OK;
}

tm_status trust_opts_take(int *argc, char **argv, trust_opts *o, tm_err *err)
{
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i], *v = i + 1 < *argc ? argv[i + 1] : NULL;
        static const char *const flags[] = {
            "--trust-db", "--select", "--alpha", "--min-evidence", "--epsilon", "--trust-seed",
            "--trust-rate", "--policy", "--requester", "--atp-budget", "--context", "--stats-json",
            "--corpus", "--window", "--max-windows", "--epochs", "--contexts"};
        int known = 0;
        for (size_t j = 0; j < TM_ARRAY_LEN(flags) && !known; j++) known = !strcmp(a, flags[j]);
        if (!known) {
            argv[out++] = argv[i];
            continue;
        }
        if (!v) return tm_errf(err, TM_EINPUT, "%s needs a value", a);
        i++;
        tm_status st = TM_OK;
        long n = 0;
        double x = 0;
        if (!strcmp(a, "--trust-db")) o->db_path = v;
        else if (!strcmp(a, "--select")) st = trust_select_mode_parse(v, &o->mode, err);
        else if (!strcmp(a, "--alpha")) {
            if (!(st = take_real(a, v, 0, 1, &x, err))) o->alpha = (float)x;
        } else if (!strcmp(a, "--min-evidence")) {
            if (!(st = take_int(a, v, 0, 1 << 30, &n, err))) o->min_evidence = (int)n;
        } else if (!strcmp(a, "--epsilon")) {
            if (!(st = take_real(a, v, 0, 1, &x, err))) o->epsilon = (float)x;
        } else if (!strcmp(a, "--trust-seed")) {
            if (!(st = take_int(a, v, 0, 0x7fffffffL, &n, err))) o->seed = (uint64_t)n;
        } else if (!strcmp(a, "--trust-rate")) {
            if (!(st = take_real(a, v, 1e-9, 1, &x, err))) o->ema_rate = x;
        } else if (!strcmp(a, "--policy")) o->policy_path = v;
        else if (!strcmp(a, "--requester")) o->requester = v;
        else if (!strcmp(a, "--atp-budget")) {
            if (!(st = take_int(a, v, 0, 0x7fffffffL, &n, err))) o->atp_budget = n;
        } else if (!strcmp(a, "--context")) o->context = v;
        else if (!strcmp(a, "--stats-json")) o->stats_json = v;
        else if (!strcmp(a, "--corpus")) o->corpus = v;
        else if (!strcmp(a, "--window")) {
            if (!(st = take_int(a, v, 2, 1 << 20, &n, err))) o->window = (int)n;
        } else if (!strcmp(a, "--max-windows")) {
            if (!(st = take_int(a, v, 0, 1 << 30, &n, err))) o->max_windows = (int)n;
        } else if (!strcmp(a, "--epochs")) {
            if (!(st = take_int(a, v, 1, 1 << 20, &n, err))) o->epochs = (int)n;
        } else if (!strcmp(a, "--contexts")) {
            if (!(st = take_int(a, v, 1, 4096, &n, err))) o->n_contexts = (int)n;
        }
        if (st) return st;
    }
    *argc = out;
    argv[out] = NULL;
    return TM_OK;
}

/* ---- the per-run bundle -------------------------------------------------------- */

void trust_model_id(const tm_model *m, char *buf, size_t size)
{
    snprintf(buf, size, "qwen3moe-%016llx", (unsigned long long)m->identity);
}

tm_status trust_run_open(trust_run *r, const trust_opts *o, const tm_model *m, tm_err *err)
{
    tm_status st = TM_OK;
    const tm_config *c = &m->cfg;
    memset(r, 0, sizeof *r);
    r->o = *o;
    trust_model_id(m, r->model_id, sizeof r->model_id);
    r->n_layers = c->num_layers;
    r->n_experts = c->num_experts;
    r->top_k = c->top_k;
    r->hidden = c->hidden_size;
    if (r->n_experts <= 0 || r->top_k <= 0)
        return tm_errf(err, TM_EINPUT, "%s: not a mixture-of-experts model", m->dir);
    r->mean = tm_malloc((size_t)r->hidden * sizeof *r->mean);
    r->row = tm_malloc((size_t)r->hidden * sizeof *r->row);
    if (o->db_path) {
        trust_db_params dp = trust_db_default_params();
        dp.ema_rate = o->ema_rate;
        if ((st = trust_db_open(&r->db, o->db_path, &dp, err))) goto fail;
        r->have_db = 1;
        if ((st = trust_db_load_contexts(&r->db, r->model_id, &r->ctx, &r->have_ctx, err))) goto fail;
        if (r->have_ctx && r->ctx.dim != r->hidden) {
            st = tm_errf(err, TM_EINPUT, "%s: contexts of model %s have dim %d, the model's hidden size is %d",
                         o->db_path, r->model_id, r->ctx.dim, r->hidden);
            goto fail;
        }
    }
    r->n_tables = (r->have_ctx ? r->ctx.k : 0) + 1;
    r->tables = tm_calloc((size_t)r->n_tables, sizeof *r->tables);
    for (int j = 0; j < r->n_tables; j++) {
        char name[24];
        if (j < r->n_tables - 1) trust_context_name(j, name, sizeof name);
        else snprintf(name, sizeof name, "general");
        trust_table_init(&r->tables[j], r->n_layers, r->n_experts, name);
        if (r->have_db && (st = trust_db_load_table(&r->db, r->model_id, &r->tables[j], err))) goto fail;
    }
    r->cur = r->n_tables - 1;
    if (o->context) {
        r->cur = -1;
        for (int j = 0; j < r->n_tables; j++)
            if (!strcmp(r->tables[j].context, o->context)) r->cur = j;
        if (r->cur < 0) {
            st = tm_errf(err, TM_EINPUT, "--context %s: not a context of this model (%d fitted; \"general\" always exists)",
                         o->context, r->n_tables - 1);
            goto fail;
        }
    }
    if (o->policy_path) {
        if ((st = trust_policy_load(&r->pol, o->policy_path, r->n_layers, r->n_experts, err))) goto fail;
        r->have_pol = 1;
    }
    trust_select_params sp = trust_select_default_params();
    sp.mode = o->mode;
    sp.n_layers = r->n_layers;
    sp.n_experts = r->n_experts;
    sp.top_k = r->top_k;
    sp.alpha = o->alpha;
    sp.min_evidence = o->min_evidence;
    sp.epsilon = o->epsilon;
    sp.seed = o->seed;
    if ((st = trust_selector_init(&r->sel, &sp, err))) goto fail;
    if ((st = trust_selector_set_policy(&r->sel, r->have_pol ? &r->pol : NULL, o->requester, err))) goto fail;
    if ((st = trust_selector_set_table(&r->sel, &r->tables[r->cur], err))) goto fail;
    trust_selector_set_budget(&r->sel, o->atp_budget);
    trust_metrics_init(&r->metrics, r->n_layers, r->n_experts);
    trust_selector_set_metrics(&r->sel, &r->metrics);
    return TM_OK;
fail:
    trust_run_close(r);
    return st;
}

tm_status trust_run_begin_request(trust_run *r, const tm_model *m, const int32_t *ids, int n, tm_err *err)
{
    r->conf = 1.0f;
    if (!r->o.context) {
        r->cur = r->n_tables - 1;
        if (r->have_ctx && n > 0) {
            for (int j = 0; j < r->hidden; j++) r->mean[j] = 0.0f;
            for (int t = 0; t < n; t++) {
                kern_row_f32(&m->embed, ids[t], r->row);
                for (int j = 0; j < r->hidden; j++) r->mean[j] += r->row[j];
            }
            for (int j = 0; j < r->hidden; j++) r->mean[j] /= (float)n;
            int c = trust_contexts_classify(&r->ctx, r->mean, NULL, &r->conf);
            if (c >= 0) r->cur = c;
        }
    }
    tm_status st = trust_selector_set_table(&r->sel, &r->tables[r->cur], err);
    trust_selector_set_budget(&r->sel, r->o.atp_budget);
    if (!st && !r->quiet) {
        const char *name = r->tables[r->cur].context;
        if (r->o.context) fprintf(stderr, "trust: context %s (from --context)\n", name);
        else if (!r->have_ctx) fprintf(stderr, "trust: context %s (no contexts fitted)\n", name);
        else fprintf(stderr, "trust: context %s (confidence %.3f)\n", name, (double)r->conf);
    }
    return st;
}

const char *trust_run_context(const trust_run *r)
{
    return r->tables[r->cur].context;
}

tm_selector trust_run_selector(trust_run *r)
{
    tm_selector s = {trust_select_hook, &r->sel};
    return s;
}

static cJSON *stats_doc(const trust_run *r)
{
    char *text = trust_metrics_json(&r->metrics);
    cJSON *doc = cJSON_Parse(text);
    free(text);
    TM_ASSERT(doc != NULL);
    cJSON_AddStringToObject(doc, "model", r->model_id);
    cJSON_AddStringToObject(doc, "select", trust_select_mode_name(r->o.mode));
    cJSON_AddNumberToObject(doc, "alpha", r->o.alpha);
    cJSON_AddNumberToObject(doc, "min_evidence", r->o.min_evidence);
    cJSON_AddNumberToObject(doc, "epsilon", r->o.epsilon);
    return doc;
}

static tm_status write_doc(cJSON *doc, const char *path, tm_err *err)
{
    char *s = cJSON_Print(doc);
    FILE *f = fopen(path, "w");
    tm_status st = TM_OK;
    if (!f || fputs(s, f) < 0 || fputc('\n', f) < 0) st = tm_errf(err, TM_EFAIL, "%s: cannot write stats", path);
    if (f && fclose(f) != 0 && !st) st = tm_errf(err, TM_EFAIL, "%s: cannot write stats", path);
    free(s);
    return st;
}

tm_status trust_run_finish(trust_run *r, tm_err *err)
{
    if (!r->o.stats_json) return TM_OK;
    cJSON *doc = stats_doc(r);
    tm_status st = write_doc(doc, r->o.stats_json, err);
    cJSON_Delete(doc);
    return st;
}

void trust_run_close(trust_run *r)
{
    for (int j = 0; j < r->n_tables; j++) trust_table_free(&r->tables[j]);
    free(r->tables);
    if (r->have_pol) trust_policy_free(&r->pol);
    if (r->have_ctx) trust_contexts_free(&r->ctx);
    if (r->have_db) trust_db_close(&r->db);
    if (r->sel.ok) trust_selector_free(&r->sel);
    if (r->metrics.load) trust_metrics_free(&r->metrics);
    free(r->mean);
    free(r->row);
    memset(r, 0, sizeof *r);
}

/* ---- corpus ----------------------------------------------------------------------- */

static int is_ids(const char *s)
{
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || *s == ',' || *s == ' ' || *s == '\n' || *s == '\r' || *s == '\t'))
            return 0;
    return 1;
}

/* The corpus as token ids: a file of comma/space separated ids, or text
 * encoded with DIR/tokenizer.json. */
static tm_status read_corpus(const char *path, const char *model_dir, int vocab, int32_t **ids, size_t *n,
                             tm_err *err)
{
    char *text = NULL;
    size_t len = 0;
    tok_tokenizer *tok = NULL;
    *ids = NULL;
    *n = 0;
    tm_status st = tm_read_file(path, &text, &len, err);
    if (st) return st;
    if (is_ids(text)) {
        size_t cap = 1024, cnt = 0;
        int32_t *v = tm_malloc(cap * sizeof *v);
        for (char *p = text; *p;) {
            while (*p && (*p < '0' || *p > '9')) p++;
            if (!*p) break;
            long x = strtol(p, &p, 10);
            if (x >= vocab) {
                free(v);
                st = tm_errf(err, TM_EINPUT, "%s: token id %ld out of range (vocab %d)", path, x, vocab);
                goto done;
            }
            if (cnt == cap) v = tm_realloc(v, (cap *= 2) * sizeof *v);
            v[cnt++] = (int32_t)x;
        }
        *ids = v;
        *n = cnt;
    } else {
        char tok_path[4200];
        snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", model_dir);
        if (access(tok_path, F_OK) != 0) {
            st = tm_errf(err, TM_EINPUT, "%s: text corpus needs %s (or give token ids)", path, tok_path);
            goto done;
        }
        if ((st = tok_load(tok_path, &tok, err))) goto done;
        st = tok_encode(tok, text, len, ids, n, err);
    }
    if (!st && *n < 2) st = tm_errf(err, TM_EINPUT, "%s: fewer than 2 tokens", path);
done:
    if (tok) tok_free(tok);
    free(text);
    return st;
}

/* ---- teacher-forced passes (train, eval) ------------------------------------------- */

typedef struct {
    trust_quality_acc acc;
} route_obs;

static void on_route(void *ctx, int layer, const int32_t *ids, const float *w, const float *probs, int T)
{
    route_obs *o = ctx;
    trust_quality_add_batch(&o->acc, layer, ids, w, T, o->acc.k);
}

/* Σ -log softmax(logits[t])[next[t]] over t < T, in double. */
static double cross_entropy(const float *logits, const int32_t *next, int T, int V)
{
    double ce = 0;
    for (int t = 0; t < T; t++) {
        const float *l = logits + (size_t)t * V;
        float mx = l[0];
        for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
        double s = 0;
        for (int v = 0; v < V; v++) s += exp((double)l[v] - mx);
        ce += log(s) + mx - l[next[t]];
    }
    return ce;
}

static void print_diversity(const trust_run *r, FILE *f)
{
    fprintf(f, "layer  distinct  entropy  gini   top4   changed\n");
    double d = 0, h = 0, g = 0, t4 = 0, ch = 0;
    int n = 0;
    for (int l = 0; l < r->n_layers; l++) {
        if (r->metrics.selections[l] == 0) continue;
        trust_layer_stats s;
        trust_metrics_layer(&r->metrics, l, &s);
        fprintf(f, "%5d  %8d  %7.3f  %5.3f  %5.3f  %7.3f\n", l, s.distinct, s.entropy, s.gini, s.top4_share,
                s.changed_frac);
        d += s.distinct, h += s.entropy, g += s.gini, t4 += s.top4_share, ch += s.changed_frac, n++;
    }
    if (n)
        fprintf(f, " mean  %8.1f  %7.3f  %5.3f  %5.3f  %7.3f\n", d / n, h / n, g / n, t4 / n, ch / n);
}

void trust_run_print_summary(const trust_run *r, FILE *f)
{
    const trust_table *t = &r->tables[r->cur];
    fprintf(f, "trust: select %s, context %s; per-layer expert load:\n", trust_select_mode_name(r->o.mode), t->context);
    print_diversity(r, f);
    fprintf(f, "layer  mean-trust  min    max    experts-with-evidence\n");
    for (int l = 0; l < r->n_layers; l++) {
        double sum = 0, lo = 1, hi = 0;
        int with = 0;
        for (int e = 0; e < r->n_experts; e++) {
            double v = t->trust[(size_t)l * r->n_experts + e];
            sum += v, lo = v < lo ? v : lo, hi = v > hi ? v : hi;
            with += t->evidence[(size_t)l * r->n_experts + e] > 0;
        }
        fprintf(f, "%5d  %10.4f  %5.3f  %5.3f  %d/%d\n", l, sum / r->n_experts, lo, hi, with, r->n_experts);
    }
}

/* train != 0: fold each window's quality into the database. */
static int run_passes(const char *cmd, int argc, char **argv, int train)
{
    trust_opts to;
    cli_opts o;
    tm_err err = {{0}};
    trust_opts_default(&to);
    tm_status st = trust_opts_take(&argc, argv, &to, &err);
    if (!st) st = cli_parse_opts(argc, argv, &o, &err);
    if (!st && !to.corpus) st = tm_errf(&err, TM_EINPUT, "--corpus FILE is required");
    if (!st && train && !to.db_path) st = tm_errf(&err, TM_EINPUT, "--trust-db PATH is required");
    if (st) return cli_fail(cmd, &err, st);

    int have_model = 0, have_state = 0, have_run = 0;
    tm_model m;
    tm_state s;
    trust_run r;
    route_obs obs = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    float *logits = NULL;
    kern_set_threads(o.threads);
    if ((st = model_load(&m, o.model_dir, &o.load, &err))) goto out;
    have_model = 1;
    const tm_config *c = &m.cfg;
    if ((st = read_corpus(to.corpus, o.model_dir, c->vocab_size, &ids, &n_ids, &err))) goto out;
    int W = TM_MIN(to.window, c->max_position_embeddings);
    if ((st = state_init(&s, &m, W, W, &err))) goto out;
    have_state = 1;
    if ((st = trust_run_open(&r, &to, &m, &err))) goto out;
    have_run = 1;
    r.quiet = 1; /* one request per window: too many to print */
    trust_quality_init(&obs.acc, c->num_layers, c->num_experts, c->top_k);
    s.on_route = on_route;
    s.observer_ctx = &obs;
    logits = tm_malloc((size_t)W * c->vocab_size * sizeof *logits);
    moe_backend be = model_local_backend(&m, &s);
    tm_selector sel = trust_run_selector(&r);
    fprintf(stderr, "%s: model %s, select %s, %zu tokens in windows of %d\n", cmd, r.model_id,
            trust_select_mode_name(to.mode), n_ids, W);
    char run_key[4200];
    snprintf(run_key, sizeof run_key, "corpus=%s window=%d", to.corpus, W);

    double ce_total = 0, q_sum = 0, t0 = tm_now();
    int64_t scored = 0, windows = 0;
    for (int ep = 0; ep < (train ? to.epochs : 1); ep++) {
        double ce_ep = 0;
        int64_t sc_ep = 0, win_ep = 0;
        for (size_t w0 = 0; w0 + 1 < n_ids; w0 += (size_t)W) {
            if (to.max_windows && win_ep >= to.max_windows) break;
            int T = (int)TM_MIN((size_t)W, n_ids - w0);
            /* every window has the full length, as the PyTorch reference
             * measures; only a corpus shorter than one window is scored short */
            if (T < 2 || (T < W && w0 > 0)) break;
            if ((st = trust_run_begin_request(&r, &m, ids + w0, T, &err))) goto out;
            state_reset(&s);
            trust_quality_reset(&obs.acc);
            if ((st = model_forward(&m, &s, ids + w0, T, &be, &sel, logits, 1, &err))) goto out;
            double ce = cross_entropy(logits, ids + w0 + 1, T - 1, c->vocab_size);
            trust_quality_add_ce(&obs.acc, ce, T - 1);
            ce_ep += ce;
            sc_ep += T - 1;
            win_ep++;
            if (train) {
                /* The window's updates and its progress count commit
                 * together: after a crash the count says exactly which
                 * windows the reputation holds. */
                double q;
                trust_table *tab = &r.tables[r.cur];
                if ((st = trust_db_begin(&r.db, &err))) goto out;
                st = trust_quality_commit(&obs.acc, &r.db, r.model_id, tab, to.ema_rate, (int64_t)time(NULL), &q,
                                          &err);
                if (!st) st = trust_db_add_progress(&r.db, r.model_id, run_key, 1, &err);
                if (st) {
                    trust_db_rollback(&r.db);
                    goto out;
                }
                if ((st = trust_db_commit(&r.db, &err))) goto out;
                trust_selector_refresh(&r.sel);
                if (to.atp_budget >= 0) trust_selector_reward(&r.sel, q);
                q_sum += q;
            }
        }
        ce_total += ce_ep;
        scored += sc_ep;
        windows += win_ep;
        if (train)
            fprintf(stderr, "%s: epoch %d: %lld windows, perplexity %.4f\n", cmd, ep + 1, (long long)win_ep,
                    exp(ce_ep / (double)(sc_ep ? sc_ep : 1)));
    }
    double ppl = exp(ce_total / (double)(scored ? scored : 1));
    double secs = tm_now() - t0;
    fprintf(stderr, "%s: %lld windows, %lld scored tokens in %.2f s (%.1f tokens per second)\n", cmd,
            (long long)windows, (long long)scored, secs, (double)(scored + windows) / (secs > 0 ? secs : 1));
    printf("select %s: perplexity %.6f over %lld tokens (%lld windows)\n", trust_select_mode_name(to.mode), ppl,
           (long long)scored, (long long)windows);
    if (train) printf("mean window quality %.6f\n", windows ? q_sum / (double)windows : 0.0);
    print_diversity(&r, stdout);
    if (to.stats_json) {
        cJSON *doc = stats_doc(&r);
        cJSON_AddNumberToObject(doc, "perplexity", ppl);
        cJSON_AddNumberToObject(doc, "tokens", (double)scored);
        cJSON_AddNumberToObject(doc, "windows", (double)windows);
        st = write_doc(doc, to.stats_json, &err);
        cJSON_Delete(doc);
    }
out:
    free(logits);
    free(ids);
    if (obs.acc.wsum) trust_quality_free(&obs.acc);
    if (have_run) trust_run_close(&r);
    if (have_state) state_free(&s);
    if (have_model) model_free(&m);
    return st ? cli_fail(cmd, &err, st) : 0;
}

/* ---- fit-contexts ------------------------------------------------------------------ */

static int fit_contexts(int argc, char **argv)
{
    const char *cmd = "trust fit-contexts";
    trust_opts to;
    cli_opts o;
    tm_err err = {{0}};
    trust_opts_default(&to);
    tm_status st = trust_opts_take(&argc, argv, &to, &err);
    if (!st) st = cli_parse_opts(argc, argv, &o, &err);
    if (!st && (!to.corpus || !to.db_path)) st = tm_errf(&err, TM_EINPUT, "--corpus FILE and --trust-db PATH are required");
    if (st) return cli_fail(cmd, &err, st);

    int have_model = 0, have_db = 0;
    tm_model m;
    trust_db db;
    trust_contexts ctx = {0};
    int32_t *ids = NULL, *assign = NULL;
    size_t n_ids = 0;
    float *x = NULL, *row = NULL;
    unsigned char *no_experts = NULL;
    /* Only the embeddings are needed: load no expert. */
    if (o.load.expert_mask == NULL) {
        /* the config is not known before loading: a mask as large as any
         * config validation admits */
        no_experts = tm_calloc((size_t)CFG_MAX_LAYERS * CFG_MAX_EXPERTS, 1);
        o.load.expert_mask = no_experts;
    }
    if ((st = model_load(&m, o.model_dir, &o.load, &err))) goto out;
    have_model = 1;
    const tm_config *c = &m.cfg;
    if ((st = read_corpus(to.corpus, o.model_dir, c->vocab_size, &ids, &n_ids, &err))) goto out;
    int W = to.window, H = c->hidden_size;
    int n = (int)((n_ids + (size_t)W - 1) / (size_t)W);
    if (to.max_windows && n > to.max_windows) n = to.max_windows;
    x = tm_malloc((size_t)n * H * sizeof *x);
    row = tm_malloc((size_t)H * sizeof *row);
    assign = tm_malloc((size_t)n * sizeof *assign);
    for (int i = 0; i < n; i++) {
        size_t w0 = (size_t)i * W;
        int T = (int)TM_MIN((size_t)W, n_ids - w0);
        float *xi = x + (size_t)i * H;
        for (int j = 0; j < H; j++) xi[j] = 0.0f;
        for (int t = 0; t < T; t++) {
            kern_row_f32(&m.embed, ids[w0 + t], row);
            for (int j = 0; j < H; j++) xi[j] += row[j];
        }
        for (int j = 0; j < H; j++) xi[j] /= (float)T;
    }
    trust_kmeans_params kp = trust_kmeans_default_params();
    kp.k = to.n_contexts;
    kp.seed = to.seed;
    if ((st = trust_contexts_fit(&ctx, x, n, H, &kp, assign, &err))) goto out;
    trust_db_params dp = trust_db_default_params();
    if ((st = trust_db_open(&db, to.db_path, &dp, &err))) goto out;
    have_db = 1;
    char model_id[40];
    trust_model_id(&m, model_id, sizeof model_id);
    if ((st = trust_db_save_contexts(&db, model_id, &ctx, &err))) goto out;
    printf("model %s: %d contexts from %d windows of %d tokens\n", model_id, ctx.k, n, W);
    for (int j = 0; j < ctx.k; j++) {
        double conf = 0;
        for (int i = 0; i < n; i++) {
            if (assign[i] != j) continue;
            float cf;
            trust_contexts_classify(&ctx, x + (size_t)i * H, NULL, &cf);
            conf += cf;
        }
        printf("context_%d: %lld windows, mean confidence %.3f\n", j, (long long)ctx.n_samples[j],
               ctx.n_samples[j] ? conf / (double)ctx.n_samples[j] : 0.0);
    }
out:
    trust_contexts_free(&ctx);
    if (have_db) trust_db_close(&db);
    if (have_model) model_free(&m);
    free(no_experts);
    free(ids);
    free(x);
    free(row);
    free(assign);
    return st ? cli_fail(cmd, &err, st) : 0;
}

/* ---- show ---------------------------------------------------------------------------- */

static int show(int argc, char **argv)
{
    const char *cmd = "trust show";
    trust_opts to;
    tm_err err = {{0}};
    trust_opts_default(&to);
    tm_status st = trust_opts_take(&argc, argv, &to, &err);
    if (!st && argc > 1) st = tm_errf(&err, TM_EINPUT, "unknown option '%s'", argv[1]);
    if (!st && !to.db_path) st = tm_errf(&err, TM_EINPUT, "--trust-db PATH is required");
    if (st) return cli_fail(cmd, &err, st);
    trust_db db;
    trust_db_params dp = trust_db_default_params();
    dp.read_only = 1;
    if ((st = trust_db_open(&db, to.db_path, &dp, &err))) return cli_fail(cmd, &err, st);
    printf("%s: schema version %d\n", to.db_path, trust_db_schema_version(&db));
    sqlite3_stmt *q = NULL;
    const char *sql = "SELECT model, context, count(*), sum(evidence), avg(trust), min(trust), max(trust) "
                      "FROM trust GROUP BY model, context ORDER BY model, context";
    if (sqlite3_prepare_v2(db.db, sql, -1, &q, NULL) == SQLITE_OK) {
        printf("model  context  entries  evidence  mean_trust  min  max\n");
        while (sqlite3_step(q) == SQLITE_ROW)
            printf("%s  %s  %lld  %lld  %.4f  %.4f  %.4f\n", sqlite3_column_text(q, 0), sqlite3_column_text(q, 1),
                   (long long)sqlite3_column_int64(q, 2), (long long)sqlite3_column_int64(q, 3),
                   sqlite3_column_double(q, 4), sqlite3_column_double(q, 5), sqlite3_column_double(q, 6));
    }
    sqlite3_finalize(q);
    if (sqlite3_prepare_v2(db.db, "SELECT model, k, dim FROM context_set ORDER BY model", -1, &q, NULL) == SQLITE_OK)
        while (sqlite3_step(q) == SQLITE_ROW)
            printf("contexts of %s: k=%d dim=%d\n", sqlite3_column_text(q, 0), sqlite3_column_int(q, 1),
                   sqlite3_column_int(q, 2));
    sqlite3_finalize(q);
    trust_db_close(&db);
    return 0;
}

/* ---- check, dump -------------------------------------------------------------------- */

/* PRAGMA integrity_check; prints its verdict, exit 1 unless "ok". */
/* The database of `--trust-db PATH`, the only option of check and dump.
 * Returns 0, or the exit code after reporting the error. */
static int open_db_only(const char *cmd, int argc, char **argv, trust_db *db)
{
    trust_opts to;
    tm_err err = {{0}};
    trust_opts_default(&to);
    tm_status st = trust_opts_take(&argc, argv, &to, &err);
    if (!st && argc > 1) st = tm_errf(&err, TM_EINPUT, "unknown option '%s'", argv[1]);
    if (!st && !to.db_path) st = tm_errf(&err, TM_EINPUT, "--trust-db PATH is required");
    trust_db_params dp = trust_db_default_params();
    dp.read_only = 1;
    if (!st) st = trust_db_open(db, to.db_path, &dp, &err);
    return st ? cli_fail(cmd, &err, st) : 0;
}

static int check(int argc, char **argv)
{
    trust_db db;
    int rc = open_db_only("trust check", argc, argv, &db);
    if (rc) return rc;
    sqlite3_stmt *q = NULL;
    int ok = 0;
    if (sqlite3_prepare_v2(db.db, "PRAGMA integrity_check", -1, &q, NULL) == SQLITE_OK) {
        while (sqlite3_step(q) == SQLITE_ROW) {
            const char *line = (const char *)sqlite3_column_text(q, 0);
            ok = ok || (line && !strcmp(line, "ok"));
            printf("%s\n", line ? line : "");
        }
    }
    sqlite3_finalize(q);
    if (sqlite3_prepare_v2(db.db, "SELECT model, run, windows FROM train_progress ORDER BY model, run", -1, &q,
                           NULL) == SQLITE_OK)
        while (sqlite3_step(q) == SQLITE_ROW)
            printf("progress %s %s: %lld windows\n", sqlite3_column_text(q, 0), sqlite3_column_text(q, 1),
                   (long long)sqlite3_column_int64(q, 2));
    sqlite3_finalize(q);
    trust_db_close(&db);
    return ok ? 0 : 1;
}

/* Every trust entry, sorted, without the wall-clock column: two databases
 * trained on the same windows dump the same text. */
static int dump(int argc, char **argv)
{
    trust_db db;
    int rc = open_db_only("trust dump", argc, argv, &db);
    if (rc) return rc;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db.db,
                           "SELECT model, context, layer, expert, trust, evidence, last_quality, last_credit, "
                           "hex(window) FROM trust ORDER BY model, context, layer, expert",
                           -1, &q, NULL) == SQLITE_OK)
        while (sqlite3_step(q) == SQLITE_ROW)
            printf("%s %s %d %d %.17g %lld %.17g %.17g %s\n", sqlite3_column_text(q, 0), sqlite3_column_text(q, 1),
                   sqlite3_column_int(q, 2), sqlite3_column_int(q, 3), sqlite3_column_double(q, 4),
                   (long long)sqlite3_column_int64(q, 5), sqlite3_column_double(q, 6), sqlite3_column_double(q, 7),
                   sqlite3_column_text(q, 8));
    sqlite3_finalize(q);
    trust_db_close(&db);
    return 0;
}

/* ---- commands -------------------------------------------------------------------------- */

static void trust_usage(FILE *f)
{
    fprintf(f, "usage: trustmoe trust fit-contexts -m DIR --corpus FILE --trust-db PATH [--contexts K] [--window N]\n"
               "       trustmoe trust train -m DIR --corpus FILE --trust-db PATH [--epochs N] [selection options]\n"
               "       trustmoe trust show|check|dump --trust-db PATH\n"
               "fit-contexts clusters the mean token embedding of each window (k-means) and stores the\n"
               "centroids; train runs teacher-forced windows and folds each window's quality\n"
               "q = 1/(1 + ppl/10) into the reputation of the experts that carried its routing weight;\n"
               "show summarises a database, check runs PRAGMA integrity_check, dump prints every entry.\n");
    trust_opts_usage(f);
    cli_usage_common(f);
}

/* The reputation commands run in one process: under mpirun with several
 * ranks, rank 0 says so and every rank exits 2. */
static int refuse_mpi(const char *cmd)
{
    int rank, size;
    dist_init(NULL, NULL, &rank, &size);
    if (size == 1) return 0;
    if (rank == 0) fprintf(stderr, "trustmoe %s: runs in one process; start it without mpirun -np %d\n", cmd, size);
    dist_finish(NULL, 0, NULL);
    return 1;
}

int cmd_trust(int argc, char **argv)
{
    if (refuse_mpi("trust")) return 2;
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        trust_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (cli_wants_help(argc - 1, argv + 1)) {
        trust_usage(stdout);
        return 0;
    }
    if (!strcmp(sub, "fit-contexts")) return fit_contexts(argc - 1, argv + 1);
    if (!strcmp(sub, "train")) return run_passes("trust train", argc - 1, argv + 1, 1);
    if (!strcmp(sub, "show")) return show(argc - 1, argv + 1);
    if (!strcmp(sub, "check")) return check(argc - 1, argv + 1);
    if (!strcmp(sub, "dump")) return dump(argc - 1, argv + 1);
    fprintf(stderr, "trustmoe trust: unknown subcommand '%s' (fit-contexts, train, show, check, dump)\n", sub);
    return 2;
}

int cmd_eval(int argc, char **argv)
{
    if (refuse_mpi("eval")) return 2;
    if (cli_wants_help(argc, argv)) {
        printf("usage: trustmoe eval -m DIR --corpus FILE [--trust-db PATH] [selection options] [--stats-json PATH]\n"
               "Teacher-forced perplexity over the corpus in windows, and per-layer expert diversity;\n"
               "updates nothing.\n");
        trust_opts_usage(stdout);
        cli_usage_common(stdout);
        return 0;
    }
    return run_passes("eval", argc, argv, 0);
}
