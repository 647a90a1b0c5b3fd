/*
 * SSH fleets: the API's plan, apply, list, get and delete, the fleet
 * documents in LMDB, the private keys they came with, and the views of
 * fleets and hosts.  Connections are hosts.c's; replicas backend_ssh.c's.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "config.h"
#include "ds_fleet.h"
#include "fleets.h"
#include "hosts.h"
#include "log.h"
#include "run.h"
#include "secrets.h"
#include "store.h"
#include "util.h"

#define KEY_MAX         (16 * 1024)
#define FLEET_LINGER_MS 3000    /* a deleted fleet's last releases */

struct fleet_list  fleets = TAILQ_HEAD_INITIALIZER(fleets);


/* ---- paths ---------------------------------------------------------------- */

static void
ssh_dir(char *buf, size_t n)
{
    fmt(buf, n, "%s/ssh", conf->state_dir);
}


static void
key_path(const char *sha, char *buf, size_t n)
{
    fmt(buf, n, "%s/ssh/keys/%s.key", conf->state_dir, sha);
}


#define SOCK_DIR_FALLBACK   "/run/dstack-controld"

int
fleet_sock_path(const char *prefix, const char *id, char *buf, size_t n)
{
    uint8_t  d[32];
    char     hex[65];

    ds_sha256(id, strlen(id), d);
    hex_encode(d, 6, hex);
    if (n > 108) {
        n = 108;            /* a unix socket's path */
    }
    if (fmt(buf, n, "%s/ssh/%s-%s", conf->state_dir, prefix, hex) == 0) {
        return 0;
    }
    /* never /tmp: another user could be there first */
    if (mkdir_p(SOCK_DIR_FALLBACK, 0700) != 0
        || chmod(SOCK_DIR_FALLBACK, 0700) != 0)
    {
        log_warn("%s", SOCK_DIR_FALLBACK);
    }
    return fmt(buf, n, SOCK_DIR_FALLBACK "/%s-%s", prefix, hex);
}


/* the master's socket: short, as unix sockets need (108 bytes) */
static void
ctl_path(const char *id, char *buf, size_t n)
{
    (void) fleet_sock_path("m", id, buf, n);
}


