/*
 * The LMDB side of the shared state: opening the environment, readers'
 * and the writer's transactions, raw access.  Readers of records are in
 * ds_state_read.c; the writer's records and bookkeeping (uids, metric
 * slots, the models index) that keep one logical change inside one
 * transaction in ds_state_write.c.
 *
 * Only the LMDB 0.9 API is used.  MDB_NOTLS always: nginx workers keep
 * one read transaction each and reset/renew it per request, and a
 * daemon may move transactions between threads.
 *
 * Values returned by mdb_get() in a write transaction may live in dirty
 * pages that the next mdb_put() rewrites, and a caller may pass strings
 * that point into the map.  So the writers copy what they need, read and
 * check everything, encode every record, and only then write: an error
 * leaves the transaction as it was.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <lmdb.h>

#include "ds_state_impl.h"


/* what a key of each database names, for messages */
static const char  *ds_db_subjects[DS_DB_COUNT] = {
    "meta key", "service", "replica set of", "token", "model", "setting",
    "run", "certificate for", "fleet", "secret", "member", "user",
    "project", "audit event"
};

const char  *ds_db_names[DS_DB_COUNT] = {
    "meta", "services", "replicas", "tokens", "models", "settings", "runs",
    "certs", "fleets", "secrets", "members", "users", "projects", "audit"
};


static int ds_state_check_lock(ds_state_t *st, ds_err_t *err);
static void ds_state_file_ids(ds_state_t *st);
static int ds_state_adopt_mapsize(ds_state_t *st, ds_err_t *err);
static int ds_capture(ds_txn_t *txn, int db, const void *key, size_t klen,
    const void *val, size_t vlen, int deleted, ds_err_t *err);


void
ds_err_set(ds_err_t *err, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}


/* "<what was being done>: <mdb_strerror>"; the DS_* code for rc */
int
ds_mdb_err(ds_err_t *err, int rc, const char *fmt, ...)
{
    int      n;
    va_list  ap;

    if (err != NULL) {
        va_start(ap, fmt);
        n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);

        if (n >= 0 && (size_t) n < sizeof(err->msg)) {
            snprintf(err->msg + n, sizeof(err->msg) - (size_t) n, ": %s",
                     mdb_strerror(rc));
        }
    }

    return (rc == MDB_MAP_FULL) ? DS_EFULL : DS_ERROR;
}


/* prefixes an error message with its subject: "service \"a\": ..." */
void
ds_err_prefix(ds_err_t *err, const char *fmt, ...)
{
    char     tail[sizeof(err->msg)];
    int      n;
    size_t   len, room;
    va_list  ap;

    if (err == NULL) {
        return;
    }

    memcpy(tail, err->msg, sizeof(tail));
    tail[sizeof(tail) - 1] = '\0';

    va_start(ap, fmt);
    n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);

    if (n < 0 || (size_t) n + 3 >= sizeof(err->msg)) {
        return;
    }

    /* ": " and as much of the old message as fits */
    room = sizeof(err->msg) - (size_t) n - 3;
    len = strlen(tail);
    if (len > room) {
        len = room;
    }

    memcpy(err->msg + n, ": ", 2);
    memcpy(err->msg + n + 2, tail, len);
    err->msg[n + 2 + len] = '\0';
}


/*
 * Names a key for a message: service "a", token 1a2b3c4d (a token's key
 * is its hash: only a prefix, never all of it).
 */
const char *
ds_key_desc(int db, const void *key, size_t len, char *buf, size_t size)
{
    const uint8_t  *p;

    p = key;

    if (db == DS_DB_TOKENS) {
        if (len >= 4) {
            snprintf(buf, size, "token %02x%02x%02x%02x", p[0], p[1], p[2],
                     p[3]);
        } else {
            snprintf(buf, size, "token");
        }

    } else {
        snprintf(buf, size, "%s \"%.*s\"", ds_db_subjects[db],
                 (int) (len > 80 ? 80 : len), (const char *) key);
    }

    return buf;
}


/* ---- opening ----------------------------------------------------------- */

/*
 * The directory is rwx for the owner and r-x for the group when the
 * group may use the files: readers in that group (nginx) open data.mdb
 * and lock.mdb by name but never create or delete anything there.
 */
