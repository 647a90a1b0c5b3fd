/*
 * The ssh backend: replicas on the hosts of fleets (fleets.c), reached
 * over SSH (ssh.c, hosts.c) and run there by controld's agent (agent.sh)
 * as supervised processes, each in a network namespace of its own with
 * a port of the host forwarded to it.
 *
 * A replica's placement: a host that is up, of a fleet the spec allows,
 * that matches the spec (offers.c) and has free blocks and GPUs; among
 * those, the one with the fewest replicas of the run, then the fewest
 * busy blocks, so that a service spreads over hosts.
 *
 * Its start: the code and files archives, then the script (environment,
 * directory, commands), each one command over the host's connection.
 * The gateway reaches it at <host address>:<40000 + its network>, or,
 * for a host behind a jump host with no internal_ip, through a port of
 * 127.0.0.1 that the master connection forwards (a tunnel).  Its output
 * follows into replica_log_path() through `tail -F` over SSH.
 *
 * Its end: the host's heartbeat (hosts.c) says when it exited; a host
 * that stops answering loses its replicas at once (they start elsewhere)
 * and, when it answers again, every replica of ours there that is not
 * known any more is released (agent.sh gc).
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "backend.h"
#include "code.h"
#include "config.h"
#include "ds_state.h"
#include "fleets.h"
#include "gpus.h"
#include "hosts.h"
#include "log.h"
#include "offers.h"
#include "run.h"
#include "secrets.h"
#include "spec.h"
#include "ssh.h"
#include "util.h"

#define START_WAIT_MS       60000   /* a step of a replica's start */
#define CODE_WAIT_MS        600000  /* an archive's upload */
#define QUICK_WAIT_MS       10000   /* stop, release, gc */
#define START_GRACE_MS      3000    /* heartbeats may lag a start */

static const struct backend_events  *events;

enum step { STEP_CODE = 0, STEP_FILES, STEP_START, STEP_DONE };

/* what this backend keeps of a replica besides struct replica */
struct rx {
    LIST_ENTRY(rx)  entry;
    struct replica *rep;
    struct ssh_cmd *cmd;                /* its start, step by step */
    int             step;
    pid_t           follower;           /* tail -F of its log */
    int             forwarded;          /* its tunnel is up */
    int64_t         done_ms;            /* its start answered */
};

static LIST_HEAD(, rx)  rxs = LIST_HEAD_INITIALIZER(rxs);


static struct rx *
rx_of(struct replica *rep, int create)
{
    struct rx  *x;

    LIST_FOREACH(x, &rxs, entry) {
        if (x->rep == rep) {
            return x;
        }
    }
    if (!create) {
        return NULL;
    }
    x = xcalloc(1, sizeof(*x));
    x->rep = rep;
    x->follower = -1;
    x->step = STEP_DONE;
    LIST_INSERT_HEAD(&rxs, x, entry);
    return x;
}


static struct fleet_host *
host_of(const struct replica *rep)
{
    return rep->host[0] ? fleet_host_find(rep->host) : NULL;
}


/* the replicas of ours on a host, for the callbacks */
#define EACH_REPLICA_ON(h, r, rep)                                          \
    TAILQ_FOREACH(r, &runs, entry)                                          \
        TAILQ_FOREACH(rep, &(r)->replicas, entry)                           \
            if ((rep)->active && (rep)->backend == &backend_ssh             \
                && strcmp((rep)->host, (h)->id) == 0)


/* ---- logs ------------------------------------------------------------------ */

static void
follower_stop(struct rx *x)
{
    if (x->follower > 0) {
        kill(x->follower, SIGKILL);
        x->follower = -1;
    }
}


/* the replica's log here, opened for appending (its directory made) */
static int
log_open(struct replica *rep, long long *size)
{
    struct stat  st;
    char         path[4096];
    int          fd;

    if (fmt(path, sizeof(path), "%s/%s", conf->replicas_dir, rep->run->name)
        != 0 || mkdir_p(path, 0755) != 0
        || replica_log_path(rep, path, sizeof(path)) != 0)
    {
        return -1;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        log_warn("run \"%s\": replica %d: %s", rep->run->name, rep->num,
                 path);
        return -1;
    }
    (void) chgrp_conf(path);
    *size = fstat(fd, &st) == 0 ? (long long) st.st_size : 0;
    return fd;
}


/*
 * Its log on the host follows into ours, from where ours left it: what
 * we have beyond log_base (our size when this start began) came from
 * there already.
 */
static void
follower_start(struct fleet_host *h, struct replica *rep)
{
    struct rx   *x = rx_of(rep, 1);
    char         remote[1400], *q, *cmd;
    long long    size, from;
    int          fd;

    follower_stop(x);
    fd = log_open(rep, &size);
    if (fd < 0) {
        return;
    }
    if (size < rep->log_base) {
        rep->log_base = size;       /* rotated under us */
    }
    from = size - rep->log_base + 1;
    fmt(remote, sizeof(remote), "%s/r/%s/log", h->dir, rep->tag);
    q = ssh_quote(remote);
    cmd = xcalloc(1, strlen(q) + 64);
    sprintf(cmd, "exec tail -c +%lld -F %s 2>/dev/null", from, q);
    x->follower = ssh_stream(&h->ssh, cmd, fd);
    free(cmd);
    free(q);
    close(fd);
}


