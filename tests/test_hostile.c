/* test_hostile.c: hostile input to the library's readers ends in TM_EINPUT
 * with a message naming the file and field, quickly, without a crash.
 * Covers the JSON-integer reader, the input-file opener, config validation,
 * the trust database's numbers and open modes, and the ATP arithmetic. */
#include "config.h"
#include "cunit_run.h"
#include "input.h"
#include "trust_atp.h"
#include "trust_db.h"

#include <cJSON.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/trustmoe_hostile_XXXXXX";

static void path_in(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", dir, name); }

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* ---- JSON integers --------------------------------------------------------- */

static int json_i32_of(const char *text, int lo, int hi, int *out)
{
    cJSON *v = cJSON_Parse(text);
    int ok = tm_json_i32(v, lo, hi, out);
    cJSON_Delete(v);
    return ok;
}

static void test_json_int(void)
{
    int x = -7;
    CU_ASSERT(json_i32_of("42", 0, 100, &x) && x == 42);
    CU_ASSERT(json_i32_of("-5", -10, 10, &x) && x == -5);
    CU_ASSERT(!json_i32_of("1e400", INT32_MIN, INT32_MAX, &x));
    CU_ASSERT(!json_i32_of("-1e400", INT32_MIN, INT32_MAX, &x));
    CU_ASSERT(!json_i32_of("2.5", 0, 100, &x));
    CU_ASSERT(!json_i32_of("3e9", INT32_MIN, INT32_MAX, &x));
    CU_ASSERT(!json_i32_of("101", 0, 100, &x));
    CU_ASSERT(!json_i32_of("\"7\"", 0, 100, &x));
    CU_ASSERT(!json_i32_of("true", 0, 100, &x));
    cJSON *nan = cJSON_CreateNumber(NAN);
    CU_ASSERT(!tm_json_i32(nan, INT32_MIN, INT32_MAX, &x));
    cJSON_Delete(nan);
    int64_t big = 0;
    cJSON *v = cJSON_Parse("9007199254740992");
    CU_ASSERT(tm_json_int(v, 0, INT64_MAX, &big) && big == 9007199254740992LL);
    cJSON_Delete(v);
    v = cJSON_Parse("1e19");
    CU_ASSERT(!tm_json_int(v, INT64_MIN, INT64_MAX, &big));
    cJSON_Delete(v);
    CU_ASSERT_EQUAL(x, -5); /* the last accepted value: refusals leave *out alone */
}

/* ---- input files ------------------------------------------------------------ */

static void test_input_files(void)
{
    char p[600];
    char *text = NULL;
    tm_err err = {{0}};

    /* a FIFO with no writer: refused at once, not blocked in open() */
    path_in(p, sizeof p, "fifo.json");
    CU_ASSERT_EQUAL_FATAL(mkfifo(p, 0600), 0);
    CU_ASSERT_EQUAL(tm_read_input(p, "config", TM_CAP_CONFIG, &text, NULL, &err), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "fifo.json: config is a FIFO"));
    CU_ASSERT_PTR_NULL(text);

    /* a symlink to /dev/zero: a character device, never read */
    path_in(p, sizeof p, "zero.json");
    CU_ASSERT_EQUAL_FATAL(symlink("/dev/zero", p), 0);
    CU_ASSERT_EQUAL(tm_read_input(p, "tokenizer", TM_CAP_TOKENIZER, &text, NULL, &err), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "zero.json: tokenizer is a character device"));

    /* a directory */
    CU_ASSERT_EQUAL(tm_read_input(dir, "policy", TM_CAP_POLICY, &text, NULL, &err), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "policy is a directory"));

    /* over the cap of its kind */
    path_in(p, sizeof p, "big.txt");
    char buf[300];
    memset(buf, 'x', sizeof buf);
    write_bytes(p, buf, sizeof buf);
    CU_ASSERT_EQUAL(tm_read_input(p, "prompts file", 299, &text, NULL, &err), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "big.txt: prompts file of 300 bytes exceeds the limit of 299 bytes"));
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(tm_read_input(p, "prompts file", 300, &text, &len, &err), TM_OK);
    CU_ASSERT(len == 300 && text[299] == 'x' && text[300] == '\0');
    free(text);

    /* empty name, missing file */
    CU_ASSERT_EQUAL(tm_read_input("", "policy", TM_CAP_POLICY, &text, NULL, &err), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "empty file name"));
    path_in(p, sizeof p, "missing.json");
    CU_ASSERT_EQUAL(tm_read_input(p, "config", TM_CAP_CONFIG, &text, NULL, &err), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "missing.json: cannot open config"));
}

/* ---- config validation -------------------------------------------------------- */

