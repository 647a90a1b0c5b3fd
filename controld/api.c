/*
 * The JSON API (controld/API.md) on a unix socket, with libmicrohttpd.
 *
 * MHD runs without a thread of its own: its epoll descriptor sits in the
 * main loop's poll set and MHD_run() is called from there, so handlers run
 * on the loop's thread and may touch runs and LMDB directly.  Handlers
 * never block: an apply answers once the run is recorded and the
 * reconciler does the rest; log streams suspend their connection while no
 * bytes are new, and the tick resumes them.
 *
 * Every request is authenticated before its body is read: a request
 * without an admin token gets its answer at once and its body is never
 * looked at.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <microhttpd.h>
#include <openssl/evp.h>

#include "actions.h"
#include "api.h"
#include "backend.h"
#include "config.h"
#include "log.h"
#include "run.h"
#include "store.h"
#include "tokens.h"
#include "util.h"
#include "views.h"


#define API_JSON_MAX        (1024 * 1024)
#define API_CODE_MAX        (256ULL * 1024 * 1024)
/*
 * A body over the limit is still read (and dropped) up to this size
 * before the 413 goes out: answering while the client still sends makes
 * the kernel reset the connection, and the client may never see why.
 */
#define API_DISCARD_MAX     (64ULL * 1024 * 1024)

enum api_route {
    R_NONE = 0,
    R_HEALTH,
    R_CODE,
    R_PLAN,
    R_APPLY,
    R_RUNS,
    R_RUN,
    R_STOP,
    R_LOGS,
    R_TOKENS,
    R_TOKEN,
    R_BADNAME       /* /api/runs/<not a run name>...: 400, not 404 */
};

struct api_req {
    int                 route;
    char                param[128];     /* run or token name, code hash */

    /* JSON bodies */
    char               *body;
    size_t              len;
    size_t              cap;
    int                 too_large;

    /* code uploads */
    int                 fd;
    char                tmp[4096];
    EVP_MD_CTX         *md;
    uint64_t            size;
    int                 discard;        /* the archive is there already */

    char                who[DS_NAME_MAX + 1];   /* the token's name */
};

/* a log stream: GET /api/runs/NAME/logs?follow=1 */
struct api_stream {
    LIST_ENTRY(api_stream) entry;
    struct MHD_Connection *conn;
    char                run[DS_NAME_MAX + 1];
    int                 num;
    int                 version;
    char                path[4096];
    int                 fd;
    uint64_t            offset;
    int                 follow;
    int                 suspended;
    uint8_t             token[DS_TOKEN_HASH_LEN];   /* who opened it */
    char                who[DS_NAME_MAX + 1];       /* its name */
    int64_t             checked;        /* ms of the last token check */
};

/* a follower whose token is revoked or expires loses the stream within */
#define API_STREAM_RECHECK_MS   1000

static LIST_HEAD(, api_stream)  streams = LIST_HEAD_INITIALIZER(streams);

static struct MHD_Daemon  *api_daemon;
static int                 api_fd = -1;


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


/*
 * Splits the path into a route and its parameter; *allow gets the methods
 * of the route.  MHD has already percent-decoded the path, so "%2e%2e"
 * arrives as ".." and is refused by the name check of the handler.
 */
