/*
 * Shared mode's states, driven from controld's loop (see shared.h and
 * the contract in controld/README.md):
 *
 *   connect   no connection: connect and migrate every second; log once
 *             when the database is lost and once when it is back
 *   follow    LISTEN dstack_change; catch up on a notice and every
 *             second anyway (a notice can be lost); a controller also
 *             tries the leader lock every second on its own connection,
 *             and ends the session of a leader whose heartbeat is older
 *             than the lease
 *   lead      term taken, caught up: main.c starts acting; heartbeat
 *             every second; a lease that could not be renewed for a
 *             whole lease (CLOCK_MONOTONIC: it runs while the process is
 *             stopped too) ends acting at once and the process exits 1
 *
 * Two connections: "follow" (LISTEN, catch-up, publishing, instance
 * rows, wake-ups) and "lock" (the advisory lock and the heartbeat: the
 * session whose end releases leadership).  Every process upserts its
 * dstack_instances row every second.
 */

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "autoscale.h"
#include "code.h"
#include "config.h"
#include "keys.h"
#include "log.h"
#include "pg.h"
#include "run.h"
#include "shared.h"
#include "stats.h"
#include "store.h"
#include "util.h"

#define SHARED_TICK_MS          1000
#define SHARED_RETRY_MS         200     /* a lease to renew, a lock to take */

static PGconn      *follow_conn;
static PGconn      *lock_conn;
static int          lost;               /* the database: logged once */
static int          ready, ready_told;
static int          leading, lead_told;
static int          want_catch_up;
static int          first_seen = 1;
static int64_t      term;
static int64_t      renewed_ms;         /* the last renewed lease */
static int64_t      next_tick_ms;
static int          retry_soon;         /* the next tick in RETRY_MS */
static uint64_t     mirrored;           /* the revision LMDB mirrors */
static char         exit_why[1200];
static char         uri_shown[1100];    /* the URI, password as *** */
static char         last_err[512];

static int          mark_pending;       /* follow.lost to write */
static uint64_t     mark_since;

static void shared_mark_lost(uint64_t since);


int
shared_enabled(void)
{
    return conf->state != NULL;
}


static const char *
role_name(void)
{
    if (conf->role == ROLE_GATEWAY) {
        return "gateway";
    }
    return keys_differ() ? "controller (keys differ)" : "controller";
}


/* the API's address for dstack_leader and dstack_instances */
static const char *
api_url(void)
{
    static char  buf[300];

    if (conf->role == ROLE_GATEWAY) {
        return "";
    }
    if (conf->api_listen != NULL && conf->api_listen[0] != '\0') {
        snprintf(buf, sizeof(buf), "http://%s", conf->api_listen);
    } else {
        snprintf(buf, sizeof(buf), "unix:%s", conf->api_socket);
    }
    return buf;
}


/*
 * The leader sums the stats of every instance seen within a lease (the
 * gateways register their stats_url every second; one that stops being
 * seen drops out), and its own controld.yml's.  stats.c keeps the state
 * of the sources it already had: asking every second logs nothing new.
 */
static void
shared_stats_sources(void)
{
    const char  *urls[2];
    char         list[8192], err[512];

    if (pg_stats_sources(follow_conn, conf->leader_lease_ms, list,
                         sizeof(list), err, sizeof(err)) != 0)
    {
        log_debug("%s", err);
        return;
    }
    urls[0] = conf->stats_url;
    urls[1] = list;
    stats_set_sources(urls, 2);
}


static void
shared_exit(const char *fmt, const char *why)
{
    if (exit_why[0] == '\0') {
        snprintf(exit_why, sizeof(exit_why), fmt, why);
        log_warnx("%s", exit_why);
    }
    leading = 0;
}


const char *
shared_exit_why(void)
{
    return exit_why[0] != '\0' ? exit_why : NULL;
}


/* the database failed: once in the log, then quiet until it is back */
static void
shared_lost(const char *err)
{
    snprintf(last_err, sizeof(last_err), "%s", err);
    if (!lost) {
        lost = 1;
        mark_pending = 1;
        mark_since = (uint64_t) time(NULL);
        log_warnx("%s; %s, retrying every second", err,
                  leading ? "writes fail until it is back"
                  : "serving the last state mirrored");
    } else {
        log_debug("%s", err);
    }
    if (pg_broken(follow_conn)) {
        pg_close(&follow_conn);
    }
}


