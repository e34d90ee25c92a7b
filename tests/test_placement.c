/* test_placement.c: placement policies, replicas, the JSON file form,
 * validation errors (naming layer and expert), CSR round trip, print. */
#include "placement.h"

#include "dist.h"
#include "worker.h"

#include <CUnit/Basic.h>

#include "cunit_run.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static tm_config cfg(int layers, int experts)
{
    tm_config c;
    memset(&c, 0, sizeof c);
    c.num_layers = layers;
    c.num_experts = experts;
    c.top_k = 4;
    c.decoder_sparse_step = 1;
    c.hidden_size = 64;
    c.moe_intermediate_size = 24;
    return c;
}

static void test_contiguous(void)
{
    tm_config c = cfg(3, 16);
    place_map pm;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(place_build(&pm, &c, 100, 4, "contiguous", 1, &err), TM_OK);
    for (int l = 0; l < 3; l++)
        for (int e = 0; e < 16; e++) {
            CU_ASSERT_EQUAL(place_count(&pm, l, e), 1);
            CU_ASSERT_EQUAL(place_ranks(&pm, l, e)[0], 1 + e / 4);
        }
    for (int r = 1; r <= 4; r++) {
        CU_ASSERT_EQUAL(place_rank_experts(&pm, r), 12);
        CU_ASSERT_EQUAL(place_rank_bytes(&pm, r), 1200u);
    }
    unsigned char mask[48];
    place_rank_mask(&pm, 2, mask);
    CU_ASSERT(mask[4] && mask[7] && !mask[3] && !mask[8] && mask[16 + 5]);
    place_free(&pm);
    /* uneven: 16 experts on 3 workers gives blocks of 5 or 6 */
    CU_ASSERT_EQUAL_FATAL(place_build(&pm, &c, 100, 3, NULL, 0, &err), TM_OK);
    int n1 = place_rank_experts(&pm, 1), n2 = place_rank_experts(&pm, 2), n3 = place_rank_experts(&pm, 3);
    CU_ASSERT_EQUAL(n1 + n2 + n3, 48);
    CU_ASSERT(n1 >= 15 && n1 <= 18 && n2 >= 15 && n2 <= 18 && n3 >= 15 && n3 <= 18);
    place_free(&pm);
}

static void test_round_robin_replicas(void)
{
    tm_config c = cfg(2, 16);
    place_map pm;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(place_build(&pm, &c, 10, 3, "round-robin", 2, &err), TM_OK);
    for (int e = 0; e < 16; e++) {
        CU_ASSERT_EQUAL(place_count(&pm, 1, e), 2);
        const int *r = place_ranks(&pm, 1, e);
        CU_ASSERT_EQUAL(r[0], 1 + e % 3);
        CU_ASSERT_EQUAL(r[1], 1 + (e + 1) % 3);
        CU_ASSERT(r[0] != r[1]);
    }
    place_free(&pm);
    /* more replicas than workers */
    CU_ASSERT_EQUAL(place_build(&pm, &c, 10, 2, "round-robin", 3, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "--replicas 3") != NULL);
    /* no workers at all */
    CU_ASSERT_EQUAL(place_build(&pm, &c, 10, 0, "contiguous", 1, &err), TM_EINPUT);
}

