/*
 * Model latency: time to first token (TTFT) and time per output token
 * (TPOT) of the answers of the model endpoint, per service and per
 * replica (openai.c measures, metrics.c keeps the records).
 *
 * Each record has histograms since its owner came (Prometheus) and a
 * ring of 30 slots of 10 s, each a histogram with a sum per bucket, for
 * the p50 and p99 of the last 30, 60 and 300 s: a window of W seconds is
 * the slot of the current 10 s and the W / 10 - 1 before it, so it
 * covers between W - 10 and W seconds.  A quantile is the mean of the
 * samples of the bucket that holds it: exact when they agree (a model
 * at a steady pace), never outside the bucket's bounds otherwise.
 *
 * Counters are added with relaxed atomics by all workers; a slot that
 * holds an older 10 s is zeroed under the zone mutex by the first
 * worker that needs it, about once per 10 s per service and replica.
 */

#include "ngx_http_dstack_module.h"


#define NGX_HTTP_DSTACK_LAT_UNIT     100         /* us per unit of sum */
#define NGX_HTTP_DSTACK_LAT_CLAMP    60000000    /* us: a sample's most */


/* upper bounds in us; the last bucket has none (+Inf) */
static uint64_t  ngx_http_dstack_latency_bounds[NGX_HTTP_DSTACK_LAT_KINDS]
                                               [NGX_HTTP_DSTACK_LAT_BUCKETS]
= {
    /* TTFT: 5 ms .. 30 s */
    { 5000, 10000, 25000, 50000, 100000, 150000, 250000, 500000, 1000000,
      2500000, 5000000, 10000000, 30000000, 0 },
    /* TPOT: 1 ms .. 2 s */
    { 1000, 2000, 5000, 10000, 15000, 20000, 30000, 50000, 75000, 100000,
      250000, 500000, 2000000, 0 }
};

/* the same bounds in seconds, as Prometheus shows them */
ngx_str_t  ngx_http_dstack_latency_le[NGX_HTTP_DSTACK_LAT_KINDS]
                                     [NGX_HTTP_DSTACK_LAT_BUCKETS] =
{
    { ngx_string("0.005"), ngx_string("0.01"), ngx_string("0.025"),
      ngx_string("0.05"), ngx_string("0.1"), ngx_string("0.15"),
      ngx_string("0.25"), ngx_string("0.5"), ngx_string("1"),
      ngx_string("2.5"), ngx_string("5"), ngx_string("10"),
      ngx_string("30"), ngx_string("+Inf") },
    { ngx_string("0.001"), ngx_string("0.002"), ngx_string("0.005"),
      ngx_string("0.01"), ngx_string("0.015"), ngx_string("0.02"),
      ngx_string("0.03"), ngx_string("0.05"), ngx_string("0.075"),
      ngx_string("0.1"), ngx_string("0.25"), ngx_string("0.5"),
      ngx_string("2"), ngx_string("+Inf") }
};


static ngx_uint_t ngx_http_dstack_latency_bucket(ngx_uint_t kind,
    uint64_t us);
static ngx_http_dstack_lat_slot_t *ngx_http_dstack_latency_slot(
    ngx_http_dstack_latency_t *lat, time_t now);
static uint64_t ngx_http_dstack_latency_quantile(ngx_uint_t kind,
    uint64_t count[NGX_HTTP_DSTACK_LAT_BUCKETS],
    uint64_t sum[NGX_HTTP_DSTACK_LAT_BUCKETS], uint64_t n, ngx_uint_t pct);


static ngx_uint_t
ngx_http_dstack_latency_bucket(ngx_uint_t kind, uint64_t us)
{
    ngx_uint_t  k;

    for (k = 0; k < NGX_HTTP_DSTACK_LAT_BUCKETS - 1; k++) {
        if (us <= ngx_http_dstack_latency_bounds[kind][k]) {
            break;
        }
    }

    return k;
}


void
ngx_http_dstack_latency_add(ngx_http_dstack_latency_t *lat, ngx_uint_t kind,
    uint64_t us, time_t now)
{
    ngx_uint_t                   k;
    ngx_http_dstack_lat_slot_t  *s;

    if (lat == NULL) {
        return;
    }

    k = ngx_http_dstack_latency_bucket(kind, us);

    __atomic_fetch_add(&lat->count[kind][k], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&lat->sum_us[kind], us, __ATOMIC_RELAXED);
    __atomic_fetch_add(&lat->samples[kind], 1, __ATOMIC_RELAXED);

    s = ngx_http_dstack_latency_slot(lat, now);
    if (s == NULL) {
        return;
    }

    if (us > NGX_HTTP_DSTACK_LAT_CLAMP) {
        us = NGX_HTTP_DSTACK_LAT_CLAMP;
    }

    __atomic_fetch_add(&s->count[kind][k], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->sum[kind][k],
                       (uint32_t) (us / NGX_HTTP_DSTACK_LAT_UNIT),
                       __ATOMIC_RELAXED);
}


/* the slot of now's 10 s, zeroed first when it holds an older one; the
 * epoch is published after the counters are zero */
