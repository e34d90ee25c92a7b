/* cmd_inspect.c: `trustmoe inspect`: the configuration used, tensors, dtypes,
 * bytes, ignored tensors and, with --workers, the expert placement. */
#include "commands.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kernels.h"
#include "placement.h"

/* ---- inspect ------------------------------------------------------------- */

int cmd_inspect(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: trustmoe inspect -m DIR [--workers N [--placement P] [--replicas R]]\n"
               "Prints the configuration used, tensors, dtypes, bytes, resident memory and ignored tensors;\n"
               "with --workers, the placement of every (layer, expert) on N worker ranks and the weight\n"
               "bytes per rank, without loading weights or starting MPI.\n");
        cli_usage(stdout, CLI_INSPECT);
        return 0;
    }
    cli_opts o;
    tm_err err = {{0}};
    tm_status st = cli_parse_opts(CLI_INSPECT, argc, argv, &o, &err);
    if (st != TM_OK) return cli_fail("inspect", &err, st);
    kern_set_threads(o.threads);
    if (o.dist.workers > 0) {
        /* the placement only: config and tensor index, no weights mapped in */
        unsigned char *mask = dist_no_experts_mask(o.model_dir, &o.load, &err);
        if (!mask) return cli_fail("inspect", &err, TM_EINPUT);
        o.load.expert_mask = mask;
        o.load.load_dense = 0;
        tm_model m;
        st = model_load(&m, o.model_dir, &o.load, &err);
        free(mask);
        if (st != TM_OK) return cli_fail("inspect", &err, st);
        int rc = placement_print(stdout, &m.cfg, m.weight_dtype, o.dist.placement, o.dist.replicas, o.dist.workers);
        model_free(&m);
        return rc;
    }
    size_t rss0 = tm_rss_bytes();
    tm_model m;
    if ((st = model_load(&m, o.model_dir, &o.load, &err)) != TM_OK) return cli_fail("inspect", &err, st);
    size_t rss = tm_rss_bytes();
    printf("model: %s\n", m.dir);
    cfg_print(&m.cfg, stdout);
    printf("files: %d\ntensors: %d in files, %d used, %d ignored\n", m.st.n_files, m.st.n_tensors, m.n_used,
           m.n_ignored);
    printf("stored dtypes of used tensors:");
    for (int d = 0; d < TM_DT_COUNT; d++)
        if (m.dtype_count[d]) printf(" %s=%d", tm_dtype_name((tm_dtype)d), m.dtype_count[d]);
    printf("\nweight dtype: %s (matrices; norms F32)\n", tm_dtype_name(m.weight_dtype));
    printf("weight bytes: %zu (%.2f MiB), experts %zu\n", m.weight_bytes, m.weight_bytes / 1048576.0, m.expert_bytes);
    printf("resident after load: %zu bytes (%.2f MiB, %.3fx weight bytes; %.2f MiB before load)\n", rss,
           rss / 1048576.0, m.weight_bytes ? (double)rss / (double)m.weight_bytes : 0.0, rss0 / 1048576.0);
    printf("model identity: %016llx\n", (unsigned long long)m.identity);
    for (int i = 0; i < m.n_ignored; i++) printf("ignored: %s: %s\n", m.ignored[i].name, m.ignored[i].reason);
    model_free(&m);
    return 0;
}
