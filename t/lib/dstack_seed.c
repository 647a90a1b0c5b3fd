/*
 * dstack-seed: writes the shared state from JSON, and dumps it as JSON.
 * A test and operations tool: it goes through the same calls as
 * controld, so what it writes is what the writer would write.
 *
 *   dstack-seed STATE_DIR < ops.json     apply the operations
 *   dstack-seed STATE_DIR --dump         print the whole state
 *
 * The operations are a JSON array applied in one write transaction: all
 * of them or none.  On the first error it prints
 * "dstack-seed: op N: <reason>" (N counts from 0, the array index) and
 * exits 1 with nothing committed.
 *
 *   {"op":"service","name":"a","auth":true,"https":false,
 *    "hold":false,"hold_max":1000,"hold_timeout_ms":600000,
 *    "max_body_size":123,"read_timeout_ms":1000,"connect_timeout_ms":500,
 *    "model":"m","model_prefix":"/v1","model_format":"openai|tgi",
 *    "routing":{"affinity":"prefix|session","prefix_bytes":512,
 *               "load_factor":1.25,"session_header":"x-session-id"},
 *    "rate_limits":[{"prefix":"/","key":"ip"|{"header":"X-Key"},
 *                    "rps":2.5,"burst":3}],
 *    "budget":{"rpm":60,"tpm":1000,"tpd":0,"max_tokens":256}}
 *   {"op":"del_service","name":"a"}
 *   {"op":"replicas","service":"a","replicas":[{"addr":"127.0.0.1:8001",
 *    "state":"ready|draining","version":1,"weight":1}]}
 *   {"op":"token","token":"<plain text>","name":"t1","admin":false,
 *    "all":false,"services":["a"],"expires":0,"created":0,
 *    "user":"alice","project":"team",
 *    "budget":{"rpm":60|"unlimited","tpm":...,"tpd":...}}
 *   {"op":"del_token","token":"<plain text>"}
 *   {"op":"member","project":"team","user":"alice",
 *    "role":"admin|manager|user"}
 *   {"op":"del_member","project":"team","user":"alice"}
 *   {"op":"setting","key":"k","value":"v"}
 *   {"op":"cert","host":"a.test.local","cert":"<PEM>","key":"<PEM>",
 *    "not_after":0,"acme":false}
 *   {"op":"run","name":"a","doc":{...}}
 *
 * A token with "user" is that user's (DS_TOKEN_USER); "project" is a
 * service token's project ("" or omitted: main), as is "project" of a
 * member ("" or "main": main).  Services of a project are named
 * "<run>--<project>".  The dump lists a project's models as
 * "<project>/<model>", main's by their names.
 *
 * Omitted service fields take ds_service_init()'s defaults, except auth
 * (on unless "auth":false) and model_prefix ("/v1" when a model is set).
 * Unknown keys are errors, so that a typo in a test does not pass
 * silently.  The state is created if needed, files with mode 0660.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "ds_state.h"


#define SEED_MODE               0660
#define SEED_ERR_LEN            512

typedef struct {
    ds_txn_t       *txn;
    char            msg[SEED_ERR_LEN];
} seed_ctx_t;

typedef int (*seed_op_fn)(seed_ctx_t *ctx, const cJSON *op);

typedef struct {
    const char     *name;
    seed_op_fn      fn;
    const char     *keys;           /* allowed keys, space-separated */
} seed_op_t;


