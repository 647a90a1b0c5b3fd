/*
 * ngx_http_dstack_module: directives, configuration, phase handlers,
 * variables and the worker lifecycle.  The access phase starts here and
 * goes through one of the front doors (handler.c, openai.c) into
 * admission (admit.c); see ngx_http_dstack_module.h for the map.
 */

#include "ngx_http_dstack_module.h"


static ngx_int_t ngx_http_dstack_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_dstack_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_dstack_access_handler(ngx_http_request_t *r);
#if (NGX_HTTP_V2)
static ngx_int_t ngx_http_dstack_refuse_h2_upgrade(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
#endif
static void *ngx_http_dstack_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_dstack_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_dstack_capacity(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dstack_zone_size(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dstack_domain(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dstack_stats(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_dstack_init_process(ngx_cycle_t *cycle);
static void ngx_http_dstack_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_dstack_service_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_dstack_connection_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_dstack_authorization_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);


#define NGX_HTTP_DSTACK_MIN_LIMIT_ZONE  (64 * 1024)


static ngx_command_t  ngx_http_dstack_commands[] = {

    { ngx_string("dstack_state"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_main_conf_t, state_path),
      NULL },

    { ngx_string("dstack_capacity"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_dstack_capacity,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_limit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_dstack_zone_size,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_main_conf_t, limit_zone_size),
      NULL },

    { ngx_string("dstack_budget_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_dstack_zone_size,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_main_conf_t, budget_zone_size),
      NULL },

    { ngx_string("dstack_watch_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_main_conf_t, watch_interval),
      NULL },

    { ngx_string("dstack_retry_after"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_main_conf_t, retry_after),
      NULL },

    { ngx_string("dstack_notify"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_main_conf_t, notify),
      NULL },

    { ngx_string("dstack_hold_poll"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_main_conf_t, hold_poll),
      NULL },

    { ngx_string("dstack_domain"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dstack_domain,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_loc_conf_t, domain),
      NULL },

    { ngx_string("dstack_gateway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_loc_conf_t, gateway),
      NULL },

    { ngx_string("dstack_openai"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_loc_conf_t, openai),
      NULL },

    { ngx_string("dstack_stats"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dstack_stats,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_balancer"),
      NGX_HTTP_UPS_CONF|NGX_CONF_NOARGS,
      ngx_http_dstack_balancer,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dstack_module_ctx = {
    ngx_http_dstack_add_variables,         /* preconfiguration */
    ngx_http_dstack_postconfiguration,     /* postconfiguration */

    ngx_http_dstack_create_main_conf,      /* create main configuration */
    ngx_http_dstack_init_main_conf,        /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_dstack_create_loc_conf,       /* create location configuration */
    ngx_http_dstack_merge_loc_conf         /* merge location configuration */
};


ngx_module_t  ngx_http_dstack_module = {
    NGX_MODULE_V1,
    &ngx_http_dstack_module_ctx,           /* module context */
    ngx_http_dstack_commands,              /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_dstack_init_process,          /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_dstack_exit_process,          /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_dstack_vars[] = {

    { ngx_string("dstack_service"), NULL,
      ngx_http_dstack_service_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    /* "upgrade" for WebSocket requests, else empty so that upstream
     * keepalive connections stay usable */
    { ngx_string("dstack_connection"), NULL,
      ngx_http_dstack_connection_variable, 0, 0, 0 },

    /* the client's Authorization unless the gateway consumed it */
    { ngx_string("dstack_authorization"), NULL,
      ngx_http_dstack_authorization_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_dstack_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_dstack_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt          *h;
    ngx_http_core_main_conf_t    *cmcf;
    ngx_http_dstack_main_conf_t  *dmcf;

    dmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dstack_module);
    if (dmcf->state_path.len == 0) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_dstack_access_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_dstack_log_handler;

    if (ngx_http_dstack_body_filter_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_dstack_openai_filter_init(cf);
}


/*
 * The access phase of "dstack_gateway on" and "dstack_openai on"
 * locations.  It runs again for a request that read its body (openai.c)
 * or waited for a replica (hold.c); the context says which.
 */
static ngx_int_t
ngx_http_dstack_access_handler(ngx_http_request_t *r)
{
    ngx_http_dstack_ctx_t       *ctx;
    ngx_http_dstack_loc_conf_t  *dlcf;

    dlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_module);

    if ((!dlcf->gateway && !dlcf->openai) || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_module);

    if (ctx == NULL) {
        ctx = ngx_http_dstack_ctx_create(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else if (ctx->resumed) {
        ctx->resumed = 0;
        return ngx_http_dstack_repick(r, ctx);

    } else if (ctx->done) {
        return NGX_DECLINED;
    }

#if (NGX_HTTP_V2)
    if (r->stream && r->headers_in.upgrade) {
        return ngx_http_dstack_refuse_h2_upgrade(r, ctx);
    }
#endif

    if (dlcf->openai || ctx->openai
        || (dlcf->gateway && ngx_http_dstack_host_models(r, &dlcf->domain)))
    {
        return ngx_http_dstack_openai_access(r, ctx);
    }

    return ngx_http_dstack_host_access(r, ctx, &dlcf->domain);
}


#if (NGX_HTTP_V2)

/*
 * An HTTP/2 stream cannot switch protocols (RFC 9113 8.2.2), but nginx
 * 1.22 passes Upgrade on and, when the replica answers 101, sends an
 * invalid ":status: 101" and proxies the stream's fake connection as if
 * it were upgraded ("epoll_ctl() failed" alerts): 400 instead.
 */
static ngx_int_t
ngx_http_dstack_refuse_h2_upgrade(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx)
{
    ngx_str_t  reason;

    ctx->done = 1;
    ngx_str_set(&reason, "Upgrade is not allowed over HTTP/2: use HTTP/1.1 "
                         "for WebSocket");

    return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_BAD_REQUEST, &reason, 0);
}

#endif


static void *
ngx_http_dstack_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_main_conf_t  *dmcf;

    dmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_main_conf_t));
    if (dmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     dmcf->state_path = { 0, NULL };
     *     dmcf->metrics_zone = NULL;
     *     dmcf->limit_zone = NULL;
     */

    dmcf->max_services = NGX_CONF_UNSET_UINT;
    dmcf->max_replicas = NGX_CONF_UNSET_UINT;
    dmcf->limit_zone_size = NGX_CONF_UNSET_SIZE;
    dmcf->budget_zone_size = NGX_CONF_UNSET_SIZE;
    dmcf->watch_interval = NGX_CONF_UNSET_MSEC;
    dmcf->retry_after = NGX_CONF_UNSET;
    dmcf->hold_poll = NGX_CONF_UNSET_MSEC;

    return dmcf;
}


static char *
ngx_http_dstack_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_dstack_main_conf_t  *dmcf = conf;

    ngx_conf_init_uint_value(dmcf->max_services, 1024);
    ngx_conf_init_uint_value(dmcf->max_replicas, 8192);
    ngx_conf_init_size_value(dmcf->limit_zone_size, 16 * 1024 * 1024);
    ngx_conf_init_size_value(dmcf->budget_zone_size, 16 * 1024 * 1024);
    ngx_conf_init_msec_value(dmcf->watch_interval, 1000);
    ngx_conf_init_value(dmcf->retry_after, 5);
    ngx_conf_init_msec_value(dmcf->hold_poll, 10);

    if (dmcf->hold_poll == 0) {
        return "\"dstack_hold_poll\" must be more than 0";
    }

    if (dmcf->state_path.len == 0) {
        return NGX_CONF_OK;
    }

    if (ngx_conf_full_name(cf->cycle, &dmcf->state_path, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_dstack_metrics_zone_init(cf, dmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_dstack_limit_zone_init(cf, dmcf) != NGX_OK
        || ngx_http_dstack_budget_zone_init(cf, dmcf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_dstack_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_loc_conf_t  *dlcf;

    dlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_loc_conf_t));
    if (dlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     dlcf->domain = { 0, NULL };
     */

    dlcf->gateway = NGX_CONF_UNSET;
    dlcf->openai = NGX_CONF_UNSET;
    dlcf->stats = NGX_CONF_UNSET_UINT;

    return dlcf;
}


static char *
ngx_http_dstack_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_dstack_loc_conf_t  *prev = parent;
    ngx_http_dstack_loc_conf_t  *conf = child;

    ngx_http_dstack_main_conf_t  *dmcf;

    ngx_conf_merge_value(conf->gateway, prev->gateway, 0);
    ngx_conf_merge_value(conf->openai, prev->openai, 0);
    ngx_conf_merge_str_value(conf->domain, prev->domain, "");
    ngx_conf_merge_uint_value(conf->stats, prev->stats,
                              NGX_HTTP_DSTACK_STATS_OFF);

    if (!conf->gateway && !conf->openai
        && conf->stats == NGX_HTTP_DSTACK_STATS_OFF)
    {
        return NGX_CONF_OK;
    }

    dmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dstack_module);

    if (dmcf->state_path.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dstack_gateway\", \"dstack_openai\" and "
                           "\"dstack_stats\" need \"dstack_state\" in the "
                           "http block");
        return NGX_CONF_ERROR;
    }

    if (conf->gateway && conf->domain.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dstack_gateway on\" needs \"dstack_domain\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* dstack_capacity services=N [replicas=M] */
static char *
ngx_http_dstack_capacity(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_main_conf_t *dmcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value, v;
    ngx_uint_t   i, *target, max;

    if (dmcf->max_services != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    dmcf->max_services = 1024;
    dmcf->max_replicas = 8192;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "services=", 9) == 0) {
            target = &dmcf->max_services;
            max = DS_SERVICE_SLOTS_MAX;
            v.data = value[i].data + 9;
            v.len = value[i].len - 9;

        } else if (ngx_strncmp(value[i].data, "replicas=", 9) == 0) {
            target = &dmcf->max_replicas;
            max = DS_REPLICA_SLOTS_MAX;
            v.data = value[i].data + 9;
            v.len = value[i].len - 9;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in \"%V\", "
                               "expected \"services=N\" or \"replicas=N\"",
                               &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }

        n = ngx_atoi(v.data, v.len);
        if (n == NGX_ERROR || n < 1 || (ngx_uint_t) n > max) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in \"%V\": "
                               "a number from 1 to %ui expected",
                               &value[i], &cmd->name, max);
            return NGX_CONF_ERROR;
        }

        *target = n;
    }

    return NGX_CONF_OK;
}


/* dstack_limit_zone, dstack_budget_zone: a shared zone's size */
static char *
ngx_http_dstack_zone_size(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    size_t     *zone_size;
    ssize_t     size;
    ngx_str_t  *value;

    zone_size = (size_t *) ((char *) conf + cmd->offset);

    if (*zone_size != NGX_CONF_UNSET_SIZE) {
        return "is duplicate";
    }

    value = cf->args->elts;
    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR || size < NGX_HTTP_DSTACK_MIN_LIMIT_ZONE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid size \"%V\" in \"%V\": a size of at "
                           "least 64k expected", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    *zone_size = size;

    return NGX_CONF_OK;
}


/*
 * dstack_domain example.com: services are <run>.example.com.  Stored
 * lowercase without leading or trailing dots, which is how nginx leaves
 * the request's host after validation.
 */
static char *
ngx_http_dstack_domain(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_loc_conf_t *dlcf = conf;

    u_char     *p, c;
    ngx_str_t  *value, d;

    if (dlcf->domain.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    d = value[1];

    while (d.len && d.data[0] == '.') {
        d.data++;
        d.len--;
    }

    while (d.len && d.data[d.len - 1] == '.') {
        d.len--;
    }

    if (d.len == 0 || d.len > 253) {
        goto invalid;
    }

    p = ngx_pnalloc(cf->pool, d.len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    dlcf->domain.data = p;
    dlcf->domain.len = d.len;

    for ( /* void */ ; d.len; d.len--) {
        c = ngx_tolower(*d.data);
        d.data++;

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
              || c == '-' || c == '.'))
        {
            goto invalid;
        }

        *p++ = c;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid domain \"%V\" in \"%V\"", &value[1],
                       &cmd->name);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_dstack_stats(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_loc_conf_t *dlcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (dlcf->stats != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "json") == 0) {
        dlcf->stats = NGX_HTTP_DSTACK_STATS_JSON;

    } else if (ngx_strcmp(value[1].data, "prometheus") == 0) {
        dlcf->stats = NGX_HTTP_DSTACK_STATS_PROM;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\", "
                           "expected \"json\" or \"prometheus\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = (dlcf->stats == NGX_HTTP_DSTACK_STATS_PROM)
                    ? ngx_http_dstack_prom_handler
                    : ngx_http_dstack_stats_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_dstack_init_process(ngx_cycle_t *cycle)
{
    ngx_http_dstack_main_conf_t  *dmcf;

    dmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_dstack_module);
    if (dmcf == NULL || dmcf->state_path.len == 0) {
        return NGX_OK;
    }

    ngx_http_dstack_metrics_init_worker(cycle);

    if (ngx_http_dstack_hold_init_worker(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_dstack_state_init_worker(cycle);
}


static void
ngx_http_dstack_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_dstack_state_exit_worker(cycle);
}


static ngx_int_t
ngx_http_dstack_service_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_dstack_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_module);
    if (ctx == NULL || ctx->service.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ctx->service.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = ctx->service.data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_connection_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    if (r->headers_in.upgrade) {
        v->len = sizeof("upgrade") - 1;
        v->data = (u_char *) "upgrade";

    } else {
        v->len = 0;
        v->data = (u_char *) "";
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_authorization_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_dstack_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_module);

    if (r->headers_in.authorization == NULL
        || (ctx && ctx->token_consumed))
    {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = r->headers_in.authorization->value.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = r->headers_in.authorization->value.data;

    return NGX_OK;
}
