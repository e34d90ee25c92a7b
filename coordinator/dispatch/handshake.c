/* handshake.c: the start of a distributed run: rank 0 builds the placement,
 * sends it to every worker, and checks every worker's Handshake (build, model
 * identity and content, experts hosted) before any expert runs. */
#include "dispatch_ctx.h" /* first: it opens dist.h's internal part */
#include "dispatch.h"

#include "trustmoe.pb-c.h"
#include "wire.h"

#include <stdlib.h>
#include <string.h>

/* ---- start: placement out, handshakes in ---------------------------------------- */

/* The Placement message every worker receives, packed; *len its bytes. */
static uint8_t *pack_placement(dist_ctx *c, uint64_t sample, size_t *len)
{
    const tm_model *m = c->m;
    const tm_config *cfg = &m->cfg;
    const dist_params *p = &c->p;
    Trustmoe__Placement pl = TRUSTMOE__PLACEMENT__INIT;
    pl.build_version = (char *)dist_build_version();
    pl.model_identity = m->identity;
    pl.world_size = c->size;
    pl.num_layers = c->L;
    pl.num_experts = cfg->num_experts;
    pl.hidden = c->H;
    pl.top_k = cfg->top_k;
    pl.wire_dtype = (int32_t)p->wire_dtype;
    pl.checksum = p->checksum != 0;
    pl.comm_timeout = p->comm_timeout;
    pl.idle_timeout = p->idle_timeout;
    pl.policy = c->pm.policy;
    pl.n_offsets = (size_t)c->pm.n_layers * c->pm.n_experts + 1;
    pl.offsets = c->pm.offsets;
    pl.n_ranks = (size_t)c->pm.offsets[pl.n_offsets - 1];
    pl.ranks = c->pm.ranks;
    pl.model_dir = (char *)m->dir;
    pl.content_sample = sample;
    *len = trustmoe__placement__get_packed_size(&pl);
    uint8_t *buf = tm_malloc(*len);
    trustmoe__placement__pack(&pl, buf);
    return buf;
}

/* Records worker r's Handshake and checks it against this run: rank, load
 * error, build, model identity and content, experts hosted. */
static void check_handshake(dist_ctx *c, int r, const Trustmoe__Handshake *hs, uint64_t sample)
{
    const tm_model *m = c->m;
    rank_info *ri = &c->info[r];
    snprintf(ri->host, sizeof ri->host, "%s", hs->host);
    ri->pid = hs->pid;
    ri->experts = hs->experts_hosted;
    ri->weight_bytes = hs->weight_bytes;
    ri->rss = hs->resident_bytes;
    ri->rss_before = hs->resident_before_load;
    if (hs->rank != r) dist_die(1, "handshake: the message from rank %d says rank %d", r, hs->rank);
    if (hs->error && hs->error[0])
        dist_die(2, "handshake: worker rank %d (host %s, model %s): %s", r, hs->host, hs->model_dir, hs->error);
    if (strcmp(hs->build_version, dist_build_version()))
        dist_die(2,
                 "handshake: build mismatch: worker rank %d (host %s) runs '%s', the coordinator runs '%s'; every "
                 "rank must run the same trustmoe build",
                 r, hs->host, hs->build_version, dist_build_version());
    if (hs->model_identity != m->identity || hs->content_sample != sample)
        dist_die(2,
                 "handshake: model mismatch: worker rank %d (host %s) loaded %s with identity %016llx, content "
                 "sample %08llx; the coordinator (host %s) loaded %s with identity %016llx, content sample "
                 "%08llx; every rank must load the same checkpoint",
                 r, hs->host, hs->model_dir, (unsigned long long)hs->model_identity,
                 (unsigned long long)hs->content_sample, dist_hostname(), m->dir, (unsigned long long)m->identity,
                 (unsigned long long)sample);
    int want = place_rank_experts(&c->pm, r);
    if (hs->experts_hosted != want)
        dist_die(1, "handshake: worker rank %d (host %s) loaded %d experts, the placement gives it %d", r,
                 hs->host, hs->experts_hosted, want);
}

/* Rank 0 loaded its experts from the same placement (dist_coordinator_mask)
 * before the model's config was read; this checks that it holds exactly
 * the experts the placement built here gives it. */
static void check_own_experts(dist_ctx *c)
{
    const tm_model *m = c->m;
    int n = 0;
    for (int l = 0; l < c->L; l++)
        for (int e = 0; e < c->E && c->pm.is_moe[l]; e++) {
            int want = place_hosts(&c->pm, 0, l, e);
            int have = m->layers[l].experts && m->layers[l].experts[e].gate.data;
            if (want != have)
                dist_die(2, "placement: rank 0 %s layer %d expert %d, but the placement %s it (no expert was run)",
                         have ? "loaded" : "did not load", l, e, want ? "gives it" : "does not give");
            n += want;
        }
    c->local_experts = n;
    c->info[0].experts = n;
    c->info[0].weight_bytes = place_rank_bytes(&c->pm, 0);
    if (n) {
        const tm_config *cfg = &m->cfg;
        expert_group_init(&c->lgrp, c->E, c->H, cfg->moe_intermediate_size, c->K);
        c->lscratch = tm_malloc((size_t)c->K * (2 * (size_t)TM_MAX(cfg->moe_intermediate_size, 1) + (size_t)c->H) *
                                sizeof(float));
    }
}

