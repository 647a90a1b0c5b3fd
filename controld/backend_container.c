/*
 * The container backend: a service with an `image` runs as containers of
 * a Docker Engine API (Docker, or Podman's compatible service), spoken
 * over its unix socket (engine.c), never through a CLI.
 *
 * A replica's start is a chain of requests, each started by the answer
 * to the one before, so the loop never waits:
 *
 *   inspect the image -> (pull it, progress in the replica's message)
 *   -> create the container -> copy the code in -> start -> inspect for
 *   the published port -> follow its logs and wait for its end
 *
 * The container publishes the service's port on 127.0.0.1 at a port the
 * engine picks, so replicas of a service sit side by side on one host
 * and the gateway reaches each at 127.0.0.1:<its port>.  Every container
 * carries labels (this controld's tag, run, replica, version): after a
 * restart controld finds its containers by them and adopts the ones its
 * documents name; the others go.  A container that ends is the
 * replica's exit: the reconciler restarts it (a new container) with
 * backoff, as it does processes.  Its output goes to the replica's log
 * file, where `dstackctl logs` reads it.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/queue.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "backend.h"
#include "code.h"
#include "config.h"
#include "engine.h"
#include "gpus.h"
#include "host.h"
#include "log.h"
#include "offers.h"
#include "run.h"
#include "secrets.h"
#include "spec.h"
#include "util.h"


#define CT_VERSION_MS           3000    /* the engine's first answer */
#define CT_PING_TIMEOUT_MS      15000   /* a busy engine answers late */
#define CT_PING_MS              5000    /* asked again while it is away */
#define CT_REQ_MS               60000   /* a step of a start */
#define CT_CODE_MAX             (256L * 1024 * 1024)
#define CT_WORKDIR              "/workflow"     /* dstack's */

enum ct_step {
    CT_IMAGE = 0,       /* is the image there? */
    CT_PULL,
    CT_CLEAR,           /* a container left with our name goes first */
    CT_CREATE,
    CT_MKDIR,           /* the working directory, for the code */
    CT_CODE,
    CT_FILES,           /* the spec's files, at their paths */
    CT_START,
    CT_INSPECT,
    CT_RUNNING,
    CT_ENDED
};

/* what the backend keeps of a replica it runs */
struct ct {
    LIST_ENTRY(ct)      entry;
    struct replica     *rep;
    int                 step;           /* enum ct_step */
    int                 retried;        /* a create after a name clash */
    struct engine_req  *req;            /* the step in flight */
    struct engine_req  *wait;
    struct engine_req  *logs;
    int                 log_fd;
    unsigned char       hdr[8];         /* the logs' frame header */
    size_t              hdr_len;
    size_t              frame_left;
    char                line[1024];     /* the pull's JSON lines */
    size_t              line_len;
    char                pull_error[512];
    int                 stop_sig;       /* asked to stop while starting */
    int                 exit_status;    /* to report at the next turn */
    int                 report;
};

static LIST_HEAD(, ct)  cts = LIST_HEAD_INITIALIZER(cts);

static const struct backend_events  *events;

static struct host_desc  host = {
    .backend = "local",
    .region = "local",
    .instance_type = "container",
};

static struct {
    int             ok;                 /* it answered */
    int             podman;             /* Podman's compatible service */
    char            version[64];
    char            note[512];          /* why it does not answer */
    int64_t         next_ping_ms;
    struct engine_req *ping;
    char            tag[8];             /* this controld's containers */
} engine;

/* containers with our tag the engine had at start: adopted or removed */
struct known {
    char            id[72];
    int             running;
    int             claimed;
};

static struct known     *known;
static int               n_known;


static void ct_step(struct ct *c);


/* ---- small things ------------------------------------------------------- */

static struct ct *
ct_of(const struct replica *rep)
{
    struct ct  *c;

    LIST_FOREACH(c, &cts, entry) {
        if (c->rep == rep) {
            return c;
        }
    }
    return NULL;
}


static void
ct_name(const struct replica *rep, char *buf, size_t n)
{
    fmt(buf, n, "dstack-%s-%s-%d-v%d", engine.tag, rep->run->name, rep->num,
        rep->version);
}


/* the engine's message of an error answer, else the body as it is */
static void
ct_engine_error(const char *body, size_t len, char *out, size_t n)
{
    cJSON        *o;
    const cJSON  *m;

    o = body ? cJSON_ParseWithLength(body, len) : NULL;
    m = cJSON_GetObjectItemCaseSensitive(o, "message");
    if (cJSON_IsString(m)) {
        snprintf(out, n, "%s", m->valuestring);
    } else {
        snprintf(out, n, "%.*s", (int) (len > 300 ? 300 : len),
                 body ? body : "");
    }
    cJSON_Delete(o);
}


/* a line of ours in the replica's log, where `dstackctl logs` shows it */
static void
ct_log_line(const struct replica *rep, const char *what)
{
    char  file[4096], line[640];
    int   fd, n;

    if (replica_log_path(rep, file, sizeof(file)) != 0) {
        return;
    }
    fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        return;
    }
    n = snprintf(line, sizeof(line), "dstack: %s\n", what);
    if (write(fd, line, n > 0 && (size_t) n < sizeof(line) ? (size_t) n
                                                           : strlen(line))
        < 0)
    {
        /* the log is a courtesy: the message is in ps too */
    }
    close(fd);
}


/*
 * The start failed: the replica hears why, and then that it is gone, at
 * the next turn of the loop (never from inside the reconciler's call).
 */
static void
ct_fail(struct ct *c, const char *f, ...)
    __attribute__((format(printf, 2, 3)));

static void
ct_fail(struct ct *c, const char *f, ...)
{
    va_list  ap;
    char     why[512];

    va_start(ap, f);
    vsnprintf(why, sizeof(why), f, ap);
    va_end(ap);

    log_warnx("run \"%s\": replica %d v%d: %s", c->rep->run->name,
              c->rep->num, c->rep->version, why);
    ct_log_line(c->rep, why);
    events->setup_done(c->rep, why);
    c->step = CT_ENDED;
    c->exit_status = -1;
    c->report = 1;
}


/* the engine's words for "ended", as waitpid's status */
static int
ct_wait_status(long code)
{
    /* 128 + n: killed by signal n (as docker reports it) */
    if (code > 128 && code < 128 + 65) {
        return (int) (code - 128);
    }
    return (int) ((code & 0xff) << 8);
}


/* ---- the engine --------------------------------------------------------- */

