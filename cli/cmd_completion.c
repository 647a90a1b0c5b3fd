/*
 * dstackctl completion bash|zsh
 *
 * Prints a completion script made from the command table main.c
 * dispatches from and the option tables the commands hand to
 * getopt_long: a command or option added there is completed without
 * anyone touching this file, so the script cannot drift from the CLI.
 * What is left here is what those tables do not say: the subcommands
 * of token, secret, fleet, project and user (and which options are each
 * one's), and which options take a file.
 *
 *   source <(dstackctl completion bash)        # ~/.bashrc
 *   dstackctl completion zsh > "${fpath[1]}/_dstackctl"
 */

#include <stdio.h>
#include <string.h>

#include "dstackctl.h"


#define DSCTL_COMPLETION_USAGE  "dstackctl completion bash|zsh"


/* a command's options: for token and fleet, per subcommand */
typedef struct {
    const char            *cmd;
    const char            *sub;         /* NULL: the command itself */
    const char            *shorts;      /* getopt's optstring */
    const struct option   *opts;
} dsctl_comp_opts_t;

static const dsctl_comp_opts_t  dsctl_comp_opts[] = {
    { "apply", NULL, dsctl_apply_short, dsctl_apply_opts },
    { "run", NULL, dsctl_apply_short, dsctl_apply_opts },
    { "ps", NULL, dsctl_ps_short, dsctl_ps_opts },
    { "stop", NULL, dsctl_stop_short, dsctl_stop_opts },
    { "logs", NULL, dsctl_logs_short, dsctl_logs_opts },
    { "offer", NULL, dsctl_offer_short, dsctl_offer_opts },
    { "token", "create", dsctl_token_create_short, dsctl_token_create_opts },
    { "token", "update", dsctl_token_update_short, dsctl_token_update_opts },
    { "token", "list", dsctl_token_list_short, dsctl_token_list_opts },
    { "token", "revoke", dsctl_token_revoke_short,
      dsctl_token_revoke_opts },
    { "secret", "set", dsctl_secret_short, dsctl_secret_opts },
    { "secret", "get", dsctl_secret_short, dsctl_secret_opts },
    { "secret", "list", dsctl_secret_short, dsctl_secret_opts },
    { "secret", "delete", dsctl_secret_delete_short,
      dsctl_secret_delete_opts },
    { "fleet", "list", dsctl_fleet_list_short, dsctl_fleet_list_opts },
    { "fleet", "delete", dsctl_fleet_delete_short,
      dsctl_fleet_delete_opts },
    { "project", "list", dsctl_project_list_short, dsctl_project_list_opts },
    { "project", "create", dsctl_project_plain_short,
      dsctl_project_plain_opts },
    { "project", "delete", dsctl_project_delete_short,
      dsctl_project_delete_opts },
    { "project", "add-member", dsctl_project_member_short,
      dsctl_project_member_opts },
    { "project", "remove-member", dsctl_project_plain_short,
      dsctl_project_plain_opts },
    { "project", "set-default", dsctl_project_plain_short,
      dsctl_project_plain_opts },
    { "user", "list", dsctl_user_list_short, dsctl_user_list_opts },
    { "user", "create", dsctl_user_create_short, dsctl_user_create_opts },
    { "user", "delete", dsctl_user_delete_short, dsctl_user_delete_opts },
    { "user", "token", dsctl_user_token_short, dsctl_user_token_opts },
    { "audit", NULL, dsctl_audit_short, dsctl_audit_opts },
};

#define DSCTL_NCOMP_OPTS  (sizeof(dsctl_comp_opts) / sizeof(dsctl_comp_opts[0]))

static void dsctl_zsh_opts(const dsctl_comp_opts_t *co, const char *ind);

/* options whose value is a file */
static const char *const  dsctl_comp_file_opts[] = { "file", NULL };


static void
dsctl_completion_help(void)
{
    printf("usage: %s\n\n", DSCTL_COMPLETION_USAGE);
    printf(
        "Print a shell completion script for dstackctl's commands, "
        "subcommands\nand options.\n\n"
        "  bash   source <(dstackctl completion bash)   (e.g. in "
        "~/.bashrc)\n"
        "  zsh    dstackctl completion zsh > \"${fpath[1]}/_dstackctl\", "
        "or\n"
        "         source <(dstackctl completion zsh) after compinit\n"
        "  -h, --help  this help\n");
}


