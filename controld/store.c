/*
 * The LMDB side of controld: the only writer of the shared state.
 *
 * Every write transaction begins here, from the main loop: runs,
 * services, certificates, tokens.
 * What goes into one transaction is the caller's choice (rundoc.c);
 * store.c knows records, not runs.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "store.h"
#include "util.h"


ds_state_t  *state;

int        (*store_publish)(ds_txn_t *txn, uint64_t *rev, char *err,
               size_t errlen);
/* the last store_end() failed to publish (shared mode): 503, not 500 */
static int   unpublished;

/* set when the files at the path are no longer the ones open; for good */
static int   lost;
static char  lost_why[512];


int
store_open(void)
{
    struct stat  sb;
    ds_err_t     err;
    char         path[4096];

    if (stat(conf->state_dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) {
            log_warnx("state_dir %s is not a directory", conf->state_dir);
            return -1;
        }
        if (sb.st_mode & S_IWOTH) {
            log_warnx("state_dir %s is world-writable (mode %03o): anyone "
                      "could replace the state nginx trusts; "
                      "chmod o-w %s", conf->state_dir,
                      (unsigned) (sb.st_mode & 0777), conf->state_dir);
            return -1;
        }
    } else if (errno != ENOENT) {
        log_warn("state_dir %s", conf->state_dir);
        return -1;
    }

    if (ds_state_open(&state, conf->state_dir, DS_STATE_CREATE, 0660, &err)
        != DS_OK)
    {
        log_warnx("%s", err.msg);
        return -1;
    }

    /* nginx's workers open the state read-only but need the lock file
     * writable: the group gets the directory and both files */
    if (conf->group != NULL) {
        const char  *files[] = { "", "/data.mdb", "/lock.mdb" };
        size_t       i;

        for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
            if (fmt(path, sizeof(path), "%s%s", conf->state_dir, files[i])
                != 0 || chgrp_conf(path) != 0)
            {
                log_warn("cannot give %s to group %s", path, conf->group);
            }
        }
    }

    /* code archives by hash: readable by controld only */
    if (fmt(path, sizeof(path), "%s/code", conf->state_dir) != 0
        || mkdir_p(path, 0700) != 0)
    {
        log_warn("cannot create %s", path);
        return -1;
    }

    return 0;
}


void
store_close(void)
{
    ds_state_close(state);
    state = NULL;
}


/*
 * A restored backup renamed over data.mdb (or a removed file) leaves
 * controld with a file nobody else opens: nginx's workers reopen the
 * new one within a second, and every commit here would be lost to
 * them (a revoked token would keep working).  So every write and every
 * tick looks first; what controld knows in memory cannot be merged
 * into the new file, and a restart is what rebuilds it from a file.
 */
int
store_check_files(void)
{
    ds_err_t  err;

    if (lost) {
        return -1;
    }
    if (state == NULL || ds_state_check_files(state, &err) == DS_OK) {
        return 0;
    }
    lost = 1;
    snprintf(lost_why, sizeof(lost_why), "%s", err.msg);
    log_warnx("%s while controld had it open: controld writes nothing "
              "more to it and exits, to be started again on the file now "
              "at %s", err.msg, conf->state_dir);
    return -1;
}


int
store_lost(void)
{
    return lost;
}


int
store_unpublished(void)
{
    return unpublished;
}


const char *
store_lost_why(void)
{
    return lost ? lost_why : "";
}


struct store_load {
    int           (*fn)(void *arg, const char *name, size_t name_len,
                      const char *doc, size_t doc_len);
    void           *arg;
};


static int
store_load_one(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    struct store_load  *l = arg;

    return l->fn(l->arg, key->data, key->len, val->data, val->len);
}


static int
store_load(int (*each)(ds_txn_t *, ds_kv_cb, void *, ds_err_t *),
    const char *what, int (*fn)(void *arg, const char *name,
    size_t name_len, const char *doc, size_t doc_len), void *arg)
{
    struct store_load  l = { fn, arg };
    ds_txn_t          *txn;
    ds_err_t           err;
    int                rc;

    if (ds_txn_begin(state, 0, &txn, &err) != DS_OK) {
        log_warnx("%s", err.msg);
        return -1;
    }
    rc = each(txn, store_load_one, &l, &err);
    ds_txn_abort(txn);
    if (rc != DS_OK) {
        log_warnx("cannot read %s: %s", what, err.msg);
        return -1;
    }
    return 0;
}


int
store_load_docs(int (*fn)(void *arg, const char *name, size_t name_len,
    const char *doc, size_t doc_len), void *arg)
{
    return store_load(ds_foreach_run, "runs", fn, arg);
}


