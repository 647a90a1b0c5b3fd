/*
 * The module's metrics: GET stats_url (a "dstack_stats json" location)
 * once a second, and every 100 ms while a replica drains, with a small
 * non-blocking HTTP/1.0 client driven by the main loop.  The answer is
 * read until the server closes; only the status line and the end of the
 * header are looked at, the body is JSON.
 *
 * Draining trusts only an answer fetched after the drain began: see
 * stats_fresh_ms().
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "ds_stats_names.h"
#include "log.h"
#include "stats.h"
#include "util.h"


#define STATS_PERIOD_MS     1000
#define STATS_TIMEOUT_MS    1000
#define STATS_MAX           (16 * 1024 * 1024)

enum { ST_IDLE = 0, ST_CONNECTING, ST_SENDING, ST_READING };

static struct {
    int                 configured;
    struct sockaddr_storage addr;
    socklen_t           addrlen;
    char                host[256];
    char                path[1024];

    int                 fd;
    int                 phase;
    int64_t             started_ms;
    int64_t             next_ms;
    char                req[1400];
    size_t              req_len;
    size_t              req_off;
    char               *buf;
    size_t              len;
    size_t              cap;

    cJSON              *last;           /* the latest good answer */
    int64_t             last_ms;        /* when it was requested */
    const cJSON       **index;          /* its services by name (hash) */
    size_t              index_size;     /* a power of 2, 0: none */
    int                 failing;        /* for log messages */
} st = { .fd = -1 };


int
stats_init(const char *url, char *err, size_t n)
{
    const char       *p, *slash, *colon;
    char              host[256], port[16];
    struct addrinfo   hints, *ai;
    int               rc;

    if (url == NULL || *url == '\0') {
        return 0;
    }
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, n, "stats_url: \"%s\" is not an http:// URL", url);
        return -1;
    }
    p = url + 7;
    slash = strchr(p, '/');
    if (slash == NULL) {
        slash = p + strlen(p);
    }
    /* only the services with traffic, in flight or held: the others are
     * zeros, and an idle majority would cost the worker and us time */
    snprintf(st.path, sizeof(st.path), "%s%sactive=1", *slash ? slash : "/",
             strchr(slash, '?') ? "&" : "?");

    if (*p == '[') {
        colon = strchr(p, ']');
        if (colon == NULL || colon > slash) {
            snprintf(err, n, "stats_url: bad IPv6 address in \"%s\"", url);
            return -1;
        }
        snprintf(host, sizeof(host), "%.*s", (int) (colon - p - 1), p + 1);
        colon = colon[1] == ':' ? colon + 1 : NULL;
    } else {
        colon = memchr(p, ':', slash - p);
        snprintf(host, sizeof(host), "%.*s",
                 (int) ((colon ? colon : slash) - p), p);
    }
    if (colon != NULL) {
        snprintf(port, sizeof(port), "%.*s", (int) (slash - colon - 1),
                 colon + 1);
    } else {
        snprintf(port, sizeof(port), "80");
    }
    snprintf(st.host, sizeof(st.host), "%.*s", (int) (slash - p), p);

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, n, "stats_url: %s: %s", host, gai_strerror(rc));
        return -1;
    }
    memcpy(&st.addr, ai->ai_addr, ai->ai_addrlen);
    st.addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    st.req_len = (size_t) snprintf(st.req, sizeof(st.req),
                                   "GET %s HTTP/1.0\r\nHost: %s\r\n"
                                   "User-Agent: dstack-controld\r\n\r\n",
                                   st.path, st.host);
    st.configured = 1;
    return 0;
}


static void
stats_close(void)
{
    if (st.fd >= 0) {
        close(st.fd);
        st.fd = -1;
    }
    st.phase = ST_IDLE;
    st.len = 0;
}


static void
stats_fail(const char *why)
{
    if (!st.failing) {
        log_warnx("stats: %s: %s (draining waits a bounded time instead)",
                  conf->stats_url, why);
        st.failing = 1;
    }
    stats_close();
}


