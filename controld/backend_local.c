/*
 * The local backend: replicas are process groups on the controld host.
 *
 * Isolation.  Every replica of a service listens on the same `port`, so
 * when controld runs as root each replica gets its own network namespace
 * (netns.c) with the index-th /30 of `subnet` (10.213.0.0/16), and the
 * gateway reaches the replica at <.2>:<port>.  Without root there are no
 * namespaces: replicas use the host network at 127.0.0.1:<port>, so a
 * run may have one replica only and two runs may not share a port; plan
 * says so (see conf/controld.yml, network).
 *
 * Starting never blocks the loop: start() forks, and the child sets up
 * the namespace (ip -batch), unpacks the code (tar), and execs the shell
 * with the commands (local_child.c).  A close-on-exec pipe tells the
 * loop how that went: EOF means the commands run; a line of text is a
 * setup error.
 *
 * GPUs come from nvidia-smi at start (and SIGHUP, host.c); each replica
 * gets its own GPUs through CUDA_VISIBLE_DEVICES, never shared with
 * another.  What the host has is matched against specs in offers.c.
 */

#define _GNU_SOURCE

#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "backend.h"
#include "config.h"
#include "host.h"
#include "local_child.h"
#include "log.h"
#include "gpus.h"
#include "netns.h"
#include "offers.h"
#include "run.h"
#include "secrets.h"
#include "util.h"


/* a replica being set up: the read end of its exec pipe */
struct setup {
    LIST_ENTRY(setup) entry;
    struct replica *rep;
    int             fd;
    char            msg[512];
    size_t          len;
};


static struct host_desc     host = {
    .backend = "local",
    .region = "local",
    .instance_type = "host",
};
static int                  use_netns;  /* replicas get namespaces */

static LIST_HEAD(, setup)  setups = LIST_HEAD_INITIALIZER(setups);

/* where replicas' news goes (the reconciler's) */
static const struct backend_events  *events;


/* ---- host --------------------------------------------------------------- */

static void
log_host(void)
{
    int  i;

    log_info("local backend: %d CPUs (%s), %llu MB memory, %llu MB disk, "
             "%d GPUs%s%s%s; network: %s", host.cpus, host.machine,
             (unsigned long long) host.memory_mb,
             (unsigned long long) host.disk_mb, host.n_gpus,
             host.n_gpus ? "" : " (", host.n_gpus ? "" : host.gpu_note,
             host.n_gpus ? "" : ")",
             use_netns ? "a network namespace per replica"
                       : "host (one replica per run and port)");
    for (i = 0; i < host.n_gpus; i++) {
        log_info("local backend: GPU %d: %s (%s), %llu MB",
                 host.gpus[i].index, host.gpus[i].name, host.gpus[i].model,
                 (unsigned long long) host.gpus[i].memory_mb);
    }
}


static int
local_init(const struct backend_events *ev, char *err, size_t n)
{
    int  use;

    events = ev;

    netns_init();
    if (host_detect(&host, err, n) != 0) {
        return -1;
    }

    use = netns_choose(err, n);
    if (use < 0) {
        return -1;
    }
    use_netns = use;

    log_host();
    return 0;
}


static const char *
local_gpu_name(const struct replica *rep, int index)
{
    (void) rep;
    return offers_gpu_name(&host, index);
}


static const char *
local_network(void)
{
    return use_netns ? "netns" : "host";
}


/* namespaces: each replica has its own address; host network: the port
 * is the run's, one process at a time */
static int
local_side_by_side(void)
{
    return use_netns;
}


/* ---- offers ------------------------------------------------------------- */

/* where and how: enabled, backends, regions, spot: 0 or 422 */
static int
local_placement(const ds_spec_t *sp, char *err, size_t n)
{
    if (!conf->local.enabled) {
        snprintf(err, n, "no backend is enabled (backends.local.enabled is "
                 "false in %s)", conf->file);
        return 422;
    }
    return offers_placement(&host, sp, err, n);
}


/* without an image, files go into the working directory: none may name
 * a path of its own (-1 with err saying which) */
static int
local_files_placed(const ds_spec_t *sp, char *err, size_t n)
{
    size_t  i;

    for (i = 0; i < sp->n_files; i++) {
        if (sp->files[i].path != NULL) {
            snprintf(err, n, "spec.files[%zu]: a path (\"%.200s\") places "
                     "a file in a container: it needs an image (without "
                     "one, files go into the working directory)", i,
                     sp->files[i].path);
            return -1;
        }
    }
    return 0;
}