int
store_load_fleets(int (*fn)(void *arg, const char *name, size_t name_len,
    const char *doc, size_t doc_len), void *arg)
{
    return store_load(ds_foreach_fleet, "fleets", fn, arg);
}


/* ---- write transactions ------------------------------------------------- */

struct store_txn {
    ds_txn_t       *txn;
    int             rc;                 /* the first failure, DS_* */
    ds_err_t        err;
    char           *errbuf;             /* the caller's */
    size_t          errlen;
};

/* one write transaction at a time: the loop is the only writer */
static struct store_txn  store_txn;


struct store_txn *
store_begin(char *errbuf, size_t errlen)
{
    struct store_txn  *t = &store_txn;

    memset(t, 0, sizeof(*t));
    t->errbuf = errbuf;
    t->errlen = errlen;
    if (store_check_files() != 0) {
        snprintf(errbuf, errlen, "%s: nothing was written; controld "
                 "restarts on the new state", lost_why);
        return NULL;
    }
    if (ds_txn_begin(state, 1, &t->txn, &t->err) != DS_OK) {
        snprintf(errbuf, errlen, "%s", t->err.msg);
        return NULL;
    }
    return t;
}


/* a put's outcome; what failed (and its name, when known) comes
 * before LMDB's reason */
static void
store_check(struct store_txn *t, int rc, const char *what, const char *name)
{
    char  msg[sizeof(t->err.msg)];

    if (rc == DS_OK || t->rc != DS_OK) {
        return;
    }
    t->rc = rc;
    snprintf(msg, sizeof(msg), "%s", t->err.msg);
    if (name != NULL) {
        snprintf(t->errbuf, t->errlen, "%s \"%s\": %s", what, name, msg);
    } else {
        snprintf(t->errbuf, t->errlen, "%s: %s", what, msg);
    }
}


void
store_put_service(struct store_txn *t, ds_service_t *svc)
{
    if (t->rc == DS_OK) {
        /* the error is the state's own ("model ... is taken by ...") */
        t->rc = ds_put_service(t->txn, svc, &t->err);
        if (t->rc != DS_OK) {
            snprintf(t->errbuf, t->errlen, "%s", t->err.msg);
        }
    }
}


void
store_del_service(struct store_txn *t, const char *name)
{
    int  rc;

    if (t->rc == DS_OK) {
        rc = ds_del_service(t->txn, name, strlen(name), &t->err);
        store_check(t, rc == DS_NOTFOUND ? DS_OK : rc, "service", name);
    }
}


void
store_put_doc(struct store_txn *t, const char *name, const char *doc)
{
    if (t->rc != DS_OK) {
        return;
    }
    if (doc == NULL) {
        snprintf(t->err.msg, sizeof(t->err.msg), "out of memory");
        store_check(t, DS_ERROR, "run", name);
        return;
    }
    store_check(t, ds_put_run(t->txn, name, strlen(name), doc, strlen(doc),
                              &t->err), "run", name);
}


void
store_put_fleet(struct store_txn *t, const char *name, const char *doc)
{
    if (t->rc != DS_OK) {
        return;
    }
    store_check(t, ds_put_fleet(t->txn, name, strlen(name), doc, strlen(doc),
                                &t->err), "fleet", name);
}


void
store_del_fleet(struct store_txn *t, const char *name)
{
    int  rc;

    if (t->rc == DS_OK) {
        rc = ds_del_fleet(t->txn, name, strlen(name), &t->err);
        store_check(t, rc == DS_NOTFOUND ? DS_OK : rc, "fleet", name);
    }
}


void
store_put_secret(struct store_txn *t, const char *name, const void *rec,
    size_t len)
{
    if (t->rc != DS_OK) {
        return;
    }
    store_check(t, ds_put_secret(t->txn, name, strlen(name), rec, len,
                                 &t->err), "secret", name);
}


void
store_put_setting(struct store_txn *t, const char *key, const char *val)
{
    if (t->rc != DS_OK) {
        return;
    }
    store_check(t, ds_put_setting(t->txn, key, val, strlen(val), &t->err),
                "setting", key);
}


void
store_del_secret(struct store_txn *t, const char *name)
{
    int  rc;

    if (t->rc == DS_OK) {
        rc = ds_del_secret(t->txn, name, strlen(name), &t->err);
        store_check(t, rc == DS_NOTFOUND ? DS_OK : rc, "secret", name);
    }
}


void
store_put_member(struct store_txn *t, const char *project, const char *user,
    unsigned role)
{
    ds_member_t  m;

    if (t->rc != DS_OK) {
        return;
    }
    m.role = role;
    m.created = (uint64_t) time(NULL);
    store_check(t, ds_put_member(t->txn, project, strlen(project), user,
                                 strlen(user), &m, &t->err),
                "member", user);
}


