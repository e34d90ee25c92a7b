/* sampler.h: next-token choice from float32 logits: greedy (temperature 0),
 * or temperature with top-k, top-p and min-p, from a seeded generator;
 * repetition, presence and frequency penalties over the recent tokens; stop
 * strings.  The parameters are what a request may set, so every front end
 * (command line, a server) shares them and their defaults. */
#ifndef TM_SAMPLER_H
#define TM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* sampler_params.seed: draw a seed at sampler_init (s->p.seed then holds it). */
#define SAMPLER_SEED_RANDOM UINT64_MAX
#define SAMPLER_MAX_STOP 16

typedef struct {
    float temperature;       /* 0: greedy (default 0.8) */
    int top_k;               /* 0: off (default 40) */
    float top_p;             /* 1: off (default 0.95) */
    float min_p;             /* 0: off; drops tokens below min_p × the top token's probability */
    float repeat_penalty;    /* 1 (or 0): off; a token seen in the window has its logit divided by it
                                when positive, multiplied when negative (llama.cpp, Hugging Face) */
    float presence_penalty;  /* 0: off; subtracted once from the logit of each token seen */
    float frequency_penalty; /* 0: off; subtracted once per occurrence */
    int penalty_last_n;      /* the window: the last N tokens, prompt included (default 64; -1: all) */
    uint64_t seed;           /* SAMPLER_SEED_RANDOM (default): drawn at init */
    const char *stop[SAMPLER_MAX_STOP]; /* strings that end generation; the text stops before them */
    int n_stop;
} sampler_params;

typedef struct {
    sampler_params p;
    uint64_t state;
    int vocab;
    int *idx;     /* [vocab] candidate order */
    float *prob;  /* [vocab] */
    int *count;   /* [vocab] occurrences in the penalty window; zero between calls */
} sampler;

sampler_params sampler_default_params(void);
/* Sets the fields generation_config.json in dir gives (temperature, top_k,
 * top_p, min_p, repetition_penalty; the names vLLM reads) and *max_new_tokens
 * when it has max_new_tokens (else leaves it).  A missing file is not an
 * error; a malformed one is (TM_EINPUT, naming the file and field). */
tm_status sampler_read_generation_config(const char *dir, sampler_params *p, int *max_new_tokens, tm_err *err);
void sampler_init(sampler *s, const sampler_params *p, int vocab);
void sampler_free(sampler *s);
/* New parameters and seed for the next sequence; keeps the buffers. */
void sampler_reset(sampler *s, const sampler_params *p);
/* Applies the penalties to logits in place from the tokens hist[0..n)
 * (oldest first); nothing when they are off. */
void sampler_apply_penalties(sampler *s, float *logits, const int32_t *hist, int n);
/* Greedy picks the largest logit, ties to the lower id. */
int sampler_sample(sampler *s, const float *logits);
int sampler_argmax(const float *logits, int n);
/* The offset of the first stop string in text[0..len), or -1. */
long sampler_stop_find(const sampler_params *p, const char *text, size_t len);
/* After text[before, len) was appended to text[0, before), whose stop
 * strings were already searched: the length to keep when a stop string
 * now ends it (the text before that stop), else -1.  Only matches that reach
 * into the new part are searched. */
long sampler_stop_cut(const sampler_params *p, const char *text, size_t before, size_t len);
/* How many bytes at the end of text[0..len) could begin a stop string: a
 * stream holds them back until it knows. */
size_t sampler_stop_holdback(const sampler_params *p, const char *text, size_t len);

#endif
