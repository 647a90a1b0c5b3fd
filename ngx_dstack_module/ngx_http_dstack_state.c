/*
 * The worker's view of the LMDB state.
 *
 * Each worker opens the environment read-only after fork (LMDB handles
 * must not cross fork) and keeps one read transaction that is renewed
 * for each request and reset right after, so a request always sees the
 * latest commit and no reader slot pins old pages between requests.
 *
 * A timer, every dstack_watch_interval, clears reader slots left by dead
 * processes and checks that data.mdb and lock.mdb are still the files we
 * opened (ds_state_check_files): when one was removed or replaced we
 * close, answer 503 meanwhile, and reopen as soon as a state appears
 * again.  Opening happens only in the timer, so a
 * missing state costs a request nothing but a pointer test.
 *
 * Records are read once per commit, not once per request.  A small
 * per-worker cache keeps services (decoded, with their metrics slot and
 * their ready replicas resolved; twice the slots of dstack_capacity) and
 * tokens, each a copy of its record
 * in worker memory, tagged with the snapshot it was read from: the
 * commit's id, and how many times this worker opened the state.  What a
 * request reads of a service is its entry's hot part, 128 bytes in the
 * table itself (ngx_http_dstack_service_t), on huge pages where the
 * system gives them: with traffic over 1,000 services a lookup misses
 * the cache once and the TLB seldom, where it used to miss a slot, then
 * a 1 KB entry and its record, each on a page of its own.
 *
 * A request first peeks at the id of the newest commit (two words of
 * the map, no transaction, no reader slot).  When everything it needs is
 * cached for that id it never touches LMDB; a miss renews the read
 * transaction, fills the entry and the transaction is reset at the end
 * of the access phase.  Any commit changes the id, so a new replica set
 * or a revoked token is seen at the next request.  Entries are replaced
 * only by a lookup, so what a lookup returned stays valid for the rest
 * of the access phase (one service and one token per request).
 */

#include "ngx_http_dstack_module.h"

#include <sys/mman.h>
#include <sys/stat.h>


/*
 * Services: twice the slots of dstack_capacity, so that the services a
 * worker serves stay cached however many there are.  A slot is the hot
 * part of its entry (128 bytes: 256 KB for the default capacity, 16 MB
 * at the largest); the cold part, a copy of the record, is made when a
 * service is first found in the slot (names that are no service cost no
 * memory).  Tokens: a fixed number of slots.
 */
#define NGX_HTTP_DSTACK_SERVICE_SLOTS_MIN  64       /* powers of 2 */
#define NGX_HTTP_DSTACK_SERVICE_SLOTS_MAX  (1 << 20)
#define NGX_HTTP_DSTACK_TOKEN_SLOTS        1024

/* the unit transparent huge pages come in, on x86-64 and arm64 with 4 KB
 * pages; elsewhere the hint is harmless */
#define NGX_HTTP_DSTACK_HUGE_PAGE          (2 * 1024 * 1024)


/* two lines, or the prefetcher loads a third */
_Static_assert(sizeof(ngx_http_dstack_service_t) == 128,
               "the hot part of a cached service is two cache lines");


/* the cold part of a cached service: the decoded record, which points
 * into its copy, and the buffer the replica set is read into; what the
 * hot part's svc points to, NULL in a slot never used */
typedef struct {
    ds_service_t            svc;        /* first: hot->svc is its address */
    ds_buf_t                record;     /* copy of the service record */
    ds_buf_t                replicas;   /* copy of its replica set */
} ngx_http_dstack_cold_service_t;

#define ngx_http_dstack_cold(e)                                               \
    ((ngx_http_dstack_cold_service_t *) (uintptr_t) (e)->svc)

/* a token, and for a user's token whether its user is a member of the
 * project it last called a service of, at the member snapshot */
