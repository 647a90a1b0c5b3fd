/*
 * ds-bench-commit: the writer side of the propagation benchmark.
 *
 * Keeps one LMDB environment open (as controld does) and applies one
 * change per line read on stdin, each in its own write transaction
 * through common/'s writer API.  For every change it prints the
 * CLOCK_MONOTONIC times taken right before ds_txn_commit() and right
 * after it returned, so that the reader side (bench/run, the same clock)
 * can measure from the moment the commit is durable and visible rather
 * than from a process start or exit.
 *
 *   service NAME AUTH ADDR[,ADDR...]   put a service (AUTH 0 or 1) and its
 *                                      ready replicas, one transaction
 *   replicas NAME ADDR[,ADDR...]       replace a service's replica set
 *   del NAME                           delete a service (and replicas)
 *   token TEXT                         put a token for all services
 *   revoke TEXT                        delete that token
 *
 * Output, one line per input line:
 *
 *   ok BEFORE AFTER                    seconds, CLOCK_MONOTONIC
 *   err MESSAGE
 *
 * Usage: ds-bench-commit STATE_DIR
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ds_state.h"


#define LINE_MAX_LEN    8192
#define ADDRS_MAX       64


static double
now_mono(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


/* "a:1,b:2" -> ready replicas; the count, or -1 with err set */
static int
parse_addrs(char *list, ds_replica_t *reps, ds_err_t *err)
{
    int    n;
    char  *tok, *save;

    n = 0;

    for (tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save))
    {
        if (n == ADDRS_MAX) {
            snprintf(err->msg, sizeof(err->msg), "more than %d addresses",
                     ADDRS_MAX);
            return -1;
        }

        memset(&reps[n], 0, sizeof(ds_replica_t));

        if (ds_replica_parse_addr(&reps[n], tok, strlen(tok)) != DS_OK) {
            snprintf(err->msg, sizeof(err->msg), "bad address \"%s\"", tok);
            return -1;
        }

        reps[n].state = DS_REPLICA_READY;
        reps[n].weight = 1;
        reps[n].version = 1;
        n++;
    }

    return n;
}


static int
apply(ds_txn_t *txn, char *line, ds_err_t *err)
{
    int            n, rc;
    char          *op, *name, *arg1, *arg2, *save;
    uint8_t        hash[DS_TOKEN_HASH_LEN];
    ds_token_t     tok;
    ds_service_t   svc;
    ds_replica_t   reps[ADDRS_MAX];

    op = strtok_r(line, " \t\r\n", &save);
    name = strtok_r(NULL, " \t\r\n", &save);
    arg1 = strtok_r(NULL, " \t\r\n", &save);
    arg2 = strtok_r(NULL, " \t\r\n", &save);

    if (op == NULL || name == NULL) {
        snprintf(err->msg, sizeof(err->msg), "expected \"OP NAME ...\"");
        return DS_EINVAL;
    }

    if (strcmp(op, "service") == 0 && arg1 && arg2) {
        ds_service_init(&svc);
        svc.name.data = name;
        svc.name.len = (uint32_t) strlen(name);
        svc.flags = (strcmp(arg1, "1") == 0) ? DS_SERVICE_AUTH : 0;

        rc = ds_put_service(txn, &svc, err);
        if (rc != DS_OK) {
            return rc;
        }

        n = parse_addrs(arg2, reps, err);
        if (n < 0) {
            return DS_EINVAL;
        }

        return ds_put_replicas(txn, name, strlen(name), reps, (uint32_t) n,
                               err);
    }

    if (strcmp(op, "replicas") == 0 && arg1) {
        n = parse_addrs(arg1, reps, err);
        if (n < 0) {
            return DS_EINVAL;
        }

        return ds_put_replicas(txn, name, strlen(name), reps, (uint32_t) n,
                               err);
    }

    if (strcmp(op, "del") == 0) {
        return ds_del_service(txn, name, strlen(name), err);
    }

    if (strcmp(op, "token") == 0) {
        memset(&tok, 0, sizeof(tok));
        ds_sha256(name, strlen(name), tok.hash);
        tok.name.data = "bench";
        tok.name.len = sizeof("bench") - 1;
        tok.flags = DS_TOKEN_ALL_SERVICES;
        tok.created = (uint64_t) time(NULL);

        return ds_put_token(txn, &tok, NULL, err);
    }

    if (strcmp(op, "revoke") == 0) {
        ds_sha256(name, strlen(name), hash);

        return ds_del_token(txn, hash, err);
    }

    snprintf(err->msg, sizeof(err->msg), "unknown operation \"%s\"", op);
    return DS_EINVAL;
}


int
main(int argc, char **argv)
{
    int          rc;
    char         line[LINE_MAX_LEN];
    double       before, after;
    ds_err_t     err;
    ds_txn_t    *txn;
    ds_state_t  *st;

    if (argc != 2) {
        fprintf(stderr, "usage: ds-bench-commit STATE_DIR\n");
        return 2;
    }

    if (ds_state_open(&st, argv[1], DS_STATE_CREATE, 0660, &err) != DS_OK) {
        fprintf(stderr, "ds-bench-commit: %s\n", err.msg);
        return 1;
    }

    while (fgets(line, sizeof(line), stdin)) {

        if (ds_txn_begin(st, 1, &txn, &err) != DS_OK) {
            printf("err %s\n", err.msg);
            fflush(stdout);
            continue;
        }

        rc = apply(txn, line, &err);
        if (rc != DS_OK) {
            ds_txn_abort(txn);
            printf("err %s\n", err.msg);
            fflush(stdout);
            continue;
        }

        before = now_mono();
        rc = ds_txn_commit(txn, &err);
        after = now_mono();

        if (rc != DS_OK) {
            printf("err %s\n", err.msg);

        } else {
            printf("ok %.9f %.9f\n", before, after);
        }

        fflush(stdout);
    }

    ds_state_close(st);

    return 0;
}
