/*
 * dstackctl user list [--json]
 * dstackctl user create NAME [--global-role admin|user] [--json]
 * dstackctl user delete NAME [-y]
 * dstackctl user token NAME [--name T] [--expires-in D] [--json]
 *
 * The people of the gateway (controld/API.md, "projects, users and
 * roles"): a global admin makes users, each gets a first token on
 * creation and more with "user token"; what a user may do follows from
 * the projects they are a member of.  A token is shown once, when it is
 * made: "create" says how to use it, "token" prints it alone on stdout
 * for scripts ($(...)), as "token create" does.
 */

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dstackctl.h"


#define DSCTL_USER_USAGE \
    "dstackctl user list [--json]\n" \
    "   or: dstackctl user create NAME [--global-role admin|user] " \
    "[--json]\n" \
    "   or: dstackctl user delete NAME [-y]\n" \
    "   or: dstackctl user token NAME [--name T] [--expires-in D] [--json]"


static void
dsctl_user_help(void)
{
    printf("usage: %s\n\n", DSCTL_USER_USAGE);
    printf(
        "Users and their tokens.  A global admin runs the gateway (every\n"
        "project); what any other user may do follows from their roles in\n"
        "projects (dstackctl project add-member).\n\n"
        "  list                the users (you alone unless a global admin),\n"
        "                      their projects and how many tokens they "
        "have\n"
        "  create NAME         create a user and print its first token "
        "(shown\n"
        "                      only this once) with how to use it\n"
        "    --global-role R   user (the default) or admin\n"
        "  delete NAME         delete a user: its tokens and memberships go "
        "at\n"
        "                      once, its runs stay\n"
        "    -y, --yes         do not ask for confirmation\n"
        "  token NAME          make another token for a user (yourself, or\n"
        "                      anyone for a global admin) and print it\n"
        "    --name T          the token's name (default: the server's)\n"
        "    --expires-in D    lifetime: 30s, 5m, 12h, 30d, 2w or seconds\n"
        "  --json              the API's answer as JSON\n"
        "  -h, --help          this help\n");
}


/* ---- options and operands ---------------------------------------------- */

const char  dsctl_user_list_short[] = ":h";

const struct option  dsctl_user_list_opts[] = {
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};

const char  dsctl_user_create_short[] = ":h";

const struct option  dsctl_user_create_opts[] = {
    { "global-role", required_argument, NULL, 'g' },
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};

const char  dsctl_user_delete_short[] = ":hy";

const struct option  dsctl_user_delete_opts[] = {
    { "yes", no_argument, NULL, 'y' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};

const char  dsctl_user_token_short[] = ":h";

const struct option  dsctl_user_token_opts[] = {
    { "name", required_argument, NULL, 'n' },
    { "expires-in", required_argument, NULL, 'e' },
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


typedef struct {
    int             json;
    int             yes;
    const char     *global_role;
    const char     *token_name;
    const char     *expires;
} dsctl_user_opt_t;


/*
 * The options of a subcommand, then n operands (0, or 1: the user's
 * name, checked).  -1 to go on, else the exit status.
 */
static int
dsctl_user_args(int argc, char **argv, const char *shorts,
    const struct option *opts, int n, dsctl_user_opt_t *o)
{
    const char  *name;
    int          c;

    memset(o, 0, sizeof(*o));
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
        switch (c) {
        case 'j': o->json = 1; break;
        case 'y': o->yes = 1; break;
        case 'g': o->global_role = optarg; break;
        case 'n': o->token_name = optarg; break;
        case 'e': o->expires = optarg; break;
        case 'h': dsctl_user_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_USER_USAGE, c, argv);
        }
    }
    if (argc - optind < n) {
        return dsctl_usage(DSCTL_USER_USAGE, "user %s needs the user name",
            argv[0]);
    }
    if (argc - optind > n) {
        return dsctl_usage(DSCTL_USER_USAGE, "unexpected argument \"%s\"",
            argv[optind + n]);
    }
    if (n > 0) {
        name = argv[optind];
        if (name[0] == '\0' || strlen(name) > DS_NAME_MAX) {
            return dsctl_usage(DSCTL_USER_USAGE, "invalid user name \"%s\"",
                name);
        }
    }
    return -1;
}


static void
dsctl_user_json(const cJSON *json)
{
    char  *text;

    text = cJSON_Print(json);
    if (text != NULL) {
        printf("%s\n", text);
        explicit_bzero(text, strlen(text));
        free(text);
    }
}


