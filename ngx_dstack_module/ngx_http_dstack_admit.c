/*
 * Admission: what every request to a service goes through, whichever
 * front door named the service (the Host, handler.c; the "model" of a
 * request to the model endpoint, openai.c).  Auth, limits and body size,
 * then a reference to the service's ready replicas for the balancer; a
 * request with none is held (hold.c) or answered 503.  The request's
 * context and its pool cleanup, and the log phase that completes what
 * admission counted, live here too.
 *
 * Records come from the worker's cache of the newest commit (state.c);
 * what the request keeps after the access phase is copied into r->pool
 * or referenced (the ready replicas), before ngx_http_dstack_state_end(),
 * which every return path after state_peek() or state_begin() goes
 * through.
 */

#include "ngx_http_dstack_module.h"


static ngx_int_t ngx_http_dstack_admit(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, const ngx_http_dstack_service_t *view);
static void ngx_http_dstack_take_replicas(ngx_http_dstack_ctx_t *ctx,
    const ngx_http_dstack_service_t *view);
static ngx_int_t ngx_http_dstack_no_replica(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_request_body_filter_pt  ngx_http_next_request_body_filter;


ngx_http_dstack_ctx_t *
ngx_http_dstack_ctx_create(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t     *cln;
    ngx_http_dstack_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (ctx == NULL || cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_dstack_ctx_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_dstack_module);
    ctx->request = r;
    ctx->start = ngx_current_msec;

    return ctx;
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
    if (view->flags & (DS_SERVICE_HTTPS | DS_SERVICE_HTTPS_AUTO)) {
        rc = ngx_http_dstack_https_redirect(r, view->svc);
        if (rc != NGX_DECLINED) {
            ngx_http_dstack_state_end();
            return rc;
        }
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
        return ngx_http_dstack_refuse_unavailable(r, ctx);
    }

    rc = ngx_http_dstack_state_service(ctx->service.data, ctx->service.len,
                                       &view, &err);

    if (rc == NGX_OK) {
        ngx_http_dstack_take_replicas(ctx, view);
        ctx->released = ngx_current_msec;

    } else if (rc == NGX_DECLINED) {
        ngx_http_dstack_state_end();
        ngx_str_set(&reason, "service was removed while the request waited");
        return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_NOT_FOUND, &reason, 0);

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack service \"%V\": %s", &ctx->service, err.msg);
        ngx_http_dstack_state_end();
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_dstack_state_end();

    if (ctx->ready == NULL) {
        return ngx_http_dstack_no_replica(r, ctx);
    }

    return NGX_OK;
}


/*
 * Auth, limits and body size, then the replicas; inside the read
 * transaction.  NGX_OK or the (already answered) result of a refusal.
 * What every request needs is in the view's two lines; the record
 * behind it is read for rate limits and holding only.
 */
static ngx_int_t
ngx_http_dstack_admit(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx,
    const ngx_http_dstack_service_t *view)
{
    time_t               retry_after;
    ngx_int_t            rc;
    ngx_str_t            reason;
    const ds_token_t    *tok;

    ctx->service.len = view->len;
    ctx->service.data = ngx_pnalloc(r->pool, view->len);
    if (ctx->service.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(ctx->service.data, view->name, view->len);
    ctx->service_uid = view->uid;
    ctx->metrics = view->metrics;

    tok = NULL;

    if (view->flags & DS_SERVICE_AUTH) {
        rc = ngx_http_dstack_auth(r, &ctx->service, &tok, &reason);
        if (rc != NGX_OK) {
            return ngx_http_dstack_refuse(r, ctx, rc, &reason, 0);
        }
    }

    if (view->n_rate_limits) {
        rc = ngx_http_dstack_limit(r, view->svc, &retry_after);

        if (rc == NGX_BUSY) {
            ngx_str_set(&reason, "rate limit exceeded");
            return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                                          &reason, retry_after);
        }

        if (rc != NGX_OK) {
            ngx_str_set(&reason, "rate limit state is full");
            return ngx_http_dstack_refuse(r, ctx,
                                          NGX_HTTP_SERVICE_UNAVAILABLE,
                                          &reason, 1);
        }
    }

    ctx->max_body_size = view->max_body_size;

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

    /* the model endpoint's token budgets: last: the refusals above
     * cost nothing, this one a reservation */
    if (ctx->openai) {
        rc = ngx_http_dstack_budget_admit(r, ctx, tok);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    ctx->read_timeout = view->read_timeout_ms;
    ctx->connect_timeout = view->connect_timeout_ms;

    if (view->flags & DS_SERVICE_HOLD) {
        ctx->hold_max = view->svc->hold_max;
        ctx->hold_timeout = view->svc->hold_timeout_ms;
    }

    ngx_http_dstack_take_replicas(ctx, view);

    return NGX_OK;
}


/* the ready replicas: a reference, the request may outlive the cache */
static void
ngx_http_dstack_take_replicas(ngx_http_dstack_ctx_t *ctx,
    const ngx_http_dstack_service_t *view)
{
    if (ctx->ready) {
        ngx_http_dstack_peers_unref(ctx->ready);
        ctx->ready = NULL;
    }

    if (view->ready) {
        ctx->ready = ngx_http_dstack_peers_ref(view->ready);
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


void
ngx_http_dstack_ctx_cleanup(void *data)
{
    ngx_http_dstack_ctx_t  *ctx = data;

    ngx_http_dstack_hold_release(ctx);
    ngx_http_dstack_metrics_release(ctx);
    ngx_http_dstack_budget_settle(ctx);

    if (ctx->ready) {
        ngx_http_dstack_peers_unref(ctx->ready);
        ctx->ready = NULL;
    }
}


/*
 * The log phase completes the admitted requests: the current context,
 * and any an internal redirect lost.  error_page and named locations
 * clear the module's request context, but its pool cleanup still points
 * at it, so the in-flight count does not leak.
 */
ngx_int_t
ngx_http_dstack_log_handler(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t     *cln;
    ngx_http_dstack_ctx_t  *ctx;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {

        if (cln->handler != ngx_http_dstack_ctx_cleanup) {
            continue;
        }

        ctx = cln->data;

        if (ctx->request == r && ctx->admitted) {
            ngx_http_dstack_metrics_complete(r, ctx);
        }
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_module);

    if (ctx) {
        ngx_http_dstack_metrics_log(r, ctx);
    }

    return NGX_OK;
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
