/*
 * SSH to the hosts of fleets through the OpenSSH client: commands as
 * child processes driven by the main loop, one master connection per
 * host, forwarded ports and log streams through it.  See ssh.h for why
 * the client and not a library.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/queue.h>
#include <sys/wait.h>

#include "log.h"
#include "ssh.h"
#include "util.h"


#define SSH_ARGS_MAX        64
#define SSH_QUICK_MS        3000    /* -O check, -O forward */

struct ssh_cmd {
    LIST_ENTRY(ssh_cmd) entry;
    pid_t           pid;
    int             fd;                 /* stdout and stderr, -1 at EOF */
    char           *out;
    size_t          len;
    int64_t         deadline_ms;
    int             timed_out;
    int             cancelled;          /* freed once reaped */
    int             exited;
    int             status;
    ssh_done_fn     done;
    ssh_block_fn    block;              /* watched: blocks as they come */
    void           *arg;
};

static LIST_HEAD(, ssh_cmd)  cmds = LIST_HEAD_INITIALIZER(cmds);


/* ---- the command line ----------------------------------------------------- */

struct argv {
    char           *v[SSH_ARGS_MAX + 1];
    char            buf[16][4200];
    char            proxy[10000];
    int             n, nbuf;
};


static void
arg(struct argv *a, const char *s)
{
    if (a->n < SSH_ARGS_MAX) {
        a->v[a->n++] = (char *) s;
        a->v[a->n] = NULL;
    }
}


static void
argf(struct argv *a, const char *f, const char *s)
{
    char  *b;

    if (a->nbuf >= 16) {
        return;
    }
    b = a->buf[a->nbuf++];
    snprintf(b, sizeof(a->buf[0]), f, s);
    arg(a, b);
}


static void
argn(struct argv *a, const char *f, int v)
{
    char  *b;

    if (a->nbuf >= 16) {
        return;
    }
    b = a->buf[a->nbuf++];
    snprintf(b, sizeof(a->buf[0]), f, v);
    arg(a, b);
}


/*
 * The options every invocation shares: no user configuration, keys
 * pinned in our file, no questions, keepalives that notice a dead host
 * in about three seconds.
 */
static void
ssh_options(struct argv *a, const char *key, const char *known_hosts)
{
    arg(a, "-F");
    arg(a, "/dev/null");
    arg(a, "-o");
    arg(a, "BatchMode=yes");
    arg(a, "-o");
    arg(a, "IdentitiesOnly=yes");
    arg(a, "-i");
    arg(a, key);
    arg(a, "-o");
    argf(a, "UserKnownHostsFile=%s", known_hosts);
    arg(a, "-o");
    arg(a, "GlobalKnownHostsFile=/dev/null");
    arg(a, "-o");
    arg(a, "StrictHostKeyChecking=accept-new");
    arg(a, "-o");
    arg(a, "ConnectTimeout=5");
    arg(a, "-o");
    arg(a, "ServerAliveInterval=1");
    arg(a, "-o");
    arg(a, "ServerAliveCountMax=3");
    arg(a, "-o");
    arg(a, "LogLevel=ERROR");
}


/* the jump host as a ProxyCommand: its own key and the same pinning */
static void
ssh_jump(struct argv *a, const struct ssh_host *h)
{
    char  *b = a->proxy, *key, *kh;

    if (h->jump_hostname[0] == '\0') {
        return;
    }
    /* ssh runs it with the shell: the paths quoted */
    key = ssh_quote(h->jump_key);
    kh = ssh_quote(h->known_hosts);
    snprintf(b, sizeof(a->proxy),
             "ProxyCommand=ssh -F /dev/null -o BatchMode=yes "
             "-o IdentitiesOnly=yes -i %s -o UserKnownHostsFile=%s "
             "-o GlobalKnownHostsFile=/dev/null "
             "-o StrictHostKeyChecking=accept-new -o ConnectTimeout=5 "
             "-o ServerAliveInterval=1 -o ServerAliveCountMax=3 "
             "-o LogLevel=ERROR -p %d -W %%h:%%p %s@%s",
             key, kh, h->jump_port, h->jump_user, h->jump_hostname);
    free(key);
    free(kh);
    arg(a, "-o");
    arg(a, b);
}


static void
ssh_dest(struct argv *a, const struct ssh_host *h)
{
    char  *b;

    arg(a, "-p");
    argn(a, "%d", h->port);
    if (a->nbuf >= 16) {
        return;
    }
    b = a->buf[a->nbuf++];
    snprintf(b, sizeof(a->buf[0]), "%s@%s", h->user, h->hostname);
    arg(a, b);
}


