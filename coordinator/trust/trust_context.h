/* trust_context.h: request contexts as k-means clusters of the
 * L2-normalised mean hidden state of a prompt.
 *
 * Fit: Lloyd's k-means with k-means++ seeding (seeded, deterministic) on the
 * normalised rows.  Centroids are the plain means of their members and are
 * not renormalised, so classification follows the research system:
 *     x^ = x / ||x||,  c = argmin_j ||x^ - centroid_j||,
 *     d  = ||x^ - centroid_c||,  confidence = exp(-d^2)  in (0, 1].
 * Context c is named "context_<c>".
 */
#ifndef TM_TRUST_CONTEXT_H
#define TM_TRUST_CONTEXT_H

#include <stdint.h>

#include "common.h"

typedef struct {
    int k;            /* number of contexts; default 8                  */
    int max_iter;     /* Lloyd iterations at most; default 100          */
    uint64_t seed;    /* k-means++ seeding stream; default 42           */
} trust_kmeans_params;

trust_kmeans_params trust_kmeans_default_params(void);

typedef struct {
    int k, dim;
    float *centroids;   /* [k, dim] f32, means of normalised members */
    int64_t *n_samples; /* [k] members at fit time                   */
} trust_contexts;

/* Allocate k zeroed centroids.  trust_contexts_free on a zeroed struct is a
 * no-op. */
void trust_contexts_init(trust_contexts *c, int k, int dim);
void trust_contexts_free(trust_contexts *c);

/* Fit on x[n, dim] f32 (raw mean hidden states; normalised here).
 * assign[n] (optional) receives each row's cluster.  Needs n >= k and no
 * all-zero row. */
tm_status trust_contexts_fit(trust_contexts *c, const float *x, int n, int dim,
                             const trust_kmeans_params *p, int32_t *assign, tm_err *err);

/* Nearest context of x[dim] (raw; normalised here).  dist and conf are
 * optional outputs.  Returns the context index; -1 for an all-zero x. */
int trust_contexts_classify(const trust_contexts *c, const float *x, float *dist, float *conf);

/* mean[dim] = mean over the T rows of h[T, dim] f32 (the prompt's hidden
 * states at the layer chosen for contexts). */
void trust_context_mean(const float *h, int T, int dim, float *mean);

/* "context_<c>" into buf (size >= 24). */
void trust_context_name(int c, char *buf, size_t size);

#endif
