/* tokenizer.c: load tokenizer.json, BPE encode with a per-pre-token cache,
 * decode, streaming decode, chat template.  See tokenizer.h for the pipeline;
 * the pre-tokenizer and UTF-8/NFC helpers are in tok_pretok.c. */
#include "tokenizer.h"
#include "input.h"

#include <cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The only Split regex this tokenizer implements (tok_pretok.c). */
static const char QWEN_SPLIT_RE[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

#define TOK_NO_LEN UINT32_MAX /* tok_len of an id that no token has */

/* ---- hashing ---- */

static inline uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 29);
}

static inline uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* ---- the per-pre-token cache ---- */

#define TOK_CACHE_SLOTS (1u << 17)
#define TOK_CACHE_MAX_ENTRIES (TOK_CACHE_SLOTS / 2)
#define TOK_CACHE_MAX_KEY 64 /* longer pre-tokens are rare and not worth keeping */
#define TOK_CACHE_KEY_BYTES (TOK_CACHE_MAX_ENTRIES * 16u)
#define TOK_CACHE_IDS (TOK_CACHE_MAX_ENTRIES * 4u)

typedef struct {
    uint64_t h;
    uint32_t key_off, key_len;
    uint32_t ids_off, n_ids;
} tok_cache_entry;

typedef struct {
    pthread_mutex_t mu;
    uint32_t *slots;        /* [TOK_CACHE_SLOTS] entry index + 1, 0 = empty */
    tok_cache_entry *ent;   /* [TOK_CACHE_MAX_ENTRIES] */
    uint8_t *keys;          /* [TOK_CACHE_KEY_BYTES] pre-token bytes */
    int32_t *ids;           /* [TOK_CACHE_IDS] */
    size_t n_ent, keys_len, ids_len;
} tok_cache;

/* ---- the tokenizer ---- */

typedef struct {
    uint64_t key; /* (left id << 32) | right id; UINT64_MAX = empty slot */
    uint32_t rank;
    int32_t id;   /* the merged token */
} tok_merge;

typedef struct {
    int32_t id;
    uint32_t off, len; /* content in t->bytes */
} tok_added;

struct tok_tokenizer {
    size_t n_ids;       /* vocab size: largest id + 1 */
    uint32_t *tok_off;  /* [n_ids] raw bytes of each id in bytes[] */
    uint32_t *tok_len;  /* [n_ids] TOK_NO_LEN for an id without a token */
    uint8_t *bytes;     /* every token's raw bytes */
    size_t max_tok_len;

    int32_t *vslots;    /* [vmask + 1] model.vocab raw bytes -> id, -1 empty */
    size_t vmask;
    tok_merge *mslots;  /* [mmask + 1] */
    size_t mmask;
    int32_t byte_id[256];
    int ignore_merges;

    tok_added *added;   /* [n_added] sorted by length, longest first */
    size_t n_added;
    uint8_t added_first[256]; /* 1 where an added token starts with that byte */

    tok_cache *cache;   /* mutable through a const tokenizer: it is a cache */
};

static int32_t vocab_find(const tok_tokenizer *t, const uint8_t *p, size_t n)
{
    size_t i = hash_bytes(p, n) & t->vmask;
    for (;; i = (i + 1) & t->vmask) {
        int32_t id = t->vslots[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == n && !memcmp(t->bytes + t->tok_off[id], p, n)) return id;
    }
}

static void vocab_insert(tok_tokenizer *t, int32_t id)
{
    size_t i = hash_bytes(t->bytes + t->tok_off[id], t->tok_len[id]) & t->vmask;
    while (t->vslots[i] >= 0) i = (i + 1) & t->vmask;
    t->vslots[i] = id;
}

static inline const tok_merge *merge_find(const tok_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = hash_u64(key) & t->mmask;
    for (;; i = (i + 1) & t->mmask) {
        const tok_merge *m = &t->mslots[i];
        if (m->key == key) return m;
        if (m->key == UINT64_MAX) return NULL;
    }
}

/* ---- loading ---- */

/* GPT-2 bytes_to_unicode, inverted: code point -> byte, -1 outside the map.
 * Bytes 33..126, 161..172, 174..255 stand for themselves; the other 68, in
 * ascending order, are U+0100 + n. */
static void byte_level_inverse(int16_t inv[0x144])
{
    int n = 0;
    for (int c = 0; c < 0x144; c++) inv[c] = -1;
    for (int b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) inv[b] = (int16_t)b;
        else inv[0x100 + n++] = (int16_t)b;
    }
}

/* Byte-level token text -> raw bytes in out (room for strlen(s) bytes).
 * Returns the length, or -1 when s has a character outside the map. */
