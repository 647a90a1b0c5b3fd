/*
 * Five minutes of each run's service, second by second, for the console
 * (GET /api/runs/<name>/series): the requests completed in each second
 * by class, their mean time, the requests in flight and held.  Filled
 * from the gateways' stats answers (stats.c's hook, about once a second
 * per gateway): nothing here runs per request.
 *
 * The module's counters are cumulative since its gateway started: a
 * second's requests are the differences between a source's successive
 * answers, summed over the sources and counted in the wall-clock second
 * the answer came in, so that each source keeps its last figures of each
 * service (struct series_from).  A service whose uid changed (a new
 * service of that name) or a counter that went down (the gateway
 * restarted) counts from 0, never negative.  A source's first answer
 * only sets where it counts from: what it says happened before controld
 * listened.  A service first seen at a source that answered before was
 * idle there for 300 s (the module's ?active=1 leaves out services with
 * nothing in flight, held or done within its 300 s window), so what it
 * completed since that source's previous answer is that window.
 *
 * A second in which no source answered is null everywhere (a gap in the
 * chart); one in which sources answered without listing the service is
 * zeros: nothing of it happened.
 *
 * Memory: per live run the gateways listed, a struct series_svc (about
 * 100 bytes, and 112 per source that listed it); while some source
 * listed it within the last 300 s, its ring, 300 struct series_sec of 44
 * bytes: 13,200 bytes.  The ring goes 300 s after the last source
 * listed the service, the rest when its run finishes or is gone.  The
 * sources are kept by URL (a few bytes each, every gateway ever read).
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "ds_state.h"
#include "ds_stats_names.h"
#include "log.h"
#include "run.h"
#include "series.h"
#include "stats.h"
#include "util.h"


/* the classes of the module's "requests", in the answer's order */
#define SERIES_CLASSES          6
#define SERIES_REFUSED          5       /* not admitted: no request time */

static const char *const series_class[SERIES_CLASSES] = {
    DS_STATS_1XX, DS_STATS_2XX, DS_STATS_3XX, DS_STATS_4XX, DS_STATS_5XX,
    DS_STATS_REFUSED
};

/* one second of a service, summed over the sources (44 bytes) */
struct series_sec {
    uint32_t            sec;            /* the unix second it holds */
    uint32_t            requests[SERIES_CLASSES];   /* completed */
    uint32_t            time_ms;        /* their request time */
    uint32_t            timed;          /* the completed ones time_ms has */
    uint32_t            inflight;       /* last seen in the second */
    uint32_t            held;
};

/* a source's figures of a service: cumulative, as it said them last */
struct series_cum {
    uint64_t            requests[SERIES_CLASSES];
    uint64_t            time_ms_sum;
    uint64_t            held_total;
    uint64_t            hold_timeouts;
    uint64_t            cold_starts;
    uint64_t            cold_start_ms_sum;
};

/* what one source said of a service last (112 bytes) */
struct series_from {
    size_t              src;            /* in sources.src */
    double              uid;            /* the module's, as parsed */
    uint64_t            listed;         /* the source's answer, by count */
    struct series_cum   cum;
    uint32_t            inflight;       /* 0 once not listed or failed */
    uint32_t            held;
};

struct series_svc {
    struct series_svc  *next;           /* in its hash chain */
    char                name[DS_NAME_MAX + 1];
    time_t              last_listed;
    struct series_from *from;
    size_t              nfrom;
    struct series_sec  *ring;           /* SERIES_SECONDS, or NULL */
    uint32_t            live;           /* the sweep that found its run */
};

struct series_src {
    char               *url;
    uint64_t            answers;        /* good ones, since controld began */
};

static struct {
    struct series_src  *src;
    size_t              n;
} sources;

static struct {
    struct series_svc **tab;
    size_t              size;           /* a power of 2, 0: none yet */
    size_t              count;
} svcs;

/* the seconds in which any source answered, by second % SERIES_SECONDS */
static uint32_t  answered[SERIES_SECONDS];
static uint32_t  last_answered;         /* the newest of them, 0: none */
static uint32_t  last_sweep;


/* ---- services by name ---------------------------------------------------- */


