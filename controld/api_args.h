/*
 * What the API's requests ask, decoded from their bodies and queries
 * without libmicrohttpd or the state: the stop's and the scale's
 * bodies, the logs and series queries, the token to create or update.
 * Pure (cJSON and libc), so that the fuzz targets
 * (t/fuzz/fuzz_api_body.c) run the very code the API does.
 */

#ifndef CONTROLD_API_ARGS_H
#define CONTROLD_API_ARGS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ds_state.h"

/* a query parameter's value, or NULL when it is absent */
typedef const char *(*api_arg_get_t)(void *cls, const char *key);

/* GET /api/runs/NAME/logs?replica=&offset=&since=&follow= */
struct api_logs_args {
    int             have_num;
    int             num;            /* replica, 0..65535 */
    long long       offset;         /* 0 when absent */
    uint32_t        since;          /* unix time, 0 when absent */
    int             follow;
};

/* a token's "budget": {"rpm","tpm","tpd"}, each given or not */
#define API_BUDGET_RPM          0x01
#define API_BUDGET_TPM          0x02
#define API_BUDGET_TPD          0x04

/* the most a limit may be: below DS_BUDGET_UNLIMITED ("unlimited"), and
 * for tpd below 10^15, which cJSON prints exactly */
#define API_BUDGET_U32_MAX      (DS_BUDGET_UNLIMITED - 1ULL)
#define API_BUDGET_TPD_MAX      1000000000000000ULL

struct api_budget_args {
    unsigned        given;          /* API_BUDGET_* */
    ds_budget_t     budget;         /* the given fields; max_tokens 0 */
};

/* POST /api/tokens */
struct api_token_args {
    const char     *name;           /* points into the body */
    int             admin;
    const char     *services[DS_TOKEN_SCOPE_MAX];
    int             nsvc;
    uint64_t        expires_in;     /* seconds, 0: never */
    struct api_budget_args budget;
};

/* the stop's body ({"abort":bool} or {}); -1 with a message */
int api_args_stop(const cJSON *body, int *abort, char *err, size_t n);

/* the scale's body {"replicas":N}: N from 1 to DS_REPLICAS_MAX, as a
 * spec's replicas; -1 with a message */
int api_args_scale(const cJSON *body, int *replicas, char *err, size_t n);

/* GET /api/runs/NAME/series?since=T: *since 0 when absent; -1 with a
 * message */
int api_args_series(api_arg_get_t get, void *cls, uint32_t *since,
    char *err, size_t n);

int api_args_logs(api_arg_get_t get, void *cls, struct api_logs_args *a,
    char *err, size_t n);

/* 0, or 400 with a message; the strings stay the body's */
int api_args_token(const cJSON *req, struct api_token_args *a, char *err,
    size_t n);

/*
 * A token's "budget" object: each of rpm, tpm and tpd a whole number
 * (0: the model's default) or "unlimited" (DS_BUDGET_UNLIMITED, tpd's
 * UINT64_MAX).  0, or 400 with a message naming the field.
 */
int api_args_budget(const cJSON *b, struct api_budget_args *a, char *err,
    size_t n);

/* PATCH /api/tokens/NAME {"budget":{...}}: at least one field */
int api_args_token_update(const cJSON *req, struct api_budget_args *a,
    char *err, size_t n);

/* tok's budget with the given fields of a replaced */
void api_args_budget_apply(const struct api_budget_args *a,
    ds_budget_t *tok);

/* lower-case letters, digits, then also "-_."; 1 to DS_NAME_MAX */
int api_args_token_name_ok(const char *s);

#endif /* CONTROLD_API_ARGS_H */
