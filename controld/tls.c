/*
 * Certificates for the gateway.
 *
 * Local (always): at the first start a private CA and a certificate for
 * <domain>, *.<domain> and gateway.<domain>, made with libcrypto, kept in
 * <state_dir>/tls/ (keys 0600, made so again at start if found wider;
 * ca.crt 0644 for clients' --cacert).  The certificate is nginx's static
 * ssl_certificate (the answer without SNI) and is put in the "certs"
 * database as "*.<domain>", the fallback the module serves for every name
 * without a certificate of its own.  It is made again when it nears its
 * end or the domain changed.
 *
 * ACME (tls.acme in controld.yml): one certificate per published service
 * ("<run>.<domain>", HTTP-01), or with tls.acme.dns_hook one wildcard for
 * "*.<domain>" (DNS-01, the hook publishes the TXT record).  Issuance is
 * done by uacme, a maintained RFC 8555 client (Debian package uacme), run
 * as a child: the loop never waits for it, and at most ACME_JOBS run at
 * once.  For HTTP-01 its hook is a script written here that puts the key
 * authorization where nginx serves /.well-known/acme-challenge/ from
 * (tls.acme.webroot).  A new certificate goes into the "certs" database
 * and the module serves it at the next handshake; nothing reloads.
 * Renewal: when a certificate has less than renew_before left.  A failure
 * is logged with uacme's own words (the ACME server's problem detail:
 * DNS, connection refused, rate limits), shown by the API as the run's
 * "tls" object, and retried after retry_after, doubling to an hour; it
 * never holds up anything else.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "log.h"
#include "pem.h"
#include "run.h"
#include "store.h"
#include "tls.h"
#include "util.h"


#define CA_DAYS                 3650
#define LEAF_DAYS               397     /* what browsers accept */
#define LEAF_RENEW_DAYS         30
#define ACME_JOBS               2       /* uacme children at once */
#define ACME_RETRY_MAX_MS       (3600 * 1000)
#define ACME_SCAN_MS            1000


struct tls_host {
    TAILQ_ENTRY(tls_host) entry;
    char            host[DS_HOST_MAX + 1];  /* "<run>.<d>" or "*.<d>" */
    char            run[DS_NAME_MAX + 1];   /* "" for the wildcard */
    uint64_t        not_after;      /* of the ACME certificate, 0 none */
    pid_t           pid;            /* uacme running, 0 none */
    int             account;        /* the child creates the account */
    int             renewing;
    int64_t         next_ms;        /* no attempt before */
    unsigned        backoff_ms;
    int             seen;
    char            error[512];
};

TAILQ_HEAD(tls_host_list, tls_host);

static struct tls_host_list  hosts = TAILQ_HEAD_INITIALIZER(hosts);
static char                  tls_dir[1024];
static char                  acme_dir[1024];
static char                  hook_path[1100];
static int                   account_ready;
static int64_t               next_scan_ms;
/* for the metrics: the local certificate's end, failed ACME runs */
static uint64_t              local_not_after;
static unsigned long long    acme_failures;


static void
tls_ssl_error(const char *what)
{
    unsigned long  e;
    char           buf[256];

    e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof(buf));
    log_warnx("tls: %s: %s", what, e ? buf : "failed");
    ERR_clear_error();
}


/* ---- PEM in and out --------------------------------------------------- */

/*
 * A private key is for controld and nginx's master (root) alone: one
 * that a restored backup, a copy or an older version left readable by
 * the state's group (nginx's workers) or by others is made 0600 before
 * it is used again.  The workers need no key file: they read the
 * certificates they serve from the state.
 */
static int
key_private(const char *path)
{
    struct stat  sb;
    int          fd, rc = 0;

    /* not through a link, and the mode changed on what was looked at */
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? 0 : -1;
    }
    if (fstat(fd, &sb) != 0) {
        rc = -1;
    } else if ((sb.st_mode & 077) != 0) {
        if (fchmod(fd, 0600) != 0) {
            rc = -1;
        } else {
            log_warnx("tls: %s was readable by others than its owner "
                      "(mode %03o): made it 0600", path,
                      (unsigned) (sb.st_mode & 0777));
        }
    }
    close(fd);
    return rc;
}


