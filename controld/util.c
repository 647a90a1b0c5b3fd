/*
 * Small helpers: time, memory, paths, durations, /proc.
 */

#define _GNU_SOURCE

#include <dirent.h>
#include <grp.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <unistd.h>
#include <sys/stat.h>

#include <time.h>

#include "config.h"
#include "log.h"
#include "util.h"


int64_t
now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


char *
xstrdup(const char *s)
{
    char  *p;

    p = strdup(s ? s : "");
    if (p == NULL) {
        fatal("strdup");
    }
    return p;
}


void *
xcalloc(size_t n, size_t size)
{
    void  *p;

    p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        fatal("calloc");
    }
    return p;
}


int
fmt(char *buf, size_t n, const char *f, ...)
{
    va_list  ap;
    int      len;

    va_start(ap, f);
    len = vsnprintf(buf, n, f, ap);
    va_end(ap);
    return (len < 0 || (size_t) len >= n) ? -1 : 0;
}


int
mkdir_p(const char *path, unsigned mode)
{
    char   buf[4096], *p;

    if (fmt(buf, sizeof(buf), "%s", path) != 0) {
        errno = ENAMETOOLONG;
        return -1;
    }

    for (p = buf + 1; *p; p++) {
        if (*p != '/') {
            continue;
        }
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST) {
            return -1;
        }
        *p = '/';
    }

    if (mkdir(buf, mode) != 0 && errno != EEXIST) {
        return -1;
    }
    return 0;
}


/* removes a tree without following symlinks (a replica may plant them) */
int
rm_rf(const char *path)
{
    DIR            *d;
    struct dirent  *de;
    struct stat     st;
    char            sub[4096];
    int             rc = 0;

    if (lstat(path, &st) != 0) {
        return errno == ENOENT ? 0 : -1;
    }

    if (!S_ISDIR(st.st_mode)) {
        return unlink(path);
    }

    d = opendir(path);
    if (d == NULL) {
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        if (fmt(sub, sizeof(sub), "%s/%s", path, de->d_name) != 0) {
            rc = -1;
            continue;
        }
        if (rm_rf(sub) != 0) {
            rc = -1;
        }
    }
    closedir(d);

    if (rmdir(path) != 0) {
        rc = -1;
    }
    return rc;
}


long long
parse_duration_ms(const char *s)
{
    char       *end;
    double      v;
    long long   mul;

    if (s == NULL || *s == '\0') {
        return -1;
    }
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || v < 0) {
        return -1;
    }

    if (*end == '\0' || strcmp(end, "s") == 0) {
        mul = 1000;
    } else if (strcmp(end, "ms") == 0) {
        mul = 1;
    } else if (strcmp(end, "m") == 0) {
        mul = 60 * 1000;
    } else if (strcmp(end, "h") == 0) {
        mul = 3600 * 1000;
    } else if (strcmp(end, "d") == 0) {
        mul = 86400 * 1000;
    } else {
        return -1;
    }

    if (v * mul > 1e15) {
        return -1;
    }
    return (long long) (v * mul);
}


int
proc_start_time(pid_t pid, unsigned long long *start)
{
    char    path[64], buf[1024], *p, state;
    int     fd, i;
    ssize_t n;

    if (pid <= 0) {
        return -1;
    }

    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';

    /* "pid (comm) S ppid ...": comm may hold spaces and parentheses */
    p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ') {
        return -1;
    }
    p += 2;
    state = *p;
    if (state == 'Z' || state == 'X' || state == 'x') {
        return -1;
    }

    /* starttime is field 22; state is field 3 */
    for (i = 3; i < 22; i++) {
        p = strchr(p, ' ');
        if (p == NULL) {
            return -1;
        }
        p++;
    }

    *start = strtoull(p, NULL, 10);
    return 0;
}


void
hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char  hex[] = "0123456789abcdef";
    size_t             i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}