/* what the commands run with: an image's runtime, python: 0 or 422 */
static int
offers_software(const ds_spec_t *sp, char *err, size_t n)
{
    char  need[256], prog[4096];

    if (sp->image != NULL) {
        /* backend_for() gives images to the container backend */
        snprintf(err, n, "spec.image: images run on the container "
                 "backend");
        return 422;
    }
    /* what only a container has: refused, never ignored */
    if (sp->n_volumes > 0) {
        snprintf(err, n, "spec.volumes: volumes are mounted into a "
                 "container: they need an image (processes on the host "
                 "see the host's paths as they are)");
        return 422;
    }
    if (sp->privileged) {
        snprintf(err, n, "spec.privileged: applies to a container: it "
                 "needs an image");
        return 422;
    }
    if (local_files_placed(sp, err, n) != 0) {
        return 422;
    }
    if (sp->registry_auth.username != NULL) {
        snprintf(err, n, "spec.registry_auth: is for pulling an image: it "
                 "needs an image");
        return 422;
    }
    if (sp->python != NULL) {
        snprintf(need, sizeof(need), "python%s", sp->python);
        if (find_in_path(need, prog, sizeof(prog)) != 0) {
            snprintf(err, n, "spec.python: \"%s\" needs %s on the host, and "
                     "there is none in PATH (install it, or use an image)",
                     sp->python, need);
            return 422;
        }
    }
    return 0;
}


/* on the host network, replicas and runs may not share a port */
static int
offers_network(const ds_spec_t *sp, const char *name, int replicas,
    char *err, size_t n)
{
    const struct run  *r;

    if (use_netns) {
        return 0;
    }
    if (replicas > 1) {
        snprintf(err, n, "spec.replicas: %d replicas of one service all "
                 "listen on port %u; the local backend separates them with "
                 "network namespaces, which it has only as root with "
                 "CAP_NET_ADMIN (here it uses the host network: one "
                 "replica per run and port)", replicas,
                 (unsigned) sp->port);
        return 422;
    }
    TAILQ_FOREACH(r, &runs, entry) {
        if (!r->finished && r->spec.port == sp->port
            && strcmp(r->name, name) != 0)
        {
            snprintf(err, n, "spec.port: %u is taken by run \"%s\" on the "
                     "host network (without root, the local backend "
                     "runs one replica per port)", (unsigned) sp->port,
                     r->name);
            return 422;
        }
    }
    return 0;
}


static int
local_offers(const ds_spec_t *sp, const char *name, int replicas,
    cJSON *offers, char *err, size_t n)
{
    if (local_placement(sp, err, n) != 0
        || offers_software(sp, err, n) != 0
        || offers_network(sp, name, replicas, err, n) != 0)
    {
        return 422;
    }
    return offers_match(&host, sp, replicas, offers, err, n);
}


/* ---- paths -------------------------------------------------------------- */

static int
work_path(const struct replica *rep, char *buf, size_t n)
{
    return fmt(buf, n, "%s/%s/%d-%d", conf->replicas_dir, rep->run->name,
               rep->num, rep->version);
}


/* ---- start, signal, release --------------------------------------------- */

/* the replica's process: its namespace, then its commands */
static void
start_child(struct replica *rep, int pipe_fd, int log_fd,
    const char *host_ip, const char *ns_ip, char *const *env)
{
    struct child_args  a;
    char               name[256], netns[512], work[4096];

    child_begin(pipe_fd, log_fd);
    netns_name(rep, name, sizeof(name));
    if (rep->net_index >= 0) {
        netns_enter(name, rep->net_index, host_ip, ns_ip);
        snprintf(netns, sizeof(netns), NETNS_DIR "/%s", name);
    }

    a.rep = rep;
    a.addr = rep->net_index >= 0 ? ns_ip : "127.0.0.1";
    a.netns = rep->net_index >= 0 ? netns : NULL;
    a.work = work_path(rep, work, sizeof(work)) == 0 ? work : NULL;
    a.host_gpus = host.n_gpus > 0;
    a.env = env;
    child_exec(&a);
}


/* the replica's GPUs and address: BACKEND_STARTED, or BACKEND_WAIT with
 * rep->message saying what it waits for */
