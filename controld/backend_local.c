/*
 * The local backend: replicas are process groups on the controld host.
 *
 * Isolation.  Every replica of a service listens on the same `port`, so
 * when controld runs as root each replica gets its own network namespace
 * "dstack-<tag>-<run>-<num>-<index>" joined to the host by a veth pair
 * ("ds<tag>h<index>" / "ds<tag>n<index>") with the index-th /30 of
 * `subnet` (10.213.0.0/16): the host side is .1, the replica .2, and the
 * gateway reaches the replica at <.2>:<port>.  <tag> is 4 hex digits of
 * the state directory's hash: two controlds on one host (tests in
 * parallel) never touch each other's namespaces.  Without root there
 * are no namespaces: replicas use the host network at 127.0.0.1:<port>,
 * so a run may have one replica only and two runs may not share a port;
 * plan says so (see conf/controld.yml, network).
 *
 * Starting never blocks the loop: start() forks, and the child sets up
 * the namespace (ip -batch), unpacks the code (tar), and execs the shell
 * with the commands.  A close-on-exec pipe tells the loop how that went:
 * EOF means the commands run; a line of text is a setup error.
 *
 * GPUs come from nvidia-smi at start (and SIGHUP); each replica gets its
 * own GPUs through CUDA_VISIBLE_DEVICES, never shared with another.
 */

#define _GNU_SOURCE

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include "backend.h"
#include "config.h"
#include "log.h"
#include "run.h"
#include "spec.h"
#include "util.h"


#define LOCAL_GPUS_MAX      64
#define NETNS_DIR           "/var/run/netns"
#define DEFAULT_PATH        "/usr/local/sbin:/usr/local/bin:/usr/sbin:" \
                            "/usr/bin:/sbin:/bin"

struct host_gpu {
    int             index;
    char            name[96];           /* as nvidia-smi says */
    char            model[32];          /* "H100", "A100", "RTX4090" */
    uint64_t        memory_mb;
};

static struct {
    int             cpus;
    int             arch;               /* DS_SPEC_ARCH_* */
    char            machine[32];
    uint64_t        memory_mb;
    uint64_t        disk_mb;
    struct host_gpu gpus[LOCAL_GPUS_MAX];
    int             n_gpus;
    char            gpu_note[128];      /* why there are none */
    int             netns;              /* replicas get namespaces */
    int             next_net;           /* round robin over /30s */
    char            tag[8];             /* this controld's names */
    int             runtime_ok;         /* podman or a live docker */
    char            runtime[4096];
    char            runtime_note[200];
} host;

/* a replica being set up: the read end of its exec pipe */
struct setup {
    LIST_ENTRY(setup) entry;
    struct replica *rep;
    int             fd;
    char            msg[512];
    size_t          len;
};

static LIST_HEAD(, setup)  setups = LIST_HEAD_INITIALIZER(setups);

/* where replicas' news goes (the reconciler's) */
static const struct backend_events  *events;


/* ---- host --------------------------------------------------------------- */

static int
find_in_path(const char *prog, char *out, size_t n)
{
    const char  *path, *p, *e;
    char         buf[4096];

    if (strchr(prog, '/') != NULL) {
        if (access(prog, X_OK) == 0) {
            snprintf(out, n, "%s", prog);
            return 0;
        }
        return -1;
    }
    path = getenv("PATH");
    if (path == NULL || *path == '\0') {
        path = DEFAULT_PATH;
    }
    for (p = path; *p; p = *e ? e + 1 : e) {
        e = strchr(p, ':');
        if (e == NULL) {
            e = p + strlen(p);
        }
        if (e == p) {
            continue;
        }
        snprintf(buf, sizeof(buf), "%.*s/%s", (int) (e - p), p, prog);
        if (access(buf, X_OK) == 0) {
            snprintf(out, n, "%s", buf);
            return 0;
        }
    }
    return -1;
}


/* "NVIDIA A100-SXM4-80GB" -> "A100", "NVIDIA GeForce RTX 4090" ->
 * "RTX4090", "Tesla T4" -> "T4": dstack's GPU names */
static void
gpu_model(const char *name, char *out, size_t n)
{
    char         buf[96], *tok, *save;
    size_t       off = 0;

    snprintf(buf, sizeof(buf), "%s", name);
    out[0] = '\0';
    for (tok = strtok_r(buf, " -", &save); tok != NULL;
         tok = strtok_r(NULL, " -", &save))
    {
        if (strcasecmp(tok, "NVIDIA") == 0 || strcasecmp(tok, "Tesla") == 0
            || strcasecmp(tok, "GeForce") == 0
            || strcasecmp(tok, "Quadro") == 0)
        {
            continue;
        }
        /* "80GB", "PCIe", "SXM4", "HBM3", "NVL": the form, not the model */
        if (strcasestr(tok, "GB") || strncasecmp(tok, "PCIE", 4) == 0
            || strncasecmp(tok, "SXM", 3) == 0
            || strncasecmp(tok, "HBM", 3) == 0
            || strcasecmp(tok, "NVL") == 0)
        {
            if (off > 0) {
                break;
            }
            continue;
        }
        off += snprintf(out + off, n > off ? n - off : 0, "%s", tok);
        if (off >= n) {
            break;
        }
    }
}