/* ---- placement -------------------------------------------------------------- */

/* a fleet the run (of project pkey, "" for main) may be placed on: its
 * project's, not being deleted, named by the spec when it names some */
static int
fleet_allowed(const ds_spec_t *sp, const char *pkey, const struct fleet *f)
{
    size_t  i;

    if (f->deleting || strcmp(f->project, pkey) != 0) {
        return 0;
    }
    if (sp->n_fleets == 0) {
        return 1;
    }
    for (i = 0; i < sp->n_fleets; i++) {
        if (strcmp(sp->fleets[i], f->name) == 0) {
            return 1;
        }
    }
    return 0;
}


/* what the host has, as last discovered, could run the spec */
static int
host_could_fit(const struct fleet_host *h, const ds_spec_t *sp, char *err,
    size_t n)
{
    cJSON  *tmp;
    int     rc;

    if (!h->discovered) {
        fmt(err, n, "%s:%d is %s", h->ssh.hostname, h->ssh.port,
            hosts_status_name(h->status));
        return 0;
    }
    if (sp->image != NULL && h->engine[0] == '\0') {
        fmt(err, n, "%s:%d has no container engine (Docker or Podman) for "
            "image services", h->ssh.hostname, h->ssh.port);
        return 0;
    }
    if (sp->image != NULL && h->tunnel) {
        fmt(err, n, "%s:%d is reached only through its jump host: image "
            "services need its internal_ip", h->ssh.hostname, h->ssh.port);
        return 0;
    }
    if (offers_placement(&h->desc, sp, err, n) != 0) {
        return 0;
    }
    tmp = cJSON_CreateArray();
    rc = offers_match(&h->desc, sp, 1, tmp, err, n);
    cJSON_Delete(tmp);
    return rc == 0;
}


/* the host could run a replica of the spec now, busy or not */
static int
host_fits(const struct fleet_host *h, const ds_spec_t *sp, char *err,
    size_t n)
{
    if (h->status != HOST_UP) {
        fmt(err, n, "%s:%d is %s%s%s", h->ssh.hostname, h->ssh.port,
            hosts_status_name(h->status), h->message[0] ? ": " : "",
            h->message);
        return 0;
    }
    return host_could_fit(h, sp, err, n);
}


static int
host_free_net(const struct fleet_host *h)
{
    struct run      *r;
    struct replica  *rep;
    static uint8_t   used[HOST_NETS_MAX];
    int              i;

    memset(used, 0, sizeof(used));
    EACH_REPLICA_ON(h, r, rep) {
        if (rep->net_index >= 0 && rep->net_index < HOST_NETS_MAX) {
            used[rep->net_index] = 1;
        }
    }
    for (i = 0; i < HOST_NETS_MAX; i++) {
        if (!used[i]) {
            return i;
        }
    }
    return -1;
}


/*
 * The host for a replica: fits, has blocks and GPUs free; fewest
 * replicas of the run, then fewest busy blocks.  NULL, with why in
 * rep->message and *wait set when waiting may help.
 */
static struct fleet_host *
place(struct replica *rep, int *wait)
{
    const ds_spec_t    *sp = &rep->run->spec;
    struct fleet       *f;
    struct fleet_host  *h, *best = NULL;
    struct fleet_host  *checking = NULL;
    int                 i, score, best_score = 0, need, fits = 0, up = 0;
    char                why[256], first[256] = "";

    *wait = 0;
    TAILQ_FOREACH(f, &fleets, entry) {
        if (!fleet_allowed(sp, rep->run->project, f)) {
            continue;
        }
        for (i = 0; i < f->n_hosts; i++) {
            h = &f->hosts[i];
            if (h->status != HOST_FAILED) {
                up += h->status == HOST_UP;
                *wait |= h->status != HOST_UP;
            }
            if (!host_fits(h, sp, why, sizeof(why))) {
                if (first[0] == '\0') {
                    fmt(first, sizeof(first), "%s: %s", h->id, why);
                }
                continue;
            }
            fits++;
            if (!h->gc_done) {
                /* what of ours is there is checked first; the others
                 * wait for it, or a service would pile on the first
                 * host that is done */
                checking = h;
                continue;
            }
            need = fleet_host_blocks_need(h, gpus_per_replica(sp));
            if (fleet_host_blocks_busy(h) + need
                > fleet_host_blocks_total(h))
            {
                continue;
            }
            snprintf(rep->host, sizeof(rep->host), "%s", h->id);
            if (gpus_assign(&h->desc, rep) != 0) {
                continue;
            }
            score = fleet_host_replicas(h, rep->run->name) * 10000
                    + fleet_host_blocks_busy(h);
            if (best == NULL || score < best_score) {
                best = h;
                best_score = score;
            }
        }
    }
    if (checking != NULL) {
        best = NULL;
        rep->host[0] = '\0';
        rep->n_gpus = 0;
        *wait = 1;
        fmt(rep->message, sizeof(rep->message), "waiting for %s to be "
            "checked", checking->id);
        return NULL;
    }
    if (best != NULL) {
        snprintf(rep->host, sizeof(rep->host), "%s", best->id);
        (void) gpus_assign(&best->desc, rep);
        return best;
    }
    rep->host[0] = '\0';
    rep->n_gpus = 0;
    if (fits > 0) {
        *wait = 1;
        fmt(rep->message, sizeof(rep->message), "every fleet host that "
            "fits is busy (no free block or GPU on %d host%s)", fits,
            fits == 1 ? "" : "s");
    } else if (up == 0 && *wait) {
        fmt(rep->message, sizeof(rep->message), "waiting for a fleet host "
            "to be up (%s)", first);
    } else {
        *wait = *wait && fits == 0 && up == 0;
        fmt(rep->message, sizeof(rep->message), "no fleet host fits: %s",
            first[0] ? first : "no fleet");
    }
    return NULL;
}