static ngx_http_dstack_lat_slot_t *
ngx_http_dstack_latency_slot(ngx_http_dstack_latency_t *lat, time_t now)
{
    uint32_t                     epoch;
    ngx_shmtx_t                 *mutex;
    ngx_http_dstack_lat_slot_t  *s;

    epoch = (uint32_t) (now / NGX_HTTP_DSTACK_LAT_SLOT);
    s = &lat->slot[epoch % NGX_HTTP_DSTACK_LAT_SLOTS];

    if (__atomic_load_n(&s->epoch, __ATOMIC_ACQUIRE) == epoch) {
        return s;
    }

    mutex = ngx_http_dstack_metrics_mutex();
    if (mutex == NULL) {
        return NULL;
    }

    ngx_shmtx_lock(mutex);

    if (__atomic_load_n(&s->epoch, __ATOMIC_RELAXED) != epoch) {
        ngx_memzero(s->count, sizeof(s->count));
        ngx_memzero(s->sum, sizeof(s->sum));
        __atomic_store_n(&s->epoch, epoch, __ATOMIC_RELEASE);
    }

    ngx_shmtx_unlock(mutex);

    return s;
}


void
ngx_http_dstack_latency_windows(ngx_http_dstack_latency_t *lat,
    ngx_uint_t kind, time_t now, const ngx_uint_t *seconds, ngx_uint_t n,
    ngx_http_dstack_lat_window_t *out)
{
    uint32_t                     epoch, e;
    uint64_t                     count[NGX_HTTP_DSTACK_LAT_BUCKETS];
    uint64_t                     sum[NGX_HTTP_DSTACK_LAT_BUCKETS];
    uint64_t                     total;
    ngx_uint_t                   i, j, k, slots;
    ngx_http_dstack_lat_slot_t  *s;

    ngx_memzero(out, n * sizeof(ngx_http_dstack_lat_window_t));

    if (lat == NULL) {
        return;
    }

    epoch = (uint32_t) (now / NGX_HTTP_DSTACK_LAT_SLOT);

    ngx_memzero(count, sizeof(count));
    ngx_memzero(sum, sizeof(sum));
    i = 0;

    /* the slots newest first; window j is complete after its slots */

    for (j = 0; j < n; j++) {
        slots = seconds[j] / NGX_HTTP_DSTACK_LAT_SLOT;

        if (slots > NGX_HTTP_DSTACK_LAT_SLOTS) {
            slots = NGX_HTTP_DSTACK_LAT_SLOTS;
        }

        for ( /* void */ ; i < slots && i <= epoch; i++) {
            e = epoch - (uint32_t) i;
            s = &lat->slot[e % NGX_HTTP_DSTACK_LAT_SLOTS];

            if (__atomic_load_n(&s->epoch, __ATOMIC_ACQUIRE) != e) {
                continue;
            }

            for (k = 0; k < NGX_HTTP_DSTACK_LAT_BUCKETS; k++) {
                count[k] += __atomic_load_n(&s->count[kind][k],
                                            __ATOMIC_RELAXED);
                sum[k] += __atomic_load_n(&s->sum[kind][k], __ATOMIC_RELAXED);
            }
        }

        total = 0;
        for (k = 0; k < NGX_HTTP_DSTACK_LAT_BUCKETS; k++) {
            total += count[k];
        }

        out[j].n = total;
        out[j].p50_us = ngx_http_dstack_latency_quantile(kind, count, sum,
                                                         total, 50);
        out[j].p99_us = ngx_http_dstack_latency_quantile(kind, count, sum,
                                                         total, 99);
    }
}


/*
 * The mean of the bucket holding the pct-th percentile, in us; 0 when
 * there is no sample.  Held within the bucket's bounds: a slot's 32-bit
 * sum wraps past ~7,000 samples of 60 s in one bucket in 10 s (an
 * overloaded service), and a wrapped mean must not read as a fast one.
 */
static uint64_t
ngx_http_dstack_latency_quantile(ngx_uint_t kind,
    uint64_t count[NGX_HTTP_DSTACK_LAT_BUCKETS],
    uint64_t sum[NGX_HTTP_DSTACK_LAT_BUCKETS], uint64_t n, ngx_uint_t pct)
{
    uint64_t    rank, cum, mean, lower, upper;
    ngx_uint_t  k;

    if (n == 0) {
        return 0;
    }

    rank = (n * pct + 99) / 100;     /* ceil, at least 1 */
    cum = 0;

    for (k = 0; k < NGX_HTTP_DSTACK_LAT_BUCKETS; k++) {
        cum += count[k];

        if (cum >= rank && count[k]) {
            mean = sum[k] * NGX_HTTP_DSTACK_LAT_UNIT / count[k];
            lower = k ? ngx_http_dstack_latency_bounds[kind][k - 1] : 0;
            upper = ngx_http_dstack_latency_bounds[kind][k];
            if (upper == 0) {
                upper = NGX_HTTP_DSTACK_LAT_CLAMP;
            }
            return mean < lower ? lower : mean > upper ? upper : mean;
        }
    }

    return 0;
}
