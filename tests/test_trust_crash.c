/* test_trust_crash.c: the reputation store survives SIGKILL mid-update.
 *
 * A child process applies a deterministic sequence of transactions, each of
 * U reputation updates plus a marker update, and reports on a pipe when it
 * begins and after it commits each one.  The parent kills it with SIGKILL at
 * random moments, then checks that the database passes PRAGMA
 * integrity_check and holds exactly the first n transactions of the
 * sequence (a prefix: nothing of transaction n is visible), with n covering
 * every transaction the child reported as committed.  The next child
 * resumes from n on the same file. */
#include <CUnit/Basic.h>

#include "cunit_run.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "trust_db.h"
#include "trust_rng.h"

#define NL 48
#define NE 128
#define U 300     /* updates per transaction */
#define ROUNDS 12
static const char *MODEL = "crash-test-model";
static const char *CTX[3] = {"code", "prose", "marker"};
static char dir[] = "/tmp/trust_crash_XXXXXX";
static char path[256];

/* Update j of transaction i. */
static void update_of(int64_t i, int j, int *layer, int *expert, int *ctx, double *q, double *credit)
{
    *layer = (int)((i * 7 + j) % NL);
    *expert = (int)((i * 13 + (int64_t)j * 5) % NE);
    *ctx = j % 2;
    *q = (double)((i * 31 + (int64_t)j * 17) % 101) / 100.0;
    *credit = (double)((i + j) % 10 + 1) / 10.0;
}

static int64_t marker_evidence(trust_db *db)
{
    trust_entry e;
    int found;
    tm_err err;
    if (trust_db_get(db, MODEL, NL - 1, NE - 1, CTX[2], &e, &found, &err)) return -1;
    return e.evidence;
}

static _Noreturn void child(int fd)
{
    trust_db db;
    tm_err err;
    if (trust_db_open(&db, path, NULL, &err)) _exit(3);
    int64_t start = marker_evidence(&db);
    if (start < 0) _exit(3);
    for (int64_t i = start; i < start + 1000000; i++) {
        int32_t msg = (int32_t)(i + 1);
        if (write(fd, &msg, sizeof msg) != sizeof msg) _exit(3);
        if (trust_db_begin(&db, &err)) _exit(3);
        for (int j = 0; j < U; j++) {
            int l, e, c;
            double q, cr;
            update_of(i, j, &l, &e, &c, &q, &cr);
            if (trust_db_record(&db, MODEL, l, e, CTX[c], q, cr, 1000 + i, NULL, &err)) _exit(3);
            if (j == U / 2) /* the marker in the middle: a torn transaction would show */
                if (trust_db_record(&db, MODEL, NL - 1, NE - 1, CTX[2], 0.5, 1.0, 1000 + i, NULL, &err))
                    _exit(3);
        }
        if (trust_db_commit(&db, &err)) _exit(3);
        msg = -(int32_t)(i + 1);
        if (write(fd, &msg, sizeof msg) != sizeof msg) _exit(3);
    }
    _exit(0);
}

/* The expected state after the first n transactions. */
static trust_entry *replay(int64_t n, uint8_t *touched)
{
    trust_entry *x = tm_malloc(sizeof *x * 3 * NL * NE);
    for (int i = 0; i < 3 * NL * NE; i++) trust_entry_init(&x[i]);
    memset(touched, 0, 3 * NL * NE);
    for (int64_t i = 0; i < n; i++) {
        for (int j = 0; j < U; j++) {
            int l, e, c;
            double q, cr;
            update_of(i, j, &l, &e, &c, &q, &cr);
            size_t k = ((size_t)c * NL + l) * NE + e;
            trust_entry_update(&x[k], q, 0.1 * cr, cr, 1000 + i);
            touched[k] = 1;
            if (j == U / 2) {
                k = ((size_t)2 * NL + NL - 1) * NE + NE - 1;
                trust_entry_update(&x[k], 0.5, 0.1, 1.0, 1000 + i);
                touched[k] = 1;
            }
        }
    }
    return x;
}

static int same_entry(const trust_entry *a, const trust_entry *b)
{
    return a->trust == b->trust && a->evidence == b->evidence && a->last_quality == b->last_quality &&
           a->last_credit == b->last_credit && a->last_used == b->last_used &&
           a->n_window == b->n_window && memcmp(a->window, b->window, sizeof(float) * a->n_window) == 0;
}