static int
api_route(const char *url, char *param, size_t n, const char **allow)
{
    const char  *p, *slash;
    size_t       len;

    param[0] = '\0';
    *allow = NULL;

    if (strncmp(url, "/api/", 5) != 0) {
        return R_NONE;
    }
    p = url + 5;

    if (strcmp(p, "health") == 0) {
        *allow = "GET";
        return R_HEALTH;
    }

    if (strncmp(p, "code/", 5) == 0) {
        if (fmt(param, n, "%s", p + 5) != 0) {
            param[0] = '\0';
        }
        *allow = "HEAD, PUT";
        return R_CODE;
    }

    if (strcmp(p, "runs") == 0 || strcmp(p, "runs/") == 0) {
        *allow = "GET";
        return R_RUNS;
    }
    if (strcmp(p, "runs/plan") == 0) {
        *allow = "POST";
        return R_PLAN;
    }
    if (strcmp(p, "runs/apply") == 0) {
        *allow = "POST";
        return R_APPLY;
    }
    if (strncmp(p, "runs/", 5) == 0) {
        p += 5;
        slash = strchr(p, '/');
        len = slash ? (size_t) (slash - p) : strlen(p);
        if (len >= n) {
            len = n - 1;
        }
        memcpy(param, p, len);
        param[len] = '\0';
        if (!ds_valid_run_name(param, strlen(param))) {
            *allow = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";
            return R_BADNAME;
        }
        if (slash == NULL) {
            *allow = "GET";
            return R_RUN;
        }
        if (strcmp(slash, "/stop") == 0) {
            *allow = "POST";
            return R_STOP;
        }
        if (strcmp(slash, "/logs") == 0) {
            *allow = "GET";
            return R_LOGS;
        }
        return R_NONE;
    }

    if (strcmp(p, "tokens") == 0) {
        *allow = "GET, POST";
        return R_TOKENS;
    }
    if (strncmp(p, "tokens/", 7) == 0) {
        if (fmt(param, n, "%s", p + 7) != 0) {
            param[0] = '\0';
        }
        *allow = "DELETE";
        return R_TOKEN;
    }

    return R_NONE;
}


static int
api_method_ok(const char *allow, const char *method)
{
    size_t       ml;
    const char  *p;

    ml = strlen(method);
    for (p = allow; (p = strstr(p, method)) != NULL; p += ml) {
        if ((p == allow || p[-1] == ' ') && (p[ml] == ',' || p[ml] == '\0')) {
            return 1;
        }
    }
    return 0;
}


static int
api_has_body(int route)
{
    return route == R_PLAN || route == R_APPLY || route == R_STOP
           || route == R_TOKENS || route == R_CODE;
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


/*
 * cJSON puts a NUL in a C string for "\u0000" (or a raw NUL byte): the
 * name "ab\u0000/../x" would be checked, and used, as "ab".  No field of
 * the API has a use for a NUL; the offset of the first one, or -1.
 */
static long
api_nul_at(const char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (p[i] == '\0'
            || (p[i] == '\\' && i + 6 <= len && p[i + 1] == 'u'
                && memcmp(p + i + 2, "0000", 4) == 0))
        {
            return (long) i;
        }
        if (p[i] == '\\') {
            i++;                /* the escaped character */
        }
    }
    return -1;
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

    nul = api_nul_at(q->body, q->len);
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
    return json;
}


/* ---- code uploads ------------------------------------------------------- */

static int
api_code_path(char *buf, size_t n, const char *hash)
{
    return fmt(buf, n, "%s/code/%s.tar.gz", conf->state_dir, hash);
}


static int
api_code_begin(struct api_req *q, char *err, size_t n)
{
    char  path[4096];

    if (!valid_hex_hash(q->param)) {
        snprintf(err, n, "code: \"%.80s\" is not a SHA-256 in lower-case hex",
                 q->param);
        return 400;
    }
    if (api_code_path(path, sizeof(path), q->param) != 0) {
        snprintf(err, n, "state_dir too long");
        return 500;
    }
    if (access(path, F_OK) == 0) {
        q->discard = 1;
        return 0;
    }

    if (fmt(q->tmp, sizeof(q->tmp), "%s/code/.upload-XXXXXX", conf->state_dir)
        != 0)
    {
        snprintf(err, n, "state_dir too long");
        return 500;
    }
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
    char          hex[65], path[4096];
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


/* ---- log streams -------------------------------------------------------- */

/* the replica a log stream reads: the newest with that number */
static struct replica *
api_stream_replica(struct api_stream *s)
{
    struct run      *r;
    struct replica  *rep;

    r = run_find(s->run);
    if (r == NULL) {
        return NULL;
    }
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (rep->num == s->num && rep->version == s->version) {
            return rep;
        }
    }
    return NULL;
}


