/* scheduler.c: continuous batching over KV slots (see scheduler.h). */
#include "scheduler.h"

#include <stdlib.h>
#include <string.h>

struct sched_slot {
    int used;           /* holds a sequence */
    sched_request r;
    int32_t *prompt;    /* [n_prompt], owned */
    int n_prompt, fed;  /* prompt tokens, and how many went through the model */
    int32_t last;       /* the token to feed at the next decode step */
    int32_t *hist;      /* [n_prompt + max_tokens] prompt then generated, for the penalties */
    int n_gen;          /* tokens generated */
    sampler smp;        /* sized for the vocabulary once, re-seeded per sequence */
};

typedef struct {
    int32_t *prompt;
    int n;
    sched_request r;
} pending;

const char *sched_stop_name(sched_stop s)
{
    switch (s) {
    case SCHED_STOP_EOS: return "eos";
    case SCHED_STOP_LENGTH: return "length";
    case SCHED_STOP_CALLER: return "stop";
    case SCHED_STOP_CONTEXT: return "context";
    case SCHED_STOP_ERROR: return "error";
    default: return "none";
    }
}

sched_params sched_default_params(void)
{
    sched_params p = {.max_seqs = 16, .ctx = 4096, .chunk = 512, .max_queue = 64, .on_step = NULL};
    return p;
}

tm_status sched_init(sched *sc, const tm_model *m, moe_backend *be, const tm_selector *sel, const sched_params *p,
                     tm_err *err)
{
    memset(sc, 0, sizeof *sc);
    if (p->max_seqs < 1 || p->chunk < 1 || p->ctx < 2 || p->max_queue < 0)
        return tm_errf(err, TM_EINPUT, "scheduler: max_seqs %d, chunk %d, ctx %d, queue %d: each must be positive",
                       p->max_seqs, p->chunk, p->ctx, p->max_queue);
    sc->p = *p;
    sc->m = m;
    sc->be = be;
    sc->sel = sel;
    const int V = m->cfg.vocab_size, tmax = p->chunk + p->max_seqs;
    tm_status st = state_init_batch(&sc->s, m, p->max_seqs, p->ctx, tmax, err);
    if (st != TM_OK) return st;
    sc->have_state = 1;
    sc->slots = tm_calloc((size_t)p->max_seqs, sizeof *sc->slots);
    sampler_params dp = sampler_default_params();
    for (int i = 0; i < p->max_seqs; i++) sampler_init(&sc->slots[i].smp, &dp, V);
    sc->queue = tm_calloc((size_t)TM_MAX(p->max_queue, 1), sizeof(pending));
    sc->ids = tm_malloc(sizeof(int32_t) * (size_t)tmax);
    sc->seq = tm_malloc(sizeof(int) * (size_t)tmax);
    sc->rows = tm_malloc(sizeof(int) * (size_t)p->max_seqs);
    sc->row_slot = tm_malloc(sizeof(int) * (size_t)p->max_seqs);
    sc->logits = tm_malloc(sizeof(float) * (size_t)V * (size_t)p->max_seqs);
    return TM_OK;
}

void sched_free(sched *sc)
{
    if (sc->slots) {
        for (int i = 0; i < sc->p.max_seqs; i++) {
            free(sc->slots[i].prompt);
            free(sc->slots[i].hist);
            sampler_free(&sc->slots[i].smp);
        }
    }
    pending *q = sc->queue;
    for (int i = 0; q && i < sc->q_len; i++) free(q[(sc->q_head + i) % TM_MAX(sc->p.max_queue, 1)].prompt);
    free(sc->slots);
    free(sc->queue);
    free(sc->ids);
    free(sc->seq);
    free(sc->rows);
    free(sc->row_slot);
    free(sc->logits);
    if (sc->have_state) state_free(&sc->s);
    memset(sc, 0, sizeof *sc);
}

int sched_running(const sched *sc)
{
    int n = 0;
    for (int i = 0; i < sc->p.max_seqs; i++) n += sc->slots[i].used;
    return n;
}

int sched_queued(const sched *sc) { return sc->q_len; }

