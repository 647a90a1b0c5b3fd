/*
 * controld.yml: read with the loader of the service files (ds_yaml.h),
 * so that messages say where, as "file:line:col: message", and a
 * value is read as the text written ("0660" stays "0660").  Unknown
 * keys are errors, like in the service file.  See conf/controld.yml.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "ds_yaml.h"
#include "log.h"
#include "stats.h"
#include "util.h"


struct config  *conf;

struct cfg_ctx {
    const ds_yaml_doc_t  *doc;
    char                 *err;
    size_t                errlen;
};


static int
cfg_verror(struct cfg_ctx *cx, const cJSON *node, int key, const char *f,
    va_list ap)
{
    char  where[256], msg[512];

    vsnprintf(msg, sizeof(msg), f, ap);
    ds_yaml_where(cx->doc, node, key, where, sizeof(where));
    snprintf(cx->err, cx->errlen, "%s%s", where, msg);
    return -1;
}


/* about a value */
static int
cfg_error(struct cfg_ctx *cx, const cJSON *node, const char *f, ...)
    __attribute__((format(printf, 3, 4)));

static int
cfg_error(struct cfg_ctx *cx, const cJSON *node, const char *f, ...)
{
    va_list  ap;

    va_start(ap, f);
    cfg_verror(cx, node, 0, f, ap);
    va_end(ap);
    return -1;
}


/* about the key of a mapping's member: an unknown one */
static int
cfg_key_error(struct cfg_ctx *cx, const cJSON *member, const char *f, ...)
    __attribute__((format(printf, 3, 4)));

static int
cfg_key_error(struct cfg_ctx *cx, const cJSON *member, const char *f, ...)
{
    va_list  ap;

    va_start(ap, f);
    cfg_verror(cx, member, 1, f, ap);
    va_end(ap);
    return -1;
}


/* a scalar as written: "yes", "0660" and "~" stay text here */
static const char *
cfg_scalar(struct cfg_ctx *cx, const cJSON *node, const char *key)
{
    const char  *s;

    s = ds_yaml_text(cx->doc, node);
    if (s == NULL) {
        cfg_error(cx, node, "%s: expected a string", key);
    }
    return s;
}


static int
cfg_string(struct cfg_ctx *cx, const cJSON *node, const char *key,
    char **dst)
{
    const char  *s;

    s = cfg_scalar(cx, node, key);
    if (s == NULL) {
        return -1;
    }
    if (*s == '\0') {
        return cfg_error(cx, node, "%s: empty value", key);
    }
    free(*dst);
    *dst = xstrdup(s);
    return 0;
}


static int
cfg_path(struct cfg_ctx *cx, const cJSON *node, const char *key, char **dst)
{
    if (cfg_string(cx, node, key, dst) != 0) {
        return -1;
    }
    if ((*dst)[0] != '/') {
        return cfg_error(cx, node, "%s: \"%s\" is not an absolute path",
                         key, *dst);
    }
    if (strlen(*dst) > 200) {
        return cfg_error(cx, node, "%s: path longer than 200 bytes", key);
    }
    return 0;
}


/* one stats_url: an http:// URL that can be kept in a list of them */
static int
cfg_stats_url_one(struct cfg_ctx *cx, const cJSON *node, const char *url)
{
    const char  *p;

    if (strncmp(url, "http://", 7) != 0 || url[7] == '\0'
        || url[7] == '/')
    {
        return cfg_error(cx, node, "stats_url: \"%s\" is not an http:// "
                         "URL", url);
    }
    for (p = url; *p; p++) {
        if (*p == ' ' || *p == '\t' || (unsigned char) *p < 0x20
            || *p == 0x7f)
        {
            return cfg_error(cx, node, "stats_url: \"%s\" has a space or "
                             "a control character", url);
        }
    }
    if (strlen(url) > 1000) {
        return cfg_error(cx, node, "stats_url: URL longer than 1000 bytes");
    }
    return 0;
}


/*
 * stats_url: one URL, or a list of them (one per gateway: their figures
 * are summed).  Kept as one string, the URLs separated by a space, which
 * is what stats_init() reads and what a reload compares.
 */
