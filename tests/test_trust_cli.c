/* test_trust_cli.c: trust selection on the engine, with the small fixture
 * model: ROUTER logits bit-identical to the engine's own routing, and the
 * commands trust fit-contexts / train / show and eval end to end. */
#include <CUnit/Basic.h>

#include "cunit_run.h"
#include "input.h"
#include <cJSON.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "model.h"
#include "trust_run.h"
#include "trust_db.h"
#include "trust_rng.h"

static const char *MODEL_DIR = "tests/fixtures/qwen3moe-bf16";
static char dir[] = "/tmp/trust_cli_XXXXXX";
static char corpus[256], db_path[256], stats[256], big[256];

static int run(int (*cmd)(int, char **), const char *const *args)
{
    char *argv[64];
    int argc = 0;
    for (; args[argc]; argc++) argv[argc] = (char *)args[argc];
    argv[argc] = NULL;
    fflush(stdout);
    return cmd(argc, argv);
}

static void test_router_logits_identical(void)
{
    tm_model m;
    tm_state s;
    tm_err err;
    model_load_params lp = model_default_load_params();
    CU_ASSERT_EQUAL_FATAL(model_load(&m, MODEL_DIR, &lp, &err), TM_OK);
    int T = 40, V = m.cfg.vocab_size;
    CU_ASSERT_EQUAL_FATAL(state_init(&s, &m, T, T, &err), TM_OK);
    int32_t ids[40];
    uint64_t rng = 3;
    for (int t = 0; t < T; t++) ids[t] = (int32_t)trust_rng_below(&rng, (uint32_t)V);
    float *a = tm_malloc(sizeof(float) * (size_t)T * V), *b = tm_malloc(sizeof(float) * (size_t)T * V);
    moe_backend be = model_local_backend(&m, &s);
    CU_ASSERT_EQUAL(model_forward(&m, &s, ids, T, &be, NULL, a, 1, &err), TM_OK);
    trust_opts to;
    trust_opts_default(&to);
    trust_run r;
    CU_ASSERT_EQUAL_FATAL(trust_run_open(&r, &to, &m, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_run_begin_request(&r, &m, ids, T, &err), TM_OK);
    CU_ASSERT_STRING_EQUAL(trust_run_context(&r), "general");
    tm_selector sel = trust_run_selector(&r);
    state_reset(&s);
    CU_ASSERT_EQUAL(model_forward(&m, &s, ids, T, &be, &sel, b, 1, &err), TM_OK);
    CU_ASSERT(memcmp(a, b, sizeof(float) * (size_t)T * V) == 0);
    /* Then token by token with the KV cache (decode steps), against the
     * engine's own decode steps. */
    state_reset(&s);
    for (int t = 0; t < T; t++)
        CU_ASSERT_EQUAL(model_forward(&m, &s, ids + t, 1, &be, NULL, a + (size_t)t * V, 0, &err), TM_OK);
    state_reset(&s);
    int same = 1;
    for (int t = 0; t < T; t++) {
        CU_ASSERT_EQUAL(model_forward(&m, &s, ids + t, 1, &be, &sel, b, 0, &err), TM_OK);
        same &= memcmp(a + (size_t)t * V, b, sizeof(float) * V) == 0;
    }
    CU_ASSERT(same);
    trust_run_close(&r);
    free(a);
    free(b);
    state_free(&s);
    model_free(&m);
}

static double json_number(const char *path, const char *key)
{
    char *text = NULL;
    tm_err err;
    if (tm_read_file(path, &text, NULL, &err)) return NAN;
    cJSON *doc = cJSON_Parse(text);
    free(text);
    const cJSON *v = doc ? cJSON_GetObjectItem(doc, key) : NULL;
    double x = v && cJSON_IsNumber(v) ? v->valuedouble : NAN;
    cJSON_Delete(doc);
    return x;
}

static void test_commands(void)
{
    /* fit-contexts, then train twice over the corpus, then eval. */
    const char *fit[] = {"trust", "fit-contexts", "-m", MODEL_DIR, "--corpus", corpus, "--trust-db", db_path,
                         "--contexts", "3", "--window", "32", NULL};
    CU_ASSERT_EQUAL(run(cmd_trust, fit), 0);
    trust_db db;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, db_path, NULL, &err), TM_OK);
    sqlite3_stmt *q;
    sqlite3_prepare_v2(db.db, "SELECT k FROM context_set", -1, &q, NULL);
    CU_ASSERT_EQUAL(sqlite3_step(q), SQLITE_ROW);
    CU_ASSERT_EQUAL(sqlite3_column_int(q, 0), 3);
    sqlite3_finalize(q);
    trust_db_close(&db);

    const char *router[] = {"eval", "-m", MODEL_DIR, "--corpus", corpus, "--window", "32", "--stats-json", stats, NULL};
    CU_ASSERT_EQUAL(run(cmd_eval, router), 0);
    double ppl_router = json_number(stats, "perplexity");
    CU_ASSERT(ppl_router > 1 && isfinite(ppl_router));
    /* --select router with a database and contexts changes nothing. */
    const char *router_db[] = {"eval", "-m", MODEL_DIR, "--corpus", corpus, "--window", "32", "--trust-db", db_path,
                               "--select", "router", "--stats-json", stats, NULL};
    CU_ASSERT_EQUAL(run(cmd_eval, router_db), 0);
    CU_ASSERT_EQUAL(json_number(stats, "perplexity"), ppl_router);

    const char *train[] = {"trust", "train", "-m", MODEL_DIR, "--corpus", corpus, "--trust-db", db_path,
                           "--window", "32", "--epochs", "2", NULL};
    CU_ASSERT_EQUAL(run(cmd_trust, train), 0);
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, db_path, NULL, &err), TM_OK);
    sqlite3_prepare_v2(db.db, "SELECT count(*), max(evidence), min(trust), max(trust) FROM trust", -1, &q, NULL);
    CU_ASSERT_EQUAL(sqlite3_step(q), SQLITE_ROW);
    CU_ASSERT(sqlite3_column_int(q, 0) > 0);
    CU_ASSERT(sqlite3_column_int(q, 1) >= 2);
    CU_ASSERT(sqlite3_column_double(q, 2) >= 0 && sqlite3_column_double(q, 3) <= 1);
    sqlite3_finalize(q);
    trust_db_close(&db);

    const char *blend[] = {"eval", "-m", MODEL_DIR, "--corpus", corpus, "--window", "32", "--trust-db", db_path,
                           "--select", "blend", "--alpha", "0.0", "--stats-json", stats, NULL};
    CU_ASSERT_EQUAL(run(cmd_eval, blend), 0);
    double ppl_blend = json_number(stats, "perplexity");
    CU_ASSERT(isfinite(ppl_blend) && ppl_blend > 1);
    CU_ASSERT(json_number(stats, "windows") >= 2);
    const char *tf[] = {"eval", "-m", MODEL_DIR, "--corpus", corpus, "--window", "32", "--trust-db", db_path,
                        "--select", "trust-first", "--epsilon", "0.1", "--stats-json", stats, NULL};
    CU_ASSERT_EQUAL(run(cmd_eval, tf), 0);
    CU_ASSERT(isfinite(json_number(stats, "perplexity")));
    const char *shw[] = {"trust", "show", "--trust-db", db_path, NULL};
    CU_ASSERT_EQUAL(run(cmd_trust, shw), 0);

    /* train wrote co-selection counts and substitute fits; the advantage
     * signal keeps a baseline per context */
    const char *adv[] = {"trust", "train", "-m", MODEL_DIR, "--corpus", corpus, "--trust-db", db_path,
                         "--window", "32", "--signal", "advantage", NULL};
    CU_ASSERT_EQUAL(run(cmd_trust, adv), 0);
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, db_path, NULL, &err), TM_OK);
    sqlite3_prepare_v2(db.db,
                       "SELECT (SELECT sum(count) FROM co_activation), (SELECT count(*) FROM substitute_fit), "
                       "(SELECT sum(windows) FROM baseline)",
                       -1, &q, NULL);
    CU_ASSERT_EQUAL(sqlite3_step(q), SQLITE_ROW);
    CU_ASSERT(sqlite3_column_int(q, 0) > 0);
    CU_ASSERT(sqlite3_column_int(q, 1) > 0);
    CU_ASSERT(sqlite3_column_int(q, 2) >= 2);
    sqlite3_finalize(q);
    trust_db_close(&db);

    /* --mask: router next best and learned substitutes both run, change the
     * perplexity, and count the masked selections */
    char mask[300];
    snprintf(mask, sizeof mask, "%s/mask.txt", dir);
    FILE *mf = fopen(mask, "w");
    fputs("# the first two experts everywhere\n* 0\n* 1\n", mf);
    fclose(mf);
    const char *masked[] = {"eval", "-m", MODEL_DIR, "--corpus", corpus, "--window", "32", "--trust-db", db_path,
                            "--mask", mask, "--stats-json", stats, NULL};
    CU_ASSERT_EQUAL(run(cmd_eval, masked), 0);
    double ppl_masked = json_number(stats, "perplexity");
    CU_ASSERT(isfinite(ppl_masked) && ppl_masked != ppl_router);
    const char *learned[] = {"eval", "-m", MODEL_DIR, "--corpus", corpus, "--window", "32", "--trust-db", db_path,
                             "--mask", mask, "--substitute", "learned", "--stats-json", stats, NULL};
    CU_ASSERT_EQUAL(run(cmd_eval, learned), 0);
    CU_ASSERT(isfinite(json_number(stats, "perplexity")) && json_number(stats, "perplexity") != ppl_masked);
    mf = fopen(mask, "w");
    fputs("0 1\n99 0\n", mf); /* layer out of range */
    fclose(mf);
    CU_ASSERT_EQUAL(run(cmd_eval, masked), 2);
    const char *no_table[] = {"eval", "-m", MODEL_DIR, "--corpus", corpus, "--substitute", "learned", NULL};
    CU_ASSERT_EQUAL(run(cmd_eval, no_table), 2);
    const char *imp[] = {"trust", "importance", "-m", MODEL_DIR, "--corpus", corpus, "--window", "32",
                         "--max-windows", "1", NULL};
    CU_ASSERT_EQUAL(run(cmd_trust, imp), 0);

    /* Input errors exit 2. */
    const char *bad_mode[] = {"eval", "-m", MODEL_DIR, "--corpus", corpus, "--select", "trust", NULL};
    CU_ASSERT_EQUAL(run(cmd_eval, bad_mode), 2);
    const char *no_db[] = {"trust", "train", "-m", MODEL_DIR, "--corpus", corpus, NULL};
    CU_ASSERT_EQUAL(run(cmd_trust, no_db), 2);
    const char *bad_ctx[] = {"eval", "-m", MODEL_DIR, "--corpus", corpus, "--trust-db", db_path, "--context", "nope", NULL};
    CU_ASSERT_EQUAL(run(cmd_eval, bad_ctx), 2);
    const char *bad_sub[] = {"trust", "nope", NULL};
    CU_ASSERT_EQUAL(run(cmd_trust, bad_sub), 2);
}

