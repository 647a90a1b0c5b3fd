/*
 * Scale from zero: a request for a service that has no ready replica but
 * may start one (DS_SERVICE_HOLD) waits inside nginx instead of getting
 * a 503.
 *
 *   - The depth of the wait is counted per service across workers in
 *     shared memory; past hold_max the request gets 429 and Retry-After.
 *   - controld hears of it at once: a datagram "hold <run>\n" to the
 *     dstack_notify socket, sent without blocking on the first held
 *     request and then at most once a second per service while requests
 *     wait (it also sees "held" in the stats).
 *   - Each worker polls LMDB every dstack_hold_poll (10 ms) while it has
 *     held requests, one lookup per service per poll, and sends them on
 *     the moment a replica of their service is ready.
 *   - A request that waited hold_timeout gets 503 and Retry-After; a
 *     client that goes away frees its place (nginx's test_reading ends
 *     the request, and the pool cleanup takes it out of the queue).
 *
 * The held request is parked the way limit_req delays one: the access
 * handler returns NGX_AGAIN, the connection's write event carries the
 * timeout, and the phases run again when it is resumed.
 */

#include "ngx_http_dstack_module.h"

#include <sys/un.h>


#define NGX_HTTP_DSTACK_HOLD_CACHE   16      /* services looked up a poll */
#define NGX_HTTP_DSTACK_NOTIFY_EVERY 1000    /* ms between notices */


typedef struct {
    ngx_queue_t              queue;         /* held requests */
    ngx_event_t              poll;
    ngx_connection_t         poll_conn;     /* timers' debug log reads fd */
    ngx_msec_t               interval;
    ngx_socket_t             notify_fd;
    struct sockaddr_un       notify_addr;
    socklen_t                notify_len;
} ngx_http_dstack_holder_t;

typedef struct {
    uint64_t                 uid;
    ngx_uint_t               ready;
} ngx_http_dstack_hold_seen_t;


static void ngx_http_dstack_hold_park(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
static void ngx_http_dstack_hold_leave(ngx_http_dstack_ctx_t *ctx,
    ngx_uint_t served);
static void ngx_http_dstack_hold_expired(ngx_http_request_t *r);
static void ngx_http_dstack_hold_poll(ngx_event_t *ev);
static ngx_uint_t ngx_http_dstack_hold_ready(ds_txn_t *txn,
    ngx_http_dstack_ctx_t *ctx, ngx_http_dstack_hold_seen_t *seen,
    ngx_uint_t *nseen);
static void ngx_http_dstack_hold_resume(ngx_http_dstack_ctx_t *ctx);
static void ngx_http_dstack_hold_notify(ngx_http_dstack_ctx_t *ctx);


static ngx_http_dstack_holder_t  ngx_http_dstack_holder;


ngx_int_t
ngx_http_dstack_hold_init_worker(ngx_cycle_t *cycle)
{
    ngx_http_dstack_holder_t     *h = &ngx_http_dstack_holder;
    ngx_http_dstack_main_conf_t  *dmcf;

    dmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_dstack_module);

    ngx_queue_init(&h->queue);

    h->interval = dmcf->hold_poll;
    h->poll_conn.fd = (ngx_socket_t) -1;
    h->poll.data = &h->poll_conn;
    h->poll.handler = ngx_http_dstack_hold_poll;
    h->poll.log = cycle->log;
    h->poll.cancelable = 1;
    h->notify_fd = (ngx_socket_t) -1;

    if (dmcf->notify.len == 0) {
        return NGX_OK;
    }

    if (dmcf->notify.len >= sizeof(h->notify_addr.sun_path)) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "dstack_notify path \"%V\" is too long", &dmcf->notify);
        return NGX_OK;
    }

    h->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                          0);
    if (h->notify_fd == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, ngx_socket_errno,
                      "dstack_notify: socket() failed");
        return NGX_OK;
    }

    h->notify_addr.sun_family = AF_UNIX;
    ngx_memcpy(h->notify_addr.sun_path, dmcf->notify.data, dmcf->notify.len);
    h->notify_len = offsetof(struct sockaddr_un, sun_path)
                    + dmcf->notify.len + 1;

    return NGX_OK;
}


