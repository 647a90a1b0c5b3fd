/*
 * dstack-controld: the control plane.  Types shared by its files.
 *
 * One thread, one poll loop (main.c).  The API (api.c), probes (probes.c)
 * and the stats client (stats.c) are non-blocking and driven from that
 * loop; a periodic tick (main.c) reaps replicas, advances the reconciler
 * (reconcile.c) and writes what changed to LMDB (store.c).  Only store.c
 * begins write transactions, and only from the loop, so there is exactly
 * one writer.
 */

#ifndef CONTROLD_H
#define CONTROLD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "ds_state.h"
#include "log.h"

#define CONTROLD_VERSION        "0.1.0"
#define CONTROLD_CONF           "/etc/dstack/controld.yml"

#define CONTROLD_TICK_MS        100     /* the reconciler's period */


/* ---- configuration (config.c) ------------------------------------------- */

#define NET_AUTO                0       /* netns when root, else host */
#define NET_NETNS               1       /* one network namespace/replica */
#define NET_HOST                2       /* host network, 1 replica/run */

struct local_conf {
    int             enabled;
    int             network;            /* NET_* */
    uint32_t        subnet;             /* host order, e.g. 10.213.0.0 */
    int             subnet_bits;        /* prefix length, <= 28 */
    int             gpus;               /* 1: detect with nvidia-smi */
    char           *nvidia_smi;         /* the command to run */
    unsigned        stop_grace_ms;      /* SIGTERM .. SIGKILL */
    unsigned        drain_unknown_ms;   /* drain bound without stats */
    unsigned        max_failures;       /* before a run fails */
    uint64_t        log_max_size;       /* bytes of a replica's log, 0:
                                           no limit (logrotate.c) */
};

/* tls: in controld.yml; certificates (tls.c) */
struct tls_conf {
    int             acme;               /* tls.acme is set */
    char           *directory;          /* ACME directory URL */
    char           *email;              /* account contact, or NULL */
    char           *eab_kid;            /* external account binding */
    char           *eab_hmac_key;       /* base64url */
    char           *webroot;            /* nginx serves the challenges */
    char           *client;             /* uacme */
    char           *dns_hook;           /* dns-01 wildcard, or NULL */
    long long       renew_before_ms;
    unsigned        retry_ms;           /* first retry after a failure */
};

struct config {
    char           *file;
    char           *state_dir;
    char           *domain;
    char           *api_socket;
    unsigned        api_socket_mode;
    char           *stats_url;          /* "" when not configured */
    char           *replicas_dir;
    char           *service_url;        /* "{name}" is replaced */
    char           *client_config;      /* written at first start */
    char           *notify_socket;      /* module's hold notices, or NULL */
    char           *group;              /* nginx's group: state, sockets */
    int             log_level;
    struct local_conf local;
    struct tls_conf tls;
};

extern struct config   *conf;

struct config *config_load(const char *file, char *err, size_t errlen);
void config_free(struct config *c);


/* ---- util (util.c) ------------------------------------------------------ */

int64_t now_ms(void);                   /* CLOCK_MONOTONIC */
char *xstrdup(const char *s);
void *xcalloc(size_t n, size_t size);
int mkdir_p(const char *path, unsigned mode);
int rm_rf(const char *path);
/* "30s" "5m" "1h" "250ms" or plain seconds -> ms; -1 on error */
long long parse_duration_ms(const char *s);
/* reads /proc/<pid>/stat: 0 and the start time (ticks since boot) when
 * the process exists and is not a zombie, -1 otherwise */
int proc_start_time(pid_t pid, unsigned long long *start);
void hex_encode(const uint8_t *in, size_t n, char *out);
int valid_hex_hash(const char *s);
/* writes a file atomically (tmp + rename) with mode */
int write_file_atomic(const char *path, const char *data, size_t len,
    unsigned mode);
/* gives path to the configured group (nginx's); 0 when none is set */
int chgrp_conf(const char *path);
/* snprintf into a fixed buffer; 0 when it fit, -1 when truncated */
int fmt(char *buf, size_t n, const char *f, ...)
    __attribute__((format(printf, 3, 4)));


/* ---- specs (spec.c) ----------------------------------------------------- */

#include "ds_spec.h"

/*
 * Validates a spec from the API (ds_spec_from_json) into sp, and checks
 * what only the daemon can: every env value resolved.  0, or -1 with the
 * validator's message ("spec.resources.gpu: ...") in err.
 */
