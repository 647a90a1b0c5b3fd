/*
 * The access phase of a "dstack_gateway on" location: from the Host to a
 * service, its auth and limits, and the replicas the balancer may use.
 *
 * Records come from the worker's cache of the newest commit (state.c);
 * what the request keeps after the access phase is copied into r->pool
 * or referenced (the ready replicas), before ngx_http_dstack_state_end(),
 * which every return path after state_peek() or state_begin() goes
 * through.
 */

#include "ngx_http_dstack_module.h"


static ngx_int_t ngx_http_dstack_run_name(ngx_http_request_t *r,
    ngx_str_t *domain, ngx_str_t *name);
static ngx_int_t ngx_http_dstack_admit(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, const ngx_http_dstack_service_t *view);
static ngx_int_t ngx_http_dstack_take_replicas(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, const ngx_http_dstack_service_t *view);
static ngx_int_t ngx_http_dstack_no_replica(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_table_elt_t *ngx_http_dstack_find_in(ngx_list_t *headers,
    const char *name);


static ngx_http_request_body_filter_pt  ngx_http_next_request_body_filter;


ngx_int_t
ngx_http_dstack_access_handler(ngx_http_request_t *r)
{
    ngx_str_t                    name, reason;
    ngx_pool_cleanup_t          *cln;
    ngx_http_dstack_ctx_t       *ctx;
    ngx_http_dstack_loc_conf_t  *dlcf;

    dlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_module);

    if ((!dlcf->gateway && !dlcf->openai) || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_module);

    if (ctx && ctx->resumed) {
        ctx->resumed = 0;
        return ngx_http_dstack_repick(r, ctx);
    }

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_ctx_t));
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (ctx == NULL || cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_dstack_ctx_cleanup;
        cln->data = ctx;

        ngx_http_set_ctx(r, ctx, ngx_http_dstack_module);
        ctx->request = r;
        ctx->start = ngx_current_msec;

    } else if (ctx->done) {
        return NGX_DECLINED;
    }

    if (dlcf->openai) {
        return ngx_http_dstack_openai_access(r, ctx);
    }

    ctx->done = 1;

    if (ngx_http_dstack_run_name(r, &dlcf->domain, &name) != NGX_OK) {
        ngx_str_set(&reason, "no service is published at this host");
        return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_NOT_FOUND, &reason, 0);
    }

    if (ngx_http_dstack_state_peek(r->connection->log) != NGX_OK) {
        ngx_str_set(&reason, "gateway state is unavailable");
        return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      &reason, 1);
    }

    return ngx_http_dstack_serve(r, ctx, &name);
}


ngx_int_t
ngx_http_dstack_serve(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx,
    ngx_str_t *name)
{
    ngx_int_t                         rc;
    ngx_str_t                         reason;
    ds_err_t                          err;
    const ngx_http_dstack_service_t  *view;

    rc = ngx_http_dstack_state_service(name->data, name->len, &view, &err);

    if (rc != NGX_OK) {
        ngx_http_dstack_state_end();

        if (rc != NGX_DECLINED) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "dstack service \"%V\": %s", name, err.msg);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        reason.len = name->len + sizeof("service \"\" not found") - 1;
        reason.data = ngx_pnalloc(r->pool, reason.len);
        if (reason.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(reason.data, "service \"%V\" not found", name);
        return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_NOT_FOUND, &reason, 0);
    }

    /* before auth: a plain request of an https service only learns where
     * to go */
    rc = ngx_http_dstack_https_redirect(r, &view->svc);
    if (rc != NGX_DECLINED) {
        ngx_http_dstack_state_end();
        return rc;
    }

    rc = ngx_http_dstack_admit(r, ctx, view);

    ngx_http_dstack_state_end();

    if (rc != NGX_OK) {
        return rc;
    }

    ngx_http_dstack_metrics_admit(r, ctx);

    if (ctx->ready == NULL) {
        return ngx_http_dstack_no_replica(r, ctx);
    }

    return NGX_OK;
}


/* a held request's replicas, now that one is ready */
ngx_int_t
ngx_http_dstack_repick(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx)
{
    ngx_int_t                         rc;
    ngx_str_t                         reason;
    ds_err_t                          err;
    const ngx_http_dstack_service_t  *view;

    if (ngx_http_dstack_state_peek(r->connection->log) != NGX_OK) {
        ngx_str_set(&reason, "gateway state is unavailable");
        return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      &reason, 1);
    }

    rc = ngx_http_dstack_state_service(ctx->service.data, ctx->service.len,
                                       &view, &err);

    if (rc == NGX_OK) {
        rc = ngx_http_dstack_take_replicas(r, ctx, view);

    } else if (rc == NGX_DECLINED) {
        ngx_http_dstack_state_end();
        ngx_str_set(&reason, "service was removed while the request waited");
        return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_NOT_FOUND, &reason, 0);

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack service \"%V\": %s", &ctx->service, err.msg);
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_dstack_state_end();

    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->ready == NULL) {
        return ngx_http_dstack_no_replica(r, ctx);
    }

    return NGX_OK;
}


/*
 * The run name from the host nginx validated (lowercase, no port, no
 * trailing dot; from the request line for absolute URIs, else from
 * Host): exactly one valid label in front of ".<domain>".
 */