void
store_del_member(struct store_txn *t, const char *project, const char *user)
{
    int  rc;

    if (t->rc == DS_OK) {
        rc = ds_del_member(t->txn, project, strlen(project), user,
                           strlen(user), &t->err);
        store_check(t, rc == DS_NOTFOUND ? DS_OK : rc, "member", user);
    }
}


void
store_put_team_doc(struct store_txn *t, int kind, const char *key,
    const char *doc)
{
    if (t->rc == DS_OK) {
        store_check(t, ds_put_team_doc(t->txn, kind, key, strlen(key), doc,
                                       strlen(doc), &t->err),
                    "team document", key);
    }
}


void
store_del_team_doc(struct store_txn *t, int kind, const char *key)
{
    int  rc;

    if (t->rc == DS_OK) {
        rc = ds_del_team_doc(t->txn, kind, key, strlen(key), &t->err);
        store_check(t, rc == DS_NOTFOUND ? DS_OK : rc, "team document", key);
    }
}


ds_txn_t *
store_txn_of(struct store_txn *t)
{
    return t->txn;
}


void
store_put_replicas(struct store_txn *t, const char *name, ds_replica_t *set,
    unsigned n)
{
    if (t->rc == DS_OK) {
        store_check(t, ds_put_replicas(t->txn, name, strlen(name), set, n,
                                       &t->err), "replicas of", name);
    }
}


void
store_put_cert(struct store_txn *t, ds_cert_t *c)
{
    char  host[DS_HOST_MAX + 1];

    if (t->rc == DS_OK) {
        snprintf(host, sizeof(host), "%.*s", (int) c->host.len,
                 c->host.data ? (const char *) c->host.data : "");
        store_check(t, ds_put_cert(t->txn, c, &t->err), "certificate",
                    host);
    }
}


void
store_put_token(struct store_txn *t, const ds_token_t *tok,
    const ds_str_t *services)
{
    char  name[DS_NAME_MAX + 1];

    if (t->rc == DS_OK) {
        snprintf(name, sizeof(name), "%.*s", (int) tok->name.len,
                 tok->name.data ? (const char *) tok->name.data : "");
        store_check(t, ds_put_token(t->txn, tok, services, &t->err),
                    "token", name);
    }
}


void
store_del_token(struct store_txn *t, const uint8_t hash[DS_TOKEN_HASH_LEN])
{
    if (t->rc == DS_OK) {
        store_check(t, ds_del_token(t->txn, hash, &t->err), "token", NULL);
    }
}


/*
 * Shared mode: PostgreSQL first, then LMDB.  Should LMDB's commit fail
 * after a publish, the database has a revision this LMDB lacks; the
 * records come back when this instance follows again (a restart).
 */
static void
store_publish_first(struct store_txn *t)
{
    uint64_t  rev;

    if (ds_txn_nchanges(t->txn) == 0) {
        return;
    }
    if (store_publish(t->txn, &rev, t->errbuf, t->errlen) != 0) {
        t->rc = DS_ERROR;
        unpublished = 1;
        return;
    }
    if (ds_mirror_set_rev(t->txn, rev, &t->err) != DS_OK) {
        t->rc = DS_ERROR;
        snprintf(t->errbuf, t->errlen, "%s", t->err.msg);
    }
}


/*
 * Commits when every put succeeded, else aborts; the first failure.  The
 * files are looked at again just before the commit and just after it: a
 * file replaced in between got a commit nobody will read, and the
 * caller must not say it was saved.
 */
int
store_end(struct store_txn *t)
{
    if (t->rc == DS_OK && store_check_files() != 0) {
        t->rc = DS_ERROR;
        snprintf(t->errbuf, t->errlen, "%s: nothing was written; "
                 "controld restarts on the new state", lost_why);
    }
    unpublished = 0;
    if (t->rc == DS_OK && store_publish != NULL) {
        store_publish_first(t);
    }
    if (t->rc != DS_OK) {
        ds_txn_abort(t->txn);
    } else if (ds_txn_commit(t->txn, &t->err) != DS_OK) {
        t->rc = DS_ERROR;
        snprintf(t->errbuf, t->errlen, "%s", t->err.msg);
    } else if (store_check_files() != 0) {
        t->rc = DS_ERROR;
        snprintf(t->errbuf, t->errlen, "%s while this change was written: "
                 "it may be missing from the new state; controld restarts "
                 "on it, then make the change again", lost_why);
    }
    t->txn = NULL;
    switch (t->rc) {
    case DS_OK:
        return STORE_OK;
    case DS_EINVAL:
        return STORE_ECONFLICT;
    default:
        return STORE_EFAIL;
    }
}