static uint64_t
cert_not_after(X509 *x)
{
    struct tm  tm;

    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1) {
        return 0;
    }
    return (uint64_t) timegm(&tm);
}


/* ---- the private CA ----------------------------------------------------- */

static int
add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION  *ex;
    int              ok;

    ex = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (ex == NULL) {
        return 0;
    }
    ok = X509_add_ext(x, ex, -1);
    X509_EXTENSION_free(ex);
    return ok;
}


/* signed by (ca, ca_key), or self-signed when ca is NULL */
static X509 *
make_cert(EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key, const char *cn,
    long days, const char *san)
{
    X509          *x;
    X509_NAME     *name;
    X509V3_CTX     v3;
    BIGNUM        *bn;
    int            ok;

    x = X509_new();
    bn = BN_new();
    if (x == NULL || bn == NULL) {
        BN_free(bn);
        X509_free(x);
        return NULL;
    }

    ok = X509_set_version(x, 2)
         && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY)
         && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL
         && X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL
         && X509_gmtime_adj(X509_getm_notAfter(x), days * 86400L) != NULL
         && X509_set_pubkey(x, key);
    BN_free(bn);

    name = X509_get_subject_name(x);
    ok = ok
         && X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                       (const unsigned char *) "dstack",
                                       -1, -1, 0)
         && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                       (const unsigned char *) cn,
                                       -1, -1, 0)
         && X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : name);

    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, ca ? ca : x, x, NULL, NULL, 0);

    ok = ok && add_ext(x, &v3, NID_subject_key_identifier, "hash");
    if (ca == NULL) {
        ok = ok
             && add_ext(x, &v3, NID_basic_constraints,
                        "critical,CA:TRUE,pathlen:0")
             && add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        ok = ok
             && add_ext(x, &v3, NID_authority_key_identifier, "keyid:always")
             && add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE")
             && add_ext(x, &v3, NID_key_usage, "critical,digitalSignature")
             && add_ext(x, &v3, NID_ext_key_usage, "serverAuth")
             && add_ext(x, &v3, NID_subject_alt_name, san);
    }

    ok = ok && X509_sign(x, ca ? ca_key : key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}


static int
save_pem(const char *path, pem_writer_t write, void *obj, unsigned mode)
{
    int  rc;

    rc = pem_save(path, write, obj, mode);
    if (rc == -2) {
        tls_ssl_error(path);
    } else if (rc != 0) {
        log_warn("tls: cannot write %s", path);
    }
    return rc == 0 ? 0 : -1;
}


/* the CA: loaded, or made at the first start */
static int
local_ca(X509 **ca, EVP_PKEY **ca_key)
{
    char  crt[1100], key[1100], cn[300];

    fmt(crt, sizeof(crt), "%s/ca.crt", tls_dir);
    fmt(key, sizeof(key), "%s/ca.key", tls_dir);

    *ca = pem_read_cert(crt);
    *ca_key = pem_read_key(key);
    if (*ca != NULL && *ca_key != NULL) {
        return 0;
    }
    X509_free(*ca);
    EVP_PKEY_free(*ca_key);

    *ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (*ca_key == NULL) {
        tls_ssl_error("CA key");
        return -1;
    }
    fmt(cn, sizeof(cn), "dstack local CA (%s)", conf->domain);
    *ca = make_cert(*ca_key, NULL, NULL, cn, CA_DAYS, NULL);
    if (*ca == NULL) {
        tls_ssl_error("CA certificate");
        EVP_PKEY_free(*ca_key);
        return -1;
    }
    if (save_pem(key, pem_write_key, *ca_key, 0600) != 0
        || save_pem(crt, pem_write_cert, *ca, 0644) != 0)
    {
        X509_free(*ca);
        EVP_PKEY_free(*ca_key);
        return -1;
    }
    log_info("tls: made a private CA: clients trust it with %s", crt);
    return 0;
}


