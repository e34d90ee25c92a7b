/* cmd_serve.c: `trustmoe serve`: loads the model once (workers their
 * experts), then serves the OpenAI-compatible API (coordinator/serve/) over
 * the scheduler until SIGINT or SIGTERM. */
#include "commands.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kernels.h"
#include "scheduler.h"
#include "server.h"
#include "tokenizer.h"

typedef struct {
    serve_params sp;
    sched_params sch;
    int idle_given; /* --idle-timeout on the command line */
} serve_opts;

static void serve_usage(FILE *f)
{
    fprintf(f, "usage: trustmoe serve (-m DIR | --synthetic PRESET) [--host ADDR] [--port N] [options]\n"
               "Serves an OpenAI-compatible HTTP API: POST /v1/completions, /v1/chat/completions,\n"
               "/tokenize, /detokenize; GET /v1/models, /health, /metrics, and a chat page at /.\n"
               "Requests join the running batch between steps (continuous batching).  The sampling\n"
               "options set what a request leaves out; the trust options the server's selection,\n"
               "which a request's \"trustmoe\": {\"select\", \"alpha\"} may switch.  Workers of an\n"
               "MPI job wait for requests without a deadline unless --idle-timeout is given.\n");
}

/* Takes serve's own flags out of argv (argv[0] stays), leaving the rest for
 * the shared parser. */
static tm_status take_serve_flags(int *argc, char **argv, serve_opts *so, tm_err *err)
{
    int w = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i], *v = i + 1 < *argc ? argv[i + 1] : NULL;
        int n = 0;
        tm_status st = TM_OK;
        if (!strcmp(a, "--idle-timeout")) so->idle_given = 1;
        if (!strcmp(a, "--host") || !strcmp(a, "--port") || !strcmp(a, "--port-file") || !strcmp(a, "--max-seqs") ||
            !strcmp(a, "--max-queue") || !strcmp(a, "--chunk") ||
            !strcmp(a, "--max-body") || !strcmp(a, "--served-model-name") || !strcmp(a, "--shutdown-grace") ||
            !strcmp(a, "--batch-wait")) {
            if (!v) return tm_errf(err, TM_EINPUT, "%s needs a value", a);
            n = 2;
            if (!strcmp(a, "--host")) so->sp.host = v;
            else if (!strcmp(a, "--port")) st = cli_parse_int(a, v, 0, 65535, &so->sp.port, err);
            else if (!strcmp(a, "--port-file")) so->sp.port_file = v;
            else if (!strcmp(a, "--max-seqs")) st = cli_parse_int(a, v, 1, 4096, &so->sch.max_seqs, err);
            else if (!strcmp(a, "--max-queue")) st = cli_parse_int(a, v, 0, 1 << 20, &so->sch.max_queue, err);
            else if (!strcmp(a, "--chunk")) st = cli_parse_int(a, v, 1, 1 << 20, &so->sch.chunk, err);
            else if (!strcmp(a, "--served-model-name")) so->sp.model_name = v;
            else if (!strcmp(a, "--shutdown-grace")) {
                float g = 0;
                st = cli_parse_float(a, v, 0, 3600, &g, err);
                so->sp.grace = g;
            } else if (!strcmp(a, "--batch-wait")) {
                float ms = 0;
                st = cli_parse_float(a, v, 0, 1000, &ms, err);
                so->sp.batch_wait = ms / 1e3;
            }
            else {
                int bytes = 0;
                st = cli_parse_int(a, v, 1024, 1 << 30, &bytes, err);
                so->sp.max_body = (size_t)bytes;
            }
        }
        if (st != TM_OK) return st;
        if (n) {
            i += n - 1;
            continue;
        }
        argv[w++] = argv[i];
    }
    *argc = w;
    return TM_OK;
}

