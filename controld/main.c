/*
 * dstack-controld: the control plane of self-hosted dstack services.
 *
 *   dstack-controld [-dnv] [-f file] [-p pidfile]
 *
 * The options are in help() below, which is also the source of the
 * manual page (man/dstack-controld.8 is generated from --help).
 *
 * Two processes, in the manner of OpenBSD's daemons: this one, root, and
 * the API process (api.c), exec'd from here as an unprivileged user with
 * the listening socket and one end of a socketpair; it does the HTTP and
 * asks this one (api_parent.c) over the socketpair.  If it dies another
 * one is started; if this one dies it exits.  `-A uid:gid -L level` is
 * how this binary starts as the API process (controld's own use).
 *
 * One loop: ppoll() over the API process's socketpair, replicas being
 * set up, probes and the stats client, with signals
 * unblocked only inside ppoll() so that a handler's flag is never missed.
 * Handlers only set flags.  Every CONTROLD_TICK_MS the loop runs the
 * housekeeping (like redis' serverCron): reap children, reconcile, start
 * due probes, fetch the module's stats, resume log streams; every 10 s
 * it also clears LMDB reader slots of dead processes.  Whatever changed is
 * written to LMDB at the end of each iteration, in one transaction.
 *
 * SIGTERM/SIGINT: write state and exit; replicas keep running and serving,
 * and the next controld adopts them.  The same, but without writing and
 * with status 1, when the state file was replaced or removed (store.c).
 * SIGHUP: re-read the configuration (the settings that can change live)
 * and detect GPUs again.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "api.h"
#include "api_parent.h"
#include "backend.h"
#include "config.h"
#include "keys.h"
#include "log.h"
#include "logrotate.h"
#include "notify.h"
#include "probes.h"
#include "reconcile.h"
#include "rundoc.h"
#include "sdnotify.h"
#include "secrets.h"
#include "series.h"
#include "shared.h"
#include "stats.h"
#include "store.h"
#include "tls.h"
#include "teams.h"
#include "tokens.h"
#include "util.h"


#define POLL_MAX                1024
#define READER_CHECK_MS         10000

static volatile sig_atomic_t  got_term;
static volatile sig_atomic_t  got_hup;
static volatile sig_atomic_t  got_chld;


static void
on_signal(int sig)
{
    switch (sig) {
    case SIGTERM:
    case SIGINT:
        got_term = sig;
        break;
    case SIGHUP:
        got_hup = 1;
        break;
    case SIGCHLD:
        got_chld = 1;
        break;
    }
}


static void
usage(void)
{
    fprintf(stderr, "usage: dstack-controld [-dnv] [-f file] [-p pidfile]\n"
            "try \"dstack-controld --help\" for more\n");
    exit(2);
}


/*
 * man/gen-man turns this into dstack-controld(8): keep the layout
 * ("usage:" line, a paragraph, "options:" with "  -x  text" lines, then
 * sections headed by a line ending in ':').
 */
