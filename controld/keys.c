/*
 * The cluster's keys in shared mode (see keys.h).
 *
 * Identity, published by the first leader as settings records:
 *
 *   cluster.secrets_key_id   SHA-256("dstack secrets.key id" || key), hex:
 *                            it names the key and cannot open anything
 *   cluster.ca_id            SHA-256 of the CA certificate (DER), hex: the
 *                            fingerprint clients see (openssl x509
 *                            -fingerprint -sha256)
 *
 * A controller compares its state_dir's secrets.key and tls/ca.crt +
 * tls/ca.key with them before it tries the leader lock, and again once it
 * has the lock and caught up; missing or different files keep it a
 * follower.  Nothing here ever makes a key: secrets.c and tls.c do, when
 * this instance leads a cluster that has none.  Rotating the keys of a
 * cluster (re-sealing every secret, a new CA for the clients) is not
 * done here: later.
 *
 * The export file (0600), read back by --keys-import:
 *
 *   dstack-controld keys 1
 *   secrets.key id: <hex>
 *   ca id: <hex>
 *   -----BEGIN DSTACK SECRETS KEY-----    the 32 bytes
 *   -----BEGIN PRIVATE KEY-----           tls/ca.key
 *   -----BEGIN CERTIFICATE-----           tls/ca.crt
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "keys.h"
#include "log.h"
#include "pem.h"
#include "store.h"
#include "util.h"


#define KEY_LEN                 32
#define ID_LEN                  65      /* hex SHA-256 and a NUL */
#define FILE_MAX                (64 * 1024)
#define MAGIC                   "dstack-controld keys 1\n"
#define SET_SECRETS             "cluster.secrets_key_id"
#define SET_CA                  "cluster.ca_id"
#define PEM_SECRETS             "DSTACK SECRETS KEY"

struct keys_id {
    char            secrets[ID_LEN];    /* "" when missing */
    char            ca[ID_LEN];
};

static int          differ;
static char         told[2048];         /* the last thing said */


/* a short form for messages: enough to tell two keys apart */
static const char *
short_id(const char *id, char *buf, size_t n)
{
    if (id[0] == '\0') {
        return "none";
    }
    snprintf(buf, n, "%.12s..", id);
    return buf;
}


static void
secrets_id_of(const unsigned char *key, char *hex)
{
    static const char   tag[] = "dstack secrets.key id";
    unsigned char       buf[sizeof(tag) - 1 + KEY_LEN];
    unsigned char       md[32];
    unsigned int        len;

    memcpy(buf, tag, sizeof(tag) - 1);
    memcpy(buf + sizeof(tag) - 1, key, KEY_LEN);
    EVP_Digest(buf, sizeof(buf), md, &len, EVP_sha256(), NULL);
    OPENSSL_cleanse(buf, sizeof(buf));
    hex_encode(md, sizeof(md), hex);
}


static int
ca_id_of(X509 *x, char *hex)
{
    unsigned char  md[32];
    unsigned int   len;

    if (X509_digest(x, EVP_sha256(), md, &len) != 1 || len != 32) {
        return -1;
    }
    hex_encode(md, sizeof(md), hex);
    return 0;
}


/* 0, 1 when there is no file, -1 with why */
static int
secrets_key_read(const char *path, unsigned char *key, char *err, size_t n)
{
    struct stat  sb;
    ssize_t      r;
    int          fd;

    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return 1;
        }
        snprintf(err, n, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)
        || sb.st_size != KEY_LEN)
    {
        close(fd);
        snprintf(err, n, "%s is not a key of %d bytes", path, KEY_LEN);
        return -1;
    }
    r = read(fd, key, KEY_LEN);
    close(fd);
    if (r != KEY_LEN) {
        snprintf(err, n, "cannot read %s", path);
        return -1;
    }
    return 0;
}


/*
 * The CA of state_dir: 0, 1 when ca.crt or ca.key is missing (tls.c
 * would make a new CA), -1 with why.
 */
