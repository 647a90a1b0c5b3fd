/*
 * Privilege separation, the mechanics (privsep.h): frames on a
 * non-blocking socketpair, descriptors passed with SCM_RIGHTS, and the
 * start and confinement of the API process.
 *
 * Neither side ever blocks on the other: frames wait in a queue until
 * the socket takes them.  Only the API side accepts descriptors; the
 * parent reads with read(), and the kernel closes any descriptor the API
 * process tries to send it.
 *
 * The API process is this binary again, exec'd: a fresh image holds no
 * LMDB map, no key that was ever loaded, no heap of the parent.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include "log.h"
#include "privsep.h"


/* read at most this much in one ps_read(): the loop stays responsive */
#define PS_READ_BURST           (1024 * 1024)

struct ps_frame {
    struct ps_frame *next;
    size_t          len;
    size_t          off;
    int             fd;
    char            buf[];
};


void
ps_chan_init(struct ps_chan *ch, int fd, int recv_fds)
{
    memset(ch, 0, sizeof(*ch));
    ch->fd = fd;
    ch->recv_fds = recv_fds;
}


void
ps_chan_close(struct ps_chan *ch)
{
    struct ps_frame  *f;
    int               i;

    while ((f = ch->out_head) != NULL) {
        ch->out_head = f->next;
        if (f->fd >= 0) {
            close(f->fd);
        }
        free(f);
    }
    for (i = 0; i < ch->nfds; i++) {
        close(ch->fds[i]);
    }
    if (ch->fd >= 0) {
        close(ch->fd);
    }
    free(ch->in);
    memset(ch, 0, sizeof(*ch));
    ch->fd = -1;
}


void
ps_send(struct ps_chan *ch, uint32_t type, uint32_t id, const void *data,
    size_t len, const char *text, int fd)
{
    struct ps_frame  *f;
    struct ps_hdr     h;
    size_t            tlen;

    tlen = text != NULL ? strlen(text) + 1 : 0;
    if (len + tlen > PS_FRAME_MAX) {
        /* the receiver would refuse it: an error the caller could not
         * have avoided (a view larger than 16 MiB) */
        log_warnx("privsep: a message of %zu bytes is too large",
                  len + tlen);
        text = "";
        tlen = 1;
    }

    f = malloc(sizeof(*f) + sizeof(h) + len + tlen);
    if (f == NULL) {
        fatal("privsep: malloc");
    }
    h.len = (uint32_t) (len + tlen);
    h.type = type | (fd >= 0 ? PS_HAS_FD : 0);
    h.id = id;
    memcpy(f->buf, &h, sizeof(h));
    if (len > 0) {
        memcpy(f->buf + sizeof(h), data, len);
    }
    if (tlen > 0) {
        memcpy(f->buf + sizeof(h) + len, text, tlen);
    }
    f->next = NULL;
    f->len = sizeof(h) + len + tlen;
    f->off = 0;
    f->fd = fd;

    if (ch->out_tail != NULL) {
        ch->out_tail->next = f;
    } else {
        ch->out_head = f;
    }
    ch->out_tail = f;
    ch->out_bytes += f->len;
}


static ssize_t
ps_send_fd(int sock, const void *buf, size_t len, int fd)
{
    struct msghdr    msg;
    struct iovec     iov;
    struct cmsghdr  *cm;
    union {
        struct cmsghdr  hdr;
        char            buf[CMSG_SPACE(sizeof(int))];
    } cmsg;

    memset(&msg, 0, sizeof(msg));
    memset(&cmsg, 0, sizeof(cmsg));
    iov.iov_base = (void *) buf;
    iov.iov_len = len;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.buf;
    msg.msg_controllen = sizeof(cmsg.buf);
    cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));

    return sendmsg(sock, &msg, MSG_NOSIGNAL);
}


