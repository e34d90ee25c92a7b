/* trust_db.h: the reputation store, one SQLite database (--trust-db PATH).
 *
 * The database runs in WAL mode with a busy timeout, so several trustmoe
 * processes may share it: readers never block, writers queue.  Every write
 * happens inside a transaction (BEGIN IMMEDIATE ... COMMIT); a process
 * killed mid-transaction leaves the last committed state, which SQLite's
 * journal restores on the next open.  Batch many updates per transaction
 * with trust_db_begin/trust_db_commit; a lone update wraps itself in one.
 *
 * Schema, version TRUST_DB_SCHEMA_VERSION, kept in PRAGMA user_version.
 * Opening an older database applies the missing migrations in one
 * transaction; a newer one is refused.
 *
 *   trust(model TEXT, context TEXT, layer INT, expert INT,       -- key
 *         trust REAL, evidence INT, last_quality REAL, last_credit REAL,
 *         last_used INT (unix s), window BLOB)
 *   context_set(model TEXT key, k INT, dim INT, created INT)
 *   contexts(model TEXT, context INT, n_samples INT, centroid BLOB)
 *   co_activation(model TEXT, layer INT, expert_a INT, expert_b INT,
 *                 count INT, quality REAL)
 *   substitutions(id INT key, model TEXT, layer INT, substitute INT,
 *                 requested INT, context TEXT, quality_delta REAL, time INT)
 *   train_progress(model TEXT, run TEXT, windows INT)        (version 2)
 *     quality windows committed by `trust train` for a run key, written
 *     in the same transaction as the window's updates
 *   baseline(model TEXT, context TEXT, mean REAL, var REAL,  (version 3)
 *            windows INT)
 *     the per-context EMA of window quality q (mean and variance) that the
 *     advantage signal measures against (trust_quality.h)
 *   substitute_fit(model TEXT, context TEXT, layer INT,        (version 3)
 *                  expert INT, substitute INT, ee REAL, es REAL, ss REAL,
 *                  weight_sum REAL)
 *     how well `substitute`'s output y_s stands in for `expert`'s y_e on
 *     training tokens, as routing-weighted sums over the tokens that chose
 *     e: ee = Σ w|y_e|^2, es = Σ w<y_e, y_s>, ss = Σ w|y_s|^2, weight_sum =
 *     Σ w.  The best fixed gain is c = es / ss and its relative residual
 *     1 - es^2 / (ee ss) (0: a perfect stand-in, 1: no better than none)
 * `trust train` also adds token-level co-selection counts of expert pairs
 * (expert_a < expert_b) to co_activation.count.
 *
 * Blob encodings: `window` is n <= TRUST_WINDOW float32 values, oldest
 * first; `centroid` is dim float32 values.  Both little-endian IEEE-754,
 * 4 bytes each, no header (the length gives n).
 *
 * `model` is the model identity string the engine derives from the
 * checkpoint, so one database can hold several models.
 */
#ifndef TM_TRUST_DB_H
#define TM_TRUST_DB_H

#include <sqlite3.h>
#include <stdint.h>

#include "common.h"
#include "trust_context.h"
#include "trust_rep.h"

#define TRUST_DB_SCHEMA_VERSION 3

typedef struct {
    double ema_rate;     /* trust EMA rate at full credit; default 0.1       */
    int busy_timeout_ms; /* wait for another writer; default 10000          */
    int sync_full;       /* 1: fsync every commit (power-loss durable);
                            default 0: synchronous=NORMAL, which keeps every
                            commit across a process crash                   */
    int read_only;       /* 1: open read-only, never migrate or switch the
                            journal; the schema must be the current one     */
} trust_db_params;

trust_db_params trust_db_default_params(void);

typedef struct {
    sqlite3 *db;
    char *path;
    trust_db_params p;
    int in_tx; /* inside trust_db_begin .. commit/rollback */
    sqlite3_stmt *get_entry, *put_entry, *load_table;
    sqlite3_stmt *get_pair, *put_pair, *add_subst;
} trust_db;

/* Every number read back is input: a row out of range, a non-finite value or
 * a file that is not a database gives TM_EINPUT naming the file and row. */
tm_status trust_db_open(trust_db *db, const char *path, const trust_db_params *p, tm_err *err);
/* TM_OK when path names an existing file; else an error that says which
 * commands create a database (a mistyped path must not start an empty one). */
