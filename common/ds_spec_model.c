/*
 * model: what a service serves, through the OpenAI-compatible API or
 * TGI's, from "model: NAME" or a mapping.
 */

#include <string.h>

#include "ds_spec_impl.h"


static const ds_venum_t  ds_model_types = DS_VENUM("model type", "chat");


static int
ds_v_f_model_name(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;
    ds_qbuf_t    qb;

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    if (strlen(s) > DS_NAME_MAX) {
        return ds_v_fail(c, in, 0, "model name %s is longer than %d "
                         "characters", ds_q(&qb, s), DS_NAME_MAX);
    }

    if (ds_v_has_ctl(s) || strchr(s, '\t')) {
        return ds_v_fail(c, in, 0, "invalid model name %s", ds_q(&qb, s));
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


static const ds_venum_t  ds_model_formats =
    DS_VENUM("model format", "openai", "tgi");


/* ---- routing: affinity with bounded load ------------------------------- */

static const ds_venum_t  ds_affinities =
    DS_VENUM("affinity", "prefix", "session");


static int
ds_v_f_prefix_bytes(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_uint(c, in, 1, DS_AFFINITY_PREFIX_BYTES_MAX, out);
}


/* c of "bounded load": a replica above c x the mean passes its turn */
static int
ds_v_f_load_factor(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    double  d, max;

    max = DS_AFFINITY_LOAD_FACTOR_MAX / 1000.0;

    if (!cJSON_IsNumber(in)) {
        return ds_v_fail(c, in, 0, "expected a number >= 1, got %s",
                         ds_tname(in));
    }

    d = in->valuedouble;

    if (!(d >= 1)) {
        return ds_v_fail(c, in, 0, "expected a number >= 1, got %.15g", d);
    }

    if (!(d <= max)) {
        return ds_v_fail(c, in, 0, "expected a number from 1 to %.15g, "
                         "got %.15g", max, d);
    }

    *out = cJSON_CreateNumber(d);
    return *out ? DS_OK : ds_v_oom(c);
}


static const char *
ds_v_session_header_wrong(const char *s)
{
    size_t  n = strlen(s);

    return n == 0 || n > DS_NAME_MAX
           || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789-_") != n
           ? ": expected 1 to 63 letters, digits, \"-\" or \"_\""
           : NULL;
}


static int
ds_v_f_session_header(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "header name", ds_v_session_header_wrong,
                          out);
}


enum { R_AFFINITY, R_PREFIX_BYTES, R_SESSION_HEADER, R_LOAD_FACTOR, R_N };

static const ds_vfield_t  ds_routing_fields[R_N] = {
    { "affinity", NULL, DS_VF_REQUIRED, &ds_affinities },
    { "prefix_bytes", ds_v_f_prefix_bytes, 0, NULL },
    { "session_header", ds_v_f_session_header, 0, NULL },
    { "load_factor", ds_v_f_load_factor, 0, NULL },
};


/* {affinity: prefix|session, prefix_bytes: 512,
 *  session_header: x-session-id, load_factor: 1.25}, defaults filled */
static int
ds_v_f_routing(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[R_N] = { NULL };

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a mapping with \"affinity\", "
                         "got %s", ds_tname(in));
    }

    rc = ds_v_object(c, in, ds_routing_fields, R_N, NULL, s);
    if (rc != DS_OK) {
        goto done;
    }

    if (s[R_PREFIX_BYTES] == NULL) {
        s[R_PREFIX_BYTES] = cJSON_CreateNumber(DS_AFFINITY_PREFIX_BYTES);
    }
    if (s[R_SESSION_HEADER] == NULL
        && strcmp(s[R_AFFINITY]->valuestring, "session") == 0)
    {
        s[R_SESSION_HEADER] = cJSON_CreateString("x-session-id");
    }
    if (s[R_LOAD_FACTOR] == NULL) {
        s[R_LOAD_FACTOR] = cJSON_CreateNumber(DS_AFFINITY_LOAD_FACTOR
                                              / 1000.0);
    }

    if (s[R_PREFIX_BYTES] == NULL || s[R_LOAD_FACTOR] == NULL
        || (s[R_SESSION_HEADER] == NULL
            && strcmp(s[R_AFFINITY]->valuestring, "session") == 0))
    {
        rc = ds_v_oom(c);
    }

done:

    return ds_v_finish(c, ds_routing_fields, R_N, s, rc, out);
}


/* ---- budget: per-token limits of the model endpoint -------------------- */

/*
 * rpm and tpm share the record's u32 with DS_BUDGET_UNLIMITED, which a
 * file cannot spell; tpd below 10^15, which cJSON prints exactly.
 */
#define DS_SPEC_BUDGET_U32_MAX  (DS_BUDGET_UNLIMITED - 1ULL)
#define DS_SPEC_BUDGET_TPD_MAX  1000000000000000ULL


/* a limit of 1 or more; 0 would read as "no limit", so it is refused */
static int
ds_v_budget_limit(ds_vctx_t *c, const cJSON *in, uint64_t max, cJSON **out)
{
    if (cJSON_IsNumber(in) && in->valuedouble == 0) {
        return ds_v_fail(c, in, 0, "expected an integer >= 1, got 0 "
                         "(no limit: leave the field out)");
    }

    return ds_v_f_uint(c, in, 1, max, out);
}


