/* wire.c: activation message header, checks, checksum and dtype conversion. */
#include "wire.h"

#include <string.h>

/* ---- header --------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

wire_header wire_header_init(wire_kind kind)
{
    wire_header h;
    memset(&h, 0, sizeof h);
    h.magic = WIRE_MAGIC;
    h.version = WIRE_VERSION;
    h.kind = (uint16_t)kind;
    return h;
}

void wire_encode(const wire_header *h, uint8_t out[WIRE_HEADER_BYTES])
{
    put32(out + 0, h->magic);
    put16(out + 4, h->version);
    put16(out + 6, h->kind);
    put32(out + 8, (uint32_t)h->step);
    put32(out + 12, (uint32_t)h->layer);
    put32(out + 16, h->seq);
    put32(out + 20, (uint32_t)h->src_rank);
    put32(out + 24, h->dtype);
    put32(out + 28, h->rows);
    put32(out + 32, h->cols);
    put32(out + 36, h->pairs);
    put32(out + 40, h->flags);
    uint32_t cu;
    memcpy(&cu, &h->compute_us, 4);
    put32(out + 44, cu);
    put64(out + 48, h->payload_bytes);
    put64(out + 56, h->checksum);
}

tm_status wire_decode(wire_header *h, const uint8_t *buf, size_t len, int dst_rank, tm_err *err)
{
    memset(h, 0, sizeof *h);
    if (len < WIRE_HEADER_BYTES)
        return tm_errf(err, TM_EFAIL,
                       "wire: message to rank %d is %zu bytes, shorter than the %d-byte header", dst_rank, len,
                       WIRE_HEADER_BYTES);
    h->magic = get32(buf + 0);
    h->version = get16(buf + 4);
    h->kind = get16(buf + 6);
    h->step = (int32_t)get32(buf + 8);
    h->layer = (int32_t)get32(buf + 12);
    h->seq = get32(buf + 16);
    h->src_rank = (int32_t)get32(buf + 20);
    h->dtype = get32(buf + 24);
    h->rows = get32(buf + 28);
    h->cols = get32(buf + 32);
    h->pairs = get32(buf + 36);
    uint32_t cu = get32(buf + 44);
    memcpy(&h->compute_us, &cu, 4);
    h->flags = get32(buf + 40);
    h->payload_bytes = get64(buf + 48);
    h->checksum = get64(buf + 56);
    if (h->magic != WIRE_MAGIC)
        return tm_errf(err, TM_EFAIL, "wire: message to rank %d: field 'magic': expected 0x%08x, received 0x%08x",
                       dst_rank, WIRE_MAGIC, h->magic);
    if (h->version != WIRE_VERSION)
        return tm_errf(err, TM_EFAIL,
                       "wire: rank %d -> rank %d: field 'version': expected %d, received %u (mixed builds?)",
                       h->src_rank, dst_rank, WIRE_VERSION, h->version);
    return TM_OK;
}

uint64_t wire_payload_bytes(uint32_t dtype, uint32_t rows, uint32_t cols, uint32_t pairs)
{
    if (dtype >= TM_DT_COUNT) return 0;
    /* u32 * u32 fits in u64; the sum of two such products may not, so saturate. */
    uint64_t act = (uint64_t)rows * cols;
    uint64_t sz = tm_dtype_size((tm_dtype)dtype);
    if (act > UINT64_MAX / sz) return UINT64_MAX;
    act *= sz;
    uint64_t rt = (uint64_t)rows * pairs;
    if (rt > UINT64_MAX / WIRE_PAIR_BYTES) return UINT64_MAX;
    rt *= WIRE_PAIR_BYTES;
    return act > UINT64_MAX - rt ? UINT64_MAX : act + rt;
}

const char *wire_kind_name(uint32_t kind)
{
    switch (kind) {
    case WIRE_KIND_DISPATCH: return "DISPATCH";
    case WIRE_KIND_RESULT: return "RESULT";
    default: return "?";
    }
}

static const char *dtype_str(uint32_t dt, char *buf, size_t n)
{
    if (dt < TM_DT_COUNT) return tm_dtype_name((tm_dtype)dt);
    snprintf(buf, n, "tag %u", dt);
    return buf;
}

/* ---- checks --------------------------------------------------------------- */

#define WHERE "wire: rank %d -> rank %d, step %d, layer %d: "
#define WHERE_ARGS got->src_rank, dst_rank, got->step, got->layer

static tm_status mismatch_u(const wire_header *got, int dst_rank, const char *field, long long want, long long have,
                            tm_err *err)
{
    return tm_errf(err, TM_EFAIL, WHERE "field '%s': expected %lld, received %lld", WHERE_ARGS, field, want, have);
}

