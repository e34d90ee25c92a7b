/* common.h: status codes, error strings and the assert macro shared by all
 * of trustmoe.
 *
 * core/ owns what every role needs and nothing role-specific: dtypes and
 * their conversions, safetensors and config.json loading, the kernels and
 * their thread pool, the weight arena, CPU detection and one expert's SwiGLU.
 * It calls only the C library, OpenBLAS, cJSON and the OS; every other
 * folder may call it.
 *
 * Two tiers of errors:
 *  - recoverable failures (bad file, bad flag, bad message) return a
 *    tm_status and fill a tm_err whose text names the file, tensor, rank or
 *    field at fault;
 *  - broken invariants go to TM_ASSERT, which prints file:line and aborts the
 *    whole job (MPI_Abort when MPI is up).
 */
#ifndef TM_COMMON_H
#define TM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    TM_OK = 0,
    TM_EFAIL = 1,  /* runtime failure: I/O, peer died, timeout           */
    TM_EINPUT = 2, /* bad input: file, flag, config, message from a user */
} tm_status;

/* Process exit codes follow the status values: 0 ok, 1 runtime, 2 bad input. */

typedef struct {
    char msg[1024];
} tm_err;

/* Set err->msg printf-style and return `status` (so callers can write
 * `return tm_errf(err, TM_EINPUT, "...")`).  err may be NULL. */
tm_status tm_errf(tm_err *err, tm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Abort the job after printing the message with its location. */
_Noreturn void tm_assert_fail(const char *file, int line, const char *expr, const char *msg);

/* Called by TM_ASSERT; main sets it to MPI_Abort when MPI is initialised. */
extern void (*tm_abort_hook)(int code);

#define TM_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) tm_assert_fail(__FILE__, __LINE__, #cond, NULL);                              \
    } while (0)
#define TM_ASSERT_MSG(cond, msg)                                                                   \
    do {                                                                                           \
        if (!(cond)) tm_assert_fail(__FILE__, __LINE__, #cond, (msg));                             \
    } while (0)

/* Allocation that never returns NULL: out of memory is fatal. */
void *tm_malloc(size_t n);
void *tm_calloc(size_t n, size_t size);
void *tm_realloc(void *p, size_t n);
char *tm_strdup(const char *s);

/* Monotonic wall clock in seconds. */
double tm_now(void);

/* Resident set size of this process in bytes (from /proc/self/statm). */
size_t tm_rss_bytes(void);


#define TM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TM_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
