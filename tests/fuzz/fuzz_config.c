/* fuzz_config.c: config.json text into cfg_parse. */
#include "config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    tm_config c;
    tm_err err;
    static FILE *null_out;
    if (!null_out) null_out = fopen("/dev/null", "w");
    if (cfg_parse(&c, text, "config.json", &err) == TM_OK && null_out) cfg_print(&c, null_out);
    free(text);
    return 0;
}