const sched_request *sched_token_request(const sched *sc, int t) { return &sc->slots[sc->seq[t]].r; }

tm_status sched_add(sched *sc, const int32_t *prompt, int n, const sched_request *r, tm_err *err)
{
    if (n < 1) return tm_errf(err, TM_EINPUT, "empty prompt");
    if (n > sc->p.ctx)
        return tm_errf(err, TM_EINPUT, "prompt of %d tokens is longer than the context of %d tokens", n, sc->p.ctx);
    if (r->max_tokens < 1) return tm_errf(err, TM_EINPUT, "max_tokens %d: must be at least 1", r->max_tokens);
    const int V = sc->m->cfg.vocab_size;
    for (int i = 0; i < n; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return tm_errf(err, TM_EINPUT, "token id %d at position %d is outside the vocabulary (0..%d)", prompt[i],
                           i, V - 1);
    int qcap = TM_MAX(sc->p.max_queue, 1);
    if (sc->q_len >= sc->p.max_queue && sched_running(sc) >= sc->p.max_seqs)
        return tm_errf(err, TM_EINPUT, "queue full: %d sequences running and %d waiting", sc->p.max_seqs, sc->q_len);
    if (sc->q_len >= qcap) /* max_queue 0: a free slot takes it at the next step */
        return tm_errf(err, TM_EINPUT, "queue full: %d waiting", sc->q_len);
    pending *q = sc->queue;
    pending *e = &q[(sc->q_head + sc->q_len) % qcap];
    e->prompt = tm_malloc(sizeof(int32_t) * (size_t)n);
    memcpy(e->prompt, prompt, sizeof(int32_t) * (size_t)n);
    e->n = n;
    e->r = *r;
    sc->q_len++;
    return TM_OK;
}

static void slot_end(sched *sc, sched_slot *sl, sched_stop why)
{
    sched_request r = sl->r;
    int n = sl->n_gen;
    free(sl->prompt);
    free(sl->hist);
    sl->prompt = NULL;
    sl->hist = NULL;
    sl->used = 0;
    if (r.on_done) r.on_done(r.ctx, why, n);
    (void)sc;
}

/* Moves waiting sequences into free slots, first come first served. */
static void admit(sched *sc)
{
    int qcap = TM_MAX(sc->p.max_queue, 1);
    pending *q = sc->queue;
    for (int i = 0; i < sc->p.max_seqs && sc->q_len > 0; i++) {
        sched_slot *sl = &sc->slots[i];
        if (sl->used) continue;
        pending *e = &q[sc->q_head];
        sc->q_head = (sc->q_head + 1) % qcap;
        sc->q_len--;
        sl->used = 1;
        sl->r = e->r;
        sl->prompt = e->prompt;
        sl->n_prompt = e->n;
        sl->fed = 0;
        sl->n_gen = 0;
        sl->hist = tm_malloc(sizeof(int32_t) * (size_t)(e->n + e->r.max_tokens));
        memcpy(sl->hist, e->prompt, sizeof(int32_t) * (size_t)e->n);
        sampler_reset(&sl->smp, &e->r.samp);
        sc->s.seq_len[i] = 0; /* the slot's KV cache starts empty */
        e->prompt = NULL;
    }
}

int sched_cancel(sched *sc, void *ctx)
{
    for (int i = 0; i < sc->p.max_seqs; i++)
        if (sc->slots[i].used && sc->slots[i].r.ctx == ctx) {
            slot_end(sc, &sc->slots[i], SCHED_STOP_CALLER);
            return 1;
        }
    int qcap = TM_MAX(sc->p.max_queue, 1);
    pending *q = sc->queue;
    for (int i = 0; i < sc->q_len; i++) {
        pending *e = &q[(sc->q_head + i) % qcap];
        if (e->r.ctx != ctx) continue;
        sched_request r = e->r;
        free(e->prompt);
        for (int j = i; j + 1 < sc->q_len; j++) q[(sc->q_head + j) % qcap] = q[(sc->q_head + j + 1) % qcap];
        sc->q_len--;
        if (r.on_done) r.on_done(r.ctx, SCHED_STOP_CALLER, 0);
        return 1;
    }
    return 0;
}

void sched_end_all(sched *sc, sched_stop why)
{
    for (int i = 0; i < sc->p.max_seqs; i++)
        if (sc->slots[i].used) slot_end(sc, &sc->slots[i], why);
    int qcap = TM_MAX(sc->p.max_queue, 1);
    pending *q = sc->queue;
    while (sc->q_len > 0) {
        pending *e = &q[sc->q_head];
        sc->q_head = (sc->q_head + 1) % qcap;
        sc->q_len--;
        free(e->prompt);
        e->prompt = NULL;
        if (e->r.on_done) e->r.on_done(e->r.ctx, why, 0);
    }
}

/* The step's tokens: each decoding sequence's last token, and prompt chunks
 * up to the chunk budget; slots ascending.  Returns the token count; fills
 * the rows whose logits are sampled. */
static int gather(sched *sc, int *n_rows)
{
    int T = 0, budget = sc->p.chunk;
    *n_rows = 0;
    for (int i = 0; i < sc->p.max_seqs; i++) {
        sched_slot *sl = &sc->slots[i];
        if (!sl->used) continue;
        if (sl->fed < sl->n_prompt) {
            int take = TM_MIN(sl->n_prompt - sl->fed, budget);
            if (take <= 0) continue;
            for (int j = 0; j < take; j++) {
                sc->ids[T] = sl->prompt[sl->fed + j];
                sc->seq[T++] = i;
            }
            sl->fed += take;
            budget -= take;
            sc->prompt_tokens += (uint64_t)take;
            if (sl->fed < sl->n_prompt) continue; /* more of the prompt next step */
        } else {
            sc->ids[T] = sl->last;
            sc->seq[T++] = i;
        }
        sc->rows[*n_rows] = T - 1;
        sc->row_slot[(*n_rows)++] = i;
    }
    return T;
}

/* Samples each row's next token and decides whether its sequence goes on. */
static void deliver(sched *sc, int n_rows)
{
    const int V = sc->m->cfg.vocab_size;
    for (int i = 0; i < n_rows; i++) {
        sched_slot *sl = &sc->slots[sc->row_slot[i]];
        float *lg = sc->logits + (size_t)i * V;
        sampler_apply_penalties(&sl->smp, lg, sl->hist, sl->n_prompt + sl->n_gen);
        int32_t next = sampler_sample(&sl->smp, lg);
        sl->hist[sl->n_prompt + sl->n_gen] = next;
        sl->n_gen++;
        sc->generated_tokens++;
        int caller = sl->r.on_token ? sl->r.on_token(sl->r.ctx, next, lg, V) : 0;
        sched_stop why = SCHED_STOP_NONE;
        int eos = cfg_is_eos(&sc->m->cfg, next);
        for (int j = 0; !eos && j < sl->r.n_stop_ids; j++) eos = next == sl->r.stop_ids[j];
        if (eos) why = SCHED_STOP_EOS;
        else if (caller) why = SCHED_STOP_CALLER;
        else if (sl->n_gen >= sl->r.max_tokens) why = SCHED_STOP_LENGTH;
        else if (sc->s.seq_len[sc->row_slot[i]] >= sc->p.ctx) why = SCHED_STOP_CONTEXT;
        if (why != SCHED_STOP_NONE) slot_end(sc, sl, why);
        else sl->last = next;
    }
}

tm_status sched_step(sched *sc, tm_err *err)
{
    admit(sc);
    int n_rows = 0;
    int T = gather(sc, &n_rows);
    if (T == 0) return TM_OK;
    if (sc->p.on_step) sc->p.on_step(sc->be, sc->step);
    sc->step++;
    sc->steps++;
    tm_status st = model_forward_rows(sc->m, &sc->s, sc->ids, sc->seq, T, sc->be, sc->sel, sc->rows, n_rows,
                                      sc->logits, err);
    if (st != TM_OK) {
        sched_end_all(sc, SCHED_STOP_ERROR);
        return st;
    }
    deliver(sc, n_rows);
    return TM_OK;
}
