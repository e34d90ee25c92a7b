/* main.c: build/trustmoe entry point; dispatches to a subcommand. */
#include "commands.h"
#include "dist.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"generate", cmd_generate, "generate text or ids with a KV cache"},
    {"logits", cmd_logits, "run a prompt in one pass and write every position's logits"},
    {"inspect", cmd_inspect, "print what a model folder holds and what was loaded"},
    {"tokenize", cmd_tokenize, "print the token ids of a text (-p TEXT or -f FILE)"},
    {"detokenize", cmd_detokenize, "print the text of comma-separated token ids"},
    {"trust", cmd_trust, "reputation: fit-contexts, train, show, check, dump"},
    {"chat", cmd_chat, "a multi-turn chat in the terminal, streaming the replies"},
    {"serve", cmd_serve, "serve an OpenAI-compatible HTTP API with continuous batching"},
    {"eval", cmd_eval, "perplexity and expert diversity over a corpus"},
    {"mkmodel", cmd_mkmodel, "write a seeded random Qwen3-MoE checkpoint (--preset omni30b, omni48-small, tiny)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: trustmoe COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'trustmoe COMMAND --help' lists a command's options; 'trustmoe --version' prints the build.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("%s\n", dist_build_version());
        return 0;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "trustmoe: unknown command '%s' ('trustmoe --help' lists them)\n", argv[1]);
    return 2;
}
