/*
 * dstackctl fleet [list] [--json]
 * dstackctl fleet delete NAME [-y] [--force]
 * dstackctl apply -f FLEET_FILE [-y] [-d] [-n NAME] [-e K=V]...
 *
 * SSH fleets: hosts the server reaches over ssh and runs replicas on.
 * apply sends the normalized fleet with the private keys its hosts
 * name (read here: the server has no access to this machine's files),
 * shows the plan, confirms, and follows the hosts until each is up or
 * failed.
 */

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ds_state.h"
#include "dstackctl.h"


#define DSCTL_FLEET_USAGE \
    "dstackctl fleet [list] [--json]\n" \
    "   or: dstackctl fleet delete NAME [-y] [--force]"

#define DSCTL_FLEET_FOLLOW_MS   500
#define DSCTL_FLEET_FOLLOW_MAX  120     /* seconds */


static void
dsctl_fleet_help(void)
{
    printf("usage: %s\n\n", DSCTL_FLEET_USAGE);
    printf(
        "SSH fleets: hosts the server reaches over ssh.  Create or update "
        "one\nwith \"dstackctl apply -f fleet.dstack.yml\" (type: fleet).\n\n"
        "  list            the fleets and their hosts (the default)\n"
        "    --json        the API's answer as JSON\n"
        "  delete NAME     delete a fleet\n"
        "    -y, --yes     do not ask for confirmation\n"
        "    --force       even with replicas running on its hosts\n"
        "      --project P the project (else DSTACK_PROJECT, else\n"
        "                  \"project:\" in the config file, else main)\n"
        "  -h, --help      this help\n");
}


/* ---- list ------------------------------------------------------------------ */

/* "web/1 web/3": the replicas on a host */
static void
dsctl_host_replicas(const cJSON *h, dsctl_str_t *out)
{
    const cJSON  *r;

    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(h, "replicas")) {
        dsctl_str_addf(out, "%s%s/%.0f", out->len ? " " : "",
            dsctl_json_str(r, "run") ? dsctl_json_str(r, "run") : "?",
            dsctl_json_num(r, "replica", 0));
    }
    if (out->len == 0) {
        dsctl_str_add(out, "-", 1);
    }
}


static void
dsctl_print_fleets(const cJSON *fleets)
{
    static const char *const  hdr[] = {
        "FLEET", "HOST", "STATUS", "RESOURCES", "BLOCKS", "REPLICAS"
    };
    dsctl_table_t  *t;
    const cJSON    *f, *h;
    const char     *fname, *st;
    char            blocks[48];
    dsctl_str_t     res = { 0 }, reps = { 0 };
    int             first;

    t = dsctl_table_new(6, hdr);
    cJSON_ArrayForEach(f, fleets) {
        first = 1;
        fname = dsctl_json_str(f, "name");
        cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(f, "hosts")) {
            res.len = 0;
            reps.len = 0;
            dsctl_host_resources(cJSON_GetObjectItemCaseSensitive(h,
                "resources"), &res);
            dsctl_host_replicas(h, &reps);
            snprintf(blocks, sizeof(blocks), "%.0f/%.0f",
                dsctl_json_num(h, "blocks_busy", 0),
                dsctl_json_num(h, "blocks", 0));
            /* a fleet on its way out says so on every host */
            st = dsctl_json_str(f, "status");
            if (st == NULL || strcmp(st, "deleting") != 0) {
                st = dsctl_json_str(h, "status");
            }
            dsctl_table_addv(t, first ? fname : "",
                dsctl_json_str(h, "hostname"), st != NULL ? st : "-",
                res.s, blocks, reps.s);
            first = 0;
        }
        if (first) {
            dsctl_table_addv(t, fname, "-", dsctl_json_str(f, "status"),
                "-", "-", "-");
        }
    }
    dsctl_table_print(t, stdout);
    dsctl_table_free(t);
    dsctl_str_free(&res);
    dsctl_str_free(&reps);
}


const char  dsctl_fleet_list_short[] = ":h";

const struct option  dsctl_fleet_list_opts[] = {
    { "json", no_argument, NULL, 'j' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


static int
dsctl_fleet_list(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    const cJSON     *fleets;
    char            *text;
    int              json = 0, c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_fleet_list_short,
            dsctl_fleet_list_opts, NULL)) != -1)
    {
        switch (c) {
        case 'j': json = 1; break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_fleet_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_FLEET_USAGE, c, argv);
        }
    }
    if (optind < argc) {
        return dsctl_usage(DSCTL_FLEET_USAGE, "unexpected argument \"%s\"",
            argv[optind]);
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }

    rc = dsctl_api_call("GET", "/api/fleets", NULL, 0, &resp);
    if (rc == 0) {
        /* a list, or {"fleets": [...]} */
        fleets = cJSON_IsArray(resp.json) ? resp.json
                 : cJSON_GetObjectItemCaseSensitive(resp.json, "fleets");
        if (json) {
            text = cJSON_Print(resp.json);
            printf("%s\n", text != NULL ? text : "null");
            free(text);
        } else if (cJSON_GetArraySize(fleets) == 0) {
            printf("No fleets (create one with dstackctl apply -f "
                "fleet.dstack.yml)\n");
        } else {
            dsctl_print_fleets(fleets);
        }
    }
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


