/* fuzz_policy.c: a --policy file's text into trust_policy_parse for a model
 * of 4 layers x 16 experts, then a mask for one requester. */
#include "fuzz.h"
#include "trust_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    trust_policy p;
    tm_err err;
    if (trust_policy_parse(&p, text, "policy.json", 4, 16, &err) == TM_OK) {
        uint8_t allowed[4 * 16];
        trust_policy_mask(&p, "alice", allowed);
        trust_policy_free(&p);
    }
    free(text);
    return 0;
}
