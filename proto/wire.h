/* wire.h: the framing of activation messages between the coordinator and the
 * workers.  proto/ owns the bytes between ranks (this framing, its checks,
 * CRC32C, and trustmoe.proto for the control plane); it calls only core/,
 * and cluster/, worker/ and coordinator/dispatch/ build on it.  Control messages (placement, handshake, shutdown, stats) are
 * protobuf-c (proto/trustmoe.proto); activations are raw arrays behind this
 * fixed header, so a token's hidden vector is never re-encoded field by field.
 *
 * One activation message = header (64 bytes) followed by the payload, sent as
 * one MPI message of MPI_BYTE.  All integers and floats are little-endian.
 *
 *   offset size  field
 *    0     4     magic          0x414D4D54 ("TMMA" in memory order)
 *    4     2     version        WIRE_VERSION (2)
 *    6     2     kind           wire_kind: 1 DISPATCH (coordinator -> worker),
 *                               2 RESULT (worker -> coordinator)
 *    8     4     step           i32, generation step (0 = prefill)
 *   12     4     layer          i32, decoder layer
 *   16     4     seq            u32, per (sender, receiver) pair, from 0, +1 per
 *                               message; a RESULT echoes its DISPATCH's seq
 *   20     4     src_rank       i32, MPI rank of the sender
 *   24     4     dtype          u32, tm_dtype of the activation rows
 *                               (0 F32, 1 BF16; see core/dtype.h)
 *   28     4     rows           u32, tokens in this message
 *   32     4     cols           u32, hidden size
 *   36     4     pairs          u32, (expert, weight) slots per row; 0 in RESULT
 *   40     4     flags          u32, bit 0 WIRE_FLAG_CHECKSUM: `checksum` is set
 *   44     4     compute_us     f32, RESULT only: the worker's expert compute
 *                               for this message, microseconds (grouping and
 *                               the expert products, not the conversions), so
 *                               the coordinator can split each call's wait
 *                               into compute and exchange overhead; 0 in
 *                               DISPATCH.  Not compared by wire_check.
 *   48     8     payload_bytes  u64, bytes after the header
 *   56     8     checksum       u64, CRC32C (Castagnoli) of the payload in the
 *                               low 32 bits when WIRE_FLAG_CHECKSUM, else 0
 *
 * Payload:
 *   activations  [rows, cols] in `dtype` (F32: binary32; BF16: upper half of
 *                binary32, rounded to nearest even by the sender)
 *   routing      DISPATCH only: [rows, pairs] of {i32 expert id, f32 weight};
 *                expert -1 marks an unused slot.  Routing weights are always
 *                F32 whatever the activation dtype: they are few and scale
 *                every partial sum.
 * so payload_bytes = rows*cols*sizeof(dtype) + rows*pairs*8.
 *
 * The receiver decodes the header (magic and version), then wire_check()
 * compares every field against what it expects; a mismatch is an error that
 * names both ranks, the step, the layer, the field, expected and received.
 * Nothing is reinterpreted: F32 <-> BF16 happens only in wire_pack_rows /
 * wire_unpack_rows, explicitly, at both ends.
 */
#ifndef TM_WIRE_H
#define TM_WIRE_H

#include "common.h"
#include "dtype.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the trustmoe wire format is little-endian; a big-endian port needs byte swaps in wire.c"
#endif

#define WIRE_MAGIC 0x414D4D54u
#define WIRE_VERSION 2 /* 2: compute_us at offset 44 (was reserved) */
#define WIRE_HEADER_BYTES 64
#define WIRE_PAIR_BYTES 8

typedef enum {
    WIRE_KIND_DISPATCH = 1,
    WIRE_KIND_RESULT = 2,
} wire_kind;

enum { WIRE_FLAG_CHECKSUM = 1u << 0 };

typedef struct {
    uint32_t magic;
    uint16_t version;
    uint16_t kind;
    int32_t step;
    int32_t layer;
    uint32_t seq;
    int32_t src_rank;
    uint32_t dtype;
    uint32_t rows, cols, pairs;
    uint32_t flags;
    float compute_us; /* RESULT: the worker's expert compute, microseconds */
    uint64_t payload_bytes;
    uint64_t checksum;
} wire_header;

/* One routing slot in a DISPATCH payload. */
typedef struct {
    int32_t expert; /* -1: unused slot */
    float weight;
} wire_pair;

/* Which fields wire_check compares (magic, version, payload size against the
 * shape, the received byte count and the checksum are always checked). */
enum {
    WIRE_CHK_KIND = 1u << 0,
    WIRE_CHK_SRC = 1u << 1,
    WIRE_CHK_STEP = 1u << 2,
    WIRE_CHK_LAYER = 1u << 3,
    WIRE_CHK_SEQ = 1u << 4,
    WIRE_CHK_DTYPE = 1u << 5,
    WIRE_CHK_ROWS = 1u << 6,
    WIRE_CHK_COLS = 1u << 7,
    WIRE_CHK_PAIRS = 1u << 8,
    WIRE_CHK_FLAGS = 1u << 9,
    WIRE_CHK_ALL = (1u << 10) - 1,
};

/* A header with magic and version set and everything else zero. */
wire_header wire_header_init(wire_kind kind);

void wire_encode(const wire_header *h, uint8_t out[WIRE_HEADER_BYTES]);
/* Decode buf[0..len); fails (naming src/dst ranks) on a short buffer, a bad
 * magic or an unknown version.  dst_rank is the receiver, for messages. */
tm_status wire_decode(wire_header *h, const uint8_t *buf, size_t len, int dst_rank, tm_err *err);

/* Bytes of the payload a header of this shape must carry; 0 on an unknown
 * dtype.  Saturates instead of overflowing on absurd shapes. */
uint64_t wire_payload_bytes(uint32_t dtype, uint32_t rows, uint32_t cols, uint32_t pairs);

/* Compare `got` with `want` on the fields in `mask`, then check that the
 * payload size agrees with the shape, that `received` (the byte count of the
 * whole MPI message) equals header + payload_bytes and, when want->flags has
 * WIRE_FLAG_CHECKSUM, the CRC32C of `payload`.  dst_rank is the receiver.
 * The first mismatch fills err like
 *   "wire: rank 2 -> rank 0, step 3, layer 7: field 'dtype': expected F32, received BF16"
 * and returns TM_EFAIL. */
tm_status wire_check(const wire_header *got, const wire_header *want, unsigned mask, size_t received,
                     const void *payload, int dst_rank, tm_err *err);

/* CRC32C (Castagnoli, reflected 0x82F63B78, init and final xor ~0).
 * wire_crc32c uses the SSE4.2 instruction when the CPU has it
 * (wire_crc32c_hw() says whether it does); the _ref version is the bitwise
 * definition the test compares it against. */
uint32_t wire_crc32c(const void *data, size_t n);
uint32_t wire_crc32c_ref(const void *data, size_t n);
int wire_crc32c_hw(void);

/* Activation rows <-> wire bytes.  dst/src: n elements of `dtype` (F32 or
 * BF16; anything else is an invariant violation).  pack rounds to nearest
 * even for BF16; unpack widens exactly. */
void wire_pack_rows(tm_dtype dtype, const float *src, size_t n, void *dst);
void wire_unpack_rows(tm_dtype dtype, const void *src, size_t n, float *dst);
/* dst[i] += value of src[i]: the coordinator's combine, without a temporary. */
void wire_add_rows(tm_dtype dtype, const void *src, size_t n, float *dst);

const char *wire_kind_name(uint32_t kind);

#endif
