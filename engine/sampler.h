/* sampler.h: next-token choice from float32 logits: greedy (temperature 0),
 * or temperature with top-k and top-p, from a seeded generator. */
#ifndef TM_SAMPLER_H
#define TM_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temperature; /* 0: greedy */
    int top_k;         /* 0: off */
    float top_p;       /* 1: off */
    uint64_t seed;
} sampler_params;

typedef struct {
    sampler_params p;
    uint64_t state;
    int vocab;
    int *idx;     /* [vocab] candidate order */
    float *prob;  /* [vocab] */
} sampler;

sampler_params sampler_default_params(void);
void sampler_init(sampler *s, const sampler_params *p, int vocab);
void sampler_free(sampler *s);
/* New parameters and seed for the next sequence; keeps the buffers. */
void sampler_reset(sampler *s, const sampler_params *p);
/* Greedy picks the largest logit, ties to the lower id. */
int sampler_sample(sampler *s, const float *logits);
int sampler_argmax(const float *logits, int n);

#endif