static void
engine_version_parse(const char *body)
{
    cJSON        *o;
    const cJSON  *v, *comp, *it, *name;

    o = cJSON_Parse(body);
    v = cJSON_GetObjectItemCaseSensitive(o, "Version");
    snprintf(engine.version, sizeof(engine.version), "%s",
             cJSON_IsString(v) ? v->valuestring : "?");
    engine.podman = 0;
    comp = cJSON_GetObjectItemCaseSensitive(o, "Components");
    cJSON_ArrayForEach(it, comp) {
        name = cJSON_GetObjectItemCaseSensitive(it, "Name");
        if (cJSON_IsString(name) && strstr(name->valuestring, "Podman")) {
            engine.podman = 1;
        }
    }
    cJSON_Delete(o);
}


static void
engine_away(const char *why)
{
    engine.ok = 0;
    snprintf(engine.note, sizeof(engine.note), "no container engine "
             "answers at %s (%s): start Docker, or Podman's service "
             "(podman system service -t 0 unix://%s), or set "
             "backends.container.socket in %s", engine_socket(), why,
             engine_socket(), conf->file);
}


static void
engine_on_ping(void *arg, long status, const char *body, size_t len,
    const char *why)
{
    (void) arg;
    (void) len;

    engine.ping = NULL;
    if (status == 200 && body != NULL) {
        if (!engine.ok) {
            engine_version_parse(body);
            log_info("container backend: %s %s answers at %s",
                     engine.podman ? "Podman" : "Docker", engine.version,
                     engine_socket());
        }
        engine.ok = 1;
        return;
    }
    if (engine.ok && status == 0 && why != NULL
        && strstr(why, "timed out") != NULL)
    {
        /* busy, not gone: a start waits for it anyway */
        log_debug("container backend: the engine is slow: %s", why);
        return;
    }
    if (engine.ok) {
        log_warnx("container backend: the engine at %s stopped answering "
                  "(%s)", engine_socket(), why && why[0] ? why : "no answer");
    }
    engine_away(why && why[0] ? why : "no answer");
}


/* our containers as the engine has them, at start */
static void
engine_list_ours(void)
{
    char          path[512], why[256], *body;
    cJSON        *o, *it;
    const cJSON  *id, *st;
    long          status;
    int           i = 0;

    free(known);
    known = NULL;
    n_known = 0;
    fmt(path, sizeof(path), "/containers/json?all=1&filters=%s",
        engine_escape("{\"label\":[\"dstack.tag="));
    /* engine_escape's buffer is static: the rest after */
    snprintf(path + strlen(path), sizeof(path) - strlen(path), "%s%s",
             engine.tag, "%22%5D%7D");
    status = engine_call_sync("GET", path, NULL, CT_VERSION_MS, &body, why,
                              sizeof(why));
    if (status != 200) {
        free(body);
        return;
    }
    o = cJSON_Parse(body);
    free(body);
    n_known = cJSON_GetArraySize(o);
    known = xcalloc(n_known ? n_known : 1, sizeof(struct known));
    cJSON_ArrayForEach(it, o) {
        id = cJSON_GetObjectItemCaseSensitive(it, "Id");
        st = cJSON_GetObjectItemCaseSensitive(it, "State");
        if (!cJSON_IsString(id)) {
            continue;
        }
        snprintf(known[i].id, sizeof(known[i].id), "%s", id->valuestring);
        known[i].running = cJSON_IsString(st)
                           && strcmp(st->valuestring, "running") == 0;
        i++;
    }
    n_known = i;
    cJSON_Delete(o);
}


static int
container_init(const struct backend_events *ev, char *err, size_t n)
{
    char      why[256], *body;
    long      status;
    uint8_t   digest[32];

    events = ev;
    if (!conf->container.enabled) {
        snprintf(engine.note, sizeof(engine.note), "the container backend "
                 "is off (backends.container.enabled in %s)", conf->file);
        return 0;
    }

    /* the same tag as the local backend's names: one per state */
    ds_sha256(conf->state_dir, strlen(conf->state_dir), digest);
    hex_encode(digest, 2, engine.tag);

    if (host_detect(&host, err, n) != 0) {
        return -1;
    }
    if (engine_init(conf->container.socket, err, n) != 0) {
        return -1;
    }

    /* at start, before the loop: one short question */
    status = engine_call_sync("GET", "/version", NULL, CT_VERSION_MS, &body,
                              why, sizeof(why));
    engine_on_ping(NULL, status, body, body ? strlen(body) : 0, why);
    free(body);
    if (engine.ok) {
        engine_list_ours();
    } else {
        log_info("container backend: %s", engine.note);
    }
    engine.next_ping_ms = now_ms() + CT_PING_MS;
    return 0;
}


/* ---- offers ------------------------------------------------------------- */

static int
container_offers(const ds_spec_t *sp, const char *name, int replicas,
    cJSON *offers, char *err, size_t n)
{
    (void) name;

    if (!conf->container.enabled) {
        snprintf(err, n, "spec.image: %s", engine.note);
        return 422;
    }
    if (!engine.ok) {
        snprintf(err, n, "spec.image: running an image needs a container "
                 "engine: %s", engine.note);
        return 422;
    }
    if (offers_placement(&host, sp, err, n) != 0) {
        return 422;
    }
    return offers_match(&host, sp, replicas, offers, err, n);
}


/* ---- the create request ------------------------------------------------- */

/* "python -m app --x 'a b'" -> words, as a shell would split them */
static cJSON *
ct_words(const char *s)
{
    cJSON   *a;
    char     w[4096];
    size_t   n;
    char     q;

    a = cJSON_CreateArray();
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == '\n') {
            s++;
        }
        if (*s == '\0') {
            break;
        }
        n = 0;
        q = 0;
        while (*s && (q || (*s != ' ' && *s != '\t' && *s != '\n'))) {
            if (q == 0 && (*s == '\'' || *s == '"')) {
                q = *s++;
                continue;
            }
            if (q != 0 && *s == q) {
                q = 0;
                s++;
                continue;
            }
            if (*s == '\\' && q != '\'' && s[1] != '\0') {
                s++;
            }
            if (n + 1 < sizeof(w)) {
                w[n++] = *s;
            }
            s++;
        }
        w[n] = '\0';
        cJSON_AddItemToArray(a, cJSON_CreateString(w));
    }
    return a;
}


static const char *
ct_workdir(const ds_spec_t *sp)
{
    return sp->working_dir ? sp->working_dir : CT_WORKDIR;
}


