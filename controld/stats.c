/*
 * The module's metrics, from every gateway: GET each source (a "dstack_stats
 * json" location: controld.yml's stats_url, one URL or a list, or the set
 * stats_set_sources() names) once a second, and every 100 ms while a
 * replica drains, with a small non-blocking HTTP/1.0 client per source
 * driven by the main loop.  All sources are asked at once; an answer is
 * read until the server closes; only the status line and the end of the
 * header are looked at, the body is JSON.
 *
 * What autoscaling and draining read is the sum over the sources that
 * answer: requests of each window, in flight per service and per
 * replica, held requests.  A source that fails (refused, timed out, not
 * the module's JSON) is left out of the sums until it answers again;
 * that is logged once each way.  Several nginx on one host (two front
 * doors on one state) or on several (shared mode) count each request
 * once: each counts those it received.
 *
 * Every good answer also goes to the hook stats_on_answer() sets (the
 * per-second series of series.c), and every failure as NULL.  The
 * regular round starts at a fixed point of each wall-clock second
 * (stats_next()), so that every second gets its answer.
 *
 * Draining trusts only answers fetched after the drain began: see
 * stats_fresh_ms(), which is the oldest of the answering sources' latest
 * answers, so that every gateway still answering has been heard since.
 */

#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>

#include "ds_stats_names.h"
#include "log.h"
#include "stats.h"
#include "util.h"


#define STATS_PERIOD_MS     1000
/* where in a wall-clock second the regular round starts (stats_next) */
#define STATS_PHASE_MS      500
#define STATS_TIMEOUT_MS    1000
#define STATS_RESOLVE_MS    30000       /* a name that did not resolve */
#define STATS_MAX           (16 * 1024 * 1024)

enum { ST_IDLE = 0, ST_CONNECTING, ST_SENDING, ST_READING };

struct stats_src {
    char               *url;            /* as given, for messages */
    char                name[256];      /* host to resolve */
    char                port[16];
    struct sockaddr_storage addr;
    socklen_t           addrlen;        /* 0: not resolved */
    int64_t             resolve_ms;     /* next try when not resolved */
    char                req[1400];
    size_t              req_len;
    size_t              req_off;

    int                 fd;
    int                 phase;
    int64_t             started_ms;
    char               *buf;
    size_t              len;
    size_t              cap;

    cJSON              *last;           /* latest good answer, NULL while
                                           failing or before the first */
    int64_t             last_ms;        /* when it was requested */
    const cJSON       **index;          /* its services by name (hash) */
    size_t              index_size;     /* a power of 2, 0: none */
    int                 failing;        /* for log messages */
    int                 bad;            /* not a URL we can read: kept,
                                           never asked, so that it is
                                           logged once, not every time
                                           the set is given again */
};

static struct {
    struct stats_src   *src;
    size_t              n;
    int64_t             next_ms;
    int64_t             any_ms;         /* the latest answer of any */
    stats_answer_fn     on_answer;      /* NULL: none */
} st;



/* ---- sources ------------------------------------------------------------ */

