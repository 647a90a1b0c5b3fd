/*
 * dstackctl stop NAME [-x] [-y]
 *
 * A graceful stop drains the replicas (in-flight requests finish, within
 * the run's stop_duration) before they are terminated; -x aborts at once.
 * Waits until the run is over; Ctrl-C stops waiting, not stopping.
 */

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "ds_state.h"
#include "dstackctl.h"


#define DSCTL_STOP_USAGE  "dstackctl stop NAME [-x] [-y]"


static void
dsctl_stop_help(void)
{
    printf("usage: %s\n\n", DSCTL_STOP_USAGE);
    printf(
        "Stop a run: its replicas drain (in-flight requests finish, up to "
        "the\nrun's stop_duration), then terminate and release their "
        "resources.\n\n"
        "  -x, --abort   terminate the replicas at once, without draining\n"
        "  -y, --yes     do not ask for confirmation\n"
        "      --project P the project (else DSTACK_PROJECT, else\n"
        "                  \"project:\" in the config file, else main)\n"
        "  -h, --help    this help\n");
}


static int
dsctl_stop_over(const char *st)
{
    return strcmp(st, "terminated") == 0 || strcmp(st, "failed") == 0
           || strcmp(st, "done") == 0 || strcmp(st, "aborted") == 0;
}


const char  dsctl_stop_short[] = ":xyh";

const struct option  dsctl_stop_opts[] = {
    { "abort", no_argument, NULL, 'x' },
    { "yes", no_argument, NULL, 'y' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


int
cmd_stop(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_resp_t     resp;
    dsctl_str_t      path = { 0 }, q = { 0 };
    const char      *name, *st, *last = NULL;
    char            *ename, *lastbuf = NULL;
    cJSON           *body;
    int              abort_ = 0, yes = 0, c, rc = DSCTL_EXIT_OK, tty;
    int              errors = 0;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_stop_short,
            dsctl_stop_opts, NULL)) != -1)
    {
        switch (c) {
        case 'x': abort_ = 1; break;
        case 'y': yes = 1; break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_stop_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_STOP_USAGE, c, argv);
        }
    }
    rc = dsctl_run_name_operand(argc, argv, "stop", DSCTL_STOP_USAGE, &name);
    if (rc != DSCTL_EXIT_OK) {
        return rc;
    }

    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }

    ename = dsctl_url_escape(name);
    dsctl_str_addf(&path, "/api/runs/%s", ename);
    free(ename);

    /* a run that is not there is an error before any question */
    if (dsctl_api_call("GET", path.s, NULL, 0, &resp) != 0) {
        rc = DSCTL_EXIT_FAIL;
        goto done;
    }
    st = dsctl_json_str(resp.json, "status");
    if (st != NULL && dsctl_stop_over(st)) {
        printf("Run %s is already %s\n", name, st);
        goto done;
    }
    dsctl_resp_free(&resp);

    if (!yes) {
        dsctl_str_addf(&q, "%s the run %s?", abort_ ? "Abort" : "Stop", name);
        c = dsctl_confirm(q.s);
        dsctl_str_free(&q);
        if (c < 0) {
            dsctl_error("not stopping \"%s\": no terminal to confirm on "
                "(use -y)", name);
            rc = DSCTL_EXIT_USAGE;
            goto done_nofree;
        }
        if (c == 0) {
            goto done_nofree;
        }
    }

    body = cJSON_CreateObject();
    cJSON_AddBoolToObject(body, "abort", abort_);
    dsctl_str_add(&path, "/stop", 5);
    rc = dsctl_api_call("POST", path.s, body, 0, &resp);
    cJSON_Delete(body);
    path.len -= 5;
    path.s[path.len] = '\0';
    if (rc != 0) {
        rc = DSCTL_EXIT_FAIL;
        goto done;
    }
    dsctl_resp_free(&resp);

    /* wait until it is over */
    tty = dsctl_isatty_out();
    dsctl_catch_interrupt();
    for ( ;; ) {
        if (dsctl_api_call("GET", path.s, NULL, DSCTL_API_QUIET, &resp)
            != 0)
        {
            if (resp.status == 404) {
                st = "terminated";      /* already forgotten */
            } else if (dsctl_interrupted) {
                st = NULL;
            } else if (dsctl_api_transient(&resp)
                       && ++errors < DSCTL_POLL_RETRIES)
            {
                dsctl_resp_free(&resp);
                dsctl_sleep_ms(500);
                continue;
            } else {
                dsctl_error("%s", resp.err_msg[0] ? resp.err_msg
                    : "cannot follow the run");
                rc = DSCTL_EXIT_FAIL;
                break;
            }
        } else {
            errors = 0;
            st = dsctl_json_str(resp.json, "status");
            if (st == NULL) {
                st = "unknown";
            }
        }
        if (dsctl_interrupted || st == NULL) {
            if (tty) {
                fputs("\r\033[K", stdout);
            }
            printf("Detached: the run %s goes on stopping\n", name);
            break;
        }
        if (tty) {
            printf("\r\033[K%s  %s", name, st);
            fflush(stdout);
        } else if (last == NULL || strcmp(last, st) != 0) {
            printf("%s  %s\n", name, st);
            fflush(stdout);
        }
        free(lastbuf);
        lastbuf = dsctl_xstrdup(st);
        last = lastbuf;
        if (dsctl_stop_over(st)) {
            if (tty) {
                printf("\r\033[KRun %s %s\n", name,
                    abort_ ? "aborted" : "stopped");
            } else {
                printf("Run %s %s\n", name, abort_ ? "aborted" : "stopped");
            }
            break;
        }
        dsctl_resp_free(&resp);
        dsctl_sleep_ms(250);
    }
    dsctl_release_interrupt();
    free(lastbuf);

done:
    dsctl_resp_free(&resp);
done_nofree:
    dsctl_str_free(&path);
    dsctl_config_free(&cfg);
    return rc;
}
