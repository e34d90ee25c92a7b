/* trust_policy.h: authorization of experts per layer and per requester.
 *
 * Policy file (JSON):
 *   {
 *     "default": "allow",                  optional, "allow" | "deny"
 *     "rules": [
 *       { "requester": "alice",            optional, "*" or absent = anyone
 *         "layers": [0, 3],                optional, absent = every layer
 *         "allow": [0, 2, 4],              optional expert ids
 *         "deny":  [5] }                   optional expert ids
 *     ]
 *   }
 *
 * For a requester R and a layer L, the rules that match (R, L) decide:
 *   - an expert in any matching "deny" list is denied (deny beats allow);
 *   - else, if any matching rule has an "allow" list, the expert must be in
 *     one of them;
 *   - else "default" decides.
 * A denied expert is treated like an unavailable one by the selector.
 */
#ifndef TM_TRUST_POLICY_H
#define TM_TRUST_POLICY_H

#include <stdint.h>

#include "common.h"

typedef struct {
    char *requester;   /* NULL = any requester                      */
    uint8_t *layers;   /* [n_layers] 1 = rule applies to this layer */
    uint8_t *allow;    /* [n_experts] 1 = listed; NULL = no list     */
    uint8_t *deny;     /* [n_experts] 1 = listed; NULL = no list     */
} trust_policy_rule;

typedef struct {
    int n_layers, n_experts;
    int default_allow;
    int n_rules;
    trust_policy_rule *rules; /* [n_rules] */
} trust_policy;

/* Parse a policy (text is the file's content, path names it in errors). */
tm_status trust_policy_parse(trust_policy *p, const char *text, const char *path, int n_layers,
                             int n_experts, tm_err *err);
tm_status trust_policy_load(trust_policy *p, const char *path, int n_layers, int n_experts,
                            tm_err *err);
void trust_policy_free(trust_policy *p);

/* allowed[n_layers, n_experts] = 1 where `requester` may use the expert.
 * requester may be NULL (anonymous: only "*" rules match). */
void trust_policy_mask(const trust_policy *p, const char *requester, uint8_t *allowed);

#endif
