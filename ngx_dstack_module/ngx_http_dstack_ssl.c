/*
 * TLS for the gateway: certificates from state, and the redirect of
 * plain HTTP to HTTPS.
 *
 *   server {
 *       listen 443 ssl;
 *       ssl_certificate     /var/lib/dstack/state/tls/gateway.crt;
 *       ssl_certificate_key /var/lib/dstack/state/tls/gateway.key;
 *       dstack_ssl on;
 *       ...
 *   }
 *
 * "dstack_ssl on" installs a certificate callback on the server's SSL_CTX.
 * Per handshake it looks the SNI name up in the "certs" database (exact
 * name first, then "*.<parent>") and, when there is a record, serves it
 * instead of the static ssl_certificate, which stays the answer for
 * clients without SNI and names without a record.  A new or renewed
 * certificate is therefore served at the next handshake, without a
 * reload.
 *
 * PEM parsing costs more than the handshake's own signature, so each
 * worker keeps the parsed certificate, chain and key per host name and
 * reparses only when the record's uid changed (every put gets a new
 * uid).  The per-handshake cost is then one LMDB lookup (a renewed read
 * transaction) and SSL_use_cert_and_key on parsed objects.  The cache is
 * dropped whole when it reaches NGX_HTTP_DSTACK_SSL_CACHE_MAX names.
 *
 * "dstack_https_port 443" on the plain-HTTP server says that the gateway
 * serves HTTPS on that port: services with "https: true" or "auto" then
 * answer plain requests with 308 to https://, except the ACME challenge
 * path.  Without it nothing is redirected (a gateway without TLS).
 */

#include "ngx_http_dstack_module.h"


#define NGX_HTTP_DSTACK_SSL_CACHE_MAX   4096


typedef struct {
    ngx_flag_t                  ssl;            /* dstack_ssl */
    ngx_int_t                   https_port;     /* dstack_https_port */
} ngx_http_dstack_ssl_srv_conf_t;


#if (NGX_HTTP_SSL)

typedef struct {
    ngx_str_node_t              sn;             /* key: host name */
    uint64_t                    uid;
    X509                       *cert;
    STACK_OF(X509)             *chain;
    EVP_PKEY                   *key;
} ngx_http_dstack_ssl_entry_t;


typedef struct {
    ngx_rbtree_t                tree;
    ngx_rbtree_node_t           sentinel;
    ngx_uint_t                  count;
    ngx_uint_t                  ready;
} ngx_http_dstack_ssl_cache_t;


static ngx_http_dstack_ssl_cache_t  ngx_http_dstack_ssl_cache;


static int ngx_http_dstack_ssl_cert_cb(ngx_ssl_conn_t *ssl_conn, void *arg);
static ngx_http_dstack_ssl_entry_t *ngx_http_dstack_ssl_load(
    ngx_connection_t *c, ngx_str_t *host, const ds_cert_t *rec,
    ngx_http_dstack_ssl_entry_t *e);
static void ngx_http_dstack_ssl_entry_free(ngx_http_dstack_ssl_entry_t *e);
static void ngx_http_dstack_ssl_cache_clear(void);

#endif


static ngx_int_t ngx_http_dstack_ssl_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_dstack_ssl_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_ssl_merge_srv_conf(ngx_conf_t *cf,
    void *parent, void *child);
static void ngx_http_dstack_ssl_exit_process(ngx_cycle_t *cycle);


static ngx_conf_num_bounds_t  ngx_http_dstack_port_bounds = {
    ngx_conf_check_num_bounds, 1, 65535
};


