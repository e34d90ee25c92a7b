/* cli.c: option parsing shared by the commands, and the logits and inspect
 * commands. */
#include "cli.h"

#include "commands.h"
#include "kernels.h"
#include "placement.h"

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
    o->max_batch = 256;
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
        } else if (!strcmp(a, "--max-batch")) {
            NEED();
            st = cli_parse_int(a, v, 1, 1 << 16, &o->max_batch, err);
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
    *rc = dist_worker_main(o->model_dir, &o->dist, &o->load);
    return 1;
}

tm_status cli_load_model(cli_opts *o, tm_model *m, unsigned char **mask_out, tm_err *err)
{
    int rank, size;
    dist_init(NULL, NULL, &rank, &size);
    *mask_out = NULL;
    if (size > 1) {
        /* the workers hold the experts; rank 0 maps none of them */
        if (!(*mask_out = dist_no_experts_mask(o->model_dir, &o->load, err))) return TM_EINPUT;
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

int cli_finish(moe_backend *be, int started, int rc, const tm_state *s)
{
    return dist_finish(started ? be : NULL, rc, s);
}

/* ---- logits -------------------------------------------------------------- */

int cmd_logits(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: trustmoe logits -m DIR --ids 1,2,3 -o FILE [trust selection options]\n"
               "Runs the prompt in one pass; writes every position's logits as raw little-endian\n"
               "float32, shape [number of ids, vocab].\n");
        cli_usage_common(stdout);
        trust_opts_usage(stdout);
        return 0;
    }
    cli_opts o;
    tm_err err = {{0}};
    trust_opts to;
    int selecting = 0;
    tm_status st = cli_parse_with_trust(&argc, argv, &o, &to, &selecting, &err);
    if (st == TM_OK && !o.ids_arg) st = tm_errf(&err, TM_EINPUT, "--ids is required");
    if (st == TM_OK && !o.out_path) st = tm_errf(&err, TM_EINPUT, "-o FILE is required");
    if (st != TM_OK) return cli_fail("logits", &err, st);

    int32_t *ids = NULL;
    int n = 0, rc = 0, started = 0;
    float *logits = NULL;
    unsigned char *mask = NULL;
    tm_model m;
    tm_state s;
    moe_backend be = {0};
    int have_model = 0, have_state = 0, have_trust = 0;
    trust_run tr;
    tm_selector sel = {NULL, NULL};
    FILE *f = NULL;
    if (cli_run_worker(&o, &rc)) return rc;
    if ((st = cli_parse_ids(o.ids_arg, &ids, &n, &err)) != TM_OK) goto out;
    kern_set_threads(o.threads);
    if ((st = cli_load_model(&o, &m, &mask, &err)) != TM_OK) goto out;
    have_model = 1;
    if (n > m.cfg.max_position_embeddings) {
        st = tm_errf(&err, TM_EINPUT, "prompt of %d tokens is longer than the context (max_position_embeddings %d)",
                     n, m.cfg.max_position_embeddings);
        goto out;
    }
    if ((st = state_init(&s, &m, o.ctx ? o.ctx : n, n, &err)) != TM_OK) goto out;
    have_state = 1;
    logits = tm_malloc(sizeof(float) * (size_t)n * (size_t)m.cfg.vocab_size);
    if ((st = cli_start_backend(&o, &m, &s, &be, &started, &err)) != TM_OK) goto out;
    if (selecting) {
        if ((st = cli_trust_begin(&tr, &to, &m, ids, n, &sel, &err)) != TM_OK) goto out;
        have_trust = 1;
    }
    if ((st = model_forward(&m, &s, ids, n, &be, &sel, logits, 1, &err)) != TM_OK) goto out;
    f = fopen(o.out_path, "wb");
    if (!f) {
        st = tm_errf(&err, TM_EINPUT, "%s: cannot open for writing: %s", o.out_path, strerror(errno));
        goto out;
    }
    size_t count = (size_t)n * (size_t)m.cfg.vocab_size;
    if (fwrite(logits, sizeof(float), count, f) != count || fclose(f) != 0) {
        f = NULL;
        st = tm_errf(&err, TM_EFAIL, "%s: write failed", o.out_path);
        goto out;
    }
    f = NULL;
    fprintf(stderr, "trustmoe logits: wrote [%d, %d] float32 to %s\n", n, m.cfg.vocab_size, o.out_path);
out:
    if (f) fclose(f);
    if (st != TM_OK) rc = cli_fail("logits", &err, st);
    rc = cli_finish(&be, started, rc, have_state ? &s : NULL);
    if (have_trust) trust_run_close(&tr);
    free(logits);
    free(ids);
    if (have_state) state_free(&s);
    if (have_model) model_free(&m);
    free(mask);
    return rc;
}

