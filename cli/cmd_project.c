/*
 * dstackctl project list [--json]
 * dstackctl project create NAME
 * dstackctl project delete NAME [-y]
 * dstackctl project add-member NAME USER [--role admin|manager|user]
 * dstackctl project remove-member NAME USER
 * dstackctl project set-default NAME
 *
 * dstack's projects: runs, secrets, service tokens and fleets belong to
 * one, and its members' roles say who may do what there (controld/API.md,
 * "projects, users and roles").  set-default writes "project: NAME" into
 * the client config, which then selects it for every command, as
 * dstack's "project set-default" does.
 */

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dstackctl.h"


#define DSCTL_PROJECT_USAGE \
    "dstackctl project list [--json]\n" \
    "   or: dstackctl project create NAME\n" \
    "   or: dstackctl project delete NAME [-y]\n" \
    "   or: dstackctl project add-member NAME USER " \
    "[--role admin|manager|user]\n" \
    "   or: dstackctl project remove-member NAME USER\n" \
    "   or: dstackctl project set-default NAME"


static void
dsctl_project_help(void)
{
    printf("usage: %s\n\n", DSCTL_PROJECT_USAGE);
    printf(
        "Projects: runs, secrets, service tokens and fleets belong to one;\n"
        "its members have a role: admin (everything in the project, its\n"
        "members too), manager (runs, fleets, secrets, tokens) or user\n"
        "(their own runs).\n\n"
        "  list                 the projects you are a member of, with your\n"
        "                       role and the members (all for a global "
        "admin)\n"
        "    --json             the API's answer as JSON\n"
        "  create NAME          create a project; you become its admin\n"
        "  delete NAME          delete a project (none of its runs may be\n"
        "                       running)\n"
        "    -y, --yes          do not ask for confirmation\n"
        "  add-member NAME USER add USER to the project, or change their "
        "role\n"
        "    -r, --role ROLE    admin, manager or user (the default)\n"
        "  remove-member NAME USER\n"
        "                       take USER out of the project\n"
        "  set-default NAME     write \"project: NAME\" into the client "
        "config\n"
        "                       (DSTACK_CONFIG or ~/.dstack/config.yml): "
        "the\n"
        "                       project of every command from then on\n"
        "  -h, --help           this help\n\n"
        "Every command takes --project NAME; DSTACK_PROJECT and \"project:\""
        "\nin the client config choose it otherwise, else it is main.\n");
}


/* ---- options and operands ---------------------------------------------- */

const char  dsctl_project_list_short[] = ":h";

const struct option  dsctl_project_list_opts[] = {
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};

/* create, remove-member and set-default */
const char  dsctl_project_plain_short[] = ":h";

const struct option  dsctl_project_plain_opts[] = {
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};

const char  dsctl_project_delete_short[] = ":hy";

