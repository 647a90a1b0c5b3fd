/*
 * The OpenAI-compatible endpoint ("dstack_openai on", on gateway.<domain>,
 * and gateway--<project>.<domain> handed over by the Host front door):
 *
 *   OPTIONS *                   CORS preflight, answered here
 *   GET /v1/models[/<id>]       the models the caller may use and that
 *                               have a ready replica
 *   POST /v1/chat/completions,  the body is read (into memory, at most
 *        /v1/completions,       client_body_buffer_size), its top-level
 *        /v1/embeddings         "model" picks the service, and the request
 *                               goes on exactly as a Host-routed one
 *                               (auth, limits, balancer, metrics), its URI
 *                               moved under the service's model prefix
 *
 * Each host serves its project's models only: main's on gateway.<domain>
 * (and any other host of a "dstack_openai" location), project P's on
 * gateway--P.<domain>, listed and routed by their plain names; a model
 * of another project is answered as an unknown one.
 *
 * Reading the body never blocks the worker: the access handler returns
 * NGX_DONE and the body handler re-runs the phases when it is complete.
 * Every answer of this endpoint carries Access-Control-Allow-Origin.
 */

#include "ngx_http_dstack_module.h"
#include "ds_host.h"
#include "ds_json_scan.h"


#define NGX_HTTP_DSTACK_V1  "/v1"

/*
 * The body limit of a project's model endpoint.  gateway--<P>.<domain>
 * is answered by the "*.<domain>" location, whose client_body_buffer_size
 * is sized for the services' streamed bodies (nginx's 16 KB by default),
 * far below a chat's: there the body may go to nginx's temp file and is
 * read back, up to this size (the shipped gateway.<domain>'s buffer).
 */
#define NGX_HTTP_DSTACK_MODEL_BODY_MAX  (4 * 1024 * 1024)


typedef struct {
    ngx_http_request_t      *r;
    ds_txn_t                *txn;
    const ds_token_t        *tok;       /* NULL: anonymous */
    ngx_str_t                only;      /* one model, or all */
    ngx_str_t                project;   /* the host's; empty: main */
    ngx_array_t             *models;    /* of ngx_http_dstack_model_t */
    ngx_int_t                rc;
} ngx_http_dstack_models_ctx_t;

typedef struct {
    ngx_str_t                id;
    ngx_str_t                owner;
    uint64_t                 created;
} ngx_http_dstack_model_t;

/*
 * What the body of a 200 answer tells, as it streams by: token counts
 * from "usage", the time of its first byte (TTFT: admission to it, for
 * streams and plain answers alike) and of its last token event, and the
 * events "data: ..." of a stream but "data: [DONE]" (the token count
 * when the answer has no usage).  TPOT = (last - first) / (tokens - 1),
 * streams only.  The replica is the one that answered, taken at the
 * first byte: the balancer lets it go before the last.
 */
typedef struct ngx_http_dstack_answer_s {
    ds_usage_t                          usage;
    ngx_msec_t                          first;
    ngx_msec_t                          last;
    uint64_t                            events;
    ngx_http_dstack_replica_metrics_t  *replica;    /* NULL: none */
    uint64_t                            replica_uid;
    unsigned                            sse:3;      /* scan state */
    unsigned                            matched:3;  /* of "data:" */
    unsigned                            started:1;  /* first byte seen */
} ngx_http_dstack_answer_t;

#define NGX_HTTP_DSTACK_SSE_LINE_START  0
#define NGX_HTTP_DSTACK_SSE_IN_LINE     1
#define NGX_HTTP_DSTACK_SSE_AFTER_DATA  2


