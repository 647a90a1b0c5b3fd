/*
 * Tokens: SHA-256 to store them, a constant-time compare, and generation
 * from the kernel's random source.
 *
 * SHA-256 is written from FIPS 180-4 (sections 4.1.2, 4.2.2, 5.3.3, 6.2)
 * so that the three programs need no crypto library for it; tokens are
 * short, so simplicity matters more than speed here.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "ds_state.h"


typedef struct {
    uint32_t        h[8];
    uint64_t        total;          /* bytes hashed so far */
    uint8_t         block[64];
    size_t          used;           /* bytes waiting in block */
} ds_sha256_ctx_t;


/* the first 32 bits of the fractional parts of the cube roots of primes */
static const uint32_t  ds_sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5,
    0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
    0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5,
    0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};


#define ROTR(x, n)      (((x) >> (n)) | ((x) << (32 - (n))))
#define CH(x, y, z)     (((x) & (y)) ^ (~(x) & (z)))
#define MAJ(x, y, z)    (((x) & (y)) ^ ((x) & (z)) ^ ((y) & (z)))
#define BSIG0(x)        (ROTR(x, 2) ^ ROTR(x, 13) ^ ROTR(x, 22))
#define BSIG1(x)        (ROTR(x, 6) ^ ROTR(x, 11) ^ ROTR(x, 25))
#define SSIG0(x)        (ROTR(x, 7) ^ ROTR(x, 18) ^ ((x) >> 3))
#define SSIG1(x)        (ROTR(x, 17) ^ ROTR(x, 19) ^ ((x) >> 10))


static void
ds_sha256_init(ds_sha256_ctx_t *c)
{
    /* the first 32 bits of the fractional parts of the square roots */
    static const uint32_t  h0[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
    };

    memcpy(c->h, h0, sizeof(h0));
    c->total = 0;
    c->used = 0;
}


static void
ds_sha256_block(ds_sha256_ctx_t *c, const uint8_t *p)
{
    int       t;
    uint32_t  w[64], a, b, cc, d, e, f, g, h, t1, t2;

    for (t = 0; t < 16; t++) {
        w[t] = (uint32_t) p[4 * t] << 24 | (uint32_t) p[4 * t + 1] << 16
               | (uint32_t) p[4 * t + 2] << 8 | (uint32_t) p[4 * t + 3];
    }

    for (t = 16; t < 64; t++) {
        w[t] = SSIG1(w[t - 2]) + w[t - 7] + SSIG0(w[t - 15]) + w[t - 16];
    }

    a = c->h[0];
    b = c->h[1];
    cc = c->h[2];
    d = c->h[3];
    e = c->h[4];
    f = c->h[5];
    g = c->h[6];
    h = c->h[7];

    for (t = 0; t < 64; t++) {
        t1 = h + BSIG1(e) + CH(e, f, g) + ds_sha256_k[t] + w[t];
        t2 = BSIG0(a) + MAJ(a, b, cc);
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = cc;
        cc = b;
        b = a;
        a = t1 + t2;
    }

    c->h[0] += a;
    c->h[1] += b;
    c->h[2] += cc;
    c->h[3] += d;
    c->h[4] += e;
    c->h[5] += f;
    c->h[6] += g;
    c->h[7] += h;
}


static void
ds_sha256_update(ds_sha256_ctx_t *c, const uint8_t *p, size_t len)
{
    size_t  n;

    c->total += len;

    if (c->used > 0) {
        n = 64 - c->used;
        if (n > len) {
            n = len;
        }

        memcpy(c->block + c->used, p, n);
        c->used += n;
        p += n;
        len -= n;

        if (c->used < 64) {
            return;
        }

        ds_sha256_block(c, c->block);
        c->used = 0;
    }

    while (len >= 64) {
        ds_sha256_block(c, p);
        p += 64;
        len -= 64;
    }

    if (len > 0) {
        memcpy(c->block, p, len);
        c->used = len;
    }
}


/* padding: 0x80, zeros up to 56 mod 64, the length in bits big-endian */
static void
ds_sha256_final(ds_sha256_ctx_t *c, uint8_t out[32])
{
    int       i;
    uint64_t  bits;

    bits = c->total * 8;

    c->block[c->used++] = 0x80;

    if (c->used > 56) {
        memset(c->block + c->used, 0, 64 - c->used);
        ds_sha256_block(c, c->block);
        c->used = 0;
    }

    memset(c->block + c->used, 0, 56 - c->used);

    for (i = 0; i < 8; i++) {
        c->block[56 + i] = (uint8_t) (bits >> (56 - 8 * i));
    }

    ds_sha256_block(c, c->block);

    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t) (c->h[i] >> 24);
        out[4 * i + 1] = (uint8_t) (c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t) (c->h[i] >> 8);
        out[4 * i + 3] = (uint8_t) c->h[i];
    }
}


