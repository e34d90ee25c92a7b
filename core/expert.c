/* expert.c: SwiGLU expert forward, one expert at a time and grouped over a
 * layer's batch (expert.h says how the grouped path splits the work). */
#include "expert.h"

#include "common.h"
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

double expert_one_token(const tm_expert *experts, const float *x, const int32_t *ids, const float *w, int k,
                        float *out, float *scratch)
{
    tm_mat gu[2 * KERN_MANY_MAX], dn[KERN_MANY_MAX];
    const float *xs[2 * KERN_MANY_MAX];
    float *ys[2 * KERN_MANY_MAX];
    int j_of[KERN_MANY_MAX], n = 0;
    TM_ASSERT(k <= KERN_MANY_MAX);
    for (int j = 0; j < k; j++) /* the slots to run, in ascending expert id */
        if (ids[j] >= 0) {
            int i = n++;
            while (i > 0 && ids[j_of[i - 1]] > ids[j]) {
                j_of[i] = j_of[i - 1];
                i--;
            }
            j_of[i] = j;
        }
    if (n == 0) return 0.0;
    const int64_t inter = experts[ids[j_of[0]]].gate.rows, H = experts[ids[j_of[0]]].gate.cols;
    float *g = scratch;                   /* [n, inter] */
    float *u = g + (size_t)n * inter;     /* [n, inter] */
    float *y = u + (size_t)n * inter;     /* [n, H] */
    double bytes = 0;
    for (int i = 0; i < n; i++) {
        const tm_expert *ex = &experts[ids[j_of[i]]];
        TM_ASSERT_MSG(ex->gate.data, "expert_one_token: expert not loaded");
        gu[2 * i] = ex->gate;
        gu[2 * i + 1] = ex->up;
        dn[i] = ex->down;
        xs[2 * i] = xs[2 * i + 1] = x;
        ys[2 * i] = g + (size_t)i * inter;
        ys[2 * i + 1] = u + (size_t)i * inter;
        if (i == 0 || ids[j_of[i - 1]] != ids[j_of[i]]) bytes += expert_bytes(ex);
    }
    kern_matvec_many(2 * n, gu, xs, ys);
    kern_silu_mul(g, u, (int)(n * inter));
    for (int i = 0; i < n; i++) {
        xs[i] = g + (size_t)i * inter;
        ys[i] = y + (size_t)i * H;
    }
    kern_matvec_many(n, dn, xs, ys);
    for (int i = 0; i < n; i++) kern_axpy(out, w[j_of[i]], y + (size_t)i * H, (int)H);
    return bytes;
}

double expert_bytes(const tm_expert *e)
{
    const tm_mat *m[3] = {&e->gate, &e->up, &e->down};
    double b = 0;
    for (int i = 0; i < 3; i++) b += (double)m[i]->rows * (double)m[i]->cols * (double)tm_dtype_size(m[i]->dtype);
    return b;
}

/* ---- grouped ------------------------------------------------------------------ */

/* *buf holds at least need bf16 values (grown to twice the old size or
 * more; its contents are not kept). */
static void packed_reserve(uint16_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return;
    free(*buf);
    *cap = TM_MAX(need, 2 * *cap);
    *buf = tm_malloc(*cap * sizeof(uint16_t));
}

/* Scratch for cap pairs.  Every page is written once here, so that a first
 * prefill does not stop for thousands of page faults in its first layers;
 * the state sizes it at load for its largest call. */