/* The model id clients name: the folder's last component, or the preset. */
static const char *model_name_of(const cli_opts *o)
{
    const char *d = o->model_dir;
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/') n--;
    const char *slash = memrchr(d, '/', n);
    static char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(n - (slash ? (size_t)(slash - d) + 1 : 0)), slash ? slash + 1 : d);
    return name;
}

int cmd_serve(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        serve_usage(stdout);
        cli_usage(stdout, CLI_SERVE);
        return 0;
    }
    serve_opts so = {.sp = serve_default_params(), .sch = sched_default_params()};
    so.sch.max_seqs = 8;
    so.sch.chunk = 256;
    so.sch.max_queue = 64;
    cli_opts o;
    trust_opts to;
    int selecting = 0, rc = 0;
    tm_err err = {{0}};
    tm_status st = take_serve_flags(&argc, argv, &so, &err);
    if (st == TM_OK) st = cli_parse_with_trust(CLI_SERVE, &argc, argv, &o, &to, &selecting, &err);
    if (st == TM_OK) st = cli_apply_generation_config(&o, &err);
    if (st != TM_OK) return cli_fail("serve", &err, st);
    /* a server's workers wait for the next request as long as it runs */
    if (!so.idle_given) o.dist.idle_timeout = 1e9;
    /* mpirun passes SIGINT/SIGTERM to every rank: the coordinator stops the
     * server and shuts the workers down in order, so workers ignore them */
    int rank, size;
    dist_init(NULL, NULL, &rank, &size);
    if (rank > 0) {
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
    }
    if (cli_run_worker(&o, &rc)) return rc;

    tok_tokenizer *tok = NULL;
    tm_model m;
    sched sc;
    moe_backend be = {0};
    trust_run tr;
    unsigned char *mask = NULL;
    int have_model = 0, have_sched = 0, started = 0, have_trust = 0;
    char tok_path[4200];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", o.model_dir);
    if (!o.load.synthetic && access(tok_path, F_OK) == 0 && (st = tok_load(tok_path, &tok, &err)) != TM_OK) goto out;
    kern_set_threads(o.threads);
    if ((st = cli_load_model(&o, &m, &mask, &err)) != TM_OK) goto out;
    have_model = 1;
    so.sch.ctx = o.ctx ? o.ctx : TM_MIN(so.sch.ctx, m.cfg.max_position_embeddings);
    if (so.sch.ctx > m.cfg.max_position_embeddings) {
        st = tm_errf(&err, TM_EINPUT, "-c %d exceeds max_position_embeddings %d of the model", so.sch.ctx,
                     m.cfg.max_position_embeddings);
        goto out;
    }
    so.sch.on_step = dist_set_step;
    if ((st = sched_init(&sc, &m, &be, NULL, &so.sch, &err)) != TM_OK) goto out;
    have_sched = 1;
    if ((st = cli_start_backend(&o, &m, &sc.s, &be, &started, &err)) != TM_OK) goto out;
    /* the server's selection (a request may switch it): one context for
     * every request, --context NAME or "general" */
    if ((st = cli_trust_open(&o, &be, &m, &tr, &to, &err)) != TM_OK) goto out;
    have_trust = 1;
    tr.quiet = !selecting;
    if ((st = trust_run_begin_request(&tr, &m, NULL, 0, &err)) != TM_OK) goto out;
    so.sp.samp = o.samp;
    if (!strcmp(so.sp.model_name, "trustmoe")) so.sp.model_name = model_name_of(&o);
    serve_engine e = {.m = &m, .sc = &sc, .be = &be, .tok = tok, .trust = &tr, .exchange_metrics = dist_prometheus};
    st = serve_run(&so.sp, &e, &err);
out:
    if (st != TM_OK) rc = cli_fail("serve", &err, st);
    rc = cli_finish(&be, started, rc, NULL);
    if (have_trust) trust_run_close(&tr);
    if (have_sched) sched_free(&sc);
    if (have_model) model_free(&m);
    free(mask);
    if (tok) tok_free(tok);
    return rc;
}
