/*
 * The Docker Engine HTTP API over its unix socket, with libcurl.
 *
 * One multi handle for everything; libcurl tells which sockets it waits
 * on (socket callback) and when it wants to be called anyway (timer
 * callback), and the main loop polls those sockets with the others.  An
 * answer is kept in memory (at most ENGINE_BODY_MAX) unless the caller
 * streams it (logs, pull progress); a waiting request such as
 * /containers/ID/wait has no timeout.
 */

#define _GNU_SOURCE

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <curl/curl.h>

#include "engine.h"
#include "log.h"
#include "util.h"


#define ENGINE_BODY_MAX         (4 * 1024 * 1024)
#define ENGINE_SOCKS_MAX        256

struct engine_req {
    LIST_ENTRY(engine_req) entry;
    CURL               *easy;
    struct curl_slist  *headers;
    char               *body;           /* the answer */
    size_t              len;
    size_t              cap;
    int                 too_large;
    char               *sent;           /* a copy of the request body */
    size_t              sent_len;
    engine_data_fn      on_data;
    engine_done_fn      on_done;
    void               *arg;
    char                why[CURL_ERROR_SIZE];
    int                 finished;       /* libcurl is done with it */
    CURLcode            result;
    int                 in_callback;    /* cancelled: freed after it */
    int                 cancelled;
    char               *sock;           /* another engine's, or NULL */
};

static LIST_HEAD(, engine_req)  reqs = LIST_HEAD_INITIALIZER(reqs);

static CURLM       *multi;
static char        *sock_path;
static int64_t      timer_at = -1;      /* monotonic ms, -1: none */

static struct {
    curl_socket_t   fd;
    int             what;               /* CURL_POLL_* */
} socks[ENGINE_SOCKS_MAX];
static int          n_socks;


/* ---- libcurl's callbacks ------------------------------------------------ */

static int
engine_on_socket(CURL *easy, curl_socket_t fd, int what, void *u, void *s)
{
    int  i;

    (void) easy;
    (void) u;
    (void) s;

    for (i = 0; i < n_socks; i++) {
        if (socks[i].fd == fd) {
            break;
        }
    }
    if (what == CURL_POLL_REMOVE) {
        if (i < n_socks) {
            socks[i] = socks[--n_socks];
        }
        return 0;
    }
    if (i == n_socks) {
        if (n_socks == ENGINE_SOCKS_MAX) {
            log_warnx("engine: more than %d sockets", ENGINE_SOCKS_MAX);
            return -1;
        }
        n_socks++;
    }
    socks[i].fd = fd;
    socks[i].what = what;
    return 0;
}


static int
engine_on_timer(CURLM *m, long timeout_ms, void *u)
{
    (void) m;
    (void) u;

    timer_at = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    return 0;
}


static size_t
engine_on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct engine_req  *q = arg;
    size_t              n = size * nmemb;
    char               *p;

    if (q->on_data != NULL) {
        q->on_data(q->arg, data, n);
        return n;
    }
    if (q->len + n + 1 > ENGINE_BODY_MAX) {
        q->too_large = 1;
        return n;               /* read on, keep nothing more */
    }
    if (q->len + n + 1 > q->cap) {
        q->cap = (q->len + n + 1) * 2;
        p = realloc(q->body, q->cap);
        if (p == NULL) {
            return 0;           /* the transfer fails: out of memory */
        }
        q->body = p;
    }
    memcpy(q->body + q->len, data, n);
    q->len += n;
    q->body[q->len] = '\0';
    return n;
}


/* ---- requests ----------------------------------------------------------- */

int
engine_init(const char *socket, char *err, size_t n)
{
    if (multi == NULL) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
            snprintf(err, n, "engine: cannot initialise libcurl");
            return -1;
        }
        multi = curl_multi_init();
        if (multi == NULL) {
            snprintf(err, n, "engine: cannot initialise libcurl");
            return -1;
        }
        curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, engine_on_socket);
        curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, engine_on_timer);
    }
    free(sock_path);
    sock_path = xstrdup(socket);
    return 0;
}


const char *
engine_socket(void)
{
    return sock_path ? sock_path : "";
}


static void
engine_req_free(struct engine_req *q)
{
    LIST_REMOVE(q, entry);
    if (q->easy != NULL) {
        curl_multi_remove_handle(multi, q->easy);
        curl_easy_cleanup(q->easy);
    }
    curl_slist_free_all(q->headers);
    free(q->body);
    if (q->sent != NULL) {
        /* a container's create holds its secrets */
        explicit_bzero(q->sent, q->sent_len);
    }
    free(q->sent);
    free(q->sock);
    free(q);
}


