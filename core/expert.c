/* expert.c: SwiGLU expert forward. */
#include "expert.h"

#include "common.h"
#include "kernels.h"

void expert_forward(const tm_expert *e, const float *x, int n, float *y, float *scratch)
{
    int64_t inter = e->gate.rows, hidden = e->gate.cols;
    TM_ASSERT(e->up.rows == inter && e->up.cols == hidden);
    TM_ASSERT(e->down.rows == hidden && e->down.cols == inter);
    float *g = scratch;                      /* [n, inter] */
    float *u = scratch + (size_t)n * inter;  /* [n, inter] */
    kern_matmul2(&e->gate, &e->up, x, n, g, u); /* one pass over the pool at n == 1 */
    kern_silu_mul(g, u, (int)(n * inter));
    kern_matmul(&e->down, g, n, y);
}
