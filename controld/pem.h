/*
 * PEM in and out (pem.c), for tls.c and keys.c: certificates and private
 * keys read from files, objects written as PEM text or into files.
 */

#ifndef CONTROLD_PEM_H
#define CONTROLD_PEM_H

#include <stddef.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

/* writes one object to a BIO as PEM: 1, or 0 on failure */
typedef int (*pem_writer_t)(BIO *bio, void *obj);

/* the first certificate, or private key, of a PEM file; NULL when the
 * file cannot be opened (errno) or holds none; OpenSSL's error queue is
 * left empty */
X509 *pem_read_cert(const char *path);
EVP_PKEY *pem_read_key(const char *path);

int pem_write_cert(BIO *bio, void *x509);
/* unencrypted: the file's mode guards it */
int pem_write_key(BIO *bio, void *pkey);

/* a memory BIO's contents, copied and NUL-terminated; NULL when out of
 * memory */
char *pem_bio_text(BIO *bio, size_t *len);
/* OBJ as PEM text (malloc'd, NUL-terminated); NULL when it cannot be
 * encoded (OpenSSL's error queue says why) */
char *pem_text(pem_writer_t write, void *obj, size_t *len);
/*
 * OBJ as PEM in PATH, atomically, with MODE; the text is wiped from
 * memory (it may be a key).  0; -1 when it cannot be written (errno);
 * -2 when it cannot be encoded (errno ENOMEM, OpenSSL's error queue says
 * why).
 */
int pem_save(const char *path, pem_writer_t write, void *obj,
    unsigned mode);

#endif /* CONTROLD_PEM_H */
