/*
 * fleet.dstack.yml -> the normalized SSH fleet of ds_fleet.h.
 *
 * The fields go through the validator of service specs (the walk of
 * ds_spec_check.c, env from ds_spec_container.c); this file holds the
 * fleet's own fields, the resolution of each host's fields from
 * ssh_config's and the fleet's, and the typed view.
 */

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_fleet.h"
#include "ds_spec_impl.h"


/* ---- plain fields ---------------------------------------------------------- */

/*
 * Hostnames go on an ssh command line: nothing that could pass for an
 * option, a user ("@") or a port (":"), except in an IPv6 address.
 */
static const char *
ds_v_hostname_wrong(const char *s)
{
    size_t           n;
    struct in6_addr  a6;

    n = strlen(s);

    if (n > DS_FLEET_HOSTNAME_MAX) {
        return ": longer than 253 characters";
    }

    if (strchr(s, ':')) {
        return inet_pton(AF_INET6, s, &a6) == 1
               ? NULL : ": \":\" is only for IPv6 addresses";
    }

    if (s[0] == '-' || s[0] == '.') {
        return ": must not start with \"-\" or \".\"";
    }

    if (strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "0123456789.-_") != n)
    {
        return ": expected a DNS name or an IP address (no spaces, \"@\" "
               "or \":\")";
    }

    return NULL;
}


static int
ds_v_f_hostname(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "hostname", ds_v_hostname_wrong, out);
}


static const char *
ds_v_ssh_user_wrong(const char *s)
{
    size_t  n;

    n = strlen(s);

    if (n > DS_FLEET_USER_MAX) {
        return ": longer than 32 characters";
    }

    if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_')
        || strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != n)
    {
        return ": expected lowercase letters, digits, \"_\", \".\" or "
               "\"-\", starting with a letter or \"_\"";
    }

    return NULL;
}


static int
ds_v_f_ssh_user(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "user", ds_v_ssh_user_wrong, out);
}


static const char *
ds_v_identity_wrong(const char *s)
{
    if (strlen(s) > DS_SPEC_FS_PATH_MAX) {
        return ": longer than 4095 characters";
    }
    return ds_v_has_ctl(s) ? ": must not contain control characters" : NULL;
}


static int
ds_v_f_identity_file(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "identity_file", ds_v_identity_wrong, out);
}


static const char *
ds_v_ip_wrong(const char *s)
{
    struct in_addr   a4;
    struct in6_addr  a6;

    return inet_pton(AF_INET, s, &a4) == 1 || inet_pton(AF_INET6, s, &a6) == 1
           ? NULL : ": expected an IPv4 or IPv6 address";
}


static int
ds_v_f_internal_ip(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "internal_ip", ds_v_ip_wrong, out);
}


static int
ds_v_f_ssh_port(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    double  d;

    if (cJSON_IsNumber(in) && ds_v_is_whole(in->valuedouble)) {
        d = in->valuedouble;
        if (d < 1 || d > 65535) {
            return ds_v_fail(c, in, 0, "must be 1..65535, got %.15g", d);
        }
    }

    return ds_v_f_uint(c, in, 1, 65535, out);
}


/* N >= 1, or "auto": one block per GPU */
static int
ds_v_f_blocks(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    ds_qbuf_t  qb;

    if (cJSON_IsString(in)) {
        if (strcmp(in->valuestring, "auto") != 0) {
            return ds_v_fail(c, in, 0, "invalid blocks %s: expected an "
                             "integer >= 1 or \"auto\"",
                             ds_q(&qb, in->valuestring));
        }
        return ds_v_out_str(c, "auto", out);
    }

    if (!cJSON_IsNumber(in)) {
        return ds_v_fail(c, in, 0, "expected an integer >= 1 or \"auto\", "
                         "got %s", ds_tname(in));
    }

    return ds_v_f_uint(c, in, 1, DS_FLEET_BLOCKS_MAX, out);
}


static int
ds_v_f_fleet_name(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "fleet name", ds_v_run_name_wrong, out);
}


static int
ds_v_f_fleet_type(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    static const char *const  fleet[] = { "fleet" };
    ds_qbuf_t                 qb;

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected \"fleet\", got %s",
                         ds_tname(in));
    }

    if (strcmp(in->valuestring, "fleet") == 0) {
        return ds_v_out_str(c, "fleet", out);
    }

    if (ds_suggest(in->valuestring, fleet, 1)) {
        return ds_v_fail(c, in, 0, "unknown type %s (did you mean "
                         "\"fleet\"?)", ds_q(&qb, in->valuestring));
    }

    return ds_v_fail(c, in, 0, "type %s is not a fleet: expected \"fleet\"",
                     ds_q(&qb, in->valuestring));
}