static int
start_assign(struct replica *rep, char *host_ip, char *ns_ip)
{
    rep->n_gpus = 0;
    if (gpus_per_replica(&rep->run->spec) > 0
        && gpus_assign(&host, rep) != 0)
    {
        snprintf(rep->message, sizeof(rep->message),
                 "waiting for a free GPU");
        return BACKEND_WAIT;
    }

    rep->net_index = -1;
    if (use_netns) {
        rep->net_index = netns_alloc();
        if (rep->net_index < 0) {
            snprintf(rep->message, sizeof(rep->message),
                     "no free address in subnet of backends.local");
            return BACKEND_WAIT;
        }
        netns_addrs(rep->net_index, host_ip, ns_ip);
        snprintf(rep->addr, sizeof(rep->addr), "%s:%u", ns_ip,
                 (unsigned) rep->run->spec.port);
    } else {
        snprintf(ns_ip, INET_ADDRSTRLEN, "127.0.0.1");
        snprintf(rep->addr, sizeof(rep->addr), "127.0.0.1:%u",
                 (unsigned) rep->run->spec.port);
    }
    return BACKEND_STARTED;
}


/* the replica's log, opened for its process: the fd, or -1 with
 * rep->message set */
static int
start_log(struct replica *rep)
{
    char  path[4096];
    int   fd;

    /* 0711: a replica with the spec's "user:" passes through to its
     * working directory (its own); others list nothing, and the logs
     * (0640) and other replicas' code (0750) stay closed to them */
    if (fmt(path, sizeof(path), "%s/%s", conf->replicas_dir, rep->run->name)
        != 0 || mkdir_p(path, 0711) != 0 || chmod(path, 0711) != 0)
    {
        fmt(rep->message, sizeof(rep->message), "cannot create %s: %s",
            path, strerror(errno));
        return -1;
    }
    if (replica_log_path(rep, path, sizeof(path)) != 0) {
        snprintf(rep->message, sizeof(rep->message), "path too long");
        return -1;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        fmt(rep->message, sizeof(rep->message), "cannot open %s: %s",
            path, strerror(errno));
        return -1;
    }
    return fd;
}


static int
local_start(struct replica *rep)
{
    char            host_ip[INET_ADDRSTRLEN], ns_ip[INET_ADDRSTRLEN];
    int             rc, log_fd, p[2];
    pid_t           pid;
    struct setup   *s;
    char          **env;
    size_t          n_env = rep->run->spec.n_env;

    /* the secrets it names as they are now: a deleted one fails this
     * replica (the running ones keep what they had) */
    if (secrets_env(rep->run->project, rep->run->spec.env, n_env, &env, rep->message,
                    sizeof(rep->message)) != 0)
    {
        return BACKEND_FAILED;
    }
    rc = start_assign(rep, host_ip, ns_ip);
    if (rc != BACKEND_STARTED) {
        secrets_env_free(env, n_env);
        return rc;
    }
    log_fd = start_log(rep);
    if (log_fd < 0) {
        secrets_env_free(env, n_env);
        return BACKEND_FAILED;
    }
    if (pipe2(p, O_CLOEXEC) != 0) {
        close(log_fd);
        secrets_env_free(env, n_env);
        snprintf(rep->message, sizeof(rep->message), "pipe: %s",
                 strerror(errno));
        return BACKEND_FAILED;
    }

    pid = fork();
    if (pid < 0) {
        close(log_fd);
        close(p[0]);
        close(p[1]);
        secrets_env_free(env, n_env);
        snprintf(rep->message, sizeof(rep->message), "fork: %s",
                 strerror(errno));
        return BACKEND_FAILED;
    }
    if (pid == 0) {
        close(p[0]);
        start_child(rep, p[1], log_fd, host_ip, ns_ip, env);
        _exit(127);
    }

    secrets_env_free(env, n_env);
    close(log_fd);
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);

    rep->pid = pid;
    rep->adopted = 0;
    if (proc_start_time(pid, &rep->pid_start) != 0) {
        rep->pid_start = 0;
    }

    s = xcalloc(1, sizeof(struct setup));
    s->rep = rep;
    s->fd = p[0];
    LIST_INSERT_HEAD(&setups, s, entry);

    log_info("run \"%s\": replica %d (version %d) started: pid %d, %s%s%s",
             rep->run->name, rep->num, rep->version, (int) pid, rep->addr,
             rep->n_gpus ? ", GPUs " : "", rep->n_gpus ? "assigned" : "");
    return BACKEND_STARTED;
}



static void
setup_free(struct setup *s)
{
    LIST_REMOVE(s, entry);
    close(s->fd);
    free(s);
}


static int
local_fill(struct pollfd *pfd, int max)
{
    struct setup  *s;
    int            n = 0;

    LIST_FOREACH(s, &setups, entry) {
        if (n == max) {
            break;
        }
        pfd[n].fd = s->fd;
        pfd[n].events = POLLIN;
        pfd[n].revents = 0;
        n++;
    }
    return n;
}