static int
cfg_stats_url(struct cfg_ctx *cx, const cJSON *v, struct config *c)
{
    const cJSON  *it, *prev;
    const char   *url;
    char         *all;
    size_t        len = 0, n = 0;

    if (!cJSON_IsArray(v)) {
        if (cfg_string(cx, v, "stats_url", &c->stats_url) != 0) {
            return -1;
        }
        return cfg_stats_url_one(cx, v, c->stats_url);
    }
    cJSON_ArrayForEach(it, v) {
        url = cfg_scalar(cx, it, "stats_url");
        if (url == NULL || cfg_stats_url_one(cx, it, url) != 0) {
            return -1;
        }
        for (prev = v->child; prev != it; prev = prev->next) {
            if (strcmp(ds_yaml_text(cx->doc, prev), url) == 0) {
                return cfg_error(cx, it, "stats_url: \"%s\" is listed "
                                 "twice", url);
            }
        }
        len += strlen(url) + 1;
        if (++n > STATS_SOURCES_MAX) {
            return cfg_error(cx, it, "stats_url: more than %d URLs",
                             STATS_SOURCES_MAX);
        }
    }
    if (n == 0) {
        return cfg_error(cx, v, "stats_url: an empty list (one URL or "
                         "more)");
    }
    all = xcalloc(1, len);
    cJSON_ArrayForEach(it, v) {
        if (all[0] != '\0') {
            strcat(all, " ");
        }
        strcat(all, ds_yaml_text(cx->doc, it));
    }
    free(c->stats_url);
    c->stats_url = all;
    return 0;
}


static int
cfg_bool(struct cfg_ctx *cx, const cJSON *node, const char *key, int *dst)
{
    const char  *s;

    s = cfg_scalar(cx, node, key);
    if (s == NULL) {
        return -1;
    }
    if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0
        || strcmp(s, "on") == 0)
    {
        *dst = 1;
    } else if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0
               || strcmp(s, "off") == 0)
    {
        *dst = 0;
    } else {
        return cfg_error(cx, node, "%s: \"%s\" is not true or false", key, s);
    }
    return 0;
}


static int
cfg_duration(struct cfg_ctx *cx, const cJSON *node, const char *key,
    unsigned *dst)
{
    const char  *s;
    long long    ms;

    s = cfg_scalar(cx, node, key);
    if (s == NULL) {
        return -1;
    }
    ms = parse_duration_ms(s);
    if (ms < 0 || ms > 86400LL * 1000) {
        return cfg_error(cx, node, "%s: \"%s\" is not a duration "
                         "(e.g. 10s, 5m)", key, s);
    }
    *dst = (unsigned) ms;
    return 0;
}


/* whole seconds (libmicrohttpd counts in them), 1 s to 1 h */
static int
cfg_api_timeout(struct cfg_ctx *cx, const cJSON *node, const char *key,
    unsigned *dst)
{
    if (cfg_duration(cx, node, key, dst) != 0) {
        return -1;
    }
    if (*dst < 1000 || *dst > 3600 * 1000 || *dst % 1000 != 0) {
        return cfg_error(cx, node, "%s: \"%s\" is not whole seconds from "
                         "1s to 1h", key, ds_yaml_text(cx->doc, node));
    }
    return 0;
}


static int
cfg_subnet(struct cfg_ctx *cx, const cJSON *node, struct local_conf *lc)
{
    const char      *s, *slash;
    char             ip[32], *end;
    long             bits;
    struct in_addr   a;

    s = cfg_scalar(cx, node, "subnet");
    if (s == NULL) {
        return -1;
    }
    slash = strchr(s, '/');
    if (slash == NULL || (size_t) (slash - s) >= sizeof(ip)) {
        return cfg_error(cx, node, "subnet: \"%s\" is not an IPv4 CIDR "
                         "(e.g. 10.213.0.0/16)", s);
    }
    memcpy(ip, s, slash - s);
    ip[slash - s] = '\0';
    errno = 0;
    bits = strtol(slash + 1, &end, 10);
    if (inet_pton(AF_INET, ip, &a) != 1 || *end != '\0' || errno
        || bits < 8 || bits > 28)
    {
        return cfg_error(cx, node, "subnet: \"%s\" is not an IPv4 CIDR "
                         "with a prefix of 8 to 28 bits", s);
    }
    lc->subnet = ntohl(a.s_addr) & (0xffffffffU << (32 - bits));
    lc->subnet_bits = (int) bits;
    return 0;
}