static void group_alloc(expert_group *g, int cap)
{
    free(g->pair);
    free(g->xrow);
    free(g->hrow);
    free(g->a);
    free(g->u);
    free(g->h);
    free(g->y);
    g->cap = cap;
    size_t c = (size_t)TM_MAX(cap, 1);
    g->pair = tm_malloc(c * sizeof(int));
    g->xrow = tm_malloc(c * sizeof(*g->xrow));
    g->hrow = tm_malloc(c * sizeof(*g->hrow));
    g->a = tm_malloc(c * (size_t)g->inter * sizeof(float));
    g->u = tm_malloc(c * (size_t)g->inter * sizeof(float));
    g->h = tm_malloc(c * (size_t)g->inter * sizeof(float));
    g->y = tm_malloc(c * (size_t)g->hidden * sizeof(float));
    memset(g->a, 0, c * (size_t)g->inter * sizeof(float));
    memset(g->u, 0, c * (size_t)g->inter * sizeof(float));
    memset(g->h, 0, c * (size_t)g->inter * sizeof(float));
    memset(g->y, 0, c * (size_t)g->hidden * sizeof(float));
    /* the AMX passes' packed rows, for as many 16-pair blocks as cap pairs
     * can take (each active expert rounds its pairs up to a block), where
     * the CPU would take them for BF16 experts */
    tm_mat probe_gu = {TM_DT_BF16, NULL, g->inter, g->hidden}, probe_dn = {TM_DT_BF16, NULL, g->hidden, g->inter};
    if (kern_amx_usable(&probe_gu) && kern_amx_usable(&probe_dn)) {
        int blocks = TM_MIN(g->n_experts, cap) + (cap + 15) / 16;
        packed_reserve(&g->xb, &g->xb_cap, kern_amx_packed_len(16 * blocks, g->hidden));
        packed_reserve(&g->hb, &g->hb_cap, kern_amx_packed_len(16 * blocks, g->inter));
        memset(g->xb, 0, g->xb_cap * sizeof(uint16_t));
        memset(g->hb, 0, g->hb_cap * sizeof(uint16_t));
    }
}

void expert_group_init(expert_group *g, int n_experts, int hidden, int inter, int cap)
{
    memset(g, 0, sizeof *g);
    TM_ASSERT(n_experts > 0 && hidden > 0 && inter > 0);
    g->n_experts = n_experts;
    g->hidden = hidden;
    g->inter = inter;
    g->par_min_bytes = EXPERT_GROUP_PAR_MIN_BYTES;
    g->eo_min_tokens = EXPERT_GROUP_EO_MIN_TOKENS;
    g->amx_min_tokens = EXPERT_GROUP_AMX_MIN_TOKENS;
    g->blk = tm_calloc((size_t)n_experts, sizeof(int));
    const char *amx_min = getenv("TRUSTMOE_AMX_MIN_PAIRS"); /* to measure the threshold */
    if (amx_min && atoi(amx_min) > 0) g->amx_min_tokens = atoi(amx_min);
    g->tile_rows = EXPERT_TILE_ROWS;
    const char *tile = getenv("TRUSTMOE_EXPERT_TILE_ROWS"); /* to measure the tile size */
    if (tile && atoi(tile) >= 16 && atoi(tile) % 16 == 0) g->tile_rows = atoi(tile);
    const char *lay = getenv("TRUSTMOE_EXPERT_LAYOUT");
    g->natural_only = lay && !strcmp(lay, "natural");
    g->count = tm_calloc((size_t)n_experts + 1, sizeof(int));
    g->active = tm_calloc((size_t)n_experts, sizeof(int));
    group_alloc(g, cap);
}

void expert_group_free(expert_group *g)
{
    free(g->count);
    free(g->active);
    free(g->pair);
    free(g->xrow);
    free(g->hrow);
    free(g->a);
    free(g->u);
    free(g->h);
    free(g->y);
    free(g->xp);
    free(g->blk);
    free(g->xb);
    free(g->hb);
    memset(g, 0, sizeof *g);
}

/* Rows per block of a pass: whole cache lines of f32 outputs when every
 * thread still gets a block, else the kernels' four-row blocks (small
 * experts: omni48-small's 128 intermediate rows over 16 threads). */
static int64_t row_align(int64_t rows) { return rows / 16 >= kern_threads() ? 16 : 4; }

/* Pass 0 (even/odd layout only): the batch's input rows [t0, t1) packed. */
static void pack_rows(void *arg, int64_t t0, int64_t t1)
{
    const expert_group *g = arg;
    for (int64_t t = t0; t < t1; t++)
        kern_eo_pack(g->x + (size_t)t * g->hidden, g->xp + (size_t)t * g->hidden, g->hidden);
}

/* Packed rows of expert e in buf, for matrices of `cols` columns. */
static uint16_t *packed(const expert_group *g, uint16_t *buf, int e, int64_t cols)
{
    return buf + (size_t)g->blk[e] * kern_amx_packed_len(16, cols);
}

