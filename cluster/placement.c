/* placement.c: (layer, expert) -> ranks; policies, file, validation, print. */
#include "placement.h"
#include "input.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

size_t place_expert_bytes(const tm_config *c, tm_dtype wdt)
{
    return 3 * (size_t)c->moe_intermediate_size * (size_t)c->hidden_size * tm_dtype_size(wdt);
}

void place_free(place_map *pm)
{
    free(pm->is_moe);
    free(pm->offsets);
    free(pm->ranks);
    memset(pm, 0, sizeof *pm);
}

static void place_alloc(place_map *pm, int n_layers, int n_experts, int n_workers)
{
    memset(pm, 0, sizeof *pm);
    pm->n_layers = n_layers;
    pm->n_experts = n_experts;
    pm->n_workers = n_workers;
    pm->is_moe = tm_calloc((size_t)n_layers, 1);
    pm->offsets = tm_calloc((size_t)n_layers * n_experts + 1, sizeof(int));
}

tm_status place_validate(const place_map *pm, tm_err *err)
{
    if (pm->n_workers < 1) return tm_errf(err, TM_EINPUT, "placement: no worker ranks (run with mpirun -np 2 or more)");
    /* seen[rank] == the (layer, expert) slot + 1 that last listed it: the
     * duplicate check stays linear in the replicas */
    int *seen = tm_calloc((size_t)pm->n_workers + 1, sizeof(int));
    tm_status st = TM_OK;
    for (int l = 0; l < pm->n_layers && st == TM_OK; l++)
        for (int e = 0; e < pm->n_experts && st == TM_OK; e++) {
            int n = place_count(pm, l, e), slot = l * pm->n_experts + e + 1;
            const int *r = place_ranks(pm, l, e);
            if (!pm->is_moe[l]) {
                if (n)
                    st = tm_errf(err, TM_EINPUT,
                                 "placement %s: layer %d is a dense MLP layer but expert %d is placed on rank %d",
                                 pm->policy, l, e, r[0]);
                continue;
            }
            if (n == 0)
                st = tm_errf(err, TM_EINPUT, "placement %s: layer %d expert %d is hosted by no worker", pm->policy,
                             l, e);
            for (int i = 0; i < n && st == TM_OK; i++) {
                if (r[i] < 0 || r[i] > pm->n_workers)
                    st = tm_errf(err, TM_EINPUT,
                                 "placement %s: layer %d expert %d: rank %d is out of range (workers are ranks "
                                 "1..%d, 0 is the coordinator)",
                                 pm->policy, l, e, r[i], pm->n_workers);
                else if (seen[r[i]] == slot)
                    st = tm_errf(err, TM_EINPUT, "placement %s: layer %d expert %d: rank %d listed twice",
                                 pm->policy, l, e, r[i]);
                else
                    seen[r[i]] = slot;
            }
        }
    free(seen);
    return st;
}

/* ---- policies ------------------------------------------------------------- */

/* Rank 0's experts under a coordinator share of n0 per layer. */
static int on_coordinator(int e, int E, int n0, int round_robin)
{
    if (!round_robin) return e < n0;
    return (int)(((int64_t)(e + 1) * n0) / E) > (int)(((int64_t)e * n0) / E);
}

static void place_policy(place_map *pm, int round_robin, int replicas, int n0)
{
    int E = pm->n_experts, W = pm->n_workers, n = 0;
    int n_moe = 0;
    for (int l = 0; l < pm->n_layers; l++) n_moe += pm->is_moe[l];
    pm->ranks = tm_malloc(((size_t)n_moe * E * replicas + 1) * sizeof(int));
    for (int l = 0; l < pm->n_layers; l++) {
        int i = 0; /* ordinal of the expert among the workers' ones */
        for (int e = 0; e < E; e++) {
            pm->offsets[l * E + e] = n;
            if (!pm->is_moe[l]) continue;
            if (on_coordinator(e, E, n0, round_robin)) {
                pm->ranks[n++] = 0;
                continue;
            }
            int w0 = round_robin ? i % W : (int)(((int64_t)i * W) / (E - n0));
            for (int j = 0; j < replicas; j++) pm->ranks[n++] = 1 + (w0 + j) % W;
            i++;
        }
    }
    pm->offsets[pm->n_layers * E] = n;
}

