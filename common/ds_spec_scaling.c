/*
 * replicas, a number or a range, and the autoscaler's settings that a
 * range requires.
 */

#include <stdint.h>
#include <string.h>

#include "ds_spec_impl.h"


int
ds_v_f_replicas(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int          rc;
    ds_vrange_t  r;
    ds_qbuf_t    qb;

    if (cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "replica groups are not supported yet");
    }

    rc = ds_v_range(c, in, DS_V_INT, "number of replicas", &r);
    if (rc != DS_OK) {
        return rc;
    }

    if (!r.has_max) {
        if (cJSON_IsString(in)) {
            return ds_v_fail(c, in, 0, "invalid replicas %s: the maximum "
                             "number of replicas is required",
                             ds_q(&qb, in->valuestring));
        }
        return ds_v_fail(c, in, 0, "the maximum number of replicas is "
                         "required");
    }

    if (!r.has_min) {
        r.has_min = 1;
        r.min = 0;
    }

    if (r.max == 0) {
        return ds_v_fail(c, in, 0, "the maximum number of replicas must be "
                         "at least 1");
    }

    if (r.max > DS_REPLICAS_MAX) {
        return ds_v_fail(c, in, 0, "too many replicas: %llu (at most %d)",
                         (unsigned long long) r.max, DS_REPLICAS_MAX);
    }

    return ds_v_range_json(c, &r, out);
}


static const ds_venum_t  ds_metrics = DS_VENUM("metric", "rps", "inflight",
                                                  "ttft");

static int
ds_v_f_target(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_positive(c, in, "target", 1e9, out);
}


static int
ds_v_f_window(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    uint64_t  secs;

    if (ds_v_duration(c, in, &secs) != DS_OK) {
        return DS_EINVAL;
    }

    if (secs != 30 && secs != 60 && secs != 300) {
        return ds_v_fail(c, in, 0, "window must be 30s, 60s or 300s, got "
                         "%llus", (unsigned long long) secs);
    }

    *out = cJSON_CreateNumber((double) secs);
    return *out ? DS_OK : ds_v_oom(c);
}


enum { SC_METRIC, SC_TARGET, SC_WINDOW, SC_UP, SC_DOWN, SC_N };

static const ds_vfield_t  ds_scaling_fields[SC_N] = {
    { "metric", NULL, DS_VF_REQUIRED, &ds_metrics },
    { "target", ds_v_f_target, DS_VF_REQUIRED, NULL },
    { "window", ds_v_f_window, 0, NULL },
    { "scale_up_delay", ds_v_f_duration, 0, NULL },
    { "scale_down_delay", ds_v_f_duration, 0, NULL },
};


int
ds_v_f_scaling(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[SC_N] = { NULL };

    rc = ds_v_object(c, in, ds_scaling_fields, SC_N, NULL, s);

    if (rc == DS_OK && s[SC_WINDOW] == NULL) {
        s[SC_WINDOW] = cJSON_CreateNumber(DS_SPEC_DEFAULT_WINDOW);
        rc = s[SC_WINDOW] ? DS_OK : ds_v_oom(c);
    }
    if (rc == DS_OK && s[SC_UP] == NULL) {
        s[SC_UP] = cJSON_CreateNumber(DS_SPEC_DEFAULT_UP);
        rc = s[SC_UP] ? DS_OK : ds_v_oom(c);
    }
    if (rc == DS_OK && s[SC_DOWN] == NULL) {
        s[SC_DOWN] = cJSON_CreateNumber(DS_SPEC_DEFAULT_DOWN);
        rc = s[SC_DOWN] ? DS_OK : ds_v_oom(c);
    }

    return ds_v_finish(c, ds_scaling_fields, SC_N, s, rc, out);
}