/* Expert e's gate and up rows [i0, i1), silu(gate)·up into a (and into h
 * or the packed hb for the down pass). */
static void gate_up_expert(const expert_group *g, int e, int64_t i0, int64_t i1)
{
    size_t I = (size_t)g->inter;
    int p0 = g->count[e], n = g->count[e + 1] - p0;
    const tm_expert *ex = &g->experts[e];
    float *ga = g->a + (size_t)p0 * I, *u = g->u + (size_t)p0 * I; /* [n, inter] */
    if (g->amx) {
        const uint16_t *xb = packed(g, g->xb, e, g->hidden);
        kern_matmul_rows_amx(&ex->gate, xb, n, ga, (int64_t)I, i0, i1);
        kern_matmul_rows_amx(&ex->up, xb, n, u, (int64_t)I, i0, i1);
    } else if (g->eo) {
        kern_matmul_rows_eo(&ex->gate, g->xrow + p0, n, ga, (int64_t)I, i0, i1);
        kern_matmul_rows_eo(&ex->up, g->xrow + p0, n, u, (int64_t)I, i0, i1);
    } else {
        kern_matmul_rows(&ex->gate, g->xrow + p0, n, ga, (int64_t)I, i0, i1);
        kern_matmul_rows(&ex->up, g->xrow + p0, n, u, (int64_t)I, i0, i1);
    }
    for (int p = 0; p < n; p++) {
        float *ar = ga + (size_t)p * I;
        kern_silu_mul(ar + i0, u + (size_t)p * I + i0, (int)(i1 - i0));
        if (g->eo) {
            float *hr = g->h + (size_t)(p0 + p) * I;
            for (int64_t r = i0; r < i1; r++) hr[kern_eo_pos(r)] = ar[r];
        }
    }
    if (g->amx) kern_amx_pack(g->hrow + p0, n, (int64_t)I, i0, i1, packed(g, g->hb, e, (int64_t)I));
}

/* Expert e's down rows [i0, i1) into y. */
static void down_expert(const expert_group *g, int e, int64_t i0, int64_t i1)
{
    size_t H = (size_t)g->hidden;
    int p0 = g->count[e], n = g->count[e + 1] - p0;
    float *y = g->y + (size_t)p0 * H; /* [n, hidden] */
    if (g->amx) kern_matmul_rows_amx(&g->experts[e].down, packed(g, g->hb, e, g->inter), n, y, (int64_t)H, i0, i1);
    else if (g->eo) kern_matmul_rows_eo(&g->experts[e].down, g->hrow + p0, n, y, (int64_t)H, i0, i1);
    else kern_matmul_rows(&g->experts[e].down, g->hrow + p0, n, y, (int64_t)H, i0, i1);
}

/* Columns [i0, i1) of out += w·y of expert e's pairs. */
static void combine_expert(const expert_group *g, int e, int64_t i0, int64_t i1)
{
    size_t H = (size_t)g->hidden;
    int p0 = g->count[e], n = g->count[e + 1] - p0;
    for (int p = 0; p < n; p++) {
        int i = g->pair[p0 + p];
        kern_axpy(g->out + (size_t)(i / g->k) * H + i0, g->w[i], g->y + (size_t)(p0 + p) * H + i0, (int)(i1 - i0));
    }
}

/* Pass 1 over intermediate rows [i0, i1) of every active expert. */
static void gate_up_rows(void *arg, int64_t i0, int64_t i1)
{
    const expert_group *g = arg;
    for (int a = 0; a < g->n_active; a++) gate_up_expert(g, g->active[a], i0, i1);
}

/* Pass 2 over hidden rows [i0, i1): the down products, then this block's
 * columns of out, experts in ascending id. */
static void down_rows(void *arg, int64_t i0, int64_t i1)
{
    const expert_group *g = arg;
    for (int a = 0; a < g->n_active; a++) {
        down_expert(g, g->active[a], i0, i1);
        combine_expert(g, g->active[a], i0, i1);
    }
}

/* ---- the AMX passes: tiles of one expert's rows ---------------------------------
 * A tile is EXPERT_TILE_ROWS rows of one expert's matrices, taken by the
 * threads from a shared counter.  Its thread reads that expert's packed
 * activations once into L2 and reuses them for every 64 rows, where a split
 * of every expert's rows over all threads has each thread read every
 * expert's activations (several times a layer's weights at 512 tokens). */

