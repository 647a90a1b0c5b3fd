/*
 * What the parser fuzz targets share (fuzz_spec.c, fuzz_fleet.c): a
 * document type's parser from YAML, its validator of JSON, its typed
 * view and its env resolution, and the demands on them.
 *
 * Whatever the input, the parser must not crash, leak or read out of
 * bounds, and must say why it refused it in the "FILE:LINE:COL: ..."
 * form.  What it accepts, the daemon's side must accept again unchanged
 * (normalize(normalize(x)) == normalize(x)), the typed view must load,
 * and filling bare env names keeps it valid.  The same input read as
 * JSON goes through the daemon's side directly, with the same demands.
 *
 * A target defines FUZZ_DOC (a struct fuzz_doc) and includes this.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ds_state.h"

struct fuzz_doc {
    const char  *filename;      /* in the parser's messages */
    const char  *what;          /* "spec", "fleet" */
    int        (*parse_yaml)(const char *filename, const char *text,
                             size_t len, cJSON **normalized, ds_err_t *err);
    int        (*validate_json)(const cJSON *in, cJSON **normalized,
                                ds_err_t *err);
    /* loads and frees the typed view: DS_OK or not */
    int        (*typed)(const cJSON *normalized, ds_err_t *err);
    int        (*resolve_env)(cJSON *normalized, const char *const *overrides,
                              char *(*getenv_fn)(const char *),
                              ds_err_t *err);
};


static char *
fuzz_getenv(const char *name)
{
    (void) name;
    return "value";
}


static void
fuzz_check_normalized(const struct fuzz_doc *d, const cJSON *n,
    const char *how)
{
    char      *a, *b;
    cJSON     *again, *copy;
    ds_err_t   err;

    if (d->validate_json(n, &again, &err) != DS_OK) {
        fprintf(stderr, "%s: normalized %s rejected: %s\n", how, d->what,
                err.msg);
        abort();
    }

    a = cJSON_PrintUnformatted(n);
    b = cJSON_PrintUnformatted(again);
    if (a == NULL || b == NULL || strcmp(a, b) != 0) {
        fprintf(stderr, "%s: not idempotent\n  1: %s\n  2: %s\n", how,
                a ? a : "(null)", b ? b : "(null)");
        abort();
    }
    cJSON_free(a);
    cJSON_free(b);
    cJSON_Delete(again);

    if (d->typed(n, &err) != DS_OK) {
        fprintf(stderr, "%s: from_json: %s\n", how, err.msg);
        abort();
    }

    copy = cJSON_Duplicate(n, 1);
    if (copy) {
        if (d->resolve_env(copy, NULL, fuzz_getenv, &err) != DS_OK
            && strstr(err.msg, "out of memory") == NULL)
        {
            fprintf(stderr, "%s: resolve_env: %s\n", how, err.msg);
            abort();
        }
        if (d->validate_json(copy, &again, &err) != DS_OK) {
            fprintf(stderr, "%s: resolved %s rejected: %s\n", how, d->what,
                    err.msg);
            abort();
        }
        cJSON_Delete(again);
        cJSON_Delete(copy);
    }
}


static int
fuzz_document(const struct fuzz_doc *d, const uint8_t *data, size_t size)
{
    int        rc;
    cJSON     *n, *in;
    ds_err_t   err;
    size_t     fl = strlen(d->filename);

    err.msg[0] = '\0';
    rc = d->parse_yaml(d->filename, (const char *) data, size, &n, &err);

    if (rc == DS_OK) {
        fuzz_check_normalized(d, n, "yaml");
        cJSON_Delete(n);

    } else if (n != NULL
               || (rc == DS_EINVAL
                   && (strncmp(err.msg, d->filename, fl) != 0
                       || err.msg[fl] != ':')))
    {
        fprintf(stderr, "bad refusal (%d): %s\n", rc, err.msg);
        abort();
    }

    in = cJSON_ParseWithLength((const char *) data, size);
    if (in) {
        rc = d->validate_json(in, &n, &err);
        if (rc == DS_OK) {
            fuzz_check_normalized(d, n, "json");
            cJSON_Delete(n);

        } else if (rc == DS_EINVAL && strncmp(err.msg, "spec", 4) != 0) {
            fprintf(stderr, "bad refusal: %s\n", err.msg);
            abort();
        }
        cJSON_Delete(in);
    }

    return 0;
}
