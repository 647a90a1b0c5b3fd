/*
 * Code archives (code.c): PUT /api/code/<hash> stores them as
 * <state_dir>/code/<hash>.tar.gz; applies name them, backends unpack
 * them.  In shared mode the leader also keeps them in the database
 * (dstack_code), so that the next leader can start replicas again.
 */

#ifndef CONTROLD_CODE_H
#define CONTROLD_CODE_H

#include <stddef.h>

/* <state_dir>/code/<hash>.tar.gz in buf; -1 when it does not fit */
int code_path(const char *hash, char *buf, size_t n);
/* whether the archive is here and readable */
int code_exists(const char *hash);
/*
 * Writes an archive as the API process's uploads are written: a
 * temporary file, fsync, mode 0600, the code directory's owner, then
 * renamed into place.  -1 with err.
 */
int code_store(const char *hash, const void *data, size_t len, char *err,
    size_t n);

/* the archive read whole, *data malloc'd; -1 with err */
int code_load(const char *hash, void **data, size_t *len, char *err,
    size_t n);

#endif /* CONTROLD_CODE_H */