/* "0", "512KB", "100MB", "2GB" (powers of 1024; a bare number is bytes) */
static int
cfg_parse_size(const char *s, uint64_t *out)
{
    char                *end;
    unsigned long long   n;
    uint64_t             unit = 1;

    errno = 0;
    n = strtoull(s, &end, 10);
    if (end == s || errno != 0 || *s == '-') {
        return -1;
    }
    if (strcasecmp(end, "KB") == 0 || strcasecmp(end, "K") == 0) {
        unit = 1024;
    } else if (strcasecmp(end, "MB") == 0 || strcasecmp(end, "M") == 0) {
        unit = 1024 * 1024;
    } else if (strcasecmp(end, "GB") == 0 || strcasecmp(end, "G") == 0) {
        unit = 1024ULL * 1024 * 1024;
    } else if (*end != '\0') {
        return -1;
    }
    if (n > UINT64_MAX / unit) {
        return -1;
    }
    *out = (uint64_t) n * unit;
    return 0;
}


static int
cfg_local(struct cfg_ctx *cx, const cJSON *map, struct local_conf *lc)
{
    const cJSON  *v;
    const char   *key, *s;
    char         *end;
    long          n;

    if (!cJSON_IsObject(map)) {
        return cfg_error(cx, map, "backends.local: expected a mapping");
    }

    for (v = map->child; v; v = v->next) {
        key = v->string;

        if (strcmp(key, "enabled") == 0) {
            if (cfg_bool(cx, v, key, &lc->enabled) != 0) {
                return -1;
            }

        } else if (strcmp(key, "network") == 0) {
            s = cfg_scalar(cx, v, key);
            if (s == NULL) {
                return -1;
            }
            if (strcmp(s, "auto") == 0) {
                lc->network = NET_AUTO;
            } else if (strcmp(s, "netns") == 0) {
                lc->network = NET_NETNS;
            } else if (strcmp(s, "host") == 0) {
                lc->network = NET_HOST;
            } else {
                return cfg_error(cx, v, "network: \"%s\" is not one of "
                                 "auto, netns, host", s);
            }

        } else if (strcmp(key, "subnet") == 0) {
            if (cfg_subnet(cx, v, lc) != 0) {
                return -1;
            }

        } else if (strcmp(key, "gpus") == 0) {
            s = cfg_scalar(cx, v, key);
            if (s == NULL) {
                return -1;
            }
            if (strcmp(s, "auto") == 0) {
                lc->gpus = 1;
            } else if (strcmp(s, "none") == 0) {
                lc->gpus = 0;
            } else {
                return cfg_error(cx, v, "gpus: \"%s\" is not auto or none",
                                 s);
            }

        } else if (strcmp(key, "nvidia_smi") == 0) {
            if (cfg_string(cx, v, key, &lc->nvidia_smi) != 0) {
                return -1;
            }

        } else if (strcmp(key, "amd_smi") == 0) {
            if (cfg_string(cx, v, key, &lc->amd_smi) != 0) {
                return -1;
            }

        } else if (strcmp(key, "rocm_smi") == 0) {
            if (cfg_string(cx, v, key, &lc->rocm_smi) != 0) {
                return -1;
            }

        } else if (strcmp(key, "stop_grace") == 0) {
            if (cfg_duration(cx, v, key, &lc->stop_grace_ms) != 0) {
                return -1;
            }

        } else if (strcmp(key, "drain_without_stats") == 0) {
            if (cfg_duration(cx, v, key, &lc->drain_unknown_ms) != 0) {
                return -1;
            }

        } else if (strcmp(key, "max_failures") == 0) {
            s = cfg_scalar(cx, v, key);
            if (s == NULL) {
                return -1;
            }
            n = strtol(s, &end, 10);
            if (*s == '\0' || *end != '\0' || n < 1 || n > 1000) {
                return cfg_error(cx, v, "max_failures: \"%s\" is not a "
                                 "number from 1 to 1000", s);
            }
            lc->max_failures = (unsigned) n;

        } else if (strcmp(key, "log_max_size") == 0) {
            s = cfg_scalar(cx, v, key);
            if (s == NULL) {
                return -1;
            }
            if (cfg_parse_size(s, &lc->log_max_size) != 0) {
                return cfg_error(cx, v, "log_max_size: \"%s\" is not a size "
                                 "(e.g. 100MB, 1GB; 0: no limit)", s);
            }

        } else {
            return cfg_key_error(cx, v, "backends.local: unknown key "
                                 "\"%s\"", key);
        }
    }

    return 0;
}


/*
 * backends.container: images through the Docker Engine API
 *   enabled: true
 *   socket: /var/run/docker.sock     (or unix:///path, as DOCKER_HOST)
 */
