/* tok_pretok.c: UTF-8 checks, NFC and Qwen's pre-tokenizer regex, by hand.
 *
 * The regex (leftmost-first alternation, as in Oniguruma and JS):
 *   A1 (?i:'s|'t|'re|'ve|'m|'ll|'d)
 *   A2 [^\r\n\p{L}\p{N}]?\p{L}+
 *   A3 \p{N}
 *   A4  ?[^\s\p{L}\p{N}]+[\r\n]*
 *   A5 \s*[\r\n]+
 *   A6 \s+(?!\S)
 *   A7 \s+
 * Every character starts some alternative (letters A2, numbers A3, spaces
 * A5-A7, anything else A4), so pre-tokens tile the text and the scanner only
 * needs "where does the match starting here end".
 */
#include "tokenizer.h"

#include <string.h>
#include <utf8proc.h>

/* ---- UTF-8 ---- */

size_t tok_utf8_char(const uint8_t *s, size_t n, size_t *bad)
{
    /* Unicode Table 3-7 (well-formed byte sequences); "bad" is the maximal
     * subpart, the rule both Python's errors="replace" and Rust's
     * from_utf8_lossy follow. */
    uint8_t c = s[0];
    size_t need, i;
    uint8_t lo = 0x80, hi = 0xBF;
    if (bad) *bad = 1;
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) need = 2;
    else if (c < 0xF0) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c < 0xF5) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    for (i = 1; i < need; i++) {
        if (i >= n) {
            if (bad) *bad = 0; /* a valid prefix, cut short */
            return 0;
        }
        uint8_t b = s[i];
        if (b < lo || b > hi) {
            if (bad) *bad = i;
            return 0;
        }
        lo = 0x80, hi = 0xBF;
    }
    return need;
}

/* Decode the character at s[*i] of valid UTF-8 and advance *i. */
static inline uint32_t utf8_next(const uint8_t *s, size_t *i)
{
    uint32_t c = s[*i];
    if (c < 0x80) {
        *i += 1;
        return c;
    }
    if (c < 0xE0) {
        c = ((c & 0x1F) << 6) | (s[*i + 1] & 0x3F);
        *i += 2;
    } else if (c < 0xF0) {
        c = ((c & 0x0F) << 12) | ((uint32_t)(s[*i + 1] & 0x3F) << 6) | (s[*i + 2] & 0x3F);
        *i += 3;
    } else {
        c = ((c & 0x07) << 18) | ((uint32_t)(s[*i + 1] & 0x3F) << 12) |
            ((uint32_t)(s[*i + 2] & 0x3F) << 6) | (s[*i + 3] & 0x3F);
        *i += 4;
    }
    return c;
}

/* ---- NFC ---- */

tm_status tok_nfc(const uint8_t *s, size_t len, const uint8_t **out, size_t *out_len, uint8_t **owned,
                  tm_err *err)
{
    /* Nothing below U+0300 decomposes or composes with its neighbour (the first
     * combining mark is U+0300), and lead bytes 0xC0..0xCB cover exactly
     * U+0000..U+02FF, so a byte scan decides the common case without utf8proc. */
    size_t i;
    *owned = NULL;
    for (i = 0; i < len; i++)
        if (s[i] >= 0xCC) break;
    if (i == len) {
        *out = s;
        *out_len = len;
        return TM_OK;
    }
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map(s, (utf8proc_ssize_t)len, &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) return tm_errf(err, TM_EINPUT, "NFC normalization failed: %s", utf8proc_errmsg(r));
    *owned = dst;
    *out = dst;
    *out_len = (size_t)r;
    return TM_OK;
}

/* ---- character classes ---- */

enum { TOK_C_OTHER, TOK_C_L, TOK_C_N, TOK_C_WS, TOK_C_NL };