static void
stats_begin(void)
{
    int  rc;

    st.fd = socket(st.addr.ss_family,
                   SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (st.fd < 0) {
        stats_fail(strerror(errno));
        return;
    }
    st.started_ms = now_ms();
    st.req_off = 0;
    st.len = 0;
    rc = connect(st.fd, (struct sockaddr *) &st.addr, st.addrlen);
    if (rc == 0) {
        st.phase = ST_SENDING;
    } else if (errno == EINPROGRESS) {
        st.phase = ST_CONNECTING;
    } else {
        stats_fail(strerror(errno));
    }
}


/* the status line and the body of a complete answer */
static void stats_index(void);


static void
stats_parse(void)
{
    char   *body, *eol;
    int     code;
    cJSON  *json;

    if (st.len == 0 || st.buf == NULL) {
        stats_fail("empty answer");
        return;
    }
    st.buf[st.len] = '\0';
    if (sscanf(st.buf, "HTTP/%*d.%*d %d", &code) != 1) {
        stats_fail("not an HTTP answer");
        return;
    }
    if (code != 200) {
        eol = strchr(st.buf, '\r');
        if (eol) {
            *eol = '\0';
        }
        stats_fail(st.buf);
        return;
    }
    body = strstr(st.buf, "\r\n\r\n");
    if (body == NULL) {
        stats_fail("no end of header");
        return;
    }
    body += 4;
    json = cJSON_Parse(body);
    if (json == NULL || !cJSON_IsArray(cJSON_GetObjectItem(json,
                                                           DS_STATS_SERVICES)))
    {
        cJSON_Delete(json);
        stats_fail("the answer is not the module's JSON stats");
        return;
    }
    cJSON_Delete(st.last);
    st.last = json;
    st.last_ms = st.started_ms;
    stats_index();
    if (st.failing) {
        log_info("stats: %s answers again", conf->stats_url);
        st.failing = 0;
    }
    stats_close();
}


int
stats_fill(struct pollfd *pfd, int max)
{
    if (st.fd < 0 || max < 1) {
        return 0;
    }
    pfd[0].fd = st.fd;
    pfd[0].events = st.phase == ST_READING ? POLLIN : POLLOUT;
    pfd[0].revents = 0;
    return 1;
}


void
stats_process(struct pollfd *pfd, int n)
{
    int      i, soerr;
    socklen_t sl;
    ssize_t  r;
    char    *nb;

    for (i = 0; i < n; i++) {
        if (pfd[i].fd != st.fd || st.fd < 0 || pfd[i].revents == 0) {
            continue;
        }

        if (st.phase == ST_CONNECTING) {
            sl = sizeof(soerr);
            if (getsockopt(st.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0
                || soerr != 0)
            {
                stats_fail(strerror(soerr ? soerr : errno));
                return;
            }
            st.phase = ST_SENDING;
        }

        if (st.phase == ST_SENDING) {
            r = send(st.fd, st.req + st.req_off, st.req_len - st.req_off,
                     MSG_NOSIGNAL);
            if (r < 0) {
                if (errno != EAGAIN && errno != EINTR) {
                    stats_fail(strerror(errno));
                }
                return;
            }
            st.req_off += r;
            if (st.req_off == st.req_len) {
                st.phase = ST_READING;
            }
            return;
        }

        for ( ;; ) {
            if (st.len + 65536 + 1 > st.cap) {
                if (st.cap >= STATS_MAX) {
                    stats_fail("answer too large");
                    return;
                }
                nb = realloc(st.buf, st.cap ? st.cap * 2 : 131072);
                if (nb == NULL) {
                    stats_fail("out of memory");
                    return;
                }
                st.buf = nb;
                st.cap = st.cap ? st.cap * 2 : 131072;
            }
            r = recv(st.fd, st.buf + st.len, st.cap - st.len - 1, 0);
            if (r > 0) {
                st.len += r;
                continue;
            }
            if (r == 0) {
                stats_parse();
                return;
            }
            if (errno != EAGAIN && errno != EINTR) {
                stats_fail(strerror(errno));
            }
            return;
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


void
stats_tick(void)
{
    int64_t  now;

    if (!st.configured) {
        return;
    }
    now = now_ms();

    if (st.fd >= 0) {
        if (now - st.started_ms > STATS_TIMEOUT_MS) {
            stats_fail("timed out");
        }
        return;
    }
    if (now >= st.next_ms) {
        st.next_ms = now + STATS_PERIOD_MS;
        stats_begin();
    }
}


int64_t
stats_fresh_ms(void)
{
    return st.last ? st.last_ms : 0;
}


static size_t
stats_hash(const char *name)
{
    size_t  h = 2166136261u;

    while (*name) {
        h = (h ^ (unsigned char) *name++) * 16777619u;
    }
    return h;
}


/* the services of the latest answer by name, open addressing, rebuilt
 * with each answer: lookups are O(1) however many services there are */
static void
stats_index(void)
{
    const cJSON  *s, *name;
    size_t        n, size, i;

    n = (size_t) cJSON_GetArraySize(cJSON_GetObjectItem(st.last,
                                                        DS_STATS_SERVICES));
    for (size = 16; size < 2 * n; size *= 2) {
        /* void */
    }
    if (size > st.index_size) {
        free(st.index);
        st.index = xcalloc(size, sizeof(*st.index));
        st.index_size = size;
    } else {
        memset(st.index, 0, st.index_size * sizeof(*st.index));
    }

    cJSON_ArrayForEach(s, cJSON_GetObjectItem(st.last, DS_STATS_SERVICES)) {
        name = cJSON_GetObjectItem(s, DS_STATS_NAME);
        if (!cJSON_IsString(name)) {
            continue;
        }
        i = stats_hash(name->valuestring) & (st.index_size - 1);
        while (st.index[i] != NULL) {
            i = (i + 1) & (st.index_size - 1);
        }
        st.index[i] = s;
    }
}


static const cJSON *
stats_service(const char *service)
{
    const cJSON  *name;
    size_t        i;

    if (st.last == NULL || st.index_size == 0) {
        return NULL;
    }
    for (i = stats_hash(service) & (st.index_size - 1);
         st.index[i] != NULL;
         i = (i + 1) & (st.index_size - 1))
    {
        name = cJSON_GetObjectItem(st.index[i], DS_STATS_NAME);
        if (strcmp(name->valuestring, service) == 0) {
            return st.index[i];
        }
    }
    return NULL;
}


long
stats_service_inflight(const char *service)
{
    const cJSON  *s, *v;

    if (st.last == NULL) {
        return -1;
    }
    s = stats_service(service);
    if (s == NULL) {
        return 0;           /* not in state any more: nothing in flight */
    }
    v = cJSON_GetObjectItem(s, DS_STATS_INFLIGHT);
    return cJSON_IsNumber(v) ? (long) v->valuedouble : -1;
}


long
stats_replica_inflight(const char *service, const char *addr)
{
    const cJSON  *s, *rep, *a, *v;

    if (st.last == NULL) {
        return -1;
    }
    s = stats_service(service);
    if (s == NULL) {
        return 0;
    }
    cJSON_ArrayForEach(rep, cJSON_GetObjectItem(s, DS_STATS_REPLICAS)) {
        a = cJSON_GetObjectItem(rep, DS_STATS_ADDR);
        if (cJSON_IsString(a) && strcmp(a->valuestring, addr) == 0) {
            v = cJSON_GetObjectItem(rep, DS_STATS_INFLIGHT);
            return cJSON_IsNumber(v) ? (long) v->valuedouble : -1;
        }
    }
    return 0;
}


/* admitted requests of the last `window` seconds (the module keeps 30,
 * 60 and 300 s windows: the smallest one that covers it) */
long
stats_service_arrivals(const char *service, unsigned window)
{
    const cJSON  *s, *w, *it, *best = NULL, *a;
    long          best_len = 0, len;

    if (st.last == NULL) {
        return -1;
    }
    s = stats_service(service);
    if (s == NULL) {
        return 0;
    }
    w = cJSON_GetObjectItem(s, DS_STATS_WINDOWS);
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
    /* scaled to the window asked for */
    return (long) (a->valuedouble * (double) window / (double) best_len);
}


/* "hold": {"held": n, ...}: requests waiting now */
long
stats_service_held(const char *service)
{
    const cJSON  *s, *v;

    s = stats_service(service);
    if (s == NULL) {
        return 0;
    }
    v = cJSON_GetObjectItem(cJSON_GetObjectItem(s, DS_STATS_HOLD),
                            DS_STATS_HELD);
    return cJSON_IsNumber(v) ? (long) v->valuedouble : 0;
}