static int
ca_load(X509 **x, EVP_PKEY **k, char *err, size_t n)
{
    char  crt[4200], key[4200];

    *x = NULL;
    *k = NULL;
    fmt(crt, sizeof(crt), "%s/tls/ca.crt", conf->state_dir);
    fmt(key, sizeof(key), "%s/tls/ca.key", conf->state_dir);
    if (access(crt, F_OK) != 0 || access(key, F_OK) != 0) {
        return 1;
    }
    *x = pem_read_cert(crt);
    *k = pem_read_key(key);
    if (*x == NULL || *k == NULL || X509_check_private_key(*x, *k) != 1) {
        snprintf(err, n, "%s", *x == NULL
                 ? "tls/ca.crt is not a PEM certificate"
                 : *k == NULL ? "tls/ca.key is not a PEM private key"
                 : "tls/ca.key is not the key of tls/ca.crt");
        ERR_clear_error();
        X509_free(*x);
        EVP_PKEY_free(*k);
        *x = NULL;
        *k = NULL;
        return -1;
    }
    return 0;
}


/* this controller's files: ids, "" for a missing one; -1 with why */
static int
local_ids(struct keys_id *id, char *err, size_t n)
{
    unsigned char  key[KEY_LEN];
    char           path[4200];
    X509          *x;
    EVP_PKEY      *k;
    int            rc;

    memset(id, 0, sizeof(*id));
    fmt(path, sizeof(path), "%s/secrets.key", conf->state_dir);
    rc = secrets_key_read(path, key, err, n);
    if (rc < 0) {
        return -1;
    }
    if (rc == 0) {
        secrets_id_of(key, id->secrets);
        OPENSSL_cleanse(key, sizeof(key));
    }
    rc = ca_load(&x, &k, err, n);
    if (rc < 0) {
        return -1;
    }
    if (rc == 0) {
        rc = ca_id_of(x, id->ca);
        X509_free(x);
        EVP_PKEY_free(k);
        if (rc != 0) {
            snprintf(err, n, "cannot hash tls/ca.crt");
            return -1;
        }
    }
    return 0;
}


static void
setting_copy(ds_txn_t *txn, const char *key, char *out)
{
    ds_str_t  v;
    ds_err_t  e;

    if (ds_get_setting(txn, key, &v, &e) == DS_OK && v.len == ID_LEN - 1) {
        memcpy(out, v.data, v.len);
        out[v.len] = '\0';
    }
}


/* the cluster's, from the mirror; "" for what was never published */
static int
cluster_ids(struct keys_id *id, char *err, size_t n)
{
    ds_txn_t  *txn;
    ds_err_t   e;

    memset(id, 0, sizeof(*id));
    if (ds_txn_begin(state, 0, &txn, &e) != DS_OK) {
        snprintf(err, n, "cannot read the state: %s", e.msg);
        return -1;
    }
    setting_copy(txn, SET_SECRETS, id->secrets);
    setting_copy(txn, SET_CA, id->ca);
    ds_txn_abort(txn);
    return 0;
}


/* ---- may this controller lead ------------------------------------------- */

static void
say_what_differs(const struct keys_id *want, const struct keys_id *have,
    char *msg, size_t n)
{
    char    a[20], b[20], parts[1024];
    size_t  len = 0;

    parts[0] = '\0';
    if (want->secrets[0] != '\0'
        && strcmp(want->secrets, have->secrets) != 0)
    {
        len += snprintf(parts + len, sizeof(parts) - len, "secrets.key in "
                        "%s %s (key id %s expected, %s here)",
                        conf->state_dir, have->secrets[0] ? "is not this "
                        "cluster's" : "is missing",
                        short_id(want->secrets, a, sizeof(a)),
                        short_id(have->secrets, b, sizeof(b)));
    }
    if (want->ca[0] != '\0' && strcmp(want->ca, have->ca) != 0
        && len < sizeof(parts))
    {
        snprintf(parts + len, sizeof(parts) - len, "%sthe CA in %s/tls %s "
                 "(sha256 %s expected, %s here)", len ? "; " : "",
                 conf->state_dir, have->ca[0] ? "is not this cluster's"
                 : "is missing", short_id(want->ca, a, sizeof(a)),
                 short_id(have->ca, b, sizeof(b)));
    }
    snprintf(msg, n, "keys: this controller does not compete for "
             "leadership: %s; leading with other keys would seal secrets "
             "the replicas cannot open and serve a certificate the clients "
             "do not trust.  Copy them from a controller of this cluster: "
             "dstack-controld --keys-export FILE there, dstack-controld "
             "--keys-import FILE here; it keeps following meanwhile",
             parts);
}