static void
detect_gpus(void)
{
    FILE   *fp;
    char    line[512], cmd[1024], *name, *mem, *end;
    long    idx;
    struct host_gpu  *g;

    host.n_gpus = 0;
    host.gpu_note[0] = '\0';

    if (!conf->local.gpus) {
        snprintf(host.gpu_note, sizeof(host.gpu_note),
                 "GPU detection is off in %s", conf->file);
        return;
    }
    if (find_in_path(conf->local.nvidia_smi, cmd, sizeof(cmd)) != 0) {
        snprintf(host.gpu_note, sizeof(host.gpu_note), "%s not found",
                 conf->local.nvidia_smi);
        return;
    }

    snprintf(cmd, sizeof(cmd), "%s --query-gpu=index,name,memory.total "
             "--format=csv,noheader,nounits 2>/dev/null",
             conf->local.nvidia_smi);
    fp = popen(cmd, "r");
    if (fp == NULL) {
        snprintf(host.gpu_note, sizeof(host.gpu_note), "%s failed: %s",
                 conf->local.nvidia_smi, strerror(errno));
        return;
    }
    while (fgets(line, sizeof(line), fp) != NULL
           && host.n_gpus < LOCAL_GPUS_MAX)
    {
        /* "0, NVIDIA H100 80GB HBM3, 81559" */
        idx = strtol(line, &end, 10);
        if (end == line || *end != ',') {
            continue;
        }
        name = end + 1;
        while (*name == ' ') {
            name++;
        }
        mem = strrchr(name, ',');
        if (mem == NULL) {
            continue;
        }
        *mem++ = '\0';
        g = &host.gpus[host.n_gpus++];
        g->index = (int) idx;
        snprintf(g->name, sizeof(g->name), "%s", name);
        gpu_model(g->name, g->model, sizeof(g->model));
        g->memory_mb = strtoull(mem, NULL, 10);
    }
    if (pclose(fp) != 0 && host.n_gpus == 0) {
        snprintf(host.gpu_note, sizeof(host.gpu_note), "%s failed",
                 conf->local.nvidia_smi);
    } else if (host.n_gpus == 0) {
        snprintf(host.gpu_note, sizeof(host.gpu_note), "%s lists no GPU",
                 conf->local.nvidia_smi);
    }
}


static int child_run(char *const argv[], const char *input);
static void detect_runtime(void);
static void netns_remove(const char *name);


/*
 * Root is not enough in a container without CAP_SYS_ADMIN/NET_ADMIN:
 * try what a replica's setup does (a namespace, a veth pair into it) at
 * start, under names of its own, twice before giving up.
 */
static int
netns_probe_once(char *why, size_t n)
{
    char     batch[512], name[64], out[4096], line[256];
    char    *argv[] = { "ip", "-batch", "-", NULL };
    pid_t    pid;
    int      status, fd;
    FILE    *fp;
    unsigned id;

    id = (unsigned) getpid() % 100000;
    snprintf(name, sizeof(name), "dstack-%s-probe%u", host.tag, id);
    snprintf(batch, sizeof(batch),
             "netns add %s\n"
             "link add ds%sp%u type veth peer name ds%sq%u netns %s\n"
             "netns del %s\n", name, host.tag, id, host.tag, id, name, name);
    fmt(out, sizeof(out), "%s/.netns-probe.log", conf->replicas_dir);

    pid = fork();
    if (pid < 0) {
        snprintf(why, n, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        netns_remove(name);
        _exit(child_run(argv, batch) == 0 ? 0 : 1);
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        /* again */
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        unlink(out);
        return 0;
    }

    line[0] = '\0';
    fp = fopen(out, "r");
    if (fp != NULL) {
        if (fgets(line, sizeof(line), fp) == NULL) {
            line[0] = '\0';
        }
        fclose(fp);
    }
    line[strcspn(line, "\n")] = '\0';
    unlink(out);
    snprintf(why, n, "ip: %s", line[0] ? line : "failed");
    return -1;
}


static int
netns_probe(char *why, size_t n)
{
    if (netns_probe_once(why, n) == 0) {
        return 0;
    }
    usleep(200 * 1000);
    return netns_probe_once(why, n);
}


static int
local_init(const struct backend_events *ev, char *err, size_t n)
{
    struct utsname   u;
    struct statvfs   vfs;
    FILE            *fp;
    char             line[256], ip[4096];
    unsigned long long kb;
    long             cpus;
    int              i;
    uint8_t          digest[32];
    char             why[128];

    events = ev;

    /* names of namespaces and interfaces carry a tag of the state, so
     * that several controlds on one host (tests) keep to their own */
    ds_sha256(conf->state_dir, strlen(conf->state_dir), digest);
    hex_encode(digest, 2, host.tag);
    if (host.next_net == 0) {
        host.next_net = (int) (((unsigned) digest[2] << 8 | digest[3])
                               % (1U << (32 - conf->local.subnet_bits - 2)));
    }

    cpus = sysconf(_SC_NPROCESSORS_ONLN);
    host.cpus = cpus > 0 ? (int) cpus : 1;

    host.arch = DS_SPEC_ARCH_ANY;
    if (uname(&u) == 0) {
        fmt(host.machine, sizeof(host.machine), "%s", u.machine);
        if (strcmp(u.machine, "x86_64") == 0 || strcmp(u.machine, "i686") == 0)
        {
            host.arch = DS_SPEC_ARCH_X86;
        } else if (strncmp(u.machine, "aarch64", 7) == 0
                   || strncmp(u.machine, "arm", 3) == 0)
        {
            host.arch = DS_SPEC_ARCH_ARM;
        }
    }

    host.memory_mb = 0;
    fp = fopen("/proc/meminfo", "r");
    if (fp != NULL) {
        while (fgets(line, sizeof(line), fp) != NULL) {
            if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) {
                host.memory_mb = kb / 1024;
                break;
            }
        }
        fclose(fp);
    }

    if (mkdir_p(conf->replicas_dir, 0755) != 0) {
        snprintf(err, n, "replicas_dir %s: %s", conf->replicas_dir,
                 strerror(errno));
        return -1;
    }
    /* the size of the disk replicas write to, not what is free now: a
     * request like "disk: 100GB.." asks what the machine has */
    host.disk_mb = 0;
    if (statvfs(conf->replicas_dir, &vfs) == 0) {
        host.disk_mb = (uint64_t) vfs.f_blocks * vfs.f_frsize
                       / (1024 * 1024);
    }

    detect_gpus();
    detect_runtime();

    switch (conf->local.network) {
    case NET_NETNS:
        if (geteuid() != 0) {
            snprintf(err, n, "backends.local.network: netns needs root "
                     "(controld runs as uid %d)", (int) geteuid());
            return -1;
        }
        if (find_in_path("ip", ip, sizeof(ip)) != 0) {
            snprintf(err, n, "backends.local.network: netns needs the ip "
                     "command (Debian package iproute2)");
            return -1;
        }
        host.netns = 1;
        break;
    case NET_HOST:
        host.netns = 0;
        break;
    default:
        host.netns = geteuid() == 0 && find_in_path("ip", ip, sizeof(ip)) == 0
                     && netns_probe(why, sizeof(why)) == 0;
        if (!host.netns && geteuid() == 0) {
            log_warnx("local backend: network namespaces do not work here "
                      "(%s): replicas use the host network, one per run "
                      "and port", why);
        }
        break;
    }

    log_info("local backend: %d CPUs (%s), %llu MB memory, %llu MB disk, "
             "%d GPUs%s%s%s; network: %s", host.cpus, host.machine,
             (unsigned long long) host.memory_mb,
             (unsigned long long) host.disk_mb, host.n_gpus,
             host.n_gpus ? "" : " (", host.n_gpus ? "" : host.gpu_note,
             host.n_gpus ? "" : ")",
             host.netns ? "a network namespace per replica"
                        : "host (one replica per run and port)");
    for (i = 0; i < host.n_gpus; i++) {
        log_info("local backend: GPU %d: %s (%s), %llu MB",
                 host.gpus[i].index, host.gpus[i].name, host.gpus[i].model,
                 (unsigned long long) host.gpus[i].memory_mb);
    }
    return 0;
}


