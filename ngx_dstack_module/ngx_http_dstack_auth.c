/*
 * Bearer tokens.  State keeps only SHA-256 of each token, so the lookup
 * key is the hash of what the client sent; the stored hash is compared
 * again in constant time.  A revoked token is a deleted record: the next
 * request on any worker no longer finds it.  Tokens never reach a log.
 *
 * A service with auth opens to a token that names it (ds_token_allows:
 * a global admin's, a service token of its project) or to a user token
 * whose user is a member of the service's project, any role.  The
 * membership is read per commit (state.c), so a removed member or a
 * deleted user (controld deletes the tokens and memberships in one
 * transaction) is refused at the next request; only user tokens pay
 * that lookup.
 */

#include "ngx_http_dstack_module.h"
#include "ds_bearer.h"


/* per worker: common/ds_bearer.h */
static ds_token_cache_t  ngx_http_dstack_token_hashes;


ngx_int_t
ngx_http_dstack_auth(ngx_http_request_t *r, ngx_str_t *name,
    const ds_token_t **token, ngx_str_t *reason)
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

    if (ngx_http_dstack_token_opens(r, tok, name->data, name->len)
        != NGX_OK)
    {
        ngx_str_set(reason, "token has no access to this service");
        return NGX_HTTP_FORBIDDEN;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_module);
    ctx->token_consumed = 1;
    *token = tok;

    return NGX_OK;
}


ngx_int_t
ngx_http_dstack_token_opens(ngx_http_request_t *r, const ds_token_t *tok,
    const u_char *name, size_t len)
{
    ngx_int_t  rc;
    ds_err_t   err;
    ds_str_t   project;

    if (ds_token_allows(tok, (const char *) name, len)) {
        return NGX_OK;
    }

    if (!(tok->flags & DS_TOKEN_USER)) {
        return NGX_DECLINED;
    }

    ds_service_project((const char *) name, len, &project);

    rc = ngx_http_dstack_state_member(tok, (const u_char *) project.data,
                                      project.len, &err);

    if (rc == NGX_ERROR) {
        /* closed when the membership cannot be read */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack membership for service \"%*s\": %s", len, name,
                      err.msg);
        return NGX_DECLINED;
    }

    return rc;
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

    ds_token_cache_hash(&ngx_http_dstack_token_hashes, token.data, token.len,
                        hash);

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