int
keys_may_lead(void)
{
    struct keys_id  want, have;
    char            err[512], msg[sizeof(told)];

    if (cluster_ids(&want, err, sizeof(err)) != 0) {
        snprintf(msg, sizeof(msg), "keys: this controller does not "
                 "compete for leadership: %s", err);
    } else if (want.secrets[0] == '\0' && want.ca[0] == '\0') {
        msg[0] = '\0';                  /* none published: a new cluster */
    } else if (local_ids(&have, err, sizeof(err)) != 0) {
        snprintf(msg, sizeof(msg), "keys: this controller does not "
                 "compete for leadership: %s (in %s); import this "
                 "cluster's keys: dstack-controld --keys-import FILE",
                 err, conf->state_dir);
    } else if (strcmp(want.secrets, have.secrets) != 0
               || strcmp(want.ca, have.ca) != 0)
    {
        say_what_differs(&want, &have, msg, sizeof(msg));
    } else {
        msg[0] = '\0';
    }

    if (msg[0] != '\0') {
        if (strcmp(msg, told) != 0) {
            log_warnx("%s", msg);
            snprintf(told, sizeof(told), "%s", msg);
        }
        differ = 1;
        return 0;
    }
    if (differ) {
        log_info("keys: secrets.key and the CA in %s are now this "
                 "cluster's: this controller may lead", conf->state_dir);
    }
    differ = 0;
    told[0] = '\0';
    return 1;
}


int
keys_differ(void)
{
    return differ;
}


int
keys_publish(void)
{
    struct keys_id     want, have;
    struct store_txn  *t;
    char               err[512], a[20], b[20];

    if (cluster_ids(&want, err, sizeof(err)) != 0
        || local_ids(&have, err, sizeof(err)) != 0)
    {
        log_warnx("keys: %s", err);
        return -1;
    }
    if (have.secrets[0] == '\0' || have.ca[0] == '\0') {
        log_warnx("keys: no %s in %s after the start",
                  have.secrets[0] == '\0' ? "secrets.key" : "tls/ca.crt",
                  conf->state_dir);
        return -1;
    }
    if (want.secrets[0] != '\0' && want.ca[0] != '\0') {
        if (strcmp(want.secrets, have.secrets) != 0
            || strcmp(want.ca, have.ca) != 0)
        {
            log_warnx("keys: this cluster's keys are not this "
                      "controller's (key id %s, here %s)",
                      short_id(want.secrets, a, sizeof(a)),
                      short_id(have.secrets, b, sizeof(b)));
            return -1;
        }
        return 0;
    }
    t = store_begin(err, sizeof(err));
    if (t != NULL) {
        store_put_setting(t, SET_SECRETS, have.secrets);
        store_put_setting(t, SET_CA, have.ca);
    }
    if (t == NULL || store_end(t) != STORE_OK) {
        log_warnx("keys: cannot publish the cluster's key identity: %s",
                  err);
        return -1;
    }
    log_info("keys: published this cluster's keys: secrets.key id %s, CA "
             "sha256 %s; other controllers need the same files "
             "(--keys-export, --keys-import)",
             short_id(have.secrets, a, sizeof(a)),
             short_id(have.ca, b, sizeof(b)));
    return 0;
}


/* ---- export and import -------------------------------------------------- */

