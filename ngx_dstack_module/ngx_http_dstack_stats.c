/*
 * "dstack_stats json|prometheus": the metrics zone and the services and
 * replicas in state, for controld (JSON, every second) and Prometheus
 * (prom.c).
 *
 * The services and their replica sets are copied out of one read
 * transaction first (names and addresses into a pool), the transaction
 * ends, and only then is the output written: counters are read from the
 * zone at that moment.  The JSON output goes into a chain of buffers
 * from r->pool, so it needs no estimate of its length up front.
 */

#include "ngx_http_dstack_stats.h"
#include "ds_stats_names.h"


static int ngx_http_dstack_stats_collect(void *arg, const ds_service_t *svc);
static ngx_int_t ngx_http_dstack_stats_json(
    ngx_http_dstack_stats_collect_t *col, ngx_http_dstack_stats_out_t *out);
static ngx_int_t ngx_http_dstack_stats_budgets(
    ngx_http_dstack_stats_collect_t *col, ngx_http_dstack_stats_out_t *out);
static ngx_uint_t ngx_http_dstack_stats_is_active(
    ngx_http_dstack_service_metrics_t *m, time_t now);


ngx_uint_t  ngx_http_dstack_stats_seconds[] = { 30, 60, 300 };

ngx_str_t  ngx_http_dstack_stats_classes[] = {
    ngx_string(DS_STATS_REFUSED),
    ngx_string(DS_STATS_1XX),
    ngx_string(DS_STATS_2XX),
    ngx_string(DS_STATS_3XX),
    ngx_string(DS_STATS_4XX),
    ngx_string(DS_STATS_5XX)
};


/* slots over capacity show as zero */
static ngx_http_dstack_service_metrics_t  ngx_http_dstack_stats_no_service;
static ngx_http_dstack_replica_metrics_t  ngx_http_dstack_stats_no_replica;

static u_char *ngx_http_dstack_stats_latency(u_char *p,
    ngx_http_dstack_latency_t *lat, time_t now);


/* what both formats check first: GET or HEAD, no body, "?active=1" */

ngx_int_t
ngx_http_dstack_stats_accept(ngx_http_request_t *r, ngx_uint_t *active)
{
    ngx_str_t  arg;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    *active = (ngx_http_arg(r, (u_char *) "active", 6, &arg) == NGX_OK
               && arg.len == 1 && arg.data[0] == '1');

    return ngx_http_discard_request_body(r);
}


