/*
 * Specs on the daemon's side: common/ds_spec.c validates and types them;
 * this file derives what controld needs from the typed view: the service
 * record, the script, the change list of a re-apply.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "spec.h"
#include "util.h"


int
spec_load(const cJSON *json, ds_spec_t *sp, char *err, size_t n)
{
    ds_err_t  e;
    size_t    i;

    memset(sp, 0, sizeof(*sp));
    memset(&e, 0, sizeof(e));

    if (ds_spec_from_json(json, sp, &e) != DS_OK) {
        snprintf(err, n, "%s", e.msg[0] ? e.msg : "spec: invalid");
        ds_spec_free(sp);
        memset(sp, 0, sizeof(*sp));
        return -1;
    }

    for (i = 0; i < sp->n_env; i++) {
        if (sp->env[i].value == NULL) {
            snprintf(err, n, "spec.env.%s: no value (a bare name is filled "
                     "from the environment of dstackctl; set it there or "
                     "with -e %s=VALUE)", sp->env[i].name, sp->env[i].name);
            ds_spec_free(sp);
            memset(sp, 0, sizeof(*sp));
            return -1;
        }
    }

    if (sp->n_commands == 0 && sp->image == NULL) {
        snprintf(err, n, "spec.commands: required without an image");
        ds_spec_free(sp);
        memset(sp, 0, sizeof(*sp));
        return -1;
    }

    return 0;
}


cJSON *
spec_warnings(const cJSON *json)
{
    cJSON     *w, *again;
    ds_err_t   e;

    w = cJSON_CreateArray();
    if (w == NULL) {
        return NULL;
    }

    /* valid already (spec_load): the second pass only collects them */
    again = NULL;
    memset(&e, 0, sizeof(e));
    (void) ds_spec_validate_json_warn(json, &again, w, &e);
    cJSON_Delete(again);

    return w;
}


static void
spec_str(ds_str_t *dst, const char *s)
{
    dst->data = s ? s : "";
    dst->len = s ? (uint32_t) strlen(s) : 0;
}


void
spec_service(const ds_spec_t *sp, const char *name, ds_service_t *svc)
{
    size_t  i;

    ds_service_init(svc);
    spec_str(&svc->name, name);

    svc->flags = 0;
    if (sp->auth) {
        svc->flags |= DS_SERVICE_AUTH;
    }
    if (sp->https == DS_SPEC_HTTPS_ON) {
        svc->flags |= DS_SERVICE_HTTPS;
    } else if (sp->https == DS_SPEC_HTTPS_AUTO) {
        svc->flags |= DS_SERVICE_HTTPS_AUTO;
    }

    /* scaled to zero, requests wait for the first replica (the module
     * holds them and tells us through notify_socket) */
    if (sp->scaling.enabled && sp->replicas.min == 0) {
        svc->flags |= DS_SERVICE_HOLD;
    }

    if (sp->model.enabled) {
        spec_str(&svc->model, sp->model.name);
        spec_str(&svc->model_prefix, sp->model.prefix);
        svc->model_format = sp->model.format;
        svc->routing.affinity = sp->model.affinity;
        svc->routing.prefix_bytes = sp->model.prefix_bytes;
        svc->routing.load_factor = sp->model.load_factor;
        spec_str(&svc->routing.session_header, sp->model.session_header);
        svc->budget = sp->model.budget;
    }

    svc->n_rate_limits = 0;
    for (i = 0; i < sp->n_rate_limits && i < DS_RATE_LIMITS_MAX; i++) {
        spec_str(&svc->rate_limits[i].prefix, sp->rate_limits[i].prefix);
        spec_str(&svc->rate_limits[i].header, sp->rate_limits[i].header);
        svc->rate_limits[i].key_type = sp->rate_limits[i].key_type;
        svc->rate_limits[i].rps_milli = sp->rate_limits[i].rps_milli;
        svc->rate_limits[i].burst = sp->rate_limits[i].burst;
        svc->n_rate_limits++;
    }
}


/*
 * Fields a re-apply changes without new replicas: the replica count and
 * scaling (as in dstack), and what only the gateway or controld reads
 * (auth, https, rate limits, stop and retry policies).
 */
static int
spec_in_place(const char *field)
{
    static const char *const  fields[] = {
        "name", "replicas", "scaling", "auth", "https", "rate_limits",
        "stop_duration", "max_duration", "retry", "spot_policy",
        "max_price", "backends", "regions", "strip_prefix", "gateway",
        /* dstack's fields for clouds, ignored */
        "tags", "priority", "idle_duration", "creation_policy",
        "instance_types", "availability_zones", "reservation", "schedule",
        "utilization_policy", "startup_order", "stop_criteria",
        "backend_options"
    };
    size_t  i;

    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (strcmp(field, fields[i]) == 0) {
            return 1;
        }
    }
    return 0;
}


/* a model whose routing or budget alone changed: only the gateway reads
 * those */
static int
spec_model_in_place(const cJSON *old, const cJSON *new_)
{
    int     same;
    cJSON  *a, *b;

    if (!cJSON_IsObject(old) || !cJSON_IsObject(new_)) {
        return 0;
    }

    a = cJSON_Duplicate(old, 1);
    b = cJSON_Duplicate(new_, 1);
    if (a == NULL || b == NULL) {
        cJSON_Delete(a);
        cJSON_Delete(b);
        return 0;       /* a rollout is never wrong */
    }

    cJSON_DeleteItemFromObjectCaseSensitive(a, "routing");
    cJSON_DeleteItemFromObjectCaseSensitive(b, "routing");
    cJSON_DeleteItemFromObjectCaseSensitive(a, "budget");
    cJSON_DeleteItemFromObjectCaseSensitive(b, "budget");
    same = cJSON_Compare(a, b, 1);

    cJSON_Delete(a);
    cJSON_Delete(b);
    return same;
}


