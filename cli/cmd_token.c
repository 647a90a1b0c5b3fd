/*
 * dstackctl token create NAME [--scope admin|services[:run,...]]
 *                             [--expires DURATION] [--rpm N] [--tpm N]
 *                             [--tpd N] [--json]
 * dstackctl token update NAME [--rpm N] [--tpm N] [--tpd N]
 * dstackctl token list [-v] [--json]
 * dstackctl token revoke NAME
 *
 * Admin tokens drive the API (this CLI); service tokens open the
 * published services, all of them or the runs named in the scope.
 * "create" prints the token alone on stdout so that scripts can take it
 * with $(...); the server shows it this once only.  A token's budget
 * (#16) limits its calls of each model: N, "unlimited", or "default"
 * (0: the model's budget).
 */

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ds_state.h"
#include "dstackctl.h"


#define DSCTL_TOKEN_USAGE \
    "dstackctl token create NAME [--scope admin|services[:RUN,...]] " \
    "[--expires DURATION] [--rpm N] [--tpm N] [--tpd N] [--json]\n" \
    "   or: dstackctl token update NAME [--rpm N] [--tpm N] [--tpd N]\n" \
    "   or: dstackctl token list [-v] [--json]\n" \
    "   or: dstackctl token revoke NAME"

/* the largest limits the API takes (controld/api_args.h) */
#define DSCTL_BUDGET_U32_MAX    4294967294ULL
#define DSCTL_BUDGET_TPD_MAX    1000000000000000ULL

/* getopt values of the budget options */
#define DSCTL_OPT_RPM           0x200
#define DSCTL_OPT_TPM           0x201
#define DSCTL_OPT_TPD           0x202

#define DSCTL_BUDGET_OPTIONS \
    { "rpm", required_argument, NULL, DSCTL_OPT_RPM }, \
    { "tpm", required_argument, NULL, DSCTL_OPT_TPM }, \
    { "tpd", required_argument, NULL, DSCTL_OPT_TPD }


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
        "    --rpm N       requests per minute to each model\n"
        "    --tpm N       tokens per minute (prompt and completion)\n"
        "    --tpd N       tokens per UTC day\n"
        "                  N: a number, unlimited (whatever the model\n"
        "                  says) or default (the model's budget)\n"
        "    --json        the API's answer as JSON\n"
        "  update NAME     change a token's budget: --rpm, --tpm, --tpd\n"
        "                  (at least one; the others stay as they are)\n"
        "  list            the tokens (never their secrets)\n"
        "    -v, --verbose each token's budget, and its use of each\n"
        "                  model as the gateways count it\n"
        "    --json        the API's answer as JSON\n"
        "  revoke NAME     revoke a token at once\n"
        "      --project P the project (else DSTACK_PROJECT, else\n"
        "                  \"project:\" in the config file, else main)\n"
        "  -h, --help      this help\n");
}


/*
 * --rpm, --tpm or --tpd (opt) with its value into budget (made when
 * NULL): a number, "unlimited" or "default" (0); DSCTL_EXIT_USAGE with
 * the message when the value is none of those, else 0.
 */
static int
dsctl_budget_opt(cJSON **budget, int opt, const char *v)
{
    const char          *field;
    char                *end;
    unsigned long long   n, max;

    field = opt == DSCTL_OPT_RPM ? "rpm" : opt == DSCTL_OPT_TPM ? "tpm"
                                                                 : "tpd";
    max = opt == DSCTL_OPT_TPD ? DSCTL_BUDGET_TPD_MAX : DSCTL_BUDGET_U32_MAX;

    if (*budget == NULL) {
        *budget = cJSON_CreateObject();
    }
    cJSON_DeleteItemFromObjectCaseSensitive(*budget, field);

    if (strcmp(v, "unlimited") == 0) {
        cJSON_AddStringToObject(*budget, field, "unlimited");
        return 0;
    }
    if (strcmp(v, "default") == 0) {
        cJSON_AddNumberToObject(*budget, field, 0);
        return 0;
    }

    errno = 0;
    n = strtoull(v, &end, 10);
    if (*v < '0' || *v > '9' || *end != '\0' || errno != 0 || n > max) {
        return dsctl_usage(DSCTL_TOKEN_USAGE, "invalid --%s \"%s\": a "
            "whole number up to %llu, unlimited or default", field, v, max);
    }
    cJSON_AddNumberToObject(*budget, field, (double) n);
    return 0;
}


