/* arena.c: huge-page-backed bump allocation for weights (arena.h). */
#include "arena.h"

#include "common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)
#define ALIGN 64

/* `bytes` (a multiple of HUGE_PAGE) of anonymous memory starting on a
 * HUGE_PAGE boundary, so that the kernel can back all of it with huge
 * pages. */
static void *map_chunk(size_t bytes)
{
    size_t span = bytes + HUGE_PAGE;
    char *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "trustmoe: out of memory mapping %zu bytes for weights\n", bytes);
        abort();
    }
    char *start = (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (start > p) munmap(p, (size_t)(start - p));
    char *end = start + bytes;
    if (p + span > end) munmap(end, (size_t)(p + span - end));
#ifdef MADV_HUGEPAGE
    madvise(start, bytes, MADV_HUGEPAGE); /* a hint: fails harmlessly without THP */
#endif
    return start;
}

static char *add_chunk(tm_arena *a, size_t bytes)
{
    a->chunk = tm_realloc(a->chunk, sizeof *a->chunk * (size_t)(a->n + 1));
    a->size = tm_realloc(a->size, sizeof *a->size * (size_t)(a->n + 1));
    a->chunk[a->n] = map_chunk(bytes);
    a->size[a->n] = bytes;
    return a->chunk[a->n++];
}

void *tm_arena_alloc(tm_arena *a, size_t bytes)
{
    size_t need = ((bytes ? bytes : 1) + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (need > TM_ARENA_CHUNK / 2) /* a chunk of its own; the one being filled stays open */
        return add_chunk(a, (need + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
    if (!a->next || need > (size_t)(a->end - a->next)) {
        a->next = add_chunk(a, TM_ARENA_CHUNK);
        a->end = a->next + TM_ARENA_CHUNK;
    }
    void *p = a->next;
    a->next += need;
    return p;
}

void tm_arena_free(tm_arena *a)
{
    for (int i = 0; i < a->n; i++) munmap(a->chunk[i], a->size[i]);
    free(a->chunk);
    free(a->size);
    memset(a, 0, sizeof *a);
}
