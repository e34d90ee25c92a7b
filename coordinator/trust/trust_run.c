/* trust_run.c: trust selection on the engine: the flags and the per-run
 * bundle (see trust_run.h). */
#include "trust_run.h"

#include "input.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels.h"

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
    /* bench/RESULTS.md "Trust that measures quality": the absolute signal
     * learns inverse usage; the advantage signal does not, and no blend
     * with it costs more than 0.2% perplexity */
    o->signal = TRUST_SIGNAL_ADVANTAGE;
    o->sub_every = 8;
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
            "--corpus", "--window", "--max-windows", "--epochs", "--contexts", "--signal", "--mask",
            "--substitute", "--sub-sample"};
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
        } else if (!strcmp(a, "--signal")) st = trust_signal_parse(v, &o->signal, err);
        else if (!strcmp(a, "--mask")) o->mask_path = v;
        else if (!strcmp(a, "--substitute")) {
            if (!strcmp(v, "router")) o->substitute = 0;
            else if (!strcmp(v, "learned")) o->substitute = 1;
            else st = tm_errf(err, TM_EINPUT, "--substitute: unknown mode \"%s\" (router, learned)", v);
        } else if (!strcmp(a, "--sub-sample")) {
            if (!(st = take_int(a, v, 0, 1 << 20, &n, err))) o->sub_every = (int)n;
        }
        if (st) return st;
    }
    *argc = out;
    argv[out] = NULL;
    return TM_OK;
}

/* ---- --mask FILE ---------------------------------------------------------------- */

tm_status trust_mask_load(const char *path, int n_layers, int n_experts, uint8_t *mask, tm_err *err)
{
    char *text = NULL;
    tm_status st = tm_read_file(path, &text, NULL, err);
    if (st) return st;
    memset(mask, 1, (size_t)n_layers * n_experts);
    int line = 0;
    for (char *p = text, *next; p && *p; p = next) {
        line++;
        next = strchr(p, '\n');
        if (next) *next++ = '\0';
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (!*p || *p == '#') continue;
        long layer = -1, expert;
        char *end;
        if (*p == '*') {
            end = p + 1;
        } else {
            layer = strtol(p, &end, 10);
            if (end == p || layer < 0 || layer >= n_layers) goto bad;
        }
        p = end;
        if (*p != ' ' && *p != '\t') goto bad;
        expert = strtol(p, &end, 10);
        if (end == p || expert < 0 || expert >= n_experts) goto bad;
        while (*end == ' ' || *end == '\t' || *end == '\r') end++;
        if (*end) goto bad;
        for (int l = layer < 0 ? 0 : (int)layer; l < (layer < 0 ? n_layers : (int)layer + 1); l++)
            mask[(size_t)l * n_experts + expert] = 0;
        continue;
    bad:
        st = tm_errf(err, TM_EINPUT, "%s:%d: want \"LAYER EXPERT\" with LAYER in [0, %d) or *, EXPERT in [0, %d)",
                     path, line, n_layers, n_experts);
        break;
    }
    free(text);
    return st;
}

/* ---- the per-run bundle -------------------------------------------------------- */

void trust_model_id(const tm_model *m, char *buf, size_t size)
{
    snprintf(buf, size, "qwen3moe-%016llx", (unsigned long long)m->identity);
}

/* The current context's substitutes; a context without a fit falls back to
 * "general"'s, and without that to the router's next best. */
static void trust_run_use_substitutes(trust_run *r)
{
    if (!r->subst) return;
    size_t per = (size_t)r->n_layers * r->n_experts * r->n_experts;
    int j = r->have_subst[r->cur] ? r->cur : r->n_tables - 1;
    trust_selector_set_substitutes(&r->sel, r->have_subst[j] ? r->subst + (size_t)j * per : NULL,
                                   r->have_subst[j] ? r->gain + (size_t)j * per : NULL);
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
        if (!o->db_create && (st = trust_db_must_exist(o->db_path, err))) goto fail;
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
    if (o->mask_path || o->avail) {
        size_t n = (size_t)r->n_layers * r->n_experts;
        r->mask = tm_malloc(n);
        memset(r->mask, 1, n);
        if (o->mask_path && (st = trust_mask_load(o->mask_path, r->n_layers, r->n_experts, r->mask, err))) goto fail;
        if (o->avail)
            for (size_t i = 0; i < n; i++) r->mask[i] &= o->avail[i];
        if ((st = trust_selector_set_mask(&r->sel, r->mask, err))) goto fail;
    }
    if (o->substitute) {
        if (!r->have_db) {
            st = tm_errf(err, TM_EINPUT, "--substitute learned needs --trust-db (the table `trust train` fits)");
            goto fail;
        }
        size_t per = (size_t)r->n_layers * r->n_experts * r->n_experts;
        r->subst = tm_malloc((size_t)r->n_tables * per * sizeof *r->subst);
        r->gain = tm_malloc((size_t)r->n_tables * per * sizeof *r->gain);
        r->have_subst = tm_calloc((size_t)r->n_tables, 1);
        int any = 0;
        for (int j = 0; j < r->n_tables; j++) {
            int found = 0;
            if ((st = trust_db_load_substitutes(&r->db, r->model_id, r->tables[j].context, r->n_layers, r->n_experts,
                                                r->subst + (size_t)j * per, r->gain + (size_t)j * per, &found,
                                                err)))
                goto fail;
            r->have_subst[j] = (uint8_t)found;
            any |= found;
        }
        if (!any) {
            st = tm_errf(err, TM_EINPUT, "%s: model %s has no substitution table (run `trust train` first)",
                         o->db_path, r->model_id);
            goto fail;
        }
        trust_run_use_substitutes(r);
    }
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
    trust_run_use_substitutes(r);
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

cJSON *trust_run_stats_doc(const trust_run *r)
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
    cJSON_AddStringToObject(doc, "substitute", r->o.substitute ? "learned" : "router");
    if (r->o.mask_path) cJSON_AddStringToObject(doc, "mask", r->o.mask_path);
    return doc;
}

tm_status trust_run_write_doc(cJSON *doc, const char *path, tm_err *err)
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
    cJSON *doc = trust_run_stats_doc(r);
    tm_status st = trust_run_write_doc(doc, r->o.stats_json, err);
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
    free(r->mask);
    free(r->subst);
    free(r->gain);
    free(r->have_subst);
    memset(r, 0, sizeof *r);
}

/* ---- summary ----------------------------------------------------------------------- */

void trust_run_print_diversity(const trust_run *r, FILE *f)
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
    trust_run_print_diversity(r, f);
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