/* values: the spec's env values with their secrets (secrets_env) */
static void
ct_env(const struct replica *rep, char *const *values, cJSON *env)
{
    const ds_spec_t  *sp = &rep->run->spec;
    char              kv[8192], gpus[128], *p;
    size_t            i, off = 0, len;
    int               g;

    for (i = 0; i < sp->n_env; i++) {
        len = strlen(sp->env[i].name) + strlen(values[i]) + 2;
        p = xcalloc(1, len);
        snprintf(p, len, "%s=%s", sp->env[i].name, values[i]);
        cJSON_AddItemToArray(env, cJSON_CreateString(p));
        explicit_bzero(p, len);
        free(p);
    }
#define CT_ENV(k, f, ...)                                                     \
    do {                                                                      \
        fmt(kv, sizeof(kv), k "=" f, __VA_ARGS__);                           \
        cJSON_AddItemToArray(env, cJSON_CreateString(kv));                    \
    } while (0)
    CT_ENV("DSTACK_RUN_NAME", "%s", rep->run->name);
    CT_ENV("DSTACK_REPLICA_NUM", "%d", rep->num);
    CT_ENV("DSTACK_REPLICA_VERSION", "%d", rep->version);
    CT_ENV("DSTACK_NODES_NUM", "%d", 1);
    CT_ENV("DSTACK_NODE_RANK", "%d", 0);
    CT_ENV("DSTACK_PORT", "%u", (unsigned) sp->port);
    CT_ENV("DSTACK_GPUS_NUM", "%d", rep->n_gpus);
    CT_ENV("DSTACK_GPUS_PER_NODE", "%d", rep->n_gpus);
    gpus[0] = '\0';
    for (g = 0; g < rep->n_gpus && off < sizeof(gpus); g++) {
        off += snprintf(gpus + off, sizeof(gpus) - off, "%s%d", g ? "," : "",
                        rep->gpus[g]);
    }
    if (rep->n_gpus > 0 || host.n_gpus > 0) {
        /* the devices given are the container's; numbered from 0 */
        CT_ENV("NVIDIA_VISIBLE_DEVICES", "%s", rep->n_gpus ? gpus : "none");
    }
#undef CT_ENV
}


/* GPUs: Docker's device requests (NVIDIA's toolkit), Podman's CDI names */
static void
ct_gpus(const struct replica *rep, cJSON *hc)
{
    cJSON  *list, *req, *ids, *caps, *dev;
    char    name[64];
    int     i;

    if (rep->n_gpus == 0) {
        return;
    }
    if (rep->host[0] ? rep->engine_podman : engine.podman) {
        list = cJSON_AddArrayToObject(hc, "Devices");
        for (i = 0; i < rep->n_gpus; i++) {
            fmt(name, sizeof(name), "nvidia.com/gpu=%d", rep->gpus[i]);
            dev = cJSON_CreateObject();
            cJSON_AddStringToObject(dev, "PathOnHost", name);
            cJSON_AddStringToObject(dev, "PathInContainer", "");
            cJSON_AddStringToObject(dev, "CgroupPermissions", "rwm");
            cJSON_AddItemToArray(list, dev);
        }
        return;
    }
    list = cJSON_AddArrayToObject(hc, "DeviceRequests");
    req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "Driver", "nvidia");
    ids = cJSON_AddArrayToObject(req, "DeviceIDs");
    for (i = 0; i < rep->n_gpus; i++) {
        fmt(name, sizeof(name), "%d", rep->gpus[i]);
        cJSON_AddItemToArray(ids, cJSON_CreateString(name));
    }
    caps = cJSON_AddArrayToObject(req, "Capabilities");
    cJSON_AddItemToArray(caps, cJSON_CreateStringArray(
        (const char *[]) { "gpu" }, 1));
    cJSON_AddItemToArray(list, req);
}


/* volumes as the engine's binds: "/host:/path[:ro]", "name:/path[:ro]"
 * (a named local volume, made by the engine when it is new); an
 * optional instance volume whose host path is missing is left out */
static cJSON *
ct_binds(const ds_spec_t *sp)
{
    cJSON        *a;
    struct stat   sb;
    char          bind[8300];
    size_t        i;

    a = cJSON_CreateArray();
    for (i = 0; i < sp->n_volumes; i++) {
        const ds_spec_volume_t  *v = &sp->volumes[i];

        if (v->kind == DS_SPEC_VOLUME_INSTANCE && v->optional
            && stat(v->host_path, &sb) != 0)
        {
            continue;
        }
        fmt(bind, sizeof(bind), "%s:%s%s",
            v->kind == DS_SPEC_VOLUME_NAMED ? v->name : v->host_path,
            v->path, v->read_only ? ":ro" : "");
        cJSON_AddItemToArray(a, cJSON_CreateString(bind));
    }
    return a;
}


/* a required instance volume must exist on the host: "" or why not */
static const char *
ct_volumes_missing(const ds_spec_t *sp)
{
    static char   why[4200];
    struct stat   sb;
    size_t        i;

    for (i = 0; i < sp->n_volumes; i++) {
        const ds_spec_volume_t  *v = &sp->volumes[i];

        if (v->kind == DS_SPEC_VOLUME_INSTANCE && !v->optional
            && stat(v->host_path, &sb) != 0)
        {
            fmt(why, sizeof(why), "volume %s: the instance path %s does "
                "not exist on the host (create it, or mark the volume "
                "optional)", v->path, v->host_path);
            return why;
        }
    }
    return "";
}


