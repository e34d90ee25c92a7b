/* input.h: the first touch of every untrusted input.
 *
 * Files: tm_open_input opens with O_NONBLOCK, so a FIFO named as an input
 * fails at once instead of blocking in open(); fstat then admits regular
 * files only (a symlink to /dev/zero is a character device) and refuses one
 * larger than the cap of its kind.  tm_read_input reads such a file whole,
 * never past the cap.  Messages name the file and its kind.
 *
 * JSON numbers: cJSON stores every number as a double, so a file can say
 * 1e400 (infinity), NaN-like overflow, 2.5 or 3e9 where an int is wanted;
 * casting any of those to int is undefined.  tm_json_int admits only an
 * integral finite value inside [lo, hi].
 */
#ifndef TM_INPUT_H
#define TM_INPUT_H

#include "common.h"

#include <cJSON.h>
#include <stdint.h>

/* Size caps by kind of file: far above any real file of the kind, far below
 * what would take seconds or gigabytes to parse. */
#define TM_CAP_CONFIG ((size_t)1 << 20)      /* config.json, generation_config.json */
#define TM_CAP_POLICY ((size_t)4 << 20)      /* --policy                            */
#define TM_CAP_PROMPTS ((size_t)16 << 20)    /* --prompts                           */
#define TM_CAP_INDEX ((size_t)64 << 20)      /* model.safetensors.index.json        */
#define TM_CAP_TOKENIZER ((size_t)128 << 20) /* tokenizer.json                      */
#define TM_CAP_JSON ((size_t)256 << 20)      /* placement, stats and other JSON     */
#define TM_CAP_TEXT ((size_t)1 << 30)        /* corpora, -f text                    */
#define TM_CAP_NONE SIZE_MAX                 /* mapped, not read: safetensors       */

/* Open PATH read-only as input of kind `kind` (used in messages): regular
 * files of at most `cap` bytes.  *fd gets the descriptor (blocking again),
 * *size its size.  TM_EINPUT for a missing, non-regular or oversized file. */
tm_status tm_open_input(const char *path, const char *kind, size_t cap, int *fd, size_t *size, tm_err *err);

/* Read such a file whole into a NUL-terminated buffer; *len (optional)
 * excludes the NUL. */
tm_status tm_read_input(const char *path, const char *kind, size_t cap, char **out, size_t *len, tm_err *err);

/* 1 and *out when v is a JSON number holding an integer in [lo, hi];
 * 0 for anything else (not a number, fraction, out of range, infinite). */
int tm_json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out);
/* The same for an int field. */
int tm_json_i32(const cJSON *v, int32_t lo, int32_t hi, int *out);

/* A whole input file (any kind, capped at TM_CAP_TEXT) into a NUL-terminated
 * buffer; *len excludes the NUL. */
tm_status tm_read_file(const char *path, char **out, size_t *len, tm_err *err);

#endif
