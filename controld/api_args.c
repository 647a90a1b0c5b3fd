/*
 * What the API's requests ask (api_args.h): bodies and queries decoded,
 * checked, and every refusal named.
 */

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_args.h"


int
api_args_stop(const cJSON *body, int *abort, char *err, size_t n)
{
    const cJSON  *it;

    *abort = 0;
    cJSON_ArrayForEach(it, body) {
        if (strcmp(it->string, "abort") != 0) {
            snprintf(err, n, "unknown field \"%.80s\"", it->string);
            return -1;
        }
        if (!cJSON_IsBool(it)) {
            snprintf(err, n, "abort: expected true or false");
            return -1;
        }
        *abort = cJSON_IsTrue(it);
    }
    return 0;
}


int
api_args_scale(const cJSON *body, int *replicas, char *err, size_t n)
{
    const cJSON  *it, *v = NULL;

    *replicas = 0;
    cJSON_ArrayForEach(it, body) {
        if (strcmp(it->string, "replicas") != 0) {
            snprintf(err, n, "unknown field \"%.80s\"", it->string);
            return -1;
        }
        v = it;
    }
    if (v == NULL) {
        snprintf(err, n, "replicas: required, a whole number from 1 to %d",
                 DS_REPLICAS_MAX);
        return -1;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 1
        || v->valuedouble > DS_REPLICAS_MAX
        || v->valuedouble != (double) (int) v->valuedouble)
    {
        snprintf(err, n, "replicas: expected a whole number from 1 to %d "
                 "(as replicas in a spec)", DS_REPLICAS_MAX);
        return -1;
    }
    *replicas = (int) v->valuedouble;
    return 0;
}


/* 0 absent, 1 in *out, -1 with a message */
static int
api_args_int(api_arg_get_t get, void *cls, const char *key, long long min,
    long long max, long long *out, char *err, size_t n)
{
    const char  *v;
    char        *end;
    long long    x;

    v = get(cls, key);
    if (v == NULL) {
        return 0;
    }
    errno = 0;
    x = strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno || x < min || x > max) {
        snprintf(err, n, "%s: \"%.40s\" is not a number from %lld to %lld",
                 key, v, min, max);
        return -1;
    }
    *out = x;
    return 1;
}


int
api_args_logs(api_arg_get_t get, void *cls, struct api_logs_args *a,
    char *err, size_t n)
{
    long long    num = -1, since = 0;
    const char  *v;

    memset(a, 0, sizeof(*a));
    a->have_num = api_args_int(get, cls, "replica", 0, 65535, &num, err, n);
    if (a->have_num < 0
        || api_args_int(get, cls, "offset", 0, LLONG_MAX / 2, &a->offset,
                        err, n) < 0
        || api_args_int(get, cls, "since", 1, UINT32_MAX, &since, err, n)
           < 0)
    {
        return -1;
    }
    a->num = a->have_num ? (int) num : -1;
    a->since = (uint32_t) since;

    v = get(cls, "follow");
    if (v != NULL) {
        if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0) {
            a->follow = 1;
        } else if (strcmp(v, "0") != 0 && strcmp(v, "false") != 0) {
            snprintf(err, n, "follow: expected 1 or 0");
            return -1;
        }
    }
    return 0;
}


int
api_args_token_name_ok(const char *s)
{
    size_t  i, n;

    n = strlen(s);
    if (n == 0 || n > DS_NAME_MAX) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')
              || (i > 0 && (s[i] == '-' || s[i] == '_' || s[i] == '.'))))
        {
            return 0;
        }
    }
    return 1;
}


/* one limit of a token's budget into *out: 0, or -1 with a message */
static int
api_args_budget_limit(const cJSON *v, const char *field, uint64_t max,
    uint64_t unlimited, uint64_t *out, char *err, size_t n)
{
    if (cJSON_IsString(v) && strcmp(v->valuestring, "unlimited") == 0) {
        *out = unlimited;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 0
        || v->valuedouble > (double) max
        || v->valuedouble != (double) (uint64_t) v->valuedouble)
    {
        snprintf(err, n, "budget.%s: expected a whole number from 0 (the "
                 "model's default) to %llu, or \"unlimited\"", field,
                 (unsigned long long) max);
        return -1;
    }
    *out = (uint64_t) v->valuedouble;
    return 0;
}


int
api_args_budget(const cJSON *b, struct api_budget_args *a, char *err,
    size_t n)
{
    const cJSON  *it;
    uint64_t      v;

    memset(a, 0, sizeof(*a));

    if (!cJSON_IsObject(b)) {
        snprintf(err, n, "budget: expected an object with \"rpm\", "
                 "\"tpm\" or \"tpd\"");
        return 400;
    }

    cJSON_ArrayForEach(it, b) {
        if (strcmp(it->string, "rpm") == 0 || strcmp(it->string, "tpm") == 0) {
            if (api_args_budget_limit(it, it->string, API_BUDGET_U32_MAX,
                                      DS_BUDGET_UNLIMITED, &v, err, n) != 0)
            {
                return 400;
            }
            if (it->string[0] == 'r') {
                a->budget.rpm = (uint32_t) v;
                a->given |= API_BUDGET_RPM;
            } else {
                a->budget.tpm = (uint32_t) v;
                a->given |= API_BUDGET_TPM;
            }

        } else if (strcmp(it->string, "tpd") == 0) {
            if (api_args_budget_limit(it, "tpd", API_BUDGET_TPD_MAX,
                                      UINT64_MAX, &v, err, n) != 0)
            {
                return 400;
            }
            a->budget.tpd = v;
            a->given |= API_BUDGET_TPD;

        } else {
            snprintf(err, n, "budget: unknown field \"%.80s\" (expected "
                     "\"rpm\", \"tpm\" or \"tpd\")", it->string);
            return 400;
        }
    }
    return 0;
}


