/*
 * PostgreSQL for shared mode: one statement or transaction per call
 * (see pg.h).  The shared log is dstack_records, one row per key at its
 * latest revision; dstack_leader.rev is the last revision published and
 * term fences a former leader.  Deletions stay as tombstones (value
 * NULL) so that followers see them.  Compacting old tombstones needs a
 * full resync for a follower older than the oldest one kept: later.
 */

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "pg.h"
#include "util.h"

#define PG_INT2OID              21
#define PG_INT8OID              20
#define PG_BYTEAOID             17


/* libpq's message, one line, after what was being done */
static int
pg_fail(PGconn *c, char *err, size_t n, const char *what)
{
    snprintf(err, n, "state: %s: %s", what,
             c != NULL ? PQerrorMessage(c) : "no connection");
    err[strcspn(err, "\n")] = '\0';
    if (err[strlen(err) - 1] == ' ') {
        err[strlen(err) - 1] = '\0';
    }
    return PG_EFAIL;
}


/* the server's notices ("already exists, skipping") are not news */
static void
pg_notice(void *arg, const char *msg)
{
    (void) arg;
    (void) msg;
}


/*
 * The URI comes last: what the user wrote there wins over these
 * defaults (a later keyword overrides an earlier one).
 */
PGconn *
pg_connect(const char *uri, char *err, size_t n)
{
    static const char  *keys[] = {
        "connect_timeout", "keepalives", "keepalives_idle",
        "keepalives_interval", "keepalives_count", "tcp_user_timeout",
        "options", "application_name", "dbname", NULL
    };
    const char         *vals[] = {
        "2", "1", "5", "1", "3", "5000",
        "-c statement_timeout=5000 -c idle_in_transaction_session_timeout"
        "=10000", "dstack-controld", uri, NULL
    };
    PGconn             *c;

    c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        snprintf(err, n, "state: cannot connect: out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        pg_fail(c, err, n, "cannot connect");
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, pg_notice, NULL);
    return c;
}


void
pg_close(PGconn **c)
{
    if (*c != NULL) {
        PQfinish(*c);
        *c = NULL;
    }
}


int
pg_broken(PGconn *c)
{
    return c == NULL || PQstatus(c) != CONNECTION_OK;
}


static int
pg_cmd(PGconn *c, const char *sql, char *err, size_t n)
{
    PGresult  *r;
    int        ok;

    r = PQexec(c, sql);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK
         || PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok ? 0 : pg_fail(c, err, n, sql);
}


static void
pg_rollback(PGconn *c)
{
    PQclear(PQexec(c, "ROLLBACK"));
}


static uint64_t
pg_be64(const char *p)
{
    const unsigned char  *u = (const unsigned char *) p;
    uint64_t              v = 0;
    int                   i;

    for (i = 0; i < 8; i++) {
        v = (v << 8) | u[i];
    }
    return v;
}


static void
pg_put64(char *p, uint64_t v)
{
    int  i;

    for (i = 7; i >= 0; i--) {
        p[i] = (char) (v & 0xff);
        v >>= 8;
    }
}


/* ---- publishing ---------------------------------------------------------- */

struct pg_pub {
    PGconn         *c;
    char            rev[8];             /* int8, network order */
    size_t          count;
    char           *err;
    size_t          errlen;
};


static int
pg_pub_one(void *arg, int db, const void *key, size_t klen, const void *val,
    size_t vlen)
{
    static const Oid    types[4] = { PG_INT2OID, PG_BYTEAOID, PG_BYTEAOID,
                                     PG_INT8OID };
    static const int    formats[4] = { 1, 1, 1, 1 };
    struct pg_pub      *p = arg;
    PGresult           *r;
    const char         *vals[4];
    int                 lens[4], ok;
    uint16_t            db16;
    char                desc[64];

    db16 = htons((uint16_t) db);
    vals[0] = (const char *) &db16;
    lens[0] = 2;
    vals[1] = key;
    lens[1] = (int) klen;
    vals[2] = val;                      /* NULL: a tombstone */
    lens[2] = (int) vlen;
    vals[3] = p->rev;
    lens[3] = 8;

    r = PQexecParams(p->c, "INSERT INTO dstack_records (db, key, value, rev) "
                     "VALUES ($1, $2, $3, $4) ON CONFLICT (db, key) DO "
                     "UPDATE SET value = excluded.value, rev = excluded.rev",
                     4, types, vals, lens, formats, 1);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        snprintf(desc, sizeof(desc), "cannot publish a record of \"%s\"",
                 ds_db_name(db));
        pg_fail(p->c, p->err, p->errlen, desc);
        return -1;
    }
    p->count++;
    return 0;
}


