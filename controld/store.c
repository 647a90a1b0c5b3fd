/*
 * The LMDB side of controld: the only writer of the shared state.
 *
 * Every write transaction begins here, from the main loop.  A change that
 * belongs together is one transaction: an apply writes the service record
 * and the run document together; a flush writes all changed run documents
 * and replica sets together, so a worker sees a rolling-update step (new
 * replica ready, old one draining) as one change.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "controld.h"


ds_state_t  *state;


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


static int
store_load_one(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    struct run  *r;
    char         err[256];

    (void) arg;

    r = run_from_doc(val->data, val->len, err, sizeof(err));
    if (r == NULL) {
        log_warnx("run \"%.*s\": cannot load its document: %s",
                  (int) key->len, key->data, err);
        return 0;
    }
    TAILQ_INSERT_TAIL(&runs, r, entry);
    return 0;
}


int
store_load_runs(void)
{
    ds_txn_t  *txn;
    ds_err_t   err;
    int        rc;

    if (ds_txn_begin(state, 0, &txn, &err) != DS_OK) {
        log_warnx("%s", err.msg);
        return -1;
    }
    rc = ds_foreach_run(txn, store_load_one, NULL, &err);
    ds_txn_abort(txn);
    if (rc != DS_OK) {
        log_warnx("cannot read runs: %s", err.msg);
        return -1;
    }
    return 0;
}


static int
store_put_doc(ds_txn_t *txn, struct run *r, ds_err_t *err)
{
    cJSON  *doc;
    char   *text;
    int     rc;

    doc = run_to_doc(r);
    text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (text == NULL) {
        snprintf(err->msg, sizeof(err->msg), "out of memory");
        return DS_ERROR;
    }
    rc = ds_put_run(txn, r->name, strlen(r->name), text, strlen(text), err);
    free(text);
    return rc;
}


/* the replica set the gateway should see: ready and draining replicas */
static int
store_put_set(ds_txn_t *txn, struct run *r, ds_err_t *err)
{
    struct replica  *rep;
    ds_replica_t     set[256];
    uint32_t         n = 0;

    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (!rep->ready && !rep->draining) {
            continue;
        }
        if (n == sizeof(set) / sizeof(set[0])) {
            break;
        }
        memset(&set[n], 0, sizeof(ds_replica_t));
        if (ds_replica_parse_addr(&set[n], rep->addr, strlen(rep->addr))
            != DS_OK)
        {
            log_warnx("run \"%s\" replica %d: bad address \"%s\"", r->name,
                      rep->num, rep->addr);
            continue;
        }
        set[n].version = (uint32_t) rep->version;
        set[n].weight = 1;
        set[n].state = rep->ready ? DS_REPLICA_READY : DS_REPLICA_DRAINING;
        n++;
    }

    return ds_put_replicas(txn, r->name, strlen(r->name), set, n, err);
}


/* a write transaction of its own; errbuf gets why it could not begin */
static int
store_begin(ds_txn_t **txn, char *errbuf, size_t errlen)
{
    ds_err_t  err;

    if (ds_txn_begin(state, 1, txn, &err) != DS_OK) {
        snprintf(errbuf, errlen, "%s", err.msg);
        return DS_ERROR;
    }
    return DS_OK;
}


/* a write transaction's end: committed when rc is DS_OK, else aborted;
 * errbuf gets the reason of a failure */
static int
store_end(ds_txn_t *txn, int rc, ds_err_t *err, char *errbuf, size_t errlen)
{
    if (rc != DS_OK) {
        ds_txn_abort(txn);
    } else if (ds_txn_commit(txn, err) != DS_OK) {
        rc = DS_ERROR;
    }
    if (rc != DS_OK) {
        snprintf(errbuf, errlen, "%s", err->msg);
    }
    return rc;
}


/*
 * Apply: the service record and the run document in one transaction, so
 * that a model name taken by another service leaves nothing behind.
 */
int
store_put_service(struct run *r, char *errbuf, size_t errlen)
{
    ds_txn_t  *txn;
    ds_err_t   err;
    int        rc;

    if (store_begin(&txn, errbuf, errlen) != DS_OK) {
        return DS_ERROR;
    }

    rc = ds_put_service(txn, &r->svc, &err);
    if (rc == DS_OK) {
        rc = store_put_doc(txn, r, &err);
    }
    if (rc == DS_OK && r->publish) {
        rc = store_put_set(txn, r, &err);
    }
    rc = store_end(txn, rc, &err, errbuf, errlen);
    if (rc != DS_OK) {
        return rc;
    }

    r->service_put = 1;
    r->dirty = 0;
    r->publish = 0;
    return DS_OK;
}


/* a certificate (tls.c), in a transaction of its own */
int
store_put_cert(ds_cert_t *c, char *errbuf, size_t errlen)
{
    ds_txn_t  *txn;
    ds_err_t   err;
    int        rc;

    if (store_begin(&txn, errbuf, errlen) != DS_OK) {
        return DS_ERROR;
    }
    rc = ds_put_cert(txn, c, &err);
    return store_end(txn, rc, &err, errbuf, errlen);
}


int
store_flush(void)
{
    static int64_t  retry_ms;
    struct run     *r;
    ds_txn_t       *txn;
    ds_err_t        err;
    int             rc, any = 0;

    TAILQ_FOREACH(r, &runs, entry) {
        if (r->dirty || r->publish
            || (r->finished && r->service_put))
        {
            any = 1;
            break;
        }
    }
    if (!any) {
        return 0;
    }
    /* after a failure (a full disk, a full map): again in a second, not
     * in every turn of the loop */
    if (retry_ms != 0 && now_ms() < retry_ms) {
        return -1;
    }
    retry_ms = now_ms() + 1000;

    if (ds_txn_begin(state, 1, &txn, &err) != DS_OK) {
        log_warnx("cannot write state: %s", err.msg);
        return -1;
    }

    rc = DS_OK;
    TAILQ_FOREACH(r, &runs, entry) {
        if (r->finished && r->service_put) {
            /* removes the replica set and frees the metric slots too */
            rc = ds_del_service(txn, r->name, strlen(r->name), &err);
            if (rc == DS_NOTFOUND) {
                rc = DS_OK;
            }
        } else if (r->publish && r->service_put) {
            rc = store_put_set(txn, r, &err);
        }
        if (rc == DS_OK && r->dirty) {
            rc = store_put_doc(txn, r, &err);
        }
        if (rc != DS_OK) {
            log_warnx("run \"%s\": cannot write state: %s", r->name, err.msg);
            ds_txn_abort(txn);
            return -1;
        }
    }

    if (ds_txn_commit(txn, &err) != DS_OK) {
        log_warnx("cannot commit state: %s", err.msg);
        return -1;
    }

    TAILQ_FOREACH(r, &runs, entry) {
        if (r->finished && r->service_put) {
            r->service_put = 0;
        }
        r->dirty = 0;
        r->publish = 0;
    }
    retry_ms = 0;
    return 0;
}