static void test_coordinator_share(void)
{
    /* which placements can give rank 0 experts at all (else rank 0 skips building one for its mask) */
    CU_ASSERT(!place_may_host_coordinator(NULL, 0) && !place_may_host_coordinator("contiguous", 0));
    CU_ASSERT(!place_may_host_coordinator("round-robin", 0) && !place_may_host_coordinator("balanced:s.json", 0));
    CU_ASSERT(!place_may_host_coordinator("coactivation:s.json", 0));
    CU_ASSERT(place_may_host_coordinator("contiguous", 0.5) && place_may_host_coordinator("placement.json", 0));
    tm_config c = cfg(2, 16);
    place_map pm;
    tm_err err;
    /* contiguous: rank 0 the first round(0.25 * 16) = 4 ids, the other 12 in blocks of 6 */
    CU_ASSERT_EQUAL_FATAL(place_build_share(&pm, &c, 10, 2, "contiguous", 1, 0.25, &err), TM_OK);
    for (int e = 0; e < 16; e++) CU_ASSERT_EQUAL(place_ranks(&pm, 1, e)[0], e < 4 ? 0 : e < 10 ? 1 : 2);
    CU_ASSERT_EQUAL(place_rank_experts(&pm, 0), 8);
    CU_ASSERT_EQUAL(place_rank_experts(&pm, 1), 12);
    place_free(&pm);
    /* round-robin: rank 0 every fourth id (3, 7, 11, 15), one copy, the rest
     * round-robin over the workers with replicas */
    CU_ASSERT_EQUAL_FATAL(place_build_share(&pm, &c, 10, 2, "round-robin", 2, 0.25, &err), TM_OK);
    for (int e = 0; e < 16; e++) {
        int on0 = e % 4 == 3;
        CU_ASSERT_EQUAL(place_count(&pm, 0, e), on0 ? 1 : 2);
        if (on0) CU_ASSERT_EQUAL(place_ranks(&pm, 0, e)[0], 0);
        if (!on0) CU_ASSERT(place_ranks(&pm, 0, e)[0] >= 1 && place_ranks(&pm, 0, e)[1] >= 1);
    }
    CU_ASSERT_EQUAL(place_rank_experts(&pm, 0), 8);
    place_free(&pm);
    /* everything on rank 0 is a valid placement (the workers idle) */
    CU_ASSERT_EQUAL_FATAL(place_build_share(&pm, &c, 10, 2, "contiguous", 1, 1.0, &err), TM_OK);
    CU_ASSERT_EQUAL(place_rank_experts(&pm, 0), 32);
    CU_ASSERT_EQUAL(place_rank_experts(&pm, 1), 0);
    place_free(&pm);
    /* a share with a measured placement: the file names rank 0 instead */
    CU_ASSERT_EQUAL(place_build_share(&pm, &c, 10, 2, "balanced:x.json", 1, 0.5, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "--coordinator-share applies to contiguous and round-robin") != NULL);
}

static void test_dense_layers(void)
{
    tm_config c = cfg(4, 8);
    c.mlp_only[1] = 1;
    place_map pm;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(place_build(&pm, &c, 10, 2, "round-robin", 1, &err), TM_OK);
    CU_ASSERT_EQUAL(place_count(&pm, 1, 0), 0);
    CU_ASSERT_EQUAL(place_rank_experts(&pm, 1), 12);
    place_free(&pm);
}

static const char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_placement_%d.json", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* A file covering 2 layers x 4 experts on 2 workers, with `extra` spliced in. */
static tm_status build_file(place_map *pm, const char *body, int workers, tm_err *err)
{
    tm_config c = cfg(2, 4);
    const char *p = write_tmp(body);
    tm_status st = place_build(pm, &c, 10, workers, p, 1, err);
    unlink(p);
    return st;
}

