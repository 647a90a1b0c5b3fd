/*
 * "dstack_balancer": an upstream whose peers are the ready replicas the
 * access phase copied into the request context.
 *
 * The rule: the replica with the fewest requests in flight, counted in
 * shared memory across all workers; among equals, round-robin (each
 * worker starts its scan one position further every time).  A replica
 * already tried by this request is skipped, so a refused or failed
 * connect goes to another one (proxy_next_upstream bounds the tries).
 *
 * A model with affinity routing (its key in the context, openai.c)
 * instead gets consistent hashing with bounded loads: rendezvous
 * hashing over the ready replicas, the weight of a replica a mix of the
 * key and its uid, so that a replica joining or leaving moves only its
 * share of keys; a replica whose in-flight count is above the bound
 * (ds_affinity_bound: c x the mean, rounded up) passes the request to
 * the next by weight.
 *
 * Per-service timeouts replace the location's in a copy of the upstream
 * configuration made in r->pool.  The balancer's state is the request
 * context's: no allocation but the name of each try.
 */

#include "ngx_http_dstack_module.h"


static ngx_int_t ngx_http_dstack_balancer_init(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_dstack_balancer_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_dstack_balancer_get(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_dstack_balancer_free(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static ngx_uint_t ngx_http_dstack_affinity_pick(ngx_http_dstack_ctx_t *ctx);
static void ngx_http_dstack_set_timeouts(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_peer_sockaddr(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_peer_connection_t *pc);
static size_t ngx_http_dstack_inet_text(u_char *p,
    ngx_http_dstack_peer_t *peer);


char *
ngx_http_dstack_balancer(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_url_t                      u;
    ngx_http_upstream_server_t    *us;
    ngx_http_upstream_srv_conf_t  *uscf;

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    if (uscf->peer.init_upstream) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dstack_balancer\" must come first in the "
                           "upstream block (before \"keepalive\" and any "
                           "other balancer)");
        return NGX_CONF_ERROR;
    }

    uscf->peer.init_upstream = ngx_http_dstack_balancer_init;

    /*
     * nginx wants a server in every upstream block; this one is never
     * used: peers come from state, per request.
     */
    ngx_memzero(&u, sizeof(ngx_url_t));
    ngx_str_set(&u.url, "0.0.0.1:1");
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    us = ngx_array_push(uscf->servers);
    if (us == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(us, sizeof(ngx_http_upstream_server_t));
    us->addrs = u.addrs;
    us->naddrs = u.naddrs;
    us->weight = 1;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_dstack_balancer_init(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    us->peer.init = ngx_http_dstack_balancer_init_peer;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_balancer_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_uint_t              n;
    ngx_http_dstack_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_dstack_module);

    if (ctx == NULL || ctx->ready == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack_balancer without replicas: is "
                      "\"dstack_gateway on\" set in this location?");
        return NGX_ERROR;
    }

    ctx->current = NULL;
    ctx->tried_few = 0;

    n = ctx->ready->n;

    if (n <= 64) {
        ctx->tried = (uint8_t *) &ctx->tried_few;

    } else {
        ctx->tried = ngx_pcalloc(r->pool, (n + 7) / 8);
        if (ctx->tried == NULL) {
            return NGX_ERROR;
        }
    }

    r->upstream->peer.data = ctx;
    r->upstream->peer.get = ngx_http_dstack_balancer_get;
    r->upstream->peer.free = ngx_http_dstack_balancer_free;
    r->upstream->peer.tries = n;

    ngx_http_dstack_set_timeouts(r, ctx);

    return NGX_OK;
}


#define ngx_http_dstack_tried(ctx, i)                                         \
    ((ctx)->tried[(i) >> 3] & (1 << ((i) & 7)))

#define ngx_http_dstack_set_tried(ctx, i)                                     \
    (ctx)->tried[(i) >> 3] |= (uint8_t) (1 << ((i) & 7))


static ngx_int_t
ngx_http_dstack_balancer_get(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_dstack_ctx_t  *ctx = data;

    int64_t                  inflight, best_inflight;
    ngx_uint_t               i, k, n, best;
    ngx_http_dstack_peer_t  *peers;

    static ngx_uint_t        rr;
    static ngx_str_t         none = ngx_string("dstack replicas");

    n = ctx->ready->n;
    peers = ctx->ready->peer;

    if (ctx->load_factor) {
        best = ngx_http_dstack_affinity_pick(ctx);
        goto picked;
    }

    best = n;
    best_inflight = INT64_MAX;
    rr++;

    /* one division, not one per replica */

    i = rr % n;

    for (k = 0; k < n; k++, i = (i + 1 == n) ? 0 : i + 1) {

        if (ngx_http_dstack_tried(ctx, i)) {
            continue;
        }

        inflight = peers[i].metrics
                   ? __atomic_load_n(&peers[i].metrics->inflight,
                                     __ATOMIC_RELAXED)
                   : 0;

        if (inflight < best_inflight) {
            best = i;
            best_inflight = inflight;
        }
    }

picked:

    if (best == n) {
        pc->name = &none;
        return NGX_BUSY;
    }

    ngx_http_dstack_set_tried(ctx, best);
    ctx->current = &peers[best];
    ctx->current_metrics = peers[best].metrics;

    if (ctx->current_metrics) {
        __atomic_fetch_add(&ctx->current_metrics->inflight, 1,
                           __ATOMIC_RELAXED);
        __atomic_fetch_add(&ctx->current_metrics->requests, 1,
                           __ATOMIC_RELAXED);
    }

    return ngx_http_dstack_peer_sockaddr(ctx->request, ctx, pc);
}


/*
 * Taking the replicas in decreasing weight and stopping at the first
 * within the bound is taking the heaviest of those within it: one pass
 * for the total in flight, one for the choice, nothing sorted.  When
 * every untried replica is above the bound (counts of other workers
 * moved meanwhile, or the ones within it were tried), the heaviest
 * untried one.  Returns n when every replica was tried.
 */
static ngx_uint_t
ngx_http_dstack_affinity_pick(ngx_http_dstack_ctx_t *ctx)
{
    int64_t                  total, bound, inflight;
    uint64_t                 w, best_w, over_w;
    ngx_uint_t               i, n, best, over;
    ngx_http_dstack_peer_t  *peers;

    n = ctx->ready->n;
    peers = ctx->ready->peer;
    total = 0;

    for (i = 0; i < n; i++) {
        if (peers[i].metrics) {
            total += __atomic_load_n(&peers[i].metrics->inflight,
                                     __ATOMIC_RELAXED);
        }
    }

    bound = ds_affinity_bound(total, n, ctx->load_factor);
    best = n;
    over = n;
    best_w = 0;
    over_w = 0;

    for (i = 0; i < n; i++) {

        if (ngx_http_dstack_tried(ctx, i)) {
            continue;
        }

        w = ds_affinity_weight(ctx->affinity_key, peers[i].uid);
        inflight = peers[i].metrics
                   ? __atomic_load_n(&peers[i].metrics->inflight,
                                     __ATOMIC_RELAXED)
                   : 0;

        if (inflight <= bound) {
            if (best == n || w > best_w) {
                best = i;
                best_w = w;
            }

        } else if (over == n || w > over_w) {
            over = i;
            over_w = w;
        }
    }

    return best != n ? best : over;
}


static void
ngx_http_dstack_balancer_free(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_dstack_ctx_t  *ctx = data;

    ngx_http_dstack_replica_metrics_t  *m;

    if (ctx->current == NULL) {
        return;
    }

    /* not through the peer: by now its line is cold, with traffic over
     * many services */
    m = ctx->current_metrics;
    ctx->current = NULL;
    ctx->current_metrics = NULL;

    if (m) {
        __atomic_fetch_sub(&m->inflight, 1, __ATOMIC_RELAXED);

        if (state & NGX_PEER_FAILED) {
            __atomic_fetch_add(&m->failures, 1, __ATOMIC_RELAXED);
        }
    }

    if (pc->tries) {
        pc->tries--;
    }
}


static void
ngx_http_dstack_set_timeouts(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx)
{
    ngx_http_upstream_t       *u;
    ngx_http_upstream_conf_t  *ucf;

    u = r->upstream;

    if ((ctx->read_timeout == 0 || ctx->read_timeout == u->conf->read_timeout)
        && (ctx->connect_timeout == 0
            || ctx->connect_timeout == u->conf->connect_timeout))
    {
        return;
    }

    ucf = ngx_palloc(r->pool, sizeof(ngx_http_upstream_conf_t));
    if (ucf == NULL) {
        return;     /* the location's timeouts still apply */
    }

    ngx_memcpy(ucf, u->conf, sizeof(ngx_http_upstream_conf_t));

    if (ctx->read_timeout) {
        ucf->read_timeout = ctx->read_timeout;
        ucf->send_timeout = ctx->read_timeout;
    }

    if (ctx->connect_timeout) {
        ucf->connect_timeout = ctx->connect_timeout;
    }

    u->conf = ucf;
}


/*
 * The name is allocated per try, at its length: nginx keeps a pointer to
 * it in the upstream state of each try ($upstream_addr).
 */
static ngx_int_t
ngx_http_dstack_peer_sockaddr(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_peer_connection_t *pc)
{
    size_t                  len;
    u_char                  text[NGX_SOCKADDR_STRLEN];
    ngx_str_t              *name;
    ngx_http_dstack_peer_t *peer = ctx->current;
    ngx_http_dstack_inet_t *sa = &ctx->sockaddr;

    ngx_memzero(sa, sizeof(ngx_http_dstack_inet_t));

#if (NGX_HAVE_INET6)
    if (peer->family == DS_AF_INET6) {
        sa->sockaddr_in6.sin6_family = AF_INET6;
        sa->sockaddr_in6.sin6_port = htons(peer->port);
        ngx_memcpy(&sa->sockaddr_in6.sin6_addr, peer->addr, 16);
        pc->socklen = sizeof(struct sockaddr_in6);

    } else
#endif
    {
        sa->sockaddr_in.sin_family = AF_INET;
        sa->sockaddr_in.sin_port = htons(peer->port);
        ngx_memcpy(&sa->sockaddr_in.sin_addr, peer->addr, 4);
        pc->socklen = sizeof(struct sockaddr_in);
    }

    pc->sockaddr = &sa->sockaddr;

    len = (peer->family == DS_AF_INET6)
          ? ngx_sock_ntop(pc->sockaddr, pc->socklen, text,
                          NGX_SOCKADDR_STRLEN, 1)
          : ngx_http_dstack_inet_text(text, peer);

    name = ngx_palloc(r->pool, sizeof(ngx_str_t) + len);
    if (name == NULL) {
        return NGX_ERROR;
    }

    name->len = len;
    name->data = (u_char *) (name + 1);
    ngx_memcpy(name->data, text, name->len);
    pc->name = name;

    return NGX_OK;
}


/* "a.b.c.d:port", what ngx_sock_ntop() writes, without its printf */
static size_t
ngx_http_dstack_inet_text(u_char *p, ngx_http_dstack_peer_t *peer)
{
    u_char      *start, digits[5];
    ngx_uint_t   i, v, n;

    start = p;

    for (i = 0; i < 5; i++) {
        v = (i < 4) ? peer->addr[i] : peer->port;
        n = 0;

        do {
            digits[n++] = (u_char) ('0' + v % 10);
            v /= 10;
        } while (v);

        while (n) {
            *p++ = digits[--n];
        }

        *p++ = (i < 3) ? '.' : ':';
    }

    return p - 1 - start;
}
