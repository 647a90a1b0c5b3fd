/*
 * libFuzzer target for what the gateway does with Authorization values:
 * the input is one value per line, as a worker sees them request after
 * request.  Each goes through ds_bearer_token and, when it has a token,
 * through the worker's token hash cache (ds_token_cache_hash), which is
 * kept across inputs as a worker keeps it.  The cache must always give
 * the token's own SHA-256 (the state's lookup key), whatever crafted
 * tokens share its slots.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ds_bearer.h"
#include "ds_state.h"


static ds_token_cache_t  cache;


static void
one(const uint8_t *p, size_t n)
{
    char            *value;
    const char      *tok;
    size_t           len;
    unsigned char    want[32], got[32];

    value = malloc(n ? n : 1);
    memcpy(value, p, n);

    if (ds_bearer_token(value, n, &tok, &len) == DS_BEARER_OK) {
        if (ds_token_cache_slot(tok, len) >= DS_TOKEN_CACHE_SLOTS) {
            abort();
        }
        ds_sha256(tok, len, want);
        ds_token_cache_hash(&cache, tok, len, got);
        if (memcmp(want, got, 32) != 0) {
            abort();
        }
        /* again: now from the cache */
        ds_token_cache_hash(&cache, tok, len, got);
        if (memcmp(want, got, 32) != 0) {
            abort();
        }
    }
    free(value);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t  *p = data, *nl;

    while ((nl = memchr(p, '\n', size - (size_t) (p - data))) != NULL) {
        one(p, (size_t) (nl - p));
        p = nl + 1;
    }
    one(p, size - (size_t) (p - data));
    return 0;
}
