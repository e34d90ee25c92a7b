/* cli.c: option parsing shared by the commands, and the steps every engine
 * command takes (worker role, model load, expert backend, finish). */
#include "cli.h"
#include "input.h"

#include "commands.h"
#include "kernels.h"
#include "placement.h"
#include "tokenizer.h"
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- options ------------------------------------------------------------- */

int cli_parse_int(const char *flag, const char *v, long lo, long hi, int *out, tm_err *err)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return tm_errf(err, TM_EINPUT, "%s: '%s' is not an integer in %ld..%ld", flag, v, lo, hi);
    *out = (int)x;
    return TM_OK;
}

int cli_parse_float(const char *flag, const char *v, double lo, double hi, float *out, tm_err *err)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi))
        return tm_errf(err, TM_EINPUT, "%s: '%s' is not a number in %g..%g", flag, v, lo, hi);
    *out = (float)x;
    return TM_OK;
}

/* Comma-separated ids; returns a malloc'd array. */
tm_status cli_parse_ids(const char *s, int32_t **out, int *n, tm_err *err)
{
    int cap = 16, k = 0;
    int32_t *ids = tm_malloc(sizeof(int32_t) * (size_t)cap);
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            free(ids);
            return tm_errf(err, TM_EINPUT, "--ids: '%s' is not a comma-separated list of non-negative integers", s);
        }
        if (k == cap) ids = tm_realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
        ids[k++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (!k) {
        free(ids);
        return tm_errf(err, TM_EINPUT, "--ids: empty list");
    }
    *out = ids;
    *n = k;
    return TM_OK;
}

/* ---- the option table: which command takes what, and its help ----------------- */

#define G CLI_GENERATE
#define L CLI_LOGITS
#define I CLI_INSPECT
#define TR CLI_TRAIN
#define F CLI_FIT
#define E CLI_EVAL
#define SV CLI_SERVE
#define CH CLI_CHAT
#define ENGINE (G | L | I | TR | F | E | SV | CH)
#define SAMPLE (G | SV | CH) /* serve: the defaults of what a request leaves out */

enum { GRP_INPUT, GRP_SAMPLING, GRP_OUTPUT, GRP_MODEL, GRP_MPI, GRP_TRUST, GRP_CORPUS, GRP_SERVE, GRP_COUNT };
static const char *const group_names[GRP_COUNT] = {"input", "sampling", "output", "model and engine",
                                                   "MPI (under mpirun -np 1+N: rank 0 coordinates, ranks 1..N host the experts)",
                                                   "trust selection", "corpus", "server"};

typedef struct {
    const char *flag, *alias; /* alias: a second spelling, or NULL */
    const char *arg;          /* the value's name, or NULL for a switch */
    unsigned cmds;            /* cli_cmd bits */
    int group;
    const char *help;         /* ends with the default */
} cli_option;

