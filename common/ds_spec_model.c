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


enum { M_TYPE, M_NAME, M_FORMAT, M_PREFIX, M_TEMPLATE, M_EOS, M_N };

static const ds_vfield_t  ds_model_fields[M_N] = {
    { "type", NULL, 0, &ds_model_types },
    { "name", ds_v_f_model_name, DS_VF_REQUIRED, NULL },
    { "format", NULL, DS_VF_REQUIRED, &ds_model_formats },
    { "prefix", ds_v_f_prefix, 0, NULL },
    { "chat_template", ds_v_f_anystr, 0, NULL },
    { "eos_token", ds_v_f_anystr, 0, NULL },
};


/* "name" (openai at /v1) or {type, name, format, ...} */
int
ds_v_f_model(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           rc, tgi;
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

    /* openai: type, name, format, prefix; tgi: without prefix */
    rc = ds_v_assemble(c, ds_model_fields, tgi ? M_N : M_TEMPLATE, s, out);
    if (rc == DS_OK && tgi) {
        cJSON_DeleteItemFromObjectCaseSensitive(*out, "prefix");
    }

done:

    ds_v_free_slots(s, M_N);
    return rc;
}
