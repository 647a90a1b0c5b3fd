/*
 * libFuzzer target for the service spec parser (common/ds_spec.c): a .dstack.yml
 * as input, the demands of fuzz_document.h.
 *
 *   build/fuzz/fuzz_spec -max_total_time=60 t/spec/good t/spec/bad
 */

#include "ds_spec.h"
#include "fuzz_document.h"


static int
typed(const cJSON *normalized, ds_err_t *err)
{
    ds_spec_t  v;
    int         rc;

    rc = ds_spec_from_json(normalized, &v, err);
    ds_spec_free(&v);
    return rc;
}


/* the parser with its warnings, which must be strings */
static int
parse(const char *filename, const char *text, size_t len,
    cJSON **normalized, ds_err_t *err)
{
    int           rc;
    cJSON        *w;
    const cJSON  *it;

    w = cJSON_CreateArray();
    rc = ds_spec_parse_yaml_warn(filename, text, len, normalized, w, err);
    cJSON_ArrayForEach(it, w) {
        if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
            __builtin_trap();
        }
    }
    cJSON_Delete(w);
    return rc;
}


static const struct fuzz_doc  doc = {
    "fuzz.dstack.yml", "spec", parse, ds_spec_validate_json, typed,
    ds_spec_resolve_env,
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_document(&doc, data, size);
}