static const char *
local_gpu_name(int index)
{
    int  i;

    for (i = 0; i < host.n_gpus; i++) {
        if (host.gpus[i].index == index) {
            return host.gpus[i].model[0] ? host.gpus[i].model
                                          : host.gpus[i].name;
        }
    }
    return "GPU";
}


static const char *
local_network(void)
{
    return host.netns ? "netns" : "host";
}


/* namespaces: each replica has its own address; host network: the port
 * is the run's, one process at a time */
static int
local_side_by_side(void)
{
    return host.netns;
}


/* ---- matching ----------------------------------------------------------- */

/* GPU memory: nvidia-smi reports MiB of usable memory, a little under the
 * size on the box (an "80GB" H100 says 81559, an "24GB" A10G 23028) */
static int
gpu_mem_ok(const ds_spec_range_t *r, uint64_t mb)
{
    if (r->min > 0 && (double) mb * 1.08 < (double) r->min) {
        return 0;
    }
    if (r->max != DS_SPEC_UNLIMITED && (double) mb > (double) r->max * 1.08) {
        return 0;
    }
    return 1;
}


static int
gpu_matches(const ds_spec_t *sp, const struct host_gpu *g)
{
    size_t  i;
    char    buf[96], *tok, *save;
    int     named;

    if (sp->resources.gpu.vendor != DS_SPEC_VENDOR_ANY
        && sp->resources.gpu.vendor != DS_SPEC_VENDOR_NVIDIA)
    {
        return 0;
    }
    if (!gpu_mem_ok(&sp->resources.gpu.memory_mb, g->memory_mb)) {
        return 0;
    }
    if (sp->resources.gpu.n_names == 0) {
        return 1;
    }
    for (i = 0; i < sp->resources.gpu.n_names; i++) {
        if (strcasecmp(sp->resources.gpu.names[i], g->model) == 0) {
            return 1;
        }
        /* "A6000" for "NVIDIA RTX A6000": any word of the name */
        snprintf(buf, sizeof(buf), "%s", g->name);
        named = 0;
        for (tok = strtok_r(buf, " -", &save); tok != NULL && !named;
             tok = strtok_r(NULL, " -", &save))
        {
            named = strcasecmp(tok, sp->resources.gpu.names[i]) == 0;
        }
        if (named) {
            return 1;
        }
    }
    return 0;
}


/* GPUs one replica takes: the least the range allows, at least one when
 * GPUs are asked for at all */
static int
gpus_per_replica(const ds_spec_t *sp)
{
    const ds_spec_range_t  *c = &sp->resources.gpu.count;

    if (c->max == 0) {
        return 0;
    }
    return c->min > 0 ? (int) c->min : 0;
}


static void
host_gpus_text(char *buf, size_t n)
{
    size_t  off = 0;
    int     i, j, cnt;

    if (host.n_gpus == 0) {
        snprintf(buf, n, "no GPU (%s)", host.gpu_note);
        return;
    }
    buf[0] = '\0';
    for (i = 0; i < host.n_gpus && off < n; i++) {
        /* group equal GPUs: "2x H100 (80GB)" */
        for (j = 0; j < i; j++) {
            if (strcmp(host.gpus[j].name, host.gpus[i].name) == 0) {
                break;
            }
        }
        if (j < i) {
            continue;
        }
        cnt = 0;
        for (j = i; j < host.n_gpus; j++) {
            cnt += strcmp(host.gpus[j].name, host.gpus[i].name) == 0;
        }
        off += snprintf(buf + off, n - off, "%s%dx %s (%.0fGB)",
                        off ? ", " : "", cnt, host.gpus[i].name,
                        (double) (long) ((double) host.gpus[i].memory_mb
                                         / 1024 + 0.5));
    }
}


static void
range_text(char *buf, size_t n, const ds_spec_range_t *r, double div,
    const char *unit)
{
    if (r->max == DS_SPEC_UNLIMITED) {
        snprintf(buf, n, "%g%s..", (double) r->min / div, unit);
    } else if (r->min == r->max) {
        snprintf(buf, n, "%g%s", (double) r->min / div, unit);
    } else {
        snprintf(buf, n, "%g%s..%g%s", (double) r->min / div, unit,
                 (double) r->max / div, unit);
    }
}


/* "A100,H100:80GB:2" */
static void
gpu_req_text(const ds_spec_t *sp, char *buf, size_t n)
{
    size_t  i, off = 0;
    char    r[48];

    buf[0] = '\0';
    if (sp->resources.gpu.vendor == DS_SPEC_VENDOR_NVIDIA) {
        off += snprintf(buf + off, n - off, "nvidia:");
    } else if (sp->resources.gpu.vendor != DS_SPEC_VENDOR_ANY) {
        off += snprintf(buf + off, n - off, "vendor %d:",
                        sp->resources.gpu.vendor);
    }
    for (i = 0; i < sp->resources.gpu.n_names && off < n; i++) {
        off += snprintf(buf + off, n - off, "%s%s", i ? "," : "",
                        sp->resources.gpu.names[i]);
    }
    if (off < n && (sp->resources.gpu.memory_mb.min > 0
                    || sp->resources.gpu.memory_mb.max != DS_SPEC_UNLIMITED))
    {
        range_text(r, sizeof(r), &sp->resources.gpu.memory_mb, 1024, "GB");
        off += snprintf(buf + off, n - off, "%s%s", off ? ":" : "", r);
    }
    if (off < n) {
        range_text(r, sizeof(r), &sp->resources.gpu.count, 1, "");
        snprintf(buf + off, n - off, "%s%s", off ? ":" : "", r);
    }
}