ngx_int_t
ngx_http_dstack_stats_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rv;
    ngx_str_t                         message;
    ngx_uint_t                        active;
    ngx_chain_t                      *cl;
    ngx_http_dstack_stats_out_t       out;
    ngx_http_dstack_stats_collect_t   col;

    rv = ngx_http_dstack_stats_accept(r, &active);

    if (rv != NGX_OK) {
        return rv;
    }

    col.pool = r->pool;
    col.log = r->connection->log;
    col.active = active;
    col.hint[0] = 0;
    col.hint[1] = 0;

    rv = ngx_http_dstack_stats_gather(&col);

    if (rv == NGX_DECLINED) {
        ngx_str_set(&message, "state unavailable");
        return ngx_http_dstack_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "unavailable", NULL, &message);
    }

    if (rv != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
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


ngx_int_t
ngx_http_dstack_stats_gather(ngx_http_dstack_stats_collect_t *col)
{
    int        rc;
    ds_err_t   err;
    ds_txn_t  *txn;

    col->failed = 0;
    col->now = ngx_time();

    /* room for what is expected: an array that doubles leaves each old
     * copy behind in the pool */

    if (ngx_array_init(&col->services, col->pool,
                       ngx_max(col->hint[0], 64),
                       sizeof(ngx_http_dstack_stats_service_t))
        != NGX_OK
        || ngx_array_init(&col->replicas, col->pool,
                          ngx_max(col->hint[1], 256),
                          sizeof(ngx_http_dstack_stats_replica_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    txn = ngx_http_dstack_state_begin(col->log);

    if (txn == NULL) {
        return NGX_DECLINED;
    }

    col->txn = txn;
    col->snapshot = ngx_http_dstack_state_snapshot();

    rc = ds_foreach_service(txn, ngx_http_dstack_stats_collect, col, &err);

    /* shared mode: the revision mirrored, and whether the database is
     * reachable (what the follower beside nginx noted) */
    col->follower = (rc == DS_OK
                     && ds_mirror_rev(txn, &col->follow_rev, &err) == DS_OK
                     && ds_mirror_lost(txn, &col->follow_lost, &err)
                        == DS_OK);

    ngx_http_dstack_state_end();

    if (col->failed) {
        return NGX_ERROR;
    }

    if (rc != DS_OK) {
        ngx_log_error(NGX_LOG_ERR, col->log, 0, "dstack stats: %s", err.msg);
        return NGX_DECLINED;
    }

    return NGX_OK;
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
    s->name.data = ngx_pnalloc(col->pool, svc->name.len + 1);
    if (s->name.data == NULL) {
        goto failed;
    }

    ngx_memcpy(s->name.data, svc->name.data, svc->name.len);

    /* escaped once here, not on each of its sixty-odd lines */

    s->prom = s->name;
    len = ngx_http_dstack_stats_escape_len(&s->name);

    if (len != s->name.len) {
        s->prom.data = ngx_pnalloc(col->pool, len);
        if (s->prom.data == NULL) {
            goto failed;
        }

        s->prom.len = len;
        (void) ngx_http_dstack_stats_escape(s->prom.data, &s->name);
    }

    s->uid = svc->uid;
    s->slot = svc->slot;
    s->model = (svc->model.len > 0);
    s->metrics = m;
    s->replica = col->replicas.nelts;
    s->nreplicas = 0;

    rc = ds_get_replicas(col->txn, svc->name.data, svc->name.len, &set,
                         &err);

    if (rc == DS_NOTFOUND) {
        return 0;
    }

    if (rc != DS_OK) {
        ngx_log_error(NGX_LOG_ERR, col->log, 0,
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
        sr->addr.data = ngx_pnalloc(col->pool, len + 1);
        if (sr->addr.data == NULL) {
            goto failed;
        }

        ngx_memcpy(sr->addr.data, addr, len);

        sr->prom = sr->addr;
        len = ngx_http_dstack_stats_escape_len(&sr->addr);

        if (len != sr->addr.len) {
            sr->prom.data = ngx_pnalloc(col->pool, len);
            if (sr->prom.data == NULL) {
                goto failed;
            }

            sr->prom.len = len;
            (void) ngx_http_dstack_stats_escape(sr->prom.data, &sr->addr);
        }

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


ngx_buf_t *
ngx_http_dstack_stats_reserve(ngx_http_dstack_stats_out_t *out, size_t n)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = out->buf;

    if (b && (size_t) (b->end - b->last) >= n) {
        return b;
    }

    if (out->free && *out->free && (*out->free)->buf->temporary
        && (size_t) ((*out->free)->buf->end - (*out->free)->buf->start) >= n)
    {
        /* sent already: ngx_chain_update_chains() emptied it (only a
         * buffer of our own: prom.c sends cached text in others) */
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


void
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

    /* services without a model have no latency: not a line of it read */

    c->latency = (m == &ngx_http_dstack_stats_no_service || !s->model)
                 ? NULL : ngx_http_dstack_metrics_service_latency(m);

    for (i = 0; i < NGX_HTTP_DSTACK_LAT_KINDS; i++) {
        c->latency_seen[i] = c->latency
            ? __atomic_load_n(&c->latency->samples[i], __ATOMIC_RELAXED)
              + __atomic_load_n(&c->latency->sum_us[i], __ATOMIC_RELAXED)
            : 0;
    }
}


void
ngx_http_dstack_stats_read_replica(ngx_http_dstack_stats_replica_t *sr,
    uint64_t v[NGX_HTTP_DSTACK_STATS_RVALUES])
{
    int64_t                             inflight;
    ngx_http_dstack_replica_metrics_t  *rm;

    rm = sr->metrics ? sr->metrics : &ngx_http_dstack_stats_no_replica;

    inflight = __atomic_load_n(&rm->inflight, __ATOMIC_RELAXED);

    v[0] = inflight > 0 ? (uint64_t) inflight : 0;
    v[1] = __atomic_load_n(&rm->requests, __ATOMIC_RELAXED);
    v[2] = __atomic_load_n(&rm->failures, __ATOMIC_RELAXED);
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
                          DS_STATS_KEY(DS_STATS_TIME) "%T,",
                          DS_STATS_FORMAT, now);

    if (col->follower) {
        b->last = ngx_sprintf(b->last,
                              DS_STATS_KEY(DS_STATS_FOLLOW) "{"
                              DS_STATS_KEY(DS_STATS_FOLLOW_REV) "%uL,"
                              DS_STATS_KEY(DS_STATS_FOLLOW_DATABASE) "\"%s\"",
                              col->follow_rev,
                              col->follow_lost ? "unreachable" : "ok");
        if (col->follow_lost) {
            b->last = ngx_sprintf(b->last,
                                  "," DS_STATS_KEY(DS_STATS_FOLLOW_SINCE) "%uL",
                                  col->follow_lost);
        }
        b->last = ngx_sprintf(b->last, "},");
    }

    b->last = ngx_sprintf(b->last, DS_STATS_KEY(DS_STATS_SERVICES) "[");

    services = col->services.elts;
    replicas = col->replicas.elts;

    for (i = 0; i < col->services.nelts; i++) {
        s = &services[i];

        ngx_http_dstack_stats_read(s, now, 1, &cnt);

        esc = s->name.len + ngx_escape_json(NULL, s->name.data, s->name.len);

        esc += 20 * NGX_HTTP_DSTACK_STATS_LINE;

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
                        DS_STATS_KEY(DS_STATS_COMPLETION_TOKENS) "%uL",
                        cnt.time_ms_sum, cnt.held, cnt.held_total,
                        cnt.held_ms_sum, cnt.hold_timeouts, cnt.hold_rejected,
                        cnt.cold_starts, cnt.cold_start_ms_sum,
                        cnt.model[0], cnt.model[1], cnt.model[2],
                        cnt.model[3], cnt.model[4]);

        if (s->model) {
            *p++ = ',';
            p = ngx_http_dstack_stats_latency(p, cnt.latency, now);
        }

        p = ngx_cpymem(p, "}," DS_STATS_KEY(DS_STATS_REPLICAS) "[",
                       sizeof("}," DS_STATS_KEY(DS_STATS_REPLICAS) "[") - 1);

        b->last = p;

        for (j = 0; j < s->nreplicas; j++) {
            sr = &replicas[s->replica + j];
            rm = sr->metrics ? sr->metrics : &ngx_http_dstack_stats_no_replica;

            esc = sr->addr.len
                  + ngx_escape_json(NULL, sr->addr.data, sr->addr.len);

            esc += 6 * NGX_HTTP_DSTACK_STATS_LINE;

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
                            DS_STATS_KEY(DS_STATS_FAILURES) "%uL",
                            sr->uid, sr->slot, state, sr->version,
                            inflight > 0 ? inflight : (int64_t) 0,
                            __atomic_load_n(&rm->requests, __ATOMIC_RELAXED),
                            __atomic_load_n(&rm->failures, __ATOMIC_RELAXED));

            if (s->model) {
                *p++ = ',';
                p = ngx_http_dstack_stats_latency(p,
                        ngx_http_dstack_metrics_replica_latency(rm), now);
            }

            *p++ = '}';

            b->last = p;
        }

        b = ngx_http_dstack_stats_reserve(out, 2);
        if (b == NULL) {
            return NGX_ERROR;
        }

        *b->last++ = ']';
        *b->last++ = '}';
    }

    b = ngx_http_dstack_stats_reserve(out, 1);
    if (b == NULL) {
        return NGX_ERROR;
    }

    *b->last++ = ']';

    if (ngx_http_dstack_stats_budgets(col, out) != NGX_OK) {
        return NGX_ERROR;
    }

    b = ngx_http_dstack_stats_reserve(out, 2);
    if (b == NULL) {
        return NGX_ERROR;
    }

    *b->last++ = '}';
    *b->last++ = '\n';

    return NGX_OK;
}


/* ,"budgets":[{"token","service","model","requests",...}...] */
static ngx_int_t
ngx_http_dstack_stats_budgets(ngx_http_dstack_stats_collect_t *col,
    ngx_http_dstack_stats_out_t *out)
{
    size_t                           len;
    u_char                          *p;
    ngx_buf_t                       *b;
    ngx_uint_t                       i;
    ngx_array_t                     *entries;
    ngx_http_dstack_budget_entry_t  *e;

    entries = ngx_http_dstack_budget_entries(col->pool);

    b = ngx_http_dstack_stats_reserve(out, 16);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->last, "," DS_STATS_KEY(DS_STATS_BUDGETS) "[",
                         sizeof("," DS_STATS_KEY(DS_STATS_BUDGETS) "[") - 1);

    e = entries ? entries->elts : NULL;

    for (i = 0; entries && i < entries->nelts; i++) {
        len = 2 * (e[i].token.len + e[i].service.len + e[i].model.len)
              + ngx_escape_json(NULL, e[i].token.data, e[i].token.len)
              + ngx_escape_json(NULL, e[i].service.data, e[i].service.len)
              + ngx_escape_json(NULL, e[i].model.data, e[i].model.len)
              + NGX_HTTP_DSTACK_STATS_LINE + 6 * NGX_INT64_LEN;

        b = ngx_http_dstack_stats_reserve(out, len);
        if (b == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(b->last, i ? ",{" : "{", i ? 2 : 1);
        p = ngx_cpymem(p, DS_STATS_KEY(DS_STATS_BUDGET_TOKEN) "\"",
                       sizeof(DS_STATS_KEY(DS_STATS_BUDGET_TOKEN) "\"") - 1);
        p = (u_char *) ngx_escape_json(p, e[i].token.data, e[i].token.len);
        p = ngx_cpymem(p, "\"," DS_STATS_KEY(DS_STATS_BUDGET_SERVICE) "\"",
                       sizeof("\"," DS_STATS_KEY(DS_STATS_BUDGET_SERVICE) "\"")
                       - 1);
        p = (u_char *) ngx_escape_json(p, e[i].service.data,
                                       e[i].service.len);
        p = ngx_cpymem(p, "\"," DS_STATS_KEY(DS_STATS_BUDGET_MODEL) "\"",
                       sizeof("\"," DS_STATS_KEY(DS_STATS_BUDGET_MODEL) "\"")
                       - 1);
        p = (u_char *) ngx_escape_json(p, e[i].model.data, e[i].model.len);
        p = ngx_sprintf(p, "\"," DS_STATS_KEY(DS_STATS_BUDGET_REQUESTS) "%uL,"
                        DS_STATS_KEY(DS_STATS_BUDGET_REFUSED) "%uL,"
                        DS_STATS_KEY(DS_STATS_BUDGET_PROMPT) "%uL,"
                        DS_STATS_KEY(DS_STATS_BUDGET_COMPLETION) "%uL,"
                        DS_STATS_KEY(DS_STATS_BUDGET_DAY) "%uL,"
                        DS_STATS_KEY(DS_STATS_BUDGET_DAY_TOKENS) "%uL}",
                        e[i].usage.requests, e[i].usage.refused,
                        e[i].usage.prompt_tokens,
                        e[i].usage.completion_tokens, e[i].day,
                        e[i].day_tokens);

        b->last = p;
    }

    b = ngx_http_dstack_stats_reserve(out, 1);
    if (b == NULL) {
        return NGX_ERROR;
    }

    *b->last++ = ']';

    return NGX_OK;
}


/*
 * "ttft_ms":{"30":{"p50":150.2,"p99":151.0,"n":12},"60":...},"tpot_ms":
 * {...}: at most 2 * (18 + 3 * 80) bytes
 */
static u_char *
ngx_http_dstack_stats_latency(u_char *p, ngx_http_dstack_latency_t *lat,
    time_t now)
{
    ngx_uint_t                    kind, w;
    ngx_http_dstack_lat_window_t  win[NGX_HTTP_DSTACK_STATS_NWINDOWS], *x;

    for (kind = 0; kind < NGX_HTTP_DSTACK_LAT_KINDS; kind++) {
        ngx_http_dstack_latency_windows(lat, kind, now,
                                        ngx_http_dstack_stats_seconds,
                                        NGX_HTTP_DSTACK_STATS_NWINDOWS, win);

        p = ngx_sprintf(p, "%s\"%s\":{", kind ? "," : "",
                        kind == NGX_HTTP_DSTACK_LAT_TTFT
                        ? DS_STATS_TTFT_MS : DS_STATS_TPOT_MS);

        for (w = 0; w < NGX_HTTP_DSTACK_STATS_NWINDOWS; w++) {
            x = &win[w];
            p = ngx_sprintf(p, "%s\"%ui\":{" DS_STATS_KEY(DS_STATS_P50)
                            "%uL.%uL," DS_STATS_KEY(DS_STATS_P99) "%uL.%uL,"
                            DS_STATS_KEY(DS_STATS_LAT_N) "%uL}",
                            w ? "," : "", ngx_http_dstack_stats_seconds[w],
                            x->p50_us / 1000, x->p50_us % 1000 / 100,
                            x->p99_us / 1000, x->p99_us % 1000 / 100, x->n);
        }

        *p++ = '}';
    }

    return p;
}


/* label values: backslash, double quote and line feed are escaped */

size_t
ngx_http_dstack_stats_escape_len(ngx_str_t *s)
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


u_char *
ngx_http_dstack_stats_escape(u_char *p, ngx_str_t *s)
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
