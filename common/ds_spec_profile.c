/*
 * The profile's fields: where and how a service may run (spot_policy,
 * max_price, backends, regions, fleets, retry and gateway).
 *
 * Many of dstack's profile fields are about clouds: what to provision,
 * where, at what price, when to let it go.  Our hosts are the server
 * and the SSH fleets' machines, never provisioned, so these fields mean
 * nothing here.  A file written for dstack should still run, so they
 * are accepted with a warning that says why they are ignored; their
 * values are checked as dstack checks them, since a malformed field is
 * a mistake whatever it means, and kept in the normalized spec so that
 * the daemon, validating it again, gives the same warnings.
 */

#include <stdint.h>
#include <string.h>

#include "ds_spec_impl.h"


const ds_venum_t  ds_spec_spot_policies =
    DS_VENUM("spot_policy", "on-demand", "spot", "auto");


/* on-demand and auto are what every host here is; spot is ignored */
int
ds_v_f_spot_policy(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    rc = ds_v_f_enum(c, in, &ds_spec_spot_policies, out);
    if (rc != DS_OK) {
        return rc;
    }

    if (strcmp((*out)->valuestring, "spot") == 0) {
        return ds_v_warn(c, in, 1, "ignored: no host here is a spot "
                         "instance; the run gets on-demand ones");
    }
    return DS_OK;
}


int
ds_v_f_max_price(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    rc = ds_v_positive(c, in, "max_price", 1e9, out);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: offers here have no price");
}


static const char *
ds_v_backend_wrong(const char *s)
{
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-_") == strlen(s)
           ? NULL : ": expected lowercase letters, digits, \"-\" or \"_\"";
}


static const char *
ds_v_region_wrong(const char *s)
{
    return ds_v_has_space(s) ? "" : NULL;
}


/*
 * dstack's name for the backend of SSH fleets' hosts is "remote"; ours
 * is "ssh", which offers carry.  Both are accepted, "ssh" kept.
 */
static const char *
ds_v_backend_alias(const char *s)
{
    return strcmp(s, "remote") == 0 ? "ssh" : s;
}


/*
 * A list of distinct names, each one that `wrong` finds nothing wrong
 * with, and normalized by `alias` (NULL: as written); duplicates are
 * found after the aliases, so "ssh" and "remote" are one backend twice.
 */
static int
ds_v_names(ds_vctx_t *c, const cJSON *in, cJSON **out, const char *what,
    ds_vwrong_pt wrong, const char *(*alias)(const char *))
{
    int           i;
    size_t        old;
    const char   *s, *why;
    const cJSON  *it, *p;
    ds_qbuf_t     qb;

    if (!cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "expected a list of %ss, got %s", what,
                         ds_tname(in));
    }

    if (cJSON_GetArraySize(in) > DS_SPEC_LIST_MAX) {
        return ds_v_fail(c, in, 0, "too many %ss (more than %d)", what,
                         DS_SPEC_LIST_MAX);
    }

    *out = cJSON_CreateArray();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    for (i = 0, it = in->child; it; i++, it = it->next) {
        old = ds_v_pushi(c, i);

        if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
            ds_v_fail(c, it, 0, "expected a %s name, got %s", what,
                      cJSON_IsString(it) ? "an empty string" : ds_tname(it));
            ds_v_pop(c, old);
            return DS_EINVAL;
        }

        why = wrong(it->valuestring);
        if (why) {
            ds_v_fail(c, it, 0, "invalid %s name %s%s", what,
                      ds_q(&qb, it->valuestring), why);
            ds_v_pop(c, old);
            return DS_EINVAL;
        }

        s = alias ? alias(it->valuestring) : it->valuestring;

        for (p = (*out)->child; p; p = p->next) {
            if (strcmp(p->valuestring, s) == 0) {
                ds_v_fail(c, it, 0, "duplicate %s %s", what,
                          ds_q(&qb, it->valuestring));
                ds_v_pop(c, old);
                return DS_EINVAL;
            }
        }

        ds_v_pop(c, old);

        if (ds_v_append(c, *out, cJSON_CreateString(s)) != DS_OK) {
            return DS_ERROR;
        }
    }

    return DS_OK;
}


const char *const  ds_spec_our_backends[3] = { "local", "container", "ssh" };


int
ds_spec_is_our_backend(const char *name)
{
    size_t  i;

    name = ds_v_backend_alias(name);
    for (i = 0; i < 3; i++) {
        if (strcmp(name, ds_spec_our_backends[i]) == 0) {
            return 1;
        }
    }
    return 0;
}


/*
 * dstack's cloud backends (aws, gcp, runpod, ...) are not ours: each is
 * ignored with a warning, and the list keeps them (the daemon warns
 * again).  When none of ours remains, the user brought a file written
 * for clouds to run it here: refusing it would refuse every such file,
 * so the list is ignored as a whole and any backend of ours may run it
 * (the typed view then has no list).
 */
