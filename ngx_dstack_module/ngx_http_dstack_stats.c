/*
 * "dstack_stats json|prometheus": the metrics zone and the services and
 * replicas in state, for controld (JSON, every second) and Prometheus.
 *
 * The services and their replica sets are copied out of one read
 * transaction first (names and addresses into r->pool), the transaction
 * ends, and only then is the output written: counters are read from the
 * zone at that moment.  The output goes into a chain of buffers from
 * r->pool, so it needs no estimate of its length up front.
 */

#include "ngx_http_dstack_module.h"
#include "ds_stats_names.h"


#define NGX_HTTP_DSTACK_STATS_BUF       16384

/* Prometheus: buffers rendered before a send, services per step */
#define NGX_HTTP_DSTACK_STATS_SEND_BUFS 4
#define NGX_HTTP_DSTACK_STATS_STEP      16

/* upper bound of what one line of output adds besides escaped names */
#define NGX_HTTP_DSTACK_STATS_LINE      192

#define NGX_HTTP_DSTACK_STATS_NWINDOWS  3


typedef struct {
    ngx_str_t                           addr;
    uint64_t                            uid;
    uint32_t                            slot;
    uint32_t                            version;
    ngx_uint_t                          state;
    ngx_http_dstack_replica_metrics_t  *metrics;
} ngx_http_dstack_stats_replica_t;

typedef struct {
    ngx_str_t                           name;
    ngx_str_t                           prom;       /* name, escaped as a
                                                       label value */
    uint64_t                            uid;
    uint32_t                            slot;
    ngx_http_dstack_service_metrics_t  *metrics;
    ngx_uint_t                          replica;    /* first, in replicas */
    ngx_uint_t                          nreplicas;
} ngx_http_dstack_stats_service_t;

/* what ds_foreach_service() collects */
typedef struct {
    ngx_http_request_t                 *r;
    ds_txn_t                           *txn;
    ngx_array_t                         services;
    ngx_array_t                         replicas;
    ngx_uint_t                          active;     /* ?active=1 */
    time_t                              now;
    ngx_uint_t                          failed;     /* out of memory */
} ngx_http_dstack_stats_collect_t;

/* a chain of buffers that grows as it is written; with a free list
 * (Prometheus) it takes buffers sent already before making new ones */
typedef struct {
    ngx_pool_t                         *pool;
    ngx_chain_t                        *first;
    ngx_chain_t                       **last;
    ngx_buf_t                          *buf;
    ngx_chain_t                       **free;       /* NULL: none */
    ngx_uint_t                          nbufs;      /* in first */
} ngx_http_dstack_stats_out_t;

/*
 * A Prometheus scrape is streamed: at 10,000 services x 5 replicas it is
 * 42 MB, and built whole it took as much of r->pool (fresh pages to
 * fault in on every scrape).  The families are rendered a few buffers
 * at a time, sent, and rendering goes on when the socket takes more;
 * the buffers are reused, so a scrape holds about
 * NGX_HTTP_DSTACK_STATS_SEND_BUFS buffers besides what the socket holds.
 */
typedef struct {
    ngx_http_dstack_stats_collect_t     col;
    ngx_http_dstack_stats_out_t         out;
    ngx_chain_t                        *free;
    ngx_chain_t                        *busy;
    ngx_uint_t                          family;     /* rendering now */
    ngx_uint_t                          service;    /* next, in family */
    time_t                              now;
    ngx_uint_t                          done;       /* last buffer sent */
} ngx_http_dstack_stats_stream_t;

/* a service's counters, read once from the zone */
typedef struct {
    int64_t                             inflight;
    uint64_t                            requests[NGX_HTTP_DSTACK_CLASSES];
    uint64_t                            time_ms_sum;
    uint64_t                            hist[NGX_HTTP_DSTACK_HIST];
    uint64_t                  windows[NGX_HTTP_DSTACK_STATS_NWINDOWS]
                                     [NGX_HTTP_DSTACK_CLASSES];
    uint64_t                  arrivals[NGX_HTTP_DSTACK_STATS_NWINDOWS];
    uint64_t                            model[5];   /* requests, errors,
                                                       ttfb ms, prompt and
                                                       completion tokens */
    int64_t                             held;
    uint64_t                            held_total;
    uint64_t                            held_ms_sum;
    uint64_t                            hold_timeouts;
    uint64_t                            hold_rejected;
    uint64_t                            cold_starts;
    uint64_t                            cold_start_ms_sum;
} ngx_http_dstack_stats_counters_t;


static int ngx_http_dstack_stats_collect(void *arg, const ds_service_t *svc);
static ngx_buf_t *ngx_http_dstack_stats_reserve(
    ngx_http_dstack_stats_out_t *out, size_t n);
static void ngx_http_dstack_stats_read(ngx_http_dstack_stats_service_t *s,
    time_t now, ngx_uint_t windows, ngx_http_dstack_stats_counters_t *c);
static ngx_int_t ngx_http_dstack_stats_json(
    ngx_http_dstack_stats_collect_t *col, ngx_http_dstack_stats_out_t *out);
static ngx_int_t ngx_http_dstack_stats_prometheus(ngx_http_request_t *r,
    ngx_http_dstack_stats_collect_t *col);
static ngx_int_t ngx_http_dstack_stats_stream(ngx_http_request_t *r,
    ngx_http_dstack_stats_stream_t *st);
static void ngx_http_dstack_stats_stream_write(ngx_http_request_t *r);
static void ngx_http_dstack_stats_stream_wait(ngx_http_request_t *r);
static void ngx_http_dstack_stats_stream_cleanup(void *data);
static ngx_int_t ngx_http_dstack_stats_prom_family(
    ngx_http_dstack_stats_collect_t *col, ngx_http_dstack_stats_out_t *out,
    ngx_uint_t family, time_t now, ngx_uint_t from, ngx_uint_t to);
