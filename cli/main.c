/*
 * dstackctl: the command table and the dispatch (as git.c does it).
 *
 *   dstackctl [--help | --version] COMMAND [ARGS]
 *
 * Each command parses its own options, prints its own --help and returns
 * the exit code: 0 ok, 1 failure, 2 usage error.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "dstackctl.h"


static const dsctl_cmd_t  dsctl_commands[] = {
    { "apply", cmd_apply, 0,
      "plan, submit or update a run from a .dstack.yml and follow it" },
    { "run", cmd_run, 0,
      "the same as apply, with the working directory first (run . -f F)" },
    { "ps", cmd_ps, 0, "list runs and their replicas" },
    { "stop", cmd_stop, 0, "stop a run (or abort it with -x)" },
    { "logs", cmd_logs, 0, "print or follow the logs of a run's replica" },
    { "offer", cmd_offer, 0, "list the offers for a .dstack.yml" },
    { "token", cmd_token, 0, "create, list, update and revoke tokens" },
    { "secret", cmd_secret, 0, "set, get, list and delete secrets" },
    { "fleet", cmd_fleet, 0, "list and delete SSH fleets (apply creates them)" },
    { "project", cmd_project, 0,
      "list, create and delete projects; members; the default" },
    { "user", cmd_user, 0, "create, list and delete users; their tokens" },
    { "audit", cmd_audit, 0, "who changed what through the API, and when" },
    { "completion", cmd_completion, 0,
      "print a bash or zsh completion script" },
    { "__ignore-check", cmd_ignore_check,
      DSCTL_CMD_HIDDEN,
      "list the files apply would pack from DIR" },
    { "__pack", cmd_pack, DSCTL_CMD_HIDDEN,
      "write the code archive apply would upload" },
};

#define DSCTL_NCOMMANDS  (sizeof(dsctl_commands) / sizeof(dsctl_commands[0]))


const dsctl_cmd_t *
dsctl_command_table(size_t *n)
{
    *n = DSCTL_NCOMMANDS;
    return dsctl_commands;
}


static void
dsctl_help(FILE *out)
{
    size_t  i;

    fprintf(out,
        "usage: dstackctl [--help | --version] COMMAND [ARGS]\n"
        "\n"
        "Self-hosted dstack services: deploy a .dstack.yml as an\n"
        "authenticated, autoscaled HTTPS endpoint, on this server or on\n"
        "the hosts of SSH fleets (type: fleet, with apply).\n"
        "\n"
        "Commands:\n");
    for (i = 0; i < DSCTL_NCOMMANDS; i++) {
        if (dsctl_commands[i].flags & DSCTL_CMD_HIDDEN) {
            continue;
        }
        fprintf(out, "   %-10s  %s\n", dsctl_commands[i].name,
            dsctl_commands[i].summary);
    }
    fprintf(out,
        "\n"
        "The server and token come from DSTACK_SERVER and DSTACK_TOKEN, or\n"
        "from DSTACK_CONFIG or ~/.dstack/config.yml (\"server:\", \"token:\").\n"
        "An https:// server whose certificate comes from a private CA (such\n"
        "as controld's own) needs that CA: DSTACK_CA or \"ca:\" (a PEM file).\n"
        "The project: --project NAME, else DSTACK_PROJECT, else \"project:\"\n"
        "(dstackctl project set-default), else main.\n"
        "\"dstackctl COMMAND --help\" tells more about a command.\n");
}


static const dsctl_cmd_t *
dsctl_find(const char *name)
{
    size_t  i;

    for (i = 0; i < DSCTL_NCOMMANDS; i++) {
        if (strcmp(dsctl_commands[i].name, name) == 0) {
            return &dsctl_commands[i];
        }
    }
    return NULL;
}


int
main(int argc, char **argv)
{
    const dsctl_cmd_t  *cmd;
    const char         *name;
    int                 rc;

    if (argc < 2) {
        dsctl_help(stderr);
        return DSCTL_EXIT_USAGE;
    }
    name = argv[1];

    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        dsctl_help(stdout);
        return DSCTL_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("dstackctl %s\n", DSCTL_VERSION);
        return DSCTL_EXIT_OK;
    }
    if (strcmp(name, "help") == 0) {
        if (argc < 3) {
            dsctl_help(stdout);
            return DSCTL_EXIT_OK;
        }
        cmd = dsctl_find(argv[2]);
        if (cmd == NULL) {
            dsctl_error("\"%s\" is not a dstackctl command "
                "(see dstackctl --help)", argv[2]);
            return DSCTL_EXIT_USAGE;
        }
        {
            char  *hargv[] = { argv[2], "--help", NULL };
            return cmd->fn(2, hargv);
        }
    }
    if (name[0] == '-') {
        dsctl_error("unknown option \"%s\"", name);
        dsctl_help(stderr);
        return DSCTL_EXIT_USAGE;
    }

    cmd = dsctl_find(name);
    if (cmd == NULL) {
        dsctl_error("\"%s\" is not a dstackctl command (see dstackctl --help)",
            name);
        return DSCTL_EXIT_USAGE;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        dsctl_error("cannot initialize libcurl");
        return DSCTL_EXIT_FAIL;
    }
    rc = cmd->fn(argc - 1, argv + 1);
    dsctl_api_cleanup();
    curl_global_cleanup();
    fflush(stdout);
    if (ferror(stdout)) {
        return DSCTL_EXIT_FAIL;
    }
    return rc;
}