static int
pg_publish_txn(PGconn *c, int64_t term, ds_txn_t *txn, int all,
    uint64_t *rev, struct pg_pub *p, char *err, size_t n)
{
    PGresult  *r;
    ds_err_t   e;
    int64_t    now;
    char       sql[160];

    r = PQexec(c, "SELECT term FROM dstack_leader WHERE id = 1 FOR UPDATE");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        PQclear(r);
        return pg_fail(c, err, n, "cannot read the leader's term");
    }
    now = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (now != term) {
        snprintf(err, n, "state: fenced: the leader's term is %lld, this "
                 "instance led term %lld: another instance leads",
                 (long long) now, (long long) term);
        return PG_EFENCED;
    }

    snprintf(sql, sizeof(sql), "UPDATE dstack_leader SET rev = rev + 1 "
             "WHERE id = 1 RETURNING rev");
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        PQclear(r);
        return pg_fail(c, err, n, "cannot take a revision");
    }
    *rev = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    pg_put64(p->rev, *rev);

    if (all) {
        if (ds_mirror_foreach(txn, pg_pub_one, p, &e) != DS_OK) {
            if (strstr(err, "state:") != err) {
                snprintf(err, n, "state: cannot read the state to publish "
                         "it: %s", e.msg);
            }
            return PG_EFAIL;
        }
    } else if (ds_txn_changes(txn, pg_pub_one, p) != 0) {
        return PG_EFAIL;
    }

    snprintf(sql, sizeof(sql), "SELECT pg_notify('dstack_change', '%llu')",
             (unsigned long long) *rev);
    return pg_cmd(c, sql, err, n);
}


int
pg_publish(PGconn *c, int64_t term, ds_txn_t *txn, int all, uint64_t *rev,
    size_t *count, char *err, size_t n)
{
    struct pg_pub  p;
    int            rc;

    memset(&p, 0, sizeof(p));
    p.c = c;
    p.err = err;
    p.errlen = n;
    err[0] = '\0';

    if (pg_cmd(c, "BEGIN", err, n) != 0) {
        return PG_EFAIL;
    }
    rc = pg_publish_txn(c, term, txn, all, rev, &p, err, n);
    if (rc != 0) {
        pg_rollback(c);
        return rc;
    }
    if (pg_cmd(c, "COMMIT", err, n) != 0) {
        return PG_EFAIL;
    }
    *count = p.count;
    return 0;
}


/* ---- following ----------------------------------------------------------- */

static int
pg_apply(PGresult *r, ds_txn_t *txn, size_t *applied, char *err, size_t n)
{
    int        i, rows;
    ds_err_t   e;
    uint16_t   db;

    rows = PQntuples(r);
    for (i = 0; i < rows; i++) {
        if (PQgetlength(r, i, 0) != 2) {
            snprintf(err, n, "state: a record with a bad db column");
            return PG_EFAIL;
        }
        memcpy(&db, PQgetvalue(r, i, 0), 2);
        if (ds_mirror_apply(txn, (int) ntohs(db), PQgetvalue(r, i, 1),
                            (size_t) PQgetlength(r, i, 1),
                            PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2),
                            (size_t) PQgetlength(r, i, 2), &e) != DS_OK)
        {
            snprintf(err, n, "state: cannot mirror revision %llu: %s",
                     (unsigned long long) pg_be64(PQgetvalue(r, i, 3)),
                     e.msg);
            return PG_EFAIL;
        }
    }
    *applied = (size_t) rows;
    return 0;
}


/*
 * In one REPEATABLE READ transaction: the leader's revision M, then
 * every record in (local, M].  A local revision above M, or none while
 * the database has records, means this LMDB mirrors another cluster (or
 * nothing yet): the mirror is rebuilt from every live record.
 */