cJSON *
spec_changes(const cJSON *old, const cJSON *new_, int *rollout)
{
    cJSON        *list, *c;
    const cJSON  *it, *o;
    int           in_place;

    *rollout = 0;
    list = cJSON_CreateArray();
    if (list == NULL) {
        return NULL;
    }

    cJSON_ArrayForEach(it, new_) {
        if (strcmp(it->string, "name") == 0) {
            continue;
        }
        o = cJSON_GetObjectItemCaseSensitive(old, it->string);
        if (o != NULL && cJSON_Compare(o, it, 1)) {
            continue;
        }
        in_place = spec_in_place(it->string)
                   || (strcmp(it->string, "model") == 0
                       && spec_model_in_place(o, it));
        if (!in_place) {
            *rollout = 1;
        }
        c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "field", it->string);
        cJSON_AddItemToObject(c, "old", o ? cJSON_Duplicate(o, 1)
                                          : cJSON_CreateNull());
        cJSON_AddItemToObject(c, "new", cJSON_Duplicate(it, 1));
        cJSON_AddBoolToObject(c, "in_place", in_place);
        cJSON_AddItemToArray(list, c);
    }

    return list;
}


static void
spec_range_text(char *buf, size_t n, const ds_spec_range_t *r,
    const char *unit, int mem)
{
    char   a[32], b[32];
    double lo, hi;

    lo = (double) r->min;
    hi = (double) r->max;
    if (mem) {
        lo /= 1024;
        hi /= 1024;
    }
    snprintf(a, sizeof(a), "%g%s", lo, unit);
    snprintf(b, sizeof(b), "%g%s", hi, unit);

    if (r->max == DS_SPEC_UNLIMITED) {
        snprintf(buf, n, "%s..", a);
    } else if (r->min == r->max) {
        snprintf(buf, n, "%s", a);
    } else if (r->min == 0) {
        snprintf(buf, n, "..%s", b);
    } else {
        fmt(buf, n, "%s..%s", a, b);
    }
}


static const char *const  spec_vendors[] = {
    "", "nvidia", "amd", "google", "intel", "tenstorrent"
};


void
spec_resources_text(const ds_spec_t *sp, char *buf, size_t n)
{
    char    cpu[48], mem[48], disk[48], cnt[48], gmem[64], names[256];
    size_t  i, off;

    spec_range_text(cpu, sizeof(cpu), &sp->resources.cpu, "", 0);
    spec_range_text(mem, sizeof(mem), &sp->resources.memory_mb, "GB", 1);
    spec_range_text(disk, sizeof(disk), &sp->resources.disk_mb, "GB", 1);

    if (sp->resources.gpu.count.max == 0) {
        snprintf(buf, n, "%sxCPU, %s, %s (disk)", cpu, mem, disk);
        return;
    }

    /* the GPUs as dstack writes a GPU spec: "nvidia:A100,H100:80GB:1" */
    off = 0;
    names[0] = '\0';
    if (sp->resources.gpu.vendor > DS_SPEC_VENDOR_ANY
        && sp->resources.gpu.vendor <= DS_SPEC_VENDOR_TENSTORRENT)
    {
        off += snprintf(names, sizeof(names), "%s:",
                        spec_vendors[sp->resources.gpu.vendor]);
    }
    for (i = 0; i < sp->resources.gpu.n_names && off < sizeof(names); i++) {
        off += snprintf(names + off, sizeof(names) - off, "%s%s",
                        i ? "," : "", sp->resources.gpu.names[i]);
        if (i + 1 == sp->resources.gpu.n_names && off < sizeof(names)) {
            off += snprintf(names + off, sizeof(names) - off, ":");
        }
    }
    gmem[0] = '\0';
    if (sp->resources.gpu.memory_mb.min > 0
        || sp->resources.gpu.memory_mb.max != DS_SPEC_UNLIMITED)
    {
        spec_range_text(cnt, sizeof(cnt), &sp->resources.gpu.memory_mb,
                        "GB", 1);
        snprintf(gmem, sizeof(gmem), "%s:", cnt);
    }
    spec_range_text(cnt, sizeof(cnt), &sp->resources.gpu.count, "", 0);
    snprintf(buf, n, "%sxCPU, %s, %s (disk), %s%s%s", cpu, mem, disk, names,
             gmem, cnt);
}


char *
spec_script(const ds_spec_t *sp)
{
    size_t  i, len;
    char   *s, *p;

    /* stop at the first failing command, as one script does in dstack */
    len = sizeof("set -e\n");
    for (i = 0; i < sp->n_commands; i++) {
        len += strlen(sp->commands[i]) + 1;
    }
    s = xcalloc(1, len);
    p = s;
    p += sprintf(p, "set -e\n");
    for (i = 0; i < sp->n_commands; i++) {
        p += sprintf(p, "%s\n", sp->commands[i]);
    }
    return s;
}


const char *
spec_method_name(int method)
{
    switch (method) {
    case DS_SPEC_METHOD_POST:   return "POST";
    case DS_SPEC_METHOD_PUT:    return "PUT";
    case DS_SPEC_METHOD_DELETE: return "DELETE";
    case DS_SPEC_METHOD_PATCH:  return "PATCH";
    case DS_SPEC_METHOD_HEAD:   return "HEAD";
    default:                    return "GET";
    }
}
