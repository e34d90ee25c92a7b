/* test_trust_db.c: the SQLite reputation store and quality feedback: WAL,
 * schema version, the research system's numbers through the database,
 * round trips, transactions, sharing, contexts, weight-proportional credit. */
#include <CUnit/Basic.h>

#include "cunit_run.h"
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "trust_context.h"
#include "trust_db.h"
#include "trust_quality.h"
#include "trust_rng.h"

#define L 4
#define E 16
static const char *MODEL = "test-model@abc123";
static char dir[] = "/tmp/trust_db_XXXXXX";
static char path[256];
static int n_db;

/* A fresh database path per test. */
static const char *fresh(void)
{
    snprintf(path, sizeof path, "%s/t%d.db", dir, n_db++);
    return path;
}

static void test_open_wal_version(void)
{
    trust_db db;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, fresh(), NULL, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_schema_version(&db), TRUST_DB_SCHEMA_VERSION);
    trust_db_close(&db);
    /* WAL is a property of the file: a plain connection sees it. */
    sqlite3 *raw;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &raw), SQLITE_OK);
    sqlite3_stmt *q;
    sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &q, NULL);
    CU_ASSERT_EQUAL(sqlite3_step(q), SQLITE_ROW);
    CU_ASSERT_STRING_EQUAL((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    /* A newer schema is refused with a message naming the file. */
    sqlite3_exec(raw, "PRAGMA user_version = 99", NULL, NULL, NULL);
    sqlite3_close(raw);
    CU_ASSERT_EQUAL(trust_db_open(&db, path, NULL, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, path) != NULL && strstr(err.msg, "newer") != NULL);
    /* Reopening a current database applies nothing and keeps the data. */
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, fresh(), NULL, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_record(&db, MODEL, 1, 2, "code", 0.9, 1.0, 10, NULL, &err), TM_OK);
    trust_db_close(&db);
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, path, NULL, &err), TM_OK);
    trust_entry e;
    int found;
    CU_ASSERT_EQUAL(trust_db_get(&db, MODEL, 1, 2, "code", &e, &found, &err), TM_OK);
    CU_ASSERT(found && fabs(e.trust - 0.54) < 1e-12);
    trust_db_close(&db);
    /* Unopenable path and bad rate are errors. */
    CU_ASSERT_EQUAL(trust_db_open(&db, "/nonexistent/dir/t.db", NULL, &err), TM_EFAIL);
    CU_ASSERT(strstr(err.msg, "/nonexistent/dir/t.db") != NULL);
    trust_db_params p = trust_db_default_params();
    p.ema_rate = 0;
    CU_ASSERT_EQUAL(trust_db_open(&db, fresh(), &p, &err), TM_EINPUT);
}