static int seed_fail(seed_ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


static int
seed_fail(seed_ctx_t *ctx, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(ctx->msg, sizeof(ctx->msg), fmt, ap);
    va_end(ap);

    return -1;
}


/* ---- reading fields ---------------------------------------------------- */

/* 1 when `name` is one of the space-separated words of `keys` */
static int
seed_key_listed(const char *keys, const char *name)
{
    size_t       n, w;
    const char  *p;

    n = strlen(name);

    for (p = keys; *p != '\0'; p += w + (p[w] == ' ')) {
        w = strcspn(p, " ");

        if (w == n && strncmp(p, name, n) == 0) {
            return 1;
        }
    }

    return 0;
}


static int
seed_check_keys(seed_ctx_t *ctx, const cJSON *obj, const char *keys)
{
    const cJSON  *it;

    cJSON_ArrayForEach(it, obj) {
        if (!seed_key_listed(keys, it->string)) {
            return seed_fail(ctx, "unknown key \"%s\"", it->string);
        }
    }

    return 0;
}


/* a string field; *out stays as it is when the field is absent */
static int
seed_string(seed_ctx_t *ctx, const cJSON *obj, const char *key,
    int required, const char **out)
{
    const cJSON  *it;

    it = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (it == NULL) {
        return required ? seed_fail(ctx, "missing \"%s\"", key) : 0;
    }

    if (!cJSON_IsString(it)) {
        return seed_fail(ctx, "\"%s\" must be a string", key);
    }

    *out = it->valuestring;
    return 0;
}


static int
seed_str(seed_ctx_t *ctx, const cJSON *obj, const char *key, int required,
    ds_str_t *out)
{
    const char  *s;

    s = NULL;
    if (seed_string(ctx, obj, key, required, &s) != 0) {
        return -1;
    }

    if (s != NULL) {
        out->data = s;
        out->len = (uint32_t) strlen(s);
    }

    return 0;
}


/* "main" is spelled "" in records and keys (ds_state.h) */
static void
seed_main_project(ds_str_t *project)
{
    if (project->len == sizeof(DS_PROJECT_MAIN) - 1
        && memcmp(project->data, DS_PROJECT_MAIN, project->len) == 0)
    {
        project->len = 0;
    }

    if (project->len == 0) {
        project->data = "";
    }
}


static int
seed_bool(seed_ctx_t *ctx, const cJSON *obj, const char *key, int *out)
{
    const cJSON  *it;

    it = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (it == NULL) {
        return 0;
    }

    if (!cJSON_IsBool(it)) {
        return seed_fail(ctx, "\"%s\" must be true or false", key);
    }

    *out = cJSON_IsTrue(it);
    return 0;
}


/* a whole number in [0, max]; doubles hold integers exactly to 2^53 */
static int
seed_uint(seed_ctx_t *ctx, const cJSON *obj, const char *key, uint64_t max,
    uint64_t *out)
{
    double        d;
    const cJSON  *it;

    it = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (it == NULL) {
        return 0;
    }

    d = cJSON_IsNumber(it) ? it->valuedouble : -1;

    /* the range check first: the cast is defined only within it */
    if (!(d >= 0 && d <= 9007199254740992.0 && d <= (double) max)
        || d != (double) (uint64_t) d)
    {
        return seed_fail(ctx, "\"%s\" must be a whole number from 0 to "
                         "%llu", key, (unsigned long long) max);
    }

    *out = (uint64_t) d;
    return 0;
}


static int
seed_u32(seed_ctx_t *ctx, const cJSON *obj, const char *key, uint32_t *out)
{
    uint64_t  v;

    v = *out;
    if (seed_uint(ctx, obj, key, UINT32_MAX, &v) != 0) {
        return -1;
    }

    *out = (uint32_t) v;
    return 0;
}


static int
seed_array(seed_ctx_t *ctx, const cJSON *obj, const char *key, int required,
    const cJSON **out)
{
    const cJSON  *it;

    *out = NULL;
    it = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (it == NULL) {
        return required ? seed_fail(ctx, "missing \"%s\"", key) : 0;
    }

    if (!cJSON_IsArray(it)) {
        return seed_fail(ctx, "\"%s\" must be an array", key);
    }

    *out = it;
    return 0;
}


/* ---- operations -------------------------------------------------------- */

static int
seed_rate_limit(seed_ctx_t *ctx, const cJSON *it, int i, ds_rate_limit_t *rl)
{
    double        rps;
    const cJSON  *key, *v;

    if (!cJSON_IsObject(it)) {
        return seed_fail(ctx, "rate_limits[%d] must be an object", i);
    }

    if (seed_check_keys(ctx, it, "prefix key rps burst") != 0
        || seed_str(ctx, it, "prefix", 1, &rl->prefix) != 0
        || seed_u32(ctx, it, "burst", &rl->burst) != 0)
    {
        goto fail;
    }

    key = cJSON_GetObjectItemCaseSensitive(it, "key");
    rl->key_type = DS_RL_KEY_IP;

    if (cJSON_IsObject(key)) {
        if (seed_check_keys(ctx, key, "header") != 0
            || seed_str(ctx, key, "header", 1, &rl->header) != 0)
        {
            goto fail;
        }
        rl->key_type = DS_RL_KEY_HEADER;

    } else if (key != NULL
               && !(cJSON_IsString(key)
                    && strcmp(key->valuestring, "ip") == 0))
    {
        seed_fail(ctx, "\"key\" must be \"ip\" or {\"header\": NAME}");
        goto fail;
    }

    v = cJSON_GetObjectItemCaseSensitive(it, "rps");
    rps = cJSON_IsNumber(v) ? v->valuedouble : 0;

    if (!(rps >= 0.001 && rps <= 4000000.0)) {
        seed_fail(ctx, "\"rps\" must be a number from 0.001 to 4000000");
        goto fail;
    }

    rl->rps_milli = (uint32_t) (rps * 1000 + 0.5);
    return 0;

fail:

    /* name the element in the message */
    {
        char  tmp[SEED_ERR_LEN];

        memcpy(tmp, ctx->msg, sizeof(tmp));
        snprintf(ctx->msg, sizeof(ctx->msg), "rate_limits[%d]: %.400s", i,
                 tmp);
    }

    return -1;
}


/* a budget limit: a whole number, or "unlimited" (a token's) */
static int
seed_budget_limit(seed_ctx_t *ctx, const cJSON *o, const char *key,
    uint64_t max, uint64_t unlimited, uint64_t *out)
{
    const cJSON  *it;

    it = cJSON_GetObjectItemCaseSensitive(o, key);

    if (cJSON_IsString(it) && strcmp(it->valuestring, "unlimited") == 0) {
        *out = unlimited;
        return 0;
    }

    return seed_uint(ctx, o, key, max, out);
}


/* "budget": {"rpm","tpm","tpd"[,"max_tokens": a model's]} */
static int
seed_budget(seed_ctx_t *ctx, const cJSON *op, ds_budget_t *b, int model)
{
    uint64_t      rpm, tpm, mt;
    const cJSON  *o;

    o = cJSON_GetObjectItemCaseSensitive(op, "budget");
    if (o == NULL) {
        return 0;
    }

    rpm = 0;
    tpm = 0;
    mt = 0;

    if (seed_budget_limit(ctx, o, "rpm", UINT32_MAX - 1, DS_BUDGET_UNLIMITED,
                          &rpm) != 0
        || seed_budget_limit(ctx, o, "tpm", UINT32_MAX - 1,
                             DS_BUDGET_UNLIMITED, &tpm) != 0
        || seed_budget_limit(ctx, o, "tpd", UINT64_MAX - 1, UINT64_MAX,
                             &b->tpd) != 0
        || (model && seed_uint(ctx, o, "max_tokens", UINT32_MAX, &mt) != 0))
    {
        return -1;
    }

    b->rpm = (uint32_t) rpm;
    b->tpm = (uint32_t) tpm;
    b->max_tokens = (uint32_t) mt;

    return 0;
}


/* "routing": defaults as the service file's (ds_spec_model.c) */
static int
seed_routing(seed_ctx_t *ctx, const cJSON *op, ds_routing_t *rt)
{
    const char   *affinity;
    const cJSON  *o, *lf;

    o = cJSON_GetObjectItemCaseSensitive(op, "routing");
    if (o == NULL) {
        return 0;
    }

    affinity = "prefix";
    rt->prefix_bytes = DS_AFFINITY_PREFIX_BYTES;
    rt->load_factor = DS_AFFINITY_LOAD_FACTOR;

    if (seed_string(ctx, o, "affinity", 0, &affinity) != 0
        || seed_u32(ctx, o, "prefix_bytes", &rt->prefix_bytes) != 0
        || seed_str(ctx, o, "session_header", 0, &rt->session_header) != 0)
    {
        return -1;
    }

    rt->affinity = strcmp(affinity, "session") == 0 ? DS_AFFINITY_SESSION
                   : DS_AFFINITY_PREFIX;

    if (rt->affinity == DS_AFFINITY_SESSION && rt->session_header.len == 0) {
        rt->session_header.data = "x-session-id";
        rt->session_header.len = sizeof("x-session-id") - 1;
    }

    lf = cJSON_GetObjectItemCaseSensitive(o, "load_factor");
    if (cJSON_IsNumber(lf)) {
        rt->load_factor = (uint32_t) (lf->valuedouble * 1000 + 0.5);
    }

    return 0;
}


static int
seed_service(seed_ctx_t *ctx, const cJSON *op)
{
    int           auth, https, https_auto, hold, i;
    ds_err_t      err;
    const char   *format;
    const cJSON  *rls, *it;
    ds_service_t  svc;

    ds_service_init(&svc);
    auth = 1;
    https = 0;
    https_auto = 0;
    hold = 0;
    format = "openai";

    if (seed_str(ctx, op, "name", 1, &svc.name) != 0
        || seed_bool(ctx, op, "auth", &auth) != 0
        || seed_bool(ctx, op, "https", &https) != 0
        || seed_bool(ctx, op, "https_auto", &https_auto) != 0
        || seed_bool(ctx, op, "hold", &hold) != 0
        || seed_u32(ctx, op, "hold_max", &svc.hold_max) != 0
        || seed_u32(ctx, op, "hold_timeout_ms", &svc.hold_timeout_ms) != 0
        || seed_uint(ctx, op, "max_body_size", UINT64_MAX,
                     &svc.max_body_size) != 0
        || seed_u32(ctx, op, "read_timeout_ms", &svc.read_timeout_ms) != 0
        || seed_u32(ctx, op, "connect_timeout_ms", &svc.connect_timeout_ms)
           != 0
        || seed_str(ctx, op, "model", 0, &svc.model) != 0
        || seed_str(ctx, op, "model_prefix", 0, &svc.model_prefix) != 0
        || seed_string(ctx, op, "model_format", 0, &format) != 0
        || seed_array(ctx, op, "rate_limits", 0, &rls) != 0
        || seed_routing(ctx, op, &svc.routing) != 0
        || seed_budget(ctx, op, &svc.budget, 1) != 0)
    {
        return -1;
    }

    svc.flags = (auth ? DS_SERVICE_AUTH : 0) | (https ? DS_SERVICE_HTTPS : 0)
                | (https_auto ? DS_SERVICE_HTTPS_AUTO : 0)
                | (hold ? DS_SERVICE_HOLD : 0);

    if (strcmp(format, "openai") == 0) {
        svc.model_format = DS_MODEL_OPENAI;

    } else if (strcmp(format, "tgi") == 0) {
        svc.model_format = DS_MODEL_TGI;

    } else {
        return seed_fail(ctx, "\"model_format\" must be \"openai\" or "
                         "\"tgi\", not \"%s\"", format);
    }

    if (svc.model.len > 0
        && cJSON_GetObjectItemCaseSensitive(op, "model_prefix") == NULL)
    {
        svc.model_prefix.data = "/v1";
        svc.model_prefix.len = 3;
    }

    if (rls != NULL) {
        if (cJSON_GetArraySize(rls) > DS_RATE_LIMITS_MAX) {
            return seed_fail(ctx, "%d rate limits exceed the maximum of %d",
                             cJSON_GetArraySize(rls), DS_RATE_LIMITS_MAX);
        }

        i = 0;
        cJSON_ArrayForEach(it, rls) {
            if (seed_rate_limit(ctx, it, i, &svc.rate_limits[i]) != 0) {
                return -1;
            }
            i++;
        }

        svc.n_rate_limits = (uint32_t) i;
    }

    if (ds_put_service(ctx->txn, &svc, &err) != DS_OK) {
        return seed_fail(ctx, "%s", err.msg);
    }

    return 0;
}


static int
seed_del_service(seed_ctx_t *ctx, const cJSON *op)
{
    ds_err_t  err;
    ds_str_t  name;

    name.data = NULL;
    name.len = 0;

    if (seed_str(ctx, op, "name", 1, &name) != 0) {
        return -1;
    }

    if (ds_del_service(ctx->txn, name.data, name.len, &err) != DS_OK) {
        return seed_fail(ctx, "%s", err.msg);
    }

    return 0;
}


static int
seed_replica(seed_ctx_t *ctx, const cJSON *it, int i, ds_replica_t *r)
{
    uint32_t     weight;
    const char  *addr, *state;

    addr = NULL;
    state = "ready";
    weight = 1;

    memset(r, 0, sizeof(*r));
    r->version = 1;

    if (!cJSON_IsObject(it)) {
        return seed_fail(ctx, "replicas[%d] must be an object", i);
    }

    if (seed_check_keys(ctx, it, "addr state version weight") != 0
        || seed_string(ctx, it, "addr", 1, &addr) != 0
        || seed_string(ctx, it, "state", 0, &state) != 0
        || seed_u32(ctx, it, "version", &r->version) != 0
        || seed_u32(ctx, it, "weight", &weight) != 0)
    {
        char  tmp[SEED_ERR_LEN];

        memcpy(tmp, ctx->msg, sizeof(tmp));
        return seed_fail(ctx, "replicas[%d]: %.400s", i, tmp);
    }

    if (ds_replica_parse_addr(r, addr, strlen(addr)) != DS_OK) {
        return seed_fail(ctx, "replicas[%d]: bad address \"%s\" (expected "
                         "1.2.3.4:80 or [::1]:80)", i, addr);
    }

    if (strcmp(state, "ready") == 0) {
        r->state = DS_REPLICA_READY;

    } else if (strcmp(state, "draining") == 0) {
        r->state = DS_REPLICA_DRAINING;

    } else {
        return seed_fail(ctx, "replicas[%d]: \"state\" must be \"ready\" or "
                         "\"draining\", not \"%s\"", i, state);
    }

    if (weight > UINT16_MAX) {
        return seed_fail(ctx, "replicas[%d]: \"weight\" must be at most "
                         "65535", i);
    }

    r->weight = (uint16_t) weight;
    return 0;
}


static int
seed_replicas(seed_ctx_t *ctx, const cJSON *op)
{
    int            i, n, rc;
    ds_err_t       err;
    ds_str_t       name;
    const cJSON   *list, *it;
    ds_replica_t  *r;

    name.data = NULL;
    name.len = 0;

    if (seed_str(ctx, op, "service", 1, &name) != 0
        || seed_array(ctx, op, "replicas", 1, &list) != 0)
    {
        return -1;
    }

    n = cJSON_GetArraySize(list);
    if (n > DS_REPLICAS_MAX) {
        return seed_fail(ctx, "%d replicas exceed the maximum of %d", n,
                         DS_REPLICAS_MAX);
    }

    r = calloc(n ? (size_t) n : 1, sizeof(ds_replica_t));
    if (r == NULL) {
        return seed_fail(ctx, "out of memory");
    }

    i = 0;
    cJSON_ArrayForEach(it, list) {
        if (seed_replica(ctx, it, i, &r[i]) != 0) {
            free(r);
            return -1;
        }
        i++;
    }

    rc = ds_put_replicas(ctx->txn, name.data, name.len, r, (uint32_t) n,
                         &err);
    free(r);

    if (rc != DS_OK) {
        return seed_fail(ctx, "%s", err.msg);
    }

    return 0;
}


static int
seed_token(seed_ctx_t *ctx, const cJSON *op)
{
    int           admin, all, i, n, rc;
    ds_err_t      err;
    ds_str_t     *services;
    uint64_t      created;
    const char   *text;
    ds_token_t    tok;
    const cJSON  *list, *it;

    memset(&tok, 0, sizeof(tok));
    text = NULL;
    admin = 0;
    all = 0;
    created = (uint64_t) time(NULL);

    if (seed_string(ctx, op, "token", 1, &text) != 0
        || seed_str(ctx, op, "name", 1, &tok.name) != 0
        || seed_bool(ctx, op, "admin", &admin) != 0
        || seed_bool(ctx, op, "all", &all) != 0
        || seed_uint(ctx, op, "expires", UINT64_MAX, &tok.expires) != 0
        || seed_uint(ctx, op, "created", UINT64_MAX, &created) != 0
        || seed_array(ctx, op, "services", 0, &list) != 0
        || seed_str(ctx, op, "user", 0, &tok.user) != 0
        || seed_str(ctx, op, "project", 0, &tok.project) != 0
        || seed_budget(ctx, op, &tok.budget, 0) != 0)
    {
        return -1;
    }

    if (text[0] == '\0') {
        return seed_fail(ctx, "\"token\" is empty");
    }

    seed_main_project(&tok.project);

    ds_sha256(text, strlen(text), tok.hash);
    tok.created = created;
    tok.flags = (admin ? DS_TOKEN_ADMIN : 0)
                | (all ? DS_TOKEN_ALL_SERVICES : 0)
                | (tok.user.len ? DS_TOKEN_USER : 0);

    n = list ? cJSON_GetArraySize(list) : 0;
    if (n > DS_TOKEN_SCOPE_MAX) {
        return seed_fail(ctx, "%d services exceed the maximum of %d", n,
                         DS_TOKEN_SCOPE_MAX);
    }

    services = calloc(n ? (size_t) n : 1, sizeof(ds_str_t));
    if (services == NULL) {
        return seed_fail(ctx, "out of memory");
    }

    i = 0;
    if (list != NULL) {
        cJSON_ArrayForEach(it, list) {
            if (!cJSON_IsString(it)) {
                free(services);
                return seed_fail(ctx, "services[%d] must be a string", i);
            }

            services[i].data = it->valuestring;
            services[i].len = (uint32_t) strlen(it->valuestring);
            i++;
        }
    }

    tok.n_services = (uint32_t) n;

    rc = ds_put_token(ctx->txn, &tok, services, &err);
    free(services);

    if (rc != DS_OK) {
        return seed_fail(ctx, "%s", err.msg);
    }

    return 0;
}


static int
seed_del_token(seed_ctx_t *ctx, const cJSON *op)
{
    uint8_t      hash[DS_TOKEN_HASH_LEN];
    ds_err_t     err;
    const char  *text;

    text = NULL;
    if (seed_string(ctx, op, "token", 1, &text) != 0) {
        return -1;
    }

    ds_sha256(text, strlen(text), hash);

    if (ds_del_token(ctx->txn, hash, &err) != DS_OK) {
        return seed_fail(ctx, "%s", err.msg);
    }

    return 0;
}


static int
seed_member(seed_ctx_t *ctx, const cJSON *op)
{
    ds_err_t      err;
    ds_str_t      project, user;
    const char   *role;
    ds_member_t   m;

    memset(&project, 0, sizeof(project));
    memset(&user, 0, sizeof(user));
    memset(&m, 0, sizeof(m));
    role = NULL;

    if (seed_str(ctx, op, "project", 0, &project) != 0
        || seed_str(ctx, op, "user", 1, &user) != 0
        || seed_string(ctx, op, "role", 1, &role) != 0)
    {
        return -1;
    }

    seed_main_project(&project);

    if (strcmp(role, "admin") == 0) {
        m.role = DS_ROLE_ADMIN;

    } else if (strcmp(role, "manager") == 0) {
        m.role = DS_ROLE_MANAGER;

    } else if (strcmp(role, "user") == 0) {
        m.role = DS_ROLE_USER;

    } else {
        return seed_fail(ctx, "\"role\": \"%s\" is not admin, manager or "
                         "user", role);
    }

    m.created = (uint64_t) time(NULL);

    if (ds_put_member(ctx->txn, project.data, project.len, user.data,
                      user.len, &m, &err)
        != DS_OK)
    {
        return seed_fail(ctx, "%s", err.msg);
    }

    return 0;
}


static int
seed_del_member(seed_ctx_t *ctx, const cJSON *op)
{
    int        rc;
    ds_err_t   err;
    ds_str_t   project, user;

    memset(&project, 0, sizeof(project));
    memset(&user, 0, sizeof(user));

    if (seed_str(ctx, op, "project", 0, &project) != 0
        || seed_str(ctx, op, "user", 1, &user) != 0)
    {
        return -1;
    }

    seed_main_project(&project);

    rc = ds_del_member(ctx->txn, project.data, project.len, user.data,
                       user.len, &err);
    if (rc != DS_OK) {
        return seed_fail(ctx, "%s", rc == DS_NOTFOUND ? "no such member"
                                                       : err.msg);
    }

    return 0;
}


static int
seed_setting(seed_ctx_t *ctx, const cJSON *op)
{
    ds_err_t     err;
    const char  *key, *value;

    key = NULL;
    value = NULL;

    if (seed_string(ctx, op, "key", 1, &key) != 0
        || seed_string(ctx, op, "value", 1, &value) != 0)
    {
        return -1;
    }

    if (ds_put_setting(ctx->txn, key, value, strlen(value), &err) != DS_OK) {
        return seed_fail(ctx, "%s", err.msg);
    }

    return 0;
}


static int
seed_cert(seed_ctx_t *ctx, const cJSON *op)
{
    int          acme;
    ds_err_t     err;
    ds_cert_t    c;
    const char  *cert, *key;

    memset(&c, 0, sizeof(c));
    acme = 0;
    cert = NULL;
    key = NULL;

    if (seed_str(ctx, op, "host", 1, &c.host) != 0
        || seed_string(ctx, op, "cert", 1, &cert) != 0
        || seed_string(ctx, op, "key", 1, &key) != 0
        || seed_uint(ctx, op, "not_after", UINT64_MAX, &c.not_after) != 0
        || seed_bool(ctx, op, "acme", &acme) != 0)
    {
        return -1;
    }

    c.flags = acme ? DS_CERT_ACME : DS_CERT_LOCAL;
    c.cert.data = cert;
    c.cert.len = (uint32_t) strlen(cert);
    c.key.data = key;
    c.key.len = (uint32_t) strlen(key);

    if (ds_put_cert(ctx->txn, &c, &err) != DS_OK) {
        return seed_fail(ctx, "%s", err.msg);
    }

    return 0;
}


static int
seed_run(seed_ctx_t *ctx, const cJSON *op)
{
    int           rc;
    char         *doc;
    ds_err_t      err;
    ds_str_t      name;
    const cJSON  *d;

    name.data = NULL;
    name.len = 0;

    if (seed_str(ctx, op, "name", 1, &name) != 0) {
        return -1;
    }

    d = cJSON_GetObjectItemCaseSensitive(op, "doc");
    if (!cJSON_IsObject(d)) {
        return seed_fail(ctx, "\"doc\" must be an object");
    }

    doc = cJSON_PrintUnformatted(d);
    if (doc == NULL) {
        return seed_fail(ctx, "out of memory");
    }

    rc = ds_put_run(ctx->txn, name.data, name.len, doc, strlen(doc), &err);
    cJSON_free(doc);

    if (rc != DS_OK) {
        return seed_fail(ctx, "%s", err.msg);
    }

    return 0;
}


static const seed_op_t  seed_ops[] = {
    { "service", seed_service,
      "op name auth https https_auto hold hold_max hold_timeout_ms "
      "max_body_size read_timeout_ms "
      "connect_timeout_ms model model_prefix model_format rate_limits "
      "routing budget" },
    { "del_service", seed_del_service, "op name" },
    { "replicas", seed_replicas, "op service replicas" },
    { "token", seed_token,
      "op token name admin all services expires created user project "
      "budget" },
    { "del_token", seed_del_token, "op token" },
    { "member", seed_member, "op project user role" },
    { "del_member", seed_del_member, "op project user" },
    { "setting", seed_setting, "op key value" },
    { "cert", seed_cert, "op host cert key not_after acme" },
    { "run", seed_run, "op name doc" },
};


static int
seed_apply(seed_ctx_t *ctx, const cJSON *op)
{
    size_t       i;
    const char  *name;

    if (!cJSON_IsObject(op)) {
        return seed_fail(ctx, "an operation must be an object");
    }

    name = NULL;
    if (seed_string(ctx, op, "op", 1, &name) != 0) {
        return -1;
    }

    for (i = 0; i < sizeof(seed_ops) / sizeof(seed_ops[0]); i++) {
        if (strcmp(seed_ops[i].name, name) == 0) {
            if (seed_check_keys(ctx, op, seed_ops[i].keys) != 0) {
                return -1;
            }

            return seed_ops[i].fn(ctx, op);
        }
    }

    return seed_fail(ctx, "unknown op \"%s\"", name);
}


static char *
read_all(FILE *f, size_t *len)
{
    char    *buf, *p;
    size_t   cap, n;

    cap = 65536;
    *len = 0;

    buf = malloc(cap);
    if (buf == NULL) {
        return NULL;
    }

    for ( ;; ) {
        n = fread(buf + *len, 1, cap - *len, f);
        *len += n;

        if (*len < cap) {
            if (ferror(f)) {
                free(buf);
                return NULL;
            }
            return buf;
        }

        p = realloc(buf, cap * 2);
        if (p == NULL) {
            free(buf);
            return NULL;
        }

        buf = p;
        cap *= 2;
    }
}


static int
seed(const char *dir)
{
    int          i, rc;
    char        *input;
    size_t       len;
    cJSON       *root;
    ds_err_t     err;
    ds_state_t  *st;
    seed_ctx_t   ctx;
    const cJSON *op;

    input = read_all(stdin, &len);
    if (input == NULL) {
        fprintf(stderr, "dstack-seed: cannot read stdin: %s\n",
                strerror(errno));
        return 1;
    }

    root = cJSON_ParseWithLength(input, len);
    if (root == NULL) {
        const char  *at = cJSON_GetErrorPtr();

        fprintf(stderr, "dstack-seed: invalid JSON at byte %ld\n",
                at ? (long) (at - input) : 0L);
        free(input);
        return 1;
    }

    free(input);

    if (!cJSON_IsArray(root)) {
        fprintf(stderr, "dstack-seed: the input must be a JSON array of "
                "operations\n");
        cJSON_Delete(root);
        return 1;
    }

    if (ds_state_open(&st, dir, DS_STATE_CREATE, SEED_MODE, &err) != DS_OK) {
        fprintf(stderr, "dstack-seed: %s\n", err.msg);
        cJSON_Delete(root);
        return 1;
    }

    if (ds_txn_begin(st, 1, &ctx.txn, &err) != DS_OK) {
        fprintf(stderr, "dstack-seed: %s\n", err.msg);
        ds_state_close(st);
        cJSON_Delete(root);
        return 1;
    }

    i = 0;
    rc = 0;

    cJSON_ArrayForEach(op, root) {
        ctx.msg[0] = '\0';

        if (seed_apply(&ctx, op) != 0) {
            fprintf(stderr, "dstack-seed: op %d: %s\n", i, ctx.msg);
            rc = 1;
            break;
        }

        i++;
    }

    if (rc == 0) {
        if (ds_txn_commit(ctx.txn, &err) != DS_OK) {
            fprintf(stderr, "dstack-seed: %s\n", err.msg);
            rc = 1;
        }

    } else {
        ds_txn_abort(ctx.txn);
    }

    ds_state_close(st);
    cJSON_Delete(root);
    return rc;
}


/* ---- dump -------------------------------------------------------------- */

typedef struct {
    ds_txn_t       *txn;
    cJSON          *obj;
    int             failed;
    ds_err_t        err;
} dump_ctx_t;


/* a string from bytes that are not NUL-terminated */
static cJSON *
dump_str(ds_str_t s)
{
    char   *c;
    cJSON  *j;

    c = malloc(s.len + 1);
    if (c == NULL) {
        return NULL;
    }

    if (s.len > 0) {
        memcpy(c, s.data, s.len);
    }
    c[s.len] = '\0';

    j = cJSON_CreateString(c);
    free(c);
    return j;
}


/* object[key] = item, with key from bytes; keys are names, short */
static void
dump_add(cJSON *obj, ds_str_t key, cJSON *item)
{
    char  k[1024];

    snprintf(k, sizeof(k), "%.*s", (int) key.len, key.data);
    cJSON_AddItemToObject(obj, k, item);
}


/* "routing" as the seed op takes it */
static void
dump_routing(cJSON *o, const ds_routing_t *rt)
{
    cJSON  *r;

    r = cJSON_AddObjectToObject(o, "routing");
    if (r == NULL) {
        return;
    }

    cJSON_AddStringToObject(r, "affinity",
                            rt->affinity == DS_AFFINITY_SESSION
                            ? "session" : "prefix");
    cJSON_AddNumberToObject(r, "prefix_bytes", rt->prefix_bytes);
    cJSON_AddNumberToObject(r, "load_factor", rt->load_factor / 1000.0);
    if (rt->session_header.len) {
        cJSON_AddItemToObject(r, "session_header",
                              dump_str(rt->session_header));
    }
}


/* "budget" when any limit is set: the record's numbers as they are
 * (DS_BUDGET_UNLIMITED included) */
static void
dump_budget(cJSON *o, const ds_budget_t *b)
{
    cJSON  *j;

    if (!ds_budget_set(b)) {
        return;
    }
    j = cJSON_AddObjectToObject(o, "budget");
    if (j == NULL) {
        return;
    }
    cJSON_AddNumberToObject(j, "rpm", b->rpm);
    cJSON_AddNumberToObject(j, "tpm", b->tpm);
    cJSON_AddNumberToObject(j, "tpd", (double) b->tpd);
    cJSON_AddNumberToObject(j, "max_tokens", b->max_tokens);
}


static const char *
dump_format(uint32_t format)
{
    return format == DS_MODEL_TGI ? "tgi" : "openai";
}


static cJSON *
dump_replicas(dump_ctx_t *ctx, const ds_service_t *svc)
{
    char              addr[DS_REPLICA_ADDR_LEN];
    cJSON            *o, *list, *e;
    uint32_t          i;
    ds_replica_t      r;
    ds_replica_set_t  set;

    switch (ds_get_replicas(ctx->txn, svc->name.data, svc->name.len, &set,
                            &ctx->err))
    {
    case DS_OK:
        break;
    case DS_NOTFOUND:
        return cJSON_CreateNull();
    default:
        ctx->failed = 1;
        return cJSON_CreateNull();
    }

    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "generation", (double) set.generation);
    list = cJSON_AddArrayToObject(o, "list");

    for (i = 0; i < set.count; i++) {
        ds_replica_at(&set, i, &r);
        ds_replica_format_addr(&r, addr, sizeof(addr));

        e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "addr", addr);
        cJSON_AddStringToObject(e, "state", r.state == DS_REPLICA_READY
                                            ? "ready" : "draining");
        cJSON_AddNumberToObject(e, "version", r.version);
        cJSON_AddNumberToObject(e, "weight", r.weight);
        cJSON_AddNumberToObject(e, "uid", (double) r.uid);
        cJSON_AddNumberToObject(e, "slot", r.slot);
        cJSON_AddItemToArray(list, e);
    }

    return o;
}


