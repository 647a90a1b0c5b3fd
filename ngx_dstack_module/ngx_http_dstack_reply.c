/*
 * The gateway's own answers: refusals and other errors in one JSON shape,
 * OpenAI's ({"error":{"message","type","param","code"}}), which every
 * client of the gateway, the model endpoint's SDKs included, can parse;
 * and the header helpers the answers and the filters use.
 *
 * Everything here works on the request alone and calls nothing else of
 * the module, so any part of it may answer.
 */

#include "ngx_http_dstack_module.h"


static ngx_table_elt_t *ngx_http_dstack_find_in(ngx_list_t *headers,
    const char *name);


ngx_int_t
ngx_http_dstack_refuse(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx,
    ngx_uint_t status, ngx_str_t *reason, time_t retry_after)
{
    u_char      *p;
    ngx_str_t    value;
    const char  *type, *code;

    /* before anything can fail: a refusal is never counted as admitted */
    if (!ctx->admitted) {
        ctx->refused = 1;
    }

    code = NULL;

    switch (status) {

    case NGX_HTTP_BAD_REQUEST:
        type = "invalid_request_error";
        break;

    case NGX_HTTP_UNAUTHORIZED:
        type = "authentication_error";
        code = "invalid_api_key";
        ngx_str_set(&value, "Bearer realm=\"dstack\"");
        if (ngx_http_dstack_add_header(r, "WWW-Authenticate", &value)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        break;

    case NGX_HTTP_FORBIDDEN:
        type = "permission_error";
        break;

    case NGX_HTTP_NOT_FOUND:
        type = "not_found";
        code = ctx->openai ? "model_not_found" : NULL;
        break;

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        type = "request_too_large";
        break;

    case NGX_HTTP_TOO_MANY_REQUESTS:
        type = "rate_limit_exceeded";
        code = "rate_limit_exceeded";
        break;

    default:
        type = "unavailable";
    }

    if (retry_after > 0) {
        p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        value.data = p;
        value.len = ngx_sprintf(p, "%T", retry_after) - p;

        if (ngx_http_dstack_add_header(r, "Retry-After", &value) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_dstack_fail(r, ctx, status, type, code, reason);
}


ngx_int_t
ngx_http_dstack_refuse_unavailable(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx)
{
    ngx_str_t  reason;

    /* the state is reopened within a watch interval (state.c) */
    ngx_str_set(&reason, "gateway state is unavailable");

    return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  &reason, 1);
}


ngx_int_t
ngx_http_dstack_fail(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx,
    ngx_uint_t status, const char *type, const char *code,
    ngx_str_t *message)
{
    ngx_int_t  rc;

    /* an admitted request counts in its status class, not as refused */
    if (!ctx->admitted) {
        ctx->refused = 1;
    }

    rc = ngx_http_dstack_send_error(r, status, type, code, message);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


ngx_int_t
ngx_http_dstack_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *code, ngx_str_t *message)
{
    size_t        len, tlen, clen;
    u_char       *p;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    tlen = ngx_strlen(type);
    clen = code ? ngx_strlen(code) + 2 : sizeof("null") - 1;

    len = sizeof("{\"error\":{\"message\":\"\",\"type\":\"\","
                 "\"param\":null,\"code\":}}\n") - 1
          + message->len + ngx_escape_json(NULL, message->data, message->len)
          + tlen + clen;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(b->last, "{\"error\":{\"message\":\"",
                   sizeof("{\"error\":{\"message\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, message->data, message->len);
    p = ngx_cpymem(p, "\",\"type\":\"", sizeof("\",\"type\":\"") - 1);
    p = ngx_cpymem(p, type, tlen);
    p = ngx_cpymem(p, "\",\"param\":null,\"code\":",
                   sizeof("\",\"param\":null,\"code\":") - 1);

    if (code) {
        *p++ = '"';
        p = ngx_cpymem(p, code, clen - 2);
        *p++ = '"';

    } else {
        p = ngx_cpymem(p, "null", sizeof("null") - 1);
    }

    p = ngx_cpymem(p, "}}\n", sizeof("}}\n") - 1);
    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_dstack_send_json(r, status, &out);
}


/* a complete JSON answer from r->pool buffers; discards the request body */
ngx_int_t
ngx_http_dstack_send_json(ngx_http_request_t *r, ngx_uint_t status,
    ngx_chain_t *body)
{
    off_t         len;
    ngx_int_t     rc;
    ngx_chain_t  *cl;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    len = 0;

    for (cl = body; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, body);
}


ngx_int_t
ngx_http_dstack_add_header(ngx_http_request_t *r, const char *key,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;

    return NGX_OK;
}


ngx_table_elt_t *
ngx_http_dstack_find_header(ngx_http_request_t *r, const char *name)
{
    return ngx_http_dstack_find_in(&r->headers_in.headers, name);
}


ngx_table_elt_t *
ngx_http_dstack_find_out_header(ngx_http_request_t *r, const char *name)
{
    return ngx_http_dstack_find_in(&r->headers_out.headers, name);
}


static ngx_table_elt_t *
ngx_http_dstack_find_in(ngx_list_t *headers, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash != 0 && h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}