static int
ds_state_mkdir(const char *dir, unsigned mode, ds_err_t *err)
{
    mode_t  dmode;

    /* the group (nginx) may enter and read, never create or delete */
    dmode = (mode_t) (0700 | ((mode & 0070) ? 0050 : 0));

    if (mkdir(dir, dmode) == -1) {
        if (errno == EEXIST) {
            return DS_OK;
        }

        ds_err_set(err, "cannot create state directory %s: %s", dir,
                   strerror(errno));
        return DS_ERROR;
    }

    /* mkdir() applied the umask */
    if (chmod(dir, dmode) == -1) {
        ds_err_set(err, "cannot chmod state directory %s: %s", dir,
                   strerror(errno));
        return DS_ERROR;
    }

    return DS_OK;
}


static int
ds_state_path(char *buf, size_t size, const char *dir, const char *file)
{
    int  n;

    n = snprintf(buf, size, "%s/%s", dir, file);
    return (n < 0 || (size_t) n >= size) ? -1 : 0;
}


/* which of data.mdb and lock.mdb exist, to chmod those LMDB creates */
static void
ds_state_files_exist(const char *dir, int exists[2])
{
    static const char  *files[2] = { "data.mdb", "lock.mdb" };

    char         path[4096];
    int          i;
    struct stat  sb;

    for (i = 0; i < 2; i++) {
        exists[i] = ds_state_path(path, sizeof(path), dir, files[i]) != 0
                    || stat(path, &sb) == 0;
    }
}


/*
 * LMDB creates files with mode & ~umask; the lock file must get the
 * group bits exactly, or the nginx workers cannot open the state.
 */
static int
ds_state_chmod_created(const char *dir, const int existed[2], unsigned mode,
    ds_err_t *err)
{
    static const char  *files[2] = { "data.mdb", "lock.mdb" };

    char  path[4096];
    int   i;

    for (i = 0; i < 2; i++) {
        if (existed[i]) {
            continue;
        }

        if (ds_state_path(path, sizeof(path), dir, files[i]) != 0) {
            ds_err_set(err, "state directory name %s is too long", dir);
            return DS_ERROR;
        }

        if (chmod(path, (mode_t) (mode & 0777)) == -1 && errno != ENOENT) {
            ds_err_set(err, "cannot chmod %s: %s", path, strerror(errno));
            return DS_ERROR;
        }
    }

    return DS_OK;
}


static int
ds_schema_check(ds_state_t *st, const MDB_val *v, ds_err_t *err)
{
    uint32_t        schema;
    const uint8_t  *p;

    if (v->mv_size != 4) {
        ds_err_set(err, "state at %s: schema record is corrupt (%zu bytes)",
                   st->dir, v->mv_size);
        return DS_EINVAL;
    }

    p = v->mv_data;
    schema = (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
             | (uint32_t) p[3] << 24;

    if (schema > DS_SCHEMA_VERSION) {
        ds_err_set(err, "state schema %u is newer than this program (%u)",
                   schema, DS_SCHEMA_VERSION);
        return DS_ERROR;
    }

    /* the first schema: no older one to migrate from */
    if (schema < DS_SCHEMA_VERSION) {
        ds_err_set(err, "state at %s: schema %u is invalid", st->dir,
                   schema);
        return DS_EINVAL;
    }

    return DS_OK;
}


/* the writer creates the databases and the schema on first open */
static int
ds_state_init_writer(ds_state_t *st, ds_err_t *err)
{
    int       i, rc;
    uint8_t   schema[4], seq[8];
    MDB_txn  *txn;
    MDB_val   k, v;

    rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot begin a write transaction on "
                          "state at %s", st->dir);
    }

    for (i = 0; i < DS_DB_COUNT; i++) {
        rc = mdb_dbi_open(txn, ds_db_names[i], MDB_CREATE, &st->dbi[i]);
        if (rc != 0) {
            mdb_txn_abort(txn);
            return ds_mdb_err(err, rc, "cannot create database \"%s\" in "
                              "state at %s", ds_db_names[i], st->dir);
        }
    }

    k.mv_data = DS_KEY_SCHEMA;
    k.mv_size = sizeof(DS_KEY_SCHEMA) - 1;

    rc = mdb_get(txn, st->dbi[DS_DB_META], &k, &v);

    if (rc == 0) {
        rc = ds_schema_check(st, &v, err);
        if (rc != DS_OK) {
            mdb_txn_abort(txn);
            return rc;
        }

    } else if (rc == MDB_NOTFOUND) {
        schema[0] = DS_SCHEMA_VERSION & 0xff;
        schema[1] = schema[2] = schema[3] = 0;
        memset(seq, 0, sizeof(seq));

        v.mv_data = schema;
        v.mv_size = sizeof(schema);
        rc = mdb_put(txn, st->dbi[DS_DB_META], &k, &v, 0);

        if (rc == 0) {
            k.mv_data = DS_KEY_SEQ;
            k.mv_size = sizeof(DS_KEY_SEQ) - 1;
            v.mv_data = seq;
            v.mv_size = sizeof(seq);
            rc = mdb_put(txn, st->dbi[DS_DB_META], &k, &v, 0);
        }

        if (rc != 0) {
            mdb_txn_abort(txn);
            return ds_mdb_err(err, rc, "cannot write the schema of state "
                              "at %s", st->dir);
        }

    } else {
        mdb_txn_abort(txn);
        return ds_mdb_err(err, rc, "cannot read the schema of state at %s",
                          st->dir);
    }

    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot commit the schema of state at %s",
                          st->dir);
    }

    return DS_OK;
}