/* ASCII classes by table: the hot path never calls utf8proc. */
static const uint8_t ascii_class[128] = {
    ['\t'] = TOK_C_WS, ['\n'] = TOK_C_NL, [0x0B] = TOK_C_WS, [0x0C] = TOK_C_WS, ['\r'] = TOK_C_NL,
    [' '] = TOK_C_WS,  ['0'] = TOK_C_N,   ['1'] = TOK_C_N,   ['2'] = TOK_C_N,   ['3'] = TOK_C_N,
    ['4'] = TOK_C_N,   ['5'] = TOK_C_N,   ['6'] = TOK_C_N,   ['7'] = TOK_C_N,   ['8'] = TOK_C_N,
    ['9'] = TOK_C_N,   ['A'] = TOK_C_L,   ['B'] = TOK_C_L,   ['C'] = TOK_C_L,   ['D'] = TOK_C_L,
    ['E'] = TOK_C_L,   ['F'] = TOK_C_L,   ['G'] = TOK_C_L,   ['H'] = TOK_C_L,   ['I'] = TOK_C_L,
    ['J'] = TOK_C_L,   ['K'] = TOK_C_L,   ['L'] = TOK_C_L,   ['M'] = TOK_C_L,   ['N'] = TOK_C_L,
    ['O'] = TOK_C_L,   ['P'] = TOK_C_L,   ['Q'] = TOK_C_L,   ['R'] = TOK_C_L,   ['S'] = TOK_C_L,
    ['T'] = TOK_C_L,   ['U'] = TOK_C_L,   ['V'] = TOK_C_L,   ['W'] = TOK_C_L,   ['X'] = TOK_C_L,
    ['Y'] = TOK_C_L,   ['Z'] = TOK_C_L,   ['a'] = TOK_C_L,   ['b'] = TOK_C_L,   ['c'] = TOK_C_L,
    ['d'] = TOK_C_L,   ['e'] = TOK_C_L,   ['f'] = TOK_C_L,   ['g'] = TOK_C_L,   ['h'] = TOK_C_L,
    ['i'] = TOK_C_L,   ['j'] = TOK_C_L,   ['k'] = TOK_C_L,   ['l'] = TOK_C_L,   ['m'] = TOK_C_L,
    ['n'] = TOK_C_L,   ['o'] = TOK_C_L,   ['p'] = TOK_C_L,   ['q'] = TOK_C_L,   ['r'] = TOK_C_L,
    ['s'] = TOK_C_L,   ['t'] = TOK_C_L,   ['u'] = TOK_C_L,   ['v'] = TOK_C_L,   ['w'] = TOK_C_L,
    ['x'] = TOK_C_L,   ['y'] = TOK_C_L,   ['z'] = TOK_C_L,
};

/* Letters and numbers assigned after utf8proc 2.6's Unicode 13.0, up to the
 * Unicode 17.0 of the reference (node's ICU): consulted only for code points
 * utf8proc calls unassigned, so a newer utf8proc takes over by itself.  Made by
 * listing every code point node's /\p{L}/u or /\p{N}/u accepts that
 * utf8proc_category() reports as Cn, merged into ranges; no code point that
 * utf8proc does know changed between L, N and other. */
static const struct {
    uint32_t lo, hi;
    uint8_t cls;
} unicode_after_13[] = {
    {0x088F, 0x088F, TOK_C_L},
    {0x0C5C, 0x0C5C, TOK_C_L},
    {0x0CDC, 0x0CDC, TOK_C_L},
    {0x1C89, 0x1C8A, TOK_C_L},
    {0xA7CB, 0xA7CF, TOK_C_L},
    {0xA7D2, 0xA7D2, TOK_C_L},
    {0xA7D4, 0xA7D4, TOK_C_L},
    {0xA7DA, 0xA7DC, TOK_C_L},
    {0xA7F1, 0xA7F1, TOK_C_L},
    {0x105C0, 0x105F3, TOK_C_L},
    {0x10940, 0x10959, TOK_C_L},
    {0x10D40, 0x10D49, TOK_C_N},
    {0x10D4A, 0x10D65, TOK_C_L},
    {0x10D6F, 0x10D85, TOK_C_L},
    {0x10EC2, 0x10EC7, TOK_C_L},
    {0x11380, 0x11389, TOK_C_L},
    {0x1138B, 0x1138B, TOK_C_L},
    {0x1138E, 0x1138E, TOK_C_L},
    {0x11390, 0x113B5, TOK_C_L},
    {0x113B7, 0x113B7, TOK_C_L},
    {0x113D1, 0x113D1, TOK_C_L},
    {0x113D3, 0x113D3, TOK_C_L},
    {0x116D0, 0x116E3, TOK_C_N},
    {0x11BC0, 0x11BE0, TOK_C_L},
    {0x11BF0, 0x11BF9, TOK_C_N},
    {0x11DB0, 0x11DDB, TOK_C_L},
    {0x11DE0, 0x11DE9, TOK_C_N},
    {0x13460, 0x143FA, TOK_C_L},
    {0x16100, 0x1611D, TOK_C_L},
    {0x16130, 0x16139, TOK_C_N},
    {0x16D40, 0x16D6C, TOK_C_L},
    {0x16D70, 0x16D79, TOK_C_N},
    {0x16EA0, 0x16EB8, TOK_C_L},
    {0x16EBB, 0x16ED3, TOK_C_L},
    {0x16FF2, 0x16FF3, TOK_C_L},
    {0x16FF4, 0x16FF6, TOK_C_N},
    {0x187F8, 0x187FF, TOK_C_L},
    {0x18CFF, 0x18CFF, TOK_C_L},
    {0x18D09, 0x18D1E, TOK_C_L},
    {0x18D80, 0x18DF2, TOK_C_L},
    {0x1CCF0, 0x1CCF9, TOK_C_N},
    {0x1E5D0, 0x1E5ED, TOK_C_L},
    {0x1E5F0, 0x1E5F0, TOK_C_L},
    {0x1E5F1, 0x1E5FA, TOK_C_N},
    {0x1E6C0, 0x1E6DE, TOK_C_L},
    {0x1E6E0, 0x1E6E2, TOK_C_L},
    {0x1E6E4, 0x1E6E5, TOK_C_L},
    {0x1E6E7, 0x1E6ED, TOK_C_L},
    {0x1E6F0, 0x1E6F4, TOK_C_L},
    {0x1E6FE, 0x1E6FF, TOK_C_L},
    {0x2B73A, 0x2B73F, TOK_C_L},
    {0x2CEA2, 0x2CEAD, TOK_C_L},
    {0x2EBF0, 0x2EE5D, TOK_C_L},
    {0x323B0, 0x33479, TOK_C_L},
};