static int
list_has(const char *const *list, size_t n, const char *s)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (strcmp(list[i], s) == 0) {
            return 1;
        }
    }
    return 0;
}


static int
container_runtime(char *out, size_t n)
{
    if (!host.runtime_ok) {
        return -1;
    }
    snprintf(out, n, "%s", host.runtime);
    return 0;
}


/*
 * podman, or docker whose daemon answers: found at start (and SIGHUP),
 * so that plan says at once why an image cannot run.
 */
static void
detect_runtime(void)
{
    char   cmd[4200], line[256];
    FILE  *fp;
    int    rc;

    host.runtime_ok = 0;
    host.runtime[0] = '\0';
    if (find_in_path("podman", host.runtime, sizeof(host.runtime)) == 0) {
        host.runtime_ok = 1;
        snprintf(host.runtime_note, sizeof(host.runtime_note), "podman");
        return;
    }
    if (find_in_path("docker", host.runtime, sizeof(host.runtime)) != 0) {
        snprintf(host.runtime_note, sizeof(host.runtime_note),
                 "neither podman nor docker is in PATH");
        return;
    }
    snprintf(cmd, sizeof(cmd), "timeout 5 %s version --format "
             "'{{.Server.Version}}' 2>&1", host.runtime);
    fp = popen(cmd, "r");
    line[0] = '\0';
    if (fp != NULL) {
        if (fgets(line, sizeof(line), fp) == NULL) {
            line[0] = '\0';
        }
        while (fgetc(fp) != EOF) {
            /* drain */
        }
        rc = pclose(fp);
    } else {
        rc = -1;
    }
    line[strcspn(line, "\r\n")] = '\0';
    if (rc == 0) {
        host.runtime_ok = 1;
        snprintf(host.runtime_note, sizeof(host.runtime_note), "docker %s",
                 line);
        return;
    }
    snprintf(host.runtime_note, sizeof(host.runtime_note),
             "docker is installed but its daemon does not answer (%.120s)",
             line[0] ? line : "docker version failed");
}


static int
local_offers(const ds_spec_t *sp, const char *name, int replicas,
    cJSON *offers, char *err, size_t n)
{
    char          need[256], have[512], prog[4096], gname[160];
    int           matching, per, i;
    cJSON        *o, *res, *gl, *g;
    const struct run *r;

    if (!conf->local.enabled) {
        snprintf(err, n, "no backend is enabled (backends.local.enabled is "
                 "false in %s)", conf->file);
        return 422;
    }
    if (sp->backends != NULL
        && !list_has(sp->backends, sp->n_backends, "local"))
    {
        snprintf(err, n, "spec.backends: this server has the local backend "
                 "only");
        return 422;
    }
    if (sp->regions != NULL && !list_has(sp->regions, sp->n_regions, "local"))
    {
        snprintf(err, n, "spec.regions: the local backend has one region, "
                 "\"local\"");
        return 422;
    }
    if (sp->spot_policy == DS_SPEC_SPOT_SPOT) {
        snprintf(err, n, "spec.spot_policy: the local backend has on-demand "
                 "offers only (use on-demand or auto)");
        return 422;
    }

    if (sp->image != NULL && container_runtime(prog, sizeof(prog)) != 0) {
        snprintf(err, n, "spec.image: running an image needs a container "
                 "runtime on the host: %s", host.runtime_note);
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

    if (!host.netns && replicas > 1) {
        snprintf(err, n, "spec.replicas: %d replicas of one service all "
                 "listen on port %u; the local backend separates them with "
                 "network namespaces, which it has only as root with "
                 "CAP_NET_ADMIN (here it uses the host network: one "
                 "replica per run and port)", replicas,
                 (unsigned) sp->port);
        return 422;
    }
    if (!host.netns) {
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
    }

    if (sp->resources.cpu_arch != DS_SPEC_ARCH_ANY
        && host.arch != DS_SPEC_ARCH_ANY
        && sp->resources.cpu_arch != host.arch)
    {
        snprintf(err, n, "spec.resources.cpu: needs %s, the host is %s",
                 sp->resources.cpu_arch == DS_SPEC_ARCH_X86 ? "x86" : "arm",
                 host.machine);
        return 422;
    }
    if ((uint64_t) host.cpus < sp->resources.cpu.min) {
        range_text(need, sizeof(need), &sp->resources.cpu, 1, "");
        snprintf(err, n, "spec.resources.cpu: needs %s CPUs, the host has %d",
                 need, host.cpus);
        return 422;
    }
    if (host.memory_mb < sp->resources.memory_mb.min) {
        range_text(need, sizeof(need), &sp->resources.memory_mb, 1024, "GB");
        snprintf(err, n, "spec.resources.memory: needs %s, the host has %.1fGB",
                 need, (double) host.memory_mb / 1024);
        return 422;
    }
    if (host.disk_mb < sp->resources.disk_mb.min) {
        range_text(need, sizeof(need), &sp->resources.disk_mb, 1024, "GB");
        snprintf(err, n, "spec.resources.disk: needs %s, the disk of %s has "
                 "%.0fGB", need, conf->replicas_dir,
                 (double) host.disk_mb / 1024);
        return 422;
    }

    per = gpus_per_replica(sp);
    matching = 0;
    gname[0] = '\0';
    for (i = 0; i < host.n_gpus; i++) {
        if (gpu_matches(sp, &host.gpus[i])) {
            if (matching == 0) {
                snprintf(gname, sizeof(gname), "%s", host.gpus[i].model);
            }
            matching++;
        }
    }
    if (per > 0) {
        if (matching == 0) {
            host_gpus_text(have, sizeof(have));
            gpu_req_text(sp, need, sizeof(need));
            snprintf(err, n, "spec.resources.gpu: no GPU of the host "
                     "matches %s; the host has %s", need, have);
            return 422;
        }
        for (i = 0; i < host.n_gpus; i++) {
            if (gpu_matches(sp, &host.gpus[i])) {
                if (sp->resources.gpu.total_memory_mb.min > 0
                    && !gpu_mem_ok(&sp->resources.gpu.total_memory_mb,
                                   host.gpus[i].memory_mb * (uint64_t) per))
                {
                    range_text(need, sizeof(need),
                               &sp->resources.gpu.total_memory_mb, 1024, "GB");
                    snprintf(err, n, "spec.resources.gpu.total_memory: "
                             "needs %s in %d GPUs, %d of the host's %s give "
                             "%.0fGB",
                             need, per, per, host.gpus[i].model,
                             (double) host.gpus[i].memory_mb * per / 1024);
                    return 422;
                }
                break;
            }
        }
        if (matching < per * (replicas > 0 ? replicas : 1)) {
            host_gpus_text(have, sizeof(have));
            snprintf(err, n, "spec.resources.gpu: %d replica%s x %d GPU%s need "
                     "%d, the host has %d that match (%s)",
                     replicas > 0 ? replicas : 1, replicas > 1 ? "s" : "",
                     per, per > 1 ? "s" : "",
                     per * (replicas > 0 ? replicas : 1), matching, have);
            return 422;
        }
    }

    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "backend", "local");
    cJSON_AddStringToObject(o, "region", "local");
    cJSON_AddStringToObject(o, "instance_type", "host");
    res = cJSON_AddObjectToObject(o, "resources");
    cJSON_AddNumberToObject(res, "cpus",
                            sp->resources.cpu.max != DS_SPEC_UNLIMITED
                            && sp->resources.cpu.max < (uint64_t) host.cpus
                                ? (double) sp->resources.cpu.max
                                : (double) host.cpus);
    cJSON_AddNumberToObject(res, "memory_mb",
                            sp->resources.memory_mb.max != DS_SPEC_UNLIMITED
                            && sp->resources.memory_mb.max < host.memory_mb
                                ? (double) sp->resources.memory_mb.max
                                : (double) host.memory_mb);
    cJSON_AddNumberToObject(res, "disk_mb",
                            sp->resources.disk_mb.max != DS_SPEC_UNLIMITED
                            && sp->resources.disk_mb.max < host.disk_mb
                                ? (double) sp->resources.disk_mb.max
                                : (double) host.disk_mb);
    gl = cJSON_AddArrayToObject(res, "gpus");
    for (i = 0; i < host.n_gpus && cJSON_GetArraySize(gl) < per; i++) {
        if (!gpu_matches(sp, &host.gpus[i])) {
            continue;
        }
        g = cJSON_CreateObject();
        cJSON_AddStringToObject(g, "name", host.gpus[i].model);
        cJSON_AddNumberToObject(g, "memory_mb",
                                (double) host.gpus[i].memory_mb);
        cJSON_AddStringToObject(g, "vendor", "nvidia");
        cJSON_AddItemToArray(gl, g);
    }
    cJSON_AddBoolToObject(o, "spot", 0);
    cJSON_AddNumberToObject(o, "price", 0);
    cJSON_AddNumberToObject(o, "gpus_free", matching);
    cJSON_AddItemToArray(offers, o);
    return 0;
}


