/*
 * "dstack_stats prometheus": the text exposition format, streamed.
 *
 * At 10,000 services x 5 replicas a scrape is 42 MB, some 650,000 lines,
 * and nearly all of them are the same from one scrape to the next: most
 * services are idle.  So a worker keeps the text of its last whole
 * scrape (the cache, in worker memory) with the numbers each service's
 * lines were rendered from, and a scrape of the same snapshot of state
 *
 *   - reads every service's counters and compares them with those
 *     numbers (a few MB of reads, no formatting, no LMDB);
 *   - sends the cached text of the services that did not change as it
 *     is, by reference (no copy), and renders only the ones that did.
 *
 * A scrape of another snapshot (a commit since: services, replicas or
 * slots may differ), or one that finds more than a sixteenth of the
 * services changed since the cache was made, makes a new cache as it
 * streams (the services alike in both, with the same numbers, copied
 * from the old one, the others rendered), and that one replaces the old
 * when it is whole.  A cache is freed when the last scrape that sends from it ends,
 * so text never changes under a slow client; a scrape that builds one and
 * goes away early frees its part.  "?active=1" renders its few services
 * every time, into buffers reused as they are sent.
 *
 * Either way the answer is streamed (chunked): a few buffers or a few MB
 * of cached text at a time, and more when the socket takes it.
 */

#include "ngx_http_dstack_stats.h"

#include <sys/mman.h>


/* temp buffers rendered, or bytes of cached text referenced, before a
 * send; services per step */
#define NGX_HTTP_DSTACK_PROM_SEND_BUFS  4
#define NGX_HTTP_DSTACK_PROM_SEND_REFS  (4 * 1024 * 1024)
#define NGX_HTTP_DSTACK_PROM_STEP       16

/* the cache's text is written in blocks of this size, a huge page each
 * where the system gives them (see ngx_http_dstack_prom_block_alloc) */
#define NGX_HTTP_DSTACK_PROM_ARENA      (2 * 1024 * 1024)

/* spare blocks are given back once whole scrapes stopped for this long */
#define NGX_HTTP_DSTACK_PROM_SPARE_IDLE 30000   /* ms */

/* how a stream gets its lines */
#define NGX_HTTP_DSTACK_PROM_RENDER     0   /* rendered each time */
#define NGX_HTTP_DSTACK_PROM_BUILD      1   /* rendered into a new cache */
#define NGX_HTTP_DSTACK_PROM_CACHED     2   /* cached, changed ones
                                               rendered */

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
#define NGX_HTTP_DSTACK_PROM_MODEL_TTFT       12
#define NGX_HTTP_DSTACK_PROM_MODEL_TPOT       13
#define NGX_HTTP_DSTACK_PROM_REPLICA_INFLIGHT 14
#define NGX_HTTP_DSTACK_PROM_REPLICA_REQUESTS 15
#define NGX_HTTP_DSTACK_PROM_REPLICA_FAILURES 16
#define NGX_HTTP_DSTACK_PROM_FAMILIES         17

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

    /* the latency families: lines of the service, then of each replica
     * (ngx_http_dstack_prom_bound) */

    { ngx_string("dstack_model_ttft_seconds"),
      ngx_string("histogram"),
      ngx_string("Time to first token: from admission to the first byte "
                 "of a 200 answer's body (streamed or not), per service "
                 "and per replica."),
      NGX_HTTP_DSTACK_LAT_BUCKETS + 2 },

    { ngx_string("dstack_model_tpot_seconds"),
      ngx_string("histogram"),
      ngx_string("Time per output token of streamed answers: first byte "
                 "to last token event, over the completion tokens less "
                 "one, per service and per replica."),
      NGX_HTTP_DSTACK_LAT_BUCKETS + 2 },

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