static const ds_venum_t  ds_fleet_placements =
    DS_VENUM("placement", "any", "cluster");


/* ---- proxy_jump ------------------------------------------------------------- */

enum { J_HOSTNAME, J_PORT, J_USER, J_IDENTITY_FILE, J_N };

static const ds_vfield_t  ds_jump_fields[J_N] = {
    { "hostname", ds_v_f_hostname, DS_VF_REQUIRED, NULL },
    { "port", ds_v_f_ssh_port, 0, NULL },
    { "user", ds_v_f_ssh_user, 0, NULL },
    { "identity_file", ds_v_f_identity_file, 0, NULL },
};

static const ds_vunsup_t  ds_ssh_unsup[] = {
    { "ssh_key", "is not supported: set \"identity_file\"" },
    { NULL, NULL }
};


/* user and identity_file may stay null: the host's fill them */
static int
ds_v_f_proxy_jump(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[J_N] = { NULL };

    rc = ds_v_object(c, in, ds_jump_fields, J_N, ds_ssh_unsup, s);

    if (rc == DS_OK && s[J_PORT] == NULL) {
        s[J_PORT] = cJSON_CreateNumber(DS_FLEET_SSH_PORT);
        rc = s[J_PORT] ? DS_OK : ds_v_oom(c);
    }

    return ds_v_finish(c, ds_jump_fields, J_N, s, rc, out);
}


/* ---- hosts ---------------------------------------------------------------- */

enum { H_HOSTNAME, H_PORT, H_USER, H_IDENTITY_FILE, H_PROXY_JUMP,
       H_INTERNAL_IP, H_BLOCKS, H_N };

static const ds_vfield_t  ds_host_fields[H_N] = {
    { "hostname", ds_v_f_hostname, DS_VF_REQUIRED, NULL },
    { "port", ds_v_f_ssh_port, 0, NULL },
    { "user", ds_v_f_ssh_user, 0, NULL },
    { "identity_file", ds_v_f_identity_file, 0, NULL },
    { "proxy_jump", ds_v_f_proxy_jump, 0, NULL },
    { "internal_ip", ds_v_f_internal_ip, 0, NULL },
    { "blocks", ds_v_f_blocks, 0, NULL },
};


/* a bare address or a mapping; what it leaves out stays null for now */
static int
ds_v_host(ds_vctx_t *c, const cJSON *in, const cJSON *done, cJSON **out)
{
    int     rc;
    cJSON  *s[H_N] = { NULL };

    (void) done;

    if (cJSON_IsString(in)) {
        rc = ds_v_f_hostname(c, in, &s[H_HOSTNAME]);

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_object(c, in, ds_host_fields, H_N, ds_ssh_unsup, s);

    } else {
        return ds_v_fail(c, in, 0, "expected a hostname or a mapping "
                         "(hostname, port, user, ...), got %s",
                         ds_tname(in));
    }

    return ds_v_finish(c, ds_host_fields, H_N, s, rc, out);
}


static int
ds_v_f_hosts(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (cJSON_IsArray(in) && in->child == NULL) {
        return ds_v_fail(c, in, 0, "expected at least one host");
    }

    return ds_v_list(c, in, "hosts", "a list of hosts", DS_FLEET_HOSTS_MAX,
                     ds_v_host, out);
}


/* host[name] = a copy of dflt when null; a missing dflt is no error */
static int
ds_v_inherit(ds_vctx_t *c, cJSON *host, const char *name, const cJSON *dflt)
{
    cJSON  *v;

    if (!cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(host, name))
        || dflt == NULL || cJSON_IsNull(dflt))
    {
        return DS_OK;
    }

    v = cJSON_Duplicate(dflt, 1);
    if (v == NULL || !cJSON_ReplaceItemInObjectCaseSensitive(host, name, v)) {
        cJSON_Delete(v);
        return ds_v_oom(c);
    }

    return DS_OK;
}


/*
 * One host's fields from ssh_config's (cfg, normalized): port, user,
 * identity_file, then its proxy_jump's user and identity_file from the
 * host's.  at: the host in the input, for messages.
 */