static struct series_svc *
series_find(const char *name)
{
    struct series_svc  *svc;

    if (svcs.size == 0) {
        return NULL;
    }
    for (svc = svcs.tab[str_hash(name) & (svcs.size - 1)]; svc != NULL;
         svc = svc->next)
    {
        if (strcmp(svc->name, name) == 0) {
            return svc;
        }
    }
    return NULL;
}


/* twice the chains once there are more services than chains */
static void
series_grow(void)
{
    struct series_svc  **tab, *svc, *next;
    size_t               size, i, h;

    size = svcs.size ? svcs.size * 2 : 64;
    tab = xcalloc(size, sizeof(*tab));
    for (i = 0; i < svcs.size; i++) {
        for (svc = svcs.tab[i]; svc != NULL; svc = next) {
            next = svc->next;
            h = str_hash(svc->name) & (size - 1);
            svc->next = tab[h];
            tab[h] = svc;
        }
    }
    free(svcs.tab);
    svcs.tab = tab;
    svcs.size = size;
}


static struct series_svc *
series_add(const char *name)
{
    struct series_svc  *svc;
    size_t              h;

    if (svcs.count >= svcs.size) {
        series_grow();
    }
    svc = xcalloc(1, sizeof(*svc));
    snprintf(svc->name, sizeof(svc->name), "%s", name);
    h = str_hash(name) & (svcs.size - 1);
    svc->next = svcs.tab[h];
    svcs.tab[h] = svc;
    svcs.count++;
    return svc;
}


static void
series_free(struct series_svc *svc)
{
    free(svc->ring);
    free(svc->from);
    free(svc);
}


/* a run that is not finished has this key: its service is charted */
static int
series_wanted(const char *name)
{
    const struct run  *r;

    r = run_find(name);
    return r != NULL && !r->finished;
}


/*
 * Once a second: the rings of services no source listed for
 * SERIES_SECONDS go, and the services of runs finished or gone (one
 * pass over the runs, one over the services).
 */
static void
series_sweep(uint32_t now)
{
    struct series_svc  **link, *svc;
    const struct run    *r;
    size_t               i;

    if (now == last_sweep) {
        return;
    }
    last_sweep = now;
    TAILQ_FOREACH(r, &runs, entry) {
        if (!r->finished && (svc = series_find(r->name)) != NULL) {
            svc->live = now;
        }
    }
    for (i = 0; i < svcs.size; i++) {
        link = &svcs.tab[i];
        while ((svc = *link) != NULL) {
            if (svc->live != now) {
                *link = svc->next;
                svcs.count--;
                series_free(svc);
                continue;
            }
            if (svc->ring != NULL
                && now - svc->last_listed > SERIES_SECONDS)
            {
                free(svc->ring);
                svc->ring = NULL;
            }
            link = &svc->next;
        }
    }
}


/* ---- sources ------------------------------------------------------------- */

static size_t
series_src(const char *url)
{
    size_t  i;

    for (i = 0; i < sources.n; i++) {
        if (strcmp(sources.src[i].url, url) == 0) {
            return i;
        }
    }
    sources.src = realloc(sources.src,
                          (sources.n + 1) * sizeof(*sources.src));
    if (sources.src == NULL) {
        fatal("realloc");
    }
    sources.src[sources.n].url = xstrdup(url);
    sources.src[sources.n].answers = 0;
    return sources.n++;
}


static struct series_from *
series_from_find(struct series_svc *svc, size_t src)
{
    size_t  i;

    for (i = 0; i < svc->nfrom; i++) {
        if (svc->from[i].src == src) {
            return &svc->from[i];
        }
    }
    return NULL;
}


static struct series_from *
series_from_add(struct series_svc *svc, size_t src)
{
    struct series_from  *f;

    f = realloc(svc->from, (svc->nfrom + 1) * sizeof(*f));
    if (f == NULL) {
        fatal("realloc");
    }
    svc->from = f;
    f = &svc->from[svc->nfrom++];
    memset(f, 0, sizeof(*f));
    f->src = src;
    return f;
}


/* ---- one answer ---------------------------------------------------------- */

/* a count of the module's JSON: 0 when absent or not a count */
static uint64_t
series_num(const cJSON *o, const char *key)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble <= 0) {
        return 0;
    }
    return v->valuedouble >= 1.8e19 ? UINT64_MAX : (uint64_t) v->valuedouble;
}


static uint32_t
series_u32(uint64_t v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t) v;
}


