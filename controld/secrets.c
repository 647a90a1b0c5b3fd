/*
 * Secrets: dstack's `dstack secret set|get|list|delete` and the
 * `${{ secrets.NAME }}` references of specs (common/ds_secret.h).
 *
 * The LMDB state is readable by nginx's group (the gateway reads it), so
 * a value is never stored in clear: each record is sealed with
 * AES-256-GCM under a key in <state_dir>/secrets.key (32 random bytes,
 * 0600, made at the first start like the TLS CA), which only this root
 * process reads; the API process (exec'd, unprivileged) never holds it.
 * A record (little-endian):
 *
 *   0  "DSSE"  4  u16 version (1)  6  u16 0
 *   8  u64 created  16  u64 updated            (unix seconds)
 *   24 nonce[12]  36 tag[16]  52 ciphertext (as long as the value)
 *
 * The first 24 bytes and the name are the cipher's associated data: a
 * record moved under another name, or its times changed, does not open.
 * A new nonce for every write, from the kernel's generator.
 *
 * Values leave this file only towards a replica: in its environment
 * (backend_local, backend_container, backend_ssh) or its registry's
 * credentials.  What is logged names secrets, never values.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "config.h"
#include "ds_secret.h"
#include "log.h"
#include "secrets.h"
#include "store.h"
#include "util.h"


#define SEC_KEY_LEN             32
#define SEC_NONCE_LEN           12
#define SEC_TAG_LEN             16
#define SEC_MAGIC               "DSSE"
#define SEC_VERSION             1
#define SEC_AAD_LEN             24      /* magic, version, times */
#define SEC_HDR_LEN             (SEC_AAD_LEN + SEC_NONCE_LEN + SEC_TAG_LEN)

static unsigned char    sec_key[SEC_KEY_LEN];
static int              sec_have_key;


/* ---- the key ------------------------------------------------------------ */

static int
sec_count_cb(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    (void) key;
    (void) val;
    (*(int *) arg)++;
    return 0;
}


static int
sec_count(void)
{
    ds_txn_t  *txn;
    ds_err_t   err;
    int        count = 0;

    if (ds_txn_begin(state, 0, &txn, &err) != DS_OK) {
        log_warnx("secrets: %s", err.msg);
        return -1;
    }
    if (ds_foreach_secret(txn, sec_count_cb, &count, &err) != DS_OK) {
        log_warnx("secrets: %s", err.msg);
        count = -1;
    }
    ds_txn_abort(txn);
    return count;
}


static int
sec_key_make(const char *path)
{
    int  count;

    /* a new key cannot open what an old one sealed: say so, not lose them */
    count = sec_count();
    if (count != 0) {
        if (count > 0) {
            log_warnx("secrets: %s is missing, and the state holds %d "
                      "secret%s sealed with it: restore the file (or delete "
                      "the secrets with a state of their own)", path, count,
                      count == 1 ? "" : "s");
        }
        return -1;
    }
    if (RAND_bytes(sec_key, SEC_KEY_LEN) != 1) {
        log_warnx("secrets: no random bytes for a key");
        return -1;
    }
    if (write_file_atomic(path, (const char *) sec_key, SEC_KEY_LEN, 0600)
        != 0)
    {
        log_warn("secrets: cannot write %s", path);
        explicit_bzero(sec_key, sizeof(sec_key));
        return -1;
    }
    log_info("secrets: made a key: %s", path);
    return 0;
}