static ngx_int_t
ngx_http_dstack_run_name(ngx_http_request_t *r, ngx_str_t *domain,
    ngx_str_t *name)
{
    ngx_str_t  *host;

    host = &r->headers_in.server;

    if (host->len <= domain->len + 1
        || host->data[host->len - domain->len - 1] != '.'
        || ngx_strncmp(host->data + host->len - domain->len, domain->data,
                       domain->len) != 0)
    {
        return NGX_DECLINED;
    }

    name->data = host->data;
    name->len = host->len - domain->len - 1;

    if (!ds_valid_run_name((char *) name->data, name->len)) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * Auth, limits and body size, then the replicas; inside the read
 * transaction.  NGX_OK or the (already answered) result of a refusal.
 */
static ngx_int_t
ngx_http_dstack_admit(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx,
    const ngx_http_dstack_service_t *view)
{
    time_t               retry_after;
    ngx_int_t            rc;
    ngx_str_t            reason;
    const ds_service_t  *svc = &view->svc;

    ctx->service.len = svc->name.len;
    ctx->service.data = ngx_pnalloc(r->pool, svc->name.len);
    if (ctx->service.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(ctx->service.data, svc->name.data, svc->name.len);
    ctx->service_uid = svc->uid;
    ctx->metrics = view->metrics;

    if (svc->flags & DS_SERVICE_AUTH) {
        rc = ngx_http_dstack_auth(r, svc, &reason);
        if (rc != NGX_OK) {
            return ngx_http_dstack_refuse(r, ctx, rc, &reason, 0);
        }
    }

    rc = ngx_http_dstack_limit(r, svc, &retry_after);

    if (rc == NGX_BUSY) {
        ngx_str_set(&reason, "rate limit exceeded");
        return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                                      &reason, retry_after);
    }

    if (rc != NGX_OK) {
        ngx_str_set(&reason, "rate limit state is full");
        return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      &reason, 1);
    }

    ctx->max_body_size = svc->max_body_size;

    if (ctx->max_body_size
        && (r->headers_in.content_length_n > (off_t) ctx->max_body_size
            || ctx->body_received > (off_t) ctx->max_body_size))
    {
        ngx_str_set(&reason, "request body is larger than the service "
                             "allows");
        return ngx_http_dstack_refuse(r, ctx,
                                      NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      &reason, 0);
    }

    ctx->read_timeout = svc->read_timeout_ms;
    ctx->connect_timeout = svc->connect_timeout_ms;

    if (svc->flags & DS_SERVICE_HOLD) {
        ctx->hold_max = svc->hold_max;
        ctx->hold_timeout = svc->hold_timeout_ms;
    }

    return ngx_http_dstack_take_replicas(r, ctx, view);
}


/* the ready replicas: a reference, the request may outlive the cache */
static ngx_int_t
ngx_http_dstack_take_replicas(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx,
    const ngx_http_dstack_service_t *view)
{
    if (ctx->ready) {
        ngx_http_dstack_peers_unref(ctx->ready);
        ctx->ready = NULL;
    }

    if (view->ready) {
        ctx->ready = ngx_http_dstack_peers_ref(view->ready);
    }

    return NGX_OK;
}


void
ngx_http_dstack_ctx_cleanup(void *data)
{
    ngx_http_dstack_ctx_t  *ctx = data;

    ngx_http_dstack_hold_release(ctx);
    ngx_http_dstack_metrics_release(ctx);

    if (ctx->ready) {
        ngx_http_dstack_peers_unref(ctx->ready);
        ctx->ready = NULL;
    }
}


/*
 * No ready replica.  A service that can scale from zero holds the request
 * until its first replica is ready (hold.c); others answer 503 and when
 * to retry.
 */
static ngx_int_t
ngx_http_dstack_no_replica(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx)
{
    ngx_str_t                     reason;
    ngx_http_dstack_main_conf_t  *dmcf;

    if (ctx->hold_max) {
        return ngx_http_dstack_hold(r, ctx);
    }

    dmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_module);

    ngx_str_set(&reason, "service has no ready replica");

    /* admitted: it counts as demand for the service (a 5xx) */
    return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  &reason, dmcf->retry_after);
}


ngx_int_t
ngx_http_dstack_refuse(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx,
    ngx_uint_t status, ngx_str_t *reason, time_t retry_after)
{
    u_char      *p;
    ngx_int_t    rc;
    ngx_str_t    value;
    const char  *type, *code;

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

    rc = ngx_http_dstack_send_error(r, status, type, code, reason);

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


ngx_int_t
ngx_http_dstack_body_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_dstack_body_filter;

    return NGX_OK;
}


/*
 * Bodies without Content-Length (chunked) are counted as they arrive;
 * over the service's limit the request ends with 413.
 */
static ngx_int_t
ngx_http_dstack_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t            *cl;
    ngx_http_dstack_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_dstack_module);

    if (ctx == NULL || ctx->max_body_size == 0) {
        return ngx_http_next_request_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {
        ctx->body_received += ngx_buf_size(cl->buf);
    }

    if (ctx->body_received > (off_t) ctx->max_body_size) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack service \"%V\": request body over %uL bytes",
                      &ctx->service, ctx->max_body_size);
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    return ngx_http_next_request_body_filter(r, in);
}