static u_char *ngx_http_dstack_stats_prom_sample(u_char *p, ngx_str_t *name,
    char *suffix, ngx_str_t *service);
static size_t ngx_http_dstack_stats_prom_escape_len(ngx_str_t *s);
static u_char *ngx_http_dstack_stats_prom_escape(u_char *p, ngx_str_t *s);


static ngx_uint_t  ngx_http_dstack_stats_seconds[] = { 30, 60, 300 };

static ngx_str_t  ngx_http_dstack_stats_classes[] = {
    ngx_string(DS_STATS_REFUSED),
    ngx_string(DS_STATS_1XX),
    ngx_string(DS_STATS_2XX),
    ngx_string(DS_STATS_3XX),
    ngx_string(DS_STATS_4XX),
    ngx_string(DS_STATS_5XX)
};

/* the bounds metrics.c counts with, in seconds */
static ngx_str_t  ngx_http_dstack_stats_le[] = {
    ngx_string("0.005"),
    ngx_string("0.01"),
    ngx_string("0.025"),
    ngx_string("0.05"),
    ngx_string("0.1"),
    ngx_string("0.25"),
    ngx_string("0.5"),
    ngx_string("1"),
    ngx_string("2.5"),
    ngx_string("5"),
    ngx_string("10"),
    ngx_string("60")
};


/* Prometheus families, in output order */

#define NGX_HTTP_DSTACK_PROM_REQUESTS         0
#define NGX_HTTP_DSTACK_PROM_INFLIGHT         1
#define NGX_HTTP_DSTACK_PROM_DURATION         2
#define NGX_HTTP_DSTACK_PROM_WINDOW           3
#define NGX_HTTP_DSTACK_PROM_HELD             4
#define NGX_HTTP_DSTACK_PROM_HELD_SECONDS     5
#define NGX_HTTP_DSTACK_PROM_COLD_STARTS      6
#define NGX_HTTP_DSTACK_PROM_COLD_SECONDS     7
#define NGX_HTTP_DSTACK_PROM_MODEL_REQUESTS   8
#define NGX_HTTP_DSTACK_PROM_MODEL_ERRORS     9
#define NGX_HTTP_DSTACK_PROM_MODEL_TTFB       10
#define NGX_HTTP_DSTACK_PROM_MODEL_TOKENS     11
#define NGX_HTTP_DSTACK_PROM_REPLICA_INFLIGHT 12
#define NGX_HTTP_DSTACK_PROM_REPLICA_REQUESTS 13
#define NGX_HTTP_DSTACK_PROM_REPLICA_FAILURES 14
#define NGX_HTTP_DSTACK_PROM_FAMILIES         15

typedef struct {
    ngx_str_t                           name;
    ngx_str_t                           type;
    ngx_str_t                           help;
    ngx_uint_t                          lines;  /* per service or replica */
} ngx_http_dstack_prom_family_t;

static ngx_http_dstack_prom_family_t  ngx_http_dstack_prom_families[] = {

    { ngx_string("dstack_requests_total"),
      ngx_string("counter"),
      ngx_string("Requests to a service by outcome: refused by the "
                 "gateway, or the status class of the answer."),
      NGX_HTTP_DSTACK_CLASSES },

    { ngx_string("dstack_inflight_requests"),
      ngx_string("gauge"),
      ngx_string("Requests admitted to a service and not yet completed."),
      1 },

    { ngx_string("dstack_request_duration_seconds"),
      ngx_string("histogram"),
      ngx_string("Time of the requests admitted to a service, from "
                 "admission to completion."),
      NGX_HTTP_DSTACK_HIST + 3 },

    { ngx_string("dstack_window_requests"),
      ngx_string("gauge"),
      ngx_string("Requests to a service completed in the last 30, 60 or "
                 "300 seconds, by outcome."),
      NGX_HTTP_DSTACK_STATS_NWINDOWS * NGX_HTTP_DSTACK_CLASSES },

    { ngx_string("dstack_held_requests"),
      ngx_string("gauge"),
      ngx_string("Requests waiting inside the gateway for the first "
                 "replica of a service scaled to zero."),
      1 },

    { ngx_string("dstack_held_seconds_total"),
      ngx_string("counter"),
      ngx_string("Time requests spent waiting for a replica."),
      1 },

    { ngx_string("dstack_cold_starts_total"),
      ngx_string("counter"),
      ngx_string("Times a service went from no ready replica, with "
                 "requests waiting, to a ready one."),
      1 },

    { ngx_string("dstack_cold_start_seconds_total"),
      ngx_string("counter"),
      ngx_string("Time from the first waiting request to a ready replica, "
                 "summed over cold starts."),
      1 },

    { ngx_string("dstack_model_requests_total"),
      ngx_string("counter"),
      ngx_string("Requests to a service's model through the OpenAI "
                 "endpoint."),
      1 },

    { ngx_string("dstack_model_errors_total"),
      ngx_string("counter"),
      ngx_string("Model requests answered with a 4xx or 5xx status."),
      1 },

    { ngx_string("dstack_model_ttfb_seconds_total"),
      ngx_string("counter"),
      ngx_string("Time from admission to the answer's header, summed over "
                 "model requests (divide by the requests for the mean)."),
      1 },

    { ngx_string("dstack_model_tokens_total"),
      ngx_string("counter"),
      ngx_string("Tokens reported in the answers' usage, by type."),
      2 },

    { ngx_string("dstack_replica_inflight_requests"),
      ngx_string("gauge"),
      ngx_string("Requests a replica is serving now."),
      1 },

    { ngx_string("dstack_replica_requests_total"),
      ngx_string("counter"),
      ngx_string("Requests sent to a replica."),
      1 },

    { ngx_string("dstack_replica_failures_total"),
      ngx_string("counter"),
      ngx_string("Requests a replica failed: connect or read errors."),
      1 }
};


