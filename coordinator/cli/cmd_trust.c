/* cmd_trust.c: the commands `trustmoe trust fit-contexts|train|show|check|dump`
 * and `trustmoe eval`: teacher-forced passes over a corpus that fit contexts,
 * fold window quality into the reputation database, or measure perplexity
 * and expert diversity. */
#include "commands.h"
#include "input.h"

#include <cJSON.h>
#include <math.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "expert.h"
#include "kernels.h"
#include "tokenizer.h"
#include "trust_run.h"

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
    int64_t *pairs; /* [L, E, E] this window's co-selections a < b; NULL: not counted */
} route_obs;

static void on_route(void *ctx, int layer, const int32_t *ids, const float *w, const float *probs, int T)
{
    route_obs *o = ctx;
    int k = o->acc.k, E = o->acc.n_experts;
    trust_quality_add_batch(&o->acc, layer, ids, w, T, k);
    if (!o->pairs) return;
    int64_t *c = o->pairs + (size_t)layer * E * E;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++)
            for (int j = i + 1; j < k; j++) {
                int a = ids[t * k + i], b = ids[t * k + j];
                c[(size_t)(a < b ? a : b) * E + (a < b ? b : a)]++;
            }
}

/* ---- substitute fit: how well each expert's output stands in for another's -------- */

/* Wraps the local backend.  After the layer's real computation, every
 * `every`-th token's input goes through all E experts of the layer; for
 * each expert e the token chose (routing weight w) it adds w|y_e|^2 to
 * ee[l, e], w<y_e, y_s> to es[l, e, s], w|y_s|^2 to ss[l, e, s] and w to
 * wsum[l, e]: the sums from which the best fixed-gain stand-in c * y_s for
 * y_e and its residual follow (trust_db.h, substitute_fit). */
typedef struct {
    moe_backend inner;
    const tm_model *m;
    int every, L, E, H;
    float *xs;      /* [n_max, H] f32 sampled inputs           */
    float *y;       /* [E, n_max, H] f32 every expert's output */
    float *scratch; /* [n_max, 2 * moe_inter] f32              */
    double *ee;     /* [L, E] this window's sums (above)       */
    double *es;     /* [L, E, E]                               */
    double *ss;     /* [L, E, E]                               */
    double *wsum;   /* [L, E]                                  */
} sub_fit;

static void sub_fit_init(sub_fit *f, const tm_model *m, moe_backend inner, int every, int max_tokens)
{
    const tm_config *c = &m->cfg;
    memset(f, 0, sizeof *f);
    f->inner = inner;
    f->m = m;
    f->every = every;
    f->L = c->num_layers;
    f->E = c->num_experts;
    f->H = c->hidden_size;
    int n = (max_tokens + every - 1) / every;
    f->xs = tm_malloc((size_t)n * f->H * sizeof *f->xs);
    f->y = tm_malloc((size_t)f->E * n * f->H * sizeof *f->y);
    f->scratch = tm_malloc((size_t)n * 2 * c->moe_intermediate_size * sizeof *f->scratch);
    f->ee = tm_calloc((size_t)f->L * f->E, sizeof *f->ee);
    f->es = tm_calloc((size_t)f->L * f->E * f->E, sizeof *f->es);
    f->ss = tm_calloc((size_t)f->L * f->E * f->E, sizeof *f->ss);
    f->wsum = tm_calloc((size_t)f->L * f->E, sizeof *f->wsum);
}

static void sub_fit_reset(sub_fit *f)
{
    memset(f->ee, 0, (size_t)f->L * f->E * sizeof *f->ee);
    memset(f->es, 0, (size_t)f->L * f->E * f->E * sizeof *f->es);
    memset(f->ss, 0, (size_t)f->L * f->E * f->E * sizeof *f->ss);
    memset(f->wsum, 0, (size_t)f->L * f->E * sizeof *f->wsum);
}

static void sub_fit_free(sub_fit *f)
{
    free(f->xs);
    free(f->y);
    free(f->scratch);
    free(f->ee);
    free(f->es);
    free(f->ss);
    free(f->wsum);
    memset(f, 0, sizeof *f);
}