void
engine_close(void)
{
    while (!LIST_EMPTY(&reqs)) {
        engine_req_free(LIST_FIRST(&reqs));
    }
    if (multi != NULL) {
        curl_multi_cleanup(multi);
        multi = NULL;
        curl_global_cleanup();
    }
    free(sock_path);
    sock_path = NULL;
    n_socks = 0;
    timer_at = -1;
}


static CURL *
engine_easy(struct engine_req *q, const char *method, const char *path,
    const char *ctype, const void *body, size_t len, long timeout_ms)
{
    CURL  *e;
    char   url[4096], hdr[128];

    if (fmt(url, sizeof(url), "http://engine%s%s", ENGINE_API, path) != 0) {
        return NULL;
    }
    e = curl_easy_init();
    if (e == NULL) {
        return NULL;
    }
    curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH,
                     q->sock != NULL ? q->sock : sock_path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, engine_on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(e, CURLOPT_PRIVATE, q);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->why);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    if (timeout_ms > 0) {
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    }
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    }
    if (body != NULL) {
        q->sent = malloc(len ? len : 1);
        if (q->sent == NULL) {
            curl_easy_cleanup(e);
            return NULL;
        }
        memcpy(q->sent, body, len);
        q->sent_len = len;
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->sent);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) len);
        fmt(hdr, sizeof(hdr), "Content-Type: %s",
            ctype ? ctype : "application/json");
        q->headers = curl_slist_append(q->headers, hdr);
    } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) 0);
    }
    /* no "Expect: 100-continue" round trip for uploads */
    q->headers = curl_slist_append(q->headers, "Expect:");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->headers);
    return e;
}


/* a request, with an X-Registry-Auth header when auth is not NULL */
static struct engine_req *
engine_call_with(const char *sock, const char *method, const char *path,
    const char *ctype, const void *body, size_t len, long timeout_ms,
    const char *auth, engine_data_fn on_data, engine_done_fn on_done,
    void *arg)
{
    struct engine_req  *q;
    char                hdr[4096];

    if (multi == NULL) {
        return NULL;
    }
    q = xcalloc(1, sizeof(*q));
    LIST_INSERT_HEAD(&reqs, q, entry);
    q->sock = sock != NULL && sock[0] != '\0' ? xstrdup(sock) : NULL;
    q->on_data = on_data;
    q->on_done = on_done;
    q->arg = arg;
    q->easy = engine_easy(q, method, path, ctype, body, len, timeout_ms);
    if (q->easy != NULL && auth != NULL) {
        if (fmt(hdr, sizeof(hdr), "X-Registry-Auth: %s", auth) == 0) {
            q->headers = curl_slist_append(q->headers, hdr);
            curl_easy_setopt(q->easy, CURLOPT_HTTPHEADER, q->headers);
        }
        explicit_bzero(hdr, sizeof(hdr));
    }
    if (q->easy == NULL || curl_multi_add_handle(multi, q->easy) != CURLM_OK)
    {
        engine_req_free(q);
        return NULL;
    }
    log_debug("engine: %s %s", method, path);
    return q;
}


struct engine_req *
engine_call(const char *method, const char *path, const char *ctype,
    const void *body, size_t len, long timeout_ms, engine_data_fn on_data,
    engine_done_fn on_done, void *arg)
{
    return engine_call_with(NULL, method, path, ctype, body, len,
                            timeout_ms, NULL, on_data, on_done, arg);
}


struct engine_req *
engine_call_on(const char *sock, const char *method, const char *path,
    const char *ctype, const void *body, size_t len, long timeout_ms,
    engine_data_fn on_data, engine_done_fn on_done, void *arg)
{
    return engine_call_with(sock, method, path, ctype, body, len,
                            timeout_ms, NULL, on_data, on_done, arg);
}


struct engine_req *
engine_call_auth(const char *method, const char *path,
    const char *registry_auth, long timeout_ms, engine_data_fn on_data,
    engine_done_fn on_done, void *arg)
{
    return engine_call_auth_on(NULL, method, path, registry_auth,
                               timeout_ms, on_data, on_done, arg);
}


struct engine_req *
engine_call_auth_on(const char *sock, const char *method, const char *path,
    const char *registry_auth, long timeout_ms, engine_data_fn on_data,
    engine_done_fn on_done, void *arg)
{
    return engine_call_with(sock, method, path, NULL, NULL, 0, timeout_ms,
                            registry_auth, on_data, on_done, arg);
}


