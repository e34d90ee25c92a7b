/* trust_db.c: the SQLite reputation store (schema and rules in trust_db.h). */
#include "trust_db.h"
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#define TRUST_DB_MAX_CONTEXTS 4096               /* as trust fit-contexts --contexts */
#define TRUST_DB_MAX_CENTROID_FLOATS (1 << 26)  /* k x dim of one context set        */
#define TRUST_DB_MAX_EVIDENCE ((int64_t)1 << 62) /* room to count on without overflow */

/* Trust is an EMA of qualities in [0, 1]. */
static int trust_value_ok(double t) { return t >= 0.0 && t <= 1.0; }

/* ---- schema --------------------------------------------------------------- */

/* migrations[v] takes a database from user_version v to v + 1. */
static const char *const migrations[TRUST_DB_SCHEMA_VERSION] = {
    "CREATE TABLE trust ("
    "  model TEXT NOT NULL, context TEXT NOT NULL,"
    "  layer INTEGER NOT NULL, expert INTEGER NOT NULL,"
    "  trust REAL NOT NULL, evidence INTEGER NOT NULL,"
    "  last_quality REAL NOT NULL, last_credit REAL NOT NULL,"
    "  last_used INTEGER NOT NULL, window BLOB NOT NULL,"
    "  PRIMARY KEY (model, context, layer, expert)) WITHOUT ROWID;"
    "CREATE TABLE context_set ("
    "  model TEXT PRIMARY KEY, k INTEGER NOT NULL, dim INTEGER NOT NULL,"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE contexts ("
    "  model TEXT NOT NULL, context INTEGER NOT NULL, n_samples INTEGER NOT NULL,"
    "  centroid BLOB NOT NULL, PRIMARY KEY (model, context)) WITHOUT ROWID;"
    "CREATE TABLE co_activation ("
    "  model TEXT NOT NULL, layer INTEGER NOT NULL,"
    "  expert_a INTEGER NOT NULL, expert_b INTEGER NOT NULL,"
    "  count INTEGER NOT NULL, quality REAL NOT NULL,"
    "  PRIMARY KEY (model, layer, expert_a, expert_b)) WITHOUT ROWID;"
    "CREATE TABLE substitutions ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL,"
    "  layer INTEGER NOT NULL, substitute INTEGER NOT NULL, requested INTEGER NOT NULL,"
    "  context TEXT NOT NULL, quality_delta REAL NOT NULL, time INTEGER NOT NULL);",
    "CREATE TABLE train_progress ("
    "  model TEXT NOT NULL, run TEXT NOT NULL, windows INTEGER NOT NULL,"
    "  PRIMARY KEY (model, run)) WITHOUT ROWID;",
    "CREATE TABLE baseline ("
    "  model TEXT NOT NULL, context TEXT NOT NULL,"
    "  mean REAL NOT NULL, var REAL NOT NULL, windows INTEGER NOT NULL,"
    "  PRIMARY KEY (model, context)) WITHOUT ROWID;"
    "CREATE TABLE substitute_fit ("
    "  model TEXT NOT NULL, context TEXT NOT NULL, layer INTEGER NOT NULL,"
    "  expert INTEGER NOT NULL, substitute INTEGER NOT NULL,"
    "  ee REAL NOT NULL, es REAL NOT NULL, ss REAL NOT NULL, weight_sum REAL NOT NULL,"
    "  PRIMARY KEY (model, context, layer, expert, substitute)) WITHOUT ROWID;",
};

trust_db_params trust_db_default_params(void)
{
    trust_db_params p = {.ema_rate = 0.1, .busy_timeout_ms = 10000, .sync_full = 0};
    return p;
}

/* A damaged file or one that is not a database is bad input; anything else
 * (locks, I/O, a full disk) is a runtime failure. */
static tm_status sql_status(trust_db *db)
{
    int rc = db->db ? sqlite3_errcode(db->db) : SQLITE_OK;
    return rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT ? TM_EINPUT : TM_EFAIL;
}

static tm_status sql_fail(trust_db *db, tm_err *err, const char *what)
{
    return tm_errf(err, sql_status(db), "%s: %s: %s", db->path ? db->path : "trust db", what,
                   db->db ? sqlite3_errmsg(db->db) : "no database");
}

static tm_status exec(trust_db *db, const char *sql, const char *what, tm_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db->db, sql, NULL, NULL, &msg) == SQLITE_OK) return TM_OK;
    tm_status st = tm_errf(err, sql_status(db), "%s: %s: %s", db->path, what, msg ? msg : "?");
    sqlite3_free(msg);
    return st;
}