static char *
ct_create_body(const struct replica *rep, char *const *values)
{
    const ds_spec_t  *sp = &rep->run->spec;
    cJSON            *o, *hc, *labels, *pb, *b, *ports;
    char              port[32], num[32], *script, *text;

    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "Image", sp->image);
    if (sp->n_commands > 0) {
        script = spec_script(sp);
        if (sp->entrypoint != NULL) {
            cJSON_AddItemToObject(o, "Entrypoint", ct_words(sp->entrypoint));
        } else {
            cJSON_AddItemToObject(o, "Entrypoint", cJSON_CreateStringArray(
                (const char *[]) { sp->shell ? sp->shell : "/bin/sh", "-c" },
                2));
        }
        cJSON_AddItemToObject(o, "Cmd", cJSON_CreateStringArray(
            (const char *[]) { script }, 1));
        free(script);
    } else if (sp->entrypoint != NULL) {
        cJSON_AddItemToObject(o, "Entrypoint", ct_words(sp->entrypoint));
    }
    ct_env(rep, values, cJSON_AddArrayToObject(o, "Env"));
    cJSON_AddStringToObject(o, "WorkingDir", ct_workdir(sp));
    if (sp->user != NULL) {
        cJSON_AddStringToObject(o, "User", sp->user);
    }

    labels = cJSON_AddObjectToObject(o, "Labels");
    cJSON_AddStringToObject(labels, "dstack.tag", engine.tag);
    cJSON_AddStringToObject(labels, "dstack.run", rep->run->name);
    fmt(num, sizeof(num), "%d", rep->num);
    cJSON_AddStringToObject(labels, "dstack.replica", num);
    fmt(num, sizeof(num), "%d", rep->version);
    cJSON_AddStringToObject(labels, "dstack.version", num);

    fmt(port, sizeof(port), "%u/tcp", (unsigned) sp->port);
    ports = cJSON_AddObjectToObject(o, "ExposedPorts");
    cJSON_AddItemToObject(ports, port, cJSON_CreateObject());

    hc = cJSON_AddObjectToObject(o, "HostConfig");
    pb = cJSON_AddObjectToObject(hc, "PortBindings");
    b = cJSON_CreateObject();
    /* on a fleet host: every address of it ("", not "0.0.0.0", which
     * netavark before 1.6 takes literally); here: loopback */
    cJSON_AddStringToObject(b, "HostIp", rep->host[0] ? "" : "127.0.0.1");
    cJSON_AddStringToObject(b, "HostPort", "");
    cJSON_AddItemToObject(pb, port, cJSON_CreateArray());
    cJSON_AddItemToArray(cJSON_GetObjectItem(pb, port), b);
    if (sp->privileged) {
        cJSON_AddBoolToObject(hc, "Privileged", 1);
    }
    if (sp->n_volumes > 0) {
        cJSON_AddItemToObject(hc, "Binds", ct_binds(sp));
    }
    if (sp->resources.shm_size_mb) {
        cJSON_AddNumberToObject(hc, "ShmSize",
                                (double) sp->resources.shm_size_mb
                                * 1024 * 1024);
    }
    ct_gpus(rep, hc);

    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}


/* ---- starting: one step per answer -------------------------------------- */

static void
ct_on_answer(void *arg, long status, const char *body, size_t len,
    const char *why);


static void
ct_send(struct ct *c, const char *method, const char *path,
    const char *ctype, const void *body, size_t len, engine_data_fn on_data)
{
    c->req = engine_call_on(c->rep->engine_sock, method, path, ctype, body,
                            len, CT_REQ_MS, on_data, ct_on_answer, c);
    if (c->req == NULL) {
        ct_fail(c, "container engine: cannot send the request (out of "
                "memory)");
    }
}


/* the pull's answer, JSON lines: progress, or an error */
static void
ct_on_pull_line(struct ct *c, const char *line)
{
    cJSON        *o;
    const cJSON  *e, *d, *cur, *tot, *st;
    char          msg[128];

    o = cJSON_Parse(line);
    if (o == NULL) {
        return;
    }
    e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (cJSON_IsString(e)) {
        snprintf(c->pull_error, sizeof(c->pull_error), "%s",
                 e->valuestring);
    }
    st = cJSON_GetObjectItemCaseSensitive(o, "status");
    d = cJSON_GetObjectItemCaseSensitive(o, "progressDetail");
    cur = cJSON_GetObjectItemCaseSensitive(d, "current");
    tot = cJSON_GetObjectItemCaseSensitive(d, "total");
    if (cJSON_IsNumber(cur) && cJSON_IsNumber(tot) && tot->valuedouble > 0) {
        fmt(msg, sizeof(msg), "%s %.1f of %.1f MB",
            cJSON_IsString(st) ? st->valuestring : "", cur->valuedouble / 1e6,
            tot->valuedouble / 1e6);
        events->pulling(c->rep, msg);
    } else if (cJSON_IsString(st)) {
        fmt(msg, sizeof(msg), "%.100s", st->valuestring);
        events->pulling(c->rep, msg);
    }
    cJSON_Delete(o);
}


static void
ct_on_pull_data(void *arg, const char *data, size_t len)
{
    struct ct  *c = arg;
    size_t      i;

    for (i = 0; i < len; i++) {
        if (data[i] == '\n' || c->line_len + 1 >= sizeof(c->line)) {
            c->line[c->line_len] = '\0';
            ct_on_pull_line(c, c->line);
            c->line_len = 0;
            continue;
        }
        c->line[c->line_len++] = data[i];
    }
}


/* X-Registry-Auth: base64url of {"username","password"}, secrets
 * resolved; never logged.  NULL without registry_auth, or with a
 * message in why */
static char *
ct_registry_auth(const char *pkey, const ds_spec_t *sp, char *why,
    size_t wn)
{
    static const char  b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
                               "qrstuvwxyz0123456789-_";
    cJSON                *o;
    char                 *json, *out, *user, *pass;
    size_t                i, n, o_len = 0;
    const unsigned char  *p;
    unsigned              v;

    if (sp->registry_auth.username == NULL) {
        return NULL;
    }
    if (secrets_expand(pkey, "registry_auth.username",
                       sp->registry_auth.username, &user, why, wn) != 0)
    {
        return NULL;
    }
    if (secrets_expand(pkey, "registry_auth.password",
                       sp->registry_auth.password, &pass, why, wn) != 0)
    {
        secrets_free(user);
        return NULL;
    }
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "username", user);
    cJSON_AddStringToObject(o, "password", pass);
    secrets_free(user);
    secrets_free(pass);
    json = cJSON_PrintUnformatted(o);
    /* cJSON_Delete does not wipe: the copies go first */
    explicit_bzero(cJSON_GetObjectItem(o, "username")->valuestring,
                   strlen(cJSON_GetObjectItem(o, "username")->valuestring));
    explicit_bzero(cJSON_GetObjectItem(o, "password")->valuestring,
                   strlen(cJSON_GetObjectItem(o, "password")->valuestring));
    cJSON_Delete(o);
    if (json == NULL) {
        return NULL;
    }
    n = strlen(json);
    out = xcalloc(1, (n + 2) / 3 * 4 + 1);
    p = (const unsigned char *) json;
    for (i = 0; i + 2 < n; i += 3) {
        v = (unsigned) p[i] << 16 | (unsigned) p[i + 1] << 8 | p[i + 2];
        out[o_len++] = b64[v >> 18];
        out[o_len++] = b64[(v >> 12) & 63];
        out[o_len++] = b64[(v >> 6) & 63];
        out[o_len++] = b64[v & 63];
    }
    if (i < n) {
        v = (unsigned) p[i] << 16 | (i + 1 < n ? (unsigned) p[i + 1] << 8 : 0);
        out[o_len++] = b64[v >> 18];
        out[o_len++] = b64[(v >> 12) & 63];
        if (i + 1 < n) {
            out[o_len++] = b64[(v >> 6) & 63];
        }
    }
    explicit_bzero(json, n);
    free(json);
    return out;
}