/* ---- balanced by measured load ----------------------------------------------- */

/* Workers ordered by (load, rank) in a binary min-heap: taking the first R
 * gives R distinct workers, the least loaded first, in O(R log W). */
static int heap_less(const double *load, int a, int b) { return load[a] < load[b] || (load[a] == load[b] && a < b); }

static void heap_down(int *h, int n, const double *load, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && heap_less(load, h[l], h[m])) m = l;
        if (r < n && heap_less(load, h[r], h[m])) m = r;
        if (m == i) return;
        int t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void heap_up(int *h, const double *load, int i)
{
    while (i > 0 && heap_less(load, h[i], h[(i - 1) / 2])) {
        int p = (i - 1) / 2, t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

/* Longest-processing-time placement per layer: experts in decreasing order of
 * measured tokens (ties: lower id), each replica on the least-loaded worker
 * not yet holding that expert (ties: lower rank).  An expert's load is split
 * evenly over its replicas; +1 spreads never-seen experts like the rest. */
static tm_status place_balanced(place_map *pm, const char *path, int replicas, tm_err *err)
{
    char *text = NULL;
    tm_status st = tm_read_input(path, "placement statistics", TM_CAP_JSON, &text, NULL, err);
    if (st != TM_OK) return st;
    cJSON *root = cJSON_Parse(text);
    free(text);
    int L = pm->n_layers, E = pm->n_experts, W = pm->n_workers;
    const cJSON *et = root ? cJSON_GetObjectItemCaseSensitive(root, "expert_tokens") : NULL;
    if (!cJSON_IsArray(et) || cJSON_GetArraySize(et) != L) {
        cJSON_Delete(root);
        return tm_errf(err, TM_EINPUT,
                       "%s: not the --stats-json of a run of this model (want \"expert_tokens\": %d layers of %d "
                       "counts)", path, L, E);
    }
    double *count = tm_calloc((size_t)E, sizeof(double)), *load = tm_calloc((size_t)W, sizeof(double));
    int *order = tm_malloc((size_t)E * sizeof(int)), n = 0;
    int *heap = tm_malloc((size_t)W * sizeof(int)), *took = tm_malloc((size_t)replicas * sizeof(int));
    pm->ranks = tm_malloc(((size_t)L * E * replicas + 1) * sizeof(int));
    for (int l = 0; l < L && st == TM_OK; l++) {
        const cJSON *row = cJSON_GetArrayItem(et, l);
        for (int e = 0; e < E; e++) pm->offsets[l * E + e] = n;
        if (!pm->is_moe[l]) continue;
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != E) {
            st = tm_errf(err, TM_EINPUT, "%s: layer %d has %d expert counts, the model has %d experts", path, l,
                         cJSON_IsArray(row) ? cJSON_GetArraySize(row) : -1, E);
            break;
        }
        int e_at = 0;
        for (const cJSON *v = row->child; v && e_at < E; v = v->next, e_at++) {
            count[e_at] = cJSON_IsNumber(v) && v->valuedouble > 0 && v->valuedouble < 1e300 ? v->valuedouble : 0.0;
            order[e_at] = e_at;
        }
        for (int i = 1; i < E; i++) /* insertion sort: stable, E is at most a few hundred */
            for (int j = i; j > 0 && count[order[j]] > count[order[j - 1]]; j--) {
                int t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        for (int w = 0; w < W; w++) {
            load[w] = 0.0;
            heap[w] = w; /* all loads equal: rank order is a heap */
        }
        int *start = pm->ranks + n;
        int *slot_of = tm_malloc((size_t)E * sizeof(int));
        for (int i = 0; i < E; i++) {
            int e = order[i];
            slot_of[e] = (int)(pm->ranks + n - start);
            double share = (count[e] + 1.0) / replicas;
            int hn = W;
            for (int r = 0; r < replicas; r++) { /* pop the R least loaded */
                took[r] = heap[0];
                heap[0] = heap[--hn];
                heap_down(heap, hn, load, 0);
                pm->ranks[n++] = took[r] + 1;
            }
            for (int r = 0; r < replicas; r++) { /* and push them back loaded */
                load[took[r]] += share;
                heap[hn] = took[r];
                heap_up(heap, load, hn++);
            }
        }
        /* ranks were written in load order; CSR wants expert order */
        int *tmp = tm_malloc((size_t)E * replicas * sizeof(int));
        memcpy(tmp, start, (size_t)E * replicas * sizeof(int));
        for (int e = 0; e < E; e++) {
            pm->offsets[l * E + e] = (int)(start - pm->ranks) + e * replicas;
            memcpy(start + (size_t)e * replicas, tmp + slot_of[e], (size_t)replicas * sizeof(int));
        }
        free(tmp);
        free(slot_of);
    }
    pm->offsets[L * E] = n;
    free(count);
    free(load);
    free(order);
    free(heap);
    free(took);
    cJSON_Delete(root);
    return st;
}

/* ---- co-activation ------------------------------------------------------------ */

/* Per layer: capacity-bounded longest-processing-time start (each worker
 * takes its contiguous share of expert slots), then the best of two kinds
 * of step while one raises the co-selections kept inside workers: a swap
 * of two experts between workers, or a move of one expert to another
 * worker.  Every step leaves each worker's expert-tokens at or below the
 * bound, max(1.1 x mean, the start's max), and its expert count at or below
 * its contiguous share plus a quarter (at least one): moves free the search
 * from equal counts, which on brown-moe took the fan-out from -10% to -12%,
 * and the cap keeps a worker's memory within 25% of contiguous's.  Steps
 * only find a local optimum, so the search also runs from seeded starts
 * (the same assignment over jittered loads, place_coact_layer) and keeps
 * the best; a start over the bound is skipped.  C[a][b] (a != b) counts tokens that
 * chose both; C[e][e] is e's own load. */
#define PLACE_COACT_BOUND 1.1
#define PLACE_COACT_STARTS 16

/* Local search from owner[E]; returns the co-selections inside workers
 * (each pair counted from both ends), or -1 if owner breaks the bound. */
static double place_coact_search(int E, int W, const double *C, double bound, int max_count, int *owner,
                                 double *load, int *count, double *aff)
{
    for (int w = 0; w < W; w++) load[w] = 0, count[w] = 0;
    for (int e = 0; e < E; e++) load[owner[e]] += C[(size_t)e * E + e], count[owner[e]]++;
    for (int w = 0; w < W; w++)
        if (load[w] > bound) return -1;
    memset(aff, 0, (size_t)E * W * sizeof *aff);
    for (int x = 0; x < E; x++)
        for (int e = 0; e < E; e++)
            if (e != x) aff[(size_t)x * W + owner[e]] += C[(size_t)x * E + e];
    for (int pass = 0; pass < 4 * E * E; pass++) {
        double best_gain = 0;
        int ba = -1, bb = -1;
        for (int a = 0; a < E; a++)
            for (int b = a + 1; b < E; b++) {
                int A = owner[a], B = owner[b];
                if (A == B) continue;
                double la = C[(size_t)a * E + a], lb = C[(size_t)b * E + b];
                if (load[A] - la + lb > bound || load[B] - lb + la > bound) continue;
                double cab = C[(size_t)a * E + b];
                double g = aff[(size_t)a * W + B] - cab + aff[(size_t)b * W + A] - cab - aff[(size_t)a * W + A] -
                           aff[(size_t)b * W + B];
                if (g > best_gain) best_gain = g, ba = a, bb = b;
            }
        int ma = -1, mw = -1; /* the best move, when it beats the best swap */
        for (int a = 0; a < E; a++)
            for (int B = 0; B < W; B++) {
                int A = owner[a];
                double la = C[(size_t)a * E + a];
                if (B == A || count[B] >= max_count || load[B] + la > bound) continue;
                double g = aff[(size_t)a * W + B] - aff[(size_t)a * W + A];
                if (g > best_gain) best_gain = g, ma = a, mw = B;
            }
        if (ma >= 0) {
            int A = owner[ma];
            for (int x = 0; x < E; x++)
                if (x != ma) {
                    aff[(size_t)x * W + A] -= C[(size_t)x * E + ma];
                    aff[(size_t)x * W + mw] += C[(size_t)x * E + ma];
                }
            load[A] -= C[(size_t)ma * E + ma];
            load[mw] += C[(size_t)ma * E + ma];
            count[A]--;
            count[mw]++;
            owner[ma] = mw;
            continue;
        }
        if (ba < 0) break;
        int A = owner[ba], B = owner[bb];
        for (int x = 0; x < E; x++) {
            double d = C[(size_t)x * E + bb] * (x != bb) - C[(size_t)x * E + ba] * (x != ba);
            aff[(size_t)x * W + A] += d;
            aff[(size_t)x * W + B] -= d;
        }
        load[A] += C[(size_t)bb * E + bb] - C[(size_t)ba * E + ba];
        load[B] += C[(size_t)ba * E + ba] - C[(size_t)bb * E + bb];
        owner[ba] = B;
        owner[bb] = A;
    }
    double inside = 0;
    for (int e = 0; e < E; e++) inside += aff[(size_t)e * W + owner[e]];
    return inside;
}

/* Capacity-bounded longest-processing-time assignment: experts in order of
 * load x (1 + jitter[e]), each to the least-loaded worker with a slot left
 * (the contiguous share each); fills load[W]. */
static void place_coact_lpt(int E, int W, const double *C, const double *jitter, int *order, int *cap, double *load,
                            int *owner)
{
    for (int w = 0; w < W; w++) load[w] = 0, cap[w] = 0;
    for (int e = 0; e < E; e++) {
        cap[(int)(((int64_t)e * W) / E)]++;
        order[e] = e;
    }
#define COACT_KEY(e) (C[(size_t)(e) * E + (e)] * (1.0 + jitter[e]))
    for (int i = 1; i < E; i++)
        for (int j = i; j > 0 && COACT_KEY(order[j]) > COACT_KEY(order[j - 1]); j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
#undef COACT_KEY
    for (int i = 0; i < E; i++) {
        int e = order[i], best = -1;
        for (int w = 0; w < W; w++)
            if (cap[w] > 0 && (best < 0 || load[w] < load[best])) best = w;
        owner[e] = best;
        cap[best]--;
        load[best] += C[(size_t)e * E + e];
    }
}

static void place_coact_layer(int E, int W, const double *C, int *owner)
{
    double *load = tm_calloc((size_t)W, sizeof *load), *aff = tm_malloc((size_t)E * W * sizeof *aff);
    double *jitter = tm_calloc((size_t)E, sizeof *jitter);
    int *cap = tm_calloc((size_t)W, sizeof *cap), *order = tm_malloc((size_t)E * sizeof *order);
    int *count = tm_calloc((size_t)W, sizeof *count), *cur = tm_malloc((size_t)E * sizeof *cur);
    double total = 0;
    for (int e = 0; e < E; e++) total += C[(size_t)e * E + e];
    place_coact_lpt(E, W, C, jitter, order, cap, load, owner);
    double mx = 0;
    for (int w = 0; w < W; w++) mx = TM_MAX(mx, load[w]);
    const double bound = TM_MAX(PLACE_COACT_BOUND * total / W, mx);
    const int share = (E + W - 1) / W, max_count = share + TM_MAX(1, share / 4);
    double best = place_coact_search(E, W, C, bound, max_count, owner, load, count, aff);
    /* more starts: the same assignment with the loads jittered by up to 50%,
     * so each start is balanced like the first but groups differently;
     * a small layer gets more of them (the search costs about E^2 per step) */
    int starts = TM_MAX(PLACE_COACT_STARTS, 2048 / TM_MAX(E, 1));
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    for (int r = 0; r < starts; r++) {
        for (int e = 0; e < E; e++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            jitter[e] = 0.5 * (double)(rng >> 11) / 9007199254740992.0;
        }
        place_coact_lpt(E, W, C, jitter, order, cap, load, cur);
        double v = place_coact_search(E, W, C, bound, max_count, cur, load, count, aff);
        if (v > best) {
            best = v;
            memcpy(owner, cur, (size_t)E * sizeof *owner);
        }
    }
    free(load);
    free(aff);
    free(jitter);
    free(cap);
    free(count);
    free(order);
    free(cur);
}

/* "co_selection" [layer][a][b] of an eval's --stats-json (top level), or of
 * a generate's (under "selection"). */
static tm_status place_coactivation(place_map *pm, const char *path, tm_err *err)
{
    char *text = NULL;
    tm_status st = tm_read_file(path, &text, NULL, err);
    if (st != TM_OK) return st;
    cJSON *root = cJSON_Parse(text);
    free(text);
    int L = pm->n_layers, E = pm->n_experts, W = pm->n_workers, n = 0;
    const cJSON *co = root ? cJSON_GetObjectItemCaseSensitive(root, "co_selection") : NULL;
    if (!co && root) co = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "selection"), "co_selection");
    if (!cJSON_IsArray(co) || cJSON_GetArraySize(co) != L) {
        cJSON_Delete(root);
        return tm_errf(err, TM_EINPUT,
                       "%s: not the --stats-json of a run of this model with expert selection (want \"co_selection\": "
                       "%d layers of %d x %d counts)", path, L, E, E);
    }
    double *C = tm_malloc((size_t)E * E * sizeof *C);
    int *owner = tm_malloc((size_t)E * sizeof *owner);
    pm->ranks = tm_malloc(((size_t)L * E + 1) * sizeof(int));
    for (int l = 0; l < L && st == TM_OK; l++) {
        for (int e = 0; e < E; e++) pm->offsets[l * E + e] = n;
        if (!pm->is_moe[l]) continue;
        const cJSON *rows = cJSON_GetArrayItem(co, l);
        for (int a = 0; a < E && st == TM_OK; a++) {
            const cJSON *row = cJSON_IsArray(rows) && cJSON_GetArraySize(rows) == E ? cJSON_GetArrayItem(rows, a) : NULL;
            if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != E) {
                st = tm_errf(err, TM_EINPUT, "%s: co_selection of layer %d is not %d x %d counts", path, l, E, E);
                break;
            }
            for (int b = 0; b < E; b++) {
                const cJSON *v = cJSON_GetArrayItem(row, b);
                if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > 1e18) {
                    st = tm_errf(err, TM_EINPUT, "%s: co_selection[%d][%d][%d] is not a count", path, l, a, b);
                    break;
                }
                C[(size_t)a * E + b] = v->valuedouble;
            }
        }
        if (st) break;
        place_coact_layer(E, W, C, owner);
        for (int e = 0; e < E; e++) {
            pm->offsets[l * E + e] = n;
            pm->ranks[n++] = owner[e] + 1;
        }
    }
    pm->offsets[L * E] = n;
    free(C);
    free(owner);
    cJSON_Delete(root);
    return st;
}