static int user_version(trust_db *db)
{
    sqlite3_stmt *q = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(db->db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    return v;
}

int trust_db_schema_version(trust_db *db)
{
    return user_version(db);
}

static tm_status migrate(trust_db *db, tm_err *err)
{
    tm_status st = exec(db, "BEGIN IMMEDIATE", "begin migration", err);
    if (st) return st;
    int v = user_version(db);
    if (v < 0) {
        st = sql_fail(db, err, "read schema version");
        goto fail;
    }
    if (v > TRUST_DB_SCHEMA_VERSION) {
        st = tm_errf(err, TM_EINPUT,
                     "%s: schema version %d is newer than this trustmoe understands (%d)", db->path,
                     v, TRUST_DB_SCHEMA_VERSION);
        goto fail;
    }
    for (; v < TRUST_DB_SCHEMA_VERSION; v++) {
        char what[64];
        snprintf(what, sizeof what, "migrate schema %d -> %d", v, v + 1);
        st = exec(db, migrations[v], what, err);
        if (st) goto fail;
    }
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", TRUST_DB_SCHEMA_VERSION);
    st = exec(db, sql, "set schema version", err);
    if (st) goto fail;
    return exec(db, "COMMIT", "commit migration", err);
fail:
    sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

/* ---- open / close ------------------------------------------------------------ */

static tm_status prepare(trust_db *db, sqlite3_stmt **s, const char *sql, tm_err *err)
{
    if (sqlite3_prepare_v3(db->db, sql, -1, SQLITE_PREPARE_PERSISTENT, s, NULL) == SQLITE_OK)
        return TM_OK;
    return sql_fail(db, err, "prepare statement");
}

tm_status trust_db_must_exist(const char *path, tm_err *err)
{
    if (!*path) return tm_errf(err, TM_EINPUT, "--trust-db: empty path (name a database file)");
    if (access(path, F_OK) != 0)
        return tm_errf(err, TM_EINPUT, "--trust-db %s: no such database (trust fit-contexts or train creates one)",
                       path);
    return TM_OK;
}

tm_status trust_db_open(trust_db *db, const char *path, const trust_db_params *p, tm_err *err)
{
    tm_status st = TM_OK;
    memset(db, 0, sizeof *db);
    db->p = p ? *p : trust_db_default_params();
    db->path = tm_strdup(path);
    if (!(db->p.ema_rate > 0 && db->p.ema_rate <= 1)) {
        st = tm_errf(err, TM_EINPUT, "%s: trust EMA rate %g must lie in (0, 1]", path, db->p.ema_rate);
        goto fail;
    }
    /* SQLite takes "" as a private temporary database: not a place to keep trust */
    if (!path[0]) {
        st = tm_errf(err, TM_EINPUT, "--trust-db: empty path (name a database file)");
        goto fail;
    }
    int flags = db->p.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(path, &db->db, flags, NULL) != SQLITE_OK) {
        st = sql_fail(db, err, "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(db->db, db->p.busy_timeout_ms);
    if (db->p.read_only) {
        int v = user_version(db);
        if (v < 0) {
            st = sql_fail(db, err, "read schema version");
            goto fail;
        }
        if (v != TRUST_DB_SCHEMA_VERSION) {
            st = tm_errf(err, TM_EINPUT, "%s: schema version %d, not %d (opened read-only, so not migrated)", path,
                         v, TRUST_DB_SCHEMA_VERSION);
            goto fail;
        }
        goto statements;
    }
    /* journal_mode answers with the mode now in force; anything but "wal"
     * (a read-only directory, a network file system) is refused. */
    sqlite3_stmt *q = NULL;
    int wal = 0;
    if (sqlite3_prepare_v2(db->db, "PRAGMA journal_mode=WAL", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        wal = strcmp((const char *)sqlite3_column_text(q, 0), "wal") == 0;
    sqlite3_finalize(q);
    if (!wal) {
        st = sql_fail(db, err, "cannot switch to WAL mode");
        goto fail;
    }
    st = exec(db, db->p.sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
              "set synchronous", err);
    if (st) goto fail;
    st = migrate(db, err);
    if (st) goto fail;
statements:
    if ((st = prepare(db, &db->get_entry,
                      "SELECT trust, evidence, last_quality, last_credit, last_used, window "
                      "FROM trust WHERE model=?1 AND context=?2 AND layer=?3 AND expert=?4",
                      err)) ||
        (st = prepare(db, &db->put_entry,
                      "INSERT OR REPLACE INTO trust (model, context, layer, expert, trust, "
                      "evidence, last_quality, last_credit, last_used, window) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                      err)) ||
        (st = prepare(db, &db->load_table,
                      "SELECT layer, expert, trust, evidence FROM trust "
                      "WHERE model=?1 AND context=?2",
                      err)) ||
        (st = prepare(db, &db->get_pair,
                      "SELECT count, quality FROM co_activation "
                      "WHERE model=?1 AND layer=?2 AND expert_a=?3 AND expert_b=?4",
                      err)) ||
        (st = prepare(db, &db->put_pair,
                      "INSERT OR REPLACE INTO co_activation (model, layer, expert_a, expert_b, "
                      "count, quality) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                      err)) ||
        (st = prepare(db, &db->add_subst,
                      "INSERT INTO substitutions (model, layer, substitute, requested, context, "
                      "quality_delta, time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                      err)))
        goto fail;
    return TM_OK;
fail:
    trust_db_close(db);
    return st;
}

void trust_db_close(trust_db *db)
{
    sqlite3_finalize(db->get_entry);
    sqlite3_finalize(db->put_entry);
    sqlite3_finalize(db->load_table);
    sqlite3_finalize(db->get_pair);
    sqlite3_finalize(db->put_pair);
    sqlite3_finalize(db->add_subst);
    if (db->in_tx) sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db->db);
    free(db->path);
    memset(db, 0, sizeof *db);
}

/* ---- transactions --------------------------------------------------------------- */

tm_status trust_db_begin(trust_db *db, tm_err *err)
{
    TM_ASSERT_MSG(!db->in_tx, "trust_db_begin inside a transaction");
    /* IMMEDIATE takes the write lock now, so the read-modify-write of an
     * entry cannot interleave with another process's. */
    tm_status st = exec(db, "BEGIN IMMEDIATE", "begin transaction", err);
    if (!st) db->in_tx = 1;
    return st;
}

tm_status trust_db_commit(trust_db *db, tm_err *err)
{
    TM_ASSERT_MSG(db->in_tx, "trust_db_commit outside a transaction");
    tm_status st = exec(db, "COMMIT", "commit", err);
    if (st) {
        sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
    }
    db->in_tx = 0;
    return st;
}

void trust_db_rollback(trust_db *db)
{
    if (!db->in_tx) return;
    sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
    db->in_tx = 0;
}

/* ---- blobs ----------------------------------------------------------------------- */

static void f32_to_le(const float *x, int n, unsigned char *out)
{
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        out[4 * i + 0] = (unsigned char)u;
        out[4 * i + 1] = (unsigned char)(u >> 8);
        out[4 * i + 2] = (unsigned char)(u >> 16);
        out[4 * i + 3] = (unsigned char)(u >> 24);
    }
}

static void le_to_f32(const unsigned char *in, int n, float *x)
{
    for (int i = 0; i < n; i++) {
        uint32_t u = (uint32_t)in[4 * i] | (uint32_t)in[4 * i + 1] << 8 |
                     (uint32_t)in[4 * i + 2] << 16 | (uint32_t)in[4 * i + 3] << 24;
        memcpy(&x[i], &u, 4);
    }
}

/* ---- entries ---------------------------------------------------------------------- */

tm_status trust_db_get(trust_db *db, const char *model, int layer, int expert, const char *ctx,
                       trust_entry *e, int *found, tm_err *err)
{
    tm_status st = TM_OK;
    sqlite3_stmt *q = db->get_entry;
    trust_entry_init(e);
    *found = 0;
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, ctx, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, layer);
    sqlite3_bind_int(q, 4, expert);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *found = 1;
        e->trust = sqlite3_column_double(q, 0);
        e->evidence = sqlite3_column_int64(q, 1);
        e->last_quality = sqlite3_column_double(q, 2);
        e->last_credit = sqlite3_column_double(q, 3);
        e->last_used = sqlite3_column_int64(q, 4);
        if (!trust_value_ok(e->trust) || e->evidence < 0 || e->evidence > TRUST_DB_MAX_EVIDENCE || !isfinite(e->last_quality) ||
            !isfinite(e->last_credit)) {
            st = tm_errf(err, TM_EINPUT,
                         "%s: trust row (%s, %s, layer %d, expert %d): trust %g, evidence %lld, quality %g, "
                         "credit %g out of range",
                         db->path, model, ctx, layer, expert, e->trust, (long long)e->evidence, e->last_quality,
                         e->last_credit);
            goto done;
        }
        int bytes = sqlite3_column_bytes(q, 5);
        const unsigned char *blob = sqlite3_column_blob(q, 5);
        if (bytes % 4 != 0 || bytes / 4 > TRUST_WINDOW) {
            st = tm_errf(err, TM_EINPUT,
                         "%s: trust row (%s, %s, layer %d, expert %d): window blob of %d bytes "
                         "(want a multiple of 4, at most %d)",
                         db->path, model, ctx, layer, expert, bytes, 4 * TRUST_WINDOW);
            goto done;
        }
        e->n_window = bytes / 4;
        if (bytes) le_to_f32(blob, e->n_window, e->window);
        for (int i = 0; i < e->n_window; i++)
            if (!isfinite(e->window[i])) {
                st = tm_errf(err, TM_EINPUT, "%s: trust row (%s, %s, layer %d, expert %d): window value %d is not finite",
                             db->path, model, ctx, layer, expert, i);
                goto done;
            }
    } else if (rc != SQLITE_DONE) {
        st = sql_fail(db, err, "read trust entry");
    }
done:
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return st;
}

tm_status trust_db_put(trust_db *db, const char *model, int layer, int expert, const char *ctx,
                       const trust_entry *e, tm_err *err)
{
    sqlite3_stmt *q = db->put_entry;
    unsigned char blob[4 * TRUST_WINDOW];
    TM_ASSERT(e->n_window >= 0 && e->n_window <= TRUST_WINDOW);
    f32_to_le(e->window, e->n_window, blob);
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, ctx, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, layer);
    sqlite3_bind_int(q, 4, expert);
    sqlite3_bind_double(q, 5, e->trust);
    sqlite3_bind_int64(q, 6, e->evidence);
    sqlite3_bind_double(q, 7, e->last_quality);
    sqlite3_bind_double(q, 8, e->last_credit);
    sqlite3_bind_int64(q, 9, e->last_used);
    sqlite3_bind_blob(q, 10, blob, 4 * e->n_window, SQLITE_TRANSIENT);
    tm_status st = sqlite3_step(q) == SQLITE_DONE ? TM_OK : sql_fail(db, err, "write trust entry");
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return st;
}

/* Run a read-modify-write in the caller's transaction, or in its own. */
static tm_status own_begin(trust_db *db, int *own, tm_err *err)
{
    *own = !db->in_tx;
    return *own ? trust_db_begin(db, err) : TM_OK;
}

static tm_status own_end(trust_db *db, int own, tm_status st, tm_err *err)
{
    if (!own) return st;
    if (st) {
        trust_db_rollback(db);
        return st;
    }
    return trust_db_commit(db, err);
}

/* A write through one statement: its transaction (unless the caller holds
 * one, own_begin) and the prepared statement; `what` names the write in an
 * error.  On failure nothing is left open.  write_end finalizes, then
 * commits, or rolls back when st says the write failed. */
static tm_status write_begin(trust_db *db, const char *sql, const char *what, sqlite3_stmt **q, int *own,
                             tm_err *err)
{
    *q = NULL;
    tm_status st = own_begin(db, own, err);
    if (st) return st;
    if (sqlite3_prepare_v2(db->db, sql, -1, q, NULL) != SQLITE_OK) {
        st = sql_fail(db, err, what);
        sqlite3_finalize(*q);
        *q = NULL;
        return own_end(db, *own, st, err);
    }
    return TM_OK;
}

static tm_status write_end(trust_db *db, sqlite3_stmt *q, int own, tm_status st, tm_err *err)
{
    sqlite3_finalize(q);
    return own_end(db, own, st, err);
}

tm_status trust_db_record(trust_db *db, const char *model, int layer, int expert, const char *ctx,
                          double q, double credit, int64_t now, trust_entry *out, tm_err *err)
{
    trust_entry e;
    int found, own;
    if (!(q >= 0 && q <= 1) || !(credit >= 0 && credit <= 1))
        return tm_errf(err, TM_EINPUT, "%s: layer %d expert %d: quality %g / credit %g outside [0, 1]",
                       db->path, layer, expert, q, credit);
    tm_status st = own_begin(db, &own, err);
    if (st) return st;
    st = trust_db_get(db, model, layer, expert, ctx, &e, &found, err);
    if (!st) {
        trust_entry_update(&e, q, db->p.ema_rate * credit, credit, now);
        st = trust_db_put(db, model, layer, expert, ctx, &e, err);
    }
    if (!st && out) *out = e;
    return own_end(db, own, st, err);
}

/* ---- co-activation and substitutions ----------------------------------------------- */

tm_status trust_db_get_pair(trust_db *db, const char *model, int layer, int a, int b,
                            trust_pair *out, int *found, tm_err *err)
{
    sqlite3_stmt *q = db->get_pair;
    tm_status st = TM_OK;
    out->count = 0;
    out->quality = 0;
    *found = 0;
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 2, layer);
    sqlite3_bind_int(q, 3, a);
    sqlite3_bind_int(q, 4, b);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *found = 1;
        out->count = sqlite3_column_int64(q, 0);
        out->quality = sqlite3_column_double(q, 1);
    } else if (rc != SQLITE_DONE) {
        st = sql_fail(db, err, "read co-activation");
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return st;
}

tm_status trust_db_record_pair(trust_db *db, const char *model, int layer, int a, int b, double q,
                               trust_pair *out, tm_err *err)
{
    trust_pair pr;
    int found, own;
    tm_status st = own_begin(db, &own, err);
    if (st) return st;
    st = trust_db_get_pair(db, model, layer, a, b, &pr, &found, err);
    if (!st) {
        trust_pair_update(&pr, q);
        sqlite3_stmt *s = db->put_pair;
        sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, layer);
        sqlite3_bind_int(s, 3, a);
        sqlite3_bind_int(s, 4, b);
        sqlite3_bind_int64(s, 5, pr.count);
        sqlite3_bind_double(s, 6, pr.quality);
        if (sqlite3_step(s) != SQLITE_DONE) st = sql_fail(db, err, "write co-activation");
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
    }
    if (!st && out) *out = pr;
    return own_end(db, own, st, err);
}

tm_status trust_db_record_substitution(trust_db *db, const char *model, int layer, int substitute,
                                       int requested, const char *ctx, double dq, int64_t now,
                                       tm_err *err)
{
    int own;
    tm_status st = own_begin(db, &own, err);
    if (st) return st;
    sqlite3_stmt *s = db->add_subst;
    sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, layer);
    sqlite3_bind_int(s, 3, substitute);
    sqlite3_bind_int(s, 4, requested);
    sqlite3_bind_text(s, 5, ctx, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 6, dq);
    sqlite3_bind_int64(s, 7, now);
    if (sqlite3_step(s) != SQLITE_DONE) st = sql_fail(db, err, "write substitution");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (!st && dq > 0) {
        trust_entry e;
        int found;
        st = trust_db_get(db, model, layer, substitute, ctx, &e, &found, err);
        if (!st) {
            e.trust = trust_substitution_bump(e.trust, dq);
            st = trust_db_put(db, model, layer, substitute, ctx, &e, err);
        }
    }
    return own_end(db, own, st, err);
}

tm_status trust_db_count_substitutions(trust_db *db, const char *model, int64_t *n, tm_err *err)
{
    sqlite3_stmt *q = NULL;
    tm_status st = TM_OK;
    *n = 0;
    if (sqlite3_prepare_v2(db->db, "SELECT count(*) FROM substitutions WHERE model=?1", -1, &q,
                           NULL) != SQLITE_OK)
        return sql_fail(db, err, "count substitutions");
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW)
        *n = sqlite3_column_int64(q, 0);
    else
        st = sql_fail(db, err, "count substitutions");
    sqlite3_finalize(q);
    return st;
}

tm_status trust_db_get_progress(trust_db *db, const char *model, const char *run, int64_t *windows,
                                tm_err *err)
{
    sqlite3_stmt *q = NULL;
    tm_status st = TM_OK;
    *windows = 0;
    if (sqlite3_prepare_v2(db->db, "SELECT windows FROM train_progress WHERE model=?1 AND run=?2", -1,
                           &q, NULL) != SQLITE_OK)
        return sql_fail(db, err, "read training progress");
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, run, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) *windows = sqlite3_column_int64(q, 0);
    else if (rc != SQLITE_DONE) st = sql_fail(db, err, "read training progress");
    sqlite3_finalize(q);
    return st;
}

tm_status trust_db_add_progress(trust_db *db, const char *model, const char *run, int64_t n,
                                tm_err *err)
{
    sqlite3_stmt *q;
    int own;
    tm_status st = write_begin(db,
                               "INSERT INTO train_progress (model, run, windows) VALUES (?1, ?2, ?3) "
                               "ON CONFLICT (model, run) DO UPDATE SET windows = windows + ?3",
                               "write training progress", &q, &own, err);
    if (st) return st;
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, run, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, n);
    if (sqlite3_step(q) != SQLITE_DONE) st = sql_fail(db, err, "write training progress");
    return write_end(db, q, own, st, err);
}

/* ---- tables and contexts -------------------------------------------------------------- */

tm_status trust_db_load_table(trust_db *db, const char *model, trust_table *t, tm_err *err)
{
    tm_status st = TM_OK;
    sqlite3_stmt *q = db->load_table;
    trust_table_reset(t);
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t->context, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int l = sqlite3_column_int(q, 0), e = sqlite3_column_int(q, 1);
        if (l < 0 || l >= t->n_layers || e < 0 || e >= t->n_experts) {
            st = tm_errf(err, TM_EINPUT,
                         "%s: model \"%s\" context \"%s\": row for layer %d expert %d, but the "
                         "model has %d layers x %d experts",
                         db->path, model, t->context, l, e, t->n_layers, t->n_experts);
            goto done;
        }
        size_t i = (size_t)l * t->n_experts + e;
        double tv = sqlite3_column_double(q, 2);
        int64_t ev = sqlite3_column_int64(q, 3);
        if (!trust_value_ok(tv) || ev < 0 || ev > TRUST_DB_MAX_EVIDENCE) {
            st = tm_errf(err, TM_EINPUT,
                         "%s: model \"%s\" context \"%s\": layer %d expert %d: trust %g or evidence %lld out of "
                         "range",
                         db->path, model, t->context, l, e, tv, (long long)ev);
            goto done;
        }
        t->trust[i] = (float)tv;
        t->evidence[i] = ev > INT32_MAX ? INT32_MAX : (int32_t)ev;
    }
    if (rc != SQLITE_DONE) st = sql_fail(db, err, "load trust table");
done:
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return st;
}