int
secrets_init(void)
{
    char         path[4096];
    struct stat  sb;
    ssize_t      r;
    int          fd;

    if (fmt(path, sizeof(path), "%s/secrets.key", conf->state_dir) != 0) {
        log_warnx("secrets: state_dir is too long");
        return -1;
    }

    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if (sec_key_make(path) != 0) {
            return -1;
        }
        sec_have_key = 1;
        return 0;
    }
    if (fd < 0) {
        log_warn("secrets: cannot open %s", path);
        return -1;
    }

    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)
        || sb.st_size != SEC_KEY_LEN)
    {
        log_warnx("secrets: %s is not a key of %d bytes", path, SEC_KEY_LEN);
        close(fd);
        return -1;
    }
    if (sb.st_uid != geteuid() || (sb.st_mode & 077) != 0) {
        log_warnx("secrets: %s: mode %03o, owner %u: others may read the "
                  "key (chown it to this user, chmod 600)", path,
                  (unsigned) (sb.st_mode & 0777), (unsigned) sb.st_uid);
        close(fd);
        return -1;
    }

    r = read(fd, sec_key, SEC_KEY_LEN);
    close(fd);
    if (r != SEC_KEY_LEN) {
        log_warnx("secrets: cannot read %s", path);
        explicit_bzero(sec_key, sizeof(sec_key));
        return -1;
    }
    sec_have_key = 1;
    return 0;
}


void
secrets_shutdown(void)
{
    explicit_bzero(sec_key, sizeof(sec_key));
    sec_have_key = 0;
}


/* ---- records ------------------------------------------------------------ */

static void
put_le(unsigned char *p, uint64_t v, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        p[i] = (unsigned char) (v >> (8 * i));
    }
}


static uint64_t
get_le(const unsigned char *p, size_t n)
{
    uint64_t  v = 0;
    size_t    i;

    for (i = 0; i < n; i++) {
        v |= (uint64_t) p[i] << (8 * i);
    }
    return v;
}


/* the associated data: the record's first bytes, then the name */
static size_t
sec_aad(const unsigned char *hdr, const char *name, size_t nlen,
    unsigned char *aad)
{
    memcpy(aad, hdr, SEC_AAD_LEN);
    memcpy(aad + SEC_AAD_LEN, name, nlen);
    return SEC_AAD_LEN + nlen;
}


/* a new record for value (vlen bytes) in *rec (free it), or -1 */
static int
sec_seal(const char *name, const char *value, size_t vlen, uint64_t created,
    uint64_t updated, unsigned char **rec, size_t *rlen)
{
    EVP_CIPHER_CTX  *ctx;
    unsigned char   *r, aad[SEC_AAD_LEN + DS_SECRET_KEY_MAX];
    size_t           alen;
    int              len, ok;

    r = xcalloc(1, SEC_HDR_LEN + vlen + 1);
    memcpy(r, SEC_MAGIC, 4);
    put_le(r + 4, SEC_VERSION, 2);
    put_le(r + 8, created, 8);
    put_le(r + 16, updated, 8);
    if (RAND_bytes(r + SEC_AAD_LEN, SEC_NONCE_LEN) != 1) {
        free(r);
        return -1;
    }
    alen = sec_aad(r, name, strlen(name), aad);

    ctx = EVP_CIPHER_CTX_new();
    ok = ctx != NULL
         && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SEC_NONCE_LEN,
                                NULL) == 1
         && EVP_EncryptInit_ex(ctx, NULL, NULL, sec_key,
                               r + SEC_AAD_LEN) == 1
         && EVP_EncryptUpdate(ctx, NULL, &len, aad, (int) alen) == 1
         && EVP_EncryptUpdate(ctx, r + SEC_HDR_LEN, &len,
                              (const unsigned char *) value, (int) vlen) == 1
         && EVP_EncryptFinal_ex(ctx, r + SEC_HDR_LEN + len, &len) == 1
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEC_TAG_LEN,
                                r + SEC_AAD_LEN + SEC_NONCE_LEN) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        free(r);
        return -1;
    }
    *rec = r;
    *rlen = SEC_HDR_LEN + vlen;
    return 0;
}


