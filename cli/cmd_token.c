/*
 * dstackctl token create NAME [--scope admin|services[:run,...]]
 *                             [--expires DURATION] [--json]
 * dstackctl token list [--json]
 * dstackctl token revoke NAME
 *
 * Admin tokens drive the API (this CLI); service tokens open the
 * published services, all of them or the runs named in the scope.
 * "create" prints the token alone on stdout so that scripts can take it
 * with $(...); the server shows it this once only.
 */

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ds_state.h"
#include "dstackctl.h"


#define DSCTL_TOKEN_USAGE \
    "dstackctl token create NAME [--scope admin|services[:RUN,...]] " \
    "[--expires DURATION] [--json]\n" \
    "   or: dstackctl token list [--json]\n" \
    "   or: dstackctl token revoke NAME"


static void
dsctl_token_help(void)
{
    printf("usage: %s\n\n", DSCTL_TOKEN_USAGE);
    printf(
        "Tokens for the API and for the published services.\n\n"
        "  create NAME     make a token and print it (shown only once)\n"
        "    --scope S     admin: the API and every service;\n"
        "                  services: every service (the default);\n"
        "                  services:RUN,...: only those runs' services\n"
        "    --expires D   lifetime: 30s, 5m, 12h, 30d, 2w or seconds\n"
        "    --json        the API's answer as JSON\n"
        "  list            the tokens (never their secrets)\n"
        "    --json        the API's answer as JSON\n"
        "  revoke NAME     revoke a token at once\n"
        "      --project P the project (else DSTACK_PROJECT, else\n"
        "                  \"project:\" in the config file, else main)\n"
        "  -h, --help      this help\n");
}


const char  dsctl_token_create_short[] = ":h";

const struct option  dsctl_token_create_opts[] = {
    { "scope", required_argument, NULL, 's' },
    { "expires", required_argument, NULL, 'e' },
    { "json", no_argument, NULL, 'j' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


static int
dsctl_token_create(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    const char      *name, *scope = "services", *expires = NULL, *tok;
    char            *list, *p, *run, *save, *text;
    long long        secs = 0;
    cJSON           *body, *services = NULL;
    int              json = 0, c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_token_create_short,
            dsctl_token_create_opts, NULL)) != -1)
    {
        switch (c) {
        case 's': scope = optarg; break;
        case 'e': expires = optarg; break;
        case 'j': json = 1; break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_token_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_TOKEN_USAGE, c, argv);
        }
    }
    if (optind >= argc) {
        return dsctl_usage(DSCTL_TOKEN_USAGE, "token create needs a name");
    }
    name = argv[optind++];
    if (optind < argc) {
        return dsctl_usage(DSCTL_TOKEN_USAGE, "unexpected argument \"%s\"",
            argv[optind]);
    }
    if (name[0] == '\0' || strlen(name) > DS_NAME_MAX) {
        return dsctl_usage(DSCTL_TOKEN_USAGE, "invalid token name \"%s\"",
            name);
    }
    if (expires != NULL) {
        secs = dsctl_parse_duration(expires);
        if (secs <= 0) {
            return dsctl_usage(DSCTL_TOKEN_USAGE, "invalid duration \"%s\" "
                "(for example 30d, 12h or 3600)", expires);
        }
    }

    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", name);
    if (strcmp(scope, "admin") == 0 || strcmp(scope, "services") == 0) {
        cJSON_AddStringToObject(body, "scope", scope);
    } else if (strncmp(scope, "services:", 9) == 0) {
        cJSON_AddStringToObject(body, "scope", "services");
        services = cJSON_AddArrayToObject(body, "services");
        list = dsctl_xstrdup(scope + 9);
        for (p = list; (run = strtok_r(p, ",", &save)) != NULL; p = NULL) {
            if (!ds_valid_run_name(run, strlen(run))) {
                rc = dsctl_usage(DSCTL_TOKEN_USAGE, "invalid run name \"%s\" "
                    "in the scope", run);
                free(list);
                cJSON_Delete(body);
                return rc;
            }
            cJSON_AddItemToArray(services, cJSON_CreateString(run));
        }
        free(list);
        if (cJSON_GetArraySize(services) == 0) {
            cJSON_Delete(body);
            return dsctl_usage(DSCTL_TOKEN_USAGE, "the scope \"%s\" names "
                "no run", scope);
        }
    } else {
        cJSON_Delete(body);
        return dsctl_usage(DSCTL_TOKEN_USAGE, "invalid scope \"%s\": admin, "
            "services or services:RUN,...", scope);
    }
    if (secs > 0) {
        cJSON_AddNumberToObject(body, "expires_in", (double) secs);
    }

    if (dsctl_client_open(&cfg) != 0) {
        cJSON_Delete(body);
        return DSCTL_EXIT_FAIL;
    }
    rc = dsctl_api_call("POST", "/api/tokens", body, 0, &resp);
    cJSON_Delete(body);
    if (rc == 0) {
        tok = dsctl_json_str(resp.json, "token");
        if (json) {
            text = cJSON_Print(resp.json);
            printf("%s\n", text);
            free(text);
        } else if (tok != NULL) {
            printf("%s\n", tok);
            if (dsctl_isatty_out()) {
                fprintf(stderr, "Token %s created: keep it now, it is not "
                    "shown again\n", name);
            }
        } else {
            dsctl_error("the server's answer has no token");
            rc = -1;
        }
    }
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