static long byte_level_to_raw(const int16_t inv[0x144], const char *s, uint8_t *out, size_t cap)
{
    const uint8_t *p = (const uint8_t *)s;
    long n = 0;
    while (*p) {
        if ((size_t)n >= cap) return -1; /* longer than any token: cannot match, must not overflow */
        uint32_t c;
        if (p[0] < 0x80) c = *p++;
        else if ((p[0] & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) {
            c = ((uint32_t)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
            p += 2;
        } else
            return -1;
        if (c >= 0x144 || inv[c] < 0) return -1;
        out[n++] = (uint8_t)inv[c];
    }
    return n;
}

static int json_is_true(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static int json_is_type(const cJSON *o, const char *type)
{
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(ty) && !strcmp(ty->valuestring, type);
}

/* Ids a tokenizer of n tokens may use: real vocabularies are dense, with a
 * few reserved ids between the vocab and the added tokens. */
static size_t tok_id_limit(size_t n) { return 2 * n + 4096; }

/* A JSON number that is an id: an integer in [0, 2^31 - 1). */
static int json_id(const cJSON *v, int32_t *id)
{
    int i;
    if (!tm_json_i32(v, 0, INT32_MAX - 1, &i)) return 0;
    *id = i;
    return 1;
}

/* Quote a token for an error message, cut to a readable length. */
static const char *quoted(const char *s, char buf[64])
{
    snprintf(buf, 64, "'%.*s%s'", 48, s, strlen(s) > 48 ? "..." : "");
    return buf;
}

static tm_status check_pipeline(const char *path, const cJSON *root, tm_err *err)
{
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm) && !json_is_type(norm, "NFC"))
        return tm_errf(err, TM_EINPUT, "%s: normalizer: only NFC (or null) is supported", path);

    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *list = json_is_type(pre, "Sequence") ? cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers") : NULL;
    const cJSON *split = cJSON_GetArrayItem(list, 0), *bl = cJSON_GetArrayItem(list, 1);
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(split, "pattern"), "Regex");
    const cJSON *beh = cJSON_GetObjectItemCaseSensitive(split, "behavior");
    if (cJSON_GetArraySize(list) != 2 || !json_is_type(split, "Split") || !cJSON_IsString(re) ||
        strcmp(re->valuestring, QWEN_SPLIT_RE) || !cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") ||
        json_is_true(split, "invert") || !json_is_type(bl, "ByteLevel") || json_is_true(bl, "add_prefix_space") ||
        json_is_true(bl, "use_regex"))
        return tm_errf(err, TM_EINPUT,
                       "%s: pre_tokenizer: only Qwen's Sequence[Split(regex, Isolated), ByteLevel(use_regex=false)] "
                       "is supported",
                       path);

    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return tm_errf(err, TM_EINPUT, "%s: model: missing", path);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (ty && !json_is_type(model, "BPE"))
        return tm_errf(err, TM_EINPUT, "%s: model.type: only BPE is supported", path);
    if (json_is_true(model, "byte_fallback"))
        return tm_errf(err, TM_EINPUT, "%s: model.byte_fallback: not supported", path);
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(model, affix[i]);
        if (cJSON_IsString(a) && a->valuestring[0])
            return tm_errf(err, TM_EINPUT, "%s: model.%s: not supported", path, affix[i]);
    }
    return TM_OK;
}

/* Pass 1 over vocab and added_tokens: checks each id and sizes the tables
 * (ids up to the largest, one byte arena for every token's text). */