static int
api_stream_live(struct api_stream *s)
{
    struct replica  *rep;

    rep = api_stream_replica(s);
    if (rep == NULL) {
        return 0;
    }
    /* a failed replica that will be restarted writes to the same file */
    return !replica_ended(rep) && !rep->run->finished;
}


/* the token that opened the stream, checked again now and then */
static int
api_stream_revoked(struct api_stream *s)
{
    char     name[DS_NAME_MAX + 1];
    int64_t  now;

    now = now_ms();
    if (now - s->checked < API_STREAM_RECHECK_MS) {
        return 0;
    }
    s->checked = now;

    if (tokens_check_admin_hash(s->token, name, sizeof(name)) == AUTH_OK) {
        return 0;
    }

    log_info("logs of %s: the token \"%s\" is no longer valid, the stream "
             "ends", s->run, s->who);
    return 1;
}


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

    if (api_stream_revoked(s)) {
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }

    if (s->fd < 0) {
        s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
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

    if (!s->follow || !api_stream_live(s)) {
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


void
api_tick(void)
{
    struct api_stream  *s;

    LIST_FOREACH(s, &streams, entry) {
        if (s->suspended) {
            s->suspended = 0;
            MHD_resume_connection(s->conn);
        }
    }
}


static int
api_int_arg(struct MHD_Connection *c, const char *key, long long min,
    long long max, long long *out, char *err, size_t n)
{
    const char  *v;
    char        *end;
    long long    x;

    v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    if (v == NULL) {
        return 0;
    }
    errno = 0;
    x = strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno || x < min || x > max) {
        snprintf(err, n, "%s: \"%.40s\" is not a number from %lld to %lld",
                 key, v, min, max);
        return -1;
    }
    *out = x;
    return 1;
}


static enum MHD_Result
api_logs(struct MHD_Connection *c, struct run *r, const char *who)
{
    struct replica       *rep, *best = NULL;
    struct api_stream    *s;
    struct MHD_Response  *res;
    long long             num = -1, offset = 0, follow = 0;
    int                   fd, have_num;
    struct stat           sb;
    char                  err[256], path[4096], hdr[32];
    const char           *v;
    enum MHD_Result       ret;

    have_num = api_int_arg(c, "replica", 0, 65535, &num, err, sizeof(err));
    if (have_num < 0
        || api_int_arg(c, "offset", 0, LLONG_MAX / 2, &offset, err,
                       sizeof(err)) < 0)
    {
        return api_error(c, 400, err);
    }
    v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "follow");
    if (v != NULL) {
        if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0) {
            follow = 1;
        } else if (strcmp(v, "0") != 0 && strcmp(v, "false") != 0) {
            return api_error(c, 400, "follow: expected 1 or 0");
        }
    }

    /* the newest version of the replica (lowest number by default) */
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (have_num ? rep->num != num : (best && rep->num > best->num)) {
            continue;
        }
        if (best == NULL || rep->num < best->num
            || (rep->num == best->num && rep->version > best->version))
        {
            best = rep;
        }
    }
    if (best == NULL) {
        if (have_num) {
            snprintf(err, sizeof(err), "run \"%s\" has no replica %lld",
                     r->name, num);
        } else {
            snprintf(err, sizeof(err), "run \"%s\" has no replicas", r->name);
        }
        return api_error(c, 404, err);
    }

    if (backend->log_path(best, path, sizeof(path)) != 0) {
        return api_error(c, 500, "log path too long");
    }

    if (!follow) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &sb) != 0) {
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
        snprintf(hdr, sizeof(hdr), "%d", best->num);
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
    snprintf(s->run, sizeof(s->run), "%s", r->name);
    s->num = best->num;
    s->version = best->version;
    snprintf(s->path, sizeof(s->path), "%s", path);
    s->fd = -1;
    s->offset = (uint64_t) offset;
    s->follow = 1;
    s->checked = now_ms();
    fmt(s->who, sizeof(s->who), "%s", who);
    /* the request's token was checked already: here only its hash */
    if (tokens_bearer_hash(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                       "Authorization"),
                           s->token) != AUTH_OK)
    {
        free(s);
        return api_error(c, 401, "invalid token");
    }
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
    snprintf(hdr, sizeof(hdr), "%d", best->num);
    MHD_add_response_header(res, "X-Dstack-Replica", hdr);
    ret = MHD_queue_response(c, 200, res);
    MHD_destroy_response(res);
    return ret;
}