/* url -> host, port and the request of s; -1 with why */
static int
stats_src_parse(struct stats_src *s, const char *url, char *err, size_t n)
{
    const char  *p, *slash, *colon, *c;
    char         path[1024];
    long         port;

    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, n, "stats_url: \"%.300s\" is not an http:// URL", url);
        return -1;
    }
    if (strlen(url) > 1000) {
        snprintf(err, n, "stats_url: \"%.60s...\" is longer than 1000 "
                 "bytes", url);
        return -1;
    }
    for (c = url; *c; c++) {
        if (isspace((unsigned char) *c) || iscntrl((unsigned char) *c)) {
            snprintf(err, n, "stats_url: \"%.300s\" has a space or a control "
                     "character", url);
            return -1;
        }
    }
    p = url + 7;
    slash = strchr(p, '/');
    if (slash == NULL) {
        slash = p + strlen(p);
    }
    if (slash == p) {
        snprintf(err, n, "stats_url: \"%.300s\" has no host", url);
        return -1;
    }
    /* only the services with traffic, in flight or held: the others are
     * zeros, and an idle majority would cost the worker and us time */
    snprintf(path, sizeof(path), "%s%sactive=1", *slash ? slash : "/",
             strchr(slash, '?') ? "&" : "?");

    if (*p == '[') {
        colon = memchr(p, ']', (size_t) (slash - p));
        if (colon == NULL) {
            snprintf(err, n, "stats_url: bad IPv6 address in \"%.300s\"", url);
            return -1;
        }
        snprintf(s->name, sizeof(s->name), "%.*s", (int) (colon - p - 1),
                 p + 1);
        colon = colon[1] == ':' ? colon + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t) (slash - p));
        snprintf(s->name, sizeof(s->name), "%.*s",
                 (int) ((colon ? colon : slash) - p), p);
    }
    if (colon != NULL) {
        snprintf(s->port, sizeof(s->port), "%.*s",
                 (int) (slash - colon - 1), colon + 1);
        port = strtol(s->port, (char **) &c, 10);
        if (s->port[0] < '0' || s->port[0] > '9' || *c != '\0' || port < 1
            || port > 65535)
        {
            snprintf(err, n, "stats_url: bad port in \"%.300s\"", url);
            return -1;
        }
    } else {
        snprintf(s->port, sizeof(s->port), "80");
    }

    s->req_len = (size_t) snprintf(s->req, sizeof(s->req),
                                   "GET %s HTTP/1.0\r\nHost: %.*s\r\n"
                                   "User-Agent: dstack-controld\r\n\r\n",
                                   path, (int) (slash - p), p);
    if (s->req_len >= sizeof(s->req)) {
        snprintf(err, n, "stats_url: \"%.300s\" is too long", url);
        return -1;
    }
    s->url = xstrdup(url);
    s->fd = -1;
    return 0;
}


/* the source's address (getaddrinfo: a name in /etc/hosts or DNS) */
static int
stats_src_resolve(struct stats_src *s, char *err, size_t n)
{
    struct addrinfo   hints, *ai;
    int               rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(s->name, s->port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, n, "stats_url: %s: %s", s->name, gai_strerror(rc));
        s->resolve_ms = now_ms() + STATS_RESOLVE_MS;
        return -1;
    }
    memcpy(&s->addr, ai->ai_addr, ai->ai_addrlen);
    s->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}


static void
stats_src_close(struct stats_src *s)
{
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    s->phase = ST_IDLE;
    s->len = 0;
}


static void
stats_src_free(struct stats_src *s)
{
    stats_src_close(s);
    cJSON_Delete(s->last);
    free(s->index);
    free(s->buf);
    free(s->url);
}


static size_t
stats_live(void)
{
    size_t  i, live = 0;

    for (i = 0; i < st.n; i++) {
        live += st.src[i].last != NULL;
    }
    return live;
}


/* the source is left out of the sums until it answers again */
static void
stats_fail(struct stats_src *s, const char *why)
{
    stats_src_close(s);
    cJSON_Delete(s->last);
    s->last = NULL;
    if (st.on_answer != NULL) {
        st.on_answer(s->url, NULL);
    }
    if (!s->failing) {
        s->failing = 1;
        if (st.n == 1) {
            log_warnx("stats: %s: %s (draining waits a bounded time "
                      "instead)", s->url, why);
        } else {
            log_warnx("stats: %s: %s (left out of the sums until it "
                      "answers; %zu of %zu answer%s)", s->url, why,
                      stats_live(), st.n, stats_live() == 1 ? "s" : "");
        }
    }
}


