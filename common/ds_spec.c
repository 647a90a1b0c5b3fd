/*
 * .dstack.yml -> the normalized service spec of ds_spec.h.
 *
 * Two stages.  The loader (ds_yaml.c) turns the file into a cJSON tree
 * and remembers where each node was, and for plain scalars read as
 * numbers or booleans, their text ("3.10" stays "3.10" for python and
 * env values).  The validator walks a tree against the schema and
 * builds the normalized tree.  The daemon runs the validator alone,
 * without locations: its errors then name the field's path instead of
 * a line and column.
 *
 * This file holds the service's own fields and the API; each section's
 * validators are in their ds_spec_<section>.c, the walk they share in
 * ds_spec_check.c and ds_spec_range.c, the typed view in
 * ds_spec_view.c.  Calls go one way: this file -> sections -> walk ->
 * loader.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_spec_impl.h"


/* the public limits are the loader's */
_Static_assert(DS_SPEC_DEPTH_MAX == DS_YAML_DEPTH_MAX, "nesting limit");
_Static_assert(DS_SPEC_NODES_MAX == DS_YAML_NODES_MAX, "node limit");
_Static_assert(DS_SPEC_INPUT_MAX == DS_YAML_INPUT_MAX, "size limit");


/* ---- the service's own fields ------------------------------------------ */

static const char *const  ds_other_types[] = {
    "task", "dev-environment", "fleet", "gateway", "volume"
};


static int
ds_v_f_type(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    size_t                    i;
    static const char *const  service[] = { "service" };
    ds_qbuf_t                 qb;

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected \"service\", got %s",
                         ds_tname(in));
    }

    if (strcmp(in->valuestring, "service") == 0) {
        *out = cJSON_CreateString("service");
        return *out ? DS_OK : ds_v_oom(c);
    }

    for (i = 0; i < DS_NFIELDS(ds_other_types); i++) {
        if (strcmp(in->valuestring, ds_other_types[i]) == 0) {
            return ds_v_fail(c, in, 0, "type %s is not supported: only "
                             "services", ds_q(&qb, in->valuestring));
        }
    }

    if (ds_suggest(in->valuestring, service, 1)) {
        return ds_v_fail(c, in, 0, "unknown type %s (did you mean "
                         "\"service\"?)", ds_q(&qb, in->valuestring));
    }

    return ds_v_fail(c, in, 0, "unknown type %s: expected \"service\"",
                     ds_q(&qb, in->valuestring));
}


static int
ds_v_f_https(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    ds_qbuf_t  qb;

    if (cJSON_IsString(in) && strcmp(in->valuestring, "auto") == 0) {
        *out = cJSON_CreateString("auto");
        return *out ? DS_OK : ds_v_oom(c);
    }

    if (cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "invalid https %s: expected true, false "
                         "or \"auto\"", ds_q(&qb, in->valuestring));
    }

    if (!cJSON_IsBool(in)) {
        return ds_v_fail(c, in, 0, "expected true, false or \"auto\", "
                         "got %s", ds_tname(in));
    }

    return ds_v_f_bool(c, in, out);
}

/* ---- the service --------------------------------------------------------- */

/*
 * The normalized spec has the fields before S_DOCKER; "docker" is last
 * because it is only checked (false is dropped, true refused).
 */
enum { S_TYPE, S_NAME, S_PORT, S_COMMANDS, S_IMAGE, S_PYTHON, S_ENV,
       S_WORKING_DIR, S_ENTRYPOINT, S_SHELL, S_USER, S_PRIVILEGED,
       S_REGISTRY_AUTH, S_VOLUMES, S_FILES, S_RESOURCES,
       S_REPLICAS, S_SCALING, S_AUTH, S_HTTPS, S_MODEL, S_RATE_LIMITS,
       S_PROBES, S_SPOT_POLICY, S_MAX_PRICE, S_BACKENDS, S_REGIONS, S_FLEETS,
       S_RETRY,
       S_MAX_DURATION, S_STOP_DURATION, S_STRIP_PREFIX, S_GATEWAY,
       S_TAGS, S_PRIORITY, S_IDLE_DURATION, S_CREATION_POLICY,
       S_INSTANCE_TYPES, S_AVAILABILITY_ZONES, S_RESERVATION, S_SCHEDULE,
       S_UTILIZATION_POLICY, S_STARTUP_ORDER, S_STOP_CRITERIA,
       S_BACKEND_OPTIONS, S_DOCKER,
       S_N };

