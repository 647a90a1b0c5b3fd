/*
 * The hosts of fleets: one master SSH connection each, the agent
 * uploaded and the host discovered at every connection, a heartbeat
 * each second, and the verdict (up, unreachable, failed).  See hosts.h
 * for the timing and why.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "host.h"
#include "hosts.h"
#include "log.h"
#include "ssh.h"
#include "util.h"

/* the agent, built into controld from agent.sh */
extern const char    agent_sh[];
extern const size_t  agent_sh_len;

enum phase {
    PH_WAIT = 0,        /* nothing in flight: connect at next_ms */
    PH_MASTER,          /* the master connection is being made */
    PH_DISCOVER,        /* the agent uploaded, the facts asked */
    PH_UP               /* heartbeats */
};

static const struct host_events  *events;

/* the phase of each host, kept beside it: hosts.c's business only */
struct host_conn {
    struct fleet_host  *h;
    int                 phase;
};

#define CONNS_MAX       4096
static struct host_conn  conns[CONNS_MAX];
static int               n_conns;


void
hosts_init(const struct host_events *ev)
{
    events = ev;
}


static struct host_conn *
conn_of(struct fleet_host *h)
{
    int  i;

    for (i = 0; i < n_conns; i++) {
        if (conns[i].h == h) {
            return &conns[i];
        }
    }
    if (n_conns == CONNS_MAX) {
        return NULL;
    }
    conns[n_conns].h = h;
    conns[n_conns].phase = PH_WAIT;
    return &conns[n_conns++];
}


static void
set_status(struct fleet_host *h, int status, const char *msg)
{
    if (h->status != status || strcmp(h->message, msg) != 0) {
        if (h->status != status) {
            h->since_ms = now_ms();
            log_info("fleet \"%s\": host %s:%d %s%s%s", h->fleet->name,
                     h->ssh.hostname, h->ssh.port,
                     hosts_status_name(status), msg[0] ? ": " : "",
                     msg);
        }
        h->status = status;
        snprintf(h->message, sizeof(h->message), "%s", msg);
    }
}


/* ---- the master connection ---------------------------------------------- */

static void
master_kill(struct fleet_host *h)
{
    if (h->master > 0) {
        kill(h->master, SIGKILL);   /* it would unlink a successor's socket */
        h->master = -1;
    } else {
        ssh_master_stop(&h->ssh);
    }
    (void) unlink(h->ssh.ctl);
}


/* the last lines the master wrote: why it ended */
static void
master_error(struct fleet_host *h, char *buf, size_t n)
{
    ssize_t  r;
    char    *p, *line;

    buf[0] = '\0';
    if (h->master_err < 0) {
        return;
    }
    r = pread(h->master_err, buf, n - 1, 0);
    if (r <= 0) {
        buf[0] = '\0';
        return;
    }
    buf[r] = '\0';
    /* the line that says it (a changed key is a banner of many lines) */
    if (strstr(buf, "REMOTE HOST IDENTIFICATION HAS CHANGED") != NULL) {
        p = strstr(buf, "SHA256:");
        line = p ? strndup(p, strcspn(p, ".\r\n")) : NULL;
        snprintf(buf, n, "the host key changed since it was pinned "
                 "(it now offers %s): refused; if the host was reinstalled, "
                 "delete the fleet and apply it again", line ? line : "?");
        free(line);
        return;
    }
    while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == '\r')) {
        buf[--r] = '\0';
    }
    p = strrchr(buf, '\n');
    if (p != NULL) {
        memmove(buf, p + 1, strlen(p + 1) + 1);
    }
}


static int
master_refused(const char *why)
{
    return strstr(why, "host key") != NULL
           || strstr(why, "Host key") != NULL
           || strstr(why, "Permission denied") != NULL
           || strstr(why, "Too many authentication") != NULL;
}


