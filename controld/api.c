/*
 * The API process: the JSON API (controld/API.md) on a unix socket, with
 * libmicrohttpd, unprivileged.
 *
 * This is everything of controld that reads input from the network:
 * HTTP, bodies and their limits, JSON, routes, parameters, bearer tokens
 * (hashed here; only the hash leaves), code uploads and log streams.  It
 * runs as its own process, exec'd by the root parent (api_parent.c) with
 * the listening socket, its end of a socketpair and nothing else, as an
 * unprivileged user, in the code directory: it cannot open the state,
 * the keys or the replicas' files, and cannot start a process as root.
 * What it needs from the parent it asks in messages (privsep.h): is this
 * token an admin's, do this (plan, apply, stop, tokens...) and give me
 * the answer, give me this replica's log.
 *
 * One thread: poll() over MHD's epoll descriptor and the socketpair.
 * Handlers never block: a request waiting for the parent is suspended
 * and resumed when the answer comes; log streams suspend their
 * connection while no bytes are new, and the tick resumes them.
 *
 * Every request is authenticated before its body is read: the first call
 * of the handler asks the parent about the token and suspends; a request
 * without an admin token gets its answer then, and its body is never
 * looked at.  The parent checks the token again with every request.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <microhttpd.h>
#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "api.h"
#include "api_args.h"
#include "api_route.h"
#include "ds_json_dup.h"
#include "log.h"
#include "privsep.h"
#include "tokens.h"
#include "util.h"


#define API_JSON_MAX        (1024 * 1024)
#define API_CODE_MAX        (256ULL * 1024 * 1024)
/*
 * A body over the limit is still read (and dropped) up to this size
 * before the 413 goes out: answering while the client still sends makes
 * the kernel reset the connection, and the client may never see why.
 */
#define API_DISCARD_MAX     (64ULL * 1024 * 1024)

/* log streams: resumed this often; the parent asked about each this
 * often (a follower whose token is revoked loses the stream within) */
#define API_TICK_MS             100
#define API_STREAM_RECHECK_MS   1000

/* where a request is; the states with "wait" are suspended */
enum api_state {
    Q_AUTH_WAIT = 0,    /* the parent checks the token */
    Q_AUTHED,           /* its answer is in q->auth */
    Q_BODY,             /* reading the body */
    Q_WAIT,             /* the parent executes it */
    Q_ANSWERED          /* its answer is in q->status, q->text */
};

struct api_req {
    LIST_ENTRY(api_req) entry;          /* while waiting for the parent */
    struct MHD_Connection *conn;
    uint32_t            id;
    int                 state;
    int                 route;
    char                param[128];     /* run or token name, code hash */
    uint8_t             token[DS_TOKEN_HASH_LEN];
    int                 auth;           /* AUTH_* */
    char                who[DS_NAME_MAX + 1];   /* the token's name */

    /* JSON bodies */
    char               *body;
    size_t              len;
    size_t              cap;
    int                 too_large;

    /* code uploads */
    int                 fd;
    char                tmp[64];
    EVP_MD_CTX         *md;
    uint64_t            size;
    int                 discard;        /* the archive is there already */

    /* the parent's answer */
    unsigned            status;
    int                 error;          /* text is a message */
    char               *text;
    int                 log;            /* a PS_LOG answer */
    int                 log_fd;
    int                 log_num;
    int                 log_version;
    int                 log_live;
    long long           log_start;      /* logs: where ?since= starts */
    long long           offset;         /* logs: ?offset= */
    int                 follow;         /* logs: ?follow=1 */
};

/* a log stream: GET /api/runs/NAME/logs?follow=1 */
struct api_stream {
    LIST_ENTRY(api_stream) entry;
    struct MHD_Connection *conn;
    char                run[DS_NAME_MAX + 1];
    int                 num;
    int                 version;
    int                 fd;             /* -1 until the log exists */
    uint64_t            offset;
    int                 suspended;
    int                 live;           /* the parent's last word */
    int                 revoked;
    uint32_t            check;          /* the question out, or 0 */
    uint8_t             token[DS_TOKEN_HASH_LEN];   /* who opened it */
    char                who[DS_NAME_MAX + 1];       /* its name */
    int64_t             checked;        /* ms of the last question */
};

/*
 * Every connection, for the deadline of its request heads: the idle
 * timeout does not end one that sends a byte now and then, so the tick
 * cuts a connection whose head is not all in api_header_s after it was
 * accepted, or after its previous request ended.
 */
struct api_conn {
    LIST_ENTRY(api_conn) entry;
    struct MHD_Connection *conn;
    int64_t             since;          /* ms: accepted, or last request */
    int                 in;             /* the handler has its request */
    int                 cut;            /* shut down by the tick */
};

static LIST_HEAD(, api_req)     waiting = LIST_HEAD_INITIALIZER(waiting);
static LIST_HEAD(, api_conn)    conns = LIST_HEAD_INITIALIZER(conns);
static LIST_HEAD(, api_stream)  streams = LIST_HEAD_INITIALIZER(streams);

/*
 * Connections (controld.yml's api_*).  Anyone in the socket's group may
 * connect; until the parent has said the token is an admin's, a
 * connection has api_header_s of silence before it is closed, and its
 * request head must be in within api_header_s (api_cut_heads), so that
 * half-sent requests cannot hold the api_max_conns places for long.  An
 * admin's request has api_body_s (a stalled upload through nginx), and
 * a log stream no limit: it is quiet as long as its replica is.
 */
static unsigned            api_max_conns = 64;
static unsigned            api_header_s = 5;
static unsigned            api_body_s = 60;

static struct MHD_Daemon  *api_daemon;
static struct MHD_Daemon  *api_daemon_tcp;     /* api_listen, or NULL */
static int                 api_tcp;            /* -M ...:tcp */
static struct ps_chan      chan;
static uint32_t            last_id;
static volatile sig_atomic_t  got_term;


/* ---- answers ------------------------------------------------------------ */

static const char *
api_error_type(unsigned status)
{
    switch (status) {
    case 400: return "invalid_request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 409: return "conflict";
    case 413: return "too_large";
    case 422: return "no_offers";
    case 503: return "unavailable";
    default:  return "internal";
    }
}