static void
ct_pull(struct ct *c)
{
    const ds_spec_t  *sp = &c->rep->run->spec;
    char              path[1200], why[512], *auth;

    c->step = CT_PULL;
    c->pull_error[0] = '\0';
    c->line_len = 0;
    events->pulling(c->rep, NULL);
    fmt(path, sizeof(path), "/images/create?fromImage=%s",
        engine_escape(sp->image));
    why[0] = '\0';
    auth = ct_registry_auth(c->rep->run->project, sp, why, sizeof(why));
    if (auth == NULL && why[0] != '\0') {
        ct_fail(c, "%s", why);
        return;
    }
    c->req = engine_call_auth_on(c->rep->engine_sock, "POST", path, auth, 0,
                                 ct_on_pull_data,
                              ct_on_answer, c);
    if (auth != NULL) {
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
    if (c->req == NULL) {
        ct_fail(c, "container engine: cannot send the request");
    }
}


/* a tar with one directory entry: the working directory, made before
 * the code goes in (the archive endpoint wants an existing directory) */
static size_t
ct_mkdir_tar(const char *dir, char *tar, size_t n)
{
    unsigned  sum = 0;
    size_t    i;
    char     *h = tar;

    if (n < 1536 || strlen(dir) > 98) {
        return 0;
    }
    memset(tar, 0, 1536);
    while (*dir == '/') {
        dir++;
    }
    snprintf(h, 100, "%s/", dir);
    memcpy(h + 100, "0000755", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    memcpy(h + 124, "00000000000", 12);
    memcpy(h + 136, "00000000000", 12);
    memset(h + 148, ' ', 8);
    h[156] = '5';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    for (i = 0; i < 512; i++) {
        sum += (unsigned char) h[i];
    }
    snprintf(h + 148, 8, "%06o", sum);
    h[155] = ' ';
    return 1536;
}


/* an archive of the state's code directory into the container at dir */
static void
ct_copy_archive(struct ct *c, const char *hash, const char *dir)
{
    char         path[4200], file[4096], *data;
    struct stat  sb;
    ssize_t      got;
    int          fd;

    if (code_path(hash, file, sizeof(file)) != 0
        || (fd = open(file, O_RDONLY | O_CLOEXEC)) < 0)
    {
        ct_fail(c, "archive %s: %s", hash, strerror(errno));
        return;
    }
    if (fstat(fd, &sb) != 0 || sb.st_size > CT_CODE_MAX) {
        close(fd);
        ct_fail(c, "archive %s: not a readable archive", hash);
        return;
    }
    data = malloc(sb.st_size ? (size_t) sb.st_size : 1);
    got = data ? read(fd, data, (size_t) sb.st_size) : -1;
    close(fd);
    if (got != (ssize_t) sb.st_size) {
        free(data);
        ct_fail(c, "archive %s: cannot read it", hash);
        return;
    }
    fmt(path, sizeof(path), "/containers/%s/archive?path=%s",
        c->rep->container, engine_escape(dir));
    ct_send(c, "PUT", path, "application/x-tar", data, (size_t) got, NULL);
    free(data);
}


/* after the code (or without it): the files, else the start */
static void
ct_after_code(struct ct *c)
{
    if (c->rep->run->files[0]) {
        c->step = CT_FILES;
        ct_copy_archive(c, c->rep->run->files, "/");
        return;
    }
    c->step = CT_START;
    ct_step(c);
}


/* the create's answer says the name is taken: Docker answers 409,
 * Podman 500 with "is already in use" */
static int
ct_name_taken(long status, const char *body, size_t len)
{
    return status == 409
           || (status == 500 && body != NULL
               && memmem(body, len, "already in use", 14) != NULL);
}


/* a step's answer: on to step `next` when ok, else the start fails
 * with the engine's words */
static void
ct_then(struct ct *c, int ok, const char *body, size_t len,
    const char *what, int next)
{
    char  err[512];

    if (!ok) {
        ct_engine_error(body, len, err, sizeof(err));
        ct_fail(c, "cannot %s: %s", what, err);
        return;
    }
    c->step = next;
    ct_step(c);
}


static void
ct_next(struct ct *c, long status, const char *body, size_t len)
{
    struct replica  *rep = c->rep;
    char             path[512], err[512], name[256], tar[1536];
    cJSON           *o;
    const cJSON     *v, *ports, *b;
    size_t           n;

    switch (c->step) {

    case CT_IMAGE:
        if (status == 404) {
            ct_pull(c);
            return;
        }
        if (status != 200) {
            ct_engine_error(body, len, err, sizeof(err));
            ct_fail(c, "image %s: %s", rep->run->spec.image, err);
            return;
        }
        c->step = CT_CREATE;
        ct_step(c);
        return;

    case CT_PULL:
        if (status != 200 || c->pull_error[0]) {
            if (!c->pull_error[0]) {
                ct_engine_error(body, len, c->pull_error,
                                sizeof(c->pull_error));
            }
            ct_fail(c, "cannot pull %s: %s", rep->run->spec.image,
                    c->pull_error);
            return;
        }
        c->step = CT_CREATE;
        ct_step(c);
        return;

    case CT_CLEAR:
        /* gone, or never there: the create again says which */
        c->step = CT_CREATE;
        ct_step(c);
        return;

    case CT_CREATE:
        if (!c->retried && ct_name_taken(status, body, len)) {
            /* a container of that name: left by a crash; it goes */
            c->retried = 1;
            c->step = CT_CLEAR;
            ct_name(rep, name, sizeof(name));
            fmt(path, sizeof(path), "/containers/%s?force=1", name);
            ct_send(c, "DELETE", path, NULL, NULL, 0, NULL);
            return;
        }
        if (status != 201) {
            ct_engine_error(body, len, err, sizeof(err));
            ct_fail(c, "cannot create the container: %s", err);
            return;
        }
        o = cJSON_ParseWithLength(body, len);
        v = cJSON_GetObjectItemCaseSensitive(o, "Id");
        if (!cJSON_IsString(v)) {
            cJSON_Delete(o);
            ct_fail(c, "cannot create the container: no Id in the answer");
            return;
        }
        snprintf(rep->container, sizeof(rep->container), "%s",
                 v->valuestring);
        rep->run->dirty = 1;
        cJSON_Delete(o);
        if (rep->run->code[0] == '\0') {
            ct_after_code(c);
            return;
        }
        c->step = CT_MKDIR;
        n = ct_mkdir_tar(ct_workdir(&rep->run->spec), tar, sizeof(tar));
        fmt(path, sizeof(path), "/containers/%s/archive?path=%%2F",
            rep->container);
        ct_send(c, "PUT", path, "application/x-tar", tar, n, NULL);
        return;

    case CT_MKDIR:
    case CT_CODE:
        if (status != 200) {
            ct_engine_error(body, len, err, sizeof(err));
            ct_fail(c, "cannot copy the code into %s: %s",
                    ct_workdir(&rep->run->spec), err);
            return;
        }
        if (c->step == CT_MKDIR) {
            c->step = CT_CODE;
            ct_copy_archive(c, rep->run->code, ct_workdir(&rep->run->spec));
            return;
        }
        ct_after_code(c);
        return;

    case CT_FILES:
        ct_then(c, status == 200, body, len, "copy the files into the "
                "container", CT_START);
        return;

    case CT_START:
        ct_then(c, status == 204 || status == 304, body, len,
                "start the container", CT_INSPECT);
        return;

    case CT_INSPECT:
        if (status != 200) {
            ct_engine_error(body, len, err, sizeof(err));
            ct_fail(c, "cannot inspect the container: %s", err);
            return;
        }
        o = cJSON_ParseWithLength(body, len);
        fmt(name, sizeof(name), "%u/tcp", (unsigned) rep->run->spec.port);
        ports = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(o, "NetworkSettings"), "Ports");
        b = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ports, name),
                               0);
        v = cJSON_GetObjectItemCaseSensitive(b, "HostPort");
        if (!cJSON_IsString(v) || v->valuestring[0] == '\0') {
            cJSON_Delete(o);
            ct_fail(c, "the container publishes no port for %s", name);
            return;
        }
        fmt(rep->addr, sizeof(rep->addr),
            strchr(rep->inner, ':') ? "[%s]:%s" : "%s:%s",
            rep->host[0] ? rep->inner : "127.0.0.1", v->valuestring);
        v = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(o, "State"), "Pid");
        rep->pid = cJSON_IsNumber(v) ? (pid_t) v->valueint : 0;
        rep->pid_start = 0;
        cJSON_Delete(o);
        c->step = CT_RUNNING;
        ct_step(c);
        return;
    }
}