static ngx_int_t ngx_http_dstack_openai_dispatch(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
static void ngx_http_dstack_openai_project(ngx_http_request_t *r,
    ngx_str_t *project);
static ngx_int_t ngx_http_dstack_openai_preflight(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_openai_read_body(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
static void ngx_http_dstack_openai_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_openai_route(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
static size_t ngx_http_dstack_openai_body_max(ngx_http_request_t *r,
    ngx_uint_t *in_file);
static ngx_int_t ngx_http_dstack_openai_body(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_http_dstack_openai_model_name(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_str_t *body, ngx_str_t *model);
static ngx_int_t ngx_http_dstack_openai_rewrite(ngx_http_request_t *r,
    ds_str_t *prefix);
static void ngx_http_dstack_openai_affinity(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_str_t *body, const ds_routing_t *rt);
static ngx_uint_t ngx_http_dstack_openai_session(ngx_http_request_t *r,
    const ds_routing_t *rt, ds_json_span_t *user, uint64_t *key);
static ngx_int_t ngx_http_dstack_openai_models(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_str_t *only);
static int ngx_http_dstack_openai_collect(void *arg, const ds_model_t *m);
static ngx_int_t ngx_http_dstack_openai_send_models(ngx_http_request_t *r,
    ngx_array_t *models, ngx_uint_t one);
static ngx_int_t ngx_http_dstack_openai_fail(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_uint_t status, const char *type,
    const char *code, const char *fmt, ...);
static ngx_int_t ngx_http_dstack_openai_header_filter(ngx_http_request_t *r);


static ngx_int_t ngx_http_dstack_openai_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static void ngx_http_dstack_openai_count(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
static void ngx_http_dstack_openai_first_byte(ngx_http_dstack_ctx_t *ctx,
    ngx_http_dstack_answer_t *a);
static void ngx_http_dstack_openai_events(ngx_http_dstack_answer_t *a,
    u_char *p, u_char *last);
static void ngx_http_dstack_openai_answered(ngx_http_dstack_ctx_t *ctx,
    ngx_http_dstack_answer_t *a);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


ngx_int_t
ngx_http_dstack_openai_access(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx)
{
    ctx->openai = 1;

    if (ctx->reading_body) {
        return NGX_DONE;
    }

    if (ctx->body_ready) {
        ctx->done = 1;
        return ngx_http_dstack_openai_route(r, ctx);
    }

    return ngx_http_dstack_openai_dispatch(r, ctx);
}


static ngx_int_t
ngx_http_dstack_openai_dispatch(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx)
{
    ngx_str_t  *uri, id;

    uri = &r->uri;

    if (r->method == NGX_HTTP_OPTIONS) {
        ctx->done = 1;
        return ngx_http_dstack_openai_preflight(r);
    }

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        ctx->done = 1;

        if (uri->len == sizeof("/v1/models") - 1
            && ngx_strncmp(uri->data, "/v1/models", uri->len) == 0)
        {
            ngx_str_null(&id);
            return ngx_http_dstack_openai_models(r, ctx, &id);
        }

        if (uri->len > sizeof("/v1/models/") - 1
            && ngx_strncmp(uri->data, "/v1/models/",
                           sizeof("/v1/models/") - 1) == 0)
        {
            id.data = uri->data + sizeof("/v1/models/") - 1;
            id.len = uri->len - (sizeof("/v1/models/") - 1);
            return ngx_http_dstack_openai_models(r, ctx, &id);
        }

        return ngx_http_dstack_openai_fail(r, ctx, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "unknown_url",
                                           "Unknown request URL: GET %V",
                                           uri);
    }

    if (r->method == NGX_HTTP_POST
        && ((uri->len == sizeof("/v1/chat/completions") - 1
             && ngx_strncmp(uri->data, "/v1/chat/completions", uri->len) == 0)
            || (uri->len == sizeof("/v1/completions") - 1
                && ngx_strncmp(uri->data, "/v1/completions", uri->len) == 0)
            || (uri->len == sizeof("/v1/embeddings") - 1
                && ngx_strncmp(uri->data, "/v1/embeddings", uri->len) == 0)))
    {
        return ngx_http_dstack_openai_read_body(r, ctx);
    }

    ctx->done = 1;

    return ngx_http_dstack_openai_fail(r, ctx, NGX_HTTP_NOT_FOUND,
                                       "invalid_request_error", "unknown_url",
                                       "Unknown request URL: %V %V",
                                       &r->method_name, uri);
}


/* the project whose models the host serves: P of gateway--P.<domain>,
 * else main (empty) */
static void
ngx_http_dstack_openai_project(ngx_http_request_t *r, ngx_str_t *project)
{
    size_t                       len, plen;
    const char                  *name, *p;
    ngx_str_t                   *host;
    ngx_http_dstack_loc_conf_t  *dlcf;

    dlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_module);
    host = &r->headers_in.server;

    ngx_str_null(project);

    if (ds_host_run_name((const char *) host->data, host->len,
                         (const char *) dlcf->domain.data, dlcf->domain.len,
                         &name, &len)
        == DS_HOST_OK
        && ds_host_gateway_project(name, len, &p, &plen))
    {
        project->data = (u_char *) p;
        project->len = plen;
    }
}


static ngx_int_t
ngx_http_dstack_openai_preflight(ngx_http_request_t *r)
{
    ngx_int_t         rc;
    ngx_str_t         value;
    ngx_table_elt_t  *h;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_str_set(&value, "GET, POST, OPTIONS");
    if (ngx_http_dstack_add_header(r, "Access-Control-Allow-Methods", &value)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* allow what the browser asks for: the request is authorized by its
     * bearer token, not by its headers */
    h = ngx_http_dstack_find_header(r, "Access-Control-Request-Headers");
    if (h) {
        value = h->value;

    } else {
        ngx_str_set(&value, "Authorization, Content-Type");
    }

    if (ngx_http_dstack_add_header(r, "Access-Control-Allow-Headers", &value)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&value, "86400");
    if (ngx_http_dstack_add_header(r, "Access-Control-Max-Age", &value)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    rc = ngx_http_send_header(r);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_dstack_openai_read_body(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx)
{
    size_t      max;
    ngx_int_t   rc;
    ngx_uint_t  in_file;

    max = ngx_http_dstack_openai_body_max(r, &in_file);

    if (r->headers_in.content_length_n > (off_t) max) {
        ctx->done = 1;
        return ngx_http_dstack_openai_fail(r, ctx,
                                           NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                           "invalid_request_error",
                                           "request_too_large",
                                           "request body is larger than "
                                           "%uz bytes", max);
    }

    r->request_body_in_single_buf = 1;
    ctx->reading_body = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_dstack_openai_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_DONE;
}


static void
ngx_http_dstack_openai_body_handler(ngx_http_request_t *r)
{
    ngx_http_dstack_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_module);

    ctx->reading_body = 0;
    ctx->body_ready = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_http_dstack_openai_route(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx)
{
    int          found;
    ngx_int_t    rc;
    ngx_str_t    body, model, service, project;
    ds_err_t     err;
    ds_txn_t    *txn;
    ds_model_t   m;

    rc = ngx_http_dstack_openai_body(r, &body);

    if (rc == NGX_DECLINED) {
        return ngx_http_dstack_openai_fail(r, ctx,
                                           NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                           "invalid_request_error",
                                           "request_too_large",
                                           "request body is too large");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->body_received = body.len;

    rc = ngx_http_dstack_openai_model_name(r, ctx, &body, &model);
    if (rc != NGX_OK) {
        return rc;
    }

    ctx->body = body;
    ctx->model_name = model;

    txn = ngx_http_dstack_state_begin(r->connection->log);
    if (txn == NULL) {
        return ngx_http_dstack_refuse_unavailable(r, ctx);
    }

    ngx_http_dstack_openai_project(r, &project);

    found = ds_get_project_model(txn, (char *) project.data, project.len,
                                 (char *) model.data, model.len, &m, &err);

    if (found != DS_OK) {
        ngx_http_dstack_state_end();

        if (found != DS_NOTFOUND) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "dstack model \"%V\": %s", &model, err.msg);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_dstack_openai_fail(r, ctx, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "model_not_found",
                                           "The model `%V` does not exist",
                                           &model);
    }

    if (ngx_http_dstack_openai_rewrite(r, &m.prefix) != NGX_OK) {
        ngx_http_dstack_state_end();
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (m.routing.affinity != DS_AFFINITY_NONE) {
        ngx_http_dstack_openai_affinity(r, ctx, &body, &m.routing);
    }

    ctx->model_budget = m.budget;

    service.data = (u_char *) m.service.data;
    service.len = m.service.len;

    return ngx_http_dstack_serve(r, ctx, &service);
}


/*
 * The affinity key, in the routing record's terms (it is the model's,
 * valid until state_end()): the session's, from its header or the
 * body's "user", or the hash of the first prefix_bytes of "messages"
 * (chat), "prompt" (completions) or "input" (embeddings) as sent.  One
 * more scan of the body, which the first one validated, and nothing
 * allocated.  Without any of them, least in-flight as without affinity.
 */
static void
ngx_http_dstack_openai_affinity(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_str_t *body, const ds_routing_t *rt)
{
    size_t           i, len;
    ds_json_span_t   span[4];

    static const char *const  keys[4] = {
        "messages", "prompt", "input", "user"
    };

    if (ds_json_find_raw((const char *) body->data, body->len, keys, 4, span)
        != DS_JSON_OK)
    {
        return;
    }

    if (rt->affinity == DS_AFFINITY_SESSION
        && ngx_http_dstack_openai_session(r, rt, &span[3],
                                          &ctx->affinity_key))
    {
        ctx->load_factor = rt->load_factor;
        return;
    }

    for (i = 0; i < 3; i++) {
        if (span[i].len) {
            len = ngx_min(span[i].len, rt->prefix_bytes);
            ctx->affinity_key = ds_affinity_hash(span[i].data, len);
            ctx->load_factor = rt->load_factor;
            return;
        }
    }
}


/* the key of the session header's value, else of a non-empty "user"
 * string: 1, or 0 without either */
static ngx_uint_t
ngx_http_dstack_openai_session(ngx_http_request_t *r, const ds_routing_t *rt,
    ds_json_span_t *user, uint64_t *key)
{
    u_char            name[DS_NAME_MAX + 1];
    ngx_table_elt_t  *h;

    ngx_memcpy(name, rt->session_header.data, rt->session_header.len);
    name[rt->session_header.len] = '\0';

    h = ngx_http_dstack_find_header(r, (const char *) name);

    if (h && h->value.len) {
        *key = ds_affinity_hash(h->value.data, h->value.len);
        return 1;
    }

    /* a string with something between its quotes */
    if (user->len > 2 && user->data[0] == '"') {
        *key = ds_affinity_hash(user->data + 1, user->len - 2);
        return 1;
    }

    return 0;
}


/* the body limit, and whether a body in the temp file is read back: on
 * a "dstack_openai" location its buffer, else (a project's host) the
 * model endpoint's own */
static size_t
ngx_http_dstack_openai_body_max(ngx_http_request_t *r, ngx_uint_t *in_file)
{
    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_dstack_loc_conf_t  *dlcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    dlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_module);

    *in_file = !dlcf->openai;

    if (dlcf->openai) {
        return clcf->client_body_buffer_size;
    }

    return ngx_max(clcf->client_body_buffer_size,
                   NGX_HTTP_DSTACK_MODEL_BODY_MAX);
}


/* the body as one buffer: NGX_DECLINED when it is over the limit, or
 * went to a temp file where that is not read back */
static ngx_int_t
ngx_http_dstack_openai_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    off_t         size;
    size_t        len, max;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_uint_t    in_file;
    ngx_chain_t  *cl;

    ngx_str_null(body);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    max = ngx_http_dstack_openai_body_max(r, &in_file);

    if (r->request_body->temp_file && !in_file) {
        return NGX_DECLINED;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file && !in_file) {
            return NGX_DECLINED;
        }

        size = b->in_file ? b->file_last - b->file_pos : b->last - b->pos;

        if (size < 0 || (size_t) size > max - len) {
            return NGX_DECLINED;
        }

        len += (size_t) size;
    }

    if (r->request_body->bufs->next == NULL
        && !r->request_body->bufs->buf->in_file)
    {
        body->data = r->request_body->bufs->buf->pos;
        body->len = len;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    body->len = len;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            /* a file nginx has just written: in the page cache */
            size = b->file_last - b->file_pos;
            n = ngx_read_file(b->file, p, (size_t) size, b->file_pos);

            if (n != (ssize_t) size) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "dstack model endpoint: cannot read the "
                              "request body back from \"%V\"",
                              &b->file->name);
                return NGX_ERROR;
            }

            p += size;

        /* the last buffer of a chunked body is empty, its pos NULL */
        } else if (b->last != b->pos) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_openai_model_name(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_str_t *body, ngx_str_t *model)
{
    int          rc, escaped;
    size_t       len, off;
    const char  *val;

    rc = ds_json_find_string((const char *) body->data, body->len, "model",
                             &val, &len, &escaped, &off);

    switch (rc) {

    case DS_JSON_INVALID:
        return ngx_http_dstack_openai_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error", NULL,
                                           "We could not parse the JSON body "
                                           "of your request (at byte %uz)",
                                           off);

    case DS_JSON_MISSING:
        return ngx_http_dstack_openai_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error", NULL,
                                           "you must provide a model "
                                           "parameter");

    case DS_JSON_NOT_STRING:
        return ngx_http_dstack_openai_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                           "invalid_request_error", NULL,
                                           "\"model\" must be a string");
    }

    model->data = (u_char *) val;
    model->len = len;

    if (escaped) {
        model->data = ngx_pnalloc(r->pool, len);
        if (model->data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        model->len = ds_json_unescape(val, len, (char *) model->data);

        if (model->len == (size_t) -1) {
            return ngx_http_dstack_openai_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                               "invalid_request_error", NULL,
                                               "\"model\" is not a valid "
                                               "string");
        }
    }

    if (model->len == 0 || model->len > DS_NAME_MAX * 4) {
        return ngx_http_dstack_openai_fail(r, ctx, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "model_not_found",
                                           "The model does not exist");
    }

    return NGX_OK;
}


/* /v1/chat/completions -> <prefix>/chat/completions, arguments kept */
static ngx_int_t
ngx_http_dstack_openai_rewrite(ngx_http_request_t *r, ds_str_t *prefix)
{
    u_char  *p, *tail;
    size_t   rest;

    if (prefix->len == sizeof(NGX_HTTP_DSTACK_V1) - 1
        && ngx_strncmp(prefix->data, NGX_HTTP_DSTACK_V1, prefix->len) == 0)
    {
        return NGX_OK;
    }

    /* the dispatcher matched the URI, so it starts with "/v1/" */
    tail = r->uri.data + sizeof(NGX_HTTP_DSTACK_V1) - 1;
    rest = r->uri.len - (sizeof(NGX_HTTP_DSTACK_V1) - 1);

    p = ngx_pnalloc(r->pool, prefix->len + rest);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, prefix->data, prefix->len);
    ngx_memcpy(p + prefix->len, tail, rest);

    r->uri.data = p;
    r->uri.len = prefix->len + rest;
    r->valid_unparsed_uri = 0;

    return NGX_OK;
}


