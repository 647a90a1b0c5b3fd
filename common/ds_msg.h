/*
 * Pieces of error messages shared by the readers of YAML and JSON: a
 * value quoted for a message, the kind of a cJSON node in words, the
 * nearest known word for a typo, and "head + message" cut to fit.
 */

#ifndef DS_MSG_H
#define DS_MSG_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "ds_state.h"


#define DS_MSG_QUOTE_MAX        40      /* characters of a quoted value */

typedef struct {
    char            s[4 * DS_MSG_QUOTE_MAX + 8];
} ds_qbuf_t;


/*
 * "value" for a message, in b: escaped, cut after DS_MSG_QUOTE_MAX
 * characters; returns b->s.
 */
const char *ds_q(ds_qbuf_t *b, const char *s);

/* "a string", "a mapping", "null", ... */
const char *ds_tname(const cJSON *v);

/* err = head + msg, cut to fit */
void ds_err_put(ds_err_t *err, const char *head, const char *msg);

/* the nearest of n candidates within 2 edits, ignoring case; or NULL */
const char *ds_suggest(const char *s, const char *const *cand, size_t n);

#endif /* DS_MSG_H */