static int
ssh_dirs(char *err, size_t n)
{
    char  dir[4096];

    ssh_dir(dir, sizeof(dir));
    if (mkdir_p(dir, 0700) != 0 || chmod(dir, 0700) != 0) {
        snprintf(err, n, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    fmt(dir, sizeof(dir), "%s/ssh/keys", conf->state_dir);
    if (mkdir_p(dir, 0700) != 0) {
        snprintf(err, n, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}


/* ---- the model ------------------------------------------------------------ */

struct fleet *
fleet_find(const char *name)
{
    struct fleet  *f;

    TAILQ_FOREACH(f, &fleets, entry) {
        if (strcmp(f->name, name) == 0) {
            return f;
        }
    }
    return NULL;
}


struct fleet *
fleet_find_in(const char *pkey, const char *name)
{
    struct fleet  *f;

    f = fleet_find(name);
    return f != NULL && strcmp(f->project, pkey) == 0 ? f : NULL;
}


struct fleet_host *
fleet_host_find(const char *id)
{
    struct fleet  *f;
    int            i;

    TAILQ_FOREACH(f, &fleets, entry) {
        for (i = 0; i < f->n_hosts; i++) {
            if (strcmp(f->hosts[i].id, id) == 0) {
                return &f->hosts[i];
            }
        }
    }
    return NULL;
}


static int
replica_on(const struct replica *rep, const struct fleet_host *h)
{
    return rep->active && strcmp(rep->host, h->id) == 0;
}


int
fleet_host_replicas(const struct fleet_host *h, const char *run)
{
    struct run      *r;
    struct replica  *rep;
    int              n = 0;

    TAILQ_FOREACH(r, &runs, entry) {
        if (run != NULL && strcmp(r->name, run) != 0) {
            continue;
        }
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            n += replica_on(rep, h);
        }
    }
    return n;
}


int
fleet_host_blocks_total(const struct fleet_host *h)
{
    if (h->blocks > 0) {
        return h->blocks;
    }
    return h->desc.n_gpus > 0 ? h->desc.n_gpus : 1;
}


int
fleet_host_blocks_need(const struct fleet_host *h, int gpus)
{
    int  total = fleet_host_blocks_total(h), per;

    if (gpus <= 0 || h->desc.n_gpus <= 0) {
        return 1;
    }
    per = h->desc.n_gpus / total;
    if (per <= 0) {
        per = 1;
    }
    return (gpus + per - 1) / per;
}


int
fleet_host_blocks_busy(const struct fleet_host *h)
{
    struct run      *r;
    struct replica  *rep;
    int              n = 0;

    TAILQ_FOREACH(r, &runs, entry) {
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (replica_on(rep, h)) {
                n += fleet_host_blocks_need(h, rep->n_gpus);
            }
        }
    }
    return n;
}


/* a host of a spec into h (connection fields; status untouched) */
static void
host_fill(struct fleet *f, struct fleet_host *h, const ds_fleet_host_t *sh,
    const cJSON *keys, int index)
{
    const cJSON  *k;
    char          dir[4096];

    h->fleet = f;
    h->index = index;
    fmt(h->id, sizeof(h->id), "%s/%s:%u", f->name, sh->hostname,
        (unsigned) sh->port);
    snprintf(h->ssh.user, sizeof(h->ssh.user), "%s", sh->user);
    snprintf(h->ssh.hostname, sizeof(h->ssh.hostname), "%s", sh->hostname);
    h->ssh.port = sh->port;
    k = cJSON_GetObjectItemCaseSensitive(keys, sh->identity_file);
    key_path(cJSON_IsString(k) ? k->valuestring : "none", h->ssh.key,
             sizeof(h->ssh.key));
    ssh_dir(dir, sizeof(dir));
    fmt(h->ssh.known_hosts, sizeof(h->ssh.known_hosts), "%s/%s.known_hosts",
        dir, f->name);
    ctl_path(h->id, h->ssh.ctl, sizeof(h->ssh.ctl));
    h->ssh.jump_hostname[0] = '\0';
    if (sh->proxy_jump != NULL) {
        snprintf(h->ssh.jump_user, sizeof(h->ssh.jump_user), "%s",
                 sh->proxy_jump->user);
        snprintf(h->ssh.jump_hostname, sizeof(h->ssh.jump_hostname), "%s",
                 sh->proxy_jump->hostname);
        h->ssh.jump_port = sh->proxy_jump->port;
        k = cJSON_GetObjectItemCaseSensitive(keys,
                                             sh->proxy_jump->identity_file);
        key_path(cJSON_IsString(k) ? k->valuestring : "none",
                 h->ssh.jump_key, sizeof(h->ssh.jump_key));
    }
    snprintf(h->address, sizeof(h->address), "%s",
             sh->internal_ip ? sh->internal_ip : sh->hostname);
    h->tunnel = sh->proxy_jump != NULL && sh->internal_ip == NULL;
    h->blocks = (int) sh->blocks;
}


static void
fleet_free(struct fleet *f)
{
    int  i;

    for (i = 0; i < f->n_hosts; i++) {
        hosts_forget(&f->hosts[i]);
    }
    free(f->hosts);
    cJSON_Delete(f->doc);
    ds_fleet_free(&f->spec);
    free(f);
}


/* a host of the fleet before: what was found stays, its connection goes
 * on unless how to reach it changed */
static void
host_take(struct fleet_host *h, struct fleet_host *prev, struct fleet *f,
    int index)
{
    struct fleet_host  now = *h;
    int                same;

    same = memcmp(&prev->ssh, &now.ssh, sizeof(now.ssh)) == 0;
    *h = *prev;
    h->fleet = f;
    h->index = index;
    h->ssh = now.ssh;
    memcpy(h->address, now.address, sizeof(h->address));
    h->tunnel = now.tunnel;
    h->blocks = now.blocks;
    h->desc.region = f->name;
    h->desc.instance_type = h->ssh.hostname;
    if (same) {
        hosts_move(prev, h);
    } else {
        hosts_forget(prev);
        h->master = -1;
        h->master_err = -1;
        h->cmd = NULL;
        h->status = HOST_CONNECTING;
        h->gc_done = 0;
        h->engine_fwd[0] = '\0';
    }
    /* the old one must not end what is now h's */
    prev->master = -1;
    prev->master_err = -1;
    prev->cmd = NULL;
    prev->ssh.ctl[0] = '\0';
}


/*
 * A fleet from a document {"spec", "keys", "submitted_at"}; hosts of
 * `old` with the same id keep their connection and what was found.
 */
static struct fleet *
fleet_make(const char *name, cJSON *doc, struct fleet *old, char *err,
    size_t n)
{
    struct fleet       *f;
    struct fleet_host  *h, *prev;
    ds_err_t            e;
    size_t              i;
    int                 j;

    f = xcalloc(1, sizeof(*f));
    snprintf(f->name, sizeof(f->name), "%s", name);
    memset(&e, 0, sizeof(e));
    if (ds_fleet_from_json(cJSON_GetObjectItemCaseSensitive(doc, "spec"),
                           &f->spec, &e) != DS_OK)
    {
        snprintf(err, n, "%s", e.msg[0] ? e.msg : "spec: invalid");
        ds_fleet_free(&f->spec);
        free(f);
        return NULL;
    }
    f->doc = doc;
    snprintf(f->project, sizeof(f->project), "%s",
             cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc,
                                                                   "project"))
             ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc,
                                                                    "project"))
             : "");
    f->submitted_at = (time_t) cJSON_GetNumberValue(
        cJSON_GetObjectItemCaseSensitive(doc, "submitted_at"));
    f->deleting = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc,
                                                                "deleting"));
    f->n_hosts = (int) f->spec.n_hosts;
    f->hosts = xcalloc(f->spec.n_hosts ? f->spec.n_hosts : 1,
                       sizeof(*f->hosts));
    for (i = 0; i < f->spec.n_hosts; i++) {
        h = &f->hosts[i];
        h->master = -1;
        h->master_err = -1;
        host_fill(f, h, &f->spec.hosts[i],
                  cJSON_GetObjectItemCaseSensitive(doc, "keys"), (int) i);
        prev = NULL;
        for (j = 0; old != NULL && j < old->n_hosts; j++) {
            if (strcmp(old->hosts[j].id, h->id) == 0) {
                prev = &old->hosts[j];
            }
        }
        if (prev != NULL) {
            host_take(h, prev, f, (int) i);
        }
    }
    return f;
}