static int
dump_service(void *arg, const ds_service_t *svc)
{
    cJSON                  *o, *rls, *e, *key;
    uint32_t                i;
    dump_ctx_t             *ctx;
    const ds_rate_limit_t  *rl;

    ctx = arg;
    o = cJSON_CreateObject();

    cJSON_AddNumberToObject(o, "uid", (double) svc->uid);
    cJSON_AddNumberToObject(o, "slot", svc->slot);
    cJSON_AddNumberToObject(o, "flags", svc->flags);
    cJSON_AddBoolToObject(o, "auth", svc->flags & DS_SERVICE_AUTH);
    cJSON_AddBoolToObject(o, "https", svc->flags & DS_SERVICE_HTTPS);
    cJSON_AddBoolToObject(o, "https_auto", svc->flags & DS_SERVICE_HTTPS_AUTO);
    cJSON_AddNumberToObject(o, "max_body_size", (double) svc->max_body_size);
    cJSON_AddNumberToObject(o, "read_timeout_ms", svc->read_timeout_ms);
    cJSON_AddNumberToObject(o, "connect_timeout_ms",
                            svc->connect_timeout_ms);
    cJSON_AddBoolToObject(o, "hold", svc->flags & DS_SERVICE_HOLD);
    cJSON_AddNumberToObject(o, "hold_max", svc->hold_max);
    cJSON_AddNumberToObject(o, "hold_timeout_ms", svc->hold_timeout_ms);

    if (svc->model.len > 0) {
        cJSON_AddItemToObject(o, "model", dump_str(svc->model));
        cJSON_AddItemToObject(o, "model_prefix", dump_str(svc->model_prefix));
        cJSON_AddStringToObject(o, "model_format",
                                dump_format(svc->model_format));
        if (svc->routing.affinity != DS_AFFINITY_NONE) {
            dump_routing(o, &svc->routing);
        }
        dump_budget(o, &svc->budget);
    } else {
        cJSON_AddNullToObject(o, "model");
    }

    rls = cJSON_AddArrayToObject(o, "rate_limits");

    for (i = 0; i < svc->n_rate_limits; i++) {
        rl = &svc->rate_limits[i];
        e = cJSON_CreateObject();
        cJSON_AddItemToObject(e, "prefix", dump_str(rl->prefix));

        if (rl->key_type == DS_RL_KEY_HEADER) {
            key = cJSON_CreateObject();
            cJSON_AddItemToObject(key, "header", dump_str(rl->header));
            cJSON_AddItemToObject(e, "key", key);
        } else {
            cJSON_AddStringToObject(e, "key", "ip");
        }

        cJSON_AddNumberToObject(e, "rps", rl->rps_milli / 1000.0);
        cJSON_AddNumberToObject(e, "burst", rl->burst);
        cJSON_AddItemToArray(rls, e);
    }

    cJSON_AddItemToObject(o, "replicas", dump_replicas(ctx, svc));
    dump_add(ctx->obj, svc->name, o);

    return ctx->failed;
}