static int
pg_catch_up_read(PGconn *c, ds_state_t *st, uint64_t *rev, size_t *applied,
    int *reloaded, int *empty, char *err, size_t n)
{
    static const Oid   types[2] = { PG_INT8OID, PG_INT8OID };
    static const int   formats[2] = { 1, 1 };
    PGresult          *r;
    ds_txn_t          *txn;
    ds_err_t           e;
    uint64_t           local, m;
    const char        *vals[2];
    int                lens[2], rc, have;
    char               lo[8], hi[8];

    r = PQexec(c, "SELECT rev FROM dstack_leader WHERE id = 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        PQclear(r);
        return pg_fail(c, err, n, "cannot read the leader's revision");
    }
    m = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);

    if (ds_txn_begin(st, 1, &txn, &e) != DS_OK) {
        snprintf(err, n, "state: %s", e.msg);
        return PG_EFAIL;
    }
    rc = ds_mirror_rev(txn, &local, &e);
    if (rc == DS_ERROR) {
        ds_txn_abort(txn);
        snprintf(err, n, "state: %s", e.msg);
        return PG_EFAIL;
    }
    have = (rc == DS_OK);

    *empty = (m == 0);
    if (m == 0 || (have && local == m)) {
        ds_txn_abort(txn);
        *rev = m;
        return 0;
    }

    if (!have || local > m) {
        *reloaded = 1;
        local = 0;
        if (ds_mirror_clear(txn, &e) != DS_OK) {
            ds_txn_abort(txn);
            snprintf(err, n, "state: cannot clear the mirror: %s", e.msg);
            return PG_EFAIL;
        }
    }

    pg_put64(lo, local);
    pg_put64(hi, m);
    vals[0] = lo;
    vals[1] = hi;
    lens[0] = lens[1] = 8;
    r = PQexecParams(c, *reloaded
                     ? "SELECT db, key, value, rev FROM dstack_records WHERE "
                       "rev > $1 AND rev <= $2 AND value IS NOT NULL"
                     : "SELECT db, key, value, rev FROM dstack_records WHERE "
                       "rev > $1 AND rev <= $2",
                     2, types, vals, lens, formats, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        ds_txn_abort(txn);
        return pg_fail(c, err, n, "cannot read records");
    }
    rc = pg_apply(r, txn, applied, err, n);
    PQclear(r);
    if (rc == 0 && ds_mirror_set_rev(txn, m, &e) != DS_OK) {
        snprintf(err, n, "state: %s", e.msg);
        rc = PG_EFAIL;
    }
    if (rc != 0) {
        ds_txn_abort(txn);
        return rc;
    }
    if (ds_txn_commit(txn, &e) != DS_OK) {
        snprintf(err, n, "state: cannot commit the mirror: %s", e.msg);
        return PG_EFAIL;
    }
    *rev = m;
    return 0;
}


int
pg_catch_up(PGconn *c, ds_state_t *st, uint64_t *rev, size_t *applied,
    int *reloaded, int *empty, char *err, size_t n)
{
    int  rc;

    *applied = 0;
    *reloaded = 0;
    *empty = 0;
    if (pg_cmd(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, n)
        != 0)
    {
        return PG_EFAIL;
    }
    rc = pg_catch_up_read(c, st, rev, applied, reloaded, empty, err, n);
    pg_rollback(c);                     /* read only: nothing to commit */
    return rc;
}


/* ---- leadership ---------------------------------------------------------- */

int
pg_try_lock(PGconn *c, int *got, char *err, size_t n)
{
    PGresult  *r;
    char       sql[64];

    snprintf(sql, sizeof(sql), "SELECT pg_try_advisory_lock(%d)",
             PG_LOCK_LEADER);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        PQclear(r);
        return pg_fail(c, err, n, "cannot try the leader lock");
    }
    *got = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return 0;
}


int
pg_take_term(PGconn *c, const char *instance, const char *api_url,
    int64_t *term, uint64_t *rev, char *err, size_t n)
{
    PGresult    *r;
    const char  *vals[2];

    vals[0] = instance;
    vals[1] = api_url;
    r = PQexecParams(c, "UPDATE dstack_leader SET term = term + 1, "
                     "instance = $1, api_url = $2, heartbeat = now() "
                     "WHERE id = 1 RETURNING term, rev",
                     2, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        PQclear(r);
        return pg_fail(c, err, n, "cannot take a term");
    }
    *term = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    *rev = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    return 0;
}


int
pg_heartbeat(PGconn *c, int64_t term, char *err, size_t n)
{
    PGresult  *r;
    char       sql[128];
    int        rows;

    snprintf(sql, sizeof(sql), "UPDATE dstack_leader SET heartbeat = now() "
             "WHERE id = 1 AND term = %lld", (long long) term);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        PQclear(r);
        return pg_fail(c, err, n, "cannot renew the leader's heartbeat");
    }
    rows = atoi(PQcmdTuples(r));
    PQclear(r);
    if (rows != 1) {
        snprintf(err, n, "state: fenced: term %lld is over: another "
                 "instance leads", (long long) term);
        return PG_EFENCED;
    }
    return 0;
}


