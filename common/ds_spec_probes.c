/*
 * probes: the HTTP checks that tell a replica ready, with dstack's
 * defaults for what a probe leaves out.
 */

#include <stdint.h>
#include <string.h>

#include "ds_spec_impl.h"


static const ds_venum_t  ds_probe_types = DS_VENUM("probe type", "http");


static int
ds_v_f_url(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    static const ds_vpath_t  url = {
        "url", "a URL path (e.g. \"/health\")", "",
        "spaces or control characters", DS_SPEC_URL_MAX
    };

    return ds_v_path(c, in, &url, out);
}


const ds_venum_t  ds_spec_methods =
    DS_VENUM("method", "get", "post", "put", "delete", "patch", "head");




static const char *
ds_v_header_name_wrong(const char *s)
{
    size_t  n;

    n = strlen(s);
    return n > DS_SPEC_HEADER_NAME_MAX
           || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789!#$%&'*+-.^_`|~") != n
           ? "" : NULL;
}


/* an HTTP token (RFC 9110) */
static int
ds_v_f_header_name(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "header name", ds_v_header_name_wrong, out);
}


static int
ds_v_f_header_value(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    char         buf[64];
    const char  *s;
    ds_qbuf_t    qb;

    if (ds_v_text(c, in, &s, buf, sizeof(buf)) != 0) {
        return ds_v_fail(c, in, 0, "expected a string, got %s",
                         ds_tname(in));
    }

    if (s[0] == '\0' || strlen(s) > DS_SPEC_HEADER_VALUE_MAX
        || ds_v_has_ctl(s))
    {
        return ds_v_fail(c, in, 0, "invalid header value %s: expected 1 to "
                         "%d characters, no line breaks", ds_q(&qb, s),
                         DS_SPEC_HEADER_VALUE_MAX);
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


static const ds_vfield_t  ds_header_fields[] = {
    { "name", ds_v_f_header_name, DS_VF_REQUIRED, NULL },
    { "value", ds_v_f_header_value, DS_VF_REQUIRED, NULL },
};


static int
ds_v_header(ds_vctx_t *c, const cJSON *in, const cJSON *done, cJSON **out)
{
    int     rc;
    cJSON  *s[2];

    (void) done;
    s[0] = s[1] = NULL;

    rc = ds_v_object(c, in, ds_header_fields, 2, NULL, s);
    return ds_v_finish(c, ds_header_fields, 2, s, rc, out);
}


static int
ds_v_f_headers(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_list(c, in, "headers", "a list of {name, value}",
                     DS_SPEC_HEADERS_MAX, ds_v_header, out);
}


static int
ds_v_f_body(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a string, got %s",
                         ds_tname(in));
    }

    if (in->valuestring[0] == '\0'
        || strlen(in->valuestring) > DS_SPEC_BODY_MAX)
    {
        return ds_v_fail(c, in, 0, "body must have 1 to %d characters",
                         DS_SPEC_BODY_MAX);
    }

    *out = cJSON_CreateString(in->valuestring);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_probe_secs(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    uint64_t  secs;

    if (ds_v_duration(c, in, &secs) != DS_OK) {
        return DS_EINVAL;
    }

    if (secs < 1) {
        return ds_v_fail(c, in, 0, "expected at least 1s, got 0");
    }

    *out = cJSON_CreateNumber((double) secs);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_ready_after(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_uint(c, in, 1, 1000000, out);
}


enum { P_TYPE, P_URL, P_METHOD, P_HEADERS, P_BODY, P_TIMEOUT, P_INTERVAL,
       P_READY_AFTER, P_UNTIL_READY, P_N };

static const ds_vfield_t  ds_probe_fields[P_N] = {
    { "type", NULL, DS_VF_REQUIRED, &ds_probe_types },
    { "url", ds_v_f_url, 0, NULL },
    { "method", NULL, 0, &ds_spec_methods },
    { "headers", ds_v_f_headers, 0, NULL },
    { "body", ds_v_f_body, 0, NULL },
    { "timeout", ds_v_f_probe_secs, 0, NULL },
    { "interval", ds_v_f_probe_secs, 0, NULL },
    { "ready_after", ds_v_f_ready_after, 0, NULL },
    { "until_ready", ds_v_f_bool, 0, NULL },
};


static int
ds_v_probe(ds_vctx_t *c, const cJSON *in, const cJSON *done, cJSON **out)
{
    int           rc, i;
    const char   *method;
    const cJSON  *prev;
    cJSON        *s[P_N] = { NULL };

    rc = ds_v_object(c, in, ds_probe_fields, P_N, NULL, s);
    if (rc != DS_OK) {
        goto done;
    }

    if (s[P_URL] == NULL) {
        s[P_URL] = cJSON_CreateString("/");
    }
    if (s[P_METHOD] == NULL) {
        s[P_METHOD] = cJSON_CreateString("get");
    }
    if (s[P_HEADERS] == NULL) {
        s[P_HEADERS] = cJSON_CreateArray();
    }
    if (s[P_TIMEOUT] == NULL) {
        s[P_TIMEOUT] = cJSON_CreateNumber(DS_SPEC_PROBE_TIMEOUT);
    }
    if (s[P_INTERVAL] == NULL) {
        s[P_INTERVAL] = cJSON_CreateNumber(DS_SPEC_PROBE_INTERVAL);
    }
    if (s[P_READY_AFTER] == NULL) {
        s[P_READY_AFTER] = cJSON_CreateNumber(1);
    }
    if (s[P_UNTIL_READY] == NULL) {
        s[P_UNTIL_READY] = cJSON_CreateFalse();
    }

    for (i = 0; i < P_N; i++) {
        if (s[i] == NULL && i != P_BODY) {
            rc = ds_v_oom(c);
            goto done;
        }
    }

    method = s[P_METHOD]->valuestring;
    if (s[P_BODY]
        && (strcmp(method, "get") == 0 || strcmp(method, "head") == 0))
    {
        rc = ds_v_fail(c, ds_v_get(in, "body"), 0, "a request body is not "
                       "allowed with method %s", method);
        goto done;
    }

    rc = ds_v_assemble(c, ds_probe_fields, P_N, s, out);
    if (rc != DS_OK) {
        goto done;
    }

    for (i = 1, prev = done->child; prev; i++, prev = prev->next) {
        if (cJSON_Compare(prev, *out, 1)) {
            rc = ds_v_fail(c, in, 0, "duplicate probe (the same as probe "
                           "%d)", i);
            cJSON_Delete(*out);
            *out = NULL;
            goto done;
        }
    }

done:

    ds_v_free_slots(s, P_N);
    return rc;
}


int
ds_v_f_probes(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_list(c, in, "probes", "a list of probes",
                     DS_SPEC_PROBES_MAX, ds_v_probe, out);
}