static void
stats_begin(struct stats_src *s)
{
    char  err[512];
    int   rc;

    if (s->bad) {
        return;
    }
    if (s->addrlen == 0) {
        if (now_ms() < s->resolve_ms) {
            return;
        }
        if (stats_src_resolve(s, err, sizeof(err)) != 0) {
            stats_fail(s, err);
            return;
        }
    }
    s->fd = socket(s->addr.ss_family,
                   SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        stats_fail(s, strerror(errno));
        return;
    }
    s->started_ms = now_ms();
    s->req_off = 0;
    s->len = 0;
    rc = connect(s->fd, (struct sockaddr *) &s->addr, s->addrlen);
    if (rc == 0) {
        s->phase = ST_SENDING;
    } else if (errno == EINPROGRESS) {
        s->phase = ST_CONNECTING;
    } else {
        stats_fail(s, strerror(errno));
    }
}


/*
 * Splits text (URLs separated by white space, as controld.yml's list is
 * kept in conf->stats_url) and calls fn on each; stops at a non-zero.
 */
static int
stats_each_url(const char *text, int (*fn)(const char *, void *), void *arg)
{
    const char  *p, *e;
    char        *url;
    int          rc;

    for (p = text; p != NULL && *p; p = e) {
        while (isspace((unsigned char) *p)) {
            p++;
        }
        for (e = p; *e && !isspace((unsigned char) *e); e++) {
            /* void */
        }
        if (e == p) {
            break;
        }
        url = strndup(p, (size_t) (e - p));
        if (url == NULL) {
            fatal("strndup");
        }
        rc = fn(url, arg);
        free(url);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}


static struct stats_src *
stats_find(struct stats_src *src, size_t n, const char *url)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (src[i].url != NULL && strcmp(src[i].url, url) == 0) {
            return &src[i];
        }
    }
    return NULL;
}


struct stats_set {
    struct stats_src   *src;
    size_t              n;
    int                 strict;         /* init: errors are fatal */
    size_t              added;
    char               *err;
    size_t              errlen;
};


static int
stats_set_add(const char *url, void *arg)
{
    struct stats_set  *set = arg;
    struct stats_src  *old, s;
    char               err[512];

    if (stats_find(set->src, set->n, url) != NULL) {
        if (set->strict) {
            snprintf(set->err, set->errlen, "stats_url: \"%.300s\" is "
                     "listed twice", url);
            return -1;
        }
        return 0;
    }
    if (set->n == STATS_SOURCES_MAX) {
        snprintf(err, sizeof(err), "stats: more than %d sources: "
                 "\"%.300s\" and the ones after it are left out",
                 STATS_SOURCES_MAX, url);
        if (set->strict) {
            snprintf(set->err, set->errlen, "%s", err);
            return -1;
        }
        log_warnx("%s", err);
        return 1;
    }

    /* at init the set is empty: nothing is moved that a failure would
     * have to put back */
    old = set->strict ? NULL : stats_find(st.src, st.n, url);
    if (old != NULL) {
        /* kept with its connection, answer and failing state */
        set->src[set->n++] = *old;
        memset(old, 0, sizeof(*old));
        old->fd = -1;
        return 0;
    }

    memset(&s, 0, sizeof(s));
    set->added++;
    if (stats_src_parse(&s, url, err, sizeof(err)) != 0) {
        if (set->strict) {
            snprintf(set->err, set->errlen, "%s", err);
            return -1;
        }
        log_warnx("stats: %s (left out)", err);
        memset(&s, 0, sizeof(s));
        s.url = xstrdup(url);
        s.fd = -1;
        s.bad = 1;
        s.failing = 1;
        set->src[set->n++] = s;
        return 0;
    }
    if (stats_src_resolve(&s, err, sizeof(err)) != 0) {
        if (set->strict) {
            snprintf(set->err, set->errlen, "%s", err);
            stats_src_free(&s);
            return -1;
        }
        /* tried again every STATS_RESOLVE_MS: a gateway registered
         * before its name is in DNS comes in later */
        log_warnx("stats: %s (tried again in %d s)", err,
                  STATS_RESOLVE_MS / 1000);
        s.failing = 1;
    }
    set->src[set->n++] = s;
    return 0;
}