int
pg_end_stale(PGconn *c, unsigned lease_ms, int *ended, char *who,
    size_t wholen, long long *age_ms, char *err, size_t n)
{
    PGresult  *r;
    char       sql[512];
    int        pid;

    *ended = 0;
    r = PQexec(c, "SELECT coalesce(instance, ''), "
               "(extract(epoch FROM clock_timestamp() - heartbeat) * 1000)"
               "::bigint FROM dstack_leader WHERE id = 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        PQclear(r);
        return pg_fail(c, err, n, "cannot read the leader's heartbeat");
    }
    snprintf(who, wholen, "%s", PQgetvalue(r, 0, 0));
    /* no heartbeat yet: a leader that has just taken the lock */
    *age_ms = PQgetisnull(r, 0, 1) ? -1 : strtoll(PQgetvalue(r, 0, 1), NULL,
                                                  10);
    PQclear(r);
    if (*age_ms < (long long) lease_ms) {
        return 0;
    }

    /* an int4 key: classid 0, objid the key, objsubid 1 */
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(pid) FROM "
             "pg_locks WHERE locktype = 'advisory' AND classid = 0 AND "
             "objid = %d AND objsubid = 1 AND granted AND pid <> "
             "pg_backend_pid()", PG_LOCK_LEADER);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return pg_fail(c, err, n, "cannot end the stale leader's session");
    }
    pid = PQntuples(r);
    PQclear(r);
    *ended = pid > 0;
    return 0;
}


/* ---- instances and notices ----------------------------------------------- */

int
pg_instance_seen(PGconn *c, const char *instance, const char *role,
    const char *api_url, const char *stats_url, uint64_t rev, int first,
    char *err, size_t n)
{
    PGresult    *r;
    const char  *vals[6];
    char         revs[32];
    int          ok;

    snprintf(revs, sizeof(revs), "%llu", (unsigned long long) rev);
    vals[0] = instance;
    vals[1] = role;
    vals[2] = api_url;
    vals[3] = stats_url;
    vals[4] = revs;
    vals[5] = first ? "t" : "f";
    r = PQexecParams(c, "INSERT INTO dstack_instances (instance, role, "
                     "api_url, stats_url, rev, applied_at, seen, started) "
                     "VALUES ($1, $2, $3, $4, $5, now(), now(), now()) "
                     "ON CONFLICT (instance) DO UPDATE SET role = $2, "
                     "api_url = $3, stats_url = $4, rev = $5, "
                     "applied_at = CASE WHEN dstack_instances.rev IS "
                     "DISTINCT FROM $5::bigint THEN now() ELSE "
                     "dstack_instances.applied_at END, seen = now(), "
                     "started = CASE WHEN $6::bool THEN now() ELSE "
                     "dstack_instances.started END",
                     6, NULL, vals, NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? 0 : pg_fail(c, err, n, "cannot update dstack_instances");
}


int
pg_stats_sources(PGconn *c, unsigned within_ms, char *buf, size_t len,
    char *err, size_t n)
{
    PGresult    *r;
    const char  *vals[1];
    const char  *v;
    char         secs[32];
    int          ok;

    snprintf(secs, sizeof(secs), "%.3f", within_ms / 1000.0);
    vals[0] = secs;
    r = PQexecParams(c, "SELECT coalesce(string_agg(stats_url, ' ' "
                     "ORDER BY instance), '') FROM dstack_instances "
                     "WHERE stats_url <> '' AND seen > now() - "
                     "make_interval(secs => $1::float8)",
                     1, NULL, vals, NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok) {
        v = PQgetvalue(r, 0, 0);
        if (strlen(v) >= len) {
            PQclear(r);
            snprintf(err, n, "dstack_instances: the stats_url list is "
                     "longer than %zu bytes", len - 1);
            return PG_EFAIL;
        }
        memcpy(buf, v, strlen(v) + 1);
    }
    PQclear(r);
    return ok ? 0 : pg_fail(c, err, n, "cannot read dstack_instances");
}

/* a numeric column of row i, or 0 when NULL */
static double
pg_num(PGresult *r, int i, int col)
{
    return PQgetisnull(r, i, col) ? 0 : strtod(PQgetvalue(r, i, col), NULL);
}


int
pg_cluster(PGconn *c, cJSON *out, char *err, size_t n)
{
    PGresult  *r;
    cJSON     *leader, *list, *o;
    int        i;

    r = PQexec(c, "SELECT instance, term, rev, extract(epoch FROM now() - "
               "heartbeat) FROM dstack_leader WHERE id = 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return pg_fail(c, err, n, "cannot read dstack_leader");
    }
    if (PQntuples(r) == 1) {
        leader = cJSON_AddObjectToObject(out, "leader");
        cJSON_AddStringToObject(leader, "instance", PQgetvalue(r, 0, 0));
        cJSON_AddNumberToObject(leader, "term", pg_num(r, 0, 1));
        cJSON_AddNumberToObject(leader, "heartbeat_age_s", pg_num(r, 0, 3));
        cJSON_AddNumberToObject(out, "rev", pg_num(r, 0, 2));
    }
    PQclear(r);

    r = PQexec(c, "SELECT i.instance, i.role, i.rev, "
               "greatest(l.rev - i.rev, 0), "
               "CASE WHEN l.rev > i.rev THEN extract(epoch FROM now() - "
               "i.applied_at) ELSE 0 END, "
               "extract(epoch FROM now() - i.seen), i.stats_url, i.api_url "
               "FROM dstack_instances i, dstack_leader l WHERE l.id = 1 "
               "ORDER BY i.instance");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return pg_fail(c, err, n, "cannot read dstack_instances");
    }
    list = cJSON_AddArrayToObject(out, "instances");
    for (i = 0; i < PQntuples(r); i++) {
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "instance", PQgetvalue(r, i, 0));
        cJSON_AddStringToObject(o, "role", PQgetvalue(r, i, 1));
        cJSON_AddNumberToObject(o, "rev", pg_num(r, i, 2));
        cJSON_AddNumberToObject(o, "behind", pg_num(r, i, 3));
        cJSON_AddNumberToObject(o, "lag_s", pg_num(r, i, 4));
        cJSON_AddNumberToObject(o, "seen_s", pg_num(r, i, 5));
        cJSON_AddStringToObject(o, "stats_url", PQgetvalue(r, i, 6));
        cJSON_AddStringToObject(o, "api_url", PQgetvalue(r, i, 7));
        cJSON_AddItemToArray(list, o);
    }
    PQclear(r);
    return 0;
}

