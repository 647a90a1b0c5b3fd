/*
 * Where the server is and which token to send.
 *
 * DSTACK_SERVER and DSTACK_TOKEN win; what they leave unset comes from
 * the file DSTACK_CONFIG names, else ~/.dstack/config.yml (the project:
 * --project, then DSTACK_PROJECT, then the file).  The file is what
 * controld writes on first start:
 *
 *     server: unix:/var/lib/dstack/api.sock    # or https://gateway.example.com
 *     token: dst_...
 *     project: main                            # optional: the project
 *                                              # (project set-default)
 *     ca: /var/lib/dstack/tls/ca.crt           # optional: the CA of an
 *                                              # https:// server (DSTACK_CA)
 *
 * It is read with the loader of the service files (ds_yaml.h), so its
 * errors say "file:line:col: message" too.  dstack's own layout is read
 * as well, so an existing file keeps working:
 *
 *     projects:
 *     - name: main
 *       url: http://127.0.0.1:3000
 *       token: ...
 *       default: true
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "dstackctl.h"
#include "ds_yaml.h"


static void
dsctl_config_set(char **field, const char *value)
{
    if (*field == NULL && value != NULL && value[0] != '\0') {
        *field = dsctl_xstrdup(value);
    }
}


/*
 * The value of key in a mapping as the text written ("token: 0123"
 * stays "0123"); NULL when absent or not a scalar.
 */
static const char *
dsctl_config_get(const ds_yaml_doc_t *doc, const cJSON *map, const char *key)
{
    return ds_yaml_text(doc, cJSON_GetObjectItemCaseSensitive(map, key));
}


/* our own keys take a scalar: "server: [a, b]" is a mistake to point at */
static int
dsctl_config_scalars(const ds_yaml_doc_t *doc, const cJSON *root,
    char *err, size_t errlen)
{
    size_t                    i;
    char                      where[256];
    const cJSON              *v;
    static const char *const  keys[] = { "server", "token", "project", "ca" };

    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        v = cJSON_GetObjectItemCaseSensitive(root, keys[i]);
        if (v != NULL && ds_yaml_text(doc, v) == NULL) {
            ds_yaml_where(doc, v, 0, where, sizeof(where));
            snprintf(err, errlen, "%s%s: expected a string", where, keys[i]);
            return -1;
        }
    }
    return 0;
}


/* dstack's layout: the default project, else the first */
static void
dsctl_config_projects(dsctl_config_t *cfg, const ds_yaml_doc_t *doc,
    const cJSON *projects)
{
    const char   *dflt;
    const cJSON  *proj, *chosen;

    if (!cJSON_IsArray(projects)) {
        return;
    }

    chosen = NULL;

    cJSON_ArrayForEach(proj, projects) {
        if (!cJSON_IsObject(proj)) {
            continue;
        }
        if (chosen == NULL) {
            chosen = proj;
        }
        dflt = dsctl_config_get(doc, proj, "default");
        if (dflt != NULL && strcmp(dflt, "true") == 0) {
            chosen = proj;
            break;
        }
    }

    if (chosen != NULL) {
        dsctl_config_set(&cfg->server, dsctl_config_get(doc, chosen, "url"));
        dsctl_config_set(&cfg->token, dsctl_config_get(doc, chosen, "token"));
        dsctl_config_set(&cfg->project,
            dsctl_config_get(doc, chosen, "name"));
    }
}