/* ---- documents ------------------------------------------------------------ */

static int
doc_write(const char *name, const cJSON *doc, char *err, size_t n)
{
    struct store_txn  *t;
    char              *text;
    int                rc;

    text = cJSON_PrintUnformatted(doc);
    if (text == NULL) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    t = store_begin(err, n);
    if (t == NULL) {
        free(text);
        return -1;
    }
    store_put_fleet(t, name, text);
    rc = store_end(t);
    free(text);
    return rc == STORE_OK ? 0 : -1;
}


static int
fleet_write(struct fleet *f, char *err, size_t n)
{
    cJSON_ReplaceItemInObjectCaseSensitive(f->doc, "deleting",
                                           cJSON_CreateBool(f->deleting));
    return doc_write(f->name, f->doc, err, n);
}


static int
fleet_load_one(void *arg, const char *name, size_t name_len, const char *doc,
    size_t doc_len)
{
    struct fleet  *f;
    cJSON         *json;
    char           nm[DS_NAME_MAX + 1], err[512];
    int            i;

    (void) arg;
    if (name_len > DS_NAME_MAX) {
        return 0;
    }
    memcpy(nm, name, name_len);
    nm[name_len] = '\0';
    json = cJSON_ParseWithLength(doc, doc_len);
    if (json == NULL) {
        log_warnx("fleet \"%s\": its document is not JSON: left alone", nm);
        return 0;
    }
    f = fleet_make(nm, json, NULL, err, sizeof(err));
    if (f == NULL) {
        log_warnx("fleet \"%s\": %s: left alone", nm, err);
        cJSON_Delete(json);
        return 0;
    }
    TAILQ_INSERT_TAIL(&fleets, f, entry);
    for (i = 0; i < f->n_hosts; i++) {
        hosts_connect(&f->hosts[i]);
    }
    return 0;
}


void
fleets_load(void)
{
    char  err[512];

    if (ssh_dirs(err, sizeof(err)) != 0) {
        log_warnx("fleets: %s", err);
    }
    (void) store_load_fleets(fleet_load_one, NULL);
}


/* ---- views ---------------------------------------------------------------- */