tm_status trust_db_save_contexts(trust_db *db, const char *model, const trust_contexts *c,
                                 tm_err *err)
{
    sqlite3_stmt *q = NULL;
    unsigned char *blob = tm_malloc((size_t)c->dim * 4);
    int own;
    tm_status st = own_begin(db, &own, err);
    if (st) goto done;
    if (sqlite3_prepare_v2(db->db, "DELETE FROM contexts WHERE model=?1", -1, &q, NULL) != SQLITE_OK) {
        st = sql_fail(db, err, "clear contexts");
        goto end;
    }
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE) st = sql_fail(db, err, "clear contexts");
    sqlite3_finalize(q);
    q = NULL;
    if (st) goto end;
    if (sqlite3_prepare_v2(db->db,
                           "INSERT OR REPLACE INTO context_set (model, k, dim, created) "
                           "VALUES (?1, ?2, ?3, ?4)",
                           -1, &q, NULL) != SQLITE_OK) {
        st = sql_fail(db, err, "write context set");
        goto end;
    }
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 2, c->k);
    sqlite3_bind_int(q, 3, c->dim);
    sqlite3_bind_int64(q, 4, (int64_t)time(NULL));
    if (sqlite3_step(q) != SQLITE_DONE) st = sql_fail(db, err, "write context set");
    sqlite3_finalize(q);
    q = NULL;
    if (st) goto end;
    if (sqlite3_prepare_v2(db->db,
                           "INSERT INTO contexts (model, context, n_samples, centroid) "
                           "VALUES (?1, ?2, ?3, ?4)",
                           -1, &q, NULL) != SQLITE_OK) {
        st = sql_fail(db, err, "write contexts");
        goto end;
    }
    for (int j = 0; j < c->k && !st; j++) {
        f32_to_le(c->centroids + (size_t)j * c->dim, c->dim, blob);
        sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 2, j);
        sqlite3_bind_int64(q, 3, c->n_samples[j]);
        sqlite3_bind_blob(q, 4, blob, c->dim * 4, SQLITE_STATIC);
        if (sqlite3_step(q) != SQLITE_DONE) st = sql_fail(db, err, "write contexts");
        sqlite3_reset(q);
    }
