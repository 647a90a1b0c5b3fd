/*
 * The typed view of a normalized spec (ds_spec_t), for the daemon.  The
 * spec is validated first, so the view reads it without checking again
 * what the validator has already refused.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_spec_impl.h"


typedef struct {
    const char            **commands;
    ds_spec_env_t          *env;
    const char            **gpu_names;
    ds_spec_rate_limit_t   *rate_limits;
    ds_spec_probe_t        *probes;
    ds_spec_header_t       *headers;
    const char            **backends;
    const char            **regions;
    const char            **fleets;
    ds_spec_volume_t       *volumes;
    ds_spec_file_t         *files;
    char                   *probe_url;
    char                   *probe_body;     /* cJSON_free() */
} ds_spec_priv_t;


static const cJSON *
ds_j(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}


static const char *
ds_j_str(const cJSON *o, const char *k)
{
    const cJSON  *v;

    v = ds_j(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}


static double
ds_j_num(const cJSON *o, const char *k)
{
    const cJSON  *v;

    v = ds_j(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}


/* model.routing, validated: every field there, the header for sessions */
static void
ds_spec_fill_routing(ds_spec_t *spec, const cJSON *rt)
{
    const char  *affinity;

    affinity = ds_j_str(rt, "affinity");
    if (affinity == NULL) {
        return;
    }

    spec->model.affinity = strcmp(affinity, "session") == 0
                           ? DS_AFFINITY_SESSION : DS_AFFINITY_PREFIX;
    spec->model.prefix_bytes = (uint32_t) ds_j_num(rt, "prefix_bytes");
    /* 1.25 x 1000 is 1249.999...: round */
    spec->model.load_factor = (uint32_t) (ds_j_num(rt, "load_factor") * 1000
                                          + 0.5);

    if (spec->model.affinity == DS_AFFINITY_SESSION) {
        spec->model.session_header = ds_j_str(rt, "session_header");
    }
}


/* model.budget, validated: each limit a whole number or null */
static void
ds_spec_fill_budget(ds_spec_t *spec, const cJSON *b)
{
    ds_budget_t  *to = &spec->model.budget;

    if (!cJSON_IsObject(b)) {
        return;
    }

    to->rpm = (uint32_t) ds_j_num(b, "rpm");
    to->tpm = (uint32_t) ds_j_num(b, "tpm");
    to->tpd = (uint64_t) ds_j_num(b, "tpd");
    to->max_tokens = (uint32_t) ds_j_num(b, "max_tokens");
}


static void
ds_j_range(const cJSON *o, ds_spec_range_t *r)
{
    const cJSON  *v;

    r->min = 0;
    r->max = DS_SPEC_UNLIMITED;

    if (!cJSON_IsObject(o)) {
        return;
    }

    v = ds_j(o, "min");
    if (cJSON_IsNumber(v)) {
        r->min = (uint64_t) v->valuedouble;
    }

    v = ds_j(o, "max");
    if (cJSON_IsNumber(v)) {
        r->max = (uint64_t) v->valuedouble;
    }
}


/* a NULL-terminated copy of the list's strings (pointing into it) */
static const char **
ds_j_strs(const cJSON *a, size_t *n)
{
    size_t         i;
    const cJSON   *it;
    const char   **v;

    *n = (size_t) cJSON_GetArraySize(a);

    v = calloc(*n + 1, sizeof(char *));
    if (v == NULL) {
        return NULL;
    }

    for (i = 0, it = a ? a->child : NULL; it; i++, it = it->next) {
        v[i] = it->valuestring;
    }

    return v;
}


static int
ds_spec_enum(const char *s, const char *const *w, size_t n)
{
    size_t  i;

    for (i = 0; s && i < n; i++) {
        if (strcmp(s, w[i]) == 0) {
            return (int) i;
        }
    }
    return 0;
}


static int
ds_spec_fill_resources(ds_spec_t *spec, ds_spec_priv_t *priv,
    const cJSON *res)
{
    size_t                    i;
    const char               *a;
    const cJSON              *cpu, *gpu;
    static const char *const  vendors[] = {
        "", "nvidia", "amd", "google", "intel", "tenstorrent"
    };

    cpu = ds_j(res, "cpu");
    a = ds_j_str(cpu, "arch");
    spec->resources.cpu_arch = a == NULL ? DS_SPEC_ARCH_ANY
                               : strcmp(a, "x86") == 0 ? DS_SPEC_ARCH_X86
                               : DS_SPEC_ARCH_ARM;
    ds_j_range(ds_j(cpu, "count"), &spec->resources.cpu);
    ds_j_range(ds_j(res, "memory"), &spec->resources.memory_mb);
    ds_j_range(ds_j(res, "disk"), &spec->resources.disk_mb);
    spec->resources.shm_size_mb = (uint64_t) ds_j_num(res, "shm_size");

    gpu = ds_j(res, "gpu");
    spec->resources.gpu.vendor = ds_spec_enum(ds_j_str(gpu, "vendor"),
                                              vendors, 6);
    ds_j_range(ds_j(gpu, "count"), &spec->resources.gpu.count);
    ds_j_range(ds_j(gpu, "memory"), &spec->resources.gpu.memory_mb);
    ds_j_range(ds_j(gpu, "total_memory"),
               &spec->resources.gpu.total_memory_mb);

    if (cJSON_IsArray(ds_j(gpu, "name"))) {
        priv->gpu_names = ds_j_strs(ds_j(gpu, "name"), &i);
        if (priv->gpu_names == NULL) {
            return DS_ERROR;
        }
        spec->resources.gpu.names = priv->gpu_names;
        spec->resources.gpu.n_names = i;
    }

    return DS_OK;
}


static int
ds_spec_fill_rate_limits(ds_spec_t *spec, ds_spec_priv_t *priv,
    const cJSON *a)
{
    size_t                 i;
    const cJSON           *it, *key;
    ds_spec_rate_limit_t  *rl;

    priv->rate_limits = calloc((size_t) cJSON_GetArraySize(a) + 1,
                               sizeof(ds_spec_rate_limit_t));
    if (priv->rate_limits == NULL) {
        return DS_ERROR;
    }

    for (i = 0, it = a->child; it; i++, it = it->next) {
        rl = &priv->rate_limits[i];
        key = ds_j(it, "key");

        rl->prefix = ds_j_str(it, "prefix");
        rl->header = ds_j_str(key, "header");
        rl->key_type = rl->header ? DS_RL_KEY_HEADER : DS_RL_KEY_IP;
        rl->rps = ds_j_num(it, "rps");
        rl->rps_milli = (uint32_t) (rl->rps * 1000 + 0.5);
        rl->burst = (uint32_t) ds_j_num(it, "burst");
    }

    spec->rate_limits = priv->rate_limits;
    spec->n_rate_limits = i;

    return DS_OK;
}


static int
ds_spec_fill_probes(ds_spec_t *spec, ds_spec_priv_t *priv, const cJSON *a)
{
    size_t            i, nh;
    const cJSON      *it, *h;
    ds_spec_probe_t  *p;

    nh = 0;
    for (it = a->child; it; it = it->next) {
        nh += (size_t) cJSON_GetArraySize(ds_j(it, "headers"));
    }

    priv->probes = calloc((size_t) cJSON_GetArraySize(a) + 1,
                          sizeof(ds_spec_probe_t));
    priv->headers = calloc(nh + 1, sizeof(ds_spec_header_t));
    if (priv->probes == NULL || priv->headers == NULL) {
        return DS_ERROR;
    }

    nh = 0;

    for (i = 0, it = a->child; it; i++, it = it->next) {
        p = &priv->probes[i];

        p->url = ds_j_str(it, "url");
        p->method = ds_spec_enum(ds_j_str(it, "method"),
                                 ds_spec_methods.words, ds_spec_methods.n);
        p->body = ds_j_str(it, "body");
        p->timeout = (uint32_t) ds_j_num(it, "timeout");
        p->interval = (uint32_t) ds_j_num(it, "interval");
        p->ready_after = (uint32_t) ds_j_num(it, "ready_after");
        p->until_ready = cJSON_IsTrue(ds_j(it, "until_ready"));

        p->headers = &priv->headers[nh];
        for (h = ds_j(it, "headers")->child; h; h = h->next) {
            priv->headers[nh].name = ds_j_str(h, "name");
            priv->headers[nh].value = ds_j_str(h, "value");
            nh++;
            p->n_headers++;
        }
    }

    spec->probes = priv->probes;
    spec->n_probes = i;

    return DS_OK;
}


static int
ds_spec_fill_volumes(ds_spec_t *spec, ds_spec_priv_t *priv, const cJSON *a)
{
    size_t             i;
    const cJSON       *it;
    ds_spec_volume_t  *v;

    priv->volumes = calloc((size_t) cJSON_GetArraySize(a) + 1,
                           sizeof(ds_spec_volume_t));
    if (priv->volumes == NULL) {
        return DS_ERROR;
    }

    for (i = 0, it = a->child; it; i++, it = it->next) {
        v = &priv->volumes[i];

        v->name = ds_j_str(it, "name");
        v->host_path = ds_j_str(it, "instance_path");
        v->kind = v->name ? DS_SPEC_VOLUME_NAMED : DS_SPEC_VOLUME_INSTANCE;
        v->path = ds_j_str(it, "path");
        v->read_only = cJSON_IsTrue(ds_j(it, "read_only"));
        v->optional = cJSON_IsTrue(ds_j(it, "optional"));
    }

    spec->volumes = priv->volumes;
    spec->n_volumes = i;

    return DS_OK;
}


static int
ds_spec_fill_files(ds_spec_t *spec, ds_spec_priv_t *priv, const cJSON *a)
{
    size_t        i;
    const cJSON  *it;

    priv->files = calloc((size_t) cJSON_GetArraySize(a) + 1,
                         sizeof(ds_spec_file_t));
    if (priv->files == NULL) {
        return DS_ERROR;
    }

    for (i = 0, it = a->child; it; i++, it = it->next) {
        priv->files[i].local = ds_j_str(it, "local_path");
        priv->files[i].path = ds_j_str(it, "path");
    }

    spec->files = priv->files;
    spec->n_files = i;

    return DS_OK;
}


/* dstack's default for an openai model: one chat completion token */
static int
ds_spec_model_probe(ds_spec_t *spec, ds_spec_priv_t *priv)
{
    int                             ok;
    size_t                          n;
    cJSON                          *body, *msgs, *msg;
    static const ds_spec_header_t   json_header = {
        "Content-Type", "application/json"
    };

    n = strlen(spec->model.prefix);
    while (n > 0 && spec->model.prefix[n - 1] == '/') {
        n--;
    }

    priv->probe_url = malloc(n + sizeof("/chat/completions"));
    priv->probes = calloc(2, sizeof(ds_spec_probe_t));
    if (priv->probe_url == NULL || priv->probes == NULL) {
        return DS_ERROR;
    }

    memcpy(priv->probe_url, spec->model.prefix, n);
    memcpy(priv->probe_url + n, "/chat/completions",
           sizeof("/chat/completions"));

    /* {"model":NAME,"messages":[{"role":"user","content":"hi"}],
        "max_tokens":1} */
    body = cJSON_CreateObject();
    ok = body != NULL
         && cJSON_AddStringToObject(body, "model", spec->model.name) != NULL
         && (msgs = cJSON_AddArrayToObject(body, "messages")) != NULL
         && (msg = cJSON_CreateObject()) != NULL;

    if (ok && !cJSON_AddItemToArray(msgs, msg)) {
        cJSON_Delete(msg);
        ok = 0;
    }

    ok = ok
         && cJSON_AddStringToObject(msg, "role", "user") != NULL
         && cJSON_AddStringToObject(msg, "content", "hi") != NULL
         && cJSON_AddNumberToObject(body, "max_tokens", 1) != NULL
         && (priv->probe_body = cJSON_PrintUnformatted(body)) != NULL;

    cJSON_Delete(body);

    if (!ok) {
        return DS_ERROR;
    }

    priv->probes[0].url = priv->probe_url;
    priv->probes[0].method = DS_SPEC_METHOD_POST;
    priv->probes[0].headers = &json_header;
    priv->probes[0].n_headers = 1;
    priv->probes[0].body = priv->probe_body;
    priv->probes[0].timeout = DS_SPEC_MODEL_PROBE_TIMEOUT;
    priv->probes[0].interval = DS_SPEC_PROBE_INTERVAL;
    priv->probes[0].ready_after = 1;

    spec->probes = priv->probes;
    spec->n_probes = 1;
    spec->probes_default = 1;

    return DS_OK;
}


int
ds_spec_from_json(const cJSON *normalized, ds_spec_t *spec, ds_err_t *err)
{
    int                       rc;
    size_t                    i, k;
    const char               *s;
    const cJSON              *j, *v, *it;
    ds_spec_priv_t           *priv;

    memset(spec, 0, sizeof(*spec));

    rc = ds_spec_validate_json(normalized, &spec->json, err);
    if (rc != DS_OK) {
        return rc;
    }

    priv = calloc(1, sizeof(ds_spec_priv_t));
    if (priv == NULL) {
        goto oom;
    }
    spec->priv = priv;
    j = spec->json;

    spec->name = ds_j_str(j, "name");
    spec->port = (uint16_t) ds_j_num(ds_j(j, "port"), "container_port");
    spec->local_port = (uint16_t) ds_j_num(ds_j(j, "port"), "local_port");

    priv->commands = ds_j_strs(ds_j(j, "commands"), &spec->n_commands);
    if (priv->commands == NULL) {
        goto oom;
    }
    spec->commands = priv->commands;

    spec->image = ds_j_str(j, "image");
    spec->python = ds_j_str(j, "python");

    v = ds_j(j, "env");
    priv->env = calloc((size_t) cJSON_GetArraySize(v) + 1,
                       sizeof(ds_spec_env_t));
    if (priv->env == NULL) {
        goto oom;
    }
    for (i = 0, it = v->child; it; i++, it = it->next) {
        priv->env[i].name = it->string;
        priv->env[i].value = cJSON_IsString(it) ? it->valuestring : NULL;
    }
    spec->env = priv->env;
    spec->n_env = i;

    spec->working_dir = ds_j_str(j, "working_dir");
    spec->entrypoint = ds_j_str(j, "entrypoint");
    spec->shell = ds_j_str(j, "shell");
    spec->user = ds_j_str(j, "user");
    spec->privileged = cJSON_IsTrue(ds_j(j, "privileged"));

    v = ds_j(j, "registry_auth");
    spec->registry_auth.username = ds_j_str(v, "username");
    spec->registry_auth.password = ds_j_str(v, "password");

    if (ds_spec_fill_volumes(spec, priv, ds_j(j, "volumes")) != DS_OK
        || ds_spec_fill_files(spec, priv, ds_j(j, "files")) != DS_OK)
    {
        goto oom;
    }

    if (ds_spec_fill_resources(spec, priv, ds_j(j, "resources")) != DS_OK) {
        goto oom;
    }

    ds_j_range(ds_j(j, "replicas"), &spec->replicas);

    v = ds_j(j, "scaling");
    if (cJSON_IsObject(v)) {
        spec->scaling.enabled = 1;
        s = ds_j_str(v, "metric");
        spec->scaling.metric = strcmp(s, "inflight") == 0
                               ? DS_SPEC_METRIC_INFLIGHT
                               : strcmp(s, "ttft") == 0
                               ? DS_SPEC_METRIC_TTFT : DS_SPEC_METRIC_RPS;
        spec->scaling.target = ds_j_num(v, "target");
        spec->scaling.window = (uint32_t) ds_j_num(v, "window");
        spec->scaling.scale_up_delay = (uint32_t) ds_j_num(v,
                                                           "scale_up_delay");
        spec->scaling.scale_down_delay =
            (uint32_t) ds_j_num(v, "scale_down_delay");
    }

    spec->auth = cJSON_IsTrue(ds_j(j, "auth"));
    v = ds_j(j, "https");
    spec->https = cJSON_IsString(v) ? DS_SPEC_HTTPS_AUTO
                  : cJSON_IsTrue(v) ? DS_SPEC_HTTPS_ON : DS_SPEC_HTTPS_OFF;

    v = ds_j(j, "model");
    if (cJSON_IsObject(v)) {
        spec->model.enabled = 1;
        spec->model.name = ds_j_str(v, "name");
        spec->model.format = strcmp(ds_j_str(v, "format"), "tgi") == 0
                             ? DS_MODEL_TGI : DS_MODEL_OPENAI;
        spec->model.prefix = ds_j_str(v, "prefix");
        spec->model.chat_template = ds_j_str(v, "chat_template");
        spec->model.eos_token = ds_j_str(v, "eos_token");
        ds_spec_fill_routing(spec, ds_j(v, "routing"));
        ds_spec_fill_budget(spec, ds_j(v, "budget"));
    }

    if (ds_spec_fill_rate_limits(spec, priv, ds_j(j, "rate_limits"))
        != DS_OK)
    {
        goto oom;
    }

    v = ds_j(j, "probes");
    if (cJSON_IsArray(v)) {
        if (ds_spec_fill_probes(spec, priv, v) != DS_OK) {
            goto oom;
        }

    } else if (spec->model.enabled && spec->model.format == DS_MODEL_OPENAI) {
        if (ds_spec_model_probe(spec, priv) != DS_OK) {
            goto oom;
        }
    }

    spec->spot_policy = ds_spec_enum(ds_j_str(j, "spot_policy"),
                                     ds_spec_spot_policies.words,
                                     ds_spec_spot_policies.n);
    spec->max_price = ds_j_num(j, "max_price");

    /* only ours: the others were ignored, and with none of ours, all */
    if (cJSON_IsArray(ds_j(j, "backends"))) {
        priv->backends = ds_j_strs(ds_j(j, "backends"), &spec->n_backends);
        if (priv->backends == NULL) {
            goto oom;
        }
        for (i = 0, k = 0; i < spec->n_backends; i++) {
            if (ds_spec_is_our_backend(priv->backends[i])) {
                priv->backends[k++] = priv->backends[i];
            }
        }
        priv->backends[k] = NULL;
        spec->n_backends = k;
        spec->backends = k ? priv->backends : NULL;
    }

    if (cJSON_IsArray(ds_j(j, "regions"))) {
        priv->regions = ds_j_strs(ds_j(j, "regions"), &spec->n_regions);
        if (priv->regions == NULL) {
            goto oom;
        }
        spec->regions = priv->regions;
    }

    if (cJSON_IsArray(ds_j(j, "fleets"))) {
        priv->fleets = ds_j_strs(ds_j(j, "fleets"), &spec->n_fleets);
        if (priv->fleets == NULL) {
            goto oom;
        }
        spec->fleets = priv->fleets;
    }

    v = ds_j(j, "retry");
    if (cJSON_IsObject(v)) {
        spec->retry.enabled = 1;
        spec->retry.duration = (uint32_t) ds_j_num(v, "duration");
        for (it = ds_j(v, "on_events")->child; it; it = it->next) {
            spec->retry.on_events |= 1u << ds_spec_enum(it->valuestring,
                                                        ds_spec_events, 3);
        }
    }

    v = ds_j(j, "max_duration");
    spec->max_duration = cJSON_IsString(v) ? DS_SPEC_OFF
                                           : (uint32_t) v->valuedouble;
    v = ds_j(j, "stop_duration");
    spec->stop_duration = cJSON_IsString(v) ? DS_SPEC_OFF
                                            : (uint32_t) v->valuedouble;

    spec->strip_prefix = cJSON_IsTrue(ds_j(j, "strip_prefix"));

    v = ds_j(j, "gateway");
    if (cJSON_IsString(v)) {
        spec->gateway = DS_SPEC_GATEWAY_NAMED;
        spec->gateway_name = v->valuestring;
    } else if (cJSON_IsBool(v)) {
        spec->gateway = cJSON_IsTrue(v) ? DS_SPEC_GATEWAY_ANY
                                        : DS_SPEC_GATEWAY_NONE;
    }

    return DS_OK;

oom:

    snprintf(err->msg, sizeof(err->msg), "out of memory");
    return DS_ERROR;
}


void
ds_spec_free(ds_spec_t *spec)
{
    ds_spec_priv_t  *priv;

    priv = spec->priv;

    if (priv) {
        free(priv->commands);
        free(priv->env);
        free(priv->gpu_names);
        free(priv->rate_limits);
        free(priv->probes);
        free(priv->headers);
        free(priv->backends);
        free(priv->regions);
        free(priv->fleets);
        free(priv->volumes);
        free(priv->files);
        free(priv->probe_url);
        cJSON_free(priv->probe_body);
        free(priv);
    }

    cJSON_Delete(spec->json);
    memset(spec, 0, sizeof(*spec));
}
