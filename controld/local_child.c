/*
 * The replica's process, after fork and before the exec of its commands.
 *
 * It runs apart from the loop, so it may block: unpacking the code (tar)
 * and the namespace's setup (ip) take a while.  A close-on-exec pipe
 * tells the loop how that went: EOF means the commands run; a line of
 * text (child_fail) is a setup error, also written to the replica's log.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "code.h"
#include "config.h"
#include "host.h"
#include "local_child.h"
#include "run.h"
#include "spec.h"
#include "util.h"

/* the replica's environment, NULL-terminated */
struct env {
    char          **v;
    size_t          n;
    size_t          cap;
};


static int    child_pipe = -1;
static uid_t  chown_uid;
static gid_t  chown_gid;


void
child_fail(const char *f, ...)
{
    va_list  ap;
    char     msg[512];
    int      len;

    va_start(ap, f);
    len = vsnprintf(msg, sizeof(msg), f, ap);
    va_end(ap);
    if (len < 0) {
        len = 0;
    } else if ((size_t) len >= sizeof(msg)) {
        len = sizeof(msg) - 1;
    }
    if (child_pipe >= 0) {
        (void) !write(child_pipe, msg, len);
    }
    dprintf(2, "dstack-controld: %s\n", msg);
    _exit(121);
}


