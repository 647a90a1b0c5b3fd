/*
 * ngx_http_dstack_module: the gateway data plane.
 *
 * Request flow (a location with "dstack_gateway on" or "dstack_openai
 * on"):
 *
 *   access phase   module.c hands the request to a front door: the Host
 *                  (handler.c) or the model endpoint's "model" (openai.c)
 *                  names the service; admission (admit.c) looks it up in
 *                  the worker's cache of the newest LMDB commit
 *                  (state.c), checks bearer auth (auth.c), rate limits
 *                  (limit.c) and a model's token budgets (budget.c,
 *                  which has stream.c ask a stream for its usage), and
 *                  takes a reference to the service's
 *                  ready replicas, or holds the request until one is
 *                  ready (hold.c); refusals are answered by reply.c
 *   content        stock proxy_pass to an upstream whose balancer is
 *                  "dstack_balancer" (balancer.c): least in-flight across
 *                  workers, ties round-robin, or a model's affinity
 *                  (rendezvous hashing with bounded load); another
 *                  replica on a failed connect
 *   log phase      admit.c, metrics.c: status class, request time,
 *                  in-flight
 *
 * Files call downwards only, never back: module.c; the front doors
 * handler.c and openai.c; admit.c; what admission uses (auth.c, limit.c,
 * budget.c, ssl.c, hold.c); then stream.c, state.c, metrics.c and
 * reply.c, which call nothing above them.
 *
 * A request reads LMDB only when a commit happened since the worker last
 * read the records it needs; what it keeps is in r->pool or referenced.
 * Shared memory: a fixed-layout metrics zone (metrics.c) and slab zones
 * for rate limit buckets (limit.c) and token budgets (budget.c); all
 * keep their data over "nginx -s reload".
 */

#ifndef NGX_HTTP_DSTACK_MODULE_H
#define NGX_HTTP_DSTACK_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ds_state.h"
#include "ds_json_scan.h"
#include "ds_affinity.h"


#define NGX_HTTP_DSTACK_WINDOW      300     /* seconds of 1 s buckets */
#define NGX_HTTP_DSTACK_HIST        12      /* request time histogram */

/* counter classes: index 0 counts requests the gateway refused itself
 * (auth, rate limits, bad requests); 1..5 the status classes of requests
 * admitted to the service (1xx..5xx, 503 "no replica" included) */
#define NGX_HTTP_DSTACK_REFUSED     0
#define NGX_HTTP_DSTACK_CLASSES     6

#define NGX_HTTP_DSTACK_STATS_OFF   0
#define NGX_HTTP_DSTACK_STATS_JSON  1
#define NGX_HTTP_DSTACK_STATS_PROM  2

/* model latency (latency.c): histograms of time to first token and time
 * per output token, and 10 s slots of them over the 300 s window */
#define NGX_HTTP_DSTACK_LAT_TTFT    0
#define NGX_HTTP_DSTACK_LAT_TPOT    1
#define NGX_HTTP_DSTACK_LAT_KINDS   2
#define NGX_HTTP_DSTACK_LAT_BUCKETS 14
#define NGX_HTTP_DSTACK_LAT_SLOT    10      /* seconds a slot covers */
#define NGX_HTTP_DSTACK_LAT_SLOTS   (NGX_HTTP_DSTACK_WINDOW \
                                     / NGX_HTTP_DSTACK_LAT_SLOT)


/* ---- shared-memory metrics (metrics.c) --------------------------------- */

/*
 * One second of a service.  The buckets live apart from the counters, a
 * row per second of the window with one bucket per service slot
 * (metrics.c): the requests of one second, to however many services,
 * touch one row, not a page per service.  32 bytes, never across a cache
 * line.
 */
typedef struct {
    uint32_t                    second;     /* unix time it counts */
    uint32_t                    arrivals;   /* admitted, at arrival */
    uint32_t                    count[NGX_HTTP_DSTACK_CLASSES];
                                            /* at completion */
} ngx_http_dstack_bucket_t;

/* Counters are updated with __atomic builtins without a lock; a slot
 * changes owner (uid) only when the writer reassigns a freed slot, and
 * the first worker to see the new uid zeroes it.  What every request
 * touches comes first, in the first two cache lines of the slot (a
 * 128-byte aligned pair, which the adjacent-line prefetcher loads
 * together); the rest is written by the model endpoint and holds. */
