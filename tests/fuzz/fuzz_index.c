/* fuzz_index.c: model.safetensors.index.json into st_open_dir, in a folder
 * that holds one small valid shard named "a.safetensors". */
#include "fuzz.h"
#include "safetensors.h"

/* one F32 tensor "w" of shape [2], 8 data bytes */
static const char shard_hdr[] = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        uint8_t buf[256] = {0};
        uint64_t n = sizeof shard_hdr - 1;
        memcpy(buf, &n, 8);
        memcpy(buf + 8, shard_hdr, n);
        fuzz_file("a.safetensors", buf, 8 + n + 8);
        ready = 1;
    }
    fuzz_file("model.safetensors.index.json", data, size);
    st_set s;
    tm_err err;
    if (st_open_dir(&s, fuzz_dir(), &err) == TM_OK) st_close(&s);
    return 0;
}