/* the bounds metrics.c counts with, in seconds */
static ngx_str_t  ngx_http_dstack_prom_le[] = {
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


/*
 * The text is written in blocks of 2 MB mapped apart from the heap, so
 * that a freed block goes back to the system, not to malloc's free
 * lists.  Fresh memory is dear in 4 KB pages (a page fault per page,
 * and on a virtual machine each one is a trip to the hypervisor: making
 * a cache of 42 MB in 4 KB pages took three times the CPU of rendering
 * it), so each block asks for a transparent huge page: one fault per
 * block, 30 to 100 times cheaper where measured.  Where the system gives
 * none, spare blocks still save faults: a block whose cache is freed
 * goes to the worker's spares, and the next cache takes it from there.
 * Spares are at most a quarter of the newest text, and a timer gives
 * them all back once whole scrapes stop for a while; so a worker holds
 * its text and at most a quarter more, and twice its text only while a
 * scrape after a commit makes the next cache.
 */
typedef struct ngx_http_dstack_prom_block_s  ngx_http_dstack_prom_block_t;

struct ngx_http_dstack_prom_block_s {
    ngx_http_dstack_prom_block_t       *next;
    size_t                              size;       /* with this header */
};

/* one family's lines of one service (or its HELP and TYPE lines) in a
 * cache */
typedef struct {
    u_char                             *start;
    size_t                              len;
} ngx_http_dstack_prom_seg_t;

typedef struct {
    ngx_uint_t                          refs;       /* the worker's, and
                                                       each stream's */
    ngx_pool_t                         *pool;       /* everything below */
    ngx_http_dstack_stats_collect_t     col;        /* col.snapshot */

    /* the numbers the text was rendered from */
    ngx_http_dstack_stats_counters_t   *counters;   /* per service */
    uint64_t                          (*values)[NGX_HTTP_DSTACK_STATS_RVALUES];
                                                    /* per replica */

    /* [family * (services + 1)]: HELP and TYPE, then each service */
    ngx_http_dstack_prom_seg_t         *segs;

    ngx_http_dstack_prom_block_t       *blocks;     /* of the text */
    u_char                             *last;       /* in the block being */
    u_char                             *end;        /* written */
    size_t                              size;       /* of the text */
} ngx_http_dstack_prom_cache_t;

/* a service whose numbers differ from the cache's, read once */
typedef struct {
    ngx_uint_t                          service;
    ngx_uint_t                          families;   /* bit per family */
    ngx_http_dstack_stats_counters_t    counters;
    uint64_t                          (*values)[NGX_HTTP_DSTACK_STATS_RVALUES];
} ngx_http_dstack_prom_changed_t;

typedef struct {
    ngx_uint_t                          mode;
    ngx_http_dstack_stats_collect_t    *col;
    ngx_http_dstack_stats_collect_t     own;        /* RENDER */
    ngx_http_dstack_prom_cache_t       *cache;      /* BUILD, CACHED */
    ngx_http_dstack_prom_cache_t       *prev;       /* BUILD: copied from */
    ngx_uint_t                         *same;       /* BUILD: per service,
                                                       1 + its index in
                                                       prev, 0: none */
    ngx_uint_t                         *differ;     /* BUILD: families
                                                       not to copy */
    ngx_array_t                         changed;    /* CACHED */
    ngx_uint_t                          next;       /* in changed */
    uint64_t                          (*values)[NGX_HTTP_DSTACK_STATS_RVALUES];
                                                    /* RENDER: scratch */
    ngx_http_dstack_stats_out_t         out;
    ngx_buf_t                          *ref;        /* last in out, when it
                                                       is cached text */
    size_t                              referenced; /* in out */
    ngx_chain_t                        *free;
    ngx_chain_t                        *free_refs;
    ngx_chain_t                        *busy;
    ngx_uint_t                          family;     /* rendering now */
    ngx_uint_t                          service;    /* next, in family */
    time_t                              now;
    ngx_uint_t                          done;       /* last buffer sent */
    ngx_uint_t                          budgets;    /* rendered */
} ngx_http_dstack_prom_stream_t;


static ngx_int_t ngx_http_dstack_prom_render_start(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st);
static ngx_int_t ngx_http_dstack_prom_cached_start(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st);
static ngx_int_t ngx_http_dstack_prom_build_start(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st);
static ngx_int_t ngx_http_dstack_prom_compare(
    ngx_http_dstack_prom_cache_t *cache, ngx_http_dstack_prom_stream_t *st,
    ngx_pool_t *pool);
static ngx_uint_t ngx_http_dstack_prom_differ(
    ngx_http_dstack_stats_counters_t *a, ngx_http_dstack_stats_counters_t *b);
static ngx_uint_t ngx_http_dstack_prom_differ_all(
    ngx_http_dstack_prom_cache_t *prev, ngx_uint_t j,
    ngx_http_dstack_prom_cache_t *cache, ngx_uint_t i);
static ngx_int_t ngx_http_dstack_prom_match(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st);
static ngx_uint_t ngx_http_dstack_prom_same(
    ngx_http_dstack_prom_cache_t *prev, ngx_uint_t j,
    ngx_http_dstack_stats_collect_t *col, ngx_uint_t i);
static void ngx_http_dstack_prom_unref(ngx_http_dstack_prom_cache_t *cache);
static ngx_int_t ngx_http_dstack_prom_stream(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st);
static void ngx_http_dstack_prom_update(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st, ngx_chain_t *out);
static void ngx_http_dstack_prom_write(ngx_http_request_t *r);
static void ngx_http_dstack_prom_wait(ngx_http_request_t *r);
static void ngx_http_dstack_prom_cleanup(void *data);
static ngx_int_t ngx_http_dstack_prom_budgets(
    ngx_http_dstack_prom_stream_t *st);
static u_char *ngx_http_dstack_prom_budget_line(u_char *p,
    const char *family, ngx_http_dstack_budget_entry_t *e,
    const char *kind, uint64_t value);
static ngx_int_t ngx_http_dstack_prom_family(
    ngx_http_dstack_prom_stream_t *st, ngx_uint_t from, ngx_uint_t to);
static ngx_int_t ngx_http_dstack_prom_service(
    ngx_http_dstack_prom_stream_t *st, ngx_uint_t family, ngx_uint_t i);
static ngx_int_t ngx_http_dstack_prom_header(
    ngx_http_dstack_prom_stream_t *st, ngx_uint_t family);
static u_char *ngx_http_dstack_prom_arena(
    ngx_http_dstack_prom_cache_t *cache, size_t n);
static ngx_http_dstack_prom_block_t *ngx_http_dstack_prom_block_alloc(
    size_t size);
static void ngx_http_dstack_prom_block_free(ngx_http_dstack_prom_block_t *b);
static void ngx_http_dstack_prom_spare_watch(void);
static void ngx_http_dstack_prom_spare_idle(ngx_event_t *ev);
static ngx_int_t ngx_http_dstack_prom_ref(ngx_http_dstack_prom_stream_t *st,
    u_char *start, size_t len);
static size_t ngx_http_dstack_prom_bound(ngx_uint_t family,
    ngx_http_dstack_stats_service_t *s, ngx_http_dstack_stats_replica_t *sr);
static u_char *ngx_http_dstack_prom_render(u_char *p, ngx_uint_t family,
    ngx_http_dstack_stats_service_t *s, ngx_http_dstack_stats_replica_t *sr,
    ngx_http_dstack_stats_counters_t *cnt,
    uint64_t (*v)[NGX_HTTP_DSTACK_STATS_RVALUES]);
static u_char *ngx_http_dstack_prom_sample(u_char *p, ngx_str_t *name,
    char *suffix, ngx_str_t *service);


/* the worker's cache: the last one built whole, NULL before */
static u_char *ngx_http_dstack_prom_latency(u_char *p,
    ngx_http_dstack_prom_family_t *pf, ngx_http_dstack_stats_service_t *s,
    ngx_http_dstack_stats_replica_t *sr, ngx_uint_t kind,
    ngx_http_dstack_latency_t *lat);
static u_char *ngx_http_dstack_prom_replica(u_char *p,
    ngx_http_dstack_stats_replica_t *sr);

static ngx_http_dstack_prom_cache_t  *ngx_http_dstack_prom_current;

/* spare blocks of the text, and their bytes */
static ngx_http_dstack_prom_block_t  *ngx_http_dstack_prom_spare;
static size_t                         ngx_http_dstack_prom_spare_size;

/* when the last whole scrape began, and the timer that gives the spares
 * back after NGX_HTTP_DSTACK_PROM_SPARE_IDLE without one */
static ngx_msec_t                     ngx_http_dstack_prom_scraped;
static ngx_event_t                    ngx_http_dstack_prom_idle;
static ngx_connection_t               ngx_http_dstack_prom_idle_conn;



ngx_int_t
ngx_http_dstack_prom_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_str_t                       message;
    ngx_uint_t                      active;
    ngx_pool_cleanup_t             *cln;
    ngx_http_dstack_prom_stream_t  *st;

    rc = ngx_http_dstack_stats_accept(r, &active);

    if (rc != NGX_OK) {
        return rc;
    }

    st = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_prom_stream_t));
    if (st == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->now = ngx_time();
    st->out.pool = r->pool;
    st->out.last = &st->out.first;
    st->out.free = &st->free;

    /* before anything can hold a cache: the request's end lets go of it;
     * found again by its handler (the module's request context is the
     * gateway's, which filters of this module read) */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_dstack_prom_cleanup;
    cln->data = st;

    if (active) {
        rc = ngx_http_dstack_prom_render_start(r, st);

    } else {
        rc = ngx_http_dstack_prom_cached_start(r, st);
    }

    if (rc == NGX_DECLINED) {
        ngx_str_set(&message, "state unavailable");
        return ngx_http_dstack_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "unavailable", NULL, &message);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&r->headers_out.content_type, "text/plain; version=0.0.4");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    rc = ngx_http_dstack_prom_stream(r, st);

    if (st->done || rc == NGX_ERROR) {
        /* nginx's writer sends the rest, if any */
        return rc;
    }

    /* the socket is full: go on when it takes more */

    r->main->count++;
    r->write_event_handler = ngx_http_dstack_prom_write;

    ngx_http_dstack_prom_wait(r);

    return NGX_DONE;
}


