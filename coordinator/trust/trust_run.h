/* trust_run.h: trust selection wired to the engine: the command-line flags
 * and a per-run bundle (database, contexts, per-context tables, policy,
 * selector, metrics).  The commands that use it (`generate`, `logits`,
 * `trust ...`, `eval`) live in coordinator/cli/; nothing here calls them.
 *
 * Contexts are computed from the mean of the prompt's token embeddings (the
 * input hidden state of layer 0), which is known before the forward pass,
 * so every layer of every token of a request, prompt included, selects
 * with the request's context.
 *
 * A command that generates with trust selection:
 *   trust_opts to;  trust_opts_default(&to);
 *   trust_opts_take(&argc, argv, &to, &err);       before cli_parse_opts
 *   trust_run r;    trust_run_open(&r, &to, &model, &err);
 *   per request:    trust_run_begin_request(&r, &model, prompt, n, &err);
 *                   tm_selector sel = trust_run_selector(&r);
 *                   model_forward(..., &sel, ...);
 *   at the end:     trust_run_finish(&r, &err)  (writes --stats-json);
 *                   trust_run_close(&r);
 */
#ifndef TM_TRUST_RUN_H
#define TM_TRUST_RUN_H

#include <stdio.h>

#include "common.h"
#include "model.h"
#include "trust_context.h"
#include "trust_db.h"
#include "trust_metrics.h"
#include "trust_policy.h"
#include "trust_quality.h"
#include "trust_select.h"

typedef struct {
    const char *db_path;      /* --trust-db PATH                               */
    int db_create;            /* a missing PATH starts a new database (trust
                                 train); else it is an error                  */
    trust_select_mode mode;   /* --select router|blend|trust-first             */
    float alpha;              /* --alpha A                                     */
    int min_evidence;         /* --min-evidence N                              */
    float epsilon;            /* --epsilon E                                   */
    uint64_t seed;            /* --trust-seed S                                */
    double ema_rate;          /* --trust-rate R                                */
    const char *policy_path;  /* --policy FILE                                 */
    const char *requester;    /* --requester ID                                */
    int64_t atp_budget;       /* --atp-budget N (-1: off)                      */
    const char *context;      /* --context NAME: skip classification           */
    const char *stats_json;   /* --stats-json PATH                             */
    const char *corpus;       /* --corpus FILE (text, or comma/space ids)      */
    int window;               /* --window N tokens per quality window          */
    int max_windows;          /* --max-windows N (0: all)                      */
    int epochs;               /* --epochs N (train)                            */
    int n_contexts;           /* --contexts K (fit-contexts)                   */
    trust_signal signal;      /* --signal absolute|advantage (train)           */
    const char *mask_path;    /* --mask FILE: unavailable experts              */
    const uint8_t *avail;     /* [layers, experts] 0: unavailable for another
                                 reason (--unavailable), added to --mask     */
    int substitute;           /* --substitute router (0) | learned (1)         */
    int sub_every;            /* --sub-sample N: train fits substitutes on
                                 every N-th token (0: off)                     */
} trust_opts;

void trust_opts_default(trust_opts *o);
/* Remove the flags above from argv[1..*argc) (argv[0] stays), leaving the
 * rest for cli_parse_opts. */
tm_status trust_opts_take(int *argc, char **argv, trust_opts *o, tm_err *err);

typedef struct {
    trust_opts o;
    char model_id[40];     /* "qwen3moe-<16 hex of the model identity>"      */
    int n_layers, n_experts, top_k, hidden;
    trust_db db;
    int have_db;
    trust_contexts ctx;
    int have_ctx;
    int n_tables;          /* ctx.k + 1: the last is "general"              */
    trust_table *tables;   /* [n_tables] trust per context                  */
    int cur;               /* table of the current request                  */
    float conf;            /* its classification confidence                 */
    int quiet;             /* 0: begin_request prints the context to stderr */
    trust_policy pol;
    int have_pol;
    trust_selector sel;
    trust_metrics metrics;
    float *mean;           /* [hidden] f32 scratch                           */
    float *row;            /* [hidden] f32 scratch                           */
    uint8_t *mask;         /* [n_layers, n_experts] from --mask; NULL: all   */
    int32_t *subst;        /* [n_tables, L, E, E] ranked substitutes         */
    float *gain;           /* [n_tables, L, E, E] f32 their fitted gains     */
    uint8_t *have_subst;   /* [n_tables] 1: the context has a fitted table   */
} trust_run;

/* A --mask FILE: one unavailable expert per line, "LAYER EXPERT", where
 * LAYER may be "*" (every layer); blank lines and lines starting with '#'
 * are skipped.  mask[L, E] receives 1 = available, 0 = masked.  Errors name
 * the file and line. */
tm_status trust_mask_load(const char *path, int n_layers, int n_experts, uint8_t *mask, tm_err *err);

tm_status trust_run_open(trust_run *r, const trust_opts *o, const tm_model *m, tm_err *err);
/* Classify the request (unless --context), select its table, reset its
 * budget, and (unless quiet) print "trust: context NAME (confidence C)" to
 * stderr.  ids[n]: the prompt. */
tm_status trust_run_begin_request(trust_run *r, const tm_model *m, const int32_t *ids, int n,
                                  tm_err *err);
const char *trust_run_context(const trust_run *r);
tm_selector trust_run_selector(trust_run *r);
tm_status trust_run_finish(trust_run *r, tm_err *err);
void trust_run_close(trust_run *r);
/* Per-layer expert load (distinct, entropy, Gini, top-4 share, changed by
 * trust) and the current context's trust table, one line per layer. */
void trust_run_print_summary(const trust_run *r, FILE *f);
/* The per-layer expert load table alone. */
void trust_run_print_diversity(const trust_run *r, FILE *f);
/* The run's --stats-json document (selection metrics per layer); the caller
 * owns it.  trust_run_write_doc writes a document to path. */
struct cJSON *trust_run_stats_doc(const trust_run *r);
tm_status trust_run_write_doc(struct cJSON *doc, const char *path, tm_err *err);

/* The identity string under which a model's reputation is stored. */
void trust_model_id(const tm_model *m, char *buf, size_t size);

/* Commands: `trustmoe trust fit-contexts|train|show ...` and
 * `trustmoe eval ...`; argv[0] is the command name. */
int cmd_trust(int argc, char **argv);
int cmd_eval(int argc, char **argv);

#endif