static enum MHD_Result
api_send_json(struct MHD_Connection *c, unsigned status, cJSON *json)
{
    struct MHD_Response  *res;
    char                 *text;
    size_t                len;
    enum MHD_Result       ret;

    text = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
    if (text == NULL) {
        return MHD_NO;
    }
    len = strlen(text);
    text[len] = '\0';

    /* one more byte for the newline: MHD frees the buffer */
    text = realloc(text, len + 2);
    if (text == NULL) {
        return MHD_NO;
    }
    text[len] = '\n';
    text[len + 1] = '\0';

    res = MHD_create_response_from_buffer(len + 1, text,
                                          MHD_RESPMEM_MUST_FREE);
    if (res == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(res, "Content-Type", "application/json");
    MHD_add_response_header(res, "Cache-Control", "no-store");
    if (status == 401) {
        MHD_add_response_header(res, "WWW-Authenticate",
                                "Bearer realm=\"dstack\"");
    }
    ret = MHD_queue_response(c, status, res);
    MHD_destroy_response(res);
    return ret;
}


static enum MHD_Result
api_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    cJSON  *o, *e;

    o = cJSON_CreateObject();
    e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", api_error_type(status));
    return api_send_json(c, status, o);
}


static enum MHD_Result
api_method_not_allowed(struct MHD_Connection *c, const char *method,
    const char *url, const char *allow)
{
    char                  msg[512];
    struct MHD_Response  *res;
    cJSON                *o, *e;
    char                 *text;
    enum MHD_Result       ret;

    snprintf(msg, sizeof(msg), "%s is not allowed on %.300s (allowed: %s)",
             method, url, allow);
    o = cJSON_CreateObject();
    e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", "method_not_allowed");
    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text == NULL) {
        return MHD_NO;
    }
    res = MHD_create_response_from_buffer(strlen(text), text,
                                          MHD_RESPMEM_MUST_FREE);
    if (res == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(res, "Content-Type", "application/json");
    MHD_add_response_header(res, "Allow", allow);
    ret = MHD_queue_response(c, 405, res);
    MHD_destroy_response(res);
    return ret;
}


/* ---- routing ------------------------------------------------------------ */

/*
 * MHD decodes "%HH" in the path and the query in place, "%00" as well:
 * "/api/tokens/ci%00x" would reach the handler as "/api/tokens/ci".  This
 * decodes every byte but NUL, which stays "%00" for the checks to refuse.
 */
static size_t
api_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    static const char  hex[] = "0123456789abcdef0123456789ABCDEF";
    const char        *r, *h, *l;
    char              *w;

    (void) cls;
    (void) c;

    for (r = w = s; *r != '\0'; w++) {
        if (r[0] == '%' && r[1] != '\0' && r[2] != '\0'
            && (h = strchr(hex, r[1])) != NULL
            && (l = strchr(hex, r[2])) != NULL
            && (r[1] != '0' || r[2] != '0'))
        {
            *w = (char) (((h - hex) & 0x0f) << 4 | ((l - hex) & 0x0f));
            r += 3;
        } else {
            *w = *r++;
        }
    }
    *w = '\0';
    return (size_t) (w - s);
}


/* ---- bodies ------------------------------------------------------------- */

static int
api_body_append(struct api_req *q, const char *data, size_t size)
{
    size_t  cap;
    char   *nb;

    if (q->too_large) {
        return 0;
    }
    if (q->len + size > API_JSON_MAX) {
        q->too_large = 1;
        free(q->body);
        q->body = NULL;
        q->len = q->cap = 0;
        return 0;
    }
    if (q->len + size + 1 > q->cap) {
        cap = q->cap ? q->cap : 4096;
        while (cap < q->len + size + 1) {
            cap *= 2;
        }
        nb = realloc(q->body, cap);
        if (nb == NULL) {
            return -1;
        }
        q->body = nb;
        q->cap = cap;
    }
    memcpy(q->body + q->len, data, size);
    q->len += size;
    q->body[q->len] = '\0';
    return 0;
}

/* the body as a JSON object; NULL with a message when it is not one */
static cJSON *
api_parse_body(struct api_req *q, int optional, char *err, size_t n)
{
    cJSON       *json;
    const char  *end = NULL, *p;
    long         nul;

    if (q->len == 0) {
        if (optional) {
            return cJSON_CreateObject();
        }
        snprintf(err, n, "body: a JSON object is required");
        return NULL;
    }

    nul = json_nul_at(q->body, q->len);
    if (nul >= 0) {
        snprintf(err, n, "body: a NUL character (\\u0000) at byte %ld is "
                 "not allowed", nul);
        return NULL;
    }

    json = cJSON_ParseWithLengthOpts(q->body, q->len, &end, 0);
    if (json == NULL) {
        end = cJSON_GetErrorPtr();
        snprintf(err, n, "body: invalid JSON at byte %ld",
                 end && end >= q->body && end <= q->body + q->len
                     ? (long) (end - q->body) : 0L);
        return NULL;
    }
    for (p = end; p != NULL && p < q->body + q->len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(json);
            snprintf(err, n, "body: invalid JSON at byte %ld (text after "
                     "the value)", (long) (p - q->body));
            return NULL;
        }
    }
    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        snprintf(err, n, "body: expected a JSON object");
        return NULL;
    }
    /* cJSON keeps both members; readers differ on which one counts */
    if (ds_json_dup_check(json, "body", err, n) != 0) {
        cJSON_Delete(json);
        return NULL;
    }
    return json;
}




/* ---- code uploads ------------------------------------------------------- */

/*
 * The working directory is <state_dir>/code (the parent put us there, and
 * it belongs to this process's user): names are relative to it.
 */
static int
api_code_path(char *buf, size_t n, const char *hash)
{
    return fmt(buf, n, "%s.tar.gz", hash);
}


static int
api_code_begin(struct api_req *q, char *err, size_t n)
{
    char  path[128];

    if (!valid_hex_hash(q->param)) {
        snprintf(err, n, "code: \"%.80s\" is not a SHA-256 in lower-case hex",
                 q->param);
        return 400;
    }
    if (api_code_path(path, sizeof(path), q->param) != 0) {
        snprintf(err, n, "code: name too long");
        return 500;
    }
    if (access(path, F_OK) == 0) {
        q->discard = 1;
        return 0;
    }

    snprintf(q->tmp, sizeof(q->tmp), ".upload-XXXXXX");
    q->fd = mkostemp(q->tmp, O_CLOEXEC);
    if (q->fd < 0) {
        log_warn("code upload: %s", q->tmp);
        q->tmp[0] = '\0';
        snprintf(err, n, "cannot store the archive: %s", strerror(errno));
        return 500;
    }
    q->md = EVP_MD_CTX_new();
    if (q->md == NULL || !EVP_DigestInit_ex(q->md, EVP_sha256(), NULL)) {
        snprintf(err, n, "out of memory");
        return 500;
    }
    return 0;
}