static int
dump_token(void *arg, const ds_token_t *tok)
{
    char         hex[9], key[128];
    cJSON       *o, *list;
    uint32_t     off;
    ds_str_t     name;
    dump_ctx_t  *ctx;

    ctx = arg;
    o = cJSON_CreateObject();

    /* a prefix identifies the token; the whole hash is a secret's twin */
    snprintf(hex, sizeof(hex), "%02x%02x%02x%02x", tok->hash[0],
             tok->hash[1], tok->hash[2], tok->hash[3]);

    cJSON_AddStringToObject(o, "hash", hex);
    cJSON_AddBoolToObject(o, "admin", tok->flags & DS_TOKEN_ADMIN);
    cJSON_AddBoolToObject(o, "all", tok->flags & DS_TOKEN_ALL_SERVICES);
    cJSON_AddItemToObject(o, "user", dump_str(tok->user));
    cJSON_AddItemToObject(o, "project", dump_str(tok->project));
    list = cJSON_AddArrayToObject(o, "services");

    off = 0;
    while (ds_token_scope_next(tok, &off, &name)) {
        cJSON_AddItemToArray(list, dump_str(name));
    }

    cJSON_AddNumberToObject(o, "created", (double) tok->created);
    cJSON_AddNumberToObject(o, "expires", (double) tok->expires);
    dump_budget(o, &tok->budget);

    /* token names need not be unique: the hash prefix tells them apart */
    snprintf(key, sizeof(key), "%.*s", (int) tok->name.len, tok->name.data);
    if (cJSON_GetObjectItemCaseSensitive(ctx->obj, key) != NULL) {
        snprintf(key, sizeof(key), "%.*s#%s", (int) tok->name.len,
                 tok->name.data, hex);
    }

    cJSON_AddItemToObject(ctx->obj, key, o);
    return 0;
}