/* the new set replaces the old; sources in both keep their state */
static int
stats_replace(const char *const *urls, size_t n, int strict,
    size_t *changed, char *err, size_t errlen)
{
    struct stats_set  set;
    size_t            i;
    int               rc = 0;

    set.src = xcalloc(STATS_SOURCES_MAX, sizeof(struct stats_src));
    set.n = 0;
    set.added = 0;
    set.strict = strict;
    set.err = err;
    set.errlen = errlen;
    for (i = 0; i < n && rc == 0; i++) {
        rc = stats_each_url(urls[i], stats_set_add, &set);
    }
    if (rc < 0) {
        for (i = 0; i < set.n; i++) {
            stats_src_free(&set.src[i]);
        }
        free(set.src);
        return -1;
    }

    *changed = set.added;
    for (i = 0; i < st.n; i++) {
        if (st.src[i].url != NULL) {
            log_info("stats: %s is no longer read", st.src[i].url);
            (*changed)++;
            if (st.on_answer != NULL) {
                st.on_answer(st.src[i].url, NULL);
            }
        }
        stats_src_free(&st.src[i]);
    }
    free(st.src);
    st.src = set.src;
    st.n = set.n;
    return 0;
}


int
stats_init(const char *urls, char *err, size_t n)
{
    size_t  changed;

    if (urls == NULL || *urls == '\0') {
        return 0;
    }
    return stats_replace(&urls, 1, 1, &changed, err, n);
}


void
stats_set_sources(const char *const *urls, size_t n)
{
    size_t  changed = 0;
    char    err[16];

    /* the leader calls this every second: quiet while nothing changes */
    if (stats_replace(urls, n, 0, &changed, err, sizeof(err)) == 0
        && changed > 0)
    {
        log_info("stats: reading %zu source%s", st.n, st.n == 1 ? "" : "s");
        /* the new ones at once: their counts belong in the sums */
        stats_request(0);
    }
}


/* ---- the exchange ------------------------------------------------------- */

static void stats_index(struct stats_src *s);


/* the status line and the body of a complete answer */
static void
stats_parse(struct stats_src *s)
{
    char   *body, *eol;
    int     code;
    cJSON  *json;

    if (s->len == 0 || s->buf == NULL) {
        stats_fail(s, "empty answer");
        return;
    }
    s->buf[s->len] = '\0';
    if (sscanf(s->buf, "HTTP/%*d.%*d %d", &code) != 1) {
        stats_fail(s, "not an HTTP answer");
        return;
    }
    if (code != 200) {
        eol = strchr(s->buf, '\r');
        if (eol) {
            *eol = '\0';
        }
        stats_fail(s, s->buf);
        return;
    }
    body = strstr(s->buf, "\r\n\r\n");
    if (body == NULL) {
        stats_fail(s, "no end of header");
        return;
    }
    body += 4;
    json = cJSON_Parse(body);
    if (json == NULL || !cJSON_IsArray(cJSON_GetObjectItem(json,
                                                           DS_STATS_SERVICES)))
    {
        cJSON_Delete(json);
        stats_fail(s, "the answer is not the module's JSON stats");
        return;
    }
    cJSON_Delete(s->last);
    s->last = json;
    s->last_ms = s->started_ms;
    if (s->last_ms > st.any_ms) {
        st.any_ms = s->last_ms;
    }
    stats_index(s);
    if (st.on_answer != NULL) {
        st.on_answer(s->url, s->last);
    }
    if (s->failing) {
        s->failing = 0;
        log_info("stats: %s answers again", s->url);
    }
    stats_src_close(s);
}


