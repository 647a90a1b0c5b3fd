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
 */

#include "ngx_http_dstack_module.h"

#include <sys/stat.h>


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

    return st->txn;
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