static tm_status size_tables(tok_tokenizer *t, const char *path, const cJSON *vocab, const cJSON *added,
                             size_t *n_added_out, size_t *n_bytes_out, tm_err *err)
{
    char q1[64];
    size_t n_vocab = 0, n_added = 0, n_bytes = 0;
    int32_t max_id = -1, id;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab)
    {
        if (!json_id(e, &id))
            return tm_errf(err, TM_EINPUT, "%s: model.vocab[%s]: id is not a non-negative integer", path,
                           quoted(e->string, q1));
        max_id = TM_MAX(max_id, id);
        n_bytes += strlen(e->string);
        n_vocab++;
    }
    size_t ai = 0;
    cJSON_ArrayForEach(e, added)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id) || !cJSON_IsString(c) || !c->valuestring[0])
            return tm_errf(err, TM_EINPUT, "%s: added_tokens[%zu]: needs an integer id and non-empty content",
                           path, ai);
        if (json_is_true(e, "lstrip") || json_is_true(e, "rstrip") || json_is_true(e, "single_word"))
            return tm_errf(err, TM_EINPUT, "%s: added_tokens[%zu]: lstrip/rstrip/single_word are not supported",
                           path, ai);
        max_id = TM_MAX(max_id, id);
        n_bytes += strlen(c->valuestring);
        n_added++;
        ai++;
    }
    if (n_vocab == 0) return tm_errf(err, TM_EINPUT, "%s: model.vocab: empty", path);
    /* the id tables are indexed by id: allocate by what is present, not by
     * whatever id a file names */
    if ((size_t)max_id >= tok_id_limit(n_vocab + n_added))
        return tm_errf(err, TM_EINPUT, "%s: model.vocab: id %d is far beyond the %zu tokens present (at most %zu)",
                       path, (int)max_id, n_vocab + n_added, tok_id_limit(n_vocab + n_added) - 1);

    t->n_ids = (size_t)max_id + 1;
    t->tok_off = tm_malloc(t->n_ids * sizeof *t->tok_off);
    t->tok_len = tm_malloc(t->n_ids * sizeof *t->tok_len);
    for (size_t i = 0; i < t->n_ids; i++) t->tok_len[i] = TOK_NO_LEN;
    t->bytes = tm_malloc(n_bytes + 1);
    t->vmask = pow2_at_least(n_vocab * 2) - 1;
    t->vslots = tm_malloc((t->vmask + 1) * sizeof *t->vslots);
    memset(t->vslots, 0xff, (t->vmask + 1) * sizeof *t->vslots);
    *n_added_out = n_added;
    *n_bytes_out = n_bytes;
    return TM_OK;
}

/* Pass 2: vocab entries, stored as raw bytes from *off on; every byte must
 * have a token of its own. */
static tm_status load_vocab(tok_tokenizer *t, const char *path, const cJSON *vocab, const int16_t *inv,
                            size_t n_bytes, size_t *off, tm_err *err)
{
    char q1[64];
    int32_t id = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab)
    {
        json_id(e, &id);
        long n = byte_level_to_raw(inv, e->string, t->bytes + *off, n_bytes - *off);
        if (n < 0)
            return tm_errf(err, TM_EINPUT, "%s: model.vocab[%s]: character outside the byte-level alphabet", path,
                           quoted(e->string, q1));
        if (t->tok_len[id] != TOK_NO_LEN)
            return tm_errf(err, TM_EINPUT, "%s: model.vocab[%s]: id %d is used twice", path, quoted(e->string, q1),
                           (int)id);
        if (vocab_find(t, t->bytes + *off, (size_t)n) >= 0)
            return tm_errf(err, TM_EINPUT, "%s: model.vocab[%s]: the same bytes as another token", path,
                           quoted(e->string, q1));
        t->tok_off[id] = (uint32_t)*off;
        t->tok_len[id] = (uint32_t)n;
        vocab_insert(t, id);
        *off += (size_t)n;
        t->max_tok_len = TM_MAX(t->max_tok_len, (size_t)n);
    }
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        t->byte_id[b] = vocab_find(t, &c, 1);
        if (t->byte_id[b] < 0)
            return tm_errf(err, TM_EINPUT, "%s: model.vocab: no token for byte 0x%02X (not a byte-level vocab)", path,
                           b);
    }
    return TM_OK;
}

/* Added tokens: raw text from *off on; they override a vocab id's decoding
 * and are kept longest first, so the first hit at a position is the longest. */
static void load_added(tok_tokenizer *t, const cJSON *added, size_t n_added, size_t *off)
{
    int32_t id = 0;
    const cJSON *e;
    t->added = tm_calloc(n_added + 1, sizeof *t->added);
    cJSON_ArrayForEach(e, added)
    {
        const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        size_t n = strlen(c);
        json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id);
        memcpy(t->bytes + *off, c, n);
        t->tok_off[id] = (uint32_t)*off;
        t->tok_len[id] = (uint32_t)n;
        t->added[t->n_added++] = (tok_added){id, (uint32_t)*off, (uint32_t)n};
        t->added_first[(uint8_t)c[0]] = 1;
        *off += n;
        t->max_tok_len = TM_MAX(t->max_tok_len, n);
    }
    for (size_t i = 1; i < t->n_added; i++)
        for (size_t j = i; j > 0 && t->added[j].len > t->added[j - 1].len; j--) {
            tok_added tmp = t->added[j];
            t->added[j] = t->added[j - 1];
            t->added[j - 1] = tmp;
        }
}

/* One merge entry, "a b" or ["a", "b"], into its two parts (part[0] may be
 * copied into pair_buf[512]). */
