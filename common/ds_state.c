/*
 * The LMDB side of the shared state: opening the environment, readers'
 * and the writer's transactions, and the writer's bookkeeping (uids,
 * metric slots, the models index) that keeps one logical change inside
 * one transaction.
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
#include <sys/stat.h>
#include <time.h>

#include <lmdb.h>

#include "ds_state.h"


#define DS_MAPSIZE              (1024UL * 1024 * 1024)
#define DS_MAXDBS               12
#define DS_MAXREADERS           510
#define DS_SETTING_KEY_MAX      511     /* LMDB's default key size limit */

#define DS_KEY_SCHEMA           "schema"
#define DS_KEY_SEQ              "seq"
#define DS_KEY_SLOTS_S          "slots.s"
#define DS_KEY_SLOTS_R          "slots.r"

enum {
    DS_DB_META = 0,
    DS_DB_SERVICES,
    DS_DB_REPLICAS,
    DS_DB_TOKENS,
    DS_DB_MODELS,
    DS_DB_SETTINGS,
    DS_DB_RUNS,
    DS_DB_CERTS,
    DS_DB_COUNT
};

static const char  *ds_db_names[DS_DB_COUNT] = {
    "meta", "services", "replicas", "tokens", "models", "settings", "runs",
    "certs"
};

/* what a key of each database names, for messages */
static const char  *ds_db_subjects[DS_DB_COUNT] = {
    "meta key", "service", "replica set of", "token", "model", "setting",
    "run", "certificate for"
};


struct ds_state_s {
    MDB_env        *env;
    MDB_dbi         dbi[DS_DB_COUNT];
    int             no_certs;       /* reader of a state from before it */
    int             flags;          /* DS_STATE_* */
    char           *dir;
};

struct ds_txn_s {
    ds_state_t     *st;
    MDB_txn        *txn;
    int             write;
};


/* a metric-slot bitmap from meta, loaded, changed and stored back */
typedef struct {
    const char     *key;            /* "slots.s" or "slots.r" */
    uint8_t        *bits;           /* nbits / 8 bytes */
    uint32_t        nbits;
    uint32_t        hint;           /* bits below are known to be used */
} ds_slots_t;


/* a replica's identity, sortable with memcmp */
#define DS_IDENT_LEN            19  /* family, 16 addr bytes, port BE */

typedef struct {
    uint8_t         key[DS_IDENT_LEN];
    uint32_t        idx;
} ds_ident_t;


static void ds_err_set(ds_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int ds_mdb_err(ds_err_t *err, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ds_state_check_lock(ds_state_t *st, ds_err_t *err);
static int ds_state_adopt_mapsize(ds_state_t *st, ds_err_t *err);
static int ds_seq_load(ds_txn_t *txn, uint64_t *seq, ds_err_t *err);
static int ds_seq_store(ds_txn_t *txn, uint64_t seq, ds_err_t *err);


static void
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
static int
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
static void
ds_err_prefix(ds_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
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
static const char *
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
 * one the lock hands out; a commit between the two reads makes them
 * differ harmlessly, hence the retries.
 */
static int
ds_state_check_lock(ds_state_t *st, ds_err_t *err)
{
    int           rc, i;
    MDB_txn      *txn;
    MDB_envinfo   info;
    size_t        id;

    for (i = 0; i < 3; i++) {
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


/* ---- raw access -------------------------------------------------------- */

static int
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


static int
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

    return DS_OK;
}


static int
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

    return DS_OK;
}


/* names outside the limits cannot be keys: such a record does not exist */
static int
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


static int
ds_need_write(ds_txn_t *txn, const char *what, ds_err_t *err)
{
    if (txn->write) {
        return 1;
    }

    ds_err_set(err, "cannot %s in a read transaction", what);
    return 0;
}


/* ---- readers ----------------------------------------------------------- */

/* a record, in place or copied into buf when there is one */
static int
ds_raw_copy(ds_txn_t *txn, int db, const void *key, size_t klen,
    MDB_val *val, ds_buf_t *buf, ds_err_t *err)
{
    int  rc;

    rc = ds_raw_get(txn, db, key, klen, val, err);

    if (rc != DS_OK || buf == NULL) {
        return rc;
    }

    if (ds_buf_set(buf, val->mv_data, val->mv_size) != DS_OK) {
        ds_err_set(err, "out of memory for a copy of a record");
        return DS_ERROR;
    }

    val->mv_data = buf->data;

    return DS_OK;
}


int
ds_get_service(ds_txn_t *txn, const char *name, size_t len,
    ds_service_t *svc, ds_err_t *err)
{
    return ds_copy_service(txn, name, len, svc, NULL, err);
}


int
ds_copy_service(ds_txn_t *txn, const char *name, size_t len,
    ds_service_t *svc, ds_buf_t *buf, ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    if (!ds_name_key_ok(DS_DB_SERVICES, name, len, DS_NAME_MAX, err)) {
        return DS_NOTFOUND;
    }

    rc = ds_raw_copy(txn, DS_DB_SERVICES, name, len, &v, buf, err);
    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_service_decode(v.mv_data, v.mv_size, svc, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "service \"%.*s\"", (int) len, name);
    }

    return rc;
}


int
ds_get_replicas(ds_txn_t *txn, const char *name, size_t len,
    ds_replica_set_t *set, ds_err_t *err)
{
    return ds_copy_replicas(txn, name, len, set, NULL, err);
}


int
ds_copy_replicas(ds_txn_t *txn, const char *name, size_t len,
    ds_replica_set_t *set, ds_buf_t *buf, ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    if (!ds_name_key_ok(DS_DB_SERVICES, name, len, DS_NAME_MAX, err)) {
        return DS_NOTFOUND;
    }

    rc = ds_raw_copy(txn, DS_DB_REPLICAS, name, len, &v, buf, err);
    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_replicas_decode(v.mv_data, v.mv_size, set, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "service \"%.*s\"", (int) len, name);
    }

    return rc;
}


int
ds_get_token(ds_txn_t *txn, const uint8_t hash[DS_TOKEN_HASH_LEN],
    ds_token_t *tok, ds_err_t *err)
{
    return ds_copy_token(txn, hash, tok, NULL, err);
}


int
ds_copy_token(ds_txn_t *txn, const uint8_t hash[DS_TOKEN_HASH_LEN],
    ds_token_t *tok, ds_buf_t *buf, ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    rc = ds_raw_copy(txn, DS_DB_TOKENS, hash, DS_TOKEN_HASH_LEN, &v, buf,
                     err);
    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_token_decode(v.mv_data, v.mv_size, tok, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "token %02x%02x%02x%02x", hash[0], hash[1],
                      hash[2], hash[3]);
    }

    return rc;
}


