/*
 * Per-service and per-replica metrics in shared memory.
 *
 * The zone "dstack_metrics" holds one fixed-layout allocation: a header,
 * max_services service slots, then max_replicas replica slots.  The writer
 * (controld) assigns every service and replica a slot; the module indexes
 * the arrays with it and checks the slot's owner uid, so there is no
 * lookup and no allocation on the hot path.  Counters are updated with
 * relaxed __atomic operations by all workers at once; the zone mutex is
 * taken only when a slot changes owner and when a 1-second bucket starts
 * a new second, i.e. about once per second per service.
 *
 * nginx lays a slab pool over every shared zone (ngx_init_zone_pool), so
 * the layout is one slab allocation of whole pages and the zone mutex is
 * the slab pool's.  The zone survives "nginx -s reload" as long as its
 * size and capacities stay the same; a reload that changes them gets a
 * fresh zone (see ngx_http_dstack_metrics_zone_init).
 */

#include "ngx_http_dstack_module.h"


#define NGX_HTTP_DSTACK_METRICS_MAGIC    0x4d545344    /* "DSTM" */
#define NGX_HTTP_DSTACK_METRICS_LAYOUT   3    /* 2: buckets in rows,
                                                 3: latency records */


typedef struct {
    uint32_t                            magic;
    uint32_t                            layout;
    uint32_t                            max_services;
    uint32_t                            max_replicas;
    uint32_t                            service_size;
    uint32_t                            replica_size;
    uint64_t                            created;    /* unix seconds */
} ngx_http_dstack_metrics_header_t;

/* per cycle, in process memory: shm_zone->data */
typedef struct {
    ngx_http_dstack_metrics_header_t   *hdr;
    ngx_http_dstack_service_metrics_t  *services;
    ngx_http_dstack_replica_metrics_t  *replicas;
    ngx_http_dstack_bucket_t           *buckets;    /* [second][slot] */
    ngx_http_dstack_latency_t          *service_latency;   /* [slot] */
    ngx_http_dstack_latency_t          *replica_latency;   /* [slot] */
    size_t                              zeroed;     /* what init zeroes */
    ngx_uint_t                          max_services;
    ngx_uint_t                          max_replicas;
    size_t                              size;       /* of the layout */
    ngx_slab_pool_t                    *shpool;
} ngx_http_dstack_metrics_ctx_t;

static size_t ngx_http_dstack_metrics_layout_size(ngx_uint_t max_services,
    ngx_uint_t max_replicas);
static ngx_int_t ngx_http_dstack_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_dstack_metrics_set_layout(
    ngx_http_dstack_metrics_ctx_t *ctx, u_char *p);
static ngx_http_dstack_metrics_ctx_t *ngx_http_dstack_metrics_ctx(void);
static ngx_http_dstack_bucket_t *ngx_http_dstack_metrics_bucket(
    ngx_http_dstack_metrics_ctx_t *mctx, ngx_http_dstack_service_metrics_t *m,
    time_t now);
static void ngx_http_dstack_metrics_reset_buckets(
    ngx_http_dstack_metrics_ctx_t *ctx, ngx_http_dstack_service_metrics_t *m);


/* upper bounds of the request time histogram, in milliseconds; stats.c
 * prints the same bounds in seconds */
static ngx_msec_t  ngx_http_dstack_hist_bounds[NGX_HTTP_DSTACK_HIST] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 60000
};