static int
api_code_data(struct api_req *q, const char *data, size_t size)
{
    ssize_t  w;
    size_t   off = 0;

    if (q->discard || q->too_large) {
        return 0;
    }
    if (q->size + size > API_CODE_MAX) {
        q->too_large = 1;
        return 0;
    }
    q->size += size;
    EVP_DigestUpdate(q->md, data, size);
    while (off < size) {
        w = write(q->fd, data + off, size - off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            log_warn("code upload: write %s", q->tmp);
            return -1;
        }
        off += w;
    }
    return 0;
}


static int
api_code_end(struct api_req *q, cJSON **answer, char *err, size_t n)
{
    uint8_t       md[EVP_MAX_MD_SIZE];
    unsigned      mdlen;
    char          hex[65], path[128];
    unsigned char magic[2];

    *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(*answer, "hash", q->param);

    if (q->discard) {
        cJSON_AddBoolToObject(*answer, "existed", 1);
        return 200;
    }

    EVP_DigestFinal_ex(q->md, md, &mdlen);
    hex_encode(md, 32, hex);
    if (strcmp(hex, q->param) != 0) {
        snprintf(err, n, "body: its SHA-256 is %s, not %s", hex, q->param);
        return 400;
    }
    if (q->size < 2 || pread(q->fd, magic, 2, 0) != 2
        || magic[0] != 0x1f || magic[1] != 0x8b)
    {
        snprintf(err, n, "body: not a gzip archive (expected a .tar.gz)");
        return 400;
    }
    if (fsync(q->fd) != 0 || fchmod(q->fd, 0600) != 0) {
        snprintf(err, n, "cannot store the archive: %s", strerror(errno));
        return 500;
    }
    if (api_code_path(path, sizeof(path), q->param) != 0
        || rename(q->tmp, path) != 0)
    {
        snprintf(err, n, "cannot store the archive: %s", strerror(errno));
        return 500;
    }
    q->tmp[0] = '\0';
    log_info("stored code %s (%llu bytes)", q->param,
             (unsigned long long) q->size);
    cJSON_AddBoolToObject(*answer, "existed", 0);
    cJSON_AddNumberToObject(*answer, "size", (double) q->size);
    return 201;
}


/* ---- asking the parent -------------------------------------------------- */

static uint32_t
api_next_id(void)
{
    if (++last_id == 0) {
        last_id = 1;
    }
    return last_id;
}


/* sends the question and suspends the request until the answer */
static void
api_ask(struct api_req *q, uint32_t type, const void *data, size_t len,
    const char *text, int state)
{
    q->id = api_next_id();
    q->state = state;
    ps_send(&chan, type, q->id, data, len, text, -1);
    LIST_INSERT_HEAD(&waiting, q, entry);
    MHD_suspend_connection(q->conn);
}


static struct api_req *
api_waiting(uint32_t id)
{
    struct api_req  *q;

    LIST_FOREACH(q, &waiting, entry) {
        if (q->id == id) {
            return q;
        }
    }
    return NULL;
}


/* the answer to a token that is not an admin's, as API.md says */
static enum MHD_Result
api_auth_error(struct MHD_Connection *c, int rc, const char *name)
{
    const char  *auth;
    char         msg[DS_NAME_MAX + 64];

    switch (rc) {
    case AUTH_MISSING:
        return api_error(c, 401, "an admin token is required "
                         "(Authorization: Bearer <token>)");
    case AUTH_EXPIRED:
        return api_error(c, 401, "the token has expired");
    case AUTH_UNAVAILABLE:
        return api_error(c, 503, "the state file was replaced or removed "
                         "under controld: it changes nothing and restarts "
                         "on the new file; try again");
    case AUTH_NOT_ADMIN:
        snprintf(msg, sizeof(msg), "token \"%s\" is not an admin token",
                 name);
        return api_error(c, 403, msg);
    default:
        auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                           "Authorization");
        return api_error(c, 401, auth && strncasecmp(auth, "Bearer ", 7) == 0
                         ? "invalid token"
                         : "expected Authorization: Bearer <token>");
    }
}


/* ---- log streams -------------------------------------------------------- */

/* the log was emptied by its rotation (logrotate.c): from its start */
static int
api_stream_rotated(struct api_stream *s)
{
    struct stat  sb;

    if (fstat(s->fd, &sb) != 0 || (uint64_t) sb.st_size >= s->offset) {
        return 0;
    }
    s->offset = 0;
    return 1;
}


static ssize_t
api_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct api_stream  *s = cls;
    ssize_t             n;

    (void) pos;

    if (s->revoked) {
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }

    if (s->fd >= 0) {
        n = pread(s->fd, buf, max, (off_t) s->offset);
        if (n == 0 && api_stream_rotated(s)) {
            n = pread(s->fd, buf, max, (off_t) s->offset);
        }
        if (n > 0) {
            s->offset += n;
            return n;
        }
        if (n < 0) {
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }

    if (!s->live) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }

    /* nothing new: sleep until the tick */
    MHD_suspend_connection(s->conn);
    s->suspended = 1;
    return 0;
}


static void
api_stream_free(void *cls)
{
    struct api_stream  *s = cls;

    LIST_REMOVE(s, entry);
    if (s->fd >= 0) {
        close(s->fd);
    }
    free(s);
}


/* the parent's answer about a stream: does the replica still write, is
 * the token still good, and the log when it did not exist before */
static int
api_stream_state(const struct ps_msg *m)
{
    struct ps_stream_state  st;
    struct api_stream      *s;

    if (m->len != sizeof(st)) {
        return -1;
    }
    memcpy(&st, m->data, sizeof(st));

    LIST_FOREACH(s, &streams, entry) {
        if (s->check == m->id) {
            break;
        }
    }
    if (s == NULL) {
        /* the stream ended meanwhile */
        if (m->fd >= 0) {
            close(m->fd);
        }
        return 0;
    }

    s->check = 0;
    s->live = st.live != 0;
    if (m->fd >= 0) {
        if (s->fd < 0) {
            s->fd = m->fd;
        } else {
            close(m->fd);
        }
    }
    if (!st.token_ok && !s->revoked) {
        s->revoked = 1;
        log_info("logs of %s: the token \"%s\" is no longer valid, the "
                 "stream ends", s->run, s->who);
    }
    if (s->suspended) {
        s->suspended = 0;
        MHD_resume_connection(s->conn);
    }
    return 0;
}