static void test_migration(void)
{
    /* A version-1 database (no train_progress) with data in it. */
    trust_db db;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, fresh(), NULL, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_record(&db, MODEL, 3, 7, "code", 0.9, 1.0, 10, NULL, &err), TM_OK);
    trust_db_close(&db);
    sqlite3 *raw;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &raw), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(raw, "DROP TABLE train_progress; DROP TABLE baseline; DROP TABLE substitute_fit; "
                                 "PRAGMA user_version = 1", NULL, NULL, NULL),
                    SQLITE_OK);
    sqlite3_close(raw);
    /* Opening migrates it to the current version and keeps the data. */
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, path, NULL, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_schema_version(&db), TRUST_DB_SCHEMA_VERSION);
    trust_entry e;
    int found;
    trust_db_get(&db, MODEL, 3, 7, "code", &e, &found, &err);
    CU_ASSERT(found && fabs(e.trust - 0.54) < 1e-12);
    int64_t w;
    CU_ASSERT_EQUAL(trust_db_get_progress(&db, MODEL, "run", &w, &err), TM_OK);
    CU_ASSERT_EQUAL(w, 0);
    CU_ASSERT_EQUAL(trust_db_add_progress(&db, MODEL, "run", 1, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_begin(&db, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_add_progress(&db, MODEL, "run", 2, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_commit(&db, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_get_progress(&db, MODEL, "run", &w, &err), TM_OK);
    CU_ASSERT_EQUAL(w, 3);
    trust_db_close(&db);
}

static void test_sage_numbers_in_db(void)
{
    trust_db db;
    tm_err err;
    trust_entry e;
    int found;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, fresh(), NULL, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_get(&db, MODEL, 0, 5, "code", &e, &found, &err), TM_OK);
    CU_ASSERT(!found && e.trust == 0.5 && e.evidence == 0);
    trust_db_record(&db, MODEL, 0, 5, "code", 0.9, 1.0, 100, &e, &err);
    CU_ASSERT_DOUBLE_EQUAL(e.trust, 0.54, 1e-12);
    trust_db_record(&db, MODEL, 0, 5, "code", 0.9, 1.0, 101, &e, &err);
    CU_ASSERT_DOUBLE_EQUAL(e.trust, 0.576, 1e-12);
    trust_db_record(&db, MODEL, 0, 5, "prose", 0.3, 1.0, 102, &e, &err);
    CU_ASSERT_DOUBLE_EQUAL(e.trust, 0.48, 1e-12);
    /* The key has a layer: expert 5 of layer 1 is another expert. */
    CU_ASSERT_EQUAL(trust_db_get(&db, MODEL, 1, 5, "code", &e, &found, &err), TM_OK);
    CU_ASSERT(!found && e.trust == 0.5);
    /* And a model: another model's expert 5 is untouched. */
    CU_ASSERT_EQUAL(trust_db_get(&db, "other-model", 0, 5, "code", &e, &found, &err), TM_OK);
    CU_ASSERT(!found);
    trust_pair pr;
    trust_db_record_pair(&db, MODEL, 0, 5, 9, 0.85, &pr, &err);
    trust_db_record_pair(&db, MODEL, 0, 5, 9, 0.95, &pr, &err);
    CU_ASSERT_EQUAL(pr.count, 2);
    CU_ASSERT_DOUBLE_EQUAL(pr.quality, 0.86, 1e-12);
    CU_ASSERT_EQUAL(trust_db_record_substitution(&db, MODEL, 0, 15, 47, "code", 0.15, 200, &err), TM_OK);
    trust_db_get(&db, MODEL, 0, 15, "code", &e, &found, &err);
    CU_ASSERT_DOUBLE_EQUAL(e.trust, 0.6, 1e-12);
    trust_db_close(&db);

    /* Round trip: everything survives a close and reopen. */
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, path, NULL, &err), TM_OK);
    trust_db_get(&db, MODEL, 0, 5, "code", &e, &found, &err);
    CU_ASSERT(found);
    CU_ASSERT_DOUBLE_EQUAL(e.trust, 0.576, 1e-12);
    CU_ASSERT_EQUAL(e.evidence, 2);
    CU_ASSERT_EQUAL(e.last_used, 101);
    CU_ASSERT_DOUBLE_EQUAL(e.last_quality, 0.9, 1e-12);
    CU_ASSERT_EQUAL(e.n_window, 2);
    CU_ASSERT(e.window[0] == 0.9f && e.window[1] == 0.9f);
    int pf;
    trust_db_get_pair(&db, MODEL, 0, 5, 9, &pr, &pf, &err);
    CU_ASSERT(pf && pr.count == 2 && fabs(pr.quality - 0.86) < 1e-12);
    trust_db_get_pair(&db, MODEL, 0, 9, 5, &pr, &pf, &err);
    CU_ASSERT(!pf);
    int64_t ns;
    CU_ASSERT_EQUAL(trust_db_count_substitutions(&db, MODEL, &ns, &err), TM_OK);
    CU_ASSERT_EQUAL(ns, 1);
    trust_table t;
    trust_table_init(&t, L, E, "code");
    CU_ASSERT_EQUAL(trust_db_load_table(&db, MODEL, &t, &err), TM_OK);
    CU_ASSERT_DOUBLE_EQUAL(t.trust[5], 0.576, 1e-6);
    CU_ASSERT_EQUAL(t.evidence[5], 2);
    CU_ASSERT_DOUBLE_EQUAL(t.trust[15], 0.6, 1e-6);
    CU_ASSERT_EQUAL(t.trust[E + 5], 0.5f);
    CU_ASSERT_EQUAL(t.evidence[E + 5], 0);
    trust_table_free(&t);
    /* A table too small for the stored rows is an error naming the row. */
    trust_table_init(&t, 1, 8, "code");
    CU_ASSERT_EQUAL(trust_db_load_table(&db, MODEL, &t, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "expert 15") != NULL);
    trust_table_free(&t);
    trust_db_close(&db);
}

