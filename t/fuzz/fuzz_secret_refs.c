/*
 * libFuzzer target for ds_secret_refs: never reads past the string; a
 * string it accepts splits into pieces that lie inside it, texts not
 * empty, names that ds_secret_name_ok accepts; checking alone agrees
 * with walking; a message, when it fails, is not empty.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ds_secret.h"


struct walk {
    const char     *s;
    size_t          len;
};


static int
piece(void *arg, int kind, const char *p, size_t len)
{
    struct walk  *w = arg;

    if (len == 0 || p < w->s || p + len > w->s + w->len) {
        abort();
    }
    if (kind == DS_REF_SECRET && !ds_secret_name_ok(p, len)) {
        abort();
    }
    if (kind != DS_REF_SECRET && kind != DS_REF_TEXT) {
        abort();
    }
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char         *s, err[256];
    struct walk   w;
    int           rc;

    /* a NUL-terminated copy of exactly size bytes (cut at a NUL) */
    s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    w.s = s;
    w.len = strlen(s);

    err[0] = '\0';
    rc = ds_secret_refs(s, piece, &w, err, sizeof(err));
    if (rc != 0 && (rc != -1 || err[0] == '\0')) {
        abort();
    }
    if (ds_secret_refs(s, NULL, NULL, err, sizeof(err)) != rc) {
        abort();
    }
    (void) ds_secret_has_refs(s);

    free(s);
    return 0;
}