static int
ds_v_f_budget_u32(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_budget_limit(c, in, DS_SPEC_BUDGET_U32_MAX, out);
}


static int
ds_v_f_budget_tpd(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_budget_limit(c, in, DS_SPEC_BUDGET_TPD_MAX, out);
}


static int
ds_v_f_budget_max_tokens(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_budget_limit(c, in, DS_BUDGET_MAX_TOKENS_MAX, out);
}


enum { B_RPM, B_TPM, B_TPD, B_MAX_TOKENS, B_N };

static const ds_vfield_t  ds_budget_fields[B_N] = {
    { "rpm", ds_v_f_budget_u32, 0, NULL },
    { "tpm", ds_v_f_budget_u32, 0, NULL },
    { "tpd", ds_v_f_budget_tpd, 0, NULL },
    { "max_tokens", ds_v_f_budget_max_tokens, 0, NULL },
};


/* {rpm: 60, tpm: 100000, tpd: 2000000, max_tokens: 512}, at least one
 * limit; the fields left out are null */
static int
ds_v_f_budget(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[B_N] = { NULL };

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a mapping with \"rpm\", "
                         "\"tpm\" or \"tpd\", got %s", ds_tname(in));
    }

    rc = ds_v_object(c, in, ds_budget_fields, B_N, NULL, s);
    if (rc != DS_OK) {
        goto done;
    }

    if (s[B_RPM] == NULL && s[B_TPM] == NULL && s[B_TPD] == NULL) {
        rc = ds_v_fail(c, in, 0, "expected at least one of \"rpm\", "
                       "\"tpm\" or \"tpd\"%s", s[B_MAX_TOKENS]
                       ? " (\"max_tokens\" alone limits nothing)" : "");
    }

done:

    return ds_v_finish(c, ds_budget_fields, B_N, s, rc, out);
}


enum { M_TYPE, M_NAME, M_FORMAT, M_ROUTING, M_BUDGET, M_PREFIX, M_TEMPLATE,
       M_EOS, M_N };

static const ds_vfield_t  ds_model_fields[M_N] = {
    { "type", NULL, 0, &ds_model_types },
    { "name", ds_v_f_model_name, DS_VF_REQUIRED, NULL },
    { "format", NULL, DS_VF_REQUIRED, &ds_model_formats },
    { "routing", ds_v_f_routing, 0, NULL },
    { "budget", ds_v_f_budget, 0, NULL },
    { "prefix", ds_v_f_prefix, 0, NULL },
    { "chat_template", ds_v_f_anystr, 0, NULL },
    { "eos_token", ds_v_f_anystr, 0, NULL },
};


/* "name" (openai at /v1) or {type, name, format, ...} */
int
ds_v_f_model(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           rc, tgi, routing, budget;
    size_t        i;
    const cJSON  *m;
    cJSON        *s[M_N] = { NULL };
    ds_qbuf_t     qb;

    if (cJSON_IsString(in)) {
        rc = ds_v_f_model_name(c, in, &s[M_NAME]);
        if (rc == DS_OK) {
            s[M_FORMAT] = cJSON_CreateString("openai");
            rc = s[M_FORMAT] ? DS_OK : ds_v_oom(c);
        }

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_object(c, in, ds_model_fields, M_N, NULL, s);

    } else {
        return ds_v_fail(c, in, 0, "expected a model name or a mapping, "
                         "got %s", ds_tname(in));
    }

    if (rc != DS_OK) {
        goto done;
    }

    tgi = strcmp(s[M_FORMAT]->valuestring, "tgi") == 0;

    for (i = M_PREFIX; i < M_N; i++) {
        if (s[i] && (i == M_PREFIX) == tgi) {
            m = cJSON_GetObjectItemCaseSensitive(in, ds_model_fields[i].name);
            rc = ds_v_fail(c, m, 1, "%s is only for format %s",
                           ds_q(&qb, ds_model_fields[i].name),
                           tgi ? "openai" : "tgi");
            goto done;
        }
    }

    if (s[M_TYPE] == NULL) {
        s[M_TYPE] = cJSON_CreateString("chat");
    }
    if (!tgi && s[M_PREFIX] == NULL) {
        s[M_PREFIX] = cJSON_CreateString("/v1");
    }
    if (s[M_TYPE] == NULL || (!tgi && s[M_PREFIX] == NULL)) {
        rc = ds_v_oom(c);
        goto done;
    }

    routing = s[M_ROUTING] != NULL;
    budget = s[M_BUDGET] != NULL;

    /* openai: type, name, format, prefix; tgi: without prefix */
    rc = ds_v_assemble(c, ds_model_fields, tgi ? M_N : M_TEMPLATE, s, out);
    if (rc == DS_OK && tgi) {
        cJSON_DeleteItemFromObjectCaseSensitive(*out, "prefix");
    }
    /* without routing the model reads as before it existed */
    if (rc == DS_OK && !routing) {
        cJSON_DeleteItemFromObjectCaseSensitive(*out, "routing");
    }
    if (rc == DS_OK && !budget) {
        cJSON_DeleteItemFromObjectCaseSensitive(*out, "budget");
    }

done:

    ds_v_free_slots(s, M_N);
    return rc;
}
