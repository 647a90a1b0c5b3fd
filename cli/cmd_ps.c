/*
 * dstackctl ps [-a] [-v] [-w] [-n N] [--json | --format json|plain]
 *
 * One row per run; a run with several replicas gets a row per replica
 * under it.  -v adds, under the table, the autoscaler's view of each run
 * that scales: replicas desired against current, and why.  --json (or
 * dstack's --format json) prints the API's runs array (stable for
 * scripts) with dstack's names added; -n N keeps the last N submitted
 * (finished ones too, as in dstack); -w redraws every second on a
 * terminal until Ctrl-C.
 */

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dstackctl.h"


#define DSCTL_PS_USAGE \
    "dstackctl ps [-a] [-v] [-w] [-n N] [--json | --format json|plain]"


static void
dsctl_ps_help(void)
{
    printf("usage: %s\n\n", DSCTL_PS_USAGE);
    printf(
        "List the runs that are not finished, with their replicas.\n\n"
        "  -a, --all     finished runs too\n"
        "  -v, --verbose replicas desired vs current, and why (autoscaling);\n"
        "                in shared mode, who leads and each instance's lag\n"
        "  -w, --watch   redraw every second (on a terminal) until Ctrl-C\n"
        "  -n, --last N  only the last N runs submitted (finished too)\n"
        "      --json    the runs as JSON, as the API gives them, with "
        "dstack's\n"
        "                names too (run_name, status_message, service, "
        "...)\n"
        "      --format F  json (the same as --json) or plain (the table)\n"
        "      --project P the project (else DSTACK_PROJECT, else\n"
        "                  \"project:\" in the config file, else main)\n"
        "  -h, --help    this help\n");
}


static void
dsctl_ps_status(const cJSON *o, char *buf, size_t n)
{
    const char  *st = dsctl_json_str(o, "status");
    const char  *msg = dsctl_json_str(o, "message");
    const char  *tls;

    /* an ACME failure: the certificate's cause, whatever the status */
    tls = dsctl_json_str(cJSON_GetObjectItemCaseSensitive(o, "tls"),
                         "error");

    if (st == NULL) {
        st = "-";
    }
    if (msg != NULL && msg[0] != '\0'
        && (strcmp(st, "pending") == 0 || strcmp(st, "failed") == 0))
    {
        snprintf(buf, n, "%s (%s)", st, msg);
    } else if (tls != NULL) {
        snprintf(buf, n, "%s (certificate: %s)", st, tls);
    } else {
        snprintf(buf, n, "%s", st);
    }
}


/*
 * Shared mode, above the table: who leads, and every other instance with
 * how far it is behind ("gateway gw-2  rev 41 (2 behind, 0.3 s)").
 * Embedded mode, or a server without /api/cluster: nothing.
 */
static void
dsctl_ps_cluster(dsctl_str_t *out)
{
    dsctl_resp_t   resp;
    const cJSON   *leader, *list, *it;
    const char    *mode, *lname, *name, *role;
    double         behind;

    if (dsctl_api_call("GET", "/api/cluster", NULL, DSCTL_API_QUIET, &resp)
        != 0)
    {
        if (resp.status == 503) {
            dsctl_str_addf(out, "cluster: %s\n", resp.err_msg[0]
                ? resp.err_msg : "the state database cannot be reached");
        }
        dsctl_resp_free(&resp);
        return;
    }
    mode = dsctl_json_str(resp.json, "mode");
    if (mode == NULL || strcmp(mode, "shared") != 0) {
        dsctl_resp_free(&resp);
        return;
    }
    leader = cJSON_GetObjectItemCaseSensitive(resp.json, "leader");
    lname = dsctl_json_str(leader, "instance");
    dsctl_str_addf(out, "leader     %s  term %.0f, rev %.0f\n",
        lname ? lname : "-", dsctl_json_num(leader, "term", 0),
        dsctl_json_num(resp.json, "rev", 0));
    list = cJSON_GetObjectItemCaseSensitive(resp.json, "instances");
    cJSON_ArrayForEach(it, list) {
        name = dsctl_json_str(it, "instance");
        role = dsctl_json_str(it, "role");
        if (name == NULL || (lname != NULL && strcmp(name, lname) == 0)) {
            continue;
        }
        behind = dsctl_json_num(it, "behind", 0);
        dsctl_str_addf(out, "%-10s %s  rev %.0f (", role != NULL
            && strcmp(role, "gateway") == 0 ? "gateway" : "standby", name,
            dsctl_json_num(it, "rev", 0));
        if (behind > 0) {
            dsctl_str_addf(out, "%.0f behind, %.1f s", behind,
                dsctl_json_num(it, "lag_s", 0));
        } else {
            dsctl_str_addf(out, "up to date");
        }
        dsctl_str_addf(out, ", seen %.1f s ago)\n",
            dsctl_json_num(it, "seen_s", 0));
    }
    dsctl_str_addf(out, "\n");
    dsctl_resp_free(&resp);
}