/*
 * Readers open the databases in a read transaction and commit it, which
 * makes the handles live on in the environment; they never create one.
 */
static int
ds_state_init_reader(ds_state_t *st, ds_err_t *err)
{
    int       i, rc;
    MDB_txn  *txn;
    MDB_val   k, v;

    rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot begin a read transaction on "
                          "state at %s", st->dir);
    }

    for (i = 0; i < DS_DB_COUNT; i++) {
        rc = mdb_dbi_open(txn, ds_db_names[i], 0, &st->dbi[i]);

        if (rc == MDB_NOTFOUND && i == DS_DB_CERTS) {
            st->no_certs = 1;       /* the writer adds it at its start */
            continue;
        }
        if (rc == MDB_NOTFOUND && i == DS_DB_MEMBERS) {
            st->no_members = 1;     /* the writer adds it at its start */
            continue;
        }
        if (rc == MDB_NOTFOUND
            && (i == DS_DB_FLEETS || i == DS_DB_SECRETS
                || i == DS_DB_USERS || i == DS_DB_PROJECTS
                || i == DS_DB_AUDIT))
        {
            continue;               /* only controld reads them */
        }

        if (rc == MDB_NOTFOUND) {
            mdb_txn_abort(txn);
            ds_err_set(err, "state at %s is not initialized (no \"%s\" "
                       "database)", st->dir, ds_db_names[i]);
            return DS_ERROR;
        }

        if (rc != 0) {
            mdb_txn_abort(txn);
            return ds_mdb_err(err, rc, "cannot open database \"%s\" in "
                              "state at %s", ds_db_names[i], st->dir);
        }
    }

    k.mv_data = DS_KEY_SCHEMA;
    k.mv_size = sizeof(DS_KEY_SCHEMA) - 1;

    rc = mdb_get(txn, st->dbi[DS_DB_META], &k, &v);

    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        ds_err_set(err, "state at %s is not initialized (no schema)",
                   st->dir);
        return DS_ERROR;
    }

    if (rc != 0) {
        mdb_txn_abort(txn);
        return ds_mdb_err(err, rc, "cannot read the schema of state at %s",
                          st->dir);
    }

    rc = ds_schema_check(st, &v, err);
    if (rc != DS_OK) {
        mdb_txn_abort(txn);
        return rc;
    }

    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot open the databases of state "
                          "at %s", st->dir);
    }

    return DS_OK;
}


static int
ds_state_env_open(ds_state_t *st, unsigned mode, ds_err_t *err)
{
    int           rc, existed[2];
    unsigned int  flags;

    rc = mdb_env_create(&st->env);
    if (rc != 0) {
        st->env = NULL;
        return ds_mdb_err(err, rc, "cannot create the LMDB environment");
    }

    rc = mdb_env_set_maxdbs(st->env, DS_MAXDBS);
    if (rc == 0) {
        rc = mdb_env_set_maxreaders(st->env, DS_MAXREADERS);
    }

    if (rc == 0 && !(st->flags & DS_STATE_RDONLY)) {
        rc = mdb_env_set_mapsize(st->env, DS_MAPSIZE);
    }

    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot configure the LMDB environment "
                          "for %s", st->dir);
    }

    flags = MDB_NOTLS;
    if (st->flags & DS_STATE_RDONLY) {
        flags |= MDB_RDONLY;
    }

    ds_state_files_exist(st->dir, existed);

    rc = mdb_env_open(st->env, st->dir, flags, (mdb_mode_t) (mode & 0666));

    if (rc == ENOENT && (st->flags & DS_STATE_RDONLY)) {
        ds_err_set(err, "state at %s is not initialized (%s)", st->dir,
                   mdb_strerror(rc));
        return DS_ERROR;
    }

    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot open state at %s", st->dir);
    }

    return ds_state_chmod_created(st->dir, existed, mode, err);
}