ngx_int_t
ngx_http_dstack_hold(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx)
{
    int64_t                       held;
    uint64_t                      zero;
    ngx_str_t                     reason;
    ngx_http_dstack_main_conf_t  *dmcf;
    ngx_http_dstack_service_metrics_t  *m;

    m = ctx->metrics;

    if (ctx->holding) {
        /* resumed, but the replica went away again: wait on */
        ngx_http_dstack_hold_park(r, ctx);
        return NGX_AGAIN;
    }

    held = m ? __atomic_add_fetch(&m->held, 1, __ATOMIC_RELAXED) : 1;

    if ((uint64_t) held > ctx->hold_max) {
        if (m) {
            __atomic_fetch_sub(&m->held, 1, __ATOMIC_RELAXED);
            __atomic_fetch_add(&m->hold_rejected, 1, __ATOMIC_RELAXED);
        }

        dmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_module);
        ngx_str_set(&reason, "too many requests are waiting for the service "
                             "to start");
        return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                                      &reason, dmcf->retry_after);
    }

    if (ctx->held == NULL) {
        /* the context's pool cleanup takes it out of the queue */
        ctx->held = ngx_palloc(r->pool, sizeof(ngx_http_dstack_held_t));

        if (ctx->held == NULL) {
            if (m) {
                __atomic_fetch_sub(&m->held, 1, __ATOMIC_RELAXED);
            }
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_queue_init(&ctx->held->queue);
        ctx->held->ctx = ctx;
    }

    ctx->holding = 1;
    ctx->held->since = ngx_current_msec;

    if (m) {
        __atomic_fetch_add(&m->held_total, 1, __ATOMIC_RELAXED);

        /* the first of a cold start: time-to-ready counts from here */
        zero = 0;
        (void) __atomic_compare_exchange_n(&m->hold_since, &zero,
                                           (uint64_t) ngx_current_msec, 0,
                                           __ATOMIC_RELAXED,
                                           __ATOMIC_RELAXED);
    }

    ngx_http_dstack_hold_notify(ctx);
    ngx_http_dstack_hold_park(r, ctx);

    return NGX_AGAIN;
}


static void
ngx_http_dstack_hold_park(ngx_http_request_t *r, ngx_http_dstack_ctx_t *ctx)
{
    ngx_msec_t                 waited;
    ngx_event_t               *wev;
    ngx_http_dstack_holder_t  *h = &ngx_http_dstack_holder;

    ngx_queue_insert_tail(&h->queue, &ctx->held->queue);

    waited = ngx_current_msec - ctx->held->since;

    wev = r->connection->write;
    wev->delayed = 1;
    ngx_add_timer(wev, ctx->hold_timeout > waited
                       ? ctx->hold_timeout - waited : 1);

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_dstack_hold_expired;

    if (!h->poll.timer_set) {
        ngx_add_timer(&h->poll, h->interval);
    }
}


/* out of the queue and the shared count; served: a replica came */
static void
ngx_http_dstack_hold_leave(ngx_http_dstack_ctx_t *ctx, ngx_uint_t served)
{
    uint64_t                            since;
    ngx_msec_t                          now;
    ngx_http_dstack_service_metrics_t  *m;

    if (!ctx->holding) {
        return;
    }

    ctx->holding = 0;

    /* debug builds of nginx clear the links on removal: re-init */
    if (ngx_queue_next(&ctx->held->queue)
        && ngx_queue_prev(&ctx->held->queue))
    {
        ngx_queue_remove(&ctx->held->queue);
    }

    ngx_queue_init(&ctx->held->queue);

    m = ctx->metrics;
    if (m == NULL) {
        return;
    }

    now = ngx_current_msec;

    __atomic_fetch_sub(&m->held, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&m->held_ms_sum, now - ctx->held->since,
                       __ATOMIC_RELAXED);

    if (!served) {
        return;
    }

    since = __atomic_exchange_n(&m->hold_since, 0, __ATOMIC_RELAXED);

    if (since) {
        __atomic_fetch_add(&m->cold_starts, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&m->cold_start_ms_sum, now - since,
                           __ATOMIC_RELAXED);
    }
}


/* the request ended while it waited: the client went away, or an error */
void
ngx_http_dstack_hold_release(ngx_http_dstack_ctx_t *ctx)
{
    ngx_http_dstack_hold_leave(ctx, 0);
}


static void
ngx_http_dstack_hold_expired(ngx_http_request_t *r)
{
    ngx_str_t                     reason;
    ngx_event_t                  *wev;
    ngx_http_dstack_ctx_t        *ctx;
    ngx_http_dstack_main_conf_t  *dmcf;

    wev = r->connection->write;

    if (wev->delayed) {
        /* a write event, not our timer */
        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_dstack_module);

    ngx_http_dstack_hold_leave(ctx, 0);

    if (ctx->metrics) {
        __atomic_fetch_add(&ctx->metrics->hold_timeouts, 1,
                           __ATOMIC_RELAXED);
    }

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    dmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_module);
    ngx_str_set(&reason, "the service did not start in time");

    (void) ngx_http_dstack_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  &reason, dmcf->retry_after);
}


