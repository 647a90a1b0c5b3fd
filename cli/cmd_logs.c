/*
 * dstackctl logs NAME [-f] [--replica N] [--since WHEN]
 *
 * The replica's stdout and stderr as captured by the backend, streamed
 * as they arrive; with -f the stream stays open until the replica ends
 * or Ctrl-C.  --since (dstack's: "10m", "1h", an RFC 3339 time) skips
 * what was written before, to the second as controld's index knows it.
 */

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ds_state.h"
#include "dstackctl.h"


#define DSCTL_LOGS_USAGE \
    "dstackctl logs NAME [-f] [--replica N] [--since WHEN]"


static void
dsctl_logs_help(void)
{
    printf("usage: %s\n\n", DSCTL_LOGS_USAGE);
    printf(
        "Print the output of a run's replica (its commands' stdout and "
        "stderr).\n\n"
        "  -f, --follow       keep printing new output until the replica "
        "ends\n"
        "                     or Ctrl-C\n"
        "      --replica N    which replica (default 0)\n"
        "      --since WHEN   only what was written since WHEN: a duration "
        "back\n"
        "                     from now (30s, 10m, 1h, 2d) or a time "
        "(2024-05-01,\n"
        "                     2024-05-01T10:30:00Z; without a zone, "
        "local)\n"
        "      --project P    the project (else DSTACK_PROJECT, else\n"
        "                     \"project:\" in the config file, else main)\n"
        "  -h, --help         this help\n");
}


const char  dsctl_logs_short[] = ":fh";

const struct option  dsctl_logs_opts[] = {
    { "follow", no_argument, NULL, 'f' },
    { "replica", required_argument, NULL, 'r' },
    { "since", required_argument, NULL, 's' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


int
cmd_logs(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_str_t      path = { 0 };
    const char      *name;
    char            *ename, *end;
    long             replica = 0;
    long long        since = 0;
    int              follow = 0, c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_logs_short,
            dsctl_logs_opts, NULL)) != -1)
    {
        switch (c) {
        case 'f': follow = 1; break;
        case 'r':
            errno = 0;
            replica = strtol(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || replica < 0
                || replica > 65535)
            {
                return dsctl_usage(DSCTL_LOGS_USAGE, "invalid replica "
                    "number \"%s\"", optarg);
            }
            break;
        case 's':
            since = dsctl_parse_since(optarg, (long long) time(NULL));
            if (since < 0) {
                return dsctl_usage(DSCTL_LOGS_USAGE, "--since: cannot read "
                    "\"%s\": expected a duration (30s, 10m, 1h, 2d) or an "
                    "RFC 3339 time (2024-05-01T10:30:00Z)", optarg);
            }
            break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_logs_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_LOGS_USAGE, c, argv);
        }
    }
    rc = dsctl_run_name_operand(argc, argv, "logs", DSCTL_LOGS_USAGE, &name);
    if (rc != DSCTL_EXIT_OK) {
        return rc;
    }

    if (dsctl_client_open(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }

    ename = dsctl_url_escape(name);
    dsctl_str_addf(&path, "/api/runs/%s/logs?replica=%ld%s", ename, replica,
        follow ? "&follow=1" : "");
    if (since > 0) {
        dsctl_str_addf(&path, "&since=%lld", since);
    }
    free(ename);

    dsctl_catch_interrupt();
    rc = dsctl_api_stream(path.s, stdout);
    dsctl_release_interrupt();

    dsctl_str_free(&path);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}