static void
api_tick(void)
{
    struct api_stream       *s;
    struct ps_stream_check   ck;
    int64_t                  now;

    now = now_ms();
    LIST_FOREACH(s, &streams, entry) {
        if (s->check == 0 && now - s->checked >= API_STREAM_RECHECK_MS) {
            memset(&ck, 0, sizeof(ck));
            memcpy(ck.token, s->token, sizeof(ck.token));
            snprintf(ck.run, sizeof(ck.run), "%s", s->run);
            ck.num = s->num;
            ck.version = s->version;
            ck.want_fd = s->fd < 0;
            s->check = api_next_id();
            s->checked = now;
            ps_send(&chan, PS_STREAM_CHECK, s->check, &ck, sizeof(ck), NULL,
                    -1);
        }
        if (s->suspended) {
            s->suspended = 0;
            MHD_resume_connection(s->conn);
        }
    }
}


static const char *
api_query_arg(void *cls, const char *key)
{
    return MHD_lookup_connection_value(cls, MHD_GET_ARGUMENT_KIND, key);
}


/* the query of GET .../logs: into rq, or a message for the parent to
 * answer once it has checked the run's name */
static void
api_logs_args(struct MHD_Connection *c, struct api_req *q,
    struct ps_request *rq, char *err, size_t n)
{
    struct api_logs_args  a;

    if (api_args_logs(api_query_arg, c, &a, err, n) != 0) {
        rq->flags |= PS_RQ_ERROR;
        return;
    }
    q->offset = a.offset;
    q->follow = a.follow;
    rq->since = a.since;
    if (a.have_num) {
        rq->flags |= PS_RQ_NUM;
        rq->num = (int32_t) a.num;
    }
    if (a.follow) {
        rq->flags |= PS_RQ_FOLLOW;
    }
}


/* the parent found the replica: its log, once or followed */
static enum MHD_Result
api_logs(struct MHD_Connection *c, struct api_req *q)
{
    struct api_stream    *s;
    struct MHD_Response  *res;
    struct stat           sb;
    long long             offset = q->offset;
    char                  hdr[32];
    const char           *v;
    enum MHD_Result       ret;
    int                   fd;

    fd = q->log_fd;
    q->log_fd = -1;

    /* since: lines older than that time are skipped */
    if (q->log_start > offset) {
        offset = q->log_start;
    }

    if (!q->follow) {
        if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            if (fd >= 0) {
                close(fd);
            }
            res = MHD_create_response_from_buffer(0, (void *) "",
                                                  MHD_RESPMEM_PERSISTENT);
            sb.st_size = 0;
        } else if (offset >= sb.st_size) {
            close(fd);
            res = MHD_create_response_from_buffer(0, (void *) "",
                                                  MHD_RESPMEM_PERSISTENT);
        } else {
            res = MHD_create_response_from_fd_at_offset64(
                      (uint64_t) (sb.st_size - offset), fd, (uint64_t) offset);
        }
        if (res == NULL) {
            return MHD_NO;
        }
        snprintf(hdr, sizeof(hdr), "%lld",
                 (long long) (offset > sb.st_size ? offset : sb.st_size));
        MHD_add_response_header(res, "Content-Type",
                                "text/plain; charset=utf-8");
        MHD_add_response_header(res, "X-Dstack-Log-End", hdr);
        snprintf(hdr, sizeof(hdr), "%d", q->log_num);
        MHD_add_response_header(res, "X-Dstack-Replica", hdr);
        ret = MHD_queue_response(c, 200, res);
        MHD_destroy_response(res);
        return ret;
    }

    /* a quiet log is no reason to hang up on a follower */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned int) 0);

    s = xcalloc(1, sizeof(struct api_stream));
    s->conn = c;
    /* the run's key: "<run>--<project>" outside main */
    v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "project");
    if (v != NULL && strcmp(v, DS_PROJECT_MAIN) != 0) {
        fmt(s->run, sizeof(s->run), "%s" DS_PROJECT_SEP "%s", q->param, v);
    } else {
        fmt(s->run, sizeof(s->run), "%s", q->param);
    }
    s->num = q->log_num;
    s->version = q->log_version;
    s->fd = fd;
    s->offset = (uint64_t) offset;
    s->live = q->log_live;
    s->checked = now_ms();
    memcpy(s->token, q->token, sizeof(s->token));
    fmt(s->who, sizeof(s->who), "%s", q->who);
    LIST_INSERT_HEAD(&streams, s, entry);

    res = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024,
                                            api_stream_read, s,
                                            api_stream_free);
    if (res == NULL) {
        api_stream_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(res, "Content-Type", "text/plain; charset=utf-8");
    MHD_add_response_header(res, "Cache-Control", "no-store");
    MHD_add_response_header(res, "X-Accel-Buffering", "no");
    snprintf(hdr, sizeof(hdr), "%d", q->log_num);
    MHD_add_response_header(res, "X-Dstack-Replica", hdr);
    ret = MHD_queue_response(c, 200, res);
    MHD_destroy_response(res);
    return ret;
}


/* ---- handlers ----------------------------------------------------------- */

static enum MHD_Result
api_bad_name(struct MHD_Connection *c, const char *name)
{
    char  err[256];

    snprintf(err, sizeof(err), "name: \"%.80s\" is not a valid run name "
             "(^[a-z][a-z0-9-]{1,40}$)", name);
    return api_error(c, 400, err);
}


/* the body of a stop: {"abort":bool} or nothing; errors in err */
static void
api_stop_args(struct api_req *q, struct ps_request *rq, char *err, size_t n)
{
    cJSON  *body;
    int     abort;

    body = api_parse_body(q, 1, err, n);
    if (body == NULL || api_args_stop(body, &abort, err, n) != 0) {
        rq->flags |= PS_RQ_ERROR;
    } else if (abort) {
        rq->flags |= PS_RQ_ABORT;
    }
    cJSON_Delete(body);
}


