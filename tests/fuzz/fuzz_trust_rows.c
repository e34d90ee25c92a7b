/* fuzz_trust_rows.c: the numbers of trust database rows, as a file edited
 * by hand or damaged could hold them, read back by trust_db_get,
 * trust_db_load_table and trust_db_load_contexts.
 *
 * Input layout (little-endian, zero-filled when short):
 *   f64 trust, i64 evidence, f64 last_quality, f64 last_credit,
 *   i32 layer, i32 expert, i32 k, i32 dim, i32 context, i64 n_samples,
 *   u8 window_len, then window bytes, then the rest as the centroid blob. */
#include "fuzz.h"
#include "trust_db.h"

#include <sqlite3.h>

typedef struct {
    const uint8_t *p;
    size_t n;
} reader;

static void take(reader *r, void *out, size_t k)
{
    memset(out, 0, k);
    size_t m = r->n < k ? r->n : k;
    memcpy(out, r->p, m);
    r->p += m;
    r->n -= m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static trust_db db;
    static int ready;
    tm_err err;
    if (!ready) {
        char path[256];
        snprintf(path, sizeof path, "%s/trust.db", fuzz_dir());
        if (trust_db_open(&db, path, NULL, &err) != TM_OK) abort();
        ready = 1;
    }
    reader r = {data, size};
    double trust, q, credit;
    int64_t evidence, n_samples;
    int32_t layer, expert, k, dim, context;
    uint8_t wlen;
    take(&r, &trust, 8);
    take(&r, &evidence, 8);
    take(&r, &q, 8);
    take(&r, &credit, 8);
    take(&r, &layer, 4);
    take(&r, &expert, 4);
    take(&r, &k, 4);
    take(&r, &dim, 4);
    take(&r, &context, 4);
    take(&r, &n_samples, 8);
    take(&r, &wlen, 1);
    size_t wn = wlen < r.n ? wlen : r.n;
    const uint8_t *window = r.p;
    r.p += wn;
    r.n -= wn;

    sqlite3_exec(db.db, "DELETE FROM trust; DELETE FROM context_set; DELETE FROM contexts", NULL, NULL, NULL);
    sqlite3_stmt *s = NULL;
    sqlite3_prepare_v2(db.db,
                       "INSERT INTO trust (model, context, layer, expert, trust, evidence, last_quality, "
                       "last_credit, last_used, window) VALUES ('m', 'general', ?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)",
                       -1, &s, NULL);
    sqlite3_bind_int(s, 1, layer);
    sqlite3_bind_int(s, 2, expert);
    sqlite3_bind_double(s, 3, trust);
    sqlite3_bind_int64(s, 4, evidence);
    sqlite3_bind_double(s, 5, q);
    sqlite3_bind_double(s, 6, credit);
    sqlite3_bind_blob(s, 7, window, (int)wn, SQLITE_STATIC);
    sqlite3_step(s);
    sqlite3_finalize(s);
    sqlite3_prepare_v2(db.db, "INSERT INTO context_set (model, k, dim, created) VALUES ('m', ?1, ?2, 0)", -1, &s,
                       NULL);
    sqlite3_bind_int(s, 1, k);
    sqlite3_bind_int(s, 2, dim);
    sqlite3_step(s);
    sqlite3_finalize(s);
    sqlite3_prepare_v2(db.db, "INSERT INTO contexts (model, context, n_samples, centroid) VALUES ('m', ?1, ?2, ?3)",
                       -1, &s, NULL);
    sqlite3_bind_int(s, 1, context);
    sqlite3_bind_int64(s, 2, n_samples);
    sqlite3_bind_blob(s, 3, r.p, (int)r.n, SQLITE_STATIC);
    sqlite3_step(s);
    sqlite3_finalize(s);

    trust_entry e;
    int found;
    (void)trust_db_get(&db, "m", layer, expert, "general", &e, &found, &err);
    trust_table t;
    trust_table_init(&t, 4, 16, "general");
    (void)trust_db_load_table(&db, "m", &t, &err);
    trust_table_free(&t);
    trust_contexts c;
    if (trust_db_load_contexts(&db, "m", &c, &found, &err) == TM_OK && found) {
        if (c.dim == 8) {
            float x[8] = {1, 0, 0, 0, 0, 0, 0, 1}, conf;
            (void)trust_contexts_classify(&c, x, NULL, &conf);
        }
        trust_contexts_free(&c);
    }
    return 0;
}