/* the record's header is one we wrote: 0 and its times, or -1 */
static int
sec_header(const ds_str_t *rec, uint64_t *created, uint64_t *updated)
{
    const unsigned char  *p = (const unsigned char *) rec->data;

    if (rec->len < SEC_HDR_LEN || memcmp(p, SEC_MAGIC, 4) != 0
        || get_le(p + 4, 2) != SEC_VERSION)
    {
        return -1;
    }
    *created = get_le(p + 8, 8);
    *updated = get_le(p + 16, 8);
    return 0;
}


/* the value of a record, NUL-terminated, in *value (secrets_free it) */
static int
sec_open(const char *name, size_t nlen, const ds_str_t *rec, char **value,
    char *err, size_t n)
{
    EVP_CIPHER_CTX       *ctx;
    const unsigned char  *p = (const unsigned char *) rec->data;
    unsigned char         aad[SEC_AAD_LEN + DS_SECRET_KEY_MAX],
                          tag[SEC_TAG_LEN];
    char                 *v;
    size_t                alen, vlen;
    uint64_t              c, u;
    int                   len, ok;

    if (!sec_have_key || nlen > DS_SECRET_KEY_MAX
        || sec_header(rec, &c, &u) != 0)
    {
        snprintf(err, n, "secret \"%.*s\": not a record of this version",
                 (int) nlen, name);
        return -1;
    }
    vlen = rec->len - SEC_HDR_LEN;
    alen = sec_aad(p, name, nlen, aad);
    memcpy(tag, p + SEC_AAD_LEN + SEC_NONCE_LEN, SEC_TAG_LEN);
    v = xcalloc(1, vlen + 1);

    ctx = EVP_CIPHER_CTX_new();
    ok = ctx != NULL
         && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SEC_NONCE_LEN,
                                NULL) == 1
         && EVP_DecryptInit_ex(ctx, NULL, NULL, sec_key,
                               p + SEC_AAD_LEN) == 1
         && EVP_DecryptUpdate(ctx, NULL, &len, aad, (int) alen) == 1
         && EVP_DecryptUpdate(ctx, (unsigned char *) v, &len,
                              p + SEC_HDR_LEN, (int) vlen) == 1
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SEC_TAG_LEN,
                                tag) == 1
         && EVP_DecryptFinal_ex(ctx, (unsigned char *) v + len, &len) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        secrets_free(v);
        snprintf(err, n, "secret \"%.*s\": cannot be decrypted (is "
                 "secrets.key the one it was sealed with?)", (int) nlen,
                 name);
        return -1;
    }
    *value = v;
    return 0;
}


void
secrets_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}


/* ---- the API ------------------------------------------------------------ */

/* {"name"} or {"name","value"} (with_value): checked, or 400 */
static int
sec_args(const cJSON *req, int with_value, const char **name,
    const char **value, size_t *vlen, char *err, size_t n)
{
    const cJSON  *it;

    *name = NULL;
    *value = NULL;
    cJSON_ArrayForEach(it, req) {
        if (strcmp(it->string, "name") == 0) {
            if (!cJSON_IsString(it)) {
                snprintf(err, n, "name: expected a string");
                return 400;
            }
            *name = it->valuestring;
        } else if (with_value && strcmp(it->string, "value") == 0) {
            if (!cJSON_IsString(it)) {
                snprintf(err, n, "value: expected a string");
                return 400;
            }
            *value = it->valuestring;
        } else {
            snprintf(err, n, "unknown field \"%.80s\"", it->string);
            return 400;
        }
    }
    if (*name == NULL) {
        snprintf(err, n, "name: required");
        return 400;
    }
    if (!ds_secret_name_ok(*name, strlen(*name))) {
        snprintf(err, n, "name: \"%.80s%s\" is not a valid secret name (1 "
                 "to %d letters, digits, \"_\" or \"-\")", *name,
                 strlen(*name) > 80 ? "..." : "", DS_SECRET_NAME_MAX);
        return 400;
    }
    if (with_value && *value == NULL) {
        snprintf(err, n, "value: required");
        return 400;
    }
    if (with_value) {
        *vlen = strlen(*value);
        if (*vlen > DS_SECRET_VALUE_MAX) {
            snprintf(err, n, "value: %zu bytes, more than the %d a secret "
                     "may hold", *vlen, DS_SECRET_VALUE_MAX);
            return 400;
        }
    }
    return 0;
}


