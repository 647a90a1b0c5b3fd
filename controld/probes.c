/*
 * Readiness probes, non-blocking, from the main loop.
 *
 * A replica takes traffic only once every probe of its spec passed
 * `ready_after` times in a row.  Without probes in the spec (and without
 * the default model probe that ds_spec_from_json fills in), the probe is
 * the port accepting a TCP connection.  An HTTP probe sends one request
 * and passes on a 2xx status line; nothing else of the answer is read.
 *
 * Before a replica is ready a failed attempt is retried soon (25 ms,
 * then every 50 ms, or the probe's interval if shorter): the time from
 * the app listening to the first request routed to it is what users wait
 * for, and a refused local connect costs next to nothing.  Successes are spaced by `interval`, as in dstack.  After
 * ready, probes keep running every `interval` unless `until_ready`; three
 * failures in a row take the replica out of routing until it passes
 * again.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include "config.h"
#include "probes.h"
#include "run.h"
#include "spec.h"
#include "util.h"


#define PROBE_RETRY_MIN_MS      25
#define PROBE_RETRY_MAX_MS      50
#define PROBE_CONNECT_MS        2000    /* before ready: a connect that
                                           hangs is a replica not there */
#define PROBE_FAILS_UNREADY     3

enum { PR_CONNECTING = 0, PR_SENDING, PR_READING };

struct probe {
    LIST_ENTRY(probe) entry;
    struct replica *rep;
    int             idx;                /* -1: the TCP probe */
    int             fd;
    int             phase;
    int64_t         deadline_ms;
    int64_t         connect_deadline_ms;
    char           *req;
    size_t          req_len;
    size_t          req_off;
    char            resp[256];
    size_t          resp_len;
    int             any_status;         /* an HTTP answer is enough */
};

static LIST_HEAD(, probe)  probes = LIST_HEAD_INITIALIZER(probes);

/* probes run while its commands run, ready or not yet */
static int
replica_probed(const struct replica *rep)
{
    return rep->state == RS_RUNNING || rep->state == RS_READY;
}


/* where results go (the reconciler's) */
static probe_result_fn  probe_result;


void
probes_init(probe_result_fn on_result)
{
    probe_result = on_result;
}


static void
probe_free(struct probe *p)
{
    LIST_REMOVE(p, entry);
    if (p->fd >= 0) {
        close(p->fd);
    }
    free(p->req);
    if (p->rep != NULL && p->rep->probe == p) {
        p->rep->probe = NULL;
    }
    free(p);
}


void
probes_cancel(struct replica *rep)
{
    if (rep->probe != NULL) {
        probe_free(rep->probe);
    }
}


static int
probe_count(const struct replica *rep)
{
    return rep->run->spec.n_probes > 0 ? (int) rep->run->spec.n_probes : 1;
}


static const ds_spec_probe_t  relay_probe = {
    "/", DS_SPEC_METHOD_GET, NULL, 0, NULL, 2, 1, 1, 0
};


static const ds_spec_probe_t *
probe_spec(const struct replica *rep, int idx)
{
    if (rep->run->spec.n_probes == 0) {
        return NULL;
    }
    return &rep->run->spec.probes[idx];
}


static char *
probe_request(const struct replica *rep, const ds_spec_probe_t *ps,
    size_t *len)
{
    size_t   cap, off, i, blen;
    char    *buf;

    blen = ps->body ? strlen(ps->body) : 0;
    cap = 512 + strlen(ps->url) + blen;
    for (i = 0; i < ps->n_headers; i++) {
        cap += strlen(ps->headers[i].name) + strlen(ps->headers[i].value) + 4;
    }
    buf = xcalloc(1, cap);
    off = (size_t) snprintf(buf, cap, "%s %s HTTP/1.1\r\nHost: %s\r\n"
                            "User-Agent: dstack-probe\r\n"
                            "Connection: close\r\n",
                            spec_method_name(ps->method), ps->url, rep->addr);
    for (i = 0; i < ps->n_headers; i++) {
        off += (size_t) snprintf(buf + off, cap - off, "%s: %s\r\n",
                                 ps->headers[i].name, ps->headers[i].value);
    }
    if (ps->body != NULL) {
        off += (size_t) snprintf(buf + off, cap - off,
                                 "Content-Length: %zu\r\n", blen);
    }
    off += (size_t) snprintf(buf + off, cap - off, "\r\n");
    if (ps->body != NULL) {
        memcpy(buf + off, ps->body, blen);
        off += blen;
    }
    *len = off;
    return buf;
}