static void check_integrity(void)
{
    sqlite3 *raw;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &raw), SQLITE_OK);
    sqlite3_stmt *q;
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(raw, "PRAGMA integrity_check", -1, &q, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL(sqlite3_step(q), SQLITE_ROW);
    const char *res = (const char *)sqlite3_column_text(q, 0);
    CU_ASSERT(res && strcmp(res, "ok") == 0);
    if (!res || strcmp(res, "ok")) fprintf(stderr, "integrity_check: %s\n", res ? res : "(null)");
    sqlite3_finalize(q);
    sqlite3_close(raw);
}

/* The database holds exactly the first n transactions; returns n. */
static int64_t check_prefix(void)
{
    trust_db db;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, path, NULL, &err), TM_OK);
    int64_t n = marker_evidence(&db);
    uint8_t *touched = tm_malloc(3 * NL * NE);
    trust_entry *want = replay(n, touched);
    int bad = 0, rows = 0;
    for (int c = 0; c < 3; c++)
        for (int l = 0; l < NL; l++)
            for (int e = 0; e < NE; e++) {
                size_t k = ((size_t)c * NL + l) * NE + e;
                trust_entry got;
                int found;
                if (trust_db_get(&db, MODEL, l, e, CTX[c], &got, &found, &err)) {
                    bad++;
                    continue;
                }
                rows += found;
                bad += found != touched[k] || !same_entry(&got, &want[k]);
            }
    sqlite3_stmt *q;
    sqlite3_prepare_v2(db.db, "SELECT count(*) FROM trust", -1, &q, NULL);
    sqlite3_step(q);
    CU_ASSERT_EQUAL(sqlite3_column_int(q, 0), rows); /* no rows outside the keys */
    sqlite3_finalize(q);
    CU_ASSERT_EQUAL(bad, 0);
    if (bad) fprintf(stderr, "%d entries differ from the replay of %lld transactions\n", bad, (long long)n);
    free(want);
    free(touched);
    trust_db_close(&db);
    return n;
}

static void test_sigkill(void)
{
    tm_err err;
    trust_db db;
    snprintf(path, sizeof path, "%s/crash.db", dir);
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, path, NULL, &err), TM_OK);
    trust_db_close(&db);
    uint64_t rng = (uint64_t)time(NULL);
    int64_t committed = 0;
    int mid = 0;
    for (int r = 0; r < ROUNDS; r++) {
        int fd[2];
        CU_ASSERT_EQUAL_FATAL(pipe(fd), 0);
        pid_t pid = fork();
        CU_ASSERT_FATAL(pid >= 0);
        if (pid == 0) {
            close(fd[0]);
            child(fd[1]);
        }
        close(fd[1]);
        usleep(10000 + trust_rng_below(&rng, 140000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CU_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        if (WIFEXITED(status)) fprintf(stderr, "child exited with %d before the kill\n", WEXITSTATUS(status));
        int64_t begun = -1, done = -1;
        int32_t msg;
        while (read(fd[0], &msg, sizeof msg) == sizeof msg) {
            if (msg > 0) begun = msg - 1;
            else done = -msg - 1;
        }
        close(fd[0]);
        check_integrity();
        int64_t n = check_prefix();
        /* Every reported commit is there; at most one more (killed between
         * COMMIT and the report). */
        int64_t low = done >= 0 ? done + 1 : committed;
        CU_ASSERT(n >= low && n <= low + 1);
        if (!(n >= low && n <= low + 1))
            fprintf(stderr, "round %d: %lld committed, reports say %lld\n", r, (long long)n, (long long)low);
        mid += begun > done && n == begun; /* killed inside transaction `begun` */
        committed = n;
    }
    fprintf(stderr, "\n%d kills, %d of them inside a transaction, %lld transactions committed\n", ROUNDS,
            mid, (long long)committed);
    CU_ASSERT(committed > 0);
    CU_ASSERT(mid > 0);
}

int main(void)
{
    if (!mkdtemp(dir)) return 2;
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("trust_crash", NULL, NULL);
    CU_add_test(s, "SIGKILL mid-update leaves a committed prefix", test_sigkill);
    int rc = cunit_run();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