tm_status trust_db_must_exist(const char *path, tm_err *err);
void trust_db_close(trust_db *db);

/* The schema version stored in the file (PRAGMA user_version). */
int trust_db_schema_version(trust_db *db);

tm_status trust_db_begin(trust_db *db, tm_err *err);
tm_status trust_db_commit(trust_db *db, tm_err *err);
void trust_db_rollback(trust_db *db);

/* One entry; *found = 0 and e at the prior when there is no row. */
tm_status trust_db_get(trust_db *db, const char *model, int layer, int expert, const char *ctx,
                       trust_entry *e, int *found, tm_err *err);
tm_status trust_db_put(trust_db *db, const char *model, int layer, int expert, const char *ctx,
                       const trust_entry *e, tm_err *err);

/* Fold one window's unweighted quality q into (model, layer, expert, ctx)
 * with EMA step ema_rate * credit (credit in [0, 1], see trust_quality.h).
 * out (optional) receives the updated entry. */
tm_status trust_db_record(trust_db *db, const char *model, int layer, int expert, const char *ctx,
                          double q, double credit, int64_t now, trust_entry *out, tm_err *err);

/* Co-activation of experts a and b in one layer (stored as given, a first). */
tm_status trust_db_record_pair(trust_db *db, const char *model, int layer, int a, int b, double q,
                               trust_pair *out, tm_err *err);
tm_status trust_db_get_pair(trust_db *db, const char *model, int layer, int a, int b,
                            trust_pair *out, int *found, tm_err *err);

/* Append a substitution record; when dq > 0 it also raises the
 * substitute's trust in ctx (trust_substitution_bump). */
tm_status trust_db_record_substitution(trust_db *db, const char *model, int layer, int substitute,
                                       int requested, const char *ctx, double dq, int64_t now,
                                       tm_err *err);
tm_status trust_db_count_substitutions(trust_db *db, const char *model, int64_t *n, tm_err *err);

/* Windows committed for (model, run key); 0 when none. */
tm_status trust_db_get_progress(trust_db *db, const char *model, const char *run, int64_t *windows,
                                tm_err *err);
/* Add n windows to (model, run key); meant for the window's transaction. */
tm_status trust_db_add_progress(trust_db *db, const char *model, const char *run, int64_t n,
                                tm_err *err);

/* The quality baseline of (model, ctx); *found = 0 and b zeroed when none. */
tm_status trust_db_get_baseline(trust_db *db, const char *model, const char *ctx, trust_baseline *b,
                                int *found, tm_err *err);
tm_status trust_db_put_baseline(trust_db *db, const char *model, const char *ctx, const trust_baseline *b,
                                tm_err *err);

/* Add one window's substitute sums of context ctx: ee[L, E], es[L, E, E],
 * ss[L, E, E] and weight_sum[L, E] f64 (rows above); experts with weight 0
 * are skipped. */
tm_status trust_db_add_substitute_fit(trust_db *db, const char *model, const char *ctx, int n_layers,
                                      int n_experts, const double *ee, const double *es, const double *ss,
                                      const double *weight_sum, tm_err *err);
/* rank[L, E, E] int32: for each (layer, expert) the experts that can stand
 * in for it (positive gain), lowest residual first, then -1; gain[L, E, E]
 * f32 the fitted gain c of each (expert, substitute), 0 when unusable.
 * *found = 0 when (model, ctx) has no fit. */
tm_status trust_db_load_substitutes(trust_db *db, const char *model, const char *ctx, int n_layers,
                                    int n_experts, int32_t *rank, float *gain, int *found, tm_err *err);

/* Add co-selection counts of one layer: count[E, E] (a < b used). */
tm_status trust_db_add_pair_counts(trust_db *db, const char *model, int layer, int n_experts,
                                   const int64_t *count, tm_err *err);

/* Fill t (already initialised to the model's shape) with the trust and
 * evidence of (model, t->context); experts without a row keep the prior.
 * Rows outside the table's shape are an error. */
tm_status trust_db_load_table(trust_db *db, const char *model, trust_table *t, tm_err *err);

/* The fitted contexts of a model (replacing any earlier set). */
tm_status trust_db_save_contexts(trust_db *db, const char *model, const trust_contexts *c,
                                 tm_err *err);
/* *found = 0 when the model has no contexts; c is then left zeroed. */
tm_status trust_db_load_contexts(trust_db *db, const char *model, trust_contexts *c, int *found,
                                 tm_err *err);

#endif
