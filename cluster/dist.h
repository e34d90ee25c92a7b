/* dist.h: expert parallelism over MPI ranks: what both roles share.
 *
 * cluster/ owns the MPI job itself (flags, start-up, the communicator,
 * deadline polling, fatal errors) and the placement (placement.h).  It may
 * call core/, proto/ and engine/ (for the model's shape and files); the two
 * roles build on it: coordinator/dispatch/ (rank 0's dispatch, combine and
 * statistics: dispatch.h) and worker/ (worker.h).
 *
 * SPMD: every rank runs the same command.  Rank 0 is the coordinator (model
 * forward outside the experts); ranks 1..N are workers that hold only the
 * experts the placement gives them (cluster/placement.h).  MPI is
 * initialised only when the process was started by mpirun/srun, so a plain
 * `build/trustmoe` never touches MPI, and `mpirun -np 1` runs everything in
 * one process.
 *
 * Protocol (one communicator, a duplicate of MPI_COMM_WORLD with
 * MPI_ERRORS_RETURN; tags in dist_tag):
 *   start     rank 0 posts a receive for every Handshake, then sends every
 *             worker the Placement (proto/trustmoe.proto).  Each worker loads
 *             its experts (load_dense = 0) and answers with a Handshake: build
 *             version, model identity, host, experts, weight and resident
 *             bytes.  Rank 0 checks every field; a mismatch names the rank and
 *             both values and ends the job before any compute.
 *   per layer rank 0 groups the tokens by destination rank and sends each
 *             worker that has any of them one DISPATCH message (proto/wire.h):
 *             the token rows once, with that worker's (expert, weight) pairs.
 *             Receives for the RESULTs are posted before the sends.  A worker
 *             returns one pre-summed row per token, Σ w · expert(x), and its
 *             compute time.  When the placement gives rank 0 experts
 *             (--coordinator-share, or rank 0 in a placement file), rank 0
 *             computes its own share after the sends, while the workers
 *             compute theirs.  Rank 0 then adds its rows and the workers' in
 *             ascending rank, so two runs with the
 *             same -np and placement are bitwise identical.  Workers with no
 *             tokens get no message: a worker serves whatever arrives next
 *             (DISPATCH or CONTROL) and needs no end-of-layer marker.
 *   finish    rank 0 sends CONTROL SHUTDOWN; each worker answers WorkerStats,
 *             and both sides finalize.
 * MPI start-up itself (MPI_Init, the communicator's duplication) is
 * collective with no deadline; a watchdog thread ends the rank after
 * --idle-timeout if it has not completed (dist_set_startup_timeout).
 * Every wait polls against a deadline (MPI_Test / MPI_Iprobe).  A reply
 * that is due is awaited by spinning (with sched_yield): rank 0 after its
 * sends, a worker on its own send, and a worker for the next request while a
 * step is in flight, i.e. for 20 ms (TRUSTMOE_POLL_SPIN_US) after its last
 * request: longer than the gap between two decode steps.  Otherwise the wait
 * sleeps, doubling from 20 us up to 500 us (TRUSTMOE_POLL_SLEEP_US), and up
 * to 20 ms after 100 ms idle, so an idle worker uses under 1% of a core
 * (bench/mpi_idle_cpu.sh).  Deadlines: --comm-timeout for
 * replies, --idle-timeout for loading and for a worker's wait for its next
 * request.
 * On expiry or on a bad message the rank
 * prints who (rank, host), where (step, layer) and what, then MPI_Abort
 * ends the whole job with a non-zero status.
 *
 * Test-only fault switch (kept in release builds; used by tests/cli/mpi_faults.sh):
 *   TRUSTMOE_FAULT=dtype|truncate|corrupt|exit|silent|version|startup-stall
 *   TRUSTMOE_FAULT_RANK=R (default 1), TRUSTMOE_FAULT_STEP=S (default 1)
 * makes worker R, at its first request of step >= S, send a wrong dtype tag,
 * a truncated payload, a payload corrupted after its checksum, exit without
 * finalizing, or stop answering; `version` reports a different build in the
 * handshake; `startup-stall` makes rank R (any rank, 0 included) stop itself
 * with SIGSTOP before MPI_Init.
 */
#ifndef TM_DIST_H
#define TM_DIST_H

#include "common.h"
#include "dtype.h"
#include "expert.h"
#include "model.h"