static int
cfg_container(struct cfg_ctx *cx, const cJSON *map, struct container_conf *cc)
{
    const cJSON  *v;
    char         *s = NULL;

    if (!cJSON_IsObject(map)) {
        return cfg_error(cx, map, "backends.container: expected a mapping");
    }
    for (v = map->child; v; v = v->next) {
        if (strcmp(v->string, "enabled") == 0) {
            if (cfg_bool(cx, v, v->string, &cc->enabled) != 0) {
                return -1;
            }
        } else if (strcmp(v->string, "socket") == 0) {
            if (cfg_string(cx, v, v->string, &s) != 0) {
                return -1;
            }
            if (strncmp(s, "unix://", 7) == 0) {
                memmove(s, s + 7, strlen(s + 7) + 1);
            }
            if (s[0] != '/' || strlen(s) >= 108) {
                cfg_error(cx, v, "socket: \"%s\" is not the absolute path "
                          "of a unix socket (shorter than 108 bytes)", s);
                free(s);
                return -1;
            }
            free(cc->socket);
            cc->socket = s;
            s = NULL;
        } else {
            return cfg_key_error(cx, v, "backends.container: unknown key "
                                 "\"%s\"", v->string);
        }
    }
    return 0;
}


static int
cfg_backends(struct cfg_ctx *cx, const cJSON *map, struct config *c)
{
    const cJSON  *v;
    const char   *key;

    if (!cJSON_IsObject(map)) {
        return cfg_error(cx, map, "backends: expected a mapping");
    }

    for (v = map->child; v; v = v->next) {
        key = v->string;

        if (strcmp(key, "local") == 0) {
            if (cfg_local(cx, v, &c->local) != 0) {
                return -1;
            }
        } else if (strcmp(key, "container") == 0) {
            if (cfg_container(cx, v, &c->container) != 0) {
                return -1;
            }
        } else {
            return cfg_key_error(cx, v, "backends: unknown backend "
                                 "\"%s\" (this build has: local, "
                                 "container)", key);
        }
    }

    return 0;
}


/*
 * tls:
 *   acme:
 *     directory: URL         (required)
 *     email, eab_kid + eab_hmac_key, webroot, client, dns_hook,
 *     renew_before, retry
 */
static int
cfg_tls(struct cfg_ctx *cx, const cJSON *map, struct tls_conf *tc)
{
    const cJSON  *v, *av;
    const char   *key, *s;
    long long     ms;

    if (!cJSON_IsObject(map)) {
        return cfg_error(cx, map, "tls: expected a mapping");
    }

    for (v = map->child; v; v = v->next) {
        if (strcmp(v->string, "acme") != 0) {
            return cfg_key_error(cx, v, "tls: unknown key \"%s\" (this "
                                 "build has: acme)", v->string);
        }
        if (!cJSON_IsObject(v)) {
            return cfg_error(cx, v, "tls.acme: expected a mapping");
        }
        tc->acme = 1;

        for (av = v->child; av; av = av->next) {
            key = av->string;

            if (strcmp(key, "directory") == 0) {
                if (cfg_string(cx, av, key, &tc->directory) != 0) {
                    return -1;
                }
                if (strncmp(tc->directory, "https://", 8) != 0) {
                    return cfg_error(cx, av, "directory: \"%s\" is not an "
                                     "https:// URL", tc->directory);
                }
            } else if (strcmp(key, "email") == 0) {
                if (cfg_string(cx, av, key, &tc->email) != 0) {
                    return -1;
                }
            } else if (strcmp(key, "eab_kid") == 0) {
                if (cfg_string(cx, av, key, &tc->eab_kid) != 0) {
                    return -1;
                }
            } else if (strcmp(key, "eab_hmac_key") == 0) {
                if (cfg_string(cx, av, key, &tc->eab_hmac_key) != 0) {
                    return -1;
                }
            } else if (strcmp(key, "webroot") == 0) {
                if (cfg_path(cx, av, key, &tc->webroot) != 0) {
                    return -1;
                }
            } else if (strcmp(key, "client") == 0) {
                if (cfg_string(cx, av, key, &tc->client) != 0) {
                    return -1;
                }
            } else if (strcmp(key, "dns_hook") == 0) {
                if (cfg_path(cx, av, key, &tc->dns_hook) != 0) {
                    return -1;
                }
            } else if (strcmp(key, "renew_before") == 0
                       || strcmp(key, "retry") == 0)
            {
                s = cfg_scalar(cx, av, key);
                if (s == NULL) {
                    return -1;
                }
                ms = parse_duration_ms(s);
                if (ms < 1000 || ms > 365LL * 86400 * 1000) {
                    return cfg_error(cx, av, "%s: \"%s\" is not a duration "
                                     "from 1s to 365d", key, s);
                }
                if (key[1] == 'e' && key[2] == 'n') {
                    tc->renew_before_ms = ms;
                } else {
                    tc->retry_ms = ms > 86400000 ? 86400000 : (unsigned) ms;
                }
            } else {
                return cfg_key_error(cx, av, "tls.acme: unknown key "
                                     "\"%s\"", key);
            }
        }

        if (tc->directory == NULL) {
            return cfg_error(cx, v, "tls.acme.directory: required (e.g. "
                             "https://acme-v02.api.letsencrypt.org/"
                             "directory)");
        }
        if ((tc->eab_kid == NULL) != (tc->eab_hmac_key == NULL)) {
            return cfg_error(cx, v, "tls.acme: eab_kid and eab_hmac_key "
                             "go together");
        }
    }

    return 0;
}