static const cli_option options[] = {
    {"-m", "--model", "DIR", ENGINE, GRP_INPUT, "model folder: config.json, *.safetensors (required, or --synthetic)"},
    {"--synthetic", NULL, "PRESET", ENGINE, GRP_INPUT,
     "build a mkmodel preset's seeded weights in memory instead of -m (no tokenizer)"},
    {"--synthetic-seed", NULL, "S", ENGINE, GRP_INPUT, "the preset's weight seed (default 0, as mkmodel)"},
    {"--tokenizer", NULL, "DIR", G | L, GRP_INPUT, "read tokenizer.json from DIR (default: the model folder)"},
    {"-p", "--prompt", "TEXT", G | L, GRP_INPUT, "prompt text (needs a tokenizer)"},
    {"--ids", NULL, "LIST", G | L, GRP_INPUT, "prompt as comma-separated token ids"},
    {"--prompts", NULL, "FILE", G, GRP_INPUT,
     "one prompt per line (text, or ids 1,2,3), generated as one batch; - reads stdin"},
    {"--chat", NULL, NULL, G, GRP_INPUT, "wrap the prompt in the Qwen3 chat template (default off)"},
    {"--system", NULL, "TEXT", G | CH, GRP_INPUT, "with --chat (generate): a system turn (default none)"},
    {"--url", NULL, "URL", CH, GRP_INPUT,
     "ask a running trustmoe serve or other OpenAI-compatible server instead of -m (default none)"},
    {"--max-batch", NULL, "N", G, GRP_INPUT, "at most N prompts in one --prompts run (default 256)"},
    {"-n", "--n-predict", "N", G | CH, GRP_SAMPLING,
     "tokens to generate, 0 for none (default 16, or max_new_tokens of generation_config.json)"},
    {"--temp", NULL, "T", SAMPLE, GRP_SAMPLING, "temperature, 0 is greedy (default 0.8, or generation_config.json)"},
    {"--top-k", NULL, "K", SAMPLE, GRP_SAMPLING, "keep the K most likely tokens, 0 keeps all (default 40, or the config)"},
    {"--top-p", NULL, "P", SAMPLE, GRP_SAMPLING, "keep the smallest set of mass P, 1 is off (default 0.95, or the config)"},
    {"--min-p", NULL, "P", SAMPLE, GRP_SAMPLING, "drop tokens below P x the top probability (default 0: off, or the config)"},
    {"--repeat-penalty", NULL, "R", SAMPLE, GRP_SAMPLING,
     "divide the logits of recent tokens by R (default 1: off, or repetition_penalty)"},
    {"--repeat-last-n", NULL, "N", SAMPLE, GRP_SAMPLING, "the penalties look at the last N tokens, -1 all (default 64)"},
    {"--presence-penalty", NULL, "X", SAMPLE, GRP_SAMPLING, "subtract X from each recent token's logit (default 0: off)"},
    {"--frequency-penalty", NULL, "X", SAMPLE, GRP_SAMPLING, "subtract X per occurrence of a recent token (default 0: off)"},
    {"-s", "--seed", "S", SAMPLE, GRP_SAMPLING, "sampling seed (default random; the summary prints it)"},
    {"--stop", NULL, "TEXT", G | CH, GRP_SAMPLING,
     "end generation before TEXT; repeatable, up to 16 (default: eos tokens only)"},
    {"-o", NULL, "FILE", L, GRP_OUTPUT, "write the logits to FILE; - is stdout (required)"},
    {"--json", NULL, NULL, G, GRP_OUTPUT, "print the result as one JSON object (default: plain text)"},
    {"--special", NULL, NULL, G, GRP_OUTPUT, "show special and stop tokens in the text (default hidden)"},
    {"--no-echo", NULL, NULL, G, GRP_OUTPUT, "do not print the prompt before the text (default: echo at a terminal)"},
    {"-q", "--quiet", NULL, G | L | SV | CH, GRP_OUTPUT, "nothing on stderr but errors (default: a summary)"},
    {"-v", "--verbose", NULL, G | L | SV | CH, GRP_OUTPUT,
     "also the time split, per-rank, per-layer and trust tables, workers' start-up lines (default off)"},
    {"--stats-json", NULL, "FILE", G | L | TR | E, GRP_OUTPUT,
     "write the run's statistics (throughput, time split, bytes, expert load) to FILE"},
    {"-c", "--ctx-size", "N", G | L | SV | CH, GRP_MODEL,
     "context length (default: prompt + -n; serve and chat: 4096; at most max_position_embeddings)"},
    {"-t", "--threads", "N", ENGINE, GRP_MODEL, "threads per rank (default 1)"},
    {"--weight-dtype", NULL, "D", ENGINE, GRP_MODEL, "bf16 or f32 matrices (default bf16 for BF16 checkpoints)"},
    {"--no-check-finite", NULL, NULL, ENGINE, GRP_MODEL, "skip the NaN/Inf scan of the weights at load"},
    {"--map-weights", NULL, NULL, ENGINE, GRP_MODEL,
     "read matrices from the mmap'd files (loads faster, decodes slower; default off)"},
    {"--placement", NULL, "P", G | L | I | SV | CH, GRP_MPI,
     "contiguous (default), round-robin, balanced:STATS (an earlier --stats-json), or a JSON file"},
    {"--replicas", NULL, "R", G | L | I | SV | CH, GRP_MPI, "host every expert on R distinct workers (default 1)"},
    {"--workers", NULL, "N", I, GRP_MPI, "print the placement for N worker ranks, without MPI (default: none)"},
    {"--coordinator-share", NULL, "F", G | L | SV | CH, GRP_MPI,
     "the fraction of every layer's experts rank 0 computes itself while the workers compute theirs (default 0)"},
    {"--unavailable", NULL, "R,...", G | L | SV, GRP_MPI,
     "worker ranks to leave out: their experts are masked and the router's next best take their slots "
     "(default none)"},
    {"--wire-dtype", NULL, "D", G | L | SV | CH, GRP_MPI, "activations on the wire: f32 (default) or bf16"},
    {"--no-wire-checksum", NULL, NULL, G | L | SV | CH, GRP_MPI,
     "no CRC32C over the activation payloads (default on; it costs under 0.3% of decode)"},
    {"--wire-checksum", NULL, NULL, G | L | SV | CH, GRP_MPI, "CRC32C over every activation payload (the default)"},
    {"--comm-timeout", NULL, "S", G | L | SV | CH, GRP_MPI, "seconds a worker's reply may take (default 60)"},
    {"--idle-timeout", NULL, "S", G | L | SV | CH, GRP_MPI, "seconds for loading and handshake, and a worker's idle wait (default 600)"},
    {"--select", NULL, "MODE", G | L | TR | E | SV, GRP_TRUST, "router (default: the model's routing), blend or trust-first"},
    {"--trust-db", NULL, "PATH", G | L | TR | F | E | SV, GRP_TRUST, "reputation database (SQLite; default none)"},
    {"--alpha", NULL, "A", G | L | TR | E | SV, GRP_TRUST, "blend: router share in [0,1] (default 0.95)"},
    {"--min-evidence", NULL, "N", G | L | TR | E | SV, GRP_TRUST, "trust-first: windows of evidence to lead (default 2)"},
    {"--epsilon", NULL, "E", G | L | TR | E | SV, GRP_TRUST, "trust-first: exploration probability (default 0)"},
    {"--trust-seed", NULL, "S", G | L | TR | E | SV, GRP_TRUST, "exploration seed (default 42)"},
    {"--trust-rate", NULL, "R", TR, GRP_TRUST, "trust EMA rate (default 0.1)"},
    {"--policy", NULL, "FILE", G | L | TR | E | SV, GRP_TRUST, "expert authorization policy, JSON (default none)"},
    {"--requester", NULL, "ID", G | L | TR | E | SV, GRP_TRUST, "requester the policy is applied for (default none)"},
    {"--atp-budget", NULL, "N", G | L | TR | E | SV, GRP_TRUST, "per-request ATP budget (default off)"},
    {"--context", NULL, "NAME", G | L | TR | E | SV, GRP_TRUST, "use this context instead of classifying (default: classify)"},
    {"--host", NULL, "ADDR", SV, GRP_SERVE, "IPv4 address to listen on (default 127.0.0.1)"},
    {"--port", NULL, "N", SV, GRP_SERVE, "TCP port, 0 picks a free one (default 8080)"},
    {"--port-file", NULL, "FILE", SV, GRP_SERVE, "write the port to FILE once listening (default none)"},
    {"--max-seqs", NULL, "N", SV, GRP_SERVE, "sequences generating at once (default 8)"},
    {"--max-queue", NULL, "N", SV, GRP_SERVE, "requests waiting beyond --max-seqs before 429 (default 64)"},
    {"--chunk", NULL, "N", SV, GRP_SERVE, "prompt tokens per step: long prompts prefill in chunks (default 256)"},
    {"--max-body", NULL, "BYTES", SV, GRP_SERVE, "request body cap, 413 above (default 1048576)"},
    {"--served-model-name", NULL, "NAME", SV, GRP_SERVE, "the model id of /v1/models (default: the folder's name)"},
    {"--shutdown-grace", NULL, "S", SV, GRP_SERVE,
     "on SIGTERM/SIGINT, seconds running requests may take to finish (default 10)"},
    {"--batch-wait", NULL, "MS", SV, GRP_SERVE,
     "an idle server admits requests arriving this close together into its first step (default 5, 0: off)"},
    {"--signal", NULL, "S", TR, GRP_TRUST,
     "window quality credited as absolute or advantage over the context's running mean (default advantage)"},
    {"--mask", NULL, "FILE", G | L | TR | E | SV, GRP_TRUST,
     "experts to treat as unavailable: lines 'LAYER EXPERT' ('*' for every layer; default none)"},
    {"--substitute", NULL, "S", G | L | TR | E | SV, GRP_TRUST,
     "for masked experts: router (next best, default) or learned (trust train's substitutes)"},
    {"--corpus", NULL, "FILE", TR | F | E, GRP_CORPUS, "text (needs tokenizer.json) or token ids (required)"},
    {"--window", NULL, "N", TR | F | E, GRP_CORPUS, "tokens per window (default 128)"},
    {"--max-windows", NULL, "N", TR | F | E, GRP_CORPUS, "stop after N windows (default: all)"},
    {"--epochs", NULL, "N", TR, GRP_CORPUS, "passes over the corpus (default 1)"},
    {"--contexts", NULL, "K", F, GRP_CORPUS, "number of contexts (default 8)"},
};