int
ds_state_open(ds_state_t **stp, const char *dir, int flags, unsigned mode,
    ds_err_t *err)
{
    int          rc;
    ds_state_t  *st;

    *stp = NULL;

    st = calloc(1, sizeof(ds_state_t));
    if (st == NULL || (st->dir = strdup(dir)) == NULL) {
        free(st);
        ds_err_set(err, "cannot open state at %s: out of memory", dir);
        return DS_ERROR;
    }

    st->flags = flags;

    if (flags & DS_STATE_CREATE) {
        rc = ds_state_mkdir(dir, mode, err);
        if (rc != DS_OK) {
            ds_state_close(st);
            return rc;
        }
    }

    rc = ds_state_env_open(st, mode, err);

    if (rc == DS_OK) {
        ds_state_file_ids(st);
        rc = ds_state_check_lock(st, err);
    }

    if (rc == DS_OK) {
        rc = (flags & DS_STATE_RDONLY) ? ds_state_init_reader(st, err)
                                       : ds_state_init_writer(st, err);
    }

    if (rc != DS_OK) {
        ds_state_close(st);
        return rc;
    }

    *stp = st;
    return DS_OK;
}


void
ds_state_close(ds_state_t *st)
{
    if (st == NULL) {
        return;
    }

    if (st->env != NULL) {
        mdb_env_close(st->env);
    }

    free(st->dir);
    free(st);
}


/*
 * lock.mdb hands every read transaction the last committed id, and the
 * reader picks the meta page by it.  When data.mdb was replaced while
 * other processes kept the old lock.mdb open, LMDB does not reset the
 * lock, and readers would silently see a wrong snapshot (and a writer
 * would commit on top of it).  The data file's own last id must be the
 * one the lock hands out.  A commit makes them differ harmlessly for a
 * moment (the writer writes the meta page, then the lock), so they are
 * read again, soon and then a millisecond apart, for about 100 ms: a
 * writer that commits all the time is seen in step within a few tries,
 * a lock of another file never.  DS_STATE_NOWAIT (a worker of nginx,
 * which must not sleep) gives up after the quick tries: its next try
 * comes at its next watch interval.
 */
static int
ds_state_check_lock(ds_state_t *st, ds_err_t *err)
{
    int           rc, i;
    MDB_txn      *txn;
    MDB_envinfo   info;
    size_t        id;

    for (i = 0; i < 100; i++) {
        if (i >= 3) {
            if (st->flags & DS_STATE_NOWAIT) {
                break;
            }

            usleep(1000);
        }

        rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
        if (rc == MDB_MAP_RESIZED) {
            if (ds_state_adopt_mapsize(st, err) != DS_OK) {
                return DS_ERROR;
            }
            continue;
        }

        if (rc != 0) {
            return ds_mdb_err(err, rc, "cannot begin a read transaction on "
                              "state at %s", st->dir);
        }

        id = mdb_txn_id(txn);
        rc = mdb_env_info(st->env, &info);
        mdb_txn_abort(txn);

        if (rc != 0) {
            return ds_mdb_err(err, rc, "cannot read state info at %s",
                              st->dir);
        }

        if (id == info.me_last_txnid) {
            return DS_OK;
        }
    }

    ds_err_set(err, "state at %s: lock.mdb does not belong to data.mdb "
               "(data.mdb was replaced while processes had the state "
               "open); stop them all, or replace lock.mdb with data.mdb",
               st->dir);
    return DS_ERROR;
}


/*
 * Which files the environment has: data.mdb by the descriptor LMDB
 * maps (exact even if the file was renamed over meanwhile), lock.mdb by
 * its name, just after LMDB opened it (LMDB 0.9 gives no descriptor).
 */