static void
dsctl_fmt_when(char *buf, size_t n, double t)
{
    time_t      tt = (time_t) t;
    struct tm   tm;

    if (t <= 0) {
        snprintf(buf, n, "never");
        return;
    }
    localtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M", &tm);
    if (t < (double) time(NULL)) {
        strncat(buf, " (expired)", n - strlen(buf) - 1);
    }
}


const char  dsctl_token_list_short[] = ":h";

const struct option  dsctl_token_list_opts[] = {
    { "json", no_argument, NULL, 'j' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


static int
dsctl_token_list(int argc, char **argv)
{
    static const char *const  hdr[] = {
        "NAME", "SCOPE", "SERVICES", "CREATED", "EXPIRES"
    };
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    dsctl_table_t   *t;
    dsctl_str_t      svc = { 0 };
    const cJSON     *tokens, *tk, *s;
    const char      *scope;
    char             created[32], expires[48], *text;
    int              json = 0, c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_token_list_short,
            dsctl_token_list_opts, NULL)) != -1)
    {
        switch (c) {
        case 'j': json = 1; break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_token_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_TOKEN_USAGE, c, argv);
        }
    }
    if (optind < argc) {
        return dsctl_usage(DSCTL_TOKEN_USAGE, "unexpected argument \"%s\"",
            argv[optind]);
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    rc = dsctl_api_call("GET", "/api/tokens", NULL, 0, &resp);
    if (rc == 0) {
        tokens = cJSON_GetObjectItemCaseSensitive(resp.json, "tokens");
        if (json) {
            text = cJSON_Print(tokens != NULL ? tokens : resp.json);
            printf("%s\n", text);
            free(text);
        } else {
            t = dsctl_table_new(5, hdr);
            cJSON_ArrayForEach(tk, tokens) {
                scope = dsctl_json_str(tk, "scope");
                svc.len = 0;
                cJSON_ArrayForEach(s,
                    cJSON_GetObjectItemCaseSensitive(tk, "services"))
                {
                    if (cJSON_IsString(s)) {
                        dsctl_str_addf(&svc, "%s%s", svc.len ? "," : "",
                            s->valuestring);
                    }
                }
                if (svc.len == 0) {
                    dsctl_str_addf(&svc, "%s", "all");
                }
                dsctl_fmt_ago(created, sizeof(created),
                    dsctl_json_num(tk, "created", 0), (double) time(NULL));
                dsctl_fmt_when(expires, sizeof(expires),
                    dsctl_json_num(tk, "expires", 0));
                dsctl_table_addv(t, dsctl_json_str(tk, "name"),
                    scope != NULL ? scope : "-", svc.s, created, expires);
            }
            dsctl_table_print(t, stdout);
            dsctl_table_free(t);
        }
    }
    dsctl_str_free(&svc);
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


const char  dsctl_token_revoke_short[] = ":h";

const struct option  dsctl_token_revoke_opts[] = {
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


static int
dsctl_token_revoke(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    dsctl_str_t      path = { 0 };
    char            *ename;
    int              c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_token_revoke_short,
            dsctl_token_revoke_opts, NULL)) != -1)
    {
        switch (c) {
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_token_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_TOKEN_USAGE, c, argv);
        }
    }
    if (optind >= argc) {
        return dsctl_usage(DSCTL_TOKEN_USAGE, "token revoke needs a name");
    }
    if (optind + 1 < argc) {
        return dsctl_usage(DSCTL_TOKEN_USAGE, "unexpected argument \"%s\"",
            argv[optind + 1]);
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    ename = dsctl_url_escape(argv[optind]);
    dsctl_str_addf(&path, "/api/tokens/%s", ename);
    free(ename);
    rc = dsctl_api_call("DELETE", path.s, NULL, 0, &resp);
    if (rc == 0) {
        printf("Revoked token %s\n", argv[optind]);
    }
    dsctl_resp_free(&resp);
    dsctl_str_free(&path);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


int
cmd_token(int argc, char **argv)
{
    if (argc < 2) {
        return dsctl_usage(DSCTL_TOKEN_USAGE, "token needs a subcommand: "
            "create, list or revoke");
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        dsctl_token_help();
        return DSCTL_EXIT_OK;
    }
    if (strcmp(argv[1], "create") == 0) {
        return dsctl_token_create(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "list") == 0 || strcmp(argv[1], "ls") == 0) {
        return dsctl_token_list(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "revoke") == 0 || strcmp(argv[1], "delete") == 0) {
        return dsctl_token_revoke(argc - 1, argv + 1);
    }
    return dsctl_usage(DSCTL_TOKEN_USAGE, "unknown token subcommand \"%s\"",
        argv[1]);
}