/* ---- the replica's script ----------------------------------------------------- */

struct buf {
    char           *p;
    size_t          len, cap;
};


static void
put(struct buf *b, const char *s)
{
    size_t  n = strlen(s);

    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            fatal("realloc");
        }
    }
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}


static void
put_env(struct buf *b, const char *k, const char *v)
{
    char  *q = ssh_quote(v);

    put(b, "export ");
    put(b, k);
    put(b, "=");
    put(b, q);
    put(b, "\n");
    free(q);
}


/* environment (the fleet's, the spec's, ours: fenv and senv are the
 * first two with their secrets), directory, commands */
static char *
script(const struct fleet_host *h, const struct replica *rep,
    char *const *fenv, char *const *senv)
{
    const ds_spec_t  *sp = &rep->run->spec;
    struct buf        b = { NULL, 0, 0 };
    char              v[512], work[1200], *q, *cmds;
    size_t            i, off;
    int               g;

    put(&b, "# dstack-controld: replica of run ");
    put(&b, rep->run->name);
    put(&b, "\nexport LANG=C.UTF-8\n");
    for (i = 0; i < h->fleet->spec.n_env; i++) {
        put_env(&b, h->fleet->spec.env[i].name, fenv[i]);
    }
    for (i = 0; i < sp->n_env; i++) {
        put_env(&b, sp->env[i].name, senv[i]);
    }
    put_env(&b, "DSTACK_RUN_NAME", rep->run->short_name);
    snprintf(v, sizeof(v), "%d", rep->num);
    put_env(&b, "DSTACK_REPLICA_NUM", v);
    snprintf(v, sizeof(v), "%d", rep->version);
    put_env(&b, "DSTACK_REPLICA_VERSION", v);
    put_env(&b, "DSTACK_NODES_NUM", "1");
    put_env(&b, "DSTACK_NODE_RANK", "0");
    snprintf(v, sizeof(v), "%u", (unsigned) sp->port);
    put_env(&b, "DSTACK_PORT", v);
    put_env(&b, "DSTACK_REPLICA_ADDRESS", rep->addr);
    snprintf(v, sizeof(v), "%d", rep->n_gpus);
    put_env(&b, "DSTACK_GPUS_NUM", v);
    put_env(&b, "DSTACK_GPUS_PER_NODE", v);
    if (rep->n_gpus > 0 || h->desc.n_gpus > 0) {
        for (g = 0, off = 0, v[0] = '\0'; g < rep->n_gpus; g++) {
            off += (size_t) snprintf(v + off, sizeof(v) - off, "%s%d",
                                     g ? "," : "", rep->gpus[g]);
        }
        put_env(&b, "CUDA_VISIBLE_DEVICES", v);
        put_env(&b, "HIP_VISIBLE_DEVICES", v);
        put_env(&b, "NVIDIA_VISIBLE_DEVICES", rep->n_gpus ? v : "none");
    }

    fmt(work, sizeof(work), "%s/r/%s/work", h->dir, rep->tag);
    if (sp->working_dir != NULL && sp->working_dir[0] == '/') {
        snprintf(work, sizeof(work), "%s", sp->working_dir);
    } else if (sp->working_dir != NULL) {
        fmt(work, sizeof(work), "%s/r/%s/work/%s", h->dir, rep->tag,
            sp->working_dir);
    }
    q = ssh_quote(work);
    put(&b, "mkdir -p ");
    put(&b, q);
    put(&b, " && cd ");
    put(&b, q);
    put(&b, " || exit 1\n");
    free(q);

    cmds = spec_script(sp);
    q = ssh_quote(cmds);
    free(cmds);
    put(&b, "exec ");
    if (sp->user != NULL) {
        char  *u = ssh_quote(sp->user);

        put(&b, "runuser -u ");
        put(&b, u);
        put(&b, " -- ");
        free(u);
    }
    put(&b, sp->shell == NULL || strcmp(sp->shell, "bash") == 0
            ? "/bin/bash" : strcmp(sp->shell, "sh") == 0 ? "/bin/sh"
            : sp->shell);
    put(&b, " -c ");
    put(&b, q);
    put(&b, "\n");
    free(q);
    return b.p;
}