typedef struct {
    uint64_t                    uid;        /* owning service, 0 = free */
    int64_t                     inflight;
    uint64_t                    last_active;    /* unix second of the last
                                                   arrival or completion */
    uint64_t                    time_ms_sum;
    uint64_t                    requests[NGX_HTTP_DSTACK_CLASSES];
    uint64_t                    hist[NGX_HTTP_DSTACK_HIST];

    /* once a second: the newest second a bucket was started for, so that
     * readers skip a service idle for the whole window (metrics.c) */
    uint64_t                    last_second;

    /* the model endpoint (openai.c) */
    uint64_t                    model_requests;
    uint64_t                    model_errors;   /* 4xx and 5xx answers */
    uint64_t                    ttfb_ms_sum;    /* admission to header */
    uint64_t                    prompt_tokens;  /* from "usage" */
    uint64_t                    completion_tokens;

    /* scale from zero (hold.c) */
    int64_t                     held;           /* waiting now */
    uint64_t                    held_total;     /* ever held */
    uint64_t                    held_ms_sum;    /* time spent held */
    uint64_t                    hold_timeouts;  /* 503 after waiting */
    uint64_t                    hold_rejected;  /* 429: queue full */
    uint64_t                    cold_starts;    /* first replica came */
    uint64_t                    cold_start_ms_sum; /* first held request
                                                   to a ready replica */
    uint64_t                    hold_since;     /* ms of the first request
                                                   held now, 0 = none */
    uint64_t                    notified;       /* ms of the last notice
                                                   sent to controld */
} __attribute__((aligned(128))) ngx_http_dstack_service_metrics_t;

typedef struct {
    uint64_t                    uid;        /* owning replica, 0 = free */
    int64_t                     inflight;
    uint64_t                    requests;
    uint64_t                    failures;   /* connect/read failures */
} ngx_http_dstack_replica_metrics_t;

/*
 * The model latency of a service or a replica (latency.c): one per
 * service slot and one per replica slot, in arrays of their own after
 * the buckets (metrics.c), so that neither the services' hot lines nor
 * the replicas' 32-byte slots grow.  A slot of the window counts the
 * answers of 10 s, by bucket, with their sum per bucket so that a
 * quantile is the mean of the bucket that holds it rather than the
 * bucket's middle.  Sums in units of 100 us, clamped to 60 s a sample.
 * 228 bytes a slot, 30 slots and the totals: 7,096 bytes per service
 * and per replica (at the default capacity, 1024 + 8192 slots: 62 MB of
 * address space, of which only the pages of slots ever used are
 * touched: the rest stays the kernel's zero page).
 */
typedef struct {
    uint32_t                    epoch;      /* unix time / LAT_SLOT */
    uint32_t                    count[NGX_HTTP_DSTACK_LAT_KINDS]
                                     [NGX_HTTP_DSTACK_LAT_BUCKETS];
    uint32_t                    sum[NGX_HTTP_DSTACK_LAT_KINDS]
                                   [NGX_HTTP_DSTACK_LAT_BUCKETS];
} ngx_http_dstack_lat_slot_t;

typedef struct {
    /* since the slot's owner came, for Prometheus; samples and sum_us
     * first, in one line: a scrape reads them to learn what changed */
    uint64_t                    samples[NGX_HTTP_DSTACK_LAT_KINDS];
    uint64_t                    sum_us[NGX_HTTP_DSTACK_LAT_KINDS];
    uint64_t                    count[NGX_HTTP_DSTACK_LAT_KINDS]
                                     [NGX_HTTP_DSTACK_LAT_BUCKETS];
    ngx_http_dstack_lat_slot_t  slot[NGX_HTTP_DSTACK_LAT_SLOTS];
} ngx_http_dstack_latency_t;

/* a quantile of one window, read from the slots */
typedef struct {
    uint64_t                    n;          /* samples */
    uint64_t                    p50_us;
    uint64_t                    p99_us;
} ngx_http_dstack_lat_window_t;


/* ---- configuration ----------------------------------------------------- */

typedef struct {
    ngx_str_t                   state_path;     /* dstack_state */
    ngx_uint_t                  max_services;   /* dstack_capacity */
    ngx_uint_t                  max_replicas;
    ngx_shm_zone_t             *metrics_zone;
    ngx_shm_zone_t             *limit_zone;
    size_t                      limit_zone_size; /* dstack_limit_zone */
    ngx_msec_t                  watch_interval;  /* state file checks */
    time_t                      retry_after;     /* 503 Retry-After */
    ngx_str_t                   notify;          /* dstack_notify socket */
    ngx_msec_t                  hold_poll;       /* dstack_hold_poll */
    ngx_shm_zone_t             *budget_zone;
    size_t                      budget_zone_size; /* dstack_budget_zone */
} ngx_http_dstack_main_conf_t;

