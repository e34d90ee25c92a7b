/* fuzz_chat_client.c: what `trustmoe chat --url` makes of a server's bytes.
 * The first byte picks the answer: 0 an event stream (delivered in pieces of
 * 1 to 7 bytes, as a network may cut it), 1 a GET /v1/models body, 2 a 4xx
 * body; the rest is the answer. */
#include "fuzz.h"

#include "chat_client.h"

static void on_text(void *ctx, const char *s, size_t n)
{
    size_t *total = ctx;
    if (n) *total += (size_t)(unsigned char)s[n - 1] + n; /* read what came */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    cli_opts o;
    memset(&o, 0, sizeof o);
    o.url = "http://127.0.0.1:1";
    o.n_predict = 16;
    chat_client c;
    memset(&c, 0, sizeof c);
    c.o = &o;
    size_t total = 0;
    c.on_text = on_text;
    c.text_ctx = &total;
    tm_err err = {{0}};
    int part = data[0] % 3;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    if (part == 0) {
        c.streaming = 1;
        c.status = 200;
        for (size_t i = 0, k = 1; i < n; i += k, k = k % 7 + 1)
            if (!chat_client_stream(&c, p + i, k < n - i ? k : n - i)) break;
    } else if (part == 1) {
        chat_client_models(&c, p, n, &err);
    } else {
        chat_client_refusal(&c, p, n, &err);
    }
    chat_client_free(&c);
    return 0;
}