tm_status wire_check(const wire_header *got, const wire_header *want, unsigned mask, size_t received,
                     const void *payload, int dst_rank, tm_err *err)
{
    char b1[32], b2[32];
    if ((mask & WIRE_CHK_KIND) && got->kind != want->kind)
        return tm_errf(err, TM_EFAIL, WHERE "field 'kind': expected %s, received %s (%u)", WHERE_ARGS,
                       wire_kind_name(want->kind), wire_kind_name(got->kind), got->kind);
    if ((mask & WIRE_CHK_SRC) && got->src_rank != want->src_rank)
        return mismatch_u(got, dst_rank, "src_rank", want->src_rank, got->src_rank, err);
    if ((mask & WIRE_CHK_STEP) && got->step != want->step)
        return mismatch_u(got, dst_rank, "step", want->step, got->step, err);
    if ((mask & WIRE_CHK_LAYER) && got->layer != want->layer)
        return mismatch_u(got, dst_rank, "layer", want->layer, got->layer, err);
    if ((mask & WIRE_CHK_SEQ) && got->seq != want->seq)
        return mismatch_u(got, dst_rank, "seq", want->seq, got->seq, err);
    if ((mask & WIRE_CHK_DTYPE) && got->dtype != want->dtype)
        return tm_errf(err, TM_EFAIL, WHERE "field 'dtype': expected %s, received %s", WHERE_ARGS,
                       dtype_str(want->dtype, b1, sizeof b1), dtype_str(got->dtype, b2, sizeof b2));
    if ((mask & WIRE_CHK_ROWS) && got->rows != want->rows)
        return mismatch_u(got, dst_rank, "rows", want->rows, got->rows, err);
    if ((mask & WIRE_CHK_COLS) && got->cols != want->cols)
        return mismatch_u(got, dst_rank, "cols", want->cols, got->cols, err);
    if ((mask & WIRE_CHK_PAIRS) && got->pairs != want->pairs)
        return mismatch_u(got, dst_rank, "pairs", want->pairs, got->pairs, err);
    if ((mask & WIRE_CHK_FLAGS) && got->flags != want->flags)
        return tm_errf(err, TM_EFAIL, WHERE "field 'flags': expected 0x%x, received 0x%x (checksum %s vs %s)",
                       WHERE_ARGS, want->flags, got->flags, (want->flags & WIRE_FLAG_CHECKSUM) ? "on" : "off",
                       (got->flags & WIRE_FLAG_CHECKSUM) ? "on" : "off");
    if (got->dtype != TM_DT_F32 && got->dtype != TM_DT_BF16)
        return tm_errf(err, TM_EFAIL, WHERE "field 'dtype': %s is not an activation dtype (F32 or BF16)",
                       WHERE_ARGS, dtype_str(got->dtype, b2, sizeof b2));
    uint64_t need = wire_payload_bytes(got->dtype, got->rows, got->cols, got->pairs);
    if (got->payload_bytes != need)
        return tm_errf(err, TM_EFAIL,
                       WHERE "field 'payload_bytes': expected %llu for %u x %u %s + %u pairs per row, received %llu",
                       WHERE_ARGS, (unsigned long long)need, got->rows, got->cols,
                       dtype_str(got->dtype, b1, sizeof b1), got->pairs, (unsigned long long)got->payload_bytes);
    if ((uint64_t)received != WIRE_HEADER_BYTES + got->payload_bytes)
        return tm_errf(err, TM_EFAIL,
                       WHERE "payload truncated or padded: header says %llu payload bytes, message carries %llu",
                       WHERE_ARGS, (unsigned long long)got->payload_bytes,
                       (unsigned long long)(received >= WIRE_HEADER_BYTES ? received - WIRE_HEADER_BYTES : 0));
    if (want->flags & WIRE_FLAG_CHECKSUM) {
        if (!(got->flags & WIRE_FLAG_CHECKSUM))
            return tm_errf(err, TM_EFAIL, WHERE "field 'flags': checksum expected but absent", WHERE_ARGS);
        uint32_t c = wire_crc32c(payload, (size_t)got->payload_bytes);
        if ((uint64_t)c != got->checksum)
            return tm_errf(err, TM_EFAIL,
                           WHERE "checksum mismatch: payload CRC32C 0x%08x, header says 0x%08llx (corrupted payload)",
                           WHERE_ARGS, c, (unsigned long long)got->checksum);
    }
    return TM_OK;
}

/* ---- CRC32C --------------------------------------------------------------- */

uint32_t wire_crc32c_ref(const void *data, size_t n)
{
    const uint8_t *p = data;
    uint32_t c = ~0u;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int b = 0; b < 8; b++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return ~c;
}

