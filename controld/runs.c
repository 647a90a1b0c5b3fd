/*
 * Runs and their replicas in memory, and as JSON: the run document kept
 * in LMDB's `runs` database (what a restarted controld recovers from) and
 * the run object R of the API.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "controld.h"


struct run_list  runs = TAILQ_HEAD_INITIALIZER(runs);


static const char *const  run_statuses[] = {
    "pending", "submitted", "provisioning", "running", "terminating",
    "terminated", "failed", "done"
};

static const char *const  replica_statuses[] = {
    "submitted", "provisioning", "pulling", "running", "terminating",
    "terminated", "aborted", "failed", "done"
};


const char *
run_status_name(int s)
{
    if (s < 0 || s >= (int) (sizeof(run_statuses) / sizeof(run_statuses[0])))
    {
        return "unknown";
    }
    return run_statuses[s];
}


const char *
replica_status_name(int s)
{
    if (s < 0 || s >= (int) (sizeof(replica_statuses)
                             / sizeof(replica_statuses[0])))
    {
        return "unknown";
    }
    return replica_statuses[s];
}


int
run_status_parse(const char *s)
{
    int  i;

    for (i = 0; i < (int) (sizeof(run_statuses) / sizeof(run_statuses[0]));
         i++)
    {
        if (s && strcmp(s, run_statuses[i]) == 0) {
            return i;
        }
    }
    return -1;
}


int
replica_status_parse(const char *s)
{
    int  i;

    for (i = 0; i < (int) (sizeof(replica_statuses)
                           / sizeof(replica_statuses[0])); i++)
    {
        if (s && strcmp(s, replica_statuses[i]) == 0) {
            return i;
        }
    }
    return -1;
}


struct run *
run_find(const char *name)
{
    struct run  *r;

    TAILQ_FOREACH(r, &runs, entry) {
        if (strcmp(r->name, name) == 0) {
            return r;
        }
    }
    return NULL;
}


struct run *
run_new(const char *name)
{
    struct run  *r;

    r = xcalloc(1, sizeof(struct run));
    snprintf(r->name, sizeof(r->name), "%s", name);
    TAILQ_INIT(&r->replicas);
    r->submitted_at = r->updated_at = time(NULL);
    r->status = RUN_SUBMITTED;
    r->version = 1;
    return r;
}


void
run_free(struct run *r)
{
    struct replica  *rep;

    while ((rep = TAILQ_FIRST(&r->replicas)) != NULL) {
        TAILQ_REMOVE(&r->replicas, rep, entry);
        replica_free(rep);
    }
    ds_spec_free(&r->spec);
    free(r);
}


struct replica *
replica_new(struct run *run, int num, int version)
{
    struct replica  *rep;

    rep = xcalloc(1, sizeof(struct replica));
    rep->run = run;
    rep->num = num;
    rep->version = version;
    rep->status = REP_SUBMITTED;
    rep->exit_status = -1;
    rep->net_index = -1;
    rep->submitted_at = time(NULL);
    return rep;
}


void
replica_free(struct replica *rep)
{
    probes_cancel(rep);
    free(rep);
}


void
run_touch(struct run *r)
{
    r->updated_at = time(NULL);
    r->dirty = 1;
}


const char *
run_url(const struct run *r)
{
    static char  url[512];
    const char  *p;
    size_t       off = 0;

    p = strstr(conf->service_url, "{name}");
    if (p == NULL) {
        snprintf(url, sizeof(url), "%s", conf->service_url);
        return url;
    }
    off = (size_t) (p - conf->service_url);
    if (off > 200) {
        off = 200;
    }
    snprintf(url, sizeof(url), "%.*s%s%s", (int) off, conf->service_url,
             r->name, p + 6);
    return url;
}


/* ---- names -------------------------------------------------------------- */

static const char *const  adjectives[] = {
    "amber", "bold", "brave", "bright", "calm", "clever", "cool", "crisp",
    "eager", "fancy", "fast", "fine", "gentle", "glad", "golden", "good",
    "happy", "keen", "kind", "lively", "lucky", "mellow", "merry", "nice",
    "noble", "proud", "quick", "quiet", "rapid", "shiny", "silver", "smart",
    "snowy", "sunny", "swift", "tidy", "vivid", "warm", "wise", "yellow"
};

static const char *const  animals[] = {
    "ant", "bat", "bear", "bee", "bison", "cat", "cobra", "crab", "crow",
    "deer", "dog", "dove", "duck", "eagle", "eel", "elk", "fish", "fox",
    "frog", "goat", "hawk", "horse", "ibis", "koala", "lark", "lion",
    "lynx", "mole", "moose", "mouse", "otter", "owl", "panda", "puma",
    "rabbit", "seal", "sheep", "swan", "tiger", "wolf", "yak", "zebra"
};