/* ---- starting ------------------------------------------------------------- */

static int start_step(struct rx *x);


/* the setup ended badly: the replica fails (it "exits" at once) */
static void
start_failed(struct rx *x, const char *why)
{
    struct replica  *rep = x->rep;

    x->step = STEP_DONE;
    events->setup_done(rep, why);
    events->exited(rep, -1);
}


static void
start_answer(void *arg, int status, char *out, size_t len)
{
    struct rx          *x = arg;
    struct replica     *rep = x->rep;
    struct fleet_host  *h = host_of(rep);
    char                why[300], *p, *e;
    int                 port;

    (void) len;
    x->cmd = NULL;
    if (h == NULL) {
        start_failed(x, "its host left the fleet");
        return;
    }
    if (status != 0) {
        while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r')) {
            out[--len] = '\0';
        }
        fmt(why, sizeof(why), "on %s:%d: %s", h->ssh.hostname, h->ssh.port,
            status < 0 ? "no answer in time" : out[0] ? out : "failed");
        start_failed(x, why);
        return;
    }
    if (x->step != STEP_START) {
        x->step++;
        if (start_step(x) != 0) {
            fmt(why, sizeof(why), "%s", rep->message);
            start_failed(x, why);
        }
        return;
    }

    /* "address 10.213.0.2:8000" and "pid 1234" */
    p = strstr(out, "address ");
    if (p != NULL) {
        p += 8;
        e = p + strcspn(p, "\r\n");
        snprintf(rep->inner, sizeof(rep->inner), "%.*s", (int) (e - p), p);
    }
    /* its pid on the host: what the API shows, and what probes wait for */
    p = strstr(out, "pid ");
    rep->pid = p != NULL ? (pid_t) atoi(p + 4) : 1;
    x->step = STEP_DONE;
    if (h->tunnel) {
        p = strrchr(rep->inner, ':');
        port = p ? atoi(p + 1) : 0;
        if (p == NULL
            || ssh_forward(&h->ssh, atoi(strrchr(rep->addr, ':') + 1),
                           strndupa(rep->inner, (size_t) (p - rep->inner)),
                           port) != 0)
        {
            start_failed(x, "cannot open its tunnel through the host's SSH "
                         "connection");
            return;
        }
        x->forwarded = 1;
    }
    x->done_ms = now_ms();
    follower_start(h, rep);
    log_info("run \"%s\": replica %d v%d started on %s at %s (%s)",
             rep->run->name, rep->num, rep->version, h->id, rep->addr,
             rep->inner);
    events->setup_done(rep, NULL);
}


static int
archive_path(const char *hash, char *buf, size_t n)
{
    return code_path(hash, buf, n);
}


/*
 * Sends the step x is at: 0, or -1 with why in the replica's message
 * (the caller fails it: start() at once, an answer through the events).
 */
static int
start_step(struct rx *x)
{
    struct replica     *rep = x->rep;
    struct fleet_host  *h = host_of(rep);
    const char         *hash;
    char                args[128], path[4096], *cmd, *text;
    char              **fenv, **senv;
    int                 hport;

    if (h == NULL || h->status != HOST_UP) {
        fmt(rep->message, sizeof(rep->message), "its host is not up any "
            "more");
        return -1;
    }
    while (x->step < STEP_START) {
        hash = x->step == STEP_CODE ? rep->run->code : rep->run->files;
        if (hash[0] != '\0') {
            break;
        }
        x->step++;
    }

    if (x->step < STEP_START) {
        if (archive_path(hash, path, sizeof(path)) != 0) {
            fmt(rep->message, sizeof(rep->message), "archive path too long");
            return -1;
        }
        snprintf(args, sizeof(args), "code %s", rep->tag);
        cmd = hosts_agent_cmd(h, args);
        x->cmd = ssh_run(&h->ssh, cmd, NULL, 0, path, CODE_WAIT_MS,
                         start_answer, x);
        free(cmd);
    } else {
        hport = HOST_PORT_BASE + rep->net_index;
        snprintf(args, sizeof(args), "start %s %d %d %u", rep->tag,
                 rep->net_index, hport, (unsigned) rep->run->spec.port);
        /* the secrets as they are now, on the agent's standard input,
         * never on a command line */
        if (secrets_env("", h->fleet->spec.env, h->fleet->spec.n_env, &fenv,
                        rep->message, sizeof(rep->message)) != 0)
        {
            return -1;
        }
        if (secrets_env(rep->run->project, rep->run->spec.env, rep->run->spec.n_env, &senv,
                        rep->message, sizeof(rep->message)) != 0)
        {
            secrets_env_free(fenv, h->fleet->spec.n_env);
            return -1;
        }
        cmd = hosts_agent_cmd(h, args);
        text = script(h, rep, fenv, senv);
        secrets_env_free(fenv, h->fleet->spec.n_env);
        secrets_env_free(senv, rep->run->spec.n_env);
        x->cmd = ssh_run(&h->ssh, cmd, text, strlen(text), NULL,
                         START_WAIT_MS, start_answer, x);
        explicit_bzero(text, strlen(text));
        free(text);
        free(cmd);
    }
    if (x->cmd == NULL) {
        fmt(rep->message, sizeof(rep->message), "cannot run ssh (or read "
            "the archive to upload)");
        return -1;
    }
    return 0;
}