/* the gateway certificate is still good for this domain */
static int
leaf_current(X509 *x)
{
    char  gw[300];

    fmt(gw, sizeof(gw), "gateway.%s", conf->domain);
    return x != NULL
           && cert_not_after(x) > (uint64_t) time(NULL)
                                  + LEAF_RENEW_DAYS * 86400ULL
           && X509_check_host(x, conf->domain, 0, 0, NULL) == 1
           && X509_check_host(x, gw, 0, 0, NULL) == 1;
}


static int
put_cert(const char *host, uint32_t flags, uint64_t not_after,
    const char *cert, size_t cert_len, const char *key, size_t key_len)
{
    ds_cert_t          c;
    struct store_txn  *t;
    char               err[256];

    memset(&c, 0, sizeof(c));
    c.host.data = host;
    c.host.len = (uint32_t) strlen(host);
    c.flags = flags;
    c.not_after = not_after;
    c.cert.data = cert;
    c.cert.len = (uint32_t) cert_len;
    c.key.data = key;
    c.key.len = (uint32_t) key_len;

    t = store_begin(err, sizeof(err));
    if (t != NULL) {
        store_put_cert(t, &c);
    }
    if (t == NULL || store_end(t) != STORE_OK) {
        log_warnx("tls: cannot store the certificate for %s: %s", host, err);
        return -1;
    }
    return 0;
}


/*
 * The local certificate as "*.<domain>" in state, unless an ACME
 * wildcard holds that name.
 */
static int
local_publish(void)
{
    char       crt[1100], key[1100], wild[300], errbuf[256];
    char      *c, *k;
    size_t     clen, klen;
    ds_txn_t  *txn;
    ds_err_t   err;
    ds_cert_t  old;
    int        rc, same;
    X509      *x;

    fmt(crt, sizeof(crt), "%s/gateway.crt", tls_dir);
    fmt(key, sizeof(key), "%s/gateway.key", tls_dir);
    fmt(wild, sizeof(wild), "*.%s", conf->domain);

    c = read_file(crt, DS_PEM_MAX, &clen);
    k = read_file(key, DS_PEM_MAX, &klen);
    x = pem_read_cert(crt);
    if (c == NULL || k == NULL || x == NULL) {
        log_warn("tls: cannot read %s", c ? key : crt);
        free(c);
        free(k);
        X509_free(x);
        return -1;
    }

    same = 0;
    if (ds_txn_begin(state, 0, &txn, &err) == DS_OK) {
        rc = ds_get_cert(txn, wild, strlen(wild), &old, &err);
        if (rc == DS_OK) {
            same = (old.flags & DS_CERT_ACME)
                   || (old.cert.len == clen
                       && memcmp(old.cert.data, c, clen) == 0);
        }
        ds_txn_abort(txn);
    }

    local_not_after = cert_not_after(x);
    rc = 0;
    if (!same) {
        rc = put_cert(wild, DS_CERT_LOCAL, cert_not_after(x), c, clen, k,
                      klen);
        (void) errbuf;
    }

    X509_free(x);
    OPENSSL_cleanse(k, klen);
    free(k);
    free(c);
    return rc;
}