#undef G
#undef L
#undef I
#undef TR
#undef F
#undef E
#undef SV
#undef CH
#undef ENGINE
#undef SAMPLE

const char *cli_cmd_name(cli_cmd cmd)
{
    switch (cmd) {
    case CLI_GENERATE: return "generate";
    case CLI_LOGITS: return "logits";
    case CLI_INSPECT: return "inspect";
    case CLI_TRAIN: return "trust train";
    case CLI_FIT: return "trust fit-contexts";
    case CLI_EVAL: return "eval";
    case CLI_SERVE: return "serve";
    case CLI_CHAT: return "chat";
    }
    return "?";
}

static const cli_option *find_option(const char *a)
{
    for (size_t i = 0; i < TM_ARRAY_LEN(options); i++)
        if (!strcmp(a, options[i].flag) || (options[i].alias && !strcmp(a, options[i].alias))) return &options[i];
    return NULL;
}

/* The commands an option belongs to, for the error message. */
static void owners(unsigned cmds, char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = '\0';
    for (unsigned bit = 1; bit <= CLI_CHAT; bit <<= 1)
        if (cmds & bit) k += (size_t)snprintf(buf + k, k < cap ? cap - k : 0, "%s%s", k ? ", " : "", cli_cmd_name(bit));
}

tm_status cli_check_flags(cli_cmd cmd, int argc, char **argv, tm_err *err)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const cli_option *op = find_option(a);
        if (!op) {
            if (a[0] == '-' && a[1]) return tm_errf(err, TM_EINPUT, "unknown option '%s' (trustmoe %s --help lists them)", a, cli_cmd_name(cmd));
            return tm_errf(err, TM_EINPUT, "unexpected argument '%s'", a);
        }
        if (!(op->cmds & cmd)) {
            char who[160];
            owners(op->cmds, who, sizeof who);
            return tm_errf(err, TM_EINPUT, "%s is not an option of %s (it belongs to %s)", a, cli_cmd_name(cmd), who);
        }
        if (op->arg && ++i >= argc) return tm_errf(err, TM_EINPUT, "%s needs a value", a);
    }
    return TM_OK;
}