int
keys_export(const char *file, int force)
{
    struct keys_id  id;
    unsigned char   key[KEY_LEN];
    char            err[512], path[4200], *text;
    X509           *x;
    EVP_PKEY       *k;
    BIO            *bio;
    size_t          len;
    int             fd, ok;

    fmt(path, sizeof(path), "%s/secrets.key", conf->state_dir);
    if (local_ids(&id, err, sizeof(err)) != 0) {
        fprintf(stderr, "dstack-controld: --keys-export: %s\n", err);
        return 1;
    }
    if (id.secrets[0] == '\0' || id.ca[0] == '\0') {
        fprintf(stderr, "dstack-controld: --keys-export: %s has no %s: "
                "export on the controller that made the keys (the first "
                "leader)\n", conf->state_dir,
                id.secrets[0] == '\0' ? "secrets.key" : "tls/ca.crt and "
                "tls/ca.key");
        return 1;
    }
    if (secrets_key_read(path, key, err, sizeof(err)) != 0
        || ca_load(&x, &k, err, sizeof(err)) != 0)
    {
        fprintf(stderr, "dstack-controld: --keys-export: %s\n", err);
        OPENSSL_cleanse(key, sizeof(key));
        return 1;
    }

    bio = BIO_new(BIO_s_mem());
    ok = bio != NULL
         && BIO_printf(bio, "%ssecrets.key id: %s\nca id: %s\n", MAGIC,
                       id.secrets, id.ca) > 0
         && PEM_write_bio(bio, PEM_SECRETS, "", key, KEY_LEN) > 0
         && PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL)
         && PEM_write_bio_X509(bio, x);
    OPENSSL_cleanse(key, sizeof(key));
    X509_free(x);
    EVP_PKEY_free(k);
    text = ok ? pem_bio_text(bio, &len) : NULL;
    BIO_free(bio);
    if (text == NULL) {
        fprintf(stderr, "dstack-controld: --keys-export: cannot encode the "
                "keys\n");
        return 1;
    }

    fd = open(file, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC
              | (force ? O_TRUNC : O_EXCL), 0600);
    if (fd < 0) {
        fprintf(stderr, "dstack-controld: --keys-export: %s: %s%s\n", file,
                strerror(errno), errno == EEXIST ? " (--force replaces it)"
                : "");
        OPENSSL_cleanse(text, len);
        free(text);
        return 1;
    }
    ok = fchmod(fd, 0600) == 0 && write(fd, text, len) == (ssize_t) len
         && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    OPENSSL_cleanse(text, len);
    free(text);
    if (!ok) {
        fprintf(stderr, "dstack-controld: --keys-export: cannot write %s: "
                "%s\n", file, strerror(errno));
        unlink(file);
        return 1;
    }
    fprintf(stderr, "dstack-controld: wrote %s (0600): secrets.key (key id "
            "%.12s..) and the CA (sha256 %.12s..) of %s\n", file,
            id.secrets, id.ca, conf->state_dir);
    return 0;
}


struct keys_file {
    unsigned char   secret[KEY_LEN];
    int             have_secret;
    X509           *ca;
    EVP_PKEY       *ca_key;
    struct keys_id  id;
};


static void
keys_file_free(struct keys_file *kf)
{
    OPENSSL_cleanse(kf->secret, sizeof(kf->secret));
    X509_free(kf->ca);
    EVP_PKEY_free(kf->ca_key);
}


/* one PEM block of the file, by its name; 0 or -1 with why */
static int
keys_block(struct keys_file *kf, int num, const char *name,
    const unsigned char *data, long len, char *err, size_t n)
{
    const unsigned char  *p = data;

    if (strcmp(name, PEM_SECRETS) == 0 && !kf->have_secret) {
        if (len != KEY_LEN) {
            snprintf(err, n, "block %d (%s): %ld bytes, not %d", num, name,
                     len, KEY_LEN);
            return -1;
        }
        memcpy(kf->secret, data, KEY_LEN);
        kf->have_secret = 1;
    } else if (strcmp(name, "PRIVATE KEY") == 0 && kf->ca_key == NULL) {
        kf->ca_key = d2i_AutoPrivateKey(NULL, &p, len);
        if (kf->ca_key == NULL) {
            snprintf(err, n, "block %d (%s): not a private key", num, name);
            return -1;
        }
    } else if (strcmp(name, "CERTIFICATE") == 0 && kf->ca == NULL) {
        kf->ca = d2i_X509(NULL, &p, len);
        if (kf->ca == NULL || X509_check_ca(kf->ca) == 0) {
            snprintf(err, n, "block %d (%s): not a CA certificate", num,
                     name);
            return -1;
        }
    } else {
        snprintf(err, n, "block %d (%s): %s", num, name,
                 strcmp(name, PEM_SECRETS) == 0
                 || strcmp(name, "PRIVATE KEY") == 0
                 || strcmp(name, "CERTIFICATE") == 0 ? "a second one"
                 : "not one of " PEM_SECRETS ", PRIVATE KEY, CERTIFICATE");
        return -1;
    }
    return 0;
}


