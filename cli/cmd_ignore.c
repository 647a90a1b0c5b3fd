/*
 * dstackctl __ignore-check DIR [PATH...]      (hidden, for the tests)
 *
 * Without PATHs: the paths "apply" would pack from DIR, one a line,
 * directories with a trailing "/".  With PATHs: for each, "ignored" or
 * "kept" as the root .gitignore rules alone decide (no parent check).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstackctl.h"


#define DSCTL_IGNORE_USAGE  "dstackctl __ignore-check DIR [PATH[/]...]"


static int
dsctl_print_path(void *arg, const char *path, int is_dir)
{
    (void) arg;
    printf("%s%s\n", path, is_dir ? "/" : "");
    return 0;
}


int
cmd_ignore_check(int argc, char **argv)
{
    dsctl_ignore_t  *ig;
    dsctl_str_t      f = { 0 };
    char            *text, *p;
    size_t           len, n;
    int              i, is_dir;

    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        return dsctl_usage(DSCTL_IGNORE_USAGE, NULL);
    }
    if (argc == 2) {
        return dsctl_walk(argv[1], dsctl_print_path, NULL) == 0
               ? DSCTL_EXIT_OK : DSCTL_EXIT_FAIL;
    }

    ig = dsctl_ignore_new();
    dsctl_str_addf(&f, "%s/.gitignore", argv[1]);
    text = dsctl_read_file(f.s, &len);
    if (text != NULL) {
        dsctl_ignore_add(ig, "", text, len);
        free(text);
    }
    dsctl_str_free(&f);
    for (i = 2; i < argc; i++) {
        p = dsctl_xstrdup(argv[i]);
        n = strlen(p);
        is_dir = n > 1 && p[n - 1] == '/';
        if (is_dir) {
            p[n - 1] = '\0';
        }
        printf("%s %s\n", dsctl_ignore_match(ig, p, is_dir) ? "ignored"
            : "kept", argv[i]);
        free(p);
    }
    dsctl_ignore_free(ig);
    return DSCTL_EXIT_OK;
}