/* ssh [options] [-S ctl ...] extra... user@host */
static void
ssh_argv(struct argv *a, const struct ssh_host *h, const char *ctl_mode)
{
    memset(a, 0, sizeof(*a));
    arg(a, "ssh");
    ssh_options(a, h->key, h->known_hosts);
    ssh_jump(a, h);
    arg(a, "-o");
    argf(a, "ControlPath=%s", h->ctl);
    arg(a, "-o");
    argf(a, "ControlMaster=%s", ctl_mode);
}


/* ---- child processes ------------------------------------------------------ */

static void
exec_ssh(struct argv *a, int in_fd, int out_fd, int err_fd, int own_session)
{
    int  fd;

    if (own_session) {
        (void) setsid();
    }
    if (in_fd < 0) {
        in_fd = open("/dev/null", O_RDONLY);
    }
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) {
        _exit(255);
    }
    for (fd = 3; fd < 1024; fd++) {
        close(fd);
    }
    signal(SIGPIPE, SIG_DFL);
    execvp("ssh", a->v);
    dprintf(2, "cannot run ssh: %s\n", strerror(errno));
    _exit(255);
}


/* the command's input as a file: a memfd, so no pipe to feed */
static int
input_fd(const char *in, size_t len, const char *in_path)
{
    int      fd;
    ssize_t  w;
    size_t   off = 0;

    if (in_path != NULL) {
        return open(in_path, O_RDONLY | O_CLOEXEC);
    }
    if (in == NULL) {
        return -1;
    }
    fd = memfd_create("ssh-input", MFD_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    while (off < len) {
        w = write(fd, in + off, len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t) w;
    }
    (void) lseek(fd, 0, SEEK_SET);
    return fd;
}


struct ssh_cmd *
ssh_run(const struct ssh_host *h, const char *remote, const char *in,
    size_t len, const char *in_path, int timeout_ms, ssh_done_fn done,
    void *arg_)
{
    struct argv     a;
    struct ssh_cmd *c;
    int             p[2], in_fd;
    pid_t           pid;

    ssh_argv(&a, h, "no");
    ssh_dest(&a, h);
    arg(&a, "--");
    arg(&a, remote);

    in_fd = input_fd(in, len, in_path);
    if ((in != NULL || in_path != NULL) && in_fd < 0) {
        log_warn("ssh %s: cannot open the input", h->hostname);
        return NULL;
    }
    if (pipe2(p, O_CLOEXEC) != 0) {
        log_warn("pipe");
        if (in_fd >= 0) {
            close(in_fd);
        }
        return NULL;
    }
    pid = fork();
    if (pid < 0) {
        log_warn("fork");
        close(p[0]);
        close(p[1]);
        if (in_fd >= 0) {
            close(in_fd);
        }
        return NULL;
    }
    if (pid == 0) {
        exec_ssh(&a, in_fd, p[1], p[1], 0);
    }
    close(p[1]);
    if (in_fd >= 0) {
        close(in_fd);
    }
    (void) fcntl(p[0], F_SETFL, O_NONBLOCK);

    c = xcalloc(1, sizeof(*c));
    c->pid = pid;
    c->fd = p[0];
    c->deadline_ms = now_ms() + timeout_ms;
    c->done = done;
    c->arg = arg_;
    c->out = xcalloc(1, 4096);
    LIST_INSERT_HEAD(&cmds, c, entry);
    return c;
}


struct ssh_cmd *
ssh_watch(const struct ssh_host *h, const char *remote, ssh_block_fn block,
    ssh_done_fn done, void *arg_)
{
    struct ssh_cmd  *c;

    c = ssh_run(h, remote, NULL, 0, NULL, 0, done, arg_);
    if (c != NULL) {
        c->block = block;
        c->deadline_ms = INT64_MAX;
    }
    return c;
}


static void
cmd_free(struct ssh_cmd *c)
{
    LIST_REMOVE(c, entry);
    if (c->fd >= 0) {
        close(c->fd);
    }
    free(c->out);
    free(c);
}


void
ssh_rearg(struct ssh_cmd *c, void *arg_)
{
    c->arg = arg_;
}


/*
 * Marks it: killed, never told; freed by the loop once reaped, so that a
 * callback may cancel any command, the one the loop looks at next too.
 */
void
ssh_cancel(struct ssh_cmd *c)
{
    if (c == NULL || c->cancelled) {
        return;
    }
    c->cancelled = 1;
    c->done = NULL;
    c->block = NULL;
    if (!c->exited) {
        kill(c->pid, SIGKILL);
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}


/* a watched command's complete blocks out of its buffer */
static void
cmd_blocks(struct ssh_cmd *c)
{
    char    *end;
    size_t   used;

    while ((end = strstr(c->out, "\nend\n")) != NULL
           || strncmp(c->out, "end\n", 4) == 0)
    {
        if (end == NULL) {
            memmove(c->out, c->out + 4, c->len - 3);
            c->len -= 4;
            continue;
        }
        end[1] = '\0';
        used = (size_t) (end - c->out) + 5;
        c->block(c->arg, c->out);
        memmove(c->out, c->out + used, c->len - used + 1);
        c->len -= used;
    }
    if (c->len == SSH_OUT_MAX) {
        c->len = 0;             /* no "end" in a megabyte: not ours */
        c->out[0] = '\0';
    }
}


/* reads what is there; 1 at EOF */
static int
cmd_read(struct ssh_cmd *c)
{
    char     buf[16384];
    ssize_t  r;
    size_t   keep;

    for (;;) {
        r = read(c->fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return errno != EAGAIN;
        }
        if (r == 0) {
            return 1;
        }
        keep = (size_t) r;
        if (c->len + keep > SSH_OUT_MAX) {
            keep = SSH_OUT_MAX - c->len;
        }
        if (keep > 0) {
            c->out = realloc(c->out, c->len + keep + 1);
            if (c->out == NULL) {
                fatal("realloc");
            }
            memcpy(c->out + c->len, buf, keep);
            c->len += keep;
            c->out[c->len] = '\0';
            if (c->block != NULL) {
                cmd_blocks(c);
            }
        }
    }
}


/* ended and read to the end: tell */
static void
cmd_finish(struct ssh_cmd *c)
{
    int  status;

    if (!c->exited || c->fd >= 0) {
        return;
    }
    if (c->cancelled) {
        cmd_free(c);
        return;
    }
    if (c->timed_out) {
        status = -1;
    } else if (WIFEXITED(c->status)) {
        status = WEXITSTATUS(c->status);
    } else {
        status = -1;
    }
    LIST_REMOVE(c, entry);
    c->done(c->arg, status, c->out, c->len);
    free(c->out);
    free(c);
}


int
ssh_fill(struct pollfd *pfd, int max)
{
    struct ssh_cmd  *c;
    int              n = 0;

    LIST_FOREACH(c, &cmds, entry) {
        if (n >= max) {
            break;
        }
        if (c->fd >= 0) {
            pfd[n].fd = c->fd;
            pfd[n].events = POLLIN;
            pfd[n].revents = 0;
            n++;
        }
    }
    return n;
}


void
ssh_process(struct pollfd *pfd, int n)
{
    struct ssh_cmd  *c, *next;
    int              i;
    int64_t          now = now_ms();

    for (i = 0; i < n; i++) {
        if (pfd[i].revents == 0) {
            continue;
        }
        LIST_FOREACH(c, &cmds, entry) {
            if (c->fd == pfd[i].fd && !c->cancelled) {
                if (cmd_read(c)) {
                    close(c->fd);
                    c->fd = -1;
                }
                break;
            }
        }
    }

    for (c = LIST_FIRST(&cmds); c != NULL; c = next) {
        next = LIST_NEXT(c, entry);
        if (!c->exited && !c->timed_out && now >= c->deadline_ms) {
            c->timed_out = 1;
            kill(c->pid, SIGKILL);
        }
        if (c->exited && c->fd >= 0 && c->timed_out) {
            /* a grandchild may hold the pipe: the answer is no answer */
            close(c->fd);
            c->fd = -1;
        }
        cmd_finish(c);
    }
}


int
ssh_timeout_ms(void)
{
    struct ssh_cmd  *c;
    int64_t          now = now_ms(), t, best = -1;

    LIST_FOREACH(c, &cmds, entry) {
        if (c->deadline_ms == INT64_MAX && !c->exited) {
            continue;
        }
        t = c->exited ? 0 : c->deadline_ms - now;
        if (t < 0) {
            t = 0;
        }
        if (best < 0 || t < best) {
            best = t;
        }
    }
    return (int) best;
}


int
ssh_reap(pid_t pid, int status)
{
    struct ssh_cmd  *c;

    LIST_FOREACH(c, &cmds, entry) {
        if (c->pid == pid) {
            c->exited = 1;
            c->status = status;
            if (c->fd >= 0 && !c->cancelled && cmd_read(c)) {
                close(c->fd);
                c->fd = -1;
            }
            return 1;
        }
    }
    return 0;
}


/* ---- the master connection ------------------------------------------------ */

pid_t
ssh_master(const struct ssh_host *h, int err_fd)
{
    struct argv  a;
    pid_t        pid;

    ssh_argv(&a, h, "yes");
    arg(&a, "-o");
    arg(&a, "ControlPersist=no");
    arg(&a, "-o");
    arg(&a, "ExitOnForwardFailure=no");
    arg(&a, "-o");
    arg(&a, "StreamLocalBindUnlink=yes");
    arg(&a, "-N");
    ssh_dest(&a, h);

    (void) unlink(h->ctl);
    pid = fork();
    if (pid < 0) {
        log_warn("fork");
        return -1;
    }
    if (pid == 0) {
        exec_ssh(&a, -1, err_fd, err_fd, 1);
    }
    return pid;
}


/*
 * ssh -O <op> ...: a local exchange with the master over its socket.
 * Waited for here, with a deadline (the master answers from its loop at
 * once; a stuck one is not waited for).
 */
static int
ssh_control(const struct ssh_host *h, const char *op, const char *fwd)
{
    struct argv  a;
    pid_t        pid, r;
    int          status, fd;
    int64_t      deadline;

    ssh_argv(&a, h, "no");
    arg(&a, "-O");
    arg(&a, op);
    if (fwd != NULL) {
        arg(&a, "-L");
        arg(&a, fwd);
    }
    ssh_dest(&a, h);

    fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    pid = fork();
    if (pid < 0) {
        close(fd);
        return -1;
    }
    if (pid == 0) {
        exec_ssh(&a, -1, fd, fd, 0);
    }
    close(fd);
    deadline = now_ms() + SSH_QUICK_MS;
    for (;;) {
        r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
        if (now_ms() >= deadline) {
            kill(pid, SIGKILL);
            (void) waitpid(pid, &status, 0);
            return -1;
        }
        usleep(2000);
    }
}


int
ssh_master_alive(const struct ssh_host *h)
{
    if (access(h->ctl, F_OK) != 0) {
        return 0;
    }
    return ssh_control(h, "check", NULL) == 0;
}


void
ssh_master_stop(const struct ssh_host *h)
{
    if (access(h->ctl, F_OK) == 0) {
        (void) ssh_control(h, "exit", NULL);
    }
}


int
ssh_forward(const struct ssh_host *h, int lport, const char *to_host,
    int to_port)
{
    char  fwd[512];

    snprintf(fwd, sizeof(fwd), "127.0.0.1:%d:%s:%d", lport, to_host,
             to_port);
    return ssh_control(h, "forward", fwd);
}


int
ssh_forward_socket(const struct ssh_host *h, const char *local,
    const char *remote)
{
    char  fwd[512];

    if (fmt(fwd, sizeof(fwd), "%s:%s", local, remote) != 0) {
        return -1;
    }
    return ssh_control(h, "forward", fwd);
}


void
ssh_forward_cancel(const struct ssh_host *h, int lport, const char *to_host,
    int to_port)
{
    char  fwd[512];

    snprintf(fwd, sizeof(fwd), "127.0.0.1:%d:%s:%d", lport, to_host,
             to_port);
    (void) ssh_control(h, "cancel", fwd);
}


pid_t
ssh_stream(const struct ssh_host *h, const char *remote, int out_fd)
{
    struct argv  a;
    pid_t        pid;
    int          null;

    ssh_argv(&a, h, "no");
    ssh_dest(&a, h);
    arg(&a, "--");
    arg(&a, remote);

    null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    pid = fork();
    if (pid < 0) {
        log_warn("fork");
        close(null);
        return -1;
    }
    if (pid == 0) {
        exec_ssh(&a, -1, out_fd, null, 0);
    }
    close(null);
    return pid;
}


char *
ssh_quote(const char *s)
{
    size_t  n = 3;
    char   *q, *p;

    for (p = (char *) s; *p; p++) {
        n += *p == '\'' ? 4 : 1;
    }
    q = xcalloc(1, n);
    p = q;
    *p++ = '\'';
    for (; *s; s++) {
        if (*s == '\'') {
            memcpy(p, "'\\''", 4);
            p += 4;
        } else {
            *p++ = *s;
        }
    }
    *p++ = '\'';
    *p = '\0';
    return q;
}