static cJSON *
host_resources(const struct fleet_host *h)
{
    cJSON  *o, *g, *it;
    int     i;

    if (!h->discovered) {
        return cJSON_CreateNull();
    }
    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "cpus", h->desc.cpus);
    cJSON_AddNumberToObject(o, "memory_mb", (double) h->desc.memory_mb);
    cJSON_AddNumberToObject(o, "disk_mb", (double) h->desc.disk_mb);
    cJSON_AddStringToObject(o, "arch", h->desc.machine);
    g = cJSON_AddArrayToObject(o, "gpus");
    for (i = 0; i < h->desc.n_gpus; i++) {
        it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "name", h->desc.gpus[i].name);
        cJSON_AddNumberToObject(it, "memory_mb",
                                (double) h->desc.gpus[i].memory_mb);
        cJSON_AddStringToObject(it, "vendor",
            h->desc.gpus[i].vendor == DS_SPEC_VENDOR_AMD ? "amd" : "nvidia");
        cJSON_AddItemToArray(g, it);
    }
    if (h->engine[0]) {
        cJSON_AddStringToObject(o, "engine", h->engine);
    } else {
        cJSON_AddNullToObject(o, "engine");
    }
    return o;
}


static cJSON *
host_to_api(const struct fleet_host *h)
{
    cJSON           *o, *list, *it;
    struct run      *r;
    struct replica  *rep;
    char             jump[400];

    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "hostname", h->ssh.hostname);
    cJSON_AddNumberToObject(o, "port", h->ssh.port);
    cJSON_AddStringToObject(o, "user", h->ssh.user);
    cJSON_AddStringToObject(o, "address", h->address);
    if (h->ssh.jump_hostname[0]) {
        snprintf(jump, sizeof(jump), "%s@%s:%d", h->ssh.jump_user,
                 h->ssh.jump_hostname, h->ssh.jump_port);
        cJSON_AddStringToObject(o, "proxy_jump", jump);
    } else {
        cJSON_AddNullToObject(o, "proxy_jump");
    }
    cJSON_AddBoolToObject(o, "tunnel", h->tunnel);
    cJSON_AddNumberToObject(o, "blocks", fleet_host_blocks_total(h));
    cJSON_AddNumberToObject(o, "blocks_busy", fleet_host_blocks_busy(h));
    cJSON_AddStringToObject(o, "status", hosts_status_name(h->status));
    cJSON_AddStringToObject(o, "message", h->message);
    cJSON_AddItemToObject(o, "resources", host_resources(h));
    list = cJSON_AddArrayToObject(o, "replicas");
    TAILQ_FOREACH(r, &runs, entry) {
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (!replica_on(rep, h)) {
                continue;
            }
            it = cJSON_CreateObject();
            cJSON_AddStringToObject(it, "run", r->name);
            cJSON_AddNumberToObject(it, "replica", rep->num);
            cJSON_AddNumberToObject(it, "version", rep->version);
            cJSON_AddStringToObject(it, "state",
                                    replica_state_name(rep->state));
            cJSON_AddItemToArray(list, it);
        }
    }
    return o;
}


static cJSON *
fleet_to_api(const struct fleet *f)
{
    cJSON  *o, *hosts;
    int     i;

    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", f->name);
    cJSON_AddStringToObject(o, "project", f->project[0] ? f->project
                                                        : DS_PROJECT_MAIN);
    cJSON_AddStringToObject(o, "status", f->deleting ? "deleting" : "active");
    cJSON_AddStringToObject(o, "placement",
        f->spec.placement == DS_FLEET_PLACEMENT_CLUSTER ? "cluster" : "any");
    if (f->spec.blocks == DS_FLEET_BLOCKS_AUTO) {
        cJSON_AddStringToObject(o, "blocks", "auto");
    } else {
        cJSON_AddNumberToObject(o, "blocks", f->spec.blocks);
    }
    cJSON_AddNumberToObject(o, "submitted_at", (double) f->submitted_at);
    hosts = cJSON_AddArrayToObject(o, "hosts");
    for (i = 0; i < f->n_hosts; i++) {
        cJSON_AddItemToArray(hosts, host_to_api(&f->hosts[i]));
    }
    return o;
}


cJSON *
fleets_list(const char *pkey)
{
    struct fleet  *f;
    cJSON         *o, *list;

    o = cJSON_CreateObject();
    list = cJSON_AddArrayToObject(o, "fleets");
    TAILQ_FOREACH(f, &fleets, entry) {
        if (strcmp(f->project, pkey) == 0) {
            cJSON_AddItemToArray(list, fleet_to_api(f));
        }
    }
    return o;
}


int
fleets_get(const char *pkey, const char *name, cJSON **answer, char *err,
    size_t n)
{
    struct fleet  *f = fleet_find_in(pkey, name);

    if (f == NULL) {
        snprintf(err, n, "no fleet \"%s\"", name);
        return 404;
    }
    *answer = fleet_to_api(f);
    return 0;
}


