/*
 * API tokens (tokens.c): admin checks, the first token, create, update
 * (budgets) and revoke.
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

/*
 * Who calls the API: a user (#18), from a user's token, or "admin" from
 * an admin token of before users (a global admin's).  Service tokens
 * call services, not the API.
 */
struct caller {
    char            user[DS_NAME_MAX + 1];
    char            token[DS_NAME_MAX + 1];     /* its name, for logs */
    int             global_admin;
};

#define TOKENS_FIRST_USER       "admin"

/* checks an Authorization header value; name gets the token's name */
int tokens_check_admin(const char *authorization, char *name, size_t n);
/* the two halves: the hash of the bearer token (AUTH_OK, AUTH_MISSING,
 * AUTH_INVALID), then its record (a long request checks again) */
int tokens_bearer_hash(const char *authorization,
    uint8_t hash[DS_TOKEN_HASH_LEN]);
int tokens_check_admin_hash(const uint8_t hash[DS_TOKEN_HASH_LEN],
    char *name, size_t n);
/* the caller of a token: AUTH_OK for a user's (or an admin token),
 * AUTH_NOT_ADMIN for a service token, or why not */
int tokens_identify(const uint8_t hash[DS_TOKEN_HASH_LEN], struct caller *c);
int tokens_bootstrap(void);
/*
 * The tokens endpoints, in a project (pkey: "" for main): its service
 * tokens, and the caller's own tokens (every user's for a global admin)
 * in main.  0, or an HTTP status with a message.
 */
cJSON *tokens_list(const struct caller *c, const char *pkey);
int tokens_revoke(const struct caller *c, const char *pkey,
    const char *name, char *err, size_t errlen);
int tokens_create(const struct caller *c, const char *pkey,
    const cJSON *req, cJSON **answer, char *err, size_t n);
/* PATCH: the given fields of the token's budget ({"budget":{...}});
 * answer {"name","budget"}; the token's hash and scope stay */
int tokens_update(const struct caller *c, const char *pkey,
    const char *name, const cJSON *req, cJSON **answer, char *err,
    size_t n);
/* a token of user (global admin or not): answer {"name","user","token",
 * "expires"}; name NULL: "<user>-N", the first free */
int tokens_create_user(const char *user, int global_admin, const char *name,
    uint64_t expires_in, cJSON **answer, char *err, size_t n);
/* in t: removes every token of user (and for "admin" the admin tokens
 * of before users); how many, or -1 */
struct store_txn;
int tokens_delete_user(struct store_txn *t, const char *user);
/* whether a token name is taken (any project): 1, 0, or -1 */
int tokens_name_taken(const char *name);

#endif /* CONTROLD_TOKENS_H */