static void test_file(void)
{
    place_map pm;
    tm_err err;
    const char *ok = "{\"workers\": 2, \"experts\": [[0,0,1],[0,1,[2,1]],[0,2,2],[0,3,1],"
                     "[1,0,2],[1,1,2],[1,2,1],[1,3,1]]}";
    CU_ASSERT_EQUAL_FATAL(build_file(&pm, ok, 2, &err), TM_OK);
    CU_ASSERT_EQUAL(place_count(&pm, 0, 1), 2);
    CU_ASSERT_EQUAL(place_ranks(&pm, 0, 1)[0], 2); /* file order = replica order */
    CU_ASSERT_EQUAL(place_ranks(&pm, 0, 1)[1], 1);
    CU_ASSERT_EQUAL(place_ranks(&pm, 1, 0)[0], 2);
    CU_ASSERT_EQUAL(place_rank_experts(&pm, 1), 5);
    CU_ASSERT_EQUAL(place_rank_experts(&pm, 2), 4);
    place_free(&pm);

    /* an expert hosted nowhere names its layer and expert */
    CU_ASSERT_EQUAL(build_file(&pm, "{\"experts\": [[0,0,1],[0,1,1],[0,2,2],[0,3,1],[1,0,2],[1,1,2],[1,3,1]]}", 2,
                               &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "layer 1 expert 2 is hosted by no worker") != NULL);
    /* rank out of range */
    CU_ASSERT_EQUAL(build_file(&pm, "{\"experts\": [[0,0,1],[0,1,1],[0,2,3],[0,3,1],[1,0,2],[1,1,2],[1,2,1],[1,3,1]]}",
                               2, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "layer 0 expert 2: rank 3 is out of range") != NULL);
    /* rank 0, the coordinator, may host experts; a negative rank is out of range */
    CU_ASSERT_EQUAL_FATAL(build_file(&pm, "{\"experts\": [[0,0,0],[0,1,1],[0,2,1],[0,3,1],[1,0,2],[1,1,2],[1,2,1],[1,3,0]]}",
                                     2, &err), TM_OK);
    CU_ASSERT_EQUAL(place_rank_experts(&pm, 0), 2);
    CU_ASSERT(place_hosts(&pm, 0, 1, 3));
    place_free(&pm);
    CU_ASSERT_EQUAL(build_file(&pm, "{\"experts\": [[0,0,-1],[0,1,1],[0,2,1],[0,3,1],[1,0,2],[1,1,2],[1,2,1],[1,3,1]]}",
                               2, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "rank -1 is out of range") != NULL);
    /* duplicate */
    CU_ASSERT_EQUAL(build_file(&pm, "{\"experts\": [[0,0,1],[0,0,1],[0,1,1],[0,2,1],[0,3,1],[1,0,2],[1,1,2],[1,2,1],[1,3,1]]}",
                               2, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "layer 0 expert 0: rank 1 listed twice") != NULL);
    /* outside the model */
    CU_ASSERT_EQUAL(build_file(&pm, "{\"experts\": [[2,0,1]]}", 2, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "layer 2 expert 0 is outside") != NULL);
    /* written for another worker count */
    CU_ASSERT_EQUAL(build_file(&pm, ok, 3, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "\"workers\"") != NULL);
    /* malformed */
    CU_ASSERT_EQUAL(build_file(&pm, "[1,2]", 2, &err), TM_EINPUT);
    CU_ASSERT_EQUAL(build_file(&pm, "{\"experts\": [[0,0]]}", 2, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "\"experts\"[0]") != NULL);
    CU_ASSERT_EQUAL(build_file(&pm, "{\"experts\": [[0,0,\"x\"]]}", 2, &err), TM_EINPUT);
    /* missing file */
    tm_config c = cfg(2, 4);
    CU_ASSERT_EQUAL(place_build(&pm, &c, 10, 2, "/nonexistent/placement.json", 1, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "/nonexistent/placement.json") != NULL);
    /* --replicas with a file */
    CU_ASSERT_EQUAL(place_build(&pm, &c, 10, 2, "x.json", 2, &err), TM_EINPUT);
}

static void test_balanced(void)
{
    tm_config c = cfg(2, 4);
    c.mlp_only[1] = 1;
    place_map pm;
    tm_err err;
    const char *p = write_tmp("{\"expert_tokens\": [[10, 0, 5, 5], []]}");
    char policy[96];
    snprintf(policy, sizeof policy, "balanced:%s", p);
    CU_ASSERT_EQUAL_FATAL(place_build(&pm, &c, 10, 2, policy, 1, &err), TM_OK);
    /* LPT: e0 (10) -> 1, e2 (5) -> 2, e3 (5) -> 2, e1 (0) -> 1 */
    CU_ASSERT_EQUAL(place_ranks(&pm, 0, 0)[0], 1);
    CU_ASSERT_EQUAL(place_ranks(&pm, 0, 1)[0], 1);
    CU_ASSERT_EQUAL(place_ranks(&pm, 0, 2)[0], 2);
    CU_ASSERT_EQUAL(place_ranks(&pm, 0, 3)[0], 2);
    CU_ASSERT_EQUAL(place_count(&pm, 1, 0), 0);
    place_free(&pm);
    /* replicas: every expert on both workers, the less loaded first */
    CU_ASSERT_EQUAL_FATAL(place_build(&pm, &c, 10, 2, policy, 2, &err), TM_OK);
    for (int e = 0; e < 4; e++) {
        CU_ASSERT_EQUAL(place_count(&pm, 0, e), 2);
        CU_ASSERT(place_ranks(&pm, 0, e)[0] != place_ranks(&pm, 0, e)[1]);
    }
    place_free(&pm);
    /* a stats file of another model */
    unlink(p);
    p = write_tmp("{\"expert_tokens\": [[1, 2, 3]]}");
    CU_ASSERT_EQUAL(place_build(&pm, &c, 10, 2, policy, 1, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "expert_tokens") != NULL);
    unlink(p);
    p = write_tmp("{\"expert_tokens\": [[1, 2, 3], []]}");
    CU_ASSERT_EQUAL(place_build(&pm, &c, 10, 2, policy, 1, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "layer 0 has 3 expert counts") != NULL);
    unlink(p);
}