int
ds_get_model(ds_txn_t *txn, const char *name, size_t len, ds_model_t *m,
    ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    if (!ds_name_key_ok(DS_DB_MODELS, name, len, DS_NAME_MAX, err)) {
        return DS_NOTFOUND;
    }

    rc = ds_raw_get(txn, DS_DB_MODELS, name, len, &v, err);
    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_model_decode(v.mv_data, v.mv_size, m, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "model \"%.*s\"", (int) len, name);
    }

    return rc;
}


/* ---- iteration --------------------------------------------------------- */

typedef int (*ds_each_fn)(void *ctx, const MDB_val *k, const MDB_val *v,
    ds_err_t *err);

/*
 * Calls fn for each record of db in key order; fn returns DS_OK to go
 * on, 1 to stop, or an error.
 */
static int
ds_each(ds_txn_t *txn, int db, ds_each_fn fn, void *ctx, ds_err_t *err)
{
    int             rc;
    MDB_val         k, v;
    MDB_cursor     *c;
    MDB_cursor_op   op;

    rc = mdb_cursor_open(txn->txn, txn->st->dbi[db], &c);
    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot open a cursor on \"%s\"",
                          ds_db_names[db]);
    }

    for (op = MDB_FIRST; /* void */; op = MDB_NEXT) {
        rc = mdb_cursor_get(c, &k, &v, op);

        if (rc == MDB_NOTFOUND) {
            rc = DS_OK;
            break;
        }

        if (rc != 0) {
            rc = ds_mdb_err(err, rc, "cannot iterate over \"%s\"",
                            ds_db_names[db]);
            break;
        }

        rc = fn(ctx, &k, &v, err);
        if (rc != DS_OK) {
            if (rc == 1) {
                rc = DS_OK;
            }
            break;
        }
    }

    mdb_cursor_close(c);
    return rc;
}


typedef struct {
    union {
        ds_service_cb   service;
        ds_token_cb     token;
        ds_model_cb     model;
        ds_cert_cb      cert;
        ds_kv_cb        kv;
    } cb;
    void           *arg;
} ds_each_ctx_t;


static int
ds_each_service(void *ctx, const MDB_val *k, const MDB_val *v, ds_err_t *err)
{
    ds_service_t    svc;
    ds_each_ctx_t  *ec;

    ec = ctx;

    if (ds_service_decode(v->mv_data, v->mv_size, &svc, err) != DS_OK) {
        ds_err_prefix(err, "service \"%.*s\"", (int) k->mv_size,
                      (const char *) k->mv_data);
        return DS_EINVAL;
    }

    return ec->cb.service(ec->arg, &svc) ? 1 : DS_OK;
}


static int
ds_each_token(void *ctx, const MDB_val *k, const MDB_val *v, ds_err_t *err)
{
    char            desc[64];
    ds_token_t      tok;
    ds_each_ctx_t  *ec;

    ec = ctx;

    if (ds_token_decode(v->mv_data, v->mv_size, &tok, err) != DS_OK) {
        ds_err_prefix(err, "%s", ds_key_desc(DS_DB_TOKENS, k->mv_data,
                                             k->mv_size, desc, sizeof(desc)));
        return DS_EINVAL;
    }

    return ec->cb.token(ec->arg, &tok) ? 1 : DS_OK;
}


static int
ds_each_model(void *ctx, const MDB_val *k, const MDB_val *v, ds_err_t *err)
{
    ds_model_t      m;
    ds_each_ctx_t  *ec;

    ec = ctx;

    if (ds_model_decode(v->mv_data, v->mv_size, &m, err) != DS_OK) {
        ds_err_prefix(err, "model \"%.*s\"", (int) k->mv_size,
                      (const char *) k->mv_data);
        return DS_EINVAL;
    }

    return ec->cb.model(ec->arg, &m) ? 1 : DS_OK;
}


