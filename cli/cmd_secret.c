/*
 * dstackctl secret set NAME [VALUE|-] [--json]
 * dstackctl secret get NAME [--json]
 * dstackctl secret list [--json]
 * dstackctl secret delete NAME [-y]
 *
 * dstack's `dstack secret`: values that specs name as
 * "${{ secrets.NAME }}" (env, registry_auth), kept encrypted by the
 * server and given to replicas when they start.  A value on the command
 * line shows in the shell's history and in ps: "-", or no VALUE with a
 * pipe on stdin, reads it from stdin instead (one final newline is
 * dropped, as `echo` adds it).
 */

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ds_secret.h"
#include "dstackctl.h"


#define DSCTL_SECRET_USAGE \
    "dstackctl secret set NAME [VALUE|-] [--json]\n" \
    "   or: dstackctl secret get NAME [--json]\n" \
    "   or: dstackctl secret list [--json]\n" \
    "   or: dstackctl secret delete NAME [-y]"


static void
dsctl_secret_help(void)
{
    printf("usage: %s\n\n", DSCTL_SECRET_USAGE);
    printf(
        "Secrets that services name in env and registry_auth as\n"
        "${{ secrets.NAME }}; stored encrypted, given to replicas when\n"
        "they start.\n\n"
        "  set NAME VALUE  create or update a secret\n"
        "  set NAME -      the same, the value read from stdin (also when\n"
        "                  VALUE is left out and stdin is not a terminal):\n"
        "                  it stays out of the shell's history and ps\n"
        "  get NAME        show a secret's value\n"
        "  list            the secrets' names and times (never values)\n"
        "  delete NAME     delete a secret (running replicas keep it)\n"
        "    -y, --yes     do not ask for confirmation\n"
        "  --json          the API's answer as JSON\n"
        "      --project P the project (else DSTACK_PROJECT, else\n"
        "                  \"project:\" in the config file, else main)\n"
        "  -h, --help      this help\n\n"
        "Names are 1 to %d letters, digits, \"_\" or \"-\"; values up to\n"
        "%d KiB.\n", DS_SECRET_NAME_MAX, DS_SECRET_VALUE_MAX / 1024);
}


/* the operands after the options: want of them, a name first */
static int
dsctl_secret_args(int argc, char **argv, int min, int max, const char *sub,
    const char **name)
{
    int  n = argc - optind;

    if (n < min) {
        return dsctl_usage(DSCTL_SECRET_USAGE, "secret %s needs a name", sub);
    }
    if (n > max) {
        return dsctl_usage(DSCTL_SECRET_USAGE, "unexpected argument \"%s\"",
            argv[optind + max]);
    }
    *name = argv[optind];
    if (!ds_secret_name_ok(*name, strlen(*name))) {
        return dsctl_usage(DSCTL_SECRET_USAGE, "invalid secret name \"%s\": "
            "1 to %d letters, digits, \"_\" or \"-\"", *name,
            DS_SECRET_NAME_MAX);
    }
    return 0;
}


/* the value from stdin, one final newline dropped; NULL after a message */
static char *
dsctl_secret_stdin(void)
{
    dsctl_str_t  b = { 0 };
    char         buf[4096];
    size_t       r;

    while ((r = fread(buf, 1, sizeof(buf), stdin)) > 0) {
        dsctl_str_add(&b, buf, r);
        if (b.len > DS_SECRET_VALUE_MAX + 2) {
            break;
        }
    }
    explicit_bzero(buf, sizeof(buf));
    if (ferror(stdin)) {
        dsctl_error("cannot read the value from stdin");
        dsctl_str_free(&b);
        return NULL;
    }
    if (b.s == NULL) {
        dsctl_str_add(&b, "", 0);
    }
    if (b.len > 0 && b.s[b.len - 1] == '\n') {
        b.s[--b.len] = '\0';
        if (b.len > 0 && b.s[b.len - 1] == '\r') {
            b.s[--b.len] = '\0';
        }
    }
    if (memchr(b.s, '\0', b.len) != NULL) {
        dsctl_error("the value holds a NUL byte, which a secret cannot");
        explicit_bzero(b.s, b.len);
        dsctl_str_free(&b);
        return NULL;
    }
    return b.s;
}