/*
 * The key of a secret of project pkey ("" for main): its name, or
 * "<project>/<name>" ("/" is in no secret name).  The key is also what a
 * record is sealed with, so a record moved to another project's key does
 * not open.
 */
static void
sec_record_key(const char *pkey, const char *name, size_t nlen, char *key,
    size_t size)
{
    if (pkey[0] == '\0') {
        snprintf(key, size, "%.*s", (int) nlen, name);
    } else {
        snprintf(key, size, "%s/%.*s", pkey, (int) nlen, name);
    }
}


/* the record of name in txn: 1 and it, 0 when none, -1 on an error */
static int
sec_find(ds_txn_t *txn, const char *name, size_t nlen, ds_str_t *rec,
    char *err, size_t n)
{
    ds_err_t  e;
    int       rc;

    rc = ds_get_secret(txn, name, nlen, rec, &e);
    if (rc == DS_NOTFOUND) {
        return 0;
    }
    if (rc != DS_OK) {
        fmt(err, n, "secrets: %s", e.msg);
        return -1;
    }
    return 1;
}


static cJSON *
sec_object(const char *name, uint64_t created, uint64_t updated)
{
    cJSON  *o;

    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddNumberToObject(o, "created", (double) created);
    cJSON_AddNumberToObject(o, "updated", (double) updated);
    return o;
}


int
secrets_set(const char *pkey, const cJSON *req, const char *who,
    cJSON **answer, int *created, char *err, size_t n)
{
    const char        *name, *value;
    char               key[DS_SECRET_KEY_MAX + 1];
    size_t             vlen = 0, rlen;
    ds_txn_t          *txn;
    ds_err_t           e;
    ds_str_t           old;
    uint64_t           now, c, u;
    unsigned char     *rec;
    struct store_txn  *t;
    int                rc, found;

    rc = sec_args(req, 1, &name, &value, &vlen, err, n);
    if (rc != 0) {
        return rc;
    }
    if (!sec_have_key) {
        snprintf(err, n, "secrets: no key (see controld's log)");
        return 500;
    }

    sec_record_key(pkey, name, strlen(name), key, sizeof(key));
    now = (uint64_t) time(NULL);
    c = now;
    if (ds_txn_begin(state, 0, &txn, &e) != DS_OK) {
        snprintf(err, n, "secrets: %s", e.msg);
        return 500;
    }
    found = sec_find(txn, key, strlen(key), &old, err, n);
    if (found == 1 && sec_header(&old, &c, &u) != 0) {
        c = now;
    }
    ds_txn_abort(txn);
    if (found < 0) {
        return 500;
    }

    if (sec_seal(key, value, vlen, c, now, &rec, &rlen) != 0) {
        snprintf(err, n, "secret \"%s\": cannot be encrypted", name);
        return 500;
    }
    t = store_begin(err, n);
    if (t == NULL) {
        free(rec);
        return 500;
    }
    store_put_secret(t, key, rec, rlen);
    rc = store_end(t);
    free(rec);
    if (rc != STORE_OK) {
        return 500;
    }

    log_info("secret \"%s\"%s%s: %s by %s", name, pkey[0] ? " of project "
             : "", pkey, found ? "updated" : "created", who);
    *created = !found;
    *answer = sec_object(name, c, now);
    return 0;
}