/* ---- inspect ------------------------------------------------------------- */

int cmd_inspect(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: trustmoe inspect -m DIR [--workers N [--placement P] [--replicas R]]\n"
               "Prints the configuration used, tensors, dtypes, bytes, resident memory and ignored tensors;\n"
               "with --workers, the placement of every (layer, expert) on N worker ranks and the weight\n"
               "bytes per rank, without loading weights or starting MPI.\n");
        cli_usage_common(stdout);
        return 0;
    }
    cli_opts o;
    tm_err err = {{0}};
    tm_status st = cli_parse_opts(argc, argv, &o, &err);
    if (st != TM_OK) return cli_fail("inspect", &err, st);
    kern_set_threads(o.threads);
    if (o.dist.workers > 0) {
        /* the placement only: config and tensor index, no weights mapped in */
        unsigned char *mask = dist_no_experts_mask(o.model_dir, &o.load, &err);
        if (!mask) return cli_fail("inspect", &err, TM_EINPUT);
        o.load.expert_mask = mask;
        o.load.load_dense = 0;
        tm_model m;
        st = model_load(&m, o.model_dir, &o.load, &err);
        free(mask);
        if (st != TM_OK) return cli_fail("inspect", &err, st);
        int rc = placement_print(stdout, &m.cfg, m.weight_dtype, o.dist.placement, o.dist.replicas, o.dist.workers);
        model_free(&m);
        return rc;
    }
    size_t rss0 = tm_rss_bytes();
    tm_model m;
    if ((st = model_load(&m, o.model_dir, &o.load, &err)) != TM_OK) return cli_fail("inspect", &err, st);
    size_t rss = tm_rss_bytes();
    printf("model: %s\n", m.dir);
    cfg_print(&m.cfg, stdout);
    printf("files: %d\ntensors: %d in files, %d used, %d ignored\n", m.st.n_files, m.st.n_tensors, m.n_used,
           m.n_ignored);
    printf("stored dtypes of used tensors:");
    for (int d = 0; d < TM_DT_COUNT; d++)
        if (m.dtype_count[d]) printf(" %s=%d", tm_dtype_name((tm_dtype)d), m.dtype_count[d]);
    printf("\nweight dtype: %s (matrices; norms F32)\n", tm_dtype_name(m.weight_dtype));
    printf("weight bytes: %zu (%.2f MiB), experts %zu\n", m.weight_bytes, m.weight_bytes / 1048576.0, m.expert_bytes);
    printf("resident after load: %zu bytes (%.2f MiB, %.3fx weight bytes; %.2f MiB before load)\n", rss,
           rss / 1048576.0, m.weight_bytes ? (double)rss / (double)m.weight_bytes : 0.0, rss0 / 1048576.0);
    printf("model identity: %016llx\n", (unsigned long long)m.identity);
    for (int i = 0; i < m.n_ignored; i++) printf("ignored: %s: %s\n", m.ignored[i].name, m.ignored[i].reason);
    model_free(&m);
    return 0;
}