static int
ds_each_cert(void *ctx, const MDB_val *k, const MDB_val *v, ds_err_t *err)
{
    ds_cert_t       c;
    ds_each_ctx_t  *ec;

    ec = ctx;

    if (ds_cert_decode(v->mv_data, v->mv_size, &c, err) != DS_OK) {
        ds_err_prefix(err, "certificate for \"%.*s\"", (int) k->mv_size,
                      (const char *) k->mv_data);
        return DS_EINVAL;
    }

    return ec->cb.cert(ec->arg, &c) ? 1 : DS_OK;
}


static int
ds_each_kv(void *ctx, const MDB_val *k, const MDB_val *v, ds_err_t *err)
{
    ds_str_t        key, val;
    ds_each_ctx_t  *ec;

    (void) err;
    ec = ctx;

    key.data = k->mv_data;
    key.len = (uint32_t) k->mv_size;
    val.data = v->mv_data;
    val.len = (uint32_t) v->mv_size;

    return ec->cb.kv(ec->arg, &key, &val) ? 1 : DS_OK;
}


int
ds_foreach_service(ds_txn_t *txn, ds_service_cb cb, void *arg,
    ds_err_t *err)
{
    ds_each_ctx_t  ec;

    ec.cb.service = cb;
    ec.arg = arg;
    return ds_each(txn, DS_DB_SERVICES, ds_each_service, &ec, err);
}


int
ds_foreach_token(ds_txn_t *txn, ds_token_cb cb, void *arg, ds_err_t *err)
{
    ds_each_ctx_t  ec;

    ec.cb.token = cb;
    ec.arg = arg;
    return ds_each(txn, DS_DB_TOKENS, ds_each_token, &ec, err);
}


int
ds_foreach_model(ds_txn_t *txn, ds_model_cb cb, void *arg, ds_err_t *err)
{
    ds_each_ctx_t  ec;

    ec.cb.model = cb;
    ec.arg = arg;
    return ds_each(txn, DS_DB_MODELS, ds_each_model, &ec, err);
}


int
ds_foreach_setting(ds_txn_t *txn, ds_kv_cb cb, void *arg, ds_err_t *err)
{
    ds_each_ctx_t  ec;

    ec.cb.kv = cb;
    ec.arg = arg;
    return ds_each(txn, DS_DB_SETTINGS, ds_each_kv, &ec, err);
}


int
ds_foreach_run(ds_txn_t *txn, ds_kv_cb cb, void *arg, ds_err_t *err)
{
    ds_each_ctx_t  ec;

    ec.cb.kv = cb;
    ec.arg = arg;
    return ds_each(txn, DS_DB_RUNS, ds_each_kv, &ec, err);
}


/* ---- certificates ------------------------------------------------------ */

int
ds_get_cert(ds_txn_t *txn, const char *host, size_t len, ds_cert_t *c,
    ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    if (txn->st->no_certs) {
        ds_err_set(err, "no certificates in this state");
        return DS_NOTFOUND;
    }

    if (!ds_name_key_ok(DS_DB_CERTS, host, len, DS_HOST_MAX, err)) {
        return DS_NOTFOUND;
    }

    rc = ds_raw_get(txn, DS_DB_CERTS, host, len, &v, err);
    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_cert_decode(v.mv_data, v.mv_size, c, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "certificate for \"%.*s\"", (int) len, host);
    }

    return rc;
}


int
ds_put_cert(ds_txn_t *txn, ds_cert_t *c, ds_err_t *err)
{
    int       rc;
    uint64_t  seq;
    ds_buf_t  rec;

    if (!ds_need_write(txn, "store a certificate", err)) {
        return DS_EINVAL;
    }

    rc = ds_seq_load(txn, &seq, err);
    if (rc != DS_OK) {
        return rc;
    }

    c->uid = ++seq;
    memset(&rec, 0, sizeof(rec));

    rc = ds_cert_encode(c, &rec, err);
    if (rc == DS_OK) {
        rc = ds_raw_put(txn, DS_DB_CERTS, c->host.data, c->host.len,
                        rec.data, rec.len, err);
    }
    if (rc == DS_OK) {
        rc = ds_seq_store(txn, seq, err);
    }

    ds_buf_free(&rec);
    return rc;
}


