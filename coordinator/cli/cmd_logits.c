/* cmd_logits.c: `trustmoe logits`: one forward pass over a prompt, every
 * position's logits written as little-endian float32 [ids, vocab]. */
#include "commands.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kernels.h"
#include "placement.h"
#include "tokenizer.h"

/* ---- logits -------------------------------------------------------------- */

int cmd_logits(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: trustmoe logits (-m DIR | --synthetic PRESET) (--ids 1,2,3 | -p TEXT) -o FILE [options]\n"
               "Runs the prompt in one pass; writes every position's logits as raw little-endian\n"
               "float32, shape [number of prompt tokens, vocab], to FILE (- is stdout).\n");
        cli_usage(stdout, CLI_LOGITS);
        return 0;
    }
    cli_opts o;
    tm_err err = {{0}};
    trust_opts to;
    int selecting = 0;
    tm_status st = cli_parse_with_trust(CLI_LOGITS, &argc, argv, &o, &to, &selecting, &err);
    if (st == TM_OK && !!o.ids_arg == !!o.prompt) st = tm_errf(&err, TM_EINPUT, "give exactly one of --ids and -p TEXT");
    if (st == TM_OK && !o.out_path) st = tm_errf(&err, TM_EINPUT, "-o FILE is required");
    if (st != TM_OK) return cli_fail_early("logits", &err, st);
    int to_stdout = !strcmp(o.out_path, "-");

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
    if ((st = cli_check_model_dir(&o, &err)) != TM_OK) goto out;
    if (o.prompt) {
        tok_tokenizer *tok = NULL;
        size_t count = 0;
        if ((st = cli_load_tokenizer(&o, 1, &tok, &err)) != TM_OK) goto out;
        st = *o.prompt ? tok_encode(tok, o.prompt, strlen(o.prompt), &ids, &count, &err)
                       : tm_errf(&err, TM_EINPUT, "-p: empty prompt");
        tok_free(tok);
        if (st == TM_OK && count == 0) st = tm_errf(&err, TM_EINPUT, "-p: the prompt encodes to no tokens");
        if (st != TM_OK) goto out;
        n = (int)count;
    } else if ((st = cli_parse_ids(o.ids_arg, &ids, &n, &err)) != TM_OK) {
        goto out;
    }
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
        if ((st = cli_trust_begin(&o, &be, &m, &tr, &to, ids, n, &sel, &err)) != TM_OK) goto out;
        have_trust = 1;
    }
    double t_fwd = tm_now();
    if ((st = model_forward(&m, &s, ids, n, &be, &sel, logits, 1, &err)) != TM_OK) goto out;
    dist_times times = {.load_s = -1.0, .prefill_s = tm_now() - t_fwd, .prefill_tok = (uint64_t)n};
    dist_set_times(&be, &times);
    f = to_stdout ? stdout : fopen(o.out_path, "wb");
    if (!f) {
        st = tm_errf(&err, TM_EINPUT, "%s: cannot open for writing: %s", o.out_path, strerror(errno));
        goto out;
    }
    size_t count = (size_t)n * (size_t)m.cfg.vocab_size;
    int bad = fwrite(logits, sizeof(float), count, f) != count;
    if (to_stdout ? fflush(f) != 0 : fclose(f) != 0) bad = 1;
    f = NULL;
    if (bad) {
        st = tm_errf(&err, TM_EFAIL, "%s: write failed", to_stdout ? "stdout" : o.out_path);
        goto out;
    }
    if (o.verbosity > 0)
        fprintf(stderr, "trustmoe logits: wrote [%d, %d] float32 to %s\n", n, m.cfg.vocab_size,
                to_stdout ? "stdout" : o.out_path);
out:
    if (f && f != stdout) fclose(f);
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