int spec_load(const cJSON *json, ds_spec_t *sp, char *err, size_t n);
/* the service record for LMDB; its strings point into sp */
void spec_service(const ds_spec_t *sp, const char *name, ds_service_t *svc);
/* the fields of two normalized specs that differ, as API changes; sets
 * *rollout when a change needs new replicas (anything but replicas and
 * scaling) */
cJSON *spec_changes(const cJSON *old, const cJSON *new_, int *rollout);
/* "2..xCPU, 8GB.., 100GB.. (disk), 1xA100 (80GB)" */
void spec_resources_text(const ds_spec_t *sp, char *buf, size_t n);
/* the commands as one bash script */
char *spec_script(const ds_spec_t *sp);
const char *spec_method_name(int method);


/* ---- runs and replicas -------------------------------------------------- */

enum run_status {
    RUN_PENDING = 0, RUN_SUBMITTED, RUN_PROVISIONING, RUN_RUNNING,
    RUN_TERMINATING, RUN_TERMINATED, RUN_FAILED, RUN_DONE
};

enum replica_status {
    REP_SUBMITTED = 0, REP_PROVISIONING, REP_PULLING, REP_RUNNING,
    REP_TERMINATING, REP_TERMINATED, REP_ABORTED, REP_FAILED, REP_DONE
};

const char *run_status_name(int s);
const char *replica_status_name(int s);
int run_status_parse(const char *s);
int replica_status_parse(const char *s);

struct run;
struct probe;

/* the autoscaler's view of a run (autoscale.c) */
#define AUTOSCALE_PEAKS         300     /* seconds of in-flight peaks */

struct autoscale {
    int             want;               /* clamped, before the delays */
    double          value;              /* rps, or in-flight requests */
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
    int             status;             /* enum replica_status */
    char            message[256];

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

    /* in LMDB: ready (takes requests) or draining */
    int             ready;
    int             draining;

    time_t          submitted_at;
    time_t          started_at;
    int64_t         ready_since_ms;
    int             restarts;
    int             failures;           /* consecutive, reset once ready */
    int64_t         next_start_ms;      /* backoff; 0: at once */

