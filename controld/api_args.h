/*
 * What the API's requests ask, decoded from their bodies and queries
 * without libmicrohttpd or the state: the stop's and the scale's
 * bodies, the logs and series queries, the token to create.  Pure (cJSON and libc), so that the fuzz targets
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

/* POST /api/tokens */
struct api_token_args {
    const char     *name;           /* points into the body */
    int             admin;
    const char     *services[DS_TOKEN_SCOPE_MAX];
    int             nsvc;
    uint64_t        expires_in;     /* seconds, 0: never */
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

/* lower-case letters, digits, then also "-_."; 1 to DS_NAME_MAX */
int api_args_token_name_ok(const char *s);

#endif /* CONTROLD_API_ARGS_H */