static tm_status merge_parts(const cJSON *e, const char *path, uint32_t rank, char *pair_buf, const char *part[2],
                             tm_err *err)
{
    char q1[64];
    if (cJSON_IsString(e)) {
        const char *sp = strchr(e->valuestring, ' ');
        size_t la = sp ? (size_t)(sp - e->valuestring) : 0;
        if (!sp || la >= 512 || strchr(sp + 1, ' '))
            return tm_errf(err, TM_EINPUT, "%s: model.merges[%u]: %s is not two tokens separated by a space", path,
                           rank, quoted(e->valuestring, q1));
        memcpy(pair_buf, e->valuestring, la);
        pair_buf[la] = 0;
        part[0] = pair_buf;
        part[1] = sp + 1;
        return TM_OK;
    }
    if (cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
        cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
        part[0] = cJSON_GetArrayItem(e, 0)->valuestring;
        part[1] = cJSON_GetArrayItem(e, 1)->valuestring;
        return TM_OK;
    }
    return tm_errf(err, TM_EINPUT, "%s: model.merges[%u]: neither \"a b\" nor [\"a\", \"b\"]", path, rank);
}

/* Merges, in rank order, into the (left id, right id) -> (rank, merged id)
 * table; a repeated pair keeps its first (lowest) rank. */
static tm_status load_merges(tok_tokenizer *t, const char *path, const cJSON *merges, const int16_t *inv,
                             tm_err *err)
{
    tm_status st = TM_OK;
    char q1[64], q2[64];
    size_t n_merges = (size_t)cJSON_GetArraySize(merges);
    t->mmask = pow2_at_least(n_merges * 2) - 1;
    t->mslots = tm_malloc((t->mmask + 1) * sizeof *t->mslots);
    for (size_t i = 0; i <= t->mmask; i++) t->mslots[i].key = UINT64_MAX;
    size_t rawcap = 2 * t->max_tok_len + 8;
    uint8_t *raw = tm_malloc(rawcap);
    uint32_t rank = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, merges)
    {
        const char *part[2] = {NULL, NULL};
        char pair_buf[512];
        if ((st = merge_parts(e, path, rank, pair_buf, part, err))) goto fail;
        int32_t ids[2];
        size_t rawlen = 0;
        for (int k = 0; k < 2; k++) {
            size_t sl = strlen(part[k]);
            long n = sl <= t->max_tok_len * 2 ? byte_level_to_raw(inv, part[k], raw + rawlen, rawcap - rawlen) : -1;
            ids[k] = n < 0 ? -1 : vocab_find(t, raw + rawlen, (size_t)n);
            if (ids[k] < 0) {
                st = tm_errf(err, TM_EINPUT, "%s: model.merges[%u]: unknown token %s", path, rank,
                             quoted(part[k], q1));
                goto fail;
            }
            rawlen += (size_t)n;
        }
        int32_t merged = rawlen <= t->max_tok_len ? vocab_find(t, raw, rawlen) : -1;
        if (merged < 0) {
            st = tm_errf(err, TM_EINPUT, "%s: model.merges[%u]: %s + %s is not in the vocab", path, rank,
                         quoted(part[0], q1), quoted(part[1], q2));
            goto fail;
        }
        uint64_t key = ((uint64_t)(uint32_t)ids[0] << 32) | (uint32_t)ids[1];
        size_t i = hash_u64(key) & t->mmask;
        while (t->mslots[i].key != UINT64_MAX && t->mslots[i].key != key) i = (i + 1) & t->mmask;
        if (t->mslots[i].key == UINT64_MAX) t->mslots[i] = (tok_merge){key, rank, merged};
        rank++;
    }
fail:
    free(raw);
    return st;
}

static tm_status load_tables(tok_tokenizer *t, const char *path, const cJSON *root, tm_err *err)
{
    int16_t inv[0x144];
    byte_level_inverse(inv);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab)) return tm_errf(err, TM_EINPUT, "%s: model.vocab: missing or not an object", path);
    if (!cJSON_IsArray(merges)) return tm_errf(err, TM_EINPUT, "%s: model.merges: missing or not an array", path);
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return tm_errf(err, TM_EINPUT, "%s: added_tokens: not an array", path);
    t->ignore_merges = json_is_true(model, "ignore_merges");

    size_t n_added = 0, n_bytes = 0, off = 0;
    tm_status st = size_tables(t, path, vocab, added, &n_added, &n_bytes, err);
    if (!st) st = load_vocab(t, path, vocab, inv, n_bytes, &off, err);
    if (st) return st;
    load_added(t, added, n_added, &off);
    return load_merges(t, path, merges, inv, err);
}