static ngx_command_t  ngx_http_dstack_ssl_commands[] = {

    { ngx_string("dstack_ssl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_dstack_ssl_srv_conf_t, ssl),
      NULL },

    { ngx_string("dstack_https_port"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_dstack_ssl_srv_conf_t, https_port),
      &ngx_http_dstack_port_bounds },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dstack_ssl_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_dstack_ssl_postconfiguration, /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    ngx_http_dstack_ssl_create_srv_conf,   /* create server configuration */
    ngx_http_dstack_ssl_merge_srv_conf,    /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_dstack_ssl_module = {
    NGX_MODULE_V1,
    &ngx_http_dstack_ssl_module_ctx,       /* module context */
    ngx_http_dstack_ssl_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_dstack_ssl_exit_process,      /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_dstack_ssl_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_ssl_srv_conf_t  *sscf;

    sscf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_ssl_srv_conf_t));
    if (sscf == NULL) {
        return NULL;
    }

    sscf->ssl = NGX_CONF_UNSET;
    sscf->https_port = NGX_CONF_UNSET;

    return sscf;
}


static char *
ngx_http_dstack_ssl_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_dstack_ssl_srv_conf_t  *prev = parent;
    ngx_http_dstack_ssl_srv_conf_t  *conf = child;

    ngx_conf_merge_value(conf->ssl, prev->ssl, 0);
    ngx_conf_merge_value(conf->https_port, prev->https_port, 0);

    return NGX_CONF_OK;
}


/*
 * Runs after every server's SSL_CTX was made (ngx_http_ssl_module merges
 * server configurations before any postconfiguration).
 */
static ngx_int_t
ngx_http_dstack_ssl_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                        i;
    ngx_http_core_srv_conf_t        **cscfp;
    ngx_http_core_main_conf_t        *cmcf;
    ngx_http_dstack_main_conf_t      *dmcf;
    ngx_http_dstack_ssl_srv_conf_t   *dscf;
#if (NGX_HTTP_SSL)
    ngx_http_ssl_srv_conf_t          *sslcf;
#endif

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    dmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dstack_module);
    cscfp = cmcf->servers.elts;

    for (i = 0; i < cmcf->servers.nelts; i++) {
        dscf = cscfp[i]->ctx->srv_conf[ngx_http_dstack_ssl_module.ctx_index];

        if (!dscf->ssl) {
            continue;
        }

        if (dmcf->state_path.len == 0) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"dstack_ssl on\" needs \"dstack_state\" in the "
                          "http block");
            return NGX_ERROR;
        }

#if (NGX_HTTP_SSL)
        sslcf = cscfp[i]->ctx->srv_conf[ngx_http_ssl_module.ctx_index];

        if (sslcf->ssl.ctx == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"dstack_ssl on\" in server \"%V\" needs "
                          "\"ssl_certificate\" (the answer without SNI)",
                          &cscfp[i]->server_name);
            return NGX_ERROR;
        }

        SSL_CTX_set_cert_cb(sslcf->ssl.ctx, ngx_http_dstack_ssl_cert_cb,
                            NULL);
#else
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"dstack_ssl on\" needs nginx built with "
                      "ngx_http_ssl_module");
        return NGX_ERROR;
#endif
    }

    return NGX_OK;
}


static void
ngx_http_dstack_ssl_exit_process(ngx_cycle_t *cycle)
{
#if (NGX_HTTP_SSL)
    ngx_http_dstack_ssl_cache_clear();
#endif
}


/* ---- the redirect ------------------------------------------------------- */

ngx_int_t
ngx_http_dstack_https_redirect(ngx_http_request_t *r, const ds_service_t *svc)
{
    u_char                          *p;
    size_t                           len;
    ngx_table_elt_t                 *h;
    ngx_http_dstack_ssl_srv_conf_t  *dscf;

    static ngx_str_t  acme = ngx_string("/.well-known/acme-challenge/");

    if (!(svc->flags & (DS_SERVICE_HTTPS | DS_SERVICE_HTTPS_AUTO))) {
        return NGX_DECLINED;
    }

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        return NGX_DECLINED;
    }
