/* fuzz.h: shared by the libFuzzer harnesses in tests/fuzz/.
 *
 * Each harness defines LLVMFuzzerTestOneInput and nothing else that libFuzzer
 * would call.  Built with clang (-fsanitize=fuzzer) it is a fuzzer; built
 * with the project's compiler and linked with replay.c it replays files, so
 * `make test` runs the corpus and every recorded crash without clang. */
#ifndef TM_FUZZ_H
#define TM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as a NUL-terminated string (embedded NULs end it early, as they
 * would for a parser given a C string). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* A per-process scratch folder for harnesses whose parser takes a path. */
static inline const char *fuzz_dir(void)
{
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/trustmoe-fuzz-%d", (int)getpid());
        char cmd[96];
        snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
        if (system(cmd) != 0) abort();
    }
    return dir;
}

/* Write the input to fuzz_dir()/name; returns the path (static buffer). */
static inline const char *fuzz_file(const char *name, const uint8_t *data, size_t size)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) abort();
    return path;
}

/* A small valid Qwen3-MoE config for harnesses that need a model shape. */
static const char fuzz_config_json[] =
    "{\"model_type\":\"qwen3_moe\",\"vocab_size\":512,\"hidden_size\":64,\"num_hidden_layers\":4,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":32,\"moe_intermediate_size\":24,"
    "\"num_experts\":16,\"num_experts_per_tok\":4,\"norm_topk_prob\":true,\"rms_norm_eps\":1e-6,"
    "\"max_position_embeddings\":256,\"rope_theta\":1000000.0,\"eos_token_id\":2}";

#endif