/* slots over capacity show as zero */
static ngx_http_dstack_service_metrics_t  ngx_http_dstack_stats_no_service;
static ngx_http_dstack_replica_metrics_t  ngx_http_dstack_stats_no_replica;


ngx_int_t
ngx_http_dstack_stats_handler(ngx_http_request_t *r)
{
    int                               rc;
    ds_err_t                          err;
    ds_txn_t                         *txn;
    ngx_int_t                         rv;
    ngx_str_t                         message, arg;
    ngx_chain_t                      *cl;
    ngx_http_dstack_loc_conf_t       *dlcf;
    ngx_http_dstack_stats_out_t       out;
    ngx_http_dstack_stats_collect_t   col;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rv = ngx_http_discard_request_body(r);

    if (rv != NGX_OK) {
        return rv;
    }

    dlcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_module);

    col.r = r;
    col.failed = 0;
    col.now = ngx_time();
    col.active = (ngx_http_arg(r, (u_char *) "active", 6, &arg) == NGX_OK
                  && arg.len == 1 && arg.data[0] == '1');

    if (ngx_array_init(&col.services, r->pool, 64,
                       sizeof(ngx_http_dstack_stats_service_t))
        != NGX_OK
        || ngx_array_init(&col.replicas, r->pool, 256,
                          sizeof(ngx_http_dstack_stats_replica_t))
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    txn = ngx_http_dstack_state_begin(r->connection->log);

    if (txn == NULL) {
        ngx_str_set(&message, "state unavailable");
        return ngx_http_dstack_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "unavailable", NULL, &message);
    }

    col.txn = txn;

    rc = ds_foreach_service(txn, ngx_http_dstack_stats_collect, &col, &err);

    ngx_http_dstack_state_end();

    if (col.failed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != DS_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack stats: %s", err.msg);

        ngx_str_set(&message, "state unavailable");
        return ngx_http_dstack_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "unavailable", NULL, &message);
    }

    if (dlcf->stats == NGX_HTTP_DSTACK_STATS_PROM) {
        return ngx_http_dstack_stats_prometheus(r, &col);
    }

    out.pool = r->pool;
    out.first = NULL;
    out.last = &out.first;
    out.buf = NULL;
    out.free = NULL;
    out.nbufs = 0;

    rv = ngx_http_dstack_stats_json(&col, &out);
    ngx_str_set(&r->headers_out.content_type, "application/json");

    if (rv != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = 0;

    for (cl = out.first; cl; cl = cl->next) {
        r->headers_out.content_length_n += cl->buf->last - cl->buf->pos;
    }

    out.buf->last_buf = (r == r->main) ? 1 : 0;
    out.buf->last_in_chain = 1;

    rv = ngx_http_send_header(r);

    if (rv == NGX_ERROR || rv > NGX_OK || r->header_only) {
        return rv;
    }

    return ngx_http_output_filter(r, out.first);
}


/*
 * "?active=1" (controld's poll, and a Prometheus scrape that asks for it
 * with params) leaves out the services with nothing to tell: nothing in
 * flight or held, no arrival or completion within the longest window.  A
 * service left out has zeros everywhere that matters to scaling and
 * draining, and most of 10,000 services are idle: the
 * answer, and the worker's time to build it, scale with the busy ones.
 */
static ngx_uint_t
ngx_http_dstack_stats_is_active(ngx_http_dstack_service_metrics_t *m,
    time_t now)
{
    if (m == NULL) {
        return 0;
    }

    return __atomic_load_n(&m->inflight, __ATOMIC_RELAXED) != 0
           || __atomic_load_n(&m->held, __ATOMIC_RELAXED) != 0
           || (uint64_t) now
              < __atomic_load_n(&m->last_active, __ATOMIC_RELAXED)
                + NGX_HTTP_DSTACK_WINDOW;
}


/*
 * Inside the read transaction: copy what the output needs.  Returns
 * non-zero to stop the iteration (out of memory).
 */

static ngx_uint_t ngx_http_dstack_stats_is_active(
    ngx_http_dstack_service_metrics_t *m, time_t now);