/* ---- file ----------------------------------------------------------------- */

typedef struct {
    int layer, expert, rank;
} triple;

static int json_int(const cJSON *j, int *out)
{
    return tm_json_i32(j, INT32_MIN, INT32_MAX, out) ? 0 : -1;
}

static tm_status place_file(place_map *pm, const char *path, tm_err *err)
{
    char *text = NULL;
    tm_status st = tm_read_input(path, "placement file", TM_CAP_JSON, &text, NULL, err);
    if (st != TM_OK) return st;
    cJSON *root = cJSON_Parse(text);
    triple *t = NULL;
    int nt = 0, cap = 0;
    if (!root || !cJSON_IsObject(root)) {
        st = tm_errf(err, TM_EINPUT, "%s: not a JSON object (expected {\"experts\": [[layer, expert, rank], ...]})",
                     path);
        goto done;
    }
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "workers");
    int wv;
    if (w && (json_int(w, &wv) || wv != pm->n_workers)) {
        st = tm_errf(err, TM_EINPUT, "%s: written for \"workers\": %g, but this run has %d worker ranks", path,
                     cJSON_IsNumber(w) ? w->valuedouble : -1.0, pm->n_workers);
        goto done;
    }
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(root, "experts");
    if (!cJSON_IsArray(ex)) {
        st = tm_errf(err, TM_EINPUT, "%s: missing \"experts\": [[layer, expert, rank], ...]", path);
        goto done;
    }
    int idx = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, ex)
    {
        int l, e, n = cJSON_GetArraySize(it);
        if (!cJSON_IsArray(it) || n != 3 || json_int(cJSON_GetArrayItem(it, 0), &l) ||
            json_int(cJSON_GetArrayItem(it, 1), &e)) {
            st = tm_errf(err, TM_EINPUT, "%s: \"experts\"[%d] is not [layer, expert, rank or [ranks]]", path, idx);
            goto done;
        }
        if (l < 0 || l >= pm->n_layers || e < 0 || e >= pm->n_experts) {
            st = tm_errf(err, TM_EINPUT, "%s: \"experts\"[%d]: layer %d expert %d is outside the model (%d layers x %d experts)",
                         path, idx, l, e, pm->n_layers, pm->n_experts);
            goto done;
        }
        const cJSON *r = cJSON_GetArrayItem(it, 2);
        int nr = cJSON_IsArray(r) ? cJSON_GetArraySize(r) : 1;
        for (int i = 0; i < nr; i++) {
            int rank;
            if (json_int(cJSON_IsArray(r) ? cJSON_GetArrayItem(r, i) : r, &rank)) {
                st = tm_errf(err, TM_EINPUT, "%s: layer %d expert %d: rank is not an integer", path, l, e);
                goto done;
            }
            if (nt == cap) t = tm_realloc(t, (size_t)(cap = cap ? 2 * cap : 1024) * sizeof *t);
            t[nt++] = (triple){l, e, rank};
        }
        idx++;
    }
    /* Sort by (layer, expert) keeping file order within one expert: replica 0
     * is the first listed.  A counting pass does that without a stable sort. */
    int L = pm->n_layers, E = pm->n_experts;
    for (int i = 0; i < nt; i++) pm->offsets[t[i].layer * E + t[i].expert + 1]++;
    for (int i = 0; i < L * E; i++) pm->offsets[i + 1] += pm->offsets[i];
    int *fill = tm_malloc((size_t)L * E * sizeof(int));
    memcpy(fill, pm->offsets, (size_t)L * E * sizeof(int));
    pm->ranks = tm_malloc(((size_t)nt + 1) * sizeof(int));
    for (int i = 0; i < nt; i++) pm->ranks[fill[t[i].layer * E + t[i].expert]++] = t[i].rank;
    free(fill);
