/*
 * Network namespaces of the local backend.
 *
 * Every replica of a service listens on the same port, so as root each
 * replica gets its own namespace "dstack-<tag>-<run>-<num>-<index>"
 * joined to the host by a veth pair ("ds<tag>h<index>" / "ds<tag>n<index>")
 * with the index-th /30 of the subnet: the host side is .1, the replica
 * .2.  <tag> is 4 hex digits of the state directory's hash: two controlds
 * on one host (tests in parallel) never touch each other's namespaces.
 *
 * Creating and removing namespaces happens in children (the replica's
 * process, a cleanup child): "ip" and killing a namespace's strays take
 * a while, and the main loop never waits.
 */

#define _GNU_SOURCE

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include "config.h"
#include "host.h"
#include "local_child.h"
#include "log.h"
#include "netns.h"
#include "run.h"
#include "util.h"


static char  tag[8];                    /* this controld's names */
static int   next_net;                  /* round robin over /30s */


void
netns_init(void)
{
    uint8_t  digest[32];

    /* names of namespaces and interfaces carry a tag of the state, so
     * that several controlds on one host (tests) keep to their own; in
     * shared mode the database's, so that the next leader adopts them */
    if (conf->state != NULL) {
        ds_sha256(conf->state, strlen(conf->state), digest);
    } else {
        ds_sha256(conf->state_dir, strlen(conf->state_dir), digest);
    }
    hex_encode(digest, 2, tag);
    if (next_net == 0) {
        next_net = (int) (((unsigned) digest[2] << 8 | digest[3])
                          % (1U << (32 - conf->local.subnet_bits - 2)));
    }
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


/* the first line of the probe's output, then the file goes */
static void
probe_output(const char *out, char *why, size_t n)
{
    char   line[256];
    FILE  *fp;

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
}


/*
 * Root is not enough in a container without CAP_SYS_ADMIN/NET_ADMIN:
 * try what a replica's setup does (a namespace, a veth pair into it) at
 * start, under names of its own, twice before giving up.
 */
static int
netns_probe_once(char *why, size_t n)
{
    char     batch[512], name[64], out[4096];
    char    *argv[] = { "ip", "-batch", "-", NULL };
    pid_t    pid;
    int      status, fd;
    unsigned id;

    id = (unsigned) getpid() % 100000;
    snprintf(name, sizeof(name), "dstack-%s-probe%u", tag, id);
    snprintf(batch, sizeof(batch),
             "netns add %s\n"
             "link add ds%sp%u type veth peer name ds%sq%u netns %s\n"
             "netns del %s\n", name, tag, id, tag, id, name, name);
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
    probe_output(out, why, n);
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


int
netns_choose(char *err, size_t n)
{
    char  ip[4096], why[128];
    int   use;

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
        return 1;
    case NET_HOST:
        return 0;
    default:
        why[0] = '\0';
        use = geteuid() == 0 && find_in_path("ip", ip, sizeof(ip)) == 0
              && netns_probe(why, sizeof(why)) == 0;
        if (!use && geteuid() == 0) {
            log_warnx("local backend: network namespaces do not work here "
                      "(%s): replicas use the host network, one per run "
                      "and port", why);
        }
        return use;
    }
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
int
netns_alloc(void)
{
    int  count, i, idx;

    count = 1 << (32 - conf->local.subnet_bits - 2);
    for (i = 0; i < count; i++) {
        idx = (next_net + i) % count;
        if (!net_used(idx) && !net_on_host(idx)) {
            next_net = (idx + 1) % count;
            return idx;
        }
    }
    return -1;
}


void
netns_addrs(int idx, char *host_ip, char *ns_ip)
{
    struct in_addr  a;
    uint32_t        base;

    base = conf->local.subnet + (uint32_t) idx * 4;
    a.s_addr = htonl(base + 1);
    inet_ntop(AF_INET, &a, host_ip, INET_ADDRSTRLEN);
    a.s_addr = htonl(base + 2);
    inet_ntop(AF_INET, &a, ns_ip, INET_ADDRSTRLEN);
}


int
netns_name(const struct replica *rep, char *buf, size_t n)
{
    /* unique among live replicas: the /30 is */
    return fmt(buf, n, "dstack-%s-%s-%d-%d", tag, rep->run->name, rep->num,
               rep->net_index);
}


/* the host side of the idx-th pair goes by name: a leftover of an
 * earlier life, or one whose namespace is pinned elsewhere */
static void
hostif_remove(int idx)
{
    char   hostif[16], path[64];
    char  *ip_del[] = { "ip", "link", "del", hostif, NULL };

    snprintf(hostif, sizeof(hostif), "ds%sh%d", tag, idx);
    snprintf(path, sizeof(path), "/sys/class/net/%s", hostif);
    if (access(path, F_OK) == 0) {
        child_run(ip_del, NULL);
    }
}


void
netns_enter(const char *name, int idx, const char *host_ip,
    const char *ns_ip)
{
    char   batch[1024], hostif[16], nsif[16], path[512];
    char  *ip_host[] = { "ip", "-batch", "-", NULL };
    char  *ip_ns[] = { "ip", "-n", (char *) name, "-batch", "-", NULL };
    int    fd;

    snprintf(hostif, sizeof(hostif), "ds%sh%d", tag, idx);
    snprintf(nsif, sizeof(nsif), "ds%sn%d", tag, idx);

    /* a leftover of an earlier life of this replica */
    netns_remove(name);
    hostif_remove(idx);

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


void
netns_destroy(const char *name, int idx)
{
    netns_remove(name);
    /* the kernel takes the pair down with the namespace */
    hostif_remove(idx);
}


/* a namespace of ours that no replica with a process owns */
static int
netns_owned(const char *ns)
{
    struct run      *r;
    struct replica  *rep;
    char             name[256];

    TAILQ_FOREACH(r, &runs, entry) {
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (rep->pid > 0 && netns_name(rep, name, sizeof(name)) == 0
                && strcmp(name, ns) == 0)
            {
                return 1;
            }
        }
    }
    return 0;
}


void
netns_gc(void)
{
    DIR            *d;
    struct dirent  *de;
    char            prefix[64], name[256];
    pid_t           pid;

    d = opendir(NETNS_DIR);
    if (d == NULL) {
        return;
    }
    snprintf(prefix, sizeof(prefix), "dstack-%s-", tag);
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0
            || netns_owned(de->d_name))
        {
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
