/* common.c: errors, asserts, allocation and small OS helpers. */
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void (*tm_abort_hook)(int code) = NULL;

tm_status tm_errf(tm_err *err, tm_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}

_Noreturn void tm_assert_fail(const char *file, int line, const char *expr, const char *msg)
{
    fprintf(stderr, "trustmoe: %s:%d: assertion failed: %s%s%s\n", file, line, expr,
            msg ? ": " : "", msg ? msg : "");
    fflush(stderr);
    if (tm_abort_hook) tm_abort_hook(3);
    abort();
}

static _Noreturn void oom(size_t n)
{
    fprintf(stderr, "trustmoe: out of memory allocating %zu bytes\n", n);
    if (tm_abort_hook) tm_abort_hook(1);
    exit(1);
}

void *tm_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *tm_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

void *tm_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *tm_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = tm_malloc(n);
    memcpy(d, s, n);
    return d;
}

double tm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t tm_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    if (n != 2) return 0;
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}