void
ds_sha256(const void *data, size_t len, uint8_t out[32])
{
    ds_sha256_ctx_t  c;

    ds_sha256_init(&c);
    ds_sha256_update(&c, data, len);
    ds_sha256_final(&c, out);

    memset(&c, 0, sizeof(c));
}


/*
 * Every byte is looked at whatever the differences, and the result is
 * derived without a data-dependent branch; volatile keeps the compiler
 * from ending the loop early.
 */
int
ds_ct_equal(const void *a, const void *b, size_t len)
{
    size_t          i;
    uint64_t        wa, wb, diff;
    const uint8_t  *pa, *pb;

    /*
     * Every byte is read whatever the data; eight at a time, because the
     * gateway runs this on every authenticated request.  The result is
     * made from the accumulated difference without a data-dependent
     * branch; the barrier keeps the compiler from ending the loop early.
     */
    pa = a;
    pb = b;
    diff = 0;

    for (i = 0; i + 8 <= len; i += 8) {
        memcpy(&wa, pa + i, 8);
        memcpy(&wb, pb + i, 8);
        diff |= wa ^ wb;
        __asm__ __volatile__("" : "+r" (diff));
    }

    for ( /* void */ ; i < len; i++) {
        diff |= (uint64_t) (pa[i] ^ pb[i]);
        __asm__ __volatile__("" : "+r" (diff));
    }

    diff |= diff >> 32;
    diff |= diff >> 16;
    diff |= diff >> 8;

    return (int) (1 & (((unsigned) (diff & 0xff) - 1) >> 8));
}


static void
ds_crypto_err(ds_err_t *err, const char *what, int e)
{
    if (err != NULL) {
        snprintf(err->msg, sizeof(err->msg), "%s: %s", what,
                 e ? strerror(e) : "unexpected end of file");
    }
}


static int
ds_random_urandom(uint8_t *p, size_t len, ds_err_t *err)
{
    int      fd;
    ssize_t  n;

    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        ds_crypto_err(err, "cannot open /dev/urandom", errno);
        return DS_ERROR;
    }

    while (len > 0) {
        n = read(fd, p, len);
        if (n == -1 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            ds_crypto_err(err, "cannot read /dev/urandom", n ? errno : 0);
            close(fd);
            return DS_ERROR;
        }

        p += n;
        len -= (size_t) n;
    }

    close(fd);
    return DS_OK;
}


static int
ds_random(uint8_t *p, size_t len, ds_err_t *err)
{
    ssize_t  n;

    while (len > 0) {
        n = getrandom(p, len, 0);
        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }

            /* kernels before 3.17, or a seccomp filter that hides it */
            if (errno == ENOSYS || errno == EPERM) {
                return ds_random_urandom(p, len, err);
            }

            ds_crypto_err(err, "getrandom() failed", errno);
            return DS_ERROR;
        }

        p += n;
        len -= (size_t) n;
    }

    return DS_OK;
}


int
ds_token_generate(char buf[DS_TOKEN_TEXT_LEN + 1], ds_err_t *err)
{
    static const char  b64url[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    uint8_t   raw[32];
    uint32_t  v;
    size_t    i, o;
    int       rc;

    rc = ds_random(raw, 32, err);
    if (rc != DS_OK) {
        return rc;
    }

    memcpy(buf, "dst_", 4);
    o = 4;

    /*
     * 32 bytes are 10 groups of 3 (40 chars) and 2 bytes left (3 chars,
     * unpadded).
     */
    for (i = 0; i < 32; i += 3) {
        v = (uint32_t) raw[i] << 16 | (uint32_t) raw[i + 1] << 8
            | (i + 2 < 32 ? raw[i + 2] : 0);

        buf[o++] = b64url[(v >> 18) & 0x3f];
        buf[o++] = b64url[(v >> 12) & 0x3f];
        buf[o++] = b64url[(v >> 6) & 0x3f];

        if (i + 2 < 32) {
            buf[o++] = b64url[v & 0x3f];
        }
    }

    buf[o] = '\0';

    memset(raw, 0, sizeof(raw));
    return DS_OK;
}