/* "?active=1": the active services, rendered as they are sent */
static ngx_int_t
ngx_http_dstack_prom_render_start(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st)
{
    ngx_int_t                         rc;
    ngx_uint_t                        i, most;
    ngx_http_dstack_stats_service_t  *services;

    st->mode = NGX_HTTP_DSTACK_PROM_RENDER;
    st->col = &st->own;

    st->own.pool = r->pool;
    st->own.log = r->connection->log;
    st->own.active = 1;

    rc = ngx_http_dstack_stats_gather(&st->own);
    if (rc != NGX_OK) {
        return rc;
    }

    services = st->own.services.elts;
    most = 1;

    for (i = 0; i < st->own.services.nelts; i++) {
        most = ngx_max(most, services[i].nreplicas);
    }

    st->values = ngx_palloc(r->pool, most * sizeof(*st->values));
    if (st->values == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A whole scrape: from the cache when it is of the snapshot state is at
 * now and not too much has changed since it was made, else into a new
 * one.
 */
static ngx_int_t
ngx_http_dstack_prom_cached_start(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st)
{
    uint64_t                       snapshot;
    ngx_uint_t                     n, limit;
    ngx_http_dstack_prom_cache_t  *cache;

    if (ngx_http_dstack_state_peek(r->connection->log) != NGX_OK) {
        return NGX_DECLINED;
    }

    snapshot = ngx_http_dstack_state_snapshot();
    cache = ngx_http_dstack_prom_current;
    ngx_http_dstack_prom_scraped = ngx_current_msec;

    if (cache == NULL || snapshot == 0
        || cache->col.snapshot != snapshot)
    {
        return ngx_http_dstack_prom_build_start(r, st);
    }

    /*
     * A changed service costs its rendering on every scrape until the
     * cache is made again, and making it costs about as much as
     * rendering a sixteenth of the services, twice over.
     */

    n = cache->col.services.nelts;
    limit = n / 16 + 16;

    if (ngx_array_init(&st->changed, r->pool, 16,
                       sizeof(ngx_http_dstack_prom_changed_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_dstack_prom_compare(cache, st, r->pool) != NGX_OK) {
        return NGX_ERROR;
    }

    if (st->changed.nelts > limit) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "dstack prometheus: %ui of %ui services changed, "
                       "cache made again", st->changed.nelts, n);

        return ngx_http_dstack_prom_build_start(r, st);
    }

    st->mode = NGX_HTTP_DSTACK_PROM_CACHED;
    st->col = &cache->col;
    st->cache = cache;
    cache->refs++;

    return NGX_OK;
}


/* every service of the newest snapshot, rendered into a new cache */
static ngx_int_t
ngx_http_dstack_prom_build_start(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st)
{
    ngx_int_t                      rc;
    ngx_uint_t                     n;
    ngx_pool_t                    *pool;
    ngx_http_dstack_prom_cache_t  *cache;

    pool = ngx_create_pool(NGX_HTTP_DSTACK_STATS_BUF, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    cache = ngx_pcalloc(pool, sizeof(ngx_http_dstack_prom_cache_t));
    if (cache == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    cache->pool = pool;
    cache->refs = 1;                /* the stream's */

    cache->col.pool = pool;
    cache->col.log = r->connection->log;
    cache->col.active = 0;

    if (ngx_http_dstack_prom_current) {
        /* a commit changes a few services: as many as last time, and
         * some room */
        cache->col.hint[0] =
                ngx_http_dstack_prom_current->col.services.nelts + 64;
        cache->col.hint[1] =
                ngx_http_dstack_prom_current->col.replicas.nelts + 256;
    }

    st->mode = NGX_HTTP_DSTACK_PROM_BUILD;
    st->col = &cache->col;
    st->cache = cache;

    rc = ngx_http_dstack_stats_gather(&cache->col);

    /* the request's log is not the cache's to keep */
    cache->col.log = ngx_cycle->log;

    if (rc != NGX_OK) {
        return rc;
    }

    n = cache->col.services.nelts;

    cache->counters = ngx_palloc(pool,
                         n * sizeof(ngx_http_dstack_stats_counters_t) + 1);
    cache->values = ngx_palloc(pool, cache->col.replicas.nelts
                                     * sizeof(*cache->values) + 1);
    cache->segs = ngx_pcalloc(pool, NGX_HTTP_DSTACK_PROM_FAMILIES * (n + 1)
                                    * sizeof(ngx_http_dstack_prom_seg_t));

    if (cache->counters == NULL || cache->values == NULL
        || cache->segs == NULL)
    {
        return NGX_ERROR;
    }

    return ngx_http_dstack_prom_match(r, st);
}


/*
 * A new cache is mostly the old one's text: a commit changes a few
 * services, and most of the rest are idle.  Find each service of the new
 * snapshot in the old cache (both lists are in name order): one with the
 * same name, uid, metrics slots and replica addresses has the same lines
 * whenever its numbers are the same, and its text is copied, not
 * rendered.  The old cache is held until the new one is whole.
 */
static ngx_int_t
ngx_http_dstack_prom_match(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st)
{
    ngx_int_t                          c;
    ngx_uint_t                         i, j, n, m;
    ngx_http_dstack_stats_service_t   *a, *b;
    ngx_http_dstack_prom_cache_t      *prev;

    prev = ngx_http_dstack_prom_current;

    if (prev == NULL) {
        return NGX_OK;
    }

    n = st->cache->col.services.nelts;
    m = prev->col.services.nelts;

    st->same = ngx_pcalloc(r->pool, n * sizeof(ngx_uint_t) + 1);
    st->differ = ngx_pcalloc(r->pool, n * sizeof(ngx_uint_t) + 1);
    if (st->same == NULL || st->differ == NULL) {
        return NGX_ERROR;
    }

    st->prev = prev;
    prev->refs++;

    a = st->cache->col.services.elts;
    b = prev->col.services.elts;

    for (i = 0, j = 0; i < n && j < m; /* void */) {
        c = ngx_memn2cmp(a[i].name.data, b[j].name.data, a[i].name.len,
                         b[j].name.len);

        if (c < 0) {
            i++;
            continue;
        }

        if (c > 0) {
            j++;
            continue;
        }

        if (ngx_http_dstack_prom_same(prev, j, &st->cache->col, i)) {
            st->same[i] = j + 1;
        }

        i++;
        j++;
    }

    return NGX_OK;
}


/* old service j and new service i render alike from alike numbers */
static ngx_uint_t
ngx_http_dstack_prom_same(ngx_http_dstack_prom_cache_t *prev, ngx_uint_t j,
    ngx_http_dstack_stats_collect_t *col, ngx_uint_t i)
{
    ngx_uint_t                        k;
    ngx_http_dstack_stats_replica_t  *ra, *rb;
    ngx_http_dstack_stats_service_t  *a, *b;

    a = (ngx_http_dstack_stats_service_t *) col->services.elts + i;
    b = (ngx_http_dstack_stats_service_t *) prev->col.services.elts + j;

    if (a->uid != b->uid || a->metrics != b->metrics
        || a->nreplicas != b->nreplicas || a->prom.len != b->prom.len
        || ngx_memcmp(a->prom.data, b->prom.data, a->prom.len) != 0)
    {
        return 0;
    }

    ra = (ngx_http_dstack_stats_replica_t *) col->replicas.elts + a->replica;
    rb = (ngx_http_dstack_stats_replica_t *) prev->col.replicas.elts
         + b->replica;

    for (k = 0; k < a->nreplicas; k++) {
        if (ra[k].metrics != rb[k].metrics || ra[k].uid != rb[k].uid
            || ra[k].prom.len != rb[k].prom.len
            || ngx_memcmp(ra[k].prom.data, rb[k].prom.data, ra[k].prom.len)
               != 0)
        {
            return 0;
        }
    }

    return 1;
}


/*
 * The services whose numbers differ from those the cache's text was
 * rendered from, with what they are now, into st->changed (in service
 * order).  Stops early when more than a limit differ: the caller makes
 * the cache again then.
 */
static ngx_int_t
ngx_http_dstack_prom_compare(ngx_http_dstack_prom_cache_t *cache,
    ngx_http_dstack_prom_stream_t *st, ngx_pool_t *pool)
{
    uint64_t                           v[NGX_HTTP_DSTACK_STATS_RVALUES];
    ngx_uint_t                         i, j, k, n, fam, limit;
    ngx_http_dstack_stats_replica_t   *replicas, *sr;
    ngx_http_dstack_stats_service_t   *services, *s;
    ngx_http_dstack_prom_changed_t    *c;
    ngx_http_dstack_stats_counters_t   cnt;

    services = cache->col.services.elts;
    replicas = cache->col.replicas.elts;
    n = cache->col.services.nelts;
    limit = n / 16 + 16;

    for (i = 0; i < n; i++) {
        s = &services[i];

        ngx_http_dstack_stats_read(s, st->now, 1, &cnt);

        fam = ngx_http_dstack_prom_differ(&cache->counters[i], &cnt);

        for (j = 0; j < s->nreplicas; j++) {
            sr = &replicas[s->replica + j];
            ngx_http_dstack_stats_read_replica(sr, v);

            for (k = 0; k < NGX_HTTP_DSTACK_STATS_RVALUES; k++) {
                if (v[k] != cache->values[s->replica + j][k]) {
                    fam |= 1 << (NGX_HTTP_DSTACK_PROM_REPLICA_INFLIGHT + k);
                }
            }
        }

        if (fam == 0) {
            continue;
        }

        c = ngx_array_push(&st->changed);
        if (c == NULL) {
            return NGX_ERROR;
        }

        c->service = i;
        c->families = fam;
        c->counters = cnt;
        c->values = NULL;

        if (st->changed.nelts > limit) {
            return NGX_OK;
        }

        if (s->nreplicas == 0
            || !(fam >> NGX_HTTP_DSTACK_PROM_REPLICA_INFLIGHT))
        {
            continue;
        }

        /* read again: what is shown is what was read last */

        c->values = ngx_palloc(pool, s->nreplicas * sizeof(*c->values));
        if (c->values == NULL) {
            return NGX_ERROR;
        }

        for (j = 0; j < s->nreplicas; j++) {
            ngx_http_dstack_stats_read_replica(&replicas[s->replica + j],
                                               c->values[j]);
        }
    }

    return NGX_OK;
}


/* the families whose lines differ between service j of the old cache
 * and service i of the new one, replicas included */
static ngx_uint_t
ngx_http_dstack_prom_differ_all(ngx_http_dstack_prom_cache_t *prev,
    ngx_uint_t j, ngx_http_dstack_prom_cache_t *cache, ngx_uint_t i)
{
    ngx_uint_t                        f, r, k;
    ngx_http_dstack_stats_service_t  *a, *b;

    a = (ngx_http_dstack_stats_service_t *) cache->col.services.elts + i;
    b = (ngx_http_dstack_stats_service_t *) prev->col.services.elts + j;

    f = ngx_http_dstack_prom_differ(&prev->counters[j], &cache->counters[i]);

    for (r = 0; r < a->nreplicas; r++) {
        for (k = 0; k < NGX_HTTP_DSTACK_STATS_RVALUES; k++) {
            if (cache->values[a->replica + r][k]
                != prev->values[b->replica + r][k])
            {
                f |= 1 << (NGX_HTTP_DSTACK_PROM_REPLICA_INFLIGHT + k);
            }
        }
    }

    return f;
}


/* the families whose lines differ between two readings of a service,
 * a bit each */
static ngx_uint_t
ngx_http_dstack_prom_differ(ngx_http_dstack_stats_counters_t *a,
    ngx_http_dstack_stats_counters_t *b)
{
    ngx_uint_t  f;

    /* the shown part first: nearly always equal */
    if (ngx_memcmp(a, b, offsetof(ngx_http_dstack_stats_counters_t,
                                  arrivals))
        == 0)
    {
        return 0;
    }

    f = 0;

    if (ngx_memcmp(a->requests, b->requests, sizeof(a->requests)) != 0) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_REQUESTS
             | 1 << NGX_HTTP_DSTACK_PROM_DURATION;
    }

    if (a->inflight != b->inflight) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_INFLIGHT;
    }

    if (ngx_memcmp(a->hist, b->hist, sizeof(a->hist)) != 0
        || a->time_ms_sum != b->time_ms_sum)
    {
        f |= 1 << NGX_HTTP_DSTACK_PROM_DURATION;
    }

    if (ngx_memcmp(a->windows, b->windows, sizeof(a->windows)) != 0) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_WINDOW;
    }

    if (a->held != b->held) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_HELD;
    }

    if (a->held_ms_sum != b->held_ms_sum) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_HELD_SECONDS;
    }

    if (a->cold_starts != b->cold_starts) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_COLD_STARTS;
    }

    if (a->cold_start_ms_sum != b->cold_start_ms_sum) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_COLD_SECONDS;
    }

    if (a->model[0] != b->model[0]) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_MODEL_REQUESTS;
    }

    if (a->model[1] != b->model[1]) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_MODEL_ERRORS;
    }

    if (a->model[2] != b->model[2]) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_MODEL_TTFB;
    }

    if (a->model[3] != b->model[3] || a->model[4] != b->model[4]) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_MODEL_TOKENS;
    }

    if (a->latency_seen[0] != b->latency_seen[0]) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_MODEL_TTFT;
    }

    if (a->latency_seen[1] != b->latency_seen[1]) {
        f |= 1 << NGX_HTTP_DSTACK_PROM_MODEL_TPOT;
    }

    return f;
}