/* Pass 0: every column of active expert a's x rows packed. */
static void pack_amx(void *arg, int64_t a0, int64_t a1)
{
    const expert_group *g = arg;
    for (int64_t a = a0; a < a1; a++) {
        int e = g->active[a], p0 = g->count[e];
        kern_amx_pack(g->xrow + p0, g->count[e + 1] - p0, g->hidden, 0, g->hidden, packed(g, g->xb, e, g->hidden));
    }
}

static void tiles_run(expert_group *g, int64_t rows, void (*fn)(const expert_group *, int, int64_t, int64_t))
{
    const int64_t tr = g->tile_rows;
    int per = (int)((rows + tr - 1) / tr);
    for (int i; (i = atomic_fetch_add_explicit(&g->next_tile, 1, memory_order_relaxed)) < g->n_active * per;) {
        int64_t r0 = (int64_t)(i % per) * tr;
        fn(g, g->active[i / per], r0, TM_MIN(rows, r0 + tr));
    }
}

/* The pool calls these once per thread; each takes tiles until none is left. */
static void gate_up_tiles(void *arg, int64_t s0, int64_t s1)
{
    (void)s0, (void)s1;
    expert_group *g = arg;
    tiles_run(g, g->inter, gate_up_expert);
}

static void down_tiles(void *arg, int64_t s0, int64_t s1)
{
    (void)s0, (void)s1;
    expert_group *g = arg;
    tiles_run(g, g->hidden, down_expert);
}

/* Pass 3: columns [i0, i1) of out, experts in ascending id (the order of
 * down_rows, so both paths add alike). */
static void combine_rows(void *arg, int64_t i0, int64_t i1)
{
    const expert_group *g = arg;
    for (int a = 0; a < g->n_active; a++) combine_expert(g, g->active[a], i0, i1);
}

/* A pass over [0, n): on the pool when par, else on the calling thread. */
static void run_pass(int par, int64_t n, int64_t align, kern_range_fn fn, expert_group *g)
{
    if (par) kern_parallel_for(n, align, fn, g);
    else fn(g, 0, n);
}