int
ds_v_f_backends(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           i, rc, ours;
    size_t        old;
    const cJSON  *it;
    ds_qbuf_t     qb;

    rc = ds_v_names(c, in, out, "backend", ds_v_backend_wrong,
                   ds_v_backend_alias);
    if (rc != DS_OK) {
        return rc;
    }

    ours = 0;

    for (i = 0, it = in->child; it; i++, it = it->next) {
        if (ds_spec_is_our_backend(it->valuestring)) {
            ours++;
            continue;
        }

        old = ds_v_pushi(c, i);
        if (ds_v_warn(c, it, 0, "ignored: %s is not a backend here (local, "
                      "container, ssh)", ds_q(&qb, it->valuestring))
            != DS_OK)
        {
            return DS_ERROR;
        }
        ds_v_pop(c, old);
    }

    if (ours == 0 && in->child) {
        return ds_v_warn(c, in, 1, "ignored: none of its backends is one "
                         "of ours (local, container, ssh), so any of ours "
                         "may run it");
    }
    return DS_OK;
}


int
ds_v_f_regions(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    rc = ds_v_names(c, in, out, "region", ds_v_region_wrong, NULL);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: hosts here are in no cloud "
                     "region (to choose SSH fleets, use \"fleets\")");
}


/* the SSH fleets a run may go to, by name (dstack's "fleets") */
int
ds_v_f_fleets(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_names(c, in, out, "fleet", ds_v_run_name_wrong, NULL);
}


const char *const  ds_spec_events[3] = {
    "no-capacity", "interruption", "error"
};


static int
ds_v_f_events(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           i, rc;
    size_t        old, k;
    unsigned      seen;
    const cJSON  *it;
    ds_qbuf_t     qb;

    if (!cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "expected a list of events, got %s",
                         ds_tname(in));
    }

    if (in->child == NULL) {
        return ds_v_fail(c, in, 0, "expected at least one event (omit "
                         "\"on_events\" to retry on all)");
    }

    seen = 0;

    for (i = 0, it = in->child; it; i++, it = it->next) {
        old = ds_v_pushi(c, i);
        rc = ds_v_enum(c, it, "event", ds_spec_events, 3, &k);
        if (rc == DS_OK && (seen & (1u << k))) {
            rc = ds_v_fail(c, it, 0, "duplicate event %s",
                           ds_q(&qb, ds_spec_events[k]));
        }
        ds_v_pop(c, old);

        if (rc != DS_OK) {
            return rc;
        }
        seen |= 1u << k;
    }

    *out = cJSON_CreateArray();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    for (k = 0; k < 3; k++) {
        if ((seen & (1u << k))
            && ds_v_append(c, *out, cJSON_CreateString(ds_spec_events[k]))
               != DS_OK)
        {
            return DS_ERROR;
        }
    }

    return DS_OK;
}


static const ds_vfield_t  ds_retry_fields[] = {
    { "on_events", ds_v_f_events, 0, NULL },
    { "duration", ds_v_f_duration, 0, NULL },
};


/* false -> null; true -> every event for an hour */
int
ds_v_f_retry(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[2] = { NULL, NULL };
    cJSON  *empty;

    if (cJSON_IsFalse(in)) {
        return DS_OK;
    }

    if (cJSON_IsTrue(in)) {
        rc = DS_OK;

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_object(c, in, ds_retry_fields, 2, NULL, s);

    } else {
        return ds_v_fail(c, in, 0, "expected true, false or a mapping, "
                         "got %s", ds_tname(in));
    }

    if (rc == DS_OK && s[0] == NULL) {
        empty = cJSON_CreateArray();
        rc = empty ? DS_OK : ds_v_oom(c);
        if (rc == DS_OK) {
            cJSON_AddItemToArray(empty, cJSON_CreateString("no-capacity"));
            cJSON_AddItemToArray(empty, cJSON_CreateString("interruption"));
            cJSON_AddItemToArray(empty, cJSON_CreateString("error"));
            s[0] = empty;
            if (cJSON_GetArraySize(empty) != 3) {
                rc = ds_v_oom(c);
            }
        }
    }

    if (rc == DS_OK && s[1] == NULL) {
        s[1] = cJSON_CreateNumber(DS_SPEC_DEFAULT_RETRY);
        rc = s[1] ? DS_OK : ds_v_oom(c);
    }

    return ds_v_finish(c, ds_retry_fields, 2, s, rc, out);
}


int
ds_v_f_gateway(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (cJSON_IsBool(in)) {
        return ds_v_f_bool(c, in, out);
    }

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected true, false or a gateway name, "
                         "got %s", ds_tname(in));
    }

    return ds_v_f_str(c, in, out);
}


