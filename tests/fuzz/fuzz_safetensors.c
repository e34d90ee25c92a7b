/* fuzz_safetensors.c: a whole .safetensors file (header length, JSON header,
 * data) into st_open_file, then every tensor's bytes are touched. */
#include "fuzz.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file("model.safetensors", data, size);
    st_set s;
    tm_err err;
    if (st_open_file(&s, path, &err) == TM_OK) {
        volatile uint8_t sink = 0;
        for (int i = 0; i < s.n_tensors; i++) {
            const uint8_t *p = s.tensors[i].data;
            for (size_t b = 0; p && b < s.tensors[i].nbytes; b += 64) sink ^= p[b];
            (void)st_find(&s, s.tensors[i].name);
        }
        st_close(&s);
    }
    return 0;
}