int
child_run(char *const argv[], const char *input)
{
    pid_t    pid;
    int      p[2] = { -1, -1 }, status;
    size_t   off, len;
    ssize_t  w;

    if (input != NULL && pipe2(p, O_CLOEXEC) != 0) {
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        if (input != NULL) {
            dup2(p[0], 0);
        }
        execvp(argv[0], argv);
        dprintf(2, "dstack-controld: %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (input != NULL) {
        close(p[0]);
        len = strlen(input);
        for (off = 0; off < len; off += w) {
            w = write(p[1], input + off, len - off);
            if (w <= 0) {
                break;
            }
        }
        close(p[1]);
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}


void
child_stdio(int out_fd)
{
    int  fd;

    fd = open("/dev/null", out_fd < 0 ? O_RDWR : O_RDONLY);
    if (fd >= 0) {
        dup2(fd, 0);
    }
    if (out_fd < 0) {
        out_fd = fd;
    }
    if (out_fd >= 0) {
        dup2(out_fd, 1);
        dup2(out_fd, 2);
    }
    /* everything else controld holds (LMDB, the API socket) stays out */
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
}


void
child_begin(int pipe_fd, int log_fd)
{
    sigset_t  all;

    child_pipe = pipe_fd;

    /* a new session: the replica's process group is its pid */
    setsid();
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);

    child_stdio(log_fd);
}


/* a fresh working directory with the run's code and files in it */
static void
child_unpack(const struct replica *rep, const char *work)
{
    /* the code, then the spec's files at their paths under the working
     * directory (dstackctl made them relative: no image, no other place) */
    const char  *what[] = { "code", "files" };
    const char  *hash[] = { rep->run->code, rep->run->files };
    char         archive[4096];
    char        *tar[] = { "tar", "-xzf", archive, "-C", (char *) work,
                           "--no-same-owner", NULL };
    int          i;

    if (work == NULL) {
        child_fail("replica path too long");
    }
    rm_rf(work);
    if (mkdir_p(work, 0755) != 0) {
        child_fail("cannot create %s: %s", work, strerror(errno));
    }
    for (i = 0; i < 2; i++) {
        if (hash[i][0] == '\0') {
            continue;
        }
        if (code_path(hash[i], archive, sizeof(archive)) != 0) {
            child_fail("the %s archive's path is too long", what[i]);
        }
        if (child_run(tar, NULL) != 0) {
            child_fail("cannot unpack the %s archive %s into %s (see the "
                       "log)", what[i], hash[i], work);
        }
    }
    /* the archive's "./" (0755) came with it: the code is for the
     * replica (and a spec's user, who gets it), not for other users */
    if (chmod(work, 0750) != 0) {
        child_fail("cannot close %s: %s", work, strerror(errno));
    }
}


static int
chown_one(const char *path, const struct stat *sb, int flag, struct FTW *f)
{
    (void) sb;
    (void) flag;
    (void) f;
    (void) !lchown(path, chown_uid, chown_gid);
    return 0;
}


/* the spec's user (as root only), who then owns the working directory */
static struct passwd *
child_user(const ds_spec_t *sp, const char *work)
{
    struct passwd  *pw;

    if (sp->user == NULL || geteuid() != 0) {
        return NULL;
    }
    pw = getpwnam(sp->user);
    if (pw == NULL) {
        child_fail("user: no user \"%s\" on the host", sp->user);
    }
    chown_uid = pw->pw_uid;
    chown_gid = pw->pw_gid;
    nftw(work, chown_one, 16, FTW_PHYS);
    return pw;
}


/* working_dir: relative to the code, like the repo dir in dstack */
static void
child_chdir(const ds_spec_t *sp, const char *work)
{
    char  dir[4096];

    if (sp->working_dir != NULL && sp->working_dir[0] == '/') {
        snprintf(dir, sizeof(dir), "%s", sp->working_dir);
    } else if (sp->working_dir != NULL) {
        fmt(dir, sizeof(dir), "%s/%s", work, sp->working_dir);
    } else {
        snprintf(dir, sizeof(dir), "%s", work);
    }
    if (mkdir_p(dir, 0755) != 0 || chdir(dir) != 0) {
        child_fail("working_dir %s: %s", dir, strerror(errno));
    }
}


static void
env_add(struct env *e, const char *k, const char *v)
{
    size_t  len, i, kl;
    char   *s;

    kl = strlen(k);
    len = kl + strlen(v) + 2;
    s = malloc(len);
    if (s == NULL) {
        child_fail("out of memory");
    }
    snprintf(s, len, "%s=%s", k, v);

    /* later values win: DSTACK_* over the spec's */
    for (i = 0; i < e->n; i++) {
        if (strncmp(e->v[i], k, kl) == 0 && e->v[i][kl] == '=') {
            e->v[i] = s;
            return;
        }
    }
    if (e->n + 2 > e->cap) {
        e->cap = e->cap ? e->cap * 2 : 64;
        e->v = realloc(e->v, e->cap * sizeof(char *));
        if (e->v == NULL) {
            child_fail("out of memory");
        }
    }
    e->v[e->n++] = s;
    e->v[e->n] = NULL;
}


static const char *
host_path(void)
{
    return getenv("PATH") ? getenv("PATH") : DEFAULT_PATH;
}


/* "0,1": the replica's GPUs as CUDA counts them */
static void
gpu_list(const struct replica *rep, char *gpus, size_t n)
{
    size_t  off;
    int     i;

    gpus[0] = '\0';
    for (i = 0, off = 0; i < rep->n_gpus && off < n; i++) {
        off += snprintf(gpus + off, n - off, "%s%d", i ? "," : "",
                        rep->gpus[i]);
    }
}


/* a clean environment, then the spec's, then ours */
static void
child_env(const struct child_args *a, const struct passwd *pw,
    const char *gpus, struct env *e)
{
    const struct replica  *rep = a->rep;
    const ds_spec_t       *sp = &rep->run->spec;
    char                   buf[32];
    size_t                 i;

    env_add(e, "PATH", host_path());
    env_add(e, "HOME", pw ? pw->pw_dir
                          : (getenv("HOME") ? getenv("HOME") : "/root"));
    env_add(e, "LANG", "C.UTF-8");
    if (pw != NULL) {
        env_add(e, "USER", pw->pw_name);
    }
    for (i = 0; i < sp->n_env; i++) {
        env_add(e, sp->env[i].name, a->env[i]);
    }
    env_add(e, "DSTACK_RUN_NAME", rep->run->short_name);
    snprintf(buf, sizeof(buf), "%d", rep->num);
    env_add(e, "DSTACK_REPLICA_NUM", buf);
    snprintf(buf, sizeof(buf), "%d", rep->version);
    env_add(e, "DSTACK_REPLICA_VERSION", buf);
    env_add(e, "DSTACK_NODES_NUM", "1");
    env_add(e, "DSTACK_NODE_RANK", "0");
    snprintf(buf, sizeof(buf), "%u", (unsigned) sp->port);
    env_add(e, "DSTACK_PORT", buf);
    env_add(e, "DSTACK_REPLICA_ADDRESS", a->addr);
    snprintf(buf, sizeof(buf), "%d", rep->n_gpus);
    env_add(e, "DSTACK_GPUS_NUM", buf);
    env_add(e, "DSTACK_GPUS_PER_NODE", buf);
    if (rep->n_gpus > 0 || a->host_gpus) {
        /* exclusive: a replica without GPUs sees none */
        env_add(e, "CUDA_VISIBLE_DEVICES", gpus);
        env_add(e, "NVIDIA_VISIBLE_DEVICES", rep->n_gpus ? gpus : "none");
        /* AMD's runtimes (ROCm, HIP) read their own */
        env_add(e, "ROCR_VISIBLE_DEVICES", gpus);
        env_add(e, "HIP_VISIBLE_DEVICES", gpus);
    }
}


/* python and python3 name the version asked for: links to it in
 * <work>.bin, first in PATH */
static void
child_python(const ds_spec_t *sp, const char *work, struct env *e)
{
    char  prog[4096], found[4096], bin[4096];

    snprintf(prog, sizeof(prog), "python%s", sp->python);
    if (find_in_path(prog, found, sizeof(found)) != 0) {
        child_fail("python: no %s on the host", prog);
    }
    fmt(bin, sizeof(bin), "%s.bin", work);
    rm_rf(bin);
    mkdir_p(bin, 0755);
    fmt(prog, sizeof(prog), "%s/python", bin);
    (void) !symlink(found, prog);
    fmt(prog, sizeof(prog), "%s/python3", bin);
    (void) !symlink(found, prog);
    fmt(prog, sizeof(prog), "%s:%s", bin, host_path());
    env_add(e, "PATH", prog);
}


static void
shell_argv(const ds_spec_t *sp, char *script, char *argv[])
{
    if (sp->shell == NULL || strcmp(sp->shell, "bash") == 0) {
        argv[0] = "/bin/bash";
    } else if (strcmp(sp->shell, "sh") == 0) {
        argv[0] = "/bin/sh";
    } else {
        argv[0] = (char *) sp->shell;
    }
    argv[1] = "-c";
    argv[2] = script;
    argv[3] = NULL;
}


void
child_exec(const struct child_args *a)
{
    const ds_spec_t  *sp = &a->rep->run->spec;
    struct passwd    *pw;
    struct env        env = { NULL, 0, 0 };
    char              gpus[256], *script, *argv[64];

    /* unpacked under controld's umask (027: the code is not for other
     * users), working_dir made before the chown so that a spec's user
     * owns it too */
    child_unpack(a->rep, a->work);
    child_chdir(sp, a->work);
    pw = child_user(sp, a->work);

    gpu_list(a->rep, gpus, sizeof(gpus));
    child_env(a, pw, gpus, &env);
    if (sp->python != NULL) {
        child_python(sp, a->work, &env);
    }

    /* images run on the container backend, never here */
    script = spec_script(sp);
    shell_argv(sp, script, argv);

    if (pw != NULL) {
        if (initgroups(pw->pw_name, pw->pw_gid) != 0
            || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
        {
            child_fail("user: cannot become \"%s\": %s", sp->user,
                       strerror(errno));
        }
    }

    /* the replica's own umask: what it creates is as under a login
     * shell or in a container */
    umask(022);
    execve(argv[0], argv, env.v);
    child_fail("cannot run %s: %s", argv[0], strerror(errno));
}