typedef struct {
    ngx_flag_t                  gateway;        /* dstack_gateway */
    ngx_flag_t                  openai;         /* dstack_openai */
    ngx_str_t                   domain;         /* dstack_domain */
    ngx_uint_t                  stats;          /* dstack_stats */
} ngx_http_dstack_loc_conf_t;


/* ---- per request ------------------------------------------------------- */

/*
 * The context and what hangs off it live in r->pool, and a request's
 * pool is small (request_pool_size, 4k by default): nginx itself fills
 * most of it, and a request that spills into one more block costs a
 * malloc and a free.  Keep these compact; the balancer's state lives in
 * the context.  The ready replicas are not in the pool: the request
 * holds a reference to the worker's copy (peers_t below).
 */

/* a ready replica, copied out of LMDB by the worker's cache (state.c);
 * its sockaddr is built only when the balancer picks it */
typedef struct {
    ngx_http_dstack_replica_metrics_t *metrics; /* NULL: slot over capacity */
    uint64_t                    uid;            /* affinity: its weight */
    uint8_t                     addr[16];       /* network order */
    uint16_t                    port;           /* host order */
    uint8_t                     family;         /* DS_AF_* */
} ngx_http_dstack_peer_t;

/*
 * The ready replicas of a service at one commit, built once by the
 * worker's cache (state.c) and shared by the requests that use them: the
 * cache holds one reference while the commit is the newest, each request
 * one until its pool goes, so a long stream keeps the replicas it was
 * given and a request copies nothing.
 */
typedef struct {
    ngx_uint_t                  refs;
    ngx_uint_t                  n;
    ngx_uint_t                  cap;            /* room for */
    ngx_http_dstack_peer_t      peer[1];        /* n of them */
} ngx_http_dstack_peers_t;

/*
 * A service as the access phase uses it: the hot part of the worker's
 * cache entry (state.c), made once per commit, with its metrics slot and
 * its ready replicas resolved.  What every request reads is here, in two
 * cache lines (128 bytes, aligned: a pair the adjacent-line prefetcher
 * loads together) that are the cache's slot itself, so that traffic over
 * many services touches two lines per service, not a slot, a 1 KB entry
 * and its record.  The rest of the record (rate limits, model, redirect
 * and hold settings) is behind svc, read only by the requests that use
 * it.
 */
typedef struct {
    /* the key, what a lookup compares: a line of its own */
    uint8_t                     len;
    u_char                      name[DS_NAME_MAX];

    uint64_t                    snapshot;       /* state.c's; 0: empty */
    ngx_http_dstack_service_metrics_t *metrics; /* NULL: no slot */
    ngx_http_dstack_peers_t    *ready;          /* NULL: none ready */
    const ds_service_t         *svc;            /* the whole record */
    uint64_t                    uid;
    uint64_t                    max_body_size;  /* 0 = unlimited */
    uint32_t                    read_timeout_ms;
    uint32_t                    connect_timeout_ms;
    uint32_t                    flags;          /* DS_SERVICE_* */
    uint8_t                     n_rate_limits;
    uint8_t                     found;          /* state.c's: 0 = no such
                                                   service at snapshot */
} __attribute__((aligned(128))) ngx_http_dstack_service_t;

/* a request waiting for a replica (hold.c), allocated when it first
 * waits */
typedef struct {
    ngx_queue_t                 queue;          /* in the worker's queue */
    struct ngx_http_dstack_ctx_s *ctx;
    ngx_msec_t                  since;
} ngx_http_dstack_held_t;

typedef union {
    struct sockaddr             sockaddr;
    struct sockaddr_in          sockaddr_in;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6         sockaddr_in6;
#endif
} ngx_http_dstack_inet_t;

/* token budgets (budget.c): counters of a (token, model) since its node
 * was made */
typedef struct {
    uint64_t                    requests;       /* admitted */
    uint64_t                    refused;        /* 429 over a budget */
    uint64_t                    prompt_tokens;
    uint64_t                    completion_tokens;
} ngx_http_dstack_budget_usage_t;

