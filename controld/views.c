/*
 * The API's run object R (API.md): what a run and its replicas look like
 * to dstackctl, built from the data model, the autoscaler's reasons and
 * the run's certificate.  Nothing here changes a run.
 */

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "backend.h"
#include "config.h"
#include "run.h"
#include "spec.h"
#include "tls.h"
#include "util.h"
#include "views.h"


/* "region": the fleet of its host, or "local"; "host": where it runs */
static void
replica_where(cJSON *o, const struct replica *rep)
{
    const char  *slash;
    char         fleet[DS_NAME_MAX + 1];

    slash = strchr(rep->host, '/');
    if (slash == NULL) {
        cJSON_AddStringToObject(o, "region", "local");
        cJSON_AddStringToObject(o, "host", "local");
        return;
    }
    snprintf(fleet, sizeof(fleet), "%.*s", (int) (slash - rep->host),
             rep->host);
    cJSON_AddStringToObject(o, "region", fleet);
    cJSON_AddStringToObject(o, "host", slash + 1);
}


static cJSON *
replica_to_api(const struct replica *rep, const char *resources)
{
    const struct backend_ops  *be;
    cJSON                     *o;
    char                       gpu[256];
    size_t                     off = 0;
    int                        i;

    /* the one that ran it, or the one that will */
    be = rep->backend ? rep->backend
                      : backend_for(&rep->run->spec, rep->run->project);

    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "num", rep->num);
    cJSON_AddStringToObject(o, "status", replica_status_name(rep->state));
    cJSON_AddStringToObject(o, "state", replica_state_name(rep->state));
    cJSON_AddBoolToObject(o, "ready", replica_ready(rep));
    cJSON_AddBoolToObject(o, "draining", rep->state == RS_DRAINING);
    cJSON_AddNumberToObject(o, "version", rep->version);
    if (rep->addr[0]) {
        cJSON_AddStringToObject(o, "address", rep->addr);
    } else {
        cJSON_AddNullToObject(o, "address");
    }
    cJSON_AddStringToObject(o, "backend", be->name);
    replica_where(o, rep);
    cJSON_AddStringToObject(o, "resources", resources);
    gpu[0] = '\0';
    for (i = 0; i < rep->n_gpus && off < sizeof(gpu); i++) {
        off += snprintf(gpu + off, sizeof(gpu) - off, "%s%s", i ? "," : "",
                        be->gpu_name(rep, rep->gpus[i]));
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


/* the model endpoint: controld.yml's gateway_url and the model's prefix */
static void
run_model_url(const struct run *r, char *buf, size_t n)
{
    const char  *host;
    size_t       at;

    /* a project's models are on gateway--<project>.<domain> */
    host = strstr(conf->gateway_url, "://gateway.");
    if (r->project[0] != '\0' && host != NULL) {
        at = (size_t) (host - conf->gateway_url) + strlen("://gateway");
        fmt(buf, n, "%.*s" DS_PROJECT_SEP "%s%s%s", (int) at,
            conf->gateway_url, r->project, conf->gateway_url + at,
            r->spec.model.prefix ? r->spec.model.prefix : "");
        return;
    }
    fmt(buf, n, "%s%s", conf->gateway_url,
        r->spec.model.prefix ? r->spec.model.prefix : "");
}


/* "scaling": {desired, current, metric, value, reason}, or NULL */
static cJSON *
autoscale_to_api(const struct run *r)
{
    const struct replica  *rep;
    cJSON                 *o;
    int                    current = 0, ready = 0;

    if (!r->spec.scaling.enabled) {
        return NULL;
    }
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (!replica_leaving(rep)) {
            current++;
        }
        if (replica_ready(rep)) {
            ready++;
        }
    }
    o = cJSON_CreateObject();
    if (o == NULL) {
        return NULL;
    }
    cJSON_AddStringToObject(o, "metric",
                            r->spec.scaling.metric == DS_SPEC_METRIC_INFLIGHT
                            ? "inflight"
                            : r->spec.scaling.metric == DS_SPEC_METRIC_TTFT
                            ? "ttft" : "rps");
    cJSON_AddNumberToObject(o, "desired", r->desired);
    cJSON_AddNumberToObject(o, "current", current);
    cJSON_AddNumberToObject(o, "ready", ready);
    cJSON_AddNumberToObject(o, "value", r->scaling.value);
    cJSON_AddStringToObject(o, "reason", r->scaling.reason);
    return o;
}


/* the run's certificate, or NULL */
static cJSON *
tls_to_api(const struct run *r)
{
    struct tls_status  st;
    cJSON             *o;

    if (tls_run_status(r->name, &st) != 0) {
        return NULL;
    }
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "host", st.host);
    cJSON_AddStringToObject(o, "status", st.status);
    if (st.not_after) {
        cJSON_AddNumberToObject(o, "not_after", (double) st.not_after);
    }
    if (st.error[0]) {
        cJSON_AddStringToObject(o, "error", st.error);
    }
    return o;
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
    cJSON_AddStringToObject(o, "name", r->short_name);
    cJSON_AddStringToObject(o, "project", r->project[0] ? r->project
                                                        : DS_PROJECT_MAIN);
    if (r->user[0]) {
        cJSON_AddStringToObject(o, "user", r->user);
    }
    cJSON_AddStringToObject(o, "status", run_status_name(r->status));
    cJSON_AddStringToObject(o, "message", r->message);
    cJSON_AddNumberToObject(o, "submitted_at", (double) r->submitted_at);
    cJSON_AddNumberToObject(o, "updated_at", (double) r->updated_at);
    cJSON_AddNumberToObject(o, "version", r->version);
    cJSON_AddNumberToObject(o, "desired", r->desired);
    /* POST .../scale would take it: a fixed count, not stopping */
    cJSON_AddBoolToObject(o, "scalable", !r->spec.scaling.enabled
                                         && !r->finished && !r->stopping);
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
