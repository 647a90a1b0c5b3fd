/*
 * What "dstack_stats" shares between its JSON side (stats.c) and its
 * Prometheus side (prom.c): the services and replicas copied out of
 * state, a service's counters read from the metrics zone, and a chain of
 * output buffers.  Private to those two files.
 */

#ifndef NGX_HTTP_DSTACK_STATS_H
#define NGX_HTTP_DSTACK_STATS_H

#include "ngx_http_dstack_module.h"


#define NGX_HTTP_DSTACK_STATS_BUF       16384

/* upper bound of what one line of output adds besides escaped names */
#define NGX_HTTP_DSTACK_STATS_LINE      192

#define NGX_HTTP_DSTACK_STATS_NWINDOWS  3

/* the replica values Prometheus shows: in flight, requests, failures */
#define NGX_HTTP_DSTACK_STATS_RVALUES   3


typedef struct {
    ngx_str_t                           addr;
    ngx_str_t                           prom;       /* addr, escaped as a
                                                       label value */
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
    ngx_uint_t                          model;      /* has a model: shows
                                                       its latency */
    ngx_http_dstack_service_metrics_t  *metrics;
    ngx_uint_t                          replica;    /* first, in replicas */
    ngx_uint_t                          nreplicas;
} ngx_http_dstack_stats_service_t;

/* the services and replicas of one snapshot, in name order */
typedef struct {
    ngx_pool_t                         *pool;       /* of the copies */
    ngx_log_t                          *log;
    ds_txn_t                           *txn;
    ngx_array_t                         services;
    ngx_array_t                         replicas;
    ngx_uint_t                          active;     /* ?active=1 */
    ngx_uint_t                          hint[2];    /* services, replicas
                                                       expected; 0: few */
    time_t                              now;
    uint64_t                            snapshot;   /* read from */
    ngx_uint_t                          failed;     /* out of memory */
    ngx_uint_t                          follower;   /* shared mode's mirror */
    uint64_t                            follow_rev;
    uint64_t                            follow_lost; /* unix s, 0: ok */
} ngx_http_dstack_stats_collect_t;

/* a chain of buffers that grows as it is written; with a free list
 * (Prometheus) it takes buffers sent already before making new ones */
typedef struct {
    ngx_pool_t                         *pool;
    ngx_chain_t                        *first;
    ngx_chain_t                       **last;
    ngx_buf_t                          *buf;        /* being written */
    ngx_chain_t                       **free;       /* NULL: none */
    ngx_uint_t                          nbufs;      /* written, in first */
} ngx_http_dstack_stats_out_t;

/* a service's counters, read once from the zone; what Prometheus shows
 * of them first, in the order prom.c compares them */
typedef struct {
    uint64_t                            requests[NGX_HTTP_DSTACK_CLASSES];
    int64_t                             inflight;
    uint64_t                            hist[NGX_HTTP_DSTACK_HIST];
    uint64_t                            time_ms_sum;
    uint64_t                  windows[NGX_HTTP_DSTACK_STATS_NWINDOWS]
                                     [NGX_HTTP_DSTACK_CLASSES];
    int64_t                             held;
    uint64_t                            held_ms_sum;
    uint64_t                            cold_starts;
    uint64_t                            cold_start_ms_sum;
    uint64_t                            model[5];   /* requests, errors,
                                                       ttfb ms, prompt and
                                                       completion tokens */
    uint64_t                            latency_seen[2];  /* TTFT, TPOT:
                                                       samples and their
                                                       sum, changed by
                                                       any new one */

    /* JSON only */
    uint64_t                  arrivals[NGX_HTTP_DSTACK_STATS_NWINDOWS];
    uint64_t                            held_total;
    uint64_t                            hold_timeouts;
    uint64_t                            hold_rejected;
    ngx_http_dstack_latency_t          *latency;    /* NULL: none, or no
                                                       model */
} ngx_http_dstack_stats_counters_t;


/* stats.c */
extern ngx_uint_t  ngx_http_dstack_stats_seconds[];    /* the windows */
extern ngx_str_t   ngx_http_dstack_stats_classes[];    /* counter classes */

/* the services (all, or only the active ones) and their replicas of the
 * newest snapshot into col, copies in col->pool: NGX_OK, NGX_DECLINED
 * (the state is unavailable; logged) or NGX_ERROR (out of memory) */
ngx_int_t ngx_http_dstack_stats_gather(ngx_http_dstack_stats_collect_t *col);
ngx_buf_t *ngx_http_dstack_stats_reserve(ngx_http_dstack_stats_out_t *out,
    size_t n);
/* the counters of a service at `now`; the windows only when asked */
void ngx_http_dstack_stats_read(ngx_http_dstack_stats_service_t *s,
    time_t now, ngx_uint_t windows, ngx_http_dstack_stats_counters_t *c);
/* a replica's values as shown (in flight clamped at zero) */
void ngx_http_dstack_stats_read_replica(ngx_http_dstack_stats_replica_t *sr,
    uint64_t v[NGX_HTTP_DSTACK_STATS_RVALUES]);

/* GET or HEAD, the body discarded, *active from "?active=1": NGX_OK or
 * the status to answer */
ngx_int_t ngx_http_dstack_stats_accept(ngx_http_request_t *r,
    ngx_uint_t *active);
/* a Prometheus label value: \\, \" and \n escaped */
size_t ngx_http_dstack_stats_escape_len(ngx_str_t *s);
u_char *ngx_http_dstack_stats_escape(u_char *p, ngx_str_t *s);

#endif /* NGX_HTTP_DSTACK_STATS_H */