tm_status tok_load(const char *path, tok_tokenizer **out, tm_err *err)
{
    tm_status st;
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    tok_tokenizer *t = NULL;
    *out = NULL;

    st = tm_read_input(path, "tokenizer", TM_CAP_TOKENIZER, &text, &len, err);
    if (st != TM_OK) goto fail;
    root = cJSON_ParseWithLength(text, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t pos = at && at >= text && at <= text + len ? (size_t)(at - text) : 0;
        st = tm_errf(err, TM_EINPUT, "%s: malformed JSON near byte %zu", path, pos);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        st = tm_errf(err, TM_EINPUT, "%s: not a JSON object", path);
        goto fail;
    }
    st = check_pipeline(path, root, err);
    if (st != TM_OK) goto fail;

    t = tm_calloc(1, sizeof *t);
    st = load_tables(t, path, root, err);
    if (st != TM_OK) goto fail;

    tok_cache *c = tm_calloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->slots = tm_calloc(TOK_CACHE_SLOTS, sizeof *c->slots);
    c->ent = tm_malloc(TOK_CACHE_MAX_ENTRIES * sizeof *c->ent);
    c->keys = tm_malloc(TOK_CACHE_KEY_BYTES);
    c->ids = tm_malloc(TOK_CACHE_IDS * sizeof *c->ids);
    t->cache = c;

    *out = t;
    t = NULL;
fail:
    tok_free(t);
    cJSON_Delete(root);
    free(text);
    return st;
}

void tok_free(tok_tokenizer *t)
{
    if (!t) return;
    if (t->cache) {
        pthread_mutex_destroy(&t->cache->mu);
        free(t->cache->slots);
        free(t->cache->ent);
        free(t->cache->keys);
        free(t->cache->ids);
        free(t->cache);
    }
    free(t->tok_off);
    free(t->tok_len);
    free(t->bytes);
    free(t->vslots);
    free(t->mslots);
    free(t->added);
    free(t);
}

/* ---- encode ---- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} tok_ids;

static inline void ids_push(tok_ids *o, int32_t id)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 256;
        o->v = tm_realloc(o->v, o->cap * sizeof *o->v);
    }
    o->v[o->n++] = id;
}

size_t tok_bpe_heap_min = 128;

/* A pending merge for the heap path: the pair starting at symbol pos. */
typedef struct {
    uint32_t rank, pos;
} tok_heap_ent;

/* Scratch for BPE on one pre-token, grown as needed and reused across the
 * pre-tokens of one tok_encode call. */
typedef struct {
    int32_t *sym;            /* [cap] symbol ids (-1: absorbed into its left neighbour) */
    const tok_merge **pair;  /* [cap] scan path: pair[i] merges sym[i] and sym[i + 1], or NULL */
    uint32_t *next, *prev;   /* [cap] heap path: linked list of live symbols */
    tok_heap_ent *heap;      /* [3 * cap] heap path: min-heap by (rank, pos) */
    size_t cap;
} tok_bpe_buf;

static void bpe_buf_grow(tok_bpe_buf *b, size_t n)
{
    if (n <= b->cap) return;
    b->cap = n * 2;
    b->sym = tm_realloc(b->sym, b->cap * sizeof *b->sym);
    b->pair = tm_realloc((void *)b->pair, b->cap * sizeof *b->pair);
    b->next = tm_realloc(b->next, b->cap * sizeof *b->next);
    b->prev = tm_realloc(b->prev, b->cap * sizeof *b->prev);
    b->heap = tm_realloc(b->heap, 3 * b->cap * sizeof *b->heap);
}

static void bpe_buf_free(tok_bpe_buf *b)
{
    free(b->sym);
    free((void *)b->pair);
    free(b->next);
    free(b->prev);
    free(b->heap);
}

