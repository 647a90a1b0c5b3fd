/*
 * dstackctl audit [--limit N] [--json] [--project P]
 *
 * Who changed what, and when, through the API (controld/API.md, GET
 * /api/audit): applies, stops, tokens, secrets, fleets, projects,
 * members and users, refusals included, newest first.  A global admin
 * sees every project's, a project admin their project's.  A project
 * selected (--project, DSTACK_PROJECT, "project:") narrows the list to
 * it; without one, all the caller may see.
 */

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dstackctl.h"


#define DSCTL_AUDIT_USAGE \
    "dstackctl audit [--limit N] [--json] [--project P]"

#define DSCTL_AUDIT_DEFAULT     50
#define DSCTL_AUDIT_MAX         10000   /* what controld keeps */


static void
dsctl_audit_help(void)
{
    printf("usage: %s\n\n", DSCTL_AUDIT_USAGE);
    printf(
        "The changes made through the API, newest first: who, when, in "
        "which\nproject, what, and how the server answered (refusals "
        "too).\n\n"
        "  -n, --limit N   the last N events (default %d, at most %d)\n"
        "      --json      the API's events as JSON\n"
        "      --project P only this project's events (also "
        "DSTACK_PROJECT or\n"
        "                  \"project:\" in the config file); else all "
        "you may see\n"
        "  -h, --help      this help\n", DSCTL_AUDIT_DEFAULT,
        DSCTL_AUDIT_MAX);
}


const char  dsctl_audit_short[] = ":n:h";

const struct option  dsctl_audit_opts[] = {
    { "limit", required_argument, NULL, 'n' },
    { "json", no_argument, NULL, 'j' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


static void
dsctl_audit_time(char *buf, size_t n, double t)
{
    time_t      tt = (time_t) t;
    struct tm   tm;

    if (t <= 0 || localtime_r(&tt, &tm) == NULL) {
        snprintf(buf, n, "-");
        return;
    }
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
}


static void
dsctl_audit_table(const cJSON *events)
{
    static const char *const  hdr[] = {
        "TIME", "USER", "PROJECT", "ACTION", "OBJECT", "STATUS"
    };
    dsctl_table_t  *t;
    const cJSON    *ev;
    const char     *user, *project, *action, *object;
    char            when[32], status[16];

    t = dsctl_table_new(6, hdr);
    cJSON_ArrayForEach(ev, events) {
        dsctl_audit_time(when, sizeof(when), dsctl_json_num(ev, "time", 0));
        snprintf(status, sizeof(status), "%.0f",
            dsctl_json_num(ev, "status", 0));
        user = dsctl_json_str(ev, "user");
        project = dsctl_json_str(ev, "project");
        action = dsctl_json_str(ev, "action");
        object = dsctl_json_str(ev, "object");
        dsctl_table_addv(t, when,
            user != NULL && user[0] != '\0' ? user : "-",
            project != NULL && project[0] != '\0' ? project : "-",
            action != NULL ? action : "-",
            object != NULL && object[0] != '\0' ? object : "-", status);
    }
    dsctl_table_print(t, stdout);
    dsctl_table_free(t);
}


int
cmd_audit(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    dsctl_str_t      path = { 0 };
    const cJSON     *events;
    char            *end, *text;
    long             limit = DSCTL_AUDIT_DEFAULT;
    int              json = 0, c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_audit_short,
            dsctl_audit_opts, NULL)) != -1)
    {
        switch (c) {
        case 'n':
            errno = 0;
            limit = strtol(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || limit < 1
                || limit > DSCTL_AUDIT_MAX)
            {
                return dsctl_usage(DSCTL_AUDIT_USAGE, "--limit: cannot "
                    "read \"%s\": expected a number from 1 to %d", optarg,
                    DSCTL_AUDIT_MAX);
            }
            break;
        case 'j': json = 1; break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_audit_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_AUDIT_USAGE, c, argv);
        }
    }
    if (optind < argc) {
        return dsctl_usage(DSCTL_AUDIT_USAGE, "unexpected argument \"%s\"",
            argv[optind]);
    }
    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }

    /* not a project's call (project.c leaves it alone): a project named
     * by the user, main too, narrows it; the default does not */
    dsctl_str_addf(&path, "/api/audit?limit=%ld", limit);
    if (cfg.project_from != NULL) {
        dsctl_str_addf(&path, "&project=");
        dsctl_pct_encode(&path, cfg.project);
    }
    rc = dsctl_api_call("GET", path.s, NULL, 0, &resp);
    if (rc == 0) {
        events = cJSON_GetObjectItemCaseSensitive(resp.json, "events");
        if (json) {
            text = cJSON_Print(events != NULL ? events : resp.json);
            if (text != NULL) {
                printf("%s\n", text);
                free(text);
            }
        } else {
            dsctl_audit_table(events);
        }
    }
    dsctl_str_free(&path);
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}
