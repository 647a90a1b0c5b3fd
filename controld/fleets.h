/*
 * SSH fleets (fleets.c): dstack's `type: fleet` files with `ssh_config`,
 * the hosts they name, and what controld knows of each.
 *
 * A fleet is kept as a document in LMDB (its normalized spec, without
 * key material); the private keys it came with are files of controld's
 * own under <state_dir>/ssh/keys (0600, named by their hash, never
 * logged, never returned by the API).  Host keys are pinned per fleet in
 * <state_dir>/ssh/<fleet>.known_hosts.
 *
 * Each host is connected, discovered and watched by hosts.c; replicas
 * run on them through backend_ssh.c.
 */

#ifndef CONTROLD_FLEETS_H
#define CONTROLD_FLEETS_H

#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "ds_fleet.h"
#include "ds_state.h"
#include "offers.h"
#include "ssh.h"

enum host_status {
    HOST_CONNECTING = 0,    /* first contact, or again after a loss */
    HOST_UP,                /* answers its heartbeats */
    HOST_UNREACHABLE,       /* stopped answering: replicas moved away */
    HOST_FAILED             /* refused us (host key, login): no retry
                               until the fleet is applied again */
};

#define HOST_NETS_MAX           4096    /* replica networks per host */
#define HOST_PORT_BASE          40000   /* host port of network i: +i */

struct fleet;
struct ssh_cmd;

struct fleet_host {
    struct fleet   *fleet;
    int             index;
    char            id[300];            /* "<fleet>/<hostname>:<port>" */
    struct ssh_host ssh;
    char            address[256];       /* where replicas are reached */
    int             tunnel;             /* only through SSH (proxy_jump) */
    int             blocks;             /* 0: auto (one per GPU) */

    int             status;             /* enum host_status */
    char            message[256];
    int64_t         since_ms;           /* in this status since */

    /* what discovery found (hosts.c) */
    int             discovered;
    struct host_desc desc;
    char            dir[1024];          /* the agent's directory there */
    char            engine[16];         /* "docker", "podman", "" */
    char            engine_socket[256];
    int             netns;              /* replicas get namespaces */
    char            isolation_note[128];

    /* the connection (hosts.c) */
    pid_t           master;             /* ours, or -1 */
    int             master_err;         /* its messages: a file */
    struct ssh_cmd *cmd;                /* the heartbeat or discovery */
    int64_t         next_ms;            /* when to act next */
    int64_t         beat_ms;            /* the last heartbeat */
    int             gc_done;            /* since the last connection */
    char            engine_fwd[108];    /* its engine here, "" until
                                           forwarded on this connection */
};

struct fleet {
    TAILQ_ENTRY(fleet) entry;
    char            name[DS_NAME_MAX + 1];
    char            project[DS_NAME_MAX + 1];   /* whose: "" for main */
    cJSON          *doc;                /* {"spec","keys","submitted_at",
                                           "deleting","project"}, owned */
    ds_fleet_t      spec;               /* the typed view of its spec */
    time_t          submitted_at;
    int             deleting;           /* drained, then deleted */
    int64_t         empty_since_ms;     /* deleting, no replica left */
    struct fleet_host *hosts;
    int             n_hosts;
};

TAILQ_HEAD(fleet_list, fleet);
extern struct fleet_list  fleets;

/* fleets from LMDB, at start; their hosts connect from the loop */
void fleets_load(void);
struct fleet *fleet_find(const char *name);
/* a fleet of project pkey ("" for main): NULL for another project's */
struct fleet *fleet_find_in(const char *pkey, const char *name);
/* a host by its id ("<fleet>/<hostname>:<port>"), NULL when gone */
struct fleet_host *fleet_host_find(const char *id);

/*
 * The API (API.md, "Fleets"): plan, apply, list, one, delete.  0 or an
 * HTTP status with a message in err.
 */
int fleets_plan(const char *pkey, const cJSON *req, cJSON **answer,
    char *err, size_t n);
int fleets_apply(const char *pkey, const cJSON *req, cJSON **answer,
    int *created, char *err, size_t n);
cJSON *fleets_list(const char *pkey);
int fleets_get(const char *pkey, const char *name, cJSON **answer,
    char *err, size_t n);
int fleets_delete(const char *pkey, const char *name, const cJSON *req,
    cJSON **answer, char *err, size_t n);

/* what the loop calls: deleting fleets whose replicas are gone go, and
 * changed documents are written */
void fleets_tick(void);

/*
 * A path for a unix socket of controld's (a master connection's, an
 * engine's): <state_dir>/ssh/<prefix>-<hash of id>, or, when that is
 * too long for a socket, the same in /run/dstack-controld (0700).
 */
int fleet_sock_path(const char *prefix, const char *id, char *buf,
    size_t n);

/* the host's replicas of a run, and the blocks its replicas take */
int fleet_host_replicas(const struct fleet_host *h, const char *run);
int fleet_host_blocks_total(const struct fleet_host *h);
int fleet_host_blocks_busy(const struct fleet_host *h);
/* blocks a spec's replica takes on the host */
int fleet_host_blocks_need(const struct fleet_host *h, int gpus);

#endif /* CONTROLD_FLEETS_H */