static int
ngx_http_dstack_stats_collect(void *arg, const ds_service_t *svc)
{
    ngx_http_dstack_stats_collect_t *col = arg;

    int                               rc;
    char                              addr[NGX_SOCKADDR_STRLEN];
    size_t                            len;
    uint32_t                          i;
    ds_err_t                          err;
    ds_replica_t                      rep;
    ds_replica_set_t                  set;
    ngx_http_dstack_stats_replica_t  *sr;
    ngx_http_dstack_stats_service_t  *s;

    ngx_http_dstack_service_metrics_t  *m;

    m = ngx_http_dstack_service_metrics(svc->slot, svc->uid);

    if (col->active && !ngx_http_dstack_stats_is_active(m, col->now)) {
        return 0;
    }

    s = ngx_array_push(&col->services);
    if (s == NULL) {
        goto failed;
    }

    s->name.len = svc->name.len;
    s->name.data = ngx_pnalloc(col->r->pool, svc->name.len + 1);
    if (s->name.data == NULL) {
        goto failed;
    }

    ngx_memcpy(s->name.data, svc->name.data, svc->name.len);

    /* escaped once here, not on each of its sixty-odd lines */

    s->prom = s->name;
    len = ngx_http_dstack_stats_prom_escape_len(&s->name);

    if (len != s->name.len) {
        s->prom.data = ngx_pnalloc(col->r->pool, len);
        if (s->prom.data == NULL) {
            goto failed;
        }

        s->prom.len = len;
        (void) ngx_http_dstack_stats_prom_escape(s->prom.data, &s->name);
    }

    s->uid = svc->uid;
    s->slot = svc->slot;
    s->metrics = m;
    s->replica = col->replicas.nelts;
    s->nreplicas = 0;

    rc = ds_get_replicas(col->txn, svc->name.data, svc->name.len, &set,
                         &err);

    if (rc == DS_NOTFOUND) {
        return 0;
    }

    if (rc != DS_OK) {
        ngx_log_error(NGX_LOG_ERR, col->r->connection->log, 0,
                      "dstack stats: replicas of \"%V\": %s",
                      &s->name, err.msg);
        return 0;
    }

    for (i = 0; i < set.count; i++) {
        ds_replica_at(&set, i, &rep);

        sr = ngx_array_push(&col->replicas);
        if (sr == NULL) {
            goto failed;
        }

        len = ds_replica_format_addr(&rep, addr, sizeof(addr));

        sr->addr.len = len;
        sr->addr.data = ngx_pnalloc(col->r->pool, len + 1);
        if (sr->addr.data == NULL) {
            goto failed;
        }

        ngx_memcpy(sr->addr.data, addr, len);

        sr->uid = rep.uid;
        sr->slot = rep.slot;
        sr->version = rep.version;
        sr->state = rep.state;
        sr->metrics = ngx_http_dstack_replica_metrics(rep.slot, rep.uid);

        s->nreplicas++;
    }

    return 0;

failed:

    col->failed = 1;

    return 1;
}


static ngx_buf_t *
ngx_http_dstack_stats_reserve(ngx_http_dstack_stats_out_t *out, size_t n)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = out->buf;

    if (b && (size_t) (b->end - b->last) >= n) {
        return b;
    }

    if (out->free && *out->free
        && (size_t) ((*out->free)->buf->end - (*out->free)->buf->start) >= n)
    {
        /* sent already: ngx_chain_update_chains() emptied it */
        cl = *out->free;
        *out->free = cl->next;
        b = cl->buf;
        b->pos = b->start;
        b->last = b->start;
        b->last_buf = 0;
        b->last_in_chain = 0;
        b->flush = 0;

    } else {
        b = ngx_create_temp_buf(out->pool,
                                ngx_max(n, NGX_HTTP_DSTACK_STATS_BUF));
        if (b == NULL) {
            return NULL;
        }

        b->tag = (ngx_buf_tag_t) &ngx_http_dstack_module;

        cl = ngx_alloc_chain_link(out->pool);
        if (cl == NULL) {
            return NULL;
        }

        cl->buf = b;
    }

    cl->next = NULL;
    out->nbufs++;

    *out->last = cl;
    out->last = &cl->next;
    out->buf = b;

    return b;
}


static void
ngx_http_dstack_stats_read(ngx_http_dstack_stats_service_t *s, time_t now,
    ngx_uint_t windows, ngx_http_dstack_stats_counters_t *c)
{
    ngx_uint_t                          i;
    ngx_http_dstack_service_metrics_t  *m;

    m = s->metrics ? s->metrics : &ngx_http_dstack_stats_no_service;

    /* a stream renders over several turns of the event loop: a slot
     * given to another service meanwhile shows as zero, not as theirs */

    if (__atomic_load_n(&m->uid, __ATOMIC_RELAXED) != s->uid
        && m != &ngx_http_dstack_stats_no_service)
    {
        m = &ngx_http_dstack_stats_no_service;
    }

    c->inflight = __atomic_load_n(&m->inflight, __ATOMIC_RELAXED);

    if (c->inflight < 0) {
        /* a request of a slot's previous owner ended after the takeover */
        c->inflight = 0;
    }

    for (i = 0; i < NGX_HTTP_DSTACK_CLASSES; i++) {
        c->requests[i] = __atomic_load_n(&m->requests[i], __ATOMIC_RELAXED);
    }

    c->time_ms_sum = __atomic_load_n(&m->time_ms_sum, __ATOMIC_RELAXED);

    for (i = 0; i < NGX_HTTP_DSTACK_HIST; i++) {
        c->hist[i] = __atomic_load_n(&m->hist[i], __ATOMIC_RELAXED);
    }

    /* the windows only where they are shown: a walk over the rows */

    if (windows) {
        ngx_http_dstack_metrics_windows(m, now, ngx_http_dstack_stats_seconds,
                                        NGX_HTTP_DSTACK_STATS_NWINDOWS,
                                        c->windows, c->arrivals);
    }

    c->model[0] = __atomic_load_n(&m->model_requests, __ATOMIC_RELAXED);
    c->model[1] = __atomic_load_n(&m->model_errors, __ATOMIC_RELAXED);
    c->model[2] = __atomic_load_n(&m->ttfb_ms_sum, __ATOMIC_RELAXED);
    c->model[3] = __atomic_load_n(&m->prompt_tokens, __ATOMIC_RELAXED);
    c->model[4] = __atomic_load_n(&m->completion_tokens, __ATOMIC_RELAXED);

    c->held = __atomic_load_n(&m->held, __ATOMIC_RELAXED);
    if (c->held < 0) {
        c->held = 0;
    }

    c->held_total = __atomic_load_n(&m->held_total, __ATOMIC_RELAXED);
    c->held_ms_sum = __atomic_load_n(&m->held_ms_sum, __ATOMIC_RELAXED);
    c->hold_timeouts = __atomic_load_n(&m->hold_timeouts, __ATOMIC_RELAXED);
    c->hold_rejected = __atomic_load_n(&m->hold_rejected, __ATOMIC_RELAXED);
    c->cold_starts = __atomic_load_n(&m->cold_starts, __ATOMIC_RELAXED);
    c->cold_start_ms_sum = __atomic_load_n(&m->cold_start_ms_sum,
                                           __ATOMIC_RELAXED);
}