void cli_usage(FILE *f, cli_cmd cmd)
{
    for (int g = 0; g < GRP_COUNT; g++) {
        int any = 0;
        for (size_t i = 0; i < TM_ARRAY_LEN(options); i++) {
            const cli_option *op = &options[i];
            if (op->group != g || !(op->cmds & cmd)) continue;
            if (!any++) fprintf(f, "\n%s:\n", group_names[g]);
            char left[64];
            snprintf(left, sizeof left, "%s%s%s%s%s", op->flag, op->alias ? ", " : "", op->alias ? op->alias : "",
                     op->arg ? " " : "", op->arg ? op->arg : "");
            fprintf(f, "  %-24s %s\n", left, op->help);
        }
    }
}

static tm_status parse_opts(cli_cmd cmd, int argc, char **argv, cli_opts *o, tm_err *err);

/* chat --url: the model is the server's, so the flags of a model run here (the
 * folder, the engine, MPI) are errors, and so is the repetition penalty the
 * OpenAI API has no field for. */
static tm_status url_conflicts(int argc, char **argv, tm_err *err)
{
    for (int i = 1; i < argc; i++) {
        const cli_option *op = find_option(argv[i]);
        if (!op) continue;
        if (!strcmp(op->flag, "-m") || !strcmp(op->flag, "--synthetic"))
            return tm_errf(err, TM_EINPUT, "give %s %s or --url URL, not both", argv[i], op->arg);
        if (op->group == GRP_MODEL || op->group == GRP_MPI || !strcmp(op->flag, "--synthetic-seed"))
            return tm_errf(err, TM_EINPUT, "--url: %s is for a model run here; the server has its own", argv[i]);
        if (!strcmp(op->flag, "--repeat-penalty") || !strcmp(op->flag, "--repeat-last-n"))
            return tm_errf(err, TM_EINPUT, "--url: %s has no field in the OpenAI API", argv[i]);
        i += op->arg != NULL;
    }
    return TM_OK;
}

