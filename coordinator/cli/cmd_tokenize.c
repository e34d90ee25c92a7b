/* cmd_tokenize.c: the tokenize and detokenize commands.
 *
 *   trustmoe tokenize   -m DIR (-p TEXT | -f FILE) [--json]
 *   trustmoe detokenize -m DIR --ids 1,2,3
 *
 * DIR is a model folder holding tokenizer.json.  Ids go to stdout comma
 * separated (or as a JSON array); detokenized text goes to stdout exactly,
 * with no newline added.  Bad flags, files or ids exit 2 with one line on
 * stderr.
 */
#include "cli.h"
#include "input.h"
#include "commands.h"

#include "common.h"
#include "tokenizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model_dir;
    const char *prompt;
    const char *file;
    const char *ids;
    int json;
    int help;
} tok_cli_opts;

static void tok_usage(FILE *f, const char *cmd)
{
    if (!strcmp(cmd, "tokenize"))
        fprintf(f, "usage: trustmoe tokenize -m DIR (-p TEXT | -f FILE) [--json]\n"
                   "  -m DIR     model folder with tokenizer.json\n"
                   "  -p TEXT    text to encode (UTF-8; invalid UTF-8 is an error)\n"
                   "  -f FILE    encode the contents of FILE instead (- reads stdin)\n"
                   "  --json     print a JSON array instead of comma-separated ids\n");
    else
        fprintf(f, "usage: trustmoe detokenize -m DIR --ids 1,2,3\n"
                   "  -m DIR     model folder with tokenizer.json\n"
                   "  --ids LIST comma-separated token ids; the text is printed as is, no newline added\n");
}

static tm_status tok_parse_args(int argc, char **argv, int detok, tok_cli_opts *o, tm_err *err)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            o->help = 1;
            return TM_OK;
        }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) slot = &o->model_dir;
        else if (!detok && (!strcmp(a, "-p") || !strcmp(a, "--prompt"))) slot = &o->prompt;
        else if (!detok && (!strcmp(a, "-f") || !strcmp(a, "--file"))) slot = &o->file;
        else if (detok && !strcmp(a, "--ids")) slot = &o->ids;
        else if (!detok && !strcmp(a, "--json")) {
            o->json = 1;
            continue;
        } else
            return tm_errf(err, TM_EINPUT, "unknown option '%s' (see --help)", a);
        if (i + 1 >= argc) return tm_errf(err, TM_EINPUT, "%s needs a value", a);
        *slot = argv[++i];
    }
    if (!o->model_dir) return tm_errf(err, TM_EINPUT, "-m DIR is required");
    if (detok && !o->ids) return tm_errf(err, TM_EINPUT, "--ids is required");
    if (!detok && !!o->prompt == !!o->file) return tm_errf(err, TM_EINPUT, "give exactly one of -p TEXT and -f FILE");
    return TM_OK;
}

static tm_status tok_load_dir(const char *dir, tok_tokenizer **t, tm_err *err)
{
    size_t n = strlen(dir) + sizeof "/tokenizer.json";
    char *path = tm_malloc(n);
    snprintf(path, n, "%s/tokenizer.json", dir);
    tm_status st = tok_load(path, t, err);
    free(path);
    return st;
}

/* Comma-separated ids, each in [0, vocab); *ids is malloc'd.  An empty list is
 * allowed and decodes to empty text. */
static tm_status tok_parse_ids(const char *s, size_t vocab, int32_t **ids, size_t *n, tm_err *err)
{
    size_t cap = 16, k = 0;
    int32_t *v = tm_malloc(cap * sizeof *v);
    tm_status st = TM_OK;
    const char *p = s;
    while (*p == ' ') p++;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        while (*end == ' ') end++;
        if (end == p || errno || (*end && *end != ',')) {
            st = tm_errf(err, TM_EINPUT, "--ids: '%s' is not a comma-separated list of integers", s);
            goto fail;
        }
        if (x < 0 || (size_t)x >= vocab) {
            st = tm_errf(err, TM_EINPUT, "--ids: id %ld is out of range 0..%zu", x, vocab - 1);
            goto fail;
        }
        if (k == cap) v = tm_realloc(v, (cap *= 2) * sizeof *v);
        v[k++] = (int32_t)x;
        p = *end ? end + 1 : end;
        if (*end && !*p) {
            st = tm_errf(err, TM_EINPUT, "--ids: '%s' ends with a comma", s);
            goto fail;
        }
    }
    *ids = v;
    *n = k;
    v = NULL;
fail:
    free(v);
    return st;
}

int cmd_tokenize(int argc, char **argv)
{
    tok_cli_opts o;
    tm_err err = {{0}};
    tok_tokenizer *t = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t len = 0, n = 0;
    int rc = 0;
    tm_status st = tok_parse_args(argc, argv, 0, &o, &err);
    if (st != TM_OK) return cli_fail("tokenize", &err, st);
    if (o.help) {
        tok_usage(stdout, "tokenize");
        return 0;
    }
    if (o.file) {
        st = cli_read_text(o.file, "text", TM_CAP_TEXT, &text, &len, &err);
        if (st != TM_OK) goto fail;
    } else {
        text = tm_strdup(o.prompt);
        len = strlen(text);
    }
    st = tok_load_dir(o.model_dir, &t, &err);
    if (st != TM_OK) goto fail;
    st = tok_encode(t, text, len, &ids, &n, &err);
    if (st != TM_OK) {
        tm_err inner = err;
        tm_errf(&err, st, "%s: %.900s", o.file ? o.file : "-p", inner.msg);
        goto fail;
    }
    fputs(o.json ? "[" : "", stdout);
    for (size_t i = 0; i < n; i++) printf(i ? (o.json ? ", %d" : ",%d") : "%d", (int)ids[i]);
    fputs(o.json ? "]\n" : "\n", stdout);
    if (fflush(stdout) != 0) st = tm_errf(&err, TM_EFAIL, "writing stdout failed");
fail:
    if (st != TM_OK) rc = cli_fail("tokenize", &err, st);
    free(ids);
    free(text);
    tok_free(t);
    return rc;
}

int cmd_detokenize(int argc, char **argv)
{
    tok_cli_opts o;
    tm_err err = {{0}};
    tok_tokenizer *t = NULL;
    int32_t *ids = NULL;
    char *text = NULL;
    size_t n = 0, len = 0;
    int rc = 0;
    tm_status st = tok_parse_args(argc, argv, 1, &o, &err);
    if (st != TM_OK) return cli_fail("detokenize", &err, st);
    if (o.help) {
        tok_usage(stdout, "detokenize");
        return 0;
    }
    st = tok_load_dir(o.model_dir, &t, &err);
    if (st != TM_OK) goto fail;
    st = tok_parse_ids(o.ids, tok_vocab_size(t), &ids, &n, &err);
    if (st != TM_OK) goto fail;
    text = tok_decode(t, ids, n, &len);
    if (fwrite(text, 1, len, stdout) != len || fflush(stdout) != 0)
        st = tm_errf(&err, TM_EFAIL, "writing stdout failed");
fail:
    if (st != TM_OK) rc = cli_fail("detokenize", &err, st);
    free(text);
    free(ids);
    tok_free(t);
    return rc;
}
