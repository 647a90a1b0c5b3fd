/*
 * The module's wake-up calls: a unix datagram socket (dstack_notify in
 * nginx, notify_socket here) on which a worker that holds the first
 * request for a service scaled to zero sends "hold <run>\n".  controld
 * starts a replica at once instead of waiting for the next stats read.
 * Datagrams are small and best effort: the stats ("held") are the
 * fallback when one is lost.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "autoscale.h"
#include "config.h"
#include "log.h"
#include "ds_state.h"
#include "notify.h"
#include "shared.h"
#include "util.h"


static int  notify_fd = -1;


int
notify_start(char *err, size_t n)
{
    struct sockaddr_un  sa;
    struct stat         sb;

    if (conf->notify_socket == NULL || conf->notify_socket[0] == '\0') {
        return 0;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", conf->notify_socket);

    if (lstat(conf->notify_socket, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode)) {
            snprintf(err, n, "%s exists and is not a socket",
                     conf->notify_socket);
            return -1;
        }
        /* the API socket check already made sure no other controld runs
         * on this configuration */
        unlink(conf->notify_socket);
    }

    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (notify_fd < 0) {
        snprintf(err, n, "notify socket: %s", strerror(errno));
        return -1;
    }
    if (bind(notify_fd, (struct sockaddr *) &sa, sizeof(sa)) != 0
        || chmod(conf->notify_socket, conf->api_socket_mode | 0220) != 0
        || chgrp_conf(conf->notify_socket) != 0)
    {
        snprintf(err, n, "notify socket %s: %s", conf->notify_socket,
                 strerror(errno));
        close(notify_fd);
        notify_fd = -1;
        return -1;
    }
    log_info("listening for hold notices on %s", conf->notify_socket);
    return 0;
}


void
notify_stop(void)
{
    if (notify_fd >= 0) {
        close(notify_fd);
        unlink(conf->notify_socket);
        notify_fd = -1;
    }
}


int
notify_fill(struct pollfd *pfd, int max)
{
    if (notify_fd < 0 || max < 1) {
        return 0;
    }
    pfd[0].fd = notify_fd;
    pfd[0].events = POLLIN;
    pfd[0].revents = 0;
    return 1;
}


void
notify_process(struct pollfd *pfd, int n)
{
    char     buf[256], name[DS_NAME_MAX + 1];
    ssize_t  len;
    size_t   nl;

    if (n < 1 || pfd[0].revents == 0) {
        return;
    }

    for ( ;; ) {
        len = recv(notify_fd, buf, sizeof(buf) - 1, 0);
        if (len < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                log_warn("notify socket");
            }
            return;
        }
        buf[len] = '\0';
        if (strncmp(buf, "hold ", 5) != 0) {
            log_debug("notify: ignoring \"%.40s\"", buf);
            continue;
        }
        nl = strcspn(buf + 5, "\n");
        if (nl == 0 || nl > DS_NAME_MAX) {
            continue;
        }
        memcpy(name, buf + 5, nl);
        name[nl] = '\0';
        if (shared_enabled() && conf->role == ROLE_GATEWAY) {
            shared_wake(name);          /* to the leader, through the db */
        } else {
            autoscale_hold(name);
        }
    }
}