static int
local_init(void)
{
    X509      *ca, *leaf;
    EVP_PKEY  *ca_key, *key;
    char       crt[1100], keyp[1100], san[1024], cn[300];
    int        rc;

    fmt(crt, sizeof(crt), "%s/gateway.crt", tls_dir);
    fmt(keyp, sizeof(keyp), "%s/gateway.key", tls_dir);

    leaf = pem_read_cert(crt);
    key = pem_read_key(keyp);
    if (leaf != NULL && key != NULL && leaf_current(leaf)
        && X509_check_private_key(leaf, key) == 1)
    {
        X509_free(leaf);
        EVP_PKEY_free(key);
        ERR_clear_error();
        return local_publish();
    }
    X509_free(leaf);
    EVP_PKEY_free(key);
    ERR_clear_error();

    if (local_ca(&ca, &ca_key) != 0) {
        return -1;
    }

    rc = -1;
    leaf = NULL;
    key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (key == NULL) {
        tls_ssl_error("gateway key");
        goto done;
    }
    fmt(san, sizeof(san), "DNS:%s,DNS:*.%s,DNS:gateway.%s", conf->domain,
        conf->domain, conf->domain);
    fmt(cn, sizeof(cn), "*.%s", conf->domain);
    leaf = make_cert(key, ca, ca_key, cn, LEAF_DAYS, san);
    if (leaf == NULL) {
        tls_ssl_error("gateway certificate");
        goto done;
    }
    if (save_pem(keyp, pem_write_key, key, 0600) != 0
        || save_pem(crt, pem_write_cert, leaf, 0644) != 0)
    {
        goto done;
    }
    log_info("tls: made the gateway certificate %s for %s, *.%s and "
             "gateway.%s", crt, conf->domain, conf->domain, conf->domain);
    rc = local_publish();

done:
    X509_free(leaf);
    EVP_PKEY_free(key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    return rc;
}


/* ---- ACME --------------------------------------------------------------- */

/*
 * uacme's hook for HTTP-01: writes the key authorization where nginx
 * serves the challenge path from.  Tokens are base64url (RFC 8555 8.1);
 * anything else is refused rather than used in a path.
 */
static int
acme_write_hook(void)
{
    char  script[4096], dir[1100];

    fmt(dir, sizeof(dir), "%s/.well-known/acme-challenge",
        conf->tls.webroot);
    if (mkdir_p(dir, 0755) != 0) {
        log_warn("tls: cannot create %s", dir);
        return -1;
    }
    if (strchr(dir, '\'') != NULL) {
        log_warnx("tls: webroot %s has a quote", conf->tls.webroot);
        return -1;
    }
    if (fmt(script, sizeof(script),
            "#!/bin/sh\n"
            "# uacme's http-01 hook, written by dstack-controld\n"
            "# args: method type ident token key-authorization\n"
            "dir='%s'\n"
            "[ \"$2\" = http-01 ] || exit 1\n"
            "case \"$4\" in ''|*[!A-Za-z0-9_-]*) exit 1 ;; esac\n"
            "case \"$1\" in\n"
            "begin)\n"
            "    umask 022\n"
            "    printf '%%s' \"$5\" > \"$dir/$4.tmp\" &&\n"
            "        exec mv -f \"$dir/$4.tmp\" \"$dir/$4\" ;;\n"
            "done|failed) exec rm -f \"$dir/$4\" ;;\n"
            "esac\n"
            "exit 1\n", dir) != 0
        || write_file_atomic(hook_path, script, strlen(script), 0700) != 0)
    {
        log_warn("tls: cannot write %s", hook_path);
        return -1;
    }
    return 0;
}


static void
acme_log_path(const struct tls_host *h, char *buf, size_t n)
{
    fmt(buf, n, "%s/log/%s.log", acme_dir,
        h->host[0] == '*' ? h->host + 2 : h->host);
}


static void
acme_spawn(struct tls_host *h)
{
    const char  *argv[24];
    char         eab[600], log_path[1200];
    int          n, fd;
    pid_t        pid;

    n = 0;
    argv[n++] = conf->tls.client;
    argv[n++] = "-c";
    argv[n++] = acme_dir;
    argv[n++] = "-a";
    argv[n++] = conf->tls.directory;
    argv[n++] = "-t";
    argv[n++] = "EC";
    argv[n++] = "-y";
    argv[n++] = "-v";
    if (!account_ready) {
        if (conf->tls.eab_kid != NULL) {
            fmt(eab, sizeof(eab), "%s:%s", conf->tls.eab_kid,
                conf->tls.eab_hmac_key);
            argv[n++] = "-e";
            argv[n++] = eab;
        }
        argv[n++] = "new";
        if (conf->tls.email != NULL) {
            argv[n++] = conf->tls.email;
        }
    } else {
        argv[n++] = "-h";
        argv[n++] = h->host[0] == '*' ? conf->tls.dns_hook : hook_path;
        argv[n++] = "-f";   /* controld decides when to renew */
        argv[n++] = "issue";
        argv[n++] = h->host;
    }
    argv[n] = NULL;

    acme_log_path(h, log_path, sizeof(log_path));

    pid = fork();
    if (pid < 0) {
        log_warn("tls: cannot start %s for %s", conf->tls.client, h->host);
        h->next_ms = now_ms() + 1000;
        return;
    }
    if (pid == 0) {
        sigset_t  none;

        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        fd = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, 0);
        }
        fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        for (fd = 3; fd < 1024; fd++) {
            close(fd);
        }
        execvp(argv[0], (char *const *) argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }

    h->pid = pid;
    h->account = !account_ready;
    log_info("tls: %s for %s (%s, log %s)",
             h->account ? "creating the ACME account"
             : h->not_after ? "renewing the certificate"
             : "requesting a certificate", h->host, conf->tls.directory,
             log_path);
}