/* the body of a scale: {"replicas":N}; errors in err */
static void
api_scale_args(struct api_req *q, struct ps_request *rq, char *err,
    size_t n)
{
    cJSON  *body;
    int     replicas;

    /* no body: the message names replicas, as for {} */
    body = api_parse_body(q, 1, err, n);
    if (body == NULL || api_args_scale(body, &replicas, err, n) != 0) {
        rq->flags |= PS_RQ_ERROR;
    } else {
        rq->num = (int32_t) replicas;
    }
    cJSON_Delete(body);
}


/* the query of GET .../series: ?since=T */
static void
api_series_args(struct MHD_Connection *c, struct ps_request *rq, char *err,
    size_t n)
{
    if (api_args_series(api_query_arg, c, &rq->since, err, n) != 0) {
        rq->flags |= PS_RQ_ERROR;
    }
}


/*
 * The whole request is here: answer what needs nothing of the parent,
 * check and parse the rest, and pass it on.  What the parent checks
 * first (a run's name) stays first: a message found here goes with the
 * request (PS_RQ_ERROR) and the parent answers it after its checks.
 */
static enum MHD_Result
api_dispatch(struct MHD_Connection *c, struct api_req *q, const char *method)
{
    struct ps_request   rq;
    cJSON              *body = NULL, *answer = NULL;
    char                err[1024], *text = NULL;
    int                 rc;
    const char         *v;

    err[0] = '\0';

    if (q->too_large) {
        snprintf(err, sizeof(err), "body: larger than %s",
                 q->route == R_CODE ? "256 MiB" : "1 MiB");
        return api_error(c, 413, err);
    }

    memset(&rq, 0, sizeof(rq));
    memcpy(rq.token, q->token, sizeof(rq.token));
    snprintf(rq.param, sizeof(rq.param), "%s", q->param);

    /* ?project=NAME, on every call that has one (API.md) */
    v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "project");
    if (v != NULL) {
        if (strcmp(v, DS_PROJECT_MAIN) != 0
            && !ds_valid_project_name(v, strlen(v)))
        {
            snprintf(err, sizeof(err), "project: \"%.63s\" is not a valid "
                     "project name", v);
            return api_error(c, 400, err);
        }
        snprintf(rq.project, sizeof(rq.project), "%s", v);
    }

    switch (q->route) {

    case R_PROJECT:
        rq.op = PS_OP_PROJECT_DELETE;
        break;

    case R_MEMBER:
        /* "P/U" from the route */
        v = strchr(q->param, '/');
        if (v == NULL || (size_t) (v - q->param) >= sizeof(rq.project)
            || strlen(v + 1) >= sizeof(rq.param2))
        {
            return api_error(c, 404, "no such member");
        }
        snprintf(rq.param, sizeof(rq.param), "%.*s", (int) (v - q->param),
                 q->param);
        snprintf(rq.param2, sizeof(rq.param2), "%s", v + 1);
        rq.op = PS_OP_MEMBER_REMOVE;
        break;

    case R_USER_ME:
        rq.op = PS_OP_USER_ME;
        break;

    case R_USER:
        rq.op = PS_OP_USER_DELETE;
        break;

    case R_AUDIT:
        v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
        if (v != NULL) {
            rq.num = atoi(v);
            if (rq.num < 1 || rq.num > 10000) {
                return api_error(c, 400, "limit: expected 1 to 10000");
            }
        }
        rq.op = PS_OP_AUDIT;
        break;

    case R_HEALTH:
        rq.op = PS_OP_HEALTH;
        break;

    case R_CLUSTER:
        rq.op = PS_OP_CLUSTER;
        break;

    case R_CODE:
        if (strcmp(method, "HEAD") == 0) {
            return api_send_json(c, q->discard ? 200 : 404,
                                 cJSON_CreateObject());
        }
        rc = api_code_end(q, &answer, err, sizeof(err));
        if (rc >= 400) {
            cJSON_Delete(answer);
            return api_error(c, rc, err);
        }
        return api_send_json(c, rc, answer);

    case R_FLEETS:
        rq.op = PS_OP_FLEETS;
        break;

    case R_METRICS:
        rq.op = PS_OP_METRICS;
        break;

    case R_FLEET:
        rq.op = PS_OP_FLEET;
        break;

    case R_PLAN:
    case R_APPLY:
    case R_TOKENS:
    case R_FLEET_PLAN:
    case R_FLEET_APPLY:
    case R_FLEET_DELETE:
    case R_SECRET_SET:
    case R_SECRET_GET:
    case R_SECRET_DELETE:
    case R_PROJECTS:
    case R_USERS:
    case R_MEMBERS:
    case R_USER_TOKENS:
        if (strcmp(method, "GET") == 0) {
            /* the lists of the routes that also create */
            rq.op = q->route == R_TOKENS ? PS_OP_TOKENS
                    : q->route == R_PROJECTS ? PS_OP_PROJECTS
                    : PS_OP_USERS;
            break;
        }
        body = api_parse_body(q, q->route == R_FLEET_DELETE
                                 || q->route == R_USER_TOKENS,
                              err, sizeof(err));
        if (body == NULL) {
            return api_error(c, 400, err);
        }
        /* the parent parses what cJSON made of it, not the client's
         * bytes */
        text = cJSON_PrintUnformatted(body);
        cJSON_Delete(body);
        if (text == NULL) {
            return api_error(c, 500, "out of memory");
        }
        rq.op = q->route == R_PLAN ? PS_OP_PLAN
                : q->route == R_APPLY ? PS_OP_APPLY
                : q->route == R_FLEET_PLAN ? PS_OP_FLEET_PLAN
                : q->route == R_FLEET_APPLY ? PS_OP_FLEET_APPLY
                : q->route == R_FLEET_DELETE ? PS_OP_FLEET_DELETE
                : q->route == R_SECRET_SET ? PS_OP_SECRET_SET
                : q->route == R_SECRET_GET ? PS_OP_SECRET_GET
                : q->route == R_SECRET_DELETE ? PS_OP_SECRET_DELETE
                : q->route == R_PROJECTS ? PS_OP_PROJECT_CREATE
                : q->route == R_USERS ? PS_OP_USER_CREATE
                : q->route == R_MEMBERS ? PS_OP_MEMBER_SET
                : q->route == R_USER_TOKENS ? PS_OP_USER_TOKEN
                : PS_OP_TOKEN_CREATE;
        break;

    case R_RUNS:
        v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "all");
        if (v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)) {
            rq.flags |= PS_RQ_ALL;
        }
        rq.op = PS_OP_RUNS;
        break;

    case R_RUN:
        rq.op = PS_OP_RUN;
        break;

    case R_STOP:
        api_stop_args(q, &rq, err, sizeof(err));
        rq.op = PS_OP_STOP;
        break;

    case R_LOGS:
        api_logs_args(c, q, &rq, err, sizeof(err));
        rq.op = PS_OP_LOGS;
        break;

    case R_SERIES:
        api_series_args(c, &rq, err, sizeof(err));
        rq.op = PS_OP_SERIES;
        break;

    case R_SCALE:
        api_scale_args(q, &rq, err, sizeof(err));
        rq.op = PS_OP_SCALE;
        break;

    case R_BADNAME:
        return api_bad_name(c, q->param);

    case R_TOKEN:
        if (strcmp(method, "PATCH") == 0) {
            body = api_parse_body(q, 0, err, sizeof(err));
            if (body == NULL) {
                return api_error(c, 400, err);
            }
            text = cJSON_PrintUnformatted(body);
            cJSON_Delete(body);
            if (text == NULL) {
                return api_error(c, 500, "out of memory");
            }
            rq.op = PS_OP_TOKEN_UPDATE;
            break;
        }
        rq.op = PS_OP_TOKEN_REVOKE;
        break;

    case R_SECRETS:
        rq.op = PS_OP_SECRETS;
        break;

    default:
        return api_error(c, 500, "unrouted request");
    }

    api_ask(q, PS_REQUEST, &rq, sizeof(rq),
            text != NULL ? text : (rq.flags & PS_RQ_ERROR) ? err : "",
            Q_WAIT);
    free(text);
    return MHD_YES;
}