/* ---- dstack's fields for clouds: checked, then ignored ------------------ */

/* dstack's TAG_KEY_PATTERN and TAG_VALUE_PATTERN */
#define DS_TAG_KEY_CHARS   "abcdefghijklmnopqrstuvwxyz"                     \
                           "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
#define DS_TAG_VALUE_CHARS DS_TAG_KEY_CHARS " .:/=+@"
#define DS_TAG_KEY_MAX     60
#define DS_TAG_VALUE_MAX   256


static int
ds_v_tag(ds_vctx_t *c, const cJSON *m)
{
    size_t     n;
    ds_qbuf_t  qb;

    n = strlen(m->string);
    if (n == 0 || n > DS_TAG_KEY_MAX
        || strspn(m->string, DS_TAG_KEY_CHARS) != n)
    {
        return ds_v_fail(c, m, 1, "invalid tag key %s: expected 1 to %d "
                         "letters, digits, \"_\" or \"-\"",
                         ds_q(&qb, m->string), DS_TAG_KEY_MAX);
    }

    if (!cJSON_IsString(m)) {
        return ds_v_fail(c, m, 0, "expected a string, got %s",
                         ds_tname(m));
    }

    n = strlen(m->valuestring);
    if (n > DS_TAG_VALUE_MAX
        || strspn(m->valuestring, DS_TAG_VALUE_CHARS) != n)
    {
        return ds_v_fail(c, m, 0, "invalid tag value %s: expected at most "
                         "%d letters, digits, spaces or any of "
                         "\"._:/=+-@\"", ds_q(&qb, m->valuestring),
                         DS_TAG_VALUE_MAX);
    }

    return DS_OK;
}


int
ds_v_f_tags(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           rc;
    size_t        old;
    const cJSON  *m;

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a mapping of tag names to "
                         "strings, got %s", ds_tname(in));
    }

    if (cJSON_GetArraySize(in) > DS_SPEC_LIST_MAX) {
        return ds_v_fail(c, in, 0, "too many tags (more than %d)",
                         DS_SPEC_LIST_MAX);
    }

    for (m = in->child; m; m = m->next) {
        if (ds_v_dups(c, in, m) != DS_OK) {
            return DS_EINVAL;
        }
        old = ds_v_push(c, m->string);
        rc = ds_v_tag(c, m);
        ds_v_pop(c, old);
        if (rc != DS_OK) {
            return rc;
        }
    }

    *out = cJSON_Duplicate(in, 1);
    if (*out == NULL) {
        return ds_v_oom(c);
    }
    return ds_v_warn(c, in, 1, "ignored: there are no cloud resources "
                     "here to tag");
}


/* dstack's RUN_PRIORITY_MIN..RUN_PRIORITY_MAX */
int
ds_v_f_priority(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    rc = ds_v_f_uint(c, in, 0, 100, out);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: runs here are placed when "
                     "applied, never queued behind others");
}


int
ds_v_f_idle_duration(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    /* dstack's OptionalIdleDuration also takes -1 for "off" */
    if (cJSON_IsNumber(in) && in->valuedouble == -1) {
        *out = cJSON_CreateString("off");
        rc = *out ? DS_OK : ds_v_oom(c);

    } else {
        rc = ds_v_f_offable(c, in, out);
    }

    if (rc != DS_OK) {
        return rc;
    }

    return ds_v_warn(c, in, 1, "ignored: hosts here are never "
                     "provisioned, so none is terminated when idle");
}


static const ds_venum_t  ds_startup_orders =
    DS_VENUM("startup_order", "any", "master-first", "workers-first");
static const ds_venum_t  ds_stop_criteria =
    DS_VENUM("stop_criteria", "all-done", "master-done");


/* a service is one node per replica: multi-node orders mean nothing */
int
ds_v_f_startup_order(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    rc = ds_v_f_enum(c, in, &ds_startup_orders, out);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: it orders the nodes of "
                     "multi-node tasks; a service's replicas are one node "
                     "each");
}


int
ds_v_f_stop_criteria(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    rc = ds_v_f_enum(c, in, &ds_stop_criteria, out);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: it ends multi-node tasks; a "
                     "service runs until stopped");
}


/* [{"backend": "aws", ...}]: each a mapping naming its backend */
static int
ds_v_backend_option(ds_vctx_t *c, const cJSON *in, const cJSON *done,
    cJSON **out)
{
    const cJSON  *b;

    (void) done;

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a mapping with \"backend\", "
                         "got %s", ds_tname(in));
    }
    b = cJSON_GetObjectItemCaseSensitive(in, "backend");
    if (!cJSON_IsString(b) || b->valuestring[0] == '\0') {
        return ds_v_fail(c, in, 0, "missing required field \"backend\"");
    }

    *out = cJSON_Duplicate(in, 1);
    return *out ? DS_OK : ds_v_oom(c);
}


