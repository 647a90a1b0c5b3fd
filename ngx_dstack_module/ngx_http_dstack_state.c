/*
 * The worker's view of the LMDB state.
 *
 * Each worker opens the environment read-only after fork (LMDB handles
 * must not cross fork) and keeps one read transaction that is renewed
 * for each request and reset right after, so a request always sees the
 * latest commit and no reader slot pins old pages between requests.
 *
 * A timer, every dstack_watch_interval, clears reader slots left by dead
 * processes and checks that data.mdb is still the file we mapped: when it
 * was removed or replaced we close, answer 503 meanwhile, and reopen as
 * soon as a state appears again.  Opening happens only in the timer, so a
 * missing state costs a request nothing but a pointer test.
 *
 * Records are decoded once per commit, not once per request: a small
 * per-worker cache keeps decoded services (with their replica sets) and
 * tokens, tagged with the snapshot they were read from (the commit's id,
 * and how many times this worker opened the state).  Their strings point
 * into the map, which is safe exactly while the renewed transaction sees
 * that same commit: LMDB never rewrites the pages of the newest commit,
 * and the renewed transaction pins them.  Any commit changes the id, so
 * a new replica set or a revoked token is seen at the next request.
 */

#include "ngx_http_dstack_module.h"

#include <sys/stat.h>


#define NGX_HTTP_DSTACK_CACHE_SLOTS  64     /* each cache; a power of 2 */


typedef struct {
    uint64_t                snapshot;   /* 0: empty */
    int                     rc;         /* DS_OK or DS_NOTFOUND */
    int                     replicas_rc;
    ds_service_t            svc;
    ds_replica_set_t        set;
    size_t                  len;
    u_char                  name[DS_NAME_MAX];
} ngx_http_dstack_cached_service_t;

typedef struct {
    uint64_t                snapshot;
    int                     rc;
    ds_token_t              tok;
    u_char                  hash[DS_TOKEN_HASH_LEN];
} ngx_http_dstack_cached_token_t;


typedef struct {
    ds_state_t             *state;      /* NULL: unavailable */
    ds_txn_t               *txn;        /* reset between requests */
    char                   *dir;        /* NUL-terminated state path */
    char                   *data_file;  /* dir + "/data.mdb" */
    dev_t                   dev;        /* identity of the mapped file */
    ino_t                   ino;
    ngx_msec_t              interval;
    ngx_event_t             watch;
    ngx_connection_t        watch_conn; /* timers' debug log reads fd */
    ngx_uint_t              reported;   /* the current failure was logged */
    ngx_log_t              *log;
    uint64_t                opened;     /* times the state was opened */
    uint64_t                snapshot;   /* of the renewed transaction */
    ngx_http_dstack_cached_service_t  *services;
    ngx_http_dstack_cached_token_t    *tokens;
} ngx_http_dstack_state_t;


static ngx_http_dstack_state_t  ngx_http_dstack_st;


static void ngx_http_dstack_state_open(ngx_http_dstack_state_t *st);
static void ngx_http_dstack_state_close(ngx_http_dstack_state_t *st);
static void ngx_http_dstack_state_watch(ngx_event_t *ev);
static void ngx_http_dstack_state_fail(ngx_http_dstack_state_t *st,
    ngx_log_t *log, const char *what, const char *why);