const char  dsctl_fleet_delete_short[] = ":yh";

const struct option  dsctl_fleet_delete_opts[] = {
    { "yes", no_argument, NULL, 'y' },
    { "force", no_argument, NULL, 'F' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


/* ---- delete ------------------------------------------------------------------ */

static int
dsctl_fleet_delete(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    dsctl_str_t      path = { 0 }, q = { 0 };
    const char      *name;
    char            *ename;
    cJSON           *body;
    int              yes = 0, force = 0, c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_fleet_delete_short,
            dsctl_fleet_delete_opts, NULL)) != -1)
    {
        switch (c) {
        case 'y': yes = 1; break;
        case 'F': force = 1; break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_fleet_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_FLEET_USAGE, c, argv);
        }
    }
    if (optind >= argc) {
        return dsctl_usage(DSCTL_FLEET_USAGE, "fleet delete needs the fleet "
            "name");
    }
    name = argv[optind++];
    if (optind < argc) {
        return dsctl_usage(DSCTL_FLEET_USAGE, "unexpected argument \"%s\"",
            argv[optind]);
    }
    if (!ds_valid_run_name(name, strlen(name))) {
        return dsctl_usage(DSCTL_FLEET_USAGE, "invalid fleet name \"%s\": "
            "lowercase letters, digits and \"-\", starting with a letter, "
            "2 to 41 characters", name);
    }

    if (!yes) {
        dsctl_str_addf(&q, "Delete the fleet %s%s?", name,
            force ? " and stop the replicas on its hosts" : "");
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
    ename = dsctl_url_escape(name);
    dsctl_str_addf(&path, "/api/fleets/%s/delete", ename);
    free(ename);
    body = cJSON_CreateObject();
    cJSON_AddBoolToObject(body, "force", force);
    rc = dsctl_api_call("POST", path.s, body, 0, &resp);
    cJSON_Delete(body);
    if (rc == 0) {
        printf("Fleet %s deleted\n", name);
    }
    dsctl_resp_free(&resp);
    dsctl_str_free(&path);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}


int
cmd_fleet(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2
            && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))
        {
            dsctl_fleet_help();
            return DSCTL_EXIT_OK;
        }
        return dsctl_fleet_list(argc, argv);
    }
    if (strcmp(argv[1], "list") == 0 || strcmp(argv[1], "ls") == 0) {
        return dsctl_fleet_list(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "delete") == 0 || strcmp(argv[1], "rm") == 0) {
        return dsctl_fleet_delete(argc - 1, argv + 1);
    }
    return dsctl_usage(DSCTL_FLEET_USAGE, "unknown fleet subcommand \"%s\"",
        argv[1]);
}


/* ---- apply ------------------------------------------------------------------- */

static void
dsctl_fleet_plan(const dsctl_config_t *cfg, const dsctl_spec_t *sp,
    const char *name, const cJSON *plan)
{
    dsctl_table_t  *t;
    const cJSON    *chs, *ch;
    const char     *s;
    char            n[16], *text;

    snprintf(n, sizeof(n), "%d", cJSON_GetArraySize(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(sp->spec, "ssh_config"),
            "hosts")));

    t = dsctl_table_new(2, NULL);
    dsctl_table_addv(t, "Project", cfg->project);
    dsctl_table_addv(t, "Configuration", sp->file);
    dsctl_table_addv(t, "Fleet name", name);
    dsctl_table_addv(t, "Type", "fleet (ssh)");
    dsctl_table_addv(t, "Placement", dsctl_json_str(sp->spec, "placement"));
    dsctl_table_addv(t, "Hosts", n);
    dsctl_table_print(t, stdout);
    dsctl_table_free(t);

    printf("\n");
    dsctl_print_hosts(cJSON_GetObjectItemCaseSensitive(plan, "hosts"));

    if (!dsctl_json_bool(plan, "exists")) {
        return;
    }
    chs = cJSON_GetObjectItemCaseSensitive(plan, "changes");
    if (cJSON_GetArraySize(chs) == 0) {
        printf("\n Fleet %s exists and its configuration is unchanged\n",
            name);
        return;
    }
    printf("\n Fleet %s exists; these changes will be applied:\n", name);
    cJSON_ArrayForEach(ch, chs) {
        s = cJSON_IsString(ch) ? ch->valuestring : dsctl_json_str(ch,
                                                                  "field");
        if (s != NULL) {
            printf("   %s\n", s);
            continue;
        }
        text = cJSON_PrintUnformatted(ch);
        printf("   %s\n", text != NULL ? text : "?");
        free(text);
    }
}


