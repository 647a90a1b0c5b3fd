/*
 * Runs in LMDB: the run document in the `runs` database (what a restarted
 * controld recovers from) and the replica set the gateway routes to.
 * What is written when is decided here; how it is written is store.c's.
 *
 * Every change that belongs together is one transaction: an apply writes
 * the service record and the run document together; a flush writes all
 * changed run documents and replica sets together, so a worker sees a
 * rolling-update step (new replica ready, old one draining) as one change.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "log.h"
#include "run.h"
#include "rundoc.h"
#include "spec.h"
#include "store.h"
#include "util.h"


/* ---- the document ---------------------------------------------------------- */

static cJSON *
replica_to_doc(const struct replica *rep)
{
    cJSON  *o, *g;
    int     i;
    char    start[32];

    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "num", rep->num);
    cJSON_AddNumberToObject(o, "version", rep->version);
    cJSON_AddStringToObject(o, "state", replica_state_name(rep->state));
    cJSON_AddStringToObject(o, "message", rep->message);
    cJSON_AddBoolToObject(o, "active", rep->active);
    cJSON_AddStringToObject(o, "backend", rep->backend ? rep->backend->name
                                                       : rep->backend_name);
    cJSON_AddStringToObject(o, "container", rep->container);
    if (rep->host[0] != '\0') {
        cJSON_AddStringToObject(o, "host", rep->host);
        cJSON_AddStringToObject(o, "tag", rep->tag);
        cJSON_AddStringToObject(o, "inner", rep->inner);
        cJSON_AddNumberToObject(o, "log_base", (double) rep->log_base);
        cJSON_AddStringToObject(o, "engine_sock", rep->engine_sock);
        cJSON_AddBoolToObject(o, "engine_podman", rep->engine_podman);
    }
    cJSON_AddNumberToObject(o, "pid", rep->pid);
    /* a string: start times exceed a double's exact range on long uptimes
     * only in theory, but keep them exact */
    snprintf(start, sizeof(start), "%llu", rep->pid_start);
    cJSON_AddStringToObject(o, "pid_start", start);
    cJSON_AddNumberToObject(o, "exit_status", rep->exit_status);
    cJSON_AddStringToObject(o, "addr", rep->addr);
    cJSON_AddNumberToObject(o, "net_index", rep->net_index);
    g = cJSON_AddArrayToObject(o, "gpus");
    for (i = 0; i < rep->n_gpus; i++) {
        cJSON_AddItemToArray(g, cJSON_CreateNumber(rep->gpus[i]));
    }
    cJSON_AddNumberToObject(o, "submitted_at", (double) rep->submitted_at);
    cJSON_AddNumberToObject(o, "started_at", (double) rep->started_at);
    cJSON_AddNumberToObject(o, "restarts", rep->restarts);
    cJSON_AddNumberToObject(o, "failures", rep->failures);
    return o;
}


cJSON *
run_to_doc(const struct run *r)
{
    cJSON                 *o, *list;
    const struct replica  *rep;

    o = cJSON_CreateObject();
    if (o == NULL) {
        return NULL;
    }
    cJSON_AddNumberToObject(o, "doc_version", 2);
    cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddStringToObject(o, "user", r->user);
    cJSON_AddStringToObject(o, "status", run_status_name(r->status));
    cJSON_AddStringToObject(o, "message", r->message);
    cJSON_AddNumberToObject(o, "submitted_at", (double) r->submitted_at);
    cJSON_AddNumberToObject(o, "updated_at", (double) r->updated_at);
    cJSON_AddNumberToObject(o, "version", r->version);
    cJSON_AddStringToObject(o, "code", r->code);
    cJSON_AddStringToObject(o, "files", r->files);
    cJSON_AddNumberToObject(o, "desired", r->desired);
    cJSON_AddNumberToObject(o, "next_num", r->next_num);
    cJSON_AddBoolToObject(o, "stopping", r->stopping);
    cJSON_AddBoolToObject(o, "abort", r->abort);
    cJSON_AddBoolToObject(o, "finished", r->finished);
    cJSON_AddNumberToObject(o, "rollout_failed", r->rollout_failed);
    cJSON_AddStringToObject(o, "rollout_error", r->rollout_error);
    cJSON_AddItemToObject(o, "spec", r->spec.json
                                     ? cJSON_Duplicate(r->spec.json, 1)
                                     : cJSON_CreateNull());
    list = cJSON_AddArrayToObject(o, "replicas");
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        cJSON_AddItemToArray(list, replica_to_doc(rep));
    }
    return o;
}


static double
doc_num(const cJSON *o, const char *key, double def)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}


static const char *
doc_str(const cJSON *o, const char *key)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}


static int
doc_bool(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}


/*
 * A replica of a document of doc_version 1 (before the state machine):
 * its status and the flags that stood for the states of today.
 */