/*
 * What the gateway's stats say of the database (meta "follow.lost", a
 * local key: never published): since when it cannot be reached, or
 * nothing.  Best effort: the log has said it already.  Written from the
 * loop (shared_process), never where it is found: a publish fails inside
 * store_end(), while this process's write transaction is open, and
 * LMDB's writer lock is not reentrant.
 */
static void
shared_mark_lost(uint64_t since)
{
    ds_txn_t  *txn;
    ds_err_t   err;

    if (state == NULL) {
        return;
    }
    if (ds_txn_begin(state, 1, &txn, &err) != DS_OK) {
        log_debug("state: cannot note the database's state: %s", err.msg);
        return;
    }
    if (ds_mirror_set_lost(txn, since, &err) != DS_OK) {
        ds_txn_abort(txn);
        log_debug("state: cannot note the database's state: %s", err.msg);
        return;
    }
    if (ds_txn_commit(txn, &err) != DS_OK) {
        log_debug("state: cannot note the database's state: %s", err.msg);
    }
}


/* a statement went through: the database is back if it was lost */
static void
shared_back(void)
{
    if (lost) {
        lost = 0;
        mark_pending = 1;
        mark_since = 0;
        log_info("state: the database %s is back", uri_shown);
    }
}


int
shared_start(void)
{
    config_redact_uri(conf->state, uri_shown, sizeof(uri_shown));
    log_info("shared mode: state %s, instance %s, role %s, leader lease "
             "%u ms; local mirror %s", uri_shown, conf->instance,
             role_name(), conf->leader_lease_ms, conf->state_dir);
    next_tick_ms = 0;
    return 0;
}


void
shared_stop(void)
{
    pg_close(&lock_conn);
    pg_close(&follow_conn);
    ds_state_capture(state, 0);
    store_publish = NULL;
}


/* ---- following ----------------------------------------------------------- */

static int
shared_connect(void)
{
    char  err[512];
    int   rc;

    follow_conn = pg_connect(conf->state, err, sizeof(err));
    if (follow_conn == NULL) {
        shared_lost(err);
        return -1;
    }
    rc = pg_migrate(follow_conn, err, sizeof(err));
    if (rc == PG_EFATAL) {
        pg_close(&follow_conn);
        shared_exit("%s", err);
        return -1;
    }
    if (rc < 0 || pg_listen(follow_conn, "dstack_change", err,
                            sizeof(err)) != 0
        || (leading && pg_listen(follow_conn, "dstack_wake", err,
                                 sizeof(err)) != 0))
    {
        pg_close(&follow_conn);
        shared_lost(err);
        return -1;
    }
    if (rc < pg_schema_version()) {
        log_info("state: database schema migrated from version %d to %d",
                 rc, pg_schema_version());
    }
    if (!lost) {
        log_info("state: connected to %s", uri_shown);
    }
    shared_back();
    want_catch_up = 1;
    return 0;
}


static int
shared_catch_up(void)
{
    char      err[512];
    size_t    applied;
    int       reloaded, empty;
    uint64_t  rev;
    int64_t   t0;

    want_catch_up = 0;
    t0 = now_ms();
    if (pg_catch_up(follow_conn, state, &rev, &applied, &reloaded, &empty,
                    err, sizeof(err)) != 0)
    {
        shared_lost(err);
        return -1;
    }
    if (reloaded) {
        log_info("state: this LMDB did not mirror this database (revision "
                 "%llu there): rebuilt the mirror from it, %zu records",
                 (unsigned long long) rev, applied);
    } else if (applied > 0 || rev != mirrored) {
        log_debug("state: mirrored revision %llu (%zu records, %lld ms)",
                  (unsigned long long) rev, applied,
                  (long long) (now_ms() - t0));
    }
    mirrored = rev;
    (void) empty;
    if (!ready) {
        ready = 1;
        log_info("state: following %s at revision %llu", uri_shown,
                 (unsigned long long) rev);
    }
    return 0;
}


/*
 * The notices libpq holds.  Any statement on follow_conn (a catch-up,
 * the row's upsert, a wake-up's pg_notify) reads the notices that arrive
 * meanwhile into libpq's queue, and then the socket has nothing left to
 * wake ppoll: so this runs after each of them too, or such a change
 * would wait for the next tick.
 */