/* ---- allocation --------------------------------------------------------- */

/* a replica whose process (or its setup) may still hold resources */
static int
replica_holds(const struct replica *rep)
{
    return rep->pid > 0;
}


static int
net_used(int idx)
{
    struct run      *r;
    struct replica  *rep;

    TAILQ_FOREACH(r, &runs, entry) {
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (rep->net_index == idx) {
                return 1;
            }
        }
    }
    return 0;
}


/* a /30 of the subnet that has an address on a host interface: another
 * controld's replica (or a leftover) */
static int
net_on_host(int idx)
{
    struct ifaddrs  *ifa, *it;
    uint32_t         a, base;
    int              found = 0;

    if (getifaddrs(&ifa) != 0) {
        return 0;
    }
    base = conf->local.subnet + (uint32_t) idx * 4;
    for (it = ifa; it != NULL; it = it->ifa_next) {
        if (it->ifa_addr == NULL || it->ifa_addr->sa_family != AF_INET) {
            continue;
        }
        a = ntohl(((struct sockaddr_in *) it->ifa_addr)->sin_addr.s_addr);
        if ((a & ~3U) == base) {
            found = 1;
            break;
        }
    }
    freeifaddrs(ifa);
    return found;
}


/* round robin, so that a namespace the kernel is still tearing down is
 * not reused at once; the start differs between controlds (the tag) */
static int
net_alloc(void)
{
    int  count, i, idx;

    count = 1 << (32 - conf->local.subnet_bits - 2);
    for (i = 0; i < count; i++) {
        idx = (host.next_net + i) % count;
        if (!net_used(idx) && !net_on_host(idx)) {
            host.next_net = (idx + 1) % count;
            return idx;
        }
    }
    return -1;
}


static void
net_addrs(int idx, char *host_ip, char *ns_ip)
{
    struct in_addr  a;
    uint32_t        base;

    base = conf->local.subnet + (uint32_t) idx * 4;
    a.s_addr = htonl(base + 1);
    inet_ntop(AF_INET, &a, host_ip, INET_ADDRSTRLEN);
    a.s_addr = htonl(base + 2);
    inet_ntop(AF_INET, &a, ns_ip, INET_ADDRSTRLEN);
}


static int
gpu_taken(int index, const struct replica *self)
{
    struct run      *r;
    struct replica  *rep;
    int              i;

    TAILQ_FOREACH(r, &runs, entry) {
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (rep == self || !replica_holds(rep)) {
                continue;
            }
            for (i = 0; i < rep->n_gpus; i++) {
                if (rep->gpus[i] == index) {
                    return 1;
                }
            }
        }
    }
    return 0;
}


static int
gpu_alloc(struct replica *rep)
{
    const ds_spec_t  *sp = &rep->run->spec;
    int               per, i, got = 0, picked[REPLICA_GPUS_MAX];

    per = gpus_per_replica(sp);
    if (per > REPLICA_GPUS_MAX) {
        per = REPLICA_GPUS_MAX;
    }
    for (i = 0; i < host.n_gpus && got < per; i++) {
        if (gpu_matches(sp, &host.gpus[i])
            && !gpu_taken(host.gpus[i].index, rep))
        {
            picked[got++] = host.gpus[i].index;
        }
    }
    if (got < per) {
        return -1;
    }
    memcpy(rep->gpus, picked, sizeof(int) * got);
    rep->n_gpus = got;
    return 0;
}


