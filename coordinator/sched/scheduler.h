/* scheduler.h: the generation loop: a scheduler over sequences that join and
 * leave between steps (continuous batching).
 *
 * coordinator/sched/ owns the loop that `generate` and `serve` both drive.
 * It calls core/ and engine/ only: tokens in, token ids out through a
 * callback; text, stop strings and HTTP belong to the callers.
 *
 * State: max_seqs slots, each with its own KV cache of ctx tokens
 * (tm_state's per-sequence caches) and its own sampler.  A sequence is
 *   queued    sched_add copied its prompt; it waits for a free slot;
 *   prefill   admitted at a step boundary into a free slot; its prompt goes
 *             through the model in chunks of at most `chunk` tokens per step,
 *             in the same forward call as the decoding sequences' tokens;
 *   decode    one token per step: sampled from its last row's logits,
 *             handed to on_token, fed back at the next step;
 *   done      on_token asked to stop, -n reached, an eos id, or the context
 *             is full; on_done gets the reason and the slot is free at once.
 *
 * One step = one forward call over every live sequence's next tokens (the
 * router and the experts see them all at once) and the LM head over the last
 * row of each sequence that finished its prompt or decoded.  Order is fixed
 * (slots ascending), so a run with the same inputs repeats bitwise.
 *
 * Nothing is allocated per step: buffers are sized at sched_init for
 * max_seqs sequences and `chunk` prefill tokens.  Not thread-safe: one
 * thread (rank 0's MPI thread) calls everything here.
 */
#ifndef TM_SCHED_H
#define TM_SCHED_H

#include "common.h"
#include "model.h"
#include "sampler.h"

typedef enum {
    SCHED_STOP_NONE = 0,
    SCHED_STOP_EOS,     /* an eos id of the config or the request */
    SCHED_STOP_LENGTH,  /* max_tokens generated */
    SCHED_STOP_CALLER,  /* on_token returned nonzero (e.g. a stop string) */
    SCHED_STOP_CONTEXT, /* the sequence's KV cache is full */
    SCHED_STOP_ERROR,   /* the forward pass failed: every live sequence ends */
} sched_stop;

const char *sched_stop_name(sched_stop s);

typedef struct {
    sampler_params samp;
    int max_tokens;          /* tokens to generate (>= 1) */
    const int32_t *stop_ids; /* extra ids that end the sequence (e.g. <|im_end|>) */
    int n_stop_ids;
    /* Called with every generated token and its logits [vocab] (for
     * logprobs); return nonzero to stop after this token. */
    int (*on_token)(void *ctx, int32_t id, const float *logits, int vocab);
    /* Called once when the sequence ends, with the number of tokens made. */
    void (*on_done)(void *ctx, sched_stop why, int n_generated);
    void *ctx;
} sched_request;



typedef struct {
    int max_seqs;     /* sequences decoding at once (KV slots) */
    int ctx;          /* KV cache tokens per sequence (prompt + generated) */
    int chunk;        /* most prompt tokens per step over all prefilling sequences */
    int max_queue;    /* sequences waiting for a slot beyond max_seqs */
    /* Optional: told the step number before each forward call (0 first). */
    void (*on_step)(moe_backend *be, int step);
} sched_params;

sched_params sched_default_params(void);

typedef struct sched_slot sched_slot;

typedef struct {
    sched_params p;
    const tm_model *m;
    tm_state s;
    int have_state;
    moe_backend *be;
    const tm_selector *sel;
    sched_slot *slots;  /* [max_seqs] */
    void *queue;        /* [max(max_queue, 1)] ring of waiting sequences */
    int q_head, q_len;
    int32_t *ids;       /* [chunk + max_seqs] tokens of one step */
    int *seq;           /* [chunk + max_seqs] their slots */
    int *rows;          /* [max_seqs] rows whose logits are needed */
    int *row_slot;      /* [max_seqs] the slot of each such row */
    float *logits;      /* [max_seqs, vocab] f32 */
    int step;
    /* statistics */
    uint64_t prompt_tokens, generated_tokens, steps;
} sched;

tm_status sched_init(sched *sc, const tm_model *m, moe_backend *be, const tm_selector *sel, const sched_params *p,
                     tm_err *err);
void sched_free(sched *sc);

/* Queues a sequence: prompt[n] is copied.  TM_EINPUT when the prompt is
 * empty, the prompt and max_tokens do not fit the context, or the queue is
 * full (err says which; nothing is queued). */
tm_status sched_add(sched *sc, const int32_t *prompt, int n, const sched_request *r, tm_err *err);

/* Admits waiting sequences into free slots, runs one forward call and
 * delivers one token to every sequence that reached the end of its prompt
 * or was decoding.  A forward failure ends every live sequence with
 * SCHED_STOP_ERROR and returns the error. */
tm_status sched_step(sched *sc, tm_err *err);

/* During sched_step's forward call (e.g. from an expert selector): the
 * request whose token is row t of the call. */
const sched_request *sched_token_request(const sched *sc, int t);

/* Ends every sequence, running or waiting, with `why` (on_done is called). */
void sched_end_all(sched *sc, sched_stop why);

/* Sequences in slots, and waiting. */
int sched_running(const sched *sc);
int sched_queued(const sched *sc);

/* Ends a sequence early (its client went away): by its ctx pointer.
 * on_done is called with SCHED_STOP_CALLER.  Returns 1 if found. */
int sched_cancel(sched *sc, void *ctx);

#endif
