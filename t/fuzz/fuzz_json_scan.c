/*
 * libFuzzer target for ds_json_scan: never reads out of bounds, and
 * whatever it accepts as valid, cJSON parses too, with the same "model".
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ds_json_scan.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          rc, esc;
    char        *copy, *out;
    size_t       len, off, n;
    cJSON       *root, *m;
    const char  *val;

    rc = ds_json_find_string((const char *) data, size, "model", &val, &len,
                             &esc, &off);

    if (rc == DS_JSON_INVALID) {
        if (off > size) {
            abort();
        }
        return 0;
    }

    /* valid input: the raw members of the affinity key lie inside it
     * and each is a whole value (its own scan finds no "model" in it) */
    {
        size_t                i;
        ds_json_span_t        sp[2];
        static const char    *const keys[2] = { "messages", "model" };

        if (ds_json_find_raw((const char *) data, size, keys, 2, sp)
            != DS_JSON_OK)
        {
            abort();
        }

        for (i = 0; i < 2; i++) {
            if (sp[i].data != NULL
                && (sp[i].data < (const char *) data
                    || sp[i].data + sp[i].len > (const char *) data + size
                    || sp[i].len == 0))
            {
                abort();
            }
        }

        if (rc == DS_JSON_OK
            && (sp[1].data != val - 1 || sp[1].len != len + 2))
        {
            abort();
        }
    }

    /* cJSON stops at NUL; our scanner rejects raw NUL inside strings and
     * anywhere else, so valid input has none */
    copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';

    root = cJSON_ParseWithOpts(copy, NULL, 1);
    if (root == NULL) {
        /* cJSON refuses lone surrogates in \u escapes; RFC 8259's
         * grammar (and we) accept them */
        if (strstr(copy, "\\u") == NULL) {
            abort();
        }
        free(copy);
        return 0;
    }

    if (!cJSON_IsObject(root)) {
        abort();
    }

    m = cJSON_GetObjectItemCaseSensitive(root, "model");

    if (rc == DS_JSON_OK) {
        out = malloc(len + 1);
        n = esc ? ds_json_unescape(val, len, out) : len;
        if (!esc) {
            memcpy(out, val, len);
        }
        if (n != (size_t) -1) {
            if (!cJSON_IsString(m) || strlen(m->valuestring) != n
                || memcmp(m->valuestring, out, n) != 0)
            {
                abort();
            }
        }
        free(out);
    }

    cJSON_Delete(root);
    free(copy);
    return 0;
}