static void
help(void)
{
    printf(
"usage: dstack-controld [-dnv] [-f file] [-p pidfile]\n"
"\n"
"The control daemon of self-hosted dstack services: it keeps the desired\n"
"runs, starts their replicas through its backends, probes them, scales\n"
"them from the gateway's metrics and writes what nginx's dstack module\n"
"serves into the LMDB state.  It serves its API on a unix socket, from a\n"
"separate unprivileged process.\n"
"\n"
"options:\n"
"  -d          stay in the foreground and log to stderr (systemd runs it\n"
"              so); without -d it detaches and logs to syslog\n"
"  -n          check the configuration file and exit: 0 when it is valid,\n"
"              1 with file:line: and the reason otherwise\n"
"  -f file     the configuration (default " CONTROLD_CONF ")\n"
"  -p pidfile  write the daemon's pid to this file once it is ready and\n"
"              remove it at exit; overrides pidfile: in the configuration\n"
"  -v          more logging: info, then debug with -vv (overrides\n"
"              log_level: in the configuration)\n"
"  -h, --help  print this help and exit\n"
"  --keys-export FILE\n"
"              shared mode: write this controller's secrets.key and local\n"
"              CA (state_dir) to FILE, a new file of mode 0600, and exit\n"
"  --keys-import FILE\n"
"              put the keys of such a FILE into state_dir and exit (the\n"
"              way to add a controller: install, import, start)\n"
"  --force     --keys-export replaces FILE; --keys-import replaces keys\n"
"              that differ (what they sealed cannot be opened any more)\n"
"\n"
"signals:\n"
"  SIGHUP      re-read the configuration (the settings that can change\n"
"              while replicas run) and detect GPUs again\n"
"  SIGTERM     write the state and exit; replicas keep running and\n"
"              serving, and the next start adopts them\n"
"\n"
"exit status:\n"
"  0           after SIGTERM or SIGINT\n"
"  1           a bad configuration, a failed start, or a state file\n"
"              (data.mdb, lock.mdb) replaced or removed while it ran:\n"
"              it writes nothing more and exits; replicas keep running\n"
"              and a new start opens the new file and adopts them\n"
"\n"
"systemd:\n"
"  Started with -d as a Type=notify service, it tells systemd READY=1 once\n"
"  its API answers, RELOADING=1 while it re-reads the configuration and\n"
"  STOPPING=1 when it exits ($NOTIFY_SOCKET, no libsystemd).\n"
"\n"
"files:\n"
"  " CONTROLD_CONF "   the configuration (controld.yml(5))\n"
"  /var/lib/dstack/state      the LMDB state shared with nginx\n"
"  /var/lib/dstack/replicas   replicas' code and logs\n"
"  /run/dstack/api.sock       the API socket\n");
    exit(0);
}


/* the pid once ready; written whole (a rename) so a reader never sees half */
static int
pidfile_write(const char *path)
{
    char   tmp[256];
    FILE  *f;

    if ((size_t) snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        log_warnx("pidfile %s: path too long", path);
        return -1;
    }
    f = fopen(tmp, "w");
    if (f == NULL) {
        log_warn("pidfile %s", tmp);
        return -1;
    }
    fprintf(f, "%ld\n", (long) getpid());
    if (fchmod(fileno(f), 0644) != 0 || fclose(f) != 0) {
        log_warn("pidfile %s", tmp);
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        log_warn("pidfile %s", path);
        unlink(tmp);
        return -1;
    }
    return 0;
}


static void
reap_children(void)
{
    pid_t  pid;
    int    status;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (!api_parent_exited(pid, status)
            && !tls_child_exited(pid, status))
        {
            /* a replica's, or a cleanup helper's (nothing to do) */
            backends_reap(pid, status);
        }
    }
}