/* co_selection for one MoE layer of 8 experts: two groups, each always
 * chosen together, interleaved so that contiguous splits both. */
static const int GROUPS_4_4[8] = {0, 1, 1, 0, 1, 0, 0, 1};
static const char *coact_stats_of(const double load[8], const int group[8], int nested)
{
    static char buf[4096];
    size_t n = (size_t)snprintf(buf, sizeof buf, "%s\"co_selection\": [[", nested ? "{\"selection\": {" : "{");
    for (int a = 0; a < 8; a++) {
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s[", a ? "," : "");
        for (int b = 0; b < 8; b++) {
            double v = a == b ? load[a] : group[a] == group[b] ? (load[a] < load[b] ? load[a] : load[b]) : 1;
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%g", b ? "," : "", v);
        }
        n += (size_t)snprintf(buf + n, sizeof buf - n, "]");
    }
    snprintf(buf + n, sizeof buf - n, "], []]%s}", nested ? "}" : "");
    return write_tmp(buf);
}

static const char *coact_stats(const double load[8], int nested) { return coact_stats_of(load, GROUPS_4_4, nested); }

static void test_coactivation(void)
{
    tm_config c = cfg(2, 8);
    c.mlp_only[1] = 1;
    place_map pm;
    tm_err err;
    char policy[96];
    /* even loads: each group lands on one worker */
    const double even[8] = {100, 100, 100, 100, 100, 100, 100, 100};
    for (int nested = 0; nested < 2; nested++) {
        const char *p = coact_stats(even, nested);
        snprintf(policy, sizeof policy, "coactivation:%s", p);
        CU_ASSERT_EQUAL_FATAL(place_build(&pm, &c, 10, 2, policy, 1, &err), TM_OK);
        int w0 = place_ranks(&pm, 0, 0)[0], w1 = place_ranks(&pm, 0, 1)[0];
        CU_ASSERT(w0 != w1);
        CU_ASSERT(place_ranks(&pm, 0, 3)[0] == w0 && place_ranks(&pm, 0, 5)[0] == w0 && place_ranks(&pm, 0, 6)[0] == w0);
        CU_ASSERT(place_ranks(&pm, 0, 2)[0] == w1 && place_ranks(&pm, 0, 4)[0] == w1 && place_ranks(&pm, 0, 7)[0] == w1);
        CU_ASSERT_EQUAL(place_count(&pm, 1, 0), 0);
        place_free(&pm);
        unlink(p);
    }
    /* a heavy group: keeping it together would put 4 x 200 on one worker;
     * the balance bound wins, each worker holds two heavy experts */
    const double skew[8] = {200, 10, 10, 200, 10, 200, 200, 10};
    const char *p = coact_stats(skew, 0);
    snprintf(policy, sizeof policy, "coactivation:%s", p);
    CU_ASSERT_EQUAL_FATAL(place_build(&pm, &c, 10, 2, policy, 1, &err), TM_OK);
    double load[3] = {0};
    int count[3] = {0};
    for (int e = 0; e < 8; e++) {
        load[place_ranks(&pm, 0, e)[0]] += skew[e];
        count[place_ranks(&pm, 0, e)[0]]++;
    }
    CU_ASSERT(load[1] <= 1.1 * 420 && load[2] <= 1.1 * 420);
    /* counts may leave the contiguous 4 by moves, up to a quarter more */
    CU_ASSERT(count[1] + count[2] == 8 && count[1] <= 5 && count[2] <= 5);
    place_free(&pm);
    /* one heavy expert and seven light ones chosen together: the start puts
     * the heavy one with three light ones (equal counts); no swap helps, a
     * move of a light one to its group's worker does, up to the cap of 5 */
    {
        static const int g17[8] = {0, 1, 1, 1, 1, 1, 1, 1};
        const double l17[8] = {300, 43, 43, 43, 43, 43, 43, 43};
        const char *q = coact_stats_of(l17, g17, 0);
        snprintf(policy, sizeof policy, "coactivation:%s", q);
        CU_ASSERT_EQUAL_FATAL(place_build(&pm, &c, 10, 2, policy, 1, &err), TM_OK);
        int heavy = place_ranks(&pm, 0, 0)[0], n_heavy = 0;
        for (int e = 0; e < 8; e++) n_heavy += place_ranks(&pm, 0, e)[0] == heavy;
        CU_ASSERT_EQUAL(n_heavy, 3); /* the other worker holds 5 light experts, the cap */
        place_free(&pm);
        unlink(q);
    }
    CU_ASSERT_EQUAL(place_build(&pm, &c, 10, 2, policy, 2, &err), TM_EINPUT); /* no replicas */
    unlink(p);
    p = write_tmp("{\"expert_tokens\": [[1, 2, 3, 4, 5, 6, 7, 8], []]}");
    snprintf(policy, sizeof policy, "coactivation:%s", p);
    CU_ASSERT_EQUAL(place_build(&pm, &c, 10, 2, policy, 1, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "co_selection") != NULL);
    unlink(p);
    p = write_tmp("{\"co_selection\": [[[1, 2]], []]}");
    CU_ASSERT_EQUAL(place_build(&pm, &c, 10, 2, policy, 1, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "layer 0") != NULL);
    unlink(p);
}

static void test_csr_roundtrip(void)
{
    tm_config c = cfg(3, 8);
    c.mlp_only[0] = 1;
    place_map a, b;
    tm_err err;
    CU_ASSERT_EQUAL_FATAL(place_build(&a, &c, 10, 3, "round-robin", 2, &err), TM_OK);
    size_t no = (size_t)3 * 8 + 1, nr = (size_t)a.offsets[3 * 8];
    CU_ASSERT_EQUAL_FATAL(place_from_csr(&b, 3, 8, 3, a.offsets, no, a.ranks, nr, 10, &err), TM_OK);
    CU_ASSERT(memcmp(a.is_moe, b.is_moe, 3) == 0);
    CU_ASSERT(memcmp(a.ranks, b.ranks, nr * sizeof(int)) == 0);
    place_free(&b);
    /* malformed CSR is refused, not trusted */
    CU_ASSERT_EQUAL(place_from_csr(&b, 3, 8, 3, a.offsets, no - 1, a.ranks, nr, 10, &err), TM_EINPUT);
    a.ranks[3] = 9;
    CU_ASSERT_EQUAL(place_from_csr(&b, 3, 8, 3, a.offsets, no, a.ranks, nr, 10, &err), TM_EINPUT);
    CU_ASSERT(strstr(err.msg, "rank 9 is out of range") != NULL);
    place_free(&a);
}

static void test_print(void)
{
    tm_config c = cfg(4, 16);
    c.mlp_only[3] = 1;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CU_ASSERT_EQUAL(placement_print(f, &c, TM_DT_BF16, "contiguous", 1, 4), 0);
    fclose(f);
    CU_ASSERT(strstr(buf, "layers 0-2: rank 1: 0-3 | rank 2: 4-7 | rank 3: 8-11 | rank 4: 12-15") != NULL);
    CU_ASSERT(strstr(buf, "layer 3: dense MLP") != NULL);
    /* 3 * 24 * 64 * 2 bytes per expert, 12 experts per rank */
    CU_ASSERT(strstr(buf, "rank 2: 12 experts, 0.11 MiB") != NULL);
    free(buf);
    f = open_memstream(&buf, &len);
    CU_ASSERT_EQUAL(placement_print(f, &c, TM_DT_F32, "round-robin", 2, 3), 0);
    fclose(f);
    CU_ASSERT(strstr(buf, "rank 1: 0,2-3,5-6,8-9,11-12,14-15") != NULL);
    free(buf);
    f = open_memstream(&buf, &len);
    CU_ASSERT_EQUAL(placement_print(f, &c, TM_DT_F32, "round-robin", 5, 3), 2);
    fclose(f);
    free(buf);
}

/* The dist flags the commands accept (parsed without MPI). */
static void test_flags(void)
{
    dist_params p = dist_default_params();
    CU_ASSERT_STRING_EQUAL(p.placement, "contiguous");
    CU_ASSERT(p.replicas == 1 && p.wire_dtype == TM_DT_F32 && p.checksum && p.comm_timeout == 60.0);
    char *argv[] = {"logits", "--placement", "round-robin", "--replicas", "2", "--wire-dtype", "bf16",
                    "--no-wire-checksum", "--comm-timeout", "2.5", "--idle-timeout", "30", "--stats-json", "s.json",
                    "--workers", "7", "--coordinator-share", "0.5", "-m"};
    int argc = (int)TM_ARRAY_LEN(argv), i = 1, taken = 0;
    tm_err err;
    while (i < argc) {
        int r = dist_parse_flag(&p, argc, argv, &i, &err);
        if (r <= 0) break;
        taken++;
        i++; /* the caller's loop steps past the last argument consumed */
    }
    CU_ASSERT_EQUAL(taken, 9);
    CU_ASSERT_STRING_EQUAL(argv[i], "-m"); /* not ours: left to the caller */
    CU_ASSERT_STRING_EQUAL(p.placement, "round-robin");
    CU_ASSERT(p.replicas == 2 && p.wire_dtype == TM_DT_BF16 && !p.checksum && p.comm_timeout == 2.5);
    char *on[] = {"logits", "--wire-checksum"};
    i = 1;
    CU_ASSERT(dist_parse_flag(&p, 2, on, &i, &err) == 1 && p.checksum);
    CU_ASSERT(p.idle_timeout == 30.0 && p.workers == 7 && !strcmp(p.stats_json, "s.json"));
    CU_ASSERT(p.coordinator_share == 0.5);

    struct {
        char *flag, *value, *want;
    } bad[] = {{"--wire-dtype", "f16", "not f32 or bf16"}, {"--replicas", "0", "--replicas"},
               {"--comm-timeout", "-1", "seconds"},      {"--comm-timeout", "x", "seconds"},
               {"--workers", "2x", "--workers"},         {"--placement", "", "empty"},
               {"--coordinator-share", "1.5", "fraction"}};
    for (size_t k = 0; k < TM_ARRAY_LEN(bad); k++) {
        char *a[] = {"logits", bad[k].flag, bad[k].value};
        i = 1;
        CU_ASSERT_EQUAL(dist_parse_flag(&p, 3, a, &i, &err), -1);
        CU_ASSERT(strstr(err.msg, bad[k].want) != NULL);
    }
    char *missing[] = {"logits", "--placement"};
    i = 1;
    CU_ASSERT_EQUAL(dist_parse_flag(&p, 2, missing, &i, &err), -1);
    CU_ASSERT(strstr(err.msg, "needs a value") != NULL);
}

static void test_fault_env(void)
{
    setenv("TRUSTMOE_FAULT", "truncate", 1);
    setenv("TRUSTMOE_FAULT_RANK", "3", 1);
    setenv("TRUSTMOE_FAULT_STEP", "5", 1);
    worker_fault f = worker_fault_from_env();
    CU_ASSERT(f.kind == WORKER_FAULT_TRUNCATE && f.rank == 3 && f.step == 5 && !f.fired);
    CU_ASSERT_STRING_EQUAL(worker_fault_name(f.kind), "truncate");
    setenv("TRUSTMOE_FAULT", "bogus", 1);
    CU_ASSERT_EQUAL(worker_fault_from_env().kind, WORKER_FAULT_NONE);
    setenv("TRUSTMOE_FAULT", "startup-stall", 1);
    CU_ASSERT_EQUAL(worker_fault_from_env().kind, WORKER_FAULT_STARTUP_STALL);
    unsetenv("TRUSTMOE_FAULT");
    unsetenv("TRUSTMOE_FAULT_RANK");
    unsetenv("TRUSTMOE_FAULT_STEP");
    f = worker_fault_from_env();
    CU_ASSERT(f.kind == WORKER_FAULT_NONE && f.rank == 1 && f.step == 1);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("placement", NULL, NULL);
    CU_add_test(s, "contiguous", test_contiguous);
    CU_add_test(s, "round-robin with replicas", test_round_robin_replicas);
    CU_add_test(s, "coordinator share", test_coordinator_share);
    CU_add_test(s, "dense layers host nothing", test_dense_layers);
    CU_add_test(s, "JSON file and its errors", test_file);
    CU_add_test(s, "balanced by measured load", test_balanced);
    CU_add_test(s, "co-activation within the balance bound", test_coactivation);
    CU_add_test(s, "CSR round trip and validation", test_csr_roundtrip);
    CU_add_test(s, "print", test_print);
    CU_add_test(s, "dist flags", test_flags);
    CU_add_test(s, "fault switch environment", test_fault_env);
    return cunit_run();
}
