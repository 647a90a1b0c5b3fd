/*
 * libFuzzer target for the SSH fleet parser (common/ds_fleet.c): a fleet.dstack.yml
 * as input, the demands of fuzz_document.h.
 *
 *   build/fuzz/fuzz_fleet -max_total_time=60 t/fuzz/seeds/fuzz_fleet
 */

#include "ds_fleet.h"
#include "fuzz_document.h"


static int
typed(const cJSON *normalized, ds_err_t *err)
{
    ds_fleet_t  v;
    int         rc;

    rc = ds_fleet_from_json(normalized, &v, err);
    ds_fleet_free(&v);
    return rc;
}


static const struct fuzz_doc  doc = {
    "fuzz.fleet.yml", "fleet", ds_fleet_parse_yaml, ds_fleet_validate_json, typed,
    ds_fleet_resolve_env,
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_document(&doc, data, size);
}