static void
ct_on_answer(void *arg, long status, const char *body, size_t len,
    const char *why)
{
    struct ct  *c = arg;

    c->req = NULL;
    if (status == 0) {
        ct_fail(c, "container engine at %s: %s", engine_socket(), why);
        return;
    }
    ct_next(c, status, body, len);
}


/* ---- a running container: its logs and its end -------------------------- */

/* the logs' stream: frames of an 8-byte header (stream, size) and bytes */
static void
ct_on_logs(void *arg, const char *data, size_t len)
{
    struct ct  *c = arg;
    size_t      n;

    while (len > 0) {
        if (c->frame_left == 0) {
            n = 8 - c->hdr_len;
            n = n < len ? n : len;
            memcpy(c->hdr + c->hdr_len, data, n);
            c->hdr_len += n;
            data += n;
            len -= n;
            if (c->hdr_len == 8) {
                c->frame_left = (size_t) c->hdr[4] << 24
                                | (size_t) c->hdr[5] << 16
                                | (size_t) c->hdr[6] << 8 | c->hdr[7];
                c->hdr_len = 0;
            }
            continue;
        }
        n = c->frame_left < len ? c->frame_left : len;
        if (c->log_fd >= 0 && write(c->log_fd, data, n) < 0) {
            /* a full disk: the replica runs on, its log misses lines */
        }
        c->frame_left -= n;
        data += n;
        len -= n;
    }
}


static void
ct_on_logs_end(void *arg, long status, const char *body, size_t len,
    const char *why)
{
    struct ct  *c = arg;

    (void) status;
    (void) body;
    (void) len;
    (void) why;
    c->logs = NULL;
}


static void
ct_on_wait(void *arg, long status, const char *body, size_t len,
    const char *why)
{
    struct ct    *c = arg;
    cJSON        *o;
    const cJSON  *code;

    c->wait = NULL;
    if (status != 200) {
        /* the engine went away or lost the container: ended, unknown */
        log_warnx("run \"%s\": replica %d v%d: waiting for its container: "
                  "%s", c->rep->run->name, c->rep->num, c->rep->version,
                  status ? "no such container" : why);
        c->exit_status = -1;
    } else {
        o = cJSON_ParseWithLength(body, len);
        code = cJSON_GetObjectItemCaseSensitive(o, "StatusCode");
        c->exit_status = cJSON_IsNumber(code)
                         ? ct_wait_status((long) code->valuedouble) : -1;
        cJSON_Delete(o);
    }
    c->step = CT_ENDED;
    c->report = 1;
}


static void
ct_watch(struct ct *c, int since_now)
{
    struct replica  *rep = c->rep;
    char             path[512], file[4096];

    if (c->log_fd < 0 && replica_log_path(rep, file, sizeof(file)) == 0) {
        c->log_fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                         0640);
    }
    fmt(path, sizeof(path), "/containers/%s/logs?follow=1&stdout=1&stderr=1"
        "%s%lld", rep->container, since_now ? "&since=" : "",
        since_now ? (long long) time(NULL) : 0LL);
    if (!since_now) {
        fmt(path, sizeof(path), "/containers/%s/logs?follow=1&stdout=1"
            "&stderr=1", rep->container);
    }
    c->logs = engine_call_on(rep->engine_sock, "GET", path, NULL, NULL, 0, 0,
                             ct_on_logs, ct_on_logs_end, c);
    fmt(path, sizeof(path), "/containers/%s/wait?condition=not-running",
        rep->container);
    c->wait = engine_call_on(rep->engine_sock, "POST", path, NULL, NULL, 0,
                             0, NULL, ct_on_wait, c);
}


/*
 * What the create body asks of GPUs, for the debug log (the body itself
 * holds secrets): "GPUs nvidia.com/gpu=0 (NVIDIA_VISIBLE_DEVICES=0)".
 */