/* the limit a refused request is over */
#define NGX_HTTP_DSTACK_BUDGET_OVER_REQUESTS  1
#define NGX_HTTP_DSTACK_BUDGET_OVER_SIZE      2   /* estimate > tpm */
#define NGX_HTTP_DSTACK_BUDGET_OVER_TOKENS    3
#define NGX_HTTP_DSTACK_BUDGET_OVER_DAY       4

/* a request's budget, in r->pool, made only when a limit applies */
typedef struct {
    u_char                      key[24];        /* token hash 16, uid 8 */
    uint32_t                    hash;
    uint32_t                    rpm;            /* the limits, 0 = none */
    uint32_t                    tpm;
    uint64_t                    tpd;
    uint64_t                    day;            /* unix day reserved in */
    uint64_t                    estimate;       /* tokens reserved */
    uint64_t                    completion_estimate;
    uint64_t                    prompt;         /* the answer's usage */
    uint64_t                    completion;
    /* for the headers, at admission */
    uint64_t                    requests_left;
    uint64_t                    tokens_left;
    uint64_t                    day_left;
    uint64_t                    requests_reset; /* ms to full */
    uint64_t                    tokens_reset;
    uint64_t                    day_reset;
    uint64_t                    retry;          /* ms, when refused */
    ngx_uint_t                  status;         /* of the answer */
    ngx_uint_t                  over;           /* NGX_HTTP_DSTACK_BUDGET_
                                                   OVER_*, 0 admitted */
    unsigned                    reserved:1;     /* to settle */
    unsigned                    usage_seen:1;
    unsigned                    strip_usage:1;  /* the gateway asked a
                                                   stream for its usage */
} ngx_http_dstack_budget_t;

/* a node of the zone, copied for the stats */
typedef struct {
    ngx_str_t                   token;          /* name, "" anonymous */
    ngx_str_t                   service;
    ngx_str_t                   model;
    ngx_http_dstack_budget_usage_t  usage;
    uint64_t                    day;
    uint64_t                    day_tokens;
} ngx_http_dstack_budget_entry_t;

typedef struct ngx_http_dstack_ctx_s {
    ngx_str_t                   service;        /* run name */
    uint64_t                    service_uid;
    ngx_http_dstack_service_metrics_t *metrics; /* NULL: no slot */
    ngx_http_request_t         *request;        /* the main request */

    ngx_http_dstack_peers_t    *ready;          /* a reference; NULL: no
                                                   replica is ready */

    /* the balancer (balancer.c) */
    ngx_http_dstack_peer_t     *current;        /* in flight by this try */
    ngx_http_dstack_replica_metrics_t *current_metrics; /* its counters:
                                                   free() touches no peer */
    uint8_t                    *tried;          /* bit per peer */
    uint64_t                    tried_few;      /* tried, when <= 64 peers */
    ngx_http_dstack_inet_t      sockaddr;       /* of the current try */

    uint64_t                    max_body_size;  /* 0 = unlimited */
    off_t                       body_received;  /* chunked bodies */
    ngx_msec_t                  start;          /* ngx_current_msec */
    ngx_msec_t                  released;       /* a held request got
                                                   replicas; 0: never held */

    struct ngx_http_dstack_answer_s *answer;    /* openai: what the
                                                   answer's body tells */
    /* token budgets: openai.c sets the model's, budget.c the rest */
    ngx_str_t                   body;           /* openai: the request's */
    ngx_str_t                   model_name;
    ds_budget_t                 model_budget;
    ngx_http_dstack_budget_t   *budget;         /* NULL: no limit */
    struct ngx_http_dstack_stream_s *stream;    /* stream.c's */
    ngx_http_dstack_held_t     *held;           /* hold.c */

    uint32_t                    read_timeout;   /* ms, 0 = location's */
    uint32_t                    connect_timeout;
    uint32_t                    hold_max;       /* 0: never hold */
    uint32_t                    hold_timeout;   /* ms */

    /* affinity routing (openai.c sets, balancer.c uses) */
    uint32_t                    load_factor;    /* x 1000; 0: least
                                                   in-flight */
    uint64_t                    affinity_key;

    unsigned                    openai:1;       /* model endpoint */
    unsigned                    reading_body:1; /* openai: body on its way */
    unsigned                    body_ready:1;   /* openai: body read */
    unsigned                    admitted:1;     /* counted in-flight */
    unsigned                    token_consumed:1; /* not forwarded */
    unsigned                    refused:1;      /* refused by the gateway */
    unsigned                    done:1;         /* access phase finished */
    unsigned                    holding:1;      /* waits for a replica */
    unsigned                    resumed:1;      /* a replica came */
} ngx_http_dstack_ctx_t;