static int
dump_model(void *arg, const ds_model_t *m)
{
    char         key[2 * DS_NAME_MAX + 2];
    cJSON       *o;
    ds_str_t     project;
    dump_ctx_t  *ctx;

    ctx = arg;
    o = cJSON_CreateObject();

    cJSON_AddItemToObject(o, "service", dump_str(m->service));
    cJSON_AddItemToObject(o, "prefix", dump_str(m->prefix));
    cJSON_AddStringToObject(o, "format", dump_format(m->format));
    cJSON_AddNumberToObject(o, "created", (double) m->created);
    dump_budget(o, &m->budget);

    ds_service_project(m->service.data, m->service.len, &project);

    if (project.len == 0) {
        dump_add(ctx->obj, m->name, o);
        return 0;
    }

    snprintf(key, sizeof(key), "%.*s/%.*s", (int) project.len, project.data,
             (int) m->name.len, m->name.data);
    cJSON_AddItemToObject(ctx->obj, key, o);
    return 0;
}


/* text as a string; anything with a NUL or control bytes as hex */
static cJSON *
dump_bytes(const ds_str_t *v)
{
    char     *hex;
    cJSON    *o;
    uint32_t  i;

    for (i = 0; i < v->len; i++) {
        if ((unsigned char) v->data[i] < 0x20 && v->data[i] != '\t'
            && v->data[i] != '\n' && v->data[i] != '\r')
        {
            break;
        }
    }

    if (i == v->len) {
        return dump_str(*v);
    }

    hex = malloc((size_t) v->len * 2 + 1);
    if (hex == NULL) {
        return NULL;
    }

    for (i = 0; i < v->len; i++) {
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char) v->data[i]);
    }
    hex[2 * v->len] = '\0';

    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "hex", hex);
    free(hex);
    return o;
}


