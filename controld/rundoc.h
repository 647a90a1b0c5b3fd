/*
 * Runs in LMDB (rundoc.c): the run document a restarted controld
 * recovers from, and the replica set the gateway routes to.
 */

#ifndef CONTROLD_RUNDOC_H
#define CONTROLD_RUNDOC_H

#include <stddef.h>

#include <cjson/cJSON.h>

struct run;

cJSON *run_to_doc(const struct run *r);
struct run *run_from_doc(const char *doc, size_t len, char *err,
    size_t errlen);
/* loads every run document into `runs` */
int runs_load(void);
/*
 * Writes every changed run document and replica set in one transaction.
 * Called from the loop after each batch of changes.
 */
int runs_flush(void);
/*
 * Apply: the service record, the run document (and its replica set when
 * it changed) in one transaction.  STORE_OK, or STORE_ECONFLICT /
 * STORE_EFAIL with the reason in err.
 */
int run_put_service(struct run *r, char *err, size_t errlen);
/* the run document alone, in its own transaction: STORE_OK, or
 * STORE_EFAIL with the reason in err (r stays dirty: runs_flush tries
 * again) */
int run_put_doc(struct run *r, char *err, size_t errlen);

#endif /* CONTROLD_RUNDOC_H */