int
stats_fill(struct pollfd *pfd, int max)
{
    size_t  i;
    int     n = 0;

    for (i = 0; i < st.n && n < max; i++) {
        if (st.src[i].fd < 0) {
            continue;
        }
        pfd[n].fd = st.src[i].fd;
        pfd[n].events = st.src[i].phase == ST_READING ? POLLIN : POLLOUT;
        pfd[n].revents = 0;
        n++;
    }
    return n;
}


static void
stats_io(struct stats_src *s)
{
    int        soerr;
    socklen_t  sl;
    ssize_t    r;
    char      *nb;

    if (s->phase == ST_CONNECTING) {
        sl = sizeof(soerr);
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0
            || soerr != 0)
        {
            stats_fail(s, strerror(soerr ? soerr : errno));
            return;
        }
        s->phase = ST_SENDING;
    }

    if (s->phase == ST_SENDING) {
        r = send(s->fd, s->req + s->req_off, s->req_len - s->req_off,
                 MSG_NOSIGNAL);
        if (r < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                stats_fail(s, strerror(errno));
            }
            return;
        }
        s->req_off += r;
        if (s->req_off == s->req_len) {
            s->phase = ST_READING;
        }
        return;
    }

    for ( ;; ) {
        if (s->len + 65536 + 1 > s->cap) {
            if (s->cap >= STATS_MAX) {
                stats_fail(s, "answer too large");
                return;
            }
            nb = realloc(s->buf, s->cap ? s->cap * 2 : 131072);
            if (nb == NULL) {
                stats_fail(s, "out of memory");
                return;
            }
            s->buf = nb;
            s->cap = s->cap ? s->cap * 2 : 131072;
        }
        r = recv(s->fd, s->buf + s->len, s->cap - s->len - 1, 0);
        if (r > 0) {
            s->len += r;
            continue;
        }
        if (r == 0) {
            stats_parse(s);
            return;
        }
        if (errno != EAGAIN && errno != EINTR) {
            stats_fail(s, strerror(errno));
        }
        return;
    }
}


void
stats_process(struct pollfd *pfd, int n)
{
    size_t  j;
    int     i;

    for (i = 0; i < n; i++) {
        if (pfd[i].revents == 0 || pfd[i].fd < 0) {
            continue;
        }
        for (j = 0; j < st.n; j++) {
            if (st.src[j].fd == pfd[i].fd) {
                stats_io(&st.src[j]);
                break;
            }
        }
    }
}


void
stats_request(int64_t soon_ms)
{
    int64_t  at;

    at = now_ms() + soon_ms;
    if (st.next_ms == 0 || at < st.next_ms) {
        st.next_ms = at;
    }
}


/*
 * When the next regular round starts: STATS_PHASE_MS past a wall-clock
 * second, at least half a period from now.  A period counted from the
 * round (now + 1000) drifts by the lateness of the loop's tick, and about
 * one second in twenty would get no answer at all: series.c counts each
 * answer in the second it comes in, and would show that second as a gap.
 */