static void
master_start(struct fleet_host *h, struct host_conn *c)
{
    char  path[4200];

    if (h->master_err < 0) {
        fmt(path, sizeof(path), "%s.log", h->ssh.ctl);
        h->master_err = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    }
    if (h->master_err >= 0) {
        (void) ftruncate(h->master_err, 0);
        (void) lseek(h->master_err, 0, SEEK_SET);
    }
    if (ssh_master_alive(&h->ssh)) {
        /* an earlier controld's: it still carries forwarded ports */
        log_info("fleet \"%s\": host %s:%d: reusing its connection",
                 h->fleet->name, h->ssh.hostname, h->ssh.port);
        h->master = -1;
    } else {
        h->master = ssh_master(&h->ssh, h->master_err);
    }
    c->phase = PH_MASTER;
    h->next_ms = now_ms() + HOST_DISCOVER_WAIT_MS;
}


/* ---- discovery ----------------------------------------------------------- */

static int
arch_of(const char *machine)
{
    if (strcmp(machine, "x86_64") == 0 || strcmp(machine, "amd64") == 0) {
        return DS_SPEC_ARCH_X86;
    }
    if (strcmp(machine, "aarch64") == 0 || strcmp(machine, "arm64") == 0) {
        return DS_SPEC_ARCH_ARM;
    }
    return DS_SPEC_ARCH_ANY;
}


/* "key value" lines of the agent's facts into the host */
static void
facts_parse(struct fleet_host *h, char *out)
{
    struct host_desc  *d = &h->desc;
    char              *line, *save, *v;
    char               engine[16] = "", sock[256] = "";

    memset(d, 0, sizeof(*d));
    d->backend = "ssh";
    d->region = h->fleet->name;
    d->instance_type = h->ssh.hostname;
    h->netns = 0;
    h->isolation_note[0] = '\0';

    for (line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save))
    {
        v = strchr(line, ' ');
        if (v == NULL) {
            continue;
        }
        *v++ = '\0';
        if (strcmp(line, "dir") == 0) {
            snprintf(h->dir, sizeof(h->dir), "%s", v);
        } else if (strcmp(line, "machine") == 0) {
            snprintf(d->machine, sizeof(d->machine), "%s", v);
            d->arch = arch_of(v);
        } else if (strcmp(line, "cpus") == 0) {
            d->cpus = atoi(v);
        } else if (strcmp(line, "memory_mb") == 0) {
            d->memory_mb = strtoull(v, NULL, 10);
        } else if (strcmp(line, "disk_mb") == 0) {
            d->disk_mb = strtoull(v, NULL, 10);
        } else if (strcmp(line, "disk_path") == 0) {
            snprintf(d->disk_path, sizeof(d->disk_path), "%s", v);
        } else if (strcmp(line, "gpu") == 0 && d->n_gpus < HOST_GPUS_MAX) {
            if (strncmp(v, "nvidia ", 7) == 0
                && host_gpu_parse(v + 7, DS_SPEC_VENDOR_NVIDIA,
                                  &d->gpus[d->n_gpus]) == 0)
            {
                d->n_gpus++;
            } else if (strncmp(v, "amd ", 4) == 0
                       && host_gpu_parse(v + 4, DS_SPEC_VENDOR_AMD,
                                         &d->gpus[d->n_gpus]) == 0)
            {
                d->n_gpus++;
            }
        } else if (strcmp(line, "engine") == 0) {
            if (sscanf(v, "%15s %255s", engine, sock) != 2) {
                engine[0] = sock[0] = '\0';
            }
        } else if (strcmp(line, "isolation") == 0) {
            h->netns = strncmp(v, "netns", 5) == 0;
            if (!h->netns) {
                snprintf(h->isolation_note, sizeof(h->isolation_note), "%s",
                         strncmp(v, "host ", 5) == 0 ? v + 5 : v);
            }
        }
    }
    snprintf(h->engine, sizeof(h->engine), "%s", engine);
    snprintf(h->engine_socket, sizeof(h->engine_socket), "%s", sock);
    if (d->n_gpus == 0) {
        snprintf(d->gpu_note, sizeof(d->gpu_note),
                 "neither nvidia-smi nor rocm-smi lists a GPU");
    }
}


static void lost(struct fleet_host *h, const char *why);
static void watch(struct fleet_host *h);