/* x^k mod P products for joining CRCs of consecutive blocks, in the
 * reflected bit order (bit 31 is x^0): a · b mod P. */
static uint32_t crc_mulmod(uint32_t a, uint32_t b)
{
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if (!(a & (m - 1))) break;
        }
        m >>= 1;
        b = b & 1 ? (b >> 1) ^ 0x82F63B78u : b >> 1;
    }
    return p;
}

/* crc(A || B) from crc(A), crc(B) and B's length: crc(A) times x^(8·len_b),
 * plus crc(B) (the init and final xor cancel out). */
static uint32_t crc32c_join(uint32_t crc_a, uint32_t crc_b, size_t len_b)
{
    uint32_t sq = 1u << 23; /* x^8, then x^16, x^32, ... by squaring */
    uint32_t xn = 1u << 31; /* x^0 */
    for (; len_b; len_b >>= 1, sq = crc_mulmod(sq, sq))
        if (len_b & 1) xn = crc_mulmod(sq, xn);
    return crc_mulmod(xn, crc_a) ^ crc_b;
}

/* The SSE4.2 CRC32 instruction, chosen at run time so that a build without
 * -march still uses it where the CPU has it.  It takes 8 bytes a cycle but
 * returns after 3, so a long buffer runs as three independent thirds whose
 * CRCs are joined: about 3x the rate of one chain (a 1 MiB payload of a
 * 128-token prefill layer: bench/RESULTS.md). */
#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc32c_chain(uint32_t c32, const uint8_t *p, size_t n)
{
    uint64_t c = c32;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
    }
    c32 = (uint32_t)c;
    for (; n; n--, p++) c32 = _mm_crc32_u8(c32, *p);
    return c32;
}

#define CRC_SPLIT_MIN 8192 /* below this one chain: the join costs about a microsecond */

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(const void *data, size_t n)
{
    const uint8_t *p = data;
    if (n < CRC_SPLIT_MIN) return ~crc32c_chain(~0u, p, n);
    size_t third = n / 3 / 8 * 8; /* the first two thirds in whole 8-byte words */
    const uint8_t *p1 = p + third, *p2 = p + 2 * third;
    uint64_t c0 = ~0u, c1 = ~0u, c2 = ~0u;
    for (size_t i = 0; i < third; i += 8) {
        uint64_t v0, v1, v2;
        memcpy(&v0, p + i, 8);
        memcpy(&v1, p1 + i, 8);
        memcpy(&v2, p2 + i, 8);
        c0 = _mm_crc32_u64(c0, v0);
        c1 = _mm_crc32_u64(c1, v1);
        c2 = _mm_crc32_u64(c2, v2);
    }
    size_t rest = n - 3 * third; /* the last third's tail */
    uint32_t a = ~(uint32_t)c0, b = ~(uint32_t)c1, c = ~crc32c_chain((uint32_t)c2, p2 + third, rest);
    return crc32c_join(crc32c_join(a, b, third), c, third + rest);
}

int wire_crc32c_hw(void) { return __builtin_cpu_supports("sse4.2"); }
#else
static uint32_t crc32c_hw(const void *data, size_t n) { return wire_crc32c_ref(data, n); }
int wire_crc32c_hw(void) { return 0; }
#endif

uint32_t wire_crc32c(const void *data, size_t n)
{
    return wire_crc32c_hw() ? crc32c_hw(data, n) : wire_crc32c_ref(data, n);
}

/* ---- dtype conversion ----------------------------------------------------- */

void wire_pack_rows(tm_dtype dtype, const float *src, size_t n, void *dst)
{
    if (dtype == TM_DT_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    TM_ASSERT_MSG(dtype == TM_DT_BF16, "wire activations are F32 or BF16");
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++) d[i] = tm_f32_to_bf16(src[i]);
}

void wire_unpack_rows(tm_dtype dtype, const void *src, size_t n, float *dst)
{
    if (dtype == TM_DT_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    TM_ASSERT_MSG(dtype == TM_DT_BF16, "wire activations are F32 or BF16");
    const uint8_t *s = src; /* may be unaligned inside a message buffer */
    for (size_t i = 0; i < n; i++) dst[i] = tm_bf16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
}

void wire_add_rows(tm_dtype dtype, const void *src, size_t n, float *dst)
{
    const uint8_t *s = src;
    if (dtype == TM_DT_F32) {
        for (size_t i = 0; i < n; i++) {
            float v;
            memcpy(&v, s + 4 * i, 4);
            dst[i] += v;
        }
        return;
    }
    TM_ASSERT_MSG(dtype == TM_DT_BF16, "wire activations are F32 or BF16");
    for (size_t i = 0; i < n; i++) dst[i] += tm_bf16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
}