end:
    sqlite3_finalize(q);
    st = own_end(db, own, st, err);
done:
    free(blob);
    return st;
}

tm_status trust_db_load_contexts(trust_db *db, const char *model, trust_contexts *c, int *found,
                                 tm_err *err)
{
    sqlite3_stmt *q = NULL;
    tm_status st = TM_OK;
    int k = 0, dim = 0, seen = 0;
    memset(c, 0, sizeof *c);
    *found = 0;
    if (sqlite3_prepare_v2(db->db, "SELECT k, dim FROM context_set WHERE model=?1", -1, &q, NULL) !=
        SQLITE_OK)
        return sql_fail(db, err, "read context set");
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        k = sqlite3_column_int(q, 0);
        dim = sqlite3_column_int(q, 1);
    } else if (rc != SQLITE_DONE) {
        st = sql_fail(db, err, "read context set");
    }
    sqlite3_finalize(q);
    q = NULL;
    if (st || rc == SQLITE_DONE) return st;
    /* bounded before 4 * dim or k * dim is formed or allocated */
    if (k < 1 || dim < 1 || k > TRUST_DB_MAX_CONTEXTS || dim > CFG_MAX_WIDTH ||
        (int64_t)k * dim > TRUST_DB_MAX_CENTROID_FLOATS) {
        return tm_errf(err, TM_EINPUT, "%s: model \"%s\": context set with k=%d dim=%d (want 1..%d contexts "
                       "of 1..%d floats, %d floats in all)", db->path, model, k, dim, TRUST_DB_MAX_CONTEXTS,
                       CFG_MAX_WIDTH, TRUST_DB_MAX_CENTROID_FLOATS);
    }
    trust_contexts_init(c, k, dim);
    if (sqlite3_prepare_v2(db->db,
                           "SELECT context, n_samples, centroid FROM contexts WHERE model=?1 "
                           "ORDER BY context",
                           -1, &q, NULL) != SQLITE_OK) {
        st = sql_fail(db, err, "read contexts");
        goto fail;
    }
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int j = sqlite3_column_int(q, 0);
        int bytes = sqlite3_column_bytes(q, 2);
        if (j < 0 || j >= k || (int64_t)bytes != 4 * (int64_t)dim) {
            st = tm_errf(err, TM_EINPUT,
                         "%s: model \"%s\": context %d: centroid of %d bytes (want context < %d, "
                         "%d bytes)",
                         db->path, model, j, bytes, k, 4 * dim);
            goto fail;
        }
        c->n_samples[j] = sqlite3_column_int64(q, 1);
        float *cj = c->centroids + (size_t)j * dim;
        le_to_f32(sqlite3_column_blob(q, 2), dim, cj);
        for (int i = 0; i < dim; i++)
            if (!isfinite(cj[i])) {
                st = tm_errf(err, TM_EINPUT, "%s: model \"%s\": context %d: centroid value %d is not finite",
                             db->path, model, j, i);
                goto fail;
            }
        if (c->n_samples[j] < 0) {
            st = tm_errf(err, TM_EINPUT, "%s: model \"%s\": context %d: n_samples %lld is negative", db->path,
                         model, j, (long long)c->n_samples[j]);
            goto fail;
        }
        seen++;
    }
    if (rc != SQLITE_DONE) {
        st = sql_fail(db, err, "read contexts");
        goto fail;
    }
    if (seen != k) {
        st = tm_errf(err, TM_EINPUT, "%s: model \"%s\": %d of %d context centroids stored",
                     db->path, model, seen, k);
        goto fail;
    }
    sqlite3_finalize(q);
    *found = 1;
    return TM_OK;
