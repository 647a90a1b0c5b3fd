/*
 * Bearer tokens in Authorization headers; see ds_bearer.h.
 */

#include "ds_bearer.h"


#define DS_BEARER_SCHEME        "bearer "
#define DS_BEARER_SCHEME_LEN    (sizeof(DS_BEARER_SCHEME) - 1)


int
ds_bearer_token(const char *value, size_t len, const char **token,
    size_t *token_len)
{
    char         c;
    size_t       i;
    const char  *p, *last;

    if (value == NULL) {
        return DS_BEARER_MISSING;
    }

    if (len < DS_BEARER_SCHEME_LEN) {
        return DS_BEARER_INVALID;
    }

    /* ASCII case folding: the header is bytes, not text in a locale */
    for (i = 0; i < DS_BEARER_SCHEME_LEN; i++) {
        c = value[i];

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        if (c != DS_BEARER_SCHEME[i]) {
            return DS_BEARER_INVALID;
        }
    }

    p = value + DS_BEARER_SCHEME_LEN;
    last = value + len;

    while (p < last && *p == ' ') {
        p++;
    }

    while (last > p && last[-1] == ' ') {
        last--;
    }

    if (p == last || (size_t) (last - p) > DS_BEARER_TOKEN_MAX) {
        return DS_BEARER_INVALID;
    }

    *token = p;
    *token_len = (size_t) (last - p);

    return DS_BEARER_OK;
}
