/* dtype.c: dtype names and explicit conversions. */
#include "dtype.h"

#include "cpu.h"

#include <immintrin.h>
#include <math.h>

static const char *const names[TM_DT_COUNT] = {"F32", "BF16", "F16", "F64"};
static const size_t sizes[TM_DT_COUNT] = {4, 2, 2, 8};

const char *tm_dtype_name(tm_dtype dt) { return (unsigned)dt < TM_DT_COUNT ? names[dt] : "?"; }
size_t tm_dtype_size(tm_dtype dt) { return (unsigned)dt < TM_DT_COUNT ? sizes[dt] : 0; }

int tm_dtype_parse(const char *s, tm_dtype *out)
{
    for (int i = 0; i < TM_DT_COUNT; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (tm_dtype)i;
            return 0;
        }
    return -1;
}

float tm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            u = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void tm_convert_to_f32(tm_dtype src, const void *in, float *out, size_t n)
{
    switch (src) {
    case TM_DT_F32: memcpy(out, in, n * 4); break;
    case TM_DT_BF16: {
        const uint16_t *p = in;
        for (size_t i = 0; i < n; i++) out[i] = tm_bf16_to_f32(p[i]);
        break;
    }
    case TM_DT_F16: {
        const uint16_t *p = in;
        for (size_t i = 0; i < n; i++) out[i] = tm_f16_to_f32(p[i]);
        break;
    }
    case TM_DT_F64: {
        const double *p = in;
        for (size_t i = 0; i < n; i++) out[i] = (float)p[i];
        break;
    }
    default: break;
    }
}

void tm_f32_to_bf16_array(const float *in, uint16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = tm_f32_to_bf16(in[i]);
}

/* An exponent field of all ones (Inf or NaN), counted 16 BF16 or 8 F32
 * values per AVX2 compare; the loops below finish the tails and serve the
 * other types and CPUs. */
__attribute__((target("avx2,popcnt"))) static size_t count_nonfinite_avx2(tm_dtype dt, const void *data, size_t n,
                                                                          size_t *done)
{
    size_t bad = 0, i = 0;
    if (dt == TM_DT_BF16) {
        const __m256i exp = _mm256_set1_epi16(0x7f80);
        for (; i + 16 <= n; i += 16) {
            __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)data + i));
            __m256i e = _mm256_cmpeq_epi16(_mm256_and_si256(v, exp), exp);
            bad += (size_t)__builtin_popcount((unsigned)_mm256_movemask_epi8(e)) / 2;
        }
    } else if (dt == TM_DT_F32) {
        const __m256i exp = _mm256_set1_epi32(0x7f800000);
        for (; i + 8 <= n; i += 8) {
            __m256i v = _mm256_loadu_si256((const __m256i *)((const uint32_t *)data + i));
            __m256i e = _mm256_cmpeq_epi32(_mm256_and_si256(v, exp), exp);
            bad += (size_t)__builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(e)));
        }
    }
    *done = i;
    return bad;
}

size_t tm_count_nonfinite(tm_dtype dt, const void *data, size_t n)
{
    size_t bad = 0, i = 0;
    if (cpu_get()->avx2) bad = count_nonfinite_avx2(dt, data, n, &i);
    switch (dt) {
    case TM_DT_F32: {
        const uint32_t *p = data;
        for (; i < n; i++) bad += (p[i] & 0x7f800000u) == 0x7f800000u;
        break;
    }
    case TM_DT_BF16: {
        const uint16_t *p = data;
        for (; i < n; i++) bad += (p[i] & 0x7f80u) == 0x7f80u;
        break;
    }
    case TM_DT_F16: {
        const uint16_t *p = data;
        for (; i < n; i++) bad += (p[i] & 0x7c00u) == 0x7c00u;
        break;
    }
    case TM_DT_F64: {
        const uint64_t *p = data;
        for (; i < n; i++) bad += (p[i] & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
        break;
    }
    default: break;
    }
    return bad;
}