static const char *base_config =
    "{\"model_type\":\"qwen3_moe\",\"vocab_size\":512,\"hidden_size\":64,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":32,\"moe_intermediate_size\":24,"
    "\"num_experts\":16,\"num_experts_per_tok\":4,\"norm_topk_prob\":true,\"rms_norm_eps\":1e-6,"
    "\"max_position_embeddings\":256,\"rope_theta\":1000000.0,\"eos_token_id\":2";

/* Parse base_config with `field` set to `value` (replaced in place, or
 * appended when the base lacks it); NULL parses the base as it is. */
static tm_status parse_with(const char *field, const char *value, tm_err *err)
{
    char text[2048];
    snprintf(text, sizeof text, "%s}", base_config);
    if (field) {
        char key[64];
        snprintf(key, sizeof key, "\"%s\":", field);
        char *at = strstr(text, key);
        if (at) {
            char *end = at + strlen(key);
            while (*end && *end != ',' && *end != '}') end++;
            char rest[2048];
            snprintf(rest, sizeof rest, "%s", end);
            snprintf(at + strlen(key), sizeof text - (size_t)(at + strlen(key) - text), "%s%s", value, rest);
        } else {
            snprintf(text + strlen(text) - 1, sizeof text - strlen(text) + 1, ",%s%s}", key, value);
        }
    }
    tm_config c;
    return cfg_parse(&c, text, "hostile/config.json", err);
}

static void test_config_values(void)
{
    tm_err err = {{0}};
    CU_ASSERT_EQUAL_FATAL(parse_with(NULL, NULL, &err), TM_OK);
    struct {
        const char *field, *value, *want;
    } cases[] = {
        {"vocab_size", "1e400", "field 'vocab_size' must be a 32-bit integer"},
        {"hidden_size", "-1e400", "field 'hidden_size'"},
        {"num_experts", "2.5", "field 'num_experts'"},
        {"head_dim", "2048", "head_dim 2048 exceeds 1024"},
        {"num_experts", "5000", "num_experts 5000 exceeds 4096"},
        {"hidden_size", "2000000000", "hidden_size"},
        {"eos_token_id", "1e400", "eos_token_id"},
        {"eos_token_id", "[2, -3]", "eos_token_id -3"},
        {"rms_norm_eps", "1e400", "field 'rms_norm_eps' must be a finite number"},
        {"mlp_only_layers", "[1e400]", "mlp_only_layers"},
        {"rope_scaling", "{\"mrope_section\":[2000000000,2000000000,2000000000]}", "mrope_section[0]"},
        {"rope_scaling", "{\"mrope_section\":[8,4,1e400]}", "mrope_section[2]"},
    };
    for (size_t i = 0; i < TM_ARRAY_LEN(cases); i++) {
        err.msg[0] = 0;
        tm_status st = parse_with(cases[i].field, cases[i].value, &err);
        CU_ASSERT_EQUAL(st, TM_EINPUT);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "hostile/config.json"));
        if (!strstr(err.msg, cases[i].want)) {
            printf("\ncase %s=%s: got '%s', want '%s'\n", cases[i].field, cases[i].value, err.msg, cases[i].want);
            CU_FAIL("message");
        }
    }
    /* a valid mrope section still parses */
    CU_ASSERT_EQUAL(parse_with("rope_scaling", "{\"mrope_section\":[8,4,4]}", &err), TM_OK);
}

/* ---- trust database ------------------------------------------------------------- */

static void sql(trust_db *db, const char *text)
{
    char *msg = NULL;
    if (sqlite3_exec(db->db, text, NULL, NULL, &msg) != SQLITE_OK) printf("\nsql: %s: %s\n", text, msg);
    sqlite3_free(msg);
}

