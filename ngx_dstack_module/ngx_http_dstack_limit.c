/*
 * Rate limits of a service (the service file's "rate_limits").
 *
 * The rule whose prefix is the longest prefix of the URI applies; its key
 * is the client address or the value of a request header.  Each (service,
 * rule, key) has a leaky bucket in limit_req's units: "excess" counts the
 * requests above the rate in 1/1000 requests and leaks rps_milli per
 * second; a request that would take it over burst * 1000 is refused
 * without changing the bucket.  Unlike limit_req, the request is added
 * before the leak is clamped at zero, so a bucket that has been idle long
 * enough takes burst + 1 requests at once, as a new one does (limit_req
 * gives a returning client one request less than a new one).  Buckets
 * live in the slab zone "dstack_limits" in an rbtree keyed by crc32 with
 * an LRU queue; idle buckets expire as limit_req's do, and a full zone
 * drops the oldest one.
 */

#include "ngx_http_dstack_module.h"

#include <ngx_sha1.h>


/* header values longer than this are keyed by their SHA-1 */
#define NGX_HTTP_DSTACK_LIMIT_VALUE_MAX  64

/* uid + rule byte + the value or its digest */
#define NGX_HTTP_DSTACK_LIMIT_KEY_MAX    (9 + NGX_HTTP_DSTACK_LIMIT_VALUE_MAX)

/* set in the rule byte when the key bytes are a digest */
#define NGX_HTTP_DSTACK_LIMIT_DIGEST     0x80


/* overlays ngx_rbtree_node_t from its "color" member, as limit_req does */
typedef struct {
    u_char                       color;
    u_char                       dummy;
    u_short                      len;
    uint32_t                     rate;      /* rps_milli, for expiry */
    ngx_queue_t                  queue;
    ngx_msec_t                   last;
    uint64_t                     excess;    /* 1/1000 requests */
    u_char                       data[1];
} ngx_http_dstack_limit_node_t;


static void ngx_http_dstack_limit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static size_t ngx_http_dstack_limit_key(ngx_http_request_t *r,
    const ds_service_t *svc, ngx_uint_t rule, u_char *key);
static ngx_int_t ngx_http_dstack_limit_lookup(ngx_http_dstack_lru_t *ctx,
    const ds_rate_limit_t *rl, uint32_t hash, u_char *key, size_t len,
    time_t *retry_after);
static uint64_t ngx_http_dstack_limit_leak(uint64_t excess, uint32_t rate,
    ngx_msec_int_t ms);
static void ngx_http_dstack_limit_expire(ngx_http_dstack_lru_t *ctx,
    ngx_uint_t n);