/* ---- paths -------------------------------------------------------------- */

static int
local_log_path(const struct replica *rep, char *buf, size_t n)
{
    return fmt(buf, n, "%s/%s/%d-%d.log", conf->replicas_dir, rep->run->name,
               rep->num, rep->version);
}


static int
work_path(const struct replica *rep, char *buf, size_t n)
{
    return fmt(buf, n, "%s/%s/%d-%d", conf->replicas_dir, rep->run->name,
               rep->num, rep->version);
}


static int
netns_name(const struct replica *rep, char *buf, size_t n)
{
    /* unique among live replicas: the /30 is */
    return fmt(buf, n, "dstack-%s-%s-%d-%d", host.tag, rep->run->name, rep->num,
               rep->net_index);
}


/* ---- the replica's process (after fork, before exec) -------------------- */

static int  child_pipe = -1;

static void child_fail(const char *f, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* reports a setup error to the loop and to the replica's log */
static void
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


/* runs argv with stdin from `input` (NULL: /dev/null), output to the log;
 * returns the exit status */
static int
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


/* kills what is left in a namespace (a replica's strays) and removes it */
static void
netns_remove(const char *name)
{
    char           path[512], p2[512];
    struct stat    ns, other;
    DIR           *d;
    struct dirent *de;
    int            i;

    snprintf(path, sizeof(path), NETNS_DIR "/%s", name);
    if (stat(path, &ns) != 0) {
        return;
    }
    for (i = 0; i < 2; i++) {
        d = opendir("/proc");
        if (d == NULL) {
            break;
        }
        while ((de = readdir(d)) != NULL) {
            if (!isdigit((unsigned char) de->d_name[0])) {
                continue;
            }
            snprintf(p2, sizeof(p2), "/proc/%s/ns/net", de->d_name);
            if (stat(p2, &other) == 0 && other.st_ino == ns.st_ino
                && other.st_dev == ns.st_dev)
            {
                kill((pid_t) atoi(de->d_name), SIGKILL);
            }
        }
        closedir(d);
    }
    umount2(path, MNT_DETACH);
    unlink(path);
}


static void
child_netns(struct replica *rep, const char *name, const char *host_ip,
    const char *ns_ip)
{
    char   batch[1024], hostif[16], nsif[16], path[512];
    char  *ip_host[] = { "ip", "-batch", "-", NULL };
    char  *ip_ns[] = { "ip", "-n", (char *) name, "-batch", "-", NULL };
    char  *ip_del[] = { "ip", "link", "del", hostif, NULL };
    int    fd, null;

    snprintf(hostif, sizeof(hostif), "ds%sh%d", host.tag, rep->net_index);
    snprintf(nsif, sizeof(nsif), "ds%sn%d", host.tag, rep->net_index);

    /* a leftover of an earlier life of this replica */
    netns_remove(name);
    snprintf(path, sizeof(path), "/sys/class/net/%s", hostif);
    if (access(path, F_OK) == 0) {
        null = dup(2);
        child_run(ip_del, NULL);
        close(null);
    }

    snprintf(batch, sizeof(batch),
             "netns add %s\n"
             "link add %s type veth peer name %s netns %s\n"
             "addr add %s/30 dev %s\n"
             "link set %s up\n",
             name, hostif, nsif, name, host_ip, hostif, hostif);
    if (child_run(ip_host, batch) != 0) {
        child_fail("cannot set up network namespace %s (ip -batch failed; "
                   "see the log)", name);
    }
    snprintf(batch, sizeof(batch),
             "addr add %s/30 dev %s\n"
             "link set %s up\n"
             "link set lo up\n"
             "route add default via %s\n",
             ns_ip, nsif, nsif, host_ip);
    if (child_run(ip_ns, batch) != 0) {
        child_fail("cannot configure network namespace %s (see the log)",
                   name);
    }

    snprintf(path, sizeof(path), NETNS_DIR "/%s", name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
        child_fail("cannot enter network namespace %s: %s", name,
                   strerror(errno));
    }
    close(fd);
}


static uid_t  chown_uid;
static gid_t  chown_gid;

static int
chown_one(const char *path, const struct stat *sb, int flag, struct FTW *f)
{
    (void) sb;
    (void) flag;
    (void) f;
    (void) !lchown(path, chown_uid, chown_gid);
    return 0;
}


static void
env_add(char ***env, size_t *n, size_t *cap, const char *k, const char *v)
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
    for (i = 0; i < *n; i++) {
        if (strncmp((*env)[i], k, kl) == 0 && (*env)[i][kl] == '=') {
            (*env)[i] = s;
            return;
        }
    }
    if (*n + 2 > *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *env = realloc(*env, *cap * sizeof(char *));
        if (*env == NULL) {
            child_fail("out of memory");
        }
    }
    (*env)[(*n)++] = s;
    (*env)[*n] = NULL;
}