int
secrets_get(const char *pkey, const cJSON *req, cJSON **answer, char *err,
    size_t n)
{
    const char  *name, *value;
    char        *v, key[DS_SECRET_KEY_MAX + 1];
    size_t       vlen;
    ds_txn_t    *txn;
    ds_err_t     e;
    ds_str_t     rec;
    uint64_t     c, u;
    int          rc;

    rc = sec_args(req, 0, &name, &value, &vlen, err, n);
    if (rc != 0) {
        return rc;
    }
    if (ds_txn_begin(state, 0, &txn, &e) != DS_OK) {
        snprintf(err, n, "secrets: %s", e.msg);
        return 500;
    }
    sec_record_key(pkey, name, strlen(name), key, sizeof(key));
    rc = sec_find(txn, key, strlen(key), &rec, err, n);
    if (rc <= 0) {
        ds_txn_abort(txn);
        if (rc == 0) {
            snprintf(err, n, "secret \"%s\" not found", name);
            return 404;
        }
        return 500;
    }
    if (sec_header(&rec, &c, &u) != 0) {
        ds_txn_abort(txn);
        snprintf(err, n, "secret \"%s\": not a record of this version",
                 name);
        return 500;
    }
    if (sec_open(key, strlen(key), &rec, &v, err, n) != 0) {
        ds_txn_abort(txn);
        return 500;
    }
    ds_txn_abort(txn);

    *answer = sec_object(name, c, u);
    cJSON_AddStringToObject(*answer, "value", v);
    secrets_free(v);
    return 0;
}


int
secrets_delete(const char *pkey, const cJSON *req, const char *who,
    cJSON **answer, char *err, size_t n)
{
    const char        *name, *value;
    char               key[DS_SECRET_KEY_MAX + 1];
    size_t             vlen;
    ds_txn_t          *txn;
    ds_err_t           e;
    ds_str_t           rec;
    struct store_txn  *t;
    int                rc;

    rc = sec_args(req, 0, &name, &value, &vlen, err, n);
    if (rc != 0) {
        return rc;
    }
    if (ds_txn_begin(state, 0, &txn, &e) != DS_OK) {
        snprintf(err, n, "secrets: %s", e.msg);
        return 500;
    }
    sec_record_key(pkey, name, strlen(name), key, sizeof(key));
    rc = sec_find(txn, key, strlen(key), &rec, err, n);
    ds_txn_abort(txn);
    if (rc < 0) {
        return 500;
    }
    if (rc == 0) {
        snprintf(err, n, "secret \"%s\" not found", name);
        return 404;
    }

    t = store_begin(err, n);
    if (t == NULL) {
        return 500;
    }
    store_del_secret(t, key);
    if (store_end(t) != STORE_OK) {
        return 500;
    }

    log_info("secret \"%s\"%s%s: deleted by %s", name,
             pkey[0] ? " of project " : "", pkey, who);
    *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(*answer, "name", name);
    cJSON_AddBoolToObject(*answer, "deleted", 1);
    return 0;
}


struct sec_list {
    cJSON          *list;
    const char     *pkey;
};


static int
sec_list_cb(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    struct sec_list  *sl = arg;
    cJSON            *o;
    char              name[DS_SECRET_NAME_MAX + 1];
    const char       *slash;
    size_t            plen, nlen;
    uint64_t          c = 0, u = 0;

    /* main's have no "/"; project P's start with "P/" */
    slash = memchr(key->data, '/', key->len);
    plen = strlen(sl->pkey);
    if (plen == 0 ? slash != NULL
                  : (slash == NULL || (size_t) (slash - key->data) != plen
                     || memcmp(key->data, sl->pkey, plen) != 0))
    {
        return 0;
    }
    nlen = slash != NULL ? key->len - plen - 1 : key->len;
    if (nlen > DS_SECRET_NAME_MAX) {
        return 0;
    }
    memcpy(name, slash != NULL ? slash + 1 : key->data, nlen);
    name[nlen] = '\0';
    if (sec_header(val, &c, &u) != 0) {
        log_warnx("secret \"%s\": not a record of this version", name);
    }
    o = sec_object(name, c, u);
    cJSON_AddItemToArray(sl->list, o);
    return 0;
}


