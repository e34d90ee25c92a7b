/* cli.c: option parsing shared by the commands, and the steps every engine
 * command takes (worker role, model load, expert backend, finish). */
#include "cli.h"

#include "commands.h"
#include "kernels.h"
#include "placement.h"
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

void cli_usage_common(FILE *f)
{
    fprintf(f,
            "  -m DIR              model folder (config.json, *.safetensors)\n"
            "  -c N                context length (default: prompt + -n, at most max_position_embeddings)\n"
            "  -t N                threads (default 1)\n"
            "  --weight-dtype D    bf16 (keep BF16 weights, default for BF16 checkpoints) or f32\n"
            "  --no-check-finite   skip the NaN/Inf scan of the weights at load\n"
            "  --map-weights       read matrices from the mmap'd files instead of copying them into\n"
            "                      huge-page memory (loads faster, decodes slower)\n"
            "  --synthetic PRESET  build a mkmodel preset's seeded weights in memory instead of -m\n"
            "  --synthetic-seed S  its seed (default 0, as mkmodel)\n");
    fprintf(f, "under mpirun -np 1+N (rank 0 coordinates, ranks 1..N host the experts):\n");
    dist_usage(f);
}

/* Parses the options shared by all commands; unknown flags are errors. */
tm_status cli_parse_opts(int argc, char **argv, cli_opts *o, tm_err *err)
{
    memset(o, 0, sizeof *o);
    o->n_predict = 16;
    o->threads = 1;
    o->load = model_default_load_params();
    o->samp = sampler_default_params();
    o->dist = dist_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        tm_status st = TM_OK;
#define NEED()                                                                                                        \
    if (!v) return tm_errf(err, TM_EINPUT, "%s needs a value", a)
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            NEED();
            o->model_dir = v;
        } else if (!strcmp(a, "--ids")) {
            NEED();
            o->ids_arg = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            NEED();
            o->prompt = v;
        } else if (!strcmp(a, "--prompts")) {
            NEED();
            o->prompts_file = v;
        } else if (!strcmp(a, "--system")) {
            NEED();
            o->system = v;
        } else if (!strcmp(a, "--chat")) {
            takes = 0;
            o->chat = 1;
        } else if (!strcmp(a, "-o")) {
            NEED();
            o->out_path = v;
        } else if (!strcmp(a, "-n")) {
            NEED();
            st = cli_parse_int(a, v, 0, 1 << 24, &o->n_predict, err);
        } else if (!strcmp(a, "-c")) {
            NEED();
            st = cli_parse_int(a, v, 1, 1 << 24, &o->ctx, err);
        } else if (!strcmp(a, "-t")) {
            NEED();
            st = cli_parse_int(a, v, 1, 1024, &o->threads, err);
        } else if (!strcmp(a, "-s") || !strcmp(a, "--seed")) {
            NEED();
            int seed;
            st = cli_parse_int(a, v, 0, 2147483647, &seed, err);
            o->samp.seed = (uint64_t)seed;
        } else if (!strcmp(a, "--temp")) {
            NEED();
            st = cli_parse_float(a, v, 0, 100, &o->samp.temperature, err);
        } else if (!strcmp(a, "--top-k")) {
            NEED();
            st = cli_parse_int(a, v, 0, 1 << 24, &o->samp.top_k, err);
        } else if (!strcmp(a, "--top-p")) {
            NEED();
            st = cli_parse_float(a, v, 0, 1, &o->samp.top_p, err);
        } else if (!strcmp(a, "--weight-dtype")) {
            NEED();
            if (!strcmp(v, "bf16")) o->load.weight_dtype = TM_DT_BF16;
            else if (!strcmp(v, "f32")) o->load.weight_dtype = TM_DT_F32;
            else return tm_errf(err, TM_EINPUT, "--weight-dtype: '%s' is not bf16 or f32", v);
        } else if (!strcmp(a, "--synthetic")) {
            NEED();
            o->load.synthetic = v;
            o->model_dir = v;
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
        } else {
            int j = i, r = dist_parse_flag(&o->dist, argc, argv, &j, err);
            if (r < 0) return TM_EINPUT;
            if (r == 0) return tm_errf(err, TM_EINPUT, "unknown option '%s'", a);
            i = j;
            continue;
        }
#undef NEED
        if (st != TM_OK) return st;
        i += takes;
    }
    if (!o->model_dir) return tm_errf(err, TM_EINPUT, "-m DIR (or --synthetic PRESET) is required");
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

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

tm_status cli_parse_with_trust(int *argc, char **argv, cli_opts *o, trust_opts *to, int *selecting, tm_err *err)
{
    trust_opts_default(to);
    int before = *argc;
    tm_status st = trust_opts_take(argc, argv, to, err);
    /* --stats-json FILE is the run's statistics, not a selection flag */
    *selecting = before - *argc - (to->stats_json ? 2 : 0) > 0;
    if (st == TM_OK) st = cli_parse_opts(*argc, argv, o, err);
    if (st == TM_OK && to->stats_json) o->dist.stats_json = to->stats_json;
    to->stats_json = NULL; /* written once, by the run (dist_finish) */
    return st;
}

tm_status cli_trust_begin(trust_run *tr, const trust_opts *to, const tm_model *m, const int32_t *ids, int n,
                          tm_selector *sel, tm_err *err)
{
    tm_status st = trust_run_open(tr, to, m, err);
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
    *rc = worker_main(o->model_dir, &o->dist, &o->load);
    return 1;
}

tm_status cli_load_model(cli_opts *o, tm_model *m, unsigned char **mask_out, tm_err *err)
{
    int rank, size;
    dist_init(NULL, NULL, &rank, &size);
    *mask_out = NULL;
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
    tm_status st = size > 1 ? dist_coordinator_start(m, &o->dist, size, be, err)
                            : dist_local_start(m, &o->dist, model_local_backend(m, s), be, err);
    *started = st == TM_OK;
    return st;
}

void cli_finish(moe_backend *be, int started, int rc, const tm_state *s)
{
    dist_finish(started ? be : NULL, rc, s);
}