static void
series_read_cum(const cJSON *svc, struct series_cum *c)
{
    const cJSON  *req, *hold;
    int           k;

    req = cJSON_GetObjectItemCaseSensitive(svc, DS_STATS_REQUESTS);
    for (k = 0; k < SERIES_CLASSES; k++) {
        c->requests[k] = series_num(req, series_class[k]);
    }
    c->time_ms_sum = series_num(svc, DS_STATS_REQUEST_TIME_MS_SUM);
    hold = cJSON_GetObjectItemCaseSensitive(svc, DS_STATS_HOLD);
    c->held_total = series_num(hold, DS_STATS_HELD_TOTAL);
    c->hold_timeouts = series_num(hold, DS_STATS_HOLD_TIMEOUTS);
    c->cold_starts = series_num(hold, DS_STATS_COLD_STARTS);
    c->cold_start_ms_sum = series_num(hold, DS_STATS_COLD_START_MS_SUM);
}


/* a counter that went down: the gateway started again, its counters
 * from 0 */
static int
series_restarted(const struct series_cum *prev, const struct series_cum *cur)
{
    int  k;

    for (k = 0; k < SERIES_CLASSES; k++) {
        if (cur->requests[k] < prev->requests[k]) {
            return 1;
        }
    }
    return cur->time_ms_sum < prev->time_ms_sum;
}


/*
 * A service new at a source that answered before: its longest window
 * (the module's 300 s) is what it completed since then.  Its time is
 * known when the window holds all the service ever completed (a new
 * service); -1 otherwise.
 */
static int64_t
series_from_window(const cJSON *svc, const struct series_cum *cur,
    uint64_t delta[SERIES_CLASSES])
{
    const cJSON  *it, *best = NULL;
    long          len, best_len = 0;
    uint64_t      in_window = 0, ever = 0;
    int           k;

    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(svc,
                                                            DS_STATS_WINDOWS))
    {
        len = it->string ? strtol(it->string, NULL, 10) : 0;
        if (len > best_len) {
            best = it;
            best_len = len;
        }
    }
    for (k = 0; k < SERIES_CLASSES; k++) {
        delta[k] = best ? series_num(best, series_class[k]) : 0;
        if (delta[k] > cur->requests[k]) {
            delta[k] = cur->requests[k];
        }
        in_window += delta[k];
        ever += cur->requests[k];
    }
    return best != NULL && in_window == ever ? (int64_t) cur->time_ms_sum
                                             : -1;
}


/* the ring's second `now`, emptied when it held an older one */
static struct series_sec *
series_sec_at(struct series_svc *svc, uint32_t now)
{
    struct series_sec  *s;

    if (svc->ring == NULL) {
        svc->ring = xcalloc(SERIES_SECONDS, sizeof(*svc->ring));
    }
    s = &svc->ring[now % SERIES_SECONDS];
    if (s->sec != now) {
        memset(s, 0, sizeof(*s));
        s->sec = now;
    }
    return s;
}


/* in flight and held now: the sum of what the sources said last */
static void
series_gauges(struct series_svc *svc, uint32_t now)
{
    struct series_sec  *s;
    uint64_t            inflight = 0, held = 0;
    size_t              i;

    for (i = 0; i < svc->nfrom; i++) {
        inflight += svc->from[i].inflight;
        held += svc->from[i].held;
    }
    s = series_sec_at(svc, now);
    s->inflight = series_u32(inflight);
    s->held = series_u32(held);
}