/* SIGHUP: what can change while replicas run */
static void
reload(void)
{
    struct config  *c;
    char            err[1024];

    sdnotify_reloading();
    c = config_load(conf->file, err, sizeof(err));
    if (c == NULL) {
        log_warnx("reload: %s (keeping the running configuration)", err);
        sdnotify("READY=1");
        return;
    }
    if (strcmp(c->state_dir, conf->state_dir) != 0
        || strcmp(c->api_socket, conf->api_socket) != 0
        || strcmp(c->api_listen ? c->api_listen : "",
                  conf->api_listen ? conf->api_listen : "") != 0
        || strcmp(c->replicas_dir, conf->replicas_dir) != 0
        || strcmp(c->stats_url, conf->stats_url) != 0
        || strcmp(c->notify_socket ? c->notify_socket : "",
                  conf->notify_socket ? conf->notify_socket : "") != 0
        || c->local.network != conf->local.network
        || c->local.subnet != conf->local.subnet
        || c->api_connections != conf->api_connections
        || c->api_header_timeout_ms != conf->api_header_timeout_ms
        || c->api_body_timeout_ms != conf->api_body_timeout_ms)
    {
        log_warnx("reload: state_dir, api_socket, api_listen, "
                  "replicas_dir, stats_url, the api_ limits and the network of backends.local "
                  "change only with a restart");
    }
    if (strcmp(c->state ? c->state : "", conf->state ? conf->state : "")
        != 0
        || strcmp(c->instance ? c->instance : "",
                  conf->instance ? conf->instance : "") != 0
        || c->role != conf->role
        || c->leader_lease_ms != conf->leader_lease_ms)
    {
        log_warnx("reload: state, instance, role and leader_lease change "
                  "only with a restart");
    }

    free(conf->domain);
    conf->domain = xstrdup(c->domain);
    free(conf->service_url);
    conf->service_url = xstrdup(c->service_url);
    free(conf->gateway_url);
    conf->gateway_url = xstrdup(c->gateway_url);
    conf->log_level = c->log_level;
    conf->local.gpus = c->local.gpus;
    free(conf->local.nvidia_smi);
    conf->local.nvidia_smi = xstrdup(c->local.nvidia_smi);
    free(conf->local.amd_smi);
    conf->local.amd_smi = xstrdup(c->local.amd_smi);
    free(conf->local.rocm_smi);
    conf->local.rocm_smi = xstrdup(c->local.rocm_smi);
    conf->local.stop_grace_ms = c->local.stop_grace_ms;
    conf->local.drain_unknown_ms = c->local.drain_unknown_ms;
    conf->local.max_failures = c->local.max_failures;
    config_free(c);

    if (backends_init(&reconcile_events, err, sizeof(err)) != 0) {
        log_warnx("reload: %s", err);
    }
    log_info("configuration reloaded");
    sdnotify("READY=1");
}


static int
next_timeout(int64_t next_tick)
{
    int64_t  now, t;
    int      a;

    now = now_ms();
    t = next_tick - now;
    if (t < 0) {
        t = 0;
    }
    a = probes_timeout_ms();
    if (a >= 0 && a < t) {
        t = a;
    }
    a = backends_timeout_ms();
    if (a >= 0 && a < t) {
        t = a;
    }
    return (int) t;
}


/*
 * What an embedded controld does at start, and a shared-mode controller
 * once it leads: the runs from LMDB, the admin token (only when the
 * state has none), secrets, certificates, the API and the hold notices.
 */
static int
controller_start(int foreground)
{
    char  err[1024];

    if (runs_load() != 0 || tokens_bootstrap() != 0 || teams_bootstrap() != 0
        || secrets_init() != 0 || tls_init() != 0)
    {
        return -1;
    }
    if (api_parent_start(foreground, err, sizeof(err)) != 0) {
        log_warnx("%s", err);
        return -1;
    }
    if (notify_start(err, sizeof(err)) != 0) {
        log_warnx("%s", err);
        api_parent_stop();
        return -1;
    }
    return 0;
}


/* after daemon(): the API process, replicas adopted, the state written */
static void
controller_run(void)
{
    api_parent_run();
    shared_code_fetch();
    reconcile_adopt();
    runs_flush();
}