/* the short option of o, if optstring gives it one: its letter, or 0 */
static int
dsctl_comp_short(const char *shorts, const struct option *o)
{
    const char  *p;

    if (o->val <= 0 || o->val > 127 || o->val == ':') {
        return 0;
    }
    p = strchr(shorts, o->val);
    return p != NULL ? o->val : 0;
}


/* "-f --file -y --yes ..." of one options table */
static void
dsctl_comp_words(const dsctl_comp_opts_t *co, dsctl_str_t *out)
{
    const struct option  *o;
    int                   s;

    for (o = co->opts; o->name != NULL; o++) {
        s = dsctl_comp_short(co->shorts, o);
        if (s != 0) {
            dsctl_str_addf(out, "%s-%c", out->len ? " " : "", s);
        }
        dsctl_str_addf(out, "%s--%s", out->len ? " " : "", o->name);
    }
}


/* "-f|--file|-n|--name|..." of the options that take a value, file or
 * not (file: 1 for those whose value is a file, 0 for the others) */
static void
dsctl_comp_valued(const dsctl_comp_opts_t *co, int file, dsctl_str_t *out)
{
    const struct option  *o;
    size_t                i;
    int                   s, is_file;

    for (o = co->opts; o->name != NULL; o++) {
        if (o->has_arg != required_argument) {
            continue;
        }
        is_file = 0;
        for (i = 0; dsctl_comp_file_opts[i] != NULL; i++) {
            if (strcmp(o->name, dsctl_comp_file_opts[i]) == 0) {
                is_file = 1;
            }
        }
        if (is_file != file) {
            continue;
        }
        s = dsctl_comp_short(co->shorts, o);
        if (s != 0) {
            dsctl_str_addf(out, "%s-%c", out->len ? "|" : "", s);
        }
        dsctl_str_addf(out, "%s--%s", out->len ? "|" : "", o->name);
    }
}


/* the visible commands, space-separated */
static void
dsctl_comp_commands(dsctl_str_t *out)
{
    const dsctl_cmd_t  *cmds;
    size_t              n, i;

    cmds = dsctl_command_table(&n);
    for (i = 0; i < n; i++) {
        if (!(cmds[i].flags & DSCTL_CMD_HIDDEN)) {
            dsctl_str_addf(out, "%s%s", out->len ? " " : "", cmds[i].name);
        }
    }
}


/* the subcommands of cmd, space-separated ("" when it has none) */
static void
dsctl_comp_subs(const char *cmd, dsctl_str_t *out)
{
    size_t  i;

    for (i = 0; i < DSCTL_NCOMP_OPTS; i++) {
        if (strcmp(dsctl_comp_opts[i].cmd, cmd) == 0
            && dsctl_comp_opts[i].sub != NULL)
        {
            dsctl_str_addf(out, "%s%s", out->len ? " " : "",
                dsctl_comp_opts[i].sub);
        }
    }
}


/* ---- bash ---------------------------------------------------------------- */

/* the case branch that completes one options table ($1: the indent) */
static void
dsctl_bash_opts(const dsctl_comp_opts_t *co, const char *ind)
{
    dsctl_str_t  w = { 0 }, files = { 0 }, vals = { 0 };

    dsctl_comp_words(co, &w);
    dsctl_comp_valued(co, 1, &files);
    dsctl_comp_valued(co, 0, &vals);
    printf("%scase \"$prev\" in\n", ind);
    if (files.len > 0) {
        printf("%s%s) COMPREPLY=( $(compgen -f -- \"$cur\") ); "
            "return 0 ;;\n", ind, files.s);
    }
    if (vals.len > 0) {
        printf("%s%s) return 0 ;;\n", ind, vals.s);
    }
    printf("%sesac\n", ind);
    printf("%sif [[ \"$cur\" == -* ]]; then\n", ind);
    printf("%s    COMPREPLY=( $(compgen -W \"%s\" -- \"$cur\") )\n", ind,
        w.s != NULL ? w.s : "--help");
    printf("%selse\n", ind);
    printf("%s    COMPREPLY=( $(compgen -f -- \"$cur\") )\n", ind);
    printf("%sfi\n", ind);
    dsctl_str_free(&w);
    dsctl_str_free(&files);
    dsctl_str_free(&vals);
}