ngx_int_t
ngx_http_dstack_limit_zone_init(ngx_conf_t *cf,
    ngx_http_dstack_main_conf_t *dmcf)
{
    ngx_str_t  name = ngx_string("dstack_limits");

    dmcf->limit_zone = ngx_http_dstack_lru_zone(cf, &name,
                           dmcf->limit_zone_size, "dstack_limit_zone",
                           ngx_http_dstack_limit_rbtree_insert_value);

    return dmcf->limit_zone ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_dstack_limit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t             **p;
    ngx_http_dstack_limit_node_t   *ln, *lnt;

    for ( ;; ) {

        if (node->key < temp->key) {

            p = &temp->left;

        } else if (node->key > temp->key) {

            p = &temp->right;

        } else { /* node->key == temp->key */

            ln = (ngx_http_dstack_limit_node_t *) &node->color;
            lnt = (ngx_http_dstack_limit_node_t *) &temp->color;

            p = (ngx_memn2cmp(ln->data, lnt->data, ln->len, lnt->len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


ngx_int_t
ngx_http_dstack_limit(ngx_http_request_t *r, const ds_service_t *svc,
    time_t *retry_after)
{
    size_t                        len, plen;
    u_char                        key[NGX_HTTP_DSTACK_LIMIT_KEY_MAX];
    uint32_t                      hash;
    ngx_int_t                     rc;
    ngx_uint_t                    i, n, rule;
    const ds_rate_limit_t        *rl;
    ngx_http_dstack_lru_t  *ctx;
    ngx_http_dstack_main_conf_t  *dmcf;

    if (svc->n_rate_limits == 0) {
        return NGX_OK;
    }

    /* the longest prefix wins; prefixes are unique in a service */

    n = ngx_min(svc->n_rate_limits, DS_RATE_LIMITS_MAX);
    rl = NULL;
    rule = 0;
    plen = 0;

    for (i = 0; i < n; i++) {
        len = svc->rate_limits[i].prefix.len;

        if (len > r->uri.len || (rl && len <= plen)) {
            continue;
        }

        if (len
            && ngx_strncmp(r->uri.data, svc->rate_limits[i].prefix.data, len)
               != 0)
        {
            continue;
        }

        rl = &svc->rate_limits[i];
        rule = i;
        plen = len;
    }

    /* no rule, or a rate of 0 that validation lets through: no limit */

    if (rl == NULL || rl->rps_milli == 0) {
        return NGX_OK;
    }

    dmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_module);

    if (dmcf->limit_zone == NULL || dmcf->limit_zone->data == NULL) {
        return NGX_OK;
    }

    ctx = dmcf->limit_zone->data;

    len = ngx_http_dstack_limit_key(r, svc, rule, key);
    hash = ngx_crc32_short(key, len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    rc = ngx_http_dstack_limit_lookup(ctx, rl, hash, key, len, retry_after);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack limit zone \"%V\" is full, "
                      "request of \"%*s\" refused",
                      &dmcf->limit_zone->shm.name,
                      (size_t) svc->name.len, svc->name.data);
    }

    return rc;
}


/*
 * service uid (8 bytes, host order) + rule index + the client address
 * bytes or the header value (a missing header is an empty value: all such
 * requests share one bucket); a value too long to keep is replaced by its
 * SHA-1, marked in the rule byte.
 */

static size_t
ngx_http_dstack_limit_key(ngx_http_request_t *r, const ds_service_t *svc,
    ngx_uint_t rule, u_char *key)
{
    u_char                 *p;
    ngx_str_t               value;
    ngx_uint_t              i;
    ngx_sha1_t              sha1;
    ngx_list_part_t        *part;
    ngx_table_elt_t        *h;
    struct sockaddr_in     *sin;
    const ds_rate_limit_t  *rl;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6    *sin6;
#endif

    rl = &svc->rate_limits[rule];

    p = ngx_cpymem(key, &svc->uid, sizeof(svc->uid));
    *p = (u_char) rule;

    ngx_str_null(&value);

    if (rl->key_type == DS_RL_KEY_HEADER) {

        part = &r->headers_in.headers.part;
        h = part->elts;

        for (i = 0; /* void */ ; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }

                part = part->next;
                h = part->elts;
                i = 0;
            }

            if (h[i].hash == 0 || h[i].key.len != rl->header.len) {
                continue;
            }

            if (ngx_strncasecmp(h[i].key.data, (u_char *) rl->header.data,
                                rl->header.len)
                == 0)
            {
                value = h[i].value;
                break;
            }
        }

        if (value.len > NGX_HTTP_DSTACK_LIMIT_VALUE_MAX) {
            *p++ |= NGX_HTTP_DSTACK_LIMIT_DIGEST;

            ngx_sha1_init(&sha1);
            ngx_sha1_update(&sha1, value.data, value.len);
            ngx_sha1_final(p, &sha1);

            return p + 20 - key;
        }

        p++;

        if (value.len) {
            /* no memcpy() from the NULL of a missing header */
            p = ngx_cpymem(p, value.data, value.len);
        }

        return p - key;
    }

    /* DS_RL_KEY_IP */

    p++;

    switch (r->connection->sockaddr->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) r->connection->sockaddr;
        p = ngx_cpymem(p, &sin->sin_addr, sizeof(struct in_addr));
        break;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) r->connection->sockaddr;
        p = ngx_cpymem(p, &sin6->sin6_addr, sizeof(struct in6_addr));
        break;
#endif

    default:
        /* unix sockets: one shared bucket */
        break;
    }

    return p - key;
}


/* called with the zone mutex held */