/*
 * Replaces the password of a URI (postgresql://user:PASSWORD@host/...)
 * and of a "password=" parameter by "***": a URI is logged, a password
 * never is.
 */
const char *
config_redact_uri(const char *uri, char *buf, size_t len)
{
    const char  *auth, *end, *at, *colon, *pw;
    char         tmp[2048];

    snprintf(tmp, sizeof(tmp), "%s", uri);
    auth = strstr(uri, "://");
    if (auth != NULL) {
        auth += 3;
        end = auth + strcspn(auth, "/?");
        at = memchr(auth, '@', (size_t) (end - auth));
        colon = at != NULL ? memchr(auth, ':', (size_t) (at - auth)) : NULL;
        if (colon != NULL) {
            snprintf(tmp, sizeof(tmp), "%.*s***%s",
                     (int) (colon + 1 - uri), uri, at);
        }
    }
    pw = strstr(tmp, "password=");
    if (pw != NULL) {
        pw += 9;
        snprintf(buf, len, "%.*s***%s", (int) (pw - tmp), tmp,
                 pw + strcspn(pw, "&"));
    } else {
        snprintf(buf, len, "%s", tmp);
    }
    return buf;
}


static int
cfg_instance_ok(const char *s)
{
    size_t  i, n;

    n = strlen(s);
    if (n == 0 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z')
                              || (s[0] >= '0' && s[0] <= '9')))
    {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '.' || s[i] == '-'))
        {
            return 0;
        }
    }
    return 1;
}


/* state, instance, role, leader_lease: shared mode (#14, shared.c) */
static int
cfg_shared(struct cfg_ctx *cx, const cJSON *v, const char *key,
    struct config *c)
{
    const char  *s;
    char         red[512];

    if (strcmp(key, "state") == 0) {
        if (cfg_string(cx, v, key, &c->state) != 0) {
            return -1;
        }
        if (strncmp(c->state, "postgresql://", 13) != 0
            && strncmp(c->state, "postgres://", 11) != 0)
        {
            return cfg_error(cx, v, "state: \"%s\" is not a postgresql:// "
                             "URI (shared mode keeps the state in "
                             "PostgreSQL; leave state: out for the embedded "
                             "mode)", config_redact_uri(c->state, red,
                                                        sizeof(red)));
        }
        if (strlen(c->state) > 1000) {
            return cfg_error(cx, v, "state: URI longer than 1000 bytes");
        }
    } else if (strcmp(key, "instance") == 0) {
        if (cfg_string(cx, v, key, &c->instance) != 0) {
            return -1;
        }
        if (!cfg_instance_ok(c->instance)) {
            return cfg_error(cx, v, "instance: \"%s\" is not a name of "
                             "1 to 63 of a-z, 0-9, \".\" and \"-\" "
                             "starting with a letter or digit",
                             c->instance);
        }
    } else if (strcmp(key, "role") == 0) {
        s = cfg_scalar(cx, v, key);
        if (s == NULL) {
            return -1;
        }
        if (strcmp(s, "controller") == 0) {
            c->role = ROLE_CONTROLLER;
        } else if (strcmp(s, "gateway") == 0) {
            c->role = ROLE_GATEWAY;
        } else {
            return cfg_error(cx, v, "role: \"%s\" is not one of "
                             "controller, gateway", s);
        }
    } else {
        if (cfg_duration(cx, v, key, &c->leader_lease_ms) != 0) {
            return -1;
        }
        if (c->leader_lease_ms < 2000 || c->leader_lease_ms > 60000) {
            return cfg_error(cx, v, "leader_lease: \"%s\" is not from 2s "
                             "to 60s", ds_yaml_text(cx->doc, v));
        }
    }
    c->shared_keys = 1;
    return 0;
}


