/* dtype.h: the element types trustmoe reads, computes in and sends.
 *
 * Every tensor read from disk is converted explicitly from its stored dtype to
 * the dtype the code computes in (float32), or kept as BF16 where a kernel
 * takes BF16 directly.  Nothing is promoted silently: kernels assert the
 * dtype of every matrix they are given.
 *
 * Wire/on-disk encodings (little-endian):
 *   F32  IEEE-754 binary32
 *   BF16 upper 16 bits of binary32 (rounded to nearest even when produced)
 *   F16  IEEE-754 binary16
 *   F64  IEEE-754 binary64
 */
#ifndef TM_DTYPE_H
#define TM_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    TM_DT_F32 = 0,
    TM_DT_BF16 = 1,
    TM_DT_F16 = 2,
    TM_DT_F64 = 3,
    TM_DT_COUNT
} tm_dtype;

const char *tm_dtype_name(tm_dtype dt); /* "F32", "BF16", ... (safetensors spelling) */
size_t tm_dtype_size(tm_dtype dt);
/* Parse a safetensors dtype string; returns 0 on success, -1 if unknown. */
int tm_dtype_parse(const char *s, tm_dtype *out);

static inline float tm_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even; NaN stays NaN (quiet). */
static inline uint16_t tm_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float tm_f16_to_f32(uint16_t h);

/* out[i] = (float)in[i] for n elements of dtype src (any dtype). */
void tm_convert_to_f32(tm_dtype src, const void *in, float *out, size_t n);
void tm_f32_to_bf16_array(const float *in, uint16_t *out, size_t n);

/* Count of elements that are NaN or +-Inf in n elements of dtype dt. */
size_t tm_count_nonfinite(tm_dtype dt, const void *data, size_t n);

/* A typed, row-major 2-D view: [rows, cols]; data is F32 or BF16 for kernels. */
typedef struct {
    tm_dtype dtype;
    const void *data;
    int64_t rows, cols;
} tm_mat;

#endif