int
ds_v_f_backend_options(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    rc = ds_v_list(c, in, "backend options", "a list of backend options",
                   DS_SPEC_LIST_MAX, ds_v_backend_option, out);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: they are options of cloud "
                     "backends");
}


static const ds_venum_t  ds_creation_policies =
    DS_VENUM("creation_policy", "reuse", "reuse-or-create");


int
ds_v_f_creation_policy(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    rc = ds_v_f_enum(c, in, &ds_creation_policies, out);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: runs here always reuse hosts "
                     "(the server's and SSH fleets'), never create any");
}


int
ds_v_f_instance_types(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    rc = ds_v_names(c, in, out, "instance type", ds_v_region_wrong, NULL);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: hosts here are no cloud "
                     "instance types (ask for resources instead)");
}


int
ds_v_f_availability_zones(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    rc = ds_v_names(c, in, out, "availability zone", ds_v_region_wrong,
                   NULL);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: hosts here are in no cloud "
                     "availability zone");
}


int
ds_v_f_reservation(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    rc = ds_v_f_str(c, in, out);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: there are no cloud reservations "
                     "here");
}


/*
 * Five fields of a crontab line, each of digits and "*,-/" or names
 * (as apscheduler's from_crontab takes them), or a "@" shorthand is
 * not taken by dstack either.  The check is of the shape only.
 */
static const char *
ds_v_cron_wrong(const char *s)
{
    int          fields;
    const char  *p;

    fields = 0;
    for (p = s; *p; /* void */) {
        while (*p == ' ') {
            p++;
        }
        if (*p == '\0') {
            break;
        }
        fields++;
        while (*p && *p != ' ') {
            if (strchr("0123456789*,-/?LW#abcdefghijklmnopqrstuvwxyz"
                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ", *p) == NULL)
            {
                return ": expected five fields of digits, names and "
                       "\"*,-/\"";
            }
            p++;
        }
    }

    return fields == 5 ? NULL : ": expected five fields (minute hour "
                                "day month weekday)";
}


static int
ds_v_cron(ds_vctx_t *c, const cJSON *in, const cJSON *done, cJSON **out)
{
    (void) done;
    return ds_v_f_checked(c, in, "cron expression", ds_v_cron_wrong, out);
}


static int
ds_v_f_cron(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *one;

    if (cJSON_IsString(in)) {
        one = NULL;
        rc = ds_v_cron(c, in, NULL, &one);
        if (rc != DS_OK) {
            return rc;
        }
        *out = cJSON_CreateArray();
        if (*out == NULL) {
            cJSON_Delete(one);
            return ds_v_oom(c);
        }
        return ds_v_append(c, *out, one);
    }

    if (cJSON_IsArray(in) && in->child == NULL) {
        return ds_v_fail(c, in, 0, "expected at least one cron expression");
    }

    return ds_v_list(c, in, "cron expressions", "a cron expression or a "
                     "list of them", DS_SPEC_LIST_MAX, ds_v_cron, out);
}


static const ds_vfield_t  ds_schedule_fields[] = {
    { "cron", ds_v_f_cron, DS_VF_REQUIRED, NULL },
};


int
ds_v_f_schedule(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[1] = { NULL };

    rc = ds_v_object(c, in, ds_schedule_fields, 1, NULL, s);
    rc = ds_v_finish(c, ds_schedule_fields, 1, s, rc, out);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: runs here start when applied; "
                     "there is no scheduler");
}


static int
ds_v_f_percent(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_uint(c, in, 0, 100, out);
}


/* dstack's MIN_UTILIZATION_TIME_WINDOW */
#define DS_SPEC_UTIL_WINDOW_MIN  300


static int
ds_v_f_time_window(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int       rc;
    uint64_t  secs;

    rc = ds_v_duration(c, in, &secs);
    if (rc != DS_OK) {
        return rc;
    }
    if (secs < DS_SPEC_UTIL_WINDOW_MIN) {
        return ds_v_fail(c, in, 0, "time_window must be at least 5m, got "
                         "%llus", (unsigned long long) secs);
    }

    *out = cJSON_CreateNumber((double) secs);
    return *out ? DS_OK : ds_v_oom(c);
}


static const ds_vfield_t  ds_utilization_fields[] = {
    { "min_gpu_utilization", ds_v_f_percent, DS_VF_REQUIRED, NULL },
    { "time_window", ds_v_f_time_window, DS_VF_REQUIRED, NULL },
};


int
ds_v_f_utilization_policy(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[2] = { NULL, NULL };

    rc = ds_v_object(c, in, ds_utilization_fields, 2, NULL, s);
    rc = ds_v_finish(c, ds_utilization_fields, 2, s, rc, out);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_warn(c, in, 1, "ignored: runs here are not stopped for "
                     "low GPU utilization");
}