ngx_int_t
ngx_http_dstack_state_init_worker(ngx_cycle_t *cycle)
{
    size_t                        len;
    ngx_http_dstack_state_t      *st = &ngx_http_dstack_st;
    ngx_http_dstack_main_conf_t  *dmcf;

    dmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_dstack_module);

    len = dmcf->state_path.len;

    st->dir = ngx_alloc(len + 1, cycle->log);
    st->data_file = ngx_alloc(len + sizeof("/data.mdb"), cycle->log);
    if (st->dir == NULL || st->data_file == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(st->dir, dmcf->state_path.data, len);
    st->dir[len] = '\0';
    ngx_sprintf((u_char *) st->data_file, "%V/data.mdb%Z",
                &dmcf->state_path);

    st->log = cycle->log;
    st->interval = dmcf->watch_interval;

    st->services = ngx_calloc(NGX_HTTP_DSTACK_CACHE_SLOTS
                              * sizeof(ngx_http_dstack_cached_service_t),
                              cycle->log);
    st->tokens = ngx_calloc(NGX_HTTP_DSTACK_CACHE_SLOTS
                            * sizeof(ngx_http_dstack_cached_token_t),
                            cycle->log);
    if (st->services == NULL || st->tokens == NULL) {
        return NGX_ERROR;
    }

    ngx_http_dstack_state_open(st);

    st->watch.handler = ngx_http_dstack_state_watch;
    st->watch.log = cycle->log;
    st->watch_conn.fd = (ngx_socket_t) -1;
    st->watch.data = &st->watch_conn;
    st->watch.cancelable = 1;   /* a pending check never delays exit */

    ngx_add_timer(&st->watch, st->interval);

    return NGX_OK;
}


void
ngx_http_dstack_state_exit_worker(ngx_cycle_t *cycle)
{
    ngx_http_dstack_state_close(&ngx_http_dstack_st);
}


ds_txn_t *
ngx_http_dstack_state_begin(ngx_log_t *log)
{
    ds_err_t                  err;
    ngx_http_dstack_state_t  *st = &ngx_http_dstack_st;

    if (st->txn == NULL) {
        ngx_http_dstack_state_fail(st, log, "is unavailable",
                                   "waiting for it to appear");
        return NULL;
    }

    if (ds_txn_renew(st->txn, &err) != DS_OK) {
        ngx_http_dstack_state_fail(st, log, "cannot be read", err.msg);
        return NULL;
    }

    /* commit ids stay far below 2^40; the open count makes a reopened
     * (maybe replaced) state a new snapshot whatever its ids */
    st->snapshot = (st->opened << 40) + ds_txn_id(st->txn);

    return st->txn;
}


/*
 * The service `name` and its replica set, decoded, from the cache when
 * this snapshot already read them.  DS_OK, DS_NOTFOUND or DS_ERROR (err
 * set); *set is NULL when the service has no replica set.
 */
ngx_int_t
ngx_http_dstack_state_service(ds_txn_t *txn, u_char *name, size_t len,
    const ds_service_t **svc, const ds_replica_set_t **set, ds_err_t *err)
{
    int                                rc;
    ngx_http_dstack_state_t           *st = &ngx_http_dstack_st;
    ngx_http_dstack_cached_service_t  *e;

    if (len == 0 || len > DS_NAME_MAX) {
        return DS_NOTFOUND;
    }

    e = &st->services[ngx_hash_key(name, len)
                      & (NGX_HTTP_DSTACK_CACHE_SLOTS - 1)];

    if (e->snapshot != st->snapshot || e->len != len
        || ngx_memcmp(e->name, name, len) != 0)
    {
        e->snapshot = 0;

        rc = ds_get_service(txn, (char *) name, len, &e->svc, err);

        if (rc == DS_OK) {
            e->replicas_rc = ds_get_replicas(txn, (char *) name, len,
                                             &e->set, err);
            if (e->replicas_rc != DS_OK && e->replicas_rc != DS_NOTFOUND) {
                return DS_ERROR;
            }

        } else if (rc != DS_NOTFOUND) {
            return rc;
        }

        e->rc = rc;
        e->len = len;
        ngx_memcpy(e->name, name, len);
        e->snapshot = st->snapshot;
    }

    if (e->rc != DS_OK) {
        return e->rc;
    }

    *svc = &e->svc;
    *set = (e->replicas_rc == DS_OK) ? &e->set : NULL;

    return DS_OK;
}