fail:
    sqlite3_finalize(q);
    trust_contexts_free(c);
    return st;
}

/* ---- baselines, substitute fits, co-selection counts -------------------------------- */

tm_status trust_db_get_baseline(trust_db *db, const char *model, const char *ctx, trust_baseline *b,
                                int *found, tm_err *err)
{
    sqlite3_stmt *q = NULL;
    tm_status st = TM_OK;
    memset(b, 0, sizeof *b);
    *found = 0;
    if (sqlite3_prepare_v2(db->db, "SELECT mean, var, windows FROM baseline WHERE model=?1 AND context=?2", -1,
                           &q, NULL) != SQLITE_OK)
        return sql_fail(db, err, "read baseline");
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, ctx, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        b->mean = sqlite3_column_double(q, 0);
        b->var = sqlite3_column_double(q, 1);
        b->windows = sqlite3_column_int64(q, 2);
        *found = 1;
        if (!(b->var >= 0) || b->windows < 0)
            st = tm_errf(err, TM_EINPUT, "%s: baseline of model \"%s\" context \"%s\": variance %g, %lld windows",
                         db->path, model, ctx, b->var, (long long)b->windows);
    } else if (rc != SQLITE_DONE) {
        st = sql_fail(db, err, "read baseline");
    }
    sqlite3_finalize(q);
    return st;
}

