/* fuzz_wire.c: bytes received from a peer: a header, then the payload,
 * through wire_decode and wire_check against a DISPATCH expectation, with
 * and without the checksum flag. */
#include "fuzz.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_header h, want = wire_header_init(WIRE_KIND_DISPATCH);
    tm_err err;
    if (wire_decode(&h, data, size, 1, &err) != TM_OK) return 0;
    want.dtype = h.dtype;
    want.rows = h.rows;
    want.cols = h.cols;
    want.pairs = h.pairs;
    const uint8_t *payload = size > WIRE_HEADER_BYTES ? data + WIRE_HEADER_BYTES : NULL;
    (void)wire_check(&h, &want, WIRE_CHK_ALL & ~WIRE_CHK_FLAGS, size, payload, 1, &err);
    want.flags = WIRE_FLAG_CHECKSUM;
    (void)wire_check(&h, &want, WIRE_CHK_KIND, size, payload, 1, &err);
    (void)wire_kind_name(h.kind);
    return 0;
}