static ngx_int_t
ngx_http_dstack_stats_json(ngx_http_dstack_stats_collect_t *col,
    ngx_http_dstack_stats_out_t *out)
{
    u_char                             *p;
    size_t                              esc;
    time_t                              now;
    int64_t                             inflight;
    ngx_buf_t                          *b;
    ngx_uint_t                          i, j, w, c;
    const char                         *state;
    ngx_http_dstack_stats_replica_t    *replicas, *sr;
    ngx_http_dstack_stats_service_t    *services, *s;
    ngx_http_dstack_replica_metrics_t  *rm;
    ngx_http_dstack_stats_counters_t    cnt;

    now = ngx_time();

    b = ngx_http_dstack_stats_reserve(out, NGX_HTTP_DSTACK_STATS_LINE);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_sprintf(b->last,
                          "{" DS_STATS_KEY(DS_STATS_VERSION) "%d,"
                          DS_STATS_KEY(DS_STATS_TIME) "%T,"
                          DS_STATS_KEY(DS_STATS_SERVICES) "[",
                          DS_STATS_FORMAT, now);

    services = col->services.elts;
    replicas = col->replicas.elts;

    for (i = 0; i < col->services.nelts; i++) {
        s = &services[i];

        ngx_http_dstack_stats_read(s, now, 1, &cnt);

        esc = s->name.len + ngx_escape_json(NULL, s->name.data, s->name.len);

        esc += 16 * NGX_HTTP_DSTACK_STATS_LINE;

        b = ngx_http_dstack_stats_reserve(out, esc);
        if (b == NULL) {
            return NGX_ERROR;
        }

        p = b->last;

        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "{" DS_STATS_KEY(DS_STATS_NAME) "\"",
                       sizeof("{" DS_STATS_KEY(DS_STATS_NAME) "\"") - 1);
        p = (u_char *) ngx_escape_json(p, s->name.data, s->name.len);

        p = ngx_sprintf(p, "\"," DS_STATS_KEY(DS_STATS_UID) "%uL,"
                        DS_STATS_KEY(DS_STATS_SLOT) "%uD,"
                        DS_STATS_KEY(DS_STATS_INFLIGHT) "%L,"
                        DS_STATS_KEY(DS_STATS_REQUESTS) "{",
                        s->uid, s->slot, cnt.inflight);

        for (c = 0; c < NGX_HTTP_DSTACK_CLASSES; c++) {
            p = ngx_sprintf(p, "%s\"%V\":%uL", c ? "," : "",
                            &ngx_http_dstack_stats_classes[c],
                            cnt.requests[c]);
        }

        p = ngx_cpymem(p, "}," DS_STATS_KEY(DS_STATS_WINDOWS) "{",
                       sizeof("}," DS_STATS_KEY(DS_STATS_WINDOWS) "{") - 1);

        for (w = 0; w < NGX_HTTP_DSTACK_STATS_NWINDOWS; w++) {
            p = ngx_sprintf(p, "%s\"%ui\":{" DS_STATS_KEY(DS_STATS_ARRIVALS)
                            "%uL", w ? "," : "",
                            ngx_http_dstack_stats_seconds[w],
                            cnt.arrivals[w]);

            for (c = 0; c < NGX_HTTP_DSTACK_CLASSES; c++) {
                p = ngx_sprintf(p, ",\"%V\":%uL",
                                &ngx_http_dstack_stats_classes[c],
                                cnt.windows[w][c]);
            }

            *p++ = '}';
        }

        p = ngx_sprintf(p, "}," DS_STATS_KEY(DS_STATS_REQUEST_TIME_MS_SUM)
                        "%uL,"
                        DS_STATS_KEY(DS_STATS_HOLD) "{"
                        DS_STATS_KEY(DS_STATS_HELD) "%L,"
                        DS_STATS_KEY(DS_STATS_HELD_TOTAL) "%uL,"
                        DS_STATS_KEY(DS_STATS_HELD_MS_SUM) "%uL,"
                        DS_STATS_KEY(DS_STATS_HOLD_TIMEOUTS) "%uL,"
                        DS_STATS_KEY(DS_STATS_HOLD_REJECTED) "%uL,"
                        DS_STATS_KEY(DS_STATS_COLD_STARTS) "%uL,"
                        DS_STATS_KEY(DS_STATS_COLD_START_MS_SUM) "%uL},"
                        DS_STATS_KEY(DS_STATS_MODEL) "{"
                        DS_STATS_KEY(DS_STATS_MODEL_REQUESTS) "%uL,"
                        DS_STATS_KEY(DS_STATS_MODEL_ERRORS) "%uL,"
                        DS_STATS_KEY(DS_STATS_TTFB_MS_SUM) "%uL,"
                        DS_STATS_KEY(DS_STATS_PROMPT_TOKENS) "%uL,"
                        DS_STATS_KEY(DS_STATS_COMPLETION_TOKENS) "%uL},"
                        DS_STATS_KEY(DS_STATS_REPLICAS) "[",
                        cnt.time_ms_sum, cnt.held, cnt.held_total,
                        cnt.held_ms_sum, cnt.hold_timeouts, cnt.hold_rejected,
                        cnt.cold_starts, cnt.cold_start_ms_sum,
                        cnt.model[0], cnt.model[1], cnt.model[2],
                        cnt.model[3], cnt.model[4]);

        b->last = p;

        for (j = 0; j < s->nreplicas; j++) {
            sr = &replicas[s->replica + j];
            rm = sr->metrics ? sr->metrics : &ngx_http_dstack_stats_no_replica;

            esc = sr->addr.len
                  + ngx_escape_json(NULL, sr->addr.data, sr->addr.len);

            esc += 2 * NGX_HTTP_DSTACK_STATS_LINE;

            b = ngx_http_dstack_stats_reserve(out, esc);
            if (b == NULL) {
                return NGX_ERROR;
            }

            switch (sr->state) {

            case DS_REPLICA_READY:
                state = "ready";
                break;

            case DS_REPLICA_DRAINING:
                state = "draining";
                break;

            default:
                state = "unknown";
            }

            inflight = __atomic_load_n(&rm->inflight, __ATOMIC_RELAXED);

            p = b->last;

            if (j) {
                *p++ = ',';
            }

            p = ngx_cpymem(p, "{" DS_STATS_KEY(DS_STATS_ADDR) "\"",
                           sizeof("{" DS_STATS_KEY(DS_STATS_ADDR) "\"") - 1);
            p = (u_char *) ngx_escape_json(p, sr->addr.data, sr->addr.len);

            p = ngx_sprintf(p, "\"," DS_STATS_KEY(DS_STATS_UID) "%uL,"
                            DS_STATS_KEY(DS_STATS_SLOT) "%uD,"
                            DS_STATS_KEY(DS_STATS_STATE) "\"%s\","
                            DS_STATS_KEY(DS_STATS_REPLICA_VERSION) "%uD,"
                            DS_STATS_KEY(DS_STATS_INFLIGHT) "%L,"
                            DS_STATS_KEY(DS_STATS_REPLICA_REQUESTS) "%uL,"
                            DS_STATS_KEY(DS_STATS_FAILURES) "%uL}",
                            sr->uid, sr->slot, state, sr->version,
                            inflight > 0 ? inflight : (int64_t) 0,
                            __atomic_load_n(&rm->requests, __ATOMIC_RELAXED),
                            __atomic_load_n(&rm->failures, __ATOMIC_RELAXED));

            b->last = p;
        }

        b = ngx_http_dstack_stats_reserve(out, 2);
        if (b == NULL) {
            return NGX_ERROR;
        }

        *b->last++ = ']';
        *b->last++ = '}';
    }

    b = ngx_http_dstack_stats_reserve(out, 3);
    if (b == NULL) {
        return NGX_ERROR;
    }

    *b->last++ = ']';
    *b->last++ = '}';
    *b->last++ = '\n';

    return NGX_OK;
}