void
engine_cancel(struct engine_req *q)
{
    if (q == NULL) {
        return;
    }
    if (q->in_callback) {
        q->cancelled = 1;       /* engine_finish() frees it */
        return;
    }
    engine_req_free(q);
}


long
engine_call_sync(const char *method, const char *path, const char *body,
    long timeout_ms, char **answer, char *why, size_t n)
{
    struct engine_req   q;
    CURLcode            rc;
    long                status = 0;

    memset(&q, 0, sizeof(q));
    *answer = NULL;
    q.easy = engine_easy(&q, method, path, NULL, body,
                         body ? strlen(body) : 0, timeout_ms);
    if (q.easy == NULL) {
        snprintf(why, n, "out of memory");
        return 0;
    }
    rc = curl_easy_perform(q.easy);
    if (rc != CURLE_OK) {
        snprintf(why, n, "%s", q.why[0] ? q.why : curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(q.easy, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_easy_cleanup(q.easy);
    curl_slist_free_all(q.headers);
    free(q.sent);
    if (status == 0) {
        free(q.body);
        return 0;
    }
    *answer = q.body ? q.body : xstrdup("");
    return status;
}


/* ---- the loop ----------------------------------------------------------- */

int
engine_fill(struct pollfd *pfd, int max)
{
    int  i, n = 0;

    for (i = 0; i < n_socks && n < max; i++) {
        pfd[n].fd = socks[i].fd;
        pfd[n].events = 0;
        if (socks[i].what & CURL_POLL_IN) {
            pfd[n].events |= POLLIN;
        }
        if (socks[i].what & CURL_POLL_OUT) {
            pfd[n].events |= POLLOUT;
        }
        pfd[n].revents = 0;
        n++;
    }
    return n;
}


/*
 * Answers the requests libcurl finished.  They are marked first and
 * called back after: a callback may make or cancel requests, which
 * changes libcurl's list of messages.
 */
static void
engine_finish(void)
{
    struct engine_req  *q;
    CURLMsg            *m;
    long                status;
    int                 left;
    char                why[CURL_ERROR_SIZE + 64];

    while ((m = curl_multi_info_read(multi, &left)) != NULL) {
        if (m->msg == CURLMSG_DONE) {
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE,
                              (char **) &q);
            q->finished = 1;
            q->result = m->data.result;
        }
    }

    for ( ;; ) {
        LIST_FOREACH(q, &reqs, entry) {
            if (q->finished) {
                break;
            }
        }
        if (q == NULL) {
            return;
        }
        q->finished = 0;
        status = 0;
        why[0] = '\0';
        if (q->result == CURLE_OK) {
            curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
            if (q->too_large) {
                snprintf(why, sizeof(why), "answer larger than %d bytes",
                         ENGINE_BODY_MAX);
                status = 0;
            }
        } else {
            snprintf(why, sizeof(why), "%s", q->why[0]
                     ? q->why : curl_easy_strerror(q->result));
        }
        if (q->on_done != NULL) {
            q->in_callback = 1;
            q->on_done(q->arg, status, status ? q->body : NULL,
                       status ? q->len : 0, why);
        }
        engine_req_free(q);
    }
}


void
engine_process(struct pollfd *pfd, int n)
{
    int  i, ev, running;

    if (multi == NULL) {
        return;
    }
    for (i = 0; i < n; i++) {
        if (pfd[i].revents == 0) {
            continue;
        }
        ev = 0;
        if (pfd[i].revents & (POLLIN | POLLHUP)) {
            ev |= CURL_CSELECT_IN;
        }
        if (pfd[i].revents & POLLOUT) {
            ev |= CURL_CSELECT_OUT;
        }
        if (pfd[i].revents & (POLLERR | POLLNVAL)) {
            ev |= CURL_CSELECT_ERR;
        }
        curl_multi_socket_action(multi, pfd[i].fd, ev, &running);
    }
    if (timer_at >= 0 && now_ms() >= timer_at) {
        timer_at = -1;
        curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    engine_finish();
}


int
engine_timeout_ms(void)
{
    int64_t  t;

    if (timer_at < 0) {
        return -1;
    }
    t = timer_at - now_ms();
    return t < 0 ? 0 : (int) t;
}


const char *
engine_escape(const char *s)
{
    static char          out[1024];
    static const char    hex[] = "0123456789ABCDEF";
    size_t               o = 0;
    const unsigned char *p;

    for (p = (const unsigned char *) s; *p && o + 4 < sizeof(out); p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
            || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'
            || *p == '.' || *p == '~')
        {
            out[o++] = (char) *p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return out;
}
