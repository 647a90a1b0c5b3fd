/*
 * libFuzzer target for what the API makes of request bodies and
 * queries (controld/api_args.c, common/ds_json_dup.c).  The first byte
 * picks the request, the rest is its body (or query):
 *   0 POST /api/tokens (and PATCH /api/tokens/NAME)
 *   1 POST /api/runs/N/stop (and .../scale)
 *   2 GET .../logs?QUERY (and .../series?QUERY)
 *   3 POST /api/runs/apply (and plan)
 * Bodies are parsed as the API does (cJSON, then the duplicate keys,
 * whose answer is checked against a plain pairwise search), then
 * decoded; what a decoder accepts must hold what the parent relies on.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api_args.h"
#include "ds_json_dup.h"
#include "ds_spec.h"


/* the first repeat, pairwise in every object: what ds_json_dup finds */
static int
naive_dup(const cJSON *node)
{
    const cJSON  *a, *b;

    if (cJSON_IsObject(node)) {
        for (b = node->child; b != NULL; b = b->next) {
            for (a = node->child; a != b; a = a->next) {
                if (strcmp(a->string, b->string) == 0) {
                    return 1;
                }
            }
        }
    }
    if (cJSON_IsObject(node) || cJSON_IsArray(node)) {
        for (a = node->child; a != NULL; a = a->next) {
            if (naive_dup(a)) {
                return 1;
            }
        }
    }
    return 0;
}


/* a decoded budget: what api_args_budget_apply() may put in a record */
static void
budget_ok(const struct api_budget_args *a)
{
    const ds_budget_t  *b = &a->budget;

    if ((a->given & ~(unsigned) (API_BUDGET_RPM | API_BUDGET_TPM
                                 | API_BUDGET_TPD)) != 0
        || (b->rpm > API_BUDGET_U32_MAX && b->rpm != DS_BUDGET_UNLIMITED)
        || (b->tpm > API_BUDGET_U32_MAX && b->tpm != DS_BUDGET_UNLIMITED)
        || (b->tpd > API_BUDGET_TPD_MAX && b->tpd != UINT64_MAX)
        || b->max_tokens != 0
        || (!(a->given & API_BUDGET_RPM) && b->rpm != 0)
        || (!(a->given & API_BUDGET_TPM) && b->tpm != 0)
        || (!(a->given & API_BUDGET_TPD) && b->tpd != 0))
    {
        abort();
    }
}


/* PATCH /api/tokens/NAME: a budget with at least one field, or why not */
static void
token_update(const cJSON *body)
{
    struct api_budget_args  a;
    char                    err[512];

    err[0] = '\0';
    if (api_args_token_update(body, &a, err, sizeof(err)) != 0) {
        if (err[0] == '\0') {
            abort();
        }
        return;
    }
    if (a.given == 0) {
        abort();
    }
    budget_ok(&a);
}


static void
token(const cJSON *body)
{
    struct api_token_args  a;
    char                   err[512];
    int                    i;

    if (api_args_token(body, &a, err, sizeof(err)) != 0) {
        if (err[0] == '\0') {
            abort();
        }
        return;
    }
    if (a.name == NULL || !api_args_token_name_ok(a.name)
        || a.nsvc < 0 || a.nsvc > DS_TOKEN_SCOPE_MAX
        || (a.admin && a.nsvc != 0)
        || a.expires_in > 100ULL * 365 * 86400)
    {
        abort();
    }
    for (i = 0; i < a.nsvc; i++) {
        if (!ds_valid_run_name(a.services[i], strlen(a.services[i]))) {
            abort();
        }
    }
    budget_ok(&a.budget);
}


static void
stop(const cJSON *body)
{
    char  err[512];
    int   abrt = -1;

    if (api_args_stop(body, &abrt, err, sizeof(err)) == 0
        && abrt != 0 && abrt != 1)
    {
        abort();
    }
}


/* a count the reconciler takes: 1 to DS_REPLICAS_MAX */
static void
scale(const cJSON *body)
{
    char  err[512];
    int   n = -1;

    err[0] = '\0';
    if (api_args_scale(body, &n, err, sizeof(err)) == 0) {
        if (n < 1 || n > DS_REPLICAS_MAX) {
            abort();
        }
    } else if (strstr(err, "replicas") == NULL
               && strstr(err, "unknown field") == NULL)
    {
        abort();
    }
}


static void
apply(const cJSON *body)
{
    ds_spec_t   sp;
    ds_err_t    err;
    cJSON      *norm = NULL;

    if (ds_spec_validate_json(cJSON_GetObjectItemCaseSensitive(body, "spec"),
                              &norm, &err) == DS_OK)
    {
        ds_spec_from_json(norm, &sp, &err);
        ds_spec_free(&sp);
    }
    cJSON_Delete(norm);
}


/* ---- logs: the query as MHD hands it over, decoded ---------------------- */

#define QUERY_MAX  16

struct query {
    char   *key[QUERY_MAX];
    char   *val[QUERY_MAX];
    int     n;
};

static const char *
query_get(void *cls, const char *key)
{
    struct query  *q = cls;
    int            i;

    for (i = 0; i < q->n; i++) {
        if (strcmp(q->key[i], key) == 0) {
            return q->val[i];
        }
    }
    return NULL;
}


static void
logs(const uint8_t *data, size_t size)
{
    struct api_logs_args  a;
    struct query          q;
    char                 *text, *p, *amp, *eq, err[512];
    uint32_t              since;

    text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';

    q.n = 0;
    for (p = text; p != NULL && q.n < QUERY_MAX; p = amp) {
        amp = strchr(p, '&');
        if (amp != NULL) {
            *amp++ = '\0';
        }
        eq = strchr(p, '=');
        q.key[q.n] = p;
        q.val[q.n] = eq != NULL ? (*eq = '\0', eq + 1) : p + strlen(p);
        q.n++;
    }

    err[0] = '\0';
    if (api_args_series(query_get, &q, &since, err, sizeof(err)) != 0
        && strncmp(err, "since: ", 7) != 0)
    {
        abort();
    }

    err[0] = '\0';
    if (api_args_logs(query_get, &q, &a, err, sizeof(err)) == 0) {
        if ((a.have_num && (a.num < 0 || a.num > 65535))
            || (!a.have_num && a.num != -1)
            || a.offset < 0 || (a.follow != 0 && a.follow != 1))
        {
            abort();
        }
    } else if (err[0] == '\0') {
        abort();
    }
    free(text);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON   *body;
    char    *copy, err[512];
    int      what, dup;

    if (size < 1) {
        return 0;
    }
    what = data[0] & 3;
    data++;
    size--;

    if (what == 2) {
        logs(data, size);
        return 0;
    }

    /* an exact-size copy, as the API's buffer (it adds a NUL) */
    copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    body = cJSON_ParseWithLength(copy, size);
    if (body == NULL) {
        free(copy);
        return 0;
    }

    err[0] = '\0';
    dup = ds_json_dup_check(body, "body", err, sizeof(err)) != 0;
    if (dup != naive_dup(body) || (dup && strstr(err, "duplicate key \"")
                                   == NULL))
    {
        abort();
    }

    if (!dup && cJSON_IsObject(body)) {
        switch (what) {
        case 0:
            token(body);
            token_update(body);
            break;
        case 1:
            stop(body);
            scale(body);
            break;
        default:
            apply(body);
        }
    }
    cJSON_Delete(body);
    free(copy);
    return 0;
}
