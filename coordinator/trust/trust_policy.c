/* trust_policy.c: the expert authorization policy (format in trust_policy.h). */
#include "trust_policy.h"
#include "input.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

/* ---- parsing ------------------------------------------------------------ */

/* Read an array of integer ids in [0, limit) into flags[limit]. */
static tm_status parse_ids(const cJSON *arr, uint8_t *flags, int limit, const char *path, int ri,
                           const char *field, const char *what, tm_err *err)
{
    if (!cJSON_IsArray(arr))
        return tm_errf(err, TM_EINPUT, "%s: rules[%d]: \"%s\" must be an array of %s ids", path, ri,
                       field, what);
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr)
    {
        int id;
        if (!tm_json_i32(v, INT32_MIN, INT32_MAX, &id))
            return tm_errf(err, TM_EINPUT, "%s: rules[%d]: %s[%d]: not an integer", path, ri, field,
                           i);
        if (id < 0 || id >= limit)
            return tm_errf(err, TM_EINPUT, "%s: rules[%d]: %s[%d]: %s %d out of range (%d %ss)",
                           path, ri, field, i, what, id, limit, what);
        flags[id] = 1;
        i++;
    }
    return TM_OK;
}

tm_status trust_policy_parse(trust_policy *p, const char *text, const char *path, int n_layers,
                             int n_experts, tm_err *err)
{
    tm_status st = TM_OK;
    memset(p, 0, sizeof *p);
    p->n_layers = n_layers;
    p->n_experts = n_experts;
    p->default_allow = 1;
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        st = tm_errf(err, TM_EINPUT, "%s: not valid JSON (near \"%.20s\")", path,
                     cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        st = tm_errf(err, TM_EINPUT, "%s: top level must be an object", path);
        goto fail;
    }
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(root, "default");
    if (def) {
        if (cJSON_IsString(def) && strcmp(def->valuestring, "allow") == 0) {
            p->default_allow = 1;
        } else if (cJSON_IsString(def) && strcmp(def->valuestring, "deny") == 0) {
            p->default_allow = 0;
        } else {
            st = tm_errf(err, TM_EINPUT, "%s: \"default\" must be \"allow\" or \"deny\"", path);
            goto fail;
        }
    }
    const cJSON *rules = cJSON_GetObjectItemCaseSensitive(root, "rules");
    if (rules && !cJSON_IsArray(rules)) {
        st = tm_errf(err, TM_EINPUT, "%s: \"rules\" must be an array", path);
        goto fail;
    }
    int n = rules ? cJSON_GetArraySize(rules) : 0;
    p->rules = tm_calloc((size_t)(n ? n : 1), sizeof *p->rules);
    const cJSON *r;
    int ri = 0;
    cJSON_ArrayForEach(r, rules)
    {
        trust_policy_rule *rule = &p->rules[ri];
        p->n_rules = ri + 1;
        rule->layers = tm_calloc((size_t)n_layers, 1);
        if (!cJSON_IsObject(r)) {
            st = tm_errf(err, TM_EINPUT, "%s: rules[%d]: must be an object", path, ri);
            goto fail;
        }
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(r, "requester");
        if (req && !cJSON_IsString(req)) {
            st = tm_errf(err, TM_EINPUT, "%s: rules[%d]: \"requester\" must be a string", path, ri);
            goto fail;
        }
        if (req && strcmp(req->valuestring, "*") != 0) rule->requester = tm_strdup(req->valuestring);
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(r, "layers");
        if (layers) {
            st = parse_ids(layers, rule->layers, n_layers, path, ri, "layers", "layer", err);
            if (st) goto fail;
        } else {
            memset(rule->layers, 1, (size_t)n_layers);
        }
        const cJSON *allow = cJSON_GetObjectItemCaseSensitive(r, "allow");
        if (allow) {
            rule->allow = tm_calloc((size_t)n_experts, 1);
            st = parse_ids(allow, rule->allow, n_experts, path, ri, "allow", "expert", err);
            if (st) goto fail;
        }
        const cJSON *deny = cJSON_GetObjectItemCaseSensitive(r, "deny");
        if (deny) {
            rule->deny = tm_calloc((size_t)n_experts, 1);
            st = parse_ids(deny, rule->deny, n_experts, path, ri, "deny", "expert", err);
            if (st) goto fail;
        }
        const cJSON *key;
        cJSON_ArrayForEach(key, r)
        {
            if (strcmp(key->string, "requester") && strcmp(key->string, "layers") &&
                strcmp(key->string, "allow") && strcmp(key->string, "deny")) {
                st = tm_errf(err, TM_EINPUT, "%s: rules[%d]: unknown field \"%s\"", path, ri,
                             key->string);
                goto fail;
            }
        }
        ri++;
    }
    cJSON_Delete(root);
    return TM_OK;
fail:
    cJSON_Delete(root);
    trust_policy_free(p);
    return st;
}

tm_status trust_policy_load(trust_policy *p, const char *path, int n_layers, int n_experts,
                            tm_err *err)
{
    char *text = NULL;
    memset(p, 0, sizeof *p);
    tm_status st = tm_read_input(path, "policy", TM_CAP_POLICY, &text, NULL, err);
    if (st) return st;
    st = trust_policy_parse(p, text, path, n_layers, n_experts, err);
    free(text);
    return st;
}

void trust_policy_free(trust_policy *p)
{
    for (int i = 0; i < p->n_rules; i++) {
        free(p->rules[i].requester);
        free(p->rules[i].layers);
        free(p->rules[i].allow);
        free(p->rules[i].deny);
    }
    free(p->rules);
    memset(p, 0, sizeof *p);
}

/* ---- evaluation ---------------------------------------------------------- */

void trust_policy_mask(const trust_policy *p, const char *requester, uint8_t *allowed)
{
    int L = p->n_layers, E = p->n_experts;
    for (int l = 0; l < L; l++) {
        uint8_t *row = allowed + (size_t)l * E;
        int has_allow = 0;
        for (int e = 0; e < E; e++) row[e] = 0; /* "listed in some allow" */
        for (int i = 0; i < p->n_rules; i++) {
            const trust_policy_rule *r = &p->rules[i];
            if (!r->layers[l] || !r->allow) continue;
            if (r->requester && (!requester || strcmp(r->requester, requester))) continue;
            has_allow = 1;
            for (int e = 0; e < E; e++) row[e] |= r->allow[e];
        }
        if (!has_allow)
            for (int e = 0; e < E; e++) row[e] = (uint8_t)p->default_allow;
        for (int i = 0; i < p->n_rules; i++) {
            const trust_policy_rule *r = &p->rules[i];
            if (!r->layers[l] || !r->deny) continue;
            if (r->requester && (!requester || strcmp(r->requester, requester))) continue;
            for (int e = 0; e < E; e++)
                if (r->deny[e]) row[e] = 0;
        }
    }
}
