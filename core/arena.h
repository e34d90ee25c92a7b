/* arena.h: memory for weights, in large chunks backed by transparent huge
 * pages where the kernel offers them (madvise mode or always).
 *
 * Decode streams every weight once per token, so a 4 KiB page costs a TLB
 * miss every 4 KiB of the stream; in 2 MiB pages the misses all but vanish
 * (measured: bench/RESULTS.md).  Allocations are bump-allocated, 64-byte
 * aligned, from chunks of TM_ARENA_CHUNK bytes (a larger request gets a chunk
 * of its own) and are freed only all together.
 */
#ifndef TM_ARENA_H
#define TM_ARENA_H

#include <stddef.h>

#define TM_ARENA_CHUNK ((size_t)64 << 20)

/* All zero is an empty arena. */
typedef struct {
    void **chunk;   /* [n] mapped chunks */
    size_t *size;   /* [n] their lengths */
    int n;
    char *next;     /* the free part of the chunk being filled: [next, end); NULL if none */
    char *end;
} tm_arena;

/* Zero-filled memory of `bytes` bytes (at least 1), 64-byte aligned; aborts
 * with a message if the system is out of memory, like tm_malloc. */
void *tm_arena_alloc(tm_arena *a, size_t bytes);
/* Unmaps everything; the arena is empty (and reusable) afterwards. */
void tm_arena_free(tm_arena *a);

#endif