/* a header line "what: hex" that does not match what the blocks hold */
static int
keys_header_check(const char *text, const char *what, const char *id,
    char *err, size_t n)
{
    const char  *p;
    char         want[ID_LEN];

    p = strstr(text, what);
    if (p == NULL) {
        return 0;                       /* informative only */
    }
    if (sscanf(p + strlen(what), "%64[0-9a-f]", want) != 1
        || strcmp(want, id) != 0)
    {
        snprintf(err, n, "its header says %s%.12s.. but its blocks hold "
                 "%.12s..: a damaged file", what, want, id);
        return -1;
    }
    return 0;
}


static int
keys_parse(const char *text, size_t len, struct keys_file *kf, char *err,
    size_t n)
{
    BIO            *bio;
    char           *name, *header;
    unsigned char  *data;
    long            dlen;
    int             num, rc;
    unsigned long   e;

    if (len < sizeof(MAGIC) - 1 || memcmp(text, MAGIC, sizeof(MAGIC) - 1)
        != 0)
    {
        snprintf(err, n, "line 1: not \"%.*s\": not a file of "
                 "--keys-export", (int) sizeof(MAGIC) - 2, MAGIC);
        return -1;
    }
    bio = BIO_new_mem_buf(text, (int) len);
    if (bio == NULL) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    rc = 0;
    for (num = 1; rc == 0; num++) {
        ERR_clear_error();
        if (!PEM_read_bio(bio, &name, &header, &data, &dlen)) {
            e = ERR_peek_last_error();
            if (ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
                snprintf(err, n, "block %d: not PEM (%s)", num,
                         ERR_reason_error_string(e) ? ERR_reason_error_string(e)
                         : "cut short");
                rc = -1;
            }
            break;
        }
        rc = keys_block(kf, num, name, data, dlen, err, n);
        OPENSSL_cleanse(data, (size_t) dlen);
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
    }
    ERR_clear_error();
    BIO_free(bio);
    if (rc != 0) {
        return -1;
    }
    if (!kf->have_secret || kf->ca_key == NULL || kf->ca == NULL) {
        snprintf(err, n, "no %s block: a file of --keys-export holds "
                 PEM_SECRETS ", PRIVATE KEY and CERTIFICATE",
                 !kf->have_secret ? PEM_SECRETS : kf->ca_key == NULL
                 ? "PRIVATE KEY" : "CERTIFICATE");
        return -1;
    }
    if (X509_check_private_key(kf->ca, kf->ca_key) != 1) {
        ERR_clear_error();
        snprintf(err, n, "the PRIVATE KEY is not the key of the "
                 "CERTIFICATE");
        return -1;
    }
    secrets_id_of(kf->secret, kf->id.secrets);
    if (ca_id_of(kf->ca, kf->id.ca) != 0) {
        snprintf(err, n, "cannot hash the CERTIFICATE");
        return -1;
    }
    if (keys_header_check(text, "secrets.key id: ", kf->id.secrets, err, n)
        != 0 || keys_header_check(text, "ca id: ", kf->id.ca, err, n) != 0)
    {
        return -1;
    }
    return 0;
}


static char *
keys_read(const char *file, size_t *len, char *err, size_t n)
{
    char  *buf;

    buf = read_file(file, FILE_MAX, len);
    if (buf == NULL) {
        if (errno == EINVAL || errno == EFBIG) {
            snprintf(err, n, "not a regular file of at most %d bytes",
                     FILE_MAX);
        } else if (errno == EIO) {
            snprintf(err, n, "cannot read it");
        } else {
            snprintf(err, n, "%s", strerror(errno));
        }
    }
    return buf;
}