static const ds_vfield_t  ds_service_fields[S_N] = {
    { "type", ds_v_f_type, DS_VF_REQUIRED, NULL },
    { "name", ds_v_f_name, 0, NULL },
    { "port", ds_v_f_port, DS_VF_REQUIRED, NULL },
    { "commands", ds_v_f_commands, 0, NULL },
    { "image", ds_v_f_image, 0, NULL },
    { "python", ds_v_f_python, 0, NULL },
    { "env", ds_v_f_env, 0, NULL },
    { "working_dir", ds_v_f_working_dir, 0, NULL },
    { "entrypoint", ds_v_f_text, 0, NULL },
    { "shell", ds_v_f_shell, 0, NULL },
    { "user", ds_v_f_user, 0, NULL },
    { "privileged", ds_v_f_bool, 0, NULL },
    { "registry_auth", ds_v_f_registry_auth, 0, NULL },
    { "volumes", ds_v_f_volumes, 0, NULL },
    { "files", ds_v_f_files, 0, NULL },
    { "resources", ds_v_f_resources, 0, NULL },
    { "replicas", ds_v_f_replicas, 0, NULL },
    { "scaling", ds_v_f_scaling, 0, NULL },
    { "auth", ds_v_f_bool, 0, NULL },
    { "https", ds_v_f_https, 0, NULL },
    { "model", ds_v_f_model, 0, NULL },
    { "rate_limits", ds_v_f_rate_limits, 0, NULL },
    { "probes", ds_v_f_probes, 0, NULL },
    { "spot_policy", ds_v_f_spot_policy, 0, NULL },
    { "max_price", ds_v_f_max_price, 0, NULL },
    { "backends", ds_v_f_backends, 0, NULL },
    { "regions", ds_v_f_regions, 0, NULL },
    { "fleets", ds_v_f_fleets, 0, NULL },
    { "retry", ds_v_f_retry, 0, NULL },
    { "max_duration", ds_v_f_offable, 0, NULL },
    { "stop_duration", ds_v_f_offable, 0, NULL },
    { "strip_prefix", ds_v_f_bool, 0, NULL },
    { "gateway", ds_v_f_gateway, 0, NULL },
    /* dstack's fields for clouds: checked, kept, ignored with a warning */
    { "tags", ds_v_f_tags, 0, NULL },
    { "priority", ds_v_f_priority, 0, NULL },
    { "idle_duration", ds_v_f_idle_duration, 0, NULL },
    { "creation_policy", ds_v_f_creation_policy, 0, NULL },
    { "instance_types", ds_v_f_instance_types, 0, NULL },
    { "availability_zones", ds_v_f_availability_zones, 0, NULL },
    { "reservation", ds_v_f_reservation, 0, NULL },
    { "schedule", ds_v_f_schedule, 0, NULL },
    { "utilization_policy", ds_v_f_utilization_policy, 0, NULL },
    { "startup_order", ds_v_f_startup_order, 0, NULL },
    { "stop_criteria", ds_v_f_stop_criteria, 0, NULL },
    { "backend_options", ds_v_f_backend_options, 0, NULL },
    { "docker", ds_v_f_docker, 0, NULL },
};

/*
 * dstack fields we refuse by name rather than ignore, and misplaced
 * ones: they would change what runs (repos, nvcc, instances, groups),
 * so ignoring them would run something else than the file says.
 */
static const ds_vunsup_t  ds_service_unsup[] = {
    { "nvcc", "is not supported yet" },
    { "repos", "is not supported yet" },
    { "dstack", "is not supported yet" },
    { "single_branch", "is not supported yet" },
    { "instances", "is not supported yet" },
    { "groups", "(replica groups) is not supported yet" },
    { "cpu", "belongs under \"resources\"" },
    { "memory", "belongs under \"resources\"" },
    { "disk", "belongs under \"resources\"" },
    { "gpu", "belongs under \"resources\"" },
    { "shm_size", "belongs under \"resources\"" },
    { "setup", "is deprecated: put the lines in \"commands\"" },
    { "home_dir", "is deprecated and not supported" },
    { NULL, NULL }
};