static void
ds_state_file_ids(ds_state_t *st)
{
    char              path[4096];
    struct stat       sb;
    mdb_filehandle_t  fd;

    if (mdb_env_get_fd(st->env, &fd) == 0 && fstat(fd, &sb) == 0) {
        st->data.dev = sb.st_dev;
        st->data.ino = sb.st_ino;
        st->data.known = 1;
    }

    if (ds_state_path(path, sizeof(path), st->dir, "lock.mdb") == 0
        && stat(path, &sb) == 0)
    {
        st->lock.dev = sb.st_dev;
        st->lock.ino = sb.st_ino;
        st->lock.known = 1;
    }
}


static int
ds_state_check_file(ds_state_t *st, const char *file, const ds_file_id_t *id,
    ds_err_t *err)
{
    char         path[4096];
    struct stat  sb;

    if (!id->known) {
        return DS_OK;
    }

    if (ds_state_path(path, sizeof(path), st->dir, file) != 0) {
        ds_err_set(err, "state directory name %s is too long", st->dir);
        return DS_ERROR;
    }

    if (stat(path, &sb) == -1) {
        if (errno == ENOENT) {
            ds_err_set(err, "state file %s was removed", path);
        } else {
            ds_err_set(err, "state file %s cannot be checked: %s", path,
                       strerror(errno));
        }
        return DS_ERROR;
    }

    if (sb.st_dev != id->dev || sb.st_ino != id->ino) {
        ds_err_set(err, "state file %s was replaced by another file "
                   "(inode %lu, the open one is %lu)", path,
                   (unsigned long) sb.st_ino, (unsigned long) id->ino);
        return DS_ERROR;
    }

    return DS_OK;
}


int
ds_state_check_files(ds_state_t *st, ds_err_t *err)
{
    if (ds_state_check_file(st, "data.mdb", &st->data, err) != DS_OK
        || ds_state_check_file(st, "lock.mdb", &st->lock, err) != DS_OK)
    {
        return DS_ERROR;
    }

    return DS_OK;
}


uint64_t
ds_state_last_txnid(ds_state_t *st)
{
    MDB_envinfo  info;

    if (mdb_env_info(st->env, &info) != 0) {
        return 0;
    }

    return (uint64_t) info.me_last_txnid;
}


int
ds_state_reader_check(ds_state_t *st)
{
    int  dead;

    if (mdb_reader_check(st->env, &dead) != 0) {
        return DS_ERROR;
    }

    return dead;
}


/* ---- transactions ------------------------------------------------------ */

/*
 * Another process grew the map: adopt its size.  Only valid while this
 * process has no live transaction on the environment, which holds for
 * the callers: a begin, or the renew of the one reset read transaction.
 */
static int
ds_state_adopt_mapsize(ds_state_t *st, ds_err_t *err)
{
    int  rc;

    rc = mdb_env_set_mapsize(st->env, 0);
    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot adopt the grown map of state "
                          "at %s", st->dir);
    }

    return DS_OK;
}


int
ds_txn_begin(ds_state_t *st, int write, ds_txn_t **txnp, ds_err_t *err)
{
    int        rc, retried;
    ds_txn_t  *txn;

    *txnp = NULL;

    if (write && (st->flags & DS_STATE_RDONLY)) {
        ds_err_set(err, "cannot write state at %s: it is open read-only",
                   st->dir);
        return DS_EINVAL;
    }

    txn = malloc(sizeof(ds_txn_t));
    if (txn == NULL) {
        ds_err_set(err, "cannot begin a transaction: out of memory");
        return DS_ERROR;
    }

    txn->st = st;
    txn->write = write ? 1 : 0;
    txn->changes = NULL;
    txn->last = &txn->changes;
    txn->nchanges = 0;

    for (retried = 0; /* void */; retried = 1) {
        rc = mdb_txn_begin(st->env, NULL, write ? 0 : MDB_RDONLY,
                           &txn->txn);

        if (rc != MDB_MAP_RESIZED || retried) {
            break;
        }

        if (ds_state_adopt_mapsize(st, err) != DS_OK) {
            free(txn);
            return DS_ERROR;
        }
    }

    if (rc != 0) {
        free(txn);
        return ds_mdb_err(err, rc, "cannot begin a %s transaction on state "
                          "at %s", write ? "write" : "read", st->dir);
    }

    *txnp = txn;
    return DS_OK;
}


