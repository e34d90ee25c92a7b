/* trust_rng.h: the deterministic random numbers of the trust modules
 * (exploration in the selector, k-means++ seeding).
 *
 * splitmix64: one 64-bit word of state, full period 2^64, and the same
 * stream on every platform for a given seed, so a seeded run repeats. */
#ifndef TM_TRUST_RNG_H
#define TM_TRUST_RNG_H

#include <stdint.h>

static inline uint64_t trust_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform double in [0, 1) from the top 53 bits. */
static inline double trust_rng_uniform(uint64_t *state)
{
    return (double)(trust_rng_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; the bias is
 * below 2^-32 for the n used here). */
static inline uint32_t trust_rng_below(uint64_t *state, uint32_t n)
{
    return (uint32_t)(((trust_rng_next(state) >> 32) * (uint64_t)n) >> 32);
}

#endif