static void
ngx_http_dstack_prom_unref(ngx_http_dstack_prom_cache_t *cache)
{
    size_t                         keep;
    ngx_http_dstack_prom_block_t  *b, *next;

    if (--cache->refs) {
        return;
    }

    keep = ngx_http_dstack_prom_current
           ? ngx_http_dstack_prom_current->size / 4 : 0;

    for (b = cache->blocks; b; b = next) {
        next = b->next;

        if (b->size == NGX_HTTP_DSTACK_PROM_ARENA
            && ngx_http_dstack_prom_spare_size + b->size <= keep)
        {
            b->next = ngx_http_dstack_prom_spare;
            ngx_http_dstack_prom_spare = b;
            ngx_http_dstack_prom_spare_size += b->size;
            continue;
        }

        ngx_http_dstack_prom_block_free(b);
    }

    ngx_destroy_pool(cache->pool);

    if (ngx_http_dstack_prom_spare) {
        ngx_http_dstack_prom_spare_watch();
    }
}


/* the spares go back to the system when whole scrapes stop: a timer,
 * armed while there are any */
static void
ngx_http_dstack_prom_spare_watch(void)
{
    ngx_event_t  *ev = &ngx_http_dstack_prom_idle;

    if (ev->timer_set) {
        return;
    }

    ev->handler = ngx_http_dstack_prom_spare_idle;
    ev->log = ngx_cycle->log;
    ngx_http_dstack_prom_idle_conn.fd = (ngx_socket_t) -1;
    ev->data = &ngx_http_dstack_prom_idle_conn;
    ev->cancelable = 1;     /* never delays the worker's exit */

    ngx_add_timer(ev, NGX_HTTP_DSTACK_PROM_SPARE_IDLE);
}


static void
ngx_http_dstack_prom_spare_idle(ngx_event_t *ev)
{
    ngx_msec_t                     idle;
    ngx_http_dstack_prom_block_t  *b;

    idle = ngx_current_msec - ngx_http_dstack_prom_scraped;

    if (idle < NGX_HTTP_DSTACK_PROM_SPARE_IDLE) {
        ngx_add_timer(ev, NGX_HTTP_DSTACK_PROM_SPARE_IDLE - idle);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "dstack prometheus: %uz spare bytes given back",
                   ngx_http_dstack_prom_spare_size);

    while (ngx_http_dstack_prom_spare) {
        b = ngx_http_dstack_prom_spare;
        ngx_http_dstack_prom_spare = b->next;
        ngx_http_dstack_prom_block_free(b);
    }

    ngx_http_dstack_prom_spare_size = 0;
}