int
dsctl_config_parse(dsctl_config_t *cfg, const char *path, const char *text,
    size_t len, char *err, size_t errlen)
{
    char            where[256];
    ds_err_t        e;
    const cJSON    *root;
    ds_yaml_doc_t  *doc;

    if (ds_yaml_load(path, text, len, &doc, &e) != DS_OK) {
        snprintf(err, errlen, "%s", e.msg);
        return -1;
    }

    root = ds_yaml_root(doc);
    if (root == NULL) {
        /* an empty file */
        ds_yaml_free(doc);
        return 0;
    }
    if (!cJSON_IsObject(root)) {
        ds_yaml_where(doc, root, 0, where, sizeof(where));
        snprintf(err, errlen, "%sexpected a mapping with \"server:\" and "
            "\"token:\"", where);
        ds_yaml_free(doc);
        return -1;
    }
    if (dsctl_config_scalars(doc, root, err, errlen) != 0) {
        ds_yaml_free(doc);
        return -1;
    }

    dsctl_config_set(&cfg->server, dsctl_config_get(doc, root, "server"));
    dsctl_config_set(&cfg->token, dsctl_config_get(doc, root, "token"));
    dsctl_config_set(&cfg->project, dsctl_config_get(doc, root, "project"));
    dsctl_config_set(&cfg->ca, dsctl_config_get(doc, root, "ca"));

    dsctl_config_projects(cfg, doc,
        cJSON_GetObjectItemCaseSensitive(root, "projects"));

    ds_yaml_free(doc);
    return 0;
}


/*
 * The host of an http:// URL is the loopback: "localhost", a name under
 * ".localhost" (RFC 6761: it never leaves the host), 127.0.0.0/8 or ::1.
 * host is what follows "http://"; userinfo and the port are skipped.
 */
static int
dsctl_config_loopback(const char *host)
{
    char             h[256];
    const char      *end, *at;
    size_t           n;
    struct in_addr   a4;
    struct in6_addr  a6;

    end = host + strcspn(host, "/?#");
    for (at = host; at < end; at++) {
        if (*at == '@') {
            host = at + 1;
        }
    }
    if (*host == '[') {
        host++;
        n = strcspn(host, "]");
    } else {
        n = strcspn(host, ":/?#");
    }
    if (n == 0 || n >= sizeof(h) || host + n > end) {
        return 0;
    }
    memcpy(h, host, n);
    h[n] = '\0';
    if (n > 1 && h[n - 1] == '.') {
        h[--n] = '\0';
    }

    if (strcasecmp(h, "localhost") == 0
        || (n > 10 && strcasecmp(h + n - 10, ".localhost") == 0))
    {
        return 1;
    }
    if (inet_pton(AF_INET, h, &a4) == 1) {
        return (ntohl(a4.s_addr) >> 24) == 127;
    }
    if (inet_pton(AF_INET6, h, &a6) == 1) {
        return IN6_IS_ADDR_LOOPBACK(&a6)
               || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    }
    return 0;
}


/*
 * A token sent over plain http:// to another host crosses the network in
 * clear text, where anyone on the path can take it: said once, on
 * stderr, and not refused (a trusted private network is the operator's
 * call; the gateway's snippet serves the API on HTTPS unless told not to).
 */
static void
dsctl_config_warn_clear(const dsctl_config_t *cfg)
{
    static int  warned;

    if (warned || strncmp(cfg->server, "http://", 7) != 0
        || dsctl_config_loopback(cfg->server + 7))
    {
        return;
    }
    warned = 1;
    fprintf(stderr, "dstackctl: warning: the server \"%s\" (from %s) is "
        "plain http:// to another host: the token crosses the network in "
        "clear text; use https://\n", cfg->server,
        cfg->source != NULL ? cfg->source : "the configuration");
}


char *
dsctl_config_path(int *explicit)
{
    const char   *env, *home;
    dsctl_str_t   p = { 0 };

    env = getenv("DSTACK_CONFIG");
    if (env != NULL && env[0] != '\0') {
        *explicit = 1;
        return dsctl_xstrdup(env);
    }
    *explicit = 0;
    home = getenv("HOME");
    dsctl_str_addf(&p, "%s/.dstack/config.yml",
        home != NULL && home[0] != '\0' ? home : ".");
    return p.s;
}


/*
 * The file when the environment gave the server and the token: read for
 * "project:" alone (what the environment leaves unset comes from the
 * file), and quietly not there.  Its server, token and CA stay unread,
 * as before projects.
 */