/* a free port of 127.0.0.1 for a tunnel */
static int
free_local_port(void)
{
    struct sockaddr_in  sa;
    socklen_t           len = sizeof(sa);
    int                 fd, port = -1;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0
        && getsockname(fd, (struct sockaddr *) &sa, &len) == 0)
    {
        port = ntohs(sa.sin_port);
    }
    close(fd);
    return port;
}


static void
new_tag(char *tag, size_t n)
{
    uint8_t  r[6];
    size_t   i;

    if (getrandom(r, sizeof(r), 0) != (ssize_t) sizeof(r)) {
        for (i = 0; i < sizeof(r); i++) {
            r[i] = (uint8_t) random();
        }
    }
    hex_encode(r, sizeof(r), tag);
    tag[n - 1 < 12 ? n - 1 : 12] = '\0';
}


/* a unix socket accepts connections (a local connect: no waiting) */
static int
socket_answers(const char *path)
{
    struct sockaddr_un  sa;
    int                 fd, ok;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        return 0;
    }
    memcpy(sa.sun_path, path, strlen(path));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return 0;
    }
    ok = connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}


/* the host's engine as a unix socket here, through its connection */
static int
engine_forward(struct fleet_host *h)
{
    char  path[108];

    if (h->engine_fwd[0] != '\0') {
        return 0;
    }
    if (fleet_sock_path("e", h->id, path, sizeof(path)) != 0) {
        return -1;
    }
    /* a master of an earlier controld may carry it already */
    if (ssh_forward_socket(&h->ssh, path, h->engine_socket) != 0
        && !socket_answers(path))
    {
        return -1;
    }
    snprintf(h->engine_fwd, sizeof(h->engine_fwd), "%s", path);
    return 0;
}


/*
 * An image on a fleet host: the container backend runs it, on the
 * host's engine through its forwarded socket, publishing its port on the
 * host's network; the replica is the container backend's from now on.
 */
static int
start_image(struct fleet_host *h, struct replica *rep)
{
    if (engine_forward(h) != 0) {
        fmt(rep->message, sizeof(rep->message), "%s: cannot reach its "
            "container engine (%s) through SSH", h->id, h->engine_socket);
        rep->host[0] = '\0';
        rep->n_gpus = 0;
        return BACKEND_WAIT;
    }
    snprintf(rep->engine_sock, sizeof(rep->engine_sock), "%s",
             h->engine_fwd);
    snprintf(rep->inner, sizeof(rep->inner), "%s", h->address);
    rep->engine_podman = strcmp(h->engine, "podman") == 0;
    rep->tag[0] = '\0';
    rep->net_index = -1;
    rep->relayed = 0;
    rep->backend = &backend_container;
    return backend_container.start(rep);
}


static int
ssh_start(struct replica *rep)
{
    struct fleet_host  *h;
    struct rx          *x;
    int                 wait, lport;

    h = place(rep, &wait);
    if (h == NULL) {
        return wait ? BACKEND_WAIT : BACKEND_FAILED;
    }
    if (rep->run->spec.image != NULL) {
        return start_image(h, rep);
    }
    rep->net_index = host_free_net(h);
    if (rep->net_index < 0) {
        fmt(rep->message, sizeof(rep->message), "%s: no free network",
            h->id);
        rep->host[0] = '\0';
        return BACKEND_WAIT;
    }
    new_tag(rep->tag, sizeof(rep->tag));
    rep->inner[0] = '\0';
    rep->container[0] = '\0';
    rep->pid = 0;
    if (h->tunnel) {
        lport = free_local_port();
        if (lport < 0) {
            fmt(rep->message, sizeof(rep->message), "no free local port "
                "for a tunnel");
            rep->host[0] = '\0';
            return BACKEND_WAIT;
        }
        fmt(rep->addr, sizeof(rep->addr), "127.0.0.1:%d", lport);
        rep->relayed = 1;
    } else {
        rep->relayed = 0;
        fmt(rep->addr, sizeof(rep->addr), strchr(h->address, ':')
            ? "[%s]:%d" : "%s:%d", h->address,
            HOST_PORT_BASE + rep->net_index);
    }

    lport = log_open(rep, &rep->log_base);
    if (lport >= 0) {
        close(lport);
    }
    x = rx_of(rep, 1);
    x->step = STEP_CODE;
    x->forwarded = 0;
    x->done_ms = 0;
    if (start_step(x) != 0) {
        /* nothing runs: the reconciler fails it (no events from here) */
        LIST_REMOVE(x, entry);
        free(x);
        rep->host[0] = rep->tag[0] = '\0';
        rep->net_index = -1;
        rep->n_gpus = 0;
        return BACKEND_FAILED;
    }
    return BACKEND_STARTED;
}


