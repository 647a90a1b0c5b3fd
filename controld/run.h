/*
 * Runs and their replicas in memory (runs.c): the data model every other
 * part of controld reads.  Nothing here calls out of the model: views for
 * the API live in views.c, the document kept in LMDB in rundoc.c, the
 * lifecycle in reconcile.c.
 */

#ifndef CONTROLD_RUN_H
#define CONTROLD_RUN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <time.h>

#include "ds_spec.h"
#include "ds_state.h"

struct run;
struct replica;
struct backend_ops;

enum run_status {
    RUN_PENDING = 0, RUN_SUBMITTED, RUN_PROVISIONING, RUN_RUNNING,
    RUN_TERMINATING, RUN_TERMINATED, RUN_FAILED, RUN_DONE
};

/*
 * A replica's lifecycle: one state, changed only by replica_set_state()
 * (lifecycle.c), which checks the transition and logs it.
 *
 *   submitted -> provisioning [-> pulling] -> running -> ready
 *   ready -> running                 probes fail: out of routing
 *   ready -> draining -> stopping [-> killing] -> terminated
 *   (any with a process) -> aborting -> aborted        abort
 *   (any with a process) -> backoff  it exited on its own: restarts
 *   backoff -> provisioning | submitted | failed (the run gave up)
 *
 * The API knows dstack's words (REFERENCE.md §3), replica_status_name():
 * ready is "running", draining/stopping/killing/aborting "terminating",
 * backoff "failed".
 */
enum replica_state {
    RS_SUBMITTED = 0,   /* waits to start (or for its port) */
    RS_PROVISIONING,    /* the backend sets it up */
    RS_PULLING,         /* the backend fetches its image */
    RS_RUNNING,         /* its commands run; probes decide */
    RS_READY,           /* in the replica set: takes requests */
    RS_DRAINING,        /* in the set as draining: no new requests */
    RS_STOPPING,        /* asked to end (SIGTERM) */
    RS_KILLING,         /* ignored that: forced (SIGKILL) */
    RS_ABORTING,        /* aborted: forced at once */
    RS_BACKOFF,         /* exited on its own: starts again later */
    RS_TERMINATED,      /* ended: stopped */
    RS_ABORTED,         /* ended: aborted */
    RS_FAILED,          /* ended: failed, not started again */
    RS_DONE,            /* ended: exited 0 (tasks; unused by services) */
    RS_NSTATES
};

const char *run_status_name(int s);
int run_status_parse(const char *s);
/* the state's own name ("draining"), and the API's word ("terminating") */
const char *replica_state_name(int s);
const char *replica_status_name(int s);
int replica_state_parse(const char *s);

/* what the state says, for everyone who reads replicas */
int replica_ready(const struct replica *rep);       /* takes requests */
int replica_published(const struct replica *rep);   /* ready or draining */
int replica_leaving(const struct replica *rep);     /* never back */
int replica_ended(const struct replica *rep);       /* ended states */
int replica_starting(const struct replica *rep);    /* not ready yet */

struct probe;

/* the autoscaler's view of a run (autoscale.c) */
#define AUTOSCALE_PEAKS         300     /* seconds of in-flight peaks */

/* why the autoscaler changed a run's desired replicas (its metrics) */
enum scale_reason {
    SCALE_RPS = 0,      /* requests per second over the window */
    SCALE_INFLIGHT,     /* in-flight requests (their peak) */
    SCALE_MIN,          /* the metric asked for fewer: replicas.min */
    SCALE_MAX,          /* the metric asked for more: replicas.max */
    SCALE_HELD,         /* a request waits for a run scaled to zero */
    SCALE_TTFT,         /* p99 time to first token against the target */
    SCALE_NREASONS
};

struct autoscale {
    int             want;               /* clamped, before the delays */
    int             why;                /* enum scale_reason of want */
    double          value;              /* rps, in-flight requests, or
                                           p99 TTFT in seconds */
    char            reason[192];        /* "rps 12.3 over 30s / ..." */
    int             logged_want;        /* what was logged last: */
    int             logged_desired;     /* want, desired and why */
    int             logged_wait;        /* nothing is done yet */
    uint32_t        peak[AUTOSCALE_PEAKS]; /* in-flight max per second */
    int64_t         peak_sec;           /* the newest second in peak */
};

#define REPLICA_GPUS_MAX        16
struct replica {
    TAILQ_ENTRY(replica) entry;
    struct run     *run;

    int             num;
    int             version;
    int             state;              /* enum replica_state */
    char            message[256];

    /* the backend holds something of it (a process, a container): set
     * when start() succeeds, cleared once release() is done */
    int             active;
    const struct backend_ops *backend;  /* NULL until it first starts */
    char            backend_name[16];   /* as loaded, until adopted */

    /* the container (backend_container.c): its id */
    char            container[72];