static void
dsctl_secret_json(const cJSON *json)
{
    char  *text;

    text = cJSON_Print(json);
    if (text != NULL) {
        printf("%s\n", text);
        explicit_bzero(text, strlen(text));
        free(text);
    }
}


/* set, get and list take the same options; shared with the completion */
const char  dsctl_secret_short[] = ":h";

const struct option  dsctl_secret_opts[] = {
    { "json", no_argument, NULL, 'j' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};

const char  dsctl_secret_delete_short[] = ":hy";

const struct option  dsctl_secret_delete_opts[] = {
    { "yes", no_argument, NULL, 'y' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


/*
 * set, get and list: --json and --help.  -1 to go on, else the exit
 * status (the help printed, or a usage error).
 */
static int
dsctl_secret_json_opt(int argc, char **argv, int *json)
{
    int  c;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_secret_short,
            dsctl_secret_opts, NULL)) != -1) {
        switch (c) {
        case 'j': *json = 1; break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_secret_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_SECRET_USAGE, c, argv);
        }
    }
    return -1;
}


static int
dsctl_secret_set(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    const char      *name = NULL, *arg;
    char            *value;
    cJSON           *body, *v;
    int              json = 0, rc;

    rc = dsctl_secret_json_opt(argc, argv, &json);
    if (rc >= 0) {
        return rc;
    }
    rc = dsctl_secret_args(argc, argv, 1, 2, "set", &name);
    if (rc != 0) {
        return rc;
    }

    arg = optind + 1 < argc ? argv[optind + 1] : NULL;
    if (arg != NULL && strcmp(arg, "-") != 0) {
        value = dsctl_xstrdup(arg);
    } else if (arg == NULL && dsctl_isatty_in()) {
        return dsctl_usage(DSCTL_SECRET_USAGE, "secret set needs a value "
            "(VALUE, or - to read it from stdin)");
    } else {
        value = dsctl_secret_stdin();
        if (value == NULL) {
            return DSCTL_EXIT_FAIL;
        }
    }
    if (strlen(value) > DS_SECRET_VALUE_MAX) {
        explicit_bzero(value, strlen(value));
        free(value);
        dsctl_error("the value of \"%s\" is longer than %d KiB", name,
            DS_SECRET_VALUE_MAX / 1024);
        return DSCTL_EXIT_USAGE;
    }

    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", name);
    v = cJSON_AddStringToObject(body, "value", value);
    explicit_bzero(value, strlen(value));
    free(value);

    if (dsctl_client_open(&cfg) != 0) {
        if (v != NULL) {
            explicit_bzero(v->valuestring, strlen(v->valuestring));
        }
        cJSON_Delete(body);
        return DSCTL_EXIT_FAIL;
    }
    rc = dsctl_api_call("POST", "/api/secrets/set", body, 0, &resp);
    if (v != NULL) {
        explicit_bzero(v->valuestring, strlen(v->valuestring));
    }
    cJSON_Delete(body);
    if (rc == 0) {
        if (json) {
            dsctl_secret_json(resp.json);
        } else {
            printf("OK\n");
        }
    }
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


static int
dsctl_secret_get(int argc, char **argv)
{
    static const char *const  hdr[] = { "NAME", "VALUE" };
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    dsctl_table_t   *t;
    const char      *name = NULL, *value;
    cJSON           *body;
    int              json = 0, rc;

    rc = dsctl_secret_json_opt(argc, argv, &json);
    if (rc >= 0) {
        return rc;
    }
    rc = dsctl_secret_args(argc, argv, 1, 1, "get", &name);
    if (rc != 0) {
        return rc;
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", name);
    rc = dsctl_api_call("POST", "/api/secrets/get", body, 0, &resp);
    cJSON_Delete(body);
    if (rc == 0) {
        value = dsctl_json_str(resp.json, "value");
        if (json) {
            dsctl_secret_json(resp.json);
        } else {
            /* as dstack: a table of the one secret */
            t = dsctl_table_new(2, hdr);
            dsctl_table_addv(t, name, value != NULL ? value : "");
            dsctl_table_print(t, stdout);
            dsctl_table_free(t);
        }
    }
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


static int
dsctl_secret_list(int argc, char **argv)
{
    static const char *const  hdr[] = { "NAME", "CREATED", "UPDATED" };
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    dsctl_table_t   *t;
    const cJSON     *list, *s;
    char             created[32], updated[32];
    int              json = 0, rc;

    rc = dsctl_secret_json_opt(argc, argv, &json);
    if (rc >= 0) {
        return rc;
    }
    if (optind < argc) {
        return dsctl_usage(DSCTL_SECRET_USAGE, "unexpected argument \"%s\"",
            argv[optind]);
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    rc = dsctl_api_call("GET", "/api/secrets", NULL, 0, &resp);
    if (rc == 0) {
        list = cJSON_GetObjectItemCaseSensitive(resp.json, "secrets");
        if (json) {
            dsctl_secret_json(list != NULL ? list : resp.json);
        } else {
            t = dsctl_table_new(3, hdr);
            cJSON_ArrayForEach(s, list) {
                dsctl_fmt_ago(created, sizeof(created),
                    dsctl_json_num(s, "created", 0), (double) time(NULL));
                dsctl_fmt_ago(updated, sizeof(updated),
                    dsctl_json_num(s, "updated", 0), (double) time(NULL));
                dsctl_table_addv(t, dsctl_json_str(s, "name"), created,
                    updated);
            }
            dsctl_table_print(t, stdout);
            dsctl_table_free(t);
        }
    }
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


static int
dsctl_secret_delete(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    dsctl_str_t      q = { 0 };
    const char      *name = NULL;
    cJSON           *body;
    int              yes = 0, c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_secret_delete_short,
            dsctl_secret_delete_opts, NULL)) != -1) {
        switch (c) {
        case 'y': yes = 1; break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_secret_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_SECRET_USAGE, c, argv);
        }
    }
    rc = dsctl_secret_args(argc, argv, 1, 1, "delete", &name);
    if (rc != 0) {
        return rc;
    }
    if (!yes) {
        dsctl_str_addf(&q, "Delete the secret %s?", name);
        c = dsctl_confirm(q.s);
        dsctl_str_free(&q);
        if (c < 0) {
            dsctl_error("not deleting \"%s\": no terminal to confirm on "
                "(use -y)", name);
            return DSCTL_EXIT_USAGE;
        }
        if (c == 0) {
            return DSCTL_EXIT_OK;
        }
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", name);
    rc = dsctl_api_call("POST", "/api/secrets/delete", body, 0, &resp);
    cJSON_Delete(body);
    if (rc == 0) {
        printf("OK\n");
    }
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


int
cmd_secret(int argc, char **argv)
{
    if (argc < 2) {
        return dsctl_usage(DSCTL_SECRET_USAGE, "secret needs a subcommand: "
            "set, get, list or delete");
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        dsctl_secret_help();
        return DSCTL_EXIT_OK;
    }
    if (strcmp(argv[1], "set") == 0) {
        return dsctl_secret_set(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "get") == 0) {
        return dsctl_secret_get(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "list") == 0 || strcmp(argv[1], "ls") == 0) {
        return dsctl_secret_list(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "delete") == 0 || strcmp(argv[1], "rm") == 0) {
        return dsctl_secret_delete(argc - 1, argv + 1);
    }
    return dsctl_usage(DSCTL_SECRET_USAGE, "unknown secret subcommand \"%s\"",
        argv[1]);
}