/* the instance defaults to the host name, which must fit the rule */
static int
cfg_shared_check(struct cfg_ctx *cx, const cJSON *root, struct config *c)
{
    char    host[256];
    size_t  i;

    if (c->state == NULL) {
        if (c->shared_keys) {
            return cfg_error(cx, root, "instance, role and leader_lease "
                             "need state: (a postgresql:// URI: shared "
                             "mode)");
        }
        return 0;
    }
    if (c->instance != NULL) {
        return 0;
    }
    if (gethostname(host, sizeof(host)) != 0) {
        host[0] = '\0';
    }
    host[sizeof(host) - 1] = '\0';
    for (i = 0; host[i] != '\0'; i++) {
        if (host[i] >= 'A' && host[i] <= 'Z') {
            host[i] = (char) (host[i] - 'A' + 'a');
        }
    }
    if (!cfg_instance_ok(host)) {
        return cfg_error(cx, root, "instance: the host name \"%s\" is not "
                         "a valid instance name (a-z, 0-9, \".\", \"-\", "
                         "up to 63); set instance:", host);
    }
    c->instance = xstrdup(host);
    return 0;
}


static int
cfg_root(struct cfg_ctx *cx, const cJSON *root, struct config *c)
{
    const cJSON    *v;
    const char     *key, *s;
    char           *end, why[256];
    unsigned long   mode;
    struct sockaddr_storage  ss;
    socklen_t       sslen;

    if (root == NULL) {
        snprintf(cx->err, cx->errlen, "%s:1:1: empty configuration",
                 c->file);
        return -1;
    }
    if (!cJSON_IsObject(root)) {
        return cfg_error(cx, root, "expected a mapping at the top");
    }

    for (v = root->child; v; v = v->next) {
        key = v->string;

        if (strcmp(key, "state_dir") == 0) {
            if (cfg_path(cx, v, key, &c->state_dir) != 0) {
                return -1;
            }
        } else if (strcmp(key, "domain") == 0) {
            if (cfg_string(cx, v, key, &c->domain) != 0) {
                return -1;
            }
            for (s = c->domain; *s; s++) {
                if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')
                      || *s == '-' || *s == '.'))
                {
                    return cfg_error(cx, v, "domain: \"%s\" is not a "
                                     "lower-case DNS name", c->domain);
                }
            }
        } else if (strcmp(key, "api_socket") == 0) {
            if (cfg_path(cx, v, key, &c->api_socket) != 0) {
                return -1;
            }
            if (strlen(c->api_socket) >= 100) {
                return cfg_error(cx, v, "api_socket: a unix socket path "
                                 "must be shorter than 100 bytes");
            }
        } else if (strcmp(key, "api_socket_mode") == 0) {
            s = cfg_scalar(cx, v, key);
            if (s == NULL) {
                return -1;
            }
            mode = strtoul(s, &end, 8);
            if (*s == '\0' || *end != '\0' || mode > 0777) {
                return cfg_error(cx, v, "api_socket_mode: \"%s\" is not an "
                                 "octal mode", s);
            }
            c->api_socket_mode = (unsigned) mode;
        } else if (strcmp(key, "stats_url") == 0) {
            if (cfg_stats_url(cx, v, c) != 0) {
                return -1;
            }
        } else if (strcmp(key, "api_listen") == 0) {
            if (cfg_string(cx, v, key, &c->api_listen) != 0) {
                return -1;
            }
            if (listen_addr_parse(c->api_listen, &ss, &sslen, why,
                                  sizeof(why)) != 0)
            {
                return cfg_error(cx, v, "api_listen: \"%s\": %s",
                                 c->api_listen, why);
            }
        } else if (strcmp(key, "replicas_dir") == 0) {
            if (cfg_path(cx, v, key, &c->replicas_dir) != 0) {
                return -1;
            }
        } else if (strcmp(key, "service_url") == 0) {
            if (cfg_string(cx, v, key, &c->service_url) != 0) {
                return -1;
            }
            if (strstr(c->service_url, "{name}") == NULL) {
                return cfg_error(cx, v, "service_url: \"%s\" has no {name}",
                                 c->service_url);
            }
        } else if (strcmp(key, "gateway_url") == 0) {
            if (cfg_string(cx, v, key, &c->gateway_url) != 0) {
                return -1;
            }
            if ((strncmp(c->gateway_url, "https://", 8) != 0
                 && strncmp(c->gateway_url, "http://", 7) != 0)
                || c->gateway_url[strlen(c->gateway_url) - 1] == '/')
            {
                return cfg_error(cx, v, "gateway_url: \"%s\" is not an "
                                 "http:// or https:// URL without a final "
                                 "\"/\"", c->gateway_url);
            }
        } else if (strcmp(key, "client_config") == 0) {
            if (cfg_path(cx, v, key, &c->client_config) != 0) {
                return -1;
            }
        } else if (strcmp(key, "pidfile") == 0) {
            if (cfg_path(cx, v, key, &c->pidfile) != 0) {
                return -1;
            }
        } else if (strcmp(key, "notify_socket") == 0) {
            if (cfg_path(cx, v, key, &c->notify_socket) != 0) {
                return -1;
            }
            if (strlen(c->notify_socket) >= 100) {
                return cfg_error(cx, v, "notify_socket: a unix socket path "
                                 "must be shorter than 100 bytes");
            }
        } else if (strcmp(key, "group") == 0) {
            if (cfg_string(cx, v, key, &c->group) != 0) {
                return -1;
            }
            if (getgrnam(c->group) == NULL) {
                return cfg_error(cx, v, "group: no group \"%s\" on this "
                                 "host", c->group);
            }
        } else if (strcmp(key, "api_user") == 0) {
            if (cfg_string(cx, v, key, &c->api_user) != 0) {
                return -1;
            }
            if (getpwnam(c->api_user) == NULL) {
                return cfg_error(cx, v, "api_user: no user \"%s\" on this "
                                 "host", c->api_user);
            }
        } else if (strcmp(key, "api_connections") == 0) {
            s = cfg_scalar(cx, v, key);
            if (s == NULL) {
                return -1;
            }
            mode = strtoul(s, &end, 10);
            if (*s < '0' || *s > '9' || *end != '\0' || mode < 8
                || mode > 4096)
            {
                return cfg_error(cx, v, "api_connections: \"%s\" is not a "
                                 "number from 8 to 4096", s);
            }
            c->api_connections = (unsigned) mode;
        } else if (strcmp(key, "api_header_timeout") == 0
                   || strcmp(key, "api_body_timeout") == 0)
        {
            if (cfg_api_timeout(cx, v, key,
                                strcmp(key, "api_header_timeout") == 0
                                ? &c->api_header_timeout_ms
                                : &c->api_body_timeout_ms) != 0)
            {
                return -1;
            }
        } else if (strcmp(key, "log_level") == 0) {
            s = cfg_scalar(cx, v, key);
            if (s == NULL) {
                return -1;
            }
            if (strcmp(s, "warn") == 0) {
                c->log_level = LOG_LEVEL_WARN;
            } else if (strcmp(s, "info") == 0) {
                c->log_level = LOG_LEVEL_INFO;
            } else if (strcmp(s, "debug") == 0) {
                c->log_level = LOG_LEVEL_DEBUG;
            } else {
                return cfg_error(cx, v, "log_level: \"%s\" is not one of "
                                 "warn, info, debug", s);
            }
        } else if (strcmp(key, "backends") == 0) {
            if (cfg_backends(cx, v, c) != 0) {
                return -1;
            }
        } else if (strcmp(key, "tls") == 0) {
            if (cfg_tls(cx, v, &c->tls) != 0) {
                return -1;
            }
        } else if (strcmp(key, "state") == 0 || strcmp(key, "instance") == 0
                   || strcmp(key, "role") == 0
                   || strcmp(key, "leader_lease") == 0)
        {
            if (cfg_shared(cx, v, key, c) != 0) {
                return -1;
            }
        } else {
            return cfg_key_error(cx, v, "unknown key \"%s\"", key);
        }
    }

    if (c->domain == NULL) {
        return cfg_error(cx, root, "domain: required (the gateway domain)");
    }

    return cfg_shared_check(cx, root, c);
}


