/* fuzz_tokenizer.c: tokenizer.json into tok_load; a tokenizer that loads
 * then encodes and decodes a fixed text. */
#include "fuzz.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file("tokenizer.json", data, size);
    tok_tokenizer *t = NULL;
    tm_err err;
    if (tok_load(path, &t, &err) == TM_OK) {
        static const char text[] = "Hello, world! 123 <|im_end|> \xC3\xA9t\xC3\xA9\n\n";
        int32_t *ids = NULL;
        size_t n = 0;
        if (tok_encode(t, text, sizeof text - 1, &ids, &n, &err) == TM_OK) free(tok_decode(t, ids, n, NULL));
        free(ids);
        tok_free(t);
    }
    return 0;
}
