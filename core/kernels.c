/* kernels.c: float32/BF16 kernels on top of OpenBLAS, with naive references. */
#include "kernels.h"

#include "common.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

static int n_threads = 1;

void kern_set_threads(int n)
{
    n_threads = n < 1 ? 1 : n;
    openblas_set_num_threads(n_threads);
}

int kern_threads(void) { return n_threads; }

static void check_mat(const tm_mat *w)
{
    TM_ASSERT_MSG(w->dtype == TM_DT_F32 || w->dtype == TM_DT_BF16, "kernel matrix must be F32 or BF16");
    TM_ASSERT(w->data != NULL && w->rows > 0 && w->cols > 0);
}

/* ---- reference kernels --------------------------------------------------- */

void kern_matvec_ref(const tm_mat *w, const float *x, float *y)
{
    check_mat(w);
    for (int64_t r = 0; r < w->rows; r++) {
        double acc = 0.0;
        for (int64_t c = 0; c < w->cols; c++) {
            float wv = w->dtype == TM_DT_F32 ? ((const float *)w->data)[r * w->cols + c]
                                             : tm_bf16_to_f32(((const uint16_t *)w->data)[r * w->cols + c]);
            acc += (double)wv * (double)x[c];
        }
        y[r] = (float)acc;
    }
}

void kern_matmul_ref(const tm_mat *w, const float *x, int n, float *y)
{
    for (int i = 0; i < n; i++) kern_matvec_ref(w, x + (size_t)i * w->cols, y + (size_t)i * w->rows);
}

/* ---- fast kernels -------------------------------------------------------- */

static float dot_bf16(const uint16_t *w, const float *x, int64_t n)
{
    float acc[8] = {0};
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        for (int k = 0; k < 8; k++) acc[k] += tm_bf16_to_f32(w[c + k]) * x[c + k];
    float s = 0.f;
    for (; c < n; c++) s += tm_bf16_to_f32(w[c]) * x[c];
    for (int k = 0; k < 8; k++) s += acc[k];
    return s;
}

void kern_matvec(const tm_mat *w, const float *x, float *y)
{
    check_mat(w);
    if (w->dtype == TM_DT_F32) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)w->rows, (int)w->cols, 1.0f, w->data, (int)w->cols, x,
                    1, 0.0f, y, 1);
        return;
    }
    const uint16_t *wd = w->data;
    for (int64_t r = 0; r < w->rows; r++) y[r] = dot_bf16(wd + r * w->cols, x, w->cols);
}

/* BF16 weights are widened a block of rows at a time into a scratch buffer
 * that grows once and is then reused. */
#define MATMUL_BLOCK_ROWS 64
static _Thread_local float *scratch;
static _Thread_local size_t scratch_len;

void kern_matmul(const tm_mat *w, const float *x, int n, float *y)
{
    check_mat(w);
    if (n == 1) {
        kern_matvec(w, x, y);
        return;
    }
    if (w->dtype == TM_DT_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, (int)w->rows, (int)w->cols, 1.0f, x,
                    (int)w->cols, w->data, (int)w->cols, 0.0f, y, (int)w->rows);
        return;
    }
    size_t need = (size_t)MATMUL_BLOCK_ROWS * (size_t)w->cols;
    if (scratch_len < need) {
        free(scratch);
        scratch = tm_malloc(need * sizeof(float));
        scratch_len = need;
    }
    const uint16_t *wd = w->data;
    for (int64_t r0 = 0; r0 < w->rows; r0 += MATMUL_BLOCK_ROWS) {
        int64_t nr = TM_MIN((int64_t)MATMUL_BLOCK_ROWS, w->rows - r0);
        tm_convert_to_f32(TM_DT_BF16, wd + r0 * w->cols, scratch, (size_t)(nr * w->cols));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, (int)nr, (int)w->cols, 1.0f, x, (int)w->cols,
                    scratch, (int)w->cols, 0.0f, y + r0, (int)w->rows);
    }
}

/* ---- elementwise --------------------------------------------------------- */

void kern_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    float ss = 0.f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * inv);
}

void kern_softmax(float *x, int n)
{
    float m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    float s = 0.f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    float inv = 1.0f / s;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void kern_silu_mul(float *g, const float *u, int n)
{
    for (int i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void kern_axpy(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void kern_row_f32(const tm_mat *w, int64_t r, float *out)
{
    TM_ASSERT(r >= 0 && r < w->rows);
    size_t sz = tm_dtype_size(w->dtype);
    tm_convert_to_f32(w->dtype, (const char *)w->data + (size_t)r * (size_t)w->cols * sz, out, (size_t)w->cols);
}