static int class_unassigned(uint32_t c)
{
    size_t lo = 0, hi = TM_ARRAY_LEN(unicode_after_13);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < unicode_after_13[mid].lo) hi = mid;
        else if (c > unicode_after_13[mid].hi) lo = mid + 1;
        else return unicode_after_13[mid].cls;
    }
    return TOK_C_OTHER;
}

static int class_of(uint32_t c)
{
    if (c < 0x80) return ascii_class[c];
    /* Unicode White_Space (PropList.txt), the set of Oniguruma's and the HF
     * JS port's \s: not Python's str.isspace, which adds U+001C..U+001F. */
    switch (c) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F:
    case 0x3000:
        return TOK_C_WS;
    default:
        if (c >= 0x2000 && c <= 0x200A) return TOK_C_WS;
    }
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return TOK_C_L;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return TOK_C_N;
    case UTF8PROC_CATEGORY_CN:
        return class_unassigned(c);
    default:
        return TOK_C_OTHER;
    }
}

/* Class of the character at s[*i]; advances *i past it. */
static inline int next_class(const uint8_t *s, size_t *i)
{
    if (s[*i] < 0x80) return ascii_class[s[(*i)++]];
    return class_of(utf8_next(s, i));
}

/* ---- the scanner ---- */

static size_t letters_end(const uint8_t *s, size_t len, size_t i)
{
    while (i < len) {
        size_t j = i;
        if (next_class(s, &j) != TOK_C_L) break;
        i = j;
    }
    return i;
}

size_t tok_pretok_next(const uint8_t *s, size_t len, size_t i)
{
    size_t i1 = i;
    uint8_t b0 = s[i];
    int c0 = next_class(s, &i1);

    /* A1 folds ASCII case only: "'\u017F" (long s) is no contraction in HF's
     * Rust or JS tokenizers either. */
    if (b0 == '\'' && i1 < len) {
        uint8_t a = s[i1] | 0x20, b = i1 + 1 < len ? s[i1 + 1] | 0x20 : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i1 + 1;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i1 + 2;
    }
    if (c0 == TOK_C_L) return letters_end(s, len, i1);
    if (c0 == TOK_C_N) return i1;
    if (c0 != TOK_C_NL && i1 < len) { /* A2 with its one-character prefix */
        size_t i2 = i1;
        if (next_class(s, &i2) == TOK_C_L) return letters_end(s, len, i2);
    }
    if (c0 == TOK_C_OTHER || (b0 == ' ' && i1 < len)) { /* A4 */
        size_t j = i1;
        if (c0 != TOK_C_OTHER) { /* the optional leading space: needs a symbol after it */
            if (next_class(s, &j) != TOK_C_OTHER) goto spaces;
        }
        for (;;) {
            size_t k = j;
            if (k >= len || next_class(s, &k) != TOK_C_OTHER) break;
            j = k;
        }
        while (j < len && (s[j] == '\r' || s[j] == '\n')) j++;
        return j;
    }
spaces:;
    /* A5-A7 on the whitespace run [i, j). */
    size_t j = i1, last = i, nl_end = 0;
    if (c0 == TOK_C_NL) nl_end = i1;
    while (j < len) {
        size_t k = j;
        int c = next_class(s, &k);
        if (c != TOK_C_WS && c != TOK_C_NL) break;
        if (c == TOK_C_NL) nl_end = k;
        last = j;
        j = k;
    }
    if (nl_end) return nl_end;   /* A5: up to and including the last newline */
    if (j == len) return j;      /* A6: nothing follows */
    if (last > i) return last;   /* A6: leave the last space for the next word */
    return j;                    /* A7 */
}