int
ds_txn_commit(ds_txn_t *txn, ds_err_t *err)
{
    int  rc;

    /* a read transaction has nothing to commit, and may be reset */
    if (!txn->write) {
        mdb_txn_abort(txn->txn);
        free(txn);
        return DS_OK;
    }

    rc = mdb_txn_commit(txn->txn);
    ds_changes_free(txn);
    free(txn);

    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot commit the state transaction");
    }

    return DS_OK;
}


void
ds_txn_abort(ds_txn_t *txn)
{
    if (txn == NULL) {
        return;
    }

    mdb_txn_abort(txn->txn);
    ds_changes_free(txn);
    free(txn);
}


uint64_t
ds_txn_id(ds_txn_t *txn)
{
    return (uint64_t) mdb_txn_id(txn->txn);
}


void
ds_txn_reset(ds_txn_t *txn)
{
    if (!txn->write) {
        mdb_txn_reset(txn->txn);
    }
}


int
ds_txn_renew(ds_txn_t *txn, ds_err_t *err)
{
    int  rc;

    if (txn->write) {
        ds_err_set(err, "cannot renew a write transaction");
        return DS_EINVAL;
    }

    rc = mdb_txn_renew(txn->txn);

    /* a failed renew leaves the transaction reset: it can be retried */
    if (rc == MDB_MAP_RESIZED) {
        if (ds_state_adopt_mapsize(txn->st, err) != DS_OK) {
            return DS_ERROR;
        }

        rc = mdb_txn_renew(txn->txn);
    }

    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot renew the read transaction on "
                          "state at %s", txn->st->dir);
    }

    return DS_OK;
}


/* ---- change capture (shared mode) ---------------------------------------- */

void
ds_state_capture(ds_state_t *st, int on)
{
    st->capture = on ? 1 : 0;
}


int
ds_key_local(int db, const void *key, size_t klen)
{
    if (db != DS_DB_META) {
        return 0;
    }
    return (klen == sizeof(DS_KEY_SCHEMA) - 1
            && memcmp(key, DS_KEY_SCHEMA, klen) == 0)
           || (klen == sizeof(DS_KEY_FOLLOW_REV) - 1
               && memcmp(key, DS_KEY_FOLLOW_REV, klen) == 0)
           || (klen == sizeof(DS_KEY_FOLLOW_LOST) - 1
               && memcmp(key, DS_KEY_FOLLOW_LOST, klen) == 0);
}


/*
 * Keeps a copy: the caller's key and value may point into pages the next
 * write rewrites.  A failure here fails the write, so that a transaction
 * never commits a change its publisher did not see.
 */
static int
ds_capture(ds_txn_t *txn, int db, const void *key, size_t klen,
    const void *val, size_t vlen, int deleted, ds_err_t *err)
{
    ds_change_t  *c;

    if (ds_key_local(db, key, klen)) {
        return DS_OK;
    }

    c = malloc(sizeof(*c) + klen + vlen);
    if (c == NULL) {
        ds_err_set(err, "cannot keep a change for publishing: out of "
                   "memory");
        return DS_ERROR;
    }
    c->next = NULL;
    c->db = db;
    c->deleted = deleted;
    c->klen = klen;
    c->vlen = vlen;
    memcpy(c->data, key, klen);
    if (vlen > 0) {
        memcpy(c->data + klen, val, vlen);
    }
    *txn->last = c;
    txn->last = &c->next;
    txn->nchanges++;
    return DS_OK;
}