/* the token record of a SHA-256, decoded, from the cache likewise */
ngx_int_t
ngx_http_dstack_state_token(ds_txn_t *txn, const u_char *hash,
    const ds_token_t **tok, ds_err_t *err)
{
    int                              rc;
    ngx_uint_t                       i;
    ngx_http_dstack_state_t         *st = &ngx_http_dstack_st;
    ngx_http_dstack_cached_token_t  *e;

    i = ((ngx_uint_t) hash[0] << 8 | hash[1])
        & (NGX_HTTP_DSTACK_CACHE_SLOTS - 1);
    e = &st->tokens[i];

    if (e->snapshot != st->snapshot
        || !ds_ct_equal(e->hash, hash, DS_TOKEN_HASH_LEN))
    {
        e->snapshot = 0;

        rc = ds_get_token(txn, hash, &e->tok, err);
        if (rc != DS_OK && rc != DS_NOTFOUND) {
            return rc;
        }

        e->rc = rc;
        ngx_memcpy(e->hash, hash, DS_TOKEN_HASH_LEN);
        e->snapshot = st->snapshot;
    }

    if (e->rc != DS_OK) {
        return e->rc;
    }

    *tok = &e->tok;

    return DS_OK;
}


void
ngx_http_dstack_state_end(void)
{
    if (ngx_http_dstack_st.txn) {
        ds_txn_reset(ngx_http_dstack_st.txn);
    }
}


static void
ngx_http_dstack_state_open(ngx_http_dstack_state_t *st)
{
    ds_err_t     err;
    struct stat  sb;

    if (stat(st->data_file, &sb) == -1) {
        ngx_http_dstack_state_fail(st, st->log, "is unavailable",
                                   strerror(errno));
        return;
    }

    if (ds_state_open(&st->state, st->dir, DS_STATE_RDONLY, 0, &err)
        != DS_OK)
    {
        st->state = NULL;
        ngx_http_dstack_state_fail(st, st->log, "cannot be opened", err.msg);
        return;
    }

    if (ds_txn_begin(st->state, 0, &st->txn, &err) != DS_OK) {
        ngx_http_dstack_state_fail(st, st->log, "cannot be read", err.msg);
        ds_state_close(st->state);
        st->state = NULL;
        st->txn = NULL;
        return;
    }

    ds_txn_reset(st->txn);

    st->dev = sb.st_dev;
    st->ino = sb.st_ino;
    st->opened++;

    if (st->reported) {
        ngx_log_error(NGX_LOG_NOTICE, st->log, 0,
                      "dstack state \"%s\" is available again", st->dir);
        st->reported = 0;
    }
}


static void
ngx_http_dstack_state_close(ngx_http_dstack_state_t *st)
{
    if (st->txn) {
        ds_txn_abort(st->txn);
        st->txn = NULL;
    }

    if (st->state) {
        ds_state_close(st->state);
        st->state = NULL;
    }
}


static void
ngx_http_dstack_state_watch(ngx_event_t *ev)
{
    struct stat               sb;
    ngx_http_dstack_state_t  *st = &ngx_http_dstack_st;

    if (st->state) {
        if (stat(st->data_file, &sb) == -1
            || sb.st_ino != st->ino || sb.st_dev != st->dev)
        {
            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "dstack state \"%s\" was removed or replaced, "
                          "reopening", st->dir);
            ngx_http_dstack_state_close(st);
            st->reported = 1;

        } else {
            (void) ds_state_reader_check(st->state);
        }
    }

    if (st->state == NULL) {
        ngx_http_dstack_state_open(st);
    }

    if (!ngx_exiting && !ngx_quit) {
        ngx_add_timer(ev, st->interval);
    }
}


/* one [error] line per failure, not one per request */
static void
ngx_http_dstack_state_fail(ngx_http_dstack_state_t *st, ngx_log_t *log,
    const char *what, const char *why)
{
    if (st->reported) {
        return;
    }

    st->reported = 1;

    ngx_log_error(NGX_LOG_ERR, log, 0, "dstack state \"%s\" %s: %s",
                  st->dir, what, why);
}
