/*
 * API tokens (tokens.c): admin checks, the first token, create/revoke.
 */

#ifndef CONTROLD_TOKENS_H
#define CONTROLD_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ds_state.h"

#define AUTH_OK                 0
#define AUTH_MISSING            1
#define AUTH_INVALID            2
#define AUTH_EXPIRED            3
#define AUTH_NOT_ADMIN          4
#define AUTH_UNAVAILABLE        5   /* the state file is gone: 503 */

/* checks an Authorization header value; name gets the token's name */
int tokens_check_admin(const char *authorization, char *name, size_t n);
/* the two halves: the hash of the bearer token (AUTH_OK, AUTH_MISSING,
 * AUTH_INVALID), then its record (a long request checks again) */
int tokens_bearer_hash(const char *authorization,
    uint8_t hash[DS_TOKEN_HASH_LEN]);
int tokens_check_admin_hash(const uint8_t hash[DS_TOKEN_HASH_LEN],
    char *name, size_t n);
int tokens_bootstrap(void);
cJSON *tokens_list(void);
int tokens_revoke(const char *name, char *err, size_t errlen);
/* 0, or an HTTP status with a message */
int tokens_create(const cJSON *req, cJSON **answer, char *err, size_t n);

#endif /* CONTROLD_TOKENS_H */