/* ---- list ---------------------------------------------------------------- */

static int
dsctl_user_list(int argc, char **argv)
{
    static const char *const  hdr[] = {
        "NAME", "GLOBAL ROLE", "PROJECTS", "TOKENS", "CREATED"
    };
    dsctl_user_opt_t   o;
    dsctl_config_t     cfg;
    dsctl_resp_t       resp;
    dsctl_table_t     *t;
    dsctl_str_t        projects = { 0 };
    const cJSON       *list, *u, *p;
    const char        *pname, *prole, *grole;
    char               created[32], tokens[32];
    int                rc;

    rc = dsctl_user_args(argc, argv, dsctl_user_list_short,
        dsctl_user_list_opts, 0, &o);
    if (rc >= 0) {
        return rc;
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    rc = dsctl_api_call("GET", "/api/users", NULL, 0, &resp);
    if (rc == 0) {
        list = cJSON_GetObjectItemCaseSensitive(resp.json, "users");
        if (o.json) {
            dsctl_user_json(list != NULL ? list : resp.json);
        } else {
            t = dsctl_table_new(5, hdr);
            dsctl_table_align(t, 3, DSCTL_ALIGN_RIGHT);
            cJSON_ArrayForEach(u, list) {
                projects.len = 0;
                cJSON_ArrayForEach(p,
                    cJSON_GetObjectItemCaseSensitive(u, "projects"))
                {
                    pname = dsctl_json_str(p, "name");
                    prole = dsctl_json_str(p, "role");
                    dsctl_str_addf(&projects, "%s%s (%s)",
                        projects.len ? ", " : "", pname ? pname : "?",
                        prole ? prole : "?");
                }
                grole = dsctl_json_str(u, "global_role");
                dsctl_fmt_ago(created, sizeof(created),
                    dsctl_json_num(u, "created", 0), (double) time(NULL));
                snprintf(tokens, sizeof(tokens), "%.0f",
                    dsctl_json_num(u, "tokens", 0));
                dsctl_table_addv(t, dsctl_json_str(u, "name"),
                    grole != NULL ? grole : "-",
                    projects.len ? projects.s : "-", tokens, created);
            }
            dsctl_table_print(t, stdout);
            dsctl_table_free(t);
        }
    }
    dsctl_str_free(&projects);
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


/* ---- create -------------------------------------------------------------- */

/* how the new user reaches this server with its token */
static void
dsctl_user_howto(const dsctl_config_t *cfg, const char *name,
    const char *role, const char *tok)
{
    printf("Created user %s (global role %s); its token is shown only this "
        "once.\n"
        "To use it:\n"
        "    export DSTACK_SERVER=%s DSTACK_TOKEN=%s\n"
        "or write \"server:\" and \"token:\" with these values in the "
        "user's\n"
        "~/.dstack/config.yml (mode 0600).\n", name, role, cfg->server, tok);
}


static int
dsctl_user_create(int argc, char **argv)
{
    dsctl_user_opt_t   o;
    dsctl_config_t     cfg;
    dsctl_resp_t       resp;
    const char        *name, *tok, *role;
    cJSON             *body;
    int                rc;

    rc = dsctl_user_args(argc, argv, dsctl_user_create_short,
        dsctl_user_create_opts, 1, &o);
    if (rc >= 0) {
        return rc;
    }
    name = argv[optind];
    if (o.global_role != NULL && strcmp(o.global_role, "admin") != 0
        && strcmp(o.global_role, "user") != 0)
    {
        return dsctl_usage(DSCTL_USER_USAGE, "invalid global role \"%s\": "
            "admin or user", o.global_role);
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", name);
    if (o.global_role != NULL) {
        cJSON_AddStringToObject(body, "global_role", o.global_role);
    }
    rc = dsctl_api_call("POST", "/api/users", body, 0, &resp);
    cJSON_Delete(body);
    if (rc == 0) {
        tok = dsctl_json_str(resp.json, "token");
        role = dsctl_json_str(resp.json, "global_role");
        if (o.json) {
            dsctl_user_json(resp.json);
        } else if (tok != NULL) {
            dsctl_user_howto(&cfg, name, role != NULL ? role
                : o.global_role != NULL ? o.global_role : "user", tok);
        } else {
            dsctl_error("the server's answer has no token");
            rc = -1;
        }
    }
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


/* ---- delete -------------------------------------------------------------- */

static int
dsctl_user_delete(int argc, char **argv)
{
    dsctl_user_opt_t   o;
    dsctl_config_t     cfg;
    dsctl_resp_t       resp;
    dsctl_str_t        q = { 0 }, path = { 0 };
    const char        *name;
    char              *e;
    int                rc;

    rc = dsctl_user_args(argc, argv, dsctl_user_delete_short,
        dsctl_user_delete_opts, 1, &o);
    if (rc >= 0) {
        return rc;
    }
    name = argv[optind];
    if (!o.yes) {
        dsctl_str_addf(&q, "Delete the user %s (its tokens are revoked at "
            "once)?", name);
        rc = dsctl_confirm(q.s);
        dsctl_str_free(&q);
        if (rc < 0) {
            dsctl_error("not deleting \"%s\": no terminal to confirm on "
                "(use -y)", name);
            return DSCTL_EXIT_USAGE;
        }
        if (rc == 0) {
            return DSCTL_EXIT_OK;
        }
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    e = dsctl_url_escape(name);
    dsctl_str_addf(&path, "/api/users/%s", e);
    free(e);
    rc = dsctl_api_call("DELETE", path.s, NULL, 0, &resp);
    if (rc == 0) {
        printf("Deleted user %s\n", name);
    }
    dsctl_str_free(&path);
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


/* ---- token --------------------------------------------------------------- */

static int
dsctl_user_token(int argc, char **argv)
{
    dsctl_user_opt_t   o;
    dsctl_config_t     cfg;
    dsctl_resp_t       resp;
    dsctl_str_t        path = { 0 };
    const char        *name, *tok;
    char              *e;
    long long          secs = 0;
    cJSON             *body;
    int                rc;

    rc = dsctl_user_args(argc, argv, dsctl_user_token_short,
        dsctl_user_token_opts, 1, &o);
    if (rc >= 0) {
        return rc;
    }
    name = argv[optind];
    if (o.token_name != NULL
        && (o.token_name[0] == '\0' || strlen(o.token_name) > DS_NAME_MAX))
    {
        return dsctl_usage(DSCTL_USER_USAGE, "invalid token name \"%s\"",
            o.token_name);
    }
    if (o.expires != NULL) {
        secs = dsctl_parse_duration(o.expires);
        if (secs <= 0) {
            return dsctl_usage(DSCTL_USER_USAGE, "invalid duration \"%s\" "
                "(for example 30d, 12h or 3600)", o.expires);
        }
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    body = cJSON_CreateObject();
    if (o.token_name != NULL) {
        cJSON_AddStringToObject(body, "name", o.token_name);
    }
    if (secs > 0) {
        cJSON_AddNumberToObject(body, "expires_in", (double) secs);
    }
    e = dsctl_url_escape(name);
    dsctl_str_addf(&path, "/api/users/%s/tokens", e);
    free(e);
    rc = dsctl_api_call("POST", path.s, body, 0, &resp);
    cJSON_Delete(body);
    if (rc == 0) {
        tok = dsctl_json_str(resp.json, "token");
        if (o.json) {
            dsctl_user_json(resp.json);
        } else if (tok != NULL) {
            printf("%s\n", tok);
            if (dsctl_isatty_out()) {
                fprintf(stderr, "Token %s of user %s created: keep it now, "
                    "it is not shown again\n",
                    dsctl_json_str(resp.json, "name") != NULL
                    ? dsctl_json_str(resp.json, "name") : "", name);
            }
        } else {
            dsctl_error("the server's answer has no token");
            rc = -1;
        }
    }
    dsctl_str_free(&path);
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


int
cmd_user(int argc, char **argv)
{
    static const struct {
        const char   *name;
        int         (*fn)(int argc, char **argv);
    } subs[] = {
        { "list", dsctl_user_list },
        { "ls", dsctl_user_list },
        { "create", dsctl_user_create },
        { "delete", dsctl_user_delete },
        { "rm", dsctl_user_delete },
        { "token", dsctl_user_token },
    };
    size_t  i;

    if (argc < 2) {
        return dsctl_usage(DSCTL_USER_USAGE, "user needs a subcommand: "
            "list, create, delete or token");
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        dsctl_user_help();
        return DSCTL_EXIT_OK;
    }
    for (i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[1], subs[i].name) == 0) {
            return subs[i].fn(argc - 1, argv + 1);
        }
    }
    return dsctl_usage(DSCTL_USER_USAGE, "unknown user subcommand \"%s\"",
        argv[1]);
}