static int64_t
stats_next(int64_t now)
{
    struct timespec  ts;
    int64_t          wall, wait;

    clock_gettime(CLOCK_REALTIME, &ts);
    wall = (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    wait = STATS_PERIOD_MS
           - ((wall - STATS_PHASE_MS) % STATS_PERIOD_MS + STATS_PERIOD_MS)
             % STATS_PERIOD_MS;
    if (wait < STATS_PERIOD_MS / 2) {
        wait += STATS_PERIOD_MS;
    }
    return now + wait;
}


void
stats_tick(void)
{
    int64_t  now;
    size_t   i;
    int      round;

    if (st.n == 0) {
        return;
    }
    now = now_ms();
    round = now >= st.next_ms;
    if (round) {
        st.next_ms = stats_next(now);
    }
    for (i = 0; i < st.n; i++) {
        if (st.src[i].fd >= 0) {
            if (now - st.src[i].started_ms > STATS_TIMEOUT_MS) {
                stats_fail(&st.src[i], "timed out");
            }
            /* still busy: this round goes without it */
            continue;
        }
        if (round) {
            stats_begin(&st.src[i]);
        }
    }
}


/*
 * The oldest latest answer of the sources that answer: every gateway
 * still answering has been heard since then.  With none answering, the
 * time of the last answer of any (older and older): draining then waits
 * its bounded time and autoscaling holds still.  0: never.
 */
int64_t
stats_fresh_ms(void)
{
    int64_t  oldest = 0;
    size_t   i;

    for (i = 0; i < st.n; i++) {
        if (st.src[i].last != NULL
            && (oldest == 0 || st.src[i].last_ms < oldest))
        {
            oldest = st.src[i].last_ms;
        }
    }
    return oldest != 0 ? oldest : st.any_ms;
}


void
stats_on_answer(stats_answer_fn fn)
{
    st.on_answer = fn;
}


void
stats_sources(size_t *answering, size_t *total)
{
    *answering = stats_live();
    *total = st.n;
}


/* ---- lookups and sums ---------------------------------------------------- */

/* the services of a source's latest answer by name, open addressing,
 * rebuilt with each answer: lookups are O(1) however many services */
static void
stats_index(struct stats_src *s)
{
    const cJSON  *svc, *name;
    size_t        n, size, i;

    n = (size_t) cJSON_GetArraySize(cJSON_GetObjectItem(s->last,
                                                        DS_STATS_SERVICES));
    for (size = 16; size < 2 * n; size *= 2) {
        /* void */
    }
    if (size > s->index_size) {
        free(s->index);
        s->index = xcalloc(size, sizeof(*s->index));
        s->index_size = size;
    } else {
        memset(s->index, 0, s->index_size * sizeof(*s->index));
    }

    cJSON_ArrayForEach(svc, cJSON_GetObjectItem(s->last, DS_STATS_SERVICES)) {
        name = cJSON_GetObjectItem(svc, DS_STATS_NAME);
        if (!cJSON_IsString(name)) {
            continue;
        }
        i = str_hash(name->valuestring) & (s->index_size - 1);
        while (s->index[i] != NULL) {
            i = (i + 1) & (s->index_size - 1);
        }
        s->index[i] = svc;
    }
}


static const cJSON *
stats_service(const struct stats_src *s, const char *service)
{
    const cJSON  *name;
    size_t        i;

    if (s->last == NULL || s->index_size == 0) {
        return NULL;
    }
    for (i = str_hash(service) & (s->index_size - 1);
         s->index[i] != NULL;
         i = (i + 1) & (s->index_size - 1))
    {
        name = cJSON_GetObjectItem(s->index[i], DS_STATS_NAME);
        if (strcmp(name->valuestring, service) == 0) {
            return s->index[i];
        }
    }
    return NULL;
}


/*
 * The sum over the answering sources of what fn reads of the service
 * there (a service a source does not list counts 0 there: nothing of it
 * passed that gateway lately); -1 when no source answers or one answered
 * without the figure.
 */
static long
stats_sum(const char *service, const void *arg,
    double (*fn)(const cJSON *svc, const void *arg))
{
    const cJSON  *svc;
    double        sum = 0, v;
    size_t        i;
    int           any = 0;

    for (i = 0; i < st.n; i++) {
        if (st.src[i].last == NULL) {
            continue;
        }
        any = 1;
        svc = stats_service(&st.src[i], service);
        if (svc == NULL) {
            continue;
        }
        v = fn(svc, arg);
        if (v < 0) {
            return -1;
        }
        sum += v;
    }
    return any ? (long) sum : -1;
}


static double
stats_get_inflight(const cJSON *svc, const void *arg)
{
    const cJSON  *v;

    (void) arg;
    v = cJSON_GetObjectItem(svc, DS_STATS_INFLIGHT);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}


long
stats_service_inflight(const char *service)
{
    return stats_sum(service, NULL, stats_get_inflight);
}


static double
stats_get_replica_inflight(const cJSON *svc, const void *arg)
{
    const cJSON  *rep, *a, *v;

    cJSON_ArrayForEach(rep, cJSON_GetObjectItem(svc, DS_STATS_REPLICAS)) {
        a = cJSON_GetObjectItem(rep, DS_STATS_ADDR);
        if (cJSON_IsString(a) && strcmp(a->valuestring, arg) == 0) {
            v = cJSON_GetObjectItem(rep, DS_STATS_INFLIGHT);
            return cJSON_IsNumber(v) ? v->valuedouble : -1;
        }
    }
    return 0;
}


long
stats_replica_inflight(const char *service, const char *addr)
{
    return stats_sum(service, addr, stats_get_replica_inflight);
}


/* admitted requests of the last `window` seconds at one gateway (the
 * module keeps 30, 60 and 300 s windows: the smallest one that covers
 * it, scaled to the window asked for) */
static double
stats_get_arrivals(const cJSON *svc, const void *arg)
{
    const cJSON  *w, *it, *best = NULL, *a;
    long          best_len = 0, len;
    unsigned      window = *(const unsigned *) arg;

    w = cJSON_GetObjectItem(svc, DS_STATS_WINDOWS);
    cJSON_ArrayForEach(it, w) {
        len = strtol(it->string, NULL, 10);
        if (len <= 0) {
            continue;
        }
        if (best == NULL
            || (best_len < (long) window && len > best_len)
            || (len >= (long) window && len < best_len))
        {
            best = it;
            best_len = len;
        }
    }
    if (best == NULL) {
        return -1;
    }
    a = cJSON_GetObjectItem(best, DS_STATS_ARRIVALS);
    if (!cJSON_IsNumber(a)) {
        return -1;
    }
    return a->valuedouble * (double) window / (double) best_len;
}


long
stats_service_arrivals(const char *service, unsigned window)
{
    return stats_sum(service, &window, stats_get_arrivals);
}


/* "model":{"ttft_ms":{"<window>":{"p50","p99","n"}}} of one gateway */
static const cJSON *
stats_get_ttft(const cJSON *svc, unsigned window)
{
    char  key[16];

    snprintf(key, sizeof(key), "%u", window);
    return cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(svc,
                                   DS_STATS_MODEL), DS_STATS_TTFT_MS), key);
}