static void
ct_gpus_text(const struct replica *rep, char *buf, size_t size)
{
    size_t  off;
    int     i, podman;

    if (rep->n_gpus == 0) {
        fmt(buf, size, "no GPUs");
        return;
    }
    podman = rep->host[0] ? rep->engine_podman : engine.podman;
    off = (size_t) snprintf(buf, size, "GPUs");
    for (i = 0; i < rep->n_gpus && off < size; i++) {
        off += (size_t) snprintf(buf + off, size - off, "%s%s%d",
                                 i ? "," : " ",
                                 podman ? "nvidia.com/gpu=" : "device ",
                                 rep->gpus[i]);
    }
    for (i = 0; i < rep->n_gpus && off < size; i++) {
        off += (size_t) snprintf(buf + off, size - off, "%s%d",
                                 i ? "," : " (NVIDIA_VISIBLE_DEVICES=",
                                 rep->gpus[i]);
    }
    if (off < size) {
        snprintf(buf + off, size - off, ")");
    }
}


/* makes the request of the step c is at */
static void
ct_step(struct ct *c)
{
    struct replica  *rep = c->rep;
    char             path[1200], name[256], why[512], *body, **env;

    switch (c->step) {

    case CT_IMAGE:
        fmt(path, sizeof(path), "/images/%s/json",
            engine_escape(rep->run->spec.image));
        ct_send(c, "GET", path, NULL, NULL, 0, NULL);
        return;

    case CT_CREATE:
        ct_name(rep, name, sizeof(name));
        fmt(path, sizeof(path), "/containers/create?name=%s", name);
        /* the secrets as they are now; the body holds their values, so
         * it is not logged and is wiped */
        if (secrets_env(rep->run->project, rep->run->spec.env, rep->run->spec.n_env, &env,
                        why, sizeof(why)) != 0)
        {
            ct_fail(c, "%s", why);
            return;
        }
        body = ct_create_body(rep, env);
        secrets_env_free(env, rep->run->spec.n_env);
        ct_gpus_text(rep, why, sizeof(why));
        log_debug("run \"%s\": replica %d v%d: create %s (%zu bytes; %s)",
                  rep->run->name, rep->num, rep->version, name,
                  strlen(body), why);
        ct_send(c, "POST", path, NULL, body, strlen(body), NULL);
        explicit_bzero(body, strlen(body));
        free(body);
        return;

    case CT_START:
        fmt(path, sizeof(path), "/containers/%s/start", rep->container);
        ct_send(c, "POST", path, NULL, NULL, 0, NULL);
        return;

    case CT_INSPECT:
        fmt(path, sizeof(path), "/containers/%s/json", rep->container);
        ct_send(c, "GET", path, NULL, NULL, 0, NULL);
        return;

    case CT_RUNNING:
        ct_watch(c, 0);
        if (c->stop_sig) {
            /* asked to stop while it started */
            fmt(path, sizeof(path), "/containers/%s/kill?signal=%s",
                rep->container, c->stop_sig == SIGKILL ? "SIGKILL"
                                                       : "SIGTERM");
            engine_call_on(rep->engine_sock, "POST", path, NULL, NULL, 0,
                           CT_REQ_MS, NULL, NULL, NULL);
            return;
        }
        events->setup_done(rep, NULL);
        return;
    }
}


/* ---- the backend's operations ------------------------------------------- */

static struct ct *
ct_new(struct replica *rep)
{
    struct ct  *c;

    c = xcalloc(1, sizeof(*c));
    c->rep = rep;
    c->log_fd = -1;
    LIST_INSERT_HEAD(&cts, c, entry);
    return c;
}


static int
container_start(struct replica *rep)
{
    struct ct  *c;
    char        dir[4096], **env;

    if (rep->host[0] == '\0') {
        /* this host's engine; a fleet host's was checked (backend_ssh.c)
         * and gave its GPUs */
        if (!engine.ok) {
            fmt(rep->message, sizeof(rep->message), "%.250s", engine.note);
            return BACKEND_FAILED;
        }
        rep->n_gpus = 0;
        rep->engine_sock[0] = '\0';
    }
    if (rep->host[0] == '\0' && gpus_per_replica(&rep->run->spec) > 0
        && gpus_assign(&host, rep) != 0)
    {
        snprintf(rep->message, sizeof(rep->message),
                 "waiting for a free GPU");
        return BACKEND_WAIT;
    }
    if (fmt(dir, sizeof(dir), "%s/%s", conf->replicas_dir, rep->run->name)
        != 0 || mkdir_p(dir, 0750) != 0)
    {
        fmt(rep->message, sizeof(rep->message), "cannot create %.160s: %s",
            dir, strerror(errno));
        return BACKEND_FAILED;
    }
    if (rep->host[0] == '\0'
        && ct_volumes_missing(&rep->run->spec)[0] != '\0')
    {
        fmt(rep->message, sizeof(rep->message), "%.250s",
            ct_volumes_missing(&rep->run->spec));
        rep->n_gpus = 0;
        return BACKEND_FAILED;
    }
    /* a secret it names that is gone fails it now (they are read again
     * at the pull and the create) */
    if (secrets_env(rep->run->project, rep->run->spec.env, rep->run->spec.n_env, &env,
                    rep->message, sizeof(rep->message)) != 0)
    {
        if (rep->host[0] == '\0') {
            rep->n_gpus = 0;
        }
        return BACKEND_FAILED;
    }
    secrets_env_free(env, rep->run->spec.n_env);
    rep->container[0] = '\0';
    rep->addr[0] = '\0';
    rep->pid = 0;
    rep->adopted = 0;
    c = ct_new(rep);
    c->step = CT_IMAGE;
    ct_step(c);
    return BACKEND_STARTED;
}


static void
container_stop(struct replica *rep, int force)
{
    struct ct  *c = ct_of(rep);
    char        path[512];

    if (c == NULL || c->step == CT_ENDED) {
        return;
    }
    if (c->step < CT_RUNNING) {
        /* starting: it ends when the start's step answers */
        c->stop_sig = force ? SIGKILL : SIGTERM;
        if (c->req != NULL && c->step != CT_START && c->step != CT_INSPECT)
        {
            engine_cancel(c->req);
            c->req = NULL;
            c->step = CT_ENDED;
            c->exit_status = force ? SIGKILL : SIGTERM;
            c->report = 1;
        }
        return;
    }
    fmt(path, sizeof(path), "/containers/%s/kill?signal=%s", rep->container,
        force ? "SIGKILL" : "SIGTERM");
    engine_call_on(rep->engine_sock, "POST", path, NULL, NULL, 0, CT_REQ_MS,
                   NULL, NULL, NULL);
}


static int
known_running(const char *id)
{
    int  i;

    for (i = 0; i < n_known; i++) {
        if (strcmp(known[i].id, id) == 0) {
            known[i].claimed = 1;
            return known[i].running;
        }
    }
    return 0;
}


/*
 * Re-adoption: a container of an earlier controld that still runs is
 * watched again (its logs from now on, its end); then, still running
 * until its wait answers.
 */