/* what each host last said, to print changes only */
typedef struct {
    char           *host;
    char           *status;
} dsctl_seen_t;


/*
 * Polls GET /api/fleets/NAME, printing each host's status when it
 * changes, until every host is up or failed.  Returns 0 all up, -1 some
 * failed or the wait ran out (printed), 1 detached by Ctrl-C.
 */
static int
dsctl_fleet_follow(const char *name)
{
    dsctl_resp_t   resp;
    dsctl_seen_t  *seen = NULL;
    dsctl_str_t    path = { 0 }, key = { 0 };
    const cJSON   *h, *hosts;
    const char    *st, *msg;
    char          *ename;
    int            i, nseen = 0, pending, failed, rc = 1, errors = 0;
    time_t         deadline;

    ename = dsctl_url_escape(name);
    dsctl_str_addf(&path, "/api/fleets/%s", ename);
    free(ename);
    deadline = time(NULL) + DSCTL_FLEET_FOLLOW_MAX;

    dsctl_catch_interrupt();
    while (!dsctl_interrupted) {
        if (dsctl_api_call("GET", path.s, NULL, DSCTL_API_QUIET, &resp)
            != 0)
        {
            if (!dsctl_interrupted && dsctl_api_transient(&resp)
                && ++errors < DSCTL_POLL_RETRIES)
            {
                dsctl_resp_free(&resp);
                dsctl_sleep_ms(DSCTL_FLEET_FOLLOW_MS);
                continue;
            }
            if (!dsctl_interrupted) {
                dsctl_error("cannot follow the fleet \"%s\": %s", name,
                    resp.err_msg[0] ? resp.err_msg : "the server failed");
                rc = -1;
            }
            dsctl_resp_free(&resp);
            break;
        }
        errors = 0;

        hosts = cJSON_GetObjectItemCaseSensitive(resp.json, "hosts");
        pending = failed = 0;
        cJSON_ArrayForEach(h, hosts) {
            st = dsctl_json_str(h, "status");
            st = st != NULL ? st : "unknown";
            msg = dsctl_json_str(h, "message");
            key.len = 0;
            dsctl_str_addf(&key, "%s:%.0f", dsctl_json_str(h, "hostname"),
                dsctl_json_num(h, "port", 22));

            for (i = 0; i < nseen; i++) {
                if (strcmp(seen[i].host, key.s) == 0) {
                    break;
                }
            }
            if (i == nseen) {
                seen = dsctl_xrealloc(seen, sizeof(*seen) * (nseen + 1));
                seen[nseen].host = dsctl_xstrdup(key.s);
                seen[nseen].status = dsctl_xstrdup("");
                nseen++;
            }
            if (strcmp(seen[i].status, st) != 0) {
                printf("%s  %s%s%s%s\n", key.s, st,
                    msg != NULL && msg[0] ? "  (" : "",
                    msg != NULL ? msg : "", msg != NULL && msg[0] ? ")" : "");
                fflush(stdout);
                free(seen[i].status);
                seen[i].status = dsctl_xstrdup(st);
            }

            if (strcmp(st, "failed") == 0) {
                failed++;
            } else if (strcmp(st, "up") != 0) {
                pending++;
            }
        }

        if (pending == 0 && cJSON_GetArraySize(hosts) > 0) {
            cJSON_ArrayForEach(h, hosts) {
                if (strcmp(dsctl_json_str(h, "status")
                           ? dsctl_json_str(h, "status") : "", "failed") == 0)
                {
                    msg = dsctl_json_str(h, "message");
                    dsctl_error("host \"%s\" of the fleet \"%s\" failed: %s",
                        dsctl_json_str(h, "hostname"), name,
                        msg != NULL && msg[0] ? msg : "no reason given");
                }
            }
            rc = failed ? -1 : 0;
            dsctl_resp_free(&resp);
            break;
        }
        dsctl_resp_free(&resp);

        if (time(NULL) >= deadline) {
            dsctl_error("fleet \"%s\": %d host%s not up after %ds (dstackctl "
                "fleet to watch them)", name, pending, pending == 1 ? "" : "s",
                DSCTL_FLEET_FOLLOW_MAX);
            rc = -1;
            break;
        }
        dsctl_sleep_ms(DSCTL_FLEET_FOLLOW_MS);
    }
    dsctl_release_interrupt();

    if (rc == 1) {
        printf("Detached: the fleet %s keeps connecting its hosts "
            "(dstackctl fleet to watch it)\n", name);
    }
    for (i = 0; i < nseen; i++) {
        free(seen[i].host);
        free(seen[i].status);
    }
    free(seen);
    dsctl_str_free(&path);
    dsctl_str_free(&key);
    return rc;
}