/* how one shell says the per-command part of the script */
typedef struct {
    const char  *cmd_case;      /* a command's branch, "%s" its name */
    const char  *subs_head;     /* its subcommands ("%s") then a case on
                                   the subcommand word */
    const char  *sub_case;      /* a subcommand's branch */
    const char  *help_only;     /* a command without an option table */
    void       (*opts)(const dsctl_comp_opts_t *co, const char *ind);
} dsctl_comp_dialect_t;

static const dsctl_comp_dialect_t  dsctl_bash_dialect = {
    "    %s)\n",
    "        if [ \"$COMP_CWORD\" -eq 2 ]; then\n"
    "            COMPREPLY=( $(compgen -W \"%s --help\" -- \"$cur\") )\n"
    "            return 0\n"
    "        fi\n"
    "        case \"${COMP_WORDS[2]}\" in\n",
    "        %s)\n",
    "        COMPREPLY=( $(compgen -W \"--help\" -- \"$cur\") )\n",
    dsctl_bash_opts
};

static const dsctl_comp_dialect_t  dsctl_zsh_dialect = {
    "    (%s)\n",
    "        if (( CURRENT == 3 )); then\n"
    "            compadd -- %s --help\n"
    "            return\n"
    "        fi\n"
    "        case $words[3] in\n",
    "        (%s)\n",
    "        compadd -- --help\n",
    dsctl_zsh_opts
};


/* one branch per command: its subcommands' options, or its own */
static void
dsctl_comp_cases(const dsctl_comp_dialect_t *d, const dsctl_cmd_t *cmds,
    size_t n)
{
    dsctl_str_t  subs = { 0 };
    size_t       i, j;
    int          found;

    for (i = 0; i < n; i++) {
        if (cmds[i].flags & DSCTL_CMD_HIDDEN) {
            continue;
        }
        printf(d->cmd_case, cmds[i].name);
        subs.len = 0;
        dsctl_comp_subs(cmds[i].name, &subs);
        found = 0;
        for (j = 0; j < DSCTL_NCOMP_OPTS; j++) {
            if (strcmp(dsctl_comp_opts[j].cmd, cmds[i].name) != 0) {
                continue;
            }
            if (subs.len == 0) {
                d->opts(&dsctl_comp_opts[j], "        ");
                found = 1;
                break;
            }
            if (!found) {
                printf(d->subs_head, subs.s);
                found = 1;
            }
            printf(d->sub_case, dsctl_comp_opts[j].sub);
            d->opts(&dsctl_comp_opts[j], "            ");
            printf("            ;;\n");
        }
        if (subs.len > 0) {
            if (!found) {
                printf(d->subs_head, subs.s);
            }
            printf("        esac\n");
        } else if (!found) {
            printf("%s", d->help_only);
        }
        printf("        ;;\n");
    }
    dsctl_str_free(&subs);
}


static void
dsctl_bash(void)
{
    const dsctl_cmd_t  *cmds;
    dsctl_str_t         all = { 0 };
    size_t              n;

    cmds = dsctl_command_table(&n);
    dsctl_comp_commands(&all);
    printf(
        "# bash completion for dstackctl (dstackctl completion bash)\n"
        "_dstackctl()\n"
        "{\n"
        "    local cur prev\n"
        "    COMPREPLY=()\n"
        "    cur=\"${COMP_WORDS[COMP_CWORD]}\"\n"
        "    prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
        "    if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
        "        COMPREPLY=( $(compgen -W \"%s help --help --version\" "
        "-- \"$cur\") )\n"
        "        return 0\n"
        "    fi\n"
        "    case \"${COMP_WORDS[1]}\" in\n", all.s);
    printf("    help)\n"
        "        COMPREPLY=( $(compgen -W \"%s\" -- \"$cur\") )\n"
        "        ;;\n", all.s);

    dsctl_comp_cases(&dsctl_bash_dialect, cmds, n);
    printf("    esac\n"
        "    return 0\n"
        "}\n"
        "complete -o filenames -F _dstackctl dstackctl\n");
    dsctl_str_free(&all);
}