/* what source src says of the service in its answer number `seq` */
static void
series_take(struct series_svc *svc, size_t src, uint64_t seq,
    const cJSON *js, uint32_t now)
{
    struct series_from  *f;
    struct series_cum    cur;
    struct series_sec   *s;
    uint64_t             delta[SERIES_CLASSES], completed = 0;
    int64_t              time_ms = -1;
    double               uid;
    int                  k;

    series_read_cum(js, &cur);
    uid = cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(js, DS_STATS_UID))
          ? cJSON_GetObjectItemCaseSensitive(js, DS_STATS_UID)->valuedouble
          : 0;
    memset(delta, 0, sizeof(delta));

    f = series_from_find(svc, src);
    if (f == NULL) {
        f = series_from_add(svc, src);
        /* the source's first answer: only where it counts from */
        if (sources.src[src].answers > 1) {
            time_ms = series_from_window(js, &cur, delta);
        }
    } else if (f->uid != uid || series_restarted(&f->cum, &cur)) {
        for (k = 0; k < SERIES_CLASSES; k++) {
            delta[k] = cur.requests[k];
        }
        time_ms = (int64_t) cur.time_ms_sum;
    } else {
        for (k = 0; k < SERIES_CLASSES; k++) {
            delta[k] = cur.requests[k] - f->cum.requests[k];
        }
        time_ms = (int64_t) (cur.time_ms_sum - f->cum.time_ms_sum);
    }

    f->uid = uid;
    f->cum = cur;
    f->listed = seq;
    f->inflight = series_u32(series_num(js, DS_STATS_INFLIGHT));
    f->held = series_u32(series_num(cJSON_GetObjectItemCaseSensitive(
                                        js, DS_STATS_HOLD), DS_STATS_HELD));
    svc->last_listed = now;

    s = series_sec_at(svc, now);
    for (k = 0; k < SERIES_CLASSES; k++) {
        s->requests[k] = series_u32((uint64_t) s->requests[k] + delta[k]);
        if (k != SERIES_REFUSED) {
            completed += delta[k];
        }
    }
    if (time_ms >= 0 && completed > 0) {
        s->time_ms = series_u32((uint64_t) s->time_ms + (uint64_t) time_ms);
        s->timed = series_u32((uint64_t) s->timed + completed);
    }
    series_gauges(svc, now);
}


/*
 * The services source src had in flight or held and no longer lists
 * (answer `seq`; 0: it failed): nothing of them is there now.
 */
static void
series_unlisted(size_t src, uint64_t seq, uint32_t now)
{
    struct series_svc   *svc;
    struct series_from  *f;
    size_t               i;

    for (i = 0; i < svcs.size; i++) {
        for (svc = svcs.tab[i]; svc != NULL; svc = svc->next) {
            f = series_from_find(svc, src);
            if (f == NULL || f->listed == seq
                || (f->inflight == 0 && f->held == 0))
            {
                continue;
            }
            f->inflight = 0;
            f->held = 0;
            if (svc->ring != NULL) {
                series_gauges(svc, now);
            }
        }
    }
}


void
series_answer(const char *url, const cJSON *answer)
{
    series_answer_at(url, answer, (uint32_t) time(NULL));
}


void
series_answer_at(const char *url, const cJSON *answer, uint32_t now)
{
    struct series_svc  *svc;
    const cJSON        *it, *name;
    uint64_t            seq;
    size_t              src;

    src = series_src(url);
    if (answer == NULL) {
        series_unlisted(src, 0, now);
        series_sweep(now);
        return;
    }

    seq = ++sources.src[src].answers;
    answered[now % SERIES_SECONDS] = now;
    last_answered = now;

    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(answer,
                                                           DS_STATS_SERVICES))
    {
        name = cJSON_GetObjectItemCaseSensitive(it, DS_STATS_NAME);
        if (!cJSON_IsString(name)
            || !ds_valid_service_key(name->valuestring,
                                     strlen(name->valuestring)))
        {
            continue;
        }
        svc = series_find(name->valuestring);
        if (svc == NULL) {
            if (!series_wanted(name->valuestring)) {
                continue;
            }
            svc = series_add(name->valuestring);
        }
        series_take(svc, src, seq, it, now);
    }
    series_unlisted(src, seq, now);
    series_sweep(now);
}


/* ---- the answer of the API ---------------------------------------------- */

static cJSON *
series_totals(const struct series_svc *svc)
{
    struct series_cum  sum;
    cJSON             *o, *req;
    size_t             i;
    int                k;

    memset(&sum, 0, sizeof(sum));
    for (i = 0; svc != NULL && i < svc->nfrom; i++) {
        for (k = 0; k < SERIES_CLASSES; k++) {
            sum.requests[k] += svc->from[i].cum.requests[k];
        }
        sum.held_total += svc->from[i].cum.held_total;
        sum.hold_timeouts += svc->from[i].cum.hold_timeouts;
        sum.cold_starts += svc->from[i].cum.cold_starts;
        sum.cold_start_ms_sum += svc->from[i].cum.cold_start_ms_sum;
    }

    o = cJSON_CreateObject();
    req = cJSON_AddObjectToObject(o, "requests");
    for (k = 0; k < SERIES_CLASSES; k++) {
        cJSON_AddNumberToObject(req, series_class[k],
                                (double) sum.requests[k]);
    }
    cJSON_AddNumberToObject(o, "cold_starts", (double) sum.cold_starts);
    if (sum.cold_starts > 0) {
        cJSON_AddNumberToObject(o, "cold_start_ms_avg",
                                (double) (sum.cold_start_ms_sum * 10
                                          / sum.cold_starts) / 10);
    } else {
        cJSON_AddNullToObject(o, "cold_start_ms_avg");
    }
    cJSON_AddNumberToObject(o, "held_total", (double) sum.held_total);
    cJSON_AddNumberToObject(o, "hold_timeouts", (double) sum.hold_timeouts);
    return o;
}