#endif

    dscf = ngx_http_get_module_srv_conf(r, ngx_http_dstack_ssl_module);

    if (dscf->https_port == 0) {
        return NGX_DECLINED;    /* this gateway has no TLS */
    }

    if (r->uri.len >= acme.len
        && ngx_strncmp(r->uri.data, acme.data, acme.len) == 0)
    {
        return NGX_DECLINED;
    }

    len = sizeof("https://:65535") - 1 + r->headers_in.server.len
          + r->unparsed_uri.len;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Location");
    h->value.data = p;

    p = ngx_sprintf(p, "https://%V", &r->headers_in.server);
    if (dscf->https_port != 443) {
        p = ngx_sprintf(p, ":%i", dscf->https_port);
    }
    p = ngx_cpymem(p, r->unparsed_uri.data, r->unparsed_uri.len);

    h->value.len = p - h->value.data;
    r->headers_out.location = h;

    /* 308 keeps the method and the body, unlike 301 */
    return NGX_HTTP_PERMANENT_REDIRECT;
}


#if (NGX_HTTP_SSL)

/* ---- certificates from state -------------------------------------------- */

/*
 * Called by OpenSSL while it processes the ClientHello, after the SNI
 * callback chose the server.  Returns 1 in every case but an allocation
 * failure: a missing or broken record leaves the static certificate.
 */
static int
ngx_http_dstack_ssl_cert_cb(ngx_ssl_conn_t *ssl_conn, void *arg)
{
    int                           rc;
    u_char                        buf[DS_HOST_MAX + 2], *dot;
    size_t                        len, i;
    uint32_t                      hash;
    ds_err_t                      err;
    ds_txn_t                     *txn;
    ds_cert_t                     rec;
    ngx_str_t                     host;
    const char                   *name;
    ngx_connection_t             *c;
    ngx_http_dstack_ssl_entry_t  *e;

    name = SSL_get_servername(ssl_conn, TLSEXT_NAMETYPE_host_name);
    if (name == NULL) {
        return 1;
    }

    c = ngx_ssl_get_connection(ssl_conn);

    len = ngx_strlen(name);
    if (len == 0 || len > DS_HOST_MAX) {
        return 1;
    }

    for (i = 0; i < len; i++) {
        buf[i] = ngx_tolower(name[i]);
    }
    if (buf[len - 1] == '.') {
        len--;
    }

    host.data = buf;
    host.len = len;

    txn = ngx_http_dstack_state_begin(c->log);
    if (txn == NULL) {
        return 1;
    }

    rc = ds_get_cert(txn, (char *) host.data, host.len, &rec, &err);

    if (rc == DS_NOTFOUND) {
        /* "*.<parent>": buf has room for the '*' in front of the dot */
        dot = ngx_strlchr(buf, buf + len, '.');
        if (dot != NULL && dot > buf && dot + 1 < buf + len) {
            *(dot - 1) = '*';
            host.data = dot - 1;
            host.len = buf + len - host.data;
            rc = ds_get_cert(txn, (char *) host.data, host.len, &rec, &err);
        }
    }

    if (rc != DS_OK) {
        ngx_http_dstack_state_end();

        if (rc != DS_NOTFOUND) {
            ngx_log_error(NGX_LOG_ERR, c->log, 0,
                          "dstack certificate for \"%s\": %s", name,
                          err.msg);
        }

        return 1;
    }

    if (!ngx_http_dstack_ssl_cache.ready) {
        ngx_rbtree_init(&ngx_http_dstack_ssl_cache.tree,
                        &ngx_http_dstack_ssl_cache.sentinel,
                        ngx_str_rbtree_insert_value);
        ngx_http_dstack_ssl_cache.ready = 1;
    }

    hash = ngx_crc32_long(host.data, host.len);
    e = (ngx_http_dstack_ssl_entry_t *) ngx_str_rbtree_lookup(
            &ngx_http_dstack_ssl_cache.tree, &host, hash);

    if (e == NULL || e->uid != rec.uid) {
        /* rec points into the map: parse before the transaction ends */
        e = ngx_http_dstack_ssl_load(c, &host, &rec, e);
    }

    ngx_http_dstack_state_end();

    if (e == NULL) {
        return 1;
    }

    if (SSL_use_cert_and_key(ssl_conn, e->cert, e->key, e->chain, 1) != 1) {
        ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                      "dstack certificate for \"%V\": "
                      "SSL_use_cert_and_key() failed", &e->sn.str);
        ERR_clear_error();
    }

    return 1;
}