tm_status trust_db_put_baseline(trust_db *db, const char *model, const char *ctx, const trust_baseline *b,
                                tm_err *err)
{
    sqlite3_stmt *q;
    int own;
    tm_status st = write_begin(db,
                               "INSERT OR REPLACE INTO baseline (model, context, mean, var, windows) "
                               "VALUES (?1, ?2, ?3, ?4, ?5)",
                               "write baseline", &q, &own, err);
    if (st) return st;
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, ctx, -1, SQLITE_STATIC);
    sqlite3_bind_double(q, 3, b->mean);
    sqlite3_bind_double(q, 4, b->var);
    sqlite3_bind_int64(q, 5, b->windows);
    if (sqlite3_step(q) != SQLITE_DONE) st = sql_fail(db, err, "write baseline");
    return write_end(db, q, own, st, err);
}

tm_status trust_db_add_substitute_fit(trust_db *db, const char *model, const char *ctx, int n_layers,
                                      int n_experts, const double *ee, const double *es, const double *ss,
                                      const double *weight_sum, tm_err *err)
{
    sqlite3_stmt *q;
    int own;
    tm_status st = write_begin(db,
                               "INSERT INTO substitute_fit (model, context, layer, expert, substitute, ee, es, ss, "
                               "weight_sum) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
                               "ON CONFLICT (model, context, layer, expert, substitute) DO UPDATE SET "
                               "ee = ee + ?6, es = es + ?7, ss = ss + ?8, weight_sum = weight_sum + ?9",
                               "write substitute fit", &q, &own, err);
    if (st) return st;
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, ctx, -1, SQLITE_STATIC);
    for (int l = 0; l < n_layers && !st; l++)
        for (int e = 0; e < n_experts && !st; e++) {
            size_t le = (size_t)l * n_experts + e;
            if (weight_sum[le] <= 0) continue;
            for (int s = 0; s < n_experts && !st; s++) {
                if (s == e) continue;
                sqlite3_bind_int(q, 3, l);
                sqlite3_bind_int(q, 4, e);
                sqlite3_bind_int(q, 5, s);
                sqlite3_bind_double(q, 6, ee[le]);
                sqlite3_bind_double(q, 7, es[le * n_experts + s]);
                sqlite3_bind_double(q, 8, ss[le * n_experts + s]);
                sqlite3_bind_double(q, 9, weight_sum[le]);
                if (sqlite3_step(q) != SQLITE_DONE) st = sql_fail(db, err, "write substitute fit");
                sqlite3_reset(q);
            }
        }
    return write_end(db, q, own, st, err);
}

