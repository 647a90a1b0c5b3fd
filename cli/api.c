/*
 * The API client: libcurl to controld, either through nginx
 * ("https://gateway.example.com") or straight to its unix socket
 * ("unix:/var/lib/dstack/api.sock").  JSON in, JSON out; an error answer
 * ({"error":{"message","type"}}) is printed as "dstackctl: <message>".
 *
 * One easy handle for the whole process: calls are sequential, and
 * reusing it keeps the connection alive across the polls of "apply".
 * The calls of a project's things carry the selected project
 * (project.c), added here so that no command can forget it.
 */

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "dstackctl.h"


static CURL         *dsctl_curl;
static char         *dsctl_base;        /* "http://host:port" */
static char         *dsctl_socket;      /* unix socket path, or NULL */
static char         *dsctl_server;      /* as configured, for messages */
static char         *dsctl_auth;        /* "Authorization: Bearer ..." */
static char         *dsctl_ca;          /* CA file for https://, or NULL */
static char         *dsctl_project;     /* sent with a project's calls */
static char          dsctl_curl_err[CURL_ERROR_SIZE];


int
dsctl_api_init(const dsctl_config_t *cfg)
{
    dsctl_str_t   a = { 0 };
    size_t        n;

    dsctl_server = dsctl_xstrdup(cfg->server);
    if (strncmp(cfg->server, "unix:", 5) == 0) {
        if (cfg->server[5] == '\0') {
            dsctl_error("invalid server \"%s\": no socket path after "
                "\"unix:\"", cfg->server);
            return -1;
        }
        dsctl_socket = dsctl_xstrdup(cfg->server + 5);
        dsctl_base = dsctl_xstrdup("http://localhost");
    } else if (strncmp(cfg->server, "http://", 7) == 0
               || strncmp(cfg->server, "https://", 8) == 0)
    {
        dsctl_base = dsctl_xstrdup(cfg->server);
        /* "https://gw/" and "https://gw/api" mean the same server */
        n = strlen(dsctl_base);
        while (n > 0 && dsctl_base[n - 1] == '/') {
            dsctl_base[--n] = '\0';
        }
        if (n >= 4 && strcmp(dsctl_base + n - 4, "/api") == 0) {
            dsctl_base[n - 4] = '\0';
        }
    } else {
        dsctl_error("invalid server \"%s\" (from %s): expected http://, "
            "https:// or unix:/path", cfg->server,
            cfg->source ? cfg->source : "the configuration");
        return -1;
    }

    if (cfg->ca != NULL && cfg->ca[0] != '\0') {
        if (access(cfg->ca, R_OK) != 0) {
            dsctl_error("cannot read the CA file \"%s\" (DSTACK_CA or \"ca:\" "
                "in the config file): %s", cfg->ca, strerror(errno));
            return -1;
        }
        dsctl_ca = dsctl_xstrdup(cfg->ca);
    }

    dsctl_str_addf(&a, "Authorization: Bearer %s", cfg->token);
    dsctl_auth = a.s;
    if (cfg->project != NULL) {
        dsctl_project = dsctl_xstrdup(cfg->project);
    }

    dsctl_curl = curl_easy_init();
    if (dsctl_curl == NULL) {
        dsctl_error("cannot initialize libcurl");
        return -1;
    }
    return 0;
}


void
dsctl_api_cleanup(void)
{
    if (dsctl_curl != NULL) {
        curl_easy_cleanup(dsctl_curl);
        dsctl_curl = NULL;
    }
    free(dsctl_base);
    free(dsctl_socket);
    free(dsctl_server);
    free(dsctl_auth);
    free(dsctl_project);
    dsctl_base = dsctl_socket = dsctl_server = dsctl_auth = NULL;
    dsctl_project = NULL;
}


char *
dsctl_url_escape(const char *s)
{
    char  *e, *r;

    e = curl_easy_escape(NULL, s, 0);
    if (e == NULL) {
        dsctl_error("out of memory");
        exit(DSCTL_EXIT_FAIL);
    }
    r = dsctl_xstrdup(e);
    curl_free(e);
    return r;
}


static size_t
dsctl_on_body(char *data, size_t size, size_t n, void *arg)
{
    dsctl_str_add(arg, data, size * n);
    return size * n;
}