static void
discovered(void *arg, int status, char *out, size_t len)
{
    struct fleet_host  *h = arg;
    struct host_conn   *c = conn_of(h);
    char                why[256];

    (void) len;
    h->cmd = NULL;
    if (status != 0 || strstr(out, "agent ") == NULL) {
        fmt(why, sizeof(why), "discovery failed (%s): %.160s",
            status < 0 ? "no answer" : "the agent failed",
            out[0] ? out : "no output");
        lost(h, why);
        return;
    }
    facts_parse(h, out);
    h->discovered = 1;
    if (!h->netns) {
        fmt(why, sizeof(why), "replicas need a network namespace each: "
            "%s", h->isolation_note);
        master_kill(h);
        set_status(h, HOST_FAILED, why);
        c->phase = PH_WAIT;
        h->next_ms = now_ms() + HOST_FAILED_RETRY_MS;
        events->lost(h);
        return;
    }
    set_status(h, HOST_UP, "");
    c->phase = PH_UP;
    watch(h);
    if (c->phase == PH_UP) {
        events->up(h);
    }
}


static void
discover(struct fleet_host *h, struct host_conn *c)
{
    static const char  *install =
        "umask 077; d=\"${DSTACK_HOST_DIR:-$HOME/.dstack/host}\"; "
        "mkdir -p \"$d\" && cat > \"$d/agent.sh.new\" "
        "&& mv \"$d/agent.sh.new\" \"$d/agent.sh\" "
        "&& echo \"dir $d\" && exec sh \"$d/agent.sh\" facts";

    log_debug("fleet \"%s\": host %s:%d: discovering", h->fleet->name,
              h->ssh.hostname, h->ssh.port);
    h->cmd = ssh_run(&h->ssh, install, agent_sh, agent_sh_len, NULL,
                     HOST_DISCOVER_WAIT_MS, discovered, h);
    if (h->cmd == NULL) {
        lost(h, "cannot run ssh");
        return;
    }
    c->phase = PH_DISCOVER;
}


/* ---- heartbeats ---------------------------------------------------------- */

char *
hosts_agent_cmd(const struct fleet_host *h, const char *args)
{
    char    path[1100], *q, *cmd;
    size_t  n;

    fmt(path, sizeof(path), "%s/agent.sh", h->dir);
    q = ssh_quote(path);
    n = strlen(q) + strlen(args) + 8;
    cmd = xcalloc(1, n);
    snprintf(cmd, n, "sh %s %s", q, args);
    free(q);
    return cmd;
}


static void
heartbeat(void *arg, char *block)
{
    struct fleet_host  *h = arg;

    if (strncmp(block, "agent ", 6) == 0) {
        h->beat_ms = now_ms();
        events->status(h, block);
    }
}


static void
watch_ended(void *arg, int status, char *out, size_t len)
{
    struct fleet_host  *h = arg;
    char                why[256];

    (void) len;
    h->cmd = NULL;
    fmt(why, sizeof(why), "its session ended (%d: %.160s)", status,
        out[0] ? out : "no message");
    lost(h, why);
}


static void
watch(struct fleet_host *h)
{
    char  *cmd;

    cmd = hosts_agent_cmd(h, "watch");
    h->cmd = ssh_watch(&h->ssh, cmd, heartbeat, watch_ended, h);
    free(cmd);
    /* a new session takes what the login shell takes: the first beat
     * has longer */
    h->beat_ms = now_ms() + HOST_FIRST_BEAT_MS - HOST_SILENCE_MS;
    if (h->cmd == NULL) {
        lost(h, "cannot run ssh");
    }
}


/* ---- losing and connecting ---------------------------------------------- */

static void
lost(struct fleet_host *h, const char *why)
{
    struct host_conn  *c = conn_of(h);

    if (h->cmd != NULL) {
        ssh_cancel(h->cmd);
        h->cmd = NULL;
    }
    master_kill(h);
    h->gc_done = 0;
    h->engine_fwd[0] = '\0';
    c->phase = PH_WAIT;
    if (master_refused(why)) {
        set_status(h, HOST_FAILED, why);
        h->next_ms = now_ms() + HOST_FAILED_RETRY_MS;
    } else {
        set_status(h, HOST_UNREACHABLE, why);
        h->next_ms = now_ms() + HOST_RETRY_MS;
    }
    /* its replicas go, those adopted after a restart included (the host
     * may never have answered this controld) */
    events->lost(h);
}