/*
 * The text exposition format groups every sample of a family under its
 * HELP and TYPE lines, so the services are walked once per family.  The
 * answer is streamed (chunked): the header first, then
 * ngx_http_dstack_stats_stream() until it is all sent.
 */

static ngx_int_t
ngx_http_dstack_stats_prometheus(ngx_http_request_t *r,
    ngx_http_dstack_stats_collect_t *col)
{
    ngx_int_t                        rc;
    ngx_pool_cleanup_t              *cln;
    ngx_http_dstack_stats_stream_t  *st;

    st = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_stats_stream_t));
    if (st == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->col = *col;
    st->now = ngx_time();
    st->out.pool = r->pool;
    st->out.last = &st->out.first;
    st->out.free = &st->free;

    ngx_str_set(&r->headers_out.content_type, "text/plain; version=0.0.4");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    rc = ngx_http_dstack_stats_stream(r, st);

    if (st->done || rc == NGX_ERROR) {
        /* nginx's writer sends the rest, if any */
        return rc;
    }

    /* the socket is full: go on when it takes more */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    /* found again by its handler: the module's request context is the
     * gateway's, which filters of this module read */
    cln->handler = ngx_http_dstack_stats_stream_cleanup;
    cln->data = st;

    r->main->count++;
    r->write_event_handler = ngx_http_dstack_stats_stream_write;

    ngx_http_dstack_stats_stream_wait(r);

    return NGX_DONE;
}


/*
 * Render up to NGX_HTTP_DSTACK_STATS_SEND_BUFS buffers, send them, again
 * while the socket takes everything.  NGX_ERROR; or, with st->done set,
 * what ngx_http_output_filter() returned for the last buffer; else
 * NGX_AGAIN: wait for the socket.
 */
static ngx_int_t
ngx_http_dstack_stats_stream(ngx_http_request_t *r,
    ngx_http_dstack_stats_stream_t *st)
{
    ngx_int_t     rc;
    ngx_uint_t    n, to, done;
    ngx_chain_t  *cl;

    n = st->col.services.nelts;

    for ( ;; ) {

        while (st->family < NGX_HTTP_DSTACK_PROM_FAMILIES
               && st->out.nbufs < NGX_HTTP_DSTACK_STATS_SEND_BUFS)
        {
            to = ngx_min(st->service + NGX_HTTP_DSTACK_STATS_STEP, n);

            if (ngx_http_dstack_stats_prom_family(&st->col, &st->out,
                                                  st->family, st->now,
                                                  st->service, to)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            st->service = to;

            if (to == n) {
                st->family++;
                st->service = 0;
            }
        }

        done = (st->family == NGX_HTTP_DSTACK_PROM_FAMILIES);

        cl = st->out.first;

        if (cl == NULL) {
            /* nothing rendered (cannot happen: HELP lines) */
            st->done = 1;
            return ngx_http_send_special(r, NGX_HTTP_LAST);
        }

        if (done) {
            st->done = 1;
            st->out.buf->last_buf = (r == r->main) ? 1 : 0;
            st->out.buf->last_in_chain = 1;
        }

        st->out.first = NULL;
        st->out.last = &st->out.first;
        st->out.buf = NULL;
        st->out.nbufs = 0;

        rc = ngx_http_output_filter(r, cl);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        ngx_chain_update_chains(r->pool, &st->free, &st->busy, &cl,
                                (ngx_buf_tag_t) &ngx_http_dstack_module);

        if (done) {
            return rc;
        }

        if (st->busy) {
            return NGX_AGAIN;
        }
    }
}


/* the socket takes more: flush what waits, then render on */
static void
ngx_http_dstack_stats_stream_write(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_chain_t                     *cl;
    ngx_event_t                     *wev;
    ngx_pool_cleanup_t              *cln;
    ngx_http_dstack_stats_stream_t  *st;

    wev = r->connection->write;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, NGX_ETIMEDOUT,
                      "dstack stats: client timed out");
        r->connection->timedout = 1;
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    st = NULL;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_dstack_stats_stream_cleanup) {
            st = cln->data;
            break;
        }
    }

    if (st == NULL) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    rc = ngx_http_output_filter(r, NULL);

    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    cl = NULL;
    ngx_chain_update_chains(r->pool, &st->free, &st->busy, &cl,
                            (ngx_buf_tag_t) &ngx_http_dstack_module);

    if (st->busy == NULL) {
        rc = ngx_http_dstack_stats_stream(r, st);

        if (st->done || rc == NGX_ERROR) {
            ngx_http_finalize_request(r, rc);
            return;
        }
    }

    ngx_http_dstack_stats_stream_wait(r);
}