tm_status trust_db_load_substitutes(trust_db *db, const char *model, const char *ctx, int n_layers,
                                    int n_experts, int32_t *rank, float *gain, int *found, tm_err *err)
{
    sqlite3_stmt *q = NULL;
    tm_status st = TM_OK;
    const size_t n = (size_t)n_layers * n_experts * n_experts;
    /* score[l, e, s]: relative residual 1 - cos^2 of the best scaled
     * stand-in; unseen or anti-correlated pairs rank last. */
    double *score = tm_malloc(n * sizeof *score);
    for (size_t i = 0; i < n; i++) {
        score[i] = HUGE_VAL;
        gain[i] = 0;
    }
    *found = 0;
    if (sqlite3_prepare_v2(db->db,
                           "SELECT layer, expert, substitute, ee, es, ss FROM substitute_fit "
                           "WHERE model=?1 AND context=?2",
                           -1, &q, NULL) != SQLITE_OK) {
        st = sql_fail(db, err, "load substitutes");
        goto done;
    }
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, ctx, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int l = sqlite3_column_int(q, 0), e = sqlite3_column_int(q, 1), s = sqlite3_column_int(q, 2);
        double ee = sqlite3_column_double(q, 3), es = sqlite3_column_double(q, 4), ss = sqlite3_column_double(q, 5);
        if (l < 0 || l >= n_layers || e < 0 || e >= n_experts || s < 0 || s >= n_experts || s == e ||
            !(ee >= 0) || !(ss >= 0) || !isfinite(es)) {
            st = tm_errf(err, TM_EINPUT,
                         "%s: substitute fit of model \"%s\" context \"%s\": row layer %d expert %d substitute "
                         "%d (sums %g %g %g) does not fit %d layers x %d experts",
                         db->path, model, ctx, l, e, s, ee, es, ss, n_layers, n_experts);
            goto done;
        }
        size_t i = ((size_t)l * n_experts + e) * n_experts + s;
        if (ee > 0 && ss > 0 && es > 0) {
            score[i] = 1.0 - es * es / (ee * ss);
            gain[i] = (float)(es / ss);
        }
        *found = 1;
    }
    if (rc != SQLITE_DONE) {
        st = sql_fail(db, err, "load substitutes");
        goto done;
    }
    for (int l = 0; l < n_layers; l++)
        for (int e = 0; e < n_experts; e++) {
            const double *sc = score + ((size_t)l * n_experts + e) * n_experts;
            int32_t *r = rank + ((size_t)l * n_experts + e) * n_experts;
            int m = 0;
            for (int s = 0; s < n_experts; s++) {
                if (s == e || sc[s] == HUGE_VAL) continue;
                int i = m++;
                /* insertion by (score asc, id asc): E is small enough */
                while (i > 0 && sc[r[i - 1]] > sc[s]) {
                    r[i] = r[i - 1];
                    i--;
                }
                r[i] = s;
            }
            for (; m < n_experts; m++) r[m] = -1;
        }
