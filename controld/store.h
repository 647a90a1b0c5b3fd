/*
 * The LMDB writer (store.c): the only code of controld that begins write
 * transactions on the shared state (readers begin their own).  It knows records, not runs: what a
 * run is and how it is written down is rundoc.c's business.
 *
 * Errors are this layer's own: STORE_OK, STORE_ECONFLICT (the state
 * refuses the record: a model name another service has), STORE_EFAIL
 * (LMDB failed: a full disk or map); the message is in the caller's
 * buffer.  ds_state's DS_* codes stay inside store.c.
 */

#ifndef CONTROLD_STORE_H
#define CONTROLD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "ds_state.h"

#define STORE_OK                0
#define STORE_ECONFLICT         1
#define STORE_EFAIL             2

/* the environment, for readers (tokens, certificates, reader checks) */
extern ds_state_t  *state;

int store_open(void);
void store_close(void);

/*
 * Whether the files at state_dir are still the ones controld opened:
 * 0, or -1 once data.mdb or lock.mdb was replaced or removed.  From then
 * on (it sticks) nothing is written, the API answers 503 and the loop
 * ends: controld exits 1 so that a restart opens the new file (see
 * main.c).  store_lost() tells without looking again.
 */
int store_check_files(void);
int store_lost(void);
const char *store_lost_why(void);

/* calls fn for every run document; a non-zero return stops */
int store_load_docs(int (*fn)(void *arg, const char *name, size_t name_len,
    const char *doc, size_t doc_len), void *arg);

/* the same for fleet documents */
int store_load_fleets(int (*fn)(void *arg, const char *name, size_t name_len,
    const char *doc, size_t doc_len), void *arg);

/*
 * One write transaction: begin, any number of puts, end.  store_end()
 * commits when every put succeeded, and aborts otherwise; it returns the
 * first failure.  A put after a failure does nothing.
 */
struct store_txn;

struct store_txn *store_begin(char *err, size_t errlen);
void store_put_service(struct store_txn *t, ds_service_t *svc);
void store_del_service(struct store_txn *t, const char *name);
void store_put_doc(struct store_txn *t, const char *name, const char *doc);
void store_put_fleet(struct store_txn *t, const char *name, const char *doc);
void store_del_fleet(struct store_txn *t, const char *name);
/* a secret's record as secrets.c sealed it; never its value */
void store_put_secret(struct store_txn *t, const char *name,
    const void *rec, size_t len);
void store_del_secret(struct store_txn *t, const char *name);
/* a settings record (keys.c: the cluster's key identity) */
void store_put_setting(struct store_txn *t, const char *key,
    const char *val);
/* the replica set the gateway sees; entries with a bad address are left
 * out (and logged) */
void store_put_replicas(struct store_txn *t, const char *name,
    ds_replica_t *set, unsigned n);
void store_put_cert(struct store_txn *t, ds_cert_t *c);
void store_put_token(struct store_txn *t, const ds_token_t *tok,
    const ds_str_t *services);
void store_del_token(struct store_txn *t,
    const uint8_t hash[DS_TOKEN_HASH_LEN]);
/* teams (teams.c, audit.c): project "" is main */
void store_put_member(struct store_txn *t, const char *project,
    const char *user, unsigned role);
void store_del_member(struct store_txn *t, const char *project,
    const char *user);
void store_put_team_doc(struct store_txn *t, int kind, const char *key,
    const char *doc);
void store_del_team_doc(struct store_txn *t, int kind, const char *key);
/* the read transaction of a write, for what must be read in it */
ds_txn_t *store_txn_of(struct store_txn *t);
int store_end(struct store_txn *t);

/*
 * Shared mode (shared.c sets it while this instance leads): publishes a
 * write transaction's captured changes before LMDB commits them; 0 with
 * the revision, which LMDB records as mirrored in the same commit, or
 * -1 with why (the transaction is then aborted: STORE_EFAIL).
 */
extern int (*store_publish)(ds_txn_t *txn, uint64_t *rev, char *err,
    size_t errlen);
/* whether the last store_end() failed there: the API answers 503 */
int store_unpublished(void);

#endif /* CONTROLD_STORE_H */
