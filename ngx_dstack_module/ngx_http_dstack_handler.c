/*
 * The Host front door of a "dstack_gateway on" location: the service
 * from the Host ("<run>.<domain>", a project's "<run>--<project>.<domain>"),
 * then admission (admit.c) of the service it names.
 */

#include "ngx_http_dstack_module.h"
#include "ds_host.h"


static ngx_int_t ngx_http_dstack_run_name(ngx_http_request_t *r,
    ngx_str_t *domain, ngx_str_t *name);


ngx_int_t
ngx_http_dstack_host_access(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx,
    ngx_str_t *domain)
{
    ngx_str_t  name, reason;

    ctx->done = 1;

    if (ngx_http_dstack_run_name(r, domain, &name) != NGX_OK) {
        ngx_str_set(&reason, "no service is published at this host");
        return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_NOT_FOUND, &reason, 0);
    }

    if (ngx_http_dstack_state_peek(r->connection->log) != NGX_OK) {
        return ngx_http_dstack_refuse_unavailable(r, ctx);
    }

    return ngx_http_dstack_serve(r, ctx, &name);
}


/*
 * gateway--<project>.<domain>: the project's model endpoint.  The server
 * of "*.<domain>" answers it (an exact server name cannot list every
 * project, and a regular expression loses to the wildcard), so the
 * module hands it to the model endpoint (openai.c) itself.  "gateway"
 * is no run name, in any project.
 */
ngx_uint_t
ngx_http_dstack_host_models(ngx_http_request_t *r, ngx_str_t *domain)
{
    size_t       plen;
    ngx_str_t    name;
    const char  *project;

    /* the services' requests pay one comparison */
    if (r->headers_in.server.len < sizeof("gateway--") - 1
        || ngx_strncmp(r->headers_in.server.data, "gateway--",
                       sizeof("gateway--") - 1) != 0)
    {
        return 0;
    }

    if (ngx_http_dstack_run_name(r, domain, &name) != NGX_OK) {
        return 0;
    }

    return ds_host_gateway_project((const char *) name.data, name.len,
                                   &project, &plen)
           && plen > 0;
}


/*
 * The service key from the host nginx validated (lowercase, no port, no
 * trailing dot; from the request line for absolute URIs, else from
 * Host): common/ds_host.c, which the fuzz targets share.
 */
static ngx_int_t
ngx_http_dstack_run_name(ngx_http_request_t *r, ngx_str_t *domain,
    ngx_str_t *name)
{
    size_t       len;
    const char  *p;
    ngx_str_t   *host;

    host = &r->headers_in.server;

    if (ds_host_run_name((const char *) host->data, host->len,
                         (const char *) domain->data, domain->len, &p, &len)
        != DS_HOST_OK)
    {
        return NGX_DECLINED;
    }

    name->data = (u_char *) p;
    name->len = len;

    return NGX_OK;
}
