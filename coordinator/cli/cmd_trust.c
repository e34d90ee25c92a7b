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

/* Folds one window's quality into the reputation.  The window's updates
 * and its progress count commit together: after a crash the count says
 * exactly which windows the reputation holds. */
static tm_status fold_window(trust_run *r, route_obs *obs, const char *run_key, double *q, tm_err *err)
{
    trust_table *tab = &r->tables[r->cur];
    tm_status st = trust_db_begin(&r->db, err);
    if (st) return st;
    st = trust_quality_commit(&obs->acc, &r->db, r->model_id, tab, r->o.ema_rate, (int64_t)time(NULL), q, err);
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
                double q;
                if ((st = fold_window(&r, &obs, run_key, &q, &err))) goto out;
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
static tm_status db_must_exist(const char *path, tm_err *err)
{
    if (access(path, F_OK) != 0)
        return tm_errf(err, TM_EINPUT, "--trust-db %s: no such database (trust fit-contexts or train creates one)",
                       path);
    return TM_OK;
}

static int show(int argc, char **argv)
{
    const char *cmd = "trust show";
    trust_opts to;
    tm_err err = {{0}};
    trust_opts_default(&to);
    tm_status st = trust_opts_take(&argc, argv, &to, &err);
    if (!st && argc > 1) st = tm_errf(&err, TM_EINPUT, "unknown option '%s'", argv[1]);
    if (!st && !to.db_path) st = tm_errf(&err, TM_EINPUT, "--trust-db PATH is required");
    if (!st) st = db_must_exist(to.db_path, &err);
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
    if (!st) st = db_must_exist(to.db_path, &err);
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
                   "Runs teacher-forced windows and folds each window's quality q = 1/(1 + ppl/10) into the\n"
                   "reputation of the experts that carried its routing weight.\n");
        if (!all) cli_usage(f, CLI_TRAIN);
    }
    if (all || !strcmp(sub, "show") || !strcmp(sub, "check") || !strcmp(sub, "dump"))
        fprintf(f, "usage: trustmoe trust show|check|dump --trust-db PATH\n"
                   "show summarises an existing database, check runs PRAGMA integrity_check (exit 1 unless ok),\n"
                   "dump prints every entry with a header line.  A missing PATH is an error.\n");
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
        cli_usage(stdout, CLI_EVAL);
        return 0;
    }
    return run_passes("eval", argc, argv, 0);
}
