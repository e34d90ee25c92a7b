/* cli.h: options shared by the commands of build/trustmoe. */
#ifndef TM_CLI_H
#define TM_CLI_H

#include "common.h"
#include "model.h"
#include "sampler.h"

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
    model_load_params load;
    sampler_params samp;
} cli_opts;

tm_status cli_parse_opts(int argc, char **argv, cli_opts *o, tm_err *err);
tm_status cli_parse_ids(const char *s, int32_t **out, int *n, tm_err *err);
int cli_parse_int(const char *flag, const char *v, long lo, long hi, int *out, tm_err *err);
int cli_parse_float(const char *flag, const char *v, double lo, double hi, float *out, tm_err *err);
void cli_usage_common(FILE *f);
int cli_wants_help(int argc, char **argv);
/* Prints "trustmoe CMD: message" and returns the exit code for st. */
int cli_fail(const char *cmd, const tm_err *err, tm_status st);

#endif