static void
shared_drain(void)
{
    PGnotify  *n;

    if (follow_conn == NULL) {
        return;
    }
    while ((n = PQnotifies(follow_conn)) != NULL) {
        if (strcmp(n->relname, "dstack_change") == 0) {
            want_catch_up = 1;
        } else if (strcmp(n->relname, "dstack_wake") == 0 && leading) {
            log_debug("state: a gateway holds a request for \"%.63s\"",
                      n->extra);
            autoscale_hold(n->extra);
        }
        PQfreemem(n);
    }
}


static void
shared_notices(void)
{
    if (follow_conn == NULL) {
        return;
    }
    if (!PQconsumeInput(follow_conn)) {
        shared_lost("state: the connection to the database broke");
        return;
    }
    shared_drain();
}


/* ---- leading ------------------------------------------------------------- */

/*
 * The first leader of an empty database publishes what its LMDB holds:
 * the way from embedded mode to shared mode.
 */
static int
shared_publish_all(void)
{
    struct store_txn  *t;
    ds_txn_t          *txn;
    ds_err_t           e;
    uint64_t           rev;
    size_t             count;
    char               err[512];

    (void) t;
    if (ds_txn_begin(state, 1, &txn, &e) != DS_OK) {
        log_warnx("state: %s", e.msg);
        return -1;
    }
    if (pg_publish(follow_conn, term, txn, 1, &rev, &count, err,
                   sizeof(err)) != 0
        || ds_mirror_set_rev(txn, rev, &e) != DS_OK)
    {
        ds_txn_abort(txn);
        log_warnx("%s", err[0] ? err : e.msg);
        return -1;
    }
    if (ds_txn_commit(txn, &e) != DS_OK) {
        log_warnx("state: %s", e.msg);
        return -1;
    }
    mirrored = rev;
    log_info("state: the database was empty: published this instance's "
             "state (%s), %zu records, as revision %llu", conf->state_dir,
             count, (unsigned long long) rev);
    return 0;
}


/* store.c's hook: a leader's write goes to PostgreSQL first */
static int
shared_publish(ds_txn_t *txn, uint64_t *rev, char *err, size_t n)
{
    size_t  count;
    int     rc;

    if (!shared_may_act()) {
        snprintf(err, n, "state: this instance (%s) does not lead any "
                 "more: nothing was written", conf->instance);
        return -1;
    }
    if (follow_conn == NULL) {
        snprintf(err, n, "the shared database %s is unavailable (%s): "
                 "nothing was written", uri_shown, last_err);
        return -1;
    }
    rc = pg_publish(follow_conn, term, txn, 0, rev, &count, err, n);
    if (rc == PG_EFENCED) {
        shared_exit("%s: exiting with status 1 without writing", err);
        return -1;
    }
    if (rc != 0) {
        shared_lost(err);
        snprintf(err, n, "the shared database %s is unavailable (%s): "
                 "nothing was written", uri_shown, last_err);
        return -1;
    }
    mirrored = *rev;
    log_debug("state: published revision %llu (%zu records, term %lld)",
              (unsigned long long) *rev, count, (long long) term);
    return 0;
}


static void
shared_lead(void)
{
    char      err[512];
    uint64_t  rev;

    /* the mirror as the lock found it: a controller without the
     * cluster's keys lets another take the lock, no term taken */
    if (shared_catch_up() != 0 || !keys_may_lead()) {
        pg_close(&lock_conn);
        return;
    }
    if (pg_take_term(lock_conn, conf->instance, api_url(), &term, &rev, err,
                     sizeof(err)) != 0)
    {
        log_warnx("%s", err);
        pg_close(&lock_conn);
        return;
    }
    renewed_ms = now_ms();
    leading = 1;
    log_info("state: leading as term %lld (instance %s, revision %llu)",
             (long long) term, conf->instance, (unsigned long long) rev);

    if (shared_catch_up() != 0
        || (rev == 0 && shared_publish_all() != 0)
        || pg_listen(follow_conn, "dstack_wake", err, sizeof(err)) != 0)
    {
        shared_exit("state: cannot start leading (%s): exiting with status 1",
                    last_err[0] ? last_err : err);
        return;
    }
    ds_state_capture(state, 1);
    store_publish = shared_publish;
    lead_told = 0;
}


