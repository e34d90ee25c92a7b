/* fuzz_placement.c: a placement file, and the same bytes as balanced:STATS
 * input, into place_build for 4 layers x 16 experts over 3 workers. */
#include "config.h"
#include "fuzz.h"
#include "placement.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tm_config c;
    static int ready;
    tm_err err;
    if (!ready) {
        if (cfg_parse(&c, fuzz_config_json, "config.json", &err) != TM_OK) abort();
        ready = 1;
    }
    const char *path = fuzz_file("placement.json", data, size);
    char policy[300];
    place_map pm;
    if (place_build(&pm, &c, 1000, 3, path, 1, &err) == TM_OK) place_free(&pm);
    snprintf(policy, sizeof policy, "balanced:%s", path);
    if (place_build(&pm, &c, 1000, 3, policy, 2, &err) == TM_OK) place_free(&pm);
    return 0;
}