static int
ds_v_service(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           rc, ranged;
    size_t        old;
    const cJSON  *t, *r, *m;
    cJSON        *s[S_N] = { NULL };
    ds_vrange_t   one;
    ds_qbuf_t     qb;

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a mapping (a service "
                         "configuration), got %s", ds_tname(in));
    }

    /* the type first: for a task, its other keys are no news */
    t = cJSON_GetObjectItemCaseSensitive(in, "type");
    if (t == NULL) {
        return ds_v_fail(c, in, 0, "missing required field \"type\" "
                         "(expected \"type: service\")");
    }

    old = ds_v_push(c, "type");
    rc = ds_v_f_type(c, t, &s[S_TYPE]);
    ds_v_pop(c, old);
    ds_v_free_slots(s, 1);

    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_v_object(c, in, ds_service_fields, S_N, ds_service_unsup, s);
    if (rc != DS_OK) {
        goto done;
    }

    if (s[S_PYTHON] && s[S_IMAGE]) {
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(in, "python"), 1,
                       "\"python\" and \"image\" are mutually exclusive");
        goto done;
    }

    /* dstack: relative working dirs are deprecated, and an image's
       WORKDIR is no base to resolve one against */
    if (s[S_IMAGE] && s[S_WORKING_DIR]
        && s[S_WORKING_DIR]->valuestring[0] != '/')
    {
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(in,
                                                           "working_dir"),
                       0, "invalid working_dir %s: must be an absolute path "
                       "with \"image\"",
                       ds_q(&qb, s[S_WORKING_DIR]->valuestring));
        goto done;
    }

    if (s[S_IMAGE] == NULL
        && (s[S_COMMANDS] == NULL || s[S_COMMANDS]->child == NULL))
    {
        rc = ds_v_fail(c, in, 0, "either \"commands\" or \"image\" must be "
                       "set");
        goto done;
    }

    memset(&one, 0, sizeof(one));
    one.has_min = one.has_max = 1;
    one.min = one.max = 1;

    if (s[S_REPLICAS] == NULL
        && (rc = ds_v_range_json(c, &one, &s[S_REPLICAS])) != DS_OK)
    {
        goto done;
    }

    r = s[S_REPLICAS];
    ranged = cJSON_GetObjectItemCaseSensitive(r, "min")->valuedouble
             != cJSON_GetObjectItemCaseSensitive(r, "max")->valuedouble;

    if (ranged && s[S_SCALING] == NULL) {
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(in, "replicas"), 0,
                       "replicas set to a range requires \"scaling\"");
        goto done;
    }

    if (!ranged && s[S_SCALING]) {
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(in, "scaling"), 1,
                       "\"scaling\" requires replicas set to a range (e.g. "
                       "1..4)");
        goto done;
    }

    /* the time to first token is measured on the model endpoint only */
    m = cJSON_GetObjectItemCaseSensitive(s[S_SCALING], "metric");
    if (s[S_MODEL] == NULL && cJSON_IsString(m)
        && strcmp(m->valuestring, "ttft") == 0)
    {
        old = ds_v_push(c, "scaling");
        ds_v_push(c, "metric");
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(
                              cJSON_GetObjectItemCaseSensitive(in,
                                  "scaling"), "metric"), 0,
                       "metric ttft requires \"model\" (the time to first "
                       "token is measured on the model endpoint)");
        ds_v_pop(c, old);
        goto done;
    }

    if (s[S_RESOURCES] == NULL
        && (rc = ds_v_f_resources(c, NULL, &s[S_RESOURCES])) != DS_OK)
    {
        goto done;
    }

    if (s[S_COMMANDS] == NULL) {
        s[S_COMMANDS] = cJSON_CreateArray();
    }
    if (s[S_ENV] == NULL) {
        s[S_ENV] = cJSON_CreateObject();
    }
    if (s[S_AUTH] == NULL) {
        s[S_AUTH] = cJSON_CreateTrue();
    }
    if (s[S_HTTPS] == NULL) {
        s[S_HTTPS] = cJSON_CreateTrue();
    }
    if (s[S_RATE_LIMITS] == NULL) {
        s[S_RATE_LIMITS] = cJSON_CreateArray();
    }
    if (s[S_SPOT_POLICY] == NULL) {
        s[S_SPOT_POLICY] = cJSON_CreateString("on-demand");
    }
    if (s[S_MAX_DURATION] == NULL) {
        s[S_MAX_DURATION] = cJSON_CreateString("off");
    }
    if (s[S_STOP_DURATION] == NULL) {
        s[S_STOP_DURATION] = cJSON_CreateNumber(DS_SPEC_DEFAULT_STOP);
    }
    if (s[S_STRIP_PREFIX] == NULL) {
        s[S_STRIP_PREFIX] = cJSON_CreateTrue();
    }
    if (s[S_PRIVILEGED] == NULL) {
        s[S_PRIVILEGED] = cJSON_CreateFalse();
    }
    if (s[S_VOLUMES] == NULL) {
        s[S_VOLUMES] = cJSON_CreateArray();
    }
    if (s[S_FILES] == NULL) {
        s[S_FILES] = cJSON_CreateArray();
    }

    if (s[S_COMMANDS] == NULL || s[S_ENV] == NULL || s[S_AUTH] == NULL
        || s[S_HTTPS] == NULL || s[S_RATE_LIMITS] == NULL
        || s[S_SPOT_POLICY] == NULL || s[S_MAX_DURATION] == NULL
        || s[S_STOP_DURATION] == NULL || s[S_STRIP_PREFIX] == NULL
        || s[S_PRIVILEGED] == NULL || s[S_VOLUMES] == NULL
        || s[S_FILES] == NULL)
    {
        rc = ds_v_oom(c);
        goto done;
    }