/* DOCKER_HOST when it names a unix socket, else Docker's own */
static const char *
container_socket_default(void)
{
    const char  *h = getenv("DOCKER_HOST");

    if (h != NULL && strncmp(h, "unix://", 7) == 0 && h[7] == '/') {
        return h + 7;
    }
    return "/var/run/docker.sock";
}


static struct config *
config_defaults(const char *file)
{
    struct config  *c;

    c = xcalloc(1, sizeof(struct config));
    c->file = xstrdup(file);
    c->api_user = xstrdup("nobody");
    c->state_dir = xstrdup("/var/lib/dstack/state");
    c->api_socket = xstrdup("/run/dstack/api.sock");
    c->api_socket_mode = 0660;
    c->api_connections = 64;
    c->api_header_timeout_ms = 5000;
    c->api_body_timeout_ms = 60000;
    c->stats_url = xstrdup("http://127.0.0.1:9180/stats");
    c->replicas_dir = xstrdup("/var/lib/dstack/replicas");
    c->log_level = LOG_LEVEL_INFO;
    c->local.enabled = 1;
    c->local.network = NET_AUTO;
    c->local.subnet = (10U << 24) | (213U << 16);
    c->local.subnet_bits = 16;
    c->local.gpus = 1;
    c->local.nvidia_smi = xstrdup("nvidia-smi");
    c->local.amd_smi = xstrdup("amd-smi");
    c->local.rocm_smi = xstrdup("rocm-smi");
    c->local.stop_grace_ms = 10000;
    c->local.drain_unknown_ms = 10000;
    c->local.max_failures = 3;
    c->local.log_max_size = 100ULL * 1024 * 1024;
    c->container.enabled = 1;
    c->container.socket = xstrdup(container_socket_default());
    c->tls.renew_before_ms = 30LL * 86400 * 1000;
    c->tls.retry_ms = 60 * 1000;
    c->role = ROLE_CONTROLLER;
    c->leader_lease_ms = 5000;
    return c;
}