void
run_generate_name(char *buf, size_t n)
{
    const char  *adj, *animal;
    int          i;

    adj = adjectives[random() % (sizeof(adjectives) / sizeof(adjectives[0]))];
    animal = animals[random() % (sizeof(animals) / sizeof(animals[0]))];

    /* N = the first free index, as dstack does */
    for (i = 1; ; i++) {
        snprintf(buf, n, "%s-%s-%d", adj, animal, i);
        if (run_find(buf) == NULL) {
            return;
        }
    }
}


/* ---- documents ---------------------------------------------------------- */

static cJSON *
replica_to_doc(const struct replica *rep)
{
    cJSON  *o, *g;
    int     i;
    char    start[32];

    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "num", rep->num);
    cJSON_AddNumberToObject(o, "version", rep->version);
    cJSON_AddStringToObject(o, "status", replica_status_name(rep->status));
    cJSON_AddStringToObject(o, "message", rep->message);
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
    cJSON_AddBoolToObject(o, "ready", rep->ready);
    cJSON_AddBoolToObject(o, "draining", rep->draining);
    cJSON_AddNumberToObject(o, "submitted_at", (double) rep->submitted_at);
    cJSON_AddNumberToObject(o, "started_at", (double) rep->started_at);
    cJSON_AddNumberToObject(o, "restarts", rep->restarts);
    cJSON_AddNumberToObject(o, "failures", rep->failures);
    cJSON_AddBoolToObject(o, "retire", rep->retire);
    cJSON_AddBoolToObject(o, "abort", rep->abort);
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
    cJSON_AddNumberToObject(o, "doc_version", 1);
    cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddStringToObject(o, "status", run_status_name(r->status));
    cJSON_AddStringToObject(o, "message", r->message);
    cJSON_AddNumberToObject(o, "submitted_at", (double) r->submitted_at);
    cJSON_AddNumberToObject(o, "updated_at", (double) r->updated_at);
    cJSON_AddNumberToObject(o, "version", r->version);
    cJSON_AddStringToObject(o, "code", r->code);
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


static struct replica *
replica_from_doc(struct run *r, const cJSON *o)
{
    struct replica  *rep;
    const cJSON     *g, *it;
    int              st;

    rep = replica_new(r, (int) doc_num(o, "num", 0),
                      (int) doc_num(o, "version", 1));
    st = replica_status_parse(doc_str(o, "status"));
    rep->status = st < 0 ? REP_FAILED : st;
    snprintf(rep->message, sizeof(rep->message), "%s",
             doc_str(o, "message"));
    rep->pid = (pid_t) doc_num(o, "pid", 0);
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
    rep->ready = doc_bool(o, "ready");
    rep->draining = doc_bool(o, "draining");
    rep->submitted_at = (time_t) doc_num(o, "submitted_at", 0);
    rep->started_at = (time_t) doc_num(o, "started_at", 0);
    rep->restarts = (int) doc_num(o, "restarts", 0);
    rep->failures = (int) doc_num(o, "failures", 0);
    rep->retire = doc_bool(o, "retire");
    rep->abort = doc_bool(o, "abort");
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
    if (!ds_valid_run_name(doc_str(o, "name"), strlen(doc_str(o, "name")))) {
        snprintf(err, errlen, "invalid name");
        cJSON_Delete(o);
        return NULL;
    }

    r = run_new(doc_str(o, "name"));
    st = run_status_parse(doc_str(o, "status"));
    r->status = st < 0 ? RUN_FAILED : st;
    snprintf(r->message, sizeof(r->message), "%s", doc_str(o, "message"));
    r->submitted_at = (time_t) doc_num(o, "submitted_at", 0);
    r->updated_at = (time_t) doc_num(o, "updated_at", 0);
    r->version = (int) doc_num(o, "version", 1);
    snprintf(r->code, sizeof(r->code), "%s", doc_str(o, "code"));
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


/* ---- the API's run object ----------------------------------------------- */

static cJSON *
replica_to_api(const struct replica *rep, const char *resources)
{
    cJSON  *o;
    char    gpu[256];
    size_t  off = 0;
    int     i;

    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "num", rep->num);
    cJSON_AddStringToObject(o, "status", replica_status_name(rep->status));
    cJSON_AddBoolToObject(o, "ready", rep->ready);
    cJSON_AddBoolToObject(o, "draining", rep->draining);
    cJSON_AddNumberToObject(o, "version", rep->version);
    if (rep->addr[0]) {
        cJSON_AddStringToObject(o, "address", rep->addr);
    } else {
        cJSON_AddNullToObject(o, "address");
    }
    cJSON_AddStringToObject(o, "backend", "local");
    cJSON_AddStringToObject(o, "region", "local");
    cJSON_AddStringToObject(o, "resources", resources);
    gpu[0] = '\0';
    for (i = 0; i < rep->n_gpus && off < sizeof(gpu); i++) {
        off += snprintf(gpu + off, sizeof(gpu) - off, "%s%s", i ? "," : "",
                        backend_gpu_name(rep->gpus[i]));
    }
    cJSON_AddStringToObject(o, "gpu", gpu);
    cJSON_AddNumberToObject(o, "price", 0);
    if (rep->pid > 0) {
        cJSON_AddNumberToObject(o, "pid", rep->pid);
    } else {
        cJSON_AddNullToObject(o, "pid");
    }
    cJSON_AddNumberToObject(o, "submitted_at", (double) rep->submitted_at);
    if (rep->started_at) {
        cJSON_AddNumberToObject(o, "started_at", (double) rep->started_at);
    } else {
        cJSON_AddNullToObject(o, "started_at");
    }
    if (rep->exit_status >= 0) {
        cJSON_AddNumberToObject(o, "exit_status",
                                WIFEXITED(rep->exit_status)
                                    ? WEXITSTATUS(rep->exit_status)
                                    : 128 + WTERMSIG(rep->exit_status));
    } else {
        cJSON_AddNullToObject(o, "exit_status");
    }
    cJSON_AddNumberToObject(o, "restarts", rep->restarts);
    cJSON_AddStringToObject(o, "message", rep->message);
    return o;
}