static int sub_fit_run_layer(moe_backend *b, int layer, const float *x, int T, const int32_t *ids, const float *w,
                             int k, float *out)
{
    sub_fit *f = b->ctx;
    int rc = f->inner.run_layer(&f->inner, layer, x, T, ids, w, k, out);
    if (rc) return rc;
    const int E = f->E, H = f->H;
    int n = 0;
    for (int t = 0; t < T; t += f->every) memcpy(f->xs + (size_t)n++ * H, x + (size_t)t * H, (size_t)H * sizeof *x);
    for (int e = 0; e < E; e++)
        expert_forward(&f->m->layers[layer].experts[e], f->xs, n, f->y + (size_t)e * n * H, f->scratch);
    size_t le0 = (size_t)layer * E;
    for (int i = 0; i < n; i++) {
        int t = i * f->every;
        for (int j = 0; j < k; j++) {
            int e = ids[t * k + j];
            double wj = w[t * k + j];
            if (!(wj > 0)) continue;
            const float *ye = f->y + ((size_t)e * n + i) * H;
            double ne = 0;
            for (int h = 0; h < H; h++) ne += (double)ye[h] * ye[h];
            f->ee[le0 + e] += wj * ne;
            f->wsum[le0 + e] += wj;
            for (int s2 = 0; s2 < E; s2++) {
                if (s2 == e) continue;
                const float *ys = f->y + ((size_t)s2 * n + i) * H;
                double dot = 0, nn = 0;
                for (int h = 0; h < H; h++) {
                    dot += (double)ye[h] * ys[h];
                    nn += (double)ys[h] * ys[h];
                }
                f->es[(le0 + e) * E + s2] += wj * dot;
                f->ss[(le0 + e) * E + s2] += wj * nn;
            }
        }
    }
    return 0;
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

/* Folds one window's quality into the reputation.  The window's updates
 * and its progress count commit together: after a crash the count says
 * exactly which windows the reputation holds. */
static tm_status fold_window(trust_run *r, route_obs *obs, sub_fit *fit, trust_baseline *base, const char *run_key,
                             double *q, tm_err *err)
{
    trust_table *tab = &r->tables[r->cur];
    tm_status st = trust_db_begin(&r->db, err);
    if (st) return st;
    *q = trust_quality_window_q(&obs->acc);
    double value = *q;
    if (r->o.signal == TRUST_SIGNAL_ADVANTAGE && *q >= 0) {
        value = trust_baseline_target(&base[r->cur], *q, TRUST_ADVANTAGE_GAIN, TRUST_BASELINE_RATE);
        st = trust_db_put_baseline(&r->db, r->model_id, tab->context, &base[r->cur], err);
    }
    if (!st)
        st = trust_quality_commit_value(&obs->acc, &r->db, r->model_id, tab, r->o.ema_rate, (int64_t)time(NULL), value,
                                        err);
    const int L = r->n_layers, E = r->n_experts;
    for (int l = 0; l < L && !st && obs->pairs; l++)
        st = trust_db_add_pair_counts(&r->db, r->model_id, l, E, obs->pairs + (size_t)l * E * E, err);
    if (obs->pairs) memset(obs->pairs, 0, (size_t)L * E * E * sizeof *obs->pairs);
    if (!st && fit) st = trust_db_add_substitute_fit(&r->db, r->model_id, tab->context, L, E, fit->ee, fit->es, fit->ss,
                                                      fit->wsum, err);
    if (fit) sub_fit_reset(fit);
    if (!st) st = trust_db_add_progress(&r->db, r->model_id, run_key, 1, err);
    if (st) {
        trust_db_rollback(&r->db);
        return st;
    }
    if ((st = trust_db_commit(&r->db, err))) return st;
    trust_selector_refresh(&r->sel);
    if (r->o.atp_budget >= 0) trust_selector_reward(&r->sel, *q);
    return TM_OK;
}

/* train != 0: fold each window's quality into the database. */
static int run_passes(const char *cmd, int argc, char **argv, int train)
{
    trust_opts to;
    cli_opts o;
    tm_err err = {{0}};
    trust_opts_default(&to);
    cli_cmd which = train ? CLI_TRAIN : CLI_EVAL;
    tm_status st = cli_check_flags(which, argc, argv, &err);
    if (!st) st = trust_opts_take(&argc, argv, &to, &err);
    if (!st) st = cli_parse_opts(which, argc, argv, &o, &err);
    if (!st && !to.corpus) st = tm_errf(&err, TM_EINPUT, "--corpus FILE is required");
    if (!st && train && !to.db_path) st = tm_errf(&err, TM_EINPUT, "--trust-db PATH is required");
    if (st) return cli_fail(cmd, &err, st);

    int have_model = 0, have_state = 0, have_run = 0;
    tm_model m;
    tm_state s;
    trust_run r;
    route_obs obs = {0};
    sub_fit fit = {0};
    trust_baseline *base = NULL;
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
    to.db_create = train; /* train starts a database at a new path; eval reads one */
    if ((st = trust_run_open(&r, &to, &m, &err))) goto out;
    have_run = 1;
    r.quiet = 1; /* one request per window: too many to print */
    trust_quality_init(&obs.acc, c->num_layers, c->num_experts, c->top_k);
    s.on_route = on_route;
    s.observer_ctx = &obs;
    logits = tm_malloc((size_t)W * c->vocab_size * sizeof *logits);
    moe_backend be = model_local_backend(&m, &s);
    if (train) {
        obs.pairs = tm_calloc((size_t)c->num_layers * c->num_experts * c->num_experts, sizeof *obs.pairs);
        base = tm_calloc((size_t)r.n_tables, sizeof *base);
        for (int j = 0; j < r.n_tables && r.o.signal == TRUST_SIGNAL_ADVANTAGE; j++) {
            int found;
            if ((st = trust_db_get_baseline(&r.db, r.model_id, r.tables[j].context, &base[j], &found, &err))) goto out;
        }
        if (to.sub_every > 0) {
            sub_fit_init(&fit, &m, be, to.sub_every, W);
            be.run_layer = sub_fit_run_layer;
            be.ctx = &fit;
        }
    }
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
                double q;
                if ((st = fold_window(&r, &obs, fit.ee ? &fit : NULL, base, run_key, &q, &err))) goto out;
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
    trust_run_print_diversity(&r, stdout);
    if (to.stats_json) {
        cJSON *doc = trust_run_stats_doc(&r);
        cJSON_AddNumberToObject(doc, "perplexity", ppl);
        cJSON_AddNumberToObject(doc, "tokens", (double)scored);
        cJSON_AddNumberToObject(doc, "windows", (double)windows);
        st = trust_run_write_doc(doc, to.stats_json, &err);
        cJSON_Delete(doc);
    }
out:
    free(logits);
    free(ids);
    if (obs.acc.wsum) trust_quality_free(&obs.acc);
    free(obs.pairs);
    free(base);
    if (fit.ee) sub_fit_free(&fit);
    if (have_run) trust_run_close(&r);
    if (have_state) state_free(&s);
    if (have_model) model_free(&m);
    return st ? cli_fail(cmd, &err, st) : 0;
}

/* ---- importance: counterfactual loss change of dropping one expert ------------------- */

/* The run's selector, except that at `layer` expert `expert` is dropped
 * from every token's top-k and the others' weights renormalised. */
typedef struct {
    trust_selector *sel;
    int layer, expert;
} drop_hook;

static int drop_select(void *ctx, int layer, int token, const float *probs, int k, int norm_topk, int32_t *ids,
                       float *w)
{
    drop_hook *d = ctx;
    int rc = trust_select(d->sel, layer, probs, k, norm_topk, ids, w);
    if (layer != d->layer) return rc;
    float sum = 0;
    for (int i = 0; i < k; i++) {
        if (ids[i] == d->expert) w[i] = 0;
        sum += w[i];
    }
    for (int i = 0; i < k; i++) w[i] = sum > 0 ? w[i] / sum : 0;
    return rc;
}

typedef struct {
    int L, E, k;
    int64_t *uses; /* [L, E] tokens of the window that chose the expert */
} use_obs;

static void count_uses(void *ctx, int layer, const int32_t *ids, const float *w, const float *probs, int T)
{
    use_obs *u = ctx;
    for (int i = 0; i < T * u->k; i++) u->uses[(size_t)layer * u->E + ids[i]]++;
}

/* Per window: one pass with the run's selection, then one per (layer,
 * expert) used in it with that expert dropped.  Prints, per (context,
 * layer, expert), the tokens that used it and the summed change of the
 * window's total cross-entropy (nats); dce / uses is the loss an average
 * use of the expert saves. */
static int importance(int argc, char **argv)
{
    const char *cmd = "trust importance";
    trust_opts to;
    cli_opts o;
    tm_err err = {{0}};
    trust_opts_default(&to);
    tm_status st = trust_opts_take(&argc, argv, &to, &err);
    if (!st) st = cli_parse_opts(CLI_EVAL, argc, argv, &o, &err) /* eval's options: model, corpus, trust */;
    if (!st && !to.corpus) st = tm_errf(&err, TM_EINPUT, "--corpus FILE is required");
    if (st) return cli_fail(cmd, &err, st);
    int have_model = 0, have_state = 0, have_run = 0;
    tm_model m;
    tm_state s;
    trust_run r;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    float *logits = NULL;
    int64_t *uses = NULL, *use_sum = NULL;
    double *dce = NULL;
    kern_set_threads(o.threads);
    if ((st = model_load(&m, o.model_dir, &o.load, &err))) goto out;
    have_model = 1;
    const tm_config *c = &m.cfg;
    if ((st = read_corpus(to.corpus, o.model_dir, c->vocab_size, &ids, &n_ids, &err))) goto out;
    int W = TM_MIN(to.window, c->max_position_embeddings), L = c->num_layers, E = c->num_experts;
    if ((st = state_init(&s, &m, W, W, &err))) goto out;
    have_state = 1;
    if ((st = trust_run_open(&r, &to, &m, &err))) goto out;
    have_run = 1;
    r.quiet = 1;
    size_t per = (size_t)L * E;
    uses = tm_calloc(per, sizeof *uses);
    use_sum = tm_calloc((size_t)r.n_tables * per, sizeof *use_sum);
    dce = tm_calloc((size_t)r.n_tables * per, sizeof *dce);
    logits = tm_malloc((size_t)W * c->vocab_size * sizeof *logits);
    moe_backend be = model_local_backend(&m, &s);
    tm_selector base = trust_run_selector(&r);
    drop_hook dh = {&r.sel, 0, 0};
    tm_selector drop = {drop_select, &dh};
    use_obs uo = {L, E, c->top_k, uses};
    int64_t windows = 0, passes = 0;
    double t0 = tm_now();
    for (size_t w0 = 0; w0 + 1 < n_ids; w0 += (size_t)W) {
        if (to.max_windows && windows >= to.max_windows) break;
        int T = (int)TM_MIN((size_t)W, n_ids - w0);
        if (T < 2 || (T < W && w0 > 0)) break;
        if ((st = trust_run_begin_request(&r, &m, ids + w0, T, &err))) goto out;
        memset(uses, 0, per * sizeof *uses);
        state_reset(&s);
        s.on_route = count_uses;
        s.observer_ctx = &uo;
        if ((st = model_forward(&m, &s, ids + w0, T, &be, &base, logits, 1, &err))) goto out;
        s.on_route = NULL;
        double ce0 = cross_entropy(logits, ids + w0 + 1, T - 1, c->vocab_size);
        for (int l = 0; l < L; l++)
            for (int e = 0; e < E; e++) {
                size_t i = (size_t)l * E + e;
                if (!uses[i]) continue;
                dh.layer = l;
                dh.expert = e;
                state_reset(&s);
                if ((st = model_forward(&m, &s, ids + w0, T, &be, &drop, logits, 1, &err))) goto out;
                dce[(size_t)r.cur * per + i] += cross_entropy(logits, ids + w0 + 1, T - 1, c->vocab_size) - ce0;
                use_sum[(size_t)r.cur * per + i] += uses[i];
                passes++;
            }
        windows++;
    }
    fprintf(stderr, "%s: %lld windows, %lld dropped-expert passes in %.2f s\n", cmd, (long long)windows,
            (long long)passes, tm_now() - t0);
    printf("# context layer expert uses dce_nats dce_per_use\n");
    for (int j = 0; j < r.n_tables; j++)
        for (size_t i = 0; i < per; i++)
            if (use_sum[(size_t)j * per + i])
                printf("%s %d %d %lld %.9g %.9g\n", r.tables[j].context, (int)(i / E), (int)(i % E),
                       (long long)use_sum[(size_t)j * per + i], dce[(size_t)j * per + i],
                       dce[(size_t)j * per + i] / (double)use_sum[(size_t)j * per + i]);
out:
    free(logits);
    free(ids);
    free(uses);
    free(use_sum);
    free(dce);
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
    tm_status st = cli_check_flags(CLI_FIT, argc, argv, &err);
    if (!st) st = trust_opts_take(&argc, argv, &to, &err);
    if (!st) st = cli_parse_opts(CLI_FIT, argc, argv, &o, &err);
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

/* show, check and dump only read: opening a missing path would create an
 * empty database and report on nothing. */
static int show(int argc, char **argv)
{
    const char *cmd = "trust show";
    trust_opts to;
    tm_err err = {{0}};
    trust_opts_default(&to);
    tm_status st = trust_opts_take(&argc, argv, &to, &err);
    if (!st && argc > 1) st = tm_errf(&err, TM_EINPUT, "unknown option '%s'", argv[1]);
    if (!st && !to.db_path) st = tm_errf(&err, TM_EINPUT, "--trust-db PATH is required");
    if (!st) st = trust_db_must_exist(to.db_path, &err);
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
        printf("%-26s %-12s %8s %10s %10s %8s %8s\n", "model", "context", "entries", "evidence", "mean_trust",
               "min", "max");
        while (sqlite3_step(q) == SQLITE_ROW)
            printf("%-26s %-12s %8lld %10lld %10.4f %8.4f %8.4f\n", sqlite3_column_text(q, 0), sqlite3_column_text(q, 1),
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
    if (!st) st = trust_db_must_exist(to.db_path, &err);
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
                           -1, &q, NULL) == SQLITE_OK) {
        printf("model context layer expert trust evidence last_quality last_credit window\n");
        while (sqlite3_step(q) == SQLITE_ROW)
            printf("%s %s %d %d %.17g %lld %.17g %.17g %s\n", sqlite3_column_text(q, 0), sqlite3_column_text(q, 1),
                   sqlite3_column_int(q, 2), sqlite3_column_int(q, 3), sqlite3_column_double(q, 4),
                   (long long)sqlite3_column_int64(q, 5), sqlite3_column_double(q, 6), sqlite3_column_double(q, 7),
                   sqlite3_column_text(q, 8));
    }
    sqlite3_finalize(q);
    trust_db_close(&db);
    return 0;
}

/* ---- commands -------------------------------------------------------------------------- */

static void trust_usage(FILE *f, const char *sub)
{
    int all = !sub;
    if (all || !strcmp(sub, "fit-contexts")) {
        fprintf(f, "usage: trustmoe trust fit-contexts -m DIR --corpus FILE --trust-db PATH [--contexts K] [--window N]\n"
                   "Clusters the mean token embedding of each window (k-means) and stores the centroids.\n");
        if (!all) cli_usage(f, CLI_FIT);
    }
    if (all || !strcmp(sub, "train")) {
        fprintf(f, "usage: trustmoe trust train -m DIR --corpus FILE --trust-db PATH [--epochs N] [selection options]\n"
                   "Runs teacher-forced windows and folds each window's quality q = 1/(1 + ppl/10), as its\n"
                   "advantage over the context's running mean (--signal), into the reputation of the experts\n"
                   "that carried its routing weight; fits substitutes for each expert and counts co-selected pairs.\n");
        if (!all) cli_usage(f, CLI_TRAIN);
    }
    if (all || !strcmp(sub, "show") || !strcmp(sub, "check") || !strcmp(sub, "dump"))
        fprintf(f, "usage: trustmoe trust show|check|dump --trust-db PATH\n"
                   "show summarises an existing database, check runs PRAGMA integrity_check (exit 1 unless ok),\n"
                   "dump prints every entry with a header line.  A missing PATH is an error.\n");
    if (all || !strcmp(sub, "importance"))
        fprintf(f, "usage: trustmoe trust importance -m DIR --corpus FILE [--trust-db PATH] [--max-windows N]\n"
                   "Drops each used (layer, expert) from every token's top-k in turn and prints the change of\n"
                   "each window's loss, per context.\n");
    if (all) fprintf(f, "'trustmoe trust SUBCOMMAND --help' lists a subcommand's options.\n");
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
        trust_usage(argc < 2 ? stderr : stdout, NULL);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (cli_wants_help(argc - 1, argv + 1)) {
        trust_usage(stdout, sub);
        return 0;
    }
    if (!strcmp(sub, "fit-contexts")) return fit_contexts(argc - 1, argv + 1);
    if (!strcmp(sub, "train")) return run_passes("trust train", argc - 1, argv + 1, 1);
    if (!strcmp(sub, "show")) return show(argc - 1, argv + 1);
    if (!strcmp(sub, "check")) return check(argc - 1, argv + 1);
    if (!strcmp(sub, "dump")) return dump(argc - 1, argv + 1);
    if (!strcmp(sub, "importance")) return importance(argc - 1, argv + 1);
    fprintf(stderr, "trustmoe trust: unknown subcommand '%s' (fit-contexts, train, show, check, dump, importance)\n",
            sub);
    return 2;
}

int cmd_eval(int argc, char **argv)
{
    if (refuse_mpi("eval")) return 2;
    if (cli_wants_help(argc, argv)) {
        printf("usage: trustmoe eval -m DIR --corpus FILE [--trust-db PATH] [selection options] [--stats-json PATH]\n"
               "Teacher-forced perplexity over the corpus in windows, and per-layer expert diversity;\n"
               "updates nothing.\n");
        cli_usage(stdout, CLI_EVAL);
        return 0;
    }
    return run_passes("eval", argc, argv, 0);
}