/* ---- plan and apply ------------------------------------------------------- */

struct fleet_req {
    const cJSON    *spec;
    const cJSON    *keys;
    ds_fleet_t      fleet;
    const char     *name;               /* points to nm */
    char            nm[DS_NAME_MAX + 1];
};


static int
key_ok(const char *pem, size_t len)
{
    return len <= KEY_MAX && strstr(pem, "-----BEGIN ") != NULL
           && strstr(pem, "PRIVATE KEY-----") != NULL
           && memchr(pem, '\0', len) == NULL;
}


/* every identity file the fleet names has a key in the request */
static int
req_keys_check(const struct fleet_req *q, char *err, size_t n)
{
    const cJSON  *k;
    const char   *files[2];
    size_t        i;
    int           j;

    cJSON_ArrayForEach(k, q->keys) {
        if (!cJSON_IsString(k)
            || !key_ok(k->valuestring, strlen(k->valuestring)))
        {
            snprintf(err, n, "keys.%.200s: not a private key (PEM or "
                     "OpenSSH format, at most %d bytes)", k->string,
                     KEY_MAX);
            return 400;
        }
    }
    for (i = 0; i < q->fleet.n_hosts; i++) {
        files[0] = q->fleet.hosts[i].identity_file;
        files[1] = q->fleet.hosts[i].proxy_jump
                   ? q->fleet.hosts[i].proxy_jump->identity_file : NULL;
        for (j = 0; j < 2; j++) {
            if (files[j] != NULL
                && cJSON_GetObjectItemCaseSensitive(q->keys, files[j])
                   == NULL)
            {
                snprintf(err, n, "keys: no key for identity_file \"%.200s\" "
                         "(spec.ssh_config.hosts[%zu]%s)", files[j], i,
                         j ? ".proxy_jump" : "");
                return 400;
            }
        }
    }
    return 0;
}


static int
req_parse(const cJSON *req, struct fleet_req *q, char *err, size_t n)
{
    const cJSON  *it;
    ds_err_t      e;
    int           rc;

    memset(q, 0, sizeof(*q));
    if (!cJSON_IsObject(req)) {
        snprintf(err, n, "expected a JSON object");
        return 400;
    }
    cJSON_ArrayForEach(it, req) {
        if (strcmp(it->string, "spec") == 0) {
            q->spec = it;
        } else if (strcmp(it->string, "keys") == 0) {
            if (!cJSON_IsObject(it)) {
                snprintf(err, n, "keys: expected an object of identity "
                         "files to private keys");
                return 400;
            }
            q->keys = it;
        } else {
            snprintf(err, n, "unknown field \"%.80s\"", it->string);
            return 400;
        }
    }
    if (q->spec == NULL) {
        snprintf(err, n, "spec: required");
        return 400;
    }
    memset(&e, 0, sizeof(e));
    if (ds_fleet_from_json(q->spec, &q->fleet, &e) != DS_OK) {
        snprintf(err, n, "%s", e.msg[0] ? e.msg : "spec: invalid");
        ds_fleet_free(&q->fleet);
        return 400;
    }
    if (q->keys == NULL) {
        q->keys = cJSON_GetObjectItemCaseSensitive(req, "keys");
    }
    if (req_keys_check(q, err, n) != 0) {
        ds_fleet_free(&q->fleet);
        return 400;
    }
    /* its env is every replica's on its hosts: no secret missing */
    rc = secrets_check_env("", q->fleet.env, q->fleet.n_env, err, n);
    if (rc != 0) {
        ds_fleet_free(&q->fleet);
        return rc;
    }
    if (q->fleet.name != NULL) {
        snprintf(q->nm, sizeof(q->nm), "%s", q->fleet.name);
    } else {
        run_generate_name(q->nm, sizeof(q->nm));
    }
    q->name = q->nm;
    return 0;
}