extern ngx_module_t  ngx_http_dstack_module;


/* state.c: the worker's LMDB reader */
ngx_int_t ngx_http_dstack_state_init_worker(ngx_cycle_t *cycle);
void ngx_http_dstack_state_exit_worker(ngx_cycle_t *cycle);
/*
 * The access phase: peek() learns which commit is the newest (NGX_OK, or
 * NGX_DECLINED when the state is unavailable; the reason is logged at
 * most once per watch interval), then service() and token() answer from
 * the worker's cache of that commit, reading LMDB only on a miss: NGX_OK,
 * NGX_DECLINED (no such record) or NGX_ERROR (err says why).  What they
 * return is valid until state_end().
 */
ngx_int_t ngx_http_dstack_state_peek(ngx_log_t *log);
ngx_int_t ngx_http_dstack_state_service(u_char *name, size_t len,
    const ngx_http_dstack_service_t **svc, ds_err_t *err);
ngx_int_t ngx_http_dstack_state_token(const u_char *hash,
    const ds_token_t **tok, ds_err_t *err);
/* is the user of the user token tok (token()'s of this request) a member
 * of project ("" = main): NGX_OK, NGX_DECLINED or NGX_ERROR */
ngx_int_t ngx_http_dstack_state_member(const ds_token_t *tok,
    const u_char *project, size_t plen, ds_err_t *err);
/* a reference to ready replicas, and its end */
ngx_http_dstack_peers_t *ngx_http_dstack_peers_ref(
    ngx_http_dstack_peers_t *peers);
void ngx_http_dstack_peers_unref(ngx_http_dstack_peers_t *peers);
/* a renewed read transaction for reading records directly, or NULL when
 * the state is unavailable; service() and token() work inside it too */
ds_txn_t *ngx_http_dstack_state_begin(ngx_log_t *log);
void ngx_http_dstack_state_end(void);
/* the snapshot peek() or begin() found: changes with every commit and
 * every reopening of the state; 0 when unknown */
uint64_t ngx_http_dstack_state_snapshot(void);

/* module.c registers the access phase handler; it goes on through one
 * of the front doors, which hand the service they found to admission */

/* handler.c: the Host front door ("dstack_gateway on") */
ngx_int_t ngx_http_dstack_host_access(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_str_t *domain);
/* 1 when the host is a project's model endpoint, gateway--<P>.<domain>,
 * which the Host front door's server answers (its server name covers
 * every label) */
ngx_uint_t ngx_http_dstack_host_models(ngx_http_request_t *r,
    ngx_str_t *domain);

/* openai.c: the model endpoint ("dstack_openai on", and the Host front
 * door's gateway--<P>.<domain>): the project's models, from the host */