static void
local_process(struct pollfd *pfd, int n)
{
    struct setup  *s, *next;
    ssize_t        r;
    int            i;

    for (i = 0; i < n; i++) {
        if (pfd[i].revents == 0) {
            continue;
        }
        for (s = LIST_FIRST(&setups); s != NULL; s = next) {
            next = LIST_NEXT(s, entry);
            if (s->fd != pfd[i].fd) {
                continue;
            }
            r = read(s->fd, s->msg + s->len, sizeof(s->msg) - 1 - s->len);
            if (r > 0) {
                s->len += r;
                if (s->len < sizeof(s->msg) - 1) {
                    break;
                }
            } else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
                break;
            }
            /* EOF: exec happened (no message) or the setup failed */
            s->msg[s->len] = '\0';
            events->setup_done(s->rep, s->len ? s->msg : NULL);
            setup_free(s);
            break;
        }
    }
}


/* the replica is going away before its setup finished */
static void
setup_forget(struct replica *rep)
{
    struct setup  *s, *next;

    for (s = LIST_FIRST(&setups); s != NULL; s = next) {
        next = LIST_NEXT(s, entry);
        if (s->rep == rep) {
            setup_free(s);
        }
    }
}


static void
local_stop(struct replica *rep, int force)
{
    int  sig = force ? SIGKILL : SIGTERM;

    if (rep->pid <= 0) {
        return;
    }
    /* an adopted pid could have been reused: check before killing */
    if (rep->adopted) {
        unsigned long long  start;

        if (proc_start_time(rep->pid, &start) != 0
            || (rep->pid_start && start != rep->pid_start))
        {
            return;
        }
    }
    if (kill(-rep->pid, sig) != 0 && errno == ESRCH) {
        kill(rep->pid, sig);
    }
}


static int
local_alive(struct replica *rep)
{
    unsigned long long  start;

    if (rep->pid <= 0 || proc_start_time(rep->pid, &start) != 0) {
        return 0;
    }
    return rep->pid_start == 0 || start == rep->pid_start;
}


/* the cleanup child: never returns */
static void
release_child(const char *netns, int net, const char *work, const char *bin)
{
    sigset_t  all;

    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    child_stdio(-1);

    if (netns != NULL) {
        netns_destroy(netns, net);
    }
    if (work != NULL) {
        rm_rf(work);
    }
    if (bin != NULL) {
        rm_rf(bin);
    }
    _exit(0);
}


/*
 * Cleanup that may take a while (a namespace's strays, a big working
 * directory) runs in a child of its own; the loop reaps it like any
 * other child and ignores its status.
 */
static void
local_release(struct replica *rep, int final)
{
    char   name[256], work[4096], bin[4096];
    pid_t  pid, pgid;
    int    net;

    setup_forget(rep);

    pgid = rep->pid;
    net = rep->net_index;
    netns_name(rep, name, sizeof(name));
    work_path(rep, work, sizeof(work));
    fmt(bin, sizeof(bin), "%s.bin", work);

    /* the leader is gone; the rest of its group goes too (a group
     * outlives its leader, so the id cannot have been reused yet while
     * any member lives) */
    if (pgid > 0) {
        kill(-pgid, SIGKILL);
    }

    rep->pid = 0;
    rep->pid_start = 0;
    rep->n_gpus = 0;
    rep->net_index = -1;

    if (net < 0 && !final) {
        return;
    }

    pid = fork();
    if (pid < 0) {
        log_warn("cannot fork to clean up replica %d of \"%s\"", rep->num,
                 rep->run->name);
        return;
    }
    if (pid == 0) {
        release_child(net >= 0 ? name : NULL, net, final ? work : NULL,
                      final ? bin : NULL);
    }
}


static void
local_gc(void)
{
    if (use_netns) {
        netns_gc();
    }
}


/* a child ended: one of our replicas' process groups (adopted ones are
 * not our children: the reconciler asks alive() about them) */
static int
local_reap(pid_t pid, int status)
{
    struct run      *r;
    struct replica  *rep;

    TAILQ_FOREACH(r, &runs, entry) {
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            /* other backends' pids are not this host's children */
            if (rep->pid == pid && !rep->adopted
                && rep->backend == &backend_local)
            {
                events->exited(rep, status);
                return 1;
            }
        }
    }
    return 0;
}


const struct backend_ops  backend_local = {
    .name = "local",
    .init = local_init,
    .offers = local_offers,
    .start = local_start,
    .stop = local_stop,
    .alive = local_alive,
    .release = local_release,
    .reap = local_reap,
    .gc = local_gc,
    .gpu_name = local_gpu_name,
    .network = local_network,
    .side_by_side = local_side_by_side,
    .fill = local_fill,
    .process = local_process,
};