static int
replica_state_of_v1(const cJSON *o)
{
    const char  *s = doc_str(o, "status");
    int          retire = doc_bool(o, "retire");

    if (strcmp(s, "running") == 0) {
        return doc_bool(o, "ready") ? RS_READY : RS_RUNNING;
    }
    if (strcmp(s, "terminating") == 0) {
        return doc_bool(o, "draining") ? RS_DRAINING
               : doc_bool(o, "abort") ? RS_ABORTING : RS_STOPPING;
    }
    if (strcmp(s, "failed") == 0) {
        return retire ? RS_FAILED : RS_BACKOFF;
    }
    if (strcmp(s, "submitted") == 0 || strcmp(s, "provisioning") == 0
        || strcmp(s, "pulling") == 0 || strcmp(s, "terminated") == 0
        || strcmp(s, "aborted") == 0 || strcmp(s, "done") == 0)
    {
        return replica_state_parse(s);
    }
    return RS_FAILED;
}


static struct replica *
replica_from_doc(struct run *r, const cJSON *o)
{
    struct replica  *rep;
    const cJSON     *g, *it;
    int              st;

    rep = replica_new(r, (int) doc_num(o, "num", 0),
                      (int) doc_num(o, "version", 1));
    st = replica_state_parse(doc_str(o, "state"));
    rep->state = st >= 0 ? st : replica_state_of_v1(o);
    snprintf(rep->message, sizeof(rep->message), "%s",
             doc_str(o, "message"));
    rep->pid = (pid_t) doc_num(o, "pid", 0);
    snprintf(rep->container, sizeof(rep->container), "%s",
             doc_str(o, "container"));
    snprintf(rep->host, sizeof(rep->host), "%s", doc_str(o, "host"));
    snprintf(rep->tag, sizeof(rep->tag), "%s", doc_str(o, "tag"));
    snprintf(rep->inner, sizeof(rep->inner), "%s", doc_str(o, "inner"));
    rep->log_base = (long long) doc_num(o, "log_base", 0);
    snprintf(rep->engine_sock, sizeof(rep->engine_sock), "%s",
             doc_str(o, "engine_sock"));
    rep->engine_podman = doc_bool(o, "engine_podman");
    /* the backend by name: reconcile_adopt() finds it; version 1 had
     * local processes only, active while they had a pid */
    if (cJSON_GetObjectItemCaseSensitive(o, "active") == NULL) {
        rep->active = rep->pid > 0;
        snprintf(rep->backend_name, sizeof(rep->backend_name), "local");
    } else {
        rep->active = doc_bool(o, "active");
        snprintf(rep->backend_name, sizeof(rep->backend_name), "%s",
                 doc_str(o, "backend"));
    }
    rep->pid_start = strtoull(doc_str(o, "pid_start"), NULL, 10);
    rep->exit_status = (int) doc_num(o, "exit_status", -1);
    snprintf(rep->addr, sizeof(rep->addr), "%s", doc_str(o, "addr"));
    rep->net_index = (int) doc_num(o, "net_index", -1);
    g = cJSON_GetObjectItemCaseSensitive(o, "gpus");
    cJSON_ArrayForEach(it, g) {
        if (cJSON_IsNumber(it) && rep->n_gpus < REPLICA_GPUS_MAX) {
            rep->gpus[rep->n_gpus++] = it->valueint;
        }
    }
    rep->submitted_at = (time_t) doc_num(o, "submitted_at", 0);
    rep->started_at = (time_t) doc_num(o, "started_at", 0);
    rep->restarts = (int) doc_num(o, "restarts", 0);
    rep->failures = (int) doc_num(o, "failures", 0);
    return rep;
}


struct run *
run_from_doc(const char *doc, size_t len, char *err, size_t errlen)
{
    cJSON           *o, *list, *it;
    struct run      *r;
    struct replica  *rep;
    int              st;

    o = cJSON_ParseWithLength(doc, len);
    if (o == NULL) {
        snprintf(err, errlen, "invalid JSON");
        return NULL;
    }
    if (!ds_valid_service_key(doc_str(o, "name"),
                              strlen(doc_str(o, "name"))))
    {
        snprintf(err, errlen, "invalid name");
        cJSON_Delete(o);
        return NULL;
    }

    r = run_new(doc_str(o, "name"));
    snprintf(r->user, sizeof(r->user), "%s", doc_str(o, "user"));
    st = run_status_parse(doc_str(o, "status"));
    r->status = st < 0 ? RUN_FAILED : st;
    snprintf(r->message, sizeof(r->message), "%s", doc_str(o, "message"));
    r->submitted_at = (time_t) doc_num(o, "submitted_at", 0);
    r->updated_at = (time_t) doc_num(o, "updated_at", 0);
    r->version = (int) doc_num(o, "version", 1);
    snprintf(r->code, sizeof(r->code), "%s", doc_str(o, "code"));
    snprintf(r->files, sizeof(r->files), "%s", doc_str(o, "files"));
    r->desired = (int) doc_num(o, "desired", 0);
    r->next_num = (int) doc_num(o, "next_num", 0);
    r->stopping = doc_bool(o, "stopping");
    r->abort = doc_bool(o, "abort");
    r->finished = doc_bool(o, "finished");
    r->rollout_failed = (int) doc_num(o, "rollout_failed", 0);
    snprintf(r->rollout_error, sizeof(r->rollout_error), "%s",
             doc_str(o, "rollout_error"));

    if (spec_load(cJSON_GetObjectItemCaseSensitive(o, "spec"), &r->spec, err,
                  errlen)
        != 0)
    {
        cJSON_Delete(o);
        run_free(r);
        return NULL;
    }
    spec_service(&r->spec, r->name, &r->svc);

    list = cJSON_GetObjectItemCaseSensitive(o, "replicas");
    cJSON_ArrayForEach(it, list) {
        rep = replica_from_doc(r, it);
        TAILQ_INSERT_TAIL(&r->replicas, rep, entry);
    }

    /* the service is in LMDB unless the run finished (then it was
     * deleted in the same transaction that wrote the document) */
    r->service_put = !r->finished;
    cJSON_Delete(o);
    return r;
}


