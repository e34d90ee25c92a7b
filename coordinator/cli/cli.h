/* cli.h: options shared by the commands of build/trustmoe.
 *
 * coordinator/cli/ owns the program: main.c, one cmd_*.c per command
 * (commands.h), and this file's option parsing and engine-run steps.  It sits
 * on top and may call every other folder; nothing calls it.  Dependencies
 * point one way, which tools/check_layers.py checks (tests/cli/layering.sh).
 */
#ifndef TM_CLI_H
#define TM_CLI_H

#include "common.h"
#include "dispatch.h"
#include "model.h"
#include "sampler.h"
#include "trust_run.h"

typedef struct {
    const char *model_dir;
    const char *ids_arg;      /* --ids */
    const char *prompt;       /* -p */
    const char *prompts_file; /* --prompts: one prompt per line (text, or ids "1,2,3") */
    const char *system;       /* --system */
    const char *out_path;     /* -o */
    int chat;                 /* --chat */
    int n_predict;            /* -n */
    int ctx;                  /* -c (0: prompt + n) */
    int threads;              /* -t */
    int json;                 /* --json */
    int max_batch;            /* --max-batch: prompts of one --prompts run (default 256) */
    model_load_params load;
    sampler_params samp;
    dist_params dist;         /* --placement, --replicas, --wire-dtype, ... */
} cli_opts;

tm_status cli_parse_opts(int argc, char **argv, cli_opts *o, tm_err *err);
tm_status cli_parse_ids(const char *s, int32_t **out, int *n, tm_err *err);
int cli_parse_int(const char *flag, const char *v, long lo, long hi, int *out, tm_err *err);
int cli_parse_float(const char *flag, const char *v, double lo, double hi, float *out, tm_err *err);
void cli_usage_common(FILE *f);
int cli_wants_help(int argc, char **argv);
/* Takes the trust selection flags (coordinator/trust/trust_run.h) out of argv,
 * then parses the rest into o.  *selecting is 1 when a trust flag other than
 * --stats-json was given: the command then selects experts with trust. */
tm_status cli_parse_with_trust(int *argc, char **argv, cli_opts *o, trust_opts *to, int *selecting, tm_err *err);
/* For a command that selects with trust: opens the run (database, contexts,
 * policy), classifies the prompt ids[n] and returns the selector. */
tm_status cli_trust_begin(trust_run *tr, const trust_opts *to, const tm_model *m, const int32_t *ids, int n,
                          tm_selector *sel, tm_err *err);

/* Prints "trustmoe CMD: message" (on rank 0 only) and returns the exit code for st. */
int cli_fail(const char *cmd, const tm_err *err, tm_status st);

/* ---- one run of the engine, alone or as rank 0 of an MPI job ---------------- */

/* Ranks > 0 of an MPI job serve experts until rank 0 shuts them down:
 * returns 1 with *rc set when this process was such a worker, else 0. */
int cli_run_worker(const cli_opts *o, int *rc);
/* Loads the model: every expert alone; none on rank 0 of an MPI job.
 * *mask_out (free after model_free) holds the empty expert mask. */
tm_status cli_load_model(cli_opts *o, tm_model *m, unsigned char **mask_out, tm_err *err);
/* The expert backend: the workers' (after the handshake) in an MPI job of
 * several ranks, else the local one wrapped for statistics. */
tm_status cli_start_backend(const cli_opts *o, const tm_model *m, tm_state *s, moe_backend *be, int *started,
                            tm_err *err);
/* Writes statistics, shuts workers down and finalizes MPI (aborting the job
 * when rc != 0 before the workers were started). */
int cli_finish(moe_backend *be, int started, int rc, const tm_state *s);

#endif