void
ds_changes_free(ds_txn_t *txn)
{
    ds_change_t  *c, *next;

    for (c = txn->changes; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    txn->changes = NULL;
    txn->last = &txn->changes;
    txn->nchanges = 0;
}


int
ds_txn_changes(ds_txn_t *txn, ds_change_cb cb, void *arg)
{
    ds_change_t  *c;
    int           rc;

    for (c = txn->changes; c != NULL; c = c->next) {
        rc = cb(arg, c->db, c->data, c->klen,
                c->deleted ? NULL : c->data + c->klen, c->vlen);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}


size_t
ds_txn_nchanges(ds_txn_t *txn)
{
    return txn->nchanges;
}


/* ---- raw access -------------------------------------------------------- */

int
ds_raw_get(ds_txn_t *txn, int db, const void *key, size_t klen,
    MDB_val *val, ds_err_t *err)
{
    int      rc;
    char     desc[128];
    MDB_val  k;

    k.mv_data = (void *) key;
    k.mv_size = klen;

    rc = mdb_get(txn->txn, txn->st->dbi[db], &k, val);

    if (rc == MDB_NOTFOUND) {
        ds_err_set(err, "%s not found",
                   ds_key_desc(db, key, klen, desc, sizeof(desc)));
        return DS_NOTFOUND;
    }

    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot read %s",
                          ds_key_desc(db, key, klen, desc, sizeof(desc)));
    }

    return DS_OK;
}


int
ds_raw_put(ds_txn_t *txn, int db, const void *key, size_t klen,
    const void *data, size_t len, ds_err_t *err)
{
    int      rc;
    char     desc[128];
    MDB_val  k, v;

    k.mv_data = (void *) key;
    k.mv_size = klen;
    v.mv_data = (void *) data;
    v.mv_size = len;

    rc = mdb_put(txn->txn, txn->st->dbi[db], &k, &v, 0);
    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot store %s",
                          ds_key_desc(db, key, klen, desc, sizeof(desc)));
    }

    if (txn->st->capture) {
        return ds_capture(txn, db, key, klen, data, len, 0, err);
    }

    return DS_OK;
}


int
ds_raw_del(ds_txn_t *txn, int db, const void *key, size_t klen,
    ds_err_t *err)
{
    int      rc;
    char     desc[128];
    MDB_val  k;

    k.mv_data = (void *) key;
    k.mv_size = klen;

    rc = mdb_del(txn->txn, txn->st->dbi[db], &k, NULL);

    if (rc == MDB_NOTFOUND) {
        ds_err_set(err, "%s not found",
                   ds_key_desc(db, key, klen, desc, sizeof(desc)));
        return DS_NOTFOUND;
    }

    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot delete %s",
                          ds_key_desc(db, key, klen, desc, sizeof(desc)));
    }

    if (txn->st->capture) {
        return ds_capture(txn, db, key, klen, NULL, 0, 1, err);
    }

    return DS_OK;
}


/* names outside the limits cannot be keys: such a record does not exist */
int
ds_name_key_ok(int db, const char *name, size_t len, size_t max,
    ds_err_t *err)
{
    if (len == 0) {
        ds_err_set(err, "%s name is empty", ds_db_subjects[db]);
        return 0;
    }

    if (len > max) {
        ds_err_set(err, "%s name \"%.*s...\" is longer than %zu",
                   ds_db_subjects[db], 32, name, max);
        return 0;
    }

    return 1;
}


int
ds_need_write(ds_txn_t *txn, const char *what, ds_err_t *err)
{
    if (txn->write) {
        return 1;
    }

    ds_err_set(err, "cannot %s in a read transaction", what);
    return 0;
}


/* ---- meta: uids ---------------------------------------------------------- */

int
ds_seq_load(ds_txn_t *txn, uint64_t *seq, ds_err_t *err)
{
    int             i, rc;
    MDB_val         v;
    const uint8_t  *p;

    *seq = 0;

    rc = ds_raw_get(txn, DS_DB_META, DS_KEY_SEQ, sizeof(DS_KEY_SEQ) - 1, &v,
                    err);
    if (rc == DS_NOTFOUND) {
        return DS_OK;
    }

    if (rc != DS_OK) {
        return rc;
    }

    if (v.mv_size != 8) {
        ds_err_set(err, "meta \"seq\" is corrupt (%zu bytes, not 8)",
                   v.mv_size);
        return DS_EINVAL;
    }

    p = v.mv_data;
    for (i = 0; i < 8; i++) {
        *seq |= (uint64_t) p[i] << (8 * i);
    }

    return DS_OK;
}


int
ds_seq_store(ds_txn_t *txn, uint64_t seq, ds_err_t *err)
{
    int      i;
    uint8_t  b[8];

    for (i = 0; i < 8; i++) {
        b[i] = (uint8_t) (seq >> (8 * i));
    }

    return ds_raw_put(txn, DS_DB_META, DS_KEY_SEQ, sizeof(DS_KEY_SEQ) - 1, b,
                      sizeof(b), err);
}