/*
 * The cause of a failure from uacme's log: the ACME problem's "detail"
 * when there is one (e.g. "DNS problem: NXDOMAIN looking up A for ..."),
 * else its last line.
 */
static void
acme_failure(const struct tls_host *h, int status, char *buf, size_t n)
{
    char    path[1200], *text, *p, *q, *last;
    size_t  len;

    acme_log_path(h, path, sizeof(path));
    text = read_file(path, DS_PEM_MAX, &len);
    if (text == NULL) {
        fmt(buf, n, "%s exited with status %d", conf->tls.client, status);
        return;
    }

    p = NULL;
    for (q = text; (q = strstr(q, "\"detail\"")) != NULL; q++) {
        p = q;
    }
    if (p != NULL && (p = strchr(p + 8, '"')) != NULL) {
        /* the JSON string, its escapes undone ("\"" and "\\" only) */
        for (p++, len = 0; *p && *p != '"' && *p != '\n' && len + 1 < n;
             p++)
        {
            if (*p == '\\' && p[1] != '\0') {
                p++;
            }
            buf[len++] = *p;
        }
        buf[len] = '\0';
        free(text);
        return;
    }

    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' ')) {
        text[--len] = '\0';
    }
    last = strrchr(text, '\n');
    last = last ? last + 1 : text;
    if (strncmp(last, "uacme: ", 7) == 0) {
        last += 7;
    }
    fmt(buf, n, "%s", *last ? last : "failed without a message");
    free(text);
}


static int
acme_collect(struct tls_host *h)
{
    char      crt[1200], key[1200];
    char     *c, *k;
    size_t    clen, klen;
    X509     *x;
    uint64_t  na;
    int       rc;

    fmt(crt, sizeof(crt), "%s/%s/cert.pem", acme_dir,
        h->host[0] == '*' ? h->host + 2 : h->host);
    fmt(key, sizeof(key), "%s/private/%s/key.pem", acme_dir,
        h->host[0] == '*' ? h->host + 2 : h->host);

    c = read_file(crt, DS_PEM_MAX, &clen);
    k = read_file(key, DS_PEM_MAX, &klen);
    x = pem_read_cert(crt);
    rc = -1;
    if (c == NULL || k == NULL || x == NULL) {
        fmt(h->error, sizeof(h->error), "cannot read %s: %s",
            c ? key : crt, strerror(errno));
    } else {
        na = cert_not_after(x);
        rc = put_cert(h->host, DS_CERT_ACME, na, c, clen, k, klen);
        if (rc == 0) {
            h->not_after = na;
        } else {
            fmt(h->error, sizeof(h->error), "cannot store it in state");
        }
    }
    X509_free(x);
    if (k != NULL) {
        OPENSSL_cleanse(k, klen);
    }
    free(k);
    free(c);
    return rc;
}


