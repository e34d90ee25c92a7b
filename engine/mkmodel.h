/* mkmodel.h: synthetic Qwen3-MoE checkpoints with seeded random weights.
 *
 * `trustmoe mkmodel` writes them as a Hugging Face folder; `--synthetic NAME`
 * builds the same weights in memory.  Both go through mk_fill_tensor, which
 * gives any element range of any tensor without generating the rest, so a
 * worker can build only its own experts and get exactly the bytes the file
 * would hold.
 *
 * Weights: every element is a function of (seed, tensor name, element index)
 * alone: key = splitmix64(seed ^ fnv1a64(name)); h = splitmix64(key + (i+1)·φ);
 * z = (sum of the four 16-bit fields of h − 131070) / 37837.23 (Irwin–Hall of
 * four uniforms: mean 0, variance 1, |z| < 3.47); value = bf16(z · std).
 *   std = 1 for model.embed_tokens, 1/sqrt(cols) for every matrix (its
 *   fan-in), and every norm weight is exactly 1, so activations stay O(1).
 *
 * Folder written:
 *   config.json                 the hub's qwen3_moe form (Qwen3MoeForCausalLM)
 *   model.safetensors           when the tensors total at most MK_SHARD_BYTES
 *   model-0000i-of-0000n.safetensors + model.safetensors.index.json otherwise
 *
 * safetensors layout (little-endian):
 *   u64 N = header length; N bytes of JSON, padded with spaces to a multiple
 *   of 8: {"__metadata__":{"format":"pt"}, "<name>":{"dtype":"BF16",
 *   "shape":[..],"data_offsets":[begin,end]}, ...} in tensor order; then the
 *   tensors' bytes back to back, offsets relative to the end of the header.
 * Tensor names are the hub's per-expert ones, model.layers.{i}.mlp.experts.{e}.
 * {gate,up,down}_proj.weight (reference/qwen3_moe.md section 4.1).
 */
#ifndef TM_MKMODEL_H
#define TM_MKMODEL_H

#include "common.h"

/* Shard size limit, decimal like the hub's "4GB"; the environment variable
 * TRUSTMOE_MK_SHARD_BYTES overrides it (tests use it to shard tiny models). */
#define MK_SHARD_BYTES 4000000000ull

typedef struct {
    char name[64];
    int n_layers, n_experts, top_k;
    int hidden, moe_inter, dense_inter; /* dense_inter: config's unused intermediate_size */
    int n_heads, n_kv_heads, head_dim;
    int vocab, max_pos;
    double rope_theta, rms_eps;
    int norm_topk_prob;
} mk_preset;

/* The built-in presets: "omni30b", "omni30b-12", "omni48-small", "tiny".  NULL if unknown. */
const mk_preset *mk_preset_find(const char *name);
int mk_preset_count(void);
const mk_preset *mk_preset_at(int i);
/* A preset from a Hugging Face config.json (any form core/config.h reads). */
tm_status mk_preset_from_config(const char *path, mk_preset *out, tm_err *err);

/* One tensor: its name, shape (ndim 1 or 2) and the std its values have
 * (0 means constant 1: norm weights). */
typedef struct {
    char name[128];
    int ndim;
    int64_t shape[2];
    float std;
} mk_tensor;

int64_t mk_tensor_count(const mk_preset *p);
/* The i-th tensor in file order (embedding, layers 0.., final norm, lm_head). */
void mk_tensor_at(const mk_preset *p, int64_t i, mk_tensor *t);
/* Shape and std of a tensor by name; a leading "thinker." is ignored.
 * Returns 0, or -1 if the name is not one of this preset's tensors. */
int mk_tensor_find(const mk_preset *p, const char *name, mk_tensor *t);
static inline int64_t mk_tensor_numel(const mk_tensor *t) { return t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1]; }

/* bf16_out[count] = elements [offset, offset + count) of tensor `name` in
 * row-major order.  Returns 0, or -1 for an unknown name or a range past the
 * end (nothing written). */
int mk_fill_tensor(const mk_preset *p, uint64_t seed, const char *name, uint16_t *bf16_out, size_t offset,
                   size_t count);

/* Writes the folder (created if absent).  TM_EINPUT if dir cannot be made or
 * written, TM_EFAIL on a write error part-way (disk full). */
tm_status mk_write_model(const mk_preset *p, uint64_t seed, const char *dir, tm_err *err);

/* Total bytes of all tensors (BF16). */
uint64_t mk_model_bytes(const mk_preset *p);

#endif