static void
child_main(struct replica *rep, int log_fd, const char *ns_ip)
{
    const ds_spec_t  *sp = &rep->run->spec;
    char              work[4096], dir[4096], archive[4096], bin[4096];
    char              name[256], host_ip[INET_ADDRSTRLEN], buf[4096];
    char              ns_ip_buf[INET_ADDRSTRLEN], prog[4096], gpus[256];
    char            **env = NULL, *script, *shell, *argv[64];
    size_t            nenv = 0, cap = 0, i, off;
    struct passwd    *pw = NULL;
    sigset_t          all;
    int               fd, a = 0;
    char             *tar[] = { "tar", "-xzf", archive, "-C", work,
                                "--no-same-owner", NULL };

    /* a new session: the replica's process group is its pid */
    setsid();
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);

    fd = open("/dev/null", O_RDONLY);
    if (fd >= 0) {
        dup2(fd, 0);
    }
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    /* everything else controld holds (LMDB, the API socket) stays out */
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);

    if (rep->net_index >= 0) {
        netns_name(rep, name, sizeof(name));
        net_addrs(rep->net_index, host_ip, ns_ip_buf);
        child_netns(rep, name, host_ip, ns_ip);
    }

    if (work_path(rep, work, sizeof(work)) != 0) {
        child_fail("replica path too long");
    }
    rm_rf(work);
    if (mkdir_p(work, 0755) != 0) {
        child_fail("cannot create %s: %s", work, strerror(errno));
    }
    if (rep->run->code[0]) {
        snprintf(archive, sizeof(archive), "%s/code/%s.tar.gz",
                 conf->state_dir, rep->run->code);
        if (child_run(tar, NULL) != 0) {
            child_fail("cannot unpack the code archive %s into %s (see the "
                       "log)", rep->run->code, work);
        }
    }

    if (sp->user != NULL && geteuid() == 0) {
        pw = getpwnam(sp->user);
        if (pw == NULL) {
            child_fail("user: no user \"%s\" on the host", sp->user);
        }
        chown_uid = pw->pw_uid;
        chown_gid = pw->pw_gid;
        nftw(work, chown_one, 16, FTW_PHYS);
    }

    /* working_dir: relative to the code, like the repo dir in dstack */
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

    /* the environment: a clean one, then the spec's, then ours */
    env_add(&env, &nenv, &cap, "PATH",
            getenv("PATH") ? getenv("PATH") : DEFAULT_PATH);
    env_add(&env, &nenv, &cap, "HOME", pw ? pw->pw_dir
                                          : (getenv("HOME") ? getenv("HOME")
                                                            : "/root"));
    env_add(&env, &nenv, &cap, "LANG", "C.UTF-8");
    if (pw != NULL) {
        env_add(&env, &nenv, &cap, "USER", pw->pw_name);
    }
    for (i = 0; i < sp->n_env; i++) {
        env_add(&env, &nenv, &cap, sp->env[i].name,
                sp->env[i].value ? sp->env[i].value : "");
    }
    env_add(&env, &nenv, &cap, "DSTACK_RUN_NAME", rep->run->name);
    snprintf(buf, sizeof(buf), "%d", rep->num);
    env_add(&env, &nenv, &cap, "DSTACK_REPLICA_NUM", buf);
    snprintf(buf, sizeof(buf), "%d", rep->version);
    env_add(&env, &nenv, &cap, "DSTACK_REPLICA_VERSION", buf);
    env_add(&env, &nenv, &cap, "DSTACK_NODES_NUM", "1");
    env_add(&env, &nenv, &cap, "DSTACK_NODE_RANK", "0");
    snprintf(buf, sizeof(buf), "%u", (unsigned) sp->port);
    env_add(&env, &nenv, &cap, "DSTACK_PORT", buf);
    env_add(&env, &nenv, &cap, "DSTACK_REPLICA_ADDRESS",
            rep->net_index >= 0 ? ns_ip : "127.0.0.1");
    snprintf(buf, sizeof(buf), "%d", rep->n_gpus);
    env_add(&env, &nenv, &cap, "DSTACK_GPUS_NUM", buf);
    env_add(&env, &nenv, &cap, "DSTACK_GPUS_PER_NODE", buf);
    gpus[0] = '\0';
    for (i = 0, off = 0; i < (size_t) rep->n_gpus && off < sizeof(gpus); i++) {
        off += snprintf(gpus + off, sizeof(gpus) - off, "%s%d", i ? "," : "",
                        rep->gpus[i]);
    }
    if (rep->n_gpus > 0 || host.n_gpus > 0) {
        /* exclusive: a replica without GPUs sees none */
        env_add(&env, &nenv, &cap, "CUDA_VISIBLE_DEVICES", gpus);
        env_add(&env, &nenv, &cap, "NVIDIA_VISIBLE_DEVICES",
                rep->n_gpus ? gpus : "none");
    }

    if (sp->python != NULL) {
        /* python and python3 name the version asked for */
        snprintf(prog, sizeof(prog), "python%s", sp->python);
        if (find_in_path(prog, buf, sizeof(buf)) != 0) {
            child_fail("python: no %s on the host", prog);
        }
        fmt(bin, sizeof(bin), "%s.bin", work);
        rm_rf(bin);
        mkdir_p(bin, 0755);
        fmt(prog, sizeof(prog), "%s/python", bin);
        (void) !symlink(buf, prog);
        fmt(prog, sizeof(prog), "%s/python3", bin);
        (void) !symlink(buf, prog);
        fmt(prog, sizeof(prog), "%s:%s", bin,
            getenv("PATH") ? getenv("PATH") : DEFAULT_PATH);
        env_add(&env, &nenv, &cap, "PATH", prog);
    }

    script = spec_script(sp);

    if (sp->image != NULL) {
        if (container_runtime(prog, sizeof(prog)) != 0) {
            child_fail("image: neither podman nor docker is in PATH");
        }
        argv[a++] = prog;
        argv[a++] = "run";
        argv[a++] = "--rm";
        argv[a++] = "--name";
        argv[a++] = name;
        argv[a++] = "--network";
        if (rep->net_index >= 0 && strstr(prog, "podman") != NULL) {
            snprintf(buf, sizeof(buf), "ns:" NETNS_DIR "/%s", name);
            argv[a++] = strdup(buf);
        } else {
            argv[a++] = "host";
        }
        fmt(buf, sizeof(buf), "%s:/workflow", work);
        argv[a++] = "-v";
        argv[a++] = strdup(buf);
        argv[a++] = "-w";
        argv[a++] = (char *) (sp->working_dir ? sp->working_dir
                                              : "/workflow");
        /* the environment goes by name: the values stay out of argv */
        /* room for the rest: 12 more at most */
        for (i = 0; i < nenv && a < 50; i++) {
            if (strncmp(env[i], "PATH=", 5) == 0
                || strncmp(env[i], "HOME=", 5) == 0)
            {
                continue;
            }
            argv[a++] = "--env";
            argv[a++] = strndup(env[i], strcspn(env[i], "="));
        }
        if (rep->n_gpus > 0) {
            snprintf(buf, sizeof(buf), "\"device=%s\"", gpus);
            argv[a++] = "--gpus";
            argv[a++] = strdup(buf);
        }
        if (sp->entrypoint != NULL) {
            argv[a++] = "--entrypoint";
            argv[a++] = (char *) sp->entrypoint;
        }
        argv[a++] = (char *) sp->image;
        if (sp->n_commands > 0) {
            argv[a++] = "/bin/sh";
            argv[a++] = "-c";
            argv[a++] = script;
        }
        argv[a] = NULL;
    } else {
        if (sp->shell == NULL || strcmp(sp->shell, "bash") == 0) {
            shell = "/bin/bash";
        } else if (strcmp(sp->shell, "sh") == 0) {
            shell = "/bin/sh";
        } else {
            shell = (char *) sp->shell;
        }
        argv[a++] = shell;
        argv[a++] = "-c";
        argv[a++] = script;
        argv[a] = NULL;
    }

    if (pw != NULL) {
        if (initgroups(pw->pw_name, pw->pw_gid) != 0
            || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
        {
            child_fail("user: cannot become \"%s\": %s", sp->user,
                       strerror(errno));
        }
    }

    execve(argv[0], argv, env);
    child_fail("cannot run %s: %s", argv[0], strerror(errno));
}