void
hosts_connect(struct fleet_host *h)
{
    struct host_conn  *c = conn_of(h);

    if (c == NULL) {
        set_status(h, HOST_FAILED, "too many hosts");
        return;
    }
    if (h->status == HOST_FAILED) {
        /* a refused host is tried again when its fleet is applied */
        if (h->cmd != NULL) {
            ssh_cancel(h->cmd);
            h->cmd = NULL;
        }
        master_kill(h);
        c->phase = PH_WAIT;
    }
    if (c->phase == PH_WAIT) {
        /* a new host, or one loaded at start: a master of an earlier
         * controld is reused (master_start), with its tunnels */
        set_status(h, HOST_CONNECTING, "");
        h->next_ms = now_ms();
    }
}


const char *
hosts_status_name(int status)
{
    switch (status) {
    case HOST_UP:           return "up";
    case HOST_UNREACHABLE:  return "unreachable";
    case HOST_FAILED:       return "failed";
    default:                return "connecting";
    }
}


void
hosts_move(struct fleet_host *from, struct fleet_host *to)
{
    int  i;

    for (i = 0; i < n_conns; i++) {
        if (conns[i].h == from) {
            conns[i].h = to;
        }
    }
    if (to->cmd != NULL) {
        ssh_rearg(to->cmd, to);
    }
}


void
hosts_forget(struct fleet_host *h)
{
    int  i;

    if (h->cmd != NULL) {
        ssh_cancel(h->cmd);
        h->cmd = NULL;
    }
    master_kill(h);
    if (h->master_err >= 0) {
        close(h->master_err);
        h->master_err = -1;
    }
    for (i = 0; i < n_conns; i++) {
        if (conns[i].h == h) {
            conns[i] = conns[--n_conns];
            break;
        }
    }
}


static void
host_tick(struct fleet_host *h, struct host_conn *c, int64_t now)
{
    char  why[512];

    switch (c->phase) {

    case PH_WAIT:
        if (now >= h->next_ms) {
            master_start(h, c);
        }
        return;

    case PH_MASTER:
        if (access(h->ssh.ctl, F_OK) == 0) {
            discover(h, c);
        } else if (h->master < 0 && !ssh_master_alive(&h->ssh)) {
            master_error(h, why, sizeof(why));
            lost(h, why[0] ? why : "the connection failed");
        } else if (now >= h->next_ms) {
            lost(h, "no connection in time");
        }
        return;

    case PH_DISCOVER:
        return;         /* its command answers */

    case PH_UP:
        if (now - h->beat_ms >= HOST_SILENCE_MS) {
            fmt(why, sizeof(why), "no heartbeat for %lld ms",
                (long long) (now - h->beat_ms));
            lost(h, why);
        }
        return;
    }
}


void
hosts_tick(void)
{
    int64_t  now = now_ms();
    int      i;

    for (i = 0; i < n_conns; i++) {
        host_tick(conns[i].h, &conns[i], now);
    }
}


int
hosts_timeout_ms(void)
{
    int64_t  now = now_ms(), t, best = -1;
    int      i;

    for (i = 0; i < n_conns; i++) {
        switch (conns[i].phase) {
        case PH_MASTER:
            t = 50;         /* its socket appears */
            break;
        case PH_DISCOVER:
            continue;
        case PH_UP:
            t = conns[i].h->beat_ms + HOST_SILENCE_MS - now;
            break;
        default:
            t = conns[i].h->next_ms - now;
        }
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
hosts_reap(pid_t pid, int status)
{
    char  why[512];
    int   i;

    (void) status;
    for (i = 0; i < n_conns; i++) {
        struct fleet_host  *h = conns[i].h;

        if (h->master != pid) {
            continue;
        }
        h->master = -1;
        master_error(h, why, sizeof(why));
        if (conns[i].phase != PH_WAIT) {
            lost(h, why[0] ? why : "the connection ended");
        }
        return 1;
    }
    return 0;
}