static inline int heap_less(tok_heap_ent a, tok_heap_ent b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(tok_heap_ent *h, size_t *n, tok_heap_ent e)
{
    size_t i = (*n)++;
    while (i > 0 && heap_less(e, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = e;
}

static tok_heap_ent heap_pop(tok_heap_ent *h, size_t *n)
{
    tok_heap_ent top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c])) c++;
        if (!heap_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

/* BPE for long pre-tokens in O(n log n): the scan below is O(n^2) on, say, a
 * long run of letters with no spaces.  Popping by (rank, position) applies
 * the lowest-rank pair at every position left to right, as the scan does.
 * An entry is stale when its position was absorbed or its pair has changed
 * since (a changed pair has a different rank: ranks are unique per pair). */
static void bpe_word_heap(const tok_tokenizer *t, tok_bpe_buf *b, const uint8_t *p, size_t n, tok_ids *o)
{
    int32_t *sym = b->sym;
    uint32_t *next = b->next, *prev = b->prev;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[p[i]];
        next[i] = (uint32_t)i + 1;
        prev[i] = (uint32_t)i - 1; /* UINT32_MAX before the first */
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const tok_merge *m = merge_find(t, sym[i], sym[i + 1]);
        if (m) heap_push(b->heap, &nh, (tok_heap_ent){m->rank, (uint32_t)i});
    }
    while (nh) {
        tok_heap_ent e = heap_pop(b->heap, &nh);
        uint32_t i = e.pos, j = next[i];
        if (sym[i] < 0 || j >= n) continue;
        const tok_merge *m = merge_find(t, sym[i], sym[j]);
        if (!m || m->rank != e.rank) continue;
        sym[i] = m->id;
        sym[j] = -1;
        next[i] = next[j];
        if (next[i] < n) prev[next[i]] = i;
        if (prev[i] != UINT32_MAX && (m = merge_find(t, sym[prev[i]], sym[i])))
            heap_push(b->heap, &nh, (tok_heap_ent){m->rank, prev[i]});
        if (next[i] < n && (m = merge_find(t, sym[i], sym[next[i]])))
            heap_push(b->heap, &nh, (tok_heap_ent){m->rank, i});
    }
    for (size_t i = 0; i < n; i = next[i]) ids_push(o, sym[i]);
}

/* BPE of one pre-token's raw bytes p[0, n), appended to o.  Lowest-rank pair
 * first, every occurrence of it left to right, until no pair has a merge. */
static void bpe_word(const tok_tokenizer *t, tok_bpe_buf *b, const uint8_t *p, size_t n, tok_ids *o)
{
    if (t->ignore_merges) {
        int32_t whole = vocab_find(t, p, n);
        if (whole >= 0) {
            ids_push(o, whole);
            return;
        }
    }
    bpe_buf_grow(b, n);
    if (n >= tok_bpe_heap_min) {
        bpe_word_heap(t, b, p, n, o);
        return;
    }
    int32_t *sym = b->sym;
    const tok_merge **pair = b->pair;
    size_t m = n;
    for (size_t i = 0; i < n; i++) sym[i] = t->byte_id[p[i]];
    for (size_t i = 0; i + 1 < m; i++) pair[i] = merge_find(t, sym[i], sym[i + 1]);
    while (m > 1) {
        const tok_merge *best = NULL;
        for (size_t i = 0; i + 1 < m; i++)
            if (pair[i] && (!best || pair[i]->rank < best->rank)) best = pair[i];
        if (!best) break;
        size_t w = 0;
        for (size_t i = 0; i < m; w++) {
            if (i + 1 < m && pair[i] == best) {
                sym[w] = best->id;
                i += 2;
            } else
                sym[w] = sym[i++];
        }
        m = w;
        /* Only pairs touching a merged symbol changed; recomputing all is as
         * cheap for the short words that reach here uncached. */
        for (size_t i = 0; i + 1 < m; i++) pair[i] = merge_find(t, sym[i], sym[i + 1]);
    }
    for (size_t i = 0; i < m; i++) ids_push(o, sym[i]);
}

/* bpe_word through the cache; c is NULL when the cache lock was busy. */
static void bpe_cached(const tok_tokenizer *t, tok_cache *c, tok_bpe_buf *b, const uint8_t *p, size_t n,
                       tok_ids *o)
{
    if (n == 1) {
        ids_push(o, t->byte_id[p[0]]);
        return;
    }
    if (!c || n > TOK_CACHE_MAX_KEY) {
        bpe_word(t, b, p, n, o);
        return;
    }
    uint64_t h = hash_bytes(p, n);
    size_t mask = TOK_CACHE_SLOTS - 1, s = h & mask;
    for (; c->slots[s]; s = (s + 1) & mask) {
        const tok_cache_entry *e = &c->ent[c->slots[s] - 1];
        if (e->h == h && e->key_len == n && !memcmp(c->keys + e->key_off, p, n)) {
            for (uint32_t k = 0; k < e->n_ids; k++) ids_push(o, c->ids[e->ids_off + k]);
            return;
        }
    }
    size_t before = o->n;
    bpe_word(t, b, p, n, o);
    size_t k = o->n - before;
    if (c->n_ent == TOK_CACHE_MAX_ENTRIES || c->keys_len + n > TOK_CACHE_KEY_BYTES ||
        c->ids_len + k > TOK_CACHE_IDS) {
        /* Full: start over rather than track recency; text drifts slowly. */
        memset(c->slots, 0, TOK_CACHE_SLOTS * sizeof *c->slots);
        c->n_ent = c->keys_len = c->ids_len = 0;
        for (s = h & mask; c->slots[s]; s = (s + 1) & mask) {}
    }
    tok_cache_entry *e = &c->ent[c->n_ent];
    *e = (tok_cache_entry){h, (uint32_t)c->keys_len, (uint32_t)n, (uint32_t)c->ids_len, (uint32_t)k};
    memcpy(c->keys + c->keys_len, p, n);
    memcpy(c->ids + c->ids_len, o->v + before, k * sizeof *o->v);
    c->keys_len += n;
    c->ids_len += k;
    c->slots[s] = (uint32_t)++c->n_ent;
}

/* NFC, pre-tokenize and BPE one stretch of text that holds no added token. */
static tm_status encode_plain(const tok_tokenizer *t, tok_cache *c, tok_bpe_buf *b, const uint8_t *s, size_t len,
                              tok_ids *o, tm_err *err)
{
    const uint8_t *p;
    size_t n;
    uint8_t *owned = NULL;
    if (len == 0) return TM_OK;
    tm_status st = tok_nfc(s, len, &p, &n, &owned, err);
    if (st != TM_OK) return st;
    for (size_t i = 0; i < n;) {
        size_t j = tok_pretok_next(p, n, i);
        bpe_cached(t, c, b, p + i, j - i, o);
        i = j;
    }
    free(owned);
    return TM_OK;
}

/* Leftmost, then longest, added token at or after s[from]; returns its index
 * in t->added and sets *at, or -1 when there is none. */
static long added_next(const tok_tokenizer *t, const uint8_t *s, size_t len, size_t from, size_t *at)
{
    for (size_t i = from; i < len; i++) {
        if (!t->added_first[s[i]]) continue;
        for (size_t k = 0; k < t->n_added; k++) {
            const tok_added *a = &t->added[k];
            if (a->len <= len - i && !memcmp(s + i, t->bytes + a->off, a->len)) {
                *at = i;
                return (long)k;
            }
        }
    }
    return -1;
}

tm_status tok_encode(const tok_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, tm_err *err)
{
    const uint8_t *s = (const uint8_t *)text;
    tm_status st = TM_OK;
    tok_ids o = {NULL, 0, 0};
    tok_bpe_buf b = {0};
    tok_cache *c = NULL;
    *ids = NULL;
    *n = 0;

    for (size_t i = 0; i < len;) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = tok_utf8_char(s + i, len - i, NULL);
        if (!k) {
            st = tm_errf(err, TM_EINPUT, "invalid UTF-8 at byte %zu", i);
            goto fail;
        }
        i += k;
    }
    if (pthread_mutex_trylock(&t->cache->mu) == 0) c = t->cache;

    for (size_t pos = 0; pos <= len;) {
        size_t at = len;
        long k = t->n_added ? added_next(t, s, len, pos, &at) : -1;
        st = encode_plain(t, c, &b, s + pos, at - pos, &o, err);
        if (st != TM_OK) goto fail;
        if (k < 0) break;
        ids_push(&o, t->added[k].id);
        pos = at + t->added[k].len;
    }
    if (!o.v) o.v = tm_malloc(sizeof *o.v);
    *ids = o.v;
    *n = o.n;
    o.v = NULL;
fail:
    if (c) pthread_mutex_unlock(&c->mu);
    free(o.v);
    bpe_buf_free(&b);
    return st;
}