int
secrets_list(const char *pkey, cJSON **answer, char *err, size_t n)
{
    struct sec_list   sl;
    ds_txn_t         *txn;
    ds_err_t          e;

    if (ds_txn_begin(state, 0, &txn, &e) != DS_OK) {
        snprintf(err, n, "secrets: %s", e.msg);
        return 500;
    }
    *answer = cJSON_CreateObject();
    sl.list = cJSON_AddArrayToObject(*answer, "secrets");
    sl.pkey = pkey;
    if (ds_foreach_secret(txn, sec_list_cb, &sl, &e) != DS_OK) {
        ds_txn_abort(txn);
        cJSON_Delete(*answer);
        *answer = NULL;
        snprintf(err, n, "secrets: %s", e.msg);
        return 500;
    }
    ds_txn_abort(txn);
    return 0;
}


/* ---- references --------------------------------------------------------- */

/* a string being built from text and values: wiped when it moves */
struct sec_buf {
    ds_txn_t       *txn;
    const char     *pkey;           /* the project's secrets */
    char           *p;
    size_t          len;
    size_t          cap;
    const char     *what;           /* "env.HF_TOKEN", for messages */
    char           *err;
    size_t          n;
    int             check;          /* only check that they exist */
};


static void
sec_buf_add(struct sec_buf *b, const char *s, size_t len)
{
    char    *np;
    size_t   cap;

    if (b->len + len + 1 > b->cap) {
        cap = b->cap ? b->cap : 64;
        while (cap < b->len + len + 1) {
            cap *= 2;
        }
        np = xcalloc(1, cap);
        if (b->p != NULL) {
            memcpy(np, b->p, b->len);
            explicit_bzero(b->p, b->cap);
            free(b->p);
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, len);
    b->len += len;
    b->p[b->len] = '\0';
}


static int
sec_ref_cb(void *arg, int kind, const char *p, size_t len)
{
    struct sec_buf  *b = arg;
    ds_str_t         rec;
    char            *v, msg[512], key[DS_SECRET_KEY_MAX + 1];
    int              rc;

    if (kind == DS_REF_TEXT) {
        if (!b->check) {
            sec_buf_add(b, p, len);
        }
        return 0;
    }

    sec_record_key(b->pkey, p, len, key, sizeof(key));
    rc = sec_find(b->txn, key, strlen(key), &rec, msg, sizeof(msg));
    if (rc == 0) {
        snprintf(b->err, b->n, "%s: secret \"%.*s\" does not exist "
                 "(dstackctl secret set %.*s ...)", b->what, (int) len, p,
                 (int) len, p);
        return -1;
    }
    if (rc < 0) {
        snprintf(b->err, b->n, "%s: %s", b->what, msg);
        return -1;
    }
    if (b->check) {
        return 0;
    }
    if (sec_open(key, strlen(key), &rec, &v, msg, sizeof(msg)) != 0) {
        snprintf(b->err, b->n, "%s: %s", b->what, msg);
        return -1;
    }
    sec_buf_add(b, v, strlen(v));
    secrets_free(v);
    return 0;
}


/* s through the references: checked only, or expanded into *out */
static int
sec_walk(ds_txn_t *txn, const char *pkey, const char *what, const char *s,
    int check, char **out, char *err, size_t n)
{
    struct sec_buf  b;
    char            msg[256];
    int             rc;

    memset(&b, 0, sizeof(b));
    b.txn = txn;
    b.pkey = pkey;
    b.what = what;
    b.err = err;
    b.n = n;
    b.check = check;

    /* a malformed reference leaves err to us; a missing secret, to
     * sec_ref_cb */
    err[0] = '\0';
    msg[0] = '\0';
    rc = ds_secret_refs(s, sec_ref_cb, &b, msg, sizeof(msg));
    if (rc != 0) {
        if (b.p != NULL) {
            explicit_bzero(b.p, b.cap);
            free(b.p);
        }
        if (err[0] == '\0') {
            snprintf(err, n, "%s: %s", what, msg);
        }
        return -1;
    }
    if (!check) {
        *out = b.p != NULL ? b.p : xstrdup("");
    }
    return 0;
}


static int
sec_begin(ds_txn_t **txn, char *err, size_t n)
{
    ds_err_t  e;

    if (ds_txn_begin(state, 0, txn, &e) != DS_OK) {
        snprintf(err, n, "secrets: %s", e.msg);
        return -1;
    }
    return 0;
}


static int
sec_check_env(ds_txn_t *txn, const char *pkey, const ds_spec_env_t *env,
    size_t n_env, char *err, size_t n)
{
    char    what[DS_SECRET_NAME_MAX + 64];
    size_t  i;

    for (i = 0; i < n_env; i++) {
        if (env[i].value == NULL) {
            continue;
        }
        snprintf(what, sizeof(what), "spec.env.%s", env[i].name);
        if (sec_walk(txn, pkey, what, env[i].value, 1, NULL, err, n) != 0) {
            return -1;
        }
    }
    return 0;
}


int
secrets_check_env(const char *pkey, const ds_spec_env_t *env, size_t n_env,
    char *err, size_t n)
{
    ds_txn_t  *txn;
    int        rc;

    err[0] = '\0';
    if (sec_begin(&txn, err, n) != 0) {
        return 500;
    }
    rc = sec_check_env(txn, pkey, env, n_env, err, n);
    ds_txn_abort(txn);
    return rc == 0 ? 0 : 400;
}


int
secrets_check_spec(const char *pkey, const ds_spec_t *sp, char *err,
    size_t n)
{
    ds_txn_t  *txn;
    int        rc;

    err[0] = '\0';
    if (sec_begin(&txn, err, n) != 0) {
        return 500;
    }
    rc = sec_check_env(txn, pkey, sp->env, sp->n_env, err, n);
    if (rc == 0 && sp->registry_auth.username != NULL) {
        rc = sec_walk(txn, pkey, "spec.registry_auth.username",
                      sp->registry_auth.username, 1, NULL, err, n);
        if (rc == 0) {
            rc = sec_walk(txn, pkey, "spec.registry_auth.password",
                          sp->registry_auth.password, 1, NULL, err, n);
        }
    }
    ds_txn_abort(txn);
    return rc == 0 ? 0 : 400;
}


int
secrets_expand(const char *pkey, const char *what, const char *s,
    char **out, char *err, size_t n)
{
    ds_txn_t  *txn;
    int        rc;

    err[0] = '\0';
    if (sec_begin(&txn, err, n) != 0) {
        return -1;
    }
    rc = sec_walk(txn, pkey, what, s, 0, out, err, n);
    ds_txn_abort(txn);
    return rc;
}


int
secrets_env(const char *pkey, const ds_spec_env_t *env, size_t n_env,
    char ***values, char *err, size_t n)
{
    ds_txn_t  *txn;
    char     **v, what[DS_SECRET_NAME_MAX + 64];
    size_t     i;

    err[0] = '\0';
    if (sec_begin(&txn, err, n) != 0) {
        return -1;
    }
    v = xcalloc(n_env + 1, sizeof(char *));
    for (i = 0; i < n_env; i++) {
        snprintf(what, sizeof(what), "env.%s", env[i].name);
        if (sec_walk(txn, pkey, what, env[i].value ? env[i].value : "", 0,
                     &v[i], err, n) != 0)
        {
            ds_txn_abort(txn);
            secrets_env_free(v, i);
            return -1;
        }
    }
    ds_txn_abort(txn);
    *values = v;
    return 0;
}


void
secrets_env_free(char **values, size_t n_env)
{
    size_t  i;

    if (values == NULL) {
        return;
    }
    for (i = 0; i < n_env; i++) {
        secrets_free(values[i]);
    }
    free(values);
}