void
api_args_budget_apply(const struct api_budget_args *a, ds_budget_t *tok)
{
    if (a->given & API_BUDGET_RPM) {
        tok->rpm = a->budget.rpm;
    }
    if (a->given & API_BUDGET_TPM) {
        tok->tpm = a->budget.tpm;
    }
    if (a->given & API_BUDGET_TPD) {
        tok->tpd = a->budget.tpd;
    }
    tok->max_tokens = 0;
}


int
api_args_token_update(const cJSON *req, struct api_budget_args *a,
    char *err, size_t n)
{
    const cJSON  *it, *b = NULL;
    int           rc;

    memset(a, 0, sizeof(*a));

    cJSON_ArrayForEach(it, req) {
        if (strcmp(it->string, "budget") != 0) {
            snprintf(err, n, "unknown field \"%.80s\" (a token's budget "
                     "alone changes)", it->string);
            return 400;
        }
        b = it;
    }
    if (b == NULL) {
        snprintf(err, n, "budget: required, an object with \"rpm\", "
                 "\"tpm\" or \"tpd\"");
        return 400;
    }

    rc = api_args_budget(b, a, err, n);
    if (rc != 0) {
        return rc;
    }
    if (a->given == 0) {
        snprintf(err, n, "budget: nothing to change: give \"rpm\", "
                 "\"tpm\" or \"tpd\"");
        return 400;
    }
    return 0;
}


int
api_args_token(const cJSON *req, struct api_token_args *a, char *err,
    size_t n)
{
    const cJSON  *it, *name = NULL, *scope = NULL, *svcs = NULL;
    const cJSON  *exp = NULL, *budget = NULL;

    memset(a, 0, sizeof(*a));

    cJSON_ArrayForEach(it, req) {
        if (strcmp(it->string, "name") == 0) {
            name = it;
        } else if (strcmp(it->string, "scope") == 0) {
            scope = it;
        } else if (strcmp(it->string, "services") == 0) {
            svcs = it;
        } else if (strcmp(it->string, "expires_in") == 0) {
            exp = it;
        } else if (strcmp(it->string, "budget") == 0) {
            budget = it;
        } else {
            snprintf(err, n, "unknown field \"%.80s\"", it->string);
            return 400;
        }
    }

    if (!cJSON_IsString(name)) {
        snprintf(err, n, "name: required, a string");
        return 400;
    }
    if (!api_args_token_name_ok(name->valuestring)) {
        snprintf(err, n, "name: \"%.80s\" is not a token name (lower-case "
                 "letters, digits, '-', '_', '.'; at most %d)",
                 name->valuestring, DS_NAME_MAX);
        return 400;
    }
    a->name = name->valuestring;

    if (scope != NULL) {
        if (!cJSON_IsString(scope)
            || (strcmp(scope->valuestring, "admin") != 0
                && strcmp(scope->valuestring, "services") != 0))
        {
            snprintf(err, n, "scope: expected \"admin\" or \"services\"");
            return 400;
        }
        a->admin = strcmp(scope->valuestring, "admin") == 0;
    }

    if (svcs != NULL && !cJSON_IsNull(svcs)) {
        if (!cJSON_IsArray(svcs)) {
            snprintf(err, n, "services: expected a list of run names");
            return 400;
        }
        if (a->admin && cJSON_GetArraySize(svcs) > 0) {
            snprintf(err, n, "services: an admin token opens every service; "
                     "use scope \"services\" to name some");
            return 400;
        }
        cJSON_ArrayForEach(it, svcs) {
            if (!cJSON_IsString(it)
                || !ds_valid_run_name(it->valuestring,
                                      strlen(it->valuestring)))
            {
                snprintf(err, n, "services[%d]: not a run name", a->nsvc);
                return 400;
            }
            if (a->nsvc == DS_TOKEN_SCOPE_MAX) {
                snprintf(err, n, "services: more than %d names",
                         DS_TOKEN_SCOPE_MAX);
                return 400;
            }
            a->services[a->nsvc++] = it->valuestring;
        }
    }

    if (exp != NULL && !cJSON_IsNull(exp)) {
        if (!cJSON_IsNumber(exp) || exp->valuedouble < 1
            || exp->valuedouble > 100.0 * 365 * 86400
            || exp->valuedouble != (double) (long long) exp->valuedouble)
        {
            snprintf(err, n, "expires_in: expected whole seconds, at least "
                     "1");
            return 400;
        }
        a->expires_in = (uint64_t) exp->valuedouble;
    }

    if (budget != NULL && !cJSON_IsNull(budget)) {
        return api_args_budget(budget, &a->budget, err, n);
    }
    return 0;
}


int
api_args_series(api_arg_get_t get, void *cls, uint32_t *since, char *err,
    size_t n)
{
    long long  t = 0;

    if (api_args_int(get, cls, "since", 0, UINT32_MAX, &t, err, n) < 0) {
        return -1;
    }
    *since = (uint32_t) t;
    return 0;
}