/*
 * Render (or reference) up to a few buffers, send them, again while the
 * socket takes everything.  NGX_ERROR; or, with st->done set, what
 * ngx_http_output_filter() returned for the last buffer; else
 * NGX_AGAIN: wait for the socket.
 */
static ngx_int_t
ngx_http_dstack_prom_stream(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st)
{
    ngx_int_t     rc;
    ngx_uint_t    n, to, done;
    ngx_chain_t  *cl, *ll;

    n = st->col->services.nelts;

    for ( ;; ) {

        while (st->family < NGX_HTTP_DSTACK_PROM_FAMILIES
               && st->out.nbufs < NGX_HTTP_DSTACK_PROM_SEND_BUFS
               && st->referenced < NGX_HTTP_DSTACK_PROM_SEND_REFS)
        {
            to = ngx_min(st->service + NGX_HTTP_DSTACK_PROM_STEP, n);

            if (ngx_http_dstack_prom_family(st, st->service, to) != NGX_OK) {
                return NGX_ERROR;
            }

            st->service = to;

            if (to == n) {
                st->family++;
                st->service = 0;
            }
        }

        done = (st->family == NGX_HTTP_DSTACK_PROM_FAMILIES);

        /* the token budgets' counters, read each time (a few lines per
         * token and model, outside the cache) */
        if (done && !st->budgets) {
            st->budgets = 1;

            if (ngx_http_dstack_prom_budgets(st) != NGX_OK) {
                return NGX_ERROR;
            }
        }

        if (done && st->mode == NGX_HTTP_DSTACK_PROM_BUILD) {
            /* whole: the worker's cache from now on */

            if (ngx_http_dstack_prom_current) {
                ngx_http_dstack_prom_unref(ngx_http_dstack_prom_current);
            }

            ngx_http_dstack_prom_current = st->cache;
            st->cache->refs++;
            st->mode = NGX_HTTP_DSTACK_PROM_CACHED;

            if (st->prev) {
                ngx_http_dstack_prom_unref(st->prev);
                st->prev = NULL;
            }
        }

        cl = st->out.first;

        if (cl == NULL) {
            /* nothing rendered (cannot happen: HELP lines) */
            st->done = 1;
            return ngx_http_send_special(r, NGX_HTTP_LAST);
        }

        if (done) {
            st->done = 1;

            for (ll = cl; ll->next; ll = ll->next) { /* void */ }

            ll->buf->last_buf = (r == r->main) ? 1 : 0;
            ll->buf->last_in_chain = 1;
        }

        st->out.first = NULL;
        st->out.last = &st->out.first;
        st->out.buf = NULL;
        st->out.nbufs = 0;
        st->ref = NULL;
        st->referenced = 0;

        rc = ngx_http_output_filter(r, cl);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        ngx_http_dstack_prom_update(r, st, cl);

        if (done) {
            return rc;
        }

        if (st->busy) {
            return NGX_AGAIN;
        }
    }
}


/* what was sent goes back to the free lists: rendered buffers to be
 * rendered into again, references apart (their memory is a cache's,
 * never a buffer to render into) */
static void
ngx_http_dstack_prom_update(ngx_http_request_t *r,
    ngx_http_dstack_prom_stream_t *st, ngx_chain_t *out)
{
    ngx_chain_t  *cl, **lp;

    ngx_chain_update_chains(r->pool, &st->free, &st->busy, &out,
                            (ngx_buf_tag_t) &ngx_http_dstack_module);

    for (lp = &st->free; *lp; /* void */ ) {
        cl = *lp;

        if (cl->buf->temporary) {
            lp = &cl->next;
            continue;
        }

        *lp = cl->next;
        cl->next = st->free_refs;
        st->free_refs = cl;
    }
}