/* the parent's text as it is: Prometheus reads it */
static enum MHD_Result
api_metrics(struct MHD_Connection *c, struct api_req *q)
{
    struct MHD_Response  *res;
    enum MHD_Result       ret;

    res = MHD_create_response_from_buffer(strlen(q->text), q->text,
                                          MHD_RESPMEM_MUST_COPY);
    if (res == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(res, "Content-Type",
                            "text/plain; version=0.0.4; charset=utf-8");
    MHD_add_response_header(res, "Cache-Control", "no-store");
    ret = MHD_queue_response(c, q->status, res);
    MHD_destroy_response(res);
    return ret;
}


/* the parent's answer is in: send it */
static enum MHD_Result
api_answer(struct MHD_Connection *c, struct api_req *q)
{
    struct MHD_Response  *res;
    enum MHD_Result       ret;
    char                 *body;
    size_t                len;

    if (q->log) {
        return api_logs(c, q);
    }
    if (q->status == 0) {
        /* the token went bad meanwhile: the parent said AUTH_* */
        return api_auth_error(c, q->auth, q->who);
    }
    if (q->error) {
        return api_error(c, q->status, q->text);
    }
    if (q->route == R_METRICS) {
        return api_metrics(c, q);
    }

    /* the JSON as the parent made it, and a newline: MHD frees it */
    len = strlen(q->text);
    body = malloc(len + 2);
    if (body == NULL) {
        return MHD_NO;
    }
    memcpy(body, q->text, len);
    body[len] = '\n';
    body[len + 1] = '\0';
    res = MHD_create_response_from_buffer(len + 1, body,
                                          MHD_RESPMEM_MUST_FREE);
    if (res == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(res, "Content-Type", "application/json");
    MHD_add_response_header(res, "Cache-Control", "no-store");
    ret = MHD_queue_response(c, q->status, res);
    MHD_destroy_response(res);
    return ret;
}


/* after the parent said the token is an admin's: the checks of the
 * headers, and what the body needs */
static enum MHD_Result
api_headers(struct MHD_Connection *c, struct api_req *q, const char *url,
    const char *method)
{
    const char          *allow, *cl;
    char                 err[512];
    int                  rc;
    unsigned long long   len;

    if (q->auth != AUTH_OK) {
        return api_auth_error(c, q->auth, q->who);
    }
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, api_body_s);

    q->route = api_route(url, q->param, sizeof(q->param), &allow);
    if (q->route == R_NONE) {
        snprintf(err, sizeof(err), "no such endpoint: %s %.300s", method,
                 url);
        return api_error(c, 404, err);
    }
    if (!api_method_ok(allow, method)) {
        return api_method_not_allowed(c, method, url, allow);
    }

    q->state = Q_BODY;

    cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    len = cl ? strtoull(cl, NULL, 10) : 0;

    if (q->route == R_CODE) {
        if (len > API_CODE_MAX) {
            return api_error(c, 413, "body: larger than 256 MiB");
        }
        rc = api_code_begin(q, err, sizeof(err));
        if (rc != 0) {
            return api_error(c, rc, err);
        }
    } else if (api_has_body(q->route) && len > API_JSON_MAX) {
        if (len > API_DISCARD_MAX) {
            return api_error(c, 413, "body: larger than 1 MiB");
        }
        q->too_large = 1;
    }
    return MHD_YES;
}


/* MHD_OPTION_NOTIFY_CONNECTION: started and closed */
static void
api_notify(void *cls, struct MHD_Connection *c, void **socket_context,
    enum MHD_ConnectionNotificationCode code)
{
    struct api_conn  *h;

    (void) cls;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        h = xcalloc(1, sizeof(struct api_conn));
        h->conn = c;
        h->since = now_ms();
        LIST_INSERT_HEAD(&conns, h, entry);
        *socket_context = h;
        return;
    }
    h = *socket_context;
    if (h != NULL) {
        LIST_REMOVE(h, entry);
        free(h);
        *socket_context = NULL;
    }
}


static struct api_conn *
api_conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo  *info;

    info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info != NULL ? info->socket_context : NULL;
}


/* a request's head is in (in = 1), or it ended and the next one's
 * deadline starts (in = 0) */
static void
api_conn_head(struct MHD_Connection *c, int in)
{
    struct api_conn  *h;

    h = api_conn_of(c);
    if (h != NULL) {
        h->in = in;
        h->since = now_ms();
    }
}


/*
 * Heads not in after api_header_s: shut down, which MHD takes for the
 * client's end and closes the connection at its next run.
 */