/*
 * The model endpoint: gateway.<domain> with the scheme and port of the
 * service URL, and the model's prefix ("/v1").
 */
static void
run_model_url(const struct run *r, char *buf, size_t n)
{
    const char  *url, *host, *port, *end;
    const char  *prefix;

    url = run_url(r);
    prefix = r->spec.model.prefix ? r->spec.model.prefix : "";
    host = strstr(url, "://");
    if (host == NULL) {
        fmt(buf, n, "http://gateway.%s%s", conf->domain, prefix);
        return;
    }
    host += 3;
    port = strchr(host, ':');
    end = port ? port + strcspn(port, "/") : NULL;
    fmt(buf, n, "%.*sgateway.%s%.*s%s", (int) (host - url), url,
        conf->domain, port ? (int) (end - port) : 0, port ? port : "",
        prefix);
}


cJSON *
run_to_api(const struct run *r)
{
    cJSON                 *o, *list, *m;
    const struct replica  *rep;
    char                   res[512], url[600];

    o = cJSON_CreateObject();
    if (o == NULL) {
        return NULL;
    }
    cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddStringToObject(o, "status", run_status_name(r->status));
    cJSON_AddStringToObject(o, "message", r->message);
    cJSON_AddNumberToObject(o, "submitted_at", (double) r->submitted_at);
    cJSON_AddNumberToObject(o, "updated_at", (double) r->updated_at);
    cJSON_AddNumberToObject(o, "version", r->version);
    cJSON_AddNumberToObject(o, "desired", r->desired);
    if (r->rollout_failed == r->version) {
        m = cJSON_AddObjectToObject(o, "rollout");
        cJSON_AddNumberToObject(m, "version", r->rollout_failed);
        cJSON_AddBoolToObject(m, "failed", 1);
        cJSON_AddStringToObject(m, "error", r->rollout_error);
    }
    if ((m = autoscale_to_api(r)) != NULL) {
        cJSON_AddItemToObject(o, "scaling", m);
    }
    cJSON_AddStringToObject(o, "url", run_url(r));
    if ((m = tls_to_api(r)) != NULL) {
        cJSON_AddItemToObject(o, "tls", m);
    }
    if (r->spec.model.enabled) {
        m = cJSON_AddObjectToObject(o, "model");
        cJSON_AddStringToObject(m, "name", r->spec.model.name);
        run_model_url(r, url, sizeof(url));
        cJSON_AddStringToObject(m, "url", url);
    } else {
        cJSON_AddNullToObject(o, "model");
    }
    if (r->code[0]) {
        cJSON_AddStringToObject(o, "code", r->code);
    } else {
        cJSON_AddNullToObject(o, "code");
    }
    cJSON_AddItemToObject(o, "spec", r->spec.json
                                     ? cJSON_Duplicate(r->spec.json, 1)
                                     : cJSON_CreateNull());
    spec_resources_text(&r->spec, res, sizeof(res));
    list = cJSON_AddArrayToObject(o, "replicas");
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        cJSON_AddItemToArray(list, replica_to_api(rep, res));
    }
    return o;
}