typedef struct {
    uint64_t                snapshot;
    int                     rc;
    ds_token_t              tok;
    ds_buf_t                record;
    u_char                  hash[DS_TOKEN_HASH_LEN];
    uint64_t                member_snapshot;    /* 0: none known */
    int                     member_rc;          /* DS_OK, DS_NOTFOUND */
    uint8_t                 member_plen;
    u_char                  member_project[DS_NAME_MAX];
} ngx_http_dstack_cached_token_t;


typedef struct {
    ds_state_t             *state;      /* NULL: unavailable */
    ds_txn_t               *txn;        /* reset between requests */
    char                   *dir;        /* NUL-terminated state path */
    char                   *data_file;  /* dir + "/data.mdb" */
    ngx_msec_t              interval;
    ngx_event_t             watch;
    ngx_connection_t        watch_conn; /* timers' debug log reads fd */
    ngx_uint_t              reported;   /* the current failure was logged */
    ngx_log_t              *log;
    uint64_t                opened;     /* times the state was opened */
    uint64_t                snapshot;   /* what this request reads */
    ngx_uint_t              renewed;    /* txn renewed for this request */
    ngx_http_dstack_service_t         *services;    /* the slots */
    ngx_uint_t              service_mask;   /* slots - 1 */
    ngx_http_dstack_service_t          scratch;     /* a first lookup */
    ngx_http_dstack_cold_service_t     scratch_cold;
    ngx_http_dstack_cached_token_t    *tokens;
} ngx_http_dstack_state_t;


static ngx_http_dstack_state_t  ngx_http_dstack_st;


static void ngx_http_dstack_state_open(ngx_http_dstack_state_t *st);
static void ngx_http_dstack_state_close(ngx_http_dstack_state_t *st);
static void ngx_http_dstack_state_watch(ngx_event_t *ev);
static void ngx_http_dstack_state_fail(ngx_http_dstack_state_t *st,
    ngx_log_t *log, const char *what, const char *why);
static int ngx_http_dstack_state_renew(ngx_http_dstack_state_t *st,
    ds_err_t *err);
static ngx_int_t ngx_http_dstack_state_alloc_services(
    ngx_http_dstack_state_t *st, ngx_uint_t slots, ngx_log_t *log);
static ngx_int_t ngx_http_dstack_state_first_service(
    ngx_http_dstack_state_t *st, ngx_http_dstack_service_t *slot,
    u_char *name, size_t len, const ngx_http_dstack_service_t **svc,
    ds_err_t *err);
static int ngx_http_dstack_state_fill_service(ngx_http_dstack_state_t *st,
    ngx_http_dstack_service_t *e, ngx_http_dstack_cold_service_t *c,
    u_char *name, size_t len, ds_err_t *err);
static int ngx_http_dstack_state_ready(ngx_http_dstack_service_t *e,
    const ds_replica_set_t *set, ds_err_t *err);


