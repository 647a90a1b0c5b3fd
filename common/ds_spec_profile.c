/*
 * The profile's fields: where and how a service may run (spot_policy,
 * max_price, backends, regions, fleets, retry and gateway).
 */

#include <stdint.h>
#include <string.h>

#include "ds_spec_impl.h"


const ds_venum_t  ds_spec_spot_policies =
    DS_VENUM("spot_policy", "on-demand", "spot", "auto");


int
ds_v_f_max_price(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_positive(c, in, "max_price", 1e9, out);
}


static const char *
ds_v_backend_wrong(const char *s)
{
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-_") == strlen(s)
           ? NULL : "";
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


int
ds_v_f_backends(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_names(c, in, out, "backend", ds_v_backend_wrong,
                      ds_v_backend_alias);
}


int
ds_v_f_regions(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_names(c, in, out, "region", ds_v_region_wrong, NULL);
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