static size_t
dsctl_on_stream(char *data, size_t size, size_t n, void *arg)
{
    size_t  w;

    w = fwrite(data, size, n, arg);
    fflush(arg);
    return w * size;
}


/* Ctrl-C aborts the transfer in flight; "progress" draws a bar */
typedef struct {
    const char     *label;
    int             bar;
    double          last;
} dsctl_progress_t;

static int
dsctl_on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
    dsctl_progress_t  *pg = arg;
    char               a[32], b[32];
    int                pct;

    (void) dltotal;
    (void) dlnow;
    if (dsctl_interrupted) {
        return 1;
    }
    if (pg != NULL && pg->bar && ultotal > 0
        && ((double) ulnow - pg->last > ultotal / 100.0 || ulnow == ultotal))
    {
        pg->last = (double) ulnow;
        pct = (int) (ulnow * 100 / ultotal);
        dsctl_fmt_bytes(a, sizeof(a), (double) ulnow);
        dsctl_fmt_bytes(b, sizeof(b), (double) ultotal);
        fprintf(stderr, "\r\033[K%s %3d%% (%s of %s)", pg->label, pct, a, b);
        fflush(stderr);
    }
    return 0;
}


static void
dsctl_setup(const char *method, const char *path, struct curl_slist *hdrs,
    dsctl_progress_t *pg)
{
    dsctl_str_t  url = { 0 };

    curl_easy_reset(dsctl_curl);
    dsctl_str_addf(&url, "%s", dsctl_base);
    dsctl_project_path(path, dsctl_project, &url);
    curl_easy_setopt(dsctl_curl, CURLOPT_URL, url.s);
    dsctl_str_free(&url);
    if (dsctl_socket != NULL) {
        curl_easy_setopt(dsctl_curl, CURLOPT_UNIX_SOCKET_PATH, dsctl_socket);
    }
    if (dsctl_ca != NULL) {
        curl_easy_setopt(dsctl_curl, CURLOPT_CAINFO, dsctl_ca);
    }
    curl_easy_setopt(dsctl_curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(dsctl_curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(dsctl_curl, CURLOPT_ERRORBUFFER, dsctl_curl_err);
    curl_easy_setopt(dsctl_curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(dsctl_curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(dsctl_curl, CURLOPT_USERAGENT,
        "dstackctl/" DSCTL_VERSION);
    curl_easy_setopt(dsctl_curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(dsctl_curl, CURLOPT_XFERINFOFUNCTION, dsctl_on_progress);
    curl_easy_setopt(dsctl_curl, CURLOPT_XFERINFODATA, pg);
    dsctl_curl_err[0] = '\0';
}


static struct curl_slist *
dsctl_headers(const char *content_type)
{
    struct curl_slist  *h = NULL;
    dsctl_str_t         ct = { 0 };

    h = curl_slist_append(h, dsctl_auth);
    h = curl_slist_append(h, "Accept: application/json");
    if (content_type != NULL) {
        dsctl_str_addf(&ct, "Content-Type: %s", content_type);
        h = curl_slist_append(h, ct.s);
        dsctl_str_free(&ct);
    }
    /* no "100-continue" round trip before the body */
    h = curl_slist_append(h, "Expect:");
    return h;
}


/* the answer's status, JSON and error fields; prints unless quiet */
static int
dsctl_finish(CURLcode cc, const char *method, const char *path,
    dsctl_str_t *body, unsigned flags, dsctl_resp_t *resp)
{
    const cJSON  *e;
    const char   *msg, *type;
    struct stat   st;

    memset(resp, 0, sizeof(*resp));
    resp->err_type = "";
    resp->err_msg = "";

    if (cc != CURLE_OK) {
        if (cc == CURLE_ABORTED_BY_CALLBACK && dsctl_interrupted) {
            resp->err_type = "interrupted";
            resp->err_msg = "interrupted";
            return -1;
        }
        resp->err_type = "connect";
        resp->err_msg = "cannot reach the server";
        if (flags & DSCTL_API_QUIET) {
            return -1;
        }
        /* curl's words for a socket speak of "localhost port 80" */
        if (dsctl_socket != NULL && cc == CURLE_COULDNT_CONNECT) {
            dsctl_error("cannot reach the server \"%s\": %s (is "
                "dstack-controld running?)", dsctl_server,
                stat(dsctl_socket, &st) == -1 ? strerror(errno)
                : "connection refused");
        } else if (cc == CURLE_PEER_FAILED_VERIFICATION && dsctl_ca == NULL) {
            dsctl_error("cannot reach the server \"%s\": %s (a private CA, "
                "such as controld's own? set DSTACK_CA or \"ca:\" in the "
                "config file to its certificate)", dsctl_server,
                dsctl_curl_err[0] ? dsctl_curl_err : curl_easy_strerror(cc));
        } else {
            dsctl_error("cannot reach the server \"%s\": %s", dsctl_server,
                dsctl_curl_err[0] ? dsctl_curl_err : curl_easy_strerror(cc));
        }
        return -1;
    }

    curl_easy_getinfo(dsctl_curl, CURLINFO_RESPONSE_CODE, &resp->status);
    if (body->len > 0) {
        resp->json = cJSON_ParseWithLength(body->s, body->len);
    }
    if (resp->status >= 200 && resp->status < 300) {
        return 0;
    }

    e = cJSON_GetObjectItemCaseSensitive(resp->json, "error");
    if (cJSON_IsString(e)) {
        /* {"error":"<type>","message":"..."}: a proxy's own answer */
        msg = dsctl_json_str(resp->json, "message");
        type = e->valuestring;
    } else {
        msg = dsctl_json_str(e, "message");
        type = dsctl_json_str(e, "type");
    }
    resp->err_type = type != NULL ? type : "";
    resp->err_msg = msg != NULL ? msg : "";

    if (flags & DSCTL_API_QUIET) {
        return -1;
    }
    if (msg != NULL && msg[0] != '\0') {
        if (resp->status == 401) {
            dsctl_error("%s (check the token: DSTACK_TOKEN or \"token:\" "
                "in the config file)", msg);
        } else {
            dsctl_error("%s", msg);
        }
    } else if (resp->status == 401) {
        dsctl_error("the server refused the token (HTTP 401): check "
            "DSTACK_TOKEN or \"token:\" in the config file");
    } else if (resp->status == 503) {
        dsctl_error("%s %s: the server is unavailable (HTTP 503): no "
            "dstack-controld answers there now; try again in a few seconds",
            method, path);
    } else {
        dsctl_error("%s %s: the server answered HTTP %ld%s", method, path,
            resp->status, resp->status == 404 || resp->status == 502
            ? " (is the server a dstack-controld?)" : "");
    }
    return -1;
}


int
dsctl_api_call(const char *method, const char *path, const cJSON *body,
    unsigned flags, dsctl_resp_t *resp)
{
    struct curl_slist  *hdrs;
    dsctl_str_t         out = { 0 };
    char               *text = NULL;
    CURLcode            cc;
    int                 rc;

    hdrs = dsctl_headers(body != NULL ? "application/json" : NULL);
    dsctl_setup(method, path, hdrs, NULL);
    if (body != NULL) {
        text = cJSON_PrintUnformatted(body);
        if (text == NULL) {
            dsctl_error("out of memory");
            exit(DSCTL_EXIT_FAIL);
        }
        curl_easy_setopt(dsctl_curl, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(dsctl_curl, CURLOPT_POSTFIELDSIZE_LARGE,
            (curl_off_t) strlen(text));
    }
    curl_easy_setopt(dsctl_curl, CURLOPT_TIMEOUT, 300L);
    curl_easy_setopt(dsctl_curl, CURLOPT_WRITEFUNCTION, dsctl_on_body);
    curl_easy_setopt(dsctl_curl, CURLOPT_WRITEDATA, &out);

    cc = curl_easy_perform(dsctl_curl);
    rc = dsctl_finish(cc, method, path, &out, flags, resp);

    curl_slist_free_all(hdrs);
    free(text);
    dsctl_str_free(&out);
    return rc;
}


int
dsctl_api_transient(const dsctl_resp_t *resp)
{
    return strcmp(resp->err_type, "connect") == 0 || resp->status == 502
           || resp->status == 503 || resp->status == 504;
}


void
dsctl_resp_free(dsctl_resp_t *resp)
{
    cJSON_Delete(resp->json);
    memset(resp, 0, sizeof(*resp));
}


int
dsctl_api_upload(const char *path, const void *data, size_t len,
    const char *content_type, const char *label, dsctl_resp_t *resp)
{
    struct curl_slist  *hdrs;
    dsctl_str_t         out = { 0 };
    dsctl_progress_t    pg;
    CURLcode            cc;
    int                 rc;

    memset(&pg, 0, sizeof(pg));
    pg.label = label;
    pg.bar = label != NULL && isatty(STDERR_FILENO) && len > 256 * 1024;

    hdrs = dsctl_headers(content_type);
    dsctl_setup("PUT", path, hdrs, &pg);
    curl_easy_setopt(dsctl_curl, CURLOPT_POSTFIELDS, data);
    curl_easy_setopt(dsctl_curl, CURLOPT_POSTFIELDSIZE_LARGE,
        (curl_off_t) len);
    /* no overall limit for big archives; give up on a stalled one */
    curl_easy_setopt(dsctl_curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(dsctl_curl, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(dsctl_curl, CURLOPT_WRITEFUNCTION, dsctl_on_body);
    curl_easy_setopt(dsctl_curl, CURLOPT_WRITEDATA, &out);

    cc = curl_easy_perform(dsctl_curl);
    if (pg.bar) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    rc = dsctl_finish(cc, "PUT", path, &out, 0, resp);

    curl_slist_free_all(hdrs);
    dsctl_str_free(&out);
    return rc;
}


/* a streamed answer goes to out only when it is a 2xx */
typedef struct {
    FILE           *out;
    dsctl_str_t     err;
    int             ok;
    int             decided;
} dsctl_stream_t;

static size_t
dsctl_on_stream_body(char *data, size_t size, size_t n, void *arg)
{
    dsctl_stream_t  *st = arg;
    long             status = 0;

    if (!st->decided) {
        curl_easy_getinfo(dsctl_curl, CURLINFO_RESPONSE_CODE, &status);
        st->ok = status >= 200 && status < 300;
        st->decided = 1;
    }
    if (st->ok) {
        return dsctl_on_stream(data, size, n, st->out);
    }
    return dsctl_on_body(data, size, n, &st->err);
}


int
dsctl_api_stream(const char *path, FILE *out)
{
    struct curl_slist  *hdrs;
    dsctl_stream_t      st;
    dsctl_resp_t        resp;
    CURLcode            cc;
    int                 rc;

    memset(&st, 0, sizeof(st));
    st.out = out;
    hdrs = dsctl_headers(NULL);
    dsctl_setup("GET", path, hdrs, NULL);
    curl_easy_setopt(dsctl_curl, CURLOPT_WRITEFUNCTION, dsctl_on_stream_body);
    curl_easy_setopt(dsctl_curl, CURLOPT_WRITEDATA, &st);

    cc = curl_easy_perform(dsctl_curl);
    if (cc == CURLE_ABORTED_BY_CALLBACK && dsctl_interrupted) {
        rc = 0;
    } else if (cc == CURLE_WRITE_ERROR && ferror(out)) {
        rc = -1;            /* e.g. "dstackctl logs x | head" */
    } else if ((cc == CURLE_PARTIAL_FILE || cc == CURLE_RECV_ERROR)
               && st.ok)
    {
        fflush(out);
        dsctl_error("the server ended the stream early: the token may have "
                    "been revoked or have expired, or controld stopped");
        rc = -1;
    } else {
        rc = dsctl_finish(cc, "GET", path, &st.err, 0, &resp);
        dsctl_resp_free(&resp);
    }
    curl_slist_free_all(hdrs);
    dsctl_str_free(&st.err);
    return rc;
}


/*
 * The client configuration and the API connection every command that
 * talks to controld starts with; on failure a message was printed and
 * nothing is left to free.
 */
int
dsctl_client_open(dsctl_config_t *cfg)
{
    if (dsctl_config_load(cfg) != 0) {
        return -1;
    }
    if (dsctl_api_init(cfg) != 0) {
        dsctl_config_free(cfg);
        return -1;
    }
    return 0;
}
