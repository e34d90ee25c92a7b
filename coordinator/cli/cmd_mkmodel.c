/* cmd_mkmodel.c: `trustmoe mkmodel`: writes a preset or a config's shapes as a
 * Hugging Face folder with seeded random BF16 weights (engine/mkmodel.h). */
#include "commands.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mkmodel.h"

/* ---- command ----------------------------------------------------------------- */

/* The name of one entry of folder dir, or NULL when dir is missing or empty:
 * writing a model over another one's files loses it. */
static const char *first_entry(const char *dir)
{
    static char name[256];
    DIR *d = opendir(dir);
    if (!d) return NULL;
    const char *found = NULL;
    for (struct dirent *e; !found && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(name, sizeof name, "%s", e->d_name);
            found = name;
        }
    closedir(d);
    return found;
}

static void mk_usage(FILE *f)
{
    fprintf(f, "usage: trustmoe mkmodel (--preset NAME | --config FILE) -o DIR [--seed S] [--force]\n"
               "Writes a Hugging Face Qwen3-MoE folder with seeded random BF16 weights.\n"
               "  --preset NAME   one of the presets below\n"
               "  --config FILE   the shapes of a config.json instead of a preset\n"
               "  -o DIR          output folder: created, or empty (default: none, required)\n"
               "  -s, --seed S    weight seed (default 0)\n"
               "  --force         write into a folder that is not empty (overwrites its files)\n"
               "  presets:");
    for (int i = 0; i < mk_preset_count(); i++) fprintf(f, " %s", mk_preset_at(i)->name);
    fprintf(f, "\n");
}

int cmd_mkmodel(int argc, char **argv)
{
    static const struct option opts[] = {{"preset", required_argument, NULL, 'P'},
                                         {"config", required_argument, NULL, 'C'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"force", no_argument, NULL, 'F'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *preset = NULL, *config = NULL, *out = NULL;
    uint64_t seed = 0;
    int force = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "o:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'P': preset = optarg; break;
        case 'C': config = optarg; break;
        case 'o': out = optarg; break;
        case 'F': force = 1; break;
        case 's': {
            char *end;
            errno = 0;
            seed = strtoull(optarg, &end, 0);
            if (!*optarg || *end || errno || optarg[0] == '-') {
                fprintf(stderr, "mkmodel: --seed wants a non-negative integer, got '%s'\n", optarg);
                return 2;
            }
            break;
        }
        case 'h': mk_usage(stdout); return 0;
        default:
            fprintf(stderr, "mkmodel: unknown or incomplete option '%s' (see trustmoe mkmodel --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mkmodel: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!!preset == !!config || !out) {
        fprintf(stderr, "mkmodel: give one of --preset NAME or --config FILE, and -o DIR\n");
        return 2;
    }
    const char *held = force ? NULL : first_entry(out);
    if (held) {
        fprintf(stderr, "mkmodel: -o %s: the folder is not empty (it holds %s); --force overwrites it\n", out, held);
        return 2;
    }
    tm_err err = {{0}};
    mk_preset cfg_preset;
    const mk_preset *p;
    if (preset) {
        p = mk_preset_find(preset);
        if (!p) {
            fprintf(stderr, "mkmodel: unknown preset '%s' (known:", preset);
            for (int i = 0; i < mk_preset_count(); i++) fprintf(stderr, " %s", mk_preset_at(i)->name);
            fprintf(stderr, ")\n");
            return 2;
        }
    } else {
        tm_status st = mk_preset_from_config(config, &cfg_preset, &err);
        if (st != TM_OK) {
            fprintf(stderr, "mkmodel: %s\n", err.msg);
            return 2;
        }
        p = &cfg_preset;
    }
    tm_status st = mk_write_model(p, seed, out, &err);
    if (st != TM_OK) {
        fprintf(stderr, "mkmodel: %s\n", err.msg);
        return (int)st;
    }
    return 0;
}