typedef struct {
    const char *placement; /* contiguous (default), round-robin, or a JSON file */
    int replicas;          /* each expert on this many workers (policies only) */
    tm_dtype wire_dtype;   /* activations on the wire: F32 (default) or BF16 */
    int checksum;          /* CRC32C over every activation payload (default on) */
    double comm_timeout;   /* seconds a reply may take (default 60) */
    const char *stats_json;
    double idle_timeout;   /* seconds for MPI start-up, loading/handshake and a worker's idle wait (default 600) */
    int workers;           /* inspect --workers N: worker ranks to print a placement for (0: none) */
    int verbose;           /* -v: per-rank tables, and workers' lines while they serve */
    int quiet;             /* -q: no summary on stderr */
    double coordinator_share; /* fraction of every layer's experts rank 0 hosts itself (0: none) */
    const char *unavailable; /* --unavailable R,...: worker ranks declared unavailable; rank 0 masks
                                the experts only they host (dispatch.h: dist_unavailable_mask) */
} dist_params;

typedef enum {
    DIST_TAG_PLACEMENT = 11, /* Placement, rank 0 -> worker */
    DIST_TAG_HANDSHAKE = 12, /* Handshake, worker -> rank 0 */
    DIST_TAG_CONTROL = 13,   /* Control, rank 0 -> worker */
    DIST_TAG_STATS = 14,     /* WorkerStats, worker -> rank 0 */
    DIST_TAG_DISPATCH = 21,  /* wire DISPATCH, rank 0 -> worker */
    DIST_TAG_RESULT = 22,    /* wire RESULT, worker -> rank 0 */
} dist_tag;

dist_params dist_default_params(void);
/* Returns 1 if argv[*i] is one of the dist flags (consumes its value and
 * advances *i past it), 0 if not, -1 on a bad value (err filled).
 *   --placement P  --replicas R  --wire-dtype f32|bf16  --[no-]wire-checksum
 *   --comm-timeout S  --idle-timeout S  --stats-json FILE  --workers N
 *   --coordinator-share F  --unavailable R,... */
int dist_parse_flag(dist_params *p, int argc, char **argv, int *i, tm_err *err);

/* The limit on MPI start-up (MPI_Init and the communicator's set-up) that a
 * watchdog thread enforces: past it, the rank prints "start-up did not
 * complete within S s" and exits 1.  Set it to --idle-timeout before the
 * first dist_init (default 600 s). */
void dist_set_startup_timeout(double seconds);
/* MPI_Init if started by mpirun/srun; *rank = 0, *size = 1 otherwise. */
void dist_init(int *argc, char ***argv, int *rank, int *size);
int dist_mpi_active(void);

/* "trustmoe 0.1, wire vN, build ID": what the handshake compares, and --version. */
const char *dist_build_version(void);

/* This process's rank and the job's size (0 and 1 outside MPI). */
int dist_rank(void);
int dist_size(void);
/* Threads for loading the weights: this rank's part of the cores it may run
 * on (its affinity mask over the job's ranks on this host, which Open MPI
 * names in OMPI_COMM_WORLD_LOCAL_SIZE), or `threads` where that is more.
 * Outside mpirun: every core of the mask. */
int dist_load_threads(int threads);
/* Frees the job's communicator and finalizes MPI (no-op outside MPI or when
 * already done). */
void dist_finalize(void);

/* ---- for the exchange code of both roles (dist_mpi.c) ------------------------ */

#ifdef TM_DIST_INTERNAL
#include <mpi.h>
MPI_Comm dist_comm(void);
const char *dist_hostname(void);
/* Wait for every request in reqs[0..n) (MPI_REQUEST_NULL entries are done),
 * spinning for the first `spin` seconds (a reply that is due: pass the
 * timeout itself) and sleeping with back-off after that (0: nothing due).
 * Returns the index of the first request still open at the deadline, -1
 * when all completed, or -2 - i when request i completed with an error
 * (sts[i].MPI_ERROR says which). */
int dist_wait_all(MPI_Request *reqs, MPI_Status *sts, int n, double timeout, double spin);
/* Poll for the next message from `src` with any tag, spinning until
 * tm_now() reaches hot_until and sleeping after that.  Returns 1 and fills
 * *st when one is there, 0 at the deadline. */
int dist_probe(int src, MPI_Status *st, double timeout, double hot_until);
/* Seconds a worker keeps spinning for the next request after its last one. */
double dist_hot_window(void);
/* Print "trustmoe: rank R (host): <msg>" and MPI_Abort the job. */
_Noreturn void dist_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *dist_mpi_error(int code);
/* Layers and experts per layer of model_dir (or lp->synthetic's preset). */
tm_status dist_model_shape(const char *model_dir, const model_load_params *lp, int *layers, int *experts,
                           tm_err *err);
/* What a placement needs of model_dir's config (or lp->synthetic's preset):
 * layers, experts, MoE layers, shapes. */
tm_status dist_model_config(const char *model_dir, const model_load_params *lp, tm_config *c, tm_err *err);
/* CRC32C of sampled bytes of the checkpoint files (the handshake's content_sample). */
uint64_t dist_content_sample(const st_set *st);
#endif

#endif