static void
shared_try_lead(void)
{
    char        err[512], who[128];
    int         got, ended;
    long long   age;

    if (lock_conn == NULL) {
        lock_conn = pg_connect(conf->state, err, sizeof(err));
        if (lock_conn == NULL) {
            return;                     /* follow_conn's log tells */
        }
    }
    if (pg_try_lock(lock_conn, &got, err, sizeof(err)) != 0) {
        log_debug("%s", err);
        pg_close(&lock_conn);
        return;
    }
    if (got) {
        shared_lead();
        return;
    }
    if (pg_end_stale(lock_conn, conf->leader_lease_ms, &ended, who,
                     sizeof(who), &age, err, sizeof(err)) != 0)
    {
        log_debug("%s", err);
        pg_close(&lock_conn);
        return;
    }
    if (ended) {
        log_warnx("state: leader %s has not renewed its lease for %lld ms "
                  "(lease %u ms): ended its session, taking over",
                  who, age, conf->leader_lease_ms);
        if (pg_try_lock(lock_conn, &got, err, sizeof(err)) == 0 && got) {
            shared_lead();
        } else {
            retry_soon = 1;             /* the lock goes with its session */
        }
    }
}


/*
 * The lock connection may have broken (a database restart): a new one
 * takes the lock again, and the heartbeat's term check says whether
 * this instance still leads.
 */
static void
shared_renew(void)
{
    char  err[512];
    int   got, rc;

    retry_soon = 1;
    if (lock_conn == NULL) {
        lock_conn = pg_connect(conf->state, err, sizeof(err));
        if (lock_conn == NULL) {
            log_debug("%s", err);
            return;
        }
        got = 0;
        if (pg_try_lock(lock_conn, &got, err, sizeof(err)) != 0 || !got) {
            log_debug("state: cannot take the leader lock again%s%s",
                      got ? ": " : " (held by another session)",
                      got ? err : "");
            pg_close(&lock_conn);
            return;
        }
    }
    rc = pg_heartbeat(lock_conn, term, err, sizeof(err));
    if (rc == PG_EFENCED) {
        shared_exit("%s: exiting with status 1", err);
        return;
    }
    if (rc != 0) {
        /* a session that failed once (a restarted server) is not
         * trusted with the lock: a new one takes it again */
        log_debug("%s", err);
        pg_close(&lock_conn);
        return;
    }
    retry_soon = 0;
    renewed_ms = now_ms();
}


int
shared_may_act(void)
{
    int64_t  age;

    if (!leading) {
        return 0;
    }
    age = now_ms() - renewed_ms;
    if (age >= (int64_t) conf->leader_lease_ms) {
        char  why[128];

        snprintf(why, sizeof(why), "%lld ms (lease %u ms)", (long long) age,
                 conf->leader_lease_ms);
        shared_exit("state: lease lost: not renewed for %s; this instance "
                    "stops acting and exits with status 1 (replicas keep "
                    "running; the next leader adopts them)", why);
        return 0;
    }
    return 1;
}


/* ---- the loop ------------------------------------------------------------ */

int
shared_fill(struct pollfd *pfd, int max)
{
    if (follow_conn == NULL || max < 1 || PQsocket(follow_conn) < 0) {
        return 0;
    }
    pfd[0].fd = PQsocket(follow_conn);
    pfd[0].events = POLLIN;
    pfd[0].revents = 0;
    return 1;
}


int
shared_timeout_ms(void)
{
    int64_t  t;

    if (want_catch_up && follow_conn != NULL) {
        return 0;
    }
    t = next_tick_ms - now_ms();
    return t < 0 ? 0 : (int) t;
}


static void
shared_tick(void)
{
    char  err[512];

    if (follow_conn == NULL && shared_connect() != 0) {
        retry_soon = leading;           /* a lease to renew */
        return;
    }
    if (!leading) {
        want_catch_up = 1;
    }
    if (pg_instance_seen(follow_conn, conf->instance, role_name(),
                         api_url(), conf->stats_url, mirrored, first_seen,
                         err, sizeof(err)) != 0)
    {
        shared_lost(err);
        return;
    }
    shared_back();
    first_seen = 0;
    if (conf->role != ROLE_CONTROLLER) {
        return;
    }
    if (leading) {
        shared_renew();
        shared_stats_sources();
    } else if (ready && keys_may_lead()) {
        shared_try_lead();
    }
}