static int
container_alive(struct replica *rep)
{
    struct ct  *c = ct_of(rep);

    if (c != NULL) {
        return c->step != CT_ENDED;
    }
    if (rep->container[0] == '\0') {
        return 0;
    }
    /* on a fleet host: its engine's wait tells if it is gone */
    if (rep->host[0] == '\0'
        && (!engine.ok || !known_running(rep->container)))
    {
        return 0;
    }
    c = ct_new(rep);
    c->step = CT_RUNNING;
    ct_watch(c, 1);
    rep->adopted = 0;       /* watched as our own from now on */
    return 1;
}


static void
container_release(struct replica *rep, int final)
{
    struct ct  *c = ct_of(rep);
    char        path[512];

    (void) final;

    if (c != NULL) {
        engine_cancel(c->req);
        engine_cancel(c->wait);
        engine_cancel(c->logs);
        if (c->log_fd >= 0) {
            close(c->log_fd);
        }
        LIST_REMOVE(c, entry);
        free(c);
    }
    if (rep->container[0]) {
        fmt(path, sizeof(path), "/containers/%s?force=1", rep->container);
        engine_call_on(rep->engine_sock, "DELETE", path, NULL, NULL, 0,
                       CT_REQ_MS, NULL, NULL, NULL);
        rep->container[0] = '\0';
    }
    rep->pid = 0;
    rep->n_gpus = 0;
    rep->host[0] = '\0';
    rep->engine_sock[0] = '\0';
}


/* its fleet host is lost: forget it without asking the engine there
 * (backend_ssh.c reports the end; release() follows) */
void
container_forget(struct replica *rep)
{
    struct ct  *c = ct_of(rep);

    if (c != NULL) {
        engine_cancel(c->req);
        engine_cancel(c->wait);
        engine_cancel(c->logs);
        c->req = c->wait = c->logs = NULL;
        c->step = CT_ENDED;
        c->report = 0;
    }
}


/* the containers of ours on a fleet host's engine that no replica has */
static void
host_gc_answer(void *arg, long status, const char *body, size_t len,
    const char *why)
{
    char            *host_id = arg, *sock, path[512];
    cJSON           *list, *it;
    struct run      *r;
    struct replica  *rep;
    const char      *id;
    int              mine;

    (void) len;
    (void) why;
    sock = host_id + strlen(host_id) + 1;
    list = status == 200 ? cJSON_Parse(body) : NULL;
    cJSON_ArrayForEach(it, list) {
        id = cJSON_GetStringValue(cJSON_GetObjectItem(it, "Id"));
        if (id == NULL) {
            continue;
        }
        mine = 0;
        TAILQ_FOREACH(r, &runs, entry) {
            TAILQ_FOREACH(rep, &r->replicas, entry) {
                mine |= rep->active && strcmp(rep->host, host_id) == 0
                        && strncmp(rep->container, id,
                                   strlen(rep->container)) == 0
                        && rep->container[0] != '\0';
            }
        }
        if (!mine) {
            log_info("fleet host %s: removing container %.12s, which no "
                     "replica has", host_id, id);
            fmt(path, sizeof(path), "/containers/%s?force=1", id);
            engine_call_on(sock, "DELETE", path, NULL, NULL, 0, CT_REQ_MS,
                           NULL, NULL, NULL);
        }
    }
    cJSON_Delete(list);
    free(host_id);
}


void
container_host_gc(const char *host_id, const char *sock)
{
    char    path[512], *arg;
    size_t  a = strlen(host_id), b = strlen(sock);
    char    filter[128];

    fmt(filter, sizeof(filter), "{\"label\":[\"dstack.tag=%s\"]}",
        engine.tag);
    fmt(path, sizeof(path), "/containers/json?all=1&filters=%s",
        engine_escape(filter));
    arg = xcalloc(1, a + b + 2);
    memcpy(arg, host_id, a);
    memcpy(arg + a + 1, sock, b);
    if (engine_call_on(sock, "GET", path, NULL, NULL, 0, CT_REQ_MS, NULL,
                       host_gc_answer, arg) == NULL)
    {
        free(arg);
    }
}


/* after re-adoption: our containers no replica owns go */
static void
container_gc(void)
{
    char  path[512];
    int   i;

    for (i = 0; i < n_known; i++) {
        if (known[i].claimed) {
            continue;
        }
        log_info("container backend: removing leftover container %.12s",
                 known[i].id);
        fmt(path, sizeof(path), "/containers/%s?force=1", known[i].id);
        engine_call("DELETE", path, NULL, NULL, 0, CT_REQ_MS, NULL, NULL,
                    NULL);
    }
    free(known);
    known = NULL;
    n_known = 0;
}


static const char *
container_gpu_name(const struct replica *rep, int index)
{
    (void) rep;
    return offers_gpu_name(&host, index);
}


static const char *
container_network(void)
{
    return "container";
}


static int
container_side_by_side(void)
{
    return 1;
}


static int
container_fill(struct pollfd *pfd, int max)
{
    return engine_fill(pfd, max);
}


/* ends reported at the loop's turn; the engine asked after while away */
static void
container_process(struct pollfd *pfd, int n)
{
    struct ct  *c;
    int         again;

    engine_process(pfd, n);

    do {
        again = 0;
        LIST_FOREACH(c, &cts, entry) {
            if (c->report) {
                c->report = 0;
                /* the reconciler releases it: c is gone after this */
                events->exited(c->rep, c->exit_status);
                again = 1;
                break;
            }
        }
    } while (again);

    if (conf->container.enabled && engine.ping == NULL
        && now_ms() >= engine.next_ping_ms)
    {
        engine.next_ping_ms = now_ms() + CT_PING_MS;
        engine.ping = engine_call("GET", "/version", NULL, NULL, 0,
                                  CT_PING_TIMEOUT_MS, NULL, engine_on_ping,
                                  NULL);
    }
}


static int
container_timeout_ms(void)
{
    struct ct  *c;

    LIST_FOREACH(c, &cts, entry) {
        if (c->report) {
            return 0;
        }
    }
    return engine_timeout_ms();
}


const struct backend_ops  backend_container = {
    .name = "container",
    .init = container_init,
    .offers = container_offers,
    .start = container_start,
    .stop = container_stop,
    .alive = container_alive,
    .release = container_release,
    .reap = NULL,
    .gc = container_gc,
    .gpu_name = container_gpu_name,
    .network = container_network,
    .side_by_side = container_side_by_side,
    .fill = container_fill,
    .process = container_process,
    .timeout_ms = container_timeout_ms,
};