/* ---- stopping and releasing ------------------------------------------------ */

static void
quiet_done(void *arg, int status, char *out, size_t len)
{
    struct fleet_host  *h;
    char               *id = arg;

    (void) len;
    h = fleet_host_find(id);
    if (status != 0 && h != NULL) {
        log_warnx("fleet host %s: %.200s", id, out);
    }
    free(id);
}


/* an agent command whose answer is only logged when it failed (the
 * heartbeats tell what became of the replica) */
static void
agent_quiet(struct fleet_host *h, const char *args)
{
    char  *cmd, *id;

    cmd = hosts_agent_cmd(h, args);
    id = xstrdup(h->id);
    if (ssh_run(&h->ssh, cmd, NULL, 0, NULL, QUICK_WAIT_MS, quiet_done, id)
        == NULL)
    {
        free(id);
    }
    free(cmd);
}


/* the gc at a host's (re)connection answered: replicas may go there */
static void
gc_done(void *arg, int status, char *out, size_t len)
{
    struct fleet_host  *h;
    char               *id = arg;

    (void) len;
    h = fleet_host_find(id);
    if (h != NULL) {
        if (status != 0) {
            log_warnx("fleet host %s: gc: %.200s", id, out);
        }
        h->gc_done = 1;
        if (h->status == HOST_UP) {
            log_debug("fleet host %s: checked", id);
        }
    }
    free(id);
}


static void
agent_gc(struct fleet_host *h, const char *args)
{
    char  *cmd, *id;

    h->gc_done = 0;
    cmd = hosts_agent_cmd(h, args);
    id = xstrdup(h->id);
    if (ssh_run(&h->ssh, cmd, NULL, 0, NULL, QUICK_WAIT_MS, gc_done, id)
        == NULL)
    {
        free(id);
        h->gc_done = 1;     /* nothing to wait for */
    }
    free(cmd);
}


static void
ssh_stop(struct replica *rep, int force)
{
    struct fleet_host  *h = host_of(rep);
    struct rx          *x = rx_of(rep, 0);
    char                args[64];

    if (x != NULL && x->cmd != NULL) {
        /* still starting: it ends here */
        ssh_cancel(x->cmd);
        x->cmd = NULL;
        x->step = STEP_DONE;
        events->exited(rep, SIGTERM);
        return;
    }
    if (h == NULL || h->status != HOST_UP) {
        /* nothing to ask: its host will be cleaned when back */
        events->exited(rep, -1);
        return;
    }
    snprintf(args, sizeof(args), "stop %s %s", rep->tag,
             force ? "kill" : "term");
    agent_quiet(h, args);
}


static int
ssh_alive(struct replica *rep)
{
    struct fleet_host  *h = host_of(rep);

    if (h == NULL || rep->tag[0] == '\0') {
        return 0;
    }
    rep->relayed = h->tunnel;
    return 1;
}


static void
ssh_release(struct replica *rep, int final)
{
    struct fleet_host  *h = host_of(rep);
    struct rx          *x = rx_of(rep, 0);
    char                args[64], *p;

    (void) final;
    if (x != NULL) {
        if (x->cmd != NULL) {
            ssh_cancel(x->cmd);
        }
        follower_stop(x);
        if (x->forwarded && h != NULL && (p = strrchr(rep->inner, ':'))) {
            ssh_forward_cancel(&h->ssh, atoi(strrchr(rep->addr, ':') + 1),
                               strndupa(rep->inner,
                                        (size_t) (p - rep->inner)),
                               atoi(p + 1));
        }
        LIST_REMOVE(x, entry);
        free(x);
    }
    if (h != NULL && h->status == HOST_UP && rep->tag[0]) {
        snprintf(args, sizeof(args), "release %s", rep->tag);
        agent_quiet(h, args);
    }
    rep->tag[0] = '\0';
    rep->host[0] = '\0';
    rep->inner[0] = '\0';
    rep->net_index = -1;
    rep->n_gpus = 0;
    rep->pid = 0;
}


/* ---- what hosts tell ----------------------------------------------------------- */

/* "replica TAG running PID" / "exited CODE" / "lost": NULL when absent */
static const char *
status_of(char *lines, const char *tag)
{
    char    key[64];
    char   *p;
    size_t  kl;

    kl = (size_t) snprintf(key, sizeof(key), "replica %s ", tag);
    for (p = lines; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n')
                                                          + 1 : NULL)
    {
        if (strncmp(p, key, kl) == 0) {
            return p + kl;
        }
    }
    return NULL;
}


