/*
 * Code archives on this controller's disk (code.h).
 */

#define _GNU_SOURCE         /* mkostemp */

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "code.h"
#include "config.h"
#include "util.h"


int
code_path(const char *hash, char *buf, size_t n)
{
    return fmt(buf, n, "%s/code/%s.tar.gz", conf->state_dir, hash);
}


int
code_exists(const char *hash)
{
    char  path[4096];

    if (code_path(hash, path, sizeof(path)) != 0) {
        return 0;
    }
    return access(path, R_OK) == 0;
}


static int
code_write_all(int fd, const char *data, size_t len)
{
    ssize_t  w;
    size_t   off = 0;

    while (off < len) {
        w = write(fd, data + off, len - off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        off += w;
    }
    return 0;
}


int
code_store(const char *hash, const void *data, size_t len, char *err,
    size_t n)
{
    struct stat  sb;
    char         dir[4096], tmp[4200], path[4096];
    int          fd;

    if (fmt(dir, sizeof(dir), "%s/code", conf->state_dir) != 0
        || code_path(hash, path, sizeof(path)) != 0)
    {
        snprintf(err, n, "code %s: state_dir too long", hash);
        return -1;
    }
    /* ".upload-": a straggler is cleaned like a half-done upload */
    if (stat(dir, &sb) != 0
        || fmt(tmp, sizeof(tmp), "%s/.upload-XXXXXX", dir) != 0)
    {
        snprintf(err, n, "code %s: %s: %s", hash, dir, strerror(errno));
        return -1;
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, n, "code %s: cannot create %s: %s", hash, tmp,
                 strerror(errno));
        return -1;
    }
    /* the API process owns the directory and reads its archives */
    if (code_write_all(fd, data, len) != 0 || fsync(fd) != 0
        || fchmod(fd, 0600) != 0
        || (fchown(fd, sb.st_uid, sb.st_gid) != 0 && errno != EPERM))
    {
        snprintf(err, n, "code %s: cannot write %s: %s", hash, tmp,
                 strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        snprintf(err, n, "code %s: cannot store %s: %s", hash, path,
                 strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}


int
code_load(const char *hash, void **data, size_t *len, char *err, size_t n)
{
    struct stat  sb;
    char         path[4096], *buf;
    ssize_t      got;
    size_t       off = 0;
    int          fd;

    *data = NULL;
    *len = 0;
    if (code_path(hash, path, sizeof(path)) != 0) {
        snprintf(err, n, "code %s: state_dir too long", hash);
        return -1;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0) {
        snprintf(err, n, "code %s: cannot read %s: %s", hash, path,
                 strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    buf = xcalloc(1, sb.st_size > 0 ? (size_t) sb.st_size : 1);
    while (off < (size_t) sb.st_size) {
        got = read(fd, buf + off, (size_t) sb.st_size - off);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            snprintf(err, n, "code %s: cannot read %s: %s", hash, path,
                     got < 0 ? strerror(errno) : "it shrank");
            free(buf);
            close(fd);
            return -1;
        }
        off += got;
    }
    close(fd);
    *data = buf;
    *len = off;
    return 0;
}