static int
probe_sockaddr(const char *addr, struct sockaddr_storage *ss, socklen_t *sl)
{
    char                  host[64];
    const char           *colon;
    struct sockaddr_in   *in4 = (struct sockaddr_in *) ss;
    struct sockaddr_in6  *in6 = (struct sockaddr_in6 *) ss;
    long                  port;

    memset(ss, 0, sizeof(*ss));
    if (addr[0] == '[') {
        colon = strstr(addr, "]:");
        if (colon == NULL || colon - addr - 1 >= (long) sizeof(host)) {
            return -1;
        }
        snprintf(host, sizeof(host), "%.*s", (int) (colon - addr - 1),
                 addr + 1);
        port = strtol(colon + 2, NULL, 10);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t) port);
        *sl = sizeof(*in6);
        return inet_pton(AF_INET6, host, &in6->sin6_addr) == 1 ? 0 : -1;
    }
    colon = strrchr(addr, ':');
    if (colon == NULL || colon - addr >= (long) sizeof(host)) {
        return -1;
    }
    snprintf(host, sizeof(host), "%.*s", (int) (colon - addr), addr);
    port = strtol(colon + 1, NULL, 10);
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t) port);
    *sl = sizeof(*in4);
    return inet_pton(AF_INET, host, &in4->sin_addr) == 1 ? 0 : -1;
}


static void
probe_done(struct probe *p, int ok, const char *why)
{
    struct replica          *rep = p->rep;
    const ds_spec_probe_t   *ps;
    int                      idx = p->idx, i, n, all;
    int64_t                  now;
    unsigned                 interval_ms, ready_after;
    char                     msg[160];

    probe_free(p);
    now = now_ms();
    ps = idx >= 0 ? probe_spec(rep, idx) : NULL;
    interval_ms = ps ? ps->interval * 1000U : 1000U;
    ready_after = ps ? (ps->ready_after ? ps->ready_after : 1) : 1;
    if (interval_ms == 0) {
        interval_ms = 1000;
    }

    if (!ok) {
        rep->probe_pass[idx < 0 ? 0 : idx] = 0;
        if (ps != NULL) {
            snprintf(msg, sizeof(msg), "probe %d (%s %s): %s", idx,
                     spec_method_name(ps->method), ps->url, why);
        } else {
            snprintf(msg, sizeof(msg), "port %u: %s",
                     (unsigned) rep->run->spec.port, why);
        }
        snprintf(rep->probe_error, sizeof(rep->probe_error), "%s", msg);

        if (!replica_ready(rep)) {
            rep->run->counters.probe_failures++;
            rep->probe_delay_ms = rep->probe_delay_ms
                                  ? rep->probe_delay_ms * 2
                                  : PROBE_RETRY_MIN_MS;
            if (rep->probe_delay_ms > PROBE_RETRY_MAX_MS) {
                rep->probe_delay_ms = PROBE_RETRY_MAX_MS;
            }
            if (rep->probe_delay_ms > interval_ms) {
                rep->probe_delay_ms = interval_ms;
            }
            rep->probe_at[idx < 0 ? 0 : idx] = now + rep->probe_delay_ms;
            return;
        }

        rep->run->counters.probe_failures_ready++;
        rep->probe_fails++;
        rep->probe_at[idx < 0 ? 0 : idx] = now + interval_ms;
        if (rep->probe_fails >= PROBE_FAILS_UNREADY) {
            probe_result(rep, 0, msg);
        }
        return;
    }

    rep->probe_fails = 0;
    rep->probe_delay_ms = 0;
    i = idx < 0 ? 0 : idx;
    if (rep->probe_pass[i] < 1000000) {
        rep->probe_pass[i]++;
    }
    rep->probe_at[i] = now + interval_ms;

    if (replica_ready(rep)) {
        return;
    }

    n = probe_count(rep);
    all = 1;
    for (i = 0; i < n; i++) {
        ps = probe_spec(rep, i);
        ready_after = ps ? (ps->ready_after ? ps->ready_after : 1) : 1;
        if (rep->probe_pass[i] < ready_after) {
            all = 0;
        }
    }
    if (!all) {
        return;
    }

    rep->probe_error[0] = '\0';

    /* until_ready on every probe (or the TCP probe): no more probing */
    rep->probe_done = 1;
    for (i = 0; i < n; i++) {
        ps = probe_spec(rep, i);
        if (ps != NULL && !ps->until_ready) {
            rep->probe_done = 0;
        }
    }
    probe_result(rep, 1, NULL);
}