done:
    free(t);
    cJSON_Delete(root);
    free(text);
    return st;
}

/* ---- build ---------------------------------------------------------------- */

static int is_policy(const char *p, const char *name) { return p && !strcmp(p, name); }

int place_may_host_coordinator(const char *policy, double coordinator_share)
{
    if (coordinator_share > 0) return 1;
    if (!policy || !*policy || is_policy(policy, "contiguous") || is_policy(policy, "round-robin")) return 0;
    return strncmp(policy, "balanced:", 9) && strncmp(policy, "coactivation:", 13);
}

tm_status place_build(place_map *pm, const tm_config *c, size_t expert_bytes, int n_workers, const char *policy,
                      int replicas, tm_err *err)
{
    return place_build_share(pm, c, expert_bytes, n_workers, policy, replicas, 0.0, err);
}

tm_status place_build_share(place_map *pm, const tm_config *c, size_t expert_bytes, int n_workers,
                            const char *policy, int replicas, double coordinator_share, tm_err *err)
{
    if (!policy || !*policy) policy = "contiguous";
    if (replicas <= 0) replicas = 1;
    place_alloc(pm, c->num_layers, c->num_experts, n_workers);
    snprintf(pm->policy, sizeof pm->policy, "%s", policy);
    pm->expert_bytes = expert_bytes;
    for (int l = 0; l < c->num_layers; l++) pm->is_moe[l] = (unsigned char)cfg_layer_is_moe(c, l);
    tm_status st = TM_OK;
    int policy_kind = is_policy(policy, "contiguous") || is_policy(policy, "round-robin");
    int n0 = (int)(coordinator_share * c->num_experts + 0.5);
    if (coordinator_share < 0 || coordinator_share > 1) {
        st = tm_errf(err, TM_EINPUT, "--coordinator-share %g: not a fraction in [0, 1]", coordinator_share);
    } else if (coordinator_share > 0 && !policy_kind) {
        st = tm_errf(err, TM_EINPUT,
                     "--coordinator-share applies to contiguous and round-robin; with %s, name rank 0 in a "
                     "placement file", policy);
    } else if (n_workers < 1) {
        st = tm_errf(err, TM_EINPUT, "placement: %d worker ranks; expert placement needs at least one", n_workers);
    } else if (!strncmp(policy, "balanced:", 9)) {
        if (replicas > n_workers)
            st = tm_errf(err, TM_EINPUT, "--replicas %d needs at least %d worker ranks, this run has %d", replicas,
                         replicas, n_workers);
        else
            st = place_balanced(pm, policy + 9, replicas, err);
    } else if (!strncmp(policy, "coactivation:", 13)) {
        if (replicas > 1)
            st = tm_errf(err, TM_EINPUT, "--replicas %d: coactivation placement hosts each expert once", replicas);
        else
            st = place_coactivation(pm, policy + 13, err);
    } else if (is_policy(policy, "contiguous") || is_policy(policy, "round-robin")) {
        if (replicas > n_workers)
            st = tm_errf(err, TM_EINPUT, "--replicas %d needs at least %d worker ranks, this run has %d", replicas,
                         replicas, n_workers);
        else
            place_policy(pm, is_policy(policy, "round-robin"), replicas, n0);
    } else if (access(policy, F_OK) != 0) {
        st = tm_errf(err, TM_EINPUT,
                     "--placement '%s' is none of contiguous, round-robin, balanced:STATS (an earlier --stats-json), "
                     "coactivation:STATS or an existing JSON placement file",
                     policy);
    } else {
        if (replicas > 1)
            st = tm_errf(err, TM_EINPUT,
                         "--replicas applies to contiguous and round-robin; placement file %s lists its own replicas",
                         policy);
        else
            st = place_file(pm, policy, err);
    }
    if (st == TM_OK) st = place_validate(pm, err);
    if (st != TM_OK) place_free(pm);
    return st;
}

