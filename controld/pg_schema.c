/*
 * The PostgreSQL schema of shared mode, as numbered migrations: the
 * database holds its version in dstack_schema, and a start applies the
 * missing ones in one transaction under an advisory lock, so that two
 * instances starting at once neither race nor see half a schema.  A
 * database newer than this program is refused: an older controld must
 * not write records it may not understand.
 *
 * Add a migration at the end; never change one that shipped.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"


static const char  *migrations[] = {
    /* 1: the leader row, the records (the shared log) and instances */
    "CREATE TABLE dstack_leader ("
    "  id int PRIMARY KEY CHECK (id = 1),"
    "  term bigint NOT NULL DEFAULT 0,"
    "  instance text,"
    "  api_url text,"
    "  heartbeat timestamptz,"
    "  rev bigint NOT NULL DEFAULT 0);"
    "INSERT INTO dstack_leader (id) VALUES (1);"
    "CREATE TABLE dstack_records ("
    "  db smallint NOT NULL,"
    "  key bytea NOT NULL,"
    "  value bytea,"                    /* NULL: deleted (a tombstone) */
    "  rev bigint NOT NULL,"
    "  PRIMARY KEY (db, key));"
    "CREATE INDEX dstack_records_rev ON dstack_records (rev);"
    "CREATE TABLE dstack_instances ("
    "  instance text PRIMARY KEY,"
    "  role text NOT NULL,"
    "  api_url text,"
    "  stats_url text,"
    "  rev bigint,"
    "  applied_at timestamptz,"
    "  seen timestamptz,"
    "  started timestamptz);",
    /* 2: code archives, so that the next leader can start replicas */
    "CREATE TABLE dstack_code ("
    "  hash text PRIMARY KEY,"
    "  data bytea NOT NULL,"
    "  created timestamptz NOT NULL DEFAULT now());",
};

#define PG_SCHEMA_VERSION  ((int) (sizeof(migrations) / sizeof(migrations[0])))


int
pg_schema_version(void)
{
    return PG_SCHEMA_VERSION;
}


static int
pg_cmd(PGconn *c, const char *sql, const char *what, char *err, size_t n)
{
    PGresult  *r;
    int        ok;

    r = PQexec(c, sql);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK
         || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) {
        snprintf(err, n, "state: %s: %s", what, PQerrorMessage(c));
        err[strcspn(err, "\n")] = '\0';
    }
    PQclear(r);
    return ok ? 0 : PG_EFAIL;
}


static int
pg_migrate_txn(PGconn *c, char *err, size_t n)
{
    PGresult  *r;
    int        version, v;
    char       sql[128];

    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%d)",
             PG_LOCK_MIGRATE);
    if (pg_cmd(c, sql, "cannot lock the schema", err, n) != 0
        || pg_cmd(c, "CREATE TABLE IF NOT EXISTS dstack_schema "
                  "(version int NOT NULL)", "cannot create dstack_schema",
                  err, n) != 0)
    {
        return PG_EFAIL;
    }

    r = PQexec(c, "SELECT version FROM dstack_schema");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) > 1) {
        snprintf(err, n, "state: cannot read dstack_schema: %s",
                 PQntuples(r) > 1 ? "more than one row"
                 : PQerrorMessage(c));
        err[strcspn(err, "\n")] = '\0';
        PQclear(r);
        return PG_EFAIL;
    }
    version = PQntuples(r) == 1 ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);

    if (version > PG_SCHEMA_VERSION) {
        snprintf(err, n, "state: database schema is version %d, this "
                 "dstack-controld knows up to %d; upgrade dstack-controld",
                 version, PG_SCHEMA_VERSION);
        return PG_EFATAL;
    }
    if (version < 0) {
        if (pg_cmd(c, "INSERT INTO dstack_schema VALUES (0)",
                   "cannot write dstack_schema", err, n) != 0)
        {
            return PG_EFAIL;
        }
        version = 0;
    }
    for (v = version + 1; v <= PG_SCHEMA_VERSION; v++) {
        snprintf(sql, sizeof(sql), "migration %d", v);
        if (pg_cmd(c, migrations[v - 1], sql, err, n) != 0) {
            return PG_EFAIL;
        }
    }
    if (version < PG_SCHEMA_VERSION) {
        snprintf(sql, sizeof(sql), "UPDATE dstack_schema SET version = %d",
                 PG_SCHEMA_VERSION);
        if (pg_cmd(c, sql, "cannot write dstack_schema", err, n) != 0) {
            return PG_EFAIL;
        }
    }
    return version;
}


int
pg_migrate(PGconn *c, char *err, size_t n)
{
    int  rc;

    if (pg_cmd(c, "BEGIN", "cannot begin the migration", err, n) != 0) {
        return PG_EFAIL;
    }
    rc = pg_migrate_txn(c, err, n);
    if (rc < 0) {
        PQclear(PQexec(c, "ROLLBACK"));
        return rc;
    }
    if (pg_cmd(c, "COMMIT", "cannot commit the migration", err, n) != 0) {
        return PG_EFAIL;
    }
    return rc;      /* the version found: < pg_schema_version(): migrated */
}
