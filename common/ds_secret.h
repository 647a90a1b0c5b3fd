/*
 * Secrets (ds_secret.c): their names, and the references to them that a
 * spec's env values and registry_auth hold, as dstack writes them:
 *
 *   env:
 *     - HF_TOKEN=${{ secrets.HF_TOKEN }}
 *     - URL=https://u:${{ secrets.db-pass }}@db/x
 *
 * A reference is "${{", a name with optional spaces around it, "}}";
 * the name is "secrets." and a secret's name.  "$$" stands for one "$"
 * (so "$${{ x }}" is the text "${{ x }}"), as dstack's interpolator has
 * it; any other "$" is itself.  Specs keep references, never values:
 * controld resolves them when a replica starts (controld/secrets.c).
 *
 * Compiled into dstackctl and controld (the gateway never sees them).
 * No message here ever holds a value: only names and reference text.
 */

#ifndef DS_SECRET_H
#define DS_SECRET_H

#include <stddef.h>

#define DS_SECRET_NAME_MAX      200             /* as dstack */
#define DS_SECRET_VALUE_MAX     (64 * 1024)     /* bytes */

#define DS_REF_TEXT             0       /* literal text, "$$" undone */
#define DS_REF_SECRET           1       /* a secret's name */

/*
 * One piece of a string: kind DS_REF_*, len bytes at p (not
 * NUL-terminated).  Non-zero stops the walk and is returned.
 */
typedef int (*ds_ref_fn)(void *arg, int kind, const char *p, size_t len);

/* dstack's names: ^[A-Za-z0-9_-]{1,200}$ */
int ds_secret_name_ok(const char *s, size_t len);

/*
 * Walks s, calling fn (may be NULL: only check) for each piece in order.
 * 0 when done, -1 with a message in err for a malformed reference
 * ("unterminated reference \"${{ secrets.A\" (no \"}}\")"), or fn's
 * non-zero return.
 */
int ds_secret_refs(const char *s, ds_ref_fn fn, void *arg, char *err,
    size_t n);

/* 1 when s holds at least one reference (s is well formed) */
int ds_secret_has_refs(const char *s);

#endif /* DS_SECRET_H */