static void
ngx_http_dstack_stats_stream_wait(ngx_http_request_t *r)
{
    ngx_event_t               *wev;
    ngx_http_core_loc_conf_t  *clcf;

    wev = r->connection->write;
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (!wev->ready) {
        ngx_add_timer(wev, clcf->send_timeout);

    } else if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_ERROR);
    }
}


/* only a marker: the stream's memory is r->pool's */
static void
ngx_http_dstack_stats_stream_cleanup(void *data)
{
}


static ngx_int_t
ngx_http_dstack_stats_prom_family(ngx_http_dstack_stats_collect_t *col,
    ngx_http_dstack_stats_out_t *out, ngx_uint_t family, time_t now,
    ngx_uint_t from, ngx_uint_t to)
{
    u_char                             *p;
    size_t                              nlen, alen;
    int64_t                             inflight;
    uint64_t                            count, cum, value;
    ngx_buf_t                          *b;
    ngx_uint_t                          i, j, k, w, c;
    ngx_http_dstack_stats_replica_t    *replicas, *sr;
    ngx_http_dstack_stats_service_t    *services, *s;
    ngx_http_dstack_replica_metrics_t  *rm;
    ngx_http_dstack_prom_family_t      *pf;
    ngx_http_dstack_stats_counters_t    cnt;

    pf = &ngx_http_dstack_prom_families[family];

    if (from == 0) {
        b = ngx_http_dstack_stats_reserve(out, 2 * pf->name.len
                                          + pf->type.len + pf->help.len + 32);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->last = ngx_sprintf(b->last, "# HELP %V %V\n# TYPE %V %V\n",
                              &pf->name, &pf->help, &pf->name, &pf->type);
    }

    services = col->services.elts;
    replicas = col->replicas.elts;

    for (i = from; i < to; i++) {
        s = &services[i];

        nlen = s->prom.len;

        if (family >= NGX_HTTP_DSTACK_PROM_REPLICA_INFLIGHT) {

            for (j = 0; j < s->nreplicas; j++) {
                sr = &replicas[s->replica + j];
                rm = sr->metrics ? sr->metrics
                                 : &ngx_http_dstack_stats_no_replica;

                switch (family) {

                case NGX_HTTP_DSTACK_PROM_REPLICA_INFLIGHT:
                    inflight = __atomic_load_n(&rm->inflight,
                                               __ATOMIC_RELAXED);
                    value = inflight > 0 ? (uint64_t) inflight : 0;
                    break;

                case NGX_HTTP_DSTACK_PROM_REPLICA_REQUESTS:
                    value = __atomic_load_n(&rm->requests, __ATOMIC_RELAXED);
                    break;

                default: /* NGX_HTTP_DSTACK_PROM_REPLICA_FAILURES */
                    value = __atomic_load_n(&rm->failures, __ATOMIC_RELAXED);
                    break;
                }

                alen = ngx_http_dstack_stats_prom_escape_len(&sr->addr);

                alen += nlen + NGX_HTTP_DSTACK_STATS_LINE;

                b = ngx_http_dstack_stats_reserve(out, alen);
                if (b == NULL) {
                    return NGX_ERROR;
                }

                p = ngx_http_dstack_stats_prom_sample(b->last, &pf->name, "",
                                                      &s->prom);
                p = ngx_cpymem(p, "\",replica=\"",
                               sizeof("\",replica=\"") - 1);
                p = ngx_http_dstack_stats_prom_escape(p, &sr->addr);
                b->last = ngx_sprintf(p, "\"} %uL\n", value);
            }

            continue;
        }

        ngx_http_dstack_stats_read(s, now,
                                   family == NGX_HTTP_DSTACK_PROM_WINDOW,
                                   &cnt);

        b = ngx_http_dstack_stats_reserve(out,
                              pf->lines * (nlen + NGX_HTTP_DSTACK_STATS_LINE));
        if (b == NULL) {
            return NGX_ERROR;
        }

        p = b->last;

        switch (family) {

        case NGX_HTTP_DSTACK_PROM_REQUESTS:

            for (c = 0; c < NGX_HTTP_DSTACK_CLASSES; c++) {
                p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "",
                                                      &s->prom);
                p = ngx_sprintf(p, "\",class=\"%V\"} %uL\n",
                                &ngx_http_dstack_stats_classes[c],
                                cnt.requests[c]);
            }

            break;

        case NGX_HTTP_DSTACK_PROM_INFLIGHT:

            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "", &s->prom);
            p = ngx_sprintf(p, "\"} %L\n", cnt.inflight);

            break;

        case NGX_HTTP_DSTACK_PROM_MODEL_REQUESTS:
        case NGX_HTTP_DSTACK_PROM_MODEL_ERRORS:

            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "", &s->prom);
            p = ngx_sprintf(p, "\"} %uL\n",
                            cnt.model[family
                                      - NGX_HTTP_DSTACK_PROM_MODEL_REQUESTS]);

            break;

        case NGX_HTTP_DSTACK_PROM_MODEL_TTFB:

            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "", &s->prom);
            p = ngx_sprintf(p, "\"} %uL.%03uL\n", cnt.model[2] / 1000,
                            cnt.model[2] % 1000);

            break;

        case NGX_HTTP_DSTACK_PROM_MODEL_TOKENS:

            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "", &s->prom);
            p = ngx_sprintf(p, "\",type=\"prompt\"} %uL\n", cnt.model[3]);
            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "", &s->prom);
            p = ngx_sprintf(p, "\",type=\"completion\"} %uL\n",
                            cnt.model[4]);

            break;

        case NGX_HTTP_DSTACK_PROM_HELD:

            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "", &s->prom);
            p = ngx_sprintf(p, "\"} %L\n", cnt.held);

            break;

        case NGX_HTTP_DSTACK_PROM_HELD_SECONDS:

            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "", &s->prom);
            p = ngx_sprintf(p, "\"} %uL.%03uL\n", cnt.held_ms_sum / 1000,
                            cnt.held_ms_sum % 1000);

            break;

        case NGX_HTTP_DSTACK_PROM_COLD_STARTS:

            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "", &s->prom);
            p = ngx_sprintf(p, "\"} %uL\n", cnt.cold_starts);

            break;

        case NGX_HTTP_DSTACK_PROM_COLD_SECONDS:

            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "", &s->prom);
            p = ngx_sprintf(p, "\"} %uL.%03uL\n",
                            cnt.cold_start_ms_sum / 1000,
                            cnt.cold_start_ms_sum % 1000);

            break;

        case NGX_HTTP_DSTACK_PROM_DURATION:

            /*
             * _count is the completed admitted requests; the buckets are
             * read a moment apart from it, so keep them under it to stay
             * cumulative.  Requests over the last bound are only in +Inf.
             */

            count = 0;
            for (c = 1; c < NGX_HTTP_DSTACK_CLASSES; c++) {
                count += cnt.requests[c];
            }

            cum = 0;

            for (k = 0; k < NGX_HTTP_DSTACK_HIST; k++) {
                cum += cnt.hist[k];

                p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "_bucket",
                                                      &s->prom);
                p = ngx_sprintf(p, "\",le=\"%V\"} %uL\n",
                                &ngx_http_dstack_stats_le[k],
                                ngx_min(cum, count));
            }

            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "_bucket",
                                                  &s->prom);
            p = ngx_sprintf(p, "\",le=\"+Inf\"} %uL\n", count);

            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "_sum",
                                                  &s->prom);
            p = ngx_sprintf(p, "\"} %uL.%03uL\n",
                            cnt.time_ms_sum / 1000, cnt.time_ms_sum % 1000);

            p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "_count",
                                                  &s->prom);
            p = ngx_sprintf(p, "\"} %uL\n", count);

            break;

        default: /* NGX_HTTP_DSTACK_PROM_WINDOW */

            for (w = 0; w < NGX_HTTP_DSTACK_STATS_NWINDOWS; w++) {
                for (c = 0; c < NGX_HTTP_DSTACK_CLASSES; c++) {
                    p = ngx_http_dstack_stats_prom_sample(p, &pf->name, "",
                                                          &s->prom);
                    p = ngx_sprintf(p, "\",window=\"%uis\",class=\"%V\"} "
                                    "%uL\n",
                                    ngx_http_dstack_stats_seconds[w],
                                    &ngx_http_dstack_stats_classes[c],
                                    cnt.windows[w][c]);
                }
            }

            break;
        }

        b->last = p;
    }

    return NGX_OK;
}