int
tls_child_exited(pid_t pid, int status)
{
    struct tls_host  *h;
    int               code;
    char              why[512];
    time_t            na;
    struct tm         tm;
    char              date[64];

    TAILQ_FOREACH(h, &hosts, entry) {
        if (h->pid == pid) {
            break;
        }
    }
    if (h == NULL) {
        return 0;
    }
    h->pid = 0;
    code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

    if (h->account) {
        if (code == 0) {
            account_ready = 1;
            log_info("tls: ACME account ready at %s", conf->tls.directory);
            h->next_ms = 0;
            return 1;
        }
        acme_failure(h, code, why, sizeof(why));
        fmt(h->error, sizeof(h->error), "ACME account: %s", why);
        acme_failures++;

    } else if (code == 0 || code == 1) {
        /* 1: "not reissued, still current": take what is there */
        if (acme_collect(h) == 0) {
            na = (time_t) h->not_after;
            gmtime_r(&na, &tm);
            strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S UTC", &tm);
            log_info("tls: certificate for %s %s, valid until %s", h->host,
                     h->renewing ? "renewed" : "issued", date);
            h->error[0] = '\0';
            h->backoff_ms = 0;
            h->renewing = 0;
            return 1;
        }
        acme_failures++;

    } else {
        acme_failure(h, code, why, sizeof(why));
        fmt(h->error, sizeof(h->error), "%s", why);
        acme_failures++;
    }

    h->backoff_ms = h->backoff_ms == 0 ? conf->tls.retry_ms
                    : h->backoff_ms * 2;
    if (h->backoff_ms > ACME_RETRY_MAX_MS) {
        h->backoff_ms = ACME_RETRY_MAX_MS;
    }
    h->next_ms = now_ms() + h->backoff_ms;
    log_warnx("tls: certificate for %s: %s (again in %us)", h->host,
              h->error, h->backoff_ms / 1000);
    return 1;
}


static struct tls_host *
host_find(const char *host)
{
    struct tls_host  *h;

    TAILQ_FOREACH(h, &hosts, entry) {
        if (strcmp(h->host, host) == 0) {
            return h;
        }
    }
    return NULL;
}


static struct tls_host *
host_want(const char *host, const char *run)
{
    struct tls_host  *h;
    ds_txn_t         *txn;
    ds_err_t          err;
    ds_cert_t         c;

    h = host_find(host);
    if (h == NULL) {
        h = xcalloc(1, sizeof(*h));
        fmt(h->host, sizeof(h->host), "%s", host);
        fmt(h->run, sizeof(h->run), "%s", run);
        /* a certificate from an earlier start */
        if (ds_txn_begin(state, 0, &txn, &err) == DS_OK) {
            if (ds_get_cert(txn, host, strlen(host), &c, &err) == DS_OK
                && (c.flags & DS_CERT_ACME))
            {
                h->not_after = c.not_after;
            }
            ds_txn_abort(txn);
        }
        TAILQ_INSERT_TAIL(&hosts, h, entry);
    }
    h->seen = 1;
    return h;
}


void
tls_tick(void)
{
    struct tls_host  *h, *next;
    struct run       *r;
    char              host[DS_HOST_MAX + 1];
    int64_t           now;
    int               jobs;
    uint64_t          t;

    if (!conf->tls.acme) {
        return;
    }
    now = now_ms();
    if (now < next_scan_ms) {
        return;
    }
    next_scan_ms = now + ACME_SCAN_MS;

    TAILQ_FOREACH(h, &hosts, entry) {
        h->seen = 0;
    }
    if (conf->tls.dns_hook != NULL) {
        fmt(host, sizeof(host), "*.%s", conf->domain);
        host_want(host, "");
    } else {
        TAILQ_FOREACH(r, &runs, entry) {
            if (r->finished || !r->service_put
                || !(r->svc.flags & (DS_SERVICE_HTTPS
                                     | DS_SERVICE_HTTPS_AUTO)))
            {
                continue;
            }
            if (fmt(host, sizeof(host), "%s.%s", r->name, conf->domain)
                == 0)
            {
                host_want(host, r->name);
            }
        }
    }

    jobs = 0;
    for (h = TAILQ_FIRST(&hosts); h != NULL; h = next) {
        next = TAILQ_NEXT(h, entry);
        if (h->pid != 0) {
            jobs++;
        } else if (!h->seen) {
            TAILQ_REMOVE(&hosts, h, entry);
            free(h);
        }
    }

    t = (uint64_t) time(NULL);
    TAILQ_FOREACH(h, &hosts, entry) {
        if (jobs >= ACME_JOBS) {
            break;
        }
        if (h->pid != 0 || now < h->next_ms) {
            continue;
        }
        if (h->not_after != 0
            && h->not_after > t + conf->tls.renew_before_ms / 1000)
        {
            continue;
        }
        h->renewing = h->not_after != 0;
        /* one account for all: the first job creates it, others wait */
        if (!account_ready) {
            struct tls_host  *o;

            TAILQ_FOREACH(o, &hosts, entry) {
                if (o->pid != 0 && o->account) {
                    break;
                }
            }
            if (o != NULL) {
                break;
            }
        }
        acme_spawn(h);
        if (h->pid != 0) {
            jobs++;
        }
    }
}