static int
ds_v_resolve_host(ds_vctx_t *c, const cJSON *at, cJSON *host,
    const cJSON *cfg)
{
    int           rc;
    cJSON        *jump, *port;
    const char   *k;
    static const char *const  required[] = { "user", "identity_file" };
    size_t        i;

    port = cJSON_CreateNumber(DS_FLEET_SSH_PORT);
    if (port == NULL) {
        return ds_v_oom(c);
    }
    rc = ds_v_inherit(c, host, "port", ds_v_get(cfg, "port")
                                       ? ds_v_get(cfg, "port") : port);
    cJSON_Delete(port);
    if (rc != DS_OK) {
        return rc;
    }

    for (i = 0; i < DS_NFIELDS(required); i++) {
        k = required[i];

        if (ds_v_inherit(c, host, k, ds_v_get(cfg, k)) != DS_OK) {
            return DS_ERROR;
        }
        if (ds_v_get(host, k) == NULL) {
            return ds_v_fail(c, at, 0, "no %s (set ssh_config.%s or the "
                             "host's)", k, k);
        }
    }

    if (ds_v_inherit(c, host, "proxy_jump", ds_v_get(cfg, "proxy_jump"))
        != DS_OK)
    {
        return DS_ERROR;
    }

    jump = cJSON_GetObjectItemCaseSensitive(host, "proxy_jump");
    if (!cJSON_IsObject(jump)) {
        return DS_OK;
    }

    for (i = 0; i < DS_NFIELDS(required); i++) {
        if (ds_v_inherit(c, jump, required[i], ds_v_get(host, required[i]))
            != DS_OK)
        {
            return DS_ERROR;
        }
    }

    return DS_OK;
}


/*
 * Every host resolved (see ds_v_resolve_host), then no two alike: ssh
 * would reach the same machine twice, and its GPUs would count twice.
 * in: ssh_config in the input, for the places of messages.
 */
static int
ds_v_resolve_hosts(ds_vctx_t *c, const cJSON *in, cJSON *cfg)
{
    int           i, j, rc;
    size_t        old, old_i;
    cJSON        *h, *p;
    const cJSON  *at;
    ds_qbuf_t     qb;

    at = cJSON_GetObjectItemCaseSensitive(in, "hosts")->child;
    h = cJSON_GetObjectItemCaseSensitive(cfg, "hosts")->child;

    old = ds_v_push(c, "hosts");

    for (i = 0; h; i++, h = h->next, at = at->next) {
        old_i = ds_v_pushi(c, i);
        rc = ds_v_resolve_host(c, at, h, cfg);

        p = cJSON_GetObjectItemCaseSensitive(cfg, "hosts")->child;

        for (j = 0; rc == DS_OK && p != h; j++, p = p->next)
        {
            if (strcmp(ds_v_get(p, "hostname")->valuestring,
                       ds_v_get(h, "hostname")->valuestring) == 0
                && ds_v_get(p, "port")->valuedouble
                   == ds_v_get(h, "port")->valuedouble)
            {
                rc = ds_v_fail(c, at, 0, "duplicate host %s port %.0f (the "
                               "same as hosts[%d])",
                               ds_q(&qb, ds_v_get(h, "hostname")->valuestring),
                               ds_v_get(h, "port")->valuedouble, j);
            }
        }

        ds_v_pop(c, old_i);

        if (rc != DS_OK) {
            ds_v_pop(c, old);
            return rc;
        }
    }

    ds_v_pop(c, old);
    return DS_OK;
}


/* ---- ssh_config ------------------------------------------------------------ */

enum { C_USER, C_PORT, C_IDENTITY_FILE, C_PROXY_JUMP, C_HOSTS, C_N };

static const ds_vfield_t  ds_ssh_config_fields[C_N] = {
    { "user", ds_v_f_ssh_user, 0, NULL },
    { "port", ds_v_f_ssh_port, 0, NULL },
    { "identity_file", ds_v_f_identity_file, 0, NULL },
    { "proxy_jump", ds_v_f_proxy_jump, 0, NULL },
    { "hosts", ds_v_f_hosts, DS_VF_REQUIRED, NULL },
};

static const ds_vunsup_t  ds_ssh_config_unsup[] = {
    { "ssh_key", "is not supported: set \"identity_file\"" },
    { "network", "is not supported yet" },
    { NULL, NULL }
};


static int
ds_v_f_ssh_config(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[C_N] = { NULL };

    rc = ds_v_object(c, in, ds_ssh_config_fields, C_N, ds_ssh_config_unsup,
                     s);

    if (rc == DS_OK && s[C_PORT] == NULL) {
        s[C_PORT] = cJSON_CreateNumber(DS_FLEET_SSH_PORT);
        rc = s[C_PORT] ? DS_OK : ds_v_oom(c);
    }

    rc = ds_v_finish(c, ds_ssh_config_fields, C_N, s, rc, out);

    if (rc == DS_OK) {
        rc = ds_v_resolve_hosts(c, in, *out);
        if (rc != DS_OK) {
            cJSON_Delete(*out);
            *out = NULL;
        }
    }

    return rc;
}


