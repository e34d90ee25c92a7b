/* config.h: the model hyper-parameters, read from a Hugging Face config.json.
 *
 * Accepted forms:
 *   - hub Qwen3-MoE: model_type "qwen3_moe", num_experts, rope_theta
 *   - transformers v5: rope_parameters {rope_theta, ...}, num_local_experts
 *   - Qwen3-Omni: model_type "qwen3_omni_moe", the text model under
 *     thinker_config.text_config, tensors prefixed "thinker."
 * Every value the engine uses is read explicitly; class defaults are used only
 * where transformers itself falls back to them, and `inspect` shows which.
 */
#ifndef TM_CONFIG_H
#define TM_CONFIG_H

#include "common.h"

#define CFG_MAX_LAYERS 1024
#define CFG_MAX_EOS 8
#define CFG_MAX_HEAD_DIM 1024      /* forward's RoPE angle table holds head_dim / 2 */
#define CFG_MAX_EXPERTS 4096       /* per layer; sizes the per-layer expert masks   */
#define CFG_MAX_WIDTH (1 << 20)    /* hidden, intermediate, heads x head_dim        */
#define CFG_MAX_VOCAB (1 << 24)

typedef struct {
    char model_type[64];      /* top-level model_type                         */
    char text_model_type[64]; /* model_type of the text config actually used  */
    char architecture[96];
    char tensor_prefix[16];   /* "" or "thinker."                             */
    int is_omni;

    int vocab_size, hidden_size, num_layers;
    int num_heads, num_kv_heads, head_dim;
    int head_dim_from_config; /* 0: fell back to hidden / heads as HF does    */
    int moe_intermediate_size, intermediate_size;
    int num_experts, top_k;
    int norm_topk_prob;
    int decoder_sparse_step;
    unsigned char mlp_only[CFG_MAX_LAYERS]; /* 1: dense MLP layer by mlp_only_layers */
    float rope_theta, rms_norm_eps;
    int max_position_embeddings;
    int tie_word_embeddings;
    int mrope_section[3]; /* zeros when absent */
    int has_mrope;
    int bos_token_id;
    int eos_ids[CFG_MAX_EOS];
    int n_eos;
} tm_config;

/* Parse DIR/config.json (and DIR/generation_config.json for eos ids when present). */
tm_status cfg_load(tm_config *c, const char *dir, tm_err *err);
/* Parse a config.json text; `name` is used in messages. */
tm_status cfg_parse(tm_config *c, const char *text, const char *name, tm_err *err);

/* 1 if layer i uses the sparse MoE block, 0 for a dense MLP. */
int cfg_layer_is_moe(const tm_config *c, int layer);
int cfg_is_eos(const tm_config *c, int id);

/* Print every value the engine uses, one "key: value" per line. */
void cfg_print(const tm_config *c, FILE *f);

#endif