int
ds_del_cert(ds_txn_t *txn, const char *host, size_t len, ds_err_t *err)
{
    if (!ds_need_write(txn, "delete a certificate", err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(DS_DB_CERTS, host, len, DS_HOST_MAX, err)) {
        return DS_NOTFOUND;
    }

    return ds_raw_del(txn, DS_DB_CERTS, host, len, err);
}


int
ds_foreach_cert(ds_txn_t *txn, ds_cert_cb cb, void *arg, ds_err_t *err)
{
    ds_each_ctx_t  ec;

    if (txn->st->no_certs) {
        return DS_OK;
    }

    ec.cb.cert = cb;
    ec.arg = arg;
    return ds_each(txn, DS_DB_CERTS, ds_each_cert, &ec, err);
}


/* ---- meta: uids and metric slots --------------------------------------- */

static int
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


static int
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


/*
 * The bitmap is stored without its trailing zero bytes, so a state with
 * few slots in use keeps a small record; it is loaded at full size.
 */
static int
ds_slots_load(ds_txn_t *txn, ds_slots_t *s, const char *key, uint32_t nbits,
    ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    s->key = key;
    s->nbits = nbits;
    s->hint = 0;

    s->bits = calloc(nbits / 8, 1);
    if (s->bits == NULL) {
        ds_err_set(err, "cannot load meta \"%s\": out of memory", key);
        return DS_ERROR;
    }

    rc = ds_raw_get(txn, DS_DB_META, key, strlen(key), &v, err);
    if (rc == DS_NOTFOUND) {
        return DS_OK;
    }

    if (rc != DS_OK) {
        return rc;
    }

    if (v.mv_size > nbits / 8) {
        ds_err_set(err, "meta \"%s\" is corrupt (%zu bytes, at most %u)",
                   key, v.mv_size, nbits / 8);
        return DS_EINVAL;
    }

    memcpy(s->bits, v.mv_data, v.mv_size);
    return DS_OK;
}


/* the lowest free slot, marked used; DS_SLOT_NONE when all are used */
static uint32_t
ds_slots_alloc(ds_slots_t *s)
{
    uint32_t  i, b;

    for (i = s->hint / 8; i < s->nbits / 8; i++) {
        if (s->bits[i] == 0xff) {
            continue;
        }

        for (b = 0; b < 8; b++) {
            if (!(s->bits[i] & (1u << b))) {
                s->bits[i] |= (uint8_t) (1u << b);
                s->hint = i * 8 + b + 1;
                return i * 8 + b;
            }
        }
    }

    s->hint = s->nbits;
    return DS_SLOT_NONE;
}


static void
ds_slots_mark(ds_slots_t *s, uint32_t slot)
{
    if (slot < s->nbits) {
        s->bits[slot / 8] |= (uint8_t) (1u << (slot % 8));
    }
}


static void
ds_slots_free(ds_slots_t *s, uint32_t slot)
{
    if (slot < s->nbits) {
        s->bits[slot / 8] &= (uint8_t) ~(1u << (slot % 8));

        if (slot < s->hint) {
            s->hint = slot;
        }
    }
}


static int
ds_slots_store(ds_txn_t *txn, ds_slots_t *s, ds_err_t *err)
{
    size_t  len;

    len = s->nbits / 8;
    while (len > 0 && s->bits[len - 1] == 0) {
        len--;
    }

    return ds_raw_put(txn, DS_DB_META, s->key, strlen(s->key), s->bits, len,
                      err);
}


static void
ds_slots_done(ds_slots_t *s)
{
    free(s->bits);
    s->bits = NULL;
}


/* ---- services ---------------------------------------------------------- */

/* a copy of a string that outlives the map pages it may point into */
static void
ds_str_copy(ds_str_t *dst, const ds_str_t *src, char *buf)
{
    if (src->len > 0) {
        memcpy(buf, src->data, src->len);
    }

    dst->data = buf;
    dst->len = src->len;
}


static int
ds_str_eq(const ds_str_t *a, const char *b, size_t len)
{
    return a->len == len && (len == 0 || memcmp(a->data, b, len) == 0);
}


/*
 * Which service serves model `name`: DS_OK with m filled, DS_NOTFOUND,
 * or an error.
 */
static int
ds_model_lookup(ds_txn_t *txn, const ds_str_t *name, ds_model_t *m,
    ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    rc = ds_raw_get(txn, DS_DB_MODELS, name->data, name->len, &v, err);
    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_model_decode(v.mv_data, v.mv_size, m, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "model \"%.*s\"", (int) name->len, name->data);
    }

    return rc;
}