/* the socket takes more: flush what waits, then render on */
static void
ngx_http_dstack_prom_write(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_event_t                    *wev;
    ngx_pool_cleanup_t             *cln;
    ngx_http_dstack_prom_stream_t  *st;

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
        if (cln->handler == ngx_http_dstack_prom_cleanup) {
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

    ngx_http_dstack_prom_update(r, st, NULL);

    if (st->busy == NULL) {
        rc = ngx_http_dstack_prom_stream(r, st);

        if (st->done || rc == NGX_ERROR) {
            ngx_http_finalize_request(r, rc);
            return;
        }
    }

    ngx_http_dstack_prom_wait(r);
}


static void
ngx_http_dstack_prom_wait(ngx_http_request_t *r)
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


/* the request's pool goes, and with it the last buffer that could point
 * into the cache: let go of it (a cache left half built is freed) */
static void
ngx_http_dstack_prom_cleanup(void *data)
{
    ngx_http_dstack_prom_stream_t  *st = data;

    if (st->cache) {
        ngx_http_dstack_prom_unref(st->cache);
        st->cache = NULL;
    }

    if (st->prev) {
        ngx_http_dstack_prom_unref(st->prev);
        st->prev = NULL;
    }
}


/* the budgets' families: HELP, TYPE, a line per (token, model) */
static ngx_int_t
ngx_http_dstack_prom_budgets(ngx_http_dstack_prom_stream_t *st)
{
    size_t                           len;
    ngx_buf_t                       *b;
    ngx_uint_t                       f, i;
    ngx_array_t                     *entries;
    ngx_http_dstack_budget_entry_t  *e;

    static const char  *help[4][3] = {
        { "dstack_budget_requests_total", "counter",
          "Model requests admitted under a token budget." },
        { "dstack_budget_refused_total", "counter",
          "Model requests refused (429) for a token budget." },
        { "dstack_budget_tokens_total", "counter",
          "Tokens used under a token budget, from the answers' usage." },
        { "dstack_budget_day_tokens", "gauge",
          "Tokens counted against the daily quota on the current UTC "
          "day." }
    };

    entries = ngx_http_dstack_budget_entries(st->out.pool);

    if (entries == NULL || entries->nelts == 0) {
        return NGX_OK;
    }

    e = entries->elts;

    for (f = 0; f < 4; f++) {
        b = ngx_http_dstack_stats_reserve(&st->out, 256);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->last = ngx_sprintf(b->last, "# HELP %s %s\n# TYPE %s %s\n",
                              help[f][0], help[f][2], help[f][0],
                              help[f][1]);

        for (i = 0; i < entries->nelts; i++) {
            len = 2 * (96 + 2 * NGX_INT64_LEN
                       + 2 * (e[i].token.len + e[i].model.len
                              + e[i].service.len));

            b = ngx_http_dstack_stats_reserve(&st->out, len);
            if (b == NULL) {
                return NGX_ERROR;
            }

            switch (f) {

            case 0:
                b->last = ngx_http_dstack_prom_budget_line(b->last,
                              help[f][0], &e[i], NULL, e[i].usage.requests);
                break;

            case 1:
                b->last = ngx_http_dstack_prom_budget_line(b->last,
                              help[f][0], &e[i], NULL, e[i].usage.refused);
                break;

            case 2:
                b->last = ngx_http_dstack_prom_budget_line(b->last,
                              help[f][0], &e[i], "prompt",
                              e[i].usage.prompt_tokens);
                b->last = ngx_http_dstack_prom_budget_line(b->last,
                              help[f][0], &e[i], "completion",
                              e[i].usage.completion_tokens);
                break;

            default:
                b->last = ngx_http_dstack_prom_budget_line(b->last,
                              help[f][0], &e[i], NULL,
                              e[i].day == (uint64_t) ngx_time() / 86400
                              ? e[i].day_tokens : 0);
            }
        }
    }

    return NGX_OK;
}


/* family{token="..",model="..",service=".."[,kind=".."]} value */
static u_char *
ngx_http_dstack_prom_budget_line(u_char *p, const char *family,
    ngx_http_dstack_budget_entry_t *e, const char *kind, uint64_t value)
{
    p = ngx_sprintf(p, "%s{token=\"", family);
    p = ngx_http_dstack_stats_escape(p, &e->token);
    p = ngx_cpymem(p, "\",model=\"", sizeof("\",model=\"") - 1);
    p = ngx_http_dstack_stats_escape(p, &e->model);
    p = ngx_cpymem(p, "\",service=\"", sizeof("\",service=\"") - 1);
    p = ngx_http_dstack_stats_escape(p, &e->service);

    if (kind) {
        p = ngx_sprintf(p, "\",kind=\"%s", kind);
    }

    return ngx_sprintf(p, "\"} %uL\n", value);
}


/* services [from, to) of the current family, its HELP and TYPE lines
 * first */
static ngx_int_t
ngx_http_dstack_prom_family(ngx_http_dstack_prom_stream_t *st,
    ngx_uint_t from, ngx_uint_t to)
{
    ngx_uint_t  i;

    if (from == 0) {
        st->next = 0;

        if (ngx_http_dstack_prom_header(st, st->family) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    for (i = from; i < to; i++) {
        if (ngx_http_dstack_prom_service(st, st->family, i) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_prom_header(ngx_http_dstack_prom_stream_t *st,
    ngx_uint_t family)
{
    u_char                         *p;
    size_t                          n;
    ngx_buf_t                      *b;
    ngx_http_dstack_prom_seg_t     *seg;
    ngx_http_dstack_prom_cache_t   *cache;
    ngx_http_dstack_prom_family_t  *pf;

    pf = &ngx_http_dstack_prom_families[family];
    cache = st->cache;
    n = 2 * pf->name.len + pf->type.len + pf->help.len + 32;

    switch (st->mode) {

    case NGX_HTTP_DSTACK_PROM_RENDER:
        b = ngx_http_dstack_stats_reserve(&st->out, n);
        if (b == NULL) {
            return NGX_ERROR;
        }

        st->ref = NULL;

        b->last = ngx_sprintf(b->last, "# HELP %V %V\n# TYPE %V %V\n",
                              &pf->name, &pf->help, &pf->name, &pf->type);
        return NGX_OK;

    case NGX_HTTP_DSTACK_PROM_BUILD:
        p = ngx_http_dstack_prom_arena(cache, n);
        if (p == NULL) {
            return NGX_ERROR;
        }

        seg = &cache->segs[family * (cache->col.services.nelts + 1)];
        seg->start = p;

        p = ngx_sprintf(p, "# HELP %V %V\n# TYPE %V %V\n",
                        &pf->name, &pf->help, &pf->name, &pf->type);

        seg->len = p - seg->start;
        cache->last = p;
        cache->size += seg->len;
        break;

    default: /* NGX_HTTP_DSTACK_PROM_CACHED */
        seg = &cache->segs[family * (cache->col.services.nelts + 1)];
    }

    return ngx_http_dstack_prom_ref(st, seg->start, seg->len);
}


/* the lines of service i in a family, as the stream's mode says */
static ngx_int_t
ngx_http_dstack_prom_service(ngx_http_dstack_prom_stream_t *st,
    ngx_uint_t family, ngx_uint_t i)
{
    u_char                            *p;
    size_t                             n;
    ngx_buf_t                         *b;
    ngx_uint_t                         j;
    ngx_http_dstack_prom_seg_t        *seg, *old;
    ngx_http_dstack_prom_cache_t      *cache;
    ngx_http_dstack_prom_changed_t    *c;
    ngx_http_dstack_stats_replica_t   *sr;
    ngx_http_dstack_stats_service_t   *s;
    ngx_http_dstack_stats_counters_t   cnt;

    s = (ngx_http_dstack_stats_service_t *) st->col->services.elts + i;
    sr = (ngx_http_dstack_stats_replica_t *) st->col->replicas.elts
         + s->replica;
    cache = st->cache;

    switch (st->mode) {

    case NGX_HTTP_DSTACK_PROM_RENDER:

        if (family >= NGX_HTTP_DSTACK_PROM_REPLICA_INFLIGHT) {
            if (s->nreplicas == 0) {
                return NGX_OK;
            }

            for (j = 0; j < s->nreplicas; j++) {
                ngx_http_dstack_stats_read_replica(&sr[j], st->values[j]);
            }

        } else {
            /* the windows only where they are shown: a walk over rows */
            ngx_http_dstack_stats_read(s, st->now,
                                    family == NGX_HTTP_DSTACK_PROM_WINDOW,
                                    &cnt);
        }

        n = ngx_http_dstack_prom_bound(family, s, sr);

        b = ngx_http_dstack_stats_reserve(&st->out, n);
        if (b == NULL) {
            return NGX_ERROR;
        }

        st->ref = NULL;
        b->last = ngx_http_dstack_prom_render(b->last, family, s, sr, &cnt,
                                              st->values);
        return NGX_OK;

    case NGX_HTTP_DSTACK_PROM_BUILD:

        if (family == 0) {
            /* every family of it from one reading, kept for compare() */

            ngx_http_dstack_stats_read(s, st->now, 1, &cache->counters[i]);

            for (j = 0; j < s->nreplicas; j++) {
                ngx_http_dstack_stats_read_replica(&sr[j],
                                            cache->values[s->replica + j]);
            }

            if (st->same && st->same[i]) {
                st->differ[i] = ngx_http_dstack_prom_differ_all(st->prev,
                                    st->same[i] - 1, cache, i);
            }
        }

        seg = &cache->segs[family * (cache->col.services.nelts + 1) + 1 + i];

        if (st->same && st->same[i] && !(st->differ[i] & (1 << family))) {
            old = &st->prev->segs[family * (st->prev->col.services.nelts + 1)
                                  + st->same[i]];

            p = ngx_http_dstack_prom_arena(cache, old->len);
            if (p == NULL) {
                return NGX_ERROR;
            }

            seg->start = p;
            seg->len = old->len;
            p = ngx_cpymem(p, old->start, old->len);

        } else {
            n = ngx_http_dstack_prom_bound(family, s, sr);

            p = ngx_http_dstack_prom_arena(cache, n);
            if (p == NULL) {
                return NGX_ERROR;
            }

            seg->start = p;
            p = ngx_http_dstack_prom_render(p, family, s, sr,
                                            &cache->counters[i],
                                            &cache->values[s->replica]);
            seg->len = p - seg->start;
        }

        cache->last = p;
        cache->size += seg->len;

        return ngx_http_dstack_prom_ref(st, seg->start, seg->len);

    default: /* NGX_HTTP_DSTACK_PROM_CACHED */

        c = st->changed.elts;

        if (st->next < st->changed.nelts && c[st->next].service == i) {
            c = &c[st->next++];

            if (c->families & (1 << family)) {
                n = ngx_http_dstack_prom_bound(family, s, sr);

                b = ngx_http_dstack_stats_reserve(&st->out, n);
                if (b == NULL) {
                    return NGX_ERROR;
                }

                st->ref = NULL;
                b->last = ngx_http_dstack_prom_render(b->last, family, s, sr,
                                                      &c->counters,
                                                      c->values);
                return NGX_OK;
            }
        }

        seg = &cache->segs[family * (cache->col.services.nelts + 1) + 1 + i];

        return ngx_http_dstack_prom_ref(st, seg->start, seg->len);
    }
}


/* room for n bytes of the cache's text, in the block being written or a
 * new one */
static u_char *
ngx_http_dstack_prom_arena(ngx_http_dstack_prom_cache_t *cache, size_t n)
{
    size_t                         size;
    ngx_http_dstack_prom_block_t  *b;

    if (cache->last && (size_t) (cache->end - cache->last) >= n) {
        return cache->last;
    }

    size = sizeof(ngx_http_dstack_prom_block_t) + n;

    if (size <= NGX_HTTP_DSTACK_PROM_ARENA && ngx_http_dstack_prom_spare) {
        b = ngx_http_dstack_prom_spare;
        ngx_http_dstack_prom_spare = b->next;
        ngx_http_dstack_prom_spare_size -= b->size;

    } else {
        b = ngx_http_dstack_prom_block_alloc(size);
        if (b == NULL) {
            return NULL;
        }
    }

    b->next = cache->blocks;
    cache->blocks = b;

    cache->last = (u_char *) b + sizeof(ngx_http_dstack_prom_block_t);
    cache->end = (u_char *) b + b->size;

    return cache->last;
}


/* a block of at least `size` bytes, whole 2 MB, on a 2 MB boundary: the
 * unit a transparent huge page comes in (x86-64, arm64 with 4 KB pages) */
static ngx_http_dstack_prom_block_t *
ngx_http_dstack_prom_block_alloc(size_t size)
{
    u_char                        *p, *start;
    ngx_http_dstack_prom_block_t  *b;

    size = ngx_align(size, NGX_HTTP_DSTACK_PROM_ARENA);

    p = mmap(NULL, size + NGX_HTTP_DSTACK_PROM_ARENA, PROT_READ|PROT_WRITE,
             MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_errno,
                      "dstack prometheus: mmap(%uz) failed", size);
        return NULL;
    }

    /* the aligned part stays, what is around it goes back */

    start = ngx_align_ptr(p, NGX_HTTP_DSTACK_PROM_ARENA);

    if (start != p) {
        (void) munmap(p, start - p);
    }

    (void) munmap(start + size, p + NGX_HTTP_DSTACK_PROM_ARENA - start);

#ifdef MADV_HUGEPAGE
    /* a hint: where huge pages are off or scarce it fails or is ignored */
    (void) madvise(start, size, MADV_HUGEPAGE);
#endif

    b = (ngx_http_dstack_prom_block_t *) start;
    b->size = size;

    return b;
}


static void
ngx_http_dstack_prom_block_free(ngx_http_dstack_prom_block_t *b)
{
    if (munmap(b, b->size) == -1) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_errno,
                      "dstack prometheus: munmap(%uz) failed", b->size);
    }
}


/* cached text to send as it is: the buffer before grows when the text
 * follows it in memory */
static ngx_int_t
ngx_http_dstack_prom_ref(ngx_http_dstack_prom_stream_t *st, u_char *start,
    size_t len)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (len == 0) {
        return NGX_OK;
    }

    st->referenced += len;

    b = st->ref;

    if (b && b->last == start) {
        b->last += len;
        b->end = b->last;
        return NGX_OK;
    }

    if (st->free_refs) {
        cl = st->free_refs;
        st->free_refs = cl->next;
        b = cl->buf;
        ngx_memzero(b, sizeof(ngx_buf_t));

    } else {
        b = ngx_calloc_buf(st->out.pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        cl = ngx_alloc_chain_link(st->out.pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
    }

    b->memory = 1;
    b->start = start;
    b->pos = start;
    b->last = start + len;
    b->end = b->last;
    b->tag = (ngx_buf_tag_t) &ngx_http_dstack_module;

    cl->next = NULL;

    *st->out.last = cl;
    st->out.last = &cl->next;

    /* what comes next is not written into the buffer before this */
    st->out.buf = NULL;
    st->ref = b;

    return NGX_OK;
}


/* what one service's lines of a family take at most */
static size_t
ngx_http_dstack_prom_bound(ngx_uint_t family,
    ngx_http_dstack_stats_service_t *s, ngx_http_dstack_stats_replica_t *sr)
{
    size_t      n;
    ngx_uint_t  j;

    if (family == NGX_HTTP_DSTACK_PROM_MODEL_TTFT
        || family == NGX_HTTP_DSTACK_PROM_MODEL_TPOT)
    {
        if (!s->model) {
            return 0;
        }

        n = s->prom.len + NGX_HTTP_DSTACK_STATS_LINE;

        for (j = 0; j < s->nreplicas; j++) {
            n += sr[j].prom.len + s->prom.len + NGX_HTTP_DSTACK_STATS_LINE;
        }

        return ngx_http_dstack_prom_families[family].lines * n;
    }

    if (family < NGX_HTTP_DSTACK_PROM_REPLICA_INFLIGHT) {
        return ngx_http_dstack_prom_families[family].lines
               * (s->prom.len + NGX_HTTP_DSTACK_STATS_LINE);
    }

    n = 0;

    for (j = 0; j < s->nreplicas; j++) {
        n += sr[j].prom.len + s->prom.len + NGX_HTTP_DSTACK_STATS_LINE;
    }

    return n;
}


/* one service's lines of a family, from the numbers given: cnt for the
 * service's families, v[] (one row per replica) for the replicas' */
static u_char *
ngx_http_dstack_prom_render(u_char *p, ngx_uint_t family,
    ngx_http_dstack_stats_service_t *s, ngx_http_dstack_stats_replica_t *sr,
    ngx_http_dstack_stats_counters_t *cnt,
    uint64_t (*v)[NGX_HTTP_DSTACK_STATS_RVALUES])
{
    uint64_t                        count, cum;
    ngx_uint_t                      j, k, w, c;
    ngx_http_dstack_prom_family_t  *pf;

    pf = &ngx_http_dstack_prom_families[family];

    switch (family) {

    case NGX_HTTP_DSTACK_PROM_REQUESTS:

        for (c = 0; c < NGX_HTTP_DSTACK_CLASSES; c++) {
            p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
            p = ngx_sprintf(p, "\",class=\"%V\"} %uL\n",
                            &ngx_http_dstack_stats_classes[c],
                            cnt->requests[c]);
        }

        break;

    case NGX_HTTP_DSTACK_PROM_INFLIGHT:

        p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
        p = ngx_sprintf(p, "\"} %L\n", cnt->inflight);

        break;

    case NGX_HTTP_DSTACK_PROM_MODEL_REQUESTS:
    case NGX_HTTP_DSTACK_PROM_MODEL_ERRORS:

        p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
        p = ngx_sprintf(p, "\"} %uL\n",
                        cnt->model[family
                                   - NGX_HTTP_DSTACK_PROM_MODEL_REQUESTS]);

        break;

    case NGX_HTTP_DSTACK_PROM_MODEL_TTFB:

        p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
        p = ngx_sprintf(p, "\"} %uL.%03uL\n", cnt->model[2] / 1000,
                        cnt->model[2] % 1000);

        break;

    case NGX_HTTP_DSTACK_PROM_MODEL_TOKENS:

        p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
        p = ngx_sprintf(p, "\",type=\"prompt\"} %uL\n", cnt->model[3]);
        p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
        p = ngx_sprintf(p, "\",type=\"completion\"} %uL\n", cnt->model[4]);

        break;

    case NGX_HTTP_DSTACK_PROM_HELD:

        p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
        p = ngx_sprintf(p, "\"} %L\n", cnt->held);

        break;

    case NGX_HTTP_DSTACK_PROM_HELD_SECONDS:

        p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
        p = ngx_sprintf(p, "\"} %uL.%03uL\n", cnt->held_ms_sum / 1000,
                        cnt->held_ms_sum % 1000);

        break;

    case NGX_HTTP_DSTACK_PROM_COLD_STARTS:

        p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
        p = ngx_sprintf(p, "\"} %uL\n", cnt->cold_starts);

        break;

    case NGX_HTTP_DSTACK_PROM_COLD_SECONDS:

        p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
        p = ngx_sprintf(p, "\"} %uL.%03uL\n",
                        cnt->cold_start_ms_sum / 1000,
                        cnt->cold_start_ms_sum % 1000);

        break;

    case NGX_HTTP_DSTACK_PROM_DURATION:

        /*
         * _count is the completed admitted requests; the buckets are
         * read a moment apart from it, so keep them under it to stay
         * cumulative.  Requests over the last bound are only in +Inf.
         */

        count = 0;
        for (c = 1; c < NGX_HTTP_DSTACK_CLASSES; c++) {
            count += cnt->requests[c];
        }

        cum = 0;

        for (k = 0; k < NGX_HTTP_DSTACK_HIST; k++) {
            cum += cnt->hist[k];

            p = ngx_http_dstack_prom_sample(p, &pf->name, "_bucket",
                                            &s->prom);
            p = ngx_sprintf(p, "\",le=\"%V\"} %uL\n",
                            &ngx_http_dstack_prom_le[k],
                            ngx_min(cum, count));
        }

        p = ngx_http_dstack_prom_sample(p, &pf->name, "_bucket", &s->prom);
        p = ngx_sprintf(p, "\",le=\"+Inf\"} %uL\n", count);

        p = ngx_http_dstack_prom_sample(p, &pf->name, "_sum", &s->prom);
        p = ngx_sprintf(p, "\"} %uL.%03uL\n",
                        cnt->time_ms_sum / 1000, cnt->time_ms_sum % 1000);

        p = ngx_http_dstack_prom_sample(p, &pf->name, "_count", &s->prom);
        p = ngx_sprintf(p, "\"} %uL\n", count);

        break;

    case NGX_HTTP_DSTACK_PROM_MODEL_TTFT:
    case NGX_HTTP_DSTACK_PROM_MODEL_TPOT:

        /* read live: a sample counts in the service and its replica at
         * once, so the service's latency_seen tells when these change */

        if (!s->model) {
            break;
        }

        k = family - NGX_HTTP_DSTACK_PROM_MODEL_TTFT;

        p = ngx_http_dstack_prom_latency(p, pf, s, NULL, k,
                ngx_http_dstack_metrics_service_latency(s->metrics));

        for (j = 0; j < s->nreplicas; j++) {
            p = ngx_http_dstack_prom_latency(p, pf, s, &sr[j], k,
                    sr[j].metrics
                    ? ngx_http_dstack_metrics_replica_latency(sr[j].metrics)
                    : NULL);
        }

        break;

    case NGX_HTTP_DSTACK_PROM_WINDOW:

        for (w = 0; w < NGX_HTTP_DSTACK_STATS_NWINDOWS; w++) {
            for (c = 0; c < NGX_HTTP_DSTACK_CLASSES; c++) {
                p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
                p = ngx_sprintf(p, "\",window=\"%uis\",class=\"%V\"} %uL\n",
                                ngx_http_dstack_stats_seconds[w],
                                &ngx_http_dstack_stats_classes[c],
                                cnt->windows[w][c]);
            }
        }

        break;

    default: /* the replicas' families */

        k = family - NGX_HTTP_DSTACK_PROM_REPLICA_INFLIGHT;

        for (j = 0; j < s->nreplicas; j++) {
            p = ngx_http_dstack_prom_sample(p, &pf->name, "", &s->prom);
            p = ngx_cpymem(p, "\",replica=\"", sizeof("\",replica=\"") - 1);
            p = ngx_cpymem(p, sr[j].prom.data, sr[j].prom.len);
            p = ngx_sprintf(p, "\"} %uL\n", v[j][k]);
        }

        break;
    }

    return p;
}


/* one histogram of a latency record: the service's (sr NULL) or a
 * replica's, with its replica label */
static u_char *
ngx_http_dstack_prom_latency(u_char *p, ngx_http_dstack_prom_family_t *pf,
    ngx_http_dstack_stats_service_t *s, ngx_http_dstack_stats_replica_t *sr,
    ngx_uint_t kind, ngx_http_dstack_latency_t *lat)
{
    uint64_t    count[NGX_HTTP_DSTACK_LAT_BUCKETS], cum, sum;
    ngx_uint_t  k;

    for (k = 0; k < NGX_HTTP_DSTACK_LAT_BUCKETS; k++) {
        count[k] = lat ? __atomic_load_n(&lat->count[kind][k],
                                         __ATOMIC_RELAXED)
                       : 0;
    }

    sum = lat ? __atomic_load_n(&lat->sum_us[kind], __ATOMIC_RELAXED) : 0;

    cum = 0;

    for (k = 0; k < NGX_HTTP_DSTACK_LAT_BUCKETS; k++) {
        cum += count[k];

        p = ngx_http_dstack_prom_sample(p, &pf->name, "_bucket", &s->prom);
        p = ngx_http_dstack_prom_replica(p, sr);
        p = ngx_sprintf(p, "\",le=\"%V\"} %uL\n",
                        &ngx_http_dstack_latency_le[kind][k], cum);
    }

    p = ngx_http_dstack_prom_sample(p, &pf->name, "_sum", &s->prom);
    p = ngx_http_dstack_prom_replica(p, sr);
    p = ngx_sprintf(p, "\"} %uL.%06uL\n", sum / 1000000, sum % 1000000);

    p = ngx_http_dstack_prom_sample(p, &pf->name, "_count", &s->prom);
    p = ngx_http_dstack_prom_replica(p, sr);
    p = ngx_sprintf(p, "\"} %uL\n", cum);

    return p;
}


/* ",replica=\"<addr>" after the service label, for a replica's line */
static u_char *
ngx_http_dstack_prom_replica(u_char *p, ngx_http_dstack_stats_replica_t *sr)
{
    if (sr == NULL) {
        return p;
    }

    p = ngx_cpymem(p, "\",replica=\"", sizeof("\",replica=\"") - 1);

    return ngx_cpymem(p, sr->prom.data, sr->prom.len);
}


/* "<name><suffix>{service=\"<service>": the caller ends the labels;
 * the service escaped already.  Copies, no format: a scrape at 10,000
 * services writes some 650,000 of these. */

static u_char *
ngx_http_dstack_prom_sample(u_char *p, ngx_str_t *name, char *suffix,
    ngx_str_t *service)
{
    p = ngx_cpymem(p, name->data, name->len);

    while (*suffix) {
        *p++ = *suffix++;
    }

    p = ngx_cpymem(p, "{service=\"", sizeof("{service=\"") - 1);

    return ngx_cpymem(p, service->data, service->len);
}