static void
host_status(struct fleet_host *h, char *lines)
{
    struct run      *r;
    struct replica  *rep, *gone[256];
    struct rx       *x;
    const char      *s;
    int              n = 0, i, code[256];

    EACH_REPLICA_ON(h, r, rep) {
        x = rx_of(rep, 0);
        if ((x != NULL && x->step != STEP_DONE) || n == 256) {
            continue;           /* starting: its answer tells */
        }
        s = status_of(lines, rep->tag);
        if (s != NULL && (strncmp(s, "running", 7) == 0
                          || strncmp(s, "starting", 8) == 0))
        {
            continue;
        }
        /* a heartbeat made before its start answered may not know it */
        if (s == NULL && x != NULL && now_ms() - x->done_ms < START_GRACE_MS)
        {
            continue;
        }
        code[n] = s != NULL && strncmp(s, "exited ", 7) == 0
                  ? (atoi(s + 7) & 0xff) << 8 : SIGKILL;
        gone[n++] = rep;
    }
    for (i = 0; i < n; i++) {
        /* an earlier event may have ended it (a run that gave up) */
        if (!gone[i]->active || strcmp(gone[i]->host, h->id) != 0) {
            continue;
        }
        log_info("run \"%s\": replica %d v%d on %s %s",
                 gone[i]->run->name, gone[i]->num, gone[i]->version, h->id,
                 code[i] == SIGKILL ? "is gone" : "exited");
        events->exited(gone[i], code[i]);
    }
}


static void
host_lost(struct fleet_host *h)
{
    struct run      *r;
    struct replica  *rep, *gone[256];
    struct rx       *x;
    char             why[320];
    int              n = 0, i;

    TAILQ_FOREACH(r, &runs, entry) {
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (rep->active && strcmp(rep->host, h->id) == 0 && n < 256) {
                gone[n++] = rep;
            }
        }
    }
    fmt(why, sizeof(why), "host %s:%d unreachable (%s)", h->ssh.hostname,
        h->ssh.port, h->message);
    for (i = 0; i < n; i++) {
        if (!gone[i]->active || strcmp(gone[i]->host, h->id) != 0) {
            continue;       /* an earlier event ended it */
        }
        if (gone[i]->backend == &backend_container) {
            container_forget(gone[i]);
        }
        x = rx_of(gone[i], 0);
        if (x != NULL) {
            if (x->cmd != NULL) {
                ssh_cancel(x->cmd);
                x->cmd = NULL;
            }
            x->step = STEP_DONE;
            follower_stop(x);
            x->forwarded = 0;
        }
        log_warnx("run \"%s\": replica %d v%d lost: %s", gone[i]->run->name,
                  gone[i]->num, gone[i]->version, why);
        events->setup_done(gone[i], why);
        events->exited(gone[i], -1);
    }
}


/* up again (or first seen after a restart): what is ours there stays,
 * the rest goes; logs follow again; tunnels open again */
static void
host_up(struct fleet_host *h)
{
    struct run      *r;
    struct replica  *rep;
    struct rx       *x;
    struct buf       b = { NULL, 0, 0 };
    char            *p;

    put(&b, "gc");
    EACH_REPLICA_ON(h, r, rep) {
        if (rep->tag[0] == '\0') {
            continue;
        }
        put(&b, " ");
        put(&b, rep->tag);
        x = rx_of(rep, 1);
        if (x->step != STEP_DONE) {
            continue;
        }
        if (h->tunnel && (p = strrchr(rep->inner, ':')) != NULL) {
            x->forwarded = ssh_forward(&h->ssh,
                atoi(strrchr(rep->addr, ':') + 1),
                strndupa(rep->inner, (size_t) (p - rep->inner)),
                atoi(p + 1)) == 0;
        }
        follower_start(h, rep);
    }
    agent_gc(h, b.p);
    free(b.p);

    /* its engine again (the connection is new), and what of ours is
     * there that no replica has */
    if (h->engine[0] != '\0' && !h->tunnel && engine_forward(h) == 0) {
        container_host_gc(h->id, h->engine_fwd);
    }
}


static const struct host_events  host_events = {
    host_up,
    host_status,
    host_lost,
};


/* ---- offers --------------------------------------------------------------- */

static int
ssh_offers(const ds_spec_t *sp, const char *name, int replicas,
    cJSON *offers, char *err, size_t n)
{
    struct fleet  *f;
    ds_str_t       project;
    int            i, found = 0, any = 0;
    char           why[256], first[300] = "";

    /* name is the run's key: its project's fleets only */
    ds_service_project(name, strlen(name), &project);
    TAILQ_FOREACH(f, &fleets, entry) {
        if (!fleet_allowed(sp, project.data, f)) {
            continue;
        }
        for (i = 0; i < f->n_hosts; i++) {
            any++;
            if (!host_fits(&f->hosts[i], sp, why, sizeof(why))) {
                if (first[0] == '\0') {
                    fmt(first, sizeof(first), "%s: %s", f->hosts[i].id, why);
                }
                continue;
            }
            if (offers_match(&f->hosts[i].desc, sp, replicas, offers, why,
                             sizeof(why)) == 0)
            {
                found++;
            }
        }
    }
    if (found > 0) {
        return 0;
    }
    if (any == 0) {
        snprintf(err, n, sp->n_fleets ? "no fleet of those named in "
                 "\"fleets\" exists" : "no fleet: apply a fleet file "
                 "(type: fleet) first");
    } else {
        snprintf(err, n, "no fleet host fits: %s", first);
    }
    return 422;
}