/* Parses the options shared by all commands; unknown flags are errors.
 * MPI starts after this (dist_init is lazy), so its start-up watchdog gets
 * --idle-timeout, or the default when parsing stopped before it. */
tm_status cli_parse_opts(cli_cmd cmd, int argc, char **argv, cli_opts *o, tm_err *err)
{
    tm_status st = parse_opts(cmd, argc, argv, o, err);
    dist_set_startup_timeout(o->dist.idle_timeout);
    return st;
}

static tm_status parse_opts(cli_cmd cmd, int argc, char **argv, cli_opts *o, tm_err *err)
{
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    o->n_predict = 16;
    o->threads = 1;
    o->max_batch = 256;
    o->echo = -1;
    o->verbosity = 1;
    o->load = model_default_load_params();
    o->samp = sampler_default_params();
    o->dist = dist_default_params();
    tm_status st = cli_check_flags(cmd, argc, argv, err);
    if (st != TM_OK) return st;
    int have_m = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        st = TM_OK;
#define IS(x, y) (!strcmp(a, x) || !strcmp(a, y))
#define NEED()                                                                                                        \
    if (!v) return tm_errf(err, TM_EINPUT, "%s needs a value", a)
        if (IS("-m", "--model")) {
            NEED();
            o->model_dir = v;
            have_m = 1;
        } else if (!strcmp(a, "--tokenizer")) {
            NEED();
            o->tokenizer_dir = v;
        } else if (!strcmp(a, "--ids")) {
            NEED();
            o->ids_arg = v;
        } else if (IS("-p", "--prompt")) {
            NEED();
            o->prompt = v;
        } else if (!strcmp(a, "--prompts")) {
            NEED();
            o->prompts_file = v;
        } else if (!strcmp(a, "--max-batch")) {
            NEED();
            st = cli_parse_int(a, v, 1, 1 << 16, &o->max_batch, err);
        } else if (!strcmp(a, "--url")) {
            NEED();
            o->url = v;
        } else if (!strcmp(a, "--system")) {
            NEED();
            o->system = v;
        } else if (!strcmp(a, "--chat")) {
            takes = 0;
            o->chat = 1;
        } else if (!strcmp(a, "-o")) {
            NEED();
            o->out_path = v;
        } else if (IS("-n", "--n-predict")) {
            NEED();
            st = cli_parse_int(a, v, 0, 1 << 24, &o->n_predict, err);
            o->given |= CLI_GIVEN_N;
        } else if (IS("-c", "--ctx-size")) {
            NEED();
            st = cli_parse_int(a, v, 1, 1 << 24, &o->ctx, err);
        } else if (IS("-t", "--threads")) {
            NEED();
            st = cli_parse_int(a, v, 1, 1024, &o->threads, err);
        } else if (IS("-s", "--seed")) {
            NEED();
            int seed;
            st = cli_parse_int(a, v, 0, 2147483647, &seed, err);
            o->samp.seed = (uint64_t)seed;
        } else if (!strcmp(a, "--temp")) {
            NEED();
            st = cli_parse_float(a, v, 0, 100, &o->samp.temperature, err);
            o->given |= CLI_GIVEN_TEMP;
        } else if (!strcmp(a, "--top-k")) {
            NEED();
            st = cli_parse_int(a, v, 0, 1 << 24, &o->samp.top_k, err);
            o->given |= CLI_GIVEN_TOP_K;
        } else if (!strcmp(a, "--top-p")) {
            NEED();
            st = cli_parse_float(a, v, 0, 1, &o->samp.top_p, err);
            o->given |= CLI_GIVEN_TOP_P;
        } else if (!strcmp(a, "--min-p")) {
            NEED();
            st = cli_parse_float(a, v, 0, 1, &o->samp.min_p, err);
            o->given |= CLI_GIVEN_MIN_P;
        } else if (!strcmp(a, "--repeat-penalty")) {
            NEED();
            st = cli_parse_float(a, v, 0.01, 100, &o->samp.repeat_penalty, err);
            o->given |= CLI_GIVEN_REPEAT;
        } else if (!strcmp(a, "--repeat-last-n")) {
            NEED();
            st = cli_parse_int(a, v, -1, 1 << 24, &o->samp.penalty_last_n, err);
        } else if (!strcmp(a, "--presence-penalty")) {
            NEED();
            st = cli_parse_float(a, v, -100, 100, &o->samp.presence_penalty, err);
            o->given |= CLI_GIVEN_PRESENCE;
        } else if (!strcmp(a, "--frequency-penalty")) {
            NEED();
            st = cli_parse_float(a, v, -100, 100, &o->samp.frequency_penalty, err);
            o->given |= CLI_GIVEN_FREQUENCY;
        } else if (!strcmp(a, "--stop")) {
            NEED();
            if (!*v) return tm_errf(err, TM_EINPUT, "--stop: empty string");
            if (o->samp.n_stop == SAMPLER_MAX_STOP)
                return tm_errf(err, TM_EINPUT, "--stop: at most %d stop strings", SAMPLER_MAX_STOP);
            o->samp.stop[o->samp.n_stop++] = v;
        } else if (!strcmp(a, "--weight-dtype")) {
            NEED();
            if (!strcmp(v, "bf16")) o->load.weight_dtype = TM_DT_BF16;
            else if (!strcmp(v, "f32")) o->load.weight_dtype = TM_DT_F32;
            else return tm_errf(err, TM_EINPUT, "--weight-dtype: '%s' is not bf16 or f32", v);
        } else if (!strcmp(a, "--synthetic")) {
            NEED();
            o->load.synthetic = v;
        } else if (!strcmp(a, "--synthetic-seed")) {
            NEED();
            int seed;
            st = cli_parse_int(a, v, 0, 2147483647, &seed, err);
            o->load.synthetic_seed = (uint64_t)seed;
        } else if (!strcmp(a, "--no-check-finite")) {
            takes = 0;
            o->load.check_finite = 0;
        } else if (!strcmp(a, "--map-weights")) {
            takes = 0;
            o->load.map_weights = 1;
        } else if (!strcmp(a, "--json")) {
            takes = 0;
            o->json = 1;
        } else if (!strcmp(a, "--special")) {
            takes = 0;
            o->special = 1;
        } else if (!strcmp(a, "--no-echo")) {
            takes = 0;
            o->echo = 0;
        } else if (IS("-q", "--quiet")) {
            takes = 0;
            o->verbosity = 0;
        } else if (IS("-v", "--verbose")) {
            takes = 0;
            o->verbosity = 2;
        } else {
            if (!strcmp(a, "--placement") || !strcmp(a, "--replicas")) o->given |= CLI_GIVEN_DIST;
            int j = i, r = dist_parse_flag(&o->dist, argc, argv, &j, err);
            if (r < 0) return TM_EINPUT;
            if (r == 0) return tm_errf(err, TM_EINPUT, "unknown option '%s'", a);
            i = j;
            continue;
        }
#undef NEED
#undef IS
        if (st != TM_OK) return st;
        i += takes;
    }
    if (o->url) return url_conflicts(argc, argv, err);
    if (have_m && o->load.synthetic)
        return tm_errf(err, TM_EINPUT, "give -m DIR or --synthetic PRESET, not both");
    if (o->load.synthetic) o->model_dir = o->load.synthetic;
    if (!o->model_dir) return tm_errf(err, TM_EINPUT, "-m DIR (or --synthetic PRESET) is required");
    if (o->system && !o->chat && cmd != CLI_CHAT) return tm_errf(err, TM_EINPUT, "--system needs --chat (it is a turn of the chat template)");
    if (have_m) o->given |= CLI_GIVEN_MODEL;
    o->dist.verbose = o->verbosity >= 2;
    o->dist.quiet = o->verbosity == 0;
    return TM_OK;
}