ngx_int_t
ngx_http_dstack_state_init_worker(ngx_cycle_t *cycle)
{
    size_t                        len;
    ngx_uint_t                    n;
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

    for (n = NGX_HTTP_DSTACK_SERVICE_SLOTS_MIN;
         n < 2 * dmcf->max_services && n < NGX_HTTP_DSTACK_SERVICE_SLOTS_MAX;
         n <<= 1)
    {
        /* void */
    }

    st->service_mask = n - 1;
    st->tokens = ngx_calloc(NGX_HTTP_DSTACK_TOKEN_SLOTS
                            * sizeof(ngx_http_dstack_cached_token_t),
                            cycle->log);
    if (st->tokens == NULL
        || ngx_http_dstack_state_alloc_services(st, n, cycle->log) != NGX_OK)
    {
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


/*
 * The slots, in an anonymous mapping (pages are faulted in as slots are
 * used) that asks for transparent huge pages: 16,000 slots to a TLB
 * entry, which matters when each request goes to another service.  A
 * kernel that gives none leaves them in 4 KB pages.
 */
static ngx_int_t
ngx_http_dstack_state_alloc_services(ngx_http_dstack_state_t *st,
    ngx_uint_t slots, ngx_log_t *log)
{
    size_t   size;
    u_char  *p, *start;

    size = ngx_align(slots * sizeof(ngx_http_dstack_service_t),
                     NGX_HTTP_DSTACK_HUGE_PAGE);

    /* one huge page more, to align the start to one */
    p = mmap(NULL, size + NGX_HTTP_DSTACK_HUGE_PAGE, PROT_READ|PROT_WRITE,
             MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "dstack service cache: mmap(%uz) failed", size);
        return NGX_ERROR;
    }

    start = ngx_align_ptr(p, NGX_HTTP_DSTACK_HUGE_PAGE);

#ifdef MADV_HUGEPAGE
    /* a hint: where huge pages are off or scarce it fails or is ignored */
    (void) madvise(start, size, MADV_HUGEPAGE);
#endif

    st->services = (ngx_http_dstack_service_t *) start;

    return NGX_OK;
}


void
ngx_http_dstack_state_exit_worker(ngx_cycle_t *cycle)
{
    ngx_http_dstack_state_close(&ngx_http_dstack_st);
}


/* commit ids stay far below 2^40; the open count makes a reopened (maybe
 * replaced) state a new snapshot whatever its ids */
#define ngx_http_dstack_snapshot(st, id)  (((st)->opened << 40) + (id))


ngx_int_t
ngx_http_dstack_state_peek(ngx_log_t *log)
{
    uint64_t                  id;
    ngx_http_dstack_state_t  *st = &ngx_http_dstack_st;

    if (st->txn == NULL) {
        ngx_http_dstack_state_fail(st, log, "is unavailable",
                                   "waiting for it to appear");
        return NGX_DECLINED;
    }

    /* a transaction left renewed would read an older commit than the
     * id below says; every path ends it, this is the belt to that */
    ngx_http_dstack_state_end();

    id = ds_state_last_txnid(st->state);

    /* 0: no id could be read; a lookup renews and reads the real one */
    st->snapshot = id ? ngx_http_dstack_snapshot(st, id) : 0;

    return NGX_OK;
}


ds_txn_t *
ngx_http_dstack_state_begin(ngx_log_t *log)
{
    ds_err_t                  err;
    ngx_http_dstack_state_t  *st = &ngx_http_dstack_st;

    if (ngx_http_dstack_state_peek(log) != NGX_OK) {
        return NULL;
    }

    if (ngx_http_dstack_state_renew(st, &err) != DS_OK) {
        ngx_http_dstack_state_fail(st, log, "cannot be read", err.msg);
        return NULL;
    }

    return st->txn;
}


uint64_t
ngx_http_dstack_state_snapshot(void)
{
    return ngx_http_dstack_st.snapshot;
}


/* the read transaction, renewed once per request, and what it sees */
static int
ngx_http_dstack_state_renew(ngx_http_dstack_state_t *st, ds_err_t *err)
{
    if (st->txn == NULL) {
        ngx_cpystrn((u_char *) err->msg, (u_char *) "the state is not open",
                    sizeof(err->msg));
        return DS_ERROR;
    }

    if (!st->renewed) {
        if (ds_txn_renew(st->txn, err) != DS_OK) {
            return DS_ERROR;
        }

        st->renewed = 1;
        st->snapshot = ngx_http_dstack_snapshot(st, ds_txn_id(st->txn));
    }

    return DS_OK;
}


/*
 * The service `name` as the access phase uses it, from the cache when
 * this snapshot already read it.  NGX_OK, NGX_DECLINED (no such service)
 * or NGX_ERROR (err set); the DS_* codes of the cache stay in this file.
 */
ngx_int_t
ngx_http_dstack_state_service(u_char *name, size_t len,
    const ngx_http_dstack_service_t **svc, ds_err_t *err)
{
    int                         rc;
    ngx_http_dstack_state_t    *st = &ngx_http_dstack_st;
    ngx_http_dstack_service_t  *e;

    if (len == 0 || len > DS_NAME_MAX) {
        return NGX_DECLINED;
    }

    e = &st->services[ngx_hash_key(name, len) & st->service_mask];

    if (e->svc == NULL) {
        return ngx_http_dstack_state_first_service(st, e, name, len, svc,
                                                   err);
    }

    if (e->snapshot == 0 || e->snapshot != st->snapshot || e->len != len
        || ngx_memcmp(e->name, name, len) != 0)
    {
        rc = ngx_http_dstack_state_fill_service(st, e, ngx_http_dstack_cold(e),
                                                name, len, err);
        if (rc != DS_OK) {
            return NGX_ERROR;
        }
    }

    if (!e->found) {
        return NGX_DECLINED;
    }

    /*
     * What admission and the balancer will touch, asked for now: with
     * traffic over many services these are cache misses, and auth and
     * the limits run while they load.
     */

    if (e->ready) {
        __builtin_prefetch(e->ready, 1);
    }

    ngx_http_dstack_metrics_prefetch(e->metrics);

    *svc = e;

    return NGX_OK;
}


/*
 * A slot used for the first time: the service is read into the scratch
 * entry, and gets an entry of its own only when it exists, so that
 * requests for names that are no service (scanners) allocate nothing.
 * The codes of ngx_http_dstack_state_service().
 */
static ngx_int_t
ngx_http_dstack_state_first_service(ngx_http_dstack_state_t *st,
    ngx_http_dstack_service_t *slot, u_char *name, size_t len,
    const ngx_http_dstack_service_t **svc, ds_err_t *err)
{
    int                              rc;
    ngx_http_dstack_service_t       *e = &st->scratch;
    ngx_http_dstack_cold_service_t  *c;

    rc = ngx_http_dstack_state_fill_service(st, e, &st->scratch_cold, name,
                                            len, err);
    if (rc != DS_OK) {
        return NGX_ERROR;
    }

    if (!e->found) {
        return NGX_DECLINED;
    }

    c = ngx_alloc(sizeof(ngx_http_dstack_cold_service_t), ngx_cycle->log);
    if (c == NULL) {
        *svc = e;   /* valid until the next first use */
        return NGX_OK;
    }

    /* the entry, its buffers and its replicas move to the slot; the
     * decoded record points into the record's buffer, which moves as a
     * pointer */
    *c = st->scratch_cold;
    ngx_memzero(&st->scratch_cold, sizeof(ngx_http_dstack_cold_service_t));

    *slot = *e;
    slot->svc = &c->svc;
    ngx_memzero(e, sizeof(ngx_http_dstack_service_t));

    *svc = slot;

    return NGX_OK;
}


static int
ngx_http_dstack_state_fill_service(ngx_http_dstack_state_t *st,
    ngx_http_dstack_service_t *e, ngx_http_dstack_cold_service_t *c,
    u_char *name, size_t len, ds_err_t *err)
{
    int                rc;
    ds_replica_set_t   set;

    e->snapshot = 0;

    if (ngx_http_dstack_state_renew(st, err) != DS_OK) {
        return DS_ERROR;
    }

    rc = ds_copy_service(st->txn, (char *) name, len, &c->svc, &c->record,
                         err);

    if (rc == DS_OK) {
        rc = ds_copy_replicas(st->txn, (char *) name, len, &set,
                              &c->replicas, err);

        if (rc == DS_NOTFOUND) {
            set.count = 0;

        } else if (rc != DS_OK) {
            return rc;
        }

        if (ngx_http_dstack_state_ready(e, &set, err) != DS_OK) {
            return DS_ERROR;
        }

        e->metrics = ngx_http_dstack_service_metrics(c->svc.slot,
                                                     c->svc.uid);
        e->uid = c->svc.uid;
        e->max_body_size = c->svc.max_body_size;
        e->read_timeout_ms = c->svc.read_timeout_ms;
        e->connect_timeout_ms = c->svc.connect_timeout_ms;
        e->flags = c->svc.flags;
        e->n_rate_limits = (uint8_t) ngx_min(c->svc.n_rate_limits,
                                             DS_RATE_LIMITS_MAX);
        e->found = 1;

    } else if (rc != DS_NOTFOUND) {
        return rc;

    } else {
        if (e->ready) {
            ngx_http_dstack_peers_unref(e->ready);
            e->ready = NULL;
        }

        e->found = 0;
    }

    e->svc = &c->svc;
    e->len = (uint8_t) len;
    ngx_memcpy(e->name, name, len);
    e->snapshot = st->snapshot;

    return DS_OK;
}


/* the ready replicas of a set, with their metrics slots: what requests
 * take a reference to; draining ones get no new requests */
static int
ngx_http_dstack_state_ready(ngx_http_dstack_service_t *e,
    const ds_replica_set_t *set, ds_err_t *err)
{
    uint32_t                  i, n;
    ds_replica_t              rep;
    ngx_http_dstack_peer_t   *peer;
    ngx_http_dstack_peers_t  *ready;

    n = 0;

    for (i = 0; i < set->count; i++) {
        ds_replica_at(set, i, &rep);
        n += (rep.state == DS_REPLICA_READY);
    }

    /* the previous block, unless requests still use it or it is small */
    ready = e->ready;
    e->ready = NULL;

    if (ready && (ready->refs > 1 || ready->cap < n || n == 0)) {
        ngx_http_dstack_peers_unref(ready);
        ready = NULL;
    }

    if (n == 0) {
        return DS_OK;
    }

    if (ready == NULL) {
        ready = ngx_alloc(offsetof(ngx_http_dstack_peers_t, peer)
                          + n * sizeof(ngx_http_dstack_peer_t),
                          ngx_cycle->log);
        if (ready == NULL) {
            ngx_cpystrn((u_char *) err->msg,
                        (u_char *) "out of memory for the replicas of a "
                        "service", sizeof(err->msg));
            return DS_ERROR;
        }

        ready->refs = 1;    /* the cache's */
        ready->cap = n;
    }

    ready->n = n;
    peer = ready->peer;

    for (i = 0; i < set->count; i++) {
        ds_replica_at(set, i, &rep);

        if (rep.state != DS_REPLICA_READY) {
            continue;
        }

        peer->metrics = ngx_http_dstack_replica_metrics(rep.slot, rep.uid);
        peer->uid = rep.uid;
        ngx_memcpy(peer->addr, rep.addr, sizeof(peer->addr));
        peer->port = rep.port;
        peer->family = rep.family;
        peer++;
    }

    e->ready = ready;

    return DS_OK;
}


ngx_http_dstack_peers_t *
ngx_http_dstack_peers_ref(ngx_http_dstack_peers_t *peers)
{
    ngx_uint_t  i;

    peers->refs++;

    /* the balancer reads their in-flight counts later in the request */

    for (i = 0; i < peers->n && i < 8; i++) {
        if (peers->peer[i].metrics) {
            __builtin_prefetch(peers->peer[i].metrics, 1);
        }
    }

    return peers;
}


void
ngx_http_dstack_peers_unref(ngx_http_dstack_peers_t *peers)
{
    if (--peers->refs == 0) {
        ngx_free(peers);
    }
}


/* the token record of a SHA-256, from the cache likewise; the same
 * codes */
ngx_int_t
ngx_http_dstack_state_token(const u_char *hash, const ds_token_t **tok,
    ds_err_t *err)
{
    int                              rc;
    ngx_uint_t                       i;
    ngx_http_dstack_state_t         *st = &ngx_http_dstack_st;
    ngx_http_dstack_cached_token_t  *e;

    i = ((ngx_uint_t) hash[0] << 8 | hash[1])
        & (NGX_HTTP_DSTACK_TOKEN_SLOTS - 1);
    e = &st->tokens[i];

    if (e->snapshot == 0 || e->snapshot != st->snapshot
        || !ds_ct_equal(e->hash, hash, DS_TOKEN_HASH_LEN))
    {
        e->snapshot = 0;
        e->member_snapshot = 0;

        if (ngx_http_dstack_state_renew(st, err) != DS_OK) {
            return NGX_ERROR;
        }

        rc = ds_copy_token(st->txn, hash, &e->tok, &e->record, err);
        if (rc != DS_OK && rc != DS_NOTFOUND) {
            return NGX_ERROR;
        }

        e->rc = rc;
        ngx_memcpy(e->hash, hash, DS_TOKEN_HASH_LEN);
        e->snapshot = st->snapshot;
    }

    if (e->rc != DS_OK) {
        return NGX_DECLINED;
    }

    *tok = &e->tok;

    return NGX_OK;
}


/*
 * Whether the user of a user token is a member of the project (any
 * role): the token's cache entry keeps the answer for the snapshot, so
 * that a user calling the services of one project reads the membership
 * once per commit, and a removal or the user's deletion is seen at the
 * first request after its commit.  tok is what state_token() returned
 * in this request.  NGX_OK, NGX_DECLINED (not a member) or NGX_ERROR.
 */
ngx_int_t
ngx_http_dstack_state_member(const ds_token_t *tok, const u_char *project,
    size_t plen, ds_err_t *err)
{
    int                              rc;
    ngx_uint_t                       i;
    ds_member_t                      m;
    ngx_http_dstack_state_t         *st = &ngx_http_dstack_st;
    ngx_http_dstack_cached_token_t  *e;

    i = ((ngx_uint_t) tok->hash[0] << 8 | tok->hash[1])
        & (NGX_HTTP_DSTACK_TOKEN_SLOTS - 1);
    e = &st->tokens[i];

    /* the entry the token came from, still of this snapshot */
    if (&e->tok != tok || e->snapshot == 0 || e->snapshot != st->snapshot
        || plen > DS_NAME_MAX)
    {
        e = NULL;

    } else if (e->member_snapshot == e->snapshot && e->member_plen == plen
               && ngx_memcmp(e->member_project, project, plen) == 0)
    {
        return e->member_rc == DS_OK ? NGX_OK : NGX_DECLINED;
    }

    if (ngx_http_dstack_state_renew(st, err) != DS_OK) {
        return NGX_ERROR;
    }

    rc = ds_get_member(st->txn, (const char *) project, plen,
                       tok->user.data, tok->user.len, &m, err);
    if (rc != DS_OK && rc != DS_NOTFOUND) {
        return NGX_ERROR;
    }

    if (e != NULL) {
        e->member_snapshot = e->snapshot;
        e->member_rc = rc;
        e->member_plen = (uint8_t) plen;
        ngx_memcpy(e->member_project, project, plen);
    }

    return rc == DS_OK ? NGX_OK : NGX_DECLINED;
}


void
ngx_http_dstack_state_end(void)
{
    ngx_http_dstack_state_t  *st = &ngx_http_dstack_st;

    if (st->renewed) {
        ds_txn_reset(st->txn);
        st->renewed = 0;
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

    if (ds_state_open(&st->state, st->dir, DS_STATE_RDONLY | DS_STATE_NOWAIT,
                      0, &err)
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
    ds_err_t                  err;
    ngx_http_dstack_state_t  *st = &ngx_http_dstack_st;

    /* data.mdb, and lock.mdb too: a worker on another lock file than
     * controld's is invisible to the writer and picks stale snapshots */
    if (st->state) {
        if (ds_state_check_files(st->state, &err) != DS_OK) {
            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "dstack state \"%s\" was removed or replaced "
                          "(%s), reopening", st->dir, err.msg);
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
