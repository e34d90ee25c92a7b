/* cli.h: options shared by the commands of build/trustmoe.
 *
 * coordinator/cli/ owns the program: main.c, one cmd_*.c per command
 * (commands.h), this file's option parsing and engine-run steps, and the
 * OpenAI client of `chat --url` (chat_client.h).  It sits
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

/* The commands that take the shared options: an option's table entry
 * (cli.c) lists the commands it belongs to, so each command rejects the
 * others' options and its --help lists only its own. */
typedef enum {
    CLI_GENERATE = 1 << 0,
    CLI_LOGITS = 1 << 1,
    CLI_INSPECT = 1 << 2,
    CLI_TRAIN = 1 << 3,
    CLI_FIT = 1 << 4,
    CLI_EVAL = 1 << 5,
    CLI_SERVE = 1 << 6,
    CLI_CHAT = 1 << 7,
} cli_cmd;

/* Sampling flags given on the command line (cli_opts.given): they win over
 * the model's generation_config.json. */
enum {
    CLI_GIVEN_TEMP = 1 << 0,
    CLI_GIVEN_TOP_K = 1 << 1,
    CLI_GIVEN_TOP_P = 1 << 2,
    CLI_GIVEN_MIN_P = 1 << 3,
    CLI_GIVEN_REPEAT = 1 << 4,
    CLI_GIVEN_N = 1 << 5,
    CLI_GIVEN_MODEL = 1 << 6,
    CLI_GIVEN_DIST = 1 << 7, /* --placement or --replicas */
    CLI_GIVEN_PRESENCE = 1 << 8,
    CLI_GIVEN_FREQUENCY = 1 << 9,
};

typedef struct {
    cli_cmd cmd;
    const char *model_dir;
    const char *url;          /* chat --url: a server's replies instead of a model's */
    const char *tokenizer_dir; /* --tokenizer: tokenizer.json from another folder */
    const char *ids_arg;      /* --ids */
    const char *prompt;       /* -p */
    const char *prompts_file; /* --prompts: one prompt per line (text, or ids "1,2,3"); "-": stdin */
    const char *system;       /* --system */
    const char *out_path;     /* -o; "-": stdout */
    int chat;                 /* --chat */
    int n_predict;            /* -n */
    int ctx;                  /* -c (0: prompt + n) */
    int threads;              /* -t */
    int json;                 /* --json */
    int max_batch;            /* --max-batch: prompts of one --prompts run (default 256) */
    int special;              /* --special: special and stop tokens in the text */
    int echo;                 /* -1: at a terminal (default), 0: --no-echo */
    int verbosity;            /* 0 -q, 1 default, 2 -v */
    unsigned given;           /* CLI_GIVEN_* */
    model_load_params load;
    sampler_params samp;
    dist_params dist;         /* --placement, --replicas, --wire-dtype, ... */
} cli_opts;

/* Parses argv into o for command cmd; unknown options and other commands'
 * options are errors naming the command. */
tm_status cli_parse_opts(cli_cmd cmd, int argc, char **argv, cli_opts *o, tm_err *err);
/* Only argv's flags that cmd takes, each with its value: the check
 * cli_parse_opts starts with, for a command that takes other flags out first. */
tm_status cli_check_flags(cli_cmd cmd, int argc, char **argv, tm_err *err);
/* The name of cmd for messages ("generate", "trust train", ...). */
const char *cli_cmd_name(cli_cmd cmd);
/* Applies the model folder's generation_config.json under the flags given. */
tm_status cli_apply_generation_config(cli_opts *o, tm_err *err);
tm_status cli_parse_ids(const char *s, int32_t **out, int *n, tm_err *err);
int cli_parse_int(const char *flag, const char *v, long lo, long hi, int *out, tm_err *err);
int cli_parse_float(const char *flag, const char *v, double lo, double hi, float *out, tm_err *err);
/* The options of cmd, grouped, each with its default. */
void cli_usage(FILE *f, cli_cmd cmd);
int cli_wants_help(int argc, char **argv);
/* Takes the trust selection flags (coordinator/trust/trust_run.h) out of argv,
 * then parses the rest into o.  *selecting is 1 when a trust flag other than
 * --stats-json was given: the command then selects experts with trust. */
tm_status cli_parse_with_trust(cli_cmd cmd, int *argc, char **argv, cli_opts *o, trust_opts *to, int *selecting,
                               tm_err *err);
/* After cli_start_backend: opens the trust run of to (database, contexts,
 * policy, --mask), with the experts of --unavailable ranks masked too. */
tm_status cli_trust_open(const cli_opts *o, moe_backend *be, const tm_model *m, trust_run *tr, trust_opts *to,
                         tm_err *err);
/* For a command that selects with trust: cli_trust_open, then classifies
 * the prompt ids[n] and returns the selector. */
tm_status cli_trust_begin(const cli_opts *o, moe_backend *be, const tm_model *m, trust_run *tr, trust_opts *to,
                          const int32_t *ids, int n, tm_selector *sel, tm_err *err);

/* -m DIR exists and holds config.json (nothing to check for --synthetic):
 * checked before anything else is read from it. */
tm_status cli_check_model_dir(const cli_opts *o, tm_err *err);
/* The tokenizer of --tokenizer DIR, else of the model folder; *tok stays NULL
 * when there is none and required is 0, else the error says how to get one. */
struct tok_tokenizer;
tm_status cli_load_tokenizer(const cli_opts *o, int required, struct tok_tokenizer **tok, tm_err *err);
/* The contents of path, NUL-terminated, as an input of `kind` capped at cap
 * bytes (core/input.h); "-" reads stdin.  *len (may be NULL) excludes the NUL. */
tm_status cli_read_text(const char *path, const char *kind, size_t cap, char **out, size_t *len, tm_err *err);

/* Prints "trustmoe CMD: message" (on rank 0 only) and returns the exit code for st. */
int cli_fail(const char *cmd, const tm_err *err, tm_status st);
/* cli_fail for an error every rank finds alike (the command line), before
 * any exchange: then finalizes MPI. */
int cli_fail_early(const char *cmd, const tm_err *err, tm_status st);

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
