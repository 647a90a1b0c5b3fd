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

#endif /* DS_BEARER_H */
