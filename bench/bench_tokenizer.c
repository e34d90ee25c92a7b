/* bench_tokenizer.c: encode throughput of the tokenizer on a folder of texts.
 *
 *   build/bench/bench_tokenizer TOKENIZER_DIR CORPUS_DIR [RUNS]
 *
 * Each run loads a fresh tokenizer (so the pre-token cache starts empty, like
 * a new process) and encodes every file of CORPUS_DIR (dot files skipped) as
 * one call each, single-threaded; only the encode calls are timed.  Prints one
 * line per run on stderr, then on stdout:
 *   c  MEDIAN_MB_S  BYTES  IDS  LOAD_MS
 * where MB is 10^6 bytes of input text and LOAD_MS is the median load time.
 * bench/tokenizer.sh runs it next to the Hugging Face JS tokenizer.
 */
#include "tokenizer.h"
#include "input.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *text;
    size_t len;
} bench_doc;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_tokenizer TOKENIZER_DIR CORPUS_DIR [RUNS]\n");
        return 2;
    }
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    if (runs < 1) runs = 1;
    char path[4096];
    tm_err err = {{0}};

    DIR *d = opendir(argv[2]);
    if (!d) {
        fprintf(stderr, "bench_tokenizer: %s: cannot open\n", argv[2]);
        return 2;
    }
    size_t n_names = 0, cap = 1024;
    char **names = tm_malloc(cap * sizeof *names);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        if (n_names == cap) names = tm_realloc(names, (cap *= 2) * sizeof *names);
        names[n_names++] = tm_strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n_names, sizeof *names, cmp_str);
    bench_doc *docs = tm_calloc(n_names, sizeof *docs);
    size_t bytes = 0;
    for (size_t i = 0; i < n_names; i++) {
        snprintf(path, sizeof path, "%s/%s", argv[2], names[i]);
        if (tm_read_file(path, &docs[i].text, &docs[i].len, &err) != TM_OK) {
            fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
            return 2;
        }
        bytes += docs[i].len;
    }

    snprintf(path, sizeof path, "%s/tokenizer.json", argv[1]);
    double *mbs = tm_malloc((size_t)runs * sizeof *mbs), *load_ms = tm_malloc((size_t)runs * sizeof *load_ms);
    size_t n_ids = 0;
    for (int r = 0; r < runs; r++) {
        tok_tokenizer *t = NULL;
        double t0 = tm_now();
        if (tok_load(path, &t, &err) != TM_OK) {
            fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
            return 2;
        }
        load_ms[r] = (tm_now() - t0) * 1e3;
        n_ids = 0;
        t0 = tm_now();
        for (size_t i = 0; i < n_names; i++) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (tok_encode(t, docs[i].text, docs[i].len, &ids, &n, &err) != TM_OK) {
                fprintf(stderr, "bench_tokenizer: %s: %s\n", names[i], err.msg);
                return 2;
            }
            n_ids += n;
            free(ids);
        }
        double dt = tm_now() - t0;
        mbs[r] = bytes / 1e6 / dt;
        fprintf(stderr, "c  run %d: %.3f s, %.2f MB/s, %zu ids (load %.0f ms)\n", r, dt, mbs[r], n_ids, load_ms[r]);
        tok_free(t);
    }
    qsort(mbs, (size_t)runs, sizeof *mbs, cmp_double);
    qsort(load_ms, (size_t)runs, sizeof *load_ms, cmp_double);
    printf("c %.2f %zu %zu %.0f\n", mbs[runs / 2], bytes, n_ids, load_ms[runs / 2]);
    for (size_t i = 0; i < n_names; i++) free(docs[i].text), free(names[i]);
    free(docs);
    free(names);
    free(mbs);
    free(load_ms);
    return 0;
}
