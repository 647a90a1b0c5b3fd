/*
 * Readers of the shared state's records: get, copy out, iterate.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "ds_state_impl.h"


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

/*
 * Calls fn for each record of db in key order; fn returns DS_OK to go
 * on, 1 to stop, or an error.
 */
int
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
ds_each_kv_db(ds_txn_t *txn, int db, ds_kv_cb cb, void *arg, ds_err_t *err)
{
    ds_each_ctx_t  ec;

    ec.cb.kv = cb;
    ec.arg = arg;
    return ds_each(txn, db, ds_each_kv, &ec, err);
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


int
ds_foreach_fleet(ds_txn_t *txn, ds_kv_cb cb, void *arg, ds_err_t *err)
{
    ds_each_ctx_t  ec;

    ec.cb.kv = cb;
    ec.arg = arg;
    return ds_each(txn, DS_DB_FLEETS, ds_each_kv, &ec, err);
}


int
ds_foreach_secret(ds_txn_t *txn, ds_kv_cb cb, void *arg, ds_err_t *err)
{
    ds_each_ctx_t  ec;

    ec.cb.kv = cb;
    ec.arg = arg;
    return ds_each(txn, DS_DB_SECRETS, ds_each_kv, &ec, err);
}


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
