/* kernels.h: the numeric kernels.  Each optimised kernel has a naive
 * reference (*_ref) beside it; tests/test_kernels.c compares them on random
 * inputs of odd sizes.
 *
 * Matrices are tm_mat views, row-major [rows, cols], dtype F32 or BF16
 * (asserted).  Activations are always float32.
 */
#ifndef TM_KERNELS_H
#define TM_KERNELS_H

#include "dtype.h"

/* Number of threads the kernels may use (BLAS and our own loops). */
void kern_set_threads(int n);
int kern_threads(void);

/* y[w.rows] = W · x[w.cols] */
void kern_matvec(const tm_mat *w, const float *x, float *y);
void kern_matvec_ref(const tm_mat *w, const float *x, float *y);

/* Y[n, w.rows] = X[n, w.cols] · Wᵀ.  n may be 1. */
void kern_matmul(const tm_mat *w, const float *x, int n, float *y);
void kern_matmul_ref(const tm_mat *w, const float *x, int n, float *y);

/* out[n] = x / rms(x) * w   (w f32 [n]); out may alias x. */
void kern_rmsnorm(float *out, const float *x, const float *w, int n, float eps);

/* In-place softmax over n values, computed in float32 with max subtraction. */
void kern_softmax(float *x, int n);

/* g[i] = silu(g[i]) * u[i] */
void kern_silu_mul(float *g, const float *u, int n);

/* y[i] += a * x[i] */
void kern_axpy(float *y, float a, const float *x, int n);

/* out[w.cols] = row r of W, converted to float32. */
void kern_row_f32(const tm_mat *w, int64_t r, float *out);

#endif