static void test_transactions(void)
{
    trust_db db;
    tm_err err;
    trust_entry e;
    int found;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, fresh(), NULL, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_begin(&db, &err), TM_OK);
    for (int i = 0; i < 500; i++) trust_db_record(&db, MODEL, i % L, i % E, "code", 0.8, 1.0, i, NULL, &err);
    trust_db_rollback(&db);
    trust_db_get(&db, MODEL, 0, 0, "code", &e, &found, &err);
    CU_ASSERT(!found);
    double t0 = tm_now();
    CU_ASSERT_EQUAL(trust_db_begin(&db, &err), TM_OK);
    for (int i = 0; i < 6144; i++) trust_db_record(&db, MODEL, i / 1024, i % 1024, "code", 0.8, 1.0, i, NULL, &err);
    CU_ASSERT_EQUAL(trust_db_commit(&db, &err), TM_OK);
    fprintf(stderr, "\n6144 updates in one transaction: %.1f ms\n", (tm_now() - t0) * 1e3);
    trust_db_get(&db, MODEL, 5, 1023, "code", &e, &found, &err);
    CU_ASSERT(found && e.evidence == 1);
    /* Out-of-range quality is an input error. */
    CU_ASSERT_EQUAL(trust_db_record(&db, MODEL, 0, 0, "code", 1.5, 1.0, 0, NULL, &err), TM_EINPUT);
    trust_db_close(&db);
}

static void test_shared(void)
{
    /* Two connections (as two processes would) on one file, each in its own
     * transactions: every update of both is kept. */
    trust_db a, b;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&a, fresh(), NULL, &err), TM_OK);
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&b, path, NULL, &err), TM_OK);
    for (int i = 0; i < 20; i++) {
        trust_db *d = i % 2 ? &b : &a;
        CU_ASSERT_EQUAL(trust_db_begin(d, &err), TM_OK);
        CU_ASSERT_EQUAL(trust_db_record(d, MODEL, 0, 3, "code", 0.9, 1.0, i, NULL, &err), TM_OK);
        CU_ASSERT_EQUAL(trust_db_commit(d, &err), TM_OK);
    }
    trust_entry e;
    int found;
    trust_db_get(&a, MODEL, 0, 3, "code", &e, &found, &err);
    CU_ASSERT_EQUAL(e.evidence, 20);
    /* A writer holding the lock makes the other wait, then fail with a
     * message after its busy timeout rather than corrupt anything. */
    trust_db_params p = trust_db_default_params();
    p.busy_timeout_ms = 50;
    trust_db c;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&c, path, &p, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_begin(&a, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_begin(&c, &err), TM_EFAIL);
    CU_ASSERT(strstr(err.msg, path) != NULL);
    trust_db_rollback(&a);
    CU_ASSERT_EQUAL(trust_db_begin(&c, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_commit(&c, &err), TM_OK);
    trust_db_close(&c);
    trust_db_close(&a);
    trust_db_close(&b);
}

static void test_contexts_db(void)
{
    enum { D = 32, K = 4, N = 80 };
    float x[N * D];
    uint64_t rng = 8;
    for (int i = 0; i < N * D; i++) x[i] = (float)(trust_rng_uniform(&rng) - 0.5) + (float)((i / D) % K == (i % D) % K);
    trust_kmeans_params kp = trust_kmeans_default_params();
    kp.k = K;
    trust_contexts c, back;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(trust_contexts_fit(&c, x, N, D, &kp, NULL, &err), TM_OK);
    trust_db db;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, fresh(), NULL, &err), TM_OK);
    int found;
    CU_ASSERT_EQUAL(trust_db_load_contexts(&db, MODEL, &back, &found, &err), TM_OK);
    CU_ASSERT(!found);
    CU_ASSERT_EQUAL(trust_db_save_contexts(&db, MODEL, &c, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_save_contexts(&db, MODEL, &c, &err), TM_OK); /* replaces */
    CU_ASSERT_EQUAL(trust_db_load_contexts(&db, MODEL, &back, &found, &err), TM_OK);
    CU_ASSERT_FATAL(found);
    CU_ASSERT(back.k == K && back.dim == D);
    CU_ASSERT(memcmp(back.centroids, c.centroids, sizeof(float) * K * D) == 0);
    CU_ASSERT(memcmp(back.n_samples, c.n_samples, sizeof(int64_t) * K) == 0);
    for (int i = 0; i < N; i++) {
        float d1, d2, c1, c2;
        CU_ASSERT_EQUAL(trust_contexts_classify(&c, x + i * D, &d1, &c1),
                        trust_contexts_classify(&back, x + i * D, &d2, &c2));
        CU_ASSERT(d1 == d2 && c1 == c2);
    }
    trust_contexts_free(&back);
    trust_contexts_free(&c);
    trust_db_close(&db);
}