const char  dsctl_token_create_short[] = ":h";

const struct option  dsctl_token_create_opts[] = {
    { "scope", required_argument, NULL, 's' },
    { "expires", required_argument, NULL, 'e' },
    DSCTL_BUDGET_OPTIONS,
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
    cJSON           *body, *services = NULL, *budget = NULL;
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
        case DSCTL_OPT_RPM:
        case DSCTL_OPT_TPM:
        case DSCTL_OPT_TPD:
            if (dsctl_budget_opt(&budget, c, optarg) != 0) {
                cJSON_Delete(budget);
                return DSCTL_EXIT_USAGE;
            }
            break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h':
            cJSON_Delete(budget);
            dsctl_token_help();
            return DSCTL_EXIT_OK;
        default:
            cJSON_Delete(budget);
            return dsctl_opt_error(DSCTL_TOKEN_USAGE, c, argv);
        }
    }
    if (optind >= argc) {
        cJSON_Delete(budget);
        return dsctl_usage(DSCTL_TOKEN_USAGE, "token create needs a name");
    }
    name = argv[optind++];
    if (optind < argc) {
        cJSON_Delete(budget);
        return dsctl_usage(DSCTL_TOKEN_USAGE, "unexpected argument \"%s\"",
            argv[optind]);
    }
    if (name[0] == '\0' || strlen(name) > DS_NAME_MAX) {
        cJSON_Delete(budget);
        return dsctl_usage(DSCTL_TOKEN_USAGE, "invalid token name \"%s\"",
            name);
    }
    if (expires != NULL) {
        secs = dsctl_parse_duration(expires);
        if (secs <= 0) {
            cJSON_Delete(budget);
            return dsctl_usage(DSCTL_TOKEN_USAGE, "invalid duration \"%s\" "
                "(for example 30d, 12h or 3600)", expires);
        }
    }

    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", name);
    if (budget != NULL) {
        cJSON_AddItemToObject(body, "budget", budget);
    }
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


/* a limit of a token's budget as the API shows it: a number, or
 * "unlimited"; 0 or none is the model's ("default") */
static void
dsctl_fmt_limit(char *buf, size_t n, const cJSON *budget, const char *field)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(budget, field);
    if (cJSON_IsString(v)) {
        snprintf(buf, n, "%s", v->valuestring);
    } else if (cJSON_IsNumber(v) && v->valuedouble > 0) {
        snprintf(buf, n, "%.0f", v->valuedouble);
    } else {
        snprintf(buf, n, "default");
    }
}


/* the tokens with their budgets, then a row per token and model used */
static void
dsctl_token_list_verbose(const cJSON *tokens)
{
    static const char *const  bhdr[] = { "NAME", "RPM", "TPM", "TPD" };
    static const char *const  uhdr[] = {
        "NAME", "MODEL", "REQUESTS", "REFUSED", "TOKENS IN", "TOKENS OUT",
        "TODAY"
    };
    dsctl_table_t  *b, *u;
    const cJSON    *tk, *budget, *use;
    char            rpm[24], tpm[24], tpd[24];
    char            num[5][24];
    int             i;

    b = dsctl_table_new(4, bhdr);
    u = dsctl_table_new(7, uhdr);
    for (i = 2; i < 7; i++) {
        dsctl_table_align(u, i, DSCTL_ALIGN_RIGHT);
    }

    cJSON_ArrayForEach(tk, tokens) {
        budget = cJSON_GetObjectItemCaseSensitive(tk, "budget");
        dsctl_fmt_limit(rpm, sizeof(rpm), budget, "rpm");
        dsctl_fmt_limit(tpm, sizeof(tpm), budget, "tpm");
        dsctl_fmt_limit(tpd, sizeof(tpd), budget, "tpd");
        dsctl_table_addv(b, dsctl_json_str(tk, "name"), rpm, tpm, tpd);

        cJSON_ArrayForEach(use, cJSON_GetObjectItemCaseSensitive(tk, "usage"))
        {
            snprintf(num[0], sizeof(num[0]), "%.0f",
                dsctl_json_num(use, "requests", 0));
            snprintf(num[1], sizeof(num[1]), "%.0f",
                dsctl_json_num(use, "refused", 0));
            snprintf(num[2], sizeof(num[2]), "%.0f",
                dsctl_json_num(use, "prompt_tokens", 0));
            snprintf(num[3], sizeof(num[3]), "%.0f",
                dsctl_json_num(use, "completion_tokens", 0));
            snprintf(num[4], sizeof(num[4]), "%.0f",
                dsctl_json_num(use, "day_tokens", 0));
            dsctl_table_addv(u, dsctl_json_str(tk, "name"),
                dsctl_json_str(use, "model"), num[0], num[1], num[2],
                num[3], num[4]);
        }
    }

    printf("\nBudgets (per model; default: the model's):\n");
    dsctl_table_print(b, stdout);
    if (dsctl_table_rows(u) > 0) {
        printf("\nUsage (all gateways; today: since 00:00 UTC):\n");
        dsctl_table_print(u, stdout);
    } else {
        printf("\nNo model use reported by the gateways\n");
    }
    dsctl_table_free(b);
    dsctl_table_free(u);
}