/* "NAME  rps: 3 desired, 2 current (1 ready): rps 12.30 over 30s / ..." */
static void
dsctl_ps_scaling(const cJSON *runs, dsctl_str_t *out)
{
    const cJSON  *run, *sc;
    const char   *reason, *metric;
    int           first = 1;

    cJSON_ArrayForEach(run, runs) {
        sc = cJSON_GetObjectItemCaseSensitive(run, "scaling");
        if (!cJSON_IsObject(sc)) {
            continue;
        }
        metric = dsctl_json_str(sc, "metric");
        reason = dsctl_json_str(sc, "reason");
        dsctl_str_addf(out, "%s %s  %s: %.0f desired, %.0f current "
            "(%.0f ready)%s%s\n", first ? "\n" : "",
            dsctl_json_str(run, "name"), metric ? metric : "-",
            dsctl_json_num(sc, "desired", 0),
            dsctl_json_num(sc, "current", 0),
            dsctl_json_num(sc, "ready", 0),
            reason && reason[0] ? ": " : "", reason ? reason : "");
        first = 0;
    }
}


static void
dsctl_ps_render(const cJSON *runs, dsctl_str_t *out)
{
    static const char *const  hdr[] = {
        "NAME", "BACKEND", "GPU", "PRICE", "STATUS", "SUBMITTED"
    };
    dsctl_table_t  *t;
    const cJSON    *run, *reps, *r;
    const char     *gpu, *backend;
    char            status[160], ago[32], price[32], num[32];
    double          now = (double) time(NULL);
    int             n;

    t = dsctl_table_new(6, hdr);
    cJSON_ArrayForEach(run, runs) {
        reps = cJSON_GetObjectItemCaseSensitive(run, "replicas");
        n = cJSON_GetArraySize(reps);
        dsctl_ps_status(run, status, sizeof(status));
        dsctl_fmt_ago(ago, sizeof(ago),
            dsctl_json_num(run, "submitted_at", 0), now);

        if (n <= 1) {
            r = cJSON_GetArrayItem(reps, 0);
            backend = dsctl_json_str(r, "backend");
            gpu = dsctl_json_str(r, "gpu");
            if (r != NULL) {
                dsctl_fmt_price(price, sizeof(price),
                    dsctl_json_num(r, "price", 0));
            }
            dsctl_table_addv(t, dsctl_json_str(run, "name"),
                backend != NULL ? backend : "-",
                gpu != NULL && gpu[0] != '\0' ? gpu : "-",
                r != NULL ? price : "-", status, ago);
            continue;
        }

        dsctl_table_addv(t, dsctl_json_str(run, "name"), "", "", "",
            status, ago);
        cJSON_ArrayForEach(r, reps) {
            snprintf(num, sizeof(num), "  replica=%.0f",
                dsctl_json_num(r, "num", 0));
            gpu = dsctl_json_str(r, "gpu");
            backend = dsctl_json_str(r, "backend");
            dsctl_fmt_price(price, sizeof(price),
                dsctl_json_num(r, "price", 0));
            dsctl_ps_status(r, status, sizeof(status));
            dsctl_fmt_ago(ago, sizeof(ago),
                dsctl_json_num(r, "started_at", 0), now);
            dsctl_table_addv(t, num, backend != NULL ? backend : "-",
                gpu != NULL && gpu[0] != '\0' ? gpu : "-", price, status,
                ago);
        }
    }
    dsctl_table_render(t, out);
    dsctl_table_free(t);
}


/* dstack's names for what the runs array already says (its Run) */
static void
dsctl_ps_dstack_names(cJSON *runs, const char *project)
{
    cJSON        *run, *svc, *m;
    const char   *v;

    cJSON_ArrayForEach(run, runs) {
        v = dsctl_json_str(run, "name");
        cJSON_AddStringToObject(run, "run_name", v != NULL ? v : "");
        /* the API's "project" when it says it */
        v = dsctl_json_str(run, "project");
        cJSON_AddStringToObject(run, "project_name",
            v != NULL && v[0] != '\0' ? v : project);
        v = dsctl_json_str(run, "status");
        cJSON_AddStringToObject(run, "status_message", v != NULL ? v : "");
        v = dsctl_json_str(run, "message");
        if (v != NULL && v[0] != '\0') {
            cJSON_AddStringToObject(run, "error", v);
        } else {
            cJSON_AddNullToObject(run, "error");
        }
        svc = cJSON_AddObjectToObject(run, "service");
        v = dsctl_json_str(run, "url");
        if (v != NULL) {
            cJSON_AddStringToObject(svc, "url", v);
        } else {
            cJSON_AddNullToObject(svc, "url");
        }
        m = cJSON_GetObjectItemCaseSensitive(run, "model");
        cJSON_AddItemToObject(svc, "model", m != NULL
            ? cJSON_Duplicate(m, 1) : cJSON_CreateNull());
    }
}