ngx_int_t
ngx_http_dstack_metrics_zone_init(ngx_conf_t *cf,
    ngx_http_dstack_main_conf_t *dmcf)
{
    size_t                          size, meta;
    ngx_str_t                       name = ngx_string("dstack_metrics");
    ngx_uint_t                      i, pages;
    ngx_shm_zone_t                 *shm_zone, *oshm_zone;
    ngx_list_part_t                *part;
    ngx_http_dstack_metrics_ctx_t  *ctx, *octx;

    if (dmcf->max_services > DS_SERVICE_SLOTS_MAX
        || dmcf->max_replicas > DS_REPLICA_SLOTS_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "dstack capacity %ui services, %ui replicas is "
                           "over the maximum %d, %d",
                           dmcf->max_services, dmcf->max_replicas,
                           DS_SERVICE_SLOTS_MAX, DS_REPLICA_SLOTS_MAX);
        return NGX_ERROR;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_metrics_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->max_services = dmcf->max_services;
    ctx->max_replicas = dmcf->max_replicas;
    ctx->size = ngx_http_dstack_metrics_layout_size(ctx->max_services,
                                                    ctx->max_replicas);
    ctx->zeroed = ctx->size
                  - (ctx->max_services + ctx->max_replicas)
                    * sizeof(ngx_http_dstack_latency_t);

    /*
     * The layout is one slab allocation of whole pages; add what
     * ngx_slab_init() takes for itself: the pool header, slot lists and
     * stats, one ngx_slab_page_t per page, and alignment to a page.
     */

    pages = ngx_align(ctx->size, ngx_pagesize) / ngx_pagesize;

    meta = sizeof(ngx_slab_pool_t)
           + 16 * (sizeof(ngx_slab_page_t) + sizeof(ngx_slab_stat_t))
           + (pages + 16) * sizeof(ngx_slab_page_t);

    size = (pages + ngx_align(meta, ngx_pagesize) / ngx_pagesize + 2)
           * ngx_pagesize;

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_dstack_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    if (shm_zone->data) {
        /* declared twice in one configuration: same sizes, same zone */
        dmcf->metrics_zone = shm_zone;
        return NGX_OK;
    }

    /*
     * nginx reuses a zone over a reload when name, tag and size match.
     * Different capacities can round up to the same size; the old
     * workers still write with the old layout then, so such a zone must
     * not be reused: mark both so that nginx maps a new one and frees
     * the old one once the old workers are gone.
     */

    part = &cf->cycle->old_cycle->shared_memory.part;
    oshm_zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }
            part = part->next;
            oshm_zone = part->elts;
            i = 0;
        }

        if (oshm_zone[i].tag != &ngx_http_dstack_module
            || oshm_zone[i].shm.size != size
            || oshm_zone[i].shm.name.len != name.len
            || ngx_strncmp(oshm_zone[i].shm.name.data, name.data, name.len)
               != 0
            || oshm_zone[i].data == NULL)
        {
            continue;
        }

        octx = oshm_zone[i].data;

        if (octx->max_services != ctx->max_services
            || octx->max_replicas != ctx->max_replicas)
        {
            ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                               "dstack capacity changed, metrics restart "
                               "from zero");
            shm_zone->noreuse = 1;
            oshm_zone[i].noreuse = 1;
        }

        break;
    }

    shm_zone->init = ngx_http_dstack_metrics_init_zone;
    shm_zone->data = ctx;

    dmcf->metrics_zone = shm_zone;

    return NGX_OK;
}


static size_t
ngx_http_dstack_metrics_layout_size(ngx_uint_t max_services,
    ngx_uint_t max_replicas)
{
    return ngx_align(sizeof(ngx_http_dstack_metrics_header_t), 128)
           + max_services * sizeof(ngx_http_dstack_service_metrics_t)
           + ngx_align(max_replicas
                       * sizeof(ngx_http_dstack_replica_metrics_t), 64)
           + ngx_align(NGX_HTTP_DSTACK_WINDOW * max_services
                       * sizeof(ngx_http_dstack_bucket_t), 64)
           + (max_services + max_replicas)
             * sizeof(ngx_http_dstack_latency_t);
}


static ngx_int_t
ngx_http_dstack_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_dstack_metrics_ctx_t  *octx = data;

    u_char                            *p;
    ngx_http_dstack_metrics_ctx_t     *ctx;
    ngx_http_dstack_metrics_header_t  *hdr;

    ctx = shm_zone->data;
    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (octx) {
        hdr = octx->hdr;

        /* zone_init() made sure of this; check rather than trust */

        if (hdr == NULL
            || hdr->magic != NGX_HTTP_DSTACK_METRICS_MAGIC
            || hdr->layout != NGX_HTTP_DSTACK_METRICS_LAYOUT
            || hdr->max_services != ctx->max_services
            || hdr->max_replicas != ctx->max_replicas)
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "dstack metrics zone \"%V\" has another layout",
                          &shm_zone->shm.name);
            return NGX_ERROR;
        }

        ngx_http_dstack_metrics_set_layout(ctx, (u_char *) hdr);

        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        /* Windows: attached to the master's zone */
        ngx_http_dstack_metrics_set_layout(ctx, ctx->shpool->data);
        return NGX_OK;
    }

    p = ngx_slab_alloc(ctx->shpool, ctx->size);
    if (p == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "dstack metrics zone \"%V\" is too small for %uz bytes",
                      &shm_zone->shm.name, ctx->size);
        return NGX_ERROR;
    }

    /* the latency records are left as the fresh mapping has them, zero:
     * the pages of slots never used are never touched */
    ngx_memzero(p, ctx->zeroed);

    hdr = (ngx_http_dstack_metrics_header_t *) p;

    hdr->magic = NGX_HTTP_DSTACK_METRICS_MAGIC;
    hdr->layout = NGX_HTTP_DSTACK_METRICS_LAYOUT;
    hdr->max_services = (uint32_t) ctx->max_services;
    hdr->max_replicas = (uint32_t) ctx->max_replicas;
    hdr->service_size = sizeof(ngx_http_dstack_service_metrics_t);
    hdr->replica_size = sizeof(ngx_http_dstack_replica_metrics_t);
    hdr->created = (uint64_t) ngx_time();

    ctx->shpool->data = p;

    ngx_http_dstack_metrics_set_layout(ctx, p);

    return NGX_OK;
}