int
ds_put_service(ds_txn_t *txn, ds_service_t *svc, ds_err_t *err)
{
    int           rc, is_new, del_old_model;
    char          name[DS_NAME_MAX], model[DS_NAME_MAX];
    char          prefix[DS_PREFIX_MAX], old_model[DS_NAME_MAX];
    uint64_t      seq;
    ds_str_t      old_model_s;
    ds_buf_t      rec, mrec;
    MDB_val       v;
    ds_model_t    m, om;
    ds_slots_t    slots;
    ds_service_t  tmp, old;

    memset(&rec, 0, sizeof(rec));
    memset(&mrec, 0, sizeof(mrec));
    memset(&slots, 0, sizeof(slots));
    old_model_s.len = 0;
    del_old_model = 0;
    seq = 0;

    if (!ds_need_write(txn, "store a service", err)) {
        return DS_EINVAL;
    }

    /* validate first: uid and slot are the writer's, not the caller's */
    tmp = *svc;
    tmp.uid = 0;
    tmp.slot = DS_SLOT_NONE;

    rc = ds_service_encode(&tmp, &rec, err);
    if (rc != DS_OK) {
        goto done;
    }

    ds_str_copy(&tmp.name, &svc->name, name);
    ds_str_copy(&tmp.model, &svc->model, model);
    ds_str_copy(&tmp.model_prefix, &svc->model_prefix, prefix);

    rc = ds_raw_get(txn, DS_DB_SERVICES, name, tmp.name.len, &v, err);

    if (rc == DS_OK) {
        rc = ds_service_decode(v.mv_data, v.mv_size, &old, err);
        if (rc != DS_OK) {
            ds_err_prefix(err, "stored service \"%.*s\"", (int) tmp.name.len,
                          name);
            goto done;
        }

        is_new = 0;
        tmp.uid = old.uid;
        tmp.slot = old.slot;
        ds_str_copy(&old_model_s, &old.model, old_model);

    } else if (rc == DS_NOTFOUND) {
        is_new = 1;

    } else {
        goto done;
    }

    /* one model, one service: the gateway routes by model name */
    memset(&m, 0, sizeof(m));
    m.created = (uint64_t) time(NULL);

    if (tmp.model.len > 0) {
        rc = ds_model_lookup(txn, &tmp.model, &m, err);

        if (rc == DS_OK) {
            if (!ds_str_eq(&m.service, name, tmp.name.len)) {
                ds_err_set(err, "model \"%.*s\" is already served by "
                           "service \"%.*s\"", (int) tmp.model.len, model,
                           (int) m.service.len, m.service.data);
                rc = DS_EINVAL;
                goto done;
            }

        } else if (rc != DS_NOTFOUND) {
            goto done;
        }
    }

    if (old_model_s.len > 0
        && !ds_str_eq(&old_model_s, model, tmp.model.len))
    {
        rc = ds_model_lookup(txn, &old_model_s, &om, err);

        if (rc == DS_OK) {
            /* only the entry that points back at this service */
            del_old_model = ds_str_eq(&om.service, name, tmp.name.len);

        } else if (rc != DS_NOTFOUND) {
            goto done;
        }
    }

    if (is_new || tmp.slot == DS_SLOT_NONE || tmp.uid == 0) {
        rc = ds_seq_load(txn, &seq, err);
        if (rc == DS_OK) {
            rc = ds_slots_load(txn, &slots, DS_KEY_SLOTS_S,
                               DS_SERVICE_SLOTS_MAX, err);
        }

        if (rc != DS_OK) {
            goto done;
        }

        if (tmp.slot == DS_SLOT_NONE) {
            tmp.slot = ds_slots_alloc(&slots);

            if (tmp.slot == DS_SLOT_NONE) {
                ds_err_set(err, "no free service slot for \"%.*s\": all %u "
                           "are in use", (int) tmp.name.len, name,
                           DS_SERVICE_SLOTS_MAX);
                rc = DS_EFULL;
                goto done;
            }
        }

        if (tmp.uid == 0) {
            tmp.uid = ++seq;
        }
    }

    rc = ds_service_encode(&tmp, &rec, err);
    if (rc != DS_OK) {
        goto done;
    }

    if (tmp.model.len > 0) {
        m.name = tmp.model;
        m.service = tmp.name;
        m.prefix = tmp.model_prefix;
        m.format = tmp.model_format;

        rc = ds_model_encode(&m, &mrec, err);
        if (rc != DS_OK) {
            goto done;
        }
    }

    /* everything is checked and encoded: write */

    rc = ds_raw_put(txn, DS_DB_SERVICES, name, tmp.name.len, rec.data,
                    rec.len, err);

    if (rc == DS_OK && slots.bits != NULL) {
        rc = ds_slots_store(txn, &slots, err);
        if (rc == DS_OK) {
            rc = ds_seq_store(txn, seq, err);
        }
    }

    if (rc == DS_OK && del_old_model) {
        rc = ds_raw_del(txn, DS_DB_MODELS, old_model, old_model_s.len, err);
    }

    if (rc == DS_OK && tmp.model.len > 0) {
        rc = ds_raw_put(txn, DS_DB_MODELS, model, tmp.model.len, mrec.data,
                        mrec.len, err);
    }

    if (rc == DS_OK) {
        svc->uid = tmp.uid;
        svc->slot = tmp.slot;
    }

done:

    ds_buf_free(&rec);
    ds_buf_free(&mrec);
    ds_slots_done(&slots);
    return rc;
}


/* the slots of a stored replica set, copied out of the map */
static int
ds_replica_slots(ds_txn_t *txn, const char *name, size_t len,
    uint32_t **slots, uint32_t *n, int *found, ds_err_t *err)
{
    int               rc;
    uint32_t          i;
    MDB_val           v;
    ds_replica_t      r;
    ds_replica_set_t  set;

    *slots = NULL;
    *n = 0;
    *found = 0;

    rc = ds_raw_get(txn, DS_DB_REPLICAS, name, len, &v, err);
    if (rc == DS_NOTFOUND) {
        return DS_OK;
    }

    if (rc != DS_OK) {
        return rc;
    }

    *found = 1;

    rc = ds_replicas_decode(v.mv_data, v.mv_size, &set, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "replicas of service \"%.*s\"", (int) len, name);
        return rc;
    }

    *slots = malloc((set.count ? set.count : 1) * sizeof(uint32_t));
    if (*slots == NULL) {
        ds_err_set(err, "cannot read replicas of service \"%.*s\": out of "
                   "memory", (int) len, name);
        return DS_ERROR;
    }

    for (i = 0; i < set.count; i++) {
        ds_replica_at(&set, i, &r);
        (*slots)[i] = r.slot;
    }

    *n = set.count;
    return DS_OK;
}