static void
api_cut_heads(void)
{
    const union MHD_ConnectionInfo  *info;
    struct api_conn                 *h;
    int64_t                          now;

    now = now_ms();
    LIST_FOREACH(h, &conns, entry) {
        if (h->in || h->cut
            || now - h->since < (int64_t) api_header_s * 1000)
        {
            continue;
        }
        info = MHD_get_connection_info(h->conn,
                                       MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info != NULL) {
            shutdown(info->connect_fd, SHUT_RDWR);
            log_debug("api: no whole request head in %u s: connection "
                      "closed", api_header_s);
        }
        h->cut = 1;
    }
}


static enum MHD_Result
api_handler(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
    struct api_req  *q = *con_cls;
    struct ps_auth   a;
    int              rc;

    (void) cls;
    (void) version;

    if (q == NULL) {
        api_conn_head(c, 1);

        /* first call: headers only; the token before anything else */
        q = xcalloc(1, sizeof(struct api_req));
        q->conn = c;
        q->fd = -1;
        q->log_fd = -1;
        *con_cls = q;

        rc = tokens_bearer_hash(
                 MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                             "Authorization"),
                 q->token);
        if (rc != AUTH_OK) {
            q->state = Q_ANSWERED;
            return api_auth_error(c, rc, "");
        }
        memcpy(a.token, q->token, sizeof(a.token));
        api_ask(q, PS_AUTH, &a, sizeof(a), NULL, Q_AUTH_WAIT);
        return MHD_YES;
    }

    switch (q->state) {

    case Q_AUTHED:
        /* MHD calls the first call again after the resume */
        return api_headers(c, q, url, method);

    case Q_BODY:
        break;

    case Q_ANSWERED:
        return api_answer(c, q);

    default:
        /* resumed without an answer: only when the process ends */
        return MHD_NO;
    }

    if (*upload_data_size != 0) {
        if (!api_has_body(q->route)) {
            /* a body nobody asked for: ignore it */
            rc = 0;
        } else if (q->route == R_CODE) {
            rc = api_code_data(q, upload_data, *upload_data_size);
        } else {
            rc = api_body_append(q, upload_data, *upload_data_size);
        }
        *upload_data_size = 0;
        return rc == 0 ? MHD_YES : MHD_NO;
    }

    log_debug("api: %s %s (token \"%s\")", method, url, q->who);
    return api_dispatch(c, q, method);
}


static void
api_completed(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
    struct api_req  *q = *con_cls;

    (void) cls;

    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        /* the connection may carry another request: its head too has
         * api_header_s */
        api_conn_head(c, 0);
    }
    if (q == NULL) {
        return;
    }
    if (q->state == Q_AUTH_WAIT || q->state == Q_WAIT) {
        LIST_REMOVE(q, entry);
    }
    if (q->fd >= 0) {
        close(q->fd);
    }
    if (q->log_fd >= 0) {
        close(q->log_fd);
    }
    if (q->tmp[0] != '\0') {
        unlink(q->tmp);
    }
    if (q->md != NULL) {
        EVP_MD_CTX_free(q->md);
    }
    free(q->body);
    free(q->text);
    free(q);
    *con_cls = NULL;
}


static void
api_mhd_log(void *cls, const char *fm, va_list ap)
{
    char  buf[512];
    size_t n;

    (void) cls;
    vsnprintf(buf, sizeof(buf), fm, ap);
    n = strlen(buf);
    while (n > 0 && buf[n - 1] == '\n') {
        buf[--n] = '\0';
    }
    log_debug("api: %s", buf);
}


/* ---- the parent's answers ----------------------------------------------- */

static int
api_from_parent(const struct ps_msg *m)
{
    struct ps_auth_result  ar;
    struct ps_response     rs;
    struct ps_log          lg;
    struct api_req        *q;
    const char            *text;

    if (m->type == PS_STREAM_STATE) {
        return api_stream_state(m);
    }

    q = api_waiting(m->id);
    if (q == NULL) {
        /* its connection is gone (only while the process ends) */
        log_debug("api: an answer (type %u) to no question (%u)", m->type,
                  m->id);
        if (m->fd >= 0) {
            close(m->fd);
        }
        return 0;
    }

    switch (m->type) {

    case PS_AUTH_RESULT:
        if (m->len != sizeof(ar)) {
            return -1;
        }
        memcpy(&ar, m->data, sizeof(ar));
        ar.name[sizeof(ar.name) - 1] = '\0';
        q->auth = (int) ar.result;
        snprintf(q->who, sizeof(q->who), "%s", ar.name);
        /* before the body: go on with the headers; after it: the
         * parent refused the request itself (status 0) */
        q->state = q->state == Q_AUTH_WAIT ? Q_AUTHED : Q_ANSWERED;
        break;

    case PS_RESPONSE:
        text = ps_text(m, sizeof(rs));
        if (text == NULL || q->state != Q_WAIT) {
            return -1;
        }
        memcpy(&rs, m->data, sizeof(rs));
        if (rs.status < 200 || rs.status > 599) {
            return -1;
        }
        q->status = rs.status;
        q->error = rs.error != 0;
        q->text = xstrdup(text);
        q->state = Q_ANSWERED;
        break;

    case PS_LOG:
        if (m->len != sizeof(lg) || q->state != Q_WAIT) {
            return -1;
        }
        memcpy(&lg, m->data, sizeof(lg));
        q->log = 1;
        q->log_fd = m->fd;
        q->log_num = lg.num;
        q->log_version = lg.version;
        q->log_live = lg.live != 0;
        q->log_start = lg.start > (uint64_t) LLONG_MAX / 2
                       ? LLONG_MAX / 2 : (long long) lg.start;
        q->status = 200;
        q->state = Q_ANSWERED;
        break;

    default:
        return -1;
    }

    LIST_REMOVE(q, entry);
    MHD_resume_connection(q->conn);
    return 0;
}


/* ---- the process -------------------------------------------------------- */

static void
api_on_signal(int sig)
{
    (void) sig;
    got_term = 1;
}