static void
ngx_http_dstack_metrics_set_layout(ngx_http_dstack_metrics_ctx_t *ctx,
    u_char *p)
{
    ctx->hdr = (ngx_http_dstack_metrics_header_t *) p;

    p += ngx_align(sizeof(ngx_http_dstack_metrics_header_t), 128);
    ctx->services = (ngx_http_dstack_service_metrics_t *) p;

    p += ctx->max_services * sizeof(ngx_http_dstack_service_metrics_t);
    ctx->replicas = (ngx_http_dstack_replica_metrics_t *) p;

    p += ngx_align(ctx->max_replicas
                   * sizeof(ngx_http_dstack_replica_metrics_t), 64);
    ctx->buckets = (ngx_http_dstack_bucket_t *) p;

    p += ngx_align(NGX_HTTP_DSTACK_WINDOW * ctx->max_services
                   * sizeof(ngx_http_dstack_bucket_t), 64);
    ctx->service_latency = (ngx_http_dstack_latency_t *) p;

    p += ctx->max_services * sizeof(ngx_http_dstack_latency_t);
    ctx->replica_latency = (ngx_http_dstack_latency_t *) p;
}


/*
 * The zone of the cycle this process runs.  Kept per worker from its
 * init_process, when ngx_cycle is the cycle it will serve for its whole
 * life (a worker respawned after a failed reload gets the master's
 * current cycle, never the one that failed); looked up before that.
 */

static ngx_http_dstack_metrics_ctx_t  *ngx_http_dstack_metrics_worker;


void
ngx_http_dstack_metrics_init_worker(ngx_cycle_t *cycle)
{
    ngx_http_dstack_metrics_worker = NULL;
    ngx_http_dstack_metrics_worker = ngx_http_dstack_metrics_ctx();
}


static ngx_http_dstack_metrics_ctx_t *
ngx_http_dstack_metrics_ctx(void)
{
    ngx_http_dstack_main_conf_t    *dmcf;
    ngx_http_dstack_metrics_ctx_t  *ctx;

    if (ngx_http_dstack_metrics_worker) {
        return ngx_http_dstack_metrics_worker;
    }

    dmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_dstack_module);
    if (dmcf == NULL || dmcf->metrics_zone == NULL) {
        return NULL;
    }

    ctx = dmcf->metrics_zone->data;

    if (ctx == NULL || ctx->hdr == NULL) {
        return NULL;
    }

    return ctx;
}