static int
dump_setting(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    dump_ctx_t  *ctx;

    ctx = arg;
    dump_add(ctx->obj, *key, dump_bytes(val));
    return 0;
}


static int
dump_run(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    cJSON       *doc;
    dump_ctx_t  *ctx;

    ctx = arg;

    doc = cJSON_ParseWithLength(val->data, val->len);
    if (doc == NULL) {
        doc = dump_bytes(val);
    }

    dump_add(ctx->obj, *key, doc);
    return 0;
}


static int
dump(const char *dir)
{
    int          rc;
    char        *out;
    cJSON       *root;
    ds_state_t  *st;
    dump_ctx_t   ctx;

    memset(&ctx, 0, sizeof(ctx));

    if (ds_state_open(&st, dir, DS_STATE_RDONLY, SEED_MODE, &ctx.err)
        != DS_OK)
    {
        fprintf(stderr, "dstack-seed: %s\n", ctx.err.msg);
        return 1;
    }

    if (ds_txn_begin(st, 0, &ctx.txn, &ctx.err) != DS_OK) {
        fprintf(stderr, "dstack-seed: %s\n", ctx.err.msg);
        ds_state_close(st);
        return 1;
    }

    root = cJSON_CreateObject();

    ctx.obj = cJSON_AddObjectToObject(root, "services");
    rc = ds_foreach_service(ctx.txn, dump_service, &ctx, &ctx.err);

    if (rc == DS_OK && !ctx.failed) {
        ctx.obj = cJSON_AddObjectToObject(root, "tokens");
        rc = ds_foreach_token(ctx.txn, dump_token, &ctx, &ctx.err);
    }

    if (rc == DS_OK && !ctx.failed) {
        ctx.obj = cJSON_AddObjectToObject(root, "models");
        rc = ds_foreach_model(ctx.txn, dump_model, &ctx, &ctx.err);
    }

    if (rc == DS_OK && !ctx.failed) {
        ctx.obj = cJSON_AddObjectToObject(root, "settings");
        rc = ds_foreach_setting(ctx.txn, dump_setting, &ctx, &ctx.err);
    }

    if (rc == DS_OK && !ctx.failed) {
        ctx.obj = cJSON_AddObjectToObject(root, "runs");
        rc = ds_foreach_run(ctx.txn, dump_run, &ctx, &ctx.err);
    }

    ds_txn_abort(ctx.txn);
    ds_state_close(st);

    if (rc != DS_OK || ctx.failed) {
        fprintf(stderr, "dstack-seed: %s\n", ctx.err.msg);
        cJSON_Delete(root);
        return 1;
    }

    out = cJSON_Print(root);
    cJSON_Delete(root);

    if (out == NULL) {
        fprintf(stderr, "dstack-seed: out of memory\n");
        return 1;
    }

    printf("%s\n", out);
    cJSON_free(out);

    return fflush(stdout) == 0 ? 0 : 1;
}


int
main(int argc, char **argv)
{
    if (argc == 2 && argv[1][0] != '-') {
        return seed(argv[1]);
    }

    if (argc == 3 && strcmp(argv[2], "--dump") == 0) {
        return dump(argv[1]);
    }

    fprintf(stderr, "usage: dstack-seed STATE_DIR < ops.json\n"
            "       dstack-seed STATE_DIR --dump\n");
    return 2;
}