/* ---- lookups ---- */

int32_t tok_token_id(const tok_tokenizer *t, const char *token)
{
    size_t n = strlen(token);
    int32_t id = -1;
    for (size_t k = 0; k < t->n_added; k++)
        if (t->added[k].len == n && !memcmp(t->bytes + t->added[k].off, token, n)) return t->added[k].id;
    if (n == 0 || n > 2 * t->max_tok_len) return -1;
    int16_t inv[0x144];
    byte_level_inverse(inv);
    uint8_t *raw = tm_malloc(n);
    long r = byte_level_to_raw(inv, token, raw, n);
    if (r > 0) id = vocab_find(t, raw, (size_t)r);
    free(raw);
    return id;
}

size_t tok_vocab_size(const tok_tokenizer *t) { return t->n_ids; }

size_t tok_max_token_len(const tok_tokenizer *t) { return t->max_tok_len; }

const char *tok_token_bytes(const tok_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= t->n_ids || t->tok_len[id] == TOK_NO_LEN) return NULL;
    *len = t->tok_len[id];
    return (const char *)t->bytes + t->tok_off[id];
}

/* ---- decode ---- */

static const char REPLACEMENT[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

char *tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    size_t total = 0, bad_total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        if (tok_token_bytes(t, ids[i], &l)) total += l;
    }
    uint8_t *raw = tm_malloc(total + 1);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *p = tok_token_bytes(t, ids[i], &l);
        if (!p) continue;
        memcpy(raw + off, p, l);
        off += l;
    }
    raw[total] = 0;
    for (size_t i = 0; i < total;) {
        size_t bad, k = tok_utf8_char(raw + i, total - i, &bad);
        if (k) i += k;
        else {
            bad_total++;
            i += bad ? bad : total - i;
        }
    }
    if (!bad_total) {
        if (len) *len = total;
        return (char *)raw;
    }
    /* Each replaced subpart (at least one byte) grows to three bytes. */
    char *out = tm_malloc(total * 3 + 1);
    size_t w = 0;
    for (size_t i = 0; i < total;) {
        size_t bad, k = tok_utf8_char(raw + i, total - i, &bad);
        if (k) {
            memcpy(out + w, raw + i, k);
            w += k;
            i += k;
        } else {
            memcpy(out + w, REPLACEMENT, 3);
            w += 3;
            i += bad ? bad : total - i;
        }
    }
    out[w] = 0;
    free(raw);
    if (len) *len = w;
    return out;
}

