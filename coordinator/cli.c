/* cli.c: placeholder entry points while the engine is being built. */
#include "commands.h"

#include <stdio.h>

int cmd_logits(int argc, char **argv) { fprintf(stderr, "logits: not built yet\n"); return 1; }
int cmd_generate(int argc, char **argv) { fprintf(stderr, "generate: not built yet\n"); return 1; }
int cmd_inspect(int argc, char **argv) { fprintf(stderr, "inspect: not built yet\n"); return 1; }