const char  dsctl_token_list_short[] = ":vh";

const struct option  dsctl_token_list_opts[] = {
    { "verbose", no_argument, NULL, 'v' },
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
    int              json = 0, verbose = 0, c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_token_list_short,
            dsctl_token_list_opts, NULL)) != -1)
    {
        switch (c) {
        case 'v': verbose = 1; break;
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
            if (verbose) {
                dsctl_token_list_verbose(tokens);
            }
        }
    }
    dsctl_str_free(&svc);
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


const char  dsctl_token_update_short[] = ":h";

const struct option  dsctl_token_update_opts[] = {
    DSCTL_BUDGET_OPTIONS,
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


static int
dsctl_token_update(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    dsctl_str_t      path = { 0 };
    cJSON           *body, *budget = NULL;
    char             rpm[24], tpm[24], tpd[24], *ename;
    int              c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_token_update_short,
            dsctl_token_update_opts, NULL)) != -1)
    {
        switch (c) {
        case DSCTL_OPT_RPM:
        case DSCTL_OPT_TPM:
        case DSCTL_OPT_TPD:
            if (dsctl_budget_opt(&budget, c, optarg) != 0) {
                cJSON_Delete(budget);
                return DSCTL_EXIT_USAGE;
            }
            break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h':
            cJSON_Delete(budget);
            dsctl_token_help();
            return DSCTL_EXIT_OK;
        default:
            cJSON_Delete(budget);
            return dsctl_opt_error(DSCTL_TOKEN_USAGE, c, argv);
        }
    }
    if (optind >= argc) {
        cJSON_Delete(budget);
        return dsctl_usage(DSCTL_TOKEN_USAGE, "token update needs a name");
    }
    if (optind + 1 < argc) {
        cJSON_Delete(budget);
        return dsctl_usage(DSCTL_TOKEN_USAGE, "unexpected argument \"%s\"",
            argv[optind + 1]);
    }
    if (budget == NULL) {
        return dsctl_usage(DSCTL_TOKEN_USAGE, "token update needs --rpm, "
            "--tpm or --tpd");
    }

    body = cJSON_CreateObject();
    cJSON_AddItemToObject(body, "budget", budget);
    if (dsctl_client_open(&cfg) != 0) {
        cJSON_Delete(body);
        return DSCTL_EXIT_FAIL;
    }
    ename = dsctl_url_escape(argv[optind]);
    dsctl_str_addf(&path, "/api/tokens/%s", ename);
    free(ename);
    rc = dsctl_api_call("PATCH", path.s, body, 0, &resp);
    cJSON_Delete(body);
    if (rc == 0) {
        budget = cJSON_GetObjectItemCaseSensitive(resp.json, "budget");
        dsctl_fmt_limit(rpm, sizeof(rpm), budget, "rpm");
        dsctl_fmt_limit(tpm, sizeof(tpm), budget, "tpm");
        dsctl_fmt_limit(tpd, sizeof(tpd), budget, "tpd");
        printf("Updated token %s: rpm %s, tpm %s, tpd %s\n", argv[optind],
            rpm, tpm, tpd);
    }
    dsctl_resp_free(&resp);
    dsctl_str_free(&path);
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
            "create, update, list or revoke");
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        dsctl_token_help();
        return DSCTL_EXIT_OK;
    }
    if (strcmp(argv[1], "create") == 0) {
        return dsctl_token_create(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "update") == 0) {
        return dsctl_token_update(argc - 1, argv + 1);
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