int
stats_service_ttft_p99(const char *service, unsigned window, double *p99_ms,
    long *n)
{
    const cJSON  *svc, *w, *p, *c;
    size_t        i;
    int           any = 0;

    *p99_ms = 0;
    *n = 0;
    for (i = 0; i < st.n; i++) {
        if (st.src[i].last == NULL) {
            continue;
        }
        any = 1;
        svc = stats_service(&st.src[i], service);
        if (svc == NULL) {
            continue;
        }
        w = stats_get_ttft(svc, window);
        p = cJSON_GetObjectItem(w, DS_STATS_P99);
        c = cJSON_GetObjectItem(w, DS_STATS_LAT_N);
        if (!cJSON_IsNumber(p) || !cJSON_IsNumber(c)) {
            return -1;
        }
        if (c->valuedouble > 0 && p->valuedouble > *p99_ms) {
            *p99_ms = p->valuedouble;
        }
        *n += (long) c->valuedouble;
    }
    return any ? 0 : -1;
}


/* "hold": {"held": n, ...}: requests waiting now */
static double
stats_get_held(const cJSON *svc, const void *arg)
{
    const cJSON  *v;

    (void) arg;
    v = cJSON_GetObjectItem(cJSON_GetObjectItem(svc, DS_STATS_HOLD),
                            DS_STATS_HELD);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}


long
stats_service_held(const char *service)
{
    long  n;

    n = stats_sum(service, NULL, stats_get_held);
    return n > 0 ? n : 0;
}


