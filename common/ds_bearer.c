/*
 * Bearer tokens in Authorization headers; see ds_bearer.h.
 */

#include <stdint.h>
#include <string.h>

#include "ds_bearer.h"
#include "ds_state.h"


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


size_t
ds_token_cache_slot(const void *token, size_t len)
{
    uint64_t  k = 0;
    size_t    n;

    n = len < 8 ? len : 8;
    memcpy(&k, (const unsigned char *) token + len - n, n);
    k *= 0x9e3779b97f4a7c15ULL;
    return (size_t) (k >> 48) & (DS_TOKEN_CACHE_SLOTS - 1);
}


void
ds_token_cache_hash(ds_token_cache_t *cache, const void *token, size_t len,
    unsigned char hash[32])
{
    ds_token_cache_entry_t  *e;

    /* an empty slot has len 0: an empty token would match it */
    if (len == 0 || len > DS_TOKEN_CACHED) {
        ds_sha256(token, len, hash);
        return;
    }

    e = &cache->slot[ds_token_cache_slot(token, len)];
    if (e->len == len && ds_ct_equal(e->token, token, len)) {
        memcpy(hash, e->hash, 32);
        return;
    }

    ds_sha256(token, len, hash);
    memcpy(e->token, token, len);
    e->len = len;
    memcpy(e->hash, hash, 32);
}