/* the hosts of the request that another fleet has already */
static int
req_hosts_free(const struct fleet_req *q, char *err, size_t n)
{
    struct fleet  *f;
    size_t         i;
    int            j;

    TAILQ_FOREACH(f, &fleets, entry) {
        if (strcmp(f->name, q->name) == 0) {
            continue;
        }
        for (i = 0; i < q->fleet.n_hosts; i++) {
            for (j = 0; j < f->n_hosts; j++) {
                if (strcmp(f->hosts[j].ssh.hostname,
                           q->fleet.hosts[i].hostname) == 0
                    && f->hosts[j].ssh.port == q->fleet.hosts[i].port)
                {
                    snprintf(err, n, "spec.ssh_config.hosts[%zu]: %s:%u is "
                             "a host of fleet \"%s\" already", i,
                             q->fleet.hosts[i].hostname,
                             (unsigned) q->fleet.hosts[i].port, f->name);
                    return 409;
                }
            }
        }
    }
    return 0;
}


/* hosts of the fleet that the request leaves out and that run replicas */
static int
req_hosts_kept(const struct fleet_req *q, const struct fleet *f, char *err,
    size_t n)
{
    size_t  i;
    int     j, found;

    for (j = 0; f != NULL && j < f->n_hosts; j++) {
        found = 0;
        for (i = 0; i < q->fleet.n_hosts; i++) {
            found |= strcmp(f->hosts[j].ssh.hostname,
                            q->fleet.hosts[i].hostname) == 0
                     && f->hosts[j].ssh.port == q->fleet.hosts[i].port;
        }
        if (!found && fleet_host_replicas(&f->hosts[j], NULL) > 0) {
            snprintf(err, n, "host %s:%d of fleet \"%s\" runs %d replicas: "
                     "it can leave the fleet once they are stopped (or "
                     "delete the fleet with --force, which moves them)",
                     f->hosts[j].ssh.hostname, f->hosts[j].ssh.port, f->name,
                     fleet_host_replicas(&f->hosts[j], NULL));
            return 409;
        }
    }
    return 0;
}


static cJSON *
plan_hosts(const struct fleet_req *q, const struct fleet *f,
    cJSON *changes)
{
    cJSON  *list, *o;
    size_t  i;
    int     j, found;
    char    id[300], line[400];

    list = cJSON_CreateArray();
    for (i = 0; i < q->fleet.n_hosts; i++) {
        const ds_fleet_host_t  *sh = &q->fleet.hosts[i];

        fmt(id, sizeof(id), "%s/%s:%u", q->name, sh->hostname,
            (unsigned) sh->port);
        o = NULL;
        for (j = 0; f != NULL && j < f->n_hosts; j++) {
            if (strcmp(f->hosts[j].id, id) == 0) {
                o = host_to_api(&f->hosts[j]);
            }
        }
        if (o == NULL) {
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "hostname", sh->hostname);
            cJSON_AddNumberToObject(o, "port", sh->port);
            cJSON_AddStringToObject(o, "user", sh->user);
            cJSON_AddStringToObject(o, "address", sh->internal_ip
                                    ? sh->internal_ip : sh->hostname);
            if (sh->proxy_jump != NULL) {
                snprintf(line, sizeof(line), "%s@%s:%u",
                         sh->proxy_jump->user, sh->proxy_jump->hostname,
                         (unsigned) sh->proxy_jump->port);
                cJSON_AddStringToObject(o, "proxy_jump", line);
            } else {
                cJSON_AddNullToObject(o, "proxy_jump");
            }
            cJSON_AddNumberToObject(o, "blocks", sh->blocks);
            cJSON_AddStringToObject(o, "status", "new");
            cJSON_AddStringToObject(o, "message", "");
            cJSON_AddNullToObject(o, "resources");
            cJSON_AddArrayToObject(o, "replicas");
            snprintf(line, sizeof(line), "add host %s:%u", sh->hostname,
                     (unsigned) sh->port);
            cJSON_AddItemToArray(changes, cJSON_CreateString(line));
        }
        cJSON_AddItemToArray(list, o);
    }
    for (j = 0; f != NULL && j < f->n_hosts; j++) {
        found = 0;
        for (i = 0; i < q->fleet.n_hosts; i++) {
            found |= strcmp(f->hosts[j].ssh.hostname,
                            q->fleet.hosts[i].hostname) == 0
                     && f->hosts[j].ssh.port == q->fleet.hosts[i].port;
        }
        if (!found) {
            snprintf(line, sizeof(line), "remove host %s:%d",
                     f->hosts[j].ssh.hostname, f->hosts[j].ssh.port);
            cJSON_AddItemToArray(changes, cJSON_CreateString(line));
        }
    }
    return list;
}


