/* input.c: opening input files and reading JSON integers (see input.h). */
#include "input.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- files --------------------------------------------------------------- */

static const char *file_kind_name(mode_t m)
{
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

tm_status tm_open_input(const char *path, const char *kind, size_t cap, int *fd, size_t *size, tm_err *err)
{
    *fd = -1;
    *size = 0;
    if (!path || !*path) return tm_errf(err, TM_EINPUT, "%s: empty file name", kind);
    /* O_NONBLOCK: a FIFO with no writer would otherwise block open() */
    int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (f < 0) return tm_errf(err, TM_EINPUT, "%s: cannot open %s: %s", path, kind, strerror(errno));
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        tm_status st = tm_errf(err, TM_EINPUT, "%s: cannot stat %s: %s", path, kind, strerror(errno));
        close(f);
        return st;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        return tm_errf(err, TM_EINPUT, "%s: %s is %s, not a regular file", path, kind, file_kind_name(sb.st_mode));
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > (uint64_t)cap) {
        close(f);
        return tm_errf(err, TM_EINPUT, "%s: %s of %lld bytes exceeds the limit of %zu bytes", path, kind,
                       (long long)sb.st_size, cap);
    }
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0) fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    *fd = f;
    *size = (size_t)sb.st_size;
    return TM_OK;
}

tm_status tm_read_input(const char *path, const char *kind, size_t cap, char **out, size_t *len, tm_err *err)
{
    *out = NULL;
    if (len) *len = 0;
    int fd;
    size_t size;
    tm_status st = tm_open_input(path, kind, cap, &fd, &size, err);
    if (st != TM_OK) return st;
    /* the file may grow between fstat and read: read at most cap + 1 bytes,
     * one more than allowed, to tell */
    size_t bufcap = size + 1 < ((size_t)1 << 16) ? ((size_t)1 << 16) : size + 1, n = 0;
    char *buf = tm_malloc(bufcap);
    for (;;) {
        if (n + 1 >= bufcap) {
            if (bufcap > cap + 1) break;
            bufcap = bufcap > cap / 2 ? cap + 2 : bufcap * 2;
            buf = tm_realloc(buf, bufcap);
        }
        ssize_t got = read(fd, buf + n, bufcap - n - 1);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            st = tm_errf(err, TM_EINPUT, "%s: read error in %s: %s", path, kind, strerror(errno));
            break;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    close(fd);
    if (st == TM_OK && n > cap)
        st = tm_errf(err, TM_EINPUT, "%s: %s grew past the limit of %zu bytes while read", path, kind, cap);
    if (st != TM_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return TM_OK;
}

/* ---- JSON integers --------------------------------------------------------- */

int tm_json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    /* the comparisons are false for NaN; 2^63 bounds keep the cast defined */
    if (!(d >= (double)lo && d <= (double)hi) || !(fabs(d) < 9.2e18) || d != floor(d)) return 0;
    int64_t i = (int64_t)d;
    if (i < lo || i > hi) return 0;
    *out = i;
    return 1;
}

int tm_json_i32(const cJSON *v, int32_t lo, int32_t hi, int *out)
{
    int64_t i;
    if (!tm_json_int(v, lo, hi, &i)) return 0;
    *out = (int)i;
    return 1;
}

tm_status tm_read_file(const char *path, char **out, size_t *len, tm_err *err)
{
    return tm_read_input(path, "input file", TM_CAP_TEXT, out, len, err);
}