tm_status place_from_csr(place_map *pm, int n_layers, int n_experts, int n_workers, const int *offsets,
                         size_t n_offsets, const int *ranks, size_t n_ranks, size_t expert_bytes, tm_err *err)
{
    if (n_layers < 1 || n_experts < 1 || n_offsets != (size_t)n_layers * n_experts + 1 || offsets[0] != 0 ||
        (size_t)offsets[n_offsets - 1] != n_ranks)
        return tm_errf(err, TM_EINPUT, "placement: malformed map (%d layers x %d experts, %zu offsets, %zu ranks)",
                       n_layers, n_experts, n_offsets, n_ranks);
    for (size_t i = 0; i + 1 < n_offsets; i++)
        if (offsets[i + 1] < offsets[i])
            return tm_errf(err, TM_EINPUT, "placement: malformed map (offsets decrease at %zu)", i);
    place_alloc(pm, n_layers, n_experts, n_workers);
    snprintf(pm->policy, sizeof pm->policy, "(received)");
    pm->expert_bytes = expert_bytes;
    memcpy(pm->offsets, offsets, n_offsets * sizeof(int));
    pm->ranks = tm_malloc((n_ranks + 1) * sizeof(int));
    memcpy(pm->ranks, ranks, n_ranks * sizeof(int));
    for (int l = 0; l < n_layers; l++)
        pm->is_moe[l] = offsets[(l + 1) * n_experts] > offsets[l * n_experts];
    tm_status st = place_validate(pm, err);
    if (st != TM_OK) place_free(pm);
    return st;
}

