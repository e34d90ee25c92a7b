/* fuzz_prompts.c: prompt text: an id list as --ids or a --prompts line takes
 * it, and the chat template around arbitrary text. */
#include "cli.h"
#include "fuzz.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    int32_t *ids = NULL;
    int n = 0;
    tm_err err;
    if (cli_parse_ids(text, &ids, &n, &err) == TM_OK) free(ids);
    char *sys = strchr(text, '\n');
    if (sys) *sys++ = '\0';
    free(tok_chat_prompt(sys, text));
    free(text);
    return 0;
}