done:
    sqlite3_finalize(q);
    free(score);
    return st;
}

tm_status trust_db_add_pair_counts(trust_db *db, const char *model, int layer, int n_experts,
                                   const int64_t *count, tm_err *err)
{
    sqlite3_stmt *q;
    int own;
    tm_status st = write_begin(db,
                               "INSERT INTO co_activation (model, layer, expert_a, expert_b, count, quality) "
                               "VALUES (?1, ?2, ?3, ?4, ?5, 0) ON CONFLICT (model, layer, expert_a, expert_b) "
                               "DO UPDATE SET count = count + ?5",
                               "write co-activation counts", &q, &own, err);
    if (st) return st;
    sqlite3_bind_text(q, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 2, layer);
    for (int a = 0; a < n_experts && !st; a++)
        for (int b = a + 1; b < n_experts && !st; b++) {
            int64_t c = count[(size_t)a * n_experts + b];
            if (c <= 0) continue;
            sqlite3_bind_int(q, 3, a);
            sqlite3_bind_int(q, 4, b);
            sqlite3_bind_int64(q, 5, c);
            if (sqlite3_step(q) != SQLITE_DONE) st = sql_fail(db, err, "write co-activation counts");
            sqlite3_reset(q);
        }
    return write_end(db, q, own, st, err);
}
