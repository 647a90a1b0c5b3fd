/*
 * dstackctl __ignore-check DIR [PATH...]      (hidden, for the tests)
 * dstackctl __pack DIR FILE                    (hidden, for the tests)
 *
 * Without PATHs: the paths "apply" would pack from DIR, one a line,
 * directories with a trailing "/".  With PATHs: for each, "ignored" or
 * "kept" as the root .gitignore rules alone decide (no parent check).
 * __pack writes the archive apply would upload to FILE and prints its
 * sha256 and the number of files.
 */

#include <errno.h>
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


int
cmd_pack(int argc, char **argv)
{
    dsctl_pack_t   pk;
    FILE          *f;

    if (argc != 3) {
        return dsctl_usage("dstackctl __pack DIR FILE", NULL);
    }
    if (dsctl_pack(argv[1], &pk) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    f = fopen(argv[2], "wb");
    if (f == NULL
        || (pk.len > 0 && fwrite(pk.data, 1, pk.len, f) != pk.len)
        || fclose(f) != 0)
    {
        dsctl_error("cannot write \"%s\": %s", argv[2], strerror(errno));
        dsctl_pack_free(&pk);
        return DSCTL_EXIT_FAIL;
    }
    printf("%s %zu\n", pk.hash, pk.files);
    dsctl_pack_free(&pk);
    return DSCTL_EXIT_OK;
}