/*
 * Parses a record into the entry e (an old one to replace, or NULL for a
 * new one).  NULL when the record does not parse: the entry is then
 * gone, and the next handshake tries again.
 */
static ngx_http_dstack_ssl_entry_t *
ngx_http_dstack_ssl_load(ngx_connection_t *c, ngx_str_t *host,
    const ds_cert_t *rec, ngx_http_dstack_ssl_entry_t *e)
{
    BIO                          *bio;
    X509                         *x;
    EVP_PKEY                     *key;
    STACK_OF(X509)               *chain;
    ngx_http_dstack_ssl_cache_t  *cache = &ngx_http_dstack_ssl_cache;

    x = NULL;
    key = NULL;
    chain = NULL;

    bio = BIO_new_mem_buf(rec->cert.data, (int) rec->cert.len);
    if (bio == NULL) {
        goto failed;
    }

    x = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
    if (x == NULL) {
        BIO_free(bio);
        goto failed;
    }

    chain = sk_X509_new_null();
    if (chain == NULL) {
        BIO_free(bio);
        goto failed;
    }

    for ( ;; ) {
        X509  *ca;

        ca = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (ca == NULL) {
            break;
        }

        if (!sk_X509_push(chain, ca)) {
            X509_free(ca);
            BIO_free(bio);
            goto failed;
        }
    }

    ERR_clear_error();      /* the end of the PEM data */
    BIO_free(bio);

    bio = BIO_new_mem_buf(rec->key.data, (int) rec->key.len);
    if (bio == NULL) {
        goto failed;
    }

    key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (key == NULL) {
        goto failed;
    }

    if (e != NULL) {
        X509_free(e->cert);
        sk_X509_pop_free(e->chain, X509_free);
        EVP_PKEY_free(e->key);

    } else {
        if (cache->count >= NGX_HTTP_DSTACK_SSL_CACHE_MAX) {
            ngx_http_dstack_ssl_cache_clear();
        }

        e = ngx_alloc(sizeof(ngx_http_dstack_ssl_entry_t) + host->len,
                      c->log);
        if (e == NULL) {
            goto failed;
        }

        e->sn.str.data = (u_char *) (e + 1);
        e->sn.str.len = host->len;
        ngx_memcpy(e->sn.str.data, host->data, host->len);
        e->sn.node.key = ngx_crc32_long(host->data, host->len);
        ngx_rbtree_insert(&cache->tree, &e->sn.node);
        cache->count++;
    }

    e->uid = rec->uid;
    e->cert = x;
    e->chain = chain;
    e->key = key;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "dstack certificate for \"%V\" loaded, uid %uL",
                   host, rec->uid);

    return e;

failed:

    ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                  "dstack certificate for \"%V\" (uid %uL) cannot be "
                  "parsed, serving the default", host, rec->uid);

    X509_free(x);
    if (chain) {
        sk_X509_pop_free(chain, X509_free);
    }
    EVP_PKEY_free(key);

    if (e != NULL) {
        ngx_rbtree_delete(&cache->tree, &e->sn.node);
        cache->count--;
        ngx_http_dstack_ssl_entry_free(e);
    }

    return NULL;
}


static void
ngx_http_dstack_ssl_entry_free(ngx_http_dstack_ssl_entry_t *e)
{
    X509_free(e->cert);
    sk_X509_pop_free(e->chain, X509_free);
    EVP_PKEY_free(e->key);
    ngx_free(e);
}


static void
ngx_http_dstack_ssl_cache_clear(void)
{
    ngx_rbtree_node_t            *node;
    ngx_http_dstack_ssl_cache_t  *cache = &ngx_http_dstack_ssl_cache;

    if (!cache->ready) {
        return;
    }

    while (cache->tree.root != cache->tree.sentinel) {
        node = ngx_rbtree_min(cache->tree.root, cache->tree.sentinel);
        ngx_rbtree_delete(&cache->tree, node);
        ngx_http_dstack_ssl_entry_free((ngx_http_dstack_ssl_entry_t *) node);
    }

    cache->count = 0;
}

#endif /* NGX_HTTP_SSL */