ngx_int_t ngx_http_dstack_openai_access(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
ngx_int_t ngx_http_dstack_openai_filter_init(ngx_conf_t *cf);

/* admit.c: admission */
/* the request's context, with its pool cleanup; NULL: out of memory */
ngx_http_dstack_ctx_t *ngx_http_dstack_ctx_create(ngx_http_request_t *r);
/* serve the service `name` (auth, limits, replicas), after peek() or
 * begin(); calls state_end() */
ngx_int_t ngx_http_dstack_serve(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_str_t *name);
/* the replicas again, for a request that was held */
ngx_int_t ngx_http_dstack_repick(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
/* the request context's pool cleanup: in-flight counts, the hold queue,
 * the replicas' reference; the log phase finds contexts by it */
void ngx_http_dstack_ctx_cleanup(void *data);
ngx_int_t ngx_http_dstack_log_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_dstack_body_filter_init(ngx_conf_t *cf);

/* reply.c: the gateway's own answers; calls nothing of the module */
/* answer with a JSON error whose type follows the status and finalize;
 * returns NGX_DONE */
ngx_int_t ngx_http_dstack_refuse(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_uint_t status, ngx_str_t *reason,
    time_t retry_after);
/* 503, "gateway state is unavailable", Retry-After: 1 */
ngx_int_t ngx_http_dstack_refuse_unavailable(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
/* the same with the type and code given; returns NGX_DONE */
ngx_int_t ngx_http_dstack_fail(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_uint_t status, const char *type,
    const char *code, ngx_str_t *message);
/* {"error":{"message","type","param":null,"code"}}, OpenAI's shape, the
 * one every error of the module has */
ngx_int_t ngx_http_dstack_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, const char *code,
    ngx_str_t *message);
ngx_int_t ngx_http_dstack_send_json(ngx_http_request_t *r,
    ngx_uint_t status, ngx_chain_t *body);
ngx_int_t ngx_http_dstack_add_header(ngx_http_request_t *r,
    const char *key, ngx_str_t *value);
/* case-insensitive lookup in the request's or the response's headers */
ngx_table_elt_t *ngx_http_dstack_find_header(ngx_http_request_t *r,
    const char *name);
ngx_table_elt_t *ngx_http_dstack_find_out_header(ngx_http_request_t *r,
    const char *name);

/* auth.c: may a token reach the service `name`: NGX_OK (*token the
 * token, valid until state_end()), or the status to answer (401, 403) */
ngx_int_t ngx_http_dstack_auth(ngx_http_request_t *r, ngx_str_t *name,
    const ds_token_t **token, ngx_str_t *reason);
/* may the request's token (token()'s) open the service keyed name: by
 * itself (ds_token_allows), or as a user token of a member of the
 * service's project: NGX_OK or NGX_DECLINED */
ngx_int_t ngx_http_dstack_token_opens(ngx_http_request_t *r,
    const ds_token_t *tok, const u_char *name, size_t len);
/* the request's token: NGX_OK (*tok valid until state_end()),
 * NGX_DECLINED (no Authorization header) or 401 */
ngx_int_t ngx_http_dstack_token(ngx_http_request_t *r,
    const ds_token_t **tok, ngx_str_t *reason);

/* lru.c: a slab zone of nodes in an rbtree with an LRU queue, kept over
 * reloads (limit.c's buckets, budget.c's budgets) */
typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 queue;      /* most recently used first */
} ngx_http_dstack_lru_sh_t;

typedef struct {
    ngx_http_dstack_lru_sh_t   *sh;
    ngx_slab_pool_t            *shpool;
    ngx_rbtree_insert_pt        insert;
} ngx_http_dstack_lru_t;                    /* the zone's data */

ngx_shm_zone_t *ngx_http_dstack_lru_zone(ngx_conf_t *cf, ngx_str_t *name,
    size_t size, const char *directive, ngx_rbtree_insert_pt insert);

/* limit.c */
ngx_int_t ngx_http_dstack_limit_zone_init(ngx_conf_t *cf,
    ngx_http_dstack_main_conf_t *dmcf);
/* NGX_OK, NGX_BUSY (over the limit; *retry_after set) or NGX_ERROR */
ngx_int_t ngx_http_dstack_limit(ngx_http_request_t *r,
    const ds_service_t *svc, time_t *retry_after);

/* budget.c: token budgets of the model endpoint */
ngx_int_t ngx_http_dstack_budget_zone_init(ngx_conf_t *cf,
    ngx_http_dstack_main_conf_t *dmcf);
/* after auth, in the read transaction (tok NULL: anonymous): NGX_OK,
 * NGX_DONE when refused (answered), or an error status */
ngx_int_t ngx_http_dstack_budget_admit(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, const ds_token_t *tok);
/* the x-ratelimit-* headers of the answer; notes its status */
ngx_int_t ngx_http_dstack_budget_headers(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
/* the request ends: its usage replaces the reservation */
void ngx_http_dstack_budget_settle(ngx_http_dstack_ctx_t *ctx);
/* the zone's nodes for the stats: ngx_http_dstack_budget_entry_t */
ngx_array_t *ngx_http_dstack_budget_entries(ngx_pool_t *pool);

/* stream.c: a stream's usage, asked for and taken out of the answer */
/* the body asks for the usage unless the client did: *asked */
ngx_int_t ngx_http_dstack_stream_ask_usage(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_uint_t *asked);
ngx_int_t ngx_http_dstack_stream_strip(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_chain_t *in, ngx_chain_t **out);
void ngx_http_dstack_stream_free(ngx_http_request_t *r, ngx_chain_t *out);

/* metrics.c */
ngx_int_t ngx_http_dstack_metrics_zone_init(ngx_conf_t *cf,
    ngx_http_dstack_main_conf_t *dmcf);
void ngx_http_dstack_metrics_init_worker(ngx_cycle_t *cycle);
ngx_http_dstack_service_metrics_t *ngx_http_dstack_service_metrics(
    uint32_t slot, uint64_t uid);
ngx_http_dstack_replica_metrics_t *ngx_http_dstack_replica_metrics(
    uint32_t slot, uint64_t uid);
void ngx_http_dstack_metrics_admit(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
/* a hint: the slot's hot lines and its bucket of this second (NULL: none) */
void ngx_http_dstack_metrics_prefetch(ngx_http_dstack_service_metrics_t *m);
/* the log phase did not run for an admitted request: release in-flight */
void ngx_http_dstack_metrics_release(ngx_http_dstack_ctx_t *ctx);
/* an admitted request completes: its status class, time, in-flight */
void ngx_http_dstack_metrics_complete(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
/* the log phase of the request's context: completes it when admitted,
 * counts it when refused */
void ngx_http_dstack_metrics_log(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
/* sums of a service's buckets over the last `seconds` (<= WINDOW) */
void ngx_http_dstack_metrics_window(ngx_http_dstack_service_metrics_t *m,
    time_t now, ngx_uint_t seconds, uint64_t sums[NGX_HTTP_DSTACK_CLASSES]);
/* several windows in one pass: seconds[] ascending; a window longer than
 * NGX_HTTP_DSTACK_WINDOW gets the whole ring; arrivals may be NULL */
void ngx_http_dstack_metrics_windows(ngx_http_dstack_service_metrics_t *m,
    time_t now, const ngx_uint_t *seconds, ngx_uint_t n,
    uint64_t (*sums)[NGX_HTTP_DSTACK_CLASSES], uint64_t *arrivals);

/* the zone's mutex, for latency.c's slots; NULL: no zone */
ngx_shmtx_t *ngx_http_dstack_metrics_mutex(void);
/* the latency records of a service's and a replica's slot (NULL:
 * none); a slot's record is zeroed when the slot changes owner */
ngx_http_dstack_latency_t *ngx_http_dstack_metrics_service_latency(
    ngx_http_dstack_service_metrics_t *m);
ngx_http_dstack_latency_t *ngx_http_dstack_metrics_replica_latency(
    ngx_http_dstack_replica_metrics_t *rm);

/* latency.c */
/* the slot of the window for `now`, started (zeroed) when it holds an
 * older one; takes the zone mutex only then */
void ngx_http_dstack_latency_add(ngx_http_dstack_latency_t *lat,
    ngx_uint_t kind, uint64_t us, time_t now);
/* windows of seconds[] (multiples of LAT_SLOT, at most WINDOW) */
void ngx_http_dstack_latency_windows(ngx_http_dstack_latency_t *lat,
    ngx_uint_t kind, time_t now, const ngx_uint_t *seconds, ngx_uint_t n,
    ngx_http_dstack_lat_window_t *out);
/* the bucket bounds in seconds, as Prometheus shows them ("+Inf" last) */
extern ngx_str_t  ngx_http_dstack_latency_le[NGX_HTTP_DSTACK_LAT_KINDS]
                                            [NGX_HTTP_DSTACK_LAT_BUCKETS];

/* stats.c: content handler of "dstack_stats json" */
ngx_int_t ngx_http_dstack_stats_handler(ngx_http_request_t *r);
/* prom.c: content handler of "dstack_stats prometheus" */
ngx_int_t ngx_http_dstack_prom_handler(ngx_http_request_t *r);

/* hold.c: scale from zero.  Parks a request of a service without a
 * ready replica (NGX_DONE), or answers 429/503; resumes it when a
 * replica is ready */
ngx_int_t ngx_http_dstack_hold(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx);
ngx_int_t ngx_http_dstack_hold_init_worker(ngx_cycle_t *cycle);
/* the request ended while it waited: out of the queue */
void ngx_http_dstack_hold_release(ngx_http_dstack_ctx_t *ctx);

/* ssl.c: certificates from state ("dstack_ssl"); NGX_DECLINED, or the
 * 308 to answer a plain request of an https service with */
extern ngx_module_t  ngx_http_dstack_ssl_module;
ngx_int_t ngx_http_dstack_https_redirect(ngx_http_request_t *r,
    const ds_service_t *svc);

/* balancer.c: the "dstack_balancer" directive */
char *ngx_http_dstack_balancer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

#endif /* NGX_HTTP_DSTACK_MODULE_H */
