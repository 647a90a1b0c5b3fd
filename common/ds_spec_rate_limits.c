/*
 * rate_limits: requests per second by path prefix, per client address
 * or per value of a header; one limit a prefix.
 */

#include <stdint.h>
#include <string.h>

#include "ds_spec_impl.h"


static const ds_venum_t  ds_key_types =
    DS_VENUM("key type", "ip_address", "header");


#define DS_STR(x)       DS_STR_(x)
#define DS_STR_(x)      #x


static const char *
ds_v_key_header_wrong(const char *s)
{
    return strlen(s) > DS_NAME_MAX
           || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789-_") != strlen(s)
           ? ": expected up to " DS_STR(DS_NAME_MAX) " letters, digits, "
             "\"-\" or \"_\""
           : NULL;
}


static int
ds_v_f_key_header(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "header name", ds_v_key_header_wrong, out);
}


static const ds_vfield_t  ds_key_fields[] = {
    { "type", NULL, DS_VF_REQUIRED, &ds_key_types },
    { "header", ds_v_f_key_header, 0, NULL },
};


static int
ds_v_f_key(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int          rc, header;
    cJSON       *s[2] = { NULL, NULL };

    rc = ds_v_object(c, in, ds_key_fields, 2, NULL, s);
    if (rc != DS_OK) {
        goto done;
    }

    header = strcmp(s[0]->valuestring, "header") == 0;

    if (header && s[1] == NULL) {
        rc = ds_v_fail(c, in, 0, "missing required field \"header\"");
        goto done;
    }

    if (!header && s[1]) {
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(in, "header"), 1,
                       "\"header\" is only for key type header");
        goto done;
    }

    rc = ds_v_assemble(c, ds_key_fields, header ? 2 : 1, s, out);

done:

    ds_v_free_slots(s, 2);
    return rc;
}


static int
ds_v_f_rps(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (cJSON_IsNumber(in) && in->valuedouble > 0
        && in->valuedouble < 0.001)
    {
        return ds_v_fail(c, in, 0, "rps must be at least 0.001, got %.15g",
                         in->valuedouble);
    }

    return ds_v_positive(c, in, "rps", DS_SPEC_RPS_MAX, out);
}


static int
ds_v_f_burst(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_uint(c, in, 0, UINT32_MAX, out);
}


enum { RL_PREFIX, RL_KEY, RL_RPS, RL_BURST, RL_N };

static const ds_vfield_t  ds_rl_fields[RL_N] = {
    { "prefix", ds_v_f_prefix, 0, NULL },
    { "key", ds_v_f_key, 0, NULL },
    { "rps", ds_v_f_rps, DS_VF_REQUIRED, NULL },
    { "burst", ds_v_f_burst, 0, NULL },
};

static int
ds_v_rate_limit(ds_vctx_t *c, const cJSON *in, const cJSON *done,
    cJSON **out)
{
    int           rc;
    const cJSON  *prev, *at;
    cJSON        *s[RL_N] = { NULL };
    ds_qbuf_t     qb;

    rc = ds_v_object(c, in, ds_rl_fields, RL_N, NULL, s);

    if (rc == DS_OK && s[RL_PREFIX] == NULL) {
        s[RL_PREFIX] = cJSON_CreateString("/");
        rc = s[RL_PREFIX] ? DS_OK : ds_v_oom(c);
    }

    if (rc == DS_OK && s[RL_KEY] == NULL) {
        s[RL_KEY] = cJSON_CreateObject();
        rc = s[RL_KEY] ? ds_v_add(c, s[RL_KEY], "type",
                                  cJSON_CreateString("ip_address"))
                       : ds_v_oom(c);
    }

    if (rc == DS_OK && s[RL_BURST] == NULL) {
        s[RL_BURST] = cJSON_CreateNumber(0);
        rc = s[RL_BURST] ? DS_OK : ds_v_oom(c);
    }

    if (rc != DS_OK) {
        goto done;
    }

    /* the longest prefix wins, so two limits on one prefix make no sense */
    for (prev = done->child; prev; prev = prev->next) {
        if (strcmp(cJSON_GetObjectItemCaseSensitive(prev, "prefix")
                       ->valuestring, s[RL_PREFIX]->valuestring) == 0)
        {
            at = ds_v_get(in, "prefix");
            rc = ds_v_fail(c, at ? at : in, 0, "duplicate rate limit prefix "
                           "%s", ds_q(&qb, s[RL_PREFIX]->valuestring));
            goto done;
        }
    }

done:

    return ds_v_finish(c, ds_rl_fields, RL_N, s, rc, out);
}


int
ds_v_f_rate_limits(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_list(c, in, "rate limits", "a list of rate limits",
                     DS_RATE_LIMITS_MAX, ds_v_rate_limit, out);
}
