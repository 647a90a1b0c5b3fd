/*
 * sd_notify(3) by hand: a datagram on an AF_UNIX socket named by
 * $NOTIFY_SOCKET.  A name starting with '@' is in the abstract namespace
 * (the '@' becomes a NUL byte, and the address length counts the name
 * exactly, with no trailing NUL).  sdnotify_init() takes the variable
 * out of the environment so that what we exec (the API process, ip,
 * uacme, ssh) cannot speak for us.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "log.h"
#include "sdnotify.h"


static char  *notify_path;


void
sdnotify_init(void)
{
    const char  *p;

    p = getenv("NOTIFY_SOCKET");
    if (p != NULL && p[0] != '\0') {
        notify_path = strdup(p);
    }
    unsetenv("NOTIFY_SOCKET");
}

int
sdnotify(const char *state)
{
    struct sockaddr_un  sun;
    const char         *path;
    socklen_t           len;
    size_t              n;
    ssize_t             w;
    int                 fd;

    path = notify_path;
    if (path == NULL) {
        return 0;
    }
    n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n >= sizeof(sun.sun_path)) {
        log_warnx("sd_notify: NOTIFY_SOCKET \"%s\" is not a unix socket "
                  "path or an abstract name", path);
        return -1;
    }

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, n);
    len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n);
    if (path[0] == '@') {
        sun.sun_path[0] = '\0';
    } else {
        len++;
    }

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        log_warn("sd_notify: socket");
        return -1;
    }
    w = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
               (struct sockaddr *) &sun, len);
    if (w < 0) {
        log_warn("sd_notify: %s to %s", state, path);
        close(fd);
        return -1;
    }
    close(fd);
    log_debug("sd_notify: %s", state);
    return 0;
}


int
sdnotify_reloading(void)
{
    struct timespec  ts;
    char             buf[96];

    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long) ts.tv_sec * 1000000ULL
             + (unsigned long long) ts.tv_nsec / 1000);
    return sdnotify(buf);
}