/* {"spec": ..., "keys": ...}: a reference to both */
static cJSON *
dsctl_fleet_body(const cJSON *spec, const cJSON *keys)
{
    cJSON  *req;

    req = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(req, "spec", (cJSON *) spec);
    cJSON_AddItemReferenceToObject(req, "keys", (cJSON *) keys);
    return req;
}


int
dsctl_fleet_apply(const char *file, const char *name, char **envs,
    int n_envs, int yes, int detach)
{
    dsctl_spec_t     sp;
    dsctl_config_t   cfg;
    dsctl_resp_t     plan, applied;
    dsctl_str_t      q = { 0 };
    const char      *pname;
    cJSON           *keys, *req;
    int              rc, c, exists;

    if (dsctl_fleet_load(&sp, file, envs, n_envs) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    if (name != NULL) {
        cJSON_ReplaceItemInObjectCaseSensitive(sp.spec, "name",
            cJSON_CreateString(name));
    }
    name = dsctl_json_str(sp.spec, "name");

    /* the keys before the server: a wrong path is this machine's news */
    keys = dsctl_fleet_keys(sp.spec);
    if (keys == NULL) {
        dsctl_spec_free(&sp);
        return DSCTL_EXIT_FAIL;
    }

    if (dsctl_config_load(&cfg) != 0) {
        cJSON_Delete(keys);
        dsctl_spec_free(&sp);
        return DSCTL_EXIT_FAIL;
    }
    if (dsctl_api_init(&cfg) != 0) {
        rc = DSCTL_EXIT_FAIL;
        goto done_cfg;
    }

    req = dsctl_fleet_body(sp.spec, keys);
    rc = dsctl_api_call("POST", "/api/fleets/plan", req, 0, &plan);
    cJSON_Delete(req);
    if (rc != 0) {
        dsctl_resp_free(&plan);
        rc = DSCTL_EXIT_FAIL;
        goto done_cfg;
    }
    pname = dsctl_json_str(plan.json, "name");
    if (pname == NULL) {
        pname = name;
    }
    if (pname == NULL) {
        dsctl_error("the server's plan has no fleet name");
        rc = DSCTL_EXIT_FAIL;
        goto done_plan;
    }
    exists = dsctl_json_bool(plan.json, "exists");

    /* the name the plan chose is the one applied */
    if (name == NULL) {
        cJSON_ReplaceItemInObjectCaseSensitive(sp.spec, "name",
            cJSON_CreateString(pname));
    }

    dsctl_fleet_plan(&cfg, &sp, pname, plan.json);
    printf("\n");

    if (!yes) {
        dsctl_str_addf(&q, "%s the fleet %s?", exists ? "Update" : "Create",
            pname);
        c = dsctl_confirm(q.s);
        dsctl_str_free(&q);
        if (c < 0) {
            dsctl_error("not applying \"%s\": no terminal to confirm on "
                "(use -y)", pname);
            rc = DSCTL_EXIT_USAGE;
            goto done_plan;
        }
        if (c == 0) {
            rc = DSCTL_EXIT_OK;
            goto done_plan;
        }
    }

    req = dsctl_fleet_body(sp.spec, keys);
    rc = dsctl_api_call("POST", "/api/fleets/apply", req, 0, &applied);
    cJSON_Delete(req);
    if (rc != 0) {
        dsctl_resp_free(&applied);
        rc = DSCTL_EXIT_FAIL;
        goto done_plan;
    }
    printf("Fleet %s %s\n", pname, applied.status == 201 ? "created"
                                                         : "updated");
    dsctl_resp_free(&applied);

    if (detach) {
        rc = DSCTL_EXIT_OK;
        goto done_plan;
    }

    fflush(stdout);
    rc = dsctl_fleet_follow(pname) < 0 ? DSCTL_EXIT_FAIL : DSCTL_EXIT_OK;

done_plan:
    dsctl_resp_free(&plan);
done_cfg:
    dsctl_config_free(&cfg);
    cJSON_Delete(keys);
    dsctl_spec_free(&sp);
    return rc;
}