/* ---- handlers ----------------------------------------------------------- */

static struct run *
api_find_run(const char *name, unsigned *status, char *err, size_t n)
{
    struct run  *r;

    if (!ds_valid_run_name(name, strlen(name))) {
        snprintf(err, n, "name: \"%.80s\" is not a valid run name "
                 "(^[a-z][a-z0-9-]{1,40}$)", name);
        *status = 400;
        return NULL;
    }
    r = run_find(name);
    if (r == NULL) {
        snprintf(err, n, "run \"%s\" not found", name);
        *status = 404;
    }
    return r;
}


static enum MHD_Result
api_dispatch(struct MHD_Connection *c, struct api_req *q, const char *method)
{
    cJSON        *body = NULL, *answer = NULL, *it, *list;
    struct run   *r;
    char          err[1024];
    unsigned      status = 200;
    int           rc, created, all, do_abort;
    const char   *v;

    err[0] = '\0';

    if (q->too_large) {
        snprintf(err, sizeof(err), "body: larger than %s",
                 q->route == R_CODE ? "256 MiB" : "1 MiB");
        return api_error(c, 413, err);
    }

    switch (q->route) {

    case R_HEALTH:
        answer = cJSON_CreateObject();
        cJSON_AddBoolToObject(answer, "ok", 1);
        cJSON_AddStringToObject(answer, "version", CONTROLD_VERSION);
        cJSON_AddStringToObject(answer, "domain", conf->domain);
        cJSON_AddStringToObject(answer, "backend", backend->name);
        cJSON_AddStringToObject(answer, "network", backend->network());
        return api_send_json(c, 200, answer);

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

    case R_PLAN:
    case R_APPLY:
        body = api_parse_body(q, 0, err, sizeof(err));
        if (body == NULL) {
            return api_error(c, 400, err);
        }
        if (q->route == R_PLAN) {
            rc = action_plan(body, &answer, err, sizeof(err));
        } else {
            created = 0;
            rc = action_apply(body, &answer, &created, err, sizeof(err));
            if (rc == 0 && created) {
                status = 201;
            }
        }
        cJSON_Delete(body);
        if (rc != 0) {
            return api_error(c, rc, err);
        }
        return api_send_json(c, status, answer);

    case R_RUNS:
        all = 0;
        v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "all");
        if (v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)) {
            all = 1;
        }
        answer = cJSON_CreateObject();
        list = cJSON_AddArrayToObject(answer, "runs");
        TAILQ_FOREACH(r, &runs, entry) {
            if (!all && r->finished) {
                continue;
            }
            it = run_to_api(r);
            if (it != NULL) {
                cJSON_AddItemToArray(list, it);
            }
        }
        return api_send_json(c, 200, answer);

    case R_RUN:
        r = api_find_run(q->param, &status, err, sizeof(err));
        if (r == NULL) {
            return api_error(c, status, err);
        }
        return api_send_json(c, 200, run_to_api(r));

    case R_STOP:
        r = api_find_run(q->param, &status, err, sizeof(err));
        if (r == NULL) {
            return api_error(c, status, err);
        }
        body = api_parse_body(q, 1, err, sizeof(err));
        if (body == NULL) {
            return api_error(c, 400, err);
        }
        do_abort = 0;
        cJSON_ArrayForEach(it, body) {
            if (strcmp(it->string, "abort") == 0 && cJSON_IsBool(it)) {
                do_abort = cJSON_IsTrue(it);
            } else if (strcmp(it->string, "abort") == 0) {
                snprintf(err, sizeof(err), "abort: expected true or false");
                break;
            } else {
                snprintf(err, sizeof(err), "unknown field \"%.80s\"",
                         it->string);
                break;
            }
        }
        cJSON_Delete(body);
        if (err[0] != '\0') {
            return api_error(c, 400, err);
        }
        rc = action_stop(r, do_abort, err, sizeof(err));
        if (rc != 0) {
            return api_error(c, rc, err);
        }
        log_info("run \"%s\": %s requested by token \"%s\"", r->name,
                 do_abort ? "abort" : "stop", q->who);
        return api_send_json(c, 200, run_to_api(r));

    case R_LOGS:
        r = api_find_run(q->param, &status, err, sizeof(err));
        if (r == NULL) {
            return api_error(c, status, err);
        }
        return api_logs(c, r, q->who);

    case R_TOKENS:
        if (strcmp(method, "GET") == 0) {
            answer = tokens_list();
            if (answer == NULL) {
                return api_error(c, 500, "cannot read tokens");
            }
            return api_send_json(c, 200, answer);
        }
        body = api_parse_body(q, 0, err, sizeof(err));
        if (body == NULL) {
            return api_error(c, 400, err);
        }
        rc = tokens_create(body, &answer, err, sizeof(err));
        cJSON_Delete(body);
        if (rc != 0) {
            return api_error(c, rc, err);
        }
        return api_send_json(c, 201, answer);

    case R_BADNAME:
        api_find_run(q->param, &status, err, sizeof(err));
        return api_error(c, status, err);

    case R_TOKEN:
        rc = tokens_revoke(q->param, err, sizeof(err));
        if (rc != 0) {
            return api_error(c, rc, err);
        }
        answer = cJSON_CreateObject();
        cJSON_AddStringToObject(answer, "name", q->param);
        cJSON_AddBoolToObject(answer, "revoked", 1);
        return api_send_json(c, 200, answer);
    }

    return api_error(c, 500, "unrouted request");
}