static void
probe_begin(struct replica *rep, int idx)
{
    struct probe            *p;
    const ds_spec_probe_t   *ps;
    struct sockaddr_storage  ss;
    socklen_t                sl;
    int                      rc, one = 1;
    int64_t                  now;

    p = xcalloc(1, sizeof(struct probe));
    p->rep = rep;
    p->idx = rep->run->spec.n_probes > 0 ? idx : -1;
    p->fd = -1;
    LIST_INSERT_HEAD(&probes, p, entry);
    rep->probe = p;

    now = now_ms();
    ps = probe_spec(rep, idx);
    p->deadline_ms = now + (ps ? (int64_t) ps->timeout * 1000 : 2000);
    p->connect_deadline_ms = replica_ready(rep) ? p->deadline_ms
                                        : now + PROBE_CONNECT_MS;
    if (p->connect_deadline_ms > p->deadline_ms) {
        p->connect_deadline_ms = p->deadline_ms;
    }
    if (ps != NULL) {
        p->req = probe_request(rep, ps, &p->req_len);
    } else if (rep->relayed) {
        /* a relay (a tunnel) accepts connections for a replica that may
         * not listen yet: any HTTP answer proves that it does */
        p->req = probe_request(rep, &relay_probe, &p->req_len);
        p->any_status = 1;
    }

    if (probe_sockaddr(rep->addr, &ss, &sl) != 0) {
        probe_done(p, 0, "bad address");
        return;
    }
    p->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   0);
    if (p->fd < 0) {
        probe_done(p, 0, strerror(errno));
        return;
    }
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    rc = connect(p->fd, (struct sockaddr *) &ss, sl);
    if (rc == 0) {
        p->phase = PR_SENDING;
    } else if (errno == EINPROGRESS) {
        p->phase = PR_CONNECTING;
    } else {
        probe_done(p, 0, strerror(errno));
    }
}


/* starts the probes that are due */
void
probes_tick(void)
{
    struct run      *r;
    struct replica  *rep;
    struct probe    *p, *next;
    int64_t          now;
    int              i, n;

    now = now_ms();

    for (p = LIST_FIRST(&probes); p != NULL; p = next) {
        next = LIST_NEXT(p, entry);
        if (now >= p->deadline_ms
            || (p->phase == PR_CONNECTING && now >= p->connect_deadline_ms))
        {
            probe_done(p, 0, p->phase == PR_CONNECTING
                             ? "connect timed out" : "timed out");
        }
    }

    TAILQ_FOREACH(r, &runs, entry) {
        if (r->finished) {
            continue;
        }
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (!replica_probed(rep) || rep->pid <= 0
                || rep->probe != NULL || rep->probe_done
                || rep->addr[0] == '\0')
            {
                continue;
            }
            n = probe_count(rep);
            for (i = 0; i < n; i++) {
                if (rep->probe_at[i] <= now) {
                    probe_begin(rep, i);
                    break;
                }
            }
        }
    }
}


