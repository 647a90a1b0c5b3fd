/*
 * Secrets (secrets.c): dstack's `${{ secrets.NAME }}`, kept in LMDB
 * encrypted (AES-256-GCM) under a key only the root parent reads, and
 * resolved when a replica starts.  Values are never logged, never in a
 * run document, a view or a message: messages name secrets only.
 */

#ifndef CONTROLD_SECRETS_H
#define CONTROLD_SECRETS_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "ds_spec.h"

/* <state_dir>/secrets.key: loaded, or made (0600) at the first start;
 * 0, or -1 logged */
int secrets_init(void);
/* forgets the key */
void secrets_shutdown(void);

/* the API (API.md "secrets"), in project pkey ("" for main): 0 or an
 * HTTP status with a message; who is the caller, for the log */
int secrets_set(const char *pkey, const cJSON *req, const char *who,
    cJSON **answer, int *created, char *err, size_t n);
int secrets_get(const char *pkey, const cJSON *req, cJSON **answer,
    char *err, size_t n);
int secrets_delete(const char *pkey, const cJSON *req, const char *who,
    cJSON **answer, char *err, size_t n);
int secrets_list(const char *pkey, cJSON **answer, char *err, size_t n);

/*
 * Every secret the spec names (env, registry_auth) exists: 0, or 400
 * with "spec.env.HF_TOKEN: secret \"HF_TOKEN\" does not exist
 * (dstackctl secret set HF_TOKEN ...)".
 */
int secrets_check_spec(const char *pkey, const ds_spec_t *sp, char *err,
    size_t n);
/* the same for an env alone (a fleet's) */
int secrets_check_env(const char *pkey, const ds_spec_env_t *env,
    size_t n_env, char *err, size_t n);

/*
 * s with its references replaced by the values: a new string in *out
 * (free it with secrets_free), or -1 and a message naming what (e.g.
 * "env.HF_TOKEN") and the secret.
 */
int secrets_expand(const char *pkey, const char *what, const char *s,
    char **out, char *err, size_t n);
/* env (n_env entries) resolved: a new array of n_env strings ("" for
 * a value left null); free with secrets_env_free */
int secrets_env(const char *pkey, const ds_spec_env_t *env, size_t n_env,
    char ***values, char *err, size_t n);
void secrets_env_free(char **values, size_t n_env);
/* wipes and frees */
void secrets_free(char *s);

#endif /* CONTROLD_SECRETS_H */