/* ---- the fleet ---------------------------------------------------------------- */

enum { F_TYPE, F_NAME, F_PLACEMENT, F_ENV, F_BLOCKS, F_SSH_CONFIG, F_N };

static const ds_vfield_t  ds_fleet_fields[F_N] = {
    { "type", ds_v_f_fleet_type, DS_VF_REQUIRED, NULL },
    { "name", ds_v_f_fleet_name, 0, NULL },
    { "placement", NULL, 0, &ds_fleet_placements },
    { "env", ds_v_f_env, 0, NULL },
    { "blocks", ds_v_f_blocks, 0, NULL },
    { "ssh_config", ds_v_f_ssh_config, 0, NULL },
};

#define DS_FLEET_CLOUD  "is not supported: only SSH fleets (ssh_config) are"

/* cloud fleets' keys, refused by name rather than called unknown */
static const ds_vunsup_t  ds_fleet_unsup[] = {
    { "nodes", DS_FLEET_CLOUD },
    { "resources", DS_FLEET_CLOUD },
    { "backends", DS_FLEET_CLOUD },
    { "regions", DS_FLEET_CLOUD },
    { "availability_zones", DS_FLEET_CLOUD },
    { "instance_types", DS_FLEET_CLOUD },
    { "spot_policy", DS_FLEET_CLOUD },
    { "retry", DS_FLEET_CLOUD },
    { "max_price", DS_FLEET_CLOUD },
    { "idle_duration", DS_FLEET_CLOUD },
    { "termination_policy", DS_FLEET_CLOUD },
    { "termination_idle_time", DS_FLEET_CLOUD },
    { "reservation", DS_FLEET_CLOUD },
    { "tags", DS_FLEET_CLOUD },
    { "backend_options", DS_FLEET_CLOUD },
    { NULL, NULL }
};


static int
ds_v_fleet(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           rc;
    size_t        old;
    cJSON        *s[F_N] = { NULL };
    cJSON        *h;
    const cJSON  *t;

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a mapping (a fleet "
                         "configuration), got %s", ds_tname(in));
    }

    t = cJSON_GetObjectItemCaseSensitive(in, "type");
    if (t == NULL) {
        return ds_v_fail(c, in, 0, "missing required field \"type\" "
                         "(expected \"type: fleet\")");
    }

    old = ds_v_push(c, "type");
    rc = ds_v_f_fleet_type(c, t, &s[F_TYPE]);
    ds_v_pop(c, old);
    ds_v_free_slots(s, 1);

    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_v_object(c, in, ds_fleet_fields, F_N, ds_fleet_unsup, s);
    if (rc != DS_OK) {
        goto done;
    }

    if (s[F_SSH_CONFIG] == NULL) {
        rc = ds_v_fail(c, in, 0, "missing required field \"ssh_config\" "
                       "(only SSH fleets are supported)");
        goto done;
    }

    if (s[F_PLACEMENT] == NULL) {
        s[F_PLACEMENT] = cJSON_CreateString("any");
    }
    if (s[F_ENV] == NULL) {
        s[F_ENV] = cJSON_CreateObject();
    }
    if (s[F_BLOCKS] == NULL) {
        s[F_BLOCKS] = cJSON_CreateNumber(1);
    }

    if (s[F_PLACEMENT] == NULL || s[F_ENV] == NULL || s[F_BLOCKS] == NULL) {
        rc = ds_v_oom(c);
        goto done;
    }

    /* the hosts' blocks last: the fleet's are known only now */
    h = cJSON_GetObjectItemCaseSensitive(s[F_SSH_CONFIG], "hosts")->child;
    for ( /* void */ ; h; h = h->next) {
        if (ds_v_inherit(c, h, "blocks", s[F_BLOCKS]) != DS_OK) {
            rc = DS_ERROR;
            goto done;
        }
    }

done:

    return ds_v_finish(c, ds_fleet_fields, F_N, s, rc, out);
}


/* ---- the API ---------------------------------------------------------------- */

int
ds_fleet_parse_yaml(const char *filename, const char *text, size_t len,
    cJSON **normalized, ds_err_t *err)
{
    return ds_v_yaml(filename, text, len, "a fleet configuration "
                     "(\"type: fleet\", \"ssh_config\", ...)", 1, ds_v_fleet,
                     normalized, NULL, err);
}