size_t
str_hash(const char *s)
{
    size_t  h = 2166136261u;

    while (*s) {
        h = (h ^ (unsigned char) *s++) * 16777619u;
    }
    return h;
}


int
valid_hex_hash(const char *s)
{
    int  i;

    for (i = 0; i < 64; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }
    return s[64] == '\0';
}


char *
read_file(const char *path, size_t max, size_t *len)
{
    struct stat  sb;
    char        *buf;
    ssize_t      r;
    int          fd, e;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return NULL;
    }
    if (fstat(fd, &sb) != 0) {
        e = errno;
    } else if (!S_ISREG(sb.st_mode)) {
        e = EINVAL;
    } else if ((uintmax_t) sb.st_size > max) {
        e = EFBIG;
    } else {
        e = 0;
    }
    if (e != 0) {
        close(fd);
        errno = e;
        return NULL;
    }
    buf = xcalloc(1, (size_t) sb.st_size + 1);
    r = read(fd, buf, (size_t) sb.st_size);
    close(fd);
    if (r != sb.st_size) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    *len = (size_t) r;
    return buf;
}


int
write_file_atomic(const char *path, const char *data, size_t len,
    unsigned mode)
{
    char     tmp[4096];
    int      fd;
    ssize_t  n;
    size_t   off = 0;

    if (fmt(tmp, sizeof(tmp), "%s.tmp.%d", path, (int) getpid()) != 0) {
        errno = ENAMETOOLONG;
        return -1;
    }

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        return -1;
    }
    /* the umask may have taken bits away, and an old file its own */
    if (fchmod(fd, mode) != 0) {
        goto fail;
    }
    while (off < len) {
        n = write(fd, data + off, len - off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            goto fail;
        }
        off += n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;

fail:
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
    return -1;
}


int
chgrp_conf(const char *path)
{
    struct group  *gr;

    if (conf->group == NULL) {
        return 0;
    }
    gr = getgrnam(conf->group);
    if (gr == NULL) {
        errno = ENOENT;
        return -1;
    }
    return chown(path, (uid_t) -1, gr->gr_gid);
}


long
json_nul_at(const char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (p[i] == '\0'
            || (p[i] == '\\' && i + 6 <= len && p[i + 1] == 'u'
                && memcmp(p + i + 2, "0000", 4) == 0))
        {
            return (long) i;
        }
        if (p[i] == '\\') {
            i++;                /* the escaped character */
        }
    }
    return -1;
}


/*
 * "ADDR:PORT": an IPv4 address or an IPv6 one in brackets, numeric (the
 * socket is opened before anything is resolved, and a name could mean
 * another address tomorrow), and a port 1..65535.
 */
int
listen_addr_parse(const char *s, struct sockaddr_storage *ss,
    socklen_t *len, char *why, size_t n)
{
    struct addrinfo   hints, *ai;
    const char       *colon, *p;
    char              host[64];
    long              port;
    int               rc;

    if (s[0] == '[') {
        colon = strstr(s, "]:");
        if (colon == NULL) {
            snprintf(why, n, "expected [IPv6]:PORT");
            return -1;
        }
        snprintf(host, sizeof(host), "%.*s", (int) (colon - s - 1), s + 1);
        colon++;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t) (colon - s)) != NULL) {
            snprintf(why, n, "expected ADDR:PORT (an IPv6 address goes in "
                     "brackets: [::1]:8181)");
            return -1;
        }
        snprintf(host, sizeof(host), "%.*s", (int) (colon - s), s);
    }
    port = 0;
    for (p = colon + 1; *p >= '0' && *p <= '9' && port <= 65535; p++) {
        port = port * 10 + (*p - '0');
    }
    if (p == colon + 1 || *p != '\0' || port < 1 || port > 65535) {
        snprintf(why, n, "the port must be a number from 1 to 65535");
        return -1;
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    rc = getaddrinfo(host, colon + 1, &hints, &ai);
    if (rc != 0) {
        snprintf(why, n, "\"%s\" is not a numeric IP address", host);
        return -1;
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}