/* ---- start, signal, release --------------------------------------------- */

static int
local_start(struct replica *rep)
{
    char            path[4096], host_ip[INET_ADDRSTRLEN];
    char            ns_ip[INET_ADDRSTRLEN];
    int             log_fd, p[2];
    pid_t           pid;
    struct setup   *s;

    rep->n_gpus = 0;
    if (gpus_per_replica(&rep->run->spec) > 0 && gpu_alloc(rep) != 0) {
        snprintf(rep->message, sizeof(rep->message),
                 "waiting for a free GPU");
        return BACKEND_WAIT;
    }

    rep->net_index = -1;
    if (host.netns) {
        rep->net_index = net_alloc();
        if (rep->net_index < 0) {
            snprintf(rep->message, sizeof(rep->message),
                     "no free address in subnet of backends.local");
            return BACKEND_WAIT;
        }
        net_addrs(rep->net_index, host_ip, ns_ip);
        snprintf(rep->addr, sizeof(rep->addr), "%s:%u", ns_ip,
                 (unsigned) rep->run->spec.port);
    } else {
        snprintf(ns_ip, sizeof(ns_ip), "127.0.0.1");
        snprintf(rep->addr, sizeof(rep->addr), "127.0.0.1:%u",
                 (unsigned) rep->run->spec.port);
    }

    if (fmt(path, sizeof(path), "%s/%s", conf->replicas_dir, rep->run->name)
        != 0 || mkdir_p(path, 0755) != 0)
    {
        fmt(rep->message, sizeof(rep->message), "cannot create %s: %s",
            path, strerror(errno));
        return BACKEND_FAILED;
    }
    if (local_log_path(rep, path, sizeof(path)) != 0) {
        snprintf(rep->message, sizeof(rep->message), "path too long");
        return BACKEND_FAILED;
    }
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (log_fd < 0) {
        fmt(rep->message, sizeof(rep->message), "cannot open %s: %s",
            path, strerror(errno));
        return BACKEND_FAILED;
    }
    if (pipe2(p, O_CLOEXEC) != 0) {
        close(log_fd);
        snprintf(rep->message, sizeof(rep->message), "pipe: %s",
                 strerror(errno));
        return BACKEND_FAILED;
    }

    pid = fork();
    if (pid < 0) {
        close(log_fd);
        close(p[0]);
        close(p[1]);
        snprintf(rep->message, sizeof(rep->message), "fork: %s",
                 strerror(errno));
        return BACKEND_FAILED;
    }
    if (pid == 0) {
        close(p[0]);
        child_pipe = p[1];
        child_main(rep, log_fd, ns_ip);
        _exit(127);
    }

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
release_child(const char *netns, const char *hostif, const char *work,
    const char *bin)
{
    char      path[64];
    char     *ip_del[] = { "ip", "link", "del", (char *) hostif, NULL };
    sigset_t  all;
    int       null;

    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
    }
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);

    if (netns != NULL) {
        netns_remove(netns);
        /* the kernel takes the pair down with the namespace; a leftover
         * (a namespace pinned elsewhere) goes by name */
        snprintf(path, sizeof(path), "/sys/class/net/%s", hostif);
        if (access(path, F_OK) == 0) {
            child_run(ip_del, NULL);
        }
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
    char   name[256], work[4096], bin[4096], hostif[16];
    pid_t  pid, pgid;
    int    net;

    setup_forget(rep);

    pgid = rep->pid;
    net = rep->net_index;
    netns_name(rep, name, sizeof(name));
    work_path(rep, work, sizeof(work));
    fmt(bin, sizeof(bin), "%s.bin", work);
    snprintf(hostif, sizeof(hostif), "ds%sh%d", host.tag, net);

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
        release_child(net >= 0 ? name : NULL, hostif, final ? work : NULL,
                      final ? bin : NULL);
    }
}


static void
local_gc(void)
{
    DIR             *d;
    struct dirent   *de;
    struct run      *r;
    struct replica  *rep;
    char             name[256];
    int              owned;
    pid_t            pid;

    if (!host.netns) {
        return;
    }
    d = opendir(NETNS_DIR);
    if (d == NULL) {
        return;
    }
    while ((de = readdir(d)) != NULL) {
        snprintf(name, sizeof(name), "dstack-%s-", host.tag);
        if (strncmp(de->d_name, name, strlen(name)) != 0) {
            continue;
        }
        owned = 0;
        TAILQ_FOREACH(r, &runs, entry) {
            TAILQ_FOREACH(rep, &r->replicas, entry) {
                if (rep->pid > 0
                    && netns_name(rep, name, sizeof(name)) == 0
                    && strcmp(name, de->d_name) == 0)
                {
                    owned = 1;
                }
            }
        }
        if (owned) {
            continue;
        }
        log_info("removing leftover network namespace %s", de->d_name);
        snprintf(name, sizeof(name), "%s", de->d_name);
        pid = fork();
        if (pid == 0) {
            netns_remove(name);
            _exit(0);
        }
    }
    closedir(d);
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
            if (rep->pid == pid && !rep->adopted) {
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
    .log_path = local_log_path,
    .gpu_name = local_gpu_name,
    .network = local_network,
    .side_by_side = local_side_by_side,
    .fill = local_fill,
    .process = local_process,
};
