/*
 * Shared mode's follower side of the state: an environment that mirrors
 * the records a leader published (controld/pg.c reads them from
 * PostgreSQL).  The follower applies every record of a catch-up, and the
 * revision it reached, in one write transaction: a key appears only at
 * its latest revision, so applying revisions one by one could show
 * readers (nginx) a state that never existed.
 *
 * Records travel raw: the bytes the leader's ds_raw_put() stored, under
 * the database's index.  Nothing here decodes them; the readers do, as
 * for any record.
 */

#include <string.h>

#include <lmdb.h>

#include "ds_state_impl.h"


int
ds_db_count(void)
{
    return DS_DB_COUNT;
}


const char *
ds_db_name(int db)
{
    return (db >= 0 && db < DS_DB_COUNT) ? ds_db_names[db] : "?";
}


int
ds_mirror_rev(ds_txn_t *txn, uint64_t *rev, ds_err_t *err)
{
    int             i, rc;
    MDB_val         v;
    const uint8_t  *p;

    *rev = 0;
    rc = ds_raw_get(txn, DS_DB_META, DS_KEY_FOLLOW_REV,
                    sizeof(DS_KEY_FOLLOW_REV) - 1, &v, err);
    if (rc != DS_OK) {
        return rc;
    }
    if (v.mv_size != 8) {
        ds_err_set(err, "meta \"follow.rev\" is corrupt (%zu bytes, not 8)",
                   v.mv_size);
        return DS_ERROR;
    }
    p = v.mv_data;
    for (i = 0; i < 8; i++) {
        *rev |= (uint64_t) p[i] << (8 * i);
    }
    return DS_OK;
}


int
ds_mirror_set_rev(ds_txn_t *txn, uint64_t rev, ds_err_t *err)
{
    int      i;
    uint8_t  b[8];

    if (!ds_need_write(txn, "store the mirrored revision", err)) {
        return DS_EINVAL;
    }
    for (i = 0; i < 8; i++) {
        b[i] = (uint8_t) (rev >> (8 * i));
    }
    /* a local key: ds_raw_put never captures it */
    return ds_raw_put(txn, DS_DB_META, DS_KEY_FOLLOW_REV,
                      sizeof(DS_KEY_FOLLOW_REV) - 1, b, sizeof(b), err);
}


int
ds_mirror_set_lost(ds_txn_t *txn, uint64_t since, ds_err_t *err)
{
    int      i, rc;
    uint8_t  b[8];

    if (!ds_need_write(txn, "store the follower's state", err)) {
        return DS_EINVAL;
    }
    if (since == 0) {
        rc = ds_raw_del(txn, DS_DB_META, DS_KEY_FOLLOW_LOST,
                        sizeof(DS_KEY_FOLLOW_LOST) - 1, err);
        return rc == DS_NOTFOUND ? DS_OK : rc;
    }
    for (i = 0; i < 8; i++) {
        b[i] = (uint8_t) (since >> (8 * i));
    }
    return ds_raw_put(txn, DS_DB_META, DS_KEY_FOLLOW_LOST,
                      sizeof(DS_KEY_FOLLOW_LOST) - 1, b, sizeof(b), err);
}


int
ds_mirror_lost(ds_txn_t *txn, uint64_t *since, ds_err_t *err)
{
    int             i, rc;
    MDB_val         v;
    const uint8_t  *p;

    *since = 0;
    rc = ds_raw_get(txn, DS_DB_META, DS_KEY_FOLLOW_LOST,
                    sizeof(DS_KEY_FOLLOW_LOST) - 1, &v, err);
    if (rc == DS_NOTFOUND) {
        return DS_OK;
    }
    if (rc != DS_OK) {
        return rc;
    }
    if (v.mv_size != 8) {
        ds_err_set(err, "meta \"follow.lost\" is corrupt (%zu bytes, not "
                   "8)", v.mv_size);
        return DS_ERROR;
    }
    p = v.mv_data;
    for (i = 0; i < 8; i++) {
        *since |= (uint64_t) p[i] << (8 * i);
    }
    return DS_OK;
}

int
ds_mirror_apply(ds_txn_t *txn, int db, const void *key, size_t klen,
    const void *val, size_t vlen, ds_err_t *err)
{
    int  rc;

    if (!ds_need_write(txn, "apply a mirrored record", err)) {
        return DS_EINVAL;
    }
    if (db < 0 || db >= DS_DB_COUNT) {
        ds_err_set(err, "mirrored record names database %d: this program "
                   "knows 0..%d", db, DS_DB_COUNT - 1);
        return DS_EINVAL;
    }
    if (klen == 0 || klen > DS_SETTING_KEY_MAX) {
        ds_err_set(err, "mirrored record of database \"%s\" has a key of "
                   "%zu bytes (1..%d)", ds_db_names[db], klen,
                   DS_SETTING_KEY_MAX);
        return DS_EINVAL;
    }
    if (ds_key_local(db, key, klen)) {
        return DS_OK;                   /* never this environment's own */
    }

    if (val == NULL) {
        rc = ds_raw_del(txn, db, key, klen, err);
        return rc == DS_NOTFOUND ? DS_OK : rc;
    }
    return ds_raw_put(txn, db, key, klen, val, vlen, err);
}


/* meta keeps its two local keys; every other database is emptied */
int
ds_mirror_clear(ds_txn_t *txn, ds_err_t *err)
{
    int          i, rc;
    MDB_cursor  *cur;
    MDB_val      k, v;

    if (!ds_need_write(txn, "clear the mirror", err)) {
        return DS_EINVAL;
    }

    for (i = 1; i < DS_DB_COUNT; i++) {
        rc = mdb_drop(txn->txn, txn->st->dbi[i], 0);
        if (rc != 0) {
            return ds_mdb_err(err, rc, "cannot empty database \"%s\"",
                              ds_db_names[i]);
        }
    }

    rc = mdb_cursor_open(txn->txn, txn->st->dbi[DS_DB_META], &cur);
    if (rc != 0) {
        return ds_mdb_err(err, rc, "cannot open a cursor on meta");
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
    {
        if (ds_key_local(DS_DB_META, k.mv_data, k.mv_size)) {
            continue;
        }
        rc = mdb_cursor_del(cur, 0);
        if (rc != 0) {
            break;
        }
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return ds_mdb_err(err, rc, "cannot empty meta");
    }
    return DS_OK;
}


int
ds_mirror_foreach(ds_txn_t *txn, ds_change_cb cb, void *arg, ds_err_t *err)
{
    int          i, rc, stop;
    MDB_cursor  *cur;
    MDB_val      k, v;

    for (i = 0; i < DS_DB_COUNT; i++) {
        if ((i == DS_DB_CERTS && txn->st->no_certs)
            || (i == DS_DB_MEMBERS && txn->st->no_members))
        {
            continue;
        }
        rc = mdb_cursor_open(txn->txn, txn->st->dbi[i], &cur);
        if (rc != 0) {
            return ds_mdb_err(err, rc, "cannot open a cursor on \"%s\"",
                              ds_db_names[i]);
        }
        stop = 0;
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        {
            if (ds_key_local(i, k.mv_data, k.mv_size)) {
                continue;
            }
            stop = cb(arg, i, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
            if (stop != 0) {
                break;
            }
        }
        mdb_cursor_close(cur);
        if (stop != 0) {
            ds_err_set(err, "stopped at a record of \"%s\"", ds_db_names[i]);
            return DS_ERROR;
        }
        if (rc != MDB_NOTFOUND) {
            return ds_mdb_err(err, rc, "cannot read \"%s\"", ds_db_names[i]);
        }
    }
    return DS_OK;
}
