/*
 * PostgreSQL for shared mode (#14): the connections, the schema
 * (pg_schema.c), publishing, following, leadership and instance rows
 * (pg.c).  What to do and when is shared.c's business; this layer runs
 * one statement or transaction per call and says how it went.
 *
 * Every call blocks on the database, which is why every connection has
 * short limits (connect_timeout, keepalives, tcp_user_timeout,
 * statement_timeout): a dead database costs the loop a few seconds at
 * most, never forever.  Records travel as binary bytea (PQexecParams,
 * binary formats both ways).
 *
 * Returns: 0, PG_EFAIL (the database failed or is unreachable: try
 * again later), PG_EFENCED (another instance leads: this one must stop
 * acting at once), PG_EFATAL (retrying cannot help: a schema newer than
 * this program).  err says where and why; it never holds a password.
 */

#ifndef CONTROLD_PG_H
#define CONTROLD_PG_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "ds_state.h"

struct cJSON;

#define PG_EFAIL                -1
#define PG_EFENCED              -2
#define PG_EFATAL               -3

/* advisory lock keys ("dstL", "dstM"): leadership, migrations */
#define PG_LOCK_LEADER          1685287756
#define PG_LOCK_MIGRATE         1685287757

/* a connection with the limits above; NULL with err */
PGconn *pg_connect(const char *uri, char *err, size_t n);
void pg_close(PGconn **c);
/* whether a failed connection should be dropped and made again */
int pg_broken(PGconn *c);

/* pg_schema.c: creates or migrates the schema in one transaction */
int pg_migrate(PGconn *c, char *err, size_t n);
int pg_schema_version(void);

/*
 * Publishes the captured changes of txn (all: every record of the
 * environment, the first publish of an embedded state) as one revision,
 * fenced by term; *rev is the revision.
 */
int pg_publish(PGconn *c, int64_t term, ds_txn_t *txn, int all,
    uint64_t *rev, size_t *count, char *err, size_t n);

/*
 * The follower's catch-up: every record newer than what st mirrors, up
 * to the leader's last revision, applied in one LMDB transaction with
 * that revision.  *rev: the revision now mirrored; *applied: records
 * written (0: nothing new); *reloaded: the mirror was rebuilt whole (a
 * state from another cluster, or never mirrored).  *empty: the database
 * has never been published to (st left alone).
 */
int pg_catch_up(PGconn *c, ds_state_t *st, uint64_t *rev, size_t *applied,
    int *reloaded, int *empty, char *err, size_t n);

/* leadership, on the lock connection */
int pg_try_lock(PGconn *c, int *got, char *err, size_t n);
/* term + 1 with this instance as leader: the new term, the last rev */
int pg_take_term(PGconn *c, const char *instance, const char *api_url,
    int64_t *term, uint64_t *rev, char *err, size_t n);
int pg_heartbeat(PGconn *c, int64_t term, char *err, size_t n);
/*
 * When the leader's heartbeat is older than lease_ms, ends the session
 * that holds the leader lock; *ended: 1 when it did, with the leader's
 * name and the heartbeat's age.
 */
int pg_end_stale(PGconn *c, unsigned lease_ms, int *ended, char *who,
    size_t wholen, long long *age_ms, char *err, size_t n);

/* this instance's row in dstack_instances */
int pg_instance_seen(PGconn *c, const char *instance, const char *role,
    const char *api_url, const char *stats_url, uint64_t rev, int first,
    char *err, size_t n);
/*
 * The stats_url of every instance seen within within_ms (gateways, and
 * this one), space-separated in buf: the sources a leader sums.
 */
int pg_stats_sources(PGconn *c, unsigned within_ms, char *buf, size_t len,
    char *err, size_t n);
/* the leader's row and every instance's, as GET /api/cluster shows
 * them, added to out */
int pg_cluster(PGconn *c, struct cJSON *out, char *err, size_t n);
/* LISTEN on a channel; pg_notify on one */
int pg_listen(PGconn *c, const char *channel, char *err, size_t n);
int pg_notify(PGconn *c, const char *channel, const char *payload,
    char *err, size_t n);

/* dstack_code: an archive kept (kept once: a second put is a no-op);
 * an archive read, *data malloc'd, *found 0 when the database has none */
int pg_code_put(PGconn *c, const char *hash, const void *data, size_t len,
    char *err, size_t n);
int pg_code_get(PGconn *c, const char *hash, void **data, size_t *len,
    int *found, char *err, size_t n);

#endif /* CONTROLD_PG_H */