    /* on a host of a fleet (backend_ssh.c): "<fleet>/<host>:<port>", the
     * agent's name for it there, and its address inside the host (the
     * gateway reaches addr: the host's port, or a tunnel) */
    char            host[300];
    char            tag[16];
    char            inner[256];
    /* an image on a fleet host: that host's engine, forwarded over SSH
     * to this unix socket (inner: the address its ports are reached at) */
    char            engine_sock[108];
    int             engine_podman;
    long long       log_base;           /* our log's size at its start */
    long long       log_indexed;        /* its size last put in .idx */
    /* addr is a relay (a tunnel) that accepts connections whatever the
     * replica does: readiness needs an HTTP answer */
    int             relayed;

    /* the process: its own session, so pid = pgid */
    pid_t           pid;
    unsigned long long pid_start;       /* /proc start time: no pid reuse */
    int             adopted;            /* not our child: poll, no wait */
    int             exit_status;        /* wait status, -1 while none */
    int             setup_failed;       /* message says why */

    /* where it listens */
    char            addr[DS_REPLICA_ADDR_LEN];
    int             net_index;          /* /30 in the subnet, -1: host */
    int             gpus[REPLICA_GPUS_MAX];
    int             n_gpus;

    time_t          submitted_at;
    time_t          started_at;
    int64_t         ready_since_ms;
    int             restarts;
    int             failures;           /* consecutive, reset once ready */
    int64_t         next_start_ms;      /* backoff; 0: at once */

    /* stopping */
    int64_t         drain_started_ms;
    int64_t         drain_deadline_ms;
    int64_t         term_sent_ms;       /* when it was asked to end */

    /* probes (probes.c) */
    struct probe   *probe;              /* the one in flight */
    unsigned        probe_pass[DS_SPEC_PROBES_MAX]; /* in a row */
    int64_t         probe_at[DS_SPEC_PROBES_MAX];   /* next attempt */
    unsigned        probe_fails;        /* in a row, once ready */
    unsigned        probe_delay_ms;     /* before ready: grows */
    int             probe_done;         /* until_ready and ready */
    char            probe_error[160];
};

TAILQ_HEAD(replica_list, replica);

/* what happened to a run since controld started, for its metrics
 * (metrics.c); counted where it happens */
struct run_counters {
    unsigned long long  probe_failures;         /* replica not ready */
    unsigned long long  probe_failures_ready;   /* replica ready */
    unsigned long long  unrouted;       /* ready ones out, by probes */
    unsigned long long  starts;         /* accepted by a backend */
    unsigned long long  restarts;       /* of those, after a failure */
    unsigned long long  failures;       /* replicas that failed */
    unsigned long long  scaled[2][SCALE_NREASONS];  /* [0] down, [1] up */
};

struct run {
    TAILQ_ENTRY(run) entry;
    /* the key of its service and records: the run's name, or for a
     * project other than main "<name>--<project>" (ds_valid_service_key) */
    char            name[DS_NAME_MAX + 1];
    char            short_name[DS_NAME_MAX + 1];  /* as its user names it */
    char            project[DS_NAME_MAX + 1];     /* "" for main */
    char            user[DS_NAME_MAX + 1];        /* who applied it first */
    int             status;             /* enum run_status */
    char            message[256];
    time_t          submitted_at;
    time_t          updated_at;
    int             version;
    ds_spec_t       spec;               /* current version; owns json */
    ds_service_t    svc;                /* points into spec */
    char            code[65];           /* sha256 hex, "" without code */
    char            files[65];          /* the spec's files: an archive of
                                           them at their places, or "" */
    int             desired;            /* replicas wanted */
    int             next_num;           /* for scale up */

    int             stopping;
    int             abort;
    int             finished;           /* terminal status: not reconciled */

    int             dirty;              /* the run document changed */
    int             publish;            /* the replica set changed */
    int             service_put;        /* service record is in LMDB */

    int64_t         last_scaled_ms;
    struct autoscale scaling;           /* autoscale.c */
    struct run_counters counters;       /* metrics.c */
    time_t          failing_since;      /* no replica ready since */
    int             rollout_failed;     /* the version whose rollout gave
                                           up (the older one serves) */
    char            rollout_error[256];
    struct replica_list replicas;
};

TAILQ_HEAD(run_list, run);

extern struct run_list  runs;

struct run *run_find(const char *name);
/* name: the key ("web", "web--team"): sets short_name and project */
struct run *run_new(const char *name);
void run_free(struct run *r);
struct replica *replica_new(struct run *run, int num, int version);
void replica_free(struct replica *rep);
void run_touch(struct run *r);
/* its output, whatever runs it: <replicas_dir>/<run>/<num>-<version>.log */
int replica_log_path(const struct replica *rep, char *buf, size_t n);
/* the published URL of a run (static buffer) */
const char *run_url(const struct run *r);
/* a fresh "<adjective>-<animal>-<N>" */
void run_generate_name(char *buf, size_t n);

#endif /* CONTROLD_RUN_H */