static void
ngx_http_dstack_hold_poll(ngx_event_t *ev)
{
    ds_txn_t                     *txn;
    ngx_uint_t                    nseen;
    ngx_queue_t                  *q, *next, ready;
    ngx_http_dstack_ctx_t        *ctx;
    ngx_http_dstack_held_t       *held;
    ngx_http_dstack_holder_t     *h = &ngx_http_dstack_holder;
    ngx_http_dstack_hold_seen_t   seen[NGX_HTTP_DSTACK_HOLD_CACHE];

    if (ngx_queue_empty(&h->queue)) {
        return;
    }

    ngx_queue_init(&ready);
    nseen = 0;

    txn = ngx_http_dstack_state_begin(ev->log);

    if (txn) {
        for (q = ngx_queue_head(&h->queue);
             q != ngx_queue_sentinel(&h->queue);
             q = next)
        {
            next = ngx_queue_next(q);
            held = ngx_queue_data(q, ngx_http_dstack_held_t, queue);
            ctx = held->ctx;

            if (ngx_http_dstack_hold_ready(txn, ctx, seen, &nseen)) {
                ngx_queue_remove(q);
                ngx_queue_insert_tail(&ready, q);

            } else {
                ngx_http_dstack_hold_notify(ctx);
            }
        }

        ngx_http_dstack_state_end();
    }

    /* resumed requests run the phases, which may touch the queue */
    while (!ngx_queue_empty(&ready)) {
        q = ngx_queue_head(&ready);
        ngx_queue_remove(q);
        ngx_queue_init(q);
        held = ngx_queue_data(q, ngx_http_dstack_held_t, queue);
        ngx_http_dstack_hold_resume(held->ctx);
    }

    /* on, even in a worker that is shutting down: held requests keep it */
    if (!ngx_queue_empty(&h->queue)) {
        ngx_add_timer(&h->poll, h->interval);
    }
}


/* whether the request's service has a ready replica (or is gone, which
 * the resumed request reports itself); one lookup per service a poll */
static ngx_uint_t
ngx_http_dstack_hold_ready(ds_txn_t *txn, ngx_http_dstack_ctx_t *ctx,
    ngx_http_dstack_hold_seen_t *seen, ngx_uint_t *nseen)
{
    uint32_t          i;
    ngx_uint_t        k, ready;
    ds_err_t          err;
    ds_replica_t      rep;
    ds_replica_set_t  set;

    for (k = 0; k < *nseen; k++) {
        if (seen[k].uid == ctx->service_uid) {
            return seen[k].ready;
        }
    }

    ready = 0;

    switch (ds_get_replicas(txn, (char *) ctx->service.data,
                            ctx->service.len, &set, &err))
    {
    case DS_OK:
        for (i = 0; i < set.count; i++) {
            ds_replica_at(&set, i, &rep);
            if (rep.state == DS_REPLICA_READY) {
                ready = 1;
                break;
            }
        }
        break;

    case DS_NOTFOUND:
        break;

    default:
        ready = 1;      /* let the request report the error */
    }

    if (*nseen < NGX_HTTP_DSTACK_HOLD_CACHE) {
        seen[*nseen].uid = ctx->service_uid;
        seen[*nseen].ready = ready;
        (*nseen)++;
    }

    return ready;
}


static void
ngx_http_dstack_hold_resume(ngx_http_dstack_ctx_t *ctx)
{
    ngx_event_t         *wev;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    ngx_http_dstack_hold_leave(ctx, 1);

    wev = c->write;
    wev->delayed = 0;

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ctx->resumed = 1;

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/* "hold <run>\n" to controld, at most once a second per service */
static void
ngx_http_dstack_hold_notify(ngx_http_dstack_ctx_t *ctx)
{
    u_char                     buf[DS_NAME_MAX + 8], *p;
    uint64_t                   last, now;
    ngx_http_dstack_holder_t  *h = &ngx_http_dstack_holder;

    if (h->notify_fd == (ngx_socket_t) -1) {
        return;
    }

    now = ngx_current_msec;

    if (ctx->metrics) {
        last = __atomic_load_n(&ctx->metrics->notified, __ATOMIC_RELAXED);

        if (last && now - last < NGX_HTTP_DSTACK_NOTIFY_EVERY) {
            return;
        }

        if (!__atomic_compare_exchange_n(&ctx->metrics->notified, &last, now,
                                         0, __ATOMIC_RELAXED,
                                         __ATOMIC_RELAXED))
        {
            return;     /* another worker just sent it */
        }
    }

    p = ngx_cpymem(buf, "hold ", 5);
    p = ngx_cpymem(p, ctx->service.data,
                   ngx_min(ctx->service.len, DS_NAME_MAX));
    *p++ = '\n';

    /* controld may be down or busy: never wait, never fail the request */
    (void) sendto(h->notify_fd, buf, p - buf, MSG_DONTWAIT | MSG_NOSIGNAL,
                  (struct sockaddr *) &h->notify_addr, h->notify_len);
}