/* the arrays of the seconds start..end */
struct series_cols {
    cJSON              *requests[SERIES_CLASSES];
    cJSON              *latency;
    cJSON              *inflight;
    cJSON              *held;
};


static void
series_add_null(struct series_cols *c)
{
    int  k;

    for (k = 0; k < SERIES_CLASSES; k++) {
        cJSON_AddItemToArray(c->requests[k], cJSON_CreateNull());
    }
    cJSON_AddItemToArray(c->latency, cJSON_CreateNull());
    cJSON_AddItemToArray(c->inflight, cJSON_CreateNull());
    cJSON_AddItemToArray(c->held, cJSON_CreateNull());
}


/* s: the service's second, or NULL when sources answered without it */
static void
series_add_sec(struct series_cols *c, const struct series_sec *s)
{
    int  k;

    for (k = 0; k < SERIES_CLASSES; k++) {
        cJSON_AddItemToArray(c->requests[k],
                             cJSON_CreateNumber(s ? s->requests[k] : 0));
    }
    if (s != NULL && s->timed > 0) {
        /* to a tenth of a millisecond */
        cJSON_AddItemToArray(c->latency, cJSON_CreateNumber(
            (double) ((uint64_t) s->time_ms * 10 / s->timed) / 10));
    } else {
        cJSON_AddItemToArray(c->latency, cJSON_CreateNull());
    }
    cJSON_AddItemToArray(c->inflight, cJSON_CreateNumber(s ? s->inflight : 0));
    cJSON_AddItemToArray(c->held, cJSON_CreateNumber(s ? s->held : 0));
}


cJSON *
series_to_api(const char *key, const char *shown, uint32_t since)
{
    const struct series_svc  *svc;
    const struct series_sec  *s;
    struct series_cols        c;
    cJSON                    *o, *req;
    uint32_t                  start, end, t;
    size_t                    answering, total;
    int                       k;

    svc = series_find(key);
    /* the newest second any source answered in; now before any did */
    end = last_answered ? last_answered : (uint32_t) time(NULL);
    start = end - (SERIES_SECONDS - 1);
    if (since != 0 && since >= start) {
        start = since >= end ? end + 1 : since + 1;
    }

    o = cJSON_CreateObject();
    if (o == NULL) {
        return NULL;
    }
    cJSON_AddStringToObject(o, "name", shown);
    cJSON_AddNumberToObject(o, "start", start);
    cJSON_AddNumberToObject(o, "end", end);
    cJSON_AddNumberToObject(o, "step", 1);
    req = cJSON_AddObjectToObject(o, "requests");
    for (k = 0; k < SERIES_CLASSES; k++) {
        c.requests[k] = cJSON_AddArrayToObject(req, series_class[k]);
    }
    c.latency = cJSON_AddArrayToObject(o, "latency_ms");
    c.inflight = cJSON_AddArrayToObject(o, "inflight");
    c.held = cJSON_AddArrayToObject(o, "held");

    for (t = start; t <= end && t >= start; t++) {
        if (answered[t % SERIES_SECONDS] != t) {
            series_add_null(&c);
            continue;
        }
        s = svc != NULL && svc->ring != NULL
            && svc->ring[t % SERIES_SECONDS].sec == t
            ? &svc->ring[t % SERIES_SECONDS] : NULL;
        series_add_sec(&c, s);
    }

    cJSON_AddItemToObject(o, "totals", series_totals(svc));
    stats_sources(&answering, &total);
    cJSON_AddStringToObject(o, "stats", answering > 0 ? "ok" : "missing");
    return o;
}