static int
dsctl_config_file_project(dsctl_config_t *cfg, const char *path)
{
    dsctl_config_t   f;
    char             err[512];
    char            *text;
    size_t           len;

    text = dsctl_read_file(path, &len);
    if (text == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        dsctl_error("cannot read \"%s\": %s", path, strerror(errno));
        return -1;
    }
    memset(&f, 0, sizeof(f));
    if (dsctl_config_parse(&f, path, text, len, err, sizeof(err)) != 0) {
        dsctl_error("%s", err);
        free(text);
        dsctl_config_free(&f);
        return -1;
    }
    free(text);
    if (f.project != NULL) {
        cfg->project = f.project;
        f.project = NULL;
    }
    dsctl_config_free(&f);
    return 0;
}


int
dsctl_config_load(dsctl_config_t *cfg)
{
    const char  *flag;
    char         err[512];
    char        *text, *path = NULL;
    size_t       len;
    int          explicit = 0;

    memset(cfg, 0, sizeof(*cfg));
    flag = dsctl_project_selected();
    if (flag != NULL && flag[0] == '\0') {
        dsctl_error("--project: the project name is empty");
        return -1;
    }
    dsctl_config_set(&cfg->project, flag);
    if (cfg->project != NULL) {
        cfg->project_from = "--project";
    }
    dsctl_config_set(&cfg->server, getenv("DSTACK_SERVER"));
    dsctl_config_set(&cfg->token, getenv("DSTACK_TOKEN"));
    if (cfg->project == NULL) {
        dsctl_config_set(&cfg->project, getenv("DSTACK_PROJECT"));
        if (cfg->project != NULL) {
            cfg->project_from = "DSTACK_PROJECT";
        }
    }
    dsctl_config_set(&cfg->ca, getenv("DSTACK_CA"));
    if (cfg->server != NULL) {
        cfg->source = dsctl_xstrdup("DSTACK_SERVER");
    }

    path = dsctl_config_path(&explicit);
    if (cfg->server == NULL || cfg->token == NULL) {
        text = dsctl_read_file(path, &len);
        if (text == NULL) {
            if (explicit || errno != ENOENT) {
                dsctl_error("cannot read \"%s\": %s", path, strerror(errno));
                free(path);
                dsctl_config_free(cfg);
                return -1;
            }
        } else {
            if (dsctl_config_parse(cfg, path, text, len, err, sizeof(err))
                != 0)
            {
                dsctl_error("%s", err);
                free(text);
                free(path);
                dsctl_config_free(cfg);
                return -1;
            }
            free(text);
            if (cfg->source == NULL) {
                cfg->source = dsctl_xstrdup(path);
            }
        }
    } else if (cfg->project == NULL) {
        if (dsctl_config_file_project(cfg, path) != 0) {
            free(path);
            dsctl_config_free(cfg);
            return -1;
        }
    }
    if (cfg->project != NULL && cfg->project_from == NULL) {
        cfg->project_from = "the config file";
    }

    if (cfg->server == NULL) {
        dsctl_error("no server configured: set DSTACK_SERVER and "
            "DSTACK_TOKEN, or write \"server:\" and \"token:\" in \"%s\"",
            path);
        free(path);
        dsctl_config_free(cfg);
        return -1;
    }
    if (cfg->token == NULL) {
        dsctl_error("no token configured for \"%s\": set DSTACK_TOKEN, or "
            "write \"token:\" in \"%s\"", cfg->server, path);
        free(path);
        dsctl_config_free(cfg);
        return -1;
    }
    if (cfg->project == NULL) {
        cfg->project = dsctl_xstrdup(DS_PROJECT_MAIN);
    }
    dsctl_config_warn_clear(cfg);
    free(path);
    return 0;
}


void
dsctl_config_free(dsctl_config_t *cfg)
{
    free(cfg->server);
    free(cfg->token);
    free(cfg->project);
    free(cfg->ca);
    free(cfg->source);
    memset(cfg, 0, sizeof(*cfg));
}
