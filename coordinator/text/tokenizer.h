/* tokenizer.h: Qwen's byte-level BPE tokenizer (Hugging Face tokenizer.json),
 * decode, streaming decode and the Qwen3 chat template.
 *
 * coordinator/text/ owns text: this tokenizer (tokenizer.c) and its
 * pre-tokenizer (tok_pretok.c).  It calls only core/ (plus utf8proc and
 * cJSON); the commands call it.
 *
 * Encode pipeline, matching Hugging Face `tokenizers` on Qwen2/Qwen3 files:
 *   1. added_tokens are matched literally in the raw text first (leftmost, then
 *      longest) and emitted as their ids; they never reach the steps below;
 *   2. each stretch between them is NFC-normalized (utf8proc);
 *   3. it is split into pre-tokens by Qwen's Split regex
 *        (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
 *        ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *      implemented by hand: \p{L} and \p{N} from utf8proc's general categories,
 *      \s is Unicode White_Space (so U+0085 and U+3000 are spaces, U+001C..U+001F
 *      are not), and the contraction group folds ASCII case only;
 *   4. each pre-token's UTF-8 bytes go through BPE, merges applied lowest rank
 *      first.  The GPT-2 byte-to-unicode map is undone once at load, so the
 *      tables are keyed by raw bytes and no per-call mapping is needed.
 * No BOS/EOS is added.
 *
 * Character classes come from the installed utf8proc (Debian 12: Unicode 13),
 * plus a table of the letters and numbers assigned since, up to Unicode 17
 * (tok_pretok.c).  NFC is utf8proc's alone: the few canonical compositions and
 * combining classes added after its Unicode version are not applied.
 *
 * tokenizer.json features outside Qwen's use (other pre-tokenizers or regexes,
 * byte_fallback, added tokens with lstrip/rstrip/single_word, normalizers other
 * than NFC) are refused by tok_load with a message naming the field, rather than
 * tokenized differently from Hugging Face.
 *
 * Thread safety: a loaded tokenizer may be used from several threads at once.
 * tok_encode keeps a per-pre-token cache behind a try-lock: a call that finds it
 * busy runs uncached and gives the same ids.
 */
#ifndef TM_TOKENIZER_H
#define TM_TOKENIZER_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tok_tokenizer tok_tokenizer;

/* Load tokenizer.json.  Errors name the file and field, e.g.
 * "tokenizer.json: model.merges[12]: unknown token 'xyz'". */
tm_status tok_load(const char *path, tok_tokenizer **out, tm_err *err);
void tok_free(tok_tokenizer *t);

/* Encode len bytes of UTF-8 text (NUL bytes inside are ordinary characters).
 * *ids is malloc'd (the caller frees it; non-NULL even when *n == 0).
 * Invalid UTF-8 is rejected, never replaced: the call returns TM_EINPUT with
 * "invalid UTF-8 at byte N" and sets *ids = NULL, *n = 0.  Empty text gives
 * TM_OK with *n == 0. */
tm_status tok_encode(const tok_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n,
                     tm_err *err);

/* Concatenate the tokens' bytes and decode them as UTF-8 the way Hugging Face
 * does (errors="replace": each maximal invalid subsequence becomes U+FFFD).
 * Added tokens decode to their literal text; ids outside [0, vocab) are skipped.
 * Returns a malloc'd NUL-terminated string; *len (may be NULL) excludes the NUL. */
char *tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, size_t *len);

/* Id of a token given by its exact text: an added token ("<|im_end|>") or a
 * vocab entry in byte-level form ("Ġthe").  -1 when there is none. */
int32_t tok_token_id(const tok_tokenizer *t, const char *token);

/* One more than the largest id (vocab and added tokens). */
size_t tok_vocab_size(const tok_tokenizer *t);

/* The raw bytes of one token (not NUL-terminated); NULL for an unknown id. */
const char *tok_token_bytes(const tok_tokenizer *t, int32_t id, size_t *len);

/* Longest raw byte length of any token. */
size_t tok_max_token_len(const tok_tokenizer *t);

/* Streaming decode: push ids one at a time; only complete UTF-8 characters are
 * written, so a character split across tokens appears once its last byte has
 * arrived.  The concatenated output of all pushes and the final flush equals
 * tok_decode of the whole sequence.  No allocation. */
typedef struct {
    const tok_tokenizer *t;
    uint8_t pend[4]; /* bytes of an incomplete character, waiting for the rest */
    uint8_t n_pend;
} tok_stream;

/* Output bound for one push or flush: cap must be at least this (asserted). */
size_t tok_stream_cap(const tok_tokenizer *t);

void tok_stream_init(tok_stream *s, const tok_tokenizer *t);
/* Returns the number of bytes written to out (no NUL is added). */
size_t tok_stream_push(tok_stream *s, int32_t id, char *out, size_t cap);
/* Emits what is left (an incomplete character becomes U+FFFD) and resets s. */
size_t tok_stream_flush(tok_stream *s, char *out, size_t cap);

/* Qwen3 chat template for one user turn with the generation prompt:
 *   "<|im_start|>system\n{sys}<|im_end|>\n"            (only when sys != NULL)
 *   "<|im_start|>user\n{msg}<|im_end|>\n<|im_start|>assistant\n"
 * Returns a malloc'd string. */
char *tok_chat_prompt(const char *system_or_null, const char *user);
/* The same template over a conversation: one turn per (role, content), then
 * the assistant's open turn.  malloc'd. */
char *tok_chat_render(const char *const *roles, const char *const *contents, int n);

/* ---- parts shared between tokenizer.c and tok_pretok.c ---- */

/* End (byte offset) of the pre-token that starts at byte i of NFC, valid
 * UTF-8 text s[0, len); i < len.  Pre-tokens tile the text without gaps. */
size_t tok_pretok_next(const uint8_t *s, size_t len, size_t i);

/* Length of the valid UTF-8 character at s[0, n) (1..4), or 0 when the bytes
 * there do not start one; then *bad (may be NULL) is the length of the maximal
 * subpart to replace by U+FFFD (1..3), or 0 when s holds a valid but incomplete
 * prefix that more bytes could finish. */
size_t tok_utf8_char(const uint8_t *s, size_t n, size_t *bad);

/* NFC of valid UTF-8 s[0, len): returns s itself when it is already NFC for
 * sure (every code point below U+0300), else a malloc'd copy in *owned. */
tm_status tok_nfc(const uint8_t *s, size_t len, const uint8_t **out, size_t *out_len, uint8_t **owned,
                  tm_err *err);

/* Pre-tokens of at least this many bytes take the O(n log n) heap BPE instead
 * of the O(n^2) scan (same ids; tests lower it to compare the two). */
extern size_t tok_bpe_heap_min;

#endif
