/* worker.h: ranks 1..N.
 *
 * worker/ owns a worker rank's life: it may call core/, proto/, engine/ (to
 * load its experts) and cluster/ (the MPI job and the placement), never the
 * coordinator.  worker_main receives the placement, maps only its experts (load_dense = 0), answers
 * the handshake and then serves DISPATCH requests until SHUTDOWN:
 *
 *   for each request [rows, hidden] + [rows, pairs] (expert, weight):
 *     partial[row] = Σ weight · expert(x[row]) through the grouped path
 *       (core/expert.h: pairs grouped by expert, two pool passes, each
 *       weight row read once; fixed order, bitwise repeatable for any -t);
 *     reply with partial [rows, hidden] in the wire dtype.
 *
 * Buffers are sized for the largest request seen so far and reused.
 */
#ifndef TM_WORKER_H
#define TM_WORKER_H

#include "dist.h"
#include "model.h"

/* Ranks > 0: load own experts from model_dir, serve until shutdown; returns
 * the process exit code (after MPI_Finalize).  lp: the command's load
 * params (weight dtype, finite check); expert_mask and load_dense are set here. */
int worker_main(const char *model_dir, const dist_params *p, const model_load_params *lp);

/* Test-only fault injection (see dist.h): TRUSTMOE_FAULT and friends. */
typedef enum {
    WORKER_FAULT_NONE = 0,
    WORKER_FAULT_DTYPE,    /* wrong dtype tag in a RESULT header */
    WORKER_FAULT_TRUNCATE, /* RESULT carries half its payload */
    WORKER_FAULT_CORRUPT,  /* a payload byte flipped after the checksum */
    WORKER_FAULT_EXIT,     /* exit without finalizing, mid-generation */
    WORKER_FAULT_SILENT,   /* stop answering */
    WORKER_FAULT_VERSION,  /* report another build in the handshake */
    WORKER_FAULT_STARTUP_STALL, /* stop before MPI_Init: done by dist_init, on any rank */
} worker_fault_kind;

typedef struct {
    worker_fault_kind kind;
    int rank; /* the worker that misbehaves (default 1) */
    int step; /* from this step on (default 1) */
    int fired;
} worker_fault;

/* Read the environment; an unknown TRUSTMOE_FAULT value is reported and ignored. */
worker_fault worker_fault_from_env(void);
const char *worker_fault_name(worker_fault_kind k);

#endif