int
main(int argc, char **argv)
{
    const char        *file = CONTROLD_CONF;
    const char        *api_who = NULL;
    const char        *api_limits = NULL;
    const char        *pidfile = NULL;
    const char        *keys_out = NULL, *keys_in = NULL;
    int                force = 0;
    int                api_level = LOG_LEVEL_INFO;
    int                ch, foreground = 0, check = 0, verbose = 0;
    int                n, napi, nset, nprobe, nstats, nnote, nshared;
    int                timeout, acting = 0, exit_status = 0, pfd_off;
    char               err[1024];
    struct pollfd      pfd[POLL_MAX];
    struct sigaction   sa;
    struct timespec    ts;
    sigset_t           block, orig;
    int64_t            next_tick, next_readers, now;
    static const struct option  longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "keys-export", required_argument, NULL, 'E' + 256 },
        { "keys-import", required_argument, NULL, 'I' + 256 },
        { "force", no_argument, NULL, 'F' + 256 },
        { NULL, 0, NULL, 0 }
    };

    while ((ch = getopt_long(argc, argv, "dnf:p:vhA:L:M:", longopts, NULL))
           != -1)
    {
        switch (ch) {
        case 'd':
            foreground = 1;
            break;
        case 'n':
            check = 1;
            break;
        case 'f':
            file = optarg;
            break;
        case 'p':
            if (optarg[0] != '/') {
                fprintf(stderr, "dstack-controld: -p \"%s\": the pidfile "
                        "must be an absolute path\n", optarg);
                return 2;
            }
            pidfile = optarg;
            break;
        case 'h':
            help();
            break;
        case 'v':
            verbose++;
            break;
        case 'A':
            api_who = optarg;
            break;
        case 'L':
            api_level = atoi(optarg);
            break;
        case 'M':
            api_limits = optarg;
            break;
        case 'E' + 256:
            keys_out = optarg;
            break;
        case 'I' + 256:
            keys_in = optarg;
            break;
        case 'F' + 256:
            force = 1;
            break;
        default:
            usage();
        }
    }
    if (optind != argc) {
        usage();
    }
    if (api_who != NULL) {
        return api_main(api_who, api_limits, foreground, api_level);
    }
    sdnotify_init();

    log_init(1, LOG_LEVEL_INFO + verbose);

    conf = config_load(file, err, sizeof(err));
    if (conf == NULL) {
        fprintf(stderr, "dstack-controld: %s\n", err);
        return 1;
    }
    if (check) {
        fprintf(stderr, "dstack-controld: configuration OK\n");
        return 0;
    }
    if (keys_out != NULL || keys_in != NULL) {
        return keys_out != NULL ? keys_export(keys_out, force)
               : keys_import(keys_in, force);
    }
    if (verbose == 0) {
        log_setlevel(conf->log_level);
    }
    if (pidfile == NULL) {
        pidfile = conf->pidfile;
    }

    /* signals: flags only, delivered inside ppoll() */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &orig);
    sigdelset(&orig, SIGTERM);
    sigdelset(&orig, SIGINT);
    sigdelset(&orig, SIGHUP);
    sigdelset(&orig, SIGCHLD);

    umask(027);
    srandom((unsigned) (time(NULL) ^ getpid()));

    if (store_open() != 0) {
        return 1;
    }
    reconcile_init();
    if (!shared_enabled() || conf->role == ROLE_CONTROLLER) {
        if (backends_init(&reconcile_events, err, sizeof(err)) != 0) {
            log_warnx("%s", err);
            return 1;
        }
        if (stats_init(conf->stats_url, err, sizeof(err)) != 0) {
            log_warnx("%s", err);
            return 1;
        }
        /* the console's charts: each answer, second by second */
        stats_on_answer(series_answer);
    }
    if (!shared_enabled()) {
        if (controller_start(foreground) != 0) {
            return 1;
        }
        acting = 1;
    } else {
        /* a gateway forwards the module's hold notices to the leader */
        if (shared_start() != 0
            || (conf->role == ROLE_GATEWAY
                && notify_start(err, sizeof(err)) != 0))
        {
            log_warnx("%s", err);
            return 1;
        }
    }

    if (!foreground) {
        if (daemon(0, 0) != 0) {
            fatal("daemon");
        }
        log_init(0, log_getlevel());
    }

    if (acting) {
        controller_run();
        log_info("dstack-controld %s started: state %s, domain %s",
                 CONTROLD_VERSION, conf->state_dir, conf->domain);
        if (pidfile != NULL && pidfile_write(pidfile) != 0) {
            pidfile = NULL;
        }
        sdnotify("READY=1");
    }

    next_tick = 0;
    next_readers = now_ms() + READER_CHECK_MS;

    while (!got_term && !store_lost() && shared_exit_why() == NULL) {
        n = 0;
        nshared = shared_fill(pfd + n, POLL_MAX - n);
        n += nshared;
        napi = api_parent_fill(pfd + n, POLL_MAX - n);
        n += napi;
        nset = backends_fill(pfd + n, POLL_MAX - n);
        n += nset;
        nprobe = probes_fill(pfd + n, POLL_MAX - n);
        n += nprobe;
        nstats = stats_fill(pfd + n, POLL_MAX - n);
        n += nstats;
        nnote = notify_fill(pfd + n, POLL_MAX - n);
        n += nnote;

        timeout = reconcile_now ? 0 : next_timeout(next_tick);
        if (shared_enabled() && shared_timeout_ms() < timeout) {
            timeout = shared_timeout_ms();
        }
        ts.tv_sec = timeout / 1000;
        ts.tv_nsec = (long) (timeout % 1000) * 1000000;

        if (ppoll(pfd, (nfds_t) n, &ts, &orig) < 0 && errno != EINTR) {
            fatal("ppoll");
        }

        if (got_chld) {
            got_chld = 0;
            reap_children();
        }
        if (got_hup) {
            got_hup = 0;
            reload();
        }

        /* a leader whose lease ran out (paused, cut off) acts no more */
        if (shared_enabled()) {
            if (acting && !shared_may_act()) {
                break;
            }
            /* (it may have waited on the database: the lease again) */
            shared_process(pfd, nshared);
            if (shared_exit_why() != NULL || (acting && !shared_may_act())) {
                break;
            }
            if (shared_ready_now()) {
                log_info("dstack-controld %s following: state %s, domain %s",
                         CONTROLD_VERSION, conf->state_dir, conf->domain);
                if (pidfile != NULL && pidfile_write(pidfile) != 0) {
                    pidfile = NULL;
                }
                sdnotify("READY=1");
            }
            if (shared_lead_now()) {
                if (controller_start(foreground) != 0
                    || keys_publish() != 0)
                {
                    log_warnx("cannot start leading: exiting with status 1");
                    exit_status = 1;
                    break;
                }
                controller_run();
                acting = 1;
                log_info("dstack-controld %s leading: state %s, domain %s",
                         CONTROLD_VERSION, conf->state_dir, conf->domain);
            }
        }
        pfd_off = nshared;

        api_parent_process(pfd + pfd_off, napi);
        backends_process(pfd + pfd_off + napi, nset);
        probes_process(pfd + pfd_off + napi + nset, nprobe);
        stats_process(pfd + pfd_off + napi + nset + nprobe, nstats);
        notify_process(pfd + pfd_off + napi + nset + nprobe + nstats, nnote);

        now = now_ms();
        if (acting && (now >= next_tick || reconcile_now)) {
            if (store_check_files() != 0) {
                break;
            }
            reconcile_now = 0;
            reap_children();
            reconcile_tick();
            stats_tick();
            tls_tick();
            logrotate_tick();
            api_parent_tick();
            next_tick = now + CONTROLD_TICK_MS;
        } else if (!acting) {
            /* a follower: shared.c's timeout wakes the loop */
            next_tick = now + CONTROLD_TICK_MS;
        }
        if (acting) {
            probes_tick();
            runs_flush();
        }

        if (now >= next_readers) {
            next_readers = now + READER_CHECK_MS;
            n = ds_state_reader_check(state);
            if (n > 0) {
                log_info("cleared %d stale LMDB reader slot%s", n,
                         n == 1 ? "" : "s");
            }
        }
    }

    if (store_lost()) {
        /* nothing more is written: the file at the path is another one */
        log_warnx("exiting with status 1: %s; replicas keep running and "
                  "controld started again (systemd: Restart=on-failure) "
                  "opens the new state and adopts those it names",
                  store_lost_why());
        exit_status = 1;
    } else if (shared_exit_why() != NULL) {
        /* shared.c logged why; nothing more is written either */
        exit_status = 1;
    } else if (got_term) {
        log_info("%s: exiting; replicas keep running and the next start "
                 "adopts them", got_term == SIGINT ? "SIGINT" : "SIGTERM");
    }
    sdnotify("STOPPING=1");
    if (exit_status == 0 && acting) {
        runs_flush();
    }
    tls_stop();
    notify_stop();
    api_parent_stop();
    secrets_shutdown();
    if (shared_enabled()) {
        shared_stop();
    }
    store_close();
    if (pidfile != NULL) {
        unlink(pidfile);
    }
    return exit_status;
}
