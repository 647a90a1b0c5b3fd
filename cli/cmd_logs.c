/*
 * dstackctl logs NAME [-f] [--replica N]
 *
 * The replica's stdout and stderr as captured by the backend, streamed
 * as they arrive; with -f the stream stays open until the replica ends
 * or Ctrl-C.
 */

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "ds_state.h"
#include "dstackctl.h"


#define DSCTL_LOGS_USAGE  "dstackctl logs NAME [-f] [--replica N]"


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
        "  -h, --help         this help\n");
}


int
cmd_logs(int argc, char **argv)
{
    static const struct option  opts[] = {
        { "follow", no_argument, NULL, 'f' },
        { "replica", required_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    dsctl_config_t   cfg;
    dsctl_str_t      path = { 0 };
    const char      *name;
    char            *ename, *end;
    long             replica = 0;
    int              follow = 0, c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":fh", opts, NULL)) != -1) {
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
        case 'h': dsctl_logs_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_LOGS_USAGE, c, argv);
        }
    }
    rc = dsctl_run_name_operand(argc, argv, "logs", DSCTL_LOGS_USAGE, &name);
    if (rc != DSCTL_EXIT_OK) {
        return rc;
    }

    if (dsctl_config_load(&cfg) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    if (dsctl_api_init(&cfg) != 0) {
        dsctl_config_free(&cfg);
        return DSCTL_EXIT_FAIL;
    }

    ename = dsctl_url_escape(name);
    dsctl_str_addf(&path, "/api/runs/%s/logs?replica=%ld%s", ename, replica,
        follow ? "&follow=1" : "");
    free(ename);

    dsctl_catch_interrupt();
    rc = dsctl_api_stream(path.s, stdout);
    dsctl_release_interrupt();

    dsctl_str_free(&path);
    dsctl_config_free(&cfg);
    return rc == 0 ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
}