void
shared_process(struct pollfd *pfd, int n)
{
    int64_t  now;

    if (exit_why[0] != '\0') {
        return;
    }
    if (leading && !shared_may_act()) {
        return;
    }
    if (n > 0 && pfd[0].revents != 0) {
        shared_notices();
    }
    now = now_ms();
    if (now >= next_tick_ms) {
        retry_soon = 0;
        shared_tick();
        shared_drain();
        next_tick_ms = now_ms() + (retry_soon ? SHARED_RETRY_MS
                                   : SHARED_TICK_MS);
    }
    if (want_catch_up && !leading && follow_conn != NULL) {
        shared_catch_up();
        shared_drain();
    }
    if (mark_pending) {
        mark_pending = 0;
        shared_mark_lost(mark_since);
    }
}


int
shared_ready_now(void)
{
    if (ready && !ready_told) {
        ready_told = 1;
        return 1;
    }
    return 0;
}


int
shared_lead_now(void)
{
    if (leading && !lead_told && exit_why[0] == '\0') {
        lead_told = 1;
        return 1;
    }
    return 0;
}


void
shared_wake(const char *run)
{
    char  err[512];

    if (follow_conn == NULL) {
        log_debug("state: no database: the hold notice for \"%s\" is "
                  "dropped (the stats tell the leader)", run);
        return;
    }
    if (pg_notify(follow_conn, "dstack_wake", run, err, sizeof(err)) != 0) {
        shared_lost(err);
        return;
    }
    shared_drain();
}


struct cJSON *
shared_cluster(char *err, size_t n)
{
    cJSON  *out;

    out = cJSON_CreateObject();
    if (out == NULL) {
        snprintf(err, n, "cluster: out of memory");
        return NULL;
    }
    if (!shared_enabled()) {
        cJSON_AddStringToObject(out, "mode", "embedded");
        return out;
    }
    cJSON_AddStringToObject(out, "mode", "shared");
    cJSON_AddStringToObject(out, "instance", conf->instance);
    if (follow_conn == NULL) {
        snprintf(err, n, "cluster: the state database %s cannot be reached",
                 uri_shown);
        cJSON_Delete(out);
        return NULL;
    }
    if (pg_cluster(follow_conn, out, err, n) != 0) {
        cJSON_Delete(out);
        return NULL;
    }
    shared_drain();
    return out;
}


int
shared_code_publish(const char *hash, char *err, size_t n)
{
    void    *data;
    size_t   len;
    char     e[512];
    int      rc;

    if (!shared_enabled()) {
        return 0;
    }
    if (follow_conn == NULL) {
        snprintf(err, n, "the shared database %s is unavailable (%s): "
                 "nothing was written", uri_shown, last_err);
        return -1;
    }
    if (code_load(hash, &data, &len, err, n) != 0) {
        return -1;
    }
    rc = pg_code_put(follow_conn, hash, data, len, e, sizeof(e));
    free(data);
    if (rc != 0) {
        shared_lost(e);
        snprintf(err, n, "the shared database %s is unavailable (%s): "
                 "nothing was written", uri_shown, last_err);
        return -1;
    }
    return 0;
}


/* one archive from dstack_code into <state_dir>/code */
static void
shared_code_get(const char *run, const char *hash)
{
    void    *data;
    size_t   len;
    char     err[512];
    int      found;

    if (hash[0] == '\0' || code_exists(hash)) {
        return;
    }
    if (follow_conn == NULL
        || pg_code_get(follow_conn, hash, &data, &len, &found, err,
                       sizeof(err)) != 0)
    {
        log_warnx("run \"%s\": cannot fetch code %s from the database: %s",
                  run, hash, follow_conn == NULL ? last_err : err);
        return;
    }
    if (!found) {
        log_warnx("run \"%s\": code %s is neither here nor in the "
                  "database: its replicas cannot start here", run, hash);
        return;
    }
    if (code_store(hash, data, len, err, sizeof(err)) != 0) {
        log_warnx("run \"%s\": %s", run, err);
    } else {
        log_info("run \"%s\": fetched code %s (%zu bytes) from the "
                 "database", run, hash, len);
    }
    free(data);
}


void
shared_code_fetch(void)
{
    struct run  *r;

    if (!shared_enabled()) {
        return;
    }
    TAILQ_FOREACH(r, &runs, entry) {
        if (!r->finished) {
            shared_code_get(r->name, r->code);
            shared_code_get(r->name, r->files);
        }
    }
}