/* "<name><suffix>{service=\"<service>": the caller ends the labels;
 * the service escaped already.  Copies, no format: a scrape at 10,000
 * services writes some 650,000 of these. */

static u_char *
ngx_http_dstack_stats_prom_sample(u_char *p, ngx_str_t *name, char *suffix,
    ngx_str_t *service)
{
    p = ngx_cpymem(p, name->data, name->len);

    while (*suffix) {
        *p++ = *suffix++;
    }

    p = ngx_cpymem(p, "{service=\"", sizeof("{service=\"") - 1);

    return ngx_cpymem(p, service->data, service->len);
}


/* label values: backslash, double quote and line feed are escaped */

static size_t
ngx_http_dstack_stats_prom_escape_len(ngx_str_t *s)
{
    size_t      n;
    ngx_uint_t  i;

    n = s->len;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] == '\\' || s->data[i] == '"' || s->data[i] == '\n') {
            n++;
        }
    }

    return n;
}


static u_char *
ngx_http_dstack_stats_prom_escape(u_char *p, ngx_str_t *s)
{
    u_char      ch;
    ngx_uint_t  i;

    for (i = 0; i < s->len; i++) {
        ch = s->data[i];

        switch (ch) {

        case '\\':
        case '"':
            *p++ = '\\';
            *p++ = ch;
            break;

        case '\n':
            *p++ = '\\';
            *p++ = 'n';
            break;

        default:
            *p++ = ch;
        }
    }

    return p;
}