/* Every trust row of a database except last_used (wall clock), in order. */
static char *rows_of(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *q;
    size_t cap = 1 << 16, n = 0;
    char *out = tm_malloc(cap);
    out[0] = 0;
    if (sqlite3_open(path, &db) != SQLITE_OK) return out;
    sqlite3_prepare_v2(db,
                       "SELECT model, context, layer, expert, trust, evidence, last_quality, last_credit, "
                       "hex(window) FROM trust ORDER BY model, context, layer, expert",
                       -1, &q, NULL);
    while (sqlite3_step(q) == SQLITE_ROW) {
        char line[512];
        int len = snprintf(line, sizeof line, "%s %s %d %d %.17g %lld %.17g %.17g %s\n", sqlite3_column_text(q, 0),
                           sqlite3_column_text(q, 1), sqlite3_column_int(q, 2), sqlite3_column_int(q, 3),
                           sqlite3_column_double(q, 4), (long long)sqlite3_column_int64(q, 5),
                           sqlite3_column_double(q, 6), sqlite3_column_double(q, 7), sqlite3_column_text(q, 8));
        while (n + (size_t)len + 1 > cap) out = tm_realloc(out, cap *= 2);
        memcpy(out + n, line, (size_t)len + 1);
        n += (size_t)len;
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    return out;
}

/* SIGKILL `trust train` at random moments: the database passes
 * integrity_check and holds exactly the first n windows, n being its
 * committed progress count: a fresh run of n windows gives the same rows. */
static void test_train_sigkill(void)
{
    char killed[300], redo[300];
    snprintf(killed, sizeof killed, "%s/killed.db", dir);
    snprintf(redo, sizeof redo, "%s/redo.db", dir);
    uint64_t rng = 12345;
    int rounds = 0, tries = 0;
    /* the first window's commit takes longer in slow builds (sanitizers,
     * a loaded machine): each kill that came before it doubles the wait */
    useconds_t base = 50000;
    while (rounds < 3 && tries < 30) {
        tries++;
        unlink(killed);
        unlink(redo);
        char wal[320];
        snprintf(wal, sizeof wal, "%s-wal", killed);
        unlink(wal);
        snprintf(wal, sizeof wal, "%s-shm", killed);
        unlink(wal);
        fflush(NULL);
        pid_t pid = fork();
        CU_ASSERT_FATAL(pid >= 0);
        if (pid == 0) {
            if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(3);
            const char *train[] = {"trust", "train", "-m", MODEL_DIR, "--corpus", big, "--trust-db", killed,
                                   "--window", "32", NULL};
            _exit(run(cmd_trust, train));
        }
        usleep(base + trust_rng_below(&rng, 400000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        if (!WIFSIGNALED(status)) {
            fprintf(stderr, "train finished before the kill (status %d)\n", status);
            continue;
        }
        trust_db db;
        tm_err err;
        CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, killed, NULL, &err), TM_OK);
        char model_id[40];
        sqlite3_stmt *q;
        int64_t n = 0;
        sqlite3_prepare_v2(db.db, "SELECT model, windows FROM train_progress", -1, &q, NULL);
        if (sqlite3_step(q) == SQLITE_ROW) {
            snprintf(model_id, sizeof model_id, "%s", sqlite3_column_text(q, 0));
            n = sqlite3_column_int64(q, 1);
        }
        sqlite3_finalize(q);
        trust_db_close(&db);
        if (n == 0) { /* killed before the first window: try again, later */
            if (base < 8000000) base *= 2;
            continue;
        }
        const char *chk[] = {"trust", "check", "--trust-db", killed, NULL};
        CU_ASSERT_EQUAL(run(cmd_trust, chk), 0);
        char nbuf[32];
        snprintf(nbuf, sizeof nbuf, "%lld", (long long)n);
        const char *again[] = {"trust", "train", "-m", MODEL_DIR, "--corpus", big, "--trust-db", redo,
                               "--window", "32", "--max-windows", nbuf, NULL};
        CU_ASSERT_EQUAL(run(cmd_trust, again), 0);
        char *a = rows_of(killed), *b = rows_of(redo);
        CU_ASSERT(strlen(a) > 0);
        CU_ASSERT_STRING_EQUAL(a, b);
        free(a);
        free(b);
        fprintf(stderr, "killed after %lld committed windows: state matches a clean run of %lld\n", (long long)n,
                (long long)n);
        rounds++;
    }
    CU_ASSERT_EQUAL(rounds, 3);
}

int main(void)
{
    if (!mkdtemp(dir)) return 2;
    snprintf(corpus, sizeof corpus, "%s/corpus.ids", dir);
    snprintf(db_path, sizeof db_path, "%s/trust.db", dir);
    snprintf(stats, sizeof stats, "%s/stats.json", dir);
    /* A corpus of token ids with two "topics": low ids and high ids. */
    FILE *f = fopen(corpus, "w");
    if (!f) return 2;
    uint64_t rng = 17;
    for (int i = 0; i < 256; i++) {
        int hi = (i / 32) % 2;
        fprintf(f, "%u%s", (unsigned)(hi * 256 + trust_rng_below(&rng, 256)), i % 16 == 15 ? "\n" : ",");
    }
    fclose(f);
    snprintf(big, sizeof big, "%s/big.ids", dir);
    f = fopen(big, "w");
    if (!f) return 2;
    for (int i = 0; i < 200000; i++) fprintf(f, "%u\n", (unsigned)trust_rng_below(&rng, 512));
    fclose(f);
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("trust_cli", NULL, NULL);
    CU_add_test(s, "router selection: logits bit-identical to the engine", test_router_logits_identical);
    CU_add_test(s, "fit-contexts, train, eval, show", test_commands);
    CU_add_test(s, "SIGKILL during trust train keeps the committed windows", test_train_sigkill);
    int rc = cunit_run();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
