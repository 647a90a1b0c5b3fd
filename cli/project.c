/*
 * Which project the API calls are about, as dstack's CLI chooses it:
 * --project NAME, else DSTACK_PROJECT, else "project:" in the client
 * config, else "main" (config.c puts them in that order).  The project
 * travels as "?project=NAME" on every call under /api/runs,
 * /api/tokens, /api/secrets and /api/fleets (controld/API.md, "Which
 * project"), and not at all for "main", so that a setup without
 * projects sends what it always sent.
 *
 * Also the rewrite of the client config by "project set-default".
 *
 * Pure: the unit tests compile this file without libcurl.
 */

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dstackctl.h"


/* --project of the command being run; argv outlives every call */
static const char  *dsctl_project_flag;

/* the calls that belong to a project */
static const char *const  dsctl_project_scoped[] = {
    "/api/runs", "/api/tokens", "/api/secrets", "/api/fleets"
};


void
dsctl_project_select(const char *name)
{
    dsctl_project_flag = name;
}


const char *
dsctl_project_selected(void)
{
    return dsctl_project_flag;
}


void
dsctl_pct_encode(dsctl_str_t *out, const char *s)
{
    static const char  hex[] = "0123456789ABCDEF";
    unsigned char      c;
    char               e[3];

    for ( ; *s != '\0'; s++) {
        c = (unsigned char) *s;
        /* RFC 3986's unreserved characters go as they are */
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
            || c == '~')
        {
            dsctl_str_add(out, s, 1);
            continue;
        }
        e[0] = '%';
        e[1] = hex[c >> 4];
        e[2] = hex[c & 0x0f];
        dsctl_str_add(out, e, 3);
    }
}


int
dsctl_project_is_default(const char *project)
{
    return project == NULL || project[0] == '\0'
           || strcmp(project, DS_PROJECT_MAIN) == 0;
}


void
dsctl_project_path(const char *path, const char *project, dsctl_str_t *out)
{
    size_t  i, n;
    int     scoped = 0;

    dsctl_str_add(out, path, strlen(path));
    if (dsctl_project_is_default(project)) {
        return;
    }
    for (i = 0; i < sizeof(dsctl_project_scoped) / sizeof(char *); i++) {
        n = strlen(dsctl_project_scoped[i]);
        if (strncmp(path, dsctl_project_scoped[i], n) == 0
            && (path[n] == '\0' || path[n] == '/' || path[n] == '?'))
        {
            scoped = 1;
            break;
        }
    }
    if (!scoped) {
        return;
    }
    dsctl_str_addf(out, "%cproject=", strchr(path, '?') != NULL ? '&' : '?');
    dsctl_pct_encode(out, project);
}


/* ---- project set-default ------------------------------------------------ */

int
dsctl_project_name_plain(const char *name)
{
    const char  *p;

    if (name[0] == '\0' || strlen(name) > DS_NAME_MAX) {
        return 0;
    }
    for (p = name; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'
              || *p == '.'))
        {
            return 0;
        }
    }
    return 1;
}


/*
 * The config's text with its top-level "project:" line replaced by
 * "project: NAME", or that line added at the end; every other line,
 * comments included, stays as it was.  The caller parses the result
 * again to be sure that it says what was meant (a block value or a flow
 * mapping is beyond a line's rewrite).
 */
void
dsctl_config_with_project(const char *text, size_t len, const char *project,
    dsctl_str_t *out)
{
    const char  *p, *end, *nl;
    size_t       n;
    int          done = 0;

    p = text;
    end = text + len;
    while (p < end) {
        nl = memchr(p, '\n', (size_t) (end - p));
        n = nl != NULL ? (size_t) (nl - p) : (size_t) (end - p);
        if (!done && n >= 8 && strncmp(p, "project:", 8) == 0
            && (n == 8 || p[8] == ' ' || p[8] == '\t' || p[8] == '\r'))
        {
            dsctl_str_addf(out, "project: %s%s", project,
                n > 0 && p[n - 1] == '\r' ? "\r" : "");
            done = 1;
        } else {
            dsctl_str_add(out, p, n);
        }
        if (nl != NULL) {
            dsctl_str_add(out, "\n", 1);
        }
        p += n + (nl != NULL ? 1 : 0);
    }
    if (!done) {
        if (out->len > 0 && out->s[out->len - 1] != '\n') {
            dsctl_str_add(out, "\n", 1);
        }
        dsctl_str_addf(out, "project: %s\n", project);
    }
}


/*
 * Replaces path with data, mode 0600 (it holds a token): a temporary
 * file next to it, then rename(2), so that a reader never sees half a
 * file.  A symbolic link is followed, the file it names replaced.
 * -1 after printing where and why.
 */
int
dsctl_write_private(const char *path, const char *data, size_t len)
{
    char         real[PATH_MAX], *dir;
    dsctl_str_t  tmp = { 0 };
    const char  *target = path;
    ssize_t      w;
    size_t       off;
    int          fd;

    if (realpath(path, real) != NULL) {
        target = real;
    } else if (errno != ENOENT) {
        dsctl_error("cannot write \"%s\": %s", path, strerror(errno));
        return -1;
    }
    dsctl_str_addf(&tmp, "%s.XXXXXX", target);
    fd = mkstemp(tmp.s);
    if (fd == -1) {
        dir = dsctl_xstrdup(target);
        dsctl_error("cannot write in \"%s\": %s", dirname(dir),
            strerror(errno));
        free(dir);
        dsctl_str_free(&tmp);
        return -1;
    }
    if (fchmod(fd, 0600) == -1) {
        goto failed;
    }
    for (off = 0; off < len; off += (size_t) w) {
        w = write(fd, data + off, len - off);
        if (w == -1) {
            if (errno == EINTR) {
                w = 0;
                continue;
            }
            goto failed;
        }
    }
    if (fsync(fd) == -1) {
        goto failed;
    }
    if (close(fd) == -1) {
        fd = -1;
        goto failed;
    }
    fd = -1;
    if (rename(tmp.s, target) == -1) {
        goto failed;
    }
    dsctl_str_free(&tmp);
    return 0;

failed:
    dsctl_error("cannot write \"%s\": %s", target, strerror(errno));
    if (fd != -1) {
        close(fd);
    }
    unlink(tmp.s);
    dsctl_str_free(&tmp);
    return -1;
}