int
ds_del_service(ds_txn_t *txn, const char *name, size_t len, ds_err_t *err)
{
    int           rc, has_replicas, del_model;
    char          key[DS_NAME_MAX], model[DS_NAME_MAX];
    uint32_t      i, n, *rslots, svc_slot;
    MDB_val       v;
    ds_str_t      model_s;
    ds_model_t    m;
    ds_slots_t    ss, rs;
    ds_service_t  svc;

    rslots = NULL;
    memset(&ss, 0, sizeof(ss));
    memset(&rs, 0, sizeof(rs));
    del_model = 0;

    if (!ds_need_write(txn, "delete a service", err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(DS_DB_SERVICES, name, len, DS_NAME_MAX, err)) {
        return DS_NOTFOUND;
    }

    memcpy(key, name, len);

    rc = ds_raw_get(txn, DS_DB_SERVICES, key, len, &v, err);
    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_service_decode(v.mv_data, v.mv_size, &svc, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "stored service \"%.*s\"", (int) len, key);
        return rc;
    }

    svc_slot = svc.slot;
    ds_str_copy(&model_s, &svc.model, model);

    rc = ds_replica_slots(txn, key, len, &rslots, &n, &has_replicas, err);
    if (rc != DS_OK) {
        goto done;
    }

    if (model_s.len > 0) {
        rc = ds_model_lookup(txn, &model_s, &m, err);

        if (rc == DS_OK) {
            del_model = ds_str_eq(&m.service, key, len);

        } else if (rc != DS_NOTFOUND) {
            goto done;
        }
    }

    rc = ds_slots_load(txn, &ss, DS_KEY_SLOTS_S, DS_SERVICE_SLOTS_MAX, err);
    if (rc == DS_OK) {
        rc = ds_slots_load(txn, &rs, DS_KEY_SLOTS_R, DS_REPLICA_SLOTS_MAX,
                           err);
    }

    if (rc != DS_OK) {
        goto done;
    }

    ds_slots_free(&ss, svc_slot);
    for (i = 0; i < n; i++) {
        ds_slots_free(&rs, rslots[i]);
    }

    /* everything is read: write */

    rc = ds_raw_del(txn, DS_DB_SERVICES, key, len, err);

    if (rc == DS_OK && has_replicas) {
        rc = ds_raw_del(txn, DS_DB_REPLICAS, key, len, err);
    }

    if (rc == DS_OK && del_model) {
        rc = ds_raw_del(txn, DS_DB_MODELS, model, model_s.len, err);
    }

    if (rc == DS_OK) {
        rc = ds_slots_store(txn, &ss, err);
    }

    if (rc == DS_OK) {
        rc = ds_slots_store(txn, &rs, err);
    }

done:

    free(rslots);
    ds_slots_done(&ss);
    ds_slots_done(&rs);
    return rc;
}


/* ---- replicas ---------------------------------------------------------- */

static void
ds_ident_make(ds_ident_t *id, const ds_replica_t *r, uint32_t idx)
{
    id->key[0] = r->family;
    memset(id->key + 1, 0, 16);
    memcpy(id->key + 1, r->addr, r->family == DS_AF_INET ? 4 : 16);
    id->key[17] = (uint8_t) (r->port >> 8);
    id->key[18] = (uint8_t) r->port;
    id->idx = idx;
}


static int
ds_ident_cmp(const void *a, const void *b)
{
    return memcmp(((const ds_ident_t *) a)->key,
                  ((const ds_ident_t *) b)->key, DS_IDENT_LEN);
}


/* identities of n replicas, sorted */
static ds_ident_t *
ds_idents(const ds_replica_t *r, uint32_t n)
{
    uint32_t     i;
    ds_ident_t  *ids;

    ids = malloc((n ? n : 1) * sizeof(ds_ident_t));
    if (ids == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        ds_ident_make(&ids[i], &r[i], i);
    }

    qsort(ids, n, sizeof(ds_ident_t), ds_ident_cmp);
    return ids;
}


/* the previous set, copied out of the map; none is an empty set */
static int
ds_replicas_load(ds_txn_t *txn, const char *name, size_t len,
    ds_replica_t **old, uint32_t *n, uint64_t *generation, ds_err_t *err)
{
    int               rc;
    uint32_t          i;
    MDB_val           v;
    ds_replica_set_t  set;

    *old = NULL;
    *n = 0;
    *generation = 0;

    rc = ds_raw_get(txn, DS_DB_REPLICAS, name, len, &v, err);

    if (rc == DS_NOTFOUND) {
        set.count = 0;
        set.generation = 0;

    } else if (rc != DS_OK) {
        return rc;

    } else {
        rc = ds_replicas_decode(v.mv_data, v.mv_size, &set, err);
        if (rc != DS_OK) {
            ds_err_prefix(err, "stored replicas of service \"%.*s\"",
                          (int) len, name);
            return rc;
        }
    }

    *old = malloc((set.count ? set.count : 1) * sizeof(ds_replica_t));
    if (*old == NULL) {
        ds_err_set(err, "cannot load replicas of service \"%.*s\": out of "
                   "memory", (int) len, name);
        return DS_ERROR;
    }

    for (i = 0; i < set.count; i++) {
        ds_replica_at(&set, i, &(*old)[i]);
    }

    *n = set.count;
    *generation = set.generation;
    return DS_OK;
}


