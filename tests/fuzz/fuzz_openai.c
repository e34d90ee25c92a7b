/* fuzz_openai.c: a request body to `trustmoe serve` through
 * openai_parse_request.  The first byte picks the endpoint (bit 0: chat
 * completions, else completions) and the prompt form (bit 1: text through
 * the brown-moe tokenizer, else token ids only); the rest is the body.  What
 * a parsed request owns (prompt ids, stop strings) is freed as the server
 * frees it. */
#include "fuzz.h"

#include "openai.h"

static tok_tokenizer *g_tok;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int tried;
    if (!tried) { /* from the repository root, as make test and run_fuzz.sh run it */
        tried = 1;
        tm_err e0;
        if (tok_load("models/brown-moe/tokenizer.json", &g_tok, &e0) != TM_OK) g_tok = NULL;
    }
    if (size < 1) return 0;
    cJSON *body = cJSON_ParseWithLength((const char *)data + 1, size - 1);
    if (!body) return 0;
    openai_ctx e;
    memset(&e, 0, sizeof e);
    e.model_name = "brown-moe";
    e.ctx = 512;
    e.tok = data[0] & 2 ? g_tok : NULL;
    e.vocab = 4096;
    e.samp = sampler_default_params();
    e.sel_mode = TRUST_SELECT_ROUTER;
    e.sel_alpha = 0.95f;
    srv_req q;
    memset(&q, 0, sizeof q);
    char *err_json = NULL;
    openai_parse_request(body, data[0] & 1, &e, &q, &err_json);
    free(err_json);
    for (int i = 0; i < q.n_stops; i++) free(q.stops[i]);
    free(q.prompt);
    cJSON_Delete(body);
    return 0;
}