tm_status dist_coordinator_start(const tm_model *m, const dist_params *p, int size, moe_backend *be, tm_err *err)
{
    TM_ASSERT_MSG(dist_mpi_active() && dist_rank() == 0 && size == dist_size() && size > 1,
                  "dist_coordinator_start: rank 0 of an MPI job");
    dist_ctx *c = dist_ctx_new(m, p, size);
    c->distributed = 1;
    const tm_config *cfg = &m->cfg;
    if (p->wire_dtype != TM_DT_F32 && p->wire_dtype != TM_DT_BF16)
        dist_die(2, "--wire-dtype must be f32 or bf16");
    tm_status st = place_build_share(&c->pm, cfg, place_expert_bytes(cfg, m->weight_dtype), size - 1, p->placement,
                                     p->replicas, p->coordinator_share, err);
    if (st != TM_OK) {
        /* bad input found before any worker was placed: the caller stops them cleanly */
        dist_ctx_free(c);
        return st;
    }
    check_own_experts(c);
    if (!p->quiet) {
        char idle[256] = "";
        int n_idle = 0;
        size_t k = 0;
        for (int r = 1; r < size; r++)
            if (place_rank_experts(&c->pm, r) == 0 && k < sizeof idle - 16)
                k += (size_t)snprintf(idle + k, sizeof idle - k, "%s%d", n_idle++ ? ", " : "", r);
        if (n_idle)
            fprintf(stderr, "trustmoe: warning: %d of %d worker ranks host no experts (rank%s %s): %d experts per layer "
                            "x %d replica%s fill only %d workers\n",
                    n_idle, size - 1, n_idle == 1 ? "" : "s", idle, cfg->num_experts, TM_MAX(p->replicas, 1),
                    TM_MAX(p->replicas, 1) == 1 ? "" : "s", size - 1 - n_idle);
    }
    uint64_t sample = dist_content_sample(&m->st);
    size_t pl_len = 0;
    uint8_t *pl_buf = pack_placement(c, sample, &pl_len);

    uint8_t *hs_buf = tm_malloc((size_t)size * HS_MAX_BYTES);
    for (int r = 1; r < size; r++) {
        int rc = MPI_Irecv(hs_buf + (size_t)r * HS_MAX_BYTES, HS_MAX_BYTES, MPI_BYTE, r, DIST_TAG_HANDSHAKE, dist_comm(),
                           &c->req[r]);
        if (rc != MPI_SUCCESS) dist_die(1, "handshake receive from rank %d: %s", r, dist_mpi_error(rc));
    }
    for (int r = 1; r < size; r++) {
        int rc = MPI_Isend(pl_buf, (int)pl_len, MPI_BYTE, r, DIST_TAG_PLACEMENT, dist_comm(), &c->req[size + r]);
        if (rc != MPI_SUCCESS) dist_die(1, "placement send to rank %d: %s", r, dist_mpi_error(rc));
    }
    int rc = dist_wait_all(c->req, c->sts, 2 * size, p->idle_timeout, 0.0);
    if (rc >= 0)
        dist_die(1, "handshake: no answer from worker rank %d within %g s (--idle-timeout): still loading its experts, "
                 "stopped, or not running trustmoe",
                 rc % size, p->idle_timeout);
    if (rc <= -2) dist_die(1, "handshake with rank %d: %s", (-2 - rc) % size, dist_mpi_error(c->sts[-2 - rc].MPI_ERROR));

    for (int r = 1; r < size; r++) {
        int count = 0;
        MPI_Get_count(&c->sts[r], MPI_BYTE, &count);
        Trustmoe__Handshake *hs =
            trustmoe__handshake__unpack(NULL, (size_t)count, hs_buf + (size_t)r * HS_MAX_BYTES);
        if (!hs) dist_die(1, "handshake: rank %d sent %d bytes that are not a Handshake message", r, count);
        check_handshake(c, r, hs, sample);
        trustmoe__handshake__free_unpacked(hs, NULL);
        const rank_info *ri = &c->info[r];
        if (!p->verbose) continue;
        fprintf(stderr,
                "trustmoe: rank %d (%s, pid %d): %d (layer, expert) instances, %.2f MiB of expert weights, resident %.2f MiB "
                "(%.2f MiB before load)\n",
                r, ri->host, ri->pid, ri->experts, dist_mib(ri->weight_bytes), dist_mib(ri->rss),
                dist_mib(ri->rss_before));
    }
    free(hs_buf);
    free(pl_buf);
    if (c->local_experts && p->verbose)
        fprintf(stderr, "trustmoe: rank 0 (%s): %d experts, %.2f MiB of expert weights, computed during the wait\n",
                dist_hostname(), c->local_experts, dist_mib(c->info[0].weight_bytes));
    if (p->verbose)
        fprintf(stderr, "trustmoe: %d workers ready; placement %s, replicas %d, wire %s%s, comm timeout %g s\n", c->W,
            c->pm.policy, TM_MAX(p->replicas, 1), tm_dtype_name(p->wire_dtype), p->checksum ? " + CRC32C" : "",
            p->comm_timeout);
    dist_ctx_grow(c, 64);
    be->run_layer = dist_run_layer;
    be->ctx = c;
    (void)err;
    return TM_OK;
}
