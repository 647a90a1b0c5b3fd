/*
 * PEM in and out (see pem.h).  One home for what tls.c (the local CA and
 * gateway certificate, ACME's files) and keys.c (--keys-export and
 * --keys-import of the CA) both read and write.  Not in util.c: these
 * need libcrypto, and util.c is linked into unit tests that do not link
 * it.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "pem.h"
#include "util.h"


/* what pem_read reads */
#define PEM_CERT                0
#define PEM_KEY                 1


static void *
pem_read(const char *path, int what)
{
    FILE  *fp;
    void  *obj;

    fp = fopen(path, "r");
    if (fp == NULL) {
        return NULL;
    }
    if (what == PEM_CERT) {
        obj = PEM_read_X509(fp, NULL, NULL, NULL);
    } else {
        obj = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
    }
    fclose(fp);
    /* none is an answer, not an error for the next caller to find */
    ERR_clear_error();
    return obj;
}


X509 *
pem_read_cert(const char *path)
{
    return pem_read(path, PEM_CERT);
}


EVP_PKEY *
pem_read_key(const char *path)
{
    return pem_read(path, PEM_KEY);
}


int
pem_write_cert(BIO *bio, void *x509)
{
    return PEM_write_bio_X509(bio, x509);
}


int
pem_write_key(BIO *bio, void *pkey)
{
    return PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL);
}


char *
pem_bio_text(BIO *bio, size_t *len)
{
    char  *data, *out;
    long   n;

    n = BIO_get_mem_data(bio, &data);
    out = malloc((size_t) n + 1);
    if (out != NULL) {
        memcpy(out, data, (size_t) n);
        out[n] = '\0';
        *len = (size_t) n;
    }
    return out;
}


char *
pem_text(pem_writer_t write, void *obj, size_t *len)
{
    BIO   *bio;
    char  *text;

    bio = BIO_new(BIO_s_mem());
    text = bio != NULL && write(bio, obj) ? pem_bio_text(bio, len) : NULL;
    BIO_free(bio);
    return text;
}


int
pem_save(const char *path, pem_writer_t write, void *obj, unsigned mode)
{
    char    *text;
    size_t   len;
    int      rc, saved;

    text = pem_text(write, obj, &len);
    if (text == NULL) {
        errno = ENOMEM;
        return -2;
    }
    rc = write_file_atomic(path, text, len, mode);
    saved = errno;
    OPENSSL_cleanse(text, len);
    free(text);
    errno = saved;
    return rc;
}