/* ---- queries -------------------------------------------------------------- */

int place_hosts(const place_map *pm, int rank, int layer, int expert)
{
    int n = place_count(pm, layer, expert);
    const int *r = place_ranks(pm, layer, expert);
    for (int i = 0; i < n; i++)
        if (r[i] == rank) return 1;
    return 0;
}

int place_rank_experts(const place_map *pm, int rank)
{
    int n = 0, total = pm->offsets[pm->n_layers * pm->n_experts];
    for (int i = 0; i < total; i++) n += pm->ranks[i] == rank;
    return n;
}

size_t place_rank_bytes(const place_map *pm, int rank)
{
    return (size_t)place_rank_experts(pm, rank) * pm->expert_bytes;
}

void place_rank_mask(const place_map *pm, int rank, unsigned char *mask)
{
    for (int l = 0; l < pm->n_layers; l++)
        for (int e = 0; e < pm->n_experts; e++) mask[l * pm->n_experts + e] = (unsigned char)place_hosts(pm, rank, l, e);
}

/* ---- print ---------------------------------------------------------------- */

static int layers_equal(const place_map *pm, int a, int b)
{
    if (pm->is_moe[a] != pm->is_moe[b]) return 0;
    for (int e = 0; e < pm->n_experts; e++) {
        int n = place_count(pm, a, e);
        if (n != place_count(pm, b, e) || memcmp(place_ranks(pm, a, e), place_ranks(pm, b, e), n * sizeof(int)))
            return 0;
    }
    return 1;
}