void expert_group_run(expert_group *g, const tm_expert *experts, const float *x, int T, const int32_t *ids,
                      const float *w, int k, float *out)
{
    double t0 = tm_now();
    int E = g->n_experts, P = T * k;
    if (P > g->cap) group_alloc(g, TM_MAX(P, 2 * g->cap));
    /* counting sort by expert: stable, so each expert's pairs stay in (t, j) order */
    int *count = g->count;
    memset(count, 0, sizeof(int) * (size_t)(E + 1));
    for (int i = 0; i < P; i++) {
        TM_ASSERT_MSG(ids[i] < E, "expert id out of range");
        if (ids[i] >= 0) count[ids[i] + 1]++;
    }
    g->n_active = 0;
    double bytes = 0;
    for (int e = 0; e < E; e++) {
        if (count[e + 1]) {
            TM_ASSERT_MSG(experts[e].gate.data && experts[e].up.data && experts[e].down.data,
                          "grouped experts: expert not loaded");
            TM_ASSERT(experts[e].gate.rows == g->inter && experts[e].gate.cols == g->hidden);
            g->active[g->n_active++] = e;
            bytes += expert_bytes(&experts[e]);
        }
        count[e + 1] += count[e];
    }
    int n_pairs = count[E];
    /* AMX, else the even/odd layout, where every active expert's matrices take it */
    g->amx = g->n_active > 0 && !g->natural_only && n_pairs >= g->amx_min_tokens * g->n_active;
    g->eo = g->n_active > 0 && !g->natural_only && n_pairs >= g->eo_min_tokens * g->n_active;
    int blocks = 0;
    for (int a = 0; a < g->n_active; a++) {
        int e = g->active[a];
        const tm_expert *ex = &experts[e];
        g->amx = g->amx && kern_amx_usable(&ex->gate) && kern_amx_usable(&ex->up) && kern_amx_usable(&ex->down);
        g->eo = g->eo && kern_eo_usable(&ex->gate) && kern_eo_usable(&ex->up) && kern_eo_usable(&ex->down);
        g->blk[e] = blocks;
        blocks += (count[e + 1] - count[e] + 15) / 16;
    }
    if (g->amx) {
        g->eo = 0;
        packed_reserve(&g->xb, &g->xb_cap, kern_amx_packed_len(16 * blocks, g->hidden));
        packed_reserve(&g->hb, &g->hb_cap, kern_amx_packed_len(16 * blocks, g->inter));
    }
    if (g->eo && T > g->cap_rows) {
        free(g->xp);
        g->cap_rows = TM_MAX(T, 2 * g->cap_rows);
        g->xp = tm_malloc((size_t)g->cap_rows * (size_t)g->hidden * sizeof(float));
    }
    const float *xin = g->eo ? g->xp : x; /* [T, hidden] */
    for (int i = 0; i < P; i++)
        if (ids[i] >= 0) {
            int p = count[ids[i]]++;
            g->pair[p] = i;
            g->xrow[p] = xin + (size_t)(i / k) * (size_t)g->hidden;
        }
    float *hbase = g->eo ? g->h : g->a; /* the down projections' input */
    for (int p = 0; p < n_pairs; p++) g->hrow[p] = hbase + (size_t)p * (size_t)g->inter;
    for (int e = E; e > 0; e--) count[e] = count[e - 1];
    count[0] = 0;

    g->experts = experts;
    g->x = x;
    g->w = w;
    g->k = k;
    g->out = out;
    int par = bytes >= g->par_min_bytes;
    double *ps = g->stats.pass_s, t1 = tm_now(), t2 = t1, t3 = t1, t4 = t1;
    if (n_pairs && g->amx) {
        run_pass(par, g->n_active, 1, pack_amx, g);
        t2 = tm_now();
        atomic_store_explicit(&g->next_tile, 0, memory_order_relaxed);
        run_pass(par, kern_threads(), 1, gate_up_tiles, g); /* one call per thread, each taking tiles */
        t3 = tm_now();
        atomic_store_explicit(&g->next_tile, 0, memory_order_relaxed);
        run_pass(par, kern_threads(), 1, down_tiles, g);
        t4 = tm_now();
        run_pass(par, g->hidden, row_align(g->hidden), combine_rows, g);
    } else if (n_pairs) {
        if (g->eo) run_pass(par && (int64_t)T * g->hidden >= ((int64_t)1 << 16), T, 1, pack_rows, g);
        t2 = tm_now();
        run_pass(par, g->inter, row_align(g->inter), gate_up_rows, g);
        t3 = tm_now();
        run_pass(par, g->hidden, row_align(g->hidden), down_rows, g); /* down and combine together */
        t4 = tm_now();
    }
    double t5 = tm_now();
    ps[0] += t2 - t1, ps[1] += t3 - t2, ps[2] += t4 - t3, ps[3] += t5 - t4;
    g->stats.calls++;
    g->stats.pairs += (uint64_t)n_pairs;
    g->stats.bytes += bytes;
    g->stats.flops += 6.0 * n_pairs * (double)g->hidden * (double)g->inter;
    g->stats.seconds += tm_now() - t0;
}

void expert_group_run_ref(const tm_expert *experts, int hidden, int inter, const float *x, int T, const int32_t *ids,
                          const float *w, int k, float *out)
{
    float *h = tm_malloc(sizeof(float) * (size_t)inter);
    float *u = tm_malloc(sizeof(float) * (size_t)inter);
    float *y = tm_malloc(sizeof(float) * (size_t)hidden);
    for (int i = 0; i < T * k; i++) {
        if (ids[i] < 0) continue;
        const tm_expert *e = &experts[ids[i]];
        const float *xt = x + (size_t)(i / k) * hidden;
        kern_matvec_ref(&e->gate, xt, h);
        kern_matvec_ref(&e->up, xt, u);
        for (int r = 0; r < inter; r++) h[r] = (float)((double)h[r] / (1.0 + exp(-(double)h[r])) * u[r]);
        kern_matvec_ref(&e->down, h, y);
        for (int c = 0; c < hidden; c++) out[(size_t)(i / k) * hidden + c] += w[i] * y[c];
    }
    free(h);
    free(u);
    free(y);
}