static void test_trust_db_numbers(void)
{
    char p[600];
    tm_err err = {{0}};
    trust_db db;
    path_in(p, sizeof p, "numbers.db");
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, p, NULL, &err), TM_OK);

    /* a context set whose dim would overflow 4 * dim */
    sql(&db, "INSERT INTO context_set (model, k, dim, created) VALUES ('m', 2, 1073741823, 0)");
    trust_contexts c;
    int found = 1;
    CU_ASSERT_EQUAL(trust_db_load_contexts(&db, "m", &c, &found, &err), TM_EINPUT);
    CU_ASSERT(!found);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "numbers.db: model \"m\": context set with k=2 dim=1073741823"));

    /* a non-finite centroid */
    sql(&db, "UPDATE context_set SET k = 1, dim = 2 WHERE model = 'm'");
    sql(&db, "INSERT INTO contexts (model, context, n_samples, centroid) VALUES ('m', 0, 3, x'0000807f00000000')");
    CU_ASSERT_EQUAL(trust_db_load_contexts(&db, "m", &c, &found, &err), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "not finite"));

    /* trust values out of [0, 1]: the table and the single-entry read refuse them */
    sql(&db, "INSERT INTO trust (model, context, layer, expert, trust, evidence, last_quality, last_credit, "
             "last_used, window) VALUES ('m', 'general', 0, 1, 1e300, 5, 0.5, 1.0, 0, x'')");
    trust_table t;
    trust_table_init(&t, 2, 4, "general");
    CU_ASSERT_EQUAL(trust_db_load_table(&db, "m", &t, &err), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "layer 0 expert 1: trust 1e+300"));
    trust_entry e;
    CU_ASSERT_EQUAL(trust_db_get(&db, "m", 0, 1, "general", &e, &found, &err), TM_EINPUT);
    sql(&db, "UPDATE trust SET trust = 0.5, evidence = -4");
    CU_ASSERT_EQUAL(trust_db_load_table(&db, "m", &t, &err), TM_EINPUT);
    sql(&db, "UPDATE trust SET evidence = 4");
    CU_ASSERT_EQUAL(trust_db_load_table(&db, "m", &t, &err), TM_OK);
    trust_table_free(&t);
    trust_db_close(&db);

    /* a trust of 1e300 can never buy an expert for a negative price */
    CU_ASSERT(trust_atp_cost(0.5, 1e300) > 0);
    CU_ASSERT_EQUAL(trust_atp_cost(0.5, 1e300), trust_atp_cost(0.5, 1.0));
    CU_ASSERT_EQUAL(trust_atp_cost(0.5, NAN), trust_atp_cost(0.5, 0.0));
    CU_ASSERT(trust_atp_cost(1e300, 0.5) > 0);
    CU_ASSERT(trust_atp_reward(INT64_MAX, 0.9) == INT32_MAX);
}

static void test_trust_db_files(void)
{
    char p[600], wal[620];
    tm_err err = {{0}};
    trust_db db;

    /* not a database: bad input */
    path_in(p, sizeof p, "garbage.db");
    char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 37 + 11);
    write_bytes(p, junk, sizeof junk);
    CU_ASSERT_EQUAL(trust_db_open(&db, p, NULL, &err), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "garbage.db"));

    /* the empty path is not a private temporary database */
    CU_ASSERT_EQUAL(trust_db_open(&db, "", NULL, &err), TM_EINPUT);
    CU_ASSERT_PTR_NULL(strstr(err.msg, "not an error"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "--trust-db: empty path"));

    /* read-only: no migration, no WAL file, the bytes stay as they were */
    path_in(p, sizeof p, "ro.db");
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, p, NULL, &err), TM_OK);
    trust_db_close(&db);
    snprintf(wal, sizeof wal, "%s-wal", p);
    unlink(wal);
    struct stat before, after;
    CU_ASSERT_EQUAL_FATAL(stat(p, &before), 0);
    trust_db_params rp = trust_db_default_params();
    rp.read_only = 1;
    CU_ASSERT_EQUAL_FATAL(trust_db_open(&db, p, &rp, &err), TM_OK);
    CU_ASSERT_EQUAL(trust_db_schema_version(&db), TRUST_DB_SCHEMA_VERSION);
    trust_entry e;
    int found = 1;
    CU_ASSERT_EQUAL(trust_db_get(&db, "m", 0, 0, "general", &e, &found, &err), TM_OK);
    trust_db_close(&db);
    CU_ASSERT_EQUAL(stat(p, &after), 0);
    CU_ASSERT(before.st_size == after.st_size && before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
              before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);

    /* read-only on an old schema or a missing file: refused, not migrated or created */
    path_in(p, sizeof p, "old.db");
    sqlite3 *raw = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(p, &raw), SQLITE_OK);
    sqlite3_exec(raw, "CREATE TABLE x (a INT)", NULL, NULL, NULL);
    sqlite3_close(raw);
    CU_ASSERT_EQUAL(trust_db_open(&db, p, &rp, &err), TM_EINPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "schema version 0"));
    path_in(p, sizeof p, "absent.db");
    CU_ASSERT_NOT_EQUAL(trust_db_open(&db, p, &rp, &err), TM_OK);
    CU_ASSERT_NOT_EQUAL(access(p, F_OK), 0);
}

int main(void)
{
    if (!mkdtemp(dir)) return 1;
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("hostile", NULL, NULL);
    CU_add_test(s, "checked JSON integers", test_json_int);
    CU_add_test(s, "input files: FIFO, device, directory, cap", test_input_files);
    CU_add_test(s, "config values the kernels cannot take", test_config_values);
    CU_add_test(s, "trust db numbers and ATP", test_trust_db_numbers);
    CU_add_test(s, "trust db files and read-only open", test_trust_db_files);
    int rc = cunit_run();
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) rc = 1;
    return rc;
}