/*
 * Entries whose identity was in the previous set take over its uid and
 * slot; the others get new ones.  Slots are allocated before the
 * vanished ones are freed, so that no slot passes from one replica to
 * another inside one change.
 */
static int
ds_replicas_assign(ds_replica_t *w, uint32_t n, const ds_replica_t *old,
    uint32_t m, ds_slots_t *slots, uint64_t *seq, const char *name,
    size_t len, ds_err_t *err)
{
    uint32_t     i;
    uint8_t     *kept;
    ds_ident_t  *ids, id, *found;

    ids = ds_idents(old, m);
    kept = calloc(m ? m : 1, 1);

    if (ids == NULL || kept == NULL) {
        free(ids);
        free(kept);
        ds_err_set(err, "cannot store replicas of service \"%.*s\": out of "
                   "memory", (int) len, name);
        return DS_ERROR;
    }

    for (i = 0; i < n; i++) {
        ds_ident_make(&id, &w[i], i);
        found = bsearch(&id, ids, m, sizeof(ds_ident_t), ds_ident_cmp);

        if (found != NULL) {
            w[i].uid = old[found->idx].uid;
            w[i].slot = old[found->idx].slot;
            kept[found->idx] = 1;
        }
    }

    for (i = 0; i < n; i++) {
        if (w[i].slot == DS_SLOT_NONE) {
            w[i].slot = ds_slots_alloc(slots);

            if (w[i].slot == DS_SLOT_NONE) {
                free(ids);
                free(kept);
                ds_err_set(err, "no free replica slot for service \"%.*s\": "
                           "all %u are in use", (int) len, name,
                           DS_REPLICA_SLOTS_MAX);
                return DS_EFULL;
            }
        }

        if (w[i].uid == 0) {
            w[i].uid = ++*seq;
        }
    }

    for (i = 0; i < m; i++) {
        if (!kept[i]) {
            ds_slots_free(slots, old[i].slot);
        }
    }

    /* a corrupt old set may have shared a slot: keep the kept ones used */
    for (i = 0; i < n; i++) {
        ds_slots_mark(slots, w[i].slot);
    }

    free(ids);
    free(kept);
    return DS_OK;
}


static int
ds_replicas_unique(const ds_replica_t *w, uint32_t n, const char *name,
    size_t len, ds_err_t *err)
{
    char         addr[DS_REPLICA_ADDR_LEN];
    uint32_t     i;
    ds_ident_t  *ids;

    ids = ds_idents(w, n);
    if (ids == NULL) {
        ds_err_set(err, "cannot store replicas of service \"%.*s\": out of "
                   "memory", (int) len, name);
        return DS_ERROR;
    }

    for (i = 1; i < n; i++) {
        if (ds_ident_cmp(&ids[i - 1], &ids[i]) == 0) {
            ds_replica_format_addr(&w[ids[i].idx], addr, sizeof(addr));
            ds_err_set(err, "replicas of service \"%.*s\": duplicate "
                       "address %s (replicas %u and %u)", (int) len, name,
                       addr, ids[i - 1].idx, ids[i].idx);
            free(ids);
            return DS_EINVAL;
        }
    }

    free(ids);
    return DS_OK;
}


int
ds_put_replicas(ds_txn_t *txn, const char *name, size_t len,
    ds_replica_t *r, uint32_t n, ds_err_t *err)
{
    int            rc;
    char           key[DS_NAME_MAX];
    uint32_t       i, m;
    uint64_t       seq, generation;
    MDB_val        v;
    ds_buf_t       rec;
    ds_slots_t     slots;
    ds_replica_t  *w, *old;

    w = NULL;
    old = NULL;
    seq = 0;
    memset(&rec, 0, sizeof(rec));
    memset(&slots, 0, sizeof(slots));

    if (!ds_need_write(txn, "store replicas", err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(DS_DB_SERVICES, name, len, DS_NAME_MAX, err)) {
        return DS_EINVAL;
    }

    memcpy(key, name, len);

    if (n > DS_REPLICAS_MAX) {
        ds_err_set(err, "replicas of service \"%.*s\": %u exceed the "
                   "maximum of %u", (int) len, key, n, DS_REPLICAS_MAX);
        return DS_EINVAL;
    }

    /* a working copy: uids and slots are the writer's to assign */
    w = malloc((n ? n : 1) * sizeof(ds_replica_t));
    if (w == NULL) {
        ds_err_set(err, "cannot store replicas of service \"%.*s\": out of "
                   "memory", (int) len, key);
        return DS_ERROR;
    }

    for (i = 0; i < n; i++) {
        w[i] = r[i];
        w[i].uid = 0;
        w[i].slot = DS_SLOT_NONE;

        if (w[i].family == DS_AF_INET) {
            memset(w[i].addr + 4, 0, 12);
        }
    }

    rc = ds_replicas_encode(0, w, n, &rec, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "service \"%.*s\"", (int) len, key);
        goto done;
    }

    rc = ds_replicas_unique(w, n, key, len, err);
    if (rc != DS_OK) {
        goto done;
    }

    rc = ds_raw_get(txn, DS_DB_SERVICES, key, len, &v, err);
    if (rc != DS_OK) {
        goto done;
    }

    rc = ds_replicas_load(txn, key, len, &old, &m, &generation, err);

    if (rc == DS_OK) {
        rc = ds_seq_load(txn, &seq, err);
    }

    if (rc == DS_OK) {
        rc = ds_slots_load(txn, &slots, DS_KEY_SLOTS_R, DS_REPLICA_SLOTS_MAX,
                           err);
    }

    if (rc == DS_OK) {
        rc = ds_replicas_assign(w, n, old, m, &slots, &seq, key, len, err);
    }

    if (rc == DS_OK) {
        rc = ds_replicas_encode(generation + 1, w, n, &rec, err);
    }

    if (rc != DS_OK) {
        goto done;
    }

    /* everything is checked and encoded: write */

    rc = ds_raw_put(txn, DS_DB_REPLICAS, key, len, rec.data, rec.len, err);

    if (rc == DS_OK) {
        rc = ds_slots_store(txn, &slots, err);
    }

    if (rc == DS_OK) {
        rc = ds_seq_store(txn, seq, err);
    }

    if (rc == DS_OK) {
        for (i = 0; i < n; i++) {
            r[i].uid = w[i].uid;
            r[i].slot = w[i].slot;
        }
    }

done:

    free(w);
    free(old);
    ds_buf_free(&rec);
    ds_slots_done(&slots);
    return rc;
}