/* the files, CA first; a gateway certificate of another CA goes */
static int
keys_install(struct keys_file *kf, int ca, int secret, char *err, size_t n)
{
    char  dir[4200], path[4300];

    fmt(dir, sizeof(dir), "%s/tls", conf->state_dir);
    if (mkdir_p(dir, 0755) != 0) {
        snprintf(err, n, "cannot create %.400s: %s", dir, strerror(errno));
        return -1;
    }
    if (ca) {
        fmt(path, sizeof(path), "%s/ca.key", dir);
        if (pem_save(path, pem_write_key, kf->ca_key, 0600) != 0) {
            goto fail;
        }
        fmt(path, sizeof(path), "%s/ca.crt", dir);
        if (pem_save(path, pem_write_cert, kf->ca, 0644) != 0) {
            goto fail;
        }
        /* signed by the CA replaced: the next leader makes one anew */
        fmt(path, sizeof(path), "%s/gateway.crt", dir);
        unlink(path);
        fmt(path, sizeof(path), "%s/gateway.key", dir);
        unlink(path);
    }
    if (secret) {
        fmt(path, sizeof(path), "%s/secrets.key", conf->state_dir);
        if (write_file_atomic(path, (const char *) kf->secret, KEY_LEN,
                              0600) != 0)
        {
            goto fail;
        }
    }
    return 0;

fail:
    snprintf(err, n, "cannot write %.400s: %s", path, strerror(errno));
    return -1;
}


int
keys_import(const char *file, int force)
{
    struct keys_file  kf;
    struct keys_id    have;
    char              err[512], *text, a[20], b[20];
    size_t            len;
    int               ca, secret, rc;

    memset(&kf, 0, sizeof(kf));
    text = keys_read(file, &len, err, sizeof(err));
    rc = text != NULL ? keys_parse(text, len, &kf, err, sizeof(err)) : -1;
    if (text != NULL) {
        OPENSSL_cleanse(text, len);
        free(text);
    }
    if (rc != 0) {
        fprintf(stderr, "dstack-controld: --keys-import %s: %s; nothing "
                "was changed\n", file, err);
        keys_file_free(&kf);
        return 1;
    }
    if (local_ids(&have, err, sizeof(err)) != 0) {
        if (!force) {
            fprintf(stderr, "dstack-controld: --keys-import %s: %s; "
                    "nothing was changed (--force replaces the files)\n",
                    file, err);
            keys_file_free(&kf);
            return 1;
        }
        memset(&have, 0, sizeof(have));
        have.secrets[0] = have.ca[0] = '?';
    }
    secret = strcmp(have.secrets, kf.id.secrets) != 0;
    ca = strcmp(have.ca, kf.id.ca) != 0;
    if (!force && ((secret && have.secrets[0] != '\0')
                   || (ca && have.ca[0] != '\0')))
    {
        fprintf(stderr, "dstack-controld: --keys-import %s: %s has other "
                "keys (%s here, %s in the file): nothing was changed; "
                "--force replaces them (what they sealed cannot be opened "
                "any more)\n", file, conf->state_dir,
                secret && have.secrets[0] != '\0'
                ? short_id(have.secrets, a, sizeof(a))
                : short_id(have.ca, a, sizeof(a)),
                secret && have.secrets[0] != '\0'
                ? short_id(kf.id.secrets, b, sizeof(b))
                : short_id(kf.id.ca, b, sizeof(b)));
        keys_file_free(&kf);
        return 1;
    }
    if (!ca && !secret) {
        fprintf(stderr, "dstack-controld: %s already has these keys (key "
                "id %.12s.., CA sha256 %.12s..)\n", conf->state_dir,
                kf.id.secrets, kf.id.ca);
        keys_file_free(&kf);
        return 0;
    }
    rc = keys_install(&kf, ca, secret, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "dstack-controld: --keys-import %s: %s\n", file,
                err);
    } else {
        fprintf(stderr, "dstack-controld: imported into %s: secrets.key "
                "(key id %.12s..) and the CA (sha256 %.12s..)\n",
                conf->state_dir, kf.id.secrets, kf.id.ca);
    }
    keys_file_free(&kf);
    return rc == 0 ? 0 : 1;
}