static void test_quality(void)
{
    CU_ASSERT_DOUBLE_EQUAL(trust_quality_from_ppl(10.0), 0.5, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(trust_quality_from_ppl(1.0), 10.0 / 11.0, 1e-12);
    trust_quality_acc acc;
    trust_quality_init(&acc, L, E, 2);
    CU_ASSERT_DOUBLE_EQUAL(trust_quality_window_q(&acc), -1.0, 0);
    /* Ten tokens at layer 0: expert 1 carries 0.5 of every token, expert 2
     * 0.5 of five tokens, expert 3 0.5 of the other five. */
    for (int t = 0; t < 10; t++) {
        int32_t ids[2] = {1, t < 5 ? 2 : 3};
        float w[2] = {0.5f, 0.5f};
        trust_quality_add(&acc, 0, ids, w, 2);
    }
    trust_quality_add_ce(&acc, 10 * log(10.0), 10); /* ppl 10: q 0.5 */
    CU_ASSERT_DOUBLE_EQUAL(trust_quality_window_q(&acc), 0.5, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(trust_quality_credit(&acc, 0, 1), 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(trust_quality_credit(&acc, 0, 2), 0.5, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(trust_quality_credit(&acc, 0, 4), 0.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(trust_quality_credit(&acc, 1, 1), 0.0, 1e-12);
    trust_quality_reset(&acc);
    int32_t bids[2 * 2] = {4, 5, 4, 6};
    float bw[2 * 2] = {0.5f, 0.5f, 0.5f, 0.5f};
    trust_quality_add_batch(&acc, 3, bids, bw, 2, 2);
    CU_ASSERT_DOUBLE_EQUAL(trust_quality_credit(&acc, 3, 4), 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(trust_quality_credit(&acc, 3, 6), 0.5, 1e-12);
    trust_quality_reset(&acc);

    /* Through the database: q = 10/11 (ce 0), rate 0.1. */
    trust_db db;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, fresh(), NULL, &err), TM_OK);
    trust_table t;
    trust_table_init(&t, L, E, "code");
    for (int r = 0; r < 4; r++) {
        int32_t ids[2] = {1, r < 2 ? 2 : 3};
        float w[2] = {0.75f, 0.25f};
        trust_quality_add(&acc, 2, ids, w, 2);
    }
    trust_quality_add_ce(&acc, 0.0, 4);
    double q;
    CU_ASSERT_EQUAL(trust_quality_commit(&acc, &db, MODEL, &t, 0.1, 500, &q, &err), TM_OK);
    CU_ASSERT_DOUBLE_EQUAL(q, 10.0 / 11.0, 1e-12);
    trust_entry e1, e2;
    int found;
    trust_db_get(&db, MODEL, 2, 1, "code", &e1, &found, &err);
    trust_db_get(&db, MODEL, 2, 2, "code", &e2, &found, &err);
    /* credit(1) = min(1, 2 * 3 / 4) = 1; credit(2) = 2 * 0.5 / 4 = 0.25 */
    CU_ASSERT_DOUBLE_EQUAL(e1.trust, 0.5 + 0.1 * (q - 0.5), 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(e2.trust, 0.5 + 0.025 * (q - 0.5), 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(e2.last_quality, q, 1e-12); /* unweighted q kept */
    CU_ASSERT_DOUBLE_EQUAL(e2.last_credit, 0.25, 1e-12);
    CU_ASSERT(e1.evidence == 1 && e2.evidence == 1 && e1.last_used == 500);
    CU_ASSERT_DOUBLE_EQUAL(t.trust[2 * E + 2], e2.trust, 1e-6);
    CU_ASSERT_EQUAL(t.evidence[2 * E + 1], 1);
    CU_ASSERT_EQUAL(t.evidence[2 * E + 4], 0);
    /* The accumulator was reset: committing again changes nothing. */
    CU_ASSERT_EQUAL(trust_quality_commit(&acc, &db, MODEL, &t, 0.1, 501, &q, &err), TM_OK);
    CU_ASSERT_DOUBLE_EQUAL(q, -1.0, 0);
    trust_db_get(&db, MODEL, 2, 1, "code", &e1, &found, &err);
    CU_ASSERT_EQUAL(e1.evidence, 1);

    /* The feedback loop of the research system: [5,10] q 0.88, [5,15] q 0.90,
     * [10,15] q 0.35, all in "code": trust(5) > trust(10). */
    trust_table_reset(&t);
    const int pairs[3][2] = {{5, 10}, {5, 15}, {10, 15}};
    const double qs[3] = {0.88, 0.90, 0.35};
    for (int i = 0; i < 3; i++) {
        int32_t ids[2] = {pairs[i][0], pairs[i][1]};
        float w[2] = {0.5f, 0.5f};
        trust_quality_add(&acc, 0, ids, w, 2);
        double ppl = 10.0 * (1.0 / qs[i] - 1.0); /* the ppl whose q is qs[i] */
        trust_quality_add_ce(&acc, log(ppl), 1);
        CU_ASSERT_EQUAL(trust_quality_commit(&acc, &db, MODEL, &t, 0.1, 600 + i, &q, &err), TM_OK);
        CU_ASSERT_DOUBLE_EQUAL(q, qs[i], 1e-9);
    }
    CU_ASSERT(t.trust[5] > t.trust[10]);
    /* Without a database the in-memory table moves the same way. */
    trust_table m;
    trust_table_init(&m, L, E, "code");
    int32_t ids[2] = {1, 2};
    float w[2] = {0.5f, 0.5f};
    trust_quality_add(&acc, 0, ids, w, 2);
    trust_quality_add_ce(&acc, 0.0, 1);
    CU_ASSERT_EQUAL(trust_quality_commit(&acc, NULL, MODEL, &m, 0.1, 0, &q, &err), TM_OK);
    CU_ASSERT_DOUBLE_EQUAL(m.trust[1], 0.5 + 0.1 * (q - 0.5), 1e-6);
    CU_ASSERT_EQUAL(m.evidence[2], 1);
    trust_table_free(&m);
    trust_table_free(&t);
    trust_quality_free(&acc);
    trust_db_close(&db);
}

/* A version-2 database (before baselines and substitute fits) migrates to
 * 3, keeps its rows, and the new tables then round-trip. */
static void test_migration_v2(void)
{
    trust_db db;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, fresh(), NULL, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_record(&db, MODEL, 1, 2, "code", 0.9, 1.0, 10, NULL, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_add_progress(&db, MODEL, "run", 5, &err), TM_OK);
    trust_db_close(&db);
    sqlite3 *raw;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &raw), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_exec(raw, "DROP TABLE baseline; DROP TABLE substitute_fit; PRAGMA user_version = 2",
                                 NULL, NULL, NULL),
                    SQLITE_OK);
    sqlite3_close(raw);
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, path, NULL, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_schema_version(&db), 3);
    trust_entry e;
    int found;
    int64_t w;
    trust_db_get(&db, MODEL, 1, 2, "code", &e, &found, &err);
    CU_ASSERT(found && fabs(e.trust - 0.54) < 1e-12);
    CU_ASSERT_EQUAL(trust_db_get_progress(&db, MODEL, "run", &w, &err), TM_OK);
    CU_ASSERT_EQUAL(w, 5);

    trust_baseline b = {0.1, 0.0004, 7}, b2;
    CU_ASSERT_EQUAL(trust_db_get_baseline(&db, MODEL, "code", &b2, &found, &err), TM_OK);
    CU_ASSERT_EQUAL(found, 0);
    CU_ASSERT_EQUAL(trust_db_put_baseline(&db, MODEL, "code", &b, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_get_baseline(&db, MODEL, "code", &b2, &found, &err), TM_OK);
    CU_ASSERT(found && b2.mean == 0.1 && b2.var == 0.0004 && b2.windows == 7);

    /* Substitute sums for layer 0, expert 3: expert 5 is y_3 / 2 exactly
     * (es = ee/2, ss = ee/4: gain 2, residual 0), expert 9 half-aligned,
     * expert 1 anti-correlated (never offered). */
    double *ee = calloc(L * E, sizeof *ee), *es = calloc(L * E * E, sizeof *es), *ss = calloc(L * E * E, sizeof *ss),
           *ws = calloc(L * E, sizeof *ws);
    ee[3] = 4.0;
    ws[3] = 1.0;
    for (int x = 0; x < E; x++) ss[3 * E + x] = 1.0;
    es[3 * E + 5] = 2.0;
    ss[3 * E + 5] = 1.0;
    es[3 * E + 9] = 1.0;
    es[3 * E + 1] = -1.0;
    for (int rep = 0; rep < 2; rep++) /* sums add up over windows; the ratios stay */
        CU_ASSERT_EQUAL(trust_db_add_substitute_fit(&db, MODEL, "code", L, E, ee, es, ss, ws, &err), TM_OK);
    int32_t *rank = malloc(L * E * E * sizeof *rank);
    float *gain = malloc(L * E * E * sizeof *gain);
    CU_ASSERT_EQUAL(trust_db_load_substitutes(&db, MODEL, "other", L, E, rank, gain, &found, &err), TM_OK);
    CU_ASSERT_EQUAL(found, 0);
    CU_ASSERT_EQUAL(trust_db_load_substitutes(&db, MODEL, "code", L, E, rank, gain, &found, &err), TM_OK);
    CU_ASSERT_EQUAL(found, 1);
    CU_ASSERT_EQUAL(rank[3 * E + 0], 5);
    CU_ASSERT_EQUAL(rank[3 * E + 1], 9);
    CU_ASSERT_EQUAL(rank[3 * E + 2], -1); /* the zero-dot and anti-correlated ones are not offered */
    CU_ASSERT(fabsf(gain[3 * E + 5] - 2.0f) < 1e-6f);
    CU_ASSERT(fabsf(gain[3 * E + 9] - 1.0f) < 1e-6f);
    CU_ASSERT_EQUAL(gain[3 * E + 1], 0.0f);
    CU_ASSERT_EQUAL(rank[0], -1); /* expert 0 was never chosen */

    /* co-selection counts add up */
    int64_t *cnt = calloc(E * E, sizeof *cnt);
    cnt[2 * E + 7] = 3;
    CU_ASSERT_EQUAL(trust_db_add_pair_counts(&db, MODEL, 1, E, cnt, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_add_pair_counts(&db, MODEL, 1, E, cnt, &err), TM_OK);
    trust_pair pr;
    CU_ASSERT_EQUAL(trust_db_get_pair(&db, MODEL, 1, 2, 7, &pr, &found, &err), TM_OK);
    CU_ASSERT(found && pr.count == 6);
    free(cnt);
    free(ee);
    free(es);
    free(ss);
    free(ws);
    free(rank);
    free(gain);
    trust_db_close(&db);
}

/* The advantage target: 0.5 through the warm-up, then above 0.5 for a
 * window better than the context's norm and below for a worse one, by
 * 0.1 per standard deviation. */
static void test_advantage(void)
{
    trust_baseline b = {0};
    double qs[] = {0.10, 0.12, 0.08, 0.10};
    for (int i = 0; i < 4; i++) CU_ASSERT_EQUAL(trust_baseline_target(&b, qs[i], 0.1, 0.05), 0.5);
    CU_ASSERT_EQUAL(b.windows, 4);
    double m = b.mean, sd = sqrt(b.var);
    trust_baseline c = b;
    double up = trust_baseline_target(&c, m + 2 * sd, 0.1, 0.05);
    CU_ASSERT(fabs(up - (0.5 + 0.1 * 2 * sd / (sd + 1e-3))) < 1e-12);
    c = b;
    double down = trust_baseline_target(&c, m - 2 * sd, 0.1, 0.05);
    CU_ASSERT(down < 0.5 && fabs((0.5 - down) - (up - 0.5)) < 1e-12);
    c = b;
    CU_ASSERT_EQUAL(trust_baseline_target(&c, m + 1000, 0.1, 0.05), 1.0); /* clipped */
    /* the baseline follows q */
    CU_ASSERT(c.mean > m);
}

static int cleanup(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}

int main(void)
{
    if (!mkdtemp(dir)) return 2;
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("trust_db", NULL, cleanup);
    CU_add_test(s, "open, WAL, schema version", test_open_wal_version);
    CU_add_test(s, "migration from version 1", test_migration);
    CU_add_test(s, "migration from version 2, baselines, substitutes, pairs", test_migration_v2);
    CU_add_test(s, "advantage target", test_advantage);
    CU_add_test(s, "research numbers through the DB, round trip", test_sage_numbers_in_db);
    CU_add_test(s, "transactions", test_transactions);
    CU_add_test(s, "two connections share one DB", test_shared);
    CU_add_test(s, "contexts stored and reloaded", test_contexts_db);
    CU_add_test(s, "quality windows and credit", test_quality);
    return cunit_run();
}
