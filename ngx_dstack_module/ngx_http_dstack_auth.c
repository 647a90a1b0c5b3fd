/*
 * Bearer tokens.  State keeps only SHA-256 of each token, so the lookup
 * key is the hash of what the client sent; the stored hash is compared
 * again in constant time.  A revoked token is a deleted record: the next
 * request on any worker no longer finds it.  Tokens never reach a log.
 */

#include "ngx_http_dstack_module.h"
#include "ds_bearer.h"


static void ngx_http_dstack_token_hash(ngx_str_t *token, u_char *hash);
static ngx_uint_t ngx_http_dstack_token_slot(ngx_str_t *token);


/*
 * The SHA-256 of recently seen tokens, per worker, so that a client's
 * every request does not hash its token again.  The token itself is
 * compared in constant time; the record is still looked up in LMDB on
 * every request, so a revocation applies at once.
 */
#define NGX_HTTP_DSTACK_TOKEN_CACHE      1024   /* slots, a power of 2 */
#define NGX_HTTP_DSTACK_TOKEN_CACHED     64     /* longest token kept */

typedef struct {
    u_char                   token[NGX_HTTP_DSTACK_TOKEN_CACHED];
    size_t                   len;
    u_char                   hash[DS_TOKEN_HASH_LEN];
} ngx_http_dstack_token_hash_t;

static ngx_http_dstack_token_hash_t
    ngx_http_dstack_token_hashes[NGX_HTTP_DSTACK_TOKEN_CACHE];


ngx_int_t
ngx_http_dstack_auth(ngx_http_request_t *r, const ds_service_t *svc,
    ngx_str_t *reason)
{
    ngx_int_t               rc;
    const ds_token_t       *tok;
    ngx_http_dstack_ctx_t  *ctx;

    rc = ngx_http_dstack_token(r, &tok, reason);

    if (rc == NGX_DECLINED) {
        ngx_str_set(reason, "missing bearer token");
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (rc != NGX_OK) {
        return rc;
    }

    if (!ds_token_allows(tok, svc->name.data, svc->name.len)) {
        ngx_str_set(reason, "token has no access to this service");
        return NGX_HTTP_FORBIDDEN;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_module);
    ctx->token_consumed = 1;

    return NGX_OK;
}


ngx_int_t
ngx_http_dstack_token(ngx_http_request_t *r, const ds_token_t **tok,
    ngx_str_t *reason)
{
    u_char            hash[DS_TOKEN_HASH_LEN];
    size_t            len;
    ngx_int_t         rc;
    ngx_str_t         token;
    ds_err_t          err;
    const char       *p;
    ngx_table_elt_t  *h;

    h = r->headers_in.authorization;

    if (h == NULL) {
        return NGX_DECLINED;
    }

    if (ds_bearer_token((const char *) h->value.data, h->value.len, &p, &len)
        != DS_BEARER_OK)
    {
        ngx_str_set(reason, "malformed bearer token");
        return NGX_HTTP_UNAUTHORIZED;
    }

    token.data = (u_char *) p;
    token.len = len;

    ngx_http_dstack_token_hash(&token, hash);

    rc = ngx_http_dstack_state_token(hash, tok, &err);

    if (rc == NGX_DECLINED || (rc == NGX_OK
        && !ds_ct_equal((*tok)->hash, hash, DS_TOKEN_HASH_LEN)))
    {
        ngx_str_set(reason, "invalid token");
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack token record: %s", err.msg);
        ngx_str_set(reason, "invalid token");
        return NGX_HTTP_UNAUTHORIZED;
    }

    if ((*tok)->expires && (uint64_t) ngx_time() >= (*tok)->expires) {
        ngx_str_set(reason, "token expired");
        return NGX_HTTP_UNAUTHORIZED;
    }

    return NGX_OK;
}


static void
ngx_http_dstack_token_hash(ngx_str_t *token, u_char *hash)
{
    ngx_http_dstack_token_hash_t  *e;

    if (token->len > NGX_HTTP_DSTACK_TOKEN_CACHED) {
        ds_sha256(token->data, token->len, hash);
        return;
    }

    e = &ngx_http_dstack_token_hashes[ngx_http_dstack_token_slot(token)];

    if (e->len == token->len && ds_ct_equal(e->token, token->data, e->len)) {
        ngx_memcpy(hash, e->hash, DS_TOKEN_HASH_LEN);
        return;
    }

    ds_sha256(token->data, token->len, hash);

    ngx_memcpy(e->token, token->data, token->len);
    e->len = token->len;
    ngx_memcpy(e->hash, hash, DS_TOKEN_HASH_LEN);
}


/*
 * The cache slot of a token: its last eight bytes, mixed.  Tokens end in
 * random characters; a crafted one only lands in a busy slot, which
 * costs it a SHA-256, the price without the cache.
 */
static ngx_uint_t
ngx_http_dstack_token_slot(ngx_str_t *token)
{
    uint64_t  k;

    k = 0;
    ngx_memcpy(&k, token->data + token->len - ngx_min(token->len, 8),
               ngx_min(token->len, 8));

    k *= 0x9e3779b97f4a7c15ULL;

    return (ngx_uint_t) (k >> 48) & (NGX_HTTP_DSTACK_TOKEN_CACHE - 1);
}