int
pg_listen(PGconn *c, const char *channel, char *err, size_t n)
{
    char  sql[64];

    snprintf(sql, sizeof(sql), "LISTEN %s", channel);
    return pg_cmd(c, sql, err, n);
}


int
pg_notify(PGconn *c, const char *channel, const char *payload, char *err,
    size_t n)
{
    PGresult    *r;
    const char  *vals[2];
    int          ok;

    vals[0] = channel;
    vals[1] = payload;
    r = PQexecParams(c, "SELECT pg_notify($1, $2)", 2, NULL, vals, NULL,
                     NULL, 0);
    ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok ? 0 : pg_fail(c, err, n, "cannot send a notice");
}


int
pg_code_put(PGconn *c, const char *hash, const void *data, size_t len,
    char *err, size_t n)
{
    PGresult    *r;
    const char  *vals[2];
    int          lens[2], formats[2] = { 0, 1 }, ok;

    vals[0] = hash;
    vals[1] = data;
    lens[0] = 0;
    lens[1] = (int) len;
    r = PQexecParams(c, "INSERT INTO dstack_code (hash, data) VALUES "
                     "($1, $2) ON CONFLICT (hash) DO NOTHING",
                     2, NULL, vals, lens, formats, 0);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? 0 : pg_fail(c, err, n, "cannot keep a code archive");
}


int
pg_code_get(PGconn *c, const char *hash, void **data, size_t *len,
    int *found, char *err, size_t n)
{
    PGresult    *r;
    const char  *vals[1];
    int          size;

    *data = NULL;
    *len = 0;
    *found = 0;
    vals[0] = hash;
    r = PQexecParams(c, "SELECT data FROM dstack_code WHERE hash = $1",
                     1, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return pg_fail(c, err, n, "cannot read a code archive");
    }
    if (PQntuples(r) == 1) {
        size = PQgetlength(r, 0, 0);
        *data = xcalloc(1, size > 0 ? (size_t) size : 1);
        memcpy(*data, PQgetvalue(r, 0, 0), (size_t) size);
        *len = (size_t) size;
        *found = 1;
    }
    PQclear(r);
    return 0;
}