/* keeps the n runs submitted last, in the order the server gave them */
static void
dsctl_ps_last(cJSON *runs, long n)
{
    cJSON         *run, *next;
    const cJSON   *o;
    double         t;
    long           newer;
    int            after;

    /* quadratic, but over the runs of one server */
    for (run = runs->child; run != NULL; run = next) {
        next = run->next;
        t = dsctl_json_num(run, "submitted_at", 0);
        newer = 0;
        after = 0;
        /* submitted in the same second: the later in the list is newer */
        cJSON_ArrayForEach(o, runs) {
            if (o == run) {
                after = 1;
            } else if (dsctl_json_num(o, "submitted_at", 0) > t
                       || (after && dsctl_json_num(o, "submitted_at", 0)
                                    == t))
            {
                newer++;
            }
        }
        if (newer >= n) {
            cJSON_Delete(cJSON_DetachItemViaPointer(runs, run));
        }
    }
}


const char  dsctl_ps_short[] = ":avwn:h";

const struct option  dsctl_ps_opts[] = {
    { "all", no_argument, NULL, 'a' },
    { "verbose", no_argument, NULL, 'v' },
    { "watch", no_argument, NULL, 'w' },
    { "json", no_argument, NULL, 'j' },
    { "last", required_argument, NULL, 'n' },
    { "format", required_argument, NULL, 'F' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


int
cmd_ps(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    dsctl_str_t      out = { 0 };
    cJSON           *runs;
    char            *text, *end;
    long             last = 0;
    int              all = 0, watch = 0, json = 0, verbose = 0, c;
    int              rc = DSCTL_EXIT_OK;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_ps_short,
            dsctl_ps_opts, NULL)) != -1)
    {
        switch (c) {
        case 'a': all = 1; break;
        case 'v': verbose = 1; break;
        case 'w': watch = 1; break;
        case 'j': json = 1; break;
        case 'n':
            errno = 0;
            last = strtol(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || last < 1
                || last > 100000)
            {
                return dsctl_usage(DSCTL_PS_USAGE, "-n: cannot read \"%s\": "
                    "expected a number of runs from 1", optarg);
            }
            break;
        case 'F':
            if (strcmp(optarg, "json") == 0) {
                json = 1;
            } else if (strcmp(optarg, "plain") != 0
                       && strcmp(optarg, "table") != 0)
            {
                return dsctl_usage(DSCTL_PS_USAGE, "--format: unknown "
                    "format \"%s\" (json or plain)", optarg);
            }
            break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_ps_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_PS_USAGE, c, argv);
        }
    }
    if (optind < argc) {
        return dsctl_usage(DSCTL_PS_USAGE, "unexpected argument \"%s\"",
            argv[optind]);
    }
    if (watch && json) {
        return dsctl_usage(DSCTL_PS_USAGE, "-w and --json do not go "
            "together");
    }
    /* dstack: -n implies --all, the last runs whatever their state */
    if (last > 0) {
        all = 1;
    }
    /* watching is for eyes: without a terminal, one table */
    if (!dsctl_isatty_out()) {
        watch = 0;
    }

    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }

    if (watch) {
        dsctl_catch_interrupt();
    }
    do {
        if (dsctl_api_call("GET", all ? "/api/runs?all=1" : "/api/runs",
                NULL, 0, &resp) != 0)
        {
            rc = dsctl_interrupted ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
            dsctl_resp_free(&resp);
            break;
        }
        runs = cJSON_GetObjectItemCaseSensitive(resp.json, "runs");
        if (!cJSON_IsArray(runs)) {
            dsctl_error("the server's answer to GET /api/runs has no "
                "\"runs\" array");
            dsctl_resp_free(&resp);
            rc = DSCTL_EXIT_FAIL;
            break;
        }
        if (last > 0) {
            dsctl_ps_last(runs, last);
        }
        if (json) {
            dsctl_ps_dstack_names(runs, cfg.project);
            text = cJSON_Print(runs);
            printf("%s\n", text);
            free(text);
        } else {
            out.len = 0;
            /* main says nothing, as before projects (and as dstack's ps,
             * whose project is the config's); another is named */
            if (!dsctl_project_is_default(cfg.project)) {
                dsctl_str_addf(&out, " Project: %s\n", cfg.project);
            }
            if (verbose) {
                dsctl_ps_cluster(&out);
            }
            dsctl_ps_render(runs, &out);
            if (verbose) {
                dsctl_ps_scaling(runs, &out);
            }
            if (watch) {
                printf("\033[H\033[2J%s", out.s);
            } else {
                fputs(out.s, stdout);
            }
            fflush(stdout);
        }
        dsctl_resp_free(&resp);
        if (watch && out.len > 0 && !dsctl_interrupted) {
            dsctl_sleep_ms(1000);
        }
    } while (watch && !dsctl_interrupted);

    if (watch) {
        dsctl_release_interrupt();
    }
    dsctl_str_free(&out);
    dsctl_config_free(&cfg);
    return rc;
}