/* ---- token budgets ------------------------------------------------------- */

/* the usage entry of (service, model) in list, made when missing */
static cJSON *
stats_usage_entry(cJSON *list, const char *service, const char *model)
{
    cJSON        *u;
    const char   *s, *m;

    cJSON_ArrayForEach(u, list) {
        s = cJSON_GetStringValue(cJSON_GetObjectItem(u, "service"));
        m = cJSON_GetStringValue(cJSON_GetObjectItem(u, "model"));
        if (s && m && strcmp(s, service) == 0 && strcmp(m, model) == 0) {
            return u;
        }
    }

    u = cJSON_CreateObject();
    if (u == NULL) {
        return NULL;
    }
    cJSON_AddItemToArray(list, u);
    cJSON_AddStringToObject(u, "model", model);
    cJSON_AddStringToObject(u, "service", service);
    cJSON_AddNumberToObject(u, "requests", 0);
    cJSON_AddNumberToObject(u, "refused", 0);
    cJSON_AddNumberToObject(u, "prompt_tokens", 0);
    cJSON_AddNumberToObject(u, "completion_tokens", 0);
    cJSON_AddNumberToObject(u, "day_tokens", 0);
    return u;
}


/* to's field `name` += from's `name`, when it is a number */
static void
stats_usage_add(cJSON *to, const char *name, const cJSON *from,
    const char *from_name)
{
    const cJSON  *v;
    cJSON        *t;

    v = cJSON_GetObjectItem(from, from_name);
    t = cJSON_GetObjectItem(to, name);
    if (cJSON_IsNumber(v) && v->valuedouble > 0 && cJSON_IsNumber(t)) {
        cJSON_SetNumberValue(t, t->valuedouble + v->valuedouble);
    }
}


/* one gateway's "budgets" entries of token into list */
static void
stats_usage_of(const cJSON *answer, const char *token, uint64_t day,
    cJSON *list)
{
    const cJSON  *b, *tok, *svc, *model, *d;
    cJSON        *u;

    cJSON_ArrayForEach(b, cJSON_GetObjectItem(answer, DS_STATS_BUDGETS)) {
        tok = cJSON_GetObjectItem(b, DS_STATS_BUDGET_TOKEN);
        svc = cJSON_GetObjectItem(b, DS_STATS_BUDGET_SERVICE);
        model = cJSON_GetObjectItem(b, DS_STATS_BUDGET_MODEL);
        if (!cJSON_IsString(tok) || !cJSON_IsString(svc)
            || !cJSON_IsString(model) || strcmp(tok->valuestring, token) != 0)
        {
            continue;
        }

        u = stats_usage_entry(list, svc->valuestring, model->valuestring);
        if (u == NULL) {
            return;
        }
        stats_usage_add(u, "requests", b, DS_STATS_BUDGET_REQUESTS);
        stats_usage_add(u, "refused", b, DS_STATS_BUDGET_REFUSED);
        stats_usage_add(u, "prompt_tokens", b, DS_STATS_BUDGET_PROMPT);
        stats_usage_add(u, "completion_tokens", b,
                        DS_STATS_BUDGET_COMPLETION);

        /* a gateway's count of another day is not today's */
        d = cJSON_GetObjectItem(b, DS_STATS_BUDGET_DAY);
        if (cJSON_IsNumber(d) && (uint64_t) d->valuedouble == day) {
            stats_usage_add(u, "day_tokens", b, DS_STATS_BUDGET_DAY_TOKENS);
        }
    }
}


cJSON *
stats_token_usage(const char *token, uint64_t day)
{
    cJSON   *list;
    size_t   i;

    list = cJSON_CreateArray();
    if (list == NULL) {
        return NULL;
    }
    for (i = 0; i < st.n; i++) {
        if (st.src[i].last != NULL) {
            stats_usage_of(st.src[i].last, token, day, list);
        }
    }
    return list;
}