/* "uid:gid" to become, or "-" to stay */
static void
api_confine(const char *who)
{
    char           err[256], *end;
    unsigned long  uid, gid;
    struct stat    sb;

    if (strcmp(who, "-") != 0) {
        errno = 0;
        uid = strtoul(who, &end, 10);
        if (errno || *end != ':') {
            fatalx("api: bad -A \"%s\"", who);
        }
        gid = strtoul(end + 1, &end, 10);
        if (errno || *end != '\0') {
            fatalx("api: bad -A \"%s\"", who);
        }
        if (ps_drop((uid_t) uid, (gid_t) gid, err, sizeof(err)) != 0) {
            fatalx("api: %s", err);
        }
    }

    if (fstat(PS_API_LISTEN_FD, &sb) != 0 || !S_ISSOCK(sb.st_mode)
        || fstat(PS_API_CHAN_FD, &sb) != 0 || !S_ISSOCK(sb.st_mode)
        || (api_tcp && (fstat(PS_API_TCP_FD, &sb) != 0
                        || !S_ISSOCK(sb.st_mode))))
    {
        fatalx("api: started without its sockets (-A is for controld "
               "itself)");
    }
}


/* "connections:header_s:body_s[:tcp]", as api_parent_spawn writes it;
 * ":tcp": PS_API_TCP_FD is api_listen's socket */
static void
api_limits(const char *s)
{
    unsigned  conns, header, body;
    int       end = 0;

    if (s == NULL) {
        return;
    }
    if (sscanf(s, "%u:%u:%u%n", &conns, &header, &body, &end) != 3
        || (s[end] != '\0' && strcmp(s + end, ":tcp") != 0)
        || conns == 0 || header == 0 || body == 0)
    {
        fatalx("api: bad -M \"%s\" (connections:header_s:body_s[:tcp])",
               s);
    }
    api_tcp = s[end] != '\0';
    api_max_conns = conns;
    api_header_s = header;
    api_body_s = body;
}


/*
 * One MHD daemon per listening socket (the unix socket, api_listen's TCP
 * one): the same handler and limits, each its own epoll descriptor in
 * the loop below.  api_connections counts per socket.
 */
static struct MHD_Daemon *
api_start(int fd, const union MHD_DaemonInfo **info)
{
    struct MHD_Daemon  *d;

    d = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        0, NULL, NULL, api_handler, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, api_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_NOTIFY_COMPLETED, api_completed, NULL,
        MHD_OPTION_NOTIFY_CONNECTION, api_notify, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, api_unescape, NULL,
        MHD_OPTION_CONNECTION_LIMIT, api_max_conns,
        MHD_OPTION_CONNECTION_TIMEOUT, api_header_s,
        MHD_OPTION_END);
    if (d == NULL) {
        fatalx("api: cannot start the API server (libmicrohttpd)");
    }
    *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
    if (*info == NULL) {
        fatalx("api: no epoll descriptor");
    }
    return d;
}


int
api_main(const char *who, const char *limits, int foreground, int level)
{
    struct pollfd               pfd[3];
    struct sigaction            sa;
    const union MHD_DaemonInfo *info, *info_tcp = NULL;
    MHD_UNSIGNED_LONG_LONG      mt;
    struct api_req             *q;
    struct ps_msg               m;
    int64_t                     next_tick, now;
    int                         timeout, rc, npfd, done = 0;

    log_init(foreground, level);
    api_limits(limits);
    api_confine(who);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = api_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);

    if (fcntl(PS_API_CHAN_FD, F_SETFL, O_NONBLOCK) != 0) {
        fatal("api: fcntl");
    }
    ps_chan_init(&chan, PS_API_CHAN_FD, 1);

    api_daemon = api_start(PS_API_LISTEN_FD, &info);
    if (api_tcp) {
        api_daemon_tcp = api_start(PS_API_TCP_FD, &info_tcp);
    }

    log_debug("api process %d: uid %u, serving; at most %u connections, "
              "closed after %u s idle (%u s for an admin's request)",
              (int) getpid(), (unsigned) getuid(), api_max_conns,
              api_header_s, api_body_s);

    next_tick = now_ms() + API_TICK_MS;
    while (!got_term && !done) {
        pfd[0].fd = info->epoll_fd;
        pfd[0].events = POLLIN;
        pfd[1].fd = chan.fd;
        pfd[1].events = POLLIN | (chan.out_bytes > 0 ? POLLOUT : 0);
        npfd = 2;
        if (api_daemon_tcp != NULL) {
            pfd[2].fd = info_tcp->epoll_fd;
            pfd[2].events = POLLIN;
            npfd = 3;
        }

        now = now_ms();
        timeout = next_tick > now ? (int) (next_tick - now) : 0;
        if (MHD_get_timeout(api_daemon, &mt) == MHD_YES
            && mt < (MHD_UNSIGNED_LONG_LONG) timeout)
        {
            timeout = (int) mt;
        }
        if (api_daemon_tcp != NULL
            && MHD_get_timeout(api_daemon_tcp, &mt) == MHD_YES
            && mt < (MHD_UNSIGNED_LONG_LONG) timeout)
        {
            timeout = (int) mt;
        }
        if (poll(pfd, (nfds_t) npfd, timeout) < 0 && errno != EINTR) {
            fatal("api: poll");
        }

        if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (ps_read(&chan) != 0) {
                /* the parent is gone: so is the reason to serve */
                log_debug("api: the parent closed the socketpair");
                done = 1;
            }
            while ((rc = ps_get(&chan, &m)) == 1) {
                if (api_from_parent(&m) != 0) {
                    if (m.fd >= 0) {
                        close(m.fd);
                    }
                    fatalx("api: a bad message (type %u) from the parent",
                           m.type);
                }
            }
            if (rc < 0) {
                fatalx("api: the socketpair carries no frames");
            }
        }

        MHD_run(api_daemon);
        if (api_daemon_tcp != NULL) {
            MHD_run(api_daemon_tcp);
        }

        if (now_ms() >= next_tick) {
            api_tick();
            api_cut_heads();
            next_tick = now_ms() + API_TICK_MS;
        }
        if (ps_flush(&chan) != 0) {
            done = 1;
        }
    }

    /* MHD may not stop with suspended connections: wake them all; the
     * ones waiting for the parent are closed by their next call */
    LIST_FOREACH(q, &waiting, entry) {
        MHD_resume_connection(q->conn);
    }
    api_tick();
    MHD_run(api_daemon);
    MHD_stop_daemon(api_daemon);
    if (api_daemon_tcp != NULL) {
        MHD_run(api_daemon_tcp);
        MHD_stop_daemon(api_daemon_tcp);
    }
    ps_chan_close(&chan);
    return 0;
}