    /* stopping */
    int             retire;             /* leaving for good (stop, scale
                                           down, replaced by a new version) */
    int             abort;
    int64_t         drain_started_ms;
    int64_t         drain_deadline_ms;
    int64_t         term_sent_ms;       /* 0 until SIGTERM */
    int             kill_sent;

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

struct run {
    TAILQ_ENTRY(run) entry;
    char            name[DS_NAME_MAX + 1];
    int             status;             /* enum run_status */
    char            message[256];
    time_t          submitted_at;
    time_t          updated_at;
    int             version;
    ds_spec_t       spec;               /* current version; owns json */
    ds_service_t    svc;                /* points into spec */
    char            code[65];           /* sha256 hex, "" without code */
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
    time_t          failing_since;      /* no replica ready since */
    int             rollout_failed;     /* the version whose rollout gave
                                           up (the older one serves) */
    char            rollout_error[256];
    struct replica_list replicas;
};

TAILQ_HEAD(run_list, run);

extern struct run_list  runs;

struct run *run_find(const char *name);
struct run *run_new(const char *name);
void run_free(struct run *r);
struct replica *replica_new(struct run *run, int num, int version);
void replica_free(struct replica *rep);
void run_touch(struct run *r);
/* the run document for LMDB, and R for the API */
cJSON *run_to_doc(const struct run *r);
cJSON *run_to_api(const struct run *r);
struct run *run_from_doc(const char *doc, size_t len, char *err,
    size_t errlen);
/* the published URL of a run (static buffer) */
const char *run_url(const struct run *r);
/* a fresh "<adjective>-<animal>-<N>" */
void run_generate_name(char *buf, size_t n);


/* ---- state (store.c): the only writer ----------------------------------- */

extern ds_state_t  *state;

int store_open(void);
void store_close(void);
/* loads run documents into `runs` */
int store_load_runs(void);
/*
 * Writes every dirty run document and every changed replica set in one
 * transaction.  Called from the loop after each batch of changes.
 */
int store_flush(void);
int store_put_service(struct run *r, char *err, size_t errlen);
int store_put_cert(ds_cert_t *c, char *err, size_t errlen);


/* ---- certificates (tls.c) ----------------------------------------------- */

/* the local CA and gateway certificate; the ACME hook and directories */
int tls_init(void);
void tls_stop(void);
/* ACME: issue and renew, from the loop's tick */
void tls_tick(void);

/* logrotate.c: replica logs kept under local.log_max_size */
void logrotate_tick(void);
/* 1 when pid was an ACME child */
int tls_child_exited(pid_t pid, int status);
/* the run's certificate for the API, or NULL */
cJSON *tls_to_api(const struct run *r);


/* ---- tokens (tokens.c) -------------------------------------------------- */

#define AUTH_OK                 0
#define AUTH_MISSING            1
#define AUTH_INVALID            2
#define AUTH_EXPIRED            3
#define AUTH_NOT_ADMIN          4

/* checks an Authorization header value; name gets the token's name */
int tokens_check_admin(const char *authorization, char *name, size_t n);
/* the two halves: the hash of the bearer token (AUTH_OK, AUTH_MISSING,
 * AUTH_INVALID), then its record (a long request checks again) */
int tokens_bearer_hash(const char *authorization,
    uint8_t hash[DS_TOKEN_HASH_LEN]);
int tokens_check_admin_hash(const uint8_t hash[DS_TOKEN_HASH_LEN],
    char *name, size_t n);
int tokens_bootstrap(void);
cJSON *tokens_list(void);
int tokens_revoke(const char *name, char *err, size_t errlen);
/* 0, or an HTTP status with a message */
int tokens_create(const cJSON *req, cJSON **answer, char *err, size_t n);


/* ---- backends (backend.h) ----------------------------------------------- */

#include "backend.h"


/* ---- reconciler (reconcile.c) ------------------------------------------- */

void reconcile_init(void);
void reconcile_tick(void);
void reconcile_adopt(void);
void reconcile_child_exited(pid_t pid, int status);
/* probe results (probes.c) */
void reconcile_probe_result(struct replica *rep, int ok, const char *why);
/* API actions; 0 or an HTTP status with a message in err */
int reconcile_plan(const cJSON *req, cJSON **answer, char *err, size_t n);
int reconcile_apply(const cJSON *req, cJSON **answer, int *created,
    char *err, size_t n);
int reconcile_stop(struct run *r, int abort, char *err, size_t n);
/* set by the API: run the reconciler right after this batch */
extern int  reconcile_now;


/* ---- probes (probes.c) -------------------------------------------------- */

struct pollfd;

void probes_start(struct replica *rep);
void probes_cancel(struct replica *rep);
int probes_fill(struct pollfd *pfd, int max);
void probes_process(struct pollfd *pfd, int n);
int probes_timeout_ms(void);
void probes_tick(void);


/* ---- module stats (stats.c) --------------------------------------------- */

/* in-flight requests of an address of a service; -1 when unknown */
long stats_replica_inflight(const char *service, const char *addr);
long stats_service_inflight(const char *service);
long stats_service_arrivals(const char *service, unsigned window);
/* requests the module holds for a service scaled to zero */
long stats_service_held(const char *service);
/* when the stats last answered (monotonic ms), 0 never */
int64_t stats_fresh_ms(void);
void stats_request(int64_t soon_ms);
int stats_fill(struct pollfd *pfd, int max);
void stats_process(struct pollfd *pfd, int n);
void stats_tick(void);
int stats_init(const char *url, char *err, size_t n);


/* ---- hold notices from the module (notify.c) ---------------------------- */

int notify_start(char *err, size_t n);
void notify_stop(void);
int notify_fill(struct pollfd *pfd, int max);
void notify_process(struct pollfd *pfd, int n);


/* ---- autoscaler (autoscale.c) ------------------------------------------- */

/* desired replicas of a run from the module's stats (every tick) */
void autoscale_run(struct run *r, int64_t now);
/* a request waits for a service scaled to zero: one replica at once */
void autoscale_hold(const char *name);
/* "scaling": {desired, current, metric, value, reason}, or NULL */
cJSON *autoscale_to_api(const struct run *r);


/* ---- API (api.c) -------------------------------------------------------- */

int api_start(char *err, size_t n);
void api_stop(void);
int api_fill(struct pollfd *pfd, int max);
void api_process(void);
int api_timeout_ms(void);
/* resumes log streams waiting for new bytes */
void api_tick(void);

#endif /* CONTROLD_H */