/* ---- the loop --------------------------------------------------------------- */

/* the replica runs on a host of a fleet being deleted */
static int
on_deleting(const struct replica *rep)
{
    struct fleet_host  *h;

    if (!rep->active || rep->host[0] == '\0') {
        return 0;       /* processes and containers of fleet hosts alike */
    }
    h = host_of(rep);
    return h != NULL && h->fleet->deleting;
}


/*
 * Replicas of fleets being deleted leave their hosts one at a time per
 * run, and only while the rest of the run serves in full: the one that
 * drains is replaced (elsewhere) before the next goes.  A run of one
 * replica has a gap: its successor starts once it is gone.
 */
static void
evict_deleting(void)
{
    struct run      *r;
    struct replica  *rep, *next;
    struct fleet    *f;
    int              ready, leaving, any = 0;

    TAILQ_FOREACH(f, &fleets, entry) {
        any |= f->deleting;
    }
    if (!any) {
        return;         /* the common case: nothing to walk */
    }
    TAILQ_FOREACH(r, &runs, entry) {
        ready = leaving = 0;
        next = NULL;
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            ready += replica_ready(rep);
            if (on_deleting(rep)) {
                if (replica_leaving(rep)) {
                    leaving++;
                } else if (next == NULL) {
                    next = rep;
                }
            }
        }
        if (next != NULL && leaving == 0
            && (ready >= r->desired || r->desired <= 1))
        {
            events->evict(next, "its fleet is being deleted");
        }
    }
    fleets_tick();
}


static int
ssh_init(const struct backend_events *ev, char *err, size_t n)
{
    static int  loaded;

    (void) err;
    (void) n;
    events = ev;
    hosts_init(&host_events);
    if (!loaded) {
        loaded = 1;
        fleets_load();
    }
    return 0;
}


static int
ssh_fill_fds(struct pollfd *pfd, int max)
{
    return ssh_fill(pfd, max);
}


static void
ssh_process_fds(struct pollfd *pfd, int n)
{
    ssh_process(pfd, n);
    hosts_tick();
    evict_deleting();
}


static int
ssh_timeout(void)
{
    int  a = ssh_timeout_ms(), b = hosts_timeout_ms();

    if (a < 0) {
        return b;
    }
    return b >= 0 && b < a ? b : a;
}


static int
ssh_reap_child(pid_t pid, int status)
{
    struct rx  *x;

    if (ssh_reap(pid, status) || hosts_reap(pid, status)) {
        return 1;
    }
    LIST_FOREACH(x, &rxs, entry) {
        if (x->follower == pid) {
            x->follower = -1;
            return 1;
        }
    }
    return 0;
}


static void
ssh_gc(void)
{
    /* each host collects when it is up: host_up() */
}


static const char *
ssh_gpu_name(const struct replica *rep, int index)
{
    struct fleet_host  *h = host_of(rep);

    return h != NULL ? offers_gpu_name(&h->desc, index) : "";
}


static const char *
ssh_network(void)
{
    return "ssh";
}


static int
ssh_side_by_side(void)
{
    return 1;
}


const struct backend_ops  backend_ssh = {
    .name = "ssh",
    .init = ssh_init,
    .offers = ssh_offers,
    .start = ssh_start,
    .stop = ssh_stop,
    .alive = ssh_alive,
    .release = ssh_release,
    .reap = ssh_reap_child,
    .gc = ssh_gc,
    .gpu_name = ssh_gpu_name,
    .network = ssh_network,
    .side_by_side = ssh_side_by_side,
    .fill = ssh_fill_fds,
    .process = ssh_process_fds,
    .timeout_ms = ssh_timeout,
};


/* ---- which backend ---------------------------------------------------------- */

static int
ssh_project_has_fleets(const char *pkey)
{
    struct fleet  *f;

    TAILQ_FOREACH(f, &fleets, entry) {
        if (strcmp(f->project, pkey) == 0) {
            return 1;
        }
    }
    return 0;
}


int
backend_ssh_wanted(const ds_spec_t *sp, const char *pkey)
{
    struct fleet  *f;
    size_t         i;
    char           why[256];
    int            j;

    if (sp->n_fleets > 0) {
        return 1;
    }
    for (i = 0; i < sp->n_backends; i++) {
        if (strcmp(sp->backends[i], "ssh") == 0) {
            return sp->n_backends == 1 || ssh_project_has_fleets(pkey);
        }
    }
    if (sp->n_backends > 0) {
        return 0;
    }
    /* any backend: a fleet's host that fits (as it was last seen, even
     * if unreachable now, so that its replicas wait for the fleet rather
     * than land here), else this host */
    TAILQ_FOREACH(f, &fleets, entry) {
        if (strcmp(f->project, pkey) != 0) {
            continue;
        }
        for (j = 0; j < f->n_hosts; j++) {
            if (!f->deleting && host_could_fit(&f->hosts[j], sp, why,
                                               sizeof(why)))
            {
                return 1;
            }
        }
    }
    return 0;
}