/* ---- streaming decode ---- */

size_t tok_stream_cap(const tok_tokenizer *t) { return 3 * (t->max_tok_len + 4); }

void tok_stream_init(tok_stream *s, const tok_tokenizer *t)
{
    s->t = t;
    s->n_pend = 0;
}

/* Feed one byte; complete characters (or U+FFFD for invalid subparts) go to out. */
static size_t stream_byte(tok_stream *s, uint8_t byte, char *out)
{
    size_t w = 0;
    if (s->n_pend == 0 && byte < 0x80) {
        out[0] = (char)byte;
        return 1;
    }
    s->pend[s->n_pend++] = byte;
    while (s->n_pend) {
        size_t bad, k = tok_utf8_char(s->pend, s->n_pend, &bad);
        if (k) { /* complete: k == n_pend, since pend never holds more than one character's prefix */
            memcpy(out + w, s->pend, k);
            w += k;
        } else if (bad == 0)
            break; /* wait for more bytes */
        else {
            memcpy(out + w, REPLACEMENT, 3);
            w += 3;
            k = bad;
        }
        memmove(s->pend, s->pend + k, s->n_pend - k);
        s->n_pend = (uint8_t)(s->n_pend - k);
    }
    return w;
}

size_t tok_stream_push(tok_stream *s, int32_t id, char *out, size_t cap)
{
    size_t l, w = 0;
    const char *p = tok_token_bytes(s->t, id, &l);
    if (!p) return 0;
    TM_ASSERT_MSG(cap >= 3 * (l + 4), "tok_stream_push: out is smaller than tok_stream_cap()");
    for (size_t i = 0; i < l; i++) w += stream_byte(s, (uint8_t)p[i], out + w);
    return w;
}

size_t tok_stream_flush(tok_stream *s, char *out, size_t cap)
{
    size_t w = 0;
    TM_ASSERT_MSG(cap >= 12, "tok_stream_flush: out is smaller than tok_stream_cap()");
    /* What is pending is a valid prefix cut short: one maximal subpart. */
    if (s->n_pend) {
        memcpy(out, REPLACEMENT, 3);
        w = 3;
    }
    s->n_pend = 0;
    return w;
}

/* ---- chat template ---- */

char *tok_chat_render(const char *const *roles, const char *const *contents, int n)
{
    static const char turn_fmt[] = "<|im_start|>%s\n%s<|im_end|>\n";
    static const char reply[] = "<|im_start|>assistant\n";
    size_t cap = sizeof reply;
    for (int i = 0; i < n; i++) cap += strlen(roles[i]) + strlen(contents[i]) + sizeof turn_fmt;
    char *out = tm_malloc(cap);
    size_t w = 0;
    for (int i = 0; i < n; i++) w += (size_t)snprintf(out + w, cap - w, turn_fmt, roles[i], contents[i]);
    snprintf(out + w, cap - w, "%s", reply);
    return out;
}

char *tok_chat_prompt(const char *system_or_null, const char *user)
{
    const char *roles[2] = {"system", "user"}, *texts[2] = {system_or_null, user};
    return system_or_null ? tok_chat_render(roles, texts, 2) : tok_chat_render(roles + 1, texts + 1, 1);
}
