/*
 * Inside the shared state's code (ds_state.c: opening, transactions, raw
 * access; ds_state_read.c: readers and iteration; ds_state_write.c: the
 * writer's records and bookkeeping).  Not for the programs: they use
 * ds_state.h.  The read and write sides call the core; the core calls
 * neither.
 */

#ifndef DS_STATE_IMPL_H
#define DS_STATE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include <sys/types.h>

#include <lmdb.h>

#include "ds_state.h"


#define DS_MAPSIZE              (1024UL * 1024 * 1024)
#define DS_MAXDBS               16
#define DS_MAXREADERS           510
#define DS_SETTING_KEY_MAX      511     /* LMDB's default key size limit */

#define DS_KEY_SCHEMA           "schema"
#define DS_KEY_SEQ              "seq"
#define DS_KEY_SLOTS_S          "slots.s"
#define DS_KEY_SLOTS_R          "slots.r"
#define DS_KEY_FOLLOW_REV       "follow.rev"    /* shared mode's mirror */
#define DS_KEY_FOLLOW_LOST      "follow.lost"   /* since when the shared
                                                   database is unreachable */

enum {
    DS_DB_META = 0,
    DS_DB_SERVICES,
    DS_DB_REPLICAS,
    DS_DB_TOKENS,
    DS_DB_MODELS,
    DS_DB_SETTINGS,
    DS_DB_RUNS,
    DS_DB_CERTS,
    DS_DB_FLEETS,                       /* controld's only */
    DS_DB_SECRETS,                      /* controld's only, encrypted */
    DS_DB_MEMBERS,                      /* project + user -> role */
    DS_DB_USERS,                        /* controld's only */
    DS_DB_PROJECTS,                     /* controld's only */
    DS_DB_AUDIT,                        /* controld's only */
    DS_DB_COUNT
};




/* which file an open environment has: dev and inode (ds_state_check_files) */
typedef struct {
    dev_t           dev;
    ino_t           ino;
    int             known;
} ds_file_id_t;

struct ds_state_s {
    MDB_env        *env;
    MDB_dbi         dbi[DS_DB_COUNT];
    int             no_certs;       /* reader of a state from before it */
    int             no_members;     /* the same, for "members" */
    int             flags;          /* DS_STATE_* */
    int             capture;        /* keep write txns' changes */
    char           *dir;
    ds_file_id_t    data;           /* data.mdb as opened */
    ds_file_id_t    lock;           /* lock.mdb as opened */
};

/* one captured change: key then value bytes follow the struct */
typedef struct ds_change_s  ds_change_t;

struct ds_change_s {
    ds_change_t    *next;
    int             db;
    int             deleted;
    size_t          klen;
    size_t          vlen;
    unsigned char   data[];
};

struct ds_txn_s {
    ds_state_t     *st;
    MDB_txn        *txn;
    int             write;
    ds_change_t    *changes;        /* capture: in order */
    ds_change_t   **last;
    size_t          nchanges;
};

extern const char  *ds_db_names[DS_DB_COUNT];


/* ---- errors (ds_state.c) ------------------------------------------------ */

void ds_err_set(ds_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int ds_mdb_err(ds_err_t *err, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* prefixes an error message with its subject: "service \"a\": ..." */
void ds_err_prefix(ds_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* names a key for a message: service "a", token 1a2b3c4d */
const char *ds_key_desc(int db, const void *key, size_t len, char *buf,
    size_t size);


/* ---- raw access (ds_state.c) -------------------------------------------- */

int ds_raw_get(ds_txn_t *txn, int db, const void *key, size_t klen,
    MDB_val *val, ds_err_t *err);
int ds_raw_put(ds_txn_t *txn, int db, const void *key, size_t klen,
    const void *val, size_t vlen, ds_err_t *err);
int ds_raw_del(ds_txn_t *txn, int db, const void *key, size_t klen,
    ds_err_t *err);
/* iteration (ds_state_read.c): fn returns DS_OK to go on, 1 to stop, or
 * an error; ds_each_kv_db calls cb with the raw key and value */
typedef int (*ds_each_fn)(void *ctx, const MDB_val *k, const MDB_val *v,
    ds_err_t *err);
int ds_each(ds_txn_t *txn, int db, ds_each_fn fn, void *ctx, ds_err_t *err);
int ds_each_kv_db(ds_txn_t *txn, int db, ds_kv_cb cb, void *arg,
    ds_err_t *err);
int ds_name_key_ok(int db, const char *name, size_t len, size_t max,
    ds_err_t *err);
int ds_need_write(ds_txn_t *txn, const char *what, ds_err_t *err);
/* whether a key belongs to this environment alone (never published) */
int ds_key_local(int db, const void *key, size_t klen);
void ds_changes_free(ds_txn_t *txn);
/* the uid sequence in meta */
int ds_seq_load(ds_txn_t *txn, uint64_t *seq, ds_err_t *err);
int ds_seq_store(ds_txn_t *txn, uint64_t seq, ds_err_t *err);


#endif /* DS_STATE_IMPL_H */