int
ps_flush(struct ps_chan *ch)
{
    struct ps_frame  *f;
    ssize_t           n;

    while ((f = ch->out_head) != NULL) {
        if (f->off == 0 && f->fd >= 0) {
            /* the descriptor rides with the frame's first byte */
            n = ps_send_fd(ch->fd, f->buf, f->len, f->fd);
        } else {
            n = send(ch->fd, f->buf + f->off, f->len - f->off,
                     MSG_NOSIGNAL);
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            return -1;
        }
        if (f->fd >= 0) {
            close(f->fd);
            f->fd = -1;
        }
        f->off += (size_t) n;
        ch->out_bytes -= (size_t) n;
        if (f->off < f->len) {
            continue;
        }
        ch->out_head = f->next;
        if (ch->out_head == NULL) {
            ch->out_tail = NULL;
        }
        free(f);
    }
    return 0;
}


/* keeps the descriptors of one recvmsg(); too many is an error */
static int
ps_take_fds(struct ps_chan *ch, struct msghdr *msg)
{
    struct cmsghdr  *cm;
    int              fd, rc = 0;
    size_t           i, n;

    for (cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR(msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (i = 0; i < n; i++) {
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (ch->nfds < (int) (sizeof(ch->fds) / sizeof(ch->fds[0]))) {
                ch->fds[ch->nfds++] = fd;
            } else {
                close(fd);
                rc = -1;
            }
        }
    }
    if (msg->msg_flags & MSG_CTRUNC) {
        rc = -1;
    }
    return rc;
}


int
ps_read(struct ps_chan *ch)
{
    struct msghdr  msg;
    struct iovec   iov;
    union {
        struct cmsghdr  hdr;
        char            buf[CMSG_SPACE(sizeof(int) * 4)];
    } cmsg;
    size_t         total = 0, cap;
    ssize_t        n;
    char          *nb;

    /* what was taken goes: the frames handed out before are done */
    if (ch->in_off > 0) {
        memmove(ch->in, ch->in + ch->in_off, ch->in_len - ch->in_off);
        ch->in_len -= ch->in_off;
        ch->in_off = 0;
    }

    while (total < PS_READ_BURST) {
        if (ch->in_cap - ch->in_len < 64 * 1024) {
            cap = ch->in_cap ? ch->in_cap * 2 : 128 * 1024;
            if (cap > sizeof(struct ps_hdr) + PS_FRAME_MAX + 128 * 1024) {
                cap = sizeof(struct ps_hdr) + PS_FRAME_MAX + 128 * 1024;
            }
            if (cap <= ch->in_cap) {
                /* a whole frame and more is waiting: take it first */
                return 0;
            }
            nb = realloc(ch->in, cap);
            if (nb == NULL) {
                fatal("privsep: realloc");
            }
            ch->in = nb;
            ch->in_cap = cap;
        }

        iov.iov_base = ch->in + ch->in_len;
        iov.iov_len = ch->in_cap - ch->in_len;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        if (ch->recv_fds) {
            msg.msg_control = cmsg.buf;
            msg.msg_controllen = sizeof(cmsg.buf);
        }
        n = recvmsg(ch->fd, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            return -1;
        }
        if (ch->recv_fds && ps_take_fds(ch, &msg) != 0) {
            log_warnx("privsep: descriptors lost in a message");
            return -1;
        }
        if (n == 0) {
            return -1;
        }
        ch->in_len += (size_t) n;
        total += (size_t) n;
    }
    return 0;
}


int
ps_get(struct ps_chan *ch, struct ps_msg *m)
{
    struct ps_hdr  h;
    size_t         avail;

    avail = ch->in_len - ch->in_off;
    if (avail < sizeof(h)) {
        return 0;
    }
    memcpy(&h, ch->in + ch->in_off, sizeof(h));
    if (h.len > PS_FRAME_MAX) {
        log_warnx("privsep: a frame of %u bytes", h.len);
        return -1;
    }
    if (avail - sizeof(h) < h.len) {
        return 0;
    }

    m->type = h.type & ~PS_HAS_FD;
    m->id = h.id;
    m->data = ch->in + ch->in_off + sizeof(h);
    m->len = h.len;
    m->fd = -1;
    ch->in_off += sizeof(h) + h.len;

    if (h.type & PS_HAS_FD) {
        if (!ch->recv_fds || ch->nfds == 0) {
            log_warnx("privsep: a frame without its descriptor");
            return -1;
        }
        m->fd = ch->fds[0];
        memmove(ch->fds, ch->fds + 1, (size_t) (ch->nfds - 1) * sizeof(int));
        ch->nfds--;
    }
    return 1;
}


const char *
ps_text(const struct ps_msg *m, size_t n)
{
    const char  *t;

    if (m->len <= n) {
        return NULL;
    }
    t = (const char *) m->data + n;
    if (t[m->len - n - 1] != '\0' || memchr(t, '\0', m->len - n - 1)) {
        return NULL;
    }
    return t;
}


/* ---- the API process ---------------------------------------------------- */

pid_t
ps_spawn(char *const argv[], int listen_fd, int tcp_fd, const char *dir,
    int *chan_fd, char *err, size_t n)
{
    int       sv[2], hl, hc, ht = -1;
    pid_t     pid;
    sigset_t  none;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(err, n, "socketpair: %s", strerror(errno));
        return -1;
    }
    if (fcntl(sv[0], F_SETFL, O_NONBLOCK) != 0) {
        snprintf(err, n, "fcntl: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }

    pid = fork();
    if (pid < 0) {
        snprintf(err, n, "fork: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }

    if (pid == 0) {
        /* above every low number first, so that the dup2s cannot step
         * on each other; dup2 clears FD_CLOEXEC */
        hl = fcntl(listen_fd, F_DUPFD_CLOEXEC, 64);
        hc = fcntl(sv[1], F_DUPFD_CLOEXEC, 64);
        if (tcp_fd >= 0) {
            ht = fcntl(tcp_fd, F_DUPFD_CLOEXEC, 64);
        }
        if (hl < 0 || hc < 0 || (tcp_fd >= 0 && ht < 0)
            || dup2(hl, PS_API_LISTEN_FD) < 0 || dup2(hc, PS_API_CHAN_FD) < 0
            || (ht >= 0 && dup2(ht, PS_API_TCP_FD) < 0))
        {
            _exit(126);
        }
        close_range(ht >= 0 ? PS_API_TCP_FD + 1 : PS_API_CHAN_FD + 1, ~0U, 0);
        if (chdir(dir) != 0) {
            _exit(126);
        }
        /* the parent's blocked signals would survive the exec */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv("/proc/self/exe", argv);
        _exit(127);
    }

    close(sv[1]);
    *chan_fd = sv[0];
    return pid;
}


int
ps_drop(uid_t uid, gid_t gid, char *err, size_t n)
{
    uid_t  ru, eu, su;
    gid_t  rg, eg, sg;

    if (geteuid() != 0) {
        return 0;
    }
    if (uid == 0) {
        snprintf(err, n, "the API process must not run as root");
        return -1;
    }
    if (setgroups(1, &gid) != 0
        || setresgid(gid, gid, gid) != 0
        || setresuid(uid, uid, uid) != 0)
    {
        snprintf(err, n, "cannot become uid %u gid %u: %s", (unsigned) uid,
                 (unsigned) gid, strerror(errno));
        return -1;
    }
    if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0
        || ru != uid || eu != uid || su != uid
        || rg != gid || eg != gid || sg != gid
        || setuid(0) == 0 || seteuid(0) == 0)
    {
        snprintf(err, n, "still privileged after becoming uid %u",
                 (unsigned) uid);
        return -1;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        snprintf(err, n, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
        return -1;
    }
    return 0;
}