/* ---- tokens ------------------------------------------------------------ */

int
ds_put_token(ds_txn_t *txn, const ds_token_t *tok, const ds_str_t *services,
    ds_err_t *err)
{
    int       rc;
    uint8_t   hash[DS_TOKEN_HASH_LEN];
    ds_buf_t  rec;

    if (!ds_need_write(txn, "store a token", err)) {
        return DS_EINVAL;
    }

    memset(&rec, 0, sizeof(rec));
    memcpy(hash, tok->hash, DS_TOKEN_HASH_LEN);

    rc = ds_token_encode(tok, services, &rec, err);
    if (rc == DS_OK) {
        rc = ds_raw_put(txn, DS_DB_TOKENS, hash, DS_TOKEN_HASH_LEN, rec.data,
                        rec.len, err);
    }

    ds_buf_free(&rec);
    return rc;
}


int
ds_del_token(ds_txn_t *txn, const uint8_t hash[DS_TOKEN_HASH_LEN],
    ds_err_t *err)
{
    uint8_t  key[DS_TOKEN_HASH_LEN];

    if (!ds_need_write(txn, "delete a token", err)) {
        return DS_EINVAL;
    }

    memcpy(key, hash, DS_TOKEN_HASH_LEN);
    return ds_raw_del(txn, DS_DB_TOKENS, key, DS_TOKEN_HASH_LEN, err);
}


/* ---- settings and runs ------------------------------------------------- */

int
ds_get_setting(ds_txn_t *txn, const char *key, ds_str_t *val, ds_err_t *err)
{
    int      rc;
    size_t   len;
    MDB_val  v;

    len = strlen(key);
    if (!ds_name_key_ok(DS_DB_SETTINGS, key, len, DS_SETTING_KEY_MAX, err)) {
        return DS_NOTFOUND;
    }

    rc = ds_raw_get(txn, DS_DB_SETTINGS, key, len, &v, err);
    if (rc == DS_OK) {
        val->data = v.mv_data;
        val->len = (uint32_t) v.mv_size;
    }

    return rc;
}


int
ds_put_setting(ds_txn_t *txn, const char *key, const void *val, size_t len,
    ds_err_t *err)
{
    size_t  klen;

    if (!ds_need_write(txn, "store a setting", err)) {
        return DS_EINVAL;
    }

    klen = strlen(key);
    if (!ds_name_key_ok(DS_DB_SETTINGS, key, klen, DS_SETTING_KEY_MAX, err)) {
        return DS_EINVAL;
    }

    return ds_raw_put(txn, DS_DB_SETTINGS, key, klen, val, len, err);
}


int
ds_get_run(ds_txn_t *txn, const char *name, size_t len, ds_str_t *doc,
    ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    if (!ds_name_key_ok(DS_DB_RUNS, name, len, DS_NAME_MAX, err)) {
        return DS_NOTFOUND;
    }

    rc = ds_raw_get(txn, DS_DB_RUNS, name, len, &v, err);
    if (rc == DS_OK) {
        doc->data = v.mv_data;
        doc->len = (uint32_t) v.mv_size;
    }

    return rc;
}


int
ds_put_run(ds_txn_t *txn, const char *name, size_t len, const char *doc,
    size_t doc_len, ds_err_t *err)
{
    if (!ds_need_write(txn, "store a run", err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(DS_DB_RUNS, name, len, DS_NAME_MAX, err)) {
        return DS_EINVAL;
    }

    return ds_raw_put(txn, DS_DB_RUNS, name, len, doc, doc_len, err);
}


int
ds_del_run(ds_txn_t *txn, const char *name, size_t len, ds_err_t *err)
{
    if (!ds_need_write(txn, "delete a run", err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(DS_DB_RUNS, name, len, DS_NAME_MAX, err)) {
        return DS_NOTFOUND;
    }

    return ds_raw_del(txn, DS_DB_RUNS, name, len, err);
}