/* the run's certificate for the API (ps) */
int
tls_run_status(const char *name, struct tls_status *st)
{
    struct tls_host  *h;

    if (!conf->tls.acme) {
        return -1;
    }
    TAILQ_FOREACH(h, &hosts, entry) {
        if (strcmp(h->run, name) == 0
            || (h->run[0] == '\0' && conf->tls.dns_hook != NULL))
        {
            break;
        }
    }
    if (h == NULL) {
        return -1;
    }
    st->host = h->host;
    st->status = h->pid ? (h->not_after ? "renewing" : "issuing")
                 : h->error[0] ? "failed"
                 : h->not_after ? "valid" : "pending";
    st->not_after = h->not_after;
    st->error = h->error;
    return 0;
}


int
tls_init(void)
{
    char  path[1200], key[1200];

    if (fmt(tls_dir, sizeof(tls_dir), "%s/tls", conf->state_dir) != 0
        || mkdir_p(tls_dir, 0755) != 0)
    {
        log_warn("tls: cannot create %s", tls_dir);
        return -1;
    }
    fmt(path, sizeof(path), "%s/ca.key", tls_dir);
    fmt(key, sizeof(key), "%s/gateway.key", tls_dir);
    if (key_private(path) != 0 || key_private(key) != 0) {
        log_warn("tls: cannot make the keys in %s private", tls_dir);
        return -1;
    }
    if (local_init() != 0) {
        return -1;
    }
    if (!conf->tls.acme) {
        return 0;
    }

    fmt(acme_dir, sizeof(acme_dir), "%s/acme", tls_dir);
    fmt(path, sizeof(path), "%s/log", acme_dir);
    if (mkdir_p(path, 0700) != 0 || chmod(acme_dir, 0700) != 0) {
        log_warn("tls: cannot create %s", path);
        return -1;
    }
    fmt(hook_path, sizeof(hook_path), "%s/http-01-hook", tls_dir);
    if (acme_write_hook() != 0) {
        return -1;
    }
    fmt(key, sizeof(key), "%s/private/key.pem", acme_dir);
    account_ready = access(key, R_OK) == 0;
    log_info("tls: ACME at %s, %s", conf->tls.directory,
             conf->tls.dns_hook ? "one wildcard certificate (dns-01)"
             : "a certificate per service (http-01)");
    return 0;
}


void
tls_stop(void)
{
    struct tls_host  *h;

    while ((h = TAILQ_FIRST(&hosts)) != NULL) {
        if (h->pid != 0) {
            kill(h->pid, SIGTERM);
        }
        TAILQ_REMOVE(&hosts, h, entry);
        free(h);
    }
}


/* the certificates for the metrics: the local one, then ACME's */
unsigned long long
tls_metrics(tls_cert_fn fn, void *arg)
{
    struct tls_host  *h;
    char              wild[300];

    if (local_not_after != 0
        && fmt(wild, sizeof(wild), "*.%s", conf->domain) == 0)
    {
        fn(wild, "local", local_not_after, arg);
    }
    TAILQ_FOREACH(h, &hosts, entry) {
        if (h->not_after != 0) {
            fn(h->host, "acme", h->not_after, arg);
        }
    }
    return acme_failures;
}