int
ds_fleet_validate_json(const cJSON *in, cJSON **normalized, ds_err_t *err)
{
    ds_vctx_t  c;

    *normalized = NULL;

    memset(&c, 0, sizeof(c));
    c.err = err;

    return ds_v_fleet(&c, in, normalized);
}


int
ds_fleet_resolve_env(cJSON *normalized, const char *const *overrides,
    char *(*getenv_fn)(const char *), ds_err_t *err)
{
    return ds_spec_resolve_env(normalized, overrides, getenv_fn, err);
}


/* ---- the typed view ---------------------------------------------------------- */

typedef struct {
    ds_spec_env_t      *env;
    ds_fleet_host_t    *hosts;
    ds_fleet_jump_t    *jumps;
} ds_fleet_priv_t;


static const char *
ds_fleet_str(const cJSON *o, const char *k)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}


/* a number, or "auto" (0) */
static uint32_t
ds_fleet_num(const cJSON *o, const char *k)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (uint32_t) v->valuedouble : 0;
}


int
ds_fleet_from_json(const cJSON *normalized, ds_fleet_t *fleet,
    ds_err_t *err)
{
    int               rc;
    size_t            i, n;
    const char       *p;
    const cJSON      *j, *it, *jump;
    ds_fleet_host_t  *h;
    ds_fleet_priv_t  *priv;

    memset(fleet, 0, sizeof(*fleet));

    rc = ds_fleet_validate_json(normalized, &fleet->json, err);
    if (rc != DS_OK) {
        return rc;
    }

    j = fleet->json;

    priv = calloc(1, sizeof(ds_fleet_priv_t));
    if (priv == NULL) {
        goto oom;
    }
    fleet->priv = priv;

    fleet->name = ds_fleet_str(j, "name");
    p = ds_fleet_str(j, "placement");
    fleet->placement = strcmp(p, "cluster") == 0
                       ? DS_FLEET_PLACEMENT_CLUSTER : DS_FLEET_PLACEMENT_ANY;
    fleet->blocks = ds_fleet_num(j, "blocks");

    it = cJSON_GetObjectItemCaseSensitive(j, "env");
    priv->env = calloc((size_t) cJSON_GetArraySize(it) + 1,
                       sizeof(ds_spec_env_t));
    if (priv->env == NULL) {
        goto oom;
    }
    for (i = 0, it = it->child; it; i++, it = it->next) {
        priv->env[i].name = it->string;
        priv->env[i].value = cJSON_IsString(it) ? it->valuestring : NULL;
    }
    fleet->env = priv->env;
    fleet->n_env = i;

    it = cJSON_GetObjectItemCaseSensitive(
             cJSON_GetObjectItemCaseSensitive(j, "ssh_config"), "hosts");
    n = (size_t) cJSON_GetArraySize(it);

    priv->hosts = calloc(n + 1, sizeof(ds_fleet_host_t));
    priv->jumps = calloc(n + 1, sizeof(ds_fleet_jump_t));
    if (priv->hosts == NULL || priv->jumps == NULL) {
        goto oom;
    }

    for (i = 0, it = it->child; it; i++, it = it->next) {
        h = &priv->hosts[i];

        h->hostname = ds_fleet_str(it, "hostname");
        h->port = (uint16_t) ds_fleet_num(it, "port");
        h->user = ds_fleet_str(it, "user");
        h->identity_file = ds_fleet_str(it, "identity_file");
        h->internal_ip = ds_fleet_str(it, "internal_ip");
        h->blocks = ds_fleet_num(it, "blocks");

        jump = cJSON_GetObjectItemCaseSensitive(it, "proxy_jump");
        if (cJSON_IsObject(jump)) {
            priv->jumps[i].hostname = ds_fleet_str(jump, "hostname");
            priv->jumps[i].port = (uint16_t) ds_fleet_num(jump, "port");
            priv->jumps[i].user = ds_fleet_str(jump, "user");
            priv->jumps[i].identity_file = ds_fleet_str(jump,
                                                        "identity_file");
            h->proxy_jump = &priv->jumps[i];
        }
    }

    fleet->hosts = priv->hosts;
    fleet->n_hosts = n;

    return DS_OK;

oom:

    snprintf(err->msg, sizeof(err->msg), "out of memory");
    return DS_ERROR;
}


void
ds_fleet_free(ds_fleet_t *fleet)
{
    ds_fleet_priv_t  *priv;

    priv = fleet->priv;

    if (priv) {
        free(priv->env);
        free(priv->hosts);
        free(priv->jumps);
        free(priv);
    }

    cJSON_Delete(fleet->json);
    memset(fleet, 0, sizeof(*fleet));
}
