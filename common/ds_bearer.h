/*
 * The bearer token of an Authorization header value (RFC 6750,
 * "Bearer <token>", the scheme case-insensitive): one parser for the
 * gateway (the module's auth) and the API (controld), so that both
 * accept exactly the same headers.
 */

#ifndef DS_BEARER_H
#define DS_BEARER_H

#include <stddef.h>

#define DS_BEARER_OK            0
#define DS_BEARER_MISSING       1   /* no Authorization header at all */
#define DS_BEARER_INVALID       2   /* not "Bearer <token>" */

/* longer than any token we issue by far; bounds the hashing work */
#define DS_BEARER_TOKEN_MAX     512

/*
 * value and len: the header's value (value NULL: no header).  The token
 * is what follows "Bearer ", without the spaces around it; it must not be
 * empty nor longer than DS_BEARER_TOKEN_MAX.  On DS_BEARER_OK, *token and
 * *token_len point into value.
 */
int ds_bearer_token(const char *value, size_t len, const char **token,
    size_t *token_len);


/*
 * The SHA-256 of recently seen tokens, per process (an nginx worker), so
 * that a client's every request does not hash its token again; the state
 * keeps only hashes, so the hash is the lookup key.  A token longer than
 * DS_TOKEN_CACHED is hashed every time.  Slots are chosen by the token's
 * last bytes, which are random in tokens we issue; a crafted token only
 * lands in a busy slot, which costs it a SHA-256, the price without the
 * cache.  Tokens are compared in constant time.
 */
#define DS_TOKEN_CACHE_SLOTS    1024    /* a power of 2 */
#define DS_TOKEN_CACHED         64      /* the longest token kept */

typedef struct {
    unsigned char   token[DS_TOKEN_CACHED];
    size_t          len;
    unsigned char   hash[32];
} ds_token_cache_entry_t;

typedef struct {
    ds_token_cache_entry_t  slot[DS_TOKEN_CACHE_SLOTS];
} ds_token_cache_t;

/* the SHA-256 of token into hash, from the cache or computed (and kept) */
void ds_token_cache_hash(ds_token_cache_t *cache, const void *token,
    size_t len, unsigned char hash[32]);

/* the slot of a token: below DS_TOKEN_CACHE_SLOTS */
size_t ds_token_cache_slot(const void *token, size_t len);

#endif /* DS_BEARER_H */