done:

    ds_v_free_slots(s + S_DOCKER, S_N - S_DOCKER);
    return ds_v_finish(c, ds_service_fields, S_DOCKER, s, rc, out);
}


/* ---- the API ------------------------------------------------------------- */

int
ds_spec_parse_yaml(const char *filename, const char *text, size_t len,
    cJSON **normalized, ds_err_t *err)
{
    return ds_spec_parse_yaml_warn(filename, text, len, normalized, NULL,
                                   err);
}


/* file_paths: every message names its key, besides the line */
int
ds_spec_parse_yaml_warn(const char *filename, const char *text, size_t len,
    cJSON **normalized, cJSON *warnings, ds_err_t *err)
{
    return ds_v_yaml(filename, text, len, "a service configuration "
                     "(\"type: service\", ...)", 1, ds_v_service,
                     normalized, warnings, err);
}


int
ds_spec_validate_json(const cJSON *in, cJSON **normalized, ds_err_t *err)
{
    return ds_spec_validate_json_warn(in, normalized, NULL, err);
}


int
ds_spec_validate_json_warn(const cJSON *in, cJSON **normalized,
    cJSON *warnings, ds_err_t *err)
{
    ds_vctx_t  c;

    *normalized = NULL;

    memset(&c, 0, sizeof(c));
    c.err = err;
    c.warnings = warnings;

    return ds_v_service(&c, in, normalized);
}


static int
ds_spec_env_set(cJSON *env, const char *name, const char *value,
    ds_err_t *err)
{
    cJSON  *v;

    v = cJSON_CreateString(value);
    if (v == NULL) {
        goto oom;
    }

    if (cJSON_GetObjectItemCaseSensitive(env, name)) {
        if (!cJSON_ReplaceItemInObjectCaseSensitive(env, name, v)) {
            cJSON_Delete(v);
            goto oom;
        }
        return DS_OK;
    }

    if (cJSON_GetArraySize(env) >= DS_SPEC_ENV_MAX) {
        cJSON_Delete(v);
        snprintf(err->msg, sizeof(err->msg), "too many environment "
                 "variables (more than %d)", DS_SPEC_ENV_MAX);
        return DS_EINVAL;
    }

    if (!cJSON_AddItemToObject(env, name, v)) {
        cJSON_Delete(v);
        goto oom;
    }

    return DS_OK;

oom:

    snprintf(err->msg, sizeof(err->msg), "out of memory");
    return DS_ERROR;
}


int
ds_spec_resolve_env(cJSON *normalized, const char *const *overrides,
    char *(*getenv_fn)(const char *), ds_err_t *err)
{
    int          rc;
    char        *name;
    size_t       n;
    cJSON       *env, *it;
    const char  *o, *value;
    ds_qbuf_t    qb;

    if (getenv_fn == NULL) {
        getenv_fn = getenv;
    }

    env = cJSON_GetObjectItemCaseSensitive(normalized, "env");
    if (!cJSON_IsObject(env)) {
        snprintf(err->msg, sizeof(err->msg), "spec.env: expected a mapping");
        return DS_EINVAL;
    }

    for ( /* void */ ; overrides && *overrides; overrides++) {
        o = *overrides;
        n = ds_v_env_name(o);

        if (n == 0 || (o[n] != '\0' && o[n] != '=')) {
            snprintf(err->msg, sizeof(err->msg), "invalid environment "
                     "variable %s: expected NAME=VALUE or NAME",
                     ds_q(&qb, o));
            return DS_EINVAL;
        }

        name = strndup(o, n);
        if (name == NULL) {
            snprintf(err->msg, sizeof(err->msg), "out of memory");
            return DS_ERROR;
        }

        value = o[n] == '=' ? o + n + 1 : getenv_fn(name);

        if (value == NULL) {
            snprintf(err->msg, sizeof(err->msg), "environment variable %s "
                     "is not set", ds_q(&qb, name));
            free(name);
            return DS_EINVAL;
        }

        rc = ds_spec_env_set(env, name, value, err);
        free(name);

        if (rc != DS_OK) {
            return rc;
        }
    }

    for (it = env->child; it; it = it->next) {
        if (!cJSON_IsNull(it)) {
            continue;
        }

        value = getenv_fn(it->string);
        if (value == NULL) {
            snprintf(err->msg, sizeof(err->msg), "environment variable %s "
                     "is not set", ds_q(&qb, it->string));
            return DS_EINVAL;
        }

        /* replacing frees it; the new item takes its place in the list */
        name = strdup(it->string);
        if (name == NULL) {
            snprintf(err->msg, sizeof(err->msg), "out of memory");
            return DS_ERROR;
        }

        rc = ds_spec_env_set(env, name, value, err);
        it = cJSON_GetObjectItemCaseSensitive(env, name);
        free(name);

        if (rc != DS_OK) {
            return rc;
        }
    }

    return DS_OK;
}