static double mib(size_t b) { return (double)b / (1024.0 * 1024.0); }

int placement_print(FILE *f, const tm_config *c, tm_dtype weight_dtype, const char *policy, int replicas,
                    int n_workers)
{
    place_map pm;
    tm_err err;
    size_t eb = place_expert_bytes(c, weight_dtype);
    if (place_build(&pm, c, eb, n_workers, policy, replicas, &err) != TM_OK) {
        fprintf(stderr, "trustmoe: %s\n", err.msg);
        return 2;
    }
    int n_moe = 0;
    for (int l = 0; l < pm.n_layers; l++) n_moe += pm.is_moe[l];
    int r_first = place_rank_experts(&pm, 0) ? 0 : 1; /* rank 0 shown when it hosts experts */
    int from_file = policy && strcmp(policy, "contiguous") && strcmp(policy, "round-robin") &&
                    strncmp(policy, "balanced:", 9) && strncmp(policy, "coactivation:", 13);
    fprintf(f, "placement: %s, %d workers (ranks 1..%d), replicas %d%s\n", pm.policy, n_workers, n_workers,
            replicas > 0 ? replicas : 1, from_file ? " (from file)" : "");
    fprintf(f, "experts: %d MoE layers of %d, %d experts each, %.3f MiB per expert (%s)\n", n_moe, pm.n_layers,
            pm.n_experts, mib(eb), tm_dtype_name(weight_dtype));
    /* hosts[r * E + e]: rank r (0: the coordinator's share) holds expert e of
     * the layer printed; filled from the CSR so printing is linear in
     * workers x experts */
    unsigned char *hosts = tm_malloc(((size_t)n_workers + 1) * pm.n_experts);
    int *rank_experts = tm_calloc((size_t)n_workers + 1, sizeof(int));
    for (int i = 0; i < pm.offsets[pm.n_layers * pm.n_experts]; i++) rank_experts[pm.ranks[i]]++;
    for (int l = 0; l < pm.n_layers;) {
        int l1 = l;
        while (l1 + 1 < pm.n_layers && layers_equal(&pm, l, l1 + 1)) l1++;
        if (l1 > l) fprintf(f, "layers %d-%d:", l, l1);
        else fprintf(f, "layer %d:", l);
        if (!pm.is_moe[l]) {
            fprintf(f, " dense MLP on the coordinator\n");
            l = l1 + 1;
            continue;
        }
        memset(hosts, 0, ((size_t)n_workers + 1) * pm.n_experts);
        for (int e = 0; e < pm.n_experts; e++)
            for (int i = 0; i < place_count(&pm, l, e); i++)
                hosts[(size_t)place_ranks(&pm, l, e)[i] * pm.n_experts + e] = 1;
        for (int r = r_first; r <= n_workers; r++) {
            const unsigned char *hr = hosts + (size_t)r * pm.n_experts;
            fprintf(f, "%s rank %d:", r > r_first ? " |" : "", r);
            int any = 0;
            for (int e = 0; e < pm.n_experts;) {
                if (!hr[e]) {
                    e++;
                    continue;
                }
                int e1 = e;
                while (e1 + 1 < pm.n_experts && hr[e1 + 1]) e1++;
                if (e1 > e) fprintf(f, "%s%d-%d", any ? "," : " ", e, e1);
                else fprintf(f, "%s%d", any ? "," : " ", e);
                any = 1;
                e = e1 + 1;
            }
            if (!any) fprintf(f, " -");
        }
        fprintf(f, "\n");
        l = l1 + 1;
    }
    int max_e = 0, sum_e = 0;
    for (int r = r_first; r <= n_workers; r++) {
        int n = rank_experts[r];
        fprintf(f, "rank %d: %d experts, %.2f MiB of expert weights\n", r, n, mib((size_t)n * eb));
        max_e = TM_MAX(max_e, n);
        sum_e += n;
    }
    fprintf(f, "total: %d expert instances, %.2f MiB; max/mean experts per rank %.3f\n", sum_e,
            mib((size_t)sum_e * eb), sum_e ? (double)max_e * (n_workers + 1 - r_first) / sum_e : 0.0);
    free(hosts);
    free(rank_experts);
    place_free(&pm);
    return 0;
}
