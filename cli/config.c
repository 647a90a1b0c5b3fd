/*
 * Where the server is and which token to send.
 *
 * DSTACK_SERVER and DSTACK_TOKEN win; what they leave unset comes from
 * the file DSTACK_CONFIG names, else ~/.dstack/config.yml.  The file is
 * what controld writes on first start:
 *
 *     server: unix:/var/lib/dstack/api.sock    # or https://gateway.example.com
 *     token: dst_...
 *     project: main                            # optional, for the plan
 *     ca: /var/lib/dstack/tls/ca.crt           # optional: the CA of an
 *                                              # https:// server (DSTACK_CA)
 *
 * dstack's own layout is read as well, so an existing file keeps working:
 *
 *     projects:
 *     - name: main
 *       url: http://127.0.0.1:3000
 *       token: ...
 *       default: true
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "dstackctl.h"


static const char *
dsctl_yaml_scalar(yaml_document_t *doc, yaml_node_t *node)
{
    if (node == NULL || node->type != YAML_SCALAR_NODE) {
        return NULL;
    }
    (void) doc;
    return (const char *) node->data.scalar.value;
}


/* the value node of key in a mapping node, or NULL */
static yaml_node_t *
dsctl_yaml_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
    yaml_node_pair_t  *pair;
    const char        *k;

    if (map == NULL || map->type != YAML_MAPPING_NODE) {
        return NULL;
    }
    for (pair = map->data.mapping.pairs.start;
         pair < map->data.mapping.pairs.top; pair++)
    {
        k = dsctl_yaml_scalar(doc, yaml_document_get_node(doc, pair->key));
        if (k != NULL && strcmp(k, key) == 0) {
            return yaml_document_get_node(doc, pair->value);
        }
    }
    return NULL;
}


static void
dsctl_config_set(char **field, const char *value)
{
    if (*field == NULL && value != NULL && value[0] != '\0') {
        *field = dsctl_xstrdup(value);
    }
}


int
dsctl_config_parse(dsctl_config_t *cfg, const char *path, const char *text,
    size_t len, char *err, size_t errlen)
{
    yaml_parser_t     parser;
    yaml_document_t   doc;
    yaml_node_t      *root, *projects, *proj, *chosen = NULL;
    yaml_node_item_t *item;
    const char       *dflt;

    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *) text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "%s:%lu:%lu: %s", path,
            (unsigned long) parser.problem_mark.line + 1,
            (unsigned long) parser.problem_mark.column + 1,
            parser.problem ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        return -1;
    }

    root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        /* an empty file */
        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
        return 0;
    }
    if (root->type != YAML_MAPPING_NODE) {
        snprintf(err, errlen, "%s:%lu:%lu: expected a mapping with "
            "\"server:\" and \"token:\"", path,
            (unsigned long) root->start_mark.line + 1,
            (unsigned long) root->start_mark.column + 1);
        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
        return -1;
    }

    dsctl_config_set(&cfg->server,
        dsctl_yaml_scalar(&doc, dsctl_yaml_get(&doc, root, "server")));
    dsctl_config_set(&cfg->token,
        dsctl_yaml_scalar(&doc, dsctl_yaml_get(&doc, root, "token")));
    dsctl_config_set(&cfg->project,
        dsctl_yaml_scalar(&doc, dsctl_yaml_get(&doc, root, "project")));
    dsctl_config_set(&cfg->ca,
        dsctl_yaml_scalar(&doc, dsctl_yaml_get(&doc, root, "ca")));

    /* dstack's layout: the default project, else the first */
    projects = dsctl_yaml_get(&doc, root, "projects");
    if (projects != NULL && projects->type == YAML_SEQUENCE_NODE) {
        for (item = projects->data.sequence.items.start;
             item < projects->data.sequence.items.top; item++)
        {
            proj = yaml_document_get_node(&doc, *item);
            if (proj == NULL || proj->type != YAML_MAPPING_NODE) {
                continue;
            }
            if (chosen == NULL) {
                chosen = proj;
            }
            dflt = dsctl_yaml_scalar(&doc,
                dsctl_yaml_get(&doc, proj, "default"));
            if (dflt != NULL && strcmp(dflt, "true") == 0) {
                chosen = proj;
                break;
            }
        }
        if (chosen != NULL) {
            dsctl_config_set(&cfg->server, dsctl_yaml_scalar(&doc,
                dsctl_yaml_get(&doc, chosen, "url")));
            dsctl_config_set(&cfg->token, dsctl_yaml_scalar(&doc,
                dsctl_yaml_get(&doc, chosen, "token")));
            dsctl_config_set(&cfg->project, dsctl_yaml_scalar(&doc,
                dsctl_yaml_get(&doc, chosen, "name")));
        }
    }

    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return 0;
}


int
dsctl_config_load(dsctl_config_t *cfg)
{
    const char  *env, *home;
    char         err[512];
    char        *text, *path = NULL;
    size_t       len;
    int          explicit = 0;
    dsctl_str_t  p = { 0 };

    memset(cfg, 0, sizeof(*cfg));
    dsctl_config_set(&cfg->server, getenv("DSTACK_SERVER"));
    dsctl_config_set(&cfg->token, getenv("DSTACK_TOKEN"));
    dsctl_config_set(&cfg->project, getenv("DSTACK_PROJECT"));
    dsctl_config_set(&cfg->ca, getenv("DSTACK_CA"));
    if (cfg->server != NULL) {
        cfg->source = dsctl_xstrdup("DSTACK_SERVER");
    }

    if (cfg->server == NULL || cfg->token == NULL) {
        env = getenv("DSTACK_CONFIG");
        if (env != NULL && env[0] != '\0') {
            path = dsctl_xstrdup(env);
            explicit = 1;
        } else {
            home = getenv("HOME");
            dsctl_str_addf(&p, "%s/.dstack/config.yml",
                home != NULL && home[0] != '\0' ? home : ".");
            path = p.s;
            p.s = NULL;
        }

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
        cfg->project = dsctl_xstrdup("main");
    }
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
