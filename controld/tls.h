/*
 * Certificates for the gateway (tls.c): the local CA, ACME.
 */

#ifndef CONTROLD_TLS_H
#define CONTROLD_TLS_H

#include <stdint.h>
#include <sys/types.h>

/* the local CA and gateway certificate; the ACME hook and directories */
int tls_init(void);
void tls_stop(void);
/* ACME: issue and renew, from the loop's tick */
void tls_tick(void);
/* 1 when pid was an ACME child */
int tls_child_exited(pid_t pid, int status);

/* what the API shows of a run's certificate */
struct tls_status {
    const char     *host;
    const char     *status;     /* issuing renewing failed valid pending */
    uint64_t        not_after;  /* 0: none */
    const char     *error;      /* "" when none */
};

/* the certificate of run `name`; 0, or -1 when it has none (no ACME) */
int tls_run_status(const char *name, struct tls_status *st);

/* each certificate's name ("*.<domain>", "<run>.<domain>"), where it
 * came from ("local" or "acme") and its end (unix time); the number of
 * ACME runs that failed since the start */
typedef void (*tls_cert_fn)(const char *name, const char *source,
    uint64_t not_after, void *arg);
unsigned long long tls_metrics(tls_cert_fn fn, void *arg);

#endif /* CONTROLD_TLS_H */