tm_status cli_apply_generation_config(cli_opts *o, tm_err *err)
{
    if (o->load.synthetic) return TM_OK; /* an in-memory preset has no folder */
    sampler_params cfg = sampler_default_params();
    int n = o->n_predict;
    tm_status st = sampler_read_generation_config(o->model_dir, &cfg, &n, err);
    if (st != TM_OK) return st;
    if (!(o->given & CLI_GIVEN_TEMP)) o->samp.temperature = cfg.temperature;
    if (!(o->given & CLI_GIVEN_TOP_K)) o->samp.top_k = cfg.top_k;
    if (!(o->given & CLI_GIVEN_TOP_P)) o->samp.top_p = cfg.top_p;
    if (!(o->given & CLI_GIVEN_MIN_P)) o->samp.min_p = cfg.min_p;
    if (!(o->given & CLI_GIVEN_REPEAT)) o->samp.repeat_penalty = cfg.repeat_penalty;
    if (!(o->given & CLI_GIVEN_N)) o->n_predict = n;
    return TM_OK;
}

/* ---- input: model folder, tokenizer, files ----------------------------------------- */

tm_status cli_check_model_dir(const cli_opts *o, tm_err *err)
{
    if (o->load.synthetic) return TM_OK;
    struct stat sb;
    if (stat(o->model_dir, &sb) != 0) return tm_errf(err, TM_EINPUT, "-m %s: no such folder", o->model_dir);
    if (!S_ISDIR(sb.st_mode)) return tm_errf(err, TM_EINPUT, "-m %s: not a folder", o->model_dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", o->model_dir);
    if (access(path, F_OK) != 0)
        return tm_errf(err, TM_EINPUT, "-m %s: no config.json there (not a model folder)", o->model_dir);
    return TM_OK;
}

tm_status cli_load_tokenizer(const cli_opts *o, int required, tok_tokenizer **tok, tm_err *err)
{
    *tok = NULL;
    const char *dir = o->tokenizer_dir ? o->tokenizer_dir : o->load.synthetic ? NULL : o->model_dir;
    char path[4200];
    if (dir) snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (dir && (o->tokenizer_dir || access(path, F_OK) == 0)) {
        if (access(path, F_OK) != 0) return tm_errf(err, TM_EINPUT, "--tokenizer %s: no tokenizer.json there", dir);
        return tok_load(path, tok, err);
    }
    if (!required) return TM_OK;
    if (o->load.synthetic)
        return tm_errf(err, TM_EINPUT,
                       "--synthetic %s: synthetic models have no tokenizer; give --tokenizer DIR "
                       "(tools/fetch_qwen_tokenizer.sh makes one) or --ids",
                       o->load.synthetic);
    return tm_errf(err, TM_EINPUT,
                   "%s/tokenizer.json not found: text needs a tokenizer (give --tokenizer DIR, or --ids)", o->model_dir);
}

tm_status cli_read_text(const char *path, const char *kind, size_t cap, char **out, size_t *len, tm_err *err)
{
    if (strcmp(path, "-")) return tm_read_input(path, kind, cap, out, len, err);
    size_t room = 4096, n = 0;
    char *buf = tm_malloc(room);
    for (size_t got; (got = fread(buf + n, 1, room - n - 1, stdin)) > 0;) {
        n += got;
        if (n > cap) {
            free(buf);
            return tm_errf(err, TM_EINPUT, "-: the %s on stdin is larger than %zu bytes", kind, cap);
        }
        if (room - n < 2) buf = tm_realloc(buf, room *= 2);
    }
    if (ferror(stdin)) {
        free(buf);
        return tm_errf(err, TM_EINPUT, "-: cannot read stdin: %s", strerror(errno));
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return TM_OK;
}

int cli_fail(const char *cmd, const tm_err *err, tm_status st)
{
    int rank, size;
    dist_init(NULL, NULL, &rank, &size);
    if (rank != 0) return st == TM_EINPUT ? 2 : 1; /* rank 0 says it once */
    fprintf(stderr, "trustmoe %s: %s\n", cmd, err->msg);
    return st == TM_EINPUT ? 2 : 1;
}

int cli_fail_early(const char *cmd, const tm_err *err, tm_status st)
{
    int rc = cli_fail(cmd, err, st);
    dist_finalize(); /* every rank met the same error: each ends cleanly */
    return rc;
}

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

tm_status cli_parse_with_trust(cli_cmd cmd, int *argc, char **argv, cli_opts *o, trust_opts *to, int *selecting,
                               tm_err *err)
{
    trust_opts_default(to);
    *selecting = 0;
    /* before the trust flags leave argv: another command's are errors here */
    tm_status st = cli_check_flags(cmd, *argc, argv, err);
    if (st != TM_OK) return st;
    int before = *argc;
    st = trust_opts_take(argc, argv, to, err);
    /* --stats-json FILE is the run's statistics, not a selection flag */
    *selecting = before - *argc - (to->stats_json ? 2 : 0) > 0;
    if (st == TM_OK) st = cli_parse_opts(cmd, *argc, argv, o, err);
    if (st == TM_OK && to->stats_json) o->dist.stats_json = to->stats_json;
    to->stats_json = NULL; /* written once, by the run (dist_finish) */
    if (st == TM_OK && o->dist.unavailable) *selecting = 1; /* the router over the available experts */
    return st;
}

/* --unavailable R,...: avail[layers, experts] with 0 for the experts only
 * those workers host; NULL without the flag. */
static tm_status unavailable_mask(const cli_opts *o, moe_backend *be, const tm_model *m, unsigned char **avail,
                                  tm_err *err)
{
    *avail = NULL;
    if (!o->dist.unavailable) return TM_OK;
    size_t n = (size_t)m->cfg.num_layers * (size_t)m->cfg.num_experts;
    unsigned char *a = tm_malloc(TM_MAX(n, 1));
    memset(a, 1, n);
    int masked = 0;
    tm_status st = dist_unavailable_mask(be, o->dist.unavailable, a, &masked, err);
    if (st != TM_OK) {
        free(a);
        return st;
    }
    if (o->verbosity >= 1)
        fprintf(stderr, "trustmoe: worker rank%s %s unavailable: %d (layer, expert) masked, the router's next best "
                        "take their slots\n", strchr(o->dist.unavailable, ',') ? "s" : "", o->dist.unavailable,
                masked);
    *avail = a;
    return TM_OK;
}

tm_status cli_trust_open(const cli_opts *o, moe_backend *be, const tm_model *m, trust_run *tr, trust_opts *to,
                         tm_err *err)
{
    unsigned char *avail;
    tm_status st = unavailable_mask(o, be, m, &avail, err);
    if (st != TM_OK) return st;
    to->avail = avail; /* trust_run_open copies it into the run's mask */
    st = trust_run_open(tr, to, m, err);
    to->avail = NULL;
    free(avail);
    return st;
}

tm_status cli_trust_begin(const cli_opts *o, moe_backend *be, const tm_model *m, trust_run *tr, trust_opts *to,
                          const int32_t *ids, int n, tm_selector *sel, tm_err *err)
{
    tm_status st = cli_trust_open(o, be, m, tr, to, err);
    if (st != TM_OK) return st;
    if ((st = trust_run_begin_request(tr, m, ids, n, err)) != TM_OK) {
        trust_run_close(tr);
        return st;
    }
    *sel = trust_run_selector(tr);
    return TM_OK;
}

/* ---- engine runs ------------------------------------------------------------ */

int cli_run_worker(const cli_opts *o, int *rc)
{
    int rank, size;
    dist_init(NULL, NULL, &rank, &size);
    if (rank == 0) return 0;
    kern_set_threads(o->threads); /* -t: the cores bound to this rank (default 1) */
    model_load_params lp = o->load;
    lp.load_threads = dist_load_threads(o->threads);
    *rc = worker_main(o->model_dir, &o->dist, &lp);
    return 1;
}

tm_status cli_load_model(cli_opts *o, tm_model *m, unsigned char **mask_out, tm_err *err)
{
    int rank, size;
    dist_init(NULL, NULL, &rank, &size);
    *mask_out = NULL;
    o->load.load_threads = dist_load_threads(o->threads);
    if (size > 1) {
        /* the workers hold the experts; rank 0 maps only its own share, if any */
        if (!(*mask_out = dist_coordinator_mask(o->model_dir, &o->load, &o->dist, size, err))) return TM_EINPUT;
        o->load.expert_mask = *mask_out;
    }
    return model_load(m, o->model_dir, &o->load, err);
}

tm_status cli_start_backend(const cli_opts *o, const tm_model *m, tm_state *s, moe_backend *be, int *started,
                            tm_err *err)
{
    int rank, size;
    dist_init(NULL, NULL, &rank, &size);
    if (size == 1 && (o->given & CLI_GIVEN_DIST) && o->verbosity > 0)
        fprintf(stderr, "trustmoe %s: note: one process, nothing is distributed; --placement and --replicas apply "
                        "to worker ranks under mpirun -np 1+N\n",
                cli_cmd_name(o->cmd));
    tm_status st = size > 1 ? dist_coordinator_start(m, &o->dist, size, be, err)
                            : dist_local_start(m, &o->dist, model_local_backend(m, s), be, err);
    *started = st == TM_OK;
    return st;
}

int cli_finish(moe_backend *be, int started, int rc, const tm_state *s)
{
    return dist_finish(started ? be : NULL, rc, s);
}