/* ---- loading and writing ------------------------------------------------ */

static int
runs_load_one(void *arg, const char *name, size_t name_len, const char *doc,
    size_t doc_len)
{
    struct run  *r;
    char         err[256];

    (void) arg;

    r = run_from_doc(doc, doc_len, err, sizeof(err));
    if (r == NULL) {
        log_warnx("run \"%.*s\": cannot load its document: %s",
                  (int) name_len, name, err);
        return 0;
    }
    TAILQ_INSERT_TAIL(&runs, r, entry);
    return 0;
}


int
runs_load(void)
{
    return store_load_docs(runs_load_one, NULL);
}


static void
put_doc(struct store_txn *t, const struct run *r)
{
    cJSON  *doc;
    char   *text;

    doc = run_to_doc(r);
    text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    /* NULL: out of memory, which the transaction reports */
    store_put_doc(t, r->name, text);
    free(text);
}


/* the replica set the gateway should see: ready and draining replicas */
static void
put_set(struct store_txn *t, const struct run *r)
{
    const struct replica  *rep;
    ds_replica_t           set[256];
    unsigned               n = 0;

    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (!replica_published(rep)) {
            continue;
        }
        if (n == sizeof(set) / sizeof(set[0])) {
            break;
        }
        memset(&set[n], 0, sizeof(ds_replica_t));
        if (ds_replica_parse_addr(&set[n], rep->addr, strlen(rep->addr))
            != DS_OK)
        {
            log_warnx("run \"%s\" replica %d: bad address \"%s\"", r->name,
                      rep->num, rep->addr);
            continue;
        }
        set[n].version = (uint32_t) rep->version;
        set[n].weight = 1;
        set[n].state = replica_ready(rep) ? DS_REPLICA_READY
                                          : DS_REPLICA_DRAINING;
        n++;
    }
    store_put_replicas(t, r->name, set, n);
}


int
run_put_doc(struct run *r, char *err, size_t errlen)
{
    struct store_txn  *t;
    int                rc;

    t = store_begin(err, errlen);
    if (t == NULL) {
        return STORE_EFAIL;
    }
    put_doc(t, r);
    rc = store_end(t);
    if (rc != STORE_OK) {
        return rc;
    }
    r->dirty = 0;
    return STORE_OK;
}


int
run_put_service(struct run *r, char *err, size_t errlen)
{
    struct store_txn  *t;
    int                rc;

    t = store_begin(err, errlen);
    if (t == NULL) {
        return STORE_EFAIL;
    }
    store_put_service(t, &r->svc);
    put_doc(t, r);
    if (r->publish) {
        put_set(t, r);
    }
    rc = store_end(t);
    if (rc != STORE_OK) {
        return rc;
    }
    r->service_put = 1;
    r->dirty = 0;
    r->publish = 0;
    return STORE_OK;
}


static int
runs_changed(void)
{
    const struct run  *r;

    TAILQ_FOREACH(r, &runs, entry) {
        if (r->dirty || r->publish || (r->finished && r->service_put)) {
            return 1;
        }
    }
    return 0;
}


int
runs_flush(void)
{
    static int64_t     retry_ms;
    struct run        *r;
    struct store_txn  *t;
    char               err[512];

    if (!runs_changed()) {
        return 0;
    }
    /* after a failure (a full disk, a full map): again in a second, not
     * in every turn of the loop */
    if (retry_ms != 0 && now_ms() < retry_ms) {
        return -1;
    }
    retry_ms = now_ms() + 1000;

    t = store_begin(err, sizeof(err));
    if (t == NULL) {
        log_warnx("cannot write state: %s", err);
        return -1;
    }
    TAILQ_FOREACH(r, &runs, entry) {
        if (r->finished && r->service_put) {
            /* removes the replica set and frees the metric slots too */
            store_del_service(t, r->name);
        } else if (r->publish && r->service_put) {
            put_set(t, r);
        }
        if (r->dirty) {
            put_doc(t, r);
        }
    }
    if (store_end(t) != STORE_OK) {
        log_warnx("cannot write state: %s", err);
        return -1;
    }

    TAILQ_FOREACH(r, &runs, entry) {
        if (r->finished && r->service_put) {
            r->service_put = 0;
        }
        r->dirty = 0;
        r->publish = 0;
    }
    retry_ms = 0;
    return 0;
}