ngx_http_dstack_service_metrics_t *
ngx_http_dstack_service_metrics(uint32_t slot, uint64_t uid)
{
    ngx_http_dstack_metrics_ctx_t      *ctx;
    ngx_http_dstack_service_metrics_t  *m;

    ctx = ngx_http_dstack_metrics_ctx();

    if (ctx == NULL || slot >= ctx->max_services || uid == 0) {
        return NULL;
    }

    m = &ctx->services[slot];

    if (__atomic_load_n(&m->uid, __ATOMIC_ACQUIRE) == uid) {
        return m;
    }

    /*
     * The writer gave a freed slot to a new service.  Zero it under the
     * mutex and publish the uid last, so that a worker that sees the new
     * uid counts into a clean slot.  Requests of the previous owner
     * still in flight may touch it afterwards; the output clamps.
     */

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (__atomic_load_n(&m->uid, __ATOMIC_RELAXED) != uid) {
        ngx_memzero((u_char *) m + sizeof(m->uid),
                    sizeof(ngx_http_dstack_service_metrics_t)
                    - sizeof(m->uid));
        ngx_http_dstack_metrics_reset_buckets(ctx, m);
        ngx_memzero(&ctx->service_latency[slot],
                    sizeof(ngx_http_dstack_latency_t));
        __atomic_store_n(&m->uid, uid, __ATOMIC_RELEASE);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return m;
}


ngx_http_dstack_replica_metrics_t *
ngx_http_dstack_replica_metrics(uint32_t slot, uint64_t uid)
{
    ngx_http_dstack_metrics_ctx_t      *ctx;
    ngx_http_dstack_replica_metrics_t  *m;

    ctx = ngx_http_dstack_metrics_ctx();

    if (ctx == NULL || slot >= ctx->max_replicas || uid == 0) {
        return NULL;
    }

    m = &ctx->replicas[slot];

    if (__atomic_load_n(&m->uid, __ATOMIC_ACQUIRE) == uid) {
        return m;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (__atomic_load_n(&m->uid, __ATOMIC_RELAXED) != uid) {
        __atomic_store_n(&m->inflight, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&m->requests, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&m->failures, 0, __ATOMIC_RELAXED);
        ngx_memzero(&ctx->replica_latency[slot],
                    sizeof(ngx_http_dstack_latency_t));
        __atomic_store_n(&m->uid, uid, __ATOMIC_RELEASE);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return m;
}


ngx_shmtx_t *
ngx_http_dstack_metrics_mutex(void)
{
    ngx_http_dstack_metrics_ctx_t  *ctx;

    ctx = ngx_http_dstack_metrics_ctx();

    return ctx ? &ctx->shpool->mutex : NULL;
}


ngx_http_dstack_latency_t *
ngx_http_dstack_metrics_service_latency(ngx_http_dstack_service_metrics_t *m)
{
    ngx_http_dstack_metrics_ctx_t  *ctx;

    ctx = ngx_http_dstack_metrics_ctx();

    if (ctx == NULL || m < ctx->services
        || m >= ctx->services + ctx->max_services)
    {
        return NULL;
    }

    return &ctx->service_latency[m - ctx->services];
}


ngx_http_dstack_latency_t *
ngx_http_dstack_metrics_replica_latency(ngx_http_dstack_replica_metrics_t *rm)
{
    ngx_http_dstack_metrics_ctx_t  *ctx;

    ctx = ngx_http_dstack_metrics_ctx();

    if (ctx == NULL || rm < ctx->replicas
        || rm >= ctx->replicas + ctx->max_replicas)
    {
        return NULL;
    }

    return &ctx->replica_latency[rm - ctx->replicas];
}


/*
 * The bucket of slot `m` in the row of second `now`.  A bucket still
 * holding an older second is zeroed first, once, by whichever worker
 * gets the mutex first; the second is published after the counters are
 * zero.  The service's last_second follows, for readers (windows()).
 */

static ngx_http_dstack_bucket_t *
ngx_http_dstack_metrics_bucket(ngx_http_dstack_metrics_ctx_t *mctx,
    ngx_http_dstack_service_metrics_t *m, time_t now)
{
    uint32_t                   sec;
    ngx_uint_t                 i;
    ngx_http_dstack_bucket_t  *b;

    sec = (uint32_t) now;
    b = &mctx->buckets[((ngx_uint_t) now % NGX_HTTP_DSTACK_WINDOW)
                       * mctx->max_services + (m - mctx->services)];

    if (__atomic_load_n(&b->second, __ATOMIC_ACQUIRE) == sec) {
        return b;
    }

    ngx_shmtx_lock(&mctx->shpool->mutex);

    if (__atomic_load_n(&b->second, __ATOMIC_RELAXED) != sec) {
        __atomic_store_n(&b->arrivals, 0, __ATOMIC_RELAXED);

        for (i = 0; i < NGX_HTTP_DSTACK_CLASSES; i++) {
            __atomic_store_n(&b->count[i], 0, __ATOMIC_RELAXED);
        }

        /* before the second: a reader that finds last_second older
         * finds the bucket unpublished too */
        if (__atomic_load_n(&m->last_second, __ATOMIC_RELAXED) < sec) {
            __atomic_store_n(&m->last_second, (uint64_t) sec,
                             __ATOMIC_RELEASE);
        }

        __atomic_store_n(&b->second, sec, __ATOMIC_RELEASE);
    }

    ngx_shmtx_unlock(&mctx->shpool->mutex);

    return b;
}


/* a slot changes owner: none of its buckets counts any more (under the
 * mutex; a second of 0 is never current) */
static void
ngx_http_dstack_metrics_reset_buckets(ngx_http_dstack_metrics_ctx_t *ctx,
    ngx_http_dstack_service_metrics_t *m)
{
    ngx_uint_t                 k, slot;
    ngx_http_dstack_bucket_t  *b;

    slot = m - ctx->services;

    for (k = 0; k < NGX_HTTP_DSTACK_WINDOW; k++) {
        b = &ctx->buckets[k * ctx->max_services + slot];
        __atomic_store_n(&b->second, 0, __ATOMIC_RELEASE);
    }
}


void
ngx_http_dstack_metrics_prefetch(ngx_http_dstack_service_metrics_t *m)
{
    ngx_http_dstack_metrics_ctx_t  *mctx;

    mctx = ngx_http_dstack_metrics_worker;

    if (m == NULL || mctx == NULL) {
        return;
    }

    __builtin_prefetch(m, 1);
    __builtin_prefetch((u_char *) m + 64, 1);
    __builtin_prefetch(&mctx->buckets[((ngx_uint_t) ngx_time()
                                       % NGX_HTTP_DSTACK_WINDOW)
                                      * mctx->max_services
                                      + (m - mctx->services)], 1);
}


void
ngx_http_dstack_metrics_admit(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx)
{
    ngx_http_dstack_bucket_t       *b;
    ngx_http_dstack_metrics_ctx_t  *mctx;

    if (ctx->admitted) {
        return;
    }

    ctx->admitted = 1;

    if (ctx->start == 0) {
        ctx->start = ngx_current_msec;
    }

    mctx = ngx_http_dstack_metrics_ctx();

    if (ctx->metrics == NULL || mctx == NULL) {
        return;
    }

    __atomic_fetch_add(&ctx->metrics->inflight, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&ctx->metrics->last_active, (uint64_t) ngx_time(),
                     __ATOMIC_RELAXED);

    b = ngx_http_dstack_metrics_bucket(mctx, ctx->metrics, ngx_time());
    __atomic_fetch_add(&b->arrivals, 1, __ATOMIC_RELAXED);
}


/* the log phase, for the request's current context (admit.c completes
 * the ones an internal redirect lost) */
void
ngx_http_dstack_metrics_log(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx)
{
    ngx_http_dstack_bucket_t       *b;
    ngx_http_dstack_metrics_ctx_t  *mctx;

    if (ctx->metrics == NULL) {
        return;
    }

    if (ctx->admitted) {
        /* admitted without a cleanup: none could be allocated */
        ngx_http_dstack_metrics_complete(r, ctx);
        return;
    }

    if (!ctx->refused) {
        return;
    }

    ctx->refused = 0;

    mctx = ngx_http_dstack_metrics_ctx();
    if (mctx == NULL) {
        return;
    }

    __atomic_fetch_add(&ctx->metrics->requests[NGX_HTTP_DSTACK_REFUSED], 1,
                       __ATOMIC_RELAXED);

    b = ngx_http_dstack_metrics_bucket(mctx, ctx->metrics, ngx_time());
    __atomic_fetch_add(&b->count[NGX_HTTP_DSTACK_REFUSED], 1,
                       __ATOMIC_RELAXED);
}


/* an admitted request ends: its status class, time and in-flight */
void
ngx_http_dstack_metrics_complete(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx)
{
    ngx_uint_t                          status, cls, i;
    ngx_msec_int_t                      ms;
    ngx_http_dstack_bucket_t           *b;
    ngx_http_dstack_metrics_ctx_t      *mctx;
    ngx_http_dstack_service_metrics_t  *m;

    ctx->admitted = 0;

    m = ctx->metrics;
    if (m == NULL) {
        return;
    }

    mctx = ngx_http_dstack_metrics_ctx();
    if (mctx == NULL) {
        return;
    }

    /* the status the access log shows; none: the client went away */

    if (r->err_status) {
        status = r->err_status;

    } else if (r->headers_out.status) {
        status = r->headers_out.status;

    } else {
        status = NGX_HTTP_CLIENT_CLOSED_REQUEST;
    }

    cls = status / 100;

    if (cls < 1) {
        cls = 1;

    } else if (cls > 5) {
        cls = 5;
    }

    ms = (ngx_msec_int_t) (ngx_current_msec - ctx->start);
    if (ms < 0) {
        ms = 0;
    }

    __atomic_fetch_add(&m->requests[cls], 1, __ATOMIC_RELAXED);

    if (ms) {
        __atomic_fetch_add(&m->time_ms_sum, (uint64_t) ms, __ATOMIC_RELAXED);
    }

    for (i = 0; i < NGX_HTTP_DSTACK_HIST; i++) {
        if ((ngx_msec_t) ms <= ngx_http_dstack_hist_bounds[i]) {
            __atomic_fetch_add(&m->hist[i], 1, __ATOMIC_RELAXED);
            break;
        }
    }

    __atomic_fetch_sub(&m->inflight, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&m->last_active, (uint64_t) ngx_time(),
                     __ATOMIC_RELAXED);

    b = ngx_http_dstack_metrics_bucket(mctx, m, ngx_time());

    __atomic_fetch_add(&b->count[cls], 1, __ATOMIC_RELAXED);
}


void
ngx_http_dstack_metrics_release(ngx_http_dstack_ctx_t *ctx)
{
    if (!ctx->admitted) {
        return;
    }

    ctx->admitted = 0;

    if (ctx->metrics) {
        __atomic_fetch_sub(&ctx->metrics->inflight, 1, __ATOMIC_RELAXED);
    }
}


/*
 * Sums of a service's buckets over several windows in one pass:
 * seconds[] ascending; a window longer than NGX_HTTP_DSTACK_WINDOW gets
 * the whole ring.  A bucket counts when its second lies in
 * (now - seconds, now]; a bucket of an older second is stale and is
 * skipped, so the windows are exact to the second.  sums[j] and
 * arrivals[j] (arrivals may be NULL) receive window j.
 *
 * No bucket is newer than the service's last_second, so the seconds
 * after it are not read, and a service idle for the whole window (most
 * of 10,000) costs one load rather than a walk over 300 rows.  A slot
 * outside the zone (the stats' stand-in for one over capacity) sums to
 * zero.
 */

void
ngx_http_dstack_metrics_windows(ngx_http_dstack_service_metrics_t *m,
    time_t now, const ngx_uint_t *seconds, ngx_uint_t n,
    uint64_t (*sums)[NGX_HTTP_DSTACK_CLASSES], uint64_t *arrivals)
{
    time_t                          t, last;
    uint32_t                        sec;
    uint64_t                        acc[NGX_HTTP_DSTACK_CLASSES], arr;
    ngx_uint_t                      k, j, c, slot;
    ngx_http_dstack_bucket_t       *b;
    ngx_http_dstack_metrics_ctx_t  *ctx;

    ngx_memzero(acc, sizeof(acc));
    arr = 0;

    ctx = ngx_http_dstack_metrics_ctx();

    if (ctx == NULL || m < ctx->services
        || m >= ctx->services + ctx->max_services)
    {
        last = -1;
        slot = 0;

    } else {
        last = (time_t) __atomic_load_n(&m->last_second, __ATOMIC_ACQUIRE);
        slot = m - ctx->services;

        if (last == 0 || last + NGX_HTTP_DSTACK_WINDOW <= now) {
            last = -1;      /* nothing in the window */
        }
    }

    j = 0;

    for (k = 0; /* void */ ; k++) {

        /* window j is complete after its first seconds[j] buckets */

        while (j < n && (k >= seconds[j] || k == NGX_HTTP_DSTACK_WINDOW
                         || last < 0))
        {
            ngx_memcpy(sums[j], acc, sizeof(acc));

            if (arrivals) {
                arrivals[j] = arr;
            }

            j++;
        }

        if (j == n) {
            break;
        }

        t = now - (time_t) k;

        if (t < 0 || t > last) {
            continue;
        }

        sec = (uint32_t) t;
        b = &ctx->buckets[((ngx_uint_t) t % NGX_HTTP_DSTACK_WINDOW)
                          * ctx->max_services + slot];

        if (__atomic_load_n(&b->second, __ATOMIC_ACQUIRE) != sec) {
            continue;
        }

        arr += __atomic_load_n(&b->arrivals, __ATOMIC_RELAXED);

        for (c = 0; c < NGX_HTTP_DSTACK_CLASSES; c++) {
            acc[c] += __atomic_load_n(&b->count[c], __ATOMIC_RELAXED);
        }
    }
}


void
ngx_http_dstack_metrics_window(ngx_http_dstack_service_metrics_t *m,
    time_t now, ngx_uint_t seconds, uint64_t sums[NGX_HTTP_DSTACK_CLASSES])
{
    uint64_t  (*s)[NGX_HTTP_DSTACK_CLASSES];

    s = (uint64_t (*)[NGX_HTTP_DSTACK_CLASSES]) sums;

    ngx_http_dstack_metrics_windows(m, now, &seconds, 1, s, NULL);
}
