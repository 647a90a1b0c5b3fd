/*
 * libFuzzer target for the SSH fleet parser (common/ds_fleet.c).
 *
 * The input is a fleet.dstack.yml.  Whatever it is, the parser must not
 * crash, leak or read out of bounds, and must say why it refused it in
 * the "FILE:LINE:COL: [PATH: ]message" form.  What it accepts, the daemon's
 * side must accept again unchanged (normalize(normalize(x)) ==
 * normalize(x)), and the typed view must load.  The same input read as
 * JSON goes through the daemon's side directly, with the same demand.
 *
 *   build/fuzz/fuzz_fleet -max_total_time=60 t/fuzz/seeds/fuzz_fleet
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_fleet.h"


#define FILENAME  "fuzz.fleet.yml"


static char *
fuzz_getenv(const char *name)
{
    (void) name;
    return "value";
}


static void
check_normalized(const cJSON *n, const char *what)
{
    char      *a, *b;
    cJSON     *again, *copy;
    ds_err_t   err;
    ds_fleet_t fleet;

    if (ds_fleet_validate_json(n, &again, &err) != DS_OK) {
        fprintf(stderr, "%s: normalized fleet rejected: %s\n", what,
                err.msg);
        abort();
    }

    a = cJSON_PrintUnformatted(n);
    b = cJSON_PrintUnformatted(again);
    if (a == NULL || b == NULL || strcmp(a, b) != 0) {
        fprintf(stderr, "%s: not idempotent\n  1: %s\n  2: %s\n", what,
                a ? a : "(null)", b ? b : "(null)");
        abort();
    }
    cJSON_free(a);
    cJSON_free(b);
    cJSON_Delete(again);

    if (ds_fleet_from_json(n, &fleet, &err) != DS_OK) {
        fprintf(stderr, "%s: from_json: %s\n", what, err.msg);
        abort();
    }
    ds_fleet_free(&fleet);

    /* filling bare env names keeps it valid */
    copy = cJSON_Duplicate(n, 1);
    if (copy) {
        if (ds_fleet_resolve_env(copy, NULL, fuzz_getenv, &err) != DS_OK
            && strstr(err.msg, "out of memory") == NULL)
        {
            fprintf(stderr, "%s: resolve_env: %s\n", what, err.msg);
            abort();
        }
        if (ds_fleet_validate_json(copy, &again, &err) != DS_OK) {
            fprintf(stderr, "%s: resolved fleet rejected: %s\n", what,
                    err.msg);
            abort();
        }
        cJSON_Delete(again);
        cJSON_Delete(copy);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int        rc;
    cJSON     *n, *in;
    ds_err_t   err;

    err.msg[0] = '\0';
    rc = ds_fleet_parse_yaml(FILENAME, (const char *) data, size, &n, &err);

    if (rc == DS_OK) {
        check_normalized(n, "yaml");
        cJSON_Delete(n);

    } else if (n != NULL
               || (rc == DS_EINVAL
                   && strncmp(err.msg, FILENAME ":", sizeof(FILENAME))
                      != 0))
    {
        fprintf(stderr, "bad refusal (%d): %s\n", rc, err.msg);
        abort();
    }

    in = cJSON_ParseWithLength((const char *) data, size);
    if (in) {
        rc = ds_fleet_validate_json(in, &n, &err);
        if (rc == DS_OK) {
            check_normalized(n, "json");
            cJSON_Delete(n);

        } else if (rc == DS_EINVAL && strncmp(err.msg, "spec", 4) != 0) {
            fprintf(stderr, "bad refusal: %s\n", err.msg);
            abort();
        }
        cJSON_Delete(in);
    }

    return 0;
}
