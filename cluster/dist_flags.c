/* dist_flags.c: the MPI flags every engine command takes (dist_params). */
#include "dist.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- flags ----------------------------------------------------------------- */

dist_params dist_default_params(void)
{
    dist_params p = {
        .placement = "contiguous",
        .replicas = 1,
        .wire_dtype = TM_DT_F32,
        .checksum = 1,
        .comm_timeout = 60.0,
        .stats_json = NULL,
        .idle_timeout = 600.0,
        .workers = 0,
        .coordinator_share = 0.0,
    };
    return p;
}

static int parse_seconds(const char *flag, const char *v, double *out, tm_err *err)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x > 0 && x <= 1e6)) {
        tm_errf(err, TM_EINPUT, "%s: '%s' is not a number of seconds in (0, 1e6]", flag, v);
        return -1;
    }
    *out = x;
    return 1;
}

static int parse_count(const char *flag, const char *v, int lo, int hi, int *out, tm_err *err)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        tm_errf(err, TM_EINPUT, "%s: '%s' is not an integer in %d..%d", flag, v, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 1;
}

int dist_parse_flag(dist_params *p, int argc, char **argv, int *i, tm_err *err)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--wire-checksum") || !strcmp(a, "--no-wire-checksum")) {
        p->checksum = a[2] == 'w';
        return 1;
    }
    static const char *const valued[] = {"--placement", "--replicas", "--wire-dtype", "--comm-timeout",
                                         "--idle-timeout", "--stats-json", "--workers", "--coordinator-share",
                                         "--unavailable"};
    size_t which = TM_ARRAY_LEN(valued);
    for (size_t j = 0; j < TM_ARRAY_LEN(valued); j++)
        if (!strcmp(a, valued[j])) which = j;
    if (which == TM_ARRAY_LEN(valued)) return 0;
    if (*i + 1 >= argc) {
        tm_errf(err, TM_EINPUT, "%s needs a value", a);
        return -1;
    }
    const char *v = argv[++*i];
    switch (which) {
    case 0:
        if (!*v) {
            tm_errf(err, TM_EINPUT, "--placement: empty value");
            return -1;
        }
        p->placement = v;
        return 1;
    case 1: return parse_count(a, v, 1, 1024, &p->replicas, err);
    case 2:
        if (!strcmp(v, "f32")) p->wire_dtype = TM_DT_F32;
        else if (!strcmp(v, "bf16")) p->wire_dtype = TM_DT_BF16;
        else {
            tm_errf(err, TM_EINPUT, "--wire-dtype: '%s' is not f32 or bf16", v);
            return -1;
        }
        return 1;
    case 3: return parse_seconds(a, v, &p->comm_timeout, err);
    case 4: return parse_seconds(a, v, &p->idle_timeout, err);
    case 5: p->stats_json = v; return 1;
    case 7: {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !(x >= 0 && x <= 1)) {
            tm_errf(err, TM_EINPUT, "--coordinator-share: '%s' is not a fraction in [0, 1]", v);
            return -1;
        }
        p->coordinator_share = x;
        return 1;
    }
    case 8: { /* a list of ranks; checked against the job's size once it is known */
        const char *q = v;
        for (;;) {
            char *end;
            errno = 0;
            long r = strtol(q, &end, 10);
            if (errno || end == q || r < 1 || r > (1 << 20) || (*end && *end != ',')) {
                tm_errf(err, TM_EINPUT, "--unavailable: '%s' is not a list of worker ranks (1, 2, ...)", v);
                return -1;
            }
            if (!*end) break;
            q = end + 1;
        }
        p->unavailable = v;
        return 1;
    }
    default: return parse_count(a, v, 1, 1 << 20, &p->workers, err);
    }
}