/* a fleet name is the gateway's: one of another project is a conflict */
static int
fleet_name_free(const char *pkey, const char *name, char *err, size_t n)
{
    struct fleet  *f = fleet_find(name);

    if (f != NULL && strcmp(f->project, pkey) != 0) {
        snprintf(err, n, "name: a fleet named \"%s\" exists in another "
                 "project (fleet names are the gateway's)", name);
        return 409;
    }
    return 0;
}


int
fleets_plan(const char *pkey, const cJSON *req, cJSON **answer, char *err,
    size_t n)
{
    struct fleet_req  q;
    struct fleet     *f;
    cJSON            *changes;
    int               rc;

    rc = req_parse(req, &q, err, n);
    if (rc != 0) {
        return rc;
    }
    rc = fleet_name_free(pkey, q.name, err, n);
    if (rc == 0) {
        rc = req_hosts_free(&q, err, n);
    }
    f = fleet_find(q.name);
    if (rc == 0 && f != NULL && f->deleting) {
        snprintf(err, n, "fleet \"%s\" is being deleted", q.name);
        rc = 409;
    }
    if (rc != 0) {
        ds_fleet_free(&q.fleet);
        return rc;
    }
    *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(*answer, "name", q.name);
    cJSON_AddBoolToObject(*answer, "exists", f != NULL);
    changes = cJSON_CreateArray();
    cJSON_AddItemToObject(*answer, "hosts", plan_hosts(&q, f, changes));
    cJSON_AddItemToObject(*answer, "changes", changes);
    ds_fleet_free(&q.fleet);
    return 0;
}


/* the request's keys into files; the document's "keys" maps each
 * identity file to its hash */
static cJSON *
keys_store(const cJSON *keys, char *err, size_t n)
{
    const cJSON  *k;
    cJSON        *map;
    uint8_t       d[32];
    char          hex[65], path[4200];

    map = cJSON_CreateObject();
    cJSON_ArrayForEach(k, keys) {
        ds_sha256(k->valuestring, strlen(k->valuestring), d);
        hex_encode(d, 32, hex);
        key_path(hex, path, sizeof(path));
        if (access(path, F_OK) != 0
            && write_file_atomic(path, k->valuestring,
                                 strlen(k->valuestring), 0600) != 0)
        {
            snprintf(err, n, "cannot store a key in %s: %s", path,
                     strerror(errno));
            cJSON_Delete(map);
            return NULL;
        }
        cJSON_AddStringToObject(map, k->string, hex);
    }
    return map;
}


int
fleets_apply(const char *pkey, const cJSON *req, cJSON **answer,
    int *created, char *err, size_t n)
{
    struct fleet_req  q;
    struct fleet     *old, *f;
    cJSON            *doc, *keys;
    int               rc, i;

    rc = req_parse(req, &q, err, n);
    if (rc != 0) {
        return rc;
    }
    old = fleet_find(q.name);
    rc = fleet_name_free(pkey, q.name, err, n);
    if (rc == 0) {
        rc = req_hosts_free(&q, err, n);
    }
    if (rc == 0 && old != NULL && old->deleting) {
        snprintf(err, n, "fleet \"%s\" is being deleted", q.name);
        rc = 409;
    }
    if (rc == 0) {
        rc = req_hosts_kept(&q, old, err, n);
    }
    if (rc == 0 && ssh_dirs(err, n) != 0) {
        rc = 500;
    }
    keys = rc == 0 ? keys_store(q.keys, err, n) : NULL;
    if (rc == 0 && keys == NULL) {
        rc = 500;
    }
    if (rc != 0) {
        ds_fleet_free(&q.fleet);
        return rc;
    }

    doc = cJSON_CreateObject();
    cJSON_AddItemToObject(doc, "spec", cJSON_Duplicate(q.fleet.json, 1));
    cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItem(doc, "spec"),
                                           "name",
                                           cJSON_CreateString(q.name));
    cJSON_AddItemToObject(doc, "keys", keys);
    cJSON_AddNumberToObject(doc, "submitted_at", old ? (double)
                            old->submitted_at : (double) time(NULL));
    cJSON_AddBoolToObject(doc, "deleting", 0);
    cJSON_AddStringToObject(doc, "project", pkey);
    ds_fleet_free(&q.fleet);

    if (doc_write(q.name, doc, err, n) != 0) {
        /* nothing changed */
        cJSON_Delete(doc);
        return 500;
    }
    f = fleet_make(q.name, doc, old, err, n);
    if (f == NULL) {
        cJSON_Delete(doc);
        return 500;
    }
    if (old != NULL) {
        TAILQ_REMOVE(&fleets, old, entry);
        fleet_free(old);
    }
    TAILQ_INSERT_TAIL(&fleets, f, entry);
    for (i = 0; i < f->n_hosts; i++) {
        hosts_connect(&f->hosts[i]);
    }
    log_info("fleet \"%s\" %s: %d hosts", f->name,
             old ? "updated" : "created", f->n_hosts);
    *created = old == NULL;
    *answer = fleet_to_api(f);
    return 0;
}