/*
 * GET /v1/models: the host's project's models of services the caller may
 * use (all services with auth off; with a token, those it opens, as
 * auth.c decides) that have a ready replica.  A bad token is a 401 even
 * here: clients should learn early.
 */
static ngx_int_t
ngx_http_dstack_openai_models(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_str_t *only)
{
    ngx_int_t                      rc;
    ngx_str_t                      reason;
    ds_err_t                       err;
    ds_txn_t                      *txn;
    const ds_token_t              *tok;
    ngx_http_dstack_models_ctx_t   mc;

    txn = ngx_http_dstack_state_begin(r->connection->log);
    if (txn == NULL) {
        return ngx_http_dstack_refuse_unavailable(r, ctx);
    }

    ngx_memzero(&mc, sizeof(mc));
    mc.r = r;
    mc.txn = txn;
    mc.only = *only;
    ngx_http_dstack_openai_project(r, &mc.project);

    rc = ngx_http_dstack_token(r, &tok, &reason);

    if (rc == NGX_OK) {
        mc.tok = tok;

    } else if (rc != NGX_DECLINED) {
        ngx_http_dstack_state_end();
        return ngx_http_dstack_refuse(r, ctx, rc, &reason, 0);
    }

    mc.models = ngx_array_create(r->pool, 8, sizeof(ngx_http_dstack_model_t));
    if (mc.models == NULL) {
        ngx_http_dstack_state_end();
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ds_foreach_project_model(txn, (char *) mc.project.data,
                                 mc.project.len,
                                 ngx_http_dstack_openai_collect, &mc, &err)
        != DS_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack models: %s", err.msg);
        mc.rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_dstack_state_end();

    if (mc.rc != NGX_OK) {
        return mc.rc;
    }

    if (only->len && mc.models->nelts == 0) {
        return ngx_http_dstack_openai_fail(r, ctx, NGX_HTTP_NOT_FOUND,
                                           "invalid_request_error",
                                           "model_not_found",
                                           "The model `%V` does not exist",
                                           only);
    }

    rc = ngx_http_dstack_openai_send_models(r, mc.models, only->len != 0);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static int
ngx_http_dstack_openai_collect(void *arg, const ds_model_t *m)
{
    ngx_http_dstack_models_ctx_t *mc = arg;

    int                       rc;
    uint32_t                  i;
    ds_err_t                  err;
    ds_replica_t              rep;
    ds_service_t              svc;
    ds_replica_set_t          set;
    ngx_http_dstack_model_t  *out;

    if (mc->only.len
        && (mc->only.len != m->name.len
            || ngx_strncmp(mc->only.data, m->name.data, m->name.len) != 0))
    {
        return 0;
    }

    if (ds_get_service(mc->txn, m->service.data, m->service.len, &svc, &err)
        != DS_OK)
    {
        return 0;
    }

    if ((svc.flags & DS_SERVICE_AUTH)
        && (mc->tok == NULL
            || ngx_http_dstack_token_opens(mc->r, mc->tok,
                                           (const u_char *) svc.name.data,
                                           svc.name.len)
               != NGX_OK))
    {
        return 0;
    }

    rc = ds_get_replicas(mc->txn, svc.name.data, svc.name.len, &set, &err);
    if (rc != DS_OK) {
        return 0;
    }

    for (i = 0; i < set.count; i++) {
        ds_replica_at(&set, i, &rep);
        if (rep.state == DS_REPLICA_READY) {
            break;
        }
    }

    if (i == set.count) {
        return 0;
    }

    out = ngx_array_push(mc->models);
    if (out == NULL) {
        mc->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return 1;
    }

    out->id.len = m->name.len;
    out->owner.len = m->service.len;
    out->id.data = ngx_pnalloc(mc->r->pool, m->name.len + m->service.len);
    if (out->id.data == NULL) {
        mc->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return 1;
    }

    out->owner.data = ngx_cpymem(out->id.data, m->name.data, m->name.len);
    ngx_memcpy(out->owner.data, m->service.data, m->service.len);
    out->created = m->created;

    return 0;
}


static ngx_int_t
ngx_http_dstack_openai_send_models(ngx_http_request_t *r,
    ngx_array_t *models, ngx_uint_t one)
{
    size_t                    len;
    u_char                   *p;
    ngx_uint_t                i;
    ngx_buf_t                *b;
    ngx_chain_t               out;
    ngx_http_dstack_model_t  *m;

    static const char  entry[] =
        "{\"id\":\"\",\"object\":\"model\",\"created\":,\"owned_by\":\"\"},";

    m = models->elts;
    len = sizeof("{\"object\":\"list\",\"data\":[]}\n") - 1;

    for (i = 0; i < models->nelts; i++) {
        len += sizeof(entry) - 1 + NGX_INT64_LEN
               + m[i].id.len + ngx_escape_json(NULL, m[i].id.data,
                                               m[i].id.len)
               + m[i].owner.len;
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    if (!one) {
        p = ngx_cpymem(p, "{\"object\":\"list\",\"data\":[",
                       sizeof("{\"object\":\"list\",\"data\":[") - 1);
    }

    for (i = 0; i < models->nelts; i++) {
        p = ngx_cpymem(p, "{\"id\":\"", sizeof("{\"id\":\"") - 1);
        p = (u_char *) ngx_escape_json(p, m[i].id.data, m[i].id.len);
        p = ngx_sprintf(p, "\",\"object\":\"model\",\"created\":%uL,"
                        "\"owned_by\":\"%V\"}", m[i].created, &m[i].owner);

        if (i + 1 < models->nelts) {
            *p++ = ',';
        }
    }

    if (!one) {
        *p++ = ']';
        *p++ = '}';
    }

    *p++ = '\n';

    b->last = p;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_dstack_send_json(r, NGX_HTTP_OK, &out);
}


static ngx_int_t
ngx_http_dstack_openai_fail(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx,
    ngx_uint_t status, const char *type, const char *code, const char *fmt,
    ...)
{
    u_char     *p;
    va_list     args;
    ngx_str_t   msg;

    p = ngx_pnalloc(r->pool, NGX_MAX_ERROR_STR);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    va_start(args, fmt);
    msg.len = ngx_vslprintf(p, p + NGX_MAX_ERROR_STR, fmt, args) - p;
    va_end(args);
    msg.data = p;

    return ngx_http_dstack_fail(r, ctx, status, type, code, &msg);
}


ngx_int_t
ngx_http_dstack_openai_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_dstack_openai_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_dstack_openai_body_filter;

    return NGX_OK;
}


/* browsers may call the endpoint from any origin: the bearer token, not
 * a cookie, is the credential */
static ngx_int_t
ngx_http_dstack_openai_header_filter(ngx_http_request_t *r)
{
    ngx_str_t               value;
    ngx_http_dstack_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_module);

    if (ctx == NULL || !ctx->openai) {
        return ngx_http_next_header_filter(r);
    }

    ngx_http_dstack_openai_count(r, ctx);

    if (ngx_http_dstack_budget_headers(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_dstack_find_out_header(r, "Access-Control-Allow-Origin")
        == NULL)
    {
        ngx_str_set(&value, "*");
        if (ngx_http_dstack_add_header(r, "Access-Control-Allow-Origin",
                                       &value)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


/* per model: requests, errors and the time to the answer's header */
static void
ngx_http_dstack_openai_count(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx)
{
    ngx_http_dstack_service_metrics_t  *m;

    m = ctx->metrics;

    if (m == NULL || !ctx->admitted) {
        return;
    }

    __atomic_fetch_add(&m->model_requests, 1, __ATOMIC_RELAXED);

    if (r->headers_out.status >= NGX_HTTP_BAD_REQUEST) {
        __atomic_fetch_add(&m->model_errors, 1, __ATOMIC_RELAXED);
    }

    __atomic_fetch_add(&m->ttfb_ms_sum, ngx_current_msec - ctx->start,
                       __ATOMIC_RELAXED);
}


/* token counts and latency of a 200 answer, as it streams by; added at
 * its end (TTFT at its first byte) */
static ngx_int_t
ngx_http_dstack_openai_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_int_t                           rc;
    ngx_chain_t                        *cl, *out;
    ngx_http_dstack_ctx_t              *ctx;
    ngx_http_dstack_answer_t           *a;

    if (r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_module);

    if (ctx == NULL || !ctx->openai || ctx->metrics == NULL
        || !ctx->admitted || r->headers_out.status != NGX_HTTP_OK)
    {
        return ngx_http_next_body_filter(r, in);
    }

    if (ctx->answer == NULL) {
        ctx->answer = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_answer_t));
        if (ctx->answer == NULL) {
            return NGX_ERROR;
        }
    }

    a = ctx->answer;

    for (cl = in; cl; cl = cl->next) {
        if (ngx_buf_in_memory(cl->buf) && cl->buf->last > cl->buf->pos) {
            if (!a->started) {
                ngx_http_dstack_openai_first_byte(ctx, a);
            }

            ds_usage_scan(&a->usage, (const char *) cl->buf->pos,
                          cl->buf->last - cl->buf->pos);
            ngx_http_dstack_openai_events(a, cl->buf->pos, cl->buf->last);
        }

        /* the end may come as an empty special buffer */
        if (cl->buf->last_buf && a->started) {
            ngx_http_dstack_openai_answered(ctx, a);
            a->started = 0;
        }
    }

    if (ctx->budget == NULL || !ctx->budget->strip_usage) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ngx_http_dstack_stream_strip(r, ctx, in, &out) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = ngx_http_next_body_filter(r, out);

    ngx_http_dstack_stream_free(r, out);

    return rc;
}


static void
ngx_http_dstack_openai_first_byte(ngx_http_dstack_ctx_t *ctx,
    ngx_http_dstack_answer_t *a)
{
    uint64_t                    us;
    ngx_http_dstack_latency_t  *lat;

    a->started = 1;
    a->first = ngx_current_msec;
    a->last = a->first;

    /* a held request from when it got a replica: its wait for a cold
     * start is in the hold figures, and would make the autoscaler's
     * "ttft" ask for replicas in proportion to a start-up time */
    us = (uint64_t) (ngx_msec_int_t)
         (a->first - (ctx->released ? ctx->released : ctx->start)) * 1000;

    lat = ngx_http_dstack_metrics_service_latency(ctx->metrics);
    ngx_http_dstack_latency_add(lat, NGX_HTTP_DSTACK_LAT_TTFT, us,
                                ngx_time());

    a->replica = ctx->current_metrics;

    if (a->replica == NULL) {
        return;
    }

    a->replica_uid = __atomic_load_n(&a->replica->uid, __ATOMIC_RELAXED);

    lat = ngx_http_dstack_metrics_replica_latency(a->replica);
    ngx_http_dstack_latency_add(lat, NGX_HTTP_DSTACK_LAT_TTFT, us,
                                ngx_time());
}


/* counts the events "data: ..." at line starts but "data: [DONE]", and
 * notes the time of the newest; resumes where the last buffer ended */
static void
ngx_http_dstack_openai_events(ngx_http_dstack_answer_t *a, u_char *p,
    u_char *last)
{
    static const u_char  data[] = "data:";

    for ( /* void */ ; p < last; p++) {

        switch (a->sse) {

        case NGX_HTTP_DSTACK_SSE_LINE_START:
            if (*p == data[a->matched]) {
                if (++a->matched == sizeof(data) - 1) {
                    a->matched = 0;
                    a->sse = NGX_HTTP_DSTACK_SSE_AFTER_DATA;
                }
                break;
            }

            a->matched = 0;
            a->sse = (*p == '\n') ? NGX_HTTP_DSTACK_SSE_LINE_START
                                  : NGX_HTTP_DSTACK_SSE_IN_LINE;
            break;

        case NGX_HTTP_DSTACK_SSE_AFTER_DATA:
            if (*p == ' ') {
                break;
            }

            if (*p != '[') {
                a->events++;
                a->last = ngx_current_msec;
            }

            a->sse = (*p == '\n') ? NGX_HTTP_DSTACK_SSE_LINE_START
                                  : NGX_HTTP_DSTACK_SSE_IN_LINE;
            break;

        default: /* NGX_HTTP_DSTACK_SSE_IN_LINE */
            if (*p == '\n') {
                a->sse = NGX_HTTP_DSTACK_SSE_LINE_START;
            }
        }
    }
}


/* the answer ended: its tokens, and for a stream its TPOT */
static void
ngx_http_dstack_openai_answered(ngx_http_dstack_ctx_t *ctx,
    ngx_http_dstack_answer_t *a)
{
    uint64_t                            tokens, us;
    ngx_http_dstack_latency_t          *lat;
    ngx_http_dstack_service_metrics_t  *m;

    m = ctx->metrics;

    if (a->usage.seen && ctx->budget) {
        ctx->budget->prompt = a->usage.prompt;
        ctx->budget->completion = a->usage.completion;
        ctx->budget->usage_seen = 1;
    }

    if (a->usage.seen) {
        __atomic_fetch_add(&m->prompt_tokens, a->usage.prompt,
                           __ATOMIC_RELAXED);
        __atomic_fetch_add(&m->completion_tokens, a->usage.completion,
                           __ATOMIC_RELAXED);
        a->usage.seen = 0;
        tokens = a->usage.completion;

    } else {
        tokens = a->events;
    }

    /* a plain answer comes at once: no time per token */

    if (a->events < 2 || tokens < 2 || a->last == a->first) {
        return;
    }

    us = (uint64_t) (ngx_msec_int_t) (a->last - a->first) * 1000
         / (tokens - 1);

    lat = ngx_http_dstack_metrics_service_latency(m);
    ngx_http_dstack_latency_add(lat, NGX_HTTP_DSTACK_LAT_TPOT, us,
                                ngx_time());

    if (a->replica
        && __atomic_load_n(&a->replica->uid, __ATOMIC_RELAXED)
           == a->replica_uid)
    {
        lat = ngx_http_dstack_metrics_replica_latency(a->replica);
        ngx_http_dstack_latency_add(lat, NGX_HTTP_DSTACK_LAT_TPOT, us,
                                    ngx_time());
    }
}
