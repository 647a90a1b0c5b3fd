/*
 * Teams in the shared state (#18): memberships, read by the module when
 * a user's token calls a service, and controld's users, projects and
 * audit events, kept as documents.
 *
 * A membership is keyed project "\0" user (project "" is main): the
 * module finds one with a single lookup, and a role change or a removal
 * is one write that the next request sees.
 */

#include <stdio.h>
#include <string.h>

#include <lmdb.h>

#include "ds_state_impl.h"


#define DS_MEMBER_KEY_MAX       (2 * DS_NAME_MAX + 1)

static const int  ds_team_dbs[] = { DS_DB_USERS, DS_DB_PROJECTS,
                                    DS_DB_AUDIT };


/* project "\0" user into key: its length, or 0 (err says why) */
static size_t
ds_member_key(const char *project, size_t plen, const char *user,
    size_t ulen, char key[DS_MEMBER_KEY_MAX], ds_err_t *err)
{
    if (plen > DS_NAME_MAX || ulen == 0 || ulen > DS_NAME_MAX
        || memchr(project, '\0', plen) != NULL
        || memchr(user, '\0', ulen) != NULL)
    {
        ds_err_set(err, "member \"%.*s\" of project \"%.*s\": not a valid "
                   "name", (int) (ulen > 64 ? 64 : ulen), user,
                   (int) (plen > 64 ? 64 : plen), project);
        return 0;
    }

    memcpy(key, project, plen);
    key[plen] = '\0';
    memcpy(key + plen + 1, user, ulen);

    return plen + 1 + ulen;
}


int
ds_get_member(ds_txn_t *txn, const char *project, size_t plen,
    const char *user, size_t ulen, ds_member_t *m, ds_err_t *err)
{
    int      rc;
    char     key[DS_MEMBER_KEY_MAX];
    size_t   klen;
    MDB_val  v;

    if (txn->st->no_members) {
        return DS_NOTFOUND;
    }

    klen = ds_member_key(project, plen, user, ulen, key, err);
    if (klen == 0) {
        return DS_NOTFOUND;
    }

    rc = ds_raw_get(txn, DS_DB_MEMBERS, key, klen, &v, err);
    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_member_decode(v.mv_data, v.mv_size, m, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "member \"%.*s\" of project \"%.*s\"",
                      (int) ulen, user, (int) plen, project);
    }

    return rc;
}


int
ds_put_member(ds_txn_t *txn, const char *project, size_t plen,
    const char *user, size_t ulen, const ds_member_t *m, ds_err_t *err)
{
    int       rc;
    char      key[DS_MEMBER_KEY_MAX];
    size_t    klen;
    ds_buf_t  buf;

    if (!ds_need_write(txn, "store a member", err)) {
        return DS_EINVAL;
    }

    klen = ds_member_key(project, plen, user, ulen, key, err);
    if (klen == 0) {
        return DS_EINVAL;
    }

    memset(&buf, 0, sizeof(buf));

    rc = ds_member_encode(m, &buf, err);
    if (rc == DS_OK) {
        rc = ds_raw_put(txn, DS_DB_MEMBERS, key, klen, buf.data, buf.len,
                        err);
    }

    ds_buf_free(&buf);
    return rc;
}


int
ds_del_member(ds_txn_t *txn, const char *project, size_t plen,
    const char *user, size_t ulen, ds_err_t *err)
{
    char    key[DS_MEMBER_KEY_MAX];
    size_t  klen;

    if (!ds_need_write(txn, "delete a member", err)) {
        return DS_EINVAL;
    }

    klen = ds_member_key(project, plen, user, ulen, key, err);
    if (klen == 0) {
        return DS_NOTFOUND;
    }

    return ds_raw_del(txn, DS_DB_MEMBERS, key, klen, err);
}


struct ds_member_each {
    ds_member_cb    cb;
    void           *arg;
};


static int
ds_member_each(void *ctx, const MDB_val *k, const MDB_val *v, ds_err_t *err)
{
    struct ds_member_each  *me = ctx;
    const char             *key, *nul;
    ds_str_t                project, user;
    ds_member_t             m;

    key = k->mv_data;
    nul = memchr(key, '\0', k->mv_size);

    if (nul == NULL || nul == key + k->mv_size - 1) {
        ds_err_set(err, "members: a key without project and user");
        return DS_EINVAL;
    }

    if (ds_member_decode(v->mv_data, v->mv_size, &m, err) != DS_OK) {
        return DS_EINVAL;
    }

    project.data = key;
    project.len = (uint32_t) (nul - key);
    user.data = nul + 1;
    user.len = (uint32_t) (k->mv_size - project.len - 1);

    return me->cb(me->arg, &project, &user, &m) ? 1 : DS_OK;
}


int
ds_foreach_member(ds_txn_t *txn, ds_member_cb cb, void *arg, ds_err_t *err)
{
    struct ds_member_each  me;

    if (txn->st->no_members) {
        return DS_OK;
    }

    me.cb = cb;
    me.arg = arg;
    return ds_each(txn, DS_DB_MEMBERS, ds_member_each, &me, err);
}


/* ---- documents: users, projects, audit events ----------------------------- */

static int
ds_team_db(int kind, const void *key, size_t klen, ds_err_t *err)
{
    if (kind < DS_DOCS_USERS || kind > DS_DOCS_AUDIT) {
        ds_err_set(err, "no team documents of kind %d", kind);
        return -1;
    }

    if (klen == 0 || klen > DS_NAME_MAX || memchr(key, '\0', klen)) {
        ds_err_set(err, "%s: not a valid key of %zu bytes",
                   ds_db_names[ds_team_dbs[kind]], klen);
        return -1;
    }

    return ds_team_dbs[kind];
}


int
ds_get_team_doc(ds_txn_t *txn, int kind, const void *key, size_t klen,
    ds_str_t *doc, ds_err_t *err)
{
    int      db, rc;
    MDB_val  v;

    db = ds_team_db(kind, key, klen, err);
    if (db < 0) {
        return DS_NOTFOUND;
    }

    rc = ds_raw_get(txn, db, key, klen, &v, err);
    if (rc == DS_OK) {
        doc->data = v.mv_data;
        doc->len = (uint32_t) v.mv_size;
    }

    return rc;
}


int
ds_put_team_doc(ds_txn_t *txn, int kind, const void *key, size_t klen,
    const char *doc, size_t doc_len, ds_err_t *err)
{
    int  db;

    if (!ds_need_write(txn, "store a team document", err)) {
        return DS_EINVAL;
    }

    db = ds_team_db(kind, key, klen, err);
    if (db < 0) {
        return DS_EINVAL;
    }

    return ds_raw_put(txn, db, key, klen, doc, doc_len, err);
}


int
ds_del_team_doc(ds_txn_t *txn, int kind, const void *key, size_t klen,
    ds_err_t *err)
{
    int  db;

    if (!ds_need_write(txn, "delete a team document", err)) {
        return DS_EINVAL;
    }

    db = ds_team_db(kind, key, klen, err);
    if (db < 0) {
        return DS_NOTFOUND;
    }

    return ds_raw_del(txn, db, key, klen, err);
}


int
ds_foreach_team_doc(ds_txn_t *txn, int kind, ds_kv_cb cb, void *arg,
    ds_err_t *err)
{
    if (kind < DS_DOCS_USERS || kind > DS_DOCS_AUDIT) {
        ds_err_set(err, "no team documents of kind %d", kind);
        return DS_EINVAL;
    }

    return ds_each_kv_db(txn, ds_team_dbs[kind], cb, arg, err);
}