/* ---- zsh ----------------------------------------------------------------- */

/* text inside '...' for zsh: ' becomes '\'' and : is escaped */
static void
dsctl_zsh_quote(const char *s, int colon)
{
    for ( ; *s != '\0'; s++) {
        if (*s == '\'') {
            fputs("'\\''", stdout);
        } else if (*s == ':' && colon) {
            fputs("\\:", stdout);
        } else {
            putchar(*s);
        }
    }
}


static void
dsctl_zsh_opts(const dsctl_comp_opts_t *co, const char *ind)
{
    dsctl_str_t  w = { 0 }, files = { 0 }, vals = { 0 };

    dsctl_comp_words(co, &w);
    dsctl_comp_valued(co, 1, &files);
    dsctl_comp_valued(co, 0, &vals);
    printf("%scase $words[CURRENT-1] in\n", ind);
    if (files.len > 0) {
        printf("%s(%s) _files; return ;;\n", ind, files.s);
    }
    if (vals.len > 0) {
        printf("%s(%s) return ;;\n", ind, vals.s);
    }
    printf("%sesac\n", ind);
    printf("%sif [[ $PREFIX == -* ]]; then\n", ind);
    printf("%s    compadd -- %s\n", ind, w.s != NULL ? w.s : "--help");
    printf("%selse\n", ind);
    printf("%s    _files\n", ind);
    printf("%sfi\n", ind);
    dsctl_str_free(&w);
    dsctl_str_free(&files);
    dsctl_str_free(&vals);
}


static void
dsctl_zsh(void)
{
    const dsctl_cmd_t  *cmds;
    dsctl_str_t         all = { 0 };
    size_t              n, i;

    cmds = dsctl_command_table(&n);
    dsctl_comp_commands(&all);
    printf(
        "#compdef dstackctl\n"
        "# zsh completion for dstackctl (dstackctl completion zsh)\n"
        "_dstackctl() {\n"
        "    local -a cmds\n"
        "    if (( CURRENT == 2 )); then\n"
        "        cmds=(\n");
    for (i = 0; i < n; i++) {
        if (cmds[i].flags & DSCTL_CMD_HIDDEN) {
            continue;
        }
        printf("            '");
        dsctl_zsh_quote(cmds[i].name, 1);
        printf(":");
        dsctl_zsh_quote(cmds[i].summary, 0);
        printf("'\n");
    }
    printf(
        "        )\n"
        "        _describe 'command' cmds\n"
        "        return\n"
        "    fi\n"
        "    case $words[2] in\n"
        "    (help) compadd -- %s ;;\n", all.s);

    dsctl_comp_cases(&dsctl_zsh_dialect, cmds, n);
    printf(
        "    esac\n"
        "}\n"
        "# from $fpath (autoloaded) it completes; sourced, it registers\n"
        "if [[ $funcstack[1] == _dstackctl ]]; then\n"
        "    _dstackctl \"$@\"\n"
        "else\n"
        "    compdef _dstackctl dstackctl\n"
        "fi\n");
    dsctl_str_free(&all);
}


int
cmd_completion(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0
                      || strcmp(argv[1], "-h") == 0))
    {
        dsctl_completion_help();
        return DSCTL_EXIT_OK;
    }
    if (argc < 2) {
        return dsctl_usage(DSCTL_COMPLETION_USAGE, "completion needs the "
            "shell: bash or zsh");
    }
    if (argc > 2) {
        return dsctl_usage(DSCTL_COMPLETION_USAGE, "unexpected argument "
            "\"%s\"", argv[2]);
    }
    if (strcmp(argv[1], "bash") == 0) {
        dsctl_bash();
    } else if (strcmp(argv[1], "zsh") == 0) {
        dsctl_zsh();
    } else {
        return dsctl_usage(DSCTL_COMPLETION_USAGE, "unknown shell \"%s\" "
            "(bash or zsh)", argv[1]);
    }
    return DSCTL_EXIT_OK;
}