struct config *
config_load(const char *file, char *err, size_t errlen)
{
    struct config   *c;
    struct cfg_ctx   cx;
    int              rc;
    char             buf[512];
    ds_err_t         e;
    ds_yaml_doc_t   *doc;

    if (ds_yaml_load_file(file, DS_YAML_INPUT_MAX, &doc, &e) != DS_OK) {
        snprintf(err, errlen, "%s", e.msg);
        return NULL;
    }

    c = config_defaults(file);
    cx.doc = doc;
    cx.err = err;
    cx.errlen = errlen;

    rc = cfg_root(&cx, ds_yaml_root(doc), c);

    ds_yaml_free(doc);

    if (rc != 0) {
        config_free(c);
        return NULL;
    }

    if (c->service_url == NULL) {
        snprintf(buf, sizeof(buf), "http://{name}.%s", c->domain);
        c->service_url = xstrdup(buf);
    }
    if (c->gateway_url == NULL) {
        /* dstack-api.conf serves gateway.<domain> on HTTPS only */
        snprintf(buf, sizeof(buf), "https://gateway.%s", c->domain);
        c->gateway_url = xstrdup(buf);
    }
    if (c->tls.webroot == NULL) {
        c->tls.webroot = xstrdup("/var/lib/dstack/acme");
    }
    if (c->tls.client == NULL) {
        c->tls.client = xstrdup("uacme");
    }
    if (c->client_config == NULL) {
        snprintf(buf, sizeof(buf), "%s/client.yml", c->state_dir);
        c->client_config = xstrdup(buf);
    }

    return c;
}


void
config_free(struct config *c)
{
    if (c == NULL) {
        return;
    }
    free(c->file);
    free(c->state_dir);
    free(c->domain);
    free(c->api_socket);
    free(c->stats_url);
    free(c->api_listen);
    free(c->replicas_dir);
    free(c->service_url);
    free(c->gateway_url);
    free(c->client_config);
    free(c->notify_socket);
    free(c->group);
    free(c->api_user);
    free(c->pidfile);
    free(c->local.nvidia_smi);
    free(c->local.amd_smi);
    free(c->local.rocm_smi);
    free(c->container.socket);
    free(c->tls.directory);
    free(c->tls.email);
    free(c->tls.eab_kid);
    free(c->tls.eab_hmac_key);
    free(c->tls.webroot);
    free(c->tls.client);
    free(c->tls.dns_hook);
    free(c->state);
    free(c->instance);
    free(c);
}