static ngx_int_t
ngx_http_dstack_limit_lookup(ngx_http_dstack_lru_t *ctx,
    const ds_rate_limit_t *rl, uint32_t hash, u_char *key, size_t len,
    time_t *retry_after)
{
    size_t                         size;
    uint64_t                       excess, burst, over;
    ngx_int_t                      rc;
    ngx_msec_t                     now;
    ngx_msec_int_t                 ms;
    ngx_rbtree_node_t             *node, *sentinel;
    ngx_http_dstack_limit_node_t  *ln;

    now = ngx_current_msec;
    burst = (uint64_t) rl->burst * 1000;

    node = ctx->sh->rbtree.root;
    sentinel = ctx->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        ln = (ngx_http_dstack_limit_node_t *) &node->color;

        rc = ngx_memn2cmp(key, ln->data, len, (size_t) ln->len);

        if (rc == 0) {
            ngx_queue_remove(&ln->queue);
            ngx_queue_insert_head(&ctx->sh->queue, &ln->queue);

            ms = (ngx_msec_int_t) (now - ln->last);

            if (ms < -60000) {
                ms = 1;

            } else if (ms < 0) {
                ms = 0;
            }

            excess = ngx_http_dstack_limit_leak(ln->excess + 1000,
                                                rl->rps_milli, ms);

            if (excess > burst) {

                /* time until the bucket leaks enough to take one more */

                over = excess - burst;
                *retry_after = (time_t) ((over + rl->rps_milli - 1)
                                         / rl->rps_milli);

                if (*retry_after < 1) {
                    *retry_after = 1;
                }

                return NGX_BUSY;
            }

            ln->excess = excess;
            ln->rate = rl->rps_milli;

            if (ms) {
                ln->last = now;
            }

            return NGX_OK;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    /* a new key: its first request passes, as with limit_req */

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_dstack_limit_node_t, data)
           + len;

    ngx_http_dstack_limit_expire(ctx, 1);

    node = ngx_slab_alloc_locked(ctx->shpool, size);

    if (node == NULL) {
        ngx_http_dstack_limit_expire(ctx, 0);

        node = ngx_slab_alloc_locked(ctx->shpool, size);
        if (node == NULL) {
            return NGX_ERROR;
        }
    }

    node->key = hash;

    ln = (ngx_http_dstack_limit_node_t *) &node->color;

    ln->len = (u_short) len;
    ln->rate = rl->rps_milli;
    ln->last = now;
    ln->excess = 0;

    ngx_memcpy(ln->data, key, len);

    ngx_rbtree_insert(&ctx->sh->rbtree, node);

    ngx_queue_insert_head(&ctx->sh->queue, &ln->queue);

    return NGX_OK;
}


/* excess less what `rate` leaks in `ms`, without overflow */

static uint64_t
ngx_http_dstack_limit_leak(uint64_t excess, uint32_t rate, ngx_msec_int_t ms)
{
    uint64_t  leak;

    if (ms > 0xffffffffLL) {
        ms = 0xffffffffLL;
    }

    /* rate < 2^32 and ms < 2^32: the product fits */
    leak = (uint64_t) rate * (uint64_t) ms / 1000;

    return (excess > leak) ? excess - leak : 0;
}


/*
 * n == 1 deletes one or two idle buckets that have leaked empty (as if
 * nothing had been asked of them);
 * n == 0 deletes the oldest bucket by force, then as n == 1.
 * Called with the zone mutex held.
 */

static void
ngx_http_dstack_limit_expire(ngx_http_dstack_lru_t *ctx, ngx_uint_t n)
{
    ngx_msec_t                     now;
    ngx_queue_t                   *q;
    ngx_msec_int_t                 ms;
    ngx_rbtree_node_t             *node;
    ngx_http_dstack_limit_node_t  *ln;

    now = ngx_current_msec;

    while (n < 3) {

        if (ngx_queue_empty(&ctx->sh->queue)) {
            return;
        }

        q = ngx_queue_last(&ctx->sh->queue);

        ln = ngx_queue_data(q, ngx_http_dstack_limit_node_t, queue);

        if (n++ != 0) {

            ms = (ngx_msec_int_t) (now - ln->last);
            ms = ngx_abs(ms);

            if (ms < 60000) {
                return;
            }

            if (ngx_http_dstack_limit_leak(ln->excess + 1000, ln->rate, ms)
                > 0)
            {
                return;
            }
        }

        ngx_queue_remove(q);

        node = (ngx_rbtree_node_t *)
                   ((u_char *) ln - offsetof(ngx_rbtree_node_t, color));

        ngx_rbtree_delete(&ctx->sh->rbtree, node);

        ngx_slab_free_locked(ctx->shpool, node);
    }
}