static enum MHD_Result
api_handler(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
    struct api_req  *q = *con_cls;
    const char      *allow, *auth, *cl;
    char             err[512], param[128];
    int              route, rc;
    unsigned long long  len;

    (void) cls;
    (void) version;

    if (q == NULL) {
        /* first call: headers only; answer refusals before any body */
        route = api_route(url, param, sizeof(param), &allow);

        rc = tokens_check_admin(
                 MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                             "Authorization"),
                 err, sizeof(err));
        if (rc != AUTH_OK) {
            auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                               "Authorization");
            switch (rc) {
            case AUTH_MISSING:
                return api_error(c, 401, "an admin token is required "
                                 "(Authorization: Bearer <token>)");
            case AUTH_EXPIRED:
                return api_error(c, 401, "the token has expired");
            case AUTH_NOT_ADMIN:
                fmt(param, sizeof(param), "%s", err);
                snprintf(err, sizeof(err), "token \"%s\" is not an admin "
                         "token", param);
                return api_error(c, 403, err);
            default:
                return api_error(c, 401, auth && strncasecmp(auth, "Bearer ",
                                                             7) == 0
                                 ? "invalid token"
                                 : "expected Authorization: Bearer <token>");
            }
        }

        if (route == R_NONE) {
            snprintf(err, sizeof(err), "no such endpoint: %s %.300s", method,
                     url);
            return api_error(c, 404, err);
        }
        if (!api_method_ok(allow, method)) {
            return api_method_not_allowed(c, method, url, allow);
        }

        q = xcalloc(1, sizeof(struct api_req));
        q->route = route;
        q->fd = -1;
        snprintf(q->param, sizeof(q->param), "%s", param);
        fmt(q->who, sizeof(q->who), "%s", err);
        *con_cls = q;

        cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                         "Content-Length");
        len = cl ? strtoull(cl, NULL, 10) : 0;

        if (route == R_CODE) {
            if (len > API_CODE_MAX) {
                return api_error(c, 413, "body: larger than 256 MiB");
            }
            rc = api_code_begin(q, err, sizeof(err));
            if (rc != 0) {
                return api_error(c, rc, err);
            }
        } else if (api_has_body(route) && len > API_JSON_MAX) {
            if (len > API_DISCARD_MAX) {
                return api_error(c, 413, "body: larger than 1 MiB");
            }
            q->too_large = 1;
        }
        return MHD_YES;
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
    (void) c;
    (void) toe;

    if (q == NULL) {
        return;
    }
    if (q->fd >= 0) {
        close(q->fd);
    }
    if (q->tmp[0] != '\0') {
        unlink(q->tmp);
    }
    if (q->md != NULL) {
        EVP_MD_CTX_free(q->md);
    }
    free(q->body);
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