/* ---- delete --------------------------------------------------------------- */

int
fleets_delete(const char *pkey, const char *name, const cJSON *req,
    cJSON **answer, char *err, size_t n)
{
    struct fleet  *f = fleet_find_in(pkey, name);
    const cJSON   *force;
    int            i, busy = 0;

    if (f == NULL) {
        snprintf(err, n, "no fleet \"%s\"", name);
        return 404;
    }
    force = cJSON_GetObjectItemCaseSensitive(req, "force");
    if (force != NULL && !cJSON_IsBool(force)) {
        snprintf(err, n, "force: expected true or false");
        return 400;
    }
    for (i = 0; i < f->n_hosts; i++) {
        busy += fleet_host_replicas(&f->hosts[i], NULL);
    }
    if (busy > 0 && !cJSON_IsTrue(force)) {
        snprintf(err, n, "fleet \"%s\" runs %d replicas: stop their runs "
                 "first, or delete with force (they are drained and start "
                 "elsewhere)", name, busy);
        return 409;
    }
    f->deleting = 1;
    if (fleet_write(f, err, n) != 0) {
        f->deleting = 0;
        return 500;
    }
    log_info("fleet \"%s\": deleting (%d replicas to move)", name, busy);
    *answer = fleet_to_api(f);
    fleets_tick();
    return 0;
}


/* the key files of a fleet that goes, unless another fleet has them */
static void
keys_forget(struct fleet *f)
{
    const cJSON   *k, *k2;
    struct fleet  *o;
    char           path[4200];
    int            shared;

    cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(f->doc, "keys")) {
        if (!cJSON_IsString(k) || !valid_hex_hash(k->valuestring)) {
            continue;
        }
        shared = 0;
        TAILQ_FOREACH(o, &fleets, entry) {
            if (o == f) {
                continue;
            }
            cJSON_ArrayForEach(k2, cJSON_GetObjectItemCaseSensitive(o->doc,
                                                                   "keys"))
            {
                shared |= cJSON_IsString(k2)
                          && strcmp(k2->valuestring, k->valuestring) == 0;
            }
        }
        if (!shared) {
            key_path(k->valuestring, path, sizeof(path));
            (void) unlink(path);
        }
    }
}


/* a deleting fleet without replicas goes, with its pinned host keys */
void
fleets_tick(void)
{
    struct fleet       *f, *next;
    struct store_txn   *t;
    char                err[512], path[4200];
    int                 i, busy;

    for (f = TAILQ_FIRST(&fleets); f != NULL; f = next) {
        next = TAILQ_NEXT(f, entry);
        if (!f->deleting) {
            continue;
        }
        for (i = 0, busy = 0; i < f->n_hosts; i++) {
            busy += fleet_host_replicas(&f->hosts[i], NULL);
        }
        if (busy > 0) {
            f->empty_since_ms = 0;
            continue;
        }
        /* the last releases (agent commands, engine requests) go through
         * the hosts' connections: a moment for them */
        if (f->empty_since_ms == 0) {
            f->empty_since_ms = now_ms();
        }
        if (now_ms() - f->empty_since_ms < FLEET_LINGER_MS) {
            continue;
        }
        t = store_begin(err, sizeof(err));
        if (t == NULL) {
            log_warnx("fleet \"%s\": %s", f->name, err);
            continue;
        }
        store_del_fleet(t, f->name);
        if (store_end(t) != STORE_OK) {
            log_warnx("fleet \"%s\": cannot delete: %s", f->name, err);
            continue;
        }
        if (f->n_hosts > 0) {
            (void) unlink(f->hosts[0].ssh.known_hosts);
        }
        fmt(path, sizeof(path), "%s/ssh/%s.known_hosts", conf->state_dir,
            f->name);
        (void) unlink(path);
        log_info("fleet \"%s\" deleted", f->name);
        TAILQ_REMOVE(&fleets, f, entry);
        keys_forget(f);
        fleet_free(f);
    }
}