/* ms until the next probe is due or times out; -1: none */
int
probes_timeout_ms(void)
{
    struct run      *r;
    struct replica  *rep;
    struct probe    *p;
    int64_t          now, best = -1, t;
    int              i, n;

    now = now_ms();
    LIST_FOREACH(p, &probes, entry) {
        t = p->phase == PR_CONNECTING ? p->connect_deadline_ms
                                      : p->deadline_ms;
        if (best < 0 || t < best) {
            best = t;
        }
    }
    TAILQ_FOREACH(r, &runs, entry) {
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (!replica_probed(rep) || rep->probe
                || rep->probe_done || rep->pid <= 0)
            {
                continue;
            }
            n = probe_count(rep);
            for (i = 0; i < n; i++) {
                if (best < 0 || rep->probe_at[i] < best) {
                    best = rep->probe_at[i];
                }
            }
        }
    }
    if (best < 0) {
        return -1;
    }
    return best <= now ? 0 : (int) (best - now);
}


int
probes_fill(struct pollfd *pfd, int max)
{
    struct probe  *p;
    int            n = 0;

    LIST_FOREACH(p, &probes, entry) {
        if (n == max) {
            break;
        }
        if (p->fd < 0) {
            continue;
        }
        pfd[n].fd = p->fd;
        pfd[n].events = p->phase == PR_READING ? POLLIN : POLLOUT;
        pfd[n].revents = 0;
        n++;
    }
    return n;
}


static void
probe_io(struct probe *p, short revents)
{
    int       soerr, code;
    socklen_t sl;
    ssize_t   r;
    char     *eol;
    char      why[64];

    if (p->phase == PR_CONNECTING) {
        sl = sizeof(soerr);
        if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) {
            soerr = errno;
        }
        if (soerr != 0) {
            probe_done(p, 0, strerror(soerr));
            return;
        }
        if (p->req == NULL) {
            /* the TCP probe: connected is enough */
            probe_done(p, 1, NULL);
            return;
        }
        p->phase = PR_SENDING;
    }

    if (p->phase == PR_SENDING) {
        if (p->req == NULL) {
            probe_done(p, 1, NULL);
            return;
        }
        r = send(p->fd, p->req + p->req_off, p->req_len - p->req_off,
                 MSG_NOSIGNAL);
        if (r < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                probe_done(p, 0, strerror(errno));
            }
            return;
        }
        p->req_off += r;
        if (p->req_off == p->req_len) {
            p->phase = PR_READING;
        }
        return;
    }

    (void) revents;
    r = recv(p->fd, p->resp + p->resp_len, sizeof(p->resp) - 1 - p->resp_len,
             0);
    if (r < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            probe_done(p, 0, strerror(errno));
        }
        return;
    }
    p->resp_len += r;
    p->resp[p->resp_len] = '\0';
    eol = strstr(p->resp, "\r\n");
    if (eol == NULL && r > 0 && p->resp_len < sizeof(p->resp) - 1) {
        return;
    }
    if (eol != NULL) {
        *eol = '\0';
    }
    if (sscanf(p->resp, "HTTP/%*d.%*d %d", &code) != 1) {
        probe_done(p, 0, r == 0 && p->resp_len == 0
                         ? "connection closed without an answer"
                         : "not an HTTP answer");
        return;
    }
    if ((code >= 200 && code < 300) || p->any_status) {
        probe_done(p, 1, NULL);
        return;
    }
    snprintf(why, sizeof(why), "status %d", code);
    probe_done(p, 0, why);
}


void
probes_process(struct pollfd *pfd, int n)
{
    struct probe  *p, *next;
    int            i;

    for (i = 0; i < n; i++) {
        if (pfd[i].revents == 0) {
            continue;
        }
        for (p = LIST_FIRST(&probes); p != NULL; p = next) {
            next = LIST_NEXT(p, entry);
            if (p->fd == pfd[i].fd) {
                probe_io(p, pfd[i].revents);
                break;
            }
        }
    }
}


void
probes_start(struct replica *rep)
{
    int  i;

    probes_cancel(rep);
    memset(rep->probe_pass, 0, sizeof(rep->probe_pass));
    for (i = 0; i < DS_SPEC_PROBES_MAX; i++) {
        rep->probe_at[i] = now_ms();
    }
    rep->probe_fails = 0;
    rep->probe_delay_ms = 0;
    rep->probe_done = 0;
}