const struct option  dsctl_project_delete_opts[] = {
    { "yes", no_argument, NULL, 'y' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};

const char  dsctl_project_member_short[] = ":hr:";

const struct option  dsctl_project_member_opts[] = {
    { "role", required_argument, NULL, 'r' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


typedef struct {
    int             json;
    int             yes;
    const char     *role;
} dsctl_project_opt_t;


/*
 * The options of a subcommand, then exactly n operands (what they are
 * named in the message when some are missing).  -1 to go on, else the
 * exit status (the help printed, or a usage error).
 */
static int
dsctl_project_args(int argc, char **argv, const char *shorts,
    const struct option *opts, int n, const char *need,
    dsctl_project_opt_t *o)
{
    int  c;

    memset(o, 0, sizeof(*o));
    o->role = "user";
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
        switch (c) {
        case 'j': o->json = 1; break;
        case 'y': o->yes = 1; break;
        case 'r': o->role = optarg; break;
        case 'h': dsctl_project_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_PROJECT_USAGE, c, argv);
        }
    }
    if (argc - optind < n) {
        return dsctl_usage(DSCTL_PROJECT_USAGE, "project %s needs %s",
            argv[0], need);
    }
    if (argc - optind > n) {
        return dsctl_usage(DSCTL_PROJECT_USAGE, "unexpected argument "
            "\"%s\"", argv[optind + n]);
    }
    return -1;
}


/* a name given on the command line: not empty, not absurdly long */
static int
dsctl_project_name_arg(const char *what, const char *name)
{
    if (name[0] == '\0' || strlen(name) > DS_NAME_MAX) {
        return dsctl_usage(DSCTL_PROJECT_USAGE, "invalid %s name \"%s\"",
            what, name);
    }
    return -1;
}


/* "/api/projects/<P>" and optionally "/members/<U>", escaped */
static void
dsctl_project_url(dsctl_str_t *path, const char *project, const char *user)
{
    char  *e;

    e = dsctl_url_escape(project);
    dsctl_str_addf(path, "/api/projects/%s", e);
    free(e);
    if (user != NULL) {
        e = dsctl_url_escape(user);
        dsctl_str_addf(path, "/members/%s", e);
        free(e);
    }
}


static void
dsctl_project_json(const cJSON *json)
{
    char  *text;

    text = cJSON_Print(json);
    if (text != NULL) {
        printf("%s\n", text);
        free(text);
    }
}


/* ---- list ---------------------------------------------------------------- */

static int
dsctl_project_list(int argc, char **argv)
{
    static const char *const  hdr[] = { "NAME", "ROLE", "MEMBERS" };
    dsctl_project_opt_t  o;
    dsctl_config_t       cfg;
    dsctl_resp_t         resp;
    dsctl_table_t       *t;
    dsctl_str_t          members = { 0 };
    const cJSON         *list, *p, *m;
    const char          *role, *user, *mrole;
    int                  rc;

    rc = dsctl_project_args(argc, argv, dsctl_project_list_short,
        dsctl_project_list_opts, 0, "", &o);
    if (rc >= 0) {
        return rc;
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    rc = dsctl_api_call("GET", "/api/projects", NULL, 0, &resp);
    if (rc == 0) {
        list = cJSON_GetObjectItemCaseSensitive(resp.json, "projects");
        if (o.json) {
            dsctl_project_json(list != NULL ? list : resp.json);
        } else {
            t = dsctl_table_new(3, hdr);
            cJSON_ArrayForEach(p, list) {
                members.len = 0;
                cJSON_ArrayForEach(m,
                    cJSON_GetObjectItemCaseSensitive(p, "members"))
                {
                    user = dsctl_json_str(m, "user");
                    mrole = dsctl_json_str(m, "role");
                    dsctl_str_addf(&members, "%s%s (%s)",
                        members.len ? ", " : "", user ? user : "?",
                        mrole ? mrole : "?");
                }
                role = dsctl_json_str(p, "role");
                dsctl_table_addv(t, dsctl_json_str(p, "name"),
                    role != NULL && role[0] != '\0' ? role : "-",
                    members.len ? members.s : "-");
            }
            dsctl_table_print(t, stdout);
            dsctl_table_free(t);
        }
    }
    dsctl_str_free(&members);
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


/* ---- create, delete ------------------------------------------------------ */

static int
dsctl_project_create(int argc, char **argv)
{
    dsctl_project_opt_t  o;
    dsctl_config_t       cfg;
    dsctl_resp_t         resp;
    const char          *name;
    cJSON               *body;
    int                  rc;

    rc = dsctl_project_args(argc, argv, dsctl_project_plain_short,
        dsctl_project_plain_opts, 1, "the project name", &o);
    if (rc >= 0) {
        return rc;
    }
    name = argv[optind];
    rc = dsctl_project_name_arg("project", name);
    if (rc >= 0) {
        return rc;
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", name);
    rc = dsctl_api_call("POST", "/api/projects", body, 0, &resp);
    cJSON_Delete(body);
    if (rc == 0) {
        printf("Created project %s (use it with --project %s, or "
            "dstackctl project set-default %s)\n", name, name, name);
    }
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


static int
dsctl_project_delete(int argc, char **argv)
{
    dsctl_project_opt_t  o;
    dsctl_config_t       cfg;
    dsctl_resp_t         resp;
    dsctl_str_t          q = { 0 }, path = { 0 };
    const char          *name;
    int                  rc;

    rc = dsctl_project_args(argc, argv, dsctl_project_delete_short,
        dsctl_project_delete_opts, 1, "the project name", &o);
    if (rc >= 0) {
        return rc;
    }
    name = argv[optind];
    rc = dsctl_project_name_arg("project", name);
    if (rc >= 0) {
        return rc;
    }
    if (!o.yes) {
        dsctl_str_addf(&q, "Delete the project %s?", name);
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
    dsctl_project_url(&path, name, NULL);
    rc = dsctl_api_call("DELETE", path.s, NULL, 0, &resp);
    if (rc == 0) {
        printf("Deleted project %s\n", name);
    }
    dsctl_str_free(&path);
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


/* ---- members ------------------------------------------------------------- */

static int
dsctl_project_add_member(int argc, char **argv)
{
    dsctl_project_opt_t  o;
    dsctl_config_t       cfg;
    dsctl_resp_t         resp;
    dsctl_str_t          path = { 0 };
    const char          *name, *user;
    cJSON               *body;
    int                  rc;

    rc = dsctl_project_args(argc, argv, dsctl_project_member_short,
        dsctl_project_member_opts, 2, "the project and the user", &o);
    if (rc >= 0) {
        return rc;
    }
    name = argv[optind];
    user = argv[optind + 1];
    if (strcmp(o.role, "admin") != 0 && strcmp(o.role, "manager") != 0
        && strcmp(o.role, "user") != 0)
    {
        return dsctl_usage(DSCTL_PROJECT_USAGE, "invalid role \"%s\": "
            "admin, manager or user", o.role);
    }
    rc = dsctl_project_name_arg("project", name);
    if (rc < 0) {
        rc = dsctl_project_name_arg("user", user);
    }
    if (rc >= 0) {
        return rc;
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    dsctl_project_url(&path, name, NULL);
    dsctl_str_addf(&path, "/members");
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "user", user);
    cJSON_AddStringToObject(body, "role", o.role);
    rc = dsctl_api_call("POST", path.s, body, 0, &resp);
    cJSON_Delete(body);
    if (rc == 0) {
        printf("User %s is %s %s of project %s\n", user,
            strcmp(o.role, "admin") == 0 ? "an" : "a", o.role, name);
    }
    dsctl_str_free(&path);
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


static int
dsctl_project_remove_member(int argc, char **argv)
{
    dsctl_project_opt_t  o;
    dsctl_config_t       cfg;
    dsctl_resp_t         resp;
    dsctl_str_t          path = { 0 };
    const char          *name, *user;
    int                  rc;

    rc = dsctl_project_args(argc, argv, dsctl_project_plain_short,
        dsctl_project_plain_opts, 2, "the project and the user", &o);
    if (rc >= 0) {
        return rc;
    }
    name = argv[optind];
    user = argv[optind + 1];
    rc = dsctl_project_name_arg("project", name);
    if (rc < 0) {
        rc = dsctl_project_name_arg("user", user);
    }
    if (rc >= 0) {
        return rc;
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    dsctl_project_url(&path, name, user);
    rc = dsctl_api_call("DELETE", path.s, NULL, 0, &resp);
    if (rc == 0) {
        printf("Removed %s from project %s\n", user, name);
    }
    dsctl_str_free(&path);
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


/* ---- set-default ----------------------------------------------------------- */

/* 1 when the server lists the project among the caller's; -1 on failure */
static int
dsctl_project_known(const char *name)
{
    dsctl_resp_t   resp;
    const cJSON   *p;
    const char    *n;
    int            found = 0;

    if (dsctl_api_call("GET", "/api/projects", NULL, 0, &resp) != 0) {
        dsctl_resp_free(&resp);
        return -1;
    }
    cJSON_ArrayForEach(p,
        cJSON_GetObjectItemCaseSensitive(resp.json, "projects"))
    {
        n = dsctl_json_str(p, "name");
        if (n != NULL && strcmp(n, name) == 0) {
            found = 1;
            break;
        }
    }
    dsctl_resp_free(&resp);
    return found;
}


/*
 * The config file with "project: NAME", checked by reading it back as
 * dstackctl will, then written in place (0600).  The directory of the
 * default file is made when missing (the environment may hold the
 * server and the token).
 */
static int
dsctl_project_write_default(const char *path, int explicit,
    const char *name)
{
    dsctl_config_t   back;
    dsctl_str_t      out = { 0 }, dir = { 0 };
    char             err[512];
    char            *text, *slash;
    size_t           len = 0;
    int              rc;

    text = dsctl_read_file(path, &len);
    if (text == NULL && errno != ENOENT) {
        dsctl_error("cannot read \"%s\": %s", path, strerror(errno));
        return -1;
    }
    dsctl_config_with_project(text != NULL ? text : "", len, name, &out);
    free(text);

    memset(&back, 0, sizeof(back));
    rc = dsctl_config_parse(&back, path, out.s, out.len, err, sizeof(err));
    if (rc != 0 || back.project == NULL || strcmp(back.project, name) != 0)
    {
        dsctl_error("cannot set the project in \"%s\"%s%s: write "
            "\"project: %s\" there as a line of its own", path,
            rc != 0 ? ": " : "", rc != 0 ? err : "", name);
        dsctl_config_free(&back);
        dsctl_str_free(&out);
        return -1;
    }
    dsctl_config_free(&back);

    if (!explicit) {
        dsctl_str_addf(&dir, "%s", path);
        slash = strrchr(dir.s, '/');
        if (slash != NULL && slash != dir.s) {
            *slash = '\0';
            if (mkdir(dir.s, 0700) == -1 && errno != EEXIST) {
                dsctl_error("cannot make \"%s\": %s", dir.s,
                    strerror(errno));
                dsctl_str_free(&dir);
                dsctl_str_free(&out);
                return -1;
            }
        }
        dsctl_str_free(&dir);
    }
    rc = dsctl_write_private(path, out.s, out.len);
    dsctl_str_free(&out);
    return rc;
}


static int
dsctl_project_set_default(int argc, char **argv)
{
    dsctl_project_opt_t  o;
    dsctl_config_t       cfg;
    const char          *name, *env;
    char                *path;
    int                  rc, explicit;

    rc = dsctl_project_args(argc, argv, dsctl_project_plain_short,
        dsctl_project_plain_opts, 1, "the project name", &o);
    if (rc >= 0) {
        return rc;
    }
    name = argv[optind];
    if (!dsctl_project_name_plain(name)) {
        return dsctl_usage(DSCTL_PROJECT_USAGE, "invalid project name "
            "\"%s\"", name);
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    /* a typo would send every later command to a project not there */
    rc = dsctl_project_known(name);
    dsctl_config_free(&cfg);
    if (rc < 0) {
        return DSCTL_EXIT_FAIL;
    }
    if (rc == 0) {
        dsctl_error("project \"%s\" not found", name);
        return DSCTL_EXIT_FAIL;
    }

    path = dsctl_config_path(&explicit);
    if (dsctl_project_write_default(path, explicit, name) != 0) {
        free(path);
        return DSCTL_EXIT_FAIL;
    }
    printf("Default project: %s (in %s)\n", name, path);
    env = getenv("DSTACK_PROJECT");
    if (env != NULL && env[0] != '\0' && strcmp(env, name) != 0) {
        fprintf(stderr, "dstackctl: warning: DSTACK_PROJECT=%s is set and "
            "wins over the file\n", env);
    }
    free(path);
    return DSCTL_EXIT_OK;
}


int
cmd_project(int argc, char **argv)
{
    static const struct {
        const char   *name;
        int         (*fn)(int argc, char **argv);
    } subs[] = {
        { "list", dsctl_project_list },
        { "ls", dsctl_project_list },
        { "create", dsctl_project_create },
        { "delete", dsctl_project_delete },
        { "rm", dsctl_project_delete },
        { "add-member", dsctl_project_add_member },
        { "remove-member", dsctl_project_remove_member },
        { "set-default", dsctl_project_set_default },
    };
    size_t  i;

    if (argc < 2) {
        return dsctl_usage(DSCTL_PROJECT_USAGE, "project needs a "
            "subcommand: list, create, delete, add-member, remove-member "
            "or set-default");
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        dsctl_project_help();
        return DSCTL_EXIT_OK;
    }
    for (i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[1], subs[i].name) == 0) {
            return subs[i].fn(argc - 1, argv + 1);
        }
    }
    return dsctl_usage(DSCTL_PROJECT_USAGE, "unknown project subcommand "
        "\"%s\"", argv[1]);
}