/* ---- the socket --------------------------------------------------------- */

static int
api_listen(char *err, size_t n)
{
    struct sockaddr_un  sa;
    struct stat         sb;
    char                dir[4096], *slash;
    int                 fd, probe;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", conf->api_socket);

    snprintf(dir, sizeof(dir), "%s", conf->api_socket);
    slash = strrchr(dir, '/');
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        if (mkdir_p(dir, 0755) != 0) {
            snprintf(err, n, "cannot create %s: %s", dir, strerror(errno));
            return -1;
        }
    }

    if (lstat(conf->api_socket, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode)) {
            snprintf(err, n, "%s exists and is not a socket",
                     conf->api_socket);
            return -1;
        }
        /* a live socket means another controld owns this state */
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0
            && connect(probe, (struct sockaddr *) &sa, sizeof(sa)) == 0)
        {
            close(probe);
            snprintf(err, n, "%s: another dstack-controld is listening",
                     conf->api_socket);
            return -1;
        }
        if (probe >= 0) {
            close(probe);
        }
        unlink(conf->api_socket);
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, n, "socket: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        snprintf(err, n, "bind %s: %s", conf->api_socket, strerror(errno));
        close(fd);
        return -1;
    }
    if (chmod(conf->api_socket, conf->api_socket_mode) != 0
        || chgrp_conf(conf->api_socket) != 0
        || listen(fd, 128) != 0)
    {
        snprintf(err, n, "%s: %s", conf->api_socket, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}


int
api_start(char *err, size_t n)
{
    api_fd = api_listen(err, n);
    if (api_fd < 0) {
        return -1;
    }

    api_daemon = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        0, NULL, NULL, api_handler, NULL,
        MHD_OPTION_LISTEN_SOCKET, api_fd,
        MHD_OPTION_NOTIFY_COMPLETED, api_completed, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, api_unescape, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, api_mhd_log, NULL,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned) 256,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 300,
        MHD_OPTION_END);
    if (api_daemon == NULL) {
        snprintf(err, n, "cannot start the API server (libmicrohttpd)");
        close(api_fd);
        unlink(conf->api_socket);
        api_fd = -1;
        return -1;
    }

    log_info("API listening on %s", conf->api_socket);
    return 0;
}


void
api_stop(void)
{
    if (api_daemon != NULL) {
        /* resume every stream so that MHD can close them */
        api_tick();
        MHD_stop_daemon(api_daemon);
        api_daemon = NULL;
    }
    if (api_fd >= 0) {
        close(api_fd);
        unlink(conf->api_socket);
        api_fd = -1;
    }
}


int
api_fill(struct pollfd *pfd, int max)
{
    const union MHD_DaemonInfo  *info;

    if (api_daemon == NULL || max < 1) {
        return 0;
    }
    info = MHD_get_daemon_info(api_daemon, MHD_DAEMON_INFO_EPOLL_FD);
    if (info == NULL) {
        return 0;
    }
    pfd[0].fd = info->epoll_fd;
    pfd[0].events = POLLIN;
    pfd[0].revents = 0;
    return 1;
}


void
api_process(void)
{
    if (api_daemon != NULL) {
        MHD_run(api_daemon);
    }
}


int
api_timeout_ms(void)
{
    MHD_UNSIGNED_LONG_LONG  t;

    if (api_daemon == NULL || MHD_get_timeout(api_daemon, &t) != MHD_YES) {
        return -1;
    }
    return t > INT_MAX ? INT_MAX : (int) t;
}
